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
- ``rich`` (12): the kind of time-function set DsDTW and other deep
  online-signature verifiers use (Jiang et al. 2022, after Fierrez et al.
  2007): x and y velocity, speed, direction cosine and sine, tangential
  acceleration, angular velocity of the direction (rad/s), log curvature
  radius (log(speed / |angular velocity|), bounded to +-10), centripetal
  and total acceleration, pressure (z-normalised per signature) and its
  rate of change. Needs pressure.
- ``rich_xy`` (14): ``rich`` plus the pen position x and y (centred on the
  pen-down points and scaled by their RMS radius), the coordinates that
  DTW verifiers such as Sharma & Sundaram's and LS-DTW align on beside
  their derivatives. Needs pressure.

Speeds and accelerations keep physical time, so a slow, careful forgery
looks slow even after resampling to 200 steps. Their scales are large;
the model standardises its input with statistics of the training data.
``FeatureConfig.znorm`` instead z-normalises every channel over each
signature's own steps, as classic DTW verifiers do: the absolute tempo is
lost, and with it the mismatch of a writer who signs faster on another day
(on SVC2004 the DTW baseline's writer-specific skilled EER is 3.1% with it
and 8.5% with one global standardisation); the default `modern` training
uses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import ConfigError, StrictConfig
from .signature import OPTIONAL_CHANNELS, Signature

logger = logging.getLogger(__name__)

BROMLEY = ("pen_down", "x", "y", "speed", "acc_tangential", "acc_centripetal", "dir_cos", "dir_sin")
RICH = ("vx", "vy", "speed", "dir_cos", "dir_sin", "acc_tangential", "ang_velocity", "log_radius", "acc_centripetal",
        "acc_total", "pressure", "pressure_rate")
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "bromley": BROMLEY,
    "extended": (*BROMLEY, "curv_cos", "curv_sin", *OPTIONAL_CHANNELS),
    "kinematic": ("vx", "vy", "ax", "ay", "pressure"),
    "rich": RICH,
    "rich_xy": ("x", "y", *RICH),
}
_LOG_RADIUS_CLIP = 10.0  # |log curvature radius| bound: a straight stroke has an infinite radius
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
    znorm : z-normalise every channel over each signature's own steps, as the
        DTW baseline does: speeds and accelerations lose their absolute scale,
        so a writer who signs faster or slower on another day still matches
        his references (a channel constant over a signature becomes 0).
    """

    feature_set: str = "bromley"
    n_steps: int | None = 200
    rate_hz: float = 100.0
    smooth_sigma: float = 1.0
    gap_factor: float = 4.0
    max_steps: int = 12000
    znorm: bool = False

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


def _segments(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and segment ids of sequences of ``lengths`` laid end to end."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return starts, np.repeat(np.arange(len(lengths)), lengths)


def _segment_mean(v: np.ndarray, seg: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(seg, weights * v, minlength=n) / np.bincount(seg, weights, minlength=n)


def _segment_median(v: np.ndarray, seg: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """np.median of each segment of ``v`` (segments contiguous, in order, each non-empty)."""
    s = v[np.lexsort((v, seg))]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (s[starts + (counts - 1) // 2] + s[starts + counts // 2]) / 2


def _steps(sigs: list[Signature], cfg: FeatureConfig) -> np.ndarray:
    """Number of resampled steps of each signature (raises FeatureError naming the first out of range)."""
    dur = np.array([s.t[-1] - s.t[0] for s in sigs], dtype=np.float64)
    if cfg.n_steps is not None:
        return np.full(len(sigs), cfg.n_steps, dtype=np.int64)
    n = np.floor(dur * cfg.rate_hz / 1000.0).astype(np.int64) + 1
    for s, d, k in zip(sigs, dur, n):
        where = s.source or "signature"
        if k < MIN_STEPS:
            raise FeatureError(f"{where}: lasts {d:.0f} ms, fewer than {MIN_STEPS} steps at {cfg.rate_hz:g} Hz")
        if k > cfg.max_steps:
            raise FeatureError(f"{where}: lasts {d / 1000:.1f} s, {k} steps at {cfg.rate_hz:g} Hz; max_steps is {cfg.max_steps}")
    return n


def resample_many(sigs: list[Signature], cfg: FeatureConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Position-normalised channels of B signatures resampled in time (before smoothing), all at once.

    Returns arrays (B, T_max) and the number of valid steps of each row;
    past its length a row repeats its last step (so "nearest" smoothing of a
    padded row equals that of the row alone). Every operation runs on all
    signatures' points laid end to end, each signature's time shifted to
    its own interval, so no Python loop visits a point or a step.
    """
    B = len(sigs)
    npts = np.array([len(s) for s in sigs], dtype=np.int64)
    pstart, pseg = _segments(npts)
    t_raw = np.concatenate([s.t for s in sigs])
    t0 = t_raw[pstart]
    dur = t_raw[pstart + npts - 1] - t0
    base = np.concatenate([[0.0], np.cumsum(np.ceil(dur) + 1.0)[:-1]])  # each signature's own time interval
    t = t_raw - t0[pseg] + base[pseg]

    n = _steps(sigs, cfg)
    T = int(n.max())
    j = np.minimum(np.arange(T)[None, :], n[:, None] - 1)  # (B, T): padding repeats the last step
    if cfg.n_steps is not None:
        rel = (dur[:, None] / (cfg.n_steps - 1)) * j
    else:
        rel = j * (1000.0 / cfg.rate_hz)
    grid = (base[:, None] + rel).ravel()  # (B*T,)

    x, y = np.concatenate([s.x for s in sigs]), np.concatenate([s.y for s in sigs])
    down = np.concatenate([s.pen_down for s in sigs])
    w = down.astype(np.float64)
    cx, cy = _segment_mean(x, pseg, w, B), _segment_mean(y, pseg, w, B)
    x, y = x - cx[pseg], y - cy[pseg]
    scale = np.sqrt(_segment_mean(x**2 + y**2, pseg, w, B))
    x, y = x / scale[pseg], y / scale[pseg]

    out = {"t": (grid.reshape(B, T) - base[:, None]) + t0[:, None], "x": np.interp(grid, t, x), "y": np.interp(grid, t, y)}
    for c in OPTIONAL_CHANNELS:
        if c in cfg.channels:
            out[c] = np.interp(grid, t, np.concatenate([getattr(s, c) for s in sigs]))
    dt = np.diff(t)  # the entries between two signatures are never used
    row = np.repeat(np.arange(B), T)
    lo, hi = pstart[row], pstart[row] + npts[row] - 2
    idx = np.clip(np.searchsorted(t, grid, side="right") - 1, lo, hi)  # raw interval of each step
    frac = (grid - t[idx]) / dt[idx]
    nearer = np.where(frac < 0.5, down[idx], down[idx + 1])
    inner = np.ones(len(dt), dtype=bool)
    inner[(pstart + npts - 1)[:-1]] = False  # drop the steps from one signature to the next
    med = _segment_median(dt[inner], pseg[1:][inner], npts - 1)
    gap = dt[idx] > cfg.gap_factor * med[row]
    out["pen_down"] = (nearer & ~gap).astype(np.float64)
    return {k: v.reshape(B, T) for k, v in out.items()}, n


def resample(sig: Signature, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """:func:`resample_many` of one signature: its resampled channels, 1-D."""
    r, n = resample_many([sig], cfg)
    return {k: v[0, : n[0]] for k, v in r.items()}


def _gradient(v: np.ndarray, h: np.ndarray, n: np.ndarray) -> np.ndarray:
    """np.gradient of each row's first n[b] values with spacing h[b] (B, T); one-sided at both ends."""
    g = np.gradient(v, axis=1) / h[:, None]
    rows = np.flatnonzero(n < v.shape[1])
    last = n[rows] - 1
    g[rows, last] = (v[rows, last] - v[rows, last - 1]) / h[rows]
    return g


def _masked_zscore(v: np.ndarray, valid: np.ndarray, n: np.ndarray) -> np.ndarray:
    mean = (v * valid).sum(1) / n
    sd = np.sqrt((((v - mean[:, None]) * valid) ** 2).sum(1) / n)
    ok = sd > _EPS
    return np.where(ok[:, None], (v - mean[:, None]) / np.where(ok, sd, 1.0)[:, None], 0.0)


def _smooth(v: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each row of (B, T), the edges extended with their end values.

    The same kernel as ``scipy.ndimage.gaussian_filter1d(v, sigma, axis=1,
    mode="nearest")`` (radius 4 sigma); written out here so that a
    verification does not import scipy (a fifth of the CLI's start-up).
    """
    radius = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(v, ((0, 0), (radius, radius)), mode="edge")
    T = v.shape[1]
    out = k[0] * p[:, :T]
    for i in range(1, len(k)):
        out += k[i] * p[:, i : i + T]
    return out


def _check_channels(sigs: list[Signature], cfg: FeatureConfig) -> None:
    for sig in sigs:
        missing = [c for c in cfg.channels if c in OPTIONAL_CHANNELS and getattr(sig, c) is None]
        if missing:
            raise FeatureError(
                f"{sig.source or 'signature'}: feature set {cfg.feature_set!r} needs {', '.join(missing)}, "
                "which this recording lacks; use a feature set without it, e.g. 'bromley' "
                "(tdnn-siamese train: --set features.feature_set=bromley)"
            )


def _extract_batch(sigs: list[Signature], cfg: FeatureConfig) -> list[np.ndarray]:
    """Features of a batch of signatures, computed together on (B, T) arrays."""
    r, n = resample_many(sigs, cfg)
    smooth = ["x", "y", *[c for c in OPTIONAL_CHANNELS if c in r]]
    if cfg.smooth_sigma > 0:
        for k in smooth:
            r[k] = _smooth(r[k], cfg.smooth_sigma)
    h = (r["t"][:, 1] - r["t"][:, 0]) / 1000.0  # step in seconds, per signature
    vx, vy = _gradient(r["x"], h, n), _gradient(r["y"], h, n)
    ax, ay = _gradient(vx, h, n), _gradient(vy, h, n)
    speed = np.hypot(vx, vy)
    moving = speed > _EPS
    inv = np.where(moving, 1.0 / np.where(moving, speed, 1.0), 0.0)
    valid = np.arange(r["x"].shape[1])[None, :] < n[:, None]
    f = {
        "pen_down": r["pen_down"],
        "x": r["x"],
        "y": r["y"],
        "speed": speed,
        "acc_tangential": _gradient(speed, h, n),
        "acc_centripetal": (vx * ay - vy * ax) * inv,
        "dir_cos": vx * inv,
        "dir_sin": vy * inv,
        "vx": vx, "vy": vy, "ax": ax, "ay": ay,
    }
    if "curv_cos" in cfg.channels:
        dtheta = _gradient(np.unwrap(np.arctan2(vy, vx), axis=1), np.ones(len(sigs)), n)
        f["curv_cos"], f["curv_sin"] = np.cos(dtheta), np.sin(dtheta)
    if "ang_velocity" in cfg.channels:
        omega = _gradient(np.unwrap(np.arctan2(vy, vx), axis=1), h, n)  # rad/s
        f["ang_velocity"] = omega
        f["log_radius"] = np.clip(np.log((speed + _EPS) / (np.abs(omega) + _EPS)), -_LOG_RADIUS_CLIP, _LOG_RADIUS_CLIP)
        f["acc_total"] = np.hypot(ax, ay)
    for c in OPTIONAL_CHANNELS:
        if c in cfg.channels:
            f[c] = _masked_zscore(r[c], valid, n)
    if "pressure_rate" in cfg.channels:
        f["pressure_rate"] = _gradient(f["pressure"], h, n)
    if cfg.znorm:
        f = {c: _masked_zscore(f[c], valid, n) for c in cfg.channels}
    out = np.stack([f[c] for c in cfg.channels], axis=2)  # (B, T, F)
    finite = np.where(valid[:, :, None], np.isfinite(out), True).all(axis=(1, 2))
    if not finite.all():
        sig = sigs[int(np.argmin(finite))]
        raise FeatureError(f"{sig.source or 'signature'}: features are not finite (values out of numeric range)")
    out = out.astype(np.float32)
    return [out[b, : n[b]] for b in range(len(sigs))]


BATCH = 256  # signatures featurised together: bounds the padded arrays' memory


def extract_many(sigs: Sequence[Signature], cfg: FeatureConfig = FeatureConfig()) -> list[np.ndarray]:
    """Feature arrays (T_i, F) float32 of many signatures, in their order.

    Signatures are processed in batches of similar duration (little padding
    in the variable-length mode); raises FeatureError naming a signature
    that cannot be featurised (signatures lacking a channel are checked
    first, then batch by batch).
    """
    sigs = list(sigs)
    _check_channels(sigs, cfg)
    order = np.argsort([s.t[-1] - s.t[0] for s in sigs], kind="stable") if cfg.n_steps is None else np.arange(len(sigs))
    out: list[np.ndarray] = [None] * len(sigs)  # type: ignore[list-item]
    for s in range(0, len(sigs), BATCH):
        idx = order[s : s + BATCH]
        for i, f in zip(idx, _extract_batch([sigs[i] for i in idx], cfg)):
            out[i] = f
    return out


def check_lengths(feats: Sequence[np.ndarray], sigs: Sequence[Signature], min_steps: int) -> None:
    """Raise FeatureError naming the first signature with fewer than ``min_steps`` steps (an encoder's minimum)."""
    for f, sig in zip(feats, sigs):
        if len(f) < min_steps:
            raise FeatureError(f"{sig.source or 'signature'}: {len(f)} time steps; the model needs at least {min_steps} "
                               "(a longer recording, or a model trained on a fixed number of steps or with fewer model.segments: "
                               "the encoder needs a step per segment)")


def extract(sig: Signature, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Feature array (T, F) float32 of one signature; T = ``n_steps`` or by duration."""
    return extract_many([sig], cfg)[0]
