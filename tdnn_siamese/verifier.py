"""Enrollment and verification: a writer's template, scores, decisions.

Usage::

    v = Verifier.from_checkpoint("run/model.pt")
    template = v.enroll("alice", [read_signature(p) for p in reference_files])
    decision = v.verify(template, read_signature("query.csv"))   # Decision(accepted, score, threshold)

A *template* is the writer's reference embeddings (K, D); every strategy's
statistics are computed from them. Every score means *higher = more genuine*
and the decision rule is always ``score >= threshold``.

Scoring strategies (``STRATEGIES``), over the similarity ``s = to_score(distance)``
(cosine similarity, or minus the Euclidean or DTW distance):

- ``mean``: mean similarity of the query to the K references.
- ``nearest``: similarity to the closest reference.
- ``centroid``: similarity to the mean reference embedding (for cosine, the
  mean of the unit-length references).
- ``gaussian``: Bromley et al. (1994, sec. 5): a diagonal Gaussian fitted to
  the reference embeddings (unit-length for cosine); the score is the
  query's log-likelihood per dimension. We differ in one respect: with 5
  references a per-dimension variance is noisy, so each is shrunk half-way
  towards the writer's mean variance (and floored), which keeps one
  near-constant dimension from dominating.
- ``wnorm``: writer normalisation, as strong DTW systems do: the query's mean
  distance to the references divided by the mean distance among the
  references themselves, negated (1 = as far as the references are from
  each other; 0 = identical).
- ``mean_offset``, ``nearest_offset``: ``mean`` or ``nearest`` plus a
  share (the model's ``offset_weight``, ``train.offset_weight``; default
  ``OFFSET_WEIGHT``) of the mean distance among the references
  (the *spread*, what ``wnorm`` divides by). A writer whose references
  vary a lot sees their genuine queries at larger distances too; the
  offset moves each writer's scores towards a common scale, so one
  threshold fits more writers (global EER). Within a writer every score
  moves by the same amount: the order of that writer's queries, and so
  the writer-specific EER, is that of ``mean`` / ``nearest``. The weight
  was chosen on validation writers (README, "Ablation"): dividing by the
  spread (``wnorm``) or adding all of it over-corrects.

``gaussian``, ``wnorm`` and the offsets need at least two references. ``centroid`` and
``gaussian`` average embeddings value by value, which ignores the alignment
of frame sequences, so a DTW model (``usable_strategies``) refuses them. A model file stores
validation scores for every strategy; its default strategy is the one with
the lowest validation EER, and a threshold for any strategy or false-accept
rate is calibrated on those stored scores (:meth:`Verifier.threshold`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .distances import Distance, to_score
from .features import FeatureConfig, check_lengths, extract_many
from .metrics import eer, threshold_at_far
from .model import TDNN, load_checkpoint, embed_all
from .signature import Signature

logger = logging.getLogger(__name__)

STRATEGIES = ("mean", "nearest", "centroid", "gaussian", "wnorm", "mean_offset", "nearest_offset")
MIN_REFERENCES = {"mean": 1, "nearest": 1, "centroid": 1, "gaussian": 2, "wnorm": 2, "mean_offset": 2, "nearest_offset": 2}
MATRIX_STRATEGIES = ("mean", "nearest", "wnorm", "mean_offset", "nearest_offset")  # read only the comparisons of queries
#   with references (and among them)
SPREAD_STRATEGIES = ("wnorm", "mean_offset", "nearest_offset")  # need the references' spread (reference_spread)
OFFSET_WEIGHT = 0.25  # the offsets add this share of the spread by default (chosen on validation writers: README, "Ablation")
POSITIONAL = ("centroid", "gaussian")  # average embeddings value by value: meaningless for frame sequences compared by DTW


def usable_strategies(distance: str) -> tuple[str, ...]:
    """The strategies that can score embeddings compared by ``distance`` (DTW: not the positional ones)."""
    return tuple(s for s in STRATEGIES if distance != "dtw" or s not in POSITIONAL)
_EPS = 1e-6


class VerifierError(ValueError):
    """A verification request that cannot be answered (too few references, another model's template...)."""


# --------------------------------------------------------------------------- scores


def template_scores(refs: torch.Tensor, queries: torch.Tensor, distance: Distance, strategy: str = "mean",
                    spread: torch.Tensor | None = None, offset_weight: float = OFFSET_WEIGHT) -> torch.Tensor:
    """Scores (Q,) of queries (Q, D) against one writer's references (K, D); higher = more genuine.
    ``offset_weight``: the share of the references' spread the offset strategies add.

    >>> refs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> template_scores(refs, torch.tensor([[1.0, 0.0]]), Distance("cosine"), "nearest").tolist()
    [1.0]
    >>> template_scores(refs, torch.tensor([[1.0, 0.0]]), Distance("cosine"), "mean").tolist()
    [0.5]
    """
    if strategy not in STRATEGIES:
        raise VerifierError(f"unknown scoring strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if strategy not in usable_strategies(distance.kind):
        raise VerifierError(f"scoring strategy {strategy!r} cannot score {distance.kind} comparisons; "
                            f"usable: {', '.join(usable_strategies(distance.kind))}")
    k = refs.shape[0]
    if k < MIN_REFERENCES[strategy]:
        hint = (f"; with one reference, score with {strategy.removesuffix('_offset')!r} (the same order of a writer's queries)"
                if strategy.endswith("_offset") else "")
        raise VerifierError(f"scoring strategy {strategy!r} needs at least {MIN_REFERENCES[strategy]} references; "
                            f"the template has {k}{hint}")
    if strategy in MATRIX_STRATEGIES:
        if strategy in SPREAD_STRATEGIES and spread is None:
            spread = reference_spread(refs, distance)
        return matrix_scores(distance.matrix(queries, refs), spread if strategy in SPREAD_STRATEGIES else None, distance, strategy,
                             offset_weight)
    if strategy == "centroid":
        c = (F.normalize(refs, dim=-1) if distance.kind == "cosine" else refs).mean(dim=0, keepdim=True)  # (1, D)
        return to_score(distance.matrix(queries, c), distance)[:, 0]
    if strategy == "gaussian":
        r, q = (F.normalize(refs, dim=-1), F.normalize(queries, dim=-1)) if distance.kind == "cosine" else (refs, queries)
        mu, var = r.mean(dim=0), r.var(dim=0, unbiased=True)  # (D,), (D,)
        var = 0.5 * var + 0.5 * var.mean() + _EPS
    return -0.5 * (((q - mu) ** 2) / var + torch.log(2 * torch.pi * var)).mean(dim=1)


def matrix_scores(cross: torch.Tensor, spread: torch.Tensor | None, distance: Distance, strategy: str,
                  offset_weight: float = OFFSET_WEIGHT) -> torch.Tensor:
    """Scores (Q,) of the strategies that read only comparisons (``MATRIX_STRATEGIES``).

    ``cross``: native values (Q, K) of queries against references;
    ``spread``: the references' :func:`reference_spread` (``SPREAD_STRATEGIES`` only);
    ``offset_weight``: the share of the spread ``mean_offset`` and ``nearest_offset`` add.
    """
    if strategy in ("mean", "nearest"):
        s = to_score(cross, distance)  # (Q, K)
        return s.mean(dim=1) if strategy == "mean" else s.max(dim=1).values
    if strategy not in SPREAD_STRATEGIES or spread is None:
        raise VerifierError(f"strategy {strategy!r} is not scored from comparisons alone")
    if strategy != "wnorm":  # mean_offset, nearest_offset: a per-writer shift by a share of the spread
        return matrix_scores(cross, None, distance, strategy.removesuffix("_offset")) + offset_weight * spread
    # wnorm: distances (>= 0, smaller = closer) relative to the spread among the references
    return -distance.as_rho(cross).mean(dim=1) / spread.clamp_min(_EPS)


def distinct_pairs(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i, j), i < j, of the K (K - 1) / 2 distinct pairs of K items (every distance here is symmetric)."""
    i, j = torch.triu_indices(k, k, offset=1)
    return i, j


def spread_of(raw_pairs: torch.Tensor, distance: Distance) -> torch.Tensor:
    """The mean ``rho`` of the native values of the references' distinct pairs (the order of :func:`distinct_pairs`)."""
    return distance.as_rho(raw_pairs).mean()


def reference_spread(refs: torch.Tensor, distance: Distance) -> torch.Tensor:
    """How far apart K >= 2 reference embeddings (K, D) lie: their mean pairwise ``rho`` (what ``wnorm`` divides by),
    over the K (K - 1) / 2 distinct pairs only (5 references: 10 comparisons, a DTW each, not 25)."""
    i, j = distinct_pairs(refs.shape[0])
    return spread_of(distance.raw(refs[i], refs[j]), distance)


# --------------------------------------------------------------------------- templates and decisions


@dataclass(frozen=True)
class Template:
    """A writer's enrolled references: embeddings (K, D) float32 and where they came from.

    ``spread``: the references' :func:`reference_spread` in the model's
    distance, when the template was made for a strategy that reads it
    (``SPREAD_STRATEGIES``): computed once at enrollment, not at every query.
    """

    writer: str
    embeddings: np.ndarray
    sources: tuple[str, ...]
    model_fingerprint: str
    spread: float | None = None

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or len(self.embeddings) == 0:
            raise VerifierError(f"writer {self.writer!r}: a template needs at least one reference embedding")

    @property
    def n_references(self) -> int:
        return len(self.embeddings)


@dataclass(frozen=True)
class Decision:
    """The answer for one query: accepted iff ``score >= threshold``."""

    accepted: bool
    score: float
    threshold: float


# FeatureConfig fields added after stores existed, with the value every earlier model had: hashed only when a
# model differs from it, so an existing model keeps its fingerprint (and its template stores) across versions.
_LATER_FEATURE_FIELDS = {"znorm": False}


def model_fingerprint(encoder: TDNN, feature_config: FeatureConfig, distance: str) -> str:
    """SHA-256 of what makes embeddings comparable: architecture, weights, features, distance."""
    h = hashlib.sha256()
    h.update(repr(sorted(encoder.cfg.to_dict().items())).encode())
    features = {k: v for k, v in feature_config.to_dict().items() if not (k in _LATER_FEATURE_FIELDS and v == _LATER_FEATURE_FIELDS[k])}
    h.update(repr(sorted(features.items())).encode())
    h.update(distance.encode())
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Method:
    """What every verification method shares (the TDNN :class:`Verifier`, the DTW baseline).

    A method turns a signature into features, features into *representations*
    (embeddings for the TDNN, the feature sequences themselves for DTW),
    references into a template, and a template plus representations into
    scores. Subclasses define ``features``, ``represent``, ``template``,
    ``score_reps`` and ``threshold``; enrolling and verifying follow.
    """

    def features(self, signature: Signature):
        raise NotImplementedError

    def features_many(self, signatures: Sequence[Signature]) -> list:
        """:meth:`features` of each signature (methods override this with a batched version)."""
        return [self.features(s) for s in signatures]

    def represent(self, feats: Sequence):
        raise NotImplementedError

    def template(self, writer: str, reps, sources: Sequence[str] = ()):
        raise NotImplementedError

    def score_reps(self, template, reps) -> np.ndarray:
        raise NotImplementedError

    def threshold(self, far: float | None = None) -> float:
        raise NotImplementedError

    def enroll(self, writer: str, signatures: Sequence[Signature]):
        """A template from K >= 1 reference signatures."""
        if not signatures:
            raise VerifierError(f"writer {writer!r}: no reference signatures to enroll")
        return self.template(writer, self.represent(self.features_many(signatures)), tuple(s.source or "" for s in signatures))

    def score_many(self, template, signatures: Sequence[Signature]) -> np.ndarray:
        """Scores (Q,) of Q query signatures (higher = more genuine)."""
        return self.score_reps(template, self.represent(self.features_many(signatures)))

    def score(self, template, signature: Signature) -> float:
        """The score of one query (higher = more genuine)."""
        return float(self.score_many(template, [signature])[0])

    def verify_many(self, template, signatures: Sequence[Signature], threshold: float | None = None) -> list[Decision]:
        """Decisions for many queries; ``threshold`` defaults to the calibrated EER threshold."""
        t = self.threshold() if threshold is None else float(threshold)
        return [Decision(bool(s >= t), float(s), t) for s in self.score_many(template, signatures)]

    def verify(self, template, signature: Signature, threshold: float | None = None) -> Decision:
        """Genuine or forgery for one query: ``Decision(accepted, score, threshold)``."""
        return self.verify_many(template, [signature], threshold)[0]


class Verifier(Method):
    """A trained encoder plus its scoring rule and calibrated thresholds.

    Parameters
    ----------
    encoder, feature_config, distance
        The model (as in a checkpoint).
    strategy
        Scoring strategy (``STRATEGIES``).
    calibration
        ``{strategy: {"genuine": [...], "skilled": [...], "random": [...]}}``,
        validation scores used to set thresholds.
    offset_weight
        The share of the references' spread the offset strategies add: the
        one the calibration scores were computed with (stored in the model).
    """

    def __init__(self, encoder: TDNN, feature_config: FeatureConfig, distance: str, strategy: str,
                 calibration: dict[str, dict[str, list[float]]], source: str = "", provenance: dict | None = None,
                 offset_weight: float = OFFSET_WEIGHT):
        if strategy not in STRATEGIES:
            raise VerifierError(f"unknown scoring strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
        if strategy not in usable_strategies(distance):
            raise VerifierError(f"scoring strategy {strategy!r} cannot score a model compared by {distance} distance; "
                                f"usable: {', '.join(usable_strategies(distance))}")
        self.encoder = encoder.eval()
        self.feature_config = feature_config
        self.distance = Distance.for_encoder(distance, encoder.cfg.frame_dim, encoder.cfg.members)
        self.strategy = strategy
        if not (np.isfinite(offset_weight) and offset_weight >= 0):
            raise VerifierError(f"offset_weight must be a finite number >= 0, got {offset_weight}")
        self.calibration = calibration
        self.offset_weight = float(offset_weight)
        self.source = source
        self.provenance = provenance or {}
        self.fingerprint = model_fingerprint(encoder, feature_config, distance)

    @classmethod
    def from_checkpoint(cls, path: str | Path, strategy: str | None = None) -> "Verifier":
        """Load a model file; ``strategy`` defaults to the one the model chose on validation."""
        ck = load_checkpoint(path)
        return cls(ck.encoder, ck.feature_config, ck.distance, strategy or ck.scoring, ck.calibration, source=str(path),
                   provenance=ck.provenance, offset_weight=ck.offset_weight)

    # ---- thresholds

    def threshold(self, far: float | None = None) -> float:
        """The calibrated threshold of this strategy: at the validation EER, or at a false-accept rate.

        Calibration impostors are the validation skilled forgeries when there
        are any, else the random ones.
        """
        cal = self.calibration.get(self.strategy)
        if not cal or not cal.get("genuine"):
            older = (" (a model trained before this strategy existed holds none: retrain it to calibrate the strategy)"
                     if self.calibration and self.strategy not in self.calibration else "")
            raise VerifierError(f"{self.source or 'the model'} holds no validation scores for strategy {self.strategy!r}{older}; "
                                "give an explicit threshold")
        impostor = cal.get("skilled") or cal.get("random")
        if not impostor:
            raise VerifierError(f"{self.source or 'the model'} holds no impostor validation scores; give an explicit threshold")
        if far is None:
            return eer(cal["genuine"], impostor)[1]
        if not 0.0 <= far <= 1.0:
            raise VerifierError(f"a false-accept rate is between 0 and 1, got {far}")
        if far and far < 1.0 / len(impostor):
            logger.warning("FAR %.4g is finer than the %d validation impostor scores resolve (1/%d)", far, len(impostor), len(impostor))
        return threshold_at_far(impostor, far)

    def log_odds(self, scores: np.ndarray | Sequence[float]) -> np.ndarray:
        """Scores of this strategy mapped to calibrated log-odds of "genuine" (:mod:`tdnn_siamese.calibration`).

        Fitted on the stored validation scores (skilled forgeries as impostors
        when there are any, else random ones); increasing, so decisions at a
        correspondingly mapped threshold are the same.
        """
        a, b = self.log_odds_map()
        return a * np.asarray(scores, np.float64) + b

    def log_odds_map(self) -> tuple[float, float]:
        """``(a, b)`` of :meth:`log_odds` (``a > 0``), fitted once; VerifierError when the model cannot be calibrated."""
        from .calibration import fit_logistic

        cal = self.calibration.get(self.strategy) or {}
        impostor = cal.get("skilled") or cal.get("random")
        if not cal.get("genuine") or not impostor:
            raise VerifierError(f"{self.source or 'the model'} holds no validation scores for strategy {self.strategy!r} to calibrate with")
        a, b = fit_logistic(cal["genuine"], impostor)
        if not a > 0:
            raise VerifierError(f"{self.source or 'the model'}: its validation scores rank impostors above genuine signatures; "
                                "they cannot calibrate it")
        return a, b

    # ---- embeddings

    def features(self, signature: Signature) -> torch.Tensor:
        """The feature sequence (T, F) of one signature (raises FeatureError when it has none)."""
        return self.features_many([signature])[0]

    def features_many(self, signatures: Sequence[Signature]) -> list[torch.Tensor]:
        """Feature sequences of many signatures, computed together (:func:`tdnn_siamese.features.extract_many`).

        Raises FeatureError for a sequence shorter than the encoder needs."""
        feats = extract_many(signatures, self.feature_config)
        check_lengths(feats, signatures, self.encoder.cfg.min_length)
        return [torch.from_numpy(f) for f in feats]

    def represent(self, feats: Sequence[torch.Tensor]) -> np.ndarray:
        """Embeddings (N, D) float32 of N feature sequences, batched."""
        if not len(feats):
            return np.empty((0, self.encoder.cfg.output_dim), np.float32)
        return embed_all(self.encoder, list(feats)).numpy().astype(np.float32)

    def embed(self, signatures: Sequence[Signature]) -> np.ndarray:
        """Embeddings (N, D) float32 of N signatures."""
        return self.represent(self.features_many(signatures))

    # ---- templates and scores

    def template(self, writer: str, reps: np.ndarray, sources: Sequence[str] = ()) -> Template:
        """A template from reference embeddings (K, D) made by this model (with their spread when the
        model's strategy reads it)."""
        reps = np.asarray(reps, np.float32)
        spread = self.spread(reps) if self.strategy in SPREAD_STRATEGIES else None
        return Template(writer, reps, tuple(sources), self.fingerprint, spread)

    def spread(self, reps: np.ndarray) -> float | None:
        """How far apart reference embeddings (K, D) lie in this model's distance: their mean pairwise ``rho``
        (what ``wnorm`` divides by); None for a single reference."""
        if len(reps) < 2:
            return None
        with torch.no_grad():
            return float(reference_spread(torch.as_tensor(reps, dtype=torch.float32), self.distance))

    def check(self, template: Template) -> None:
        """Refuse a template made by another model."""
        if template.model_fingerprint != self.fingerprint:
            raise VerifierError(f"writer {template.writer!r} was enrolled with another model (fingerprint "
                                f"{template.model_fingerprint[:12]}, this model {self.fingerprint[:12]}); enroll again with this model")

    def score_reps(self, template: Template, reps: np.ndarray) -> np.ndarray:
        """Scores (Q,) of query embeddings (Q, D) against a template."""
        self.check(template)
        with torch.no_grad():
            spread = None if template.spread is None else torch.tensor(template.spread, dtype=torch.float32)
            s = template_scores(torch.from_numpy(template.embeddings), torch.as_tensor(reps, dtype=torch.float32),
                                self.distance, self.strategy, spread, self.offset_weight)
        return s.numpy().astype(np.float64)
