"""MuQ-MuLan adapter against the real ``muq`` classes (``MuQ``, ``XLMRobertaModel`` and ``MuQMuLan``, tiny and
random), loaded the way production loads MuQ-MuLan-large: its three repositories from a Hugging Face cache laid
out on disk, offline, or from one ``--weights`` directory; and compared with the package's own
``MuQMuLan.from_pretrained``.

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
from tiny_weights import RATE, music  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from embedders import get_embedder, stored_dim  # noqa: E402
from embedders.base import Embedder  # noqa: E402
from embedders.enrichment import enrich  # noqa: E402
from embedders.muq import MIN_SAMPLES, MuqEmbedder  # noqa: E402
from embedders.runtime import embed_clip, embed_clips  # noqa: E402
from embedders.torch_runtime import TorchRuntime  # noqa: E402
from embedders.weights import LOCAL_REVISION, MUQ, MissingWeightsError, WeightsSpec, locate_weights  # noqa: E402
from flows.cli import app  # noqa: E402
from store.settings import Settings  # noqa: E402

WINDOW = 240_000
FRAME_DIM = 512
REVISIONS = {spec.repo_id: f"{index:x}" * 40 for index, spec in enumerate((MUQ, *MUQ.requires), start=1)}


def checkpoint(repos: Path) -> Path:
    return repos / MUQ.folder / "pytorch_model.bin"


def lay_into_cache(cache: Path, repos: Path, specs: tuple[WeightsSpec, ...] = (MUQ, *MUQ.requires)) -> None:
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
    return MuQMuLan.from_pretrained(MUQ.repo_id, cache_dir=cache).eval()


def test_frames_are_one_unit_vector_per_overlapping_window(embedder: MuqEmbedder, muq_repos: Path) -> None:
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.sample_rate, embedder.channels, embedder.frame_dim) == ("muq", RATE, 1, 512)
    assert (embedder.window_s, embedder.hop_s) == (10.0, 2.5)
    assert embedder.revision == REVISIONS[MUQ.repo_id]
    assert embedder.weights_sha256 == sha256(checkpoint(muq_repos))
    for seconds, windows in ((5.0, 5), (12.0, 5), (20.0, 5), (25.0, 7), (30.0, 9)):
        frames = embedder.frames(music(seconds, clips=2)[:, None])
        assert frames.dtype == np.float32
        assert frames.shape == (2, FRAME_DIM, windows), seconds
        np.testing.assert_allclose(np.linalg.norm(frames, axis=1), 1.0, atol=1e-5)
    hop = WINDOW // 4
    assert embedder.window_starts(12 * RATE) == (6 * RATE, [0, 36_000, 72_000, 108_000, 144_000])
    assert embedder.window_starts(2 * WINDOW + 1) == (WINDOW, [0, hop, 2 * hop, 3 * hop, 4 * hop, WINDOW + 1])


def test_each_window_is_the_latent_the_package_itself_gives_that_window(
    embedder: MuqEmbedder, cached: Path
) -> None:
    """Windows of 22 s: 10 s every 2.5 s from 0 to 10 s, then the last 10 s, [12, 22); a 5 s input: 2.5 s
    windows every 0.625 s."""
    reference = official(cached)
    audio = torch.from_numpy(music(22.0, clips=2, seed=3))
    frames = embedder.frames(audio[:, None].numpy())
    starts = [0, WINDOW // 4, WINDOW // 2, 3 * WINDOW // 4, WINDOW, 12 * RATE]
    assert frames.shape[-1] == len(starts)
    with torch.inference_mode():
        for index, start in enumerate(starts):
            expected = reference(wavs=audio[:, start : start + WINDOW]).numpy()
            np.testing.assert_allclose(frames[:, :, index], expected, atol=1e-5)
        short = audio[:, : 5 * RATE]
        expected = reference.mulan_module.get_audio_latents(short[:, 15_000 : 15_000 + 60_000]).numpy()
    np.testing.assert_allclose(embedder.frames(short[:, None].numpy())[:, :, 1], expected, atol=1e-5)
    assert not np.allclose(frames[:, :, 4], frames[:, :, 5], atol=1e-3)


def test_frames_are_deterministic_and_independent_of_batch_mates(embedder: MuqEmbedder) -> None:
    audio = music(12.0, clips=3, seed=5)[:, None]
    first = embedder.frames(audio)
    np.testing.assert_array_equal(first, embedder.frames(audio))
    np.testing.assert_allclose(first[1:2], embedder.frames(audio[1:2]), atol=1e-5)
    assert not np.allclose(first[0], first[1], atol=1e-3)


def test_too_short_inputs_give_no_frames_and_stereo_is_refused(embedder: MuqEmbedder, cached: Path) -> None:
    """MuQ's own front end fails below MIN_SAMPLES, so no frame is the honest answer there."""
    short = music((MIN_SAMPLES - 1) / RATE)
    with pytest.raises(RuntimeError, match="Padding size"), torch.inference_mode():
        official(cached).mulan_module.get_audio_latents(torch.from_numpy(short))
    assert embedder.frames(short[:, None]).shape == (1, FRAME_DIM, 0)
    assert embedder.frames(music(MIN_SAMPLES / RATE)[:, None]).shape == (1, FRAME_DIM, 1)
    assert embedder.frames(music((2 * MIN_SAMPLES - 1) / RATE)[:, None]).shape == (1, FRAME_DIM, 5)
    with pytest.raises(ValueError, match=r"mono batches \[B, 1, N\]"):
        embedder.frames(np.zeros((1, 2, WINDOW), dtype=np.float32))


def test_enriched_vectors_are_1536_wide_and_the_enrichment_of_the_frames(
    embedder: MuqEmbedder, tmp_path: Path
) -> None:
    path = tmp_path / "clip.flac"
    soundfile.write(path, music(25.0, seed=7)[0], RATE)
    audio, _rate = soundfile.read(path, dtype="float32")
    vector = embed_clip(embedder, path)
    assert vector.shape == (1536,) == (stored_dim("muq"),)
    np.testing.assert_allclose(vector, enrich(embedder.frames(audio[None, None]))[0], atol=1e-6)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_only_the_audio_path_is_kept(embedder: MuqEmbedder, cached: Path) -> None:
    whole = official(cached)
    assert whole.mulan.text is not None
    assert embedder.mulan.text is None and embedder.mulan.text_to_latents is None
    kept = {name for name, _ in embedder.mulan.named_parameters()}
    assert kept and not any(name.startswith("text") for name in kept)
    assert {f"mulan.{name}" for name in kept} < {name for name, _ in whole.named_parameters()}


def test_the_torch_runtime_gives_the_cpu_runtimes_vectors(embedder: MuqEmbedder, tmp_path: Path) -> None:
    """44.1 kHz stereo clips, down-mixed and resampled by the runtimes, the torch runtime in its muq
    windows of 30 s: 12 s gives five windows, 25 s seven, 45 s two runtime windows (30 s and 15 s) of
    nine and five."""
    rng = np.random.default_rng(11)
    clips = []
    for item_id, seconds in (("twelve", 12.0), ("twenty-five", 25.0), ("forty-five", 45.0)):
        path = tmp_path / f"{item_id}.flac"
        soundfile.write(path, (0.2 * rng.standard_normal((round(seconds * 44_100), 2))).astype(np.float32), 44_100)
        clips.append((item_id, path))
    got = dict(TorchRuntime(embedder, num_workers=0).embed(clips))
    expected = dict(embed_clips(embedder, clips, chunk_s=30.0))
    assert list(got) == list(expected) == ["twelve", "twenty-five", "forty-five"]
    for item_id, vector in expected.items():
        assert vector.shape == (1536,)
        assert np.linalg.norm(got[item_id]) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(got[item_id], vector, atol=1e-5)


def test_a_weights_directory_holds_one_subdirectory_per_repository(
    muq_repos: Path, hub_cache: Path, offline: None
) -> None:
    """Loads with an empty cache and no network (so the sub-models come from the directory too), and with the
    config nested under a ``config`` key, which the hub mixin accepts as well."""
    audio = music(10.0, seed=2)[:, None]
    local = get_embedder("muq", weights=muq_repos)
    assert isinstance(local, MuqEmbedder)
    assert (local.revision, local.weights_sha256) == (LOCAL_REVISION, sha256(checkpoint(muq_repos)))
    lay_into_cache(hub_cache, muq_repos)
    np.testing.assert_array_equal(local.frames(audio), MuqEmbedder().frames(audio))
    config = muq_repos / MUQ.folder / "config.json"
    config.write_text(json.dumps({"config": json.loads(config.read_text())}))
    np.testing.assert_array_equal(MuqEmbedder(muq_repos).frames(audio), local.frames(audio))


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
    lay_into_cache(hub_cache, muq_repos, (MUQ,))
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
    for spec in (MUQ, *MUQ.requires):
        files = {path.name: path for path in (muq_repos / spec.folder).iterdir()}
        mirror.hf_repo(spec.repo_id, "main", files | {"README.md": b"not fetched"}, repo_type="model",
                       lfs=set(spec.weight_files) & set(files))
    cache = tmp_path / "hub"
    runner = CliRunner()
    assert "musictext models fetch muq" in runner.invoke(app, ["models", "list", "--cache-dir", str(cache)]).output
    fetched = runner.invoke(app, ["models", "fetch", "muq", "--cache-dir", str(cache)])
    assert fetched.exit_code == 0, fetched.output
    located = locate_weights(MUQ, cache_dir=cache)
    assert sorted(located.requires) == sorted(spec.repo_id for spec in MUQ.requires)
    assert located.sha256 == sha256(checkpoint(muq_repos))
    assert not (located.directory / "README.md").exists()
    assert located.sha256[:16] in runner.invoke(app, ["models", "list", "--cache-dir", str(cache)]).output

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    audio = music(3.0)[:, None]
    np.testing.assert_array_equal(MuqEmbedder().frames(audio), MuqEmbedder(muq_repos).frames(audio))
