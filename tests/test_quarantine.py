"""Damaged state files under real commands: ``musictext status`` and ``verify`` (typer's runner on the real app)
and the pipeline flow, over a data root the real pipeline built and files then cut short as a full disk would.

Each damaged file must be named once, moved to ``quarantine/`` with a note, its items planned again, and
nothing else touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedders import embedder_spec
from flows.cli import app
from flows.pipeline import pipeline
from store.layout import DataRoot
from store.manifest import read_manifest
from store.shards import iter_shards, shard_paths

pytestmark = pytest.mark.integration

ITEMS = 4
SPACE = embedder_spec("dsp").space
runner = CliRunner()


@pytest.fixture(scope="module")
def built(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataRoot]:
    """One pipeline run in units of 2 items: two status files per stage and two shards, so that damaging one
    shows the other is left alone."""
    root = DataRoot(tmp_path_factory.mktemp("built"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MUSICTEXT_UNIT_SIZE", "2")
        env.setenv("MUSICTEXT_CONFIG", os.devnull)
        pipeline(["synthetic"], limit=ITEMS, models=["dsp"], root=str(root.path))
        yield root


@pytest.fixture
def root(built: DataRoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataRoot:
    """A copy of the built root for one test to damage."""
    monkeypatch.setenv("MUSICTEXT_UNIT_SIZE", "2")
    monkeypatch.setenv("MUSICTEXT_CONFIG", os.devnull)
    shutil.copytree(built.path, tmp_path / "data", symlinks=True)
    return DataRoot(tmp_path / "data")


def cut_short(path: Path, keep: int = 300) -> bytes:
    """What a full disk or an interrupted copy leaves: the file's first bytes."""
    data = path.read_bytes()[:keep]
    path.write_bytes(data)
    return data


def units(root: DataRoot, stage: str) -> list[Path]:
    directory = root.embed_status_dir("dsp", "synthetic", SPACE) if stage == "embed" else \
        root.status_dir(stage, "synthetic")
    return sorted(directory.glob("unit-*.parquet"))


def shards(root: DataRoot) -> list[Path]:
    return shard_paths(root.shard_dir("dsp", "synthetic", SPACE))


def vectors(root: DataRoot) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for shard in iter_shards(root.shard_dir("dsp", "synthetic", SPACE)):
        for item_id, vector in zip(shard.item_ids, shard.embeddings(), strict=True):
            assert item_id not in found, f"{item_id} embedded twice"
            found[item_id] = vector
    return found


def in_quarantine(root: DataRoot, original: Path) -> tuple[bytes, dict[str, str]]:
    """The bytes and the note of ``original`` in quarantine (exactly one of each)."""
    relative = original.relative_to(root.path)
    moved = sorted((root.path / "quarantine" / relative.parent).glob(f"{relative.name}.*"))
    assert [p.suffix == ".json" for p in moved] == [False, True], moved
    note = json.loads(moved[1].read_text())
    assert note["original"] == str(relative) and note["moved_to"] == str(moved[0].relative_to(root.path))
    return moved[0].read_bytes(), note


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warning lines that announced files set aside."""
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "store.quarantine"]


def table_row(output: str, stage: str) -> list[str]:
    """The cells of ``stage``'s row in a rich table printed by the CLI."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.replace("┃", "│").split("│")[1:-1]]
        if len(cells) > 1 and cells[1] == stage:
            return cells
    raise AssertionError(f"no {stage} row in:\n{output}")


def test_status_names_each_damaged_file_once_and_counts_what_is_left(
    root: DataRoot, caplog: pytest.LogCaptureFixture
) -> None:
    record, shard = units(root, "preprocess")[0], shards(root)[0]
    record_bytes, shard_bytes = cut_short(record), cut_short(shard, keep=5000)
    kept = {p: p.read_bytes() for p in [units(root, "preprocess")[1], shards(root)[1]]}

    result = runner.invoke(app, ["status", "--root", str(root.path)])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "Traceback" not in result.output
    lines = warnings(caplog)
    assert len(lines) == 2
    for original, left in [(record, record_bytes), (shard, shard_bytes)]:
        moved, note = in_quarantine(root, original)
        assert moved == left and not original.exists()
        [line] = [line for line in lines if f"damaged {note['original']} (" in line]
        assert f"moved to {note['moved_to']}; {note['next_step']}" in line
    assert "the next preprocess of synthetic plans its items again" in " ".join(lines)
    assert "the next embed of synthetic with dsp embeds its rows again" in " ".join(lines)
    assert table_row(result.output, "preprocess")[2:5] == [str(ITEMS), "0", "0"]  # its clips still count
    assert table_row(result.output, f"embed ({SPACE}/dsp)")[2:5] == ["2", "0", "2"]  # the other shard's 2 count
    assert all(path.read_bytes() == data for path, data in kept.items())

    caplog.clear()
    again = runner.invoke(app, ["status", "--root", str(root.path)])
    assert again.exit_code == 0 and warnings(caplog) == []  # said once: nothing is damaged any more
    assert table_row(again.output, f"embed ({SPACE}/dsp)")[2:5] == ["2", "0", "2"]


def test_verify_sets_a_damaged_shard_aside_and_its_report_says_what_happens_next(
    root: DataRoot, caplog: pytest.LogCaptureFixture
) -> None:
    damaged, healthy = shards(root)
    kept = healthy.read_bytes()
    cut_short(damaged, keep=5000)

    result = runner.invoke(app, ["verify", "synthetic", "--root", str(root.path)])
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output  # 1: verdict not ok
    _, note = in_quarantine(root, damaged)
    [line] = warnings(caplog)
    assert line.startswith(f"damaged {note['original']} (") and "truncated file" in line
    assert "damaged, moved to quarantine/:" in result.output
    assert healthy.read_bytes() == kept
    report = json.loads((root.reports_dir() / "synthetic" / "verification.json").read_text())
    assert report["verdict"] == "unexplained_failures"  # 2 items lost their vectors: embed them again
    assert [(s["stage"], s["count"]) for s in report["stalled"]] == [("embed", 2)]
    assert [q["original"] for q in report["quarantined"]] == [note["original"]]
    markdown = (root.reports_dir() / "synthetic" / "verification.md").read_text()
    assert "## Quarantined files" in markdown and note["next_step"] in markdown
    assert report["checks"][1]["problems"] == 0 and report["checks"][1]["shards"] == 1


def test_verify_with_a_damaged_manifest_is_one_error_and_exit_2(
    root: DataRoot, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = root.manifest("synthetic")
    cut_short(manifest)
    result = runner.invoke(app, ["verify", "synthetic", "--root", str(root.path)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    [error] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "the manifest of 'synthetic' was damaged" in error
    assert "`musictext ingest synthetic` rebuilds it" in " ".join(result.output.split())
    [line] = warnings(caplog)
    assert line.startswith("damaged manifests/synthetic.parquet (") and "Parquet magic bytes" in line
    in_quarantine(root, manifest)


def test_the_pipeline_rebuilds_and_redoes_only_what_was_damaged(
    built: DataRoot, root: DataRoot, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = root.manifest("synthetic")
    damaged = [manifest, units(root, "acquire")[0], units(root, "preprocess")[1], shards(root)[0],
               units(root, "verify")[0]]
    healthy_shard = shards(root)[1]
    untouched = {p: p.read_bytes() for p in [healthy_shard, units(root, "preprocess")[0], units(root, "embed")[0],
                                             units(root, "embed")[1]]}
    clips = {p: p.stat().st_mtime_ns for p in [*root.clip_dir("synthetic").iterdir(),
                                               *root.raw_dir("synthetic").rglob("*.wav")]}
    lost_ids = set(next(iter_shards(built.shard_dir("dsp", "synthetic", SPACE))).item_ids)
    left = {path: cut_short(path, keep=5000 if path.suffix == ".h5" else 300) for path in damaged}

    summaries = {s.stage: s for s in pipeline(["synthetic"], limit=ITEMS, models=["dsp"], root=str(root.path))}

    notes = {path: in_quarantine(root, path) for path in damaged}
    assert all(notes[path][0] == left[path] for path in damaged)
    lines = warnings(caplog)
    assert len(lines) == len(damaged)  # each damaged file said once, in one line
    assert {line.split(" (", 1)[0] for line in lines} == {f"damaged {n['original']}" for _, n in notes.values()}

    assert read_manifest(manifest) == read_manifest(built.manifest("synthetic"))  # rebuilt by the catalog
    assert summaries["catalog"].done_before == 0 and "manifests/synthetic.parquet" in summaries["catalog"].extra
    assert summaries["acquire"].worked == 2 and summaries["acquire"].ok == 2  # re-recorded, WAVs kept
    assert summaries["preprocess"].worked == 2 and "kept" in summaries["preprocess"].extra
    assert str(damaged[2].relative_to(root.path)) in summaries["preprocess"].extra
    assert summaries["embed:dsp"].worked == 2 and "1 new shard(s)" in summaries["embed:dsp"].extra
    assert str(damaged[3].relative_to(root.path)) in summaries["embed:dsp"].extra
    assert "verdict ok" in summaries["verify"].extra and summaries["verify"].worked == 2

    assert all(path.read_bytes() == data for path, data in untouched.items())
    assert {p: p.stat().st_mtime_ns for p in clips} == clips  # no clip or WAV was made again
    (redone,) = [p for p in shards(root) if p != healthy_shard]
    assert set(next(s for s in iter_shards(redone.parent) if s.path == redone).item_ids) == lost_ids
    before, after = vectors(built), vectors(root)
    assert set(after) == set(before)
    for item_id in before:
        np.testing.assert_allclose(after[item_id], before[item_id], atol=1e-6)
