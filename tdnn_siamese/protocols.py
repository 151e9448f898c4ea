"""Evaluation protocols: which signatures are references and which are trials.

``S_k`` (the usual online-signature protocol, e.g. SVC2004 and BSEC2009): per
writer, the first k genuine signatures, session 1 first, are the references;
the remaining genuine signatures are genuine trials; all skilled forgeries of
that writer are skilled trials; the first genuine signature of every other
evaluated writer is a random-forgery trial.

:func:`sk_protocols` with ``draws=R > 1`` repeats the protocol with R
seeded random draws of the k references (as in BSEC2009); the report
averages over draws. A draw keeps to the sessions that the first k come
from: references drawn across sessions would make most genuine queries
same-session ones, an easier task than the protocol's (on SVC2004 the
TDNN's S05 skilled EER fell from 3.50% with the first 5 to 2.12% with 10
draws over both sessions; README, "Ablation").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

KINDS = ("genuine", "skilled", "random")
NO_SESSION = 10**9  # the session of a signature without one: after every known session
DRAW_POOLS = ("sessions", "all")  # where random references are drawn from: the sessions of the first k, or every genuine


class ProtocolError(ValueError):
    """A protocol that cannot be run on this corpus (unknown name, too few genuine signatures)."""


@dataclass(frozen=True)
class Protocol:
    """References per writer and a trial table (writer, query, kind); indices are table rows."""

    k: int
    references: dict[str, list[int]]
    trials: pd.DataFrame
    draw: int = 0


def _genuine_order(table: pd.DataFrame, writer: str) -> tuple[list[int], list[int]]:
    """The writer's genuine rows, session 1 first (no session: last), and their sessions (``NO_SESSION`` if unknown)."""
    g = table[(table["writer"] == writer) & (table["label"] == "genuine")]
    g = g.assign(_s=g["session"].fillna(NO_SESSION)).sort_values(["_s", "number"], kind="stable")
    return g.index.tolist(), [int(x) for x in g["_s"]]


def _pool_size(sessions: list[int], k: int, pool: str) -> int:
    """How many of a writer's genuine signatures (``sessions`` sorted) a draw of k takes its references from:
    those of the sessions of the first k, in full, or all."""
    return sum(x <= sessions[k - 1] for x in sessions) if pool == "sessions" else len(sessions)


def fixed_draws(table: pd.DataFrame, k: int, pool: str = "sessions") -> tuple[int, int]:
    """(writers whose every draw of k references is the first k, writers in the protocol): those whose draw
    pool holds just k signatures (SVC2004 at S10: session 1 holds 10)."""
    fixed = total = 0
    for w in pd.unique(table["writer"]):
        order, sessions = _genuine_order(table, w)
        if len(order) >= k:
            total += 1
            fixed += _pool_size(sessions, k, pool) == k
    return fixed, total


def draws_text(table: pd.DataFrame, k: int, draws: int) -> str:
    """A report's words for ``draws`` random draws of k references (empty for one: the first-k protocol).

    Says where a writer's pool holds just k signatures, so that draws that
    cannot differ are not called random.
    """
    if draws <= 1:
        return ""
    fixed, total = fixed_draws(table, k)
    pool = f"the genuine signatures of the sessions the first {k} come from"
    if fixed and fixed == total:
        return (f"; {draws} draws of the references were asked for, but every writer's pool ({pool}) holds just {k}, "
                f"so every draw is the first {k}: the figures are those of one draw")
    text = f", or {draws} random draws of {k} drawn among {pool}"
    return text + (f" ({fixed} of {total} writers have just {k} there: their every draw is the first {k})" if fixed else "")


def fitting_k(table: pd.DataFrame, k: int) -> int:
    """``k`` capped so that the writer with the most genuine signatures keeps one as a query (at least 1)."""
    counts = table[table.label == "genuine"].groupby("writer").size()
    return max(1, min(k, int(counts.max()) - 1)) if len(counts) else 1


def sk_protocol(table: pd.DataFrame, k: int, rng: np.random.Generator | None = None, draw: int = 0,
                warn: bool = True, pool: str = "sessions") -> Protocol:
    """The S_k protocol over every writer of ``table`` with at least k genuine signatures.

    With ``rng`` the k references are a random draw instead of the first k:
    among the writer's genuine signatures of the sessions the first k come
    from (SVC2004, S05: 5 of the 10 of session 1, so that, as with the first
    5, most genuine queries are of the later session; S10: all of session 1,
    every draw alike), or among all of them where sessions are unknown;
    ``pool = "all"``: among all of them whatever the sessions (what this
    toolkit did before 2026-11-29, commit e6693d3). ``warn``: log the writers left out
    (:func:`sk_protocols` does for its first draw only: the same writers are
    left out of every draw).
    """
    if k < 1:
        raise ProtocolError(f"k must be at least 1, got {k}")
    if pool not in DRAW_POOLS:
        raise ProtocolError(f"unknown draw pool {pool!r}; known: {', '.join(DRAW_POOLS)}")
    table = table.reset_index(drop=True)
    refs, orders, firsts = {}, {}, {}
    for w in pd.unique(table["writer"]):
        order, sessions = _genuine_order(table, w)
        if order:
            firsts[w] = order[0]  # the random-forgery trial of this writer, whatever the reference draw
        if len(order) < k:
            if warn:
                logger.warning("writer %s has %d genuine signatures, fewer than k=%d: left out of the protocol", w, len(order), k)
            continue
        if len(order) == k and warn:
            logger.warning("writer %s has %d genuine signatures, all of them references for k=%d: it has no genuine "
                           "query, so its forgeries cannot be weighed against its genuine signatures", w, k, k)
        if rng is not None:
            n = _pool_size(sessions, k, pool)
            pick = set(rng.choice(n, size=k, replace=False).tolist())
            order = [order[i] for i in sorted(pick)] + [order[i] for i in range(len(order)) if i not in pick]
        refs[w], orders[w] = order[:k], order
    if not refs:
        raise ProtocolError(f"no writer has {k} genuine signatures: protocol S{k:02d} needs at least {k}")
    rows = []
    for w in refs:
        rows += [(w, q, "genuine") for q in orders[w][k:]]
        rows += [(w, q, "skilled") for q in table.index[(table["writer"] == w) & (table["label"] == "skilled")]]
        rows += [(w, firsts[o], "random") for o in refs if o != w]
    return Protocol(k=k, references=refs, trials=pd.DataFrame(rows, columns=["writer", "query", "kind"]), draw=draw)


def sk_protocols(table: pd.DataFrame, k: int, draws: int = 1, seed: int = 0, pool: str = "sessions",
                 warn: bool = True) -> list[Protocol]:
    """S_k once (first k references), or ``draws`` times with seeded random references (from ``pool``, see :func:`sk_protocol`).
    ``warn``: log the writers left out or without a genuine query (once, whatever the draws)."""
    if draws < 1:
        raise ProtocolError(f"draws must be at least 1, got {draws}")
    if draws == 1:
        return [sk_protocol(table, k, warn=warn)]
    return [sk_protocol(table, k, np.random.default_rng([seed, d]), d, warn=warn and d == 0, pool=pool) for d in range(draws)]


def parse_protocol(name: str) -> int:
    """``"S05"`` -> 5: the protocol names the field uses (S1 ... S99)."""
    if len(name) < 2 or name[0] not in "sS" or not name[1:].isdigit() or int(name[1:]) < 1:
        raise ProtocolError(f"unknown protocol {name!r}: expected S followed by the number of references, e.g. S05 or S10")
    return int(name[1:])
