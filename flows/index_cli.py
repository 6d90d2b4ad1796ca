"""``musictext index build``: FAISS indexes beside one model's shards, so ``search`` need not read every vector."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from embedders import EmbedderUnavailableError, embedder_spec
from flows.progress import console as errors
from store.layout import DataRoot
from store.settings import load_settings

index_app = typer.Typer(help="FAISS indexes of a model's shards, used by `musictext search` when present.",
                        no_args_is_help=True)
out = Console(width=None if Console().is_terminal else 160)


@index_app.command("build")
def build(model: Annotated[str, typer.Option(help="Audio embedder whose shards to index.")],
          dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")] = None,
          kind: Annotated[str, typer.Option(help="flat (exact, the default), ivf or hnsw (approximate, for large "
                                                 "collections; their recall@10 is measured and shown).")] = "flat",
          rebuild: Annotated[bool, typer.Option(help="Build from scratch instead of adding new shards.")] = False,
          root: Annotated[Path | None, typer.Option("--root", help="Data root (default: MUSICTEXT_ROOT or ./data).")]
          = None) -> None:
    """Index MODEL's shards per dataset; run again after embedding more to add only the new shards."""
    from training.index import KINDS, build_index
    from training.search import model_shard_dirs

    if kind not in KINDS:
        _fail(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    data_root = DataRoot(load_settings(root=str(root) if root else None).root)
    try:
        space = embedder_spec(model).space
    except EmbedderUnavailableError as error:
        _fail(str(error))
    directories = [d for d in model_shard_dirs(data_root, model, space, dataset) if d.is_dir()]
    if not directories:
        _fail(f"no {model} shards in space {space} under {data_root.path}; run `musictext embed DATASET --model "
              f"{model}` first")
    table = Table(title=f"FAISS indexes of {model} ({space})")
    for column in ("dataset", "kind", "rows", "added", "built", "recall@10 vs exact"):
        table.add_column(column, justify="left" if column in ("dataset", "kind", "built") else "right")
    for directory in directories:
        report = build_index(directory, kind=kind, rebuild=rebuild)
        recall = "exact" if report.recall_at_10 is None else f"{report.recall_at_10:.3f}"
        table.add_row(directory.name, report.kind, f"{report.rows:,}", f"{report.added:,}",
                      "from scratch" if report.rebuilt else "new shards added", recall)
    out.print(table)


def _fail(message: str) -> NoReturn:
    errors.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(2)
