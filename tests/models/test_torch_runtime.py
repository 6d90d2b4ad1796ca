"""The batched torch runtime on the CPU with tiny random-weight models (MERT; Music2Latent for its layouts):
vectors independent of batch size, DataLoader workers and batch mates, input order kept, pieces of equal shape
from several tracks sharing a forward pass, out-of-memory halving, failures recorded per track, background
shard writing with the frame count ``T``, torch enrichment equal to the numpy definition, and a ten-minute
track through bounded batches of 30 s windows. Runs in ``.venv-models`` only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="model tests run in .venv-models (the models extra)")

import soundfile  # noqa: E402
from tiny_weights import write_snapshot  # noqa: E402

import embedders.torch_enrichment as torch_enrichment  # noqa: E402
from embedders import get_embedder  # noqa: E402
from embedders.enrichment import enrich  # noqa: E402
from embedders.mert import MertEmbedder  # noqa: E402
from embedders.runtime import shard_attributes  # noqa: E402
from embedders.spec import NAVIDROME_SPACE  # noqa: E402
from embedders.torch_runtime import CPU_PIECES, TorchRuntime  # noqa: E402
from store.shard_stream import BackgroundWriter, write_results  # noqa: E402
from store.shards import Embedded, ShardWriter, open_shard, shard_paths  # noqa: E402
from store.status import FailureClass, StatusRecord  # noqa: E402

CLIP_RATE = 44_100
WINDOW = 30 * 24_000
Results = dict[str, Embedded | StatusRecord]


def write_clip(path: Path, seconds: float, seed: int, amplitude: float = 0.3, rate: int = CLIP_RATE,
               channels: int = 2) -> Path:
    """A canonical-style FLAC clip: different harmonics per channel, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    rows = [
        sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) * amplitude / 2
        + 0.03 * amplitude * rng.standard_normal(t.size)
        for f0 in rng.uniform(110, 880, channels)
    ]
    soundfile.write(path, np.stack(rows, axis=1).astype(np.float32), rate)
    return path


@pytest.fixture()
def embedder(tmp_path: Path) -> MertEmbedder:
    """MERT's computation (30 s windows every 5 s) with the smallest tiny model: a window costs little."""
    write_snapshot(tmp_path / "mert", small=True)
    return MertEmbedder(tmp_path / "mert")


@pytest.fixture()
def clips(tmp_path: Path) -> list[tuple[str, Path]]:
    """36 s (three windows), 2 s, a corrupt file, 3 s, 2 s again and 31 s (two windows)."""
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    return [
        ("long", write_clip(tmp_path / "long.flac", 36.0, seed=1)),
        ("a", write_clip(tmp_path / "a.flac", 2.0, seed=2)),
        ("corrupt", corrupt),
        ("b", write_clip(tmp_path / "b.flac", 3.0, seed=3)),
        ("c", write_clip(tmp_path / "c.flac", 2.0, seed=4)),
        ("full", write_clip(tmp_path / "full.flac", 31.0, seed=5)),
    ]


FRAMES = {"long": 3, "a": 1, "b": 1, "c": 1, "full": 2}


def run(embedder: Any, clips: list[tuple[str, Path]], **options: Any) -> Results:
    options = {"num_workers": 0} | options
    got = {}
    for item_id, result in TorchRuntime(embedder, **options).embed(clips):
        assert not torch.is_inference_mode_enabled()  # the runtime's inference mode stays inside it
        got[item_id] = result
    return got


def assert_same_vectors(got: Results, expected: Results, ids: list[str] | None = None) -> None:
    for item_id in ids or [item for item, result in expected.items() if isinstance(result, Embedded)]:
        assert isinstance(got[item_id], Embedded), (item_id, got[item_id])
        assert got[item_id].frames == expected[item_id].frames, item_id
        np.testing.assert_allclose(got[item_id].vector, expected[item_id].vector, atol=1e-5, err_msg=item_id)


class Recording:
    """Wraps the embedder's ``forward``: records each pass's shape and key, and lets a test inject faults
    (``fault(pieces, key)`` may raise) or change outputs (``change(pieces, outputs)``)."""

    def __init__(self, embedder: Any, monkeypatch: pytest.MonkeyPatch,
                 fault: Callable[[torch.Tensor, tuple], None] | None = None,
                 change: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.keys: list[tuple] = []
        inner = embedder.forward

        def forward(pieces: torch.Tensor, key: tuple) -> torch.Tensor:
            self.shapes.append(tuple(pieces.shape))
            self.keys.append(key)
            if fault:
                fault(pieces, key)
            outputs = inner(pieces, key)
            return change(pieces, outputs) if change else outputs

        monkeypatch.setattr(embedder, "forward", forward)

    @property
    def sizes(self) -> list[int]:
        return [shape[0] for shape in self.shapes]


def test_vectors_do_not_depend_on_batch_size_workers_or_batch_mates_and_keep_the_input_order(
    embedder: MertEmbedder, clips: list[tuple[str, Path]]
) -> None:
    one_at_a_time = run(embedder, clips, batch_size=1)
    assert list(one_at_a_time) == [item_id for item_id, _ in clips]
    assert {item_id: result.frames for item_id, result in one_at_a_time.items()
            if isinstance(result, Embedded)} == FRAMES
    assert one_at_a_time["corrupt"].reason == "undecodable"
    for options in ({"batch_size": 4}, {"batch_size": 16, "num_workers": 2}):
        got = run(embedder, clips, **options)
        assert list(got) == list(one_at_a_time), options
        assert_same_vectors(got, one_at_a_time)
        assert got["corrupt"].reason == "undecodable"
    vectors = [result.vector for result in one_at_a_time.values() if isinstance(result, Embedded)]
    assert all(vector.dtype == np.float32 and vector.shape == (3 * embedder.frame_dim,) for vector in vectors)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_pieces_of_one_shape_from_several_tracks_share_a_forward_pass(
    embedder: MertEmbedder, clips: list[tuple[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 36 s and 31 s tracks' five full windows are all 30 s pieces: gathered together, they go through two
    passes (four, then one); the short track's zero-padded window, gathered next, goes alone. On a CPU the
    runtime starts at CPU_PIECES."""
    assert TorchRuntime(embedder).batch_size == CPU_PIECES
    recording = Recording(embedder, monkeypatch)
    runtime = TorchRuntime(embedder, batch_size=4, num_workers=0)
    dict(runtime.embed([clips[0], clips[5], clips[1]]))
    assert recording.keys == [(WINDOW,)] * 3
    assert recording.shapes == [(4, 1, WINDOW), (1, 1, WINDOW), (1, 1, WINDOW)] and runtime.largest_batch == 4
    assert all(shape[1:] == (1, WINDOW) for shape in recording.shapes)


def test_out_of_memory_halves_the_batch_and_the_vectors_do_not_change(
    embedder: MertEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six 2 s clips: six pieces of one shape. A pass of more than three runs out of memory."""
    clips = [(f"clip{seed}", write_clip(tmp_path / f"{seed}.flac", 2.0, seed=seed)) for seed in range(6)]
    expected = run(embedder, clips, batch_size=1)

    def small_gpu(pieces: torch.Tensor, _key: tuple) -> None:
        if len(pieces) > 3:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: tried {len(pieces)} pieces")

    recording = Recording(embedder, monkeypatch, fault=small_gpu)
    runtime = TorchRuntime(embedder, batch_size=8, num_workers=0)
    got = dict(runtime.embed(clips))
    assert recording.sizes == [6, 3, 3]
    assert runtime.batch_size == 3 and runtime.largest_batch == 6
    assert list(got) == list(expected)
    assert_same_vectors(got, expected)


def test_a_piece_that_never_fits_is_recorded_and_the_unit_goes_on(
    embedder: MertEmbedder, clips: list[tuple[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = clips[1:]  # a, corrupt, b, c, full
    expected = run(embedder, clips, batch_size=4)

    def three_seconds_never_fit(pieces: torch.Tensor, key: tuple) -> None:
        audible = pieces[:, 0].ne(0)
        ends = audible.shape[-1] - audible.flip(-1).float().argmax(dim=-1)
        if (ends == 3 * 24_000).any():  # the window of clip "b", 3 s of audio then padding
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    Recording(embedder, monkeypatch, fault=three_seconds_never_fit)
    got = run(embedder, clips, batch_size=4)
    assert list(got) == list(expected)
    assert got["b"].reason == "out_of_memory" and "single piece of 30 s" in got["b"].detail
    assert_same_vectors(got, expected, ["a", "c", "full"])


def test_nan_output_and_model_errors_fail_only_their_track(
    embedder: MertEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five 2 s clips, one pass: a model error on the quiet one makes the runtime retry each piece alone;
    the loud one's NaN output makes its vector non-finite."""
    clips = [(f"clip{seed}", write_clip(tmp_path / f"{seed}.flac", 2.0, seed=seed)) for seed in range(3)]
    clips += [("loud", write_clip(tmp_path / "loud.flac", 2.0, seed=6, amplitude=0.9)),
              ("quiet", write_clip(tmp_path / "quiet.flac", 2.0, seed=7, amplitude=0.01))]
    expected = run(embedder, clips, batch_size=1)

    def error_when_quiet(pieces: torch.Tensor, _key: tuple) -> None:
        if (pieces.abs().amax(dim=(1, 2)) < 0.05).any():
            raise RuntimeError("a kernel failed")

    def nan_when_loud(pieces: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        loud = pieces.abs().amax(dim=(1, 2)) > 0.45
        return torch.where(loud[:, None], torch.full_like(outputs, torch.nan), outputs)

    recording = Recording(embedder, monkeypatch, fault=error_when_quiet, change=nan_when_loud)
    got = run(embedder, clips, batch_size=8)
    assert recording.sizes == [5, 1, 1, 1, 1, 1]
    assert got["loud"].reason == "non_finite_embedding"
    assert got["quiet"].reason == "embedder_error" and "a kernel failed" in got["quiet"].detail
    assert_same_vectors(got, expected, ["clip0", "clip1", "clip2"])


def test_clips_that_cannot_be_embedded_are_recorded_with_their_reasons(
    embedder: MertEmbedder, tmp_path: Path
) -> None:
    nan = 0.1 * np.ones((CLIP_RATE, 2), dtype=np.float32)
    nan[100, 0] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan, CLIP_RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "empty.wav", np.zeros((0, 2), dtype=np.float32), CLIP_RATE)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    clips = [("corrupt", corrupt), ("nan", tmp_path / "nan.wav"), ("good", write_clip(tmp_path / "g.flac", 1.0, 1)),
             ("empty", tmp_path / "empty.wav"), ("blip", write_clip(tmp_path / "blip.flac", 0.01, seed=2))]
    got = run(embedder, clips, num_workers=2)
    reasons = {item_id: result.reason for item_id, result in got.items() if isinstance(result, StatusRecord)}
    assert reasons == {"corrupt": "undecodable", "nan": "non_finite_audio", "empty": "empty"}
    assert all(got[item_id].item_id == item_id and got[item_id].stage == "embed" for item_id in reasons)
    assert "re-running it for this item re-creates the clip" in got["corrupt"].detail
    assert got["good"].frames == got["blip"].frames == 1  # 10 ms is one zero-padded window, as Navidrome's


def test_a_missing_clip_is_recorded_as_the_cpu_runtime_records_it(embedder: MertEmbedder, tmp_path: Path) -> None:
    got = run(embedder, [("missing", tmp_path / "missing.flac"), ("good", write_clip(tmp_path / "g.flac", 1.0, 1))])
    assert isinstance(got["good"], Embedded)
    assert (got["missing"].reason, got["missing"].failure_class) == ("missing_clip", FailureClass.TRANSIENT)


def test_music2latent_layouts_record_what_they_cannot_encode(music2latent_weights: Path, tmp_path: Path) -> None:
    """The stereo (library job) layout takes 44.1 kHz stereo files only; a track shorter than one latent frame
    (5 632 samples) gives no frame in either layout."""
    stereo = get_embedder("music2latent-stereo", weights=music2latent_weights)
    clips = [
        ("mono", write_clip(tmp_path / "mono.flac", 0.5, seed=1, channels=1)),
        ("48k", write_clip(tmp_path / "48k.flac", 0.5, seed=2, rate=48_000)),
        ("short", write_clip(tmp_path / "short.flac", 5631 / CLIP_RATE, seed=3)),
        ("good", write_clip(tmp_path / "good.flac", 0.5, seed=4)),
    ]
    got = run(stereo, clips, num_workers=2)
    assert (got["mono"].reason, got["mono"].failure_class) == ("not_stereo", FailureClass.PERMANENT)
    assert "Embed it with music2latent" in got["mono"].detail
    assert got["48k"].reason == "wrong_sample_rate" and "at 48000 Hz" in got["48k"].detail
    assert got["short"].reason == "too_short_clip" and "too short for music2latent-stereo" in got["short"].detail
    assert got["good"].frames == (round(0.5 * CLIP_RATE) - 1536) // 4096 == 5

    mono = run(get_embedder("music2latent", weights=music2latent_weights), clips)
    assert {item_id: result.frames if isinstance(result, Embedded) else result.reason
            for item_id, result in mono.items()} == {
        "mono": 5, "48k": 5, "short": "too_short_clip", "good": 5}


def test_results_are_written_in_the_background_with_their_frame_counts(
    embedder: MertEmbedder, clips: list[tuple[str, Path]], tmp_path: Path
) -> None:
    runtime = TorchRuntime(embedder, batch_size=3, num_workers=0)
    embedded: dict[str, Embedded | StatusRecord] = {}

    def kept(results: Iterator[tuple[str, Embedded | StatusRecord]]) -> Iterator[tuple[str, Embedded | StatusRecord]]:
        for item_id, result in results:
            embedded[item_id] = result
            yield item_id, result

    with ShardWriter(tmp_path / "shards", shard_attributes(embedder), chunk_rows=2) as writer:
        done, failures = write_results(kept(runtime.embed(clips)), writer, chunk_rows=2)
    assert done == ["long", "a", "b", "c", "full"]
    assert [record.item_id for record in failures] == ["corrupt"]
    shard = open_shard(writer.path)
    assert shard.item_ids == done
    assert shard.frames().tolist() == [FRAMES[item_id] for item_id in done]
    assert (shard.space, shard.attrs["precision"], shard.attrs["window_padding"]) == (
        NAVIDROME_SPACE, "reference", "zeros")
    assert shard.attrs["audio_input"] == "mono mean; torchaudio resample to 24000 Hz"
    np.testing.assert_array_equal(shard.embeddings(), np.stack([embedded[item].vector for item in done]))


def test_a_failing_background_write_is_raised_and_the_shard_is_not_published(
    embedder: MertEmbedder, tmp_path: Path
) -> None:
    directory = tmp_path / "shards"
    with (
        pytest.raises(RuntimeError, match="shard writer thread failed") as error,
        ShardWriter(directory, shard_attributes(embedder)) as writer,
        BackgroundWriter(writer, chunk_rows=2) as background,
    ):
        background.put("x", Embedded(np.ones(3, dtype=np.float32), 1))  # not the shard's dimension
    assert isinstance(error.value.__cause__, ValueError)
    assert shard_paths(directory) == []


def test_a_ten_minute_track_runs_in_bounded_batches_of_30s_windows(
    embedder: MertEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """115 windows (0, 5, …, 570 s), never more than ``batch_size`` of them on the device at once, and the
    same vector whatever that size. The 44.1 kHz file is decoded in blocks and resampled to 24 kHz."""
    path = tmp_path / "track.flac"
    rng = np.random.default_rng(0)
    with soundfile.SoundFile(path, "w", CLIP_RATE, 1, format="FLAC", subtype="PCM_16") as flac:
        for start in range(0, 600, 30):
            t = start + np.arange(30 * CLIP_RATE) / CLIP_RATE
            pitch = rng.uniform(110, 880, 30)[(t - start).astype(int)]
            flac.write((0.3 * np.sin(2 * np.pi * pitch * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    recording = Recording(embedder, monkeypatch)
    runtime = TorchRuntime(embedder, batch_size=4, num_workers=0)
    [(_, batched)] = runtime.embed([("track", path)])
    assert batched.frames == 115
    assert set(recording.shapes) <= {(4, 1, WINDOW), (3, 1, WINDOW)}
    assert sum(recording.sizes) == 115 and runtime.largest_batch == 4
    [(_, alone)] = TorchRuntime(embedder, batch_size=1, num_workers=0).embed([("track", path)])
    assert alone.frames == 115
    np.testing.assert_allclose(batched.vector, alone.vector, atol=1e-5)
    dim = embedder.frame_dim
    assert np.abs(batched.vector[dim : 2 * dim]).max() > 0  # many windows that differ: a spread


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
