"""Preprocessing and named feature sets: `Signature` -> float32 array (T, F).

Follows the preprocessing of Bromley et al. (1994, "Signature verification
using a Siamese time delay neural network", sec. 3): the trajectory is
resampled uniformly in time to a fixed 200 steps, lightly smoothed,
translated and size-normalised, and turned into 8 time functions per step
(their input layer was 8 x 200). The order of operations here:

1. **Normalise position**: subtract the centroid of the pen-down points and
   divide x and y by one common scale, the RMS distance of the pen-down
   points from that centroid. Features then do not depend on where or how
   large the signature was written (aspect ratio is kept).
2. **Resample uniformly in time** over [first, last timestamp]: to
   ``n_steps`` points, or in variable-length mode (``n_steps=None``) at
   ``rate_hz``. Continuous channels are linearly interpolated; the pen state
   is taken from the nearer raw point, and a step inside a sampling gap
   longer than ``gap_factor`` x the median raw step counts as pen-up (tablets
   stop reporting when the pen is lifted out of range).
3. **Smooth** x, y and the pen channels with a Gaussian of ``smooth_sigma``
   steps.
4. **Derive** the time functions, time in seconds, positions in normalised
   units.

Feature sets (``FEATURE_SETS``):

- ``bromley`` (8): pen_down (0/1), x, y, speed, tangential acceleration
  (d speed / dt), centripetal acceleration (speed^2 x signed curvature),
  direction cosine and sine (of the velocity vector). The paper names these
  kinds of features but not its exact final list of eight; we chose the
  eight that carry position, kinematics and direction, and left the two
  curvature-angle channels to ``extended`` because centripetal acceleration
  already carries curvature.
- ``extended`` (13): ``bromley`` plus curvature cosine and sine (of the
  change of direction per step) and pressure, azimuth and altitude, each
  z-normalised per signature (device units differ between tablets). Needs
  a signature that has all three pen channels.
- ``kinematic`` (5): velocity and acceleration along x and y, and pressure
  (z-normalised per signature): the "smoothed derivatives and pressure" of
  classic DTW verifiers; the DTW baseline's default (:mod:`tdnn_siamese.dtw`).
  Needs pressure.

Speeds and accelerations keep physical time, so a slow, careful forgery
looks slow even after resampling to 200 steps. Their scales are large;
the model standardises its input with statistics of the training data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .config import ConfigError, StrictConfig
from .signature import OPTIONAL_CHANNELS, Signature

logger = logging.getLogger(__name__)

BROMLEY = ("pen_down", "x", "y", "speed", "acc_tangential", "acc_centripetal", "dir_cos", "dir_sin")
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "bromley": BROMLEY,
    "extended": (*BROMLEY, "curv_cos", "curv_sin", *OPTIONAL_CHANNELS),
    "kinematic": ("vx", "vy", "ax", "ay", "pressure"),
}
_EPS = 1e-9
MIN_STEPS = 10


class FeatureError(ValueError):
    """A signature that cannot be turned into the requested features."""


@dataclass(frozen=True)
class FeatureConfig(StrictConfig):
    """How a `Signature` becomes a feature array.

    Attributes
    ----------
    feature_set : name in ``FEATURE_SETS``.
    n_steps : fixed number of time steps (Bromley: 200), or None for the
        variable-length mode that resamples at ``rate_hz``.
    rate_hz : resampling rate of the variable-length mode.
    smooth_sigma : Gaussian smoothing width in steps (0 turns it off).
    gap_factor : a raw sampling gap longer than this many median steps is pen-up.
    max_steps : longest sequence the variable-length mode produces (an error beyond).
    """

    feature_set: str = "bromley"
    n_steps: int | None = 200
    rate_hz: float = 100.0
    smooth_sigma: float = 1.0
    gap_factor: float = 4.0
    max_steps: int = 12000

    def validate(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError(f"unknown feature_set {self.feature_set!r}; known: {', '.join(FEATURE_SETS)}")
        if self.n_steps is not None and self.n_steps < MIN_STEPS:
            raise ConfigError(f"n_steps must be at least {MIN_STEPS} or None, got {self.n_steps}")
        if not self.rate_hz > 0 or not self.gap_factor > 1 or self.smooth_sigma < 0 or self.max_steps < MIN_STEPS:
            raise ConfigError(f"out-of-range FeatureConfig values: {self}")

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the feature channels, in column order."""
        return FEATURE_SETS[self.feature_set]

    @property
    def n_features(self) -> int:
        """Number of feature channels F."""
        return len(self.channels)

    @property
    def variable_length(self) -> bool:
        return self.n_steps is None


def normalise_position(sig: Signature) -> tuple[np.ndarray, np.ndarray]:
    """x, y centred on the pen-down centroid and divided by their RMS radius."""
    down = sig.pen_down
    cx, cy = sig.x[down].mean(), sig.y[down].mean()
    x, y = sig.x - cx, sig.y - cy
    scale = np.sqrt(np.mean(x[down] ** 2 + y[down] ** 2))
    return x / scale, y / scale


def time_grid(sig: Signature, cfg: FeatureConfig) -> np.ndarray:
    """Uniform sample times (ms) over the signature's duration."""
    t0, t1 = float(sig.t[0]), float(sig.t[-1])
    if cfg.n_steps is not None:
        return np.linspace(t0, t1, cfg.n_steps)
    n = int(np.floor((t1 - t0) * cfg.rate_hz / 1000.0)) + 1
    where = sig.source or "signature"
    if n < MIN_STEPS:
        raise FeatureError(f"{where}: lasts {t1 - t0:.0f} ms, fewer than {MIN_STEPS} steps at {cfg.rate_hz:g} Hz")
    if n > cfg.max_steps:
        raise FeatureError(f"{where}: lasts {(t1 - t0) / 1000:.1f} s, {n} steps at {cfg.rate_hz:g} Hz; max_steps is {cfg.max_steps}")
    return t0 + np.arange(n) * (1000.0 / cfg.rate_hz)


def resample(sig: Signature, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """Position-normalised channels resampled on :func:`time_grid` (before smoothing)."""
    grid = time_grid(sig, cfg)
    t = sig.t
    x, y = normalise_position(sig)
    out = {"t": grid, "x": np.interp(grid, t, x), "y": np.interp(grid, t, y)}
    for c in sig.channels:
        out[c] = np.interp(grid, t, getattr(sig, c))
    dt = np.diff(t)
    idx = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, len(t) - 2)  # raw interval of each step
    frac = (grid - t[idx]) / dt[idx]
    nearer = np.where(frac < 0.5, sig.pen_down[idx], sig.pen_down[idx + 1])
    gap = dt[idx] > cfg.gap_factor * np.median(dt)
    out["pen_down"] = (nearer & ~gap).astype(np.float64)
    return out


def _zscore(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / sd if sd > _EPS else np.zeros_like(v)


def extract(sig: Signature, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Feature array (T, F) float32 of one signature; T = ``n_steps`` or by duration."""
    missing = [c for c in cfg.channels if c in OPTIONAL_CHANNELS and getattr(sig, c) is None]
    if missing:
        raise FeatureError(
            f"{sig.source or 'signature'}: feature set {cfg.feature_set!r} needs {', '.join(missing)}, "
            "which this recording lacks; use a feature set without it, e.g. 'bromley'"
        )
    r = resample(sig, cfg)
    if cfg.smooth_sigma > 0:
        for k in ("x", "y", *sig.channels):
            r[k] = gaussian_filter1d(r[k], cfg.smooth_sigma, mode="nearest")
    step_s = (r["t"][1] - r["t"][0]) / 1000.0
    vx, vy = np.gradient(r["x"], step_s), np.gradient(r["y"], step_s)
    ax, ay = np.gradient(vx, step_s), np.gradient(vy, step_s)
    speed = np.hypot(vx, vy)
    moving = speed > _EPS
    inv = np.where(moving, 1.0 / np.where(moving, speed, 1.0), 0.0)
    f = {
        "pen_down": r["pen_down"],
        "x": r["x"],
        "y": r["y"],
        "speed": speed,
        "acc_tangential": np.gradient(speed, step_s),
        "acc_centripetal": (vx * ay - vy * ax) * inv,
        "dir_cos": vx * inv,
        "dir_sin": vy * inv,
        "vx": vx, "vy": vy, "ax": ax, "ay": ay,
    }
    if "curv_cos" in cfg.channels:
        dtheta = np.gradient(np.unwrap(np.arctan2(vy, vx)))
        f["curv_cos"], f["curv_sin"] = np.cos(dtheta), np.sin(dtheta)
    for c in OPTIONAL_CHANNELS:
        if c in cfg.channels:
            f[c] = _zscore(r[c])
    out = np.stack([f[c] for c in cfg.channels], axis=1)  # (T, F)
    if not np.isfinite(out).all():
        raise FeatureError(f"{sig.source or 'signature'}: features are not finite (values out of numeric range)")
    return out.astype(np.float32)


def extract_many(sigs: list[Signature], cfg: FeatureConfig = FeatureConfig()) -> list[np.ndarray]:
    """:func:`extract` for each signature."""
    return [extract(s, cfg) for s in sigs]
