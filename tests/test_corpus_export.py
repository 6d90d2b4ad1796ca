"""``export-corpus``: a real data root (manifest, FLAC clips, HDF5 shards) exported, then read back by the
``datasets`` library, here and in a process that cannot import any musictext package.

The data root: seven items of one dataset over the splits ``train``, ``test``, ``valid`` and none (which goes to
``train``); mono and stereo 16-bit clips of different lengths at 44.1 kHz, as preprocess writes them; captions
in French, German and Japanese; ``demo:e`` has no clip, ``demo:c`` no vector, and ``demo:a``'s vector is in both
shards (the later one must win).

``datasets`` 5 decodes ``Audio`` with torchcodec, which is not installed here: the tests read the column with
``Audio(decode=False)`` and decode the FLAC bytes with soundfile.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import typer
import yaml
from import_blocker import without
from typer.testing import CliRunner

import store
from embedders import embedder_spec
from flows.corpus_cli import export_corpus as export_command
from store.corpus_export import CorpusExport, CorpusExportError, export_corpus, split_name
from store.layout import DataRoot
from store.manifest import ManifestRow, write_manifest
from store.shards import ShardAttributes, ShardWriter
from store.splits import canonical_split

DATASET = "demo"
RATE = 44_100
MODEL = "dsp"
SPACE = embedder_spec(MODEL).space
DIM = 8
ROWS = (
    ManifestRow("demo:a@0", DATASET, "a.mp3", "train", 0.0, 0.5, ("Un piano très doux", "für Élise, leise"),
                ("piano", "calm"), "CC-BY-4.0", ManifestRow.encode_extra({"group": "a"})),
    ManifestRow("demo:b@0", DATASET, "b.mp3", "train", 0.0, 0.3, ("Drums and bass",), ("drums",), "CC-BY-4.0"),
    ManifestRow("demo:c", DATASET, "c.wav", "test", captions=("静かなピアノの曲",), license="CC-BY-4.0"),
    ManifestRow("demo:d", DATASET, "d.wav", None, tags=("noise",), license="CC-BY-4.0"),
    ManifestRow("demo:e", DATASET, "e.wav", "valid", captions=("never acquired",), license="CC-BY-4.0"),
    ManifestRow("demo:f", DATASET, "f.wav", "test", captions=("A stereo organ",), license="CC-BY-4.0",
                extra=ManifestRow.encode_extra({"bpm": 120, "note": "ünïcode"})),
    ManifestRow("demo:g", DATASET, "g.wav", "valid", captions=("Short",), license="CC-BY-4.0"),
)
CLIPS = {"demo:a@0": (0.5, 1), "demo:b@0": (0.3, 2), "demo:c": (0.25, 1), "demo:d": (0.2, 1),
         "demo:f": (0.4, 2), "demo:g": (0.15, 1)}
"""Seconds and channels of each clip; ``demo:e`` has none."""
NO_VECTOR = "demo:c"
SPLITS = {"train": ["demo:a@0", "demo:b@0", "demo:d"], "test": ["demo:c", "demo:f"], "val": ["demo:g"]}
"""The exported splits: the manifest's, read canonical (its ``valid`` is ``val``)."""
BLOCKED = ("training", "embedders", "store", "flows", "downloaders", "processors", "verification")


def build_root(path: Path, rates: dict[str, int] | None = None) -> tuple[DataRoot, dict[str, np.ndarray]]:
    """The data root of the module docstring; ``rates`` overrides some clips' sample rate. Returns the root and
    the vector each item must be exported with."""
    root = DataRoot(path)
    rng = np.random.default_rng(7)
    write_manifest(root.manifest(DATASET), ROWS)
    for item_id, (seconds, channels) in CLIPS.items():
        samples = rng.integers(-20_000, 20_000, size=(int(seconds * RATE), channels), dtype=np.int16)
        clip = root.clip_path(DATASET, item_id)
        clip.parent.mkdir(parents=True, exist_ok=True)
        sf.write(clip, samples, (rates or {}).get(item_id, RATE), format="FLAC", subtype="PCM_16")
    vectors = {item_id: rng.normal(size=DIM).astype(np.float32) for item_id in CLIPS if item_id != NO_VECTOR}
    stale = rng.normal(size=DIM).astype(np.float32)
    first = {"demo:a@0": stale, "demo:b@0": vectors["demo:b@0"], "demo:d": vectors["demo:d"]}
    second = {"demo:f": vectors["demo:f"], "demo:a@0": vectors["demo:a@0"], "demo:g": vectors["demo:g"]}
    attrs = ShardAttributes(MODEL, "1", DIM, "mean+std", RATE, 1.0, 0.5, "0", space=SPACE)
    for part in (first, second):
        with ShardWriter(root.shard_dir(MODEL, DATASET, SPACE), attrs) as writer:
            writer.append(list(part), np.stack(list(part.values())))
    return root, vectors


def clip_digest(root: DataRoot, item_id: str) -> tuple[str, list[int]]:
    """sha256 and shape of a clip's 16-bit samples, as stored in the data root."""
    samples, _ = sf.read(root.clip_path(DATASET, item_id), dtype="int16", always_2d=True)
    return hashlib.sha256(samples.tobytes()).hexdigest(), list(samples.shape)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataRoot, dict[str, np.ndarray], CorpusExport]:
    base = tmp_path_factory.mktemp("corpus")
    root, vectors = build_root(base / "data")
    seen: list[tuple[int, int]] = []
    result = export_corpus(root, DATASET, base / "hf", model=MODEL, space=SPACE, shard_bytes=1,
                           progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6) and len(seen) == 6
    return root, vectors, result


def test_result_counts_splits_and_shards(exported: tuple[DataRoot, dict[str, np.ndarray], CorpusExport]) -> None:
    _, _, result = exported
    assert result.missing_clips == ("demo:e",)
    assert result.missing_vectors == (NO_VECTOR,)
    assert result.sample_rate == RATE and result.rows == 6
    assert {split.name: split.rows for split in result.splits} == {name: len(ids) for name, ids in SPLITS.items()}
    files = sorted(path.relative_to(result.out).as_posix() for path in result.out.rglob("*") if path.is_file())
    assert files == ["README.md", "data/test-00000-of-00002.parquet", "data/test-00001-of-00002.parquet",
                     "data/train-00000-of-00003.parquet", "data/train-00001-of-00003.parquet",
                     "data/train-00002-of-00003.parquet", "data/val-00000-of-00001.parquet"]
    assert [p.name for p in result.out.parent.iterdir() if p.name.startswith(".")] == []


def test_datasets_reads_back_every_value(exported: tuple[DataRoot, dict[str, np.ndarray], CorpusExport],
                                         tmp_path: Path) -> None:
    root, vectors, result = exported
    corpus = datasets.load_dataset("parquet", data_dir=str(result.out), cache_dir=str(tmp_path))
    assert list(corpus) == list(SPLITS)
    features = corpus["train"].features
    assert features["audio"] == datasets.Audio(sampling_rate=RATE)
    assert features["vector"] == datasets.Sequence(datasets.Value("float32"), length=DIM)
    by_id = {row.item_id: row for row in ROWS}
    for name, ids in SPLITS.items():
        rows = corpus[name].cast_column("audio", datasets.Audio(decode=False))
        assert rows["item_id"] == ids
        for got in rows:
            want = by_id[got["item_id"]]
            assert (got["captions"], got["tags"]) == (list(want.captions), list(want.tags))
            assert (got["split"], got["source"], got["license"], got["extra"]) == (
                canonical_split(want.split), want.source, want.license, want.extra)
            assert (got["start_s"], got["end_s"]) == (want.start_s, want.end_s)
            samples, rate = sf.read(io.BytesIO(got["audio"]["bytes"]), dtype="int16", always_2d=True)
            assert rate == RATE and (hashlib.sha256(samples.tobytes()).hexdigest(), list(samples.shape)) == \
                clip_digest(root, want.item_id)
            assert got["audio"]["bytes"] == root.clip_path(DATASET, want.item_id).read_bytes()
            assert got["audio"]["path"] == root.clip_path(DATASET, want.item_id).name
            if want.item_id == NO_VECTOR:
                assert got["vector"] is None
            else:
                np.testing.assert_array_equal(np.array(got["vector"], dtype=np.float32), vectors[want.item_id])


def test_card_agrees_with_the_parquet(exported: tuple[DataRoot, dict[str, np.ndarray], CorpusExport],
                                      tmp_path: Path) -> None:
    _, _, result = exported
    text = result.card.read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "cc-by-4.0"
    assert front["configs"] == [{"config_name": "default", "data_files": [
        {"split": name, "path": f"data/{name}-*"} for name in SPLITS]}]
    assert {s["name"]: s["num_examples"] for s in front["dataset_info"]["splits"]} == \
        {name: len(ids) for name, ids in SPLITS.items()}
    assert f"space `{SPACE}`" in text and "1 item(s) of the manifest have no clip" in text
    assert "1 exported item(s) have no `dsp` vector" in text and "`CC-BY-4.0`: 6 item(s)" in text
    from_card = datasets.load_dataset(str(result.out), cache_dir=str(tmp_path / "card"))
    from_files = datasets.load_dataset("parquet", data_dir=str(result.out), cache_dir=str(tmp_path / "files"))
    assert list(from_card) == list(from_files)
    for name in SPLITS:
        assert from_card[name].features == from_files[name].features
        assert from_card[name]["item_id"] == from_files[name]["item_id"]


READER = """
import hashlib, io, json, sys

import datasets, soundfile

corpus = datasets.load_dataset("parquet", data_dir=sys.argv[1], cache_dir=sys.argv[2])
out = {}
for split, rows in corpus.items():
    out[split] = []
    for row in rows.cast_column("audio", datasets.Audio(decode=False)):
        samples, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="int16", always_2d=True)
        out[split].append({"item_id": row["item_id"], "captions": row["captions"], "tags": row["tags"],
                           "vector": row["vector"], "rate": rate, "shape": list(samples.shape),
                           "sha256": hashlib.sha256(samples.tobytes()).hexdigest()})
out["audio_feature"] = repr(corpus["train"].features["audio"])
print(json.dumps(out))
"""


def test_a_process_without_musictext_reads_it(exported: tuple[DataRoot, dict[str, np.ndarray], CorpusExport],
                                              tmp_path: Path) -> None:
    root, vectors, result = exported
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", without(BLOCKED, READER), str(result.out), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    read = json.loads(done.stdout.splitlines()[-1])
    assert f"sampling_rate={RATE}" in read.pop("audio_feature")
    by_id = {row.item_id: row for row in ROWS}
    assert {split: [row["item_id"] for row in rows] for split, rows in read.items()} == SPLITS
    for row in (row for rows in read.values() for row in rows):
        want = by_id[row["item_id"]]
        assert (row["captions"], row["tags"]) == (list(want.captions), list(want.tags))
        assert row["rate"] == RATE and (row["sha256"], row["shape"]) == clip_digest(root, want.item_id)
        if want.item_id == NO_VECTOR:
            assert row["vector"] is None
        else:
            np.testing.assert_array_equal(np.array(row["vector"], dtype=np.float32), vectors[want.item_id])


def test_without_a_model_there_is_no_vector_column(tmp_path: Path) -> None:
    root, _ = build_root(tmp_path / "data")
    result = export_corpus(root, DATASET, tmp_path / "hf")
    assert result.missing_vectors == () and result.model is None
    assert [split.files for split in result.splits] == [
        (result.out / "data" / f"{name}-00000-of-00001.parquet",) for name in SPLITS]
    corpus = datasets.load_dataset("parquet", data_dir=str(result.out), cache_dir=str(tmp_path / "cache"))
    assert "vector" not in corpus["train"].column_names
    assert "`vector`" not in result.card.read_text(encoding="utf-8")


def test_out_is_refused_when_not_empty_and_replaced_with_force(tmp_path: Path) -> None:
    root, _ = build_root(tmp_path / "data")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "old.txt").write_text("an earlier export")
    with pytest.raises(CorpusExportError, match="is not empty"):
        export_corpus(root, DATASET, out)
    assert (out / "old.txt").exists()
    export_corpus(root, DATASET, out, force=True)
    assert not (out / "old.txt").exists() and (out / "README.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "hf"]


def test_out_may_not_overlap_the_data_root(tmp_path: Path) -> None:
    root, _ = build_root(tmp_path / "data")
    for out in (root.path / "export", tmp_path):
        with pytest.raises(CorpusExportError, match="overlaps the data root"):
            export_corpus(root, DATASET, out, force=True)


def test_clips_of_several_rates_are_refused_and_nothing_is_left(tmp_path: Path) -> None:
    root, _ = build_root(tmp_path / "data", rates={"demo:f": 22_050})
    with pytest.raises(CorpusExportError, match=r"several sample rates \(44100 Hz ×5, 22050 Hz ×1\)"):
        export_corpus(root, DATASET, tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_failure_while_writing_removes_the_half_built_folder(tmp_path: Path) -> None:
    root, _ = build_root(tmp_path / "data")

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_corpus(root, DATASET, tmp_path / "hf", progress=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_split_names() -> None:
    assert [split_name(value) for value in (None, "", "train", "valid", "test_a", "test-a", "eval.v2", "a b")] == \
        ["train", "train", "train", "valid", "test_a", "test_a", "eval.v2", "a_b"]


runner = CliRunner()


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(export_command)
    return app


def test_cli_exports(cli: typer.Typer, tmp_path: Path) -> None:
    root, _ = build_root(tmp_path / "data")
    result = runner.invoke(cli, [DATASET, "--out", str(tmp_path / "hf"), "--model", MODEL, "--root", str(root.path)])
    assert result.exit_code == 0, result.output
    assert "6 item(s)" in result.output and "left out, no clip: 1" in result.output
    assert "null, no vector: 1" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["nope"], "error: no manifest for 'nope'"),
    ([DATASET, "--model", "nosuch"], "error: unknown embedder 'nosuch'"),
    ([DATASET, "--model", MODEL, "--space", "old-space"], f"error: no {MODEL} embeddings in space old-space"),
    ([DATASET, "--space", SPACE], "error: --space names the space of --model's vectors"),
    ([DATASET, "--out-is-not-empty"], "error: --out"),
])
def test_cli_user_mistakes_exit_2_with_one_line(cli: typer.Typer, tmp_path: Path, args: list[str],
                                                message: str) -> None:
    root, _ = build_root(tmp_path / "data")
    out = tmp_path / "hf"
    if "--out-is-not-empty" in args:
        args = args[:1]
        out.mkdir()
        (out / "old.txt").write_text("keep me")
    result = runner.invoke(cli, [*args, "--out", str(out), "--root", str(root.path)])
    assert_one_error_line(result, message)


def test_cli_names_the_extra_when_datasets_is_missing(cli: typer.Typer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    monkeypatch.delitem(sys.modules, "store.corpus_export")
    monkeypatch.delattr(store, "corpus_export")
    result = runner.invoke(cli, [DATASET, "--out", str(tmp_path / "hf"), "--root", str(tmp_path / "data")])
    assert_one_error_line(result, "error: export-corpus needs the export extra (datasets is not installed): "
                                  "pip install -e '.[export]'")


def assert_one_error_line(result: object, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [result.output.strip()]
    assert result.output.startswith(message), result.output
