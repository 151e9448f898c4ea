"""Synthetic signers after Plamondon's sigma-lognormal model.

A pen stroke's speed is a lognormal impulse response (Plamondon & Djioua,
"A multi-level representation paradigm for handwriting stroke generation",
Human Movement Science 2006; O'Reilly & Plamondon, Pattern Recognition 2009):

    |v_j(t)| = D_j / (sigma_j sqrt(2 pi) (t - t0_j)) exp(-(ln(t - t0_j) - mu_j)^2 / (2 sigma_j^2))
    phi_j(t) = theta_s_j + (theta_e_j - theta_s_j) / 2 * (1 + erf((ln(t - t0_j) - mu_j) / (sigma_j sqrt 2)))

and a pen-down component is the vector sum of overlapping strokes, integrated
into a trajectory. Here:

- a **writer** is a stroke plan: 2-8 pen-down components of 2-6 strokes each,
  with amplitudes D, start times t0, log-time parameters mu and sigma, start
  and end angles, the pen-up moves between components, and a pressure and
  pen-tilt habit;
- a **genuine** signature perturbs the plan a little (every parameter,
  global size, slant and speed; session 2 adds a small drift of its own);
- a **skilled forgery** imitates the shape but not the dynamics: it is
  slower by a factor 1.0-1.5, its strokes are timed unevenly (so their
  overlaps, and hence the shape, change), it hesitates before some strokes,
  deviates more in amplitude and angle, trembles, and presses and tilts the
  pen in the forger's own way;
- a **random forgery** is simply another writer's genuine signature.

The ranges were set so that duration, pen-down components, speed and the
forgeries' slowing roughly match SVC2004 Task 2 (README, "Synthetic
signers", has the comparison; ``scripts/synth_realism.py`` measures it).

Sampling is 100 Hz; positions are in tablet-like units (about 0.01 mm),
pressure 0..1023, azimuth 0..3600 and altitude 300..900 (tenths of degrees),
as in SVC2004. Every writer and every signature draws from its own generator
seeded by ``(seed, writer, kind, index)``, so adding writers never changes
the ones already made.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import erf

from .datasets import write_manifest
from .formats import write_csv
from .signature import Signature

logger = logging.getLogger(__name__)

RATE_HZ = 100.0
_SESSION, _GENUINE, _SKILLED = 0, 1, 2


@dataclass(frozen=True)
class StrokePlan:
    """Sigma-lognormal parameters of one pen-down component (arrays of length n_strokes)."""

    D: np.ndarray  # amplitude (units)
    t0: np.ndarray  # onset (s), relative to the component start
    mu: np.ndarray  # log-time delay
    sigma: np.ndarray  # log-time response width
    theta_s: np.ndarray  # start angle (rad)
    theta_e: np.ndarray  # end angle (rad)


@dataclass(frozen=True)
class Writer:
    """A synthetic writer: components, the pen-up moves between them, and pen habits."""

    components: tuple[StrokePlan, ...]
    moves: np.ndarray  # (n_components - 1, 2) pen-up displacement (units)
    pauses: np.ndarray  # (n_components - 1,) pen-up duration (s)
    pressure: float  # typical pressure, 0..1023
    azimuth: float
    altitude: float


def make_writer(rng: np.random.Generator) -> Writer:
    """Draw a stroke plan and pen habits."""
    comps = []
    for _ in range(int(rng.integers(2, 9))):
        n = int(rng.integers(2, 7))
        # handwriting oscillates: strokes alternate up and down, leaning to the right
        updown = np.where(np.arange(n) % 2 == 0, 1.0, -1.0) * rng.choice([-1.0, 1.0])
        theta_s = updown * (np.pi / 2 - rng.uniform(0.05, 0.35)) + rng.normal(0, 0.6, n)
        comps.append(
            StrokePlan(
                D=np.exp(rng.normal(np.log(1600), 0.45, n)),
                t0=np.concatenate([[0.0], np.cumsum(rng.uniform(0.03, 0.08, n - 1))]),
                mu=rng.normal(-2.45, 0.15, n),
                sigma=rng.uniform(0.2, 0.35, n),
                theta_s=theta_s,
                theta_e=theta_s + rng.normal(0, 0.9, n),
            )
        )
    k = len(comps) - 1
    return Writer(
        components=tuple(comps),
        moves=np.column_stack([rng.uniform(50, 300, k), rng.normal(0, 150, k)]),
        pauses=rng.uniform(0.05, 0.2, k),
        pressure=float(rng.uniform(350, 800)),
        azimuth=float(rng.uniform(600, 3000)),
        altitude=float(rng.uniform(450, 800)),
    )


def _perturb(p: StrokePlan, rng: np.random.Generator, amp: float, ang: float, timing: float, slow: float, pause_p: float) -> StrokePlan:
    n = len(p.D)
    gaps = np.diff(p.t0) * np.exp(rng.normal(0, timing, n - 1))
    if pause_p > 0:  # hesitations before some strokes
        gaps = gaps + (rng.random(n - 1) < pause_p) * rng.uniform(0.05, 0.3, n - 1)
    dth = rng.normal(0, ang, n)
    return StrokePlan(
        D=p.D * np.exp(rng.normal(0, amp, n)),
        t0=np.concatenate([[0.0], np.cumsum(gaps)]) * slow,
        mu=p.mu + np.log(slow) + rng.normal(0, timing / 2, n),
        sigma=np.clip(p.sigma + rng.normal(0, timing / 2, n), 0.1, 0.6),
        theta_s=p.theta_s + dth,
        theta_e=p.theta_e + dth + rng.normal(0, ang, n),
    )


def _velocity(p: StrokePlan, t: np.ndarray) -> np.ndarray:
    """Summed sigma-lognormal velocity (T, 2) at times ``t`` (s)."""
    tau = t[None, :] - p.t0[:, None]  # (S, T)
    pos = tau > 1e-9
    lt = np.log(np.where(pos, tau, 1.0))
    z = (lt - p.mu[:, None]) / p.sigma[:, None]
    speed = np.where(pos, p.D[:, None] / (p.sigma[:, None] * np.sqrt(2 * np.pi) * np.where(pos, tau, 1.0)) * np.exp(-0.5 * z**2), 0.0)
    phi = p.theta_s[:, None] + (p.theta_e - p.theta_s)[:, None] / 2 * (1 + erf(z / np.sqrt(2)))
    return np.stack([(speed * np.cos(phi)).sum(0), (speed * np.sin(phi)).sum(0)], axis=1)


def _component_duration(p: StrokePlan) -> float:
    """Time until the last stroke's speed has died out (2.5 sigma past mu in log time)."""
    return float(np.max(p.t0 + np.exp(p.mu + 2.5 * p.sigma)))


def render(
    w: Writer, rng: np.random.Generator, *, amp: float, ang: float, timing: float, slow: float, pause_p: float,
    tremor: float, pressure: float, azimuth: float, altitude: float,
) -> dict[str, np.ndarray]:
    """Sample one signature of writer ``w`` at 100 Hz with the given deviations."""
    scale = np.exp(rng.normal(0, 0.05 + amp / 3))
    rot = rng.normal(0, 0.03 + ang / 4)
    ts, xs, ys, downs, ps = [], [], [], [], []
    t_start, origin = rng.uniform(0, 10.0), rng.normal([4000.0, 3000.0], 300.0)
    for i, comp in enumerate(w.components):
        plan = _perturb(comp, rng, amp, ang, timing, slow, pause_p)
        dur = _component_duration(plan)
        t = np.arange(0.0, dur, 1.0 / RATE_HZ)
        v = _velocity(plan, t) + tremor * rng.normal(0, 1, (len(t), 2)).cumsum(0) / np.sqrt(len(t))
        xy = np.cumsum(v, 0) / RATE_HZ
        xy -= xy[0]
        speed = np.hypot(*v.T)
        prof = np.clip(np.minimum(t / 0.04, (dur - t) / 0.04), 0, 1)  # pen lands and lifts
        p = pressure * (1.15 - 0.4 * speed / (speed.max() + 1e-9)) * prof + rng.normal(0, 8, len(t))
        # one hover point before the pen lands, as tablets report
        xs.append(np.concatenate([[xy[0, 0] - 20], xy[:, 0]]) + origin[0])
        ys.append(np.concatenate([[xy[0, 1] - 20], xy[:, 1]]) + origin[1])
        ts.append(np.concatenate([[-0.01], t]) + t_start)
        downs.append(np.concatenate([[False], np.ones(len(t), bool)]))
        ps.append(np.concatenate([[0.0], np.clip(p, 1, 1023)]))
        if i < len(w.moves):
            origin = np.array([xs[-1][-1], ys[-1][-1]]) + w.moves[i] * np.exp(rng.normal(0, amp, 2))
            t_start = ts[-1][-1] + w.pauses[i] * slow * np.exp(rng.normal(0, timing)) + 0.02
    x, y, t = np.concatenate(xs), np.concatenate(ys), np.concatenate(ts)
    cx, cy = x.mean(), y.mean()
    c, s = np.cos(rot), np.sin(rot)
    xr, yr = cx + scale * (c * (x - cx) - s * (y - cy)), cy + scale * (s * (x - cx) + c * (y - cy))
    n = len(t)
    drift = rng.normal(0, 1, n).cumsum() / np.sqrt(n)
    return {
        "t": np.round(t * 1000.0),
        "x": np.round(xr),
        "y": np.round(yr),
        "pen_down": np.concatenate(downs),
        "pressure": np.round(np.concatenate(ps)),
        "azimuth": np.round(azimuth + 40 * drift),
        "altitude": np.round(np.clip(altitude + 15 * drift, 300, 900)),
    }


def genuine(w: Writer, rng: np.random.Generator, session_rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """A genuine signature of ``w``; ``session_rng`` adds the session's own drift."""
    slow = float(np.exp(rng.normal(0, 0.06)))
    if session_rng is not None:
        slow *= float(np.exp(session_rng.normal(0, 0.08)))
    return render(w, rng, amp=0.05, ang=0.05, timing=0.06, slow=slow, pause_p=0.0, tremor=0.0,
                  pressure=w.pressure * float(np.exp(rng.normal(0, 0.05))), azimuth=w.azimuth, altitude=w.altitude)


def skilled(w: Writer, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A skilled forgery of ``w``: the shape, imitated slowly and unevenly."""
    return render(w, rng, amp=0.1, ang=0.12, timing=0.12, slow=float(rng.uniform(1.0, 1.5)), pause_p=0.05,
                  tremor=float(rng.uniform(50, 200)), pressure=float(rng.uniform(300, 900)),
                  azimuth=float(rng.uniform(600, 3000)), altitude=float(rng.uniform(450, 800)))


def _signature(cols: dict[str, np.ndarray], writer: str, label: str, session: int | None) -> Signature:
    return Signature(**cols, writer=writer, label=label, session=session)


def generate(writer_index: int, n_genuine: int, n_skilled: int, seed: int) -> list[Signature]:
    """All signatures of synthetic writer ``writer_index``: genuines (two sessions), then forgeries."""
    name = f"synth{writer_index:04d}"
    w = make_writer(np.random.default_rng([seed, writer_index]))
    half = (n_genuine + 1) // 2
    sess = [np.random.default_rng([seed, writer_index, _SESSION, s]) for s in (1, 2)]
    out = []
    for k in range(n_genuine):
        s = 1 if k < half else 2
        rng = np.random.default_rng([seed, writer_index, _GENUINE, k])
        drift = np.random.default_rng(sess[s - 1].integers(2**32)) if s == 2 else None
        out.append(_signature(genuine(w, rng, drift), name, "genuine", s))
    for k in range(n_skilled):
        rng = np.random.default_rng([seed, writer_index, _SKILLED, k])
        out.append(_signature(skilled(w, rng), name, "skilled", None))
    return out


def synthesize(out: str | os.PathLike, n_writers: int, n_genuine: int, n_skilled: int, seed: int) -> Path:
    """Write a corpus of CSV files and a ``manifest.csv`` into ``out``; returns the manifest path.

    The manifest is written last (atomically), so a folder without one is an
    interrupted run, never a half-listed corpus.
    """
    if n_writers < 1 or n_genuine < 1 or n_skilled < 0:
        raise ValueError("need at least one writer and one genuine signature per writer (and skilled >= 0)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for wi in range(1, n_writers + 1):
        sigs = generate(wi, n_genuine, n_skilled, seed)
        wdir = out / sigs[0].writer
        wdir.mkdir(exist_ok=True)
        counts = {"genuine": 0, "skilled": 0}
        for sig in sigs:
            counts[sig.label] += 1
            rel = f"{sig.writer}/{sig.label[0]}{counts[sig.label]:02d}.csv"
            write_csv(sig, out / rel)
            rows.append({"path": rel, "writer": sig.writer, "label": sig.label, "session": sig.session})
        logger.info("synthetic writer %d/%d done", wi, n_writers)
    return write_manifest(rows, out / "manifest.csv")
