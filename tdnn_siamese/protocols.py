"""Evaluation protocols: which signatures are references and which are trials.

``S_k`` (the usual online-signature protocol, e.g. SVC2004 and BSEC2009): per
writer, the first k genuine signatures, session 1 first, are the references;
the remaining genuine signatures are genuine trials; all skilled forgeries of
that writer are skilled trials; the first genuine signature of every other
evaluated writer is a random-forgery trial.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

logger = logging.getLogger(__name__)

KINDS = ("genuine", "skilled", "random")


@dataclass(frozen=True)
class Protocol:
    """References per writer and a trial table (writer, query, kind); indices are table rows."""

    k: int
    references: dict[str, list[int]]
    trials: pd.DataFrame


def _genuine_order(table: pd.DataFrame, writer: str) -> list[int]:
    g = table[(table["writer"] == writer) & (table["label"] == "genuine")]
    g = g.assign(_s=g["session"].fillna(10**9)).sort_values(["_s", "number"], kind="stable")
    return g.index.tolist()


def sk_protocol(table: pd.DataFrame, k: int) -> Protocol:
    """The S_k protocol over every writer of ``table`` with at least k genuine signatures."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    table = table.reset_index(drop=True)
    refs, orders = {}, {}
    for w in pd.unique(table["writer"]):
        order = _genuine_order(table, w)
        if len(order) < k:
            logger.warning("writer %s has %d genuine signatures, fewer than k=%d: left out of the protocol", w, len(order), k)
            continue
        refs[w], orders[w] = order[:k], order
    if not refs:
        raise ValueError(f"no writer has {k} genuine signatures")
    rows = []
    for w in refs:
        rows += [(w, q, "genuine") for q in orders[w][k:]]
        rows += [(w, q, "skilled") for q in table.index[(table["writer"] == w) & (table["label"] == "skilled")]]
        rows += [(w, orders[o][0], "random") for o in refs if o != w]
    return Protocol(k=k, references=refs, trials=pd.DataFrame(rows, columns=["writer", "query", "kind"]))
