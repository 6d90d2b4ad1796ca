"""A user's folder of good, corrupt and oddly formatted files through the real flows."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from audio_files import write_audio_folder, write_captions_csv
from typer.testing import CliRunner

from flows.cli import app
from flows.pipeline import pipeline
from store.layout import DataRoot
from store.manifest import read_manifest
from store.shards import iter_shards
from store.status import read_status

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def processed(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[DataRoot, dict, list]:
    folder = tmp_path_factory.mktemp("my-music")
    fixtures = write_audio_folder(folder)
    captions = write_captions_csv(folder, fixtures)
    root = DataRoot(tmp_path_factory.mktemp("root"))
    summaries = pipeline(["local"], options={"local": {"path": str(folder), "captions": str(captions.path)}},
                                models=["dsp"], root=str(root.path))
    return root, fixtures, summaries


def _item_id(root: DataRoot, path: Path) -> str:
    (row,) = [r for r in read_manifest(root.manifest("local")) if r.source == path.name]
    return row.item_id


def test_every_good_file_becomes_a_canonical_clip(processed: tuple) -> None:
    root, fixtures, _ = processed
    good = [f for f in fixtures.values() if f.ok]
    assert len(good) >= 10
    for fixture in good:
        info = sf.info(root.clip_path("local", _item_id(root, fixture.path)))
        assert (info.samplerate, info.subtype, info.format) == (44_100, "PCM_16", "FLAC")
        assert info.channels == min(fixture.channels, 2)
        assert info.duration == pytest.approx(fixture.duration_s, abs=0.05)


def test_every_bad_file_is_recorded_with_its_reason(processed: tuple) -> None:
    root, fixtures, summaries = processed
    records = read_status(root.status_dir("preprocess", "local"))
    for name, fixture in fixtures.items():
        if fixture.ok:
            continue
        record = records[_item_id(root, fixture.path)]
        assert (record.outcome, record.reason) == ("failed", fixture.reason), name
        assert fixture.path.name in record.detail
        assert not root.clip_path("local", record.item_id).exists()
    preprocess = next(s for s in summaries if s.stage == "preprocess")
    assert preprocess.failed == sum(not f.ok for f in fixtures.values())


def test_good_files_are_embedded_and_the_report_explains_every_failure(processed: tuple) -> None:
    root, fixtures, summaries = processed
    embed = next(s for s in summaries if s.stage == "embed:dsp")
    assert embed.ok == sum(f.ok for f in fixtures.values()) and embed.failed == 0
    assert root.embedded("local") == [("musictext-dsp-1", "dsp")]  # embeddings/<space>/<model>/<dataset>
    stored = list(iter_shards(root.shard_dir("dsp", "local", "musictext-dsp-1")))
    assert sum(len(shard.item_ids) for shard in stored) == embed.ok
    assert all(shard.space == "musictext-dsp-1" and (shard.frames() > 0).all() for shard in stored)
    report = (root.reports_dir() / "local" / "verification.md").read_text()
    assert "undecodable" in report and "truncated" in report
    verify = next(s for s in summaries if s.stage == "verify")
    assert "verdict ok" in verify.extra


def test_status_command_shows_the_failures(processed: tuple) -> None:
    root, _, _ = processed
    result = CliRunner().invoke(app, ["status", "--root", str(root.path)])
    assert result.exit_code == 0, result.output
    for reason in ("undecodable", "empty", "truncated", "silent", "non_finite", "too_short"):
        assert reason in result.output


def test_preprocessing_gives_every_worker_a_unit(processed: tuple) -> None:
    """Fewer items than ``unit_size`` (100) still make one unit per worker (2), not one unit for one worker."""
    root, fixtures, _ = processed
    units = {path.name.rsplit("-", 1)[0] for path in root.status_dir("preprocess", "local").glob("unit-*.parquet")}
    assert len(fixtures) < 100 and len(units) == 2
