"""The batched torch runtime on the CPU with the tiny random-weight MERT: the same vectors as the CPU runtime,
failures recorded per clip, out-of-memory fallback, DataLoader workers, background shard writing and the
decoding spread over the loader's workers. Runs in ``.venv-models`` only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="model tests run in .venv-models (the models extra)")

import soundfile  # noqa: E402

import embedders.torch_enrichment as torch_enrichment  # noqa: E402
from embedders.enrichment import enrich  # noqa: E402
from embedders.mert import MertEmbedder  # noqa: E402
from embedders.runtime import embed_clips, shard_attributes  # noqa: E402
from embedders.torch_runtime import TorchRuntime  # noqa: E402
from store.shard_stream import BackgroundWriter, write_results  # noqa: E402
from store.shards import ShardWriter, open_shard, shard_paths  # noqa: E402
from store.status import StatusRecord  # noqa: E402

CLIP_RATE = 44_100
WINDOW_S = 1.0
"""Short windows keep the test fast and still give clips of one, two and three windows."""


def write_clip(path: Path, seconds: float, seed: int, amplitude: float = 0.3) -> Path:
    """A canonical-style stereo FLAC clip: different harmonics left and right, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * CLIP_RATE)) / CLIP_RATE
    channels = [
        sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) * amplitude / 2
        + 0.03 * amplitude * rng.standard_normal(t.size)
        for f0 in rng.uniform(110, 880, 2)
    ]
    soundfile.write(path, np.stack(channels, axis=1).astype(np.float32), CLIP_RATE)
    return path


@pytest.fixture()
def clips(tmp_path: Path) -> list[tuple[str, Path]]:
    """Good clips of 3, 2.5 (a longer last window), 1.2 (one window) and 2 s, a corrupt file, a missing
    file and a clip too short for a single MERT frame."""
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    return [
        ("a", write_clip(tmp_path / "a.flac", 3.0, seed=1)),
        ("corrupt", corrupt),
        ("b", write_clip(tmp_path / "b.flac", 2.5, seed=2)),
        ("c", write_clip(tmp_path / "c.flac", 1.2, seed=3)),
        ("missing", tmp_path / "missing.flac"),
        ("blip", write_clip(tmp_path / "blip.flac", 0.01, seed=4)),
        ("d", write_clip(tmp_path / "d.flac", 2.0, seed=5)),
    ]


@pytest.fixture()
def embedder(snapshot: Path) -> MertEmbedder:
    return MertEmbedder(snapshot)


def reference(embedder: MertEmbedder, clips: list[tuple[str, Path]]) -> dict[str, np.ndarray | StatusRecord]:
    return dict(embed_clips(embedder, clips, chunk_s=WINDOW_S))


def assert_same_results(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for item_id, result in expected.items():
        if isinstance(result, StatusRecord):
            assert isinstance(got[item_id], StatusRecord), item_id
            assert (got[item_id].reason, got[item_id].detail) == (result.reason, result.detail)
        else:
            np.testing.assert_allclose(got[item_id], result, atol=1e-4, err_msg=item_id)


class Faulty:
    """The real embedder with a fault injected into ``frames_tensor``: a test double for bad models and
    small GPUs (``fault(audio, frames)`` may raise, or return changed frames)."""

    def __init__(self, inner: MertEmbedder, fault: Callable[[torch.Tensor], None] | None = None,
                 change: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.inner, self.fault, self.change = inner, fault, change
        self.batch_sizes: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def frames_tensor(self, audio: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(audio))
        if self.fault:
            self.fault(audio)
        frames = self.inner.frames_tensor(audio)
        return self.change(audio, frames) if self.change else frames


@pytest.mark.parametrize("shape", [(3, 7, 50), (2, 5, 1), (1, 4, 2), (4, 300, 97)])
def test_torch_enrichment_agrees_with_the_numpy_definition(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    frames = (rng.standard_normal(shape) * rng.uniform(0.1, 10, shape[:2])[..., None]).astype(np.float32)
    frames[0, 0, ::7] += 50.0  # outlier frames: the spread must be the quartiles', not the std's
    got = torch_enrichment.enrich(torch.from_numpy(frames))
    assert got.dtype == torch.float32 and got.shape == (shape[0], 3 * shape[1])
    np.testing.assert_allclose(got.numpy(), enrich(frames), atol=1e-5)


def test_torch_enrichment_edge_cases_match_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    zeros = np.zeros((2, 6, 9), dtype=np.float32)
    np.testing.assert_array_equal(torch_enrichment.enrich(torch.from_numpy(zeros)).numpy(), enrich(zeros))
    single = np.random.default_rng(0).standard_normal((2, 6, 1)).astype(np.float32)
    got = torch_enrichment.enrich(torch.from_numpy(single)).numpy()
    np.testing.assert_allclose(got, enrich(single), atol=1e-5)
    assert not np.any(got[:, 6:])  # T == 1: spread and drift are 0
    with pytest.raises(ValueError, match="no time steps"):
        torch_enrichment.enrich(torch.zeros((1, 6, 0)))
    many = np.random.default_rng(1).standard_normal((2, 50, 40)).astype(np.float32)
    monkeypatch.setattr(torch_enrichment, "BLOCK_ELEMENTS", 2 * 40 * 3)  # blocks of 3 dimensions
    got = torch_enrichment.enrich(torch.from_numpy(many)).numpy()
    np.testing.assert_allclose(got, enrich(many), atol=1e-5)


def test_vectors_and_failures_equal_the_cpu_runtime(
    embedder: MertEmbedder, clips: list[tuple[str, Path]]
) -> None:
    expected = reference(embedder, clips)
    got = dict(TorchRuntime(embedder, window_s=WINDOW_S, batch_size=3, num_workers=0).embed(clips))
    assert_same_results(got, expected)
    assert {key for key, value in got.items() if isinstance(value, np.ndarray)} == {"a", "b", "c", "d"}
    reasons = {key: value.reason for key, value in got.items() if isinstance(value, StatusRecord)}
    assert reasons == {"corrupt": "undecodable", "missing": "missing_clip", "blip": "too_short_clip"}


def test_dataloader_workers_give_the_same_vectors(
    embedder: MertEmbedder, clips: list[tuple[str, Path]]
) -> None:
    got = {}
    runtime = TorchRuntime(embedder, window_s=WINDOW_S, batch_size=4, num_workers=2)
    for item_id, result in runtime.embed(clips):
        assert not torch.is_inference_mode_enabled()  # the runtime's inference mode stays inside it
        got[item_id] = result
    assert_same_results(got, reference(embedder, clips))


def test_out_of_memory_halves_the_batch_and_the_vectors_do_not_change(
    embedder: MertEmbedder, clips: list[tuple[str, Path]]
) -> None:
    def small_gpu(audio: torch.Tensor) -> None:
        if len(audio) > 3:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: tried {len(audio)} windows")

    faulty = Faulty(embedder, fault=small_gpu)
    runtime = TorchRuntime(faulty, window_s=WINDOW_S, batch_size=8, num_workers=0)
    got = dict(runtime.embed(clips))
    # one loader batch: six 1 s windows (fail, then halves of 3), then b's 1.5 s, c's 1.2 s and blip's windows
    assert faulty.batch_sizes == [6, 3, 3, 1, 1, 1]
    assert runtime.batch_size == 3
    assert_same_results(got, reference(embedder, clips))


def test_a_window_that_never_fits_is_recorded_and_the_unit_goes_on(
    embedder: MertEmbedder, clips: list[tuple[str, Path]]
) -> None:
    def long_windows_oom(audio: torch.Tensor) -> None:
        if audio.shape[-1] > 1.4 * embedder.sample_rate:  # only the 1.5 s last window of clip "b"
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    got = dict(TorchRuntime(Faulty(embedder, fault=long_windows_oom), window_s=WINDOW_S, batch_size=4,
                            num_workers=0).embed(clips))
    assert got["b"].reason == "out_of_memory" and "single 1 s window" in got["b"].detail
    expected = reference(embedder, clips)
    for item_id in ("a", "c", "d"):
        np.testing.assert_allclose(got[item_id], expected[item_id], atol=1e-4)


def test_nan_output_and_model_errors_fail_only_their_clip(
    embedder: MertEmbedder, clips: list[tuple[str, Path]], tmp_path: Path
) -> None:
    loud = write_clip(tmp_path / "loud.flac", 2.0, seed=6, amplitude=0.9)
    quiet = write_clip(tmp_path / "quiet.flac", 2.0, seed=7, amplitude=0.01)
    clips = [*clips, ("loud", loud), ("quiet", quiet)]

    def nan_when_loud(audio: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        loud_rows = audio.abs().amax(dim=(1, 2)) > 0.45
        return torch.where(loud_rows[:, None, None], torch.full_like(frames, torch.nan), frames)

    def error_when_quiet(audio: torch.Tensor) -> None:
        if (audio.abs().amax(dim=(1, 2)) < 0.05).any():
            raise RuntimeError("a kernel failed")

    faulty = Faulty(embedder, fault=error_when_quiet, change=nan_when_loud)
    got = dict(TorchRuntime(faulty, window_s=WINDOW_S, batch_size=16, num_workers=0).embed(clips))
    assert got["loud"].reason == "non_finite_embedding"
    assert got["quiet"].reason == "embedder_error" and "a kernel failed" in got["quiet"].detail
    expected = reference(embedder, clips)
    for item_id in ("a", "b", "c", "d"):
        np.testing.assert_allclose(got[item_id], expected[item_id], atol=1e-4)


def test_results_are_written_in_the_background_and_returns_the_failures(
    embedder: MertEmbedder, clips: list[tuple[str, Path]], tmp_path: Path
) -> None:
    runtime = TorchRuntime(embedder, window_s=WINDOW_S, batch_size=3, num_workers=0)
    with ShardWriter(tmp_path / "shards", shard_attributes(embedder), chunk_rows=2) as writer:
        done, failures = write_results(runtime.embed(clips), writer, chunk_rows=2)
    assert done == ["a", "b", "c", "d"]
    assert sorted(record.item_id for record in failures) == ["blip", "corrupt", "missing"]
    shard = open_shard(writer.path)
    assert shard.item_ids == done
    expected = reference(embedder, clips)
    np.testing.assert_allclose(shard.embeddings(), np.stack([expected[item] for item in done]), atol=1e-4)


def test_a_failing_background_write_is_raised_and_the_shard_is_not_published(
    embedder: MertEmbedder, tmp_path: Path
) -> None:
    directory = tmp_path / "shards"
    with (
        pytest.raises(RuntimeError, match="shard writer thread failed") as error,
        ShardWriter(directory, shard_attributes(embedder)) as writer,
        BackgroundWriter(writer, chunk_rows=2) as background,
    ):
        background.put("x", np.ones(3, dtype=np.float32))  # not the shard's dimension
    assert isinstance(error.value.__cause__, ValueError)
    assert shard_paths(directory) == []
