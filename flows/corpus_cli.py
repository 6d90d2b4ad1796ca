"""``musictext export-corpus``: a dataset as Parquet and a dataset card that Hugging Face ``datasets`` opens.

A plain function, registered by ``flows.cli`` (``app.command("export-corpus")(export_corpus)``); it imports
nothing from ``flows.cli`` so that module can import this one at its top. The exporter, and with it the
``datasets`` library of the export extra, is imported only when the command runs, so the rest of the CLI works
without the extra; so are the sources and embedders, which ``musictext --help`` does not need.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flows.command_line import RootOption, data_root_of, fail
from flows.progress import console as errors

if TYPE_CHECKING:
    from store.corpus_export import CorpusExport

EXPORT_EXTRA = "pip install -e '.[export]'"

stdout = Console(width=None if Console().is_terminal else 160)

OutOption = Annotated[Path, typer.Option("--out", help="Folder to write (must be empty, or see --force).")]
ModelOption = Annotated[str | None, typer.Option(
    help="Also export this audio embedder's vectors (column `vector`).")]
SpaceOption = Annotated[str | None, typer.Option(
    help="The space of MODEL's vectors to export (default: MODEL's current space).")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace a non-empty --out.")]


def export_corpus(dataset: str, out: OutOption, model: ModelOption = None, space: SpaceOption = None,
                  root: RootOption = None, force: ForceOption = False) -> None:
    """Write DATASET's items (clips embedded as FLAC, captions, tags, and MODEL's vectors) as Parquet shards per
    split with a dataset card, for `datasets.load_dataset` and the Hugging Face Hub."""
    from embedders import EmbedderUnavailableError

    exporter = _exporter()
    data_root = data_root_of(root)
    try:
        vector_space = _space(model, space)
        with _ProgressBar(dataset) as progress:
            result = exporter.export_corpus(data_root, dataset, out, model=model, space=vector_space, force=force,
                                            description=_description(dataset), progress=progress)
    except (exporter.CorpusExportError, EmbedderUnavailableError) as error:
        fail(str(error))
    _print_result(result)


def _exporter() -> ModuleType:
    """``store.corpus_export``, or a one-line error naming the extra when its packages are not installed."""
    try:
        from store import corpus_export
    except ModuleNotFoundError as error:
        fail(f"export-corpus needs the export extra ({error.name} is not installed): {EXPORT_EXTRA}")
    return corpus_export


def _space(model: str | None, space: str | None) -> str | None:
    """The space to read MODEL's vectors from; an unknown MODEL raises :class:`EmbedderUnavailableError`."""
    if model is None:
        if space is not None:
            fail("--space names the space of --model's vectors; give --model too")
        return None
    from embedders import embedder_spec

    return space or embedder_spec(model).space


def _description(dataset: str) -> str:
    from downloaders import get_source, source_names

    return get_source(dataset).description if dataset in source_names() else ""


class _ProgressBar:
    """A bar on stderr, fed by the exporter's (done, total) callback; shown from the first rows written (a
    refused export prints its error alone) and gone once the export ends."""

    def __init__(self, dataset: str) -> None:
        self._bar = Progress(TextColumn(f"[bold]export[/] {escape(dataset)}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=errors, transient=True)
        self._task = self._bar.add_task("export", total=None)

    def __call__(self, done: int, total: int) -> None:
        if not self._bar.live.is_started:
            self._bar.start()
        self._bar.update(self._task, completed=done, total=total)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *_: object) -> None:
        if self._bar.live.is_started:
            self._bar.stop()


def _print_result(result: CorpusExport) -> None:
    splits = ", ".join(f"{split.name} {split.rows} ({len(split.files)} file(s))" for split in result.splits)
    stdout.print(f"{result.rows} item(s) in {result.out}: {splits}; card {result.card.name}")
    stdout.print(f"left out, no clip: {len(result.missing_clips)}")
    if result.model:
        stdout.print(f"{result.model} vectors (space {result.space}); null, no vector: {len(result.missing_vectors)}")

