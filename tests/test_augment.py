import numpy as np
import pandas as pd
import pytest
import torch

from tdnn_siamese.augment import (IMITATION_DISPLACEMENT, IMITATION_SLOWDOWN, VIRTUAL_MARK, VIRTUAL_WRITERS, augment, imitate, perturb_strokes,
                                  strokes, virtual_writer)
from tdnn_siamese.cli import main
from tdnn_siamese.config import ConfigError
from tdnn_siamese.features import FEATURE_SETS, extract
from tdnn_siamese.model import load_checkpoint
from tdnn_siamese.signature import Signature
from tdnn_siamese.train import RunConfig, _pair_sequences, apply_sets, prepare

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


def test_strokes_are_the_runs_of_pen_down_points():
    assert strokes(np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], bool)) == [(0, 2), (4, 5), (6, 9)]
    assert strokes(np.zeros(4, bool)) == [] and strokes(np.ones(3, bool)) == [(0, 3)]


def _three_strokes(seed: int) -> Signature:
    sig = make_signature(n=150, seed=seed)
    down = np.ones(150, bool)
    down[[40, 41, 42, 100]] = False  # strokes 0-39, 43-99, 101-149; pen-up steps 39->40 ... 42->43 and 99->100->101
    return Signature(t=sig.t, x=sig.x, y=sig.y, pen_down=down, pressure=sig.pressure)


@pytest.mark.parametrize("seed", range(5))
def test_each_stroke_is_rotated_scaled_and_timed_on_its_own_within_the_ranges(seed):
    sig = _three_strokes(seed)
    out = perturb_strokes(sig, np.random.default_rng(seed), 1.0)
    assert len(out) == len(sig) and np.array_equal(out.pen_down, sig.pen_down) and np.array_equal(out.pressure, sig.pressure)
    assert (out.x[0], out.y[0], out.t[0]) == (sig.x[0], sig.y[0], sig.t[0]) and out.t[-1] == pytest.approx(sig.t[-1])
    assert (np.diff(out.t) > 0).all()
    z0, z1 = np.diff(sig.x + 1j * sig.y), np.diff(out.x + 1j * out.y)  # the steps between points
    pen_up = [39, 40, 41, 42, 99, 100]
    np.testing.assert_allclose(z1[pen_up], z0[pen_up], atol=1e-9)  # pen-up movements keep their shape
    factors, speeds = [], []
    for a, b in [(0, 40), (43, 100), (101, 150)]:
        ratio = z1[a : b - 1] / z0[a : b - 1]  # one complex factor per stroke: a rotation and a scaling of all its steps
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
        assert abs(np.log(abs(ratio[0]))) <= 0.1 + 1e-12 and abs(np.angle(ratio[0], deg=True)) <= 5 + 1e-9
        factors.append(ratio[0])
        speeds.append((np.diff(sig.t)[a : b - 1] / np.diff(out.t)[a : b - 1]).mean())
    assert len(set(np.round(factors, 9))) == 3  # the strokes' own draws
    renorm = np.diff(sig.t)[pen_up] / np.diff(out.t)[pen_up]  # pen-up steps change only by the duration's renormalisation
    np.testing.assert_allclose(renorm, renorm[0])
    assert all(abs(np.log(s / renorm[0])) <= 0.15 + 1e-9 for s in speeds) and max(speeds) > min(speeds)
    assert perturb_strokes(sig, np.random.default_rng(0), 0.0) is sig
    again = perturb_strokes(sig, np.random.default_rng(seed), 1.0)
    assert np.array_equal(again.x, out.x) and np.array_equal(again.t, out.t)


def test_training_applies_stroke_perturbation_only_when_asked(tmp_path):
    """``train.augment_strokes`` perturbs the strokes after the whole signature's augmentation; at 0 (the default)
    it draws nothing, so augmented sequences stay exactly those of the augmentation alone."""
    def seqs(**train):
        cfg = RunConfig.from_sections(apply_sets({}, ["model.members=1", *(f"train.{k}={v}" for k, v in train.items())]))
        prep = prepare(SAMPLE, cfg, None)
        rows = prep.train_rows[:6]
        return prep, rows, _pair_sequences(prep, rows, cfg, np.random.default_rng(3))

    prep, rows, plain = seqs(augment=0)
    assert all(torch.equal(a, prep.seqs[i]) for a, i in zip(plain, rows))
    _, _, whole = seqs()
    _, _, both = seqs(augment_strokes=1)
    _, _, only = seqs(augment=0, augment_strokes=1)
    rng = np.random.default_rng(3)
    cfg = RunConfig.from_sections({"model": {"members": 1}})
    by_hand = [extract(augment(prep.sigs[i], rng, 1.0), cfg.features) for i in rows]
    assert all(np.allclose(a.numpy(), b) for a, b in zip(whole, by_hand))
    assert not any(torch.equal(a, b) for a, b in zip(both, whole)) and not any(torch.equal(a, p) for a, p in zip(only, plain))
    with pytest.raises(ConfigError, match="augment_strokes"):
        RunConfig.from_sections({"train": {"augment_strokes": 4}})


@pytest.mark.parametrize("kind", VIRTUAL_WRITERS)
def test_a_virtual_writers_signature_is_a_fixed_transformation_of_the_real_one(kind):
    """mirror and flip negate x or y (and the azimuth); reverse runs the points backwards with the same durations
    between them; each is its own inverse. Labels and sessions stay, the writer gets a virtual name."""
    sig = make_signature(60, seed=3, writer="u7", label="skilled", session=2, source="f.txt")
    sig = Signature(t=sig.t + np.r_[0.0, np.cumsum(np.random.default_rng(0).uniform(0, 4, 59))], x=sig.x, y=sig.y,
                    pen_down=sig.pen_down, pressure=sig.pressure, azimuth=sig.azimuth, altitude=sig.altitude,
                    writer=sig.writer, label=sig.label, session=sig.session, source=sig.source)  # uneven steps
    v = virtual_writer(sig, kind)
    assert (v.writer, v.label, v.session, len(v)) == (f"u7{VIRTUAL_MARK}{kind}", "skilled", 2, len(sig))
    if kind == "reverse":
        np.testing.assert_array_equal(v.x, sig.x[::-1])
        np.testing.assert_array_equal(v.pen_down, sig.pen_down[::-1])
        np.testing.assert_array_equal(v.pressure, sig.pressure[::-1])
        np.testing.assert_allclose(np.diff(v.t), np.diff(sig.t)[::-1])
        assert v.t[0] == sig.t[0] and v.duration_ms == pytest.approx(sig.duration_ms)
    else:
        flipped, kept = ("x", "y") if kind == "mirror" else ("y", "x")
        np.testing.assert_array_equal(getattr(v, flipped), -getattr(sig, flipped))
        np.testing.assert_array_equal(getattr(v, kept), getattr(sig, kept))
        np.testing.assert_array_equal(v.azimuth, -sig.azimuth)
        np.testing.assert_array_equal(v.t, sig.t)
    back = virtual_writer(Signature(**{**{f: getattr(v, f) for f in ("t", "x", "y", "pen_down", "pressure", "azimuth",
                                                                      "altitude", "label", "session", "source")}, "writer": "u7"}), kind)
    for f in ("t", "x", "y", "pen_down", "pressure", "azimuth", "altitude"):
        np.testing.assert_allclose(getattr(back, f), getattr(sig, f))
    with pytest.raises(ValueError, match="unknown virtual writer kind 'rotate'"):
        virtual_writer(sig, "rotate")


def test_virtual_writers_join_the_training_writers_only(tmp_path):
    """train.virtual_writers appends a transformed copy of every training writer's signatures, under new writer
    names; the real rows (and so the validation writers and their features) are untouched; a mirrored signature's
    features are the real one's with the x velocity, the direction cosine and the turning (angular velocity, centripetal
    acceleration) negated."""
    from tdnn_siamese.config import ConfigError
    from tdnn_siamese.train import RunConfig, apply_sets, prepare

    plain_cfg = RunConfig.from_sections({})
    cfg = RunConfig.from_sections(apply_sets({}, ['train.virtual_writers=["mirror","reverse"]']))
    plain, prep = prepare(SAMPLE, plain_cfg), prepare(SAMPLE, cfg)
    n = len(plain.table)
    pd.testing.assert_frame_equal(prep.table.iloc[:n], plain.table)
    assert all(torch.equal(a, b) for a, b in zip(prep.seqs[:n], plain.seqs))
    np.testing.assert_array_equal(prep.val_rows, plain.val_rows)
    real_train = plain.table.iloc[plain.train_rows]["writer"].unique()
    got = set(prep.table.iloc[prep.train_rows]["writer"])
    assert got == set(real_train) | {f"{w}{VIRTUAL_MARK}{k}" for w in real_train for k in ("mirror", "reverse")}
    assert len(prep.train_rows) == 3 * len(plain.train_rows) and len(prep.table) == n + 2 * len(plain.train_rows)
    assert prep.fingerprint == plain.fingerprint  # the data are the same corpus
    first = plain.train_rows[0]
    mirrored = n  # the first appended row: the mirror of the first training row
    assert prep.table.iloc[mirrored]["writer"] == f"{plain.table.iloc[first]['writer']}{VIRTUAL_MARK}mirror"
    names = list(FEATURE_SETS[cfg.features.feature_set])
    flips = [names.index(c) for c in ("vx", "dir_cos", "ang_velocity", "acc_centripetal")]  # mirrored: turns the other way
    want = plain.seqs[first].clone()
    want[:, flips] *= -1
    torch.testing.assert_close(prep.seqs[mirrored], want, atol=1e-5, rtol=1e-5)
    for bad in ('["mirror","mirror"]', '["rotate"]'):
        with pytest.raises(ConfigError, match="virtual_writers lists each of mirror, flip, reverse at most once"):
            RunConfig.from_sections(apply_sets({}, [f"train.virtual_writers={bad}"]))
    assert main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "r"), "--epochs", "1", *SMALL_TRAIN,
                 "--set", 'train.virtual_writers=["flip"]']) == 0
    prov = load_checkpoint(tmp_path / "r" / "model.pt").provenance
    assert prov["virtual_writers"] == ["flip"] and sorted(prov["train_writers"]) == sorted(real_train)


def test_a_corpus_whose_writer_names_hold_the_virtual_mark_is_refused_with_virtual_writers(tmp_path):
    """A real writer named like a virtual one would merge with it: said, naming the writer, not trained."""
    import shutil

    from tdnn_siamese import train as train_module
    from tdnn_siamese.config import ConfigError
    from tdnn_siamese.train import RunConfig, apply_sets, prepare

    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE, corpus)
    text = (corpus / "manifest.csv").read_text()
    (corpus / "manifest.csv").write_text(text.replace(",synth", f",s{VIRTUAL_MARK}"))  # every writer: s~0001, ...
    plain = RunConfig.from_sections({})
    prep = prepare(corpus, plain)  # fine without virtual writers, and such writers are kept as training writers
    listed = train_module.provenance(prep, plain, corpus, 1, 1)["train_writers"]
    assert listed == sorted(prep.table.iloc[prep.train_rows]["writer"].unique()) and all(VIRTUAL_MARK in w for w in listed)
    with pytest.raises(ConfigError, match=f"writer name 's{VIRTUAL_MARK}0001' holds"):
        prepare(corpus, RunConfig.from_sections(apply_sets({}, ['train.virtual_writers=["mirror"]'])))


@pytest.mark.parametrize("seed", range(5))
def test_an_imitation_keeps_the_points_but_moves_shape_and_rhythm_more_than_augmentation(seed):
    sig = make_signature(n=150, seed=seed, writer="w", label="genuine", session=1)
    out = imitate(sig, np.random.default_rng(seed))
    assert len(out) == len(sig) and out.writer == "w" and out.label == "skilled" and out.session == 1
    assert np.array_equal(out.pen_down, sig.pen_down) and (np.diff(out.t) > 0).all() and out.t[0] == sig.t[0]
    dur0, dur1 = sig.t[-1] - sig.t[0], out.t[-1] - out.t[0]
    assert dur0 - 1e-6 <= dur1 <= dur0 * IMITATION_SLOWDOWN + 1e-6  # never faster, at most that much slower
    size = max(np.ptp(sig.x), np.ptp(sig.y))
    shift = np.hypot(out.x - sig.x, out.y - sig.y)
    assert 0 < shift.max() <= 2 * 3 * IMITATION_DISPLACEMENT * size  # sinusoids of normal amplitudes: bounded in practice
    # the displacement is smooth (a few slow sinusoids), not noise: its steps are small against its size
    assert np.abs(np.diff(out.x - sig.x)).max() < 0.2 * np.abs(out.x - sig.x).max()


def test_imitations_vary_the_duration_across_draws():
    sig = make_signature(n=150, seed=9)
    durations = [np.ptp(imitate(sig, np.random.default_rng(r)).t) for r in range(20)]
    assert np.ptp(durations) > 0.1 * np.ptp(sig.t) and min(durations) >= np.ptp(sig.t) - 1e-6


def test_imitations_are_seeded_and_scale_with_strength():
    sig = make_signature(n=120, seed=4)
    a, b = imitate(sig, np.random.default_rng(1)), imitate(sig, np.random.default_rng(1))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.t, b.t) and np.array_equal(a.pressure, b.pressure)
    weak, strong = imitate(sig, np.random.default_rng(1), 0.25), imitate(sig, np.random.default_rng(1), 1.0)
    assert np.abs(weak.x - sig.x).max() < np.abs(strong.x - sig.x).max()
    with pytest.raises(ValueError, match="strength"):
        imitate(sig, np.random.default_rng(1), 0.0)


def test_an_imitation_without_pressure_or_beyond_a_longest_duration():
    sig = make_signature(n=150, seed=5)
    sig = Signature(t=sig.t, x=sig.x, y=sig.y, pen_down=sig.pen_down, source="a.txt")
    dur = np.ptp(sig.t)
    out = imitate(sig, np.random.default_rng(0))
    assert out.pressure is None and out.source == "a.txt (imitation)"  # an error names the file it came from, as an imitation
    capped = [np.ptp(imitate(sig, np.random.default_rng(r), max_duration=dur * 1.05).t) for r in range(20)]
    assert max(capped) <= dur * 1.05 + 1e-6 and min(capped) >= dur - 1e-6
    assert np.ptp(imitate(sig, np.random.default_rng(0), max_duration=dur / 2).t) == pytest.approx(dur)  # never faster
