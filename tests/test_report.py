"""Dataset reports over a hand-built data root: real manifest, status records, FLAC clips and shards."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from store.layout import DataRoot
from store.manifest import ManifestRow, write_manifest
from store.shards import ShardAttributes, ShardWriter
from store.status import FailureClass, StatusRecord, unit_name, write_status
from verification.audio import check_clip
from verification.report import (
    EXAMPLES_PER_REASON,
    Checks,
    dataset_report,
    stage_summary,
    status_counts,
    target_label,
    write_report,
)
from verification.shards import check_shards, old_space_problems

DATASET = "demo"
MODEL = "dsp"
SPACE = "musictext-dsp-1"
TARGET = (SPACE, MODEL)
LABEL = f"{SPACE}/{MODEL}"
MERT = ("navidrome-2025.11", "mert")
RATE = 44_100
DIM = 8
TRANSIENT = FailureClass.TRANSIENT


def item(name: str) -> str:
    return f"{DATASET}:{name}"


@dataclass
class Demo:
    """The hand-built case every test starts from (seconds in brackets; '-' = no manifest span):

    * ``a`` [0–10]   acquired, clip 2 s, embedded, verified
    * ``b`` [-]      acquired, clip 2 s, embedded, verified
    * ``c`` [0–30]   acquire failed permanently (``video_unavailable``), as do ``g1``–``g7`` [-]
    * ``d`` [-]      acquire failed transiently (``http_503``)
    * ``e`` [0–5]    acquired, preprocess failed (``too_short``)
    * ``f`` [-]      acquired, clip 3 s, embed failed transiently (``out_of_memory``)
    """

    root: DataRoot

    def checks(self) -> Checks:
        clips = ["a", "b", "f"]
        problems = [
            problem
            for name in clips
            for problem in check_clip(item(name), self.root.clip_path(DATASET, item(name)),
                                      sample_rate=RATE, min_s=1.0, silence_dbfs=-60.0)
        ]
        manifest_ids = {row.item_id for row in ROWS}
        shard_dir = self.root.shard_dir(MODEL, DATASET, SPACE)
        shards = {LABEL: check_shards(shard_dir, manifest_ids=manifest_ids, dim=DIM, space=SPACE)}
        return Checks(clips_checked=len(clips), clip_problems=problems, shards=shards)


GONE = [f"g{n}" for n in range(1, 8)]
ROWS = [
    ManifestRow(item("a"), DATASET, "src/a", start_s=0.0, end_s=10.0),
    ManifestRow(item("b"), DATASET, "src/b"),
    ManifestRow(item("c"), DATASET, "src/c", start_s=0.0, end_s=30.0),
    ManifestRow(item("d"), DATASET, "src/d"),
    ManifestRow(item("e"), DATASET, "src/e", start_s=0.0, end_s=5.0),
    ManifestRow(item("f"), DATASET, "src/f"),
    *(ManifestRow(item(name), DATASET, f"src/{name}") for name in GONE),
]


def record_unit(directory: Path, records: list[StatusRecord]) -> None:
    write_status(directory, unit_name(r.item_id for r in records), records, code_version="test")


def write_clip(root: DataRoot, name: str, seconds: float) -> None:
    path = root.clip_path(DATASET, item(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), RATE, subtype="PCM_16", format="FLAC")


def write_embeddings(root: DataRoot, names: list[str]) -> None:
    attrs = ShardAttributes(model=MODEL, model_revision="1", dim=DIM, enrichment="mean-iqr-diff",
                            sample_rate=22_050, window_s=1.0, hop_s=0.5, musictext_version="test", space=SPACE)
    rows = np.random.default_rng(0).normal(size=(len(names), DIM)).astype(np.float32)
    with ShardWriter(root.shard_dir(MODEL, DATASET, SPACE), attrs) as writer:
        writer.append([item(name) for name in names], rows / np.linalg.norm(rows, axis=1, keepdims=True))


@pytest.fixture
def demo(tmp_path: Path) -> Demo:
    root = DataRoot(tmp_path / "data")
    write_manifest(root.manifest(DATASET), ROWS)
    acquire = root.status_dir("acquire", DATASET)
    record_unit(acquire, [
        *(StatusRecord.ok(item(name), "acquire") for name in "abef"),
        StatusRecord.failed(item("c"), "acquire", "video_unavailable", "c: the video was removed | private"),
        *(StatusRecord.failed(item(n), "acquire", "video_unavailable", f"{n}: removed") for n in GONE),
        StatusRecord.failed(item("d"), "acquire", "http_503", "d: server busy", failure_class=TRANSIENT),
    ])
    record_unit(root.status_dir("preprocess", DATASET), [
        *(StatusRecord.ok(item(name), "preprocess") for name in "abf"),
        StatusRecord.failed(item("e"), "preprocess", "too_short", "e: 0.4 s of audio, need 1 s"),
    ])
    for name, seconds in [("a", 2.0), ("b", 2.0), ("f", 3.0)]:
        write_clip(root, name, seconds)
    write_embeddings(root, ["a", "b"])
    record_unit(root.embed_status_dir(MODEL, DATASET, SPACE), [
        StatusRecord.ok(item("a"), "embed"), StatusRecord.ok(item("b"), "embed"),
        StatusRecord.failed(item("f"), "embed", "out_of_memory", "f: GPU ran out of memory",
                            failure_class=TRANSIENT),
    ])
    record_unit(root.status_dir("verify", DATASET), [StatusRecord.ok(item(n), "verify") for n in "ab"])
    return Demo(root)


def stages_by_label(report) -> dict:
    return {stage.label: stage for stage in report.stages}


def test_counts_hours_and_reasons(demo: Demo) -> None:
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    assert report.items == 13
    assert report.items_without_duration == len(GONE) + 1  # d and g1..g7: no span and no clip
    assert report.hours == round((10 + 2 + 30 + 5 + 3) / 3600, 6)
    counts = {label: (s.ok, s.failed, s.pending) for label, s in stages_by_label(report).items()}
    assert counts == {
        "catalog": (13, 0, 0),
        "acquire": (4, 9, 0),
        "preprocess": (3, 1, 9),
        f"embed ({LABEL})": (2, 1, 10),
        "verify": (2, 0, 11),
    }
    stages = stages_by_label(report)
    assert stages["preprocess"].hours_ok == round((10 + 2 + 3) / 3600, 6)
    assert stages[f"embed ({LABEL})"].hours_ok == round(12 / 3600, 6)

    unavailable, busy = stages["acquire"].failures
    assert (unavailable.reason, unavailable.count) == ("video_unavailable", 8)
    assert unavailable.classes == {"permanent": 8}
    assert len(unavailable.examples) == EXAMPLES_PER_REASON
    assert (busy.reason, busy.count, busy.classes) == ("http_503", 1, {"transient": 1})
    assert busy.examples[0].item_id == item("d") and busy.examples[0].detail == "d: server busy"
    assert [(g.reason, g.classes) for g in stages[f"embed ({LABEL})"].failures] == [
        ("out_of_memory", {"transient": 1})
    ]


def test_explained_failures_give_an_ok_verdict(demo: Demo) -> None:
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    assert [(c.name, c.checked, c.problems) for c in report.checks] == [("clips", 3, 0), ("shards", 2, 0)]
    assert report.stalled == []
    assert report.verdict == "ok"


def test_item_without_output_or_record_flips_the_verdict(demo: Demo) -> None:
    write_manifest(demo.root.manifest(DATASET), [*ROWS, ManifestRow(item("h"), DATASET, "src/h")])
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    assert report.verdict == "unexplained_failures"
    assert [(s.stage, s.model, s.count, s.examples) for s in report.stalled] == [
        ("acquire", None, 1, [item("h")])
    ]
    assert stages_by_label(report)["acquire"].pending == 1


def test_stalled_item_counts_once_with_several_models(demo: Demo) -> None:
    write_manifest(demo.root.manifest(DATASET), [*ROWS, ManifestRow(item("h"), DATASET, "src/h")])
    report = dataset_report(demo.root, DATASET, targets=[TARGET, MERT], checks=demo.checks())
    stalled = {s.label: s.examples for s in report.stalled}
    assert stalled == {"acquire": [item("h")], "embed (navidrome-2025.11/mert)": [item("a"), item("b"), item("f")]}


def test_clip_without_embed_record_stalls_at_embed(demo: Demo) -> None:
    write_clip(demo.root, "e", 2.0)
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    assert [(s.label, s.examples) for s in report.stalled] == [(f"embed ({LABEL})", [item("e")])]
    assert report.verdict == "unexplained_failures"


def test_shard_rows_outside_the_manifest_are_not_counted_as_done(demo: Demo) -> None:
    write_embeddings(demo.root, ["zz"])
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    assert stages_by_label(report)[f"embed ({LABEL})"].ok == 2
    shards = report.checks[1]
    assert [(g.reason, g.examples[0].item_id) for g in shards.reasons] == [("unknown_id", item("zz"))]
    assert report.verdict == "unexplained_failures"


def test_without_models_the_pipeline_ends_at_preprocess(demo: Demo) -> None:
    report = dataset_report(demo.root, DATASET, targets=[], checks=Checks())
    assert report.verdict == "ok"
    assert [s.label for s in report.stages] == ["catalog", "acquire", "preprocess", "verify"]


def test_verification_problem_flips_the_verdict(demo: Demo) -> None:
    clip = demo.root.clip_path(DATASET, item("b"))
    sf.write(clip, np.zeros(2 * RATE), RATE, subtype="PCM_16", format="FLAC")
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    assert report.verdict == "unexplained_failures"
    clips = report.checks[0]
    assert (clips.problems, [(g.reason, g.count) for g in clips.reasons]) == (1, [("silent", 1)])
    assert clips.reasons[0].examples[0].item_id == item("b")


def test_dataset_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="musictext ingest other"):
        dataset_report(DataRoot(tmp_path), "other", targets=[], checks=Checks())


def test_catalog_rejections_count_as_failures() -> None:
    rejected = StatusRecord.failed("demo:broken", "catalog", "bad_metadata", "row 3 has no caption")
    summary = stage_summary("catalog", {"demo:a"}, {"demo:broken": rejected}, done={"demo:a"})
    assert (summary.ok, summary.failed, summary.pending) == (1, 1, 0)
    assert summary.failures[0].reason == "bad_metadata"


def test_ok_record_without_output_is_pending() -> None:
    records = {"demo:a": StatusRecord.ok("demo:a", "preprocess")}
    summary = stage_summary("preprocess", {"demo:a"}, records, done=set())
    assert (summary.ok, summary.failed, summary.pending) == (0, 0, 1)


def test_written_json_and_markdown(demo: Demo) -> None:
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    json_path, markdown_path = write_report(demo.root, report)
    assert json_path == demo.root.path / "reports" / DATASET / "verification.json"
    assert markdown_path == json_path.with_suffix(".md")

    data = json.loads(json_path.read_text())
    assert data["verdict"] == "ok" and data["items"] == 13 and data["dataset"] == DATASET
    acquire = next(stage for stage in data["stages"] if stage["stage"] == "acquire")
    assert (acquire["ok"], acquire["failed"], acquire["pending"]) == (4, 9, 0)
    assert acquire["failures"][0]["reason"] == "video_unavailable"
    assert data["paths"]["manifest"] == str(demo.root.manifest(DATASET))
    assert list(data) == sorted(data)

    markdown = markdown_path.read_text()
    assert markdown.startswith(f"# Verification report: {DATASET}\n")
    assert "Verdict: **ok**" in markdown
    assert "13 items, 0:00:50 of audio (8 of unknown duration)" in markdown
    assert "| preprocess | 3 | 1 | 9 | 0:00:15 |" in markdown
    assert "| acquire | 4 | 9 | 0 |" in markdown
    assert "| acquire | `video_unavailable` | 8 | 8 | 0 |" in markdown
    assert f"| embed ({LABEL}) | `out_of_memory` | 1 | 0 | 1 |" in markdown
    assert f"| shards ({LABEL}) | 2 rows in 1 shard(s); revision 1, dim {DIM} | 0 |" in markdown
    assert "removed \\| private" in markdown
    assert str(demo.root.shard_dir(MODEL, DATASET, SPACE)) in markdown
    assert data["paths"][f"embeddings/{LABEL}"] == str(demo.root.path / "embeddings" / SPACE / MODEL / DATASET)


def test_markdown_lists_stalled_items_and_problems(demo: Demo) -> None:
    write_manifest(demo.root.manifest(DATASET), [*ROWS, ManifestRow(item("h"), DATASET, "src/h")])
    demo.root.clip_path(DATASET, item("a")).unlink()
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    markdown = write_report(demo.root, report)[1].read_text()
    assert "1 stalled item(s) without a record, 1 verification problem(s)" in markdown
    assert "Verdict: **unexplained failures**" in markdown
    assert "| acquire | 1 | `demo:h` |" in markdown
    assert "| clips | `missing_clip` | 1 |" in markdown


def test_status_counts(demo: Demo) -> None:
    record_unit(demo.root.embed_status_dir("mert", DATASET, MERT[0]), [
        StatusRecord.failed(item("a"), "embed", "missing_weights", "download the MERT weights first"),
    ])
    rows = status_counts(demo.root)
    counts = {(c["stage"], c["model"]): (c["ok"], c["failed"], c["pending"]) for c in rows}
    assert counts == {
        ("catalog", None): (13, 0, 0),
        ("acquire", None): (4, 9, 0),
        ("preprocess", None): (3, 1, 9),
        (f"embed ({LABEL})", LABEL): (2, 1, 10),
        ("embed (navidrome-2025.11/mert)", "navidrome-2025.11/mert"): (0, 1, 12),
        ("verify", None): (2, 0, 11),
    }
    assert {c["dataset"] for c in rows} == {DATASET}
    reasons = {(c["stage"], reason): n for c in rows for reason, n in c["reasons"].items()}
    assert reasons[("embed (navidrome-2025.11/mert)", "missing_weights")] == 1


def test_target_labels_name_space_and_model() -> None:
    assert target_label(TARGET) == LABEL == "musictext-dsp-1/dsp"


def test_old_space_shards_are_a_check_of_their_own_and_flip_the_verdict(demo: Demo) -> None:
    legacy = demo.root.path / "embeddings" / MODEL / DATASET
    attrs = ShardAttributes(model=MODEL, model_revision="1", dim=DIM, enrichment="mean-iqr-diff",
                            sample_rate=22_050, window_s=1.0, hop_s=0.5, musictext_version="old")
    with ShardWriter(legacy, attrs) as writer:
        writer.append([item("a")], np.eye(1, DIM, dtype=np.float32))
    assert demo.root.legacy_shard_dirs(DATASET) == [legacy]
    checks = demo.checks()
    checks.old_spaces = old_space_problems(demo.root.legacy_shard_dirs(DATASET), {MODEL: SPACE})

    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=checks)

    assert [(c.name, c.model, c.checked, c.problems) for c in report.checks] == [
        ("clips", None, 3, 0), ("shards", LABEL, 2, 0), ("old-space shards", None, 1, 1)]
    assert report.verdict == "unexplained_failures"
    assert stages_by_label(report)[f"embed ({LABEL})"].ok == 2  # the old shard counts for nothing
    markdown = write_report(demo.root, report)[1].read_text()
    assert "| old-space shards | 1 directory | 1 |" in markdown
    assert f"`musictext embed {DATASET} --model {MODEL}`" in markdown


def _cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def test_a_damaged_record_is_listed_as_quarantined_and_its_items_count_as_not_done(demo: Demo) -> None:
    (unit,) = demo.root.status_dir("verify", DATASET).glob("unit-*.parquet")
    _cut_short(unit)
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    assert stages_by_label(report)["verify"].ok == 0
    assert report.verdict == "ok"  # verify records are re-made by the next verify; nothing is unexplained
    (moved,) = report.quarantined
    assert moved.original == f"status/verify/{DATASET}/{unit.name}"
    assert (demo.root.path / moved.moved_to).exists() and not unit.exists()
    json_path, markdown_path = write_report(demo.root, report)
    next_step = json.loads(json_path.read_text())["quarantined"][0]["next_step"]
    assert next_step == f"the next verify of {DATASET} plans its items again"
    markdown = markdown_path.read_text()
    assert "## Quarantined files" in markdown
    assert f"| `status/verify/{DATASET}/{unit.name}` | `{moved.moved_to}` |" in markdown


def test_a_damaged_shard_leaves_its_items_stalled_at_embed_and_is_listed(demo: Demo) -> None:
    (shard,) = demo.root.shard_dir(MODEL, DATASET, SPACE).glob("shard-*.h5")
    _cut_short(shard)
    report = dataset_report(demo.root, DATASET, targets=[TARGET], checks=demo.checks())
    assert report.verdict == "unexplained_failures" and report.problems == 0
    assert [(s.label, s.count) for s in report.stalled] == [(f"embed ({LABEL})", 2)]
    assert [m.next_step for m in report.quarantined] == [f"the next embed of {DATASET} with {MODEL} embeds its rows "
                                                         "again"]


def test_status_counts_pass_over_a_dataset_whose_manifest_is_damaged(demo: Demo) -> None:
    write_manifest(demo.root.manifest("second"), [ManifestRow("second:a", "second", "src/a")])
    _cut_short(demo.root.manifest(DATASET))
    assert {c["dataset"] for c in status_counts(demo.root)} == {"second"}
    assert not demo.root.manifest(DATASET).exists()
    with pytest.raises(FileNotFoundError, match=f"musictext ingest {DATASET}"):
        dataset_report(demo.root, DATASET, targets=[TARGET], checks=Checks())


def test_status_counts_a_damaged_shard_as_pending(demo: Demo) -> None:
    (shard,) = demo.root.shard_dir(MODEL, DATASET, SPACE).glob("shard-*.h5")
    _cut_short(shard)
    counts = {c["stage"]: (c["ok"], c["failed"], c["pending"]) for c in status_counts(demo.root)}
    assert counts[f"embed ({LABEL})"] == (0, 1, 12)
