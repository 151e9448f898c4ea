"""Cosine and Euclidean comparison of embeddings, each knowing its direction.

One class, one argument (``Distance("cosine")`` or ``Distance("euclidean")``),
after pytorch-metric-learning's distances. Three views of a comparison:

- ``raw(a, b)``: the native value; cosine similarity (larger = closer) or
  Euclidean distance (smaller = closer). ``larger_is_closer`` says which.
- ``rho(a, b)``: a distance, always >= 0 and smaller = closer; ``1 - cos``
  for cosine. Contrastive losses take this.
- :func:`to_score`: the one boundary where a raw value becomes a *score*,
  higher = more genuine: ``cos`` for cosine, ``-d`` for Euclidean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("cosine", "euclidean")
_EPS = 1e-8


@dataclass(frozen=True)
class Distance:
    """A way to compare two embeddings (row by row, or all against all)."""

    kind: str = "cosine"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown distance {self.kind!r}; known: {', '.join(KINDS)}")

    @property
    def larger_is_closer(self) -> bool:
        return self.kind == "cosine"

    def raw(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise native value for (B, D) x (B, D) -> (B,)."""
        if self.kind == "cosine":
            return F.cosine_similarity(a, b, dim=-1, eps=_EPS)
        return torch.linalg.vector_norm(a - b, dim=-1)  # its gradient at a == b is 0, not NaN

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """All-against-all native values for (N, D) x (M, D) -> (N, M)."""
        if self.kind == "cosine":
            return F.normalize(a, dim=-1, eps=_EPS) @ F.normalize(b, dim=-1, eps=_EPS).T
        return torch.cdist(a, b)

    def rho(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise distance >= 0, smaller = closer."""
        r = self.raw(a, b)
        return 1.0 - r if self.kind == "cosine" else r


def to_score(raw: torch.Tensor, distance: Distance) -> torch.Tensor:
    """Turn native values into scores, higher = more genuine (the only such boundary)."""
    return raw if distance.larger_is_closer else -raw
