"""The S_k protocol and its random reference draws."""

import numpy as np
import pandas as pd
import pytest

from tdnn_siamese import datasets
from tdnn_siamese.protocols import ProtocolError, draws_text, fixed_draws, parse_protocol, sk_protocol, sk_protocols

from .conftest import SAMPLE


def table():
    rows = []
    for w, n_gen, n_skl in (("A", 6, 2), ("B", 6, 0), ("C", 3, 1)):
        for i in range(n_gen):  # session 2 listed first: the protocol must order by session, then number
            rows.append({"writer": w, "label": "genuine", "session": 2 if i < n_gen // 2 else 1, "number": i, "path": f"{w}g{i}"})
        for i in range(n_skl):
            rows.append({"writer": w, "label": "skilled", "session": pd.NA, "number": 100 + i, "path": f"{w}s{i}"})
    t = pd.DataFrame(rows)
    t["session"] = t["session"].astype("Int64")
    return t


def test_sk_references_trials_and_random_forgeries():
    t = table()
    p = sk_protocol(t, 4)
    assert set(p.references) == {"A", "B"}  # C has 3 genuine signatures: left out
    path = lambda idx: [t.at[i, "path"] for i in idx]  # noqa: E731
    assert path(p.references["A"]) == ["Ag3", "Ag4", "Ag5", "Ag0"]  # session 1 first, then by number
    tr = p.trials
    a = tr[tr.writer == "A"]
    assert path(a[a.kind == "genuine"]["query"]) == ["Ag1", "Ag2"]
    assert path(a[a.kind == "skilled"]["query"]) == ["As0", "As1"]
    assert path(a[a.kind == "random"]["query"]) == ["Bg3"]  # the first genuine of every other evaluated writer
    assert tr[tr.writer == "B"].kind.tolist().count("skilled") == 0
    for w, refs in p.references.items():  # references are never trials of their own writer
        assert not set(refs) & set(tr[(tr.writer == w)]["query"])


def test_random_draws_are_seeded_distinct_and_keep_the_trials_consistent():
    t = table()
    ps = sk_protocols(t, 4, draws=4, seed=1)  # the first 4 span both sessions: drawn among all 6
    again = sk_protocols(t, 4, draws=4, seed=1)
    assert [p.draw for p in ps] == [0, 1, 2, 3]
    assert [p.references for p in ps] == [p.references for p in again]
    assert len({tuple(p.references["A"]) for p in ps}) > 1
    for p in ps:
        for w, refs in p.references.items():
            gen = set(t.index[(t.writer == w) & (t.label == "genuine")])
            trials = set(p.trials[(p.trials.writer == w) & (p.trials.kind == "genuine")]["query"])
            assert len(refs) == 4 and set(refs) | trials == gen and not set(refs) & trials
    assert [p.references for p in sk_protocols(t, 3)] == [sk_protocol(t, 3).references]


def test_draws_keep_to_the_sessions_of_the_first_k():
    """As the first k, drawn references come from the earliest sessions, so the genuine queries stay mostly of later
    ones (references drawn across sessions made SVC2004's S05 an easier task); without sessions, from all genuines."""
    t = table()
    first = {w: set(refs) for w, refs in sk_protocol(t, 3).references.items()}  # A, B: all 3 of session 1
    ps = sk_protocols(t, 2, draws=12, seed=0)
    for p in ps:
        for w, refs in p.references.items():
            assert set(refs) <= first[w] and all(t.at[i, "session"] == 1 for i in refs)
    assert len({tuple(p.references["A"]) for p in ps}) == 3  # every pair of the 3 of session 1 turns up
    assert all(p.references == sk_protocol(t, 3).references for p in sk_protocols(t, 3, draws=3))  # all of session 1
    everyone = set(t.index[(t.writer == "A") & (t.label == "genuine")])
    assert set().union(*(p.references["A"] for p in sk_protocols(t, 2, draws=30, seed=0, pool="all"))) == everyone
    with pytest.raises(ProtocolError, match="unknown draw pool"):
        sk_protocols(t, 2, draws=2, pool="some")
    t["session"] = pd.array([pd.NA] * len(t), dtype="Int64")
    drawn = set().union(*(p.references["A"] for p in sk_protocols(t, 2, draws=30, seed=0)))
    assert drawn == everyone  # no sessions: any genuine signature


def test_draws_that_cannot_differ_are_not_called_random():
    """A writer whose pool (the sessions of the first k) holds just k has one possible draw, the first k: the
    report's protocol text says so instead of promising R random draws (SVC2004 at S10: session 1 holds 10)."""
    t = table()  # A, B: 3 genuines in session 1, 3 in session 2; C: 2 in session 1, 1 in session 2
    assert fixed_draws(t, 3) == (3, 3) and fixed_draws(t, 2) == (1, 3) and fixed_draws(t, 4) == (0, 2)
    assert fixed_draws(t, 2, pool="all") == (0, 3)
    assert draws_text(t, 3, 1) == "" and draws_text(t, 3, 10).endswith("so every draw is the first 3: the figures are those of one draw")
    assert "random" not in draws_text(t, 3, 10)
    assert draws_text(t, 2, 10).startswith(", or 10 random draws of 2") and "(1 of 3 writers have just 2 there" in draws_text(t, 2, 10)
    assert "(" not in draws_text(t, 4, 10)
    ps = sk_protocols(t, 3, draws=4, seed=5)
    assert all(p.references == sk_protocol(t, 3).references for p in ps)  # what the text says is what the draws do
    varied = sk_protocols(t, 2, draws=12, seed=0)
    assert len({tuple(p.references["C"]) for p in varied}) == 1 and len({tuple(p.references["A"]) for p in varied}) > 1


def test_the_draw_pool_with_later_and_unknown_sessions():
    """Sessions 2 and 3 and none: the pool is the earliest sessions up to the k-th reference's, in full; a signature
    without a session sorts last and joins the pool only when the first k reach it."""
    sessions = [3, 2, pd.NA, 2, 3, 3]  # by number: session 2 holds g1, g3; session 3 g0, g4, g5; g2 has none
    t = pd.DataFrame({"writer": "A", "label": "genuine", "session": pd.array(sessions, dtype="Int64"), "number": range(6),
                      "path": [f"g{i}" for i in range(6)]})
    path = lambda idx: {t.at[i, "path"] for i in idx}  # noqa: E731
    drawn = lambda k: set().union(*(path(p.references["A"]) for p in sk_protocols(t, k, draws=40, seed=0)))  # noqa: E731
    assert drawn(2) == {"g1", "g3"}  # the first 2 are session 2: all of it, every draw
    assert drawn(3) == {"g1", "g3", "g0", "g4", "g5"}  # the 3rd is of session 3: sessions 2 and 3, not g2
    assert drawn(5) == {"g1", "g3", "g0", "g4", "g5"}
    assert drawn(6) == path(range(6))


def test_a_writer_left_out_is_logged_once_however_many_draws(caplog):
    """C has fewer genuine signatures than k: left out of every draw, said once (training validates 10 draws an epoch)."""
    with caplog.at_level("WARNING", logger="tdnn_siamese.protocols"):
        ps = sk_protocols(table(), 4, draws=5, seed=0)
    assert all(set(p.references) == {"A", "B"} for p in ps)
    said = [r for r in caplog.records if "writer C has 3 genuine signatures" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"


def test_a_writer_with_exactly_k_genuine_signatures_is_said_to_have_no_genuine_query(caplog):
    with caplog.at_level("WARNING", logger="tdnn_siamese.protocols"):
        p = sk_protocols(table(), 3, draws=4, seed=0)[0]
    assert set(p.references) == {"A", "B", "C"} and not ((p.trials.writer == "C") & (p.trials.kind == "genuine")).any()
    said = [r.getMessage() for r in caplog.records if "writer C" in r.getMessage()]
    assert said == ["writer C has 3 genuine signatures, all of them references for k=3: it has no genuine query, "
                    "so its forgeries cannot be weighed against its genuine signatures"]
    assert not [r for r in caplog.records if "writer A" in r.getMessage() or "writer B" in r.getMessage()]
    caplog.clear()
    with caplog.at_level("WARNING", logger="tdnn_siamese.protocols"):  # training's validation after its first epoch
        quiet = sk_protocols(table(), 3, draws=4, seed=0, warn=False) + sk_protocols(table(), 4, warn=False)
    assert not caplog.records and set(quiet[0].references) == {"A", "B", "C"} and set(quiet[-1].references) == {"A", "B"}


def test_protocol_errors():
    with pytest.raises(ProtocolError, match="no writer has 7 genuine signatures"):
        sk_protocol(table(), 7)
    with pytest.raises(ProtocolError, match="draws must be at least 1"):
        sk_protocols(table(), 2, draws=0)
    assert parse_protocol("S05") == 5 and parse_protocol("s10") == 10
    for bad in ("5", "S", "S0", "T05", "S-1", "Sx"):
        with pytest.raises(ProtocolError, match="unknown protocol"):
            parse_protocol(bad)


def test_on_the_sample_every_trial_kind_is_present():
    t = datasets.load(SAMPLE)
    p = sk_protocol(t, 5)
    counts = p.trials.kind.value_counts().to_dict()
    assert counts == {"genuine": 12 * 5, "skilled": 12 * 6, "random": 12 * 11}
    assert np.all(p.trials.groupby("writer").size() == 5 + 6 + 11)
