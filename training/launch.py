"""Training one run in ``config.devices`` processes on this machine, from a process that is not one of them.

The Prefect train flow (and so ``musictext train --devices N``) calls :func:`train_in_processes`: it starts
``torchrun --standalone`` (PyTorch's launcher, the one ``accelerate launch`` uses for several GPUs, and the one
that also starts several CPU processes without MPI), which runs :func:`main` of this module once per process;
:mod:`training.distributed` joins them with ``accelerate``. The caller waits, then reads the result the main
process wrote (``finished.json``). A user's mistake found inside (a run resumed with another configuration, say)
comes back as the same one-line :class:`UserError`, through a file, not as a crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from store.atomic import write_text_atomic
from store.errors import InvalidInputError, UserError
from store.layout import DataRoot
from training.config import TrainConfig
from training.trainer import TrainResult, read_finished, train

EXIT_USER_ERROR = 2


def available_devices(device: str) -> tuple[int, str]:
    """How many processes ``device`` (``auto``, ``cpu``, ``cuda``) can train in here, and what they are."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.device_count(), "CUDA GPU(s)"
    return os.cpu_count() or 1, "CPU core(s)"


def check_devices(config: TrainConfig) -> None:
    """Refuse more processes than this machine has GPUs (or, on CPU, cores)."""
    if config.devices > 1:
        count, what = available_devices(config.device)
        if config.devices > count:
            raise InvalidInputError(f"--devices {config.devices} asks for more than the {count} {what} this "
                                    f"machine has (device {config.device})")


def launch_command(config: TrainConfig, root: DataRoot, error_file: Path) -> list[str]:
    """``torchrun`` starting :func:`main` in ``config.devices`` processes on a free local port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={config.devices}",
            "-m", __name__, str(root.path), json.dumps(config.to_json()), str(error_file)]


def train_in_processes(config: TrainConfig, root: DataRoot) -> TrainResult:
    """Train ``config`` in its ``devices`` processes and return what :func:`training.trainer.train` would."""
    check_devices(config)
    # torchrun gives each process one thread unless told; on CPU the processes share the cores.
    threads = str(max(1, (os.cpu_count() or 1) // config.devices)) if config.device == "cpu" else "1"
    env = {"OMP_NUM_THREADS": threads, **os.environ}
    with tempfile.TemporaryDirectory(prefix="musictext-launch-") as scratch:
        error_file = Path(scratch) / "error"
        done = subprocess.run(launch_command(config, root, error_file), env=env, stdin=subprocess.DEVNULL)
        if error_file.exists():
            raise UserError(error_file.read_text())
    if done.returncode:
        raise RuntimeError(f"training {config.run_id} in {config.devices} processes failed (exit status "
                           f"{done.returncode}); their output above says why")
    return read_finished(root.runs_dir() / config.run_id)


def main(argv: list[str] | None = None) -> None:
    """One process of :func:`train_in_processes`: ``ROOT CONFIG_JSON ERROR_FILE``."""
    root, config_json, error_file = sys.argv[1:] if argv is None else argv
    try:
        train(TrainConfig.from_json(json.loads(config_json)), DataRoot(Path(root)))
    except UserError as error:
        write_text_atomic(Path(error_file), str(error))
        raise SystemExit(EXIT_USER_ERROR) from None


if __name__ == "__main__":
    main()
