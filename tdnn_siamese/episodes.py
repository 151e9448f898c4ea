"""Episodic training: learn to score the way verification scores.

Pair training (:mod:`tdnn_siamese.pairs`, :mod:`tdnn_siamese.losses`) makes
one genuine signature close to another. Verification asks something else:
is a query close to a writer's *template* of K references, by a scoring
strategy of :mod:`tdnn_siamese.verifier` (the diagonal Gaussian of Bromley
et al. 1994, sec. 5, the mean similarity, ...)? On synthetic writers the
two disagree: pair training lowered the single-pair EER on validation
writers while the 5-reference EER of the validation protocol rose.

An *episode* is one writer's enrollment and trial, as in prototypical
networks (Snell, Swersky & Zemel 2017): K genuine references, some other
genuine signatures of the writer as genuine queries, and as impostor
queries some of the writer's skilled forgeries and other writers' genuine
signatures (and, with ``train.episode_imitations``, synthetic forgeries
of the writer's own genuine signatures: :func:`tdnn_siamese.augment.imitate`). The loss scores every query against the references with the
verifier's own ``template_scores`` and asks every impostor score to lie
below every genuine score of the same episode, through the logistic
(softplus) surrogate of the pairwise ranking error:

    L = mean_{g, f} log(1 + exp(scale * (s_f - s_g)))

which is a smooth stand-in for the writer's share of misordered
(genuine, impostor) pairs, the quantity the writer-specific EER reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .distances import Distance
from .verifier import MIN_REFERENCES, OFFSET_WEIGHT, SPREAD_STRATEGIES, distinct_pairs, matrix_scores, spread_of, template_scores


EPISODE_POOLS = ("all", "session")  # where an episode's references come from: any genuine, or one session


@dataclass(frozen=True)
class Episode:
    """Row indices of one writer's episode: references, genuine queries, impostor queries, and the genuine
    signatures to be made into imitations (:func:`tdnn_siamese.augment.imitate`), impostors too."""

    references: np.ndarray
    genuine: np.ndarray
    impostors: np.ndarray
    imitations: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def rows(self) -> np.ndarray:
        """Every row in the order the loss reads them; the imitations' sources last (``is_imitation``)."""
        return np.concatenate([self.references, self.genuine, self.impostors, self.imitations])

    @property
    def is_imitation(self) -> np.ndarray:
        """Per entry of :attr:`rows`: to be replaced by an imitation of that signature."""
        n = len(self.references) + len(self.genuine) + len(self.impostors)
        return np.arange(n + len(self.imitations)) >= n

    @property
    def n_impostors(self) -> int:
        return len(self.impostors) + len(self.imitations)


class EpisodeSampler:
    """Draws episodes from a table (rows = signatures, in the order of the feature list).

    Writers with at least ``min_refs + 1`` genuine signatures can be drawn;
    each episode takes ``min(k, n_genuine - 1)`` references (at least
    ``min_refs``), up to ``n_genuine_queries`` of the remaining genuines,
    up to ``n_skilled`` of the writer's skilled forgeries and ``n_random``
    genuine signatures of other writers. ``n_imitations`` more impostors are
    imitations of the writer's genuine signatures other than the references
    (rows in ``Episode.imitations``; the caller distorts them).

    ``pool`` says where the references come from. ``"all"``: any of the
    writer's genuine signatures. ``"session"``: all from one session (drawn
    at random among the writer's known sessions with at least ``min_refs``
    genuines and another genuine left over), the genuine queries from the
    rest, as the protocols enroll from one session and query with the
    writer's later signatures (:mod:`tdnn_siamese.protocols`); a writer
    without such a session is drawn as under ``"all"``.
    """

    def __init__(self, table: pd.DataFrame, k: int = 5, min_refs: int = 2, n_genuine_queries: int = 5, n_skilled: int = 5,
                 n_random: int = 2, pool: str = "all", n_imitations: int = 0):
        if pool not in EPISODE_POOLS:
            raise ValueError(f"unknown episode pool {pool!r}; known: {', '.join(EPISODE_POOLS)}")
        labels, writers = table["label"].to_numpy(), table["writer"].to_numpy()
        names = pd.unique(writers)
        self.genuine = {w: np.flatnonzero((writers == w) & (labels == "genuine")) for w in names}
        self.sessions: dict[object, list[np.ndarray]] = {}  # pool "session": a writer's genuine rows per usable session
        if pool == "session":
            session = table["session"].to_numpy() if "session" in table else np.full(len(table), None)
            for w in names:
                g = self.genuine[w]
                known = [s for s in pd.unique(session[g]) if not pd.isna(s)]
                groups = [g[session[g] == s] for s in sorted(known)]
                usable = [x for x in groups if len(x) >= min_refs and len(g) > len(x)]
                if usable:
                    self.sessions[w] = usable
        self.skilled = {w: np.flatnonzero((writers == w) & (labels == "skilled")) for w in names}
        self.writers = [w for w in names if len(self.genuine[w]) >= min_refs + 1]
        self.givers = [w for w in names if len(self.genuine[w])]  # writers whose genuines serve as random forgeries
        if not self.writers:
            raise ValueError(f"no writer has {min_refs + 1} genuine signatures: no episode ({min_refs} references and a query) can be made")
        if len(self.givers) < 2 and not any(len(self.skilled[w]) for w in self.writers) and not n_imitations:
            raise ValueError("episodes need impostors: skilled forgeries of a writer with references, or genuine signatures of a second writer")
        self.k, self.min_refs = k, min_refs
        self.n_genuine_queries, self.n_skilled, self.n_random = n_genuine_queries, n_skilled, n_random
        self.n_imitations = n_imitations

    def sample(self, n: int, rng: np.random.Generator) -> list[Episode]:
        """``n`` episodes of distinct writers where there are enough writers (drawn uniformly), else with repeats."""
        picks = rng.choice(len(self.writers), size=n, replace=n > len(self.writers))
        out = []
        for wi in picks:
            w = self.writers[wi]
            if w in self.sessions:
                pick = self.sessions[w][rng.integers(len(self.sessions[w]))]
                refs = rng.permutation(pick)[: self.k]
                gq = rng.permutation(np.setdiff1d(self.genuine[w], refs))[: self.n_genuine_queries]
            else:
                g = rng.permutation(self.genuine[w])
                k = max(self.min_refs, min(self.k, len(g) - 1))
                refs, gq = g[:k], g[k : k + self.n_genuine_queries]
            s = self.skilled[w]
            sq = rng.choice(s, size=min(self.n_skilled, len(s)), replace=False) if len(s) else np.empty(0, np.int64)
            others = [o for o in self.givers if o != w]
            rq = (np.array([rng.choice(self.genuine[others[j]]) for j in rng.choice(len(others), size=min(self.n_random, len(others)), replace=False)],
                           dtype=np.int64) if others and self.n_random else np.empty(0, np.int64))
            imp = np.concatenate([sq, rq]).astype(np.int64)
            im = np.empty(0, np.int64)
            if self.n_imitations:  # drawn last, so that episodes without imitations draw as before
                rest = np.setdiff1d(self.genuine[w], refs)
                im = rng.choice(rest, size=min(self.n_imitations, len(rest)), replace=False).astype(np.int64)
            if len(imp) + len(im) == 0:
                continue
            out.append(Episode(refs.astype(np.int64), gq.astype(np.int64), imp, im))
        return out


def template_ranking_loss(embeddings: torch.Tensor, episodes: list[Episode], distance: Distance, strategy: str,
                          scale: float, global_weight: float = 0.0, offset_weight: float = OFFSET_WEIGHT) -> torch.Tensor:
    """Mean over episodes of the softplus ranking loss of impostor against genuine template scores.

    ``embeddings`` holds the episodes' rows in order (``Episode.rows`` of each,
    concatenated), so episode ``e`` occupies the next ``len(e.rows)`` rows.
    With ``global_weight > 0`` the same ranking loss over all the step's
    genuine and impostor scores, across writers (the global EER's ordering),
    is added with that weight. ``offset_weight``: the offset strategies' share of the spread.
    """
    if strategy not in MIN_REFERENCES:
        raise ValueError(f"unknown scoring strategy {strategy!r}")
    sizes = [(len(ep.references), len(ep.genuine), ep.n_impostors) for ep in episodes]
    if sum(map(sum, sizes)) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings for episodes of {sum(map(sum, sizes))} rows")
    scores = _dtw_scores(embeddings, sizes, distance, strategy, offset_weight) if distance.kind == "dtw" else None
    losses, start, gs, fs = [], 0, [], []
    for i, (k, ng, ni) in enumerate(sizes):
        e = embeddings[start : start + k + ng + ni]
        start += k + ng + ni
        s = scores[i] if scores is not None else template_scores(e[:k], e[k:], distance, strategy, offset_weight=offset_weight)
        g, f = s[:ng], s[ng:]
        losses.append(F.softplus(scale * (f[None, :] - g[:, None])).mean())
        gs.append(g), fs.append(f)
    loss = torch.stack(losses).mean()
    if global_weight > 0:
        g, f = torch.cat(gs), torch.cat(fs)
        loss = loss + global_weight * F.softplus(scale * (f[None, :] - g[:, None])).mean()
    return loss


def _dtw_scores(embeddings: torch.Tensor, sizes: list[tuple[int, int, int]], distance: Distance, strategy: str,
                offset_weight: float = OFFSET_WEIGHT) -> list[torch.Tensor]:
    """Every episode's query scores, as ``template_scores`` gives them, from one batched soft-DTW call.

    DTW costs a loop over anti-diagonals per call; one call for all the
    step's comparisons instead of one per episode makes that loop run once.
    """
    ia, ib, start = [], [], 0
    for k, ng, ni in sizes:
        q = torch.arange(start + k, start + k + ng + ni)
        r = torch.arange(start, start + k)
        ia.append(q.repeat_interleave(k)), ib.append(r.repeat(ng + ni))
        if strategy in SPREAD_STRATEGIES:
            i, j = distinct_pairs(k)
            ia.append(r[i]), ib.append(r[j])
        start += k + ng + ni
    ia_t, ib_t = torch.cat(ia), torch.cat(ib)
    raw = distance.raw(embeddings[ia_t], embeddings[ib_t])
    out, at = [], 0
    for k, ng, ni in sizes:
        cross = raw[at : at + (ng + ni) * k].reshape(ng + ni, k)
        at += (ng + ni) * k
        spread = None
        if strategy in SPREAD_STRATEGIES:
            spread = spread_of(raw[at : at + k * (k - 1) // 2], distance)
            at += k * (k - 1) // 2
        out.append(matrix_scores(cross, spread, distance, strategy, offset_weight))
    return out
