"""Soft-DTW of frame sequences against a plain double loop, and the DTW distance/pooling/scoring built on it."""

import math

import numpy as np
import pytest
import torch

from tdnn_siamese.distances import Distance
from tdnn_siamese.model import TDNN, TDNNConfig, pad_batch
from tdnn_siamese.softdtw import soft_dtw, soft_dtw_cost, soft_dtw_matrix


def oracle(a: np.ndarray, b: np.ndarray, gamma: float) -> float:
    """The recursion of Cuturi & Blondel (2017), cell by cell, normalised by N + M."""
    n, m = len(a), len(b)
    r = np.full((n + 1, m + 1), np.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = np.array([r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]])
            if gamma == 0:
                soft = prev.min()
            else:
                z = -prev / gamma
                soft = -gamma * (z.max() + math.log(np.exp(z - z.max()).sum()))
            r[i, j] = ((a[i - 1] - b[j - 1]) ** 2).sum() + soft
    return r[n, m] / (n + m)


@pytest.mark.parametrize("gamma", [0.0, 0.1, 1.0])
def test_matches_the_cell_by_cell_recursion(gamma):
    rng = np.random.default_rng(0)
    for n, m in ((1, 1), (1, 5), (7, 3), (12, 12), (9, 14)):
        a, b = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
        want = oracle(a, b, gamma)
        got = soft_dtw(torch.tensor(a)[None], torch.tensor(b)[None], gamma).item()  # the scoring (NumPy) path
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        trained = soft_dtw(torch.tensor(a, requires_grad=True)[None], torch.tensor(b)[None], gamma)  # the autograd path
        assert trained.item() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_soft_dtw_lies_below_dtw_by_at_most_gamma_log3_per_step():
    rng = np.random.default_rng(1)
    a, b = torch.tensor(rng.normal(size=(1, 10, 2))), torch.tensor(rng.normal(size=(1, 13, 2)))
    hard = soft_dtw(a, b, 0.0).item()
    for g in (0.01, 0.1, 0.5):
        s = soft_dtw(a, b, g).item()
        assert hard - g * math.log(3) <= s <= hard + 1e-12
    assert soft_dtw(a, b, 1e-4).item() == pytest.approx(hard, abs=1e-3)


def test_warping_costs_nothing_and_the_gradient_is_right():
    a = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]])
    stretched = torch.tensor([[[0.0], [0.0], [1.0], [2.0], [2.0], [2.0], [3.0]]])
    assert soft_dtw(a, stretched, 0.0).item() == 0.0  # the same path, drawn at another speed
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: soft_dtw(p, q, 0.3), (x, y))


def test_matrix_is_every_pair_and_chunking_changes_nothing():
    torch.manual_seed(0)
    a, b = torch.randn(5, 8, 4), torch.randn(3, 6, 4)
    m = soft_dtw_matrix(a, b, 0.1)
    want = torch.stack([torch.stack([soft_dtw(a[i : i + 1], b[j : j + 1], 0.1)[0] for j in range(3)]) for i in range(5)])
    torch.testing.assert_close(m, want)
    torch.testing.assert_close(soft_dtw_matrix(a, b, 0.1, chunk=4), m)
    with pytest.raises(ValueError, match="gamma"):
        soft_dtw_cost(torch.zeros(1, 2, 2), -1.0)
    with pytest.raises(ValueError, match="cost matrices"):
        soft_dtw_cost(torch.zeros(2, 2), 0.1)


def test_dtw_distance_reads_flattened_frames():
    torch.manual_seed(0)
    a, b = torch.randn(4, 6 * 5), torch.randn(3, 6 * 5)
    d = Distance("dtw", frame_dim=5)
    assert not d.larger_is_closer
    torch.testing.assert_close(d.matrix(a, b), soft_dtw_matrix(a.reshape(4, 6, 5), b.reshape(3, 6, 5), 0.1))
    torch.testing.assert_close(d.raw(a[:3], b), torch.diagonal(d.matrix(a[:3], b)))
    torch.testing.assert_close(d.rho(a[:3], b), d.raw(a[:3], b).clamp_min(0))
    flat = torch.ones(1, 6 * 5)  # every alignment of equal frames costs 0, so their soft-minimum lies below 0
    assert d.raw(flat, flat).item() < 0 and d.rho(flat, flat).item() == 0  # clamped: no loss pushes them apart
    with pytest.raises(ValueError, match="frame_dim"):
        Distance("dtw")
    with pytest.raises(ValueError, match="frame_dim"):
        Distance("cosine", frame_dim=5)
    with pytest.raises(ValueError, match="not frames of 7"):
        Distance("dtw", frame_dim=7).matrix(a, b)
    assert Distance.for_encoder("cosine", 5) == Distance("cosine")


def test_frames_pooling_gives_unit_frames_free_of_padding():
    torch.manual_seed(0)
    cfg = TDNNConfig.from_preset("modern", 8, channels=(16, 16), kernels=(5, 3), strides=(1, 1), dilations=(1, 2),
                                 pooling="frames", segments=6, embedding_dim=4, members=1)
    enc = TDNN(cfg).eval()
    assert cfg.output_dim == 24 and cfg.frame_dim == 4
    seqs = [torch.randn(n, 8) for n in (90, 213, 40)]
    alone = torch.cat([enc(s[None], torch.tensor([len(s)])) for s in seqs])
    x, lengths = pad_batch(seqs)
    x = x + (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None]) * 7.0  # garbage past the end
    torch.testing.assert_close(enc(x, lengths), alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone.reshape(3, 6, 4).norm(dim=-1), torch.ones(3, 6))


def test_a_model_file_whose_distance_does_not_fit_its_pooling_is_refused(tmp_path):
    from tdnn_siamese.features import FeatureConfig
    from tdnn_siamese.model import CheckpointError, load_checkpoint, save_checkpoint

    nf = FeatureConfig().n_features
    enc = TDNN(TDNNConfig.from_preset("modern", nf, pooling="frames", segments=4, embedding_dim=3).member)
    kw = dict(threshold=0.0, scoring="mean", calibration={}, provenance={}, offset_weight=0.25)
    save_checkpoint(tmp_path / "ok.pt", enc, FeatureConfig(), distance="dtw", **kw)
    assert load_checkpoint(tmp_path / "ok.pt").encoder.cfg.frame_dim == 3
    for name, e, dist in (("a.pt", enc, "cosine"), ("b.pt", TDNN(TDNNConfig.from_preset("modern", nf, pooling="stats")), "dtw")):
        save_checkpoint(tmp_path / name, e, FeatureConfig(), distance=dist, **kw)
        with pytest.raises(CheckpointError, match="does not fit"):
            load_checkpoint(tmp_path / name)


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_scoring_path_and_training_path_agree(gamma):
    """Without a gradient the recursion runs in NumPy (fast for a verification's few pairs); both give the same values."""
    torch.manual_seed(0)
    a, b = torch.randn(6, 9, 4), torch.randn(6, 12, 4)
    scoring = soft_dtw(a, b, gamma)
    training = soft_dtw(a.clone().requires_grad_(True), b, gamma)
    assert training.requires_grad and not scoring.requires_grad and scoring.dtype == torch.float32
    torch.testing.assert_close(scoring, training.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_padded_pairs_with_their_lengths_equal_the_unpadded_pairs(gamma):
    """R[n, m] of a padded matrix is the unpadded value: padding lies below and right of it, out of every path."""
    rng = np.random.default_rng(1)
    lengths_a, lengths_b = [1, 4, 9, 6], [7, 2, 9, 1]
    a = [rng.normal(size=(n, 3)) for n in lengths_a]
    b = [rng.normal(size=(m, 3)) for m in lengths_b]
    pa, pb = np.full((4, 9, 3), 5.0), np.full((4, 9, 3), -5.0)  # padding far from everything: it would show if it leaked
    for i in range(4):
        pa[i, : lengths_a[i]], pb[i, : lengths_b[i]] = a[i], b[i]
    want = [oracle(x, y, gamma) for x, y in zip(a, b)]
    la, lb = torch.tensor(lengths_a), torch.tensor(lengths_b)
    scored = soft_dtw(torch.tensor(pa), torch.tensor(pb), gamma, la, lb)
    grad_a = torch.tensor(pa, requires_grad=True)
    trained = soft_dtw(grad_a, torch.tensor(pb), gamma, la, lb)
    np.testing.assert_allclose(scored.numpy(), want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(trained.detach().numpy(), want, rtol=1e-9, atol=1e-12)
    trained.sum().backward()
    for i, n in enumerate(lengths_a):
        assert torch.all(grad_a.grad[i, n:] == 0)  # no gradient reaches the padding
    assert torch.isfinite(grad_a.grad).all() and grad_a.grad.abs().sum() > 0


def test_rate_frames_grow_with_duration_and_dtw_reads_their_number():
    torch.manual_seed(0)
    cfg = TDNNConfig.from_preset("modern", 8, channels=(16, 16), kernels=(5, 3), strides=(1, 1), dilations=(1, 2),
                                 pooling="frames", segments=20, frame_steps=4, embedding_dim=4, members=1)
    assert cfg.min_length == 1 and cfg.output_dim == 80
    enc = TDNN(cfg).eval()
    seqs = [torch.randn(n, 8) for n in (3, 41, 200)]  # 1, 11 and 50 -> capped at 20 frames
    with torch.no_grad():
        alone = torch.cat([enc(s[None]) for s in seqs])
        x, lengths = pad_batch(seqs)
        torch.testing.assert_close(enc(x, lengths), alone, rtol=1e-5, atol=1e-5)
    norms = alone.reshape(3, 20, 4).norm(dim=-1)
    assert [int((n > 0.5).sum()) for n in norms] == [1, 11, 20]
    assert torch.all(((norms - 1).abs() < 1e-5) | (norms == 0))
    d = Distance.for_encoder("dtw", 4)
    frames = alone.reshape(3, 20, 4)
    want = torch.stack([soft_dtw(frames[i : i + 1, :n], frames[j : j + 1, :m], 0.1)[0]
                        for i, n in enumerate((1, 11, 20)) for j, m in enumerate((1, 11, 20))]).reshape(3, 3)
    torch.testing.assert_close(d.matrix(alone, alone), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d.raw(alone, alone.flip(0)), want.flip(1).diagonal(), rtol=1e-5, atol=1e-6)


def test_frame_steps_needs_the_frames_pooling_and_sane_values():
    from tdnn_siamese.config import ConfigError

    for bad in (dict(pooling="stats", frame_steps=4), dict(pooling="frames", frame_steps=-1),
                dict(pooling="frames", frame_steps=4, segments=513), dict(pooling="frames", frame_steps=0, segments=65)):
        with pytest.raises(ConfigError):
            TDNNConfig.from_preset("modern", 5, **bad)
    assert TDNNConfig.from_preset("modern", 5, frame_steps=4, segments=512).member.output_dim == 512 * 32


@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_analytic_gradient_matches_autograd_through_the_recursion(gamma):
    """Training takes Cuturi & Blondel's backward recursion (NumPy); it must equal autograd through the loop,
    padded pairs included, and pass a finite-difference check."""
    from tdnn_siamese.softdtw import _soft_dtw_torch, _SoftDTWFunction

    torch.manual_seed(3)
    cost = torch.rand(6, 7, 9, dtype=torch.float64) * 2
    n, m = torch.tensor([7, 1, 4, 7, 2, 5]), torch.tensor([9, 9, 3, 1, 2, 6])
    w = torch.rand(6, dtype=torch.float64)  # a weighted sum: each pair's gradient scaled by its own output gradient
    fast = cost.clone().requires_grad_(True)
    (soft_dtw_cost(fast, gamma, n, m) * w).sum().backward()
    ref = cost.clone().requires_grad_(True)
    (_soft_dtw_torch(ref, gamma, (n, m)) * w).sum().backward()
    torch.testing.assert_close(fast.grad, ref.grad, rtol=1e-9, atol=1e-12)
    assert all(torch.all(fast.grad[p, n[p]:] == 0) and torch.all(fast.grad[p, :, m[p]:] == 0) for p in range(6))
    assert torch.autograd.gradcheck(lambda c: _SoftDTWFunction.apply(c, gamma, n, m), (cost.clone().requires_grad_(True),))


def test_float32_gradient_stays_close_to_float64():
    """Training runs in float32: the backward pass must not lose precision on long alignments (re-exponentiating
    differences of R's large cumulative values did: 1.4e-3 relative error here at gamma 0.1; the softmin weights: 4e-5)."""
    g = torch.Generator().manual_seed(3)
    la, lb = torch.randint(5, 120, (40,), generator=g), torch.randint(5, 120, (40,), generator=g)
    a, b = torch.randn(40, 120, 8, generator=g), torch.randn(40, 120, 8, generator=g)
    grads = []
    for dtype in (torch.float32, torch.float64):
        x = a.to(dtype).clone().requires_grad_(True)
        soft_dtw(x, b.to(dtype), 0.1, la, lb).sum().backward()
        grads.append(x.grad.double())
    assert float((grads[0] - grads[1]).abs().max() / grads[1].abs().max()) < 2e-4
