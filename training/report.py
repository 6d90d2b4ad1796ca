"""Evaluation reports: one JSON file for machines and one Markdown file for people, side by side with their
figures under ``reports/``.

Every retrieval number is printed with the number of candidates it was ranked among and the chance level, since
Recall@10 = 0.2 is excellent among 50,000 candidates and poor among 20. A benchmark whose items have several
captions ranks items among items for a caption and captions among captions for an item, so its tables give both
counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from store.atomic import write_text_atomic

JSON_NAME = "evaluation.json"
MARKDOWN_NAME = "evaluation.md"
TEXT_CANDIDATES = "m2t_candidates"
Results = Mapping[str, Mapping[str, float]]
"""Report row name (a run, an untrained head, a baseline) → its ``training.metrics.retrieval_metrics``."""


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value)


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]


def _metric_columns(results: Results) -> list[str]:
    """Metric names in first-seen order; candidates and chance levels are reported apart."""
    columns: dict[str, None] = {}
    for metrics in results.values():
        columns.update((name, None) for name in metrics
                       if name not in ("candidates", TEXT_CANDIDATES) and not name.startswith("chance_"))
    return list(columns)


def _chance_lines(results: Results) -> list[str]:
    direction = "text→music " if any(TEXT_CANDIDATES in metrics for metrics in results.values()) else ""
    chances: dict[int, dict[str, float]] = {}
    for metrics in results.values():
        levels = {name.removeprefix("chance_"): value for name, value in metrics.items() if name.startswith("chance_")}
        chances.setdefault(int(metrics.get("candidates", 0)), {}).update(levels)
    return [
        f"Chance {direction}with {candidates} candidates: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in levels.items())
        + "."
        for candidates, levels in sorted(chances.items())
        if levels
    ]


def _count(metrics: Mapping[str, float], name: str) -> int | None:
    return int(metrics[name]) if name in metrics else None


def _retrieval_section(heading: str, results: Results) -> list[str]:
    """One table; with a column of text candidates when items have several texts (``m2t_candidates``)."""
    columns = _metric_columns(results)
    several = any(TEXT_CANDIDATES in metrics for metrics in results.values())
    counts = ["music candidates", "text candidates"] if several else ["candidates"]
    rows = [
        [name, _count(metrics, "candidates"), *([_count(metrics, TEXT_CANDIDATES)] if several else []),
         *(metrics.get(c) for c in columns)]
        for name, metrics in results.items()
    ]
    explained = "t2m: text query, music candidates; m2t: music query, text candidates"
    if several:
        explained += ", an item found at its best-ranked text"
    return [
        f"## {heading}",
        "",
        f"{explained}. Ranks are 1-based; a tie with the true match counts against it.",
        "",
        *_table(["", *counts, *columns], rows),
        "",
        *_chance_lines(results),
        "",
    ]


def _zero_shot_section(zero_shot: Mapping[str, Any]) -> list[str]:
    """The dict of ``training.zero_shot.ZeroShotResult.to_dict()``."""
    rows = [[t["tag"], t["positives"], t["roc_auc"], t["pr_auc"]] for t in zero_shot["tags"]]
    rows.append(["**macro**", None, zero_shot["macro_roc_auc"], zero_shot["macro_pr_auc"]])
    lines = ["## Zero-shot tagging", "", *_table(["tag", "positives", "ROC-AUC", "PR-AUC"], rows), ""]
    if zero_shot["skipped"]:
        listed = ", ".join(f"{tag} ({why})" for tag, why in zero_shot["skipped"].items())
        lines += [f"Not scored (AUC undefined): {listed}.", ""]
    return lines


def _families_section(families: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The dict of ``training.contenders.Contenders.families``: every contender's accuracy per family."""
    lines = ["## Single-label tag families", "",
             'Each item is given the tag of the family whose prompt ("a {tag} track") is closest to it; the '
             "confusion matrices are among the figures.", ""]
    for family, entry in families.items():
        rows = [[method, scored["accuracy"]] for method, scored in entry["methods"].items()]
        lines += [
            f"Single-label family **{family}**: {entry['items']} items ({entry['excluded']} without exactly one of "
            f"its tags left out); a uniform guess among its {len(entry['tags'])} tags gets "
            f"{_fmt(1 / len(entry['tags']))}.",
            "",
            *_table(["", "accuracy"], rows),
            "",
        ]
    return lines


def _relative_plots(out_dir: Path, plots: Mapping[str, Path]) -> dict[str, str]:
    missing = [str(path) for path in plots.values() if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"report figures do not exist: {', '.join(missing)}")
    return {name: Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
            for name, path in plots.items()}


def _markdown(title: str, results: Results, subsets: Mapping[str, Results], zero_shot: Mapping[str, Any] | None,
              families: Mapping[str, Mapping[str, Any]], figures: Mapping[str, str], meta: Mapping[str, object]) -> str:
    lines = [f"# {title}", "", *(f"- **{key}**: {_fmt(value)}" for key, value in meta.items()), ""]
    lines += _retrieval_section("Retrieval", results)
    for name, subset in subsets.items():
        lines += _retrieval_section(f"Retrieval, {name}", subset)
    if zero_shot is not None:
        lines += _zero_shot_section(zero_shot)
    if families:
        lines += _families_section(families)
    if figures:
        lines += ["## Figures", ""]
        lines += [line for name, link in figures.items() for line in (f"### {name}", "", f"![{name}]({link})", "")]
    return "\n".join(lines)


def write_evaluation_report(
    out_dir: Path,
    *,
    title: str,
    results: Results,
    zero_shot: Mapping[str, Any] | None,
    plots: Mapping[str, Path],
    meta: Mapping[str, object],
    subsets: Mapping[str, Results] | None = None,
    families: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """Write ``evaluation.json`` and ``evaluation.md`` into ``out_dir``; returns (json path, markdown path).

    ``results`` holds one row of ``retrieval_metrics`` per head or baseline (e.g. "frames", "pooled",
    "untrained frames") on the whole evaluation set, ``subsets`` the same on named parts of it (a benchmark's
    validated captions); ``zero_shot`` is ``ZeroShotResult.to_dict()``; ``families`` is
    ``Contenders.families``; ``plots`` name existing PNGs, linked relative to ``out_dir`` so the report directory
    can be moved or published as a whole.
    """
    subsets, families = subsets or {}, families or {}
    figures = _relative_plots(out_dir, plots)
    document = {"title": title, "meta": dict(meta), "results": {k: dict(v) for k, v in results.items()},
                "subsets": {name: {k: dict(v) for k, v in subset.items()} for name, subset in subsets.items()},
                "zero_shot": zero_shot, "families": dict(families), "plots": figures}
    json_path, markdown_path = out_dir / JSON_NAME, out_dir / MARKDOWN_NAME
    write_text_atomic(json_path, json.dumps(document, indent=2, allow_nan=False, default=str) + "\n")
    write_text_atomic(markdown_path, _markdown(title, results, subsets, zero_shot, families, figures, meta))
    return json_path, markdown_path
