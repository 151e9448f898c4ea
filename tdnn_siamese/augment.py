"""Random, label-preserving perturbations of a signature for training (data augmentation).

A writer never signs twice alike: the slant, the proportions and the rhythm
vary from one signature to the next. :func:`augment` imitates that
variation on the raw trajectory, before features are computed, so every
feature set sees it:

- **affine jitter** of the pen positions: a rotation, a shear and separate
  x and y scalings (position and overall size are normalised away by the
  features anyway);
- **time warping**: the signature's duration is cut into three segments
  whose speeds change by independent factors, the total duration kept (a
  global speed change would imitate a forger's slow, careful hand, which is
  exactly what must stay visible);
- **pressure scaling** by one factor (device gain). The built-in feature
  sets z-normalise pressure per signature and so do not see it; it is
  there for the raw-pressure features a user may add.

``strength`` scales every range; 0 returns the signature unchanged. The
caller passes the ``numpy.random.Generator``: nothing here seeds itself.
"""

from __future__ import annotations

import numpy as np

from .signature import Signature

MAX_ROTATION_DEG = 5.0  # at strength 1
MAX_SHEAR = 0.1
MAX_LOG_SCALE = 0.1  # x and y scalings within exp(+-0.1)
MAX_LOG_SPEED = 0.15  # per time segment
MAX_LOG_PRESSURE = 0.1
SEGMENTS = 3


def augment(sig: Signature, rng: np.random.Generator, strength: float = 1.0) -> Signature:
    """A randomly perturbed copy of ``sig`` (same points, pen states and metadata)."""
    if strength <= 0:
        return sig
    u = lambda m: rng.uniform(-m * strength, m * strength)  # noqa: E731
    theta = np.deg2rad(u(MAX_ROTATION_DEG))
    shear = u(MAX_SHEAR)
    sx, sy = np.exp(u(MAX_LOG_SCALE)), np.exp(u(MAX_LOG_SCALE))
    c, s = np.cos(theta), np.sin(theta)
    x0, y0 = sig.x - sig.x.mean(), sig.y - sig.y.mean()
    xs, ys = sx * (x0 + shear * y0), sy * y0
    x, y = c * xs - s * ys, s * xs + c * ys

    # time warp: piecewise-linear, monotonic, first and last timestamps kept
    t0, dur = float(sig.t[0]), float(sig.t[-1] - sig.t[0])
    speeds = np.exp([u(MAX_LOG_SPEED) for _ in range(SEGMENTS)])
    lengths = (1.0 / SEGMENTS) / speeds  # a faster segment takes less time
    knots_in = np.linspace(0.0, 1.0, SEGMENTS + 1)
    knots_out = np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
    t = t0 + dur * np.interp((sig.t - t0) / dur, knots_in, knots_out)

    pressure = None if sig.pressure is None else sig.pressure * np.exp(u(MAX_LOG_PRESSURE))
    return Signature(t=t, x=x, y=y, pen_down=sig.pen_down, pressure=pressure, azimuth=sig.azimuth, altitude=sig.altitude,
                     writer=sig.writer, label=sig.label, session=sig.session, source=sig.source)
