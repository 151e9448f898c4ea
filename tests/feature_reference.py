"""A plain per-signature implementation of the features, the oracle for the vectorised one.

This is the straightforward reading of :mod:`tdnn_siamese.features` (one
signature at a time, ``np.interp`` / ``np.gradient`` on 1-D arrays); the
package computes the same numbers for many signatures at once.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from tdnn_siamese.features import FeatureConfig
from tdnn_siamese.signature import OPTIONAL_CHANNELS, Signature

EPS = 1e-9


def resample(sig: Signature, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    down = sig.pen_down
    cx, cy = sig.x[down].mean(), sig.y[down].mean()
    x, y = sig.x - cx, sig.y - cy
    scale = np.sqrt(np.mean(x[down] ** 2 + y[down] ** 2))
    x, y = x / scale, y / scale
    t0, t1 = float(sig.t[0]), float(sig.t[-1])
    if cfg.n_steps is not None:
        grid = np.linspace(t0, t1, cfg.n_steps)
    else:
        grid = t0 + np.arange(int(np.floor((t1 - t0) * cfg.rate_hz / 1000.0)) + 1) * (1000.0 / cfg.rate_hz)
    t = sig.t
    out = {"t": grid, "x": np.interp(grid, t, x), "y": np.interp(grid, t, y)}
    for c in sig.channels:
        out[c] = np.interp(grid, t, getattr(sig, c))
    dt = np.diff(t)
    idx = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, len(t) - 2)
    frac = (grid - t[idx]) / dt[idx]
    nearer = np.where(frac < 0.5, sig.pen_down[idx], sig.pen_down[idx + 1])
    out["pen_down"] = (nearer & ~(dt[idx] > cfg.gap_factor * np.median(dt))).astype(np.float64)
    return out


def extract(sig: Signature, cfg: FeatureConfig) -> np.ndarray:
    r = resample(sig, cfg)
    if cfg.smooth_sigma > 0:
        for k in ("x", "y", *sig.channels):
            r[k] = gaussian_filter1d(r[k], cfg.smooth_sigma, mode="nearest")
    h = (r["t"][1] - r["t"][0]) / 1000.0
    vx, vy = np.gradient(r["x"], h), np.gradient(r["y"], h)
    ax, ay = np.gradient(vx, h), np.gradient(vy, h)
    speed = np.hypot(vx, vy)
    inv = np.where(speed > EPS, 1.0 / np.where(speed > EPS, speed, 1.0), 0.0)
    f = {"pen_down": r["pen_down"], "x": r["x"], "y": r["y"], "speed": speed, "acc_tangential": np.gradient(speed, h),
         "acc_centripetal": (vx * ay - vy * ax) * inv, "dir_cos": vx * inv, "dir_sin": vy * inv,
         "vx": vx, "vy": vy, "ax": ax, "ay": ay}
    dtheta = np.gradient(np.unwrap(np.arctan2(vy, vx)))
    f["curv_cos"], f["curv_sin"] = np.cos(dtheta), np.sin(dtheta)
    omega = np.gradient(np.unwrap(np.arctan2(vy, vx)), h)
    f["ang_velocity"], f["acc_total"] = omega, np.hypot(ax, ay)
    f["log_radius"] = np.clip(np.log((speed + EPS) / (np.abs(omega) + EPS)), -10.0, 10.0)
    for c in OPTIONAL_CHANNELS:
        if c in cfg.channels:
            v = r[c]
            f[c] = (v - v.mean()) / v.std() if v.std() > EPS else np.zeros_like(v)
    if "pressure_rate" in cfg.channels:
        f["pressure_rate"] = np.gradient(f["pressure"], h)
    if cfg.znorm:
        f = {c: (v - v.mean()) / v.std() if v.std() > EPS else np.zeros_like(v) for c, v in f.items()}
    return np.stack([f[c] for c in cfg.channels], axis=1).astype(np.float32)
