"""``musictext export``: a trained text embedder as a folder that sentence-transformers or onnxruntime loads alone.

A plain function registered by :mod:`flows.cli` (``app.command("export")(export_run)``). torch, transformers and
the export extra load only when the command runs, so the rest of the CLI starts without them.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from flows.command_line import EXIT_PROBLEMS, RootOption, data_root_of, fail


class ExportFormat(StrEnum):
    """The formats of :data:`training.export.TOLERANCES`, as typer offers them."""

    sentence_transformers = "sentence-transformers"
    onnx = "onnx"




def export_run(run: Annotated[str, typer.Argument(help="A run id under the data root's runs/, or a run directory.")],
               format: Annotated[ExportFormat, typer.Option(
                   "--format", help="sentence-transformers (pooled head only) or onnx (either head).")],
               out: Annotated[Path, typer.Option(
                   "--out", help="Folder to write; refused when it holds anything, unless --force.")],
               root: RootOption = None,
               force: Annotated[bool, typer.Option("--force", help="Replace an earlier export at --out.")] = False,
               ) -> None:
    """Export RUN's best text embedder, checked against musictext's own vectors, with a model card."""
    from embedders import EmbedderUnavailableError
    from training import export  # torch and transformers load only for the commands that need them

    data_root = data_root_of(root)
    try:
        result = export.export_run_dir(export.find_run(data_root, run), format.value, out, force=force)
    except (export.ExportError, EmbedderUnavailableError) as error:
        fail(str(error))
    except export.ExportMismatchError as error:
        fail(str(error), EXIT_PROBLEMS)
    card = result.card
    typer.echo(f"exported run {card.run_id} ({card.head} head, {card.dimension}-d vectors of {card.audio_model}) as "
               f"{result.format} to {result.out}; max abs difference from musictext {result.max_abs_diff:.2g} "
               f"(tolerance {result.tolerance:g})")

