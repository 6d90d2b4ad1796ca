"""Shard integrity: good shards from ShardWriter, broken ones crafted with h5py as the writer never would."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest

import verification.shards
from embedders import embedder_spec
from embedders.mert import WEIGHTS as MERT
from embedders.spec import NAVIDROME_SPACE
from store.shards import ShardAttributes, ShardWriter, shard_paths
from verification.shards import Expected, check_model_shards, check_shards, old_space_problems

DIM = 8
SPACE = "musictext-dsp-1"
ATTRS = ShardAttributes(
    model="dsp", model_revision="1", dim=DIM, enrichment="mean-iqr-diff", sample_rate=22_050,
    window_s=1.0, hop_s=0.5, musictext_version="0.1.0", space=SPACE,
)


def unit_rows(count: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ids(*numbers: int) -> list[str]:
    return [f"demo:{n}" for n in numbers]


def write_shard(directory: Path, item_ids: list[str], rows: np.ndarray, **options: object) -> Path:
    attrs = ATTRS if rows.shape[1] == DIM else ShardAttributes(**{**asdict(ATTRS), "dim": rows.shape[1]})
    with ShardWriter(directory, attrs, **options) as writer:
        writer.append(item_ids, rows)
    assert writer.path is not None
    return writer.path


def craft_shard(
    path: Path, item_ids: list[str] | None, rows: np.ndarray | None, attrs: dict[str, object]
) -> Path:
    """A shard written with plain h5py, for layouts ShardWriter refuses to produce."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        if item_ids is not None:
            handle.create_dataset("item_id", data=item_ids, dtype=h5py.string_dtype("utf-8"))
        if rows is not None:
            handle.create_dataset("embedding", data=rows)
        for key, value in attrs.items():
            handle.attrs[key] = value
    return path


def full_attrs(**changes: object) -> dict[str, object]:
    return {**asdict(ATTRS), "created_at": "2025-01-01T00:00:00+00:00", **changes}


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "embeddings" / SPACE / "dsp" / "demo"


def expected_of(model: str) -> Expected:
    """What the verify flow expects of ``model``'s shards, read from its spec."""
    spec = embedder_spec(model)
    return Expected(spec.space, spec.stored_dim, spec.weights.revision if spec.weights else None)


def reasons(check: verification.shards.ShardCheck) -> list[str]:
    return [problem.reason for problem in check.problems]


def found(check: verification.shards.ShardCheck) -> list[tuple[str | None, str]]:
    return [(problem.item_id, problem.reason) for problem in check.problems]


def test_good_shards_have_no_problem(directory: Path) -> None:
    write_shard(directory, ids(0, 1, 2), unit_rows(3))
    write_shard(directory, ids(3, 4), unit_rows(2, seed=1), dtype="float16")
    check = check_shards(directory, manifest_ids=set(ids(*range(6))), dim=DIM)
    assert check.problems == []
    assert (check.shards, check.rows, check.model, check.model_revision, check.dim) == (2, 5, "dsp", "1", DIM)
    assert check.item_ids == set(ids(0, 1, 2, 3, 4))


def test_empty_directory(tmp_path: Path) -> None:
    check = check_shards(tmp_path / "nothing", manifest_ids=set())
    assert (check.shards, check.rows, check.problems, check.item_ids) == (0, 0, [], set())


def test_dim_other_than_expected(directory: Path) -> None:
    write_shard(directory, ids(0), unit_rows(1, dim=4))
    check = check_shards(directory, manifest_ids=set(ids(0)), dim=DIM)
    assert reasons(check) == ["wrong_dim"]
    assert "4 columns, expected 8" in check.problems[0].detail


@pytest.mark.parametrize(("model", "revision", "problems"), [
    ("dsp", "1", ["wrong_dim"]),  # dsp always gives 312
    ("mert", MERT.revision, ["wrong_dim"]),  # the pinned MERT-v1-330M gives 76 800
    ("mert", "local", []),  # other weights (a smaller variant given with --weights): consistency only
])
def test_the_architecture_width_binds_the_pinned_weights_only(
    tmp_path: Path, model: str, revision: str, problems: list[str]
) -> None:
    space = embedder_spec(model).space
    directory = tmp_path / "embeddings" / space / model / "demo"
    attrs = ShardAttributes(**{**asdict(ATTRS), "model": model, "model_revision": revision, "space": space})
    with ShardWriter(directory, attrs) as writer:
        writer.append(ids(0, 1), unit_rows(2))
    check = check_model_shards(directory, expected_of(model), manifest_ids=set(ids(0, 1)))
    assert reasons(check) == problems
    assert not problems or f"have {DIM} columns, but {model} gives" in check.problems[0].detail


def test_without_a_width_only_the_space_and_consistency_bind(directory: Path) -> None:
    write_shard(directory, ids(0, 1), unit_rows(2))
    assert check_model_shards(directory, Expected(SPACE), manifest_ids=set(ids(0, 1))).problems == []


def test_a_shard_of_another_space_in_a_space_directory_is_wrong_space(directory: Path) -> None:
    write_shard(directory, ids(0), unit_rows(1))
    other = ShardAttributes(**{**asdict(ATTRS), "space": NAVIDROME_SPACE})
    with ShardWriter(directory, other) as writer:
        writer.append(ids(1), unit_rows(1, seed=1))
    craft_shard(directory / "shard-00002.h5", ids(2), unit_rows(1, seed=2),
                {k: v for k, v in full_attrs().items() if k != "space"})  # written before spaces existed

    check = check_model_shards(directory, Expected(SPACE, DIM), manifest_ids=set(ids(0, 1, 2)))

    assert found(check) == [(None, "wrong_space"), (None, "missing_attribute"), (None, "wrong_space")]
    first, _, last = (problem.detail for problem in check.problems)
    assert "shard-00001.h5" in first and f"names the space {NAVIDROME_SPACE}, not {SPACE}" in first
    assert "shard-00002.h5" in last and "names the space (none)" in last
    assert "re-run embedding" in first
    assert reasons(check_shards(directory, manifest_ids=set(ids(0, 1, 2)))) == ["missing_attribute"]  # no space


def test_old_layout_directories_are_old_space_with_the_command_that_re_embeds(tmp_path: Path) -> None:
    legacy = tmp_path / "embeddings" / "dsp" / "demo"
    craft_shard(legacy / "shard-00000.h5", ids(0), unit_rows(1), {k: v for k, v in full_attrs().items()
                                                                  if k != "space"})
    gone = tmp_path / "embeddings" / "clap" / "demo"
    craft_shard(gone / "shard-00000.h5", ids(0), unit_rows(1), full_attrs(model="clap", space="clap-1"))

    problems = old_space_problems([legacy, gone], {"dsp": SPACE, "mert": NAVIDROME_SPACE})

    assert [(p.item_id, p.reason) for p in problems] == [(None, "old_space"), (None, "old_space")]
    assert str(legacy) in problems[0].detail and "space none" in problems[0].detail
    assert "`musictext embed demo --model dsp`" in problems[0].detail
    assert f"embeddings/{SPACE}/dsp/demo/" in problems[0].detail
    assert "clap is no longer an embedder here" in problems[1].detail and "space clap-1" in problems[1].detail


def test_dim_attribute_disagrees_with_columns(directory: Path) -> None:
    craft_shard(directory / "shard-00000.h5", ids(0), unit_rows(1), full_attrs(dim=16))
    assert reasons(check_shards(directory, manifest_ids=set(ids(0)))) == ["wrong_dim"]


def test_shards_of_different_widths(directory: Path) -> None:
    write_shard(directory, ids(0), unit_rows(1))
    write_shard(directory, ids(1), unit_rows(1, dim=4))
    check = check_shards(directory, manifest_ids=set(ids(0, 1)))
    assert reasons(check) == ["wrong_dim"]
    assert "shard-00001.h5" in check.problems[0].detail


def test_one_dimensional_embedding(directory: Path) -> None:
    craft_shard(directory / "shard-00000.h5", ids(0), np.ones(DIM, dtype=np.float32), full_attrs())
    assert reasons(check_shards(directory, manifest_ids=set(ids(0)))) == ["wrong_dim"]


def test_rows_not_unit_norm(directory: Path) -> None:
    rows = unit_rows(4)
    rows[2] *= 1.01
    rows[3] *= 1.0005
    write_shard(directory, ids(0, 1, 2, 3), rows)
    check = check_shards(directory, manifest_ids=set(ids(0, 1, 2, 3)))
    assert reasons(check) == ["not_unit_norm"]
    assert check.problems[0].item_id == "demo:2"
    assert "1.010000" in check.problems[0].detail


def test_non_finite_rows(directory: Path) -> None:
    rows = unit_rows(3)
    rows[1, 5] = np.nan
    rows[2, 0] = np.inf
    write_shard(directory, ids(0, 1, 2), rows)
    check = check_shards(directory, manifest_ids=set(ids(0, 1, 2)))
    assert found(check) == [("demo:1", "non_finite"), ("demo:2", "non_finite")]


def test_bad_rows_found_across_read_blocks(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads go in slices; a bad row in a late slice must be reported against its own item id."""
    monkeypatch.setattr(verification.shards, "_READ_BYTES", 3 * DIM * 8)
    rows = unit_rows(50)
    rows[41] *= 2
    write_shard(directory, ids(*range(50)), rows, chunk_rows=3)
    check = check_shards(directory, manifest_ids=set(ids(*range(50))))
    assert found(check) == [("demo:41", "not_unit_norm")]
    assert "row 41 " in check.problems[0].detail


def test_duplicate_id_across_shards(directory: Path) -> None:
    write_shard(directory, ids(0, 1), unit_rows(2))
    write_shard(directory, ids(2, 1), unit_rows(2, seed=3))
    check = check_shards(directory, manifest_ids=set(ids(0, 1, 2)))
    assert found(check) == [("demo:1", "duplicate_id")]
    assert "shard-00000.h5" in check.problems[0].detail and "shard-00001.h5" in check.problems[0].detail


def test_duplicate_id_within_one_shard(directory: Path) -> None:
    write_shard(directory, ids(0, 0), unit_rows(2))
    check = check_shards(directory, manifest_ids=set(ids(0)))
    assert found(check) == [("demo:0", "duplicate_id")]


def test_id_not_in_manifest(directory: Path) -> None:
    write_shard(directory, ids(0, 9), unit_rows(2))
    check = check_shards(directory, manifest_ids=set(ids(0)))
    assert found(check) == [("demo:9", "unknown_id")]


def test_missing_attribute(directory: Path) -> None:
    attrs = full_attrs()
    del attrs["enrichment"], attrs["created_at"]
    craft_shard(directory / "shard-00000.h5", ids(0), unit_rows(1), attrs)
    check = check_shards(directory, manifest_ids=set(ids(0)))
    assert reasons(check) == ["missing_attribute"]
    assert "enrichment" in check.problems[0].detail and "created_at" in check.problems[0].detail


@pytest.mark.parametrize("missing", ["item_id", "embedding"])
def test_missing_dataset(directory: Path, missing: str) -> None:
    item_ids = None if missing == "item_id" else ids(0)
    rows = None if missing == "embedding" else unit_rows(1)
    craft_shard(directory / "shard-00000.h5", item_ids, rows, full_attrs())
    check = check_shards(directory, manifest_ids=set(ids(0)))
    assert reasons(check) == ["missing_dataset"]
    assert missing in check.problems[0].detail


def test_numeric_item_ids_are_not_ids(directory: Path) -> None:
    path = craft_shard(directory / "shard-00000.h5", None, unit_rows(1), full_attrs())
    with h5py.File(path, "a") as handle:
        handle.create_dataset("item_id", data=np.arange(1))
    assert reasons(check_shards(directory, manifest_ids=set())) == ["missing_dataset"]


def test_row_count_mismatch(directory: Path) -> None:
    craft_shard(directory / "shard-00000.h5", ids(0, 1, 2), unit_rows(2), full_attrs())
    check = check_shards(directory, manifest_ids=set(ids(0, 1, 2)))
    assert reasons(check) == ["row_count_mismatch"]
    assert check.rows == 2


def test_a_damaged_shard_is_set_aside_and_the_others_are_checked(tmp_path: Path, directory: Path) -> None:
    write_shard(directory, ids(0), unit_rows(1))
    (directory / "shard-00001.h5").write_bytes(b"\x00garbage" * 100)
    write_shard(directory, ids(7), unit_rows(1))
    check = check_shards(directory, manifest_ids=set(ids(0)))
    assert found(check) == [("demo:7", "unknown_id")]
    assert (check.shards, check.rows, check.item_ids) == (2, 2, set(ids(0, 7)))
    assert [p.name for p in shard_paths(directory)] == ["shard-00000.h5", "shard-00002.h5"]
    moved = list((tmp_path / "quarantine" / directory.relative_to(tmp_path)).glob("shard-00001.h5.*"))
    assert sorted(p.suffix == ".json" for p in moved) == [False, True]
    assert next(p for p in moved if p.suffix != ".json").read_bytes() == b"\x00garbage" * 100


def test_a_shard_found_damaged_half_way_is_taken_back_whole(directory: Path) -> None:
    """Damage in the rows shows only after the attributes and ids were read: none of it may stay counted."""
    path = craft_shard(directory / "shard-00000.h5", None, None, full_attrs(model_revision="2"))
    with h5py.File(path, "a") as handle:
        handle.create_dataset("item_id", data=ids(5), dtype=h5py.string_dtype("utf-8"))
        rows = handle.create_dataset("embedding", data=unit_rows(1), chunks=(1, DIM), compression="gzip")
        chunk = rows.id.get_chunk_info(0)
    with path.open("r+b") as handle:
        handle.seek(chunk.byte_offset)
        handle.write(b"\xff" * chunk.size)
    write_shard(directory, ids(0), unit_rows(1))
    check = check_shards(directory, manifest_ids=set(ids(0)))
    assert found(check) == []  # neither demo:5's unknown_id nor an inconsistent revision against it
    assert (check.shards, check.rows, check.item_ids, check.model_revision) == (1, 1, set(ids(0)), "1")
    assert [p.name for p in shard_paths(directory)] == ["shard-00001.h5"]


def test_a_damaged_shard_outside_a_data_root_stays_and_is_reported(tmp_path: Path) -> None:
    directory = tmp_path / "copied-shards"
    write_shard(directory, ids(0), unit_rows(1))
    (directory / "shard-00001.h5").write_bytes(b"\x00garbage" * 100)
    check = check_shards(directory, manifest_ids=set(ids(0)))
    assert found(check) == [(None, "unreadable_shard")] and check.shards == 2
    assert "shard-00001.h5" in check.problems[0].detail and (directory / "shard-00001.h5").exists()


def test_a_damaged_old_layout_shard_is_set_aside_and_the_directory_still_reported(tmp_path: Path) -> None:
    legacy = tmp_path / "embeddings" / "dsp" / "demo"
    write_shard(legacy, ids(0), unit_rows(1))
    (legacy / "shard-00001.h5").write_bytes(b"\x00garbage" * 100)
    problems = old_space_problems([legacy], {"dsp": SPACE})
    assert [p.reason for p in problems] == ["old_space"] and f"space {SPACE}," in problems[0].detail
    assert [p.name for p in shard_paths(legacy)] == ["shard-00000.h5"]


def test_mixed_model_revisions(directory: Path) -> None:
    write_shard(directory, ids(0), unit_rows(1))
    craft_shard(directory / "shard-00001.h5", ids(1), unit_rows(1), full_attrs(model_revision="2"))
    check = check_shards(directory, manifest_ids=set(ids(0, 1)))
    assert reasons(check) == ["inconsistent_model"]
    assert check.model_revision == "1"
