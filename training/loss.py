"""Symmetric InfoNCE with a learnable temperature, plus an optional squared distance (stage 2).

Row ``i`` of the text and audio batches is a matching pair and every other row of the batch a negative,
in both directions (text → music and music → text), as in CLIP. The temperature is learned as its log, so
it stays positive and moves by ratios, and it is clamped to ``[min_temperature, max_temperature]``: a
temperature that runs towards 0 makes the logits, and the gradients, blow up.

Stage 2 adds ``mse_weight`` × the mean over pairs of ``‖text − audio‖²``: the contrastive term only cares
about directions relative to the other rows, the squared distance pulls each text onto its own audio
vector. It is summed over dimensions, not averaged, so a weight means the same for 576-d and 76,800-d
spaces (for unit vectors it is ``2 − 2·cos``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    infonce: torch.Tensor
    squared_distance: torch.Tensor


def symmetric_infonce(text: torch.Tensor, audio: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """Mean of the text→audio and audio→text cross-entropies over ``text @ audio.T / temperature``."""
    logits = text.float() @ audio.float().T / temperature
    targets = torch.arange(len(text), device=text.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def squared_distance(text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``‖text − audio‖²`` (summed over dimensions; see the module docstring)."""
    return (text.float() - audio.float()).pow(2).sum(dim=-1).mean()


class ContrastiveLoss(nn.Module):
    def __init__(self, *, temperature: float = 0.07, min_temperature: float = 0.01, max_temperature: float = 1.0,
                 mse_weight: float = 0.0) -> None:
        super().__init__()
        if not 0 < min_temperature <= temperature <= max_temperature:
            raise ValueError(f"need 0 < min_temperature ({min_temperature}) <= temperature ({temperature}) "
                             f"<= max_temperature ({max_temperature})")
        if mse_weight < 0:
            raise ValueError(f"mse_weight must be >= 0, got {mse_weight}")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.log_bounds = (math.log(min_temperature), math.log(max_temperature))
        self.mse_weight = mse_weight

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.clamp(*self.log_bounds).exp()

    def forward(self, text: torch.Tensor, audio: torch.Tensor) -> LossTerms:
        infonce = symmetric_infonce(text, audio, self.temperature)
        distance = squared_distance(text, audio)
        total = infonce + self.mse_weight * distance if self.mse_weight else infonce
        return LossTerms(total, infonce, distance)
