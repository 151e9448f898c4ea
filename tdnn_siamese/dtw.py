"""The DTW baseline: multivariate dynamic time warping against a writer's references.

The classic online-signature verifier (e.g. Kholmatov & Yanikoglu 2005;
Fierrez et al. 2007) that a Siamese TDNN has to beat: each signature is a
variable-length sequence of time functions (by default the ``kinematic``
set: x and y velocity and acceleration, and pressure, at 100 Hz, each
z-normalised per signature); a query is compared with each reference by
DTW with a Sakoe-Chiba band; the score is

    score = - mean_k D(query, ref_k) / mean_{i != j} D(ref_i, ref_j)

higher = more genuine, where D is the DTW cost (the sum of Euclidean
distances between aligned steps, from the C implementation of
``dtaidistance``) divided by the two lengths' sum. Dividing by the spread
among the writer's own references is the writer normalisation that makes
one global threshold work across writers. With one reference there is no
spread and the raw distance is used.

It has the verifier's methods (:class:`tdnn_siamese.verifier.Method`):
``enroll``, ``score``, ``score_many``, ``verify``; there is no trained model,
so ``verify`` needs an explicit threshold.

>>> import numpy as np
>>> a = np.sin(np.linspace(0, 6, 80))[:, None] * [1.0, 0.5]
>>> dtw_distance(a, a), dtw_distance(a, a[::2]) > 0
(0.0, True)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import ConfigError, StrictConfig
from .features import FEATURE_SETS, FeatureConfig, extract, extract_many
from .signature import Signature
from .verifier import Method, VerifierError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DTWConfig(StrictConfig):
    """Settings of the DTW baseline.

    feature_set : a name in ``features.FEATURE_SETS`` (default ``kinematic``).
    rate_hz : resampling rate of the variable-length sequences.
    smooth_sigma : Gaussian smoothing, in steps, before derivatives.
    window : Sakoe-Chiba band as a fraction of the longer sequence (widened to
        the length difference so that a path always exists); 0 = no band.
    aggregate : ``mean`` or ``min`` distance over the references.
    """

    feature_set: str = "kinematic"
    rate_hz: float = 100.0
    smooth_sigma: float = 1.0
    window: float = 0.1
    aggregate: str = "mean"

    def validate(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError(f"unknown feature_set {self.feature_set!r}; known: {', '.join(FEATURE_SETS)}")
        if not 0.0 <= self.window <= 1.0:
            raise ConfigError(f"window is a fraction between 0 and 1, got {self.window}")
        if self.aggregate not in ("mean", "min"):
            raise ConfigError(f"aggregate is 'mean' or 'min', got {self.aggregate!r}")

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(feature_set=self.feature_set, n_steps=None, rate_hz=self.rate_hz, smooth_sigma=self.smooth_sigma,
                             znorm=True)


def dtw_distance(a: np.ndarray, b: np.ndarray, window: float = 0.1) -> float:
    """Length-normalised multivariate DTW cost of (Ta, F) and (Tb, F) with a Sakoe-Chiba band."""
    from dtaidistance import dtw_ndim  # the compiled C implementation

    longer = max(len(a), len(b))
    band = max(int(window * longer), abs(len(a) - len(b)) + 1) if window > 0 else None
    d = dtw_ndim.distance_fast(np.ascontiguousarray(a, np.float64), np.ascontiguousarray(b, np.float64), window=band,
                               inner_dist="euclidean")
    return float(d) / (len(a) + len(b))


@dataclass(frozen=True)
class DTWTemplate:
    """A writer's reference sequences and their spread (mean pairwise DTW cost)."""

    writer: str
    references: tuple[np.ndarray, ...]
    spread: float
    sources: tuple[str, ...] = ()

    @property
    def n_references(self) -> int:
        return len(self.references)


class DTWVerifier(Method):
    """Reference-normalised multivariate DTW with the verifier's methods."""

    def __init__(self, config: DTWConfig = DTWConfig()):
        self.config = config
        self.feature_config = config.features

    def features(self, signature: Signature) -> np.ndarray:
        """Per-signature z-normalised feature sequence (T, F), float64."""
        return extract(signature, self.feature_config).astype(np.float64)

    def features_many(self, signatures: Sequence[Signature]) -> list[np.ndarray]:
        return [f.astype(np.float64) for f in extract_many(signatures, self.feature_config)]

    def represent(self, feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(feats)

    def distances(self, queries: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> np.ndarray:
        """DTW costs (Q, K)."""
        return np.array([[dtw_distance(q, r, self.config.window) for r in refs] for q in queries]).reshape(len(queries), len(refs))

    def template(self, writer: str, reps: Sequence[np.ndarray], sources: Sequence[str] = ()) -> DTWTemplate:
        refs = tuple(reps)
        if not refs:
            raise VerifierError(f"writer {writer!r}: a template needs at least one reference")
        if len(refs) < 2:
            logger.warning("writer %s has one reference: DTW scores are not writer-normalised", writer)
            spread = 1.0
        else:
            pairs = [(i, j) for i in range(len(refs)) for j in range(i + 1, len(refs))]  # DTW is symmetric: each pair once
            spread = float(np.mean([dtw_distance(refs[i], refs[j], self.config.window) for i, j in pairs]))
        return DTWTemplate(writer, refs, max(spread, 1e-12), tuple(sources))

    def score_reps(self, template: DTWTemplate, reps: Sequence[np.ndarray]) -> np.ndarray:
        d = self.distances(reps, template.references)  # (Q, K)
        agg = d.mean(axis=1) if self.config.aggregate == "mean" else d.min(axis=1)
        return -agg / template.spread

    def threshold(self, far: float | None = None) -> float:
        raise VerifierError("the DTW baseline has no trained model and so no calibrated threshold: give one explicitly")
