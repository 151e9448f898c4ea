import numpy as np
import pytest

from tdnn_siamese.metrics import eer, far_frr


def brute(genuine, impostor):
    ts = sorted(set(genuine) | set(impostor)) + [float("inf")]
    far = [sum(s >= t for s in impostor) / len(impostor) for t in ts]
    frr = [sum(s < t for s in genuine) / len(genuine) for t in ts]
    return ts, far, frr


CASES = [
    ([0.9, 0.8, 0.7], [0.1, 0.2, 0.3]),
    ([0.5, 0.5], [0.5, 0.5]),  # identical scores
    ([0.2, 0.4, 0.4, 0.9], [0.4, 0.4, 0.1]),  # ties across classes
    ([1.0], [0.0, 2.0, 1.0]),
]


@pytest.mark.parametrize("g,i", CASES + [tuple(np.random.default_rng(s).integers(0, 6, (2, 15)).tolist()) for s in range(5)])
def test_far_frr_and_eer_against_brute_force(g, i):
    ts, far, frr = far_frr(g, i)
    bt, bfar, bfrr = brute(g, i)
    np.testing.assert_array_equal(ts, bt)
    np.testing.assert_allclose(far, bfar)
    np.testing.assert_allclose(frr, bfrr)
    e, t = eer(g, i)
    lower = min((a + b) / 2 for a, b in zip(bfar, bfrr))
    upper = min(max(a, b) for a, b in zip(bfar, bfrr))
    assert lower - 1e-12 <= e <= upper + 1e-12
    assert np.isfinite(t) and t in set(g) | set(i)


def test_eer_is_order_invariant_and_shift_invariant():
    rng = np.random.default_rng(0)
    g, i = rng.normal(1, 1, 50), rng.normal(0, 1, 70)
    e, t = eer(g, i)
    assert eer(g[::-1], rng.permutation(i)) == (e, t)
    e2, t2 = eer(g + 5, i + 5)
    assert e2 == pytest.approx(e) and t2 == pytest.approx(t + 5)


def test_missing_class_and_nan_are_errors():
    with pytest.raises(ValueError, match="no impostor scores"):
        eer([0.5], [])
    with pytest.raises(ValueError, match="NaN"):
        eer([0.5, float("nan")], [0.1])


# --------------------------------------------------------------------------- FRR at FAR, AUC, summary, writer-specific

from tdnn_siamese.metrics import auc, frr_at_far, rates_at, summary, threshold_at_far, writer_specific_eer  # noqa: E402

RANDOM_CASES = [tuple(np.random.default_rng(s).integers(0, 6, (2, 13)).tolist()) for s in range(8)]


def brute_frr_at_far(g, i, far):
    """Scan every candidate threshold from low to high; the first with FAR <= far accepts the most genuines."""
    cands = sorted(set(g) | set(i) | {np.nextafter(v, np.inf) for v in i})
    for t in cands:
        if sum(s >= t for s in i) / len(i) <= far + 1e-12:
            return sum(s < t for s in g) / len(g)
    return 1.0


def brute_auc(g, i):
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in g for b in i) / (len(g) * len(i))


@pytest.mark.parametrize("g,i", CASES + RANDOM_CASES)
def test_frr_at_far_auc_and_rates_against_brute_force(g, i):
    for far in (0.0, 0.01, 0.1, 0.3, 1.0):
        assert frr_at_far(g, i, far) == pytest.approx(brute_frr_at_far(g, i, far))
    assert auc(g, i) == pytest.approx(brute_auc(g, i))
    for t in sorted(set(g) | set(i)):
        far, frr = rates_at(g, i, t)
        assert far == pytest.approx(sum(s >= t for s in i) / len(i)) and frr == pytest.approx(sum(s < t for s in g) / len(g))
    s = summary(g, i)
    assert s["eer"] == eer(g, i)[0] and s["n_genuine"] == len(g) and s["n_impostor"] == len(i)
    assert s["frr_at_far_1"] >= s["frr_at_far_10"]


def test_identical_scores_and_perfect_separation():
    assert auc([0.5, 0.5], [0.5, 0.5]) == 0.5 and frr_at_far([0.5, 0.5], [0.5, 0.5], 0.01) == 1.0
    assert auc([2, 3], [0, 1]) == 1.0 and frr_at_far([2, 3], [0, 1], 0.0) == 0.0
    assert auc([0, 1], [2, 3]) == 0.0
    assert threshold_at_far([0.5, 0.5], 1.0) == 0.5


def test_writer_specific_eer_against_a_loop_and_with_missing_classes():
    rng = np.random.default_rng(1)
    rows = [(w, bool(rng.integers(2)), float(rng.integers(0, 5))) for w in "abcde" for _ in range(12)]
    rows += [("only_genuine", True, 1.0), ("only_forgery", False, 0.0)]  # missing a class: left out
    w, m, s = zip(*rows)
    per = {}
    for name in set(w):
        g = [x for ww, mm, x in rows if ww == name and mm]
        i = [x for ww, mm, x in rows if ww == name and not mm]
        if g and i:
            ts, far, frr = brute(g, i)
            per[name] = eer(g, i)[0]
            assert min((a + b) / 2 for a, b in zip(far, frr)) - 1e-12 <= per[name] <= min(max(a, b) for a, b in zip(far, frr)) + 1e-12
    got, n = writer_specific_eer(w, m, s)
    assert n == len(per) == 5 and got == pytest.approx(sum(per.values()) / len(per))
    assert np.isnan(writer_specific_eer(["a"], [True], [0.3])[0])


def test_missing_class_is_an_error_for_every_global_metric():
    for f in (lambda: auc([0.1], []), lambda: frr_at_far([], [0.1], 0.1), lambda: summary([0.2], []), lambda: threshold_at_far([], 0.1)):
        with pytest.raises(ValueError, match="no (genuine|impostor) scores"):
            f()
