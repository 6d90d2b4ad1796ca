"""The train and evaluate flows and search, end to end on a small real corpus (manifests + HDF5 shards):
runs for both heads, a report that compares them with their untrained baselines, and search finding an item
from its own caption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from corpus import DATASETS, GENRES, MODEL, build_corpus

from downloaders import get_source
from flows import learning
from flows.settling import evaluation_settling
from store.layout import DataRoot
from training.config import run_config
from training.evaluate import evaluate_runs
from training.run_plans import already_trained, train_configs
from training.search_clips import search_clips

pytestmark = pytest.mark.integration

CONTENDERS = ["toy-frames (frames)", "untrained frames (baseline)", "toy-pooled (pooled)",
              "untrained pooled (baseline)", "prototype (baseline)", "linear (baseline)"]
OPTIONS = {"max_steps": 30, "batch_size": 16, "eval_every": 10, "checkpoint_every": 10, "freeze_encoder": True,
           "lr": 3e-3, "warmup_steps": 3, "device": "cpu", "patience": None}


@pytest.fixture(scope="module")
def trained(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("data")
    build_corpus(root, tracks=16)
    summaries = learning.train(MODEL, list(DATASETS), "toy", ["frames", "pooled"], root=str(root), options=OPTIONS)
    return root, summaries


def test_train_makes_one_run_per_head_and_a_rerun_finds_them_finished(trained: tuple[Path, list]) -> None:
    root, summaries = trained
    assert [(s.config.run_id, s.config.head, s.config.stage, s.result.step) for s in summaries] == [
        ("toy-frames", "frames", 1, 30), ("toy-pooled", "pooled", 1, 30)]
    for summary in summaries:
        lines = (summary.result.run_dir / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [10, 20, 30]
    again = learning.train(MODEL, list(DATASETS), "toy", ["pooled"], root=str(root), options=OPTIONS)
    assert again[0].result.step == 30 and again[0].result.best_metrics == summaries[1].result.best_metrics
    configs = train_configs(MODEL, list(DATASETS), "toy", ["frames", "pooled"], options=OPTIONS)
    found = already_trained(configs, DataRoot(root))
    assert found is not None and [s.result.best_metrics for s in found] == [s.result.best_metrics for s in summaries]
    longer = train_configs(MODEL, list(DATASETS), "toy", ["pooled"], options={**OPTIONS, "max_steps": 40})
    assert already_trained(longer, DataRoot(root)) is None, "another configuration is not finished"


def test_evaluate_compares_both_heads_with_their_untrained_twins_and_the_seed_baselines(
        trained: tuple[Path, list]) -> None:
    root, _ = trained
    result = learning.evaluate(["toy-frames", "toy-pooled"], name="toy", root=str(root))
    rows = result["results"]
    assert list(rows) == CONTENDERS
    candidates = rows["toy-pooled (pooled)"]["candidates"]
    assert candidates >= 4 and all(r["candidates"] == candidates for r in rows.values())
    for head in ("frames", "pooled"):
        assert rows[f"toy-{head} ({head})"]["t2m_MRR"] > rows[f"untrained {head} (baseline)"]["t2m_MRR"], head
    report = Path(result["report"])
    text = report.read_text()
    assert "untrained pooled (baseline)" in text and f"{int(candidates)}" in text
    for picture in ("similarity.png", "map.png", "recall.png"):
        assert (report.parent / picture).stat().st_size > 1000 and f"]({picture})" in text

    data = DataRoot(root)
    settling = evaluation_settling(data, "toy", ["toy-frames", "toy-pooled"],
                                   [run_config(data, run) for run in ("toy-frames", "toy-pooled")], "cpu", None)
    assert settling.found() == json.loads(json.dumps(result)), "the same runs on the same data: the report is kept"
    shard = next(data.path.glob("embeddings/*/*/*/shard-*.h5"))
    os.utime(shard)  # a shard rewritten in place (its mtime moves): the data may differ now
    assert settling.found() is None


def test_evaluate_scores_the_tag_families_it_is_given_for_every_contender(trained: tuple[Path, list]) -> None:
    root, _ = trained
    evaluation = evaluate_runs(DataRoot(root), ["toy-frames", "toy-pooled"], name="families",
                               tag_families={"tagged": {"genre": GENRES}, "elsewhere": {"mood": ("calm",)}})
    families = json.loads(evaluation.json_path.read_text())["families"]
    assert list(families) == ["genre"]
    genre = families["genre"]
    assert genre["tags"] == list(GENRES) and genre["items"] > 0 and list(genre["methods"]) == CONTENDERS
    for method in genre["methods"].values():
        confusion = np.array(method["confusion"])
        assert confusion.shape == (len(GENRES), len(GENRES)) and confusion.sum() == genre["items"]
        assert method["accuracy"] == pytest.approx(np.trace(confusion) / genre["items"])
    assert (evaluation.markdown_path.parent / "confusion-genre-prototype-baseline.png").stat().st_size > 1000
    markdown = evaluation.markdown_path.read_text()
    assert "Single-label family **genre**" in markdown and "| prototype (baseline) |" in markdown


def test_the_evaluate_flow_passes_the_tag_families_of_the_sources_among_the_runs_datasets() -> None:
    synthetic = get_source("synthetic").tag_families
    assert synthetic and learning.tag_families([["synthetic", "tagged"], ["synthetic"]]) == {"synthetic": synthetic}
    assert learning.tag_families([DATASETS]) == {}


def test_search_finds_an_item_from_its_own_caption(trained: tuple[Path, list]) -> None:
    root, _ = trained
    from store.manifest import read_manifest

    data_root = DataRoot(root)
    row = next(r for r in read_manifest(data_root.manifest("captioned")) if r.captions and r.item_id.endswith("@0"))
    found = search_clips(data_root, row.captions[0], MODEL, k=5, run_id="toy-pooled")
    group = row.item_id.split("@")[0]
    assert any(hit.item_id.split("@")[0] == group for hit in found.hits), [h.item_id for h in found.hits]
    assert [hit.score for hit in found.hits] == sorted((hit.score for hit in found.hits), reverse=True)
    assert found.run_id == "toy-pooled"
