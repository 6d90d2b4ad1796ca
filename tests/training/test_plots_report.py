"""Figures are real PNGs drawn from the same numbers as the metrics; the report states and links them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from training.metrics import retrieval_metrics
from training.plots import (
    plot_confusion,
    plot_embedding_map,
    plot_recall_curve,
    plot_similarity_distribution,
    recall_curve,
    similarity_samples,
)
from training.report import write_evaluation_report
from training.zero_shot import zero_shot_tags


def _pairs(n: int, dim: int = 16, noise: float = 0.8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Audio vectors and noisy text copies of them: retrieval well above chance but not perfect."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(size=(n, dim))
    text = audio + noise * rng.normal(size=(n, dim))
    return text / np.linalg.norm(text, axis=1, keepdims=True), audio / np.linalg.norm(audio, axis=1, keepdims=True)


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0.01  # something was drawn, not a blank canvas


def test_similarity_samples_are_matching_and_bounded_non_matching() -> None:
    text = np.array([[1.0, 0.0], [0.0, 2.0]])
    audio = np.array([[0.6, 0.8], [1.0, 0.0]])
    matching, other = similarity_samples(text, audio, max_pairs=50)
    assert matching == pytest.approx([0.6, 0.0])
    # With two items only 2 non-matching pairs exist: (t0, a1) = 1.0 and (t1, a0) = 0.8.
    assert len(other) == 2
    assert set(np.round(other, 6)) <= {1.0, 0.8}
    _, many = similarity_samples(*_pairs(40), max_pairs=300)
    assert len(many) == 300


def test_recall_curve_agrees_with_the_metrics() -> None:
    text, audio = _pairs(60)
    curve = recall_curve(text, audio)
    metrics = retrieval_metrics(text, audio)
    assert curve.ks.tolist() == list(range(1, 61))
    assert curve.candidates == 60
    for k in (1, 5, 10):
        assert curve.t2m[k - 1] == pytest.approx(metrics[f"t2m_R@{k}"])
        assert curve.m2t[k - 1] == pytest.approx(metrics[f"m2t_R@{k}"])
        assert curve.chance[k - 1] == pytest.approx(metrics[f"chance_R@{k}"])
    assert curve.t2m[-1] == curve.m2t[-1] == curve.chance[-1] == 1.0
    assert recall_curve(*_pairs(130)).ks[-1] == 100


def test_figures_are_png_files(tmp_path: Path) -> None:
    text, audio = _pairs(30)
    labels = [f"tag{i % 12}" for i in range(30)]  # 12 groups: the two rarest fold into "other"
    paths = [
        plot_similarity_distribution(text, audio, tmp_path / "similarity.png", max_pairs=500),
        plot_embedding_map(text, audio, labels, tmp_path / "map-tsne.png"),
        plot_embedding_map(text, audio, labels, tmp_path / "map-pca.png", method="pca", max_items=10),
        plot_recall_curve(recall_curve(text, audio), tmp_path / "recall.png"),
        plot_confusion([[5, 1, 0], [2, 3, 0], [0, 0, 4]], ["rock", "jazz", "pop"], tmp_path / "c.png", "genre"),
    ]
    assert paths == [tmp_path / name for name in ("similarity.png", "map-tsne.png", "map-pca.png", "recall.png",
                                                  "c.png")]
    for path in paths:
        _assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary files left


def test_embedding_map_refuses_mismatched_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels"):
        plot_embedding_map(*_pairs(5), ["a"] * 4, tmp_path / "map.png")


@pytest.fixture()
def report(tmp_path: Path) -> tuple[Path, Path, dict[str, dict[str, float]]]:
    text, audio = _pairs(20, noise=2.0)
    figures = tmp_path / "reports" / "run1" / "figures"
    plots = {
        "recall": plot_recall_curve(recall_curve(text, audio), figures / "recall.png"),
        "genre confusion": plot_confusion([[1, 0], [1, 2]], ["rock", "jazz"], figures / "genre.png", "genre"),
    }
    results = {
        "frames": retrieval_metrics(text, audio),
        "untrained frames": {"t2m_R@1": 0.05, "t2m_MRR": 0.123456, "m2t_R@1": 0.1, "candidates": 20.0,
                             "chance_R@1": 0.05},
    }
    item_tags = [{"rock"}, {"jazz"}, {"rock"}, set()]
    zero_shot = zero_shot_tags(audio[:4], item_tags, audio[:2], ["rock", "jazz"], families={"genre": ["rock", "jazz"]})
    [genre] = zero_shot.families
    families = {"genre": {"tags": genre.tags, "items": genre.items, "excluded": genre.excluded,
                          "methods": {"frames": {"accuracy": genre.accuracy, "confusion": genre.confusion},
                                      "prototype (baseline)": {"accuracy": 0.25, "confusion": [[1, 0], [1, 1]]}}}}
    json_path, md_path = write_evaluation_report(
        tmp_path / "reports" / "run1", title="Evaluation of run1", results=results, zero_shot=zero_shot.to_dict(),
        plots=plots, meta={"model": "dsp", "split": "test", "checkpoint": Path("runs/run1/best.pt")},
        families=families,
    )
    return json_path, md_path, results


def test_markdown_states_numbers_candidates_and_chance(report: tuple[Path, Path, dict]) -> None:
    _, md_path, results = report
    markdown = md_path.read_text()
    assert markdown.startswith("# Evaluation of run1\n")
    assert "- **checkpoint**: runs/run1/best.pt" in markdown
    frames = results["frames"]
    row = next(line for line in markdown.splitlines() if line.startswith("| frames |"))
    assert row.split(" | ")[1] == "20"
    assert 0 < frames["t2m_R@1"] < 1 and 0 < frames["m2t_R@1"] < 1  # not a saturated row of ones
    for column, name in enumerate(("t2m_R@1", "t2m_R@5", "t2m_R@10", "t2m_MRR", "t2m_median_rank", "m2t_R@1"), 2):
        assert row.split(" | ")[column] == format(frames[name], ".4g")
    assert "| untrained frames | 20 | 0.05 | n/a | n/a | 0.1235 | n/a | 0.1 | n/a |" in markdown
    assert "Chance with 20 candidates: R@1 = 0.05, R@5 = 0.25, R@10 = 0.5." in markdown
    assert "| **macro** |" in markdown
    assert "Single-label family **genre**: 3 items (1 without exactly one of its tags left out)" in markdown
    assert "| prototype (baseline) | 0.25 |" in markdown


def test_markdown_links_existing_figures(report: tuple[Path, Path, dict]) -> None:
    _, md_path, _ = report
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md_path.read_text())
    assert links == ["figures/recall.png", "figures/genre.png"]
    for link in links:
        assert (md_path.parent / link).is_file()


def test_json_holds_the_same_results(report: tuple[Path, Path, dict]) -> None:
    json_path, _, results = report
    document = json.loads(json_path.read_text())
    assert document["results"] == results
    assert document["plots"] == {"recall": "figures/recall.png", "genre confusion": "figures/genre.png"}
    assert document["zero_shot"]["families"][0]["items"] == 3
    assert document["meta"]["checkpoint"] == "runs/run1/best.pt"


def test_missing_figure_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_evaluation_report(tmp_path, title="t", results={}, zero_shot=None, plots={"x": tmp_path / "nope.png"},
                                meta={})
