"""Spaces end to end through the real flows and CLI: an embedder added as one file gets its own space and
directory; shards of the layout before spaces are flagged by ``verify`` with the command that re-embeds them,
and re-embedding leaves them as they were."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import embedders
from embedders import embedder_names, embedder_spec, get_embedder, stored_dim
from embedders.runtime import embed_clip
from flows import stages
from flows.cli import app
from store.layout import DataRoot
from store.manifest import read_manifest
from store.shards import iter_shards, shard_paths

pytestmark = pytest.mark.integration

DATASET = "local"
RATE = 44_100
TOY_SPACE = "toy-features-1"
TOY_RATE = 16_000
TOY_MODULE = f'''
"""``toy``: two features per 1024-sample frame at 16 kHz (level and zero-crossing rate); weight-free."""

import numpy as np

from embedders.spec import EmbedderSpec

FRAME = 1024


class ToyEmbedder:
    revision = "1"
    weights_sha256 = ""
    precision = "reference"
    channels = 1
    frame_dim = 2

    def __init__(self):
        self.spec = SPEC

    def frames(self, batch):
        count = batch.shape[-1] // FRAME
        framed = batch[:, 0, : count * FRAME].reshape(batch.shape[0], count, FRAME)
        level = np.sqrt((framed ** 2).mean(axis=-1))
        crossings = (np.diff(np.signbit(framed), axis=-1) != 0).mean(axis=-1)
        return np.stack([level, crossings], axis=1).astype(np.float32)


SPEC = EmbedderSpec(
    name="toy",
    summary="two toy features per frame, for tests",
    factory=lambda weights, device, precision: ToyEmbedder(),
    space="{TOY_SPACE}",
    frame_dim=2,
    sample_rate={TOY_RATE},
    window_s=FRAME / {TOY_RATE},
    hop_s=FRAME / {TOY_RATE},
    audio_input="mono mean; soxr resample to {TOY_RATE} Hz",
)
'''
runner = CliRunner()


@pytest.fixture()
def toy_embedder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``toy.py`` in a directory of its own, appended to ``embedders.__path__``: nothing else is touched."""
    directory = tmp_path_factory.mktemp("more-embedders")
    (directory / "toy.py").write_text(TOY_MODULE)
    monkeypatch.setattr(embedders, "__path__", [*embedders.__path__, str(directory)])
    yield directory / "toy.py"
    sys.modules.pop("embedders.toy", None)
    if hasattr(embedders, "toy"):
        delattr(embedders, "toy")


def tone(hz: float, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    noise = 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.4 * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) + noise).astype(np.float32)


def local_dataset(root: Path, folder: Path) -> DataRoot:
    """Four short files of the ``local`` source, catalogued, acquired and cut into clips by the real flows."""
    folder.mkdir()
    for number, (hz, seconds) in enumerate([(220, 3.0), (440, 2.5), (880, 4.0), (330, 3.5)]):
        sf.write(folder / f"track{number}.wav", tone(hz, seconds, number), RATE, subtype="PCM_16")
    stages.ingest(DATASET, {"path": str(folder)}, root=str(root))
    stages.preprocess(DATASET, root=str(root))
    data_root = DataRoot(root)
    assert len(read_manifest(data_root.manifest(DATASET))) == 4
    assert len(list(data_root.clip_dir(DATASET).glob("*.flac"))) == 4
    return data_root


def report_of(root: DataRoot) -> tuple[dict, str]:
    directory = root.reports_dir() / DATASET
    return json.loads((directory / "verification.json").read_text()), (directory / "verification.md").read_text()


def test_an_embedder_is_one_file_with_its_own_space_and_directory(
        prefect_server: str, toy_embedder: Path, tmp_path: Path) -> None:
    assert "toy" in embedder_names() and embedder_names() == sorted(embedder_names())
    assert stored_dim("toy") == 6 and embedder_spec("toy").space == TOY_SPACE
    listed = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path / "hub")])
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.output.splitlines() if line.startswith("│ toy ")]
    assert [cell.strip() for cell in row.strip("│").split("│")][:3] == ["toy", TOY_SPACE, "6"]
    assert "none (weight-free)" in row
    assert "toy: two toy features per frame, for tests" in listed.output

    root = local_dataset(tmp_path / "data", tmp_path / "music")
    embedded = stages.embed(DATASET, "toy", root=str(root.path))
    stages.verify(DATASET, root=str(root.path))

    assert (embedded.ok, embedded.failed) == (4, 0)
    directory = root.path / "embeddings" / TOY_SPACE / "toy" / DATASET
    assert directory == root.shard_dir("toy", DATASET, TOY_SPACE)
    assert shard_paths(directory) and sorted(p.relative_to(root.path).parts[:3] for p in
                                             (root.path / "embeddings").rglob("*.h5")) == [
        ("embeddings", TOY_SPACE, "toy")] * len(shard_paths(directory))
    assert root.embedded(DATASET) == [(TOY_SPACE, "toy")]
    toy = get_embedder("toy")
    for shard in iter_shards(directory):
        assert shard.space == TOY_SPACE and shard.attrs["model"] == "toy" and shard.attrs["dim"] == 6
        assert shard.attrs["audio_input"] == f"mono mean; soxr resample to {TOY_RATE} Hz"
        assert shard.attrs["window_padding"] == "none" and shard.attrs["precision"] == "reference"
        for item_id, vector, frames in zip(shard.item_ids, shard.embeddings(), shard.frames(), strict=True):
            clip = root.clip_path(DATASET, item_id)
            expected = embed_clip(toy, clip)
            assert frames == expected.frames > 0
            assert abs(frames - sf.info(clip).duration * TOY_RATE / 1024) <= 1
            np.testing.assert_array_equal(vector, expected.vector)

    report, markdown = report_of(root)
    shards = [check for check in report["checks"] if check["name"] == "shards"]
    assert [(c["model"], c["checked"], c["problems"], c["dim"]) for c in shards] == [
        (f"{TOY_SPACE}/toy", 4, 0, 6)]
    assert report["verdict"] == "ok", markdown
    assert f"embed ({TOY_SPACE}/toy)" in markdown


def old_layout_shard(root: DataRoot, item_ids: list[str]) -> Path:
    """A shard as the code before spaces wrote it: ``embeddings/dsp/<dataset>/``, no ``space`` (nor the other
    attributes spaces brought), no ``frames``, the enrichment constant of then."""
    path = root.path / "embeddings" / "dsp" / DATASET / "shard-00000.h5"
    path.parent.mkdir(parents=True)
    rows = np.random.default_rng(0).normal(size=(len(item_ids), 312)).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("item_id", data=item_ids, dtype=h5py.string_dtype("utf-8"))
        handle.create_dataset("embedding", data=rows / np.linalg.norm(rows, axis=1, keepdims=True))
        for key, value in {"model": "dsp", "model_revision": "1", "dim": 312,
                           "enrichment": "concat(mean,iqr/1.34898,mean(diff));l2", "sample_rate": 22_050,
                           "window_s": 2048 / 22_050, "hop_s": 512 / 22_050, "created_at": "2025-10-01T00:00:00+00:00",
                           "musictext_version": "0.1.0", "weights_sha256": ""}.items():
            handle.attrs[key] = value
    return path


def test_shards_of_the_layout_before_spaces_are_flagged_and_re_embedding_leaves_them(
        prefect_server: str, tmp_path: Path) -> None:
    root = local_dataset(tmp_path / "data", tmp_path / "music")
    item_ids = [row.item_id for row in read_manifest(root.manifest(DATASET))]
    old = old_layout_shard(root, item_ids)
    old_bytes, old_mtime = hashlib.sha256(old.read_bytes()).hexdigest(), old.stat().st_mtime_ns
    command = f"musictext embed {DATASET} --model dsp"

    verified = runner.invoke(app, ["verify", DATASET, "--root", str(root.path)])

    assert verified.exit_code == 1, verified.output  # the verdict is not ok: verify's exit code says so
    report, markdown = report_of(root)
    [check] = [c for c in report["checks"] if c["name"] == "old-space shards"]
    assert (check["checked"], check["problems"]) == (1, 1)
    [group] = check["reasons"]
    assert group["reason"] == "old_space" and group["count"] == 1
    detail = group["examples"][0]["detail"]
    assert str(old.parent) in detail and f"`{command}`" in detail
    assert f"embeddings/musictext-dsp-1/dsp/{DATASET}/" in detail
    assert report["verdict"] == "unexplained_failures"
    assert "| old-space shards | 1 directory | 1 |" in markdown and f"`{command}`" in markdown
    assert str(old.parent) in markdown
    assert not [c for c in report["checks"] if c["name"] == "shards"]  # the old shards are no target of a check

    embedded = runner.invoke(app, ["embed", DATASET, "--model", "dsp", "--root", str(root.path)])

    assert embedded.exit_code == 0, embedded.output
    new = root.path / "embeddings" / "musictext-dsp-1" / "dsp" / DATASET
    new_shards = shard_paths(new)
    assert new_shards and {item for shard in iter_shards(new) for item in shard.item_ids} == set(item_ids)
    assert all(shard.space == "musictext-dsp-1" and (shard.frames() > 0).all() for shard in iter_shards(new))
    assert shard_paths(old.parent) == [old]  # untouched: nothing added, nothing rewritten
    assert (hashlib.sha256(old.read_bytes()).hexdigest(), old.stat().st_mtime_ns) == (old_bytes, old_mtime)

    runner.invoke(app, ["verify", DATASET, "--root", str(root.path)])
    report, _ = report_of(root)
    checks = {(c["name"], c["model"]): c for c in report["checks"]}
    assert checks[("shards", "musictext-dsp-1/dsp")]["problems"] == 0
    assert checks[("old-space shards", None)]["problems"] == 1  # still there until moved aside
    old.parent.rename(tmp_path / "moved-aside")
    runner.invoke(app, ["verify", DATASET, "--root", str(root.path)])
    report, markdown = report_of(root)
    assert report["verdict"] == "ok", markdown
    assert "old-space shards" not in markdown
