"""``musictext serve``: the text-embedding service Navidrome calls, started from the command line.

No Prefect deployment: the service is a long-running process a user starts beside Navidrome (by hand, as a
systemd unit or as a container's command), not a flow run.
"""

from __future__ import annotations

import errno
import socket
from typing import Annotated

import typer
from rich.markup import escape

from flows.command_line import RootOption, data_root_of, fail
from flows.progress import console as errors
from store.errors import UserError

RunOption = Annotated[list[str] | None, typer.Option(
    "--run", help="MODEL=RUN_ID: serve this training run for MODEL (muq, mert, latent, dsp, …; repeatable). "
                  "Default: the newest finished run of each model.")]


def serve(host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for other machines).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port (Navidrome's service default).")] = 9003,
          run: RunOption = None,
          device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")] = "auto",
          root: RootOption = None) -> None:
    """Serve the trained text embedders as Navidrome asks for them: POST /embed_text, GET /models, GET /health."""
    runs = _parse_runs(run)
    _check_port_free(host, port)
    import uvicorn

    from training.service import create_app, load_models
    from training.trainer import resolve_device

    data_root = data_root_of(root)
    try:
        chosen_device = resolve_device(device)
        models = load_models(data_root, runs, chosen_device)
    except UserError as error:
        fail(str(error))
    for model in models:
        state = f"run {model.run.run_id}" if model.run else f"unavailable ({model.reason})"
        errors.print(f"{model.name:>20} {model.spec.stored_dim:>6}-d  {escape(state)}")
    errors.print(f"serving on http://{host}:{port} ({chosen_device}); POST /embed_text, GET /models, GET /health")
    uvicorn.run(create_app(models, chosen_device), host=host, port=port, log_level="info")


def _parse_runs(pairs: list[str] | None) -> dict[str, str]:
    runs = {}
    for pair in pairs or []:
        model, sep, run_id = pair.partition("=")
        if not sep or not model.strip() or not run_id.strip():
            fail(f"--run takes MODEL=RUN_ID, e.g. --run muq=muq-musiccaps-pooled; got {pair!r}")
        runs[model.strip()] = run_id.strip()
    return runs


def _check_port_free(host: str, port: int) -> None:
    """Say so before loading any model, rather than after, when another process holds the port."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        reason = "is in use" if error.errno == errno.EADDRINUSE else f"cannot be opened ({error.strerror})"
        fail(f"{host}:{port} {reason}; choose another with --port/--host")

