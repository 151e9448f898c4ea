"""Pair losses for Siamese training, each taking the distance as an argument.

Label convention everywhere: ``y = 1`` for a genuine pair (two genuine
signatures of one writer), ``y = 0`` for a forgery pair. ``rho`` is the
distance of :meth:`Distance.rho` (>= 0, smaller = closer).

- ``contrastive`` (linear margin): ``L = y rho + (1 - y) max(0, m - rho)``.
- ``contrastive_squared`` (Hadsell, Chopra & LeCun 2006, eq. 4):
  ``L = 1/2 y rho^2 + 1/2 (1 - y) max(0, m - rho)^2``. The paper writes it
  with Y = 0 for *similar* pairs; we use y = 1 for similar (genuine) pairs,
  so its (1 - Y) term is our y term.
- ``bromley`` (Bromley et al. 1994, sec. 4): squared error between the cosine
  of the two outputs and a target, +1 for a genuine pair and -0.9 for a
  forgery pair. It needs the cosine distance.

Each loss returns the mean over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .distances import Distance

NAMES = ("contrastive", "contrastive_squared", "bromley")


@dataclass(frozen=True)
class PairLoss:
    """A pair loss: ``PairLoss("contrastive", Distance("cosine"), margin=1.0)(a, b, y)``."""

    name: str
    distance: Distance
    margin: float = 1.0
    genuine_target: float = 1.0
    forgery_target: float = -0.9

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"unknown loss {self.name!r}; known: {', '.join(NAMES)}")
        if self.name == "bromley" and self.distance.kind != "cosine":
            raise ValueError("the bromley loss compares the cosine of the two outputs with a target; use distance 'cosine'")
        if not self.margin > 0:
            raise ValueError(f"margin must be positive, got {self.margin}")

    def __call__(self, a: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss over pairs (a[i], b[i]) with labels y[i] in {0, 1}; a, b: (B, D)."""
        y = y.to(a.dtype)
        if self.name == "bromley":
            target = y * self.genuine_target + (1 - y) * self.forgery_target
            return ((self.distance.raw(a, b) - target) ** 2).mean()
        rho = self.distance.rho(a, b)
        hinge = torch.clamp(self.margin - rho, min=0)
        if self.name == "contrastive":
            return (y * rho + (1 - y) * hinge).mean()
        return (0.5 * y * rho**2 + 0.5 * (1 - y) * hinge**2).mean()
