"""Settled stages (store/settled.py, flows/settling.py, flows/nothing_new.py): a run with nothing new starts no
flow and reads no corpus, and every kind of change makes the stage it touches plan again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from embedders import embedder_spec
from flows.nothing_new import settled_run
from flows.pipeline import pipeline
from flows.settling import acquire_settling, embed_settling, preprocess_settling, verify_settling
from flows.stage_names import DEFAULT_STAGES
from flows.summary import StageSummary
from store.layout import DataRoot
from store.manifest import read_manifest
from store.settings import load_settings
from store.status import FailureClass, StatusRecord

pytestmark = pytest.mark.integration

ITEMS = 6
MUSICTEXT = str(Path(sys.executable).with_name("musictext"))
SPACE = embedder_spec("dsp").space


def _settled(root: DataRoot, limit: int = ITEMS) -> list | None:
    return settled_run(["synthetic"], {}, limit, ["dsp"], DEFAULT_STAGES, str(root.path))


def _unsettled(root: DataRoot) -> set[str]:
    settings = load_settings(root=str(root.path))
    stages = {"acquire": acquire_settling(root, "synthetic", {}), "preprocess": preprocess_settling(root, "synthetic"),
              "embed": embed_settling(root, "synthetic", "dsp", SPACE),
              "verify": verify_settling(root, "synthetic", ["dsp"], settings)}
    return {name for name, settling in stages.items() if settling.settled() is None}


@pytest.fixture()
def finished(prefect_server: str, tmp_path: Path) -> DataRoot:
    root = DataRoot(tmp_path / "root")
    pipeline(["synthetic"], limit=ITEMS, models=["dsp"], root=str(root.path))
    return root


def test_a_finished_corpus_is_settled_and_the_cli_starts_no_flow(finished: DataRoot, cli_env: dict[str, str]) -> None:
    summaries = _settled(finished)
    assert summaries is not None
    assert [(s.stage, s.items, s.done_before, s.worked) for s in summaries] == [
        (stage, ITEMS, ITEMS, 0) for stage in ("catalog", "acquire", "preprocess", "embed:dsp", "verify")]
    assert summaries[-1].verdict == "ok"
    env = {**cli_env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # a flow run here could reach no server
    done = subprocess.run([MUSICTEXT, "pipeline", "--limit", str(ITEMS), "--root", str(finished.path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Nothing new: every stage is settled" in done.stdout
    assert "nothing new since" in done.stdout


def test_each_change_unsettles_the_stages_that_read_it(finished: DataRoot) -> None:
    clip = finished.clip_path("synthetic", read_manifest(finished.manifest("synthetic"))[0].item_id)
    clip.unlink()
    assert _unsettled(finished) == {"preprocess", "embed", "verify"}
    assert _settled(finished) is None
    by_stage = {s.stage: s for s in pipeline(["synthetic"], limit=ITEMS, models=["dsp"], root=str(finished.path))}
    assert by_stage["preprocess"].worked == 1 and by_stage["embed:dsp"].worked == 0
    assert "nothing new since" in by_stage["acquire"].extra, "the pipeline flow skips a settled stage too"
    assert _unsettled(finished) == set()

    stamp = next((finished.path / "settled" / "verify").rglob("*.json"))
    stamp.write_bytes(b"\xff{ not json")
    assert _unsettled(finished) == {"verify"}, "a damaged stamp only costs a full plan"

    assert _settled(finished, limit=ITEMS + 2) is None, "a catalog that lists new items is work"
    by_stage = {s.stage: s for s in pipeline(["synthetic"], limit=ITEMS + 2, models=["dsp"],
                                             root=str(finished.path))}
    assert [by_stage[stage].worked for stage in ("catalog", "acquire", "preprocess", "embed:dsp")] == [2] * 4
    assert _settled(finished, limit=ITEMS + 2) is not None


def test_a_transient_failure_leaves_the_stage_unsettled(tmp_path: Path) -> None:
    settling = preprocess_settling(DataRoot(tmp_path), "d")
    before = settling.before()
    summary = StageSummary("d", "preprocess", 3, 1, 2, 1, 1, 0, {"timeout": 1})
    ok = StatusRecord.ok("d:1", "preprocess")
    settling.settle(before, summary, [ok, StatusRecord.failed("d:2", "preprocess", "timeout", "slow",
                                                               failure_class=FailureClass.TRANSIENT)])
    assert settling.settled() is None, "the next run retries d:2"
    settling.settle(before, summary, [ok, StatusRecord.failed("d:2", "preprocess", "undecodable", "bad bytes")])
    found = settling.settled()
    assert found is not None and (found.items, found.done_before, found.skipped_permanent) == (3, 2, 1)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "d.parquet").write_bytes(b"new")
    assert settling.settled() is None, "a manifest that appeared since is a change"
