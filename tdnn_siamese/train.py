"""Training a Siamese TDNN on pairs or episodes: one visible loop, checkpoints, resume.

Run: ``tdnn-siamese train --data DATASET --out RUN_DIR`` (see ``--help``).

The training writers' corpus is split (seeded, writer-disjoint) into writers
to learn from and validation writers. Each epoch draws fresh pairs
(:mod:`tdnn_siamese.pairs`) and takes Adam steps on a contrastive loss
(:mod:`tdnn_siamese.losses`), or, with ``loss = "template"``, draws
episodes (a writer's references and queries, :mod:`tdnn_siamese.episodes`)
and ranks their template scores; then it scores the validation writers with
the S_k protocol and records their EER. ``init`` starts from the weights of
a model file instead of random ones; ``"synthetic"`` names the model
pre-trained on 600 synthetic writers that ships in ``data/pretrained/``
(:func:`resolve_init`), used when the run's architecture and features
are its own. Epoch 0 validates the initial weights, so
the table shows what training adds; it is a baseline, not a candidate
(``keep_initial``): on 6 validation writers the initial weights sometimes
beat the first trained epochs by chance, and patience counted from them
ended such runs at epoch 10 with untrained weights kept. With ``ema > 0`` (the default) the
validated and kept weights are an exponential moving average of the
trained ones, which smooths the epoch-to-epoch swings a small training set
causes. Validation scores every strategy of :mod:`tdnn_siamese.verifier`
and keeps the EER of the best one listed in ``val_strategies``; the epoch with the lowest validation EER
(skilled forgeries when there are any, else random ones) is kept, with
that strategy as the model's default; training stops after ``patience``
epochs without improvement. ``RUN_DIR`` gets:

- ``model.pt``: the best model so far, self-contained (see
  :func:`tdnn_siamese.model.save_checkpoint`), threshold at the validation EER;
- ``metrics.csv``: one row per epoch (loss, validation EERs, best strategy, seconds);
- ``config.json``: the resolved configuration;
- ``train_state.pt``: what ``--resume`` needs to continue after a crash.

All three files are replaced atomically at the end of each epoch, so a run
killed at any moment leaves readable files and resumes from its last
complete epoch, reproducing the uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import platform
import time
import tomllib
from functools import partial
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from . import __version__, datasets
from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from .config import ConfigError, StrictConfig
from .distances import KINDS as DISTANCES
from .distances import Distance
from .augment import VIRTUAL_MARK, VIRTUAL_WRITERS, augment, imitate, perturb_strokes, virtual_writer
from .episodes import EPISODE_POOLS, EpisodeSampler, template_ranking_loss
from .features import FeatureConfig, check_lengths, extract_many
from .losses import NAMES as LOSSES
from .losses import PairLoss
from .metrics import eer
from .model import PRESET_FEATURES, PRESET_STEPS, PRESET_ZNORM, TDNN, TDNNEnsemble, Checkpoint, CheckpointError, TDNNConfig, embed_all, embed_batch, load_checkpoint, pad_batch, save_checkpoint
from .pairs import BROMLEY_MIX, PairSampler
from .protocols import DRAW_POOLS, Protocol, fitting_k, sk_protocols
from .signature import Signature
from .verifier import MATRIX_STRATEGIES, MIN_REFERENCES, OFFSET_WEIGHT, SPREAD_STRATEGIES, STRATEGIES, matrix_scores, reference_spread, template_scores, usable_strategies

logger = logging.getLogger(__name__)

STATE_FORMAT = "tdnn-siamese-train-state"
SYNTHETIC_INIT = "synthetic"  # train.init's name for the shipped pre-trained model
PRETRAINED = Path(__file__).resolve().parents[1] / "data" / "pretrained" / "synthetic.pt"  # built by
#   scripts/pretrain_synthetic.py (600 synthetic writers, README "Synthetic signers"); it ships with the repository
METRIC_COLUMNS = ["epoch", "train_loss", "val_eer_skilled", "val_eer_random", "strategy", "seconds", "best"]


# TrainConfig's defaults suit the default encoder, whose "frames" are compared by DTW; an encoder that pools
# time away into one embedding gets these instead (the defaults before DTW over frames, chosen the same way).
POOLED_TRAIN_DEFAULTS: dict[str, Any] = {"distance": "cosine", "scoring": "gaussian", "rank_scale": 2.0, "epochs": 40,
                                         "val_strategies": ()}
# TrainConfig fields added after runs were saved, with the value every earlier run had (not the default now): a saved
# config.json without the key reads back with it, so resuming such a run, or mixing it into an experiment, under
# today's default is refused as the other setting it is.
LATER_TRAIN_FIELDS: dict[str, Any] = {"val_draws": 1, "episode_genuine": 5, "episode_skilled": 5, "episode_random": 2,
                                      "val_draw_pool": "all", "val_strategies": (), "dropout": 0.0,
                                      "keep_initial": True, "episode_pool": "all", "member": 0, "offset_weight": 0.25,
                                      "virtual_writers": (), "episode_imitations": 0,
                                      "learn_writers": 0}


@dataclass(frozen=True)
class TrainConfig(StrictConfig):
    """Optimisation and validation settings (the ``[train]`` section)."""

    epochs: int = 34  # frames at 100 Hz: 28-30 s an epoch on 2 cores, a 30-writer fold in about 17 min (pooled encoders: 40)
    pairs_per_epoch: int = 4096
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    loss: str = "template"  # "template": episodes scored like verification (tdnn_siamese.episodes); or a pair loss of tdnn_siamese.losses
    margin: float = 0.1
    scoring: str = "mean"  # loss "template": the verifier strategy its episodes are scored with
    rank_scale: float = 10.0  # loss "template": slope of the softplus ranking surrogate
    episode_writers: int = 8  # loss "template": episodes (writers) per optimisation step
    episode_genuine: int = 5  # loss "template": at most this many genuine queries per episode (after the val_k references)
    episode_skilled: int = 5  # loss "template": at most this many of the writer's skilled forgeries per episode
    episode_random: int = 2  # loss "template": genuine signatures of this many other writers per episode (random forgeries)
    episode_imitations: int = 0  # loss "template": this many imitations of the writer's genuine signatures (synthetic
    #   skilled forgeries, augment.imitate) as further impostors per episode
    episode_pool: str = "all"  # loss "template": an episode's references from any genuine ("all") or from one session
    #   of the writer, queries from the rest ("session": as the protocols enroll; writers without sessions as "all")
    global_weight: float = 0.0  # loss "template": weight of the ranking across the step's writers (global EER); 0: within writers only
    distance: str = "dtw"  # "dtw" for the "frames" pooling; with any other pooling RunConfig.from_sections defaults to "cosine"
    mix: tuple[float, ...] = BROMLEY_MIX
    val_fraction: float = 0.2
    learn_writers: int = 0  # > 0: learn from only this many of the training writers (a seeded choice; the validation
    #   writers stay the same), for learning curves; 0: all of them
    val_k: int = 5
    val_draws: int = 10  # > 1: validation repeated with that many seeded random draws of the references, EERs averaged
    val_draw_pool: str = "sessions"  # where the draws come from: "sessions" = the sessions of the first val_k (as the
    #   protocol's references), "all" = every genuine signature (runs before commit e6693d3)
    val_strategies: tuple[str, ...] = ("mean_offset", "nearest_offset")  # the scoring strategies validation chooses
    #   among (its choice is the model's default); (): every strategy the distance can use (runs before this setting)
    virtual_writers: tuple[str, ...] = ()  # transformations (augment.VIRTUAL_WRITERS: mirror, flip, reverse) each of which
    #   adds a virtual writer per training writer, made of all its signatures so transformed (never validation writers)
    offset_weight: float = OFFSET_WEIGHT  # the share of the references' spread that mean_offset and nearest_offset add
    #   (verifier), in validation, in episodes scored by them and in the model file (which scores with it ever after)
    patience: int = 10
    ema: float = 0.995  # > 0: validate and keep an exponential moving average of the weights (decay per step)
    dropout: float = 0.0  # share of the encoder's hidden activations zeroed at random in training (not stored in models)
    keep_initial: bool = False  # may epoch 0 (the initial weights, validated as a baseline) be the kept model? False: the
    #   kept model is a trained one and patience counts from epoch 1 (runs before this setting: True)
    augment: float = 1.0  # > 0: strength of random perturbations of each training signature (tdnn_siamese.augment); 0: off
    augment_strokes: float = 0.0  # > 0: strength of each pen-down stroke's own perturbation (augment.perturb_strokes), after
    #   the whole signature's; 0: off
    init: str = ""  # "": random initial weights; "synthetic": the shipped model pre-trained on synthetic writers
    #   (PRETRAINED), when it fits the architecture and features, else random weights; a path: that model.pt (it must fit)
    seed: int = 0
    member: int = 0  # > 0: another member for the same split: the writers' split and validation draws from seed, the
    #   initial weights, episodes, augmentation and dropout from (seed, member); 0: everything from seed

    @property
    def stream(self) -> list[int]:
        """What seeds training's randomness (initial weights, episodes, augmentation, dropout): ``[seed]``, or
        ``[seed, member]`` for another member of the same split and validation."""
        return [self.seed] if self.member == 0 else [self.seed, self.member]

    @property
    def init_seed(self) -> int:
        """The torch seed of the initial weights: ``seed`` itself for member 0."""
        return self.seed if self.member == 0 else int(np.random.SeedSequence(self.stream).generate_state(1)[0])

    def validate(self) -> None:
        if self.loss not in LOSSES + ("template",):
            raise ConfigError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES + ('template',))}")
        if self.scoring not in STRATEGIES:
            raise ConfigError(f"unknown scoring strategy {self.scoring!r}; known: {', '.join(STRATEGIES)}")
        if self.loss == "template" and MIN_REFERENCES[self.scoring] > self.val_k:
            raise ConfigError(f"scoring {self.scoring!r} needs {MIN_REFERENCES[self.scoring]} references but val_k is {self.val_k}")
        if not self.rank_scale > 0 or self.episode_writers < 1 or self.global_weight < 0:
            raise ConfigError("rank_scale and episode_writers must be positive, global_weight >= 0")
        if (self.episode_genuine < 1 or min(self.episode_skilled, self.episode_random, self.episode_imitations) < 0
                or not self.episode_skilled + self.episode_random + self.episode_imitations):
            raise ConfigError("an episode needs a genuine query (episode_genuine >= 1) and impostors "
                              "(episode_skilled + episode_random + episode_imitations >= 1, none negative)")
        if self.episode_imitations and self.loss != "template":
            raise ConfigError(f"episode_imitations is a setting of the template loss's episodes, not of loss {self.loss!r}")
        if self.episode_pool not in EPISODE_POOLS:
            raise ConfigError(f"episode_pool must be one of {', '.join(EPISODE_POOLS)}, got {self.episode_pool!r}")
        if self.distance not in DISTANCES:
            raise ConfigError(f"unknown distance {self.distance!r}; known: {', '.join(DISTANCES)}")
        if self.loss == "bromley" and self.distance != "cosine":
            raise ConfigError("loss 'bromley' needs distance 'cosine' (and so an encoder that pools time away, e.g. "
                              "--preset bromley or --set model.pooling=stats)")
        if min(self.epochs, self.pairs_per_epoch, self.batch_size, self.val_k, self.val_draws, self.patience) < 1:
            raise ConfigError("epochs, pairs_per_epoch, batch_size, val_k, val_draws and patience must be positive")
        if not 0 <= self.augment <= 3 or not 0 <= self.augment_strokes <= 3:
            raise ConfigError(f"augment and augment_strokes are strengths between 0 (off) and 3, got {self.augment} and {self.augment_strokes}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.learn_writers < 0:
            raise ConfigError(f"learn_writers must be 0 (all training writers) or a positive count, got {self.learn_writers}")
        if not 0 < self.val_fraction < 1 or not self.lr > 0 or self.weight_decay < 0 or not self.margin > 0:
            raise ConfigError("val_fraction must be in (0, 1); lr and margin positive; weight_decay >= 0")
        if len(self.mix) != 3 or min(self.mix) < 0 or abs(sum(self.mix) - 1) > 1e-6:
            raise ConfigError(f"mix must be three non-negative shares summing to 1, got {self.mix}")
        if self.val_draw_pool not in DRAW_POOLS:
            raise ConfigError(f"val_draw_pool must be one of {', '.join(DRAW_POOLS)}, got {self.val_draw_pool!r}")
        unknown = [s for s in self.val_strategies if s not in STRATEGIES]
        if unknown:
            raise ConfigError(f"val_strategies: unknown strategy {', '.join(map(repr, unknown))}; known: {', '.join(STRATEGIES)}")
        if len(set(self.val_strategies)) != len(self.val_strategies):
            raise ConfigError(f"val_strategies lists a strategy twice: {list(self.val_strategies)}")
        too_many = [s for s in self.val_strategies if MIN_REFERENCES[s] > self.val_k]
        if too_many:
            raise ConfigError(f"val_strategies {', '.join(too_many)} need {max(MIN_REFERENCES[s] for s in too_many)} references but "
                              f"val_k is {self.val_k}; set train.val_strategies to ones that fit (e.g. [\"mean\", \"nearest\"]; "
                              "[] = every usable one)")
        if self.member < 0:
            raise ConfigError(f"member must be >= 0, got {self.member}")
        unknown = [v for v in self.virtual_writers if v not in VIRTUAL_WRITERS]
        if unknown or len(set(self.virtual_writers)) != len(self.virtual_writers):
            raise ConfigError(f"virtual_writers lists each of {', '.join(VIRTUAL_WRITERS)} at most once, got {list(self.virtual_writers)}")
        if not (math.isfinite(self.offset_weight) and self.offset_weight >= 0):
            raise ConfigError(f"offset_weight must be a finite number >= 0, got {self.offset_weight}")
        if not isinstance(self.init, str):
            raise ConfigError(f"init is the path of a model file (or empty), got {self.init!r}")



@dataclass(frozen=True)
class RunConfig:
    """A whole training configuration: ``features``, ``model`` and ``train`` sections."""

    features: FeatureConfig
    model: TDNNConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"features": self.features.to_dict(), "model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Rebuild a resolved configuration (``to_dict`` output, e.g. a run's ``config.json``)."""
        if not isinstance(d, dict) or set(d) != {"features", "model", "train"}:
            raise ConfigError("a resolved config has exactly the sections features, model and train")
        if isinstance(d["train"], dict):  # a run saved before a setting existed ran with that setting's value of its time
            d = {**d, "train": {**LATER_TRAIN_FIELDS, **d["train"]}}
        cfg = cls(FeatureConfig.from_dict(d["features"]), TDNNConfig.from_dict(d["model"]), TrainConfig.from_dict(d["train"]))
        cfg.check()
        return cfg

    @classmethod
    def read(cls, path: Path) -> "RunConfig":
        """A run's saved ``config.json``; a missing, damaged or unfit file is a `ConfigError` naming ``path``."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as e:  # JSONDecodeError and ConfigError are ValueErrors
            raise ConfigError(f"{path}: not a readable run configuration: {e}") from None

    def check(self) -> None:
        """Sections that fit together: the model's input width and, for fixed-length input, its minimum length."""
        if self.model.n_features != self.features.n_features:
            raise ConfigError(f"model.n_features is {self.model.n_features} but feature set {self.features.feature_set!r} has {self.features.n_features}")
        if (self.train.distance == "dtw") != (self.model.pooling == "frames"):
            raise ConfigError("train.distance 'dtw' and model.pooling 'frames' go together: DTW compares frame sequences, "
                              "and frames are compared by DTW; for cosine or euclidean pool time away (--set model.pooling=stats, which "
                              "gives 8 pooled stretches and a 128-d embedding unless set; the single-vector default of two "
                              "versions ago also had --set features.n_steps=200)")
        if self.train.distance == "dtw" and self.train.loss == "template" and self.train.scoring not in usable_strategies("dtw"):
            raise ConfigError(f"train.scoring {self.train.scoring!r} cannot score frame sequences; use one of "
                              f"{', '.join(usable_strategies('dtw'))}")
        unusable = [s for s in self.train.val_strategies if s not in usable_strategies(self.train.distance)]
        if unusable:
            raise ConfigError(f"train.val_strategies {', '.join(unusable)} cannot score with {self.train.distance} distance; "
                              f"usable: {', '.join(usable_strategies(self.train.distance))}")
        if self.features.n_steps is not None and self.features.n_steps < self.model.min_length:
            raise ConfigError(f"features.n_steps is {self.features.n_steps} but this encoder needs at least {self.model.min_length} steps "
                              "(fewer segments or more steps)")

    @classmethod
    def from_sections(cls, sections: dict[str, dict[str, Any]]) -> "RunConfig":
        """Build from (possibly partial) sections; missing values come from the preset and defaults."""
        unknown = set(sections) - {"features", "model", "train"}
        if unknown:
            raise ConfigError(f"unknown config section(s) {', '.join(sorted(unknown))}; known: features, model, train")
        model = dict(sections.get("model", {}))
        preset = model.pop("preset", "modern")
        if "n_features" in model:
            raise ConfigError("model.n_features follows from the feature set; do not set it")
        preset_features = FeatureConfig(feature_set=PRESET_FEATURES.get(preset, "bromley"), n_steps=PRESET_STEPS.get(preset, 200),
                                        znorm=PRESET_ZNORM.get(preset, False))
        features = FeatureConfig.from_dict({**preset_features.to_dict(), **sections.get("features", {})})
        model_cfg = TDNNConfig.from_preset(preset, features.n_features, **model)
        train_defaults = {} if model_cfg.pooling == "frames" else POOLED_TRAIN_DEFAULTS
        cfg = cls(features=features, model=model_cfg, train=TrainConfig.from_dict({**train_defaults, **sections.get("train", {})}))
        cfg.check()
        return cfg


def read_config_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Sections of a TOML or JSON config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file: {e}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: invalid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {e}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ConfigError(f"{path}: a config file holds sections [features], [model], [train] of key = value")
    return doc


def config_difference(saved: dict[str, dict[str, Any]] | None, now: dict[str, dict[str, Any]]) -> str | None:
    """The first setting where two resolved ``RunConfig.to_dict()`` differ, as ``section.key = A there, B now``
    (None when they agree; ``saved`` None = unreadable)."""
    if saved is None:
        return "its saved settings cannot be read"
    for sec in now:
        for key in sorted(set(now[sec]) | set(saved.get(sec, {}))):
            if saved.get(sec, {}).get(key) != now[sec].get(key):
                return f"{sec}.{key} = {saved.get(sec, {}).get(key)!r} there, {now[sec].get(key)!r} now"
    return None


def apply_sets(sections: dict[str, dict[str, Any]], sets: list[str]) -> dict[str, dict[str, Any]]:
    """Apply ``section.key=value`` overrides; values are JSON (``0.001``, ``[1, 2]``, ``null``) or plain strings."""
    out = {k: dict(v) for k, v in sections.items()}
    for item in sets:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=0.001")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


# --------------------------------------------------------------------------- data


@dataclass
class Prepared:
    """Features of every signature of the corpus, split into training and validation writers."""

    table: pd.DataFrame
    sigs: list[Signature]  # per table row
    seqs: list[torch.Tensor]  # (T_i, F) per table row
    lengths: np.ndarray  # T_i per table row
    fixed_length: bool  # every T_i equal (features resampled to n_steps)
    train_rows: np.ndarray  # with the virtual writers' rows (train.virtual_writers), appended after the real ones
    val_rows: np.ndarray
    fingerprint: str
    n_real: int = -1  # rows read from the corpus (the first ones); the rest are virtual writers'; -1: all

    @property
    def real_train_rows(self) -> np.ndarray:
        """The training rows of real writers (without virtual writers' copies)."""
        return self.train_rows if self.n_real < 0 else self.train_rows[self.train_rows < self.n_real]


def prepare(data: str | os.PathLike, cfg: RunConfig, progress: Callable[[str, int, int], None] | None = None) -> Prepared:
    """Load the corpus, split writers, extract features once."""
    table = datasets.load(data)
    names = datasets.writers(table)
    taken = [w for w in names if VIRTUAL_MARK in w] if cfg.train.virtual_writers else []
    if taken:  # before any signature is read
        raise ConfigError(f"{data}: writer name {taken[0]!r} holds {VIRTUAL_MARK!r}, which names virtual writers; "
                          "rename it or train without train.virtual_writers")
    if len(names) < 3:
        raise ConfigError(f"{data}: {len(names)} writer(s); training needs at least 3 (2 to learn from, 1 to validate)")
    n_val = min(len(names) - 2, max(2 if len(names) >= 6 else 1, round(cfg.train.val_fraction * len(names))))
    train_w, val_w = datasets.split_writers(names, n_val, seed=cfg.train.seed)
    train_w = _learning_writers(train_w, cfg.train.learn_writers, cfg.train.seed, data)
    sigs = []
    for i, row in enumerate(table.to_dict("records")):
        sigs.append(datasets.read_row(row))
        if progress:
            progress("read", i + 1, len(table))
    fingerprint, n_real = datasets.fingerprint(table), len(table)
    if cfg.train.virtual_writers:  # appended after the real rows, which keep their indices
        table, sigs, train_w = _with_virtual_writers(table, sigs, train_w, cfg.train.virtual_writers)
    feats = extract_many(sigs, cfg.features)
    check_lengths(feats, sigs, cfg.model.min_length)
    seqs = [torch.from_numpy(f) for f in feats]
    rows = lambda ws: np.flatnonzero(table["writer"].isin(ws).to_numpy())  # noqa: E731
    lengths = np.array([len(x) for x in seqs])
    return Prepared(table, sigs, seqs, lengths, cfg.features.n_steps is not None, rows(train_w), rows(val_w), fingerprint, n_real)


def _learning_writers(train_w: list[str], n: int, seed: int, data: str | os.PathLike) -> list[str]:
    """The ``n`` training writers a run learns from (``train.learn_writers``; 0: all), a seeded choice among ``train_w``."""
    if n == 0 or n == len(train_w):
        return train_w
    if n > len(train_w):
        raise ConfigError(f"{data}: train.learn_writers is {n} but the split leaves {len(train_w)} training writers")
    logger.info("learning from %d of the %d training writers (train.learn_writers)", n, len(train_w))
    return datasets.split_writers(train_w, len(train_w) - n, seed=seed)[0]


def _with_virtual_writers(table: pd.DataFrame, sigs: list[Signature], train_w: list[str],
                          kinds: tuple[str, ...]) -> tuple[pd.DataFrame, list[Signature], list[str]]:
    """The table and signatures with a virtual writer per training writer and transformation
    (:func:`tdnn_siamese.augment.virtual_writer`) appended, and the training writers with them."""
    base = np.flatnonzero(table["writer"].isin(train_w).to_numpy())
    parts, new_sigs, names = [table], list(sigs), list(train_w)
    for kind in kinds:
        part = table.iloc[base].copy()
        part["writer"] = part["writer"].astype(str) + f"{VIRTUAL_MARK}{kind}"
        parts.append(part)
        new_sigs += [virtual_writer(sigs[i], kind) for i in base]
        names += [f"{w}{VIRTUAL_MARK}{kind}" for w in train_w]
    return pd.concat(parts, ignore_index=True), new_sigs, names


def input_stats(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over all steps of ``seqs``."""
    allsteps = torch.cat(seqs, dim=0).double()  # (sum T, F)
    return allsteps.mean(0).float(), allsteps.std(0).float()


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Validation:
    """Validation of one set of weights: the best scoring strategy's EERs, its threshold, every strategy's scores."""

    eer_skilled: float  # NaN when there are no skilled forgeries
    eer_random: float
    threshold: float
    strategy: str
    scores: dict[str, dict[str, list[float]]]  # strategy -> kind -> scores
    separation: float  # d' between genuine and impostor scores: breaks ties between equal EERs

    @property
    def key(self) -> tuple[float, float, float]:
        """Model selection: skilled EER first (when there is one), then random EER, then larger separation."""
        return (self.eer_random if np.isnan(self.eer_skilled) else self.eer_skilled, self.eer_random, -self.separation)


def dprime(genuine: list[float], impostor: list[float]) -> float:
    """Separation of two score sets in pooled standard deviations, (mean_g - mean_i) / sqrt((var_g + var_i) / 2)."""
    g, i = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    return float((g.mean() - i.mean()) / max(np.sqrt((g.var() + i.var()) / 2), 1e-12))


def draw_scores(emb: torch.Tensor, protos: list[Protocol], dist: Distance, strategies: list[str],
                offset_weight: float = OFFSET_WEIGHT) -> list[dict[str, dict[str, list[float]]]]:
    """Scores of every trial of each protocol (one per reference draw, all of the same writers),
    ``[draw][strategy][kind]``, from the embeddings ``emb`` of the protocols' table rows. Every query-reference
    comparison is computed once per writer for all draws, for the strategies that read comparisons only.
    ``offset_weight``: the offset strategies' share of the spread (``TrainConfig.offset_weight``)."""
    scores = [{s: {kind: [] for kind in ("genuine", "skilled", "random")} for s in strategies} for _ in protos]
    for w in protos[0].references:
        trials = [p.trials[p.trials.writer == w] for p in protos]
        rows = sorted(set().union(*(t["query"] for t in trials)))
        cols = sorted(set().union(*(p.references[w] for p in protos)))
        cross_all = dist.matrix(emb[rows], emb[cols])
        at_row, at_col = {q: i for i, q in enumerate(rows)}, {r: i for i, r in enumerate(cols)}
        for p, t, sc in zip(protos, trials, scores):
            refs = p.references[w]
            cross = cross_all[[at_row[q] for q in t["query"]]][:, [at_col[r] for r in refs]]
            spread = reference_spread(emb[refs], dist) if set(strategies) & set(SPREAD_STRATEGIES) else None
            for strategy in strategies:
                v = (matrix_scores(cross, spread, dist, strategy, offset_weight) if strategy in MATRIX_STRATEGIES
                     else template_scores(emb[refs], emb[t["query"].tolist()], dist, strategy))
                for kind, x in zip(t["kind"], v.tolist()):
                    sc[strategy][kind].append(x)
    return scores


def validate(encoder: TDNN | TDNNEnsemble, prep: Prepared, cfg: RunConfig, warn: bool = True) -> Validation:
    """S_k protocol on the validation writers, scored with every strategy of :mod:`tdnn_siamese.verifier`.

    With ``val_draws = 1`` the references are each writer's first k genuine
    signatures; with R > 1 the protocol is repeated with R seeded random
    draws of them (as the evaluation's ``--draws``: among the sessions the
    first k come from, so that validation measures the reported task) and each strategy's EER
    is the mean over draws: with six validation writers the EER of one
    draw varied with a standard deviation of 1-2.5 points (README,
    "Ablation"), more than most settings or epochs differ by. Of the strategies in
    ``val_strategies`` (all usable ones when empty) the one with the lowest EER
    (skilled, then random; the earlier one in ``STRATEGIES`` on a tie) is
    the model's default (a choice among every usable strategy on six writers chose by chance
    too often: README, "Ablation", (oo)); its threshold is the EER threshold of its scores
    pooled over draws. Every usable strategy's scores, pooled over draws, are the model's
    calibration scores, so that any of them can be asked for at verification. ``warn``: log
    when the listed strategies need more references than the validation writers have, and the validation writers
    the protocol leaves out or leaves without a genuine query (training asks at its first epoch only).
    """
    val_table = prep.table.iloc[prep.val_rows].reset_index(drop=True)
    emb = embed_all(encoder, [prep.seqs[i] for i in prep.val_rows])
    k = fitting_k(val_table, cfg.train.val_k)
    protos = sk_protocols(val_table, k, cfg.train.val_draws, cfg.train.seed, cfg.train.val_draw_pool, warn=warn)
    dist = Distance.for_encoder(cfg.train.distance, cfg.model.frame_dim, cfg.model.members)
    usable = [s for s in usable_strategies(dist.kind) if MIN_REFERENCES[s] <= k]  # all scored: the model's calibration
    listed = cfg.train.val_strategies or usable
    candidates = [s for s in usable if s in listed]  # in STRATEGIES order: ties go to the earlier one
    if warn and set(listed) - set(candidates):  # the writers have too few genuine signatures for val_k references
        logger.warning("validation can take only %d reference(s) per writer (val_k is %d: the writers have too few "
                       "genuine signatures), too few for val_strategies %s; validation chooses among %s",
                       k, cfg.train.val_k, ", ".join(s for s in listed if s not in candidates), ", ".join(candidates or usable))
    candidates = candidates or usable
    kinds = ("genuine", "skilled", "random")
    scores = draw_scores(emb, protos, dist, usable, cfg.train.offset_weight)
    if not scores[0]["mean"]["genuine"]:
        raise ConfigError("validation writers have no genuine trials; they need more than val_k genuine signatures")
    pooled_all = {s: {kind: [v for d in scores for v in d[s][kind]] for kind in kinds} for s in usable}  # over draws
    best = None
    for strategy in candidates:
        v = strategy_validation([d[strategy] for d in scores], strategy, pooled_all)
        if best is None or v.key < best.key:
            best = v
    return best


def strategy_validation(per_draw: list[dict[str, list[float]]], strategy: str,
                        scores: dict[str, dict[str, list[float]]]) -> Validation:
    """One strategy's validation from its scores of each draw (``[draw][kind]``): the skilled and random EERs are
    means over draws, the threshold and the separation those of the scores pooled over draws; ``scores`` is kept
    as the calibration (every strategy's pooled scores)."""
    pooled = {kind: [v for d in per_draw for v in d[kind]] for kind in ("genuine", "skilled", "random")}
    impostor = "skilled" if pooled["skilled"] else "random" if pooled["random"] else None
    mean_eer = lambda kind: float(np.mean([eer(d["genuine"], d[kind])[0] for d in per_draw])) if pooled[kind] else float("nan")  # noqa: E731
    return Validation(mean_eer("skilled"), mean_eer("random"),
                      eer(pooled["genuine"], pooled[impostor])[1] if impostor else float("nan"), strategy, scores,
                      dprime(pooled["genuine"], pooled[impostor]) if impostor else 0.0)


# --------------------------------------------------------------------------- the loop


def _batches(pairs_n: int, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Pair batches of similar sequence length, in random order: sort by length within chunks of
    16 batches, cut, shuffle the batches. Keeps pairs random while cutting padding."""
    chunk = batch_size * 16
    out = []
    for s in range(0, pairs_n, chunk):
        idx = np.arange(s, min(s + chunk, pairs_n))
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        out += [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def _embed_pairs(encoder: TDNN, a: list[torch.Tensor], b: list[torch.Tensor], fixed_length: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides of a batch of pairs through the ONE encoder, in one call: (B, D), (B, D)."""
    seqs = a + b
    e = encoder(torch.stack(seqs), None) if fixed_length else encoder(*pad_batch(seqs))
    return e[: len(a)], e[len(a) :]


def _pair_sequences(prep: Prepared, rows: np.ndarray, cfg: RunConfig, rng: np.random.Generator,
                    imitations: np.ndarray | None = None) -> list[torch.Tensor]:
    """Feature sequences of these rows: the prepared ones, or of freshly perturbed signatures when augmenting;
    where ``imitations`` (a mask over ``rows``) is set, of an imitation of the row's signature (augmented too)."""
    mask = np.zeros(len(rows), bool) if imitations is None else np.asarray(imitations, bool)
    tc = cfg.train
    if not tc.augment and not tc.augment_strokes and not mask.any():
        return [prep.seqs[i] for i in rows]
    fc = cfg.features  # an imitation is slower: variable-length features must still fit max_steps
    longest = None if fc.n_steps is not None else (fc.max_steps - 1) * 1000.0 / fc.rate_hz
    sigs = [imitate(prep.sigs[i], rng, max_duration=longest) if m else prep.sigs[i] for i, m in zip(rows, mask)]
    if tc.augment or tc.augment_strokes:  # the stroke perturbation draws nothing when off: the whole's draws stay as they were
        sigs = [augment(sg, rng, tc.augment) for sg in sigs]
        if tc.augment_strokes:
            sigs = [perturb_strokes(sg, rng, tc.augment_strokes) for sg in sigs]
        return [torch.from_numpy(f) for f in extract_many(sigs, cfg.features)]
    seqs = [prep.seqs[i] for i in rows]  # only the imitations are new
    new = np.flatnonzero(mask)
    for j, f in zip(new, extract_many([sigs[j] for j in new], cfg.features)):
        seqs[j] = torch.from_numpy(f)
    return seqs


def _save_bytes(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def summarise_metrics(metrics: pd.DataFrame) -> str:
    """One line on a finished run from its ``metrics.csv``: the kept epoch and its validation EERs, or an ensemble's
    members' kept epochs, its validation skilled EER and strategy, and each member's (``train`` and the fold script)."""
    if "member" in metrics.columns:  # an ensemble: a row per member, then the ensemble's
        members, ens = metrics.iloc[:-1], metrics.iloc[-1]
        return (f"an ensemble of {len(members)}, members' kept epochs {', '.join(str(int(e)) for e in members['kept_epoch'])}: "
                f"validation EER skilled {100 * ens['val_eer_skilled']:.2f}% ({ens['strategy']}; members "
                f"{', '.join(f'{100 * x:.2f}%' for x in members['val_eer_skilled'])})")
    kept = metrics[metrics["best"]].iloc[-1]
    return (f"kept epoch {int(kept['epoch'])} of {int(metrics['epoch'].max())}: validation EER skilled "
            f"{100 * kept['val_eer_skilled']:.2f}%, random {100 * kept['val_eer_random']:.2f}% ({kept['strategy']})")


def file_sha256(path: str) -> str:
    """SHA-256 of a file (a run's init file, hashed when training starts and kept in its state)."""
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        return f"unreadable: {e.strerror or e}"


def initial_weights(init_sha256: str) -> str:
    """What a run started from, in words: the init file by its SHA-256, or random weights ("")."""
    return f"the file with SHA-256 {init_sha256[:12]}..." if init_sha256 else "random weights"


def provenance(prep: Prepared, cfg: RunConfig, data: str | os.PathLike, epochs_run: int, best_epoch: int,
               init_sha256: str = "") -> dict[str, Any]:
    """Where a model came from: data fingerprint, writers, seed, versions, time."""
    table = prep.table
    return {
        "data": str(data),
        "data_fingerprint": prep.fingerprint,
        "train_writers": sorted(table.iloc[prep.real_train_rows]["writer"].unique().tolist()),
        "virtual_writers": list(cfg.train.virtual_writers),  # each training writer's transformed copies, also trained on
        "val_writers": sorted(table.iloc[prep.val_rows]["writer"].unique().tolist()),
        "seed": cfg.train.seed,
        "init_sha256": init_sha256,  # of train.init's file when training started; "" without one
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "config": json.dumps(cfg.to_dict()),
        "package_version": __version__,
        "torch_version": str(torch.__version__),
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    cfg: RunConfig,
    *,
    resume: bool = False,
    progress: Callable[..., None] | None = None,
) -> Path:
    """Train, writing ``model.pt``, ``metrics.csv``, ``config.json`` and ``train_state.pt`` into ``out``.

    Returns the path of ``model.pt``. With ``resume=True`` continues from
    ``train_state.pt`` (the saved config must equal ``cfg``). With
    ``model.members > 1`` trains an ensemble instead (:mod:`tdnn_siamese.ensemble`).
    """
    if cfg.model.members > 1:
        from .ensemble import train_ensemble

        return train_ensemble(data, out, cfg, resume=resume, progress=progress)
    out = Path(out)
    state_path, model_path, config_path = out / "train_state.pt", out / "model.pt", out / "config.json"
    out.mkdir(parents=True, exist_ok=True)
    if not resume and (state_path.exists() or model_path.exists()):
        raise ConfigError(f"{out} already holds a run (model.pt or train_state.pt); pass --resume to continue it or choose another --out")
    resuming = resume and state_path.exists()
    # on resume the weights come from train_state.pt: no init file is needed; else it is found before the corpus is read
    init = "" if resuming else resolve_init(cfg)
    if not resuming:  # a resumed run's config.json is rewritten only once its saved settings are known to be these
        atomic_write_json(config_path, cfg.to_dict())

    prep = prepare(data, cfg, progress)
    tc = cfg.train
    sampler, loss_fn = objective(prep, cfg, data)

    init_sha256 = ""
    if init:
        encoder = initial_encoder(init, cfg)
        init_sha256 = file_sha256(init)
    else:
        encoder = _new_encoder(cfg.model, tc.init_seed)
        encoder.set_input_stats(*input_stats([prep.seqs[i] for i in prep.train_rows]))  # virtual writers too: trained on
    opt = torch.optim.Adam(encoder.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    averaged = _new_encoder(cfg.model, tc.init_seed) if tc.ema else None  # the weights validated and kept, when ema is on
    if averaged is not None:
        averaged.load_state_dict(encoder.state_dict())

    start, rows, best, bad = 0, [], None, 0
    if resuming:
        try:
            st = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a damaged file
            raise ConfigError(f"{state_path}: cannot read the training state ({type(e).__name__}); remove it to restart the run") from None
        if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
            raise ConfigError(f"{state_path}: not a training state file")
        try:  # compared as resolved configs, so a run saved before a setting was added (at its default) still resumes
            saved = RunConfig.from_dict(json.loads(st["config"])).to_dict()
        except (ConfigError, ValueError, TypeError):
            saved = None
        diff = config_difference(saved, cfg.to_dict())
        if diff is not None:
            raise ConfigError(f"{out}: the saved run has another configuration ({diff}); resume without changing settings")
        atomic_write_json(config_path, cfg.to_dict())
        init_sha256 = st.get("init_sha256", "")
        if st["fingerprint"] != prep.fingerprint:
            raise ConfigError(f"{out}: the run was trained on other data (fingerprint differs)")
        encoder.load_state_dict(st["model"])
        opt.load_state_dict(st["optim"])
        if averaged is not None:
            averaged.load_state_dict(st["averaged"])
        start, rows, best, bad = st["epoch"] + 1, st["rows"], st["best"], st["bad_epochs"]
        if st["done"]:
            logger.info("run in %s already finished", out)
            return model_path
        logger.info("resuming %s at epoch %d", out, start)

    for epoch in range(start, tc.epochs + 1):  # epoch 0 only validates the initial weights: the baseline
        t0 = time.perf_counter()
        mean_loss = _train_epoch(encoder, averaged, opt, loss_fn, sampler, prep, cfg, epoch, progress) if epoch else float("nan")
        kept = averaged if averaged is not None else encoder
        val = validate(kept, prep, cfg, warn=epoch == start)
        candidate = epoch > 0 or tc.keep_initial  # else epoch 0 is the baseline only: neither kept nor a bar for patience
        improved = candidate and (best is None or val.key < tuple(best["key"]))
        if improved:
            best = {"key": list(val.key), "epoch": epoch, "state": {k: v.clone() for k, v in kept.state_dict().items()},
                    "threshold": val.threshold, "strategy": val.strategy, "scores": val.scores}
            bad = 0
        elif candidate:
            bad += 1
        rows.append({"epoch": epoch, "train_loss": round(mean_loss, 6), "val_eer_skilled": round(val.eer_skilled, 6),
                     "val_eer_random": round(val.eer_random, 6), "strategy": val.strategy, "seconds": round(time.perf_counter() - t0, 2), "best": improved})
        done = bad >= tc.patience or epoch == tc.epochs
        _finish_epoch(out, encoder, averaged, opt, cfg, prep, data, epoch, rows, best, bad, done, improved, init_sha256)
        if progress:
            progress("epoch", rows[-1])
        if done:
            if bad >= tc.patience:
                logger.info("early stop after epoch %d: no improvement for %d epochs", epoch, bad)
            break
    return model_path


def objective(prep: Prepared, cfg: RunConfig, data: str | os.PathLike = "the corpus") -> tuple[PairSampler | EpisodeSampler, Callable[..., torch.Tensor]]:
    """What an epoch draws from the training writers and the loss it minimises: pairs and a pair loss, or episodes and the template loss."""
    tc = cfg.train
    train_table = prep.table.iloc[prep.train_rows].reset_index(drop=True)
    dist = Distance.for_encoder(tc.distance, cfg.model.frame_dim, cfg.model.members)
    try:
        if tc.loss == "template":
            return (EpisodeSampler(train_table, k=tc.val_k, min_refs=MIN_REFERENCES[tc.scoring], n_genuine_queries=tc.episode_genuine,
                                   n_skilled=tc.episode_skilled, n_random=tc.episode_random, pool=tc.episode_pool,
                                   n_imitations=tc.episode_imitations),
                    partial(template_ranking_loss, distance=dist, strategy=tc.scoring, scale=tc.rank_scale, global_weight=tc.global_weight,
                            offset_weight=tc.offset_weight))
        return PairSampler(train_table, tuple(tc.mix)), PairLoss(tc.loss, dist, margin=tc.margin)
    except ValueError as e:
        raise ConfigError(f"{data}: {e}") from None


def architecture_difference(model: dict[str, Any], features: dict[str, Any], cfg: RunConfig) -> tuple[str, Any, Any] | None:
    """The first architecture or feature setting (``"model.x"`` or ``"features.x"``, its value in ``model`` /
    ``features``, its value in ``cfg``) where a model differs from what ``cfg`` trains (for an ensemble: what each
    member trains, as an initial model starts every member); None if it fits."""
    for what, theirs, ours in (("model", model, cfg.model.member.to_dict()), ("features", features, cfg.features.to_dict())):
        diff = [k for k in ours if theirs.get(k) != ours[k]]
        if diff:
            return f"{what}.{diff[0]}", theirs.get(diff[0]), ours[diff[0]]
    return None


def _init_mismatch(ck: Checkpoint, cfg: RunConfig) -> str | None:
    """Where a model file differs from what ``cfg`` trains, in words, or None."""
    d = architecture_difference(ck.encoder.cfg.to_dict(), ck.feature_config.to_dict(), cfg)
    return None if d is None else f"{d[0]} = {d[1]!r} but this run uses {d[2]!r}"


def resolve_init(cfg: RunConfig) -> str:
    """The model file a run starts from (``train.init``): a path as given, ``""`` for random weights, and for
    ``"synthetic"`` the shipped pre-trained model (``PRETRAINED``) when its architecture and features are the ones
    ``cfg`` trains, else ``""`` (logged: other settings start from random weights)."""
    init = cfg.train.init
    if init != SYNTHETIC_INIT:
        return init
    if not PRETRAINED.is_file():
        raise ConfigError(f"train.init = {SYNTHETIC_INIT!r}: the pre-trained model {PRETRAINED} is missing; it ships in the "
                          "repository's data/ (install from a clone with pip install -e .), or set train.init to a "
                          "model file, or to '' for random initial weights")
    why = _init_mismatch(_read_init(PRETRAINED, f"train.init = {SYNTHETIC_INIT!r}"), cfg)
    if why is not None:
        logger.warning("train.init = %r: the pre-trained model does not fit these settings (%s): random initial weights",
                       SYNTHETIC_INIT, why)
        return ""
    return str(PRETRAINED)


def _read_init(path: str | os.PathLike, what: str) -> Checkpoint:
    """A model file to start from; an unreadable one is a ConfigError prefixed with ``what``."""
    try:
        return load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f"{what}: {e}") from None


def initial_encoder(path: str | os.PathLike, cfg: RunConfig) -> TDNN:
    """The encoder of a model file to fine-tune (its weights and input statistics).

    Its architecture and feature configuration must be the ones ``cfg``
    trains; ConfigError names the first field that differs.
    """
    ck = _read_init(path, "train.init")
    why = _init_mismatch(ck, cfg)
    if why is not None:
        raise ConfigError(f"train.init: {path} has {why}; fine-tuning needs the same architecture and features")
    if ck.distance != cfg.train.distance:
        logger.warning("train.init: %s was trained with the %s distance, this run uses %s", path, ck.distance, cfg.train.distance)
    return ck.encoder.train()


def _new_encoder(cfg: TDNNConfig, seed: int) -> TDNN:
    """An encoder initialised from ``seed``; the global torch RNG is left untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TDNN(cfg)


def _step(encoder: TDNN, averaged: TDNN | None, opt: torch.optim.Optimizer, loss: torch.Tensor, ema: float) -> None:
    """One Adam step, then the moving average of the weights."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if averaged is not None:
        with torch.no_grad():
            for pa, p in zip(averaged.parameters(), encoder.parameters()):
                pa.lerp_(p, 1.0 - ema)


def _train_episodes(encoder: TDNN, averaged: TDNN | None, opt: torch.optim.Optimizer, loss_fn: Callable[..., torch.Tensor],
                    sampler: EpisodeSampler, prep: Prepared, cfg: RunConfig, epoch: int, progress: Callable[..., None] | None) -> float:
    """One epoch of episodes (``pairs_per_epoch // batch_size`` steps of ``episode_writers`` episodes each); the mean loss."""
    tc = cfg.train
    encoder.train()
    rng = np.random.default_rng([*tc.stream, epoch])
    n_steps = max(1, tc.pairs_per_epoch // tc.batch_size)
    steps = [sampler.sample(tc.episode_writers, rng) for _ in range(n_steps)]
    steps = [eps for eps in steps if eps]
    if not steps:
        raise ConfigError("no training episode has an impostor: the training writers need skilled forgeries or genuine signatures of other writers")
    rows = [np.concatenate([e.rows for e in eps]) for eps in steps]
    flat = np.concatenate(rows)
    imitations = np.concatenate([e.is_imitation for eps in steps for e in eps])
    seqs = _pair_sequences(prep, prep.train_rows[flat], cfg, rng, imitations)  # augmented once per epoch, like pairs
    total, start = 0.0, 0
    for si, (eps, r) in enumerate(zip(steps, rows)):
        batch = seqs[start : start + len(r)]
        start += len(r)
        emb = embed_batch(encoder, batch)
        loss = loss_fn(emb, eps)
        _step(encoder, averaged, opt, loss, tc.ema)
        total += loss.item()
        if progress:
            progress("batch", epoch, si + 1, len(steps), loss.item())
    return total / len(steps)


def _train_epoch(encoder: TDNN, averaged: TDNN | None, opt: torch.optim.Optimizer, loss_fn: PairLoss, sampler: PairSampler, prep: Prepared,
                 cfg: RunConfig, epoch: int, progress: Callable[..., None] | None) -> float:
    """One pass over fresh pairs or, for the template loss, episodes (seeded by ``(*stream, epoch)``), augmented when asked; the mean loss.

    The torch generator (dropout's masks) is seeded by ``(*stream, epoch)`` too, so a resumed run repeats the uninterrupted one.
    """
    encoder.dropout = cfg.train.dropout
    with torch.random.fork_rng():
        torch.manual_seed(int(np.random.SeedSequence([*cfg.train.stream, epoch]).generate_state(1)[0]))
        return _train_epoch_seeded(encoder, averaged, opt, loss_fn, sampler, prep, cfg, epoch, progress)


def _train_epoch_seeded(encoder: TDNN, averaged: TDNN | None, opt: torch.optim.Optimizer, loss_fn: PairLoss, sampler: PairSampler,
                        prep: Prepared, cfg: RunConfig, epoch: int, progress: Callable[..., None] | None) -> float:
    tc = cfg.train
    if tc.loss == "template":
        return _train_episodes(encoder, averaged, opt, loss_fn, sampler, prep, cfg, epoch, progress)
    encoder.train()
    rng = np.random.default_rng([*tc.stream, epoch])
    pairs = sampler.sample(tc.pairs_per_epoch, rng)
    a, b = prep.train_rows[pairs.a], prep.train_rows[pairs.b]
    sa, sb = _pair_sequences(prep, a, cfg, rng), _pair_sequences(prep, b, cfg, rng)
    batches = _batches(len(pairs), np.maximum([len(x) for x in sa], [len(x) for x in sb]), tc.batch_size, rng)
    total = 0.0
    for bi, sl in enumerate(batches):
        ea, eb = _embed_pairs(encoder, [sa[i] for i in sl], [sb[i] for i in sl], prep.fixed_length)  # the Siamese twins: one encoder
        loss = loss_fn(ea, eb, torch.from_numpy(pairs.y[sl]))
        _step(encoder, averaged, opt, loss, tc.ema)
        total += loss.item() * len(sl)
        if progress:
            progress("batch", epoch, bi + 1, len(batches), loss.item())
    return total / len(pairs)


def _finish_epoch(out: Path, encoder: TDNN, averaged: TDNN | None, opt: torch.optim.Optimizer, cfg: RunConfig, prep: Prepared, data, epoch: int,
                  rows: list, best: dict, bad: int, done: bool, improved: bool, init_sha256: str = "") -> None:
    """Write model.pt (when improved), metrics.csv and train_state.pt, each atomically."""
    if improved or done:
        best_encoder = _new_encoder(cfg.model, 0)
        best_encoder.load_state_dict(best["state"])
        save_checkpoint(out / "model.pt", best_encoder, cfg.features, distance=cfg.train.distance, threshold=best["threshold"],
                        scoring=best["strategy"], calibration=best["scores"], provenance=provenance(prep, cfg, data, epoch, best["epoch"], init_sha256),
                        offset_weight=cfg.train.offset_weight)
    _write_metrics(out / "metrics.csv", rows)
    _save_bytes(out / "train_state.pt", {
        "format": STATE_FORMAT, "config": json.dumps(cfg.to_dict(), sort_keys=True), "fingerprint": prep.fingerprint,
        "epoch": epoch, "model": encoder.state_dict(), "optim": opt.state_dict(), "rows": rows, "best": best,
        "bad_epochs": bad, "done": done, "averaged": averaged.state_dict() if averaged is not None else None,
        "init_sha256": init_sha256,
    })
