"""The time-delay encoder, its presets, the Siamese pair, and checkpoints.

A time-delay neural network (TDNN) is a stack of 1-D convolutions over time:
each unit sees a window of consecutive steps of the layer below. The Siamese
pair applies ONE encoder to both signatures (one parameter set), as in
Bromley et al. (1994, sec. 2 and Fig. 1).

Presets (``TDNNConfig.preset``):

- ``bromley``, after Fig. 1 of the paper: input 8 x 200; 12 feature maps,
  receptive field 11 steps; 16 maps, receptive field 10 steps; tanh units.
  Our choices where the paper is silent or we could not read it exactly:
  the strides are 3 and 3 (the only integers that give the paper's layer
  lengths 64 and 19 from 200 with "valid" windows); the output vector is the
  16 maps averaged over their 19 steps (a 16-dimensional vector; the paper
  averages over time in its best network, we take that for every variant);
  no normalisation layers; input channels are standardised with training-set
  statistics (the paper normalised its features, method not given).
- ``modern``: a deeper TDNN for variable-length input after the x-vector
  family (Snyder et al. 2018): dilated convolutions with channel-wise layer
  normalisation per step and ReLU, then by default ``frames`` pooling: the
  output averaged over every ``frame_steps`` = 4 steps of the 100 Hz input
  (``PRESET_STEPS``: variable length), each such frame projected to 32
  values and scaled to unit length, compared by soft-DTW
  (:mod:`tdnn_siamese.softdtw`; DsDTW's design). With ``pooling = "stats"``
  (or ``"mean"``) it is the earlier single-vector encoder: masked mean and
  standard deviation of 8 equal stretches of time (``segments``, below)
  and a linear projection to 128 values (``POOLED_MODEL_DEFAULTS``). It
  trains on the 12 ``rich`` time functions by default (``PRESET_FEATURES``):
  on SVC2004 their validation EER averaged over 10 reference draws was
  below the 5 ``kinematic`` ones' (README, "Ablation", (aa) against (z);
  ``kinematic`` was the default before), z-normalised per signature as the DTW
  baseline's features are (``PRESET_ZNORM``). Padding never changes an embedding: padded steps are zeroed
  before every convolution and excluded from pooling, and the
  normalisation is per step.

Pooling over the whole signature forgets the order of events: a forgery
made of the right strokes in the wrong rhythm pools like the original.
With ``segments = S > 1`` each of S equal stretches of a signature's valid
steps is pooled separately and the S vectors are concatenated, so the
embedding keeps the coarse temporal order (a uniform time alignment, the
cheap cousin of DTW's).

With ``input_skip`` (off by default) each frame's projection also reads
the mean of its steps' standardised input features: a linear path from
the time functions to the frames beside the convolutions, so the learned
frames can keep what a DTW on the raw time functions sees (README,
"Ablation", (bc)).

With ``recurrent = R > 0`` (off by default) a bidirectional GRU runs over
each signature's own frames (packed: padding never reaches it) before
their projection, DsDTW's CNN-GRU (Jiang et al., IEEE TIFS 2022), so every
frame hears the whole signature; on SVC2004 it memorised the training
writers (README, "Ablation", (az)).

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) hold everything
needed to use a model: format version, model and feature configs, weights,
the default scoring strategy and its calibrated threshold, validation scores
for every scoring strategy (``calibration[strategy][kind]``; at most
``CALIBRATION_MAX`` per kind, quantiles of larger sets) and provenance.
They are written atomically and read with ``torch.load(weights_only=True)``.
Version 3 also stores the offset strategies' weight (``offset_weight``);
version 2 files (which used a quarter, ``LEGACY_OFFSET_WEIGHT``) and
version 1 files (one strategy, ``mean``) are still read.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .atomic import atomic_write_bytes
from .config import ConfigError, StrictConfig
from .distances import KINDS as DISTANCES
from .features import FeatureConfig
from .formats import InputError

FORMAT = "tdnn-siamese"
FORMAT_VERSION = 3  # 3: the offset strategies' weight is stored; 2: several strategies' calibration; 1: "mean" only
READABLE_VERSIONS = (1, 2, 3)
LEGACY_OFFSET_WEIGHT = 0.25  # the offset weight of files before version 3 (fixed then; their calibration scores used it)

PRESETS: dict[str, dict[str, Any]] = {
    "bromley": dict(channels=(12, 16), kernels=(11, 10), strides=(3, 3), dilations=(1, 1), padding="valid",
                    activation="tanh", norm=False, pooling="mean", embedding_dim=0),
    "modern": dict(channels=(64, 64, 64, 64, 128), kernels=(5, 3, 3, 3, 1), strides=(1, 1, 1, 1, 1),
                   dilations=(1, 2, 3, 4, 1), padding="same", activation="relu", norm=True, pooling="frames",
                   embedding_dim=32, segments=256, frame_steps=4, members=2),
}
# A preset whose default keeps frames, asked to pool time away instead (``pooling=stats|mean``), takes these
# unless they are given: the single-vector encoder that was the default before frames (README, "Ablation").
POOLED_MODEL_DEFAULTS: dict[str, Any] = {"frame_steps": 0, "segments": 8, "embedding_dim": 128, "members": 1}
MAX_FRAMES = 512  # the most frames (``segments``) of a rate-based ``frames`` pooling
PRESET_FEATURES = {"bromley": "bromley", "modern": "rich"}  # the feature set each preset trains on by default
PRESET_STEPS = {"bromley": 200, "modern": None}  # and its input length: Bromley's 200 steps, or 100 Hz (variable length)
PRESET_ZNORM = {"bromley": False, "modern": True}  # and whether every channel is z-normalised per signature (``features.znorm``)


@dataclass(frozen=True)
class TDNNConfig(StrictConfig):
    """Architecture of the encoder. Build with :meth:`from_preset`; every field is stored in checkpoints."""

    preset: str
    n_features: int
    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    padding: str  # "valid" or "same"
    activation: str  # "tanh" or "relu"
    norm: bool  # channel-wise layer norm after each convolution
    pooling: str  # "mean" or "stats" (mean and std), masked over valid steps; "frames": the segments' means, kept as a sequence
    #   of unit-length frames (so a frame-to-frame cost lies in [0, 4] and the DTW distance cannot grow by mere scale)
    embedding_dim: int  # 0: the pooled vector is the embedding
    segments: int = 1  # pool each of this many equal stretches of time separately (keeps coarse temporal order);
    #   with frame_steps > 0, the most frames a signature may have
    frame_steps: int = 0  # "frames" only: 0 = every signature gives ``segments`` frames (its duration normalised away);
    #   k > 0 = one frame per k encoder steps, i.e. per k x (product of strides) input steps (a longer signature has
    #   more frames; zero frames pad the embedding)
    members: int = 1  # "frames" only: > 1 = an ensemble (TDNNEnsemble) of this many encoders of this architecture,
    #   trained apart; their frame sequences side by side in the embedding, each aligned on its own (Distance.members)
    recurrent: int = 0  # "frames" only: > 0 = a bidirectional GRU of this many outputs (half per direction) over each
    #   signature's frames before they are projected: every frame then sees the whole signature (DsDTW's CNN-GRU); 0: none
    input_skip: bool = False  # "frames" only: each frame's projection also takes the mean of its steps' standardised
    #   input features (a linear path from the time functions to the frames, beside the convolutions); False: none

    def validate(self) -> None:
        n = len(self.channels)
        if n == 0 or not len(self.kernels) == len(self.strides) == len(self.dilations) == n:
            raise ConfigError("channels, kernels, strides and dilations must have the same, non-zero length")
        if min(self.channels + self.kernels + self.strides + self.dilations) < 1 or self.n_features < 1:
            raise ConfigError("sizes must be positive")
        if self.padding not in ("valid", "same") or self.activation not in ("tanh", "relu") or self.pooling not in ("mean", "stats", "frames"):
            raise ConfigError(f"padding/activation/pooling out of range: {self.padding}/{self.activation}/{self.pooling}")
        if self.padding == "same" and any(k % 2 == 0 for k in self.kernels):
            raise ConfigError("'same' padding needs odd kernels")
        if self.embedding_dim < 0:
            raise ConfigError("embedding_dim must be >= 0")
        top = MAX_FRAMES if self.frame_steps else 64
        if not isinstance(self.segments, int) or isinstance(self.segments, bool) or not 1 <= self.segments <= top:
            raise ConfigError(f"segments must be an integer from 1 to {top}, got {self.segments!r}")
        if not isinstance(self.frame_steps, int) or isinstance(self.frame_steps, bool) or self.frame_steps < 0:
            raise ConfigError(f"frame_steps must be an integer >= 0, got {self.frame_steps!r}")
        if self.frame_steps and self.pooling != "frames":
            raise ConfigError(f"frame_steps is a setting of the 'frames' pooling, not of {self.pooling!r}")
        if not isinstance(self.members, int) or isinstance(self.members, bool) or self.members < 1:
            raise ConfigError(f"members must be an integer >= 1, got {self.members!r}")
        if not isinstance(self.recurrent, int) or isinstance(self.recurrent, bool) or self.recurrent < 0 or self.recurrent % 2:
            raise ConfigError(f"recurrent must be an even integer >= 0 (half of it per direction), got {self.recurrent!r}")
        if self.recurrent and self.pooling != "frames":
            raise ConfigError(f"recurrent is a setting of the 'frames' pooling, not of {self.pooling!r}")
        if self.input_skip and (self.pooling != "frames" or self.padding != "same" or set(self.strides) != {1}):
            raise ConfigError("input_skip is a setting of the 'frames' pooling with 'same' padding and strides of 1 "
                              "(the input's steps must be the encoder's)")
        if self.members > 1 and self.pooling != "frames":
            raise ConfigError(f"an ensemble (members > 1) is made of 'frames' encoders, not of {self.pooling!r} ones")

    @classmethod
    def from_preset(cls, preset: str, n_features: int, **overrides: Any) -> "TDNNConfig":
        """A preset's architecture for ``n_features`` input channels, with ``overrides``."""
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        base = dict(PRESETS[preset])
        if base["pooling"] == "frames" and overrides.get("pooling", "frames") != "frames":
            base.update(POOLED_MODEL_DEFAULTS)
        return cls.from_dict({**base, "preset": preset, "n_features": n_features, **overrides})

    @property
    def output_dim(self) -> int:
        if self.pooling == "frames":
            return self.members * self.segments * self.frame_dim
        return self.embedding_dim or self.pooled_dim

    @property
    def member(self) -> "TDNNConfig":
        """The architecture of one member of the ensemble (this config itself when ``members`` is 1)."""
        return self if self.members == 1 else dataclasses.replace(self, members=1)

    @property
    def frame_dim(self) -> int:
        """Values per frame of the ``frames`` pooling (its embedding is ``segments`` such frames, flattened)."""
        return self.embedding_dim or self.pooled_dim

    @property
    def pooled_dim(self) -> int:
        """Width of the pooled vector the projection takes (of each frame, for ``frames``)."""
        if self.pooling == "frames":
            return (self.recurrent or self.channels[-1]) + (self.n_features if self.input_skip else 0)
        return self.channels[-1] * (2 if self.pooling == "stats" else 1) * self.segments

    @property
    def min_length(self) -> int:
        """Shortest input (steps) that leaves at least one output step."""
        n = 1 if self.frame_steps else self.segments
        for k, s, d in reversed(list(zip(self.kernels, self.strides, self.dilations))):
            n = (n - 1) * s + (d * (k - 1) if self.padding == "valid" else 0) + 1
        return n


class _ChannelNorm(nn.Module):
    """Layer norm over channels at each step: (B, C, T) -> (B, C, T); no statistics over time."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # LayerNorm's arithmetic, written for the (B, C, T) layout: transposing to (B, T, C) and back costs
        # two copies and leaves the next convolution a strided input, which made it 2-3x slower.
        mean = x.mean(1, keepdim=True)
        d = x - mean
        var = (d * d).mean(1, keepdim=True)
        return torch.addcmul(self.norm.bias[:, None], d * torch.rsqrt(var + self.norm.eps), self.norm.weight[:, None])


class TDNN(nn.Module):
    """The encoder: feature sequences (B, T, F) with valid lengths (B,) -> embeddings (B, D)."""

    def __init__(self, cfg: TDNNConfig):
        super().__init__()
        if cfg.members != 1:
            raise ValueError(f"a config of {cfg.members} members describes an ensemble: build_encoder(cfg), or TDNN(cfg.member) for one")
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.n_features))
        self.register_buffer("feat_std", torch.ones(cfg.n_features))
        convs, norms = [], []
        c_in = cfg.n_features
        for c, k, s, d in zip(cfg.channels, cfg.kernels, cfg.strides, cfg.dilations):
            pad = d * (k - 1) // 2 if cfg.padding == "same" else 0
            convs.append(nn.Conv1d(c_in, c, k, stride=s, dilation=d, padding=pad))
            norms.append(_ChannelNorm(c) if cfg.norm else nn.Identity())
            c_in = c
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.act = torch.tanh if cfg.activation == "tanh" else F.relu
        self.dropout = 0.0  # in train() mode: share of each layer's activations zeroed at random (training sets it)
        self.rnn = nn.GRU(cfg.channels[-1], cfg.recurrent // 2, batch_first=True, bidirectional=True) if cfg.recurrent else None
        self.proj = nn.Linear(cfg.pooled_dim, cfg.embedding_dim) if cfg.embedding_dim else nn.Identity()

    def _segment_pool(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean (and std) of each of ``segments`` equal stretches of every sequence's valid steps: (B, pooled_dim)."""
        w = _segment_weights(lengths, h.shape[-1], self.cfg.segments).to(h.dtype)  # (B, S, T')
        mean = torch.einsum("bct,bst->bcs", h, w)  # (B, C, S)
        if self.cfg.pooling != "stats":
            return mean.flatten(1)
        var = torch.einsum("bct,bst->bcs", h * h, w) - mean * mean
        return torch.cat([mean, torch.sqrt(var.clamp_min(0) + 1e-5)], dim=1).flatten(1)  # (B, 2C x S)

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise inputs with these per-channel statistics (of the training data)."""
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(torch.clamp(std, min=1e-6))

    def _out_lengths(self, lengths: torch.Tensor, i: int) -> torch.Tensor:
        k, s, d = self.cfg.kernels[i], self.cfg.strides[i], self.cfg.dilations[i]
        if self.cfg.padding == "same":  # ceil(L / s): a strided "same" convolution keeps every s-th step
            return torch.div(lengths + s - 1, s, rounding_mode="floor")
        return torch.div(lengths - d * (k - 1) - 1, s, rounding_mode="floor") + 1

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a batch. ``x``: (B, T, F); ``lengths``: (B,) valid steps (None: all T)."""
        B, T, _ = x.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        if int(lengths.min()) < self.cfg.min_length:
            raise ValueError(f"a sequence of {int(lengths.min())} steps is shorter than the {self.cfg.min_length} this encoder needs")
        padded = bool((lengths < T).any())  # without padding the masks are all ones: skip them
        h = ((x - self.feat_mean) / self.feat_std).transpose(1, 2).contiguous()  # (B, F, T)
        inputs = h
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if padded:
                h = h * (torch.arange(h.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(h.dtype)[:, None, :]
            h = self.act(norm(conv(h)))  # (B, C, T')
            if self.dropout and self.training:
                h = F.dropout(h, self.dropout, training=True)
            lengths = self._out_lengths(lengths, i)
        if self.cfg.pooling == "frames":  # (B, C, S) segment means -> S frames, each projected and unit-length: (B, S x frame_dim)
            S = self.cfg.segments
            counts = frame_counts(lengths, S, self.cfg.frame_steps)
            n = int(counts.max())  # frames past the batch's longest count are zero: not computed (a rate-based batch needs few of S)
            w = _segment_weights(lengths, h.shape[-1], n, counts).to(h.dtype)
            pooled = torch.einsum("bct,bst->bsc", h, w)  # (B, n, C)
            if self.rnn is not None:  # over each signature's own frames only, so padding never reaches the backward pass
                packed = nn.utils.rnn.pack_padded_sequence(pooled, counts.cpu(), batch_first=True, enforce_sorted=False)
                pooled = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=n)[0]
            if self.cfg.input_skip:  # the same steps' standardised inputs (same padding, stride 1: the encoder's steps)
                pooled = torch.cat([pooled, torch.einsum("bft,bst->bsf", inputs, w)], dim=-1)
            frames = F.normalize(self.proj(pooled), dim=-1)
            if self.cfg.frame_steps:  # frames past a signature's own count are zero: DTW reads its length from them
                frames = frames * (torch.arange(n, device=x.device)[None, :] < counts[:, None]).to(h.dtype)[..., None]
            if n < S:
                frames = F.pad(frames, (0, 0, 0, S - n))
            return frames.flatten(1)
        if self.cfg.segments > 1:
            return self.proj(self._segment_pool(h, lengths))
        if padded:
            mask = (torch.arange(h.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(h.dtype)[:, None, :]  # (B, 1, T')
            n = lengths.to(h.dtype)[:, None]  # (B, 1)
            mean = (h * mask).sum(-1) / n  # (B, C)
            var = (((h - mean[..., None]) * mask) ** 2).sum(-1) / n if self.cfg.pooling == "stats" else None
        else:
            mean = h.mean(-1)  # torch.var_mean is several times slower on CPU than these two means
            var = ((h * h).mean(-1) - mean * mean).clamp_min(0) if self.cfg.pooling == "stats" else None
        pooled = torch.cat([mean, torch.sqrt(var + 1e-5)], dim=1) if self.cfg.pooling == "stats" else mean  # (B, 2C) or (B, C)
        return self.proj(pooled)  # (B, D)


def frame_counts(lengths: torch.Tensor, S: int, frame_steps: int) -> torch.Tensor:
    """Frames of each sequence (B,): ``S``, or with ``frame_steps = k`` ceil(L / k) capped at ``S``."""
    if not frame_steps:
        return torch.full_like(lengths, S)
    return torch.div(lengths + frame_steps - 1, frame_steps, rounding_mode="floor").clamp(1, S)


def _segment_weights(lengths: torch.Tensor, T: int, S: int, counts: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S, T) averaging weights: step t < L of a sequence belongs to segment floor(t n / L), n = its count (default S)."""
    t = torch.arange(T, device=lengths.device)[None, :]
    L = lengths[:, None]
    n = counts[:, None] if counts is not None else S
    seg = torch.div(t * n, L.clamp_min(1), rounding_mode="floor")  # (B, T)
    member = (seg[:, None, :] == torch.arange(S, device=lengths.device)[None, :, None]) & (t < L)[:, None, :]  # (B, S, T)
    w = member.float()
    return w / w.sum(-1, keepdim=True).clamp_min(1.0)


class Siamese(nn.Module):
    """Twin encoders with shared weights: one `TDNN` module applied to both inputs."""

    def __init__(self, encoder: TDNN):
        super().__init__()
        self.encoder = encoder

    def forward(self, a: torch.Tensor, la: torch.Tensor | None, b: torch.Tensor, lb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of both sides: (B, Ta, F), (B, Tb, F) -> (B, D), (B, D)."""
        return self.encoder(a, la), self.encoder(b, lb)


class TDNNEnsemble(nn.Module):
    """Encoders of one architecture trained apart (``TDNNConfig.members`` of them): each embeds a signature, and the
    embedding holds their frame sequences one after another, (B, members x segments x frame_dim). ``Distance`` with
    ``members`` aligns each member's frames with the other signature's frames of the same member and averages the
    members' distances: the ensemble's score is the mean of its members' (for the offsets, exactly). Averaging models
    trained from other initial weights and episodes cuts the variance that the seed alone leaves (README, "Ablation",
    (xx))."""

    def __init__(self, cfg: TDNNConfig):
        super().__init__()
        if cfg.members < 2:
            raise ValueError("an ensemble has at least two members")
        self.cfg = cfg
        self.towers = nn.ModuleList(TDNN(cfg.member) for _ in range(cfg.members))

    @classmethod
    def of(cls, encoders: Sequence[TDNN]) -> "TDNNEnsemble":
        """The ensemble of these trained encoders (the same architecture), their weights copied."""
        cfgs = {e.cfg for e in encoders}
        if len(cfgs) != 1 or next(iter(cfgs)).members != 1:
            raise ValueError("an ensemble's members share one architecture (and are not ensembles themselves)")
        ens = cls(dataclasses.replace(encoders[0].cfg, members=len(encoders)))
        for tower, e in zip(ens.towers, encoders):
            tower.load_state_dict(e.state_dict())
        return ens

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a batch: every member's embedding, side by side. ``x``: (B, T, F); ``lengths``: (B,) or None."""
        return torch.cat([tower(x, lengths) for tower in self.towers], dim=1)


def build_encoder(cfg: TDNNConfig) -> TDNN | TDNNEnsemble:
    """The encoder a config describes: one TDNN, or an ensemble of ``members`` of them."""
    return TDNN(cfg) if cfg.members == 1 else TDNNEnsemble(cfg)


# --------------------------------------------------------------------------- checkpoints


class CheckpointError(InputError):
    """A model file that is missing, corrupt, foreign or of an unknown version."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model file: the encoder (eval mode) and everything needed to use it."""

    encoder: TDNN | TDNNEnsemble
    feature_config: FeatureConfig
    distance: str
    threshold: float
    scoring: str
    calibration: dict[str, dict[str, list[float]]]
    provenance: dict[str, Any]
    path: str
    offset_weight: float = LEGACY_OFFSET_WEIGHT  # the share of the references' spread the offset strategies add (verifier)


CALIBRATION_MAX = 5000  # validation scores a model file keeps per strategy and kind (see save_checkpoint)


def _kept_scores(values: Sequence[float]) -> list[float]:
    """All of ``values`` up to ``CALIBRATION_MAX``; beyond, that many evenly spaced quantiles of them (minimum and
    maximum included): enough for the logistic calibration and thresholds down to a FAR of 1/5000, while
    validation over many writers and reference draws would otherwise write megabytes of scores into every model."""
    if len(values) <= CALIBRATION_MAX:
        return [float(x) for x in values]
    v = np.sort(np.asarray(values, np.float64))
    return v[np.linspace(0, len(v) - 1, CALIBRATION_MAX).round().astype(int)].tolist()


def save_checkpoint(
    path: str | os.PathLike,
    encoder: TDNN | TDNNEnsemble,
    feature_config: FeatureConfig,
    *,
    distance: str,
    threshold: float,
    scoring: str,
    calibration: dict[str, dict[str, list[float]]],
    provenance: dict[str, Any],
    offset_weight: float,
) -> None:
    """Write a self-contained model file atomically (temp file + rename). ``offset_weight``: the share of the
    references' spread the offset strategies added in the calibration scores (verifier), so scoring adds the same."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": encoder.cfg.to_dict(),
        "feature_config": feature_config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
        "distance": distance,
        "threshold": float(threshold),
        "scoring": scoring,
        "calibration": {s: {k: _kept_scores(v) for k, v in c.items()} for s, c in calibration.items()},
        "provenance": json.loads(json.dumps(provenance, default=str)),  # plain types only: weights_only loading
        "offset_weight": float(offset_weight),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a model file written by :func:`save_checkpoint`; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(path, f"not a readable tdnn-siamese model file ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(path, "not a tdnn-siamese model file (no 'format: tdnn-siamese' marker)")
    version = payload.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(path, f"model file format version {version!r}; this version reads {', '.join(map(str, READABLE_VERSIONS))}")
    try:
        cfg = TDNNConfig.from_dict(payload["model_config"])
        fcfg = FeatureConfig.from_dict(payload["feature_config"])
        encoder = build_encoder(cfg)
        encoder.load_state_dict(payload["state_dict"])
        ckpt = Checkpoint(
            encoder=encoder.eval(),
            feature_config=fcfg,
            distance=str(payload["distance"]),
            threshold=float(payload["threshold"]),
            scoring=str(payload["scoring"]),
            calibration=_calibration(payload["calibration"], version),
            provenance=dict(payload["provenance"]),
            path=str(path),
            offset_weight=float(payload["offset_weight"]) if version >= 3 else LEGACY_OFFSET_WEIGHT,
        )
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(path, f"damaged model file: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from None
    if not (np.isfinite(ckpt.offset_weight) and ckpt.offset_weight >= 0):
        raise CheckpointError(path, f"offset weight {ckpt.offset_weight!r} is not a finite number >= 0")
    if fcfg.n_features != cfg.n_features:
        raise CheckpointError(path, f"feature set has {fcfg.n_features} channels but the model expects {cfg.n_features}")
    if ckpt.distance not in DISTANCES or (ckpt.distance == "dtw") != (cfg.pooling == "frames"):
        raise CheckpointError(path, f"distance {ckpt.distance!r} does not fit the model's {cfg.pooling!r} pooling")
    return ckpt


def _calibration(raw: dict, version: int) -> dict[str, dict[str, list[float]]]:
    """``{strategy: {kind: scores}}``; version 1 stored one strategy's ``{kind: scores}`` (``mean``)."""
    if version == 1:
        raw = {"mean": raw}
    return {str(s): {str(k): [float(x) for x in v] for k, v in c.items()} for s, c in raw.items()}


# --------------------------------------------------------------------------- batching


def pad_batch(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad sequences (T_i, F) into (B, T_max, F) with their lengths (B,)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths


def embed_batch(encoder: "TDNN", seqs: list[torch.Tensor], group: int = 32) -> torch.Tensor:
    """Embeddings (N, D) of sequences of mixed lengths, with gradients: run in groups of similar length, so a
    short signature is not padded to the batch's longest (that padding made variable-length training 2-3x slower)."""
    if len({len(s) for s in seqs}) == 1:
        return encoder(torch.stack(seqs), None)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    parts = [encoder(*pad_batch([seqs[i] for i in order[s : s + group]])) for s in range(0, len(order), group)]
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return torch.cat(parts)[inverse]


ACTIVATION_BUDGET = 1 << 20  # floats in the widest layer's activations per forward pass (4 MB)


@torch.inference_mode()
def embed_all(encoder: TDNN, seqs: list[torch.Tensor], batch_size: int = 256) -> torch.Tensor:
    """Embeddings (N, D) of N sequences, sorted by length and run in batches of similar length.

    A batch holds at most ``batch_size`` sequences and is cut further so
    that the widest layer's activations stay under ``ACTIVATION_BUDGET``
    floats: such blocks the allocator reuses, while larger ones are fresh
    memory (mmap) each time and every first touch of a page faults. With
    the ``modern`` preset, passes of 40 x 200 steps ran about twice as fast
    per signature as passes of 256 (scripts/bench_speed.py).
    """
    if encoder.training:  # eval() walks every submodule: a tenth of one verification's time
        encoder.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.empty(len(seqs), encoder.cfg.output_dim)
    width = max(encoder.cfg.channels)
    sorted_len = np.array([len(seqs[i]) for i in order])
    s = 0
    while s < len(order):
        k = np.arange(1, min(batch_size, len(order) - s) + 1)
        fits = sorted_len[s + k - 1] * k * width <= ACTIVATION_BUDGET  # k sequences padded to the k-th's length
        n = int(k[fits].max()) if fits.any() else 1
        idx = order[s : s + n]
        out[idx] = encoder(*pad_batch([seqs[i] for i in idx]))
        s += n
    return out
