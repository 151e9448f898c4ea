import numpy as np
import pytest

from tdnn_siamese import datasets, synth
from tdnn_siamese.config import ConfigError
from tdnn_siamese import features
from tdnn_siamese.features import FEATURE_SETS, FeatureConfig, FeatureError, extract, extract_many, resample
from tdnn_siamese.signature import Signature

from . import feature_reference
from .conftest import make_signature


def moved(sig: Signature, scale: float, dx: float, dy: float) -> Signature:
    return Signature(t=sig.t, x=sig.x * scale + dx, y=sig.y * scale + dy, pen_down=sig.pen_down,
                     pressure=sig.pressure, azimuth=sig.azimuth, altitude=sig.altitude)


def _signatures(svc_root=None):
    sigs = [make_signature(n=60, seed=s) for s in range(3)] + synth.generate(1, 2, 1, seed=5)
    if svc_root is not None:
        sigs += datasets.load_signatures(datasets.load(svc_root).iloc[::400])
    return sigs


@pytest.mark.parametrize("cfg", [FeatureConfig(), FeatureConfig(feature_set="extended", n_steps=None)])
@pytest.mark.parametrize("scale,dx,dy", [(1.0, 1234.5, -987.0), (0.01, 0.0, 0.0), (37.0, -5e5, 2e5), (1e-3, 3.0, 3.0)])
def test_features_do_not_depend_on_position_or_size(cfg, scale, dx, dy):
    for sig in _signatures():
        np.testing.assert_allclose(extract(moved(sig, scale, dx, dy), cfg), extract(sig, cfg), rtol=1e-5, atol=1e-5)


def test_invariance_on_public_files(svc_root):
    for sig in _signatures(svc_root)[-4:]:
        np.testing.assert_allclose(extract(moved(sig, 2.5, -700, 300)), extract(sig), rtol=1e-5, atol=1e-5)


def test_shapes_and_channel_names():
    sig = make_signature(n=50)  # 490 ms
    assert extract(sig).shape == (200, 8)
    assert extract(sig, FeatureConfig(n_steps=64)).shape == (64, 8)
    assert extract(sig, FeatureConfig(n_steps=None)).shape == (50, 8)  # 100 Hz over 490 ms
    assert extract(sig, FeatureConfig(n_steps=None, rate_hz=50)).shape == (25, 8)
    assert FeatureConfig(feature_set="extended").n_features == 13 == len(FEATURE_SETS["extended"])
    assert extract(sig).dtype == np.float32


def test_rich_xy_is_the_position_then_rich():
    sig = synth.generate(1, 1, 0, seed=4)[0]
    both = extract(sig, FeatureConfig(feature_set="rich_xy", n_steps=None, znorm=True))
    rich = extract(sig, FeatureConfig(feature_set="rich", n_steps=None, znorm=True))
    bromley = extract(sig, FeatureConfig(feature_set="bromley", n_steps=None, znorm=True))
    assert both.shape == (len(rich), 14)
    np.testing.assert_array_equal(both[:, 2:], rich)
    np.testing.assert_array_equal(both[:, :2], bromley[:, 1:3])  # bromley's x and y


def _line_or_circle(kind: str, n: int = 400) -> Signature:
    t = np.arange(n) * 10.0
    if kind == "line":
        x, y = t * 2.0, np.zeros(n) + 1e-9 * t**2  # constant speed to the right
    else:
        w = 2 * np.pi / 1000.0  # one turn per second, counter-clockwise
        x, y = 100 * np.cos(w * t), 100 * np.sin(w * t)
    return Signature(t=t, x=x, y=y, pen_down=np.ones(n, bool))


def test_kinematics_of_a_line_and_a_circle():
    cfg = FeatureConfig(n_steps=None)
    names = cfg.channels
    f = extract(_line_or_circle("line"), cfg)[20:-20]
    line = _line_or_circle("line")
    r = np.sqrt(np.mean((line.x - line.x.mean()) ** 2 + (line.y - line.y.mean()) ** 2))
    np.testing.assert_allclose(f[:, names.index("speed")], 2.0 * 1000 / r, rtol=1e-4)
    np.testing.assert_allclose(f[:, names.index("dir_cos")], 1.0, atol=1e-6)
    np.testing.assert_allclose(f[:, names.index("acc_tangential")], 0.0, atol=1e-3)
    f = extract(_line_or_circle("circle"), cfg)[20:-20]
    w, h = 2 * np.pi, 0.01  # rad/s, step (s); the normalised radius is 1
    gauss = np.exp(-((w * h * cfg.smooth_sigma) ** 2) / 2)  # the smoothing's gain at this frequency
    sinc = np.sin(w * h) / (w * h)  # the central difference's gain
    np.testing.assert_allclose(f[:, names.index("speed")], gauss * sinc * w, rtol=1e-4)
    np.testing.assert_allclose(f[:, names.index("acc_centripetal")], gauss * sinc**2 * w**2, rtol=1e-4)  # > 0: turning left
    np.testing.assert_allclose(np.hypot(f[:, names.index("x")], f[:, names.index("y")]), gauss, rtol=1e-4)


def test_resampling_matches_a_slow_reference():
    sig = make_signature(n=37, seed=4)
    t = sig.t.copy()
    t[10:] += 3.0  # irregular sampling
    sig = Signature(t=t, x=sig.x, y=sig.y, pen_down=sig.pen_down)
    cfg = FeatureConfig(n_steps=25)
    r = resample(sig, cfg)
    down = sig.pen_down
    cx, cy = sig.x[down].mean(), sig.y[down].mean()
    scale = np.sqrt(np.mean((sig.x[down] - cx) ** 2 + (sig.y[down] - cy) ** 2))
    for k, g in enumerate(np.linspace(t[0], t[-1], 25)):
        i = max(j for j in range(len(t) - 1) if t[j] <= g) if g < t[-1] else len(t) - 2
        a = (g - t[i]) / (t[i + 1] - t[i])
        x = (sig.x[i] + a * (sig.x[i + 1] - sig.x[i]) - cx) / scale
        assert r["x"][k] == pytest.approx(x, abs=1e-9)
        assert r["pen_down"][k] == float(sig.pen_down[i] if a < 0.5 else sig.pen_down[i + 1])


def test_sampling_gap_counts_as_pen_up():
    sig = make_signature(n=40)
    t = sig.t.copy()
    t[20:] += 500.0  # the tablet reported nothing for half a second
    f = extract(Signature(t=t, x=sig.x, y=sig.y, pen_down=np.ones(40, bool)), FeatureConfig(n_steps=None))
    pen = f[:, 0]
    assert pen[:15].all() and pen[-15:].all()
    assert (pen[22:65] == 0).all()


def test_extended_needs_pen_channels():
    with pytest.raises(FeatureError, match="needs pressure, azimuth, altitude"):
        extract(make_signature(channels=False), FeatureConfig(feature_set="extended"))


def test_variable_length_limits():
    sig = make_signature(n=50)
    with pytest.raises(FeatureError, match="max_steps"):
        extract(sig, FeatureConfig(n_steps=None, rate_hz=1000.0, max_steps=100))
    with pytest.raises(FeatureError, match="fewer than"):
        extract(sig, FeatureConfig(n_steps=None, rate_hz=10.0))


def test_feature_config_is_strict():
    assert FeatureConfig.from_dict({"feature_set": "extended", "n_steps": None}).n_steps is None
    assert FeatureConfig.from_dict(FeatureConfig().to_dict()) == FeatureConfig()
    with pytest.raises(ConfigError, match="unknown FeatureConfig key"):
        FeatureConfig.from_dict({"n_step": 100})
    with pytest.raises(ConfigError, match="n_steps"):
        FeatureConfig.from_dict({"n_steps": "200"})
    with pytest.raises(ConfigError, match="n_steps"):
        FeatureConfig(n_steps=True)
    with pytest.raises(ConfigError, match="unknown feature_set"):
        FeatureConfig(feature_set="dsdtw")
    with pytest.raises(ConfigError):
        FeatureConfig(n_steps=3)
    assert FeatureConfig(rate_hz=100).rate_hz == 100.0 and isinstance(FeatureConfig(rate_hz=100).rate_hz, float)


def _irregular(seed: int) -> Signature:
    sig = make_signature(n=80 + 13 * seed, seed=seed)
    t = sig.t.copy()
    t[30:] += 7.0 * (seed + 1)  # irregular sampling
    t[55:] += 300.0 * (seed % 2)  # and sometimes a gap
    return Signature(t=t, x=sig.x, y=sig.y, pen_down=sig.pen_down, pressure=sig.pressure, azimuth=sig.azimuth,
                     altitude=sig.altitude, source=f"irregular{seed}")


@pytest.mark.parametrize("feature_set", sorted(FEATURE_SETS))
@pytest.mark.parametrize("n_steps,znorm", [(200, False), (37, False), (None, False), (200, True), (None, True)])
def test_batched_features_equal_the_plain_reference(feature_set, n_steps, znorm, monkeypatch):
    """Many signatures of different lengths featurised together give each one's own features, in order."""
    monkeypatch.setattr(features, "BATCH", 3)  # several batches, some padded
    sigs = [_irregular(s) for s in range(5)] + synth.generate(2, 2, 1, seed=7)
    cfg = FeatureConfig(feature_set=feature_set, n_steps=n_steps, znorm=znorm)
    got = extract_many(sigs, cfg)
    assert len(got) == len(sigs)
    for sig, f in zip(sigs, got):
        want = feature_reference.extract(sig, cfg)
        assert f.shape == want.shape and f.dtype == np.float32
        np.testing.assert_allclose(f, want, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(f, extract(sig, cfg), rtol=1e-6, atol=1e-6)  # alone or in a batch: the same numbers


def test_batched_features_equal_the_reference_on_public_files(svc_root):
    sigs = datasets.load_signatures(datasets.load(svc_root).iloc[::23])
    for cfg in (FeatureConfig(), FeatureConfig(feature_set="extended", n_steps=None), FeatureConfig(feature_set="kinematic", n_steps=None),
                FeatureConfig(feature_set="rich", n_steps=None)):
        for sig, f in zip(sigs, extract_many(sigs, cfg)):
            np.testing.assert_allclose(f, feature_reference.extract(sig, cfg), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n_steps", [200, None])
def test_znorm_gives_every_channel_zero_mean_and_unit_spread_per_signature(n_steps):
    """``znorm`` z-normalises each channel over the signature's own steps, so a faster signing of the same
    trajectory gives the same velocities and accelerations (the DTW baseline's normalisation)."""
    sig = make_signature(n=120, seed=3)
    fast = Signature(t=sig.t[0] + (sig.t - sig.t[0]) / 2, x=sig.x, y=sig.y, pen_down=sig.pen_down, pressure=sig.pressure,
                     azimuth=sig.azimuth, altitude=sig.altitude)  # the same path in half the time
    plain = FeatureConfig(feature_set="kinematic", n_steps=200)
    cfg = FeatureConfig(feature_set="kinematic", n_steps=200 if n_steps else None, znorm=True)
    f, raw = extract(sig, cfg), extract(sig, FeatureConfig(feature_set="kinematic", n_steps=cfg.n_steps))
    np.testing.assert_allclose(f.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(f.std(0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(f, (raw - raw.mean(0)) / raw.std(0), rtol=1e-4, atol=1e-4)
    # without znorm, half the time doubles the velocities; with it, the fixed-length sequences agree
    np.testing.assert_allclose(extract(fast, plain)[:, 0], 2 * extract(sig, plain)[:, 0], rtol=1e-4, atol=1e-3)
    if n_steps:
        np.testing.assert_allclose(extract(fast, cfg), f, rtol=1e-4, atol=1e-4)
    # a channel constant over the signature (pen always down) becomes 0, not NaN
    still = Signature(t=sig.t, x=sig.x, y=sig.y, pen_down=np.ones(len(sig.t), bool))
    pd_col = extract(still, FeatureConfig(n_steps=200, znorm=True))[:, 0]
    assert np.all(pd_col == 0.0)
    with pytest.raises(ConfigError, match="znorm"):
        FeatureConfig(znorm=1)


def test_a_bad_signature_in_a_batch_is_named():
    sigs = [_irregular(0), make_signature(n=50, seed=1), _irregular(1)]
    sigs[1] = Signature(t=sigs[1].t, x=sigs[1].x, y=sigs[1].y, pen_down=sigs[1].pen_down, source="short.txt")
    with pytest.raises(FeatureError, match="short.txt: lasts 490 ms"):
        extract_many(sigs, FeatureConfig(n_steps=None, rate_hz=10.0))
    assert extract_many([], FeatureConfig()) == []
