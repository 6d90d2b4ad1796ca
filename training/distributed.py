"""The processes that train one run together: this one alone, or one of several that a launcher started.

A launcher (``torchrun``, ``accelerate launch``, or :mod:`training.launch` behind ``musictext train --devices N``)
starts every process with ``WORLD_SIZE`` and ``RANK`` set; Hugging Face ``accelerate`` then joins them into one
process group (NCCL on GPUs, gloo on CPUs) and wraps the trained module in ``DistributedDataParallel``, which
averages gradients across processes. Alone, every method here is the identity, so one-process training runs the
very code it ran before there were several.

What the trainer needs besides DDP, and why:

* :meth:`Processes.gather` concatenates every process's rows *with their gradient*, in rank order (open_clip's
  ``gather_with_grad``): each process's share of a global batch meets every other share as negatives, so the
  InfoNCE loss is the loss of the whole global batch, as one process computes it. Every process computes that
  same loss; the gather's backward sums the N processes' gradients for a process's own rows and DDP divides by
  N, which leaves exactly the gradient one process gets.
* :meth:`Processes.from_main`: evaluation runs on the main process and its metrics are sent to the others, so
  best-checkpoint and early-stopping decisions are the same everywhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

if TYPE_CHECKING:
    from accelerate import Accelerator

T = TypeVar("T")


def launched_processes() -> int:
    """How many processes a launcher started for this training (``WORLD_SIZE``); 1 when none did."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is the process that writes (rank 0), read from the launcher's environment."""
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes training one run (see the module docstring)."""

    device: torch.device
    accelerator: Accelerator | None = None
    """``None`` when this process trains alone."""

    @property
    def count(self) -> int:
        return 1 if self.accelerator is None else self.accelerator.num_processes

    @property
    def index(self) -> int:
        return 0 if self.accelerator is None else self.accelerator.process_index

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as it must be called to train: under DDP when there are several processes."""
        return module if self.accelerator is None else self.accelerator.prepare_model(module)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Every process's ``rows`` concatenated in rank order, differentiable (the module docstring)."""
        if self.accelerator is None:
            return rows
        from torch.distributed import group
        from torch.distributed._functional_collectives import all_gather_single_autograd

        return all_gather_single_autograd(rows.contiguous(), 0, group.WORLD).wait()

    def from_main(self, compute: Callable[[], T]) -> T:
        """What ``compute`` returns on the main process, on every process (the others do not call it)."""
        if self.accelerator is None:
            return compute()
        from accelerate.utils import broadcast_object_list

        box = [compute() if self.is_main else None]
        broadcast_object_list(box)
        return box[0]

    def wait(self) -> None:
        """Until every process got here (the main one prepares the run directory before the others read it)."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    @contextlib.contextmanager
    def accumulating(self, wrapped: nn.Module, last: bool) -> Iterator[None]:
        """A micro-batch's forward and backward; gradients are exchanged only with the ``last`` of a step's."""
        if self.accelerator is None or last:
            yield
        else:
            with self.accelerator.no_sync(wrapped):
                yield


def join(device: torch.device) -> Processes:
    """This process alone on ``device``, or, under a launcher, its rank's device in the launcher's process group
    (``device`` then only says CPU (gloo) or GPU (NCCL, one GPU per process))."""
    if launched_processes() == 1:
        return Processes(device)
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # Precision is the trainer's own (training.model.autocast); an ACCELERATE_MIXED_PRECISION from a launcher's
    # configuration must not add a second autocast around it. A sentence encoder has parts the text embedder does
    # not use (BERT's pooler), which get no gradient: DDP must look for them, or it waits for them forever.
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="no",
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    return Processes(accelerator.device, accelerator)
