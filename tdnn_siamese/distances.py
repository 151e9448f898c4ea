"""Cosine, Euclidean and DTW comparison of embeddings, each knowing its direction.

One class, one argument (``Distance("cosine")``, ``Distance("euclidean")``),
after pytorch-metric-learning's distances. ``Distance("dtw", frame_dim=E)``
compares embeddings that are frame sequences (the TDNN's ``frames``
pooling: S frames of E values, flattened) by soft-DTW
(:mod:`tdnn_siamese.softdtw`), smaller = closer. Three views of a comparison:

- ``raw(a, b)``: the native value; cosine similarity (larger = closer) or
  Euclidean distance (smaller = closer). ``larger_is_closer`` says which.
- ``rho(a, b)``: a distance, >= 0 and smaller = closer; ``1 - cos``
  for cosine; soft-DTW clamped at 0 (its smoothing may take it below 0 by
  at most ``DTW_GAMMA * ln 3``). Contrastive losses take this.
- :func:`to_score`: the one boundary where a raw value becomes a *score*,
  higher = more genuine: ``cos`` for cosine, ``-d`` for Euclidean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .softdtw import soft_dtw, soft_dtw_matrix

KINDS = ("cosine", "euclidean", "dtw")
_EPS = 1e-8
DTW_GAMMA = 0.1  # soft-DTW smoothing, in training and in scoring alike


@dataclass(frozen=True)
class Distance:
    """A way to compare two embeddings (row by row, or all against all)."""

    kind: str = "cosine"
    frame_dim: int = 0  # "dtw": values per frame of the flattened frame sequences
    members: int = 1  # "dtw": an ensemble's embeddings hold this many frame sequences, one per member, one after
    #   another; each is aligned with the same member's of the other embedding and the members' distances averaged

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown distance {self.kind!r}; known: {', '.join(KINDS)}")
        if (self.kind == "dtw") != (self.frame_dim > 0):
            raise ValueError("distance 'dtw' needs frame_dim > 0 (and only it takes one)")
        if self.members < 1 or (self.members > 1 and self.kind != "dtw"):
            raise ValueError("members > 1 (an ensemble's frame sequences) is a setting of distance 'dtw' only")

    @classmethod
    def for_encoder(cls, kind: str, frame_dim: int, members: int = 1) -> "Distance":
        """The distance ``kind`` for an encoder whose frames have ``frame_dim`` values (ignored but by "dtw"), an
        ensemble of ``members`` encoders (for "dtw")."""
        return cls(kind, frame_dim if kind == "dtw" else 0, members if kind == "dtw" else 1)

    def _frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, S, frame_dim) frames and each row's own count where some are zero padding (else None)."""
        if x.shape[-1] % self.frame_dim:
            raise ValueError(f"embeddings of {x.shape[-1]} values are not frames of {self.frame_dim}")
        f = x.reshape(x.shape[0], -1, self.frame_dim)
        counts = frame_lengths(f)
        return f, (counts if bool((counts < f.shape[1]).any()) else None)

    def _member_views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's flattened frame sequences (B, D / members)."""
        if x.shape[-1] % (self.members * self.frame_dim):
            raise ValueError(f"embeddings of {x.shape[-1]} values are not {self.members} members' frames of {self.frame_dim}")
        return list(x.reshape(x.shape[0], self.members, -1).unbind(1))

    def _members_mean(self, op: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``op`` ("raw" or "matrix") of each member's frames against the same member's, averaged over members."""
        one = Distance(self.kind, self.frame_dim)
        return torch.stack([getattr(one, op)(x, y) for x, y in zip(self._member_views(a), self._member_views(b))]).mean(0)

    @property
    def larger_is_closer(self) -> bool:
        return self.kind == "cosine"

    def raw(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise native value for (B, D) x (B, D) -> (B,)."""
        if self.kind == "cosine":
            return F.cosine_similarity(a, b, dim=-1, eps=_EPS)
        if self.kind == "dtw" and self.members > 1:
            return self._members_mean("raw", a, b)
        if self.kind == "dtw":
            (fa, la), (fb, lb) = self._frames(a), self._frames(b)
            return soft_dtw(fa, fb, DTW_GAMMA, la, lb)
        return torch.linalg.vector_norm(a - b, dim=-1)  # its gradient at a == b is 0, not NaN

    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """All-against-all native values for (N, D) x (M, D) -> (N, M)."""
        if self.kind == "cosine":
            return F.normalize(a, dim=-1, eps=_EPS) @ F.normalize(b, dim=-1, eps=_EPS).T
        if self.kind == "dtw" and self.members > 1:
            return self._members_mean("matrix", a, b)
        if self.kind == "dtw":
            (fa, la), (fb, lb) = self._frames(a), self._frames(b)
            return soft_dtw_matrix(fa, fb, DTW_GAMMA, la=la, lb=lb)
        return torch.cdist(a, b)

    def rho(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise distance >= 0, smaller = closer."""
        return self.as_rho(self.raw(a, b))

    def as_rho(self, raw: torch.Tensor) -> torch.Tensor:
        """Native values (any shape) as distances >= 0, smaller = closer: ``1 - cos``, the Euclidean distance, or
        soft-DTW clamped at 0."""
        if self.kind == "dtw":  # soft-DTW can dip below 0; a contrastive loss would then push a genuine pair apart towards 0
            return raw.clamp_min(0)
        return 1.0 - raw if self.kind == "cosine" else raw


def frame_lengths(frames: torch.Tensor) -> torch.Tensor:
    """Frames in use of each sequence (B, S, E) -> (B,): frames are unit vectors, padding frames are zero, and
    the frames in use come first (the TDNN's ``frames`` pooling with ``frame_steps``)."""
    return (frames.detach().abs().sum(-1) > 0).sum(-1).clamp_min(1).cpu()


def to_score(raw: torch.Tensor, distance: Distance) -> torch.Tensor:
    """Turn native values into scores, higher = more genuine (the only such boundary)."""
    return raw if distance.larger_is_closer else -raw
