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

**Stroke-level perturbation** (:func:`perturb_strokes`,
``train.augment_strokes``; off by default) varies each pen-down stroke on
its own, as a writer's strokes vary from one signature to the next: every
stroke's pen movements are rotated and scaled by its own small amounts and
drawn at its own speed. It acts on the steps between points, so the
trajectory stays continuous (later strokes follow where the changed one
ends) and pen-up movements keep their shape; then all time steps are
rescaled together so that the whole lasts as long as before.

``strength`` scales every range; 0 returns the signature unchanged. The
caller passes the ``numpy.random.Generator``: nothing here seeds itself.

**Virtual writers** (:func:`virtual_writer`, ``train.virtual_writers``) go
further: a fixed, deterministic transformation of *all* of a training
writer's signatures (genuine and skilled alike) makes the signatures of a
new writer, whose forgeries are as good as the real writer's were. A
mirrored signature is not a signature of the real writer at all, so these
are new classes, never extra samples of old ones: the trick of speaker
verification's speed-perturbed speakers (wespeaker), here with

- ``mirror``: x -> -x (written right to left), azimuth mirrored too;
- ``flip``: y -> -y (upside down), azimuth mirrored too;
- ``reverse``: the trajectory run backwards in time (every stroke drawn
  from its end, strokes in reverse order), the rhythm's durations kept.

Speeds, curvatures and pressure profiles stay those of real signatures
(run backwards, for ``reverse``: its strokes speed up and slow down the
other way round), which synthetic writers (:mod:`tdnn_siamese.synth`)
could not match.

**Imitations** (:func:`imitate`, ``train.episode_imitations``) are the
opposite of :func:`augment`: a genuine signature distorted *more* than a
writer varies, made into an extra impostor of the writer's training
episodes, in the spirit of SynSig2Vec's distorted copies (Lai, Jin, Lin,
Ding & Zhu, "SynSig2Vec: Learning Representations from Synthetic Dynamic
Signatures for Real-World Verification", AAAI 2020). A forger copies the
shape but not the hand: the shape is smoothly displaced (a few slow
sinusoids, ``IMITATION_DISPLACEMENT`` of the signature's size at
strength 1), the rhythm is uneven and slower (``IMITATION_SEGMENTS``
stretches of time with their own speeds, the whole up to
``IMITATION_SLOWDOWN`` times longer) and the pressure profile drifts.
Training then perturbs it like every other signature (:func:`augment`,
when ``train.augment`` > 0).
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
MAX_STROKE_ROTATION_DEG = 5.0  # per pen-down stroke, at strength 1
MAX_STROKE_LOG_SCALE = 0.1
MAX_STROKE_LOG_SPEED = 0.15


def _time_warp(t: np.ndarray, speeds: np.ndarray, duration: float | None = None) -> np.ndarray:
    """Timestamps ``t`` warped piecewise-linearly: ``len(speeds)`` equal stretches of the original time, each run at
    its own relative speed (a faster stretch takes less time); the start kept, the whole lasting ``duration``
    (default: the original's)."""
    t0, dur = float(t[0]), float(t[-1] - t[0])
    lengths = (1.0 / len(speeds)) / speeds
    knots_in = np.linspace(0.0, 1.0, len(speeds) + 1)
    knots_out = np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
    return t0 + (dur if duration is None else duration) * np.interp((t - t0) / dur, knots_in, knots_out)


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
    t = _time_warp(sig.t, np.exp([u(MAX_LOG_SPEED) for _ in range(SEGMENTS)]))

    pressure = None if sig.pressure is None else sig.pressure * np.exp(u(MAX_LOG_PRESSURE))
    return Signature(t=t, x=x, y=y, pen_down=sig.pen_down, pressure=pressure, azimuth=sig.azimuth, altitude=sig.altitude,
                     writer=sig.writer, label=sig.label, session=sig.session, source=sig.source)


def strokes(pen_down: np.ndarray) -> list[tuple[int, int]]:
    """The pen-down strokes as ``(start, stop)`` index ranges: maximal runs of pen-down points."""
    d = np.diff(np.concatenate([[0], pen_down.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def perturb_strokes(sig: Signature, rng: np.random.Generator, strength: float = 1.0) -> Signature:
    """A copy of ``sig`` whose pen-down strokes each get their own rotation, scaling and speed (see the module
    docstring): a stroke's steps between points change; the first point, the pen-up movements' shape and the
    duration do not (every time step is rescaled by one factor for that, so speeds are relative to it)."""
    if strength <= 0:
        return sig
    u = lambda m: rng.uniform(-m * strength, m * strength)  # noqa: E731
    dx, dy, dt = np.diff(sig.x), np.diff(sig.y), np.diff(sig.t)
    for a, b in strokes(sig.pen_down):
        if b - a < 2:  # a single point has no movement of its own
            continue
        theta, scale, speed = np.deg2rad(u(MAX_STROKE_ROTATION_DEG)), np.exp(u(MAX_STROKE_LOG_SCALE)), np.exp(u(MAX_STROKE_LOG_SPEED))
        c, s = np.cos(theta), np.sin(theta)
        sx, sy = dx[a : b - 1].copy(), dy[a : b - 1].copy()  # steps from point i to i+1 inside the stroke
        dx[a : b - 1], dy[a : b - 1] = scale * (c * sx - s * sy), scale * (s * sx + c * sy)
        dt[a : b - 1] = dt[a : b - 1] / speed
    x = sig.x[0] + np.concatenate([[0.0], np.cumsum(dx)])
    y = sig.y[0] + np.concatenate([[0.0], np.cumsum(dy)])
    t = sig.t[0] + np.concatenate([[0.0], np.cumsum(dt)])
    total, dur = float(t[-1] - t[0]), float(sig.t[-1] - sig.t[0])
    if total > 0:  # the whole keeps its duration: a slower hand overall is a forger's, not a variation
        t = sig.t[0] + (t - t[0]) * (dur / total)
    return Signature(t=t, x=x, y=y, pen_down=sig.pen_down, pressure=sig.pressure, azimuth=sig.azimuth, altitude=sig.altitude,
                     writer=sig.writer, label=sig.label, session=sig.session, source=sig.source)


IMITATION_DISPLACEMENT = 0.04  # amplitude of the smooth displacement, a share of the larger of width and height
IMITATION_SLOWDOWN = 1.5  # the imitation takes 1 to this many times the original's duration (at strength 1)
IMITATION_SEGMENTS = 8  # stretches of time of independent speed
IMITATION_LOG_SPEED = 0.4  # their speeds within exp(+-0.4)
IMITATION_LOG_PRESSURE = 0.2  # the pressure profile's drift
_IMITATION_TERMS = 3  # sinusoids per smooth curve
_IMITATION_CYCLES = (0.5, 3.0)  # their frequencies, in cycles over the signature's points


def _smooth_curve(rng: np.random.Generator, n: int) -> np.ndarray:
    """A slow random curve over ``n`` points of unit standard deviation on average: a sum of a few sinusoids."""
    tau = np.linspace(0.0, 1.0, n)
    out = np.zeros(n)
    for _ in range(_IMITATION_TERMS):
        out += rng.normal() * np.sin(2 * np.pi * rng.uniform(*_IMITATION_CYCLES) * tau + rng.uniform(0, 2 * np.pi))
    return out * np.sqrt(2.0 / _IMITATION_TERMS)


def imitate(sig: Signature, rng: np.random.Generator, strength: float = 1.0, max_duration: float | None = None) -> Signature:
    """A synthetic skilled forgery of ``sig`` (see the module docstring): displaced shape, uneven and slower
    rhythm, drifting pressure, each scaled by ``strength``. Same points and pen states; labelled ``skilled``, its
    source marked ``(imitation)``. ``max_duration`` (ms): slowed down to at most that (never below ``sig``'s own)."""
    if not strength > 0:
        raise ValueError(f"an imitation needs a strength > 0, got {strength}")
    n = len(sig.t)
    size = max(float(np.ptp(sig.x)), float(np.ptp(sig.y)), 1e-9)
    amp = IMITATION_DISPLACEMENT * strength * size
    x, y = sig.x + amp * _smooth_curve(rng, n), sig.y + amp * _smooth_curve(rng, n)
    dur = float(sig.t[-1] - sig.t[0])
    t = sig.t
    if dur > 0:
        speeds = np.exp(rng.uniform(-IMITATION_LOG_SPEED * strength, IMITATION_LOG_SPEED * strength, IMITATION_SEGMENTS))
        total = dur * rng.uniform(1.0, IMITATION_SLOWDOWN) ** strength
        if max_duration is not None:
            total = max(dur, min(total, max_duration))
        t = _time_warp(sig.t, speeds, total)
    pressure = None if sig.pressure is None else sig.pressure * np.exp(IMITATION_LOG_PRESSURE * strength * _smooth_curve(rng, n))
    source = None if sig.source is None else f"{sig.source} (imitation)"
    return Signature(t=t, x=x, y=y, pen_down=sig.pen_down, pressure=pressure, azimuth=sig.azimuth, altitude=sig.altitude,
                     writer=sig.writer, label="skilled", session=sig.session, source=source)


VIRTUAL_WRITERS = ("mirror", "flip", "reverse")
VIRTUAL_MARK = "~"  # a virtual writer's name: the real one's, this mark, the transformation ("U3~mirror")


def virtual_writer(sig: Signature, kind: str) -> Signature:
    """``sig`` transformed into a signature of a virtual writer (``VIRTUAL_WRITERS``; see the module docstring);
    the writer name becomes ``writer~kind``, label and session stay."""
    if kind not in VIRTUAL_WRITERS:
        raise ValueError(f"unknown virtual writer kind {kind!r}; known: {', '.join(VIRTUAL_WRITERS)}")
    x, y, t, pen, p, az, alt = sig.x, sig.y, sig.t, sig.pen_down, sig.pressure, sig.azimuth, sig.altitude
    if kind == "mirror":
        x, az = -x, None if az is None else -az
    elif kind == "flip":
        y, az = -y, None if az is None else -az
    else:  # reverse: point i becomes point n-1-i, at the time the original had left until its end
        rev = lambda a: None if a is None else a[::-1].copy()  # noqa: E731
        x, y, pen, p, az, alt = rev(x), rev(y), rev(pen), rev(p), rev(az), rev(alt)
        t = t[0] + (t[-1] - t[::-1])
    writer = None if sig.writer is None else f"{sig.writer}{VIRTUAL_MARK}{kind}"
    return Signature(t=t, x=x, y=y, pen_down=pen, pressure=p, azimuth=az, altitude=alt, writer=writer, label=sig.label,
                     session=sig.session, source=sig.source)
