import numpy as np
import pandas as pd
import pytest
import torch

from tdnn_siamese.augment import augment
from tdnn_siamese.cli import main
from tdnn_siamese.features import extract
from tdnn_siamese.model import load_checkpoint

from .conftest import SAMPLE, SMALL_TRAIN, make_signature


def test_strength_zero_is_the_identity():
    sig = make_signature(n=80, seed=3)
    assert augment(sig, np.random.default_rng(0), 0.0) is sig


@pytest.mark.parametrize("seed", range(5))
def test_a_perturbed_signature_keeps_its_points_timing_ends_and_labels(seed):
    sig = make_signature(n=120, seed=seed, writer="w", label="genuine", session=2)
    out = augment(sig, np.random.default_rng(seed), 1.0)
    assert len(out) == len(sig) and out.writer == "w" and out.label == "genuine" and out.session == 2
    assert np.array_equal(out.pen_down, sig.pen_down)
    assert out.t[0] == sig.t[0] and out.t[-1] == pytest.approx(sig.t[-1])  # duration kept: no global speed change
    assert (np.diff(out.t) > 0).all()
    assert not np.allclose(out.x, sig.x - sig.x.mean()) and not np.allclose(out.t, sig.t)
    # the perturbation is small: features move, but far less than they differ between two signatures
    f0, f1 = extract(sig), extract(out)
    other = extract(make_signature(n=120, seed=seed + 100))
    assert 0 < np.abs(f1 - f0).mean() < np.abs(other - f0).mean()


def test_bounded_by_its_ranges():
    sig = make_signature(n=200, seed=1)
    for s in range(50):
        out = augment(sig, np.random.default_rng(s), 1.0)
        r0 = np.hypot(sig.x - sig.x.mean(), sig.y - sig.y.mean())
        r1 = np.hypot(out.x, out.y)
        assert r1.max() <= r0.max() * np.exp(0.1) * 1.11  # scalings within exp(0.1), shear within 0.1
        steps0, steps1 = np.diff(sig.t), np.diff(out.t)
        assert (steps1 / steps0).max() <= np.exp(0.15) ** 2 + 1e-9  # a segment at most exp(0.15) faster or slower, renormalised


def test_same_generator_same_perturbation():
    sig = make_signature(n=90, seed=2)
    a, b = augment(sig, np.random.default_rng(7), 1.0), augment(sig, np.random.default_rng(7), 1.0)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.t, b.t)


def test_training_with_augmentation_is_seeded(tmp_path):
    on = ["--set", "train.augment=1"]
    runs = {"a": on, "b": on, "plain": ["--set", "train.augment=0"]}
    for run, extra in runs.items():
        assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / run), "--epochs", "1", *extra, *SMALL_TRAIN]) == 0
    loss = {r: pd.read_csv(tmp_path / r / "metrics.csv")["train_loss"].iloc[1] for r in runs}
    assert loss["a"] == loss["b"]  # the same perturbations: seeded by (seed, epoch)
    assert loss["a"] != loss["plain"]  # and they were applied
    a, b = (load_checkpoint(tmp_path / r / "model.pt") for r in ("a", "b"))
    assert all(torch.equal(a.encoder.state_dict()[k], b.encoder.state_dict()[k]) for k in a.encoder.state_dict())
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "c"), "--epochs", "1", "--set", "train.augment=5"]) == 2
