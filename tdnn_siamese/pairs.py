"""Training pairs: genuine-genuine, genuine-skilled forgery, genuine-other writer.

Bromley et al. (1994, sec. 4) trained on 50% genuine pairs, 40% pairs of a
genuine signature and a forgery of it, and 10% pairs of genuine signatures of
two different writers; :class:`PairSampler` draws that mix (configurable).
Each epoch gets fresh pairs from an explicit ``numpy.random.Generator``;
nothing here seeds itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

BROMLEY_MIX = (0.5, 0.4, 0.1)  # genuine pairs, skilled-forgery pairs, other-writer pairs


@dataclass(frozen=True)
class Pairs:
    """Index pairs into a signature list; ``y`` is 1 for a genuine pair, 0 for a forgery pair."""

    a: np.ndarray
    b: np.ndarray
    y: np.ndarray
    kind: np.ndarray  # 0 genuine, 1 skilled forgery, 2 other writer

    def __len__(self) -> int:
        return len(self.y)


class PairSampler:
    """Draws pairs from a table (rows = signatures, in the order of the feature list).

    Writers are drawn uniformly, so prolific writers do not dominate. Writers
    with fewer than two genuine signatures give no genuine pairs; when no
    writer has skilled forgeries, their share goes to other-writer pairs.
    """

    def __init__(self, table: pd.DataFrame, mix: tuple[float, float, float] = BROMLEY_MIX):
        if len(mix) != 3 or min(mix) < 0 or not np.isclose(sum(mix), 1.0):
            raise ValueError(f"mix must be three non-negative shares that sum to 1, got {mix}")
        labels, writers = table["label"].to_numpy(), table["writer"].to_numpy()
        self.genuine = {w: np.flatnonzero((writers == w) & (labels == "genuine")) for w in pd.unique(writers)}
        self.skilled = {w: np.flatnonzero((writers == w) & (labels == "skilled")) for w in pd.unique(writers)}
        self.pos_writers = [w for w, g in self.genuine.items() if len(g) >= 2]
        self.skl_writers = [w for w, s in self.skilled.items() if len(s) and len(self.genuine[w])]
        self.gen_writers = [w for w, g in self.genuine.items() if len(g)]
        if not self.pos_writers:
            raise ValueError("no writer has two genuine signatures: no genuine pairs can be made")
        if len(self.gen_writers) < 2:
            raise ValueError("need genuine signatures of at least two writers")
        mix = tuple(mix)
        if not self.skl_writers and mix[1] > 0:
            logger.warning("no skilled forgeries in the training data: their share of pairs goes to other-writer pairs")
            mix = (mix[0], 0.0, mix[1] + mix[2])
        self.mix = mix

    def sample(self, n: int, rng: np.random.Generator) -> Pairs:
        """``n`` fresh pairs in random order."""
        counts = rng.multinomial(n, self.mix)
        a, b, kind = [], [], []
        for _ in range(counts[0]):
            g = self.genuine[self.pos_writers[rng.integers(len(self.pos_writers))]]
            i, j = rng.choice(len(g), size=2, replace=False)
            a.append(g[i]), b.append(g[j]), kind.append(0)
        for _ in range(counts[1]):
            w = self.skl_writers[rng.integers(len(self.skl_writers))]
            a.append(rng.choice(self.genuine[w])), b.append(rng.choice(self.skilled[w])), kind.append(1)
        for _ in range(counts[2]):
            i, j = rng.choice(len(self.gen_writers), size=2, replace=False)
            a.append(rng.choice(self.genuine[self.gen_writers[i]])), b.append(rng.choice(self.genuine[self.gen_writers[j]])), kind.append(2)
        order = rng.permutation(n)
        kind_arr = np.asarray(kind, dtype=np.int64)[order]
        return Pairs(a=np.asarray(a, dtype=np.int64)[order], b=np.asarray(b, dtype=np.int64)[order],
                     y=(kind_arr == 0).astype(np.float32), kind=kind_arr)
