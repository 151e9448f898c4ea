"""The `Signature` record: one pen trajectory as captured by a tablet.

Arrays are 1-D and of equal length N (one entry per sampled point):

- ``t``: time in milliseconds, strictly increasing once a reader has built it;
- ``x``, ``y``: pen position in device units (any unit; features normalise it);
- ``pen_down``: bool, True where the pen touches the surface;
- ``pressure``, ``azimuth``, ``altitude``: optional, device units, or None.

Metadata: ``writer`` (who the signature claims to be), ``label``
(``"genuine"`` or ``"skilled"``), ``session`` and ``source`` (the file it came
from). Readers live in :mod:`tdnn_siamese.formats`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABELS = ("genuine", "skilled")
OPTIONAL_CHANNELS = ("pressure", "azimuth", "altitude")


@dataclass(frozen=True, eq=False)
class Signature:
    """One online signature. Built by readers; validated on construction.

    Construction checks shapes and types only; the content checks a user file
    needs (finite values, enough points, a pen-down point) happen in
    :func:`tdnn_siamese.formats.build_signature`, which can name the file.
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    pen_down: np.ndarray
    pressure: np.ndarray | None = None
    azimuth: np.ndarray | None = None
    altitude: np.ndarray | None = None
    writer: str | None = None
    label: str | None = None
    session: int | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        n = len(self.t)
        for name in ("t", "x", "y", "pen_down", *OPTIONAL_CHANNELS):
            arr = getattr(self, name)
            if arr is None:
                continue
            arr = np.asarray(arr, dtype=bool if name == "pen_down" else np.float64)
            if arr.ndim != 1 or len(arr) != n:
                raise ValueError(f"Signature.{name} must be 1-D with {n} entries, got shape {arr.shape}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if self.label is not None and self.label not in LABELS:
            raise ValueError(f"Signature.label must be one of {LABELS}, got {self.label!r}")

    def __len__(self) -> int:
        return len(self.t)

    @property
    def duration_ms(self) -> float:
        """Time from the first to the last point, in ms."""
        return float(self.t[-1] - self.t[0])

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the optional channels this signature carries."""
        return tuple(c for c in OPTIONAL_CHANNELS if getattr(self, c) is not None)

    @property
    def n_strokes(self) -> int:
        """Number of pen-down segments."""
        d = self.pen_down.astype(np.int8)
        return int(d[0] + np.count_nonzero(np.diff(d) == 1))
