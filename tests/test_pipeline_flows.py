"""The real flows end to end on a small synthetic corpus: outputs, idempotent re-runs, kill-and-resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kill import count_files, leftovers, run_until

from embedders import embedder_spec
from flows.pipeline import pipeline
from store.layout import DataRoot, item_key
from store.manifest import read_manifest
from store.shards import iter_shards, shard_paths
from verification.report import status_counts

pytestmark = pytest.mark.integration

ITEMS = 10
MUSICTEXT = str(Path(sys.executable).with_name("musictext"))
DSP_SPACE = embedder_spec("dsp").space


def embeddings(root: DataRoot, dataset: str = "synthetic", model: str = "dsp") -> dict[str, np.ndarray]:
    vectors = {}
    for shard in iter_shards(root.shard_dir(model, dataset, embedder_spec(model).space)):
        for item_id, vector in zip(shard.item_ids, shard.embeddings(), strict=True):
            assert item_id not in vectors, f"{item_id} embedded twice"
            vectors[item_id] = vector
    return vectors


def file_times(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


@pytest.fixture(scope="module")
def reference(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    """One uninterrupted pipeline run: the outputs every other run must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    os.environ["MUSICTEXT_UNIT_SIZE"] = "4"
    try:
        pipeline(["synthetic"], limit=ITEMS, models=["dsp"], root=str(root))
    finally:
        del os.environ["MUSICTEXT_UNIT_SIZE"]
    return DataRoot(root)


def test_pipeline_leaves_every_output(reference: DataRoot) -> None:
    rows = read_manifest(reference.manifest("synthetic"))
    assert len(rows) == ITEMS
    assert all(reference.clip_path("synthetic", r.item_id).exists() for r in rows)
    shards = shard_paths(reference.shard_dir("dsp", "synthetic", DSP_SPACE))
    assert len(shards) == 3  # units of 4, 4, 2 items
    assert {p.relative_to(reference.path).parent for p in shards} == {Path("embeddings/musictext-dsp-1/dsp/synthetic")}
    assert reference.embedded("synthetic") == [(DSP_SPACE, "dsp")] and reference.legacy_shard_dirs() == []
    for shard in iter_shards(reference.shard_dir("dsp", "synthetic", DSP_SPACE)):
        assert shard.space == DSP_SPACE and shard.attrs["precision"] == "reference"
        assert (shard.frames() > 1).all()  # every clip is seconds long: many dsp frames each
    vectors = embeddings(reference)
    assert set(vectors) == {r.item_id for r in rows}
    assert np.allclose([np.linalg.norm(v) for v in vectors.values()], 1.0, atol=1e-4)
    report = reference.reports_dir() / "synthetic" / "verification.json"
    assert report.exists() and (report.with_suffix(".md")).exists()
    counts = {(c["dataset"], c["stage"]): c for c in status_counts(reference)}
    assert counts[("synthetic", "preprocess")]["ok"] == ITEMS
    assert all(c["failed"] == 0 and c["pending"] == 0 for c in counts.values())
    assert leftovers(reference.path) == []


def test_rerun_with_nothing_new_does_no_work(reference: DataRoot) -> None:
    clips_before = file_times(reference.clip_dir("synthetic"))
    shards_before = shard_paths(reference.shard_dir("dsp", "synthetic", DSP_SPACE))
    manifest_before = reference.manifest("synthetic").stat().st_mtime_ns
    summaries = pipeline(["synthetic"], limit=ITEMS, models=["dsp"], root=str(reference.path))
    assert [s.worked for s in summaries] == [0] * len(summaries)
    assert file_times(reference.clip_dir("synthetic")) == clips_before
    assert shard_paths(reference.shard_dir("dsp", "synthetic", DSP_SPACE)) == shards_before
    assert reference.manifest("synthetic").stat().st_mtime_ns == manifest_before


def test_growing_the_limit_only_does_the_new_items(reference: DataRoot, tmp_path: Path) -> None:
    root = tmp_path / "grow"
    pipeline(["synthetic"], limit=4, models=["dsp"], root=str(root))
    summaries = {s.stage: s for s in pipeline(["synthetic"], limit=6, models=["dsp"], root=str(root))}
    assert summaries["preprocess"].worked == 2 and summaries["preprocess"].done_before == 4
    assert summaries["embed:dsp"].worked == 2
    grown, ref = embeddings(DataRoot(root)), embeddings(reference)
    assert len(grown) == 6
    for item_id, vector in grown.items():
        np.testing.assert_array_equal(vector, ref[item_id])


@pytest.mark.parametrize("stage", ["acquire", "preprocess", "embed"])
def test_killed_run_resumes_to_the_same_outputs(stage: str, reference: DataRoot, cli_env: dict[str, str],
                                                tmp_path: Path) -> None:
    root = DataRoot(tmp_path / "killed")
    env = {**cli_env, "MUSICTEXT_ROOT": str(root.path), "MUSICTEXT_UNIT_SIZE": "4"}
    args = [MUSICTEXT, "pipeline", "--dataset", "synthetic", "--limit", str(ITEMS), "--model", "dsp"]
    midway = {
        "acquire": lambda: count_files(root.raw_dir("synthetic"), "*.wav") >= 2,
        "preprocess": lambda: count_files(root.clip_dir("synthetic"), "*.flac") >= 2,
        "embed": lambda: count_files(root.shard_dir("dsp", "synthetic", DSP_SPACE), ".shard*.tmp") >= 1,
    }[stage]
    assert run_until(args, env, midway), f"the run finished before reaching the middle of {stage}"

    finished = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert leftovers(root.path) == []
    for item_id in embeddings(reference):  # a difference names the first stage whose output differs
        for path in (root.raw_dir("synthetic") / f"{item_key(item_id)}.wav", root.clip_path("synthetic", item_id)):
            reference_path = reference.path / path.relative_to(root.path)
            np.testing.assert_array_equal(sf.read(path)[0], sf.read(reference_path)[0], err_msg=str(path))
    resumed, expected = embeddings(root), embeddings(reference)
    assert set(resumed) == set(expected)
    for item_id, vector in expected.items():
        np.testing.assert_array_equal(resumed[item_id], vector, err_msg=item_id)


def test_flows_publish_counts_progress_and_report_artifacts(reference: DataRoot) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["synthetic-preprocess-counts", "synthetic-embed-dsp-counts", "synthetic-preprocess-progress",
            "synthetic-verification-report"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == set(keys)
    progress = [a.data for a in artifacts if a.key == "synthetic-preprocess-progress"]
    assert 100.0 in progress  # (runs killed by other tests leave theirs part-way)
    assert by_key["synthetic-verification-report"].type == "markdown"
    assert '"stage": "preprocess"' in str(by_key["synthetic-preprocess-counts"].data).replace("'", '"')


def assert_same_outputs(root: DataRoot, reference: DataRoot) -> None:
    """Same manifest rows, the same clip samples and the same vectors as the reference run (to float32 rounding)."""
    assert read_manifest(root.manifest("synthetic")) == read_manifest(reference.manifest("synthetic"))
    for row in read_manifest(reference.manifest("synthetic")):
        ours, theirs = (sf.read(r.clip_path("synthetic", row.item_id)) for r in (root, reference))
        np.testing.assert_array_equal(ours[0], theirs[0])
    vectors, expected = embeddings(root), embeddings(reference)
    assert vectors.keys() == expected.keys()
    for item_id, vector in vectors.items():  # Dask workers run BLAS on one thread: sums differ in the last bit
        np.testing.assert_allclose(vector, expected[item_id], rtol=1e-5, atol=1e-7)


def test_dask_local_cluster_gives_the_same_outputs(reference: DataRoot, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICTEXT_UNIT_SIZE", "4")
    root = DataRoot(tmp_path / "dask")
    summaries = pipeline(["synthetic"], limit=ITEMS, models=["dsp"], root=str(root.path), dask=True)
    assert {s.stage: s.ok for s in summaries} == {"catalog": ITEMS, "acquire": ITEMS, "preprocess": ITEMS,
                                                 "embed:dsp": ITEMS, "verify": ITEMS}
    assert_same_outputs(root, reference)


def test_work_units_spread_over_the_workers_of_an_existing_dask_cluster(
        reference: DataRoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster

    monkeypatch.setenv("MUSICTEXT_UNIT_SIZE", "2")
    root = DataRoot(tmp_path / "cluster")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pipeline(["synthetic"], limit=ITEMS, models=["dsp"], root=str(root.path),
                 dask_address=cluster.scheduler_address)
        finished = client.run(lambda dask_worker: sum(entry[2] == "memory" for entry in dask_worker.state.log))
    assert len(finished) == 2
    assert all(count > 0 for count in finished.values()), finished  # both workers ran units
    assert sum(finished.values()) >= 4 * (ITEMS // 2)  # acquire, preprocess, embed and verify: 5 units each
    assert_same_outputs(root, reference)
