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
