"""The embed flow with a weight-bearing model (tiny random-weight MERT) on the CPU, end to end: shards of
Navidrome's space that verify accepts, the batched torch runtime's vectors and frame counts, nothing new on a
re-run, one process per device, missing weights stopping the run before any work, and a killed run resuming.
Runs in ``.venv-models`` only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from prefect import task

pytest.importorskip("torch", reason="model tests run in .venv-models (the models extra)")

from kill import count_files, leftovers, run_until  # noqa: E402
from tiny_weights import write_snapshot  # noqa: E402

from embedders.mert import SPEC, MertEmbedder  # noqa: E402
from embedders.spec import NAVIDROME_SPACE  # noqa: E402
from embedders.torch_runtime import TorchRuntime  # noqa: E402
from embedders.weights import MissingWeightsError  # noqa: E402
from flows import stages  # noqa: E402
from flows.devices import device_runner, unit_device  # noqa: E402
from store.layout import DataRoot  # noqa: E402
from store.shards import Embedded, iter_shards, shard_paths  # noqa: E402
from store.status import read_status  # noqa: E402

pytestmark = pytest.mark.integration

ITEMS = 6
MUSICTEXT = str(Path(sys.executable).with_name("musictext"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("weights") / "mert"
    write_snapshot(directory)
    return directory


@pytest.fixture(scope="module")
def corpus(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clips of a small synthetic corpus, in units of two items, copied by each test that embeds."""
    root = tmp_path_factory.mktemp("corpus")
    stages.ingest("synthetic", {}, ITEMS, root=str(root))
    stages.preprocess("synthetic", root=str(root))
    return root


@pytest.fixture()
def root(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataRoot:
    copy = tmp_path / "data"
    subprocess.run(["cp", "-a", str(corpus), str(copy)], check=True)
    monkeypatch.setenv("MUSICTEXT_UNIT_SIZE", "2")
    monkeypatch.setenv("MUSICTEXT_EMBED_WORKERS", "1")
    return DataRoot(copy)


def shard_dir(root: DataRoot) -> Path:
    return root.shard_dir("mert", "synthetic", NAVIDROME_SPACE)


def stored(root: DataRoot) -> dict[str, Embedded]:
    """Every item's stored vector and frame count, from all shards of mert's space."""
    found: dict[str, Embedded] = {}
    for shard in iter_shards(shard_dir(root)):
        for item_id, vector, frames in zip(shard.item_ids, shard.embeddings(), shard.frames(), strict=True):
            assert item_id not in found, f"{item_id} embedded twice"
            found[item_id] = Embedded(vector, int(frames))
    return found


def expected_vectors(root: DataRoot, weights: Path) -> dict[str, Embedded]:
    """The batched torch runtime in this process, every clip decoded inline: what the flow must store."""
    clips = [(path.stem, path) for path in sorted(root.clip_dir("synthetic").glob("*.flac"))]
    by_key = dict(TorchRuntime(MertEmbedder(weights), num_workers=0).embed(clips))
    return {record.item_id: by_key[Path(record.output).stem]
            for record in read_status(root.status_dir("preprocess", "synthetic")).values()}


def assert_stored_as_expected(root: DataRoot, weights: Path) -> None:
    got, expected = stored(root), expected_vectors(root, weights)
    assert set(got) == set(expected)
    for item_id, embedded in expected.items():
        assert isinstance(embedded, Embedded), embedded
        assert got[item_id].frames == embedded.frames >= 1, item_id
        np.testing.assert_allclose(got[item_id].vector, embedded.vector, atol=1e-4, err_msg=item_id)


def test_embed_flow_fills_shards_that_verify_accepts_and_a_rerun_adds_nothing(root: DataRoot, weights: Path) -> None:
    summary = stages.embed("synthetic", "mert", root=str(root.path), weights=str(weights), devices=["cpu"])
    assert (summary.items, summary.ok, summary.failed) == (ITEMS, ITEMS, 0)
    assert len(shard_paths(shard_dir(root))) == ITEMS // 2
    assert root.path / "embeddings" / NAVIDROME_SPACE / "mert" / "synthetic" == shard_dir(root)
    assert_stored_as_expected(root, weights)
    shard = next(iter_shards(shard_dir(root)))
    assert shard.attrs["dim"] == 3 * MertEmbedder(weights).frame_dim
    assert shard.attrs["weights_sha256"] == MertEmbedder(weights).weights_sha256
    assert (shard.space, shard.attrs["audio_input"], shard.attrs["window_padding"], shard.attrs["precision"]) == (
        NAVIDROME_SPACE, SPEC.audio_input, "zeros", "reference")
    assert (shard.attrs["window_s"], shard.attrs["hop_s"], shard.attrs["sample_rate"]) == (30.0, 5.0, 24_000)
    assert os.listdir(root.embed_status_dir("mert", "synthetic", NAVIDROME_SPACE))

    verified = stages.verify("synthetic", ["mert"], root=str(root.path))
    assert "0 shard problem(s)" in verified.extra and "verdict ok" in verified.extra, verified.extra

    before = {path.name: path.stat().st_mtime_ns for path in shard_paths(shard_dir(root))}
    again = stages.embed("synthetic", "mert", root=str(root.path), weights=str(weights), devices=["cpu"])
    assert (again.done_before, again.worked) == (ITEMS, 0)
    after = {path.name: path.stat().st_mtime_ns for path in shard_paths(shard_dir(root))}
    assert after == before


def test_one_process_per_device_gives_the_same_vectors(root: DataRoot, weights: Path) -> None:
    summary = stages.embed("synthetic", "mert", root=str(root.path), weights=str(weights), devices=["cpu", "cpu"])
    assert (summary.ok, summary.failed) == (ITEMS, 0)
    assert_stored_as_expected(root, weights)


@task
def _where(index: int) -> tuple[int, str]:
    time.sleep(1.0)  # long enough that every worker of the pool gets units
    return os.getpid(), unit_device(None)


def test_the_device_runner_gives_each_worker_process_its_own_device(prefect_server: str) -> None:
    with device_runner(["cuda:0", "cuda:1"]) as runner:
        seen = {future.result() for future in [runner.submit(_where, {"index": index}) for index in range(6)]}
    device_of = dict(seen)
    assert len(device_of) == 2 and len(seen) == 2  # two processes, each always on the same device
    assert sorted(device_of.values()) == ["cuda:0", "cuda:1"]
    assert os.getpid() not in device_of


def test_missing_weights_stop_the_run_before_any_work(root: DataRoot, cli_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    empty = tmp_path / "no-weights"
    empty.mkdir()
    with pytest.raises(MissingWeightsError, match="musictext models fetch mert"):
        stages.embed("synthetic", "mert", root=str(root.path), weights=str(empty), devices=["cpu"])
    assert not shard_dir(root).exists()
    assert not root.embed_status_dir("mert", "synthetic", NAVIDROME_SPACE).exists()

    env = {**cli_env, "MUSICTEXT_ROOT": str(root.path), "HF_HUB_CACHE": str(tmp_path / "empty-cache"),
           "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([MUSICTEXT, "embed", "synthetic", "--model", "mert", "--device", "cpu"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "not in the Hugging Face cache" in message and "musictext models fetch mert" in message
    assert not shard_dir(root).exists()


def test_killed_embed_run_resumes_to_the_same_vectors(root: DataRoot, weights: Path, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "MUSICTEXT_ROOT": str(root.path), "MUSICTEXT_UNIT_SIZE": "1", "MUSICTEXT_EMBED_WORKERS": "1"}
    args = [MUSICTEXT, "embed", "synthetic", "--model", "mert", "--weights", str(weights), "--device", "cpu"]
    shards = shard_dir(root)
    assert run_until(args, env, lambda: count_files(shards, "shard-*.h5") >= 2), "the run finished before the kill"
    assert count_files(shards, "shard-*.h5") < ITEMS

    finished = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert leftovers(root.path) == []
    assert_stored_as_expected(root, weights)
    assert os.listdir(root.embed_status_dir("mert", "synthetic", NAVIDROME_SPACE))
