"""MuQ-MuLan adapter against the real ``muq`` classes (``MuQ``, ``XLMRobertaModel`` and ``MuQMuLan``, tiny and
random), loaded the way production loads MuQ-MuLan-large: its three repositories from a Hugging Face cache laid
out on disk, offline, or from one ``--weights`` directory; and compared with the package's own
``MuQMuLan.from_pretrained`` and its own ``model(wavs=window)``.

What it computes is shared/navidrome.md's MuQ: 120 s windows every 15 s (one more ending at the track's end), a
short track zero-padded to one window, each window the plain mean of MuLan's latents of its twelve 10 s clips.
The adapter runs each distinct non-silent clip once and the silence of padding once per model.

Runs in the models environment only (``.venv-models``, the ``models`` extra); skipped elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="model tests run in .venv-models (the models extra)")
pytest.importorskip("muq")

import huggingface_hub.constants  # noqa: E402
import soundfile  # noqa: E402
from hub_cache import sha256, write_hub_cache  # noqa: E402
from huggingface_hub.utils import reset_sessions  # noqa: E402
from mirror import MirrorServer  # noqa: E402
from muq import MuQMuLan  # noqa: E402
from tiny_weights import RATE, music, piece_batch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from embedders import get_embedder, stored_dim  # noqa: E402
from embedders.audio_input import AudioInput  # noqa: E402
from embedders.base import Embedder  # noqa: E402
from embedders.muq import SPEC, WEIGHTS, MuqEmbedder  # noqa: E402
from embedders.spec import NAVIDROME_SPACE  # noqa: E402
from embedders.torch_runtime import TorchRuntime  # noqa: E402
from embedders.weights import LOCAL_REVISION, MissingWeightsError, WeightsSpec, locate_weights  # noqa: E402
from embedders.windows import Piece, TrackPlan, window_starts  # noqa: E402
from flows.cli import app  # noqa: E402
from store.settings import Settings  # noqa: E402

CLIP = 10 * RATE
WINDOW, HOP = 120 * RATE, 15 * RATE
FRAME_DIM = 512
REVISIONS = {spec.repo_id: f"{index:x}" * 40 for index, spec in enumerate((WEIGHTS, *WEIGHTS.requires), start=1)}


def checkpoint(repos: Path) -> Path:
    return repos / WEIGHTS.folder / "pytorch_model.bin"


def lay_into_cache(cache: Path, repos: Path, specs: tuple[WeightsSpec, ...] = (WEIGHTS, *WEIGHTS.requires)) -> None:
    for spec in specs:
        write_hub_cache(cache, spec.repo_id, (repos / spec.folder).iterdir(), REVISIONS[spec.repo_id])


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """huggingface_hub refuses every request, so a load that would reach the network fails instead (the
    package's own loader asks the Hub first and falls back to the cache). Its sessions are cached per
    thread, so they are dropped on both sides."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    reset_sessions()
    yield
    reset_sessions()


@pytest.fixture()
def cached(muq_repos: Path, hub_cache: Path, offline: None) -> Path:
    """The three repositories in the Hugging Face cache, under their real ids; returns the cache."""
    lay_into_cache(hub_cache, muq_repos)
    return hub_cache


@pytest.fixture()
def embedder(cached: Path) -> MuqEmbedder:
    return MuqEmbedder()


def official(cache: Path) -> MuQMuLan:
    """The package's own loader (hub mixin, repository ids from config.json) on the same cache."""
    return MuQMuLan.from_pretrained(WEIGHTS.repo_id, cache_dir=cache).eval()


def package_windows(cache: Path, windows: np.ndarray) -> np.ndarray:
    """``[B, 512]``: the package's own ``model(wavs=windows)``. ``parallel_processing`` runs a window's twelve
    clips as one batch instead of one call each (the same latents, in a tenth of the time on a CPU)."""
    with torch.inference_mode():
        return official(cache)(wavs=torch.from_numpy(windows), parallel_processing=True).numpy()


def latents(embedder: MuqEmbedder, audio: np.ndarray, pieces: tuple[Piece, ...]) -> list[torch.Tensor]:
    """Every piece's output, the pieces of one shape in one forward pass, in plan order."""
    outputs: list[torch.Tensor | None] = [None] * len(pieces)
    with torch.inference_mode():
        for key in {piece.key for piece in pieces}:
            rows = [index for index, piece in enumerate(pieces) if piece.key == key]
            batch = embedder.forward(piece_batch(audio, [pieces[index] for index in rows]), key)
            for index, output in zip(rows, batch, strict=True):
                outputs[index] = output
    return outputs


def frames(embedder: MuqEmbedder, audio: np.ndarray) -> tuple[TrackPlan, np.ndarray]:
    """The track's plan and its ``[512, T]`` frames, as the runtime computes them."""
    plan = embedder.plan(audio.size)
    with torch.inference_mode():
        return plan, embedder.assemble(plan, latents(embedder, audio, plan.pieces)).numpy()


class Counted:
    """Counts the clips that reach MuLan's audio tower (``get_audio_latents``)."""

    def __init__(self, embedder: MuqEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clips = 0
        inner = embedder.mulan.get_audio_latents

        def counted(wavs: torch.Tensor) -> torch.Tensor:
            self.clips += len(wavs)
            return inner(wavs)

        monkeypatch.setattr(embedder.mulan, "get_audio_latents", counted)


def test_the_spec_declares_navidromes_muq_and_the_embedder_carries_it(embedder: MuqEmbedder, muq_repos: Path) -> None:
    assert (SPEC.name, SPEC.space, SPEC.frame_dim, SPEC.stored_dim) == ("muq", NAVIDROME_SPACE, 512, 1536)
    assert (SPEC.sample_rate, SPEC.window_s, SPEC.hop_s, SPEC.window_padding) == (RATE, 120.0, 15.0, "zeros")
    assert SPEC.device and SPEC.weights is WEIGHTS and stored_dim("muq") == 1536
    assert SPEC.audio_input == AudioInput(RATE).describe()
    assert isinstance(embedder, Embedder) and embedder.spec is SPEC and embedder.precision == "reference"
    assert (embedder.clip, embedder.window, embedder.hop, embedder.piece_s) == (CLIP, WINDOW, HOP, 10.0)
    assert embedder.frame_dim == FRAME_DIM and embedder.audio_input == AudioInput(RATE)
    assert embedder.revision == REVISIONS[WEIGHTS.repo_id]
    assert embedder.weights_sha256 == sha256(checkpoint(muq_repos))


def assert_plan_follows_the_windows(plan: TrackPlan, samples: int) -> None:
    """Every window's twelve clips are the pieces of their spans, ``-1`` where the track has ended; no piece
    is planned twice and every piece is some window's clip."""
    starts = window_starts(samples, WINDOW, HOP)
    assert plan.frames == len(starts) == len(plan.layout)
    for start, clips in zip(starts, plan.layout, strict=True):
        assert len(clips) == 12
        for index, clip_start in zip(clips, range(start, start + WINDOW, CLIP), strict=True):
            if clip_start >= samples:
                assert index == -1
            else:
                assert plan.pieces[index] == Piece.span(clip_start, min(CLIP, samples - clip_start), CLIP)
    assert len(set(plan.pieces)) == len(plan.pieces)
    assert {index for clips in plan.layout for index in clips} - {-1} == set(range(len(plan.pieces)))


@pytest.mark.parametrize(("seconds", "windows", "pieces"), [
    (5, 1, 1),  # one window: 5 s of audio in its first clip, eleven clips of padding
    (15, 1, 2),  # the second clip half audio, half padding
    (120, 1, 12),
    (121, 2, 24),  # a second window at 1 s, ending at the end: none of its clips is the first window's
    (130, 2, 13),  # windows at 0 and 10 s share eleven clips
    (300, 13, 57),  # windows every 15 s put clip starts on a 5 s grid: 0, 10, …, 290 and 15, 25, …, 275
], ids=lambda value: str(value))
def test_the_plan_is_each_distinct_clip_of_the_120s_windows_once(
    embedder: MuqEmbedder, seconds: int, windows: int, pieces: int
) -> None:
    plan = embedder.plan(seconds * RATE)
    assert (plan.frames, len(plan.pieces)) == (windows, pieces)
    assert_plan_follows_the_windows(plan, seconds * RATE)
    if seconds == 5:
        assert plan.pieces == (Piece.span(0, 5 * RATE, CLIP),)
        assert plan.layout == ((0, *[-1] * 11),)
    if seconds == 300:
        assert sorted(start for piece in plan.pieces for start, _ in piece.segments) == sorted(
            [*range(0, 291 * RATE, CLIP), *range(15 * RATE, 276 * RATE, CLIP)]
        )
    assert embedder.plan(0) == TrackPlan((), 0, ())


def test_forward_is_mulans_own_latent_of_each_clip(embedder: MuqEmbedder, cached: Path) -> None:
    reference = official(cached).mulan_module
    clips = music(10.0, clips=3, seed=3)
    with torch.inference_mode():
        got = embedder.forward(torch.from_numpy(clips)[:, None], (CLIP, CLIP))
        expected = torch.cat([reference.get_audio_latents(torch.from_numpy(clip)[None]) for clip in clips])
    assert got.dtype == torch.float32 and got.shape == (3, FRAME_DIM)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.linalg.vector_norm(got, dim=-1), torch.ones(3))
    assert not torch.allclose(got[0], got[1], atol=1e-3)

    fast = MuqEmbedder(precision="bf16")
    with torch.inference_mode():
        autocast = fast.forward(torch.from_numpy(clips)[:, None], (CLIP, CLIP))
    assert autocast.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(autocast, got).min() > 0.99


def test_a_padded_window_is_the_packages_own_latent_of_the_zero_padded_window(
    embedder: MuqEmbedder, cached: Path
) -> None:
    """15 s: the package cuts the 120 s window into a clip of audio, a clip of 5 s audio and 5 s zeros, and
    ten clips of silence, and averages their twelve latents."""
    audio = music(15.0, seed=4)[0]
    plan, got = frames(embedder, audio)
    assert got.shape == (FRAME_DIM, 1)
    expected = package_windows(cached, np.pad(audio, (0, WINDOW - audio.size))[None])
    np.testing.assert_allclose(got[:, 0], expected[0], atol=1e-5)
    assert np.linalg.norm(got[:, 0]) < 0.999  # a mean of unit vectors, not renormalised


def test_full_windows_are_the_packages_own_latents_of_each_window(embedder: MuqEmbedder, cached: Path) -> None:
    """130 s: windows at 0 and 10 s, their 24 clips from 13 pieces."""
    audio = music(130.0, seed=5)[0]
    plan, got = frames(embedder, audio)
    assert got.shape == (FRAME_DIM, 2) and len(plan.pieces) == 13
    expected = package_windows(cached, np.stack([audio[:WINDOW], audio[10 * RATE :]]))
    np.testing.assert_allclose(got.T, expected, atol=1e-5)
    assert not np.allclose(got[:, 0], got[:, 1], atol=1e-4)


def test_the_silence_of_padding_is_one_latent_computed_once(
    embedder: MuqEmbedder, cached: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(embedder, monkeypatch)
    silence = embedder.silence()
    assert counted.clips == 1
    assert embedder.silence() is silence and counted.clips == 1
    with torch.inference_mode():
        expected = official(cached).mulan_module.get_audio_latents(torch.zeros(1, CLIP))[0]
    torch.testing.assert_close(silence, expected, atol=1e-5, rtol=1e-5)
    frames(embedder, music(5.0)[0])
    assert counted.clips == 2  # its one clip of audio; the eleven clips of padding reuse the silence


def test_a_10s_clip_costs_one_clip_forward_and_stores_the_packages_padded_window(
    embedder: MuqEmbedder, cached: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10 s 24 kHz file is one window of one clip and eleven of silence: ``T = 1``, so the stored vector
    is the window's latent normalised, then zeros (no spread, no drift)."""
    paths = []
    for seed in (1, 2):
        paths.append(tmp_path / f"ten-{seed}.flac")
        soundfile.write(paths[-1], music(10.0, seed=seed)[0], RATE)
    counted = Counted(embedder, monkeypatch)
    runtime = TorchRuntime(embedder, num_workers=0)
    [(_, first)] = runtime.embed([("first", paths[0])])
    assert counted.clips == 2  # the clip, and the silence once for this model
    [(_, second)] = runtime.embed([("second", paths[1])])
    assert counted.clips == 3
    assert first.frames == second.frames == 1
    audio, _ = soundfile.read(paths[0], dtype="float32")
    window = package_windows(cached, np.pad(audio, (0, WINDOW - audio.size))[None])[0]
    assert first.vector.shape == (1536,) and first.vector.dtype == np.float32
    np.testing.assert_allclose(first.vector[:FRAME_DIM], window / np.linalg.norm(window), atol=1e-5)
    assert not np.any(first.vector[FRAME_DIM:])


def test_only_the_audio_path_is_kept(embedder: MuqEmbedder, cached: Path) -> None:
    whole = official(cached)
    assert whole.mulan.text is not None
    assert embedder.mulan.text is None and embedder.mulan.text_to_latents is None
    kept = {name for name, _ in embedder.mulan.named_parameters()}
    assert kept and not any(name.startswith("text") for name in kept)
    assert {f"mulan.{name}" for name in kept} < {name for name, _ in whole.named_parameters()}


def clip_latent(embedder: MuqEmbedder, seed: int = 2) -> torch.Tensor:
    with torch.inference_mode():
        return embedder.forward(torch.from_numpy(music(10.0, seed=seed))[:, None], (CLIP, CLIP))


def test_a_weights_directory_holds_one_subdirectory_per_repository(
    muq_repos: Path, hub_cache: Path, offline: None
) -> None:
    """Loads with an empty cache and no network (so the sub-models come from the directory too), and with the
    config nested under a ``config`` key, which the hub mixin accepts as well."""
    local = get_embedder("muq", weights=muq_repos)
    assert isinstance(local, MuqEmbedder)
    assert (local.revision, local.weights_sha256) == (LOCAL_REVISION, sha256(checkpoint(muq_repos)))
    lay_into_cache(hub_cache, muq_repos)
    torch.testing.assert_close(clip_latent(local), clip_latent(MuqEmbedder()), atol=0, rtol=0)
    config = muq_repos / WEIGHTS.folder / "config.json"
    config.write_text(json.dumps({"config": json.loads(config.read_text())}))
    torch.testing.assert_close(clip_latent(MuqEmbedder(muq_repos)), clip_latent(local), atol=0, rtol=0)


@pytest.mark.parametrize(("change", "message"), [
    (lambda state: state.pop("mulan.audio_to_latents.bias"), r"Missing key.*mulan\.audio_to_latents\.bias"),
    (lambda state: state.update(extra=torch.zeros(1)), r"Unexpected key.*\"extra\""),
], ids=["missing", "unexpected"])
def test_the_checkpoint_loads_strictly(muq_repos: Path, change: Callable[[dict], object], message: str) -> None:
    state = torch.load(checkpoint(muq_repos), weights_only=True)
    change(state)
    torch.save(state, checkpoint(muq_repos))
    with pytest.raises(ValueError, match=f"(?s)do not match MuQMuLan exactly.*{message}"):
        MuqEmbedder(muq_repos)


def test_missing_weights_say_what_to_run_and_what_weights_must_hold(
    muq_repos: Path, hub_cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(MissingWeightsError, match="OpenMuQ/MuQ-MuLan-large.*musictext models fetch muq"):
        MuqEmbedder()
    lay_into_cache(hub_cache, muq_repos, (WEIGHTS,))
    with pytest.raises(MissingWeightsError, match="OpenMuQ/MuQ-large-msd-iter.*musictext models fetch muq") as error:
        MuqEmbedder()
    assert "MuQ-MuLan-large/ with config.json and model.safetensors or pytorch_model.bin;" in str(error.value)

    (muq_repos / "xlm-roberta-base" / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match="xlm-roberta-base does not hold .*missing model.safetensors"):
        MuqEmbedder(muq_repos)
    with pytest.raises(MissingWeightsError, match="has no directory MuQ-MuLan-large/.*one subdirectory per repo"):
        MuqEmbedder(tmp_path)


def test_fetch_puts_all_three_repositories_in_the_cache_and_the_embedder_loads_them(
    mirror: MirrorServer, mirror_settings: Settings, muq_repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for spec in (WEIGHTS, *WEIGHTS.requires):
        files = {path.name: path for path in (muq_repos / spec.folder).iterdir()}
        mirror.hf_repo(spec.repo_id, "main", files | {"README.md": b"not fetched"}, repo_type="model",
                       lfs=set(spec.weight_files) & set(files))
    cache = tmp_path / "hub"
    runner = CliRunner()
    assert "musictext models fetch muq" in runner.invoke(app, ["models", "list", "--cache-dir", str(cache)]).output
    fetched = runner.invoke(app, ["models", "fetch", "muq", "--cache-dir", str(cache)])
    assert fetched.exit_code == 0, fetched.output
    located = locate_weights(WEIGHTS, cache_dir=cache)
    assert sorted(located.requires) == sorted(spec.repo_id for spec in WEIGHTS.requires)
    assert located.sha256 == sha256(checkpoint(muq_repos))
    assert not (located.directory / "README.md").exists()
    assert located.sha256[:16] in runner.invoke(app, ["models", "list", "--cache-dir", str(cache)]).output

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    torch.testing.assert_close(clip_latent(MuqEmbedder()), clip_latent(MuqEmbedder(muq_repos)), atol=0, rtol=0)
