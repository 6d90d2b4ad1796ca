"""Evaluation reports: one JSON file for machines and one Markdown file for people, side by side with their
figures under ``reports/``.

Every retrieval number is printed with the number of candidates it was ranked among and the chance level, since
Recall@10 = 0.2 is excellent among 50,000 candidates and poor among 20.
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


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value)


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]


def _metric_columns(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Metric names in first-seen order; candidates and chance levels are reported apart."""
    columns: dict[str, None] = {}
    for metrics in results.values():
        columns.update((name, None) for name in metrics if name != "candidates" and not name.startswith("chance_"))
    return list(columns)


def _chance_lines(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    chances: dict[int, dict[str, float]] = {}
    for metrics in results.values():
        levels = {name.removeprefix("chance_"): value for name, value in metrics.items() if name.startswith("chance_")}
        chances.setdefault(int(metrics.get("candidates", 0)), {}).update(levels)
    return [
        f"Chance with {candidates} candidates: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in levels.items()) + "."
        for candidates, levels in sorted(chances.items())
        if levels
    ]


def _retrieval_section(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    columns = _metric_columns(results)
    rows = [
        [name, int(metrics["candidates"]) if "candidates" in metrics else None, *(metrics.get(c) for c in columns)]
        for name, metrics in results.items()
    ]
    return [
        "## Retrieval",
        "",
        "t2m: text query, music candidates; m2t: music query, text candidates. Ranks are 1-based; a tie with the "
        "true match counts against it.",
        "",
        *_table(["", "candidates", *columns], rows),
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
    for family in zero_shot["families"]:
        lines += [
            f"Single-label family **{family['family']}**: accuracy {_fmt(family['accuracy'])} over {family['items']} "
            f"items ({family['excluded']} without exactly one of its tags left out); a uniform guess among its "
            f"{len(family['tags'])} tags gets {_fmt(1 / len(family['tags']))}.",
            "",
        ]
    return lines


def _relative_plots(out_dir: Path, plots: Mapping[str, Path]) -> dict[str, str]:
    missing = [str(path) for path in plots.values() if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"report figures do not exist: {', '.join(missing)}")
    return {name: Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
            for name, path in plots.items()}


def _markdown(title: str, results: Mapping[str, Mapping[str, float]], zero_shot: Mapping[str, Any] | None,
              figures: Mapping[str, str], meta: Mapping[str, object]) -> str:
    lines = [f"# {title}", "", *(f"- **{key}**: {_fmt(value)}" for key, value in meta.items()), ""]
    lines += _retrieval_section(results)
    if zero_shot is not None:
        lines += _zero_shot_section(zero_shot)
    if figures:
        lines += ["## Figures", ""]
        lines += [line for name, link in figures.items() for line in (f"### {name}", "", f"![{name}]({link})", "")]
    return "\n".join(lines)


def write_evaluation_report(
    out_dir: Path,
    *,
    title: str,
    results: Mapping[str, Mapping[str, float]],
    zero_shot: Mapping[str, Any] | None,
    plots: Mapping[str, Path],
    meta: Mapping[str, object],
) -> tuple[Path, Path]:
    """Write ``evaluation.json`` and ``evaluation.md`` into ``out_dir``; returns (json path, markdown path).

    ``results`` holds one row of ``retrieval_metrics`` per head or baseline (e.g. "frames", "pooled",
    "untrained frames"); ``zero_shot`` is ``ZeroShotResult.to_dict()``; ``plots`` name existing PNGs, linked
    relative to ``out_dir`` so the report directory can be moved or published as a whole.
    """
    figures = _relative_plots(out_dir, plots)
    document = {"title": title, "meta": dict(meta), "results": {k: dict(v) for k, v in results.items()},
                "zero_shot": zero_shot, "plots": figures}
    json_path, markdown_path = out_dir / JSON_NAME, out_dir / MARKDOWN_NAME
    write_text_atomic(json_path, json.dumps(document, indent=2, allow_nan=False, default=str) + "\n")
    write_text_atomic(markdown_path, _markdown(title, results, zero_shot, figures, meta))
    return json_path, markdown_path
