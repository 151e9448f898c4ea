import numpy as np
import pytest
from scipy.optimize import minimize

from tdnn_siamese.calibration import RIDGE, fit_logistic
from tdnn_siamese.metrics import eer


def _objective(theta, g, i):
    """The same weighted, ridge-penalised logistic loss, written plainly (in standardised scores)."""
    s = np.concatenate([g, i])
    mu, sd = s.mean(), s.std()
    a, b = theta
    lg = np.log1p(np.exp(-(a * (g - mu) / sd + b))).mean()
    li = np.log1p(np.exp(a * (i - mu) / sd + b)).mean()
    return 0.5 * lg + 0.5 * li + 0.5 * RIDGE * a * a


@pytest.mark.parametrize("seed", range(4))
def test_fit_matches_a_generic_optimiser(seed):
    rng = np.random.default_rng(seed)
    g, i = rng.normal(2.0, 1.0, 40 + seed), rng.normal(0.0, 1.5, 90)
    a, b = fit_logistic(g, i)
    s = np.concatenate([g, i])
    mu, sd = s.mean(), s.std()
    ref = minimize(_objective, np.zeros(2), args=(g, i), method="BFGS", options={"gtol": 1e-10}).x
    assert a == pytest.approx(ref[0] / sd, rel=1e-4)
    assert b == pytest.approx(ref[1] - ref[0] * mu / sd, rel=1e-4, abs=1e-6)


def test_increasing_map_keeps_the_eer_and_puts_models_on_one_scale():
    rng = np.random.default_rng(0)
    g, i = rng.normal(0.99, 0.004, 60), rng.normal(0.975, 0.006, 60)  # a model scoring in a narrow band
    a, b = fit_logistic(g, i)
    assert a > 0
    assert eer(a * g + b, a * i + b)[0] == eer(g, i)[0]
    g2, i2 = rng.normal(0.6, 0.2, 60), rng.normal(0.1, 0.3, 60)  # another model, another scale
    a2, b2 = fit_logistic(g2, i2)
    pooled_raw = eer(np.r_[g, g2], np.r_[i, i2])[0]
    pooled_cal = eer(np.r_[a * g + b, a2 * g2 + b2], np.r_[a * i + b, a2 * i2 + b2])[0]
    assert pooled_cal < pooled_raw


def test_perfectly_separated_scores_give_a_finite_map():
    a, b = fit_logistic([1.0, 1.1, 1.2], [0.0, 0.1])
    assert np.isfinite(a) and np.isfinite(b) and a > 0
    with pytest.raises(ValueError, match="genuine and impostor"):
        fit_logistic([], [0.0])


def test_two_system_fusion_matches_a_generic_optimiser_and_beats_either_system():
    """fit_linear_logistic with two columns: the same objective minimised by BFGS; the fused score separates
    better than each system when their errors are independent."""
    from tdnn_siamese.calibration import fit_linear_logistic

    rng = np.random.default_rng(5)
    n = 400
    g = np.stack([rng.normal(1.0, 1.0, n), rng.normal(10.0, 3.0, n)], axis=1)  # two systems on different scales
    i = np.stack([rng.normal(0.0, 1.0, n), rng.normal(7.0, 3.0, n)], axis=1)
    w, b = fit_linear_logistic(g, i)
    s = np.concatenate([g, i])
    mu, sd = s.mean(0), s.std(0)

    def objective(theta):
        zg, zi = (g - mu) / sd @ theta[:2] + theta[2], (i - mu) / sd @ theta[:2] + theta[2]
        return 0.5 * np.log1p(np.exp(-zg)).mean() + 0.5 * np.log1p(np.exp(zi)).mean() + 0.5 * RIDGE * theta[:2] @ theta[:2]

    ref = minimize(objective, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(w, ref[:2] / sd, rtol=1e-4)
    assert b == pytest.approx(ref[2] - (ref[:2] / sd) @ mu, rel=1e-4, abs=1e-6)
    fused = eer(g @ w + b, i @ w + b)[0]
    assert fused < min(eer(g[:, 0], i[:, 0])[0], eer(g[:, 1], i[:, 1])[0])
    a1, b1 = fit_logistic(g[:, 0], i[:, 0])  # one column: the same as fit_logistic
    w1, c1 = fit_linear_logistic(g[:, :1], i[:, :1])
    assert (w1[0], c1) == pytest.approx((a1, b1))
    with pytest.raises(ValueError, match="finite"):
        fit_linear_logistic(np.array([[np.nan, 1.0]]), i)


def test_fusion_fit_wants_trials_by_systems():
    from tdnn_siamese.calibration import fit_linear_logistic

    with pytest.raises(ValueError, match="trials, systems"):
        fit_linear_logistic(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5, 1.0]))
