"""Scoring a query against a writer's reference embeddings (higher = more genuine).

Scoring strategies (``STRATEGIES``):

- ``mean``: mean similarity of the query to the references.

The enroll/verify API joins this module with issue #4.
"""

from __future__ import annotations

import torch

from .distances import Distance, to_score

STRATEGIES = ("mean",)


def template_scores(refs: torch.Tensor, queries: torch.Tensor, distance: Distance, strategy: str = "mean") -> torch.Tensor:
    """Scores (Q,) of queries (Q, D) against one writer's references (K, D)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown scoring strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    s = to_score(distance.matrix(queries, refs), distance)  # (Q, K)
    return s.mean(dim=1)
