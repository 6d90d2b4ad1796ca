"""Putting musictext on a Prefect server: its work pools, its result storage, its deployments.

``musictext deploy`` is idempotent: pools and the result storage are created only when missing (a
user's own base job template or storage is kept), and ``prefect deploy --all`` updates deployments in
place. The deployments themselves are declared in ``deployments/prefect.yaml``; their pull step moves
each flow run into ``$MUSICTEXT_REPO``, the clone of this repository on the worker's machine, which
``musictext worker`` sets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.filesystems import LocalFileSystem
from prefect.settings import PREFECT_API_URL

from store.errors import UserError
from store.layout import DataRoot

REPO = Path(__file__).resolve().parent.parent
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
POOLS = {
    "cpu": "musictext: ingestion, preprocessing, verification, evaluation and the pipeline itself",
    "gpu": "musictext: audio embedding and text-embedder training (one worker per GPU machine)",
}
RESULT_STORAGE_BLOCK = "musictext-results"


class ServerRequiredError(UserError, RuntimeError):
    """The command needs a Prefect server and none is configured; the message says how to start or name one."""


def prefect_executable() -> str:
    """The ``prefect`` command of this environment (the one musictext is installed in)."""
    return str(Path(sys.executable).with_name("prefect"))


def require_server() -> str:
    url = PREFECT_API_URL.value()
    if not url:
        raise ServerRequiredError("no Prefect server configured: start one with `musictext server` and set "
                                  "PREFECT_API_URL=http://127.0.0.1:4200/api (README, 'Running on a server')")
    return url


def ensure_pools(client: SyncPrefectClient) -> dict[str, str]:
    """Create the ``cpu`` and ``gpu`` process pools that are missing; say for each whether it was made."""
    outcome = {}
    for name, description in POOLS.items():
        try:
            client.read_work_pool(name)
            outcome[name] = "kept"
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process", description=description))
            outcome[name] = "created"
    return outcome


def ensure_result_storage(client: SyncPrefectClient, root: DataRoot) -> str:
    """A step handed to the gpu pool returns its result through result storage, which the pipeline's worker
    must read: unless the server already has a default, it becomes a folder of the data root, which every
    worker mounts."""
    if client.read_server_default_result_storage().default_result_storage_block_id:
        return "kept the server's default result storage"
    basepath = root.path / "prefect-results"
    block_id = LocalFileSystem(basepath=str(basepath)).save(RESULT_STORAGE_BLOCK, overwrite=True)
    client.update_server_default_result_storage(block_id)
    return f"results stored under {basepath}"


def deploy_all(prefect_file: Path = PREFECT_FILE) -> None:
    """``prefect deploy --all`` over ``prefect_file``, from the repository root its entrypoints are relative to.

    ``prefect deploy`` fills ``{{ $VAR }}`` placeholders from its own environment; ``MUSICTEXT_REPO`` is kept
    out of it so that the pull step's placeholder is stored as is and each worker resolves it to its clone.
    """
    env = {key: value for key, value in os.environ.items() if key != "MUSICTEXT_REPO"}
    subprocess.run([prefect_executable(), "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)],
                   cwd=REPO, env=env, check=True)
