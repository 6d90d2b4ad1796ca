"""``musictext index build``: FAISS indexes beside one model's shards, so ``search`` need not read every vector."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flows.command_line import RootOption, data_root_of, fail

index_app = typer.Typer(help="FAISS indexes of a model's shards, used by `musictext search` when present.",
                        no_args_is_help=True)
out = Console(width=None if Console().is_terminal else 160)


@index_app.command("build")
def build(model: Annotated[str, typer.Option(help="Audio embedder whose shards to index.")],
          dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")] = None,
          kind: Annotated[str, typer.Option(help="flat (exact, the default), ivf or hnsw (approximate, for large "
                                                 "collections; their recall@10 is measured and shown).")] = "flat",
          rebuild: Annotated[bool, typer.Option(help="Build from scratch instead of adding new shards.")] = False,
          root: RootOption = None) -> None:
    """Index MODEL's shards per dataset; run again after embedding more to add only the new shards."""
    from embedders import EmbedderUnavailableError, embedder_spec
    from training.index import KINDS, build_index
    from training.search import model_shard_dirs

    if kind not in KINDS:
        fail(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    data_root = data_root_of(root)
    try:
        space = embedder_spec(model).space
    except EmbedderUnavailableError as error:
        fail(str(error))
    directories = [d for d in model_shard_dirs(data_root, model, space, dataset) if d.is_dir()]
    if not directories:
        fail(f"no {model} shards in space {space} under {data_root.path}; run `musictext embed DATASET --model "
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

