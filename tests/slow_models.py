"""Models for tests that need a run to take a while (killing a run mid-way)."""

from __future__ import annotations

import time

import torch
from torch import nn


class SlowColourClassifier(nn.Module):
    """Three classes from the mean colour (red, green, blue), 50 ms per image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05 * x.shape[0])
        return x.mean(dim=(2, 3)) * 10


def slow_classifier() -> nn.Module:
    return SlowColourClassifier()
