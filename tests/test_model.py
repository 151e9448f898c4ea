import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tdnn_siamese.config import ConfigError
from tdnn_siamese.distances import Distance, to_score
from tdnn_siamese.features import FeatureConfig
from tdnn_siamese.model import (
    ACTIVATION_BUDGET,
    PRESETS,
    CheckpointError,
    Siamese,
    TDNN,
    TDNNConfig,
    TDNNEnsemble,
    embed_all,
    load_checkpoint,
    pad_batch,
    save_checkpoint,
)


def encoder(preset="modern", seed=0, **over) -> TDNN:
    """A small-input encoder; ``modern`` pools time into one vector here (the default "frames" need 64 steps)."""
    if preset == "modern" and "pooling" not in over:
        over = {"pooling": "stats", "segments": 8, "embedding_dim": 128, **over}
    torch.manual_seed(seed)
    enc = TDNN(TDNNConfig.from_preset(preset, 8, **over).member)  # one encoder (modern's default is an ensemble of two)
    enc.set_input_stats(torch.randn(8) * 0.1, torch.rand(8) + 0.5)
    return enc.eval()


def test_bromley_preset_matches_fig1_layer_sizes():
    enc = encoder("bromley")
    x = torch.randn(2, 200, 8)
    h = x.transpose(1, 2)
    sizes = []
    for conv in enc.convs:
        h = conv(h)
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [(12, 64), (16, 19)]  # Fig. 1: 12 x 64, then 16 x 19
    assert [c.kernel_size[0] for c in enc.convs] == [11, 10]
    assert enc(x).shape == (2, 16)
    assert enc.cfg.min_length == 38


def test_twins_share_one_parameter_set():
    enc = encoder()
    twin = Siamese(enc)
    assert [id(p) for p in twin.parameters()] == [id(p) for p in enc.parameters()]
    a, b = torch.randn(3, 50, 8), torch.randn(3, 70, 8)
    enc.train()
    ea, eb = twin(a, None, b, None)
    ea.sum().backward()
    grad_a = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    ea, eb = twin(a, None, b, None)
    (ea.sum() + eb.sum()).backward()  # both branches' gradients land in the same tensors
    grad_ab = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    eb = twin(a, None, b, None)[1]
    eb.sum().backward()
    for ga, gb, gab in zip(grad_a, [p.grad for p in enc.parameters()], grad_ab):
        torch.testing.assert_close(ga + gb, gab)


@pytest.mark.parametrize("kind", ["cosine", "euclidean", "dtw"])
def test_score_is_symmetric(kind):
    enc = encoder(pooling="frames", segments=8, embedding_dim=16) if kind == "dtw" else encoder()
    d = Distance.for_encoder(kind, enc.cfg.frame_dim)
    a, b = torch.randn(4, 60, 8), torch.randn(4, 60, 8)
    ea, eb = Siamese(enc)(a, None, b, None)
    torch.testing.assert_close(to_score(d.raw(ea, eb), d), to_score(d.raw(eb, ea), d))
    torch.testing.assert_close(d.matrix(ea, eb), d.matrix(eb, ea).T)


@pytest.mark.parametrize("preset", ["modern", "bromley"])
def test_padding_does_not_change_an_embedding(preset):
    enc = encoder(preset)
    seqs = [torch.randn(n, 8) for n in (90, 213, 40, 150)]
    alone = torch.cat([enc(s[None], torch.tensor([len(s)])) for s in seqs])
    x, lengths = pad_batch(seqs)
    x = x + (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None]) * 7.0  # garbage, not zeros, past the end
    torch.testing.assert_close(enc(x, lengths), alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embed_all(enc, seqs, batch_size=3), alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset,pooling", [("modern", "stats"), ("modern", "mean"), ("bromley", "mean")])
def test_segment_pooling_is_padding_free_and_keeps_temporal_order(preset, pooling):
    torch.manual_seed(0)
    enc = TDNN(TDNNConfig.from_preset(preset, 8, pooling=pooling, segments=4).member).eval()
    assert enc.cfg.output_dim == (enc.cfg.embedding_dim or enc.cfg.pooled_dim)
    seqs = [torch.randn(n, 8) for n in (90, 213, 120, 150)]
    alone = torch.cat([enc(s[None], torch.tensor([len(s)])) for s in seqs])
    x, lengths = pad_batch(seqs)
    x = x + (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None]) * 7.0
    torch.testing.assert_close(enc(x, lengths), alone, rtol=1e-5, atol=1e-5)
    s = seqs[1]
    swapped = torch.cat([s[len(s) // 2 :], s[: len(s) // 2]])  # the same steps, halves in the other order
    assert not torch.allclose(enc(s[None]), enc(swapped[None]), atol=1e-3)  # segments see the order
    if preset == "modern":
        assert enc.cfg.min_length == 4


def test_a_strided_same_encoder_has_a_frame_per_frame_steps_x_stride_input_steps():
    """``strides`` (2, 1, ...) with "same" padding: the first layer keeps every other step (ceil(L / 2)), so a frame
    of 2 encoder steps covers 4 input steps, as the default frame of 4 does at stride 1; padding changes nothing."""
    torch.manual_seed(0)
    enc = TDNN(TDNNConfig.from_preset("modern", 8, strides=(2, 1, 1, 1, 1), frame_steps=2).member).eval()
    assert enc.cfg.min_length == 1
    seqs = [torch.randn(n, 8) for n in (90, 213, 41, 150, 1)]
    alone = torch.cat([enc(s[None], torch.tensor([len(s)])) for s in seqs])
    frames = alone.reshape(len(seqs), enc.cfg.segments, enc.cfg.frame_dim)
    counts = (frames.norm(dim=-1) > 0).sum(1).tolist()
    assert counts == [-(-(-(-n // 2)) // 2) for n in (90, 213, 41, 150, 1)] == [23, 54, 11, 38, 1]
    x, lengths = pad_batch(seqs)
    x = x + (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None]) * 7.0  # garbage past the end
    torch.testing.assert_close(enc(x, lengths), alone, rtol=1e-5, atol=1e-5)
    pooled = TDNNConfig.from_preset("modern", 8, pooling="stats", strides=(2, 2, 1, 1, 1))  # 8 segments: 4 x (8 - 1) + 1
    assert pooled.min_length == 29
    with pytest.raises(ValueError, match="shorter than the 29"):
        TDNN(pooled)(torch.randn(1, 28, 8))
    assert TDNN(pooled).eval()(torch.randn(1, 29, 8)).shape == (1, pooled.output_dim)


def test_segment_weights_by_hand():
    from tdnn_siamese.model import _segment_weights

    w = _segment_weights(torch.tensor([6, 3]), 6, 3)
    assert w[0].tolist() == [[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0.5, 0.5, 0, 0], [0, 0, 0, 0, 0.5, 0.5]]
    assert w[1].tolist() == [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]]


def test_too_short_for_the_encoder():
    with pytest.raises(ValueError, match="shorter than the 38"):
        encoder("bromley")(torch.randn(1, 30, 8))


def test_gradient_check_on_a_tiny_model():
    torch.manual_seed(0)
    for over in (dict(activation="tanh", norm=True, pooling="stats"), dict(activation="tanh", norm=False, pooling="mean")):
        cfg = TDNNConfig.from_preset("modern", 3, channels=(4, 3), kernels=(3, 3), strides=(1, 1), dilations=(1, 2),
                                     embedding_dim=2, segments=2, **over)
        enc = TDNN(cfg).double()
        x = torch.randn(2, 9, 3, dtype=torch.double, requires_grad=True)
        lengths = torch.tensor([9, 6])
        assert torch.autograd.gradcheck(lambda inp: enc(inp, lengths), (x,), eps=1e-6, atol=1e-5, fast_mode=True)
        params = list(enc.parameters())
        assert torch.autograd.gradcheck(lambda *ps: torch.func.functional_call(enc, dict(zip(dict(enc.named_parameters()), ps)), (x.detach(), lengths)),
                                        tuple(p.detach().clone().requires_grad_(True) for p in params), eps=1e-6, atol=1e-5,
                                        fast_mode=True)


def test_config_presets_and_strictness():
    assert set(PRESETS) == {"bromley", "modern"}
    modern = TDNNConfig.from_preset("modern", 13)  # an ensemble of two encoders of 256 frames of 32 at most
    assert modern.members == 2 and modern.output_dim == 2 * 256 * 32 and modern.member.output_dim == 256 * 32
    assert TDNNConfig.from_preset("bromley", 8).output_dim == 16 and TDNNConfig.from_preset("bromley", 8).members == 1
    with pytest.raises(ValueError, match="describes an ensemble"):
        TDNN(modern)
    pooled = TDNNConfig.from_preset("modern", 5, pooling="stats")  # pooling time away: the single-vector defaults
    assert (pooled.frame_steps, pooled.segments, pooled.output_dim, pooled.members) == (0, 8, 128, 1)
    assert TDNNConfig.from_preset("modern", 5, pooling="mean", segments=2).segments == 2  # given values win
    with pytest.raises(ConfigError, match="unknown preset"):
        TDNNConfig.from_preset("resnet", 8)
    with pytest.raises(ConfigError, match="unknown TDNNConfig key"):
        TDNNConfig.from_preset("modern", 8, width=3)
    with pytest.raises(ConfigError, match="same, non-zero length"):
        TDNNConfig.from_preset("modern", 8, channels=(8, 8))
    with pytest.raises(ConfigError, match="'same' padding needs odd kernels"):
        TDNNConfig.from_preset("modern", 8, kernels=(4, 3, 3, 3, 1))


def _save(path, enc=None, **over):
    enc = enc or encoder()
    kw = dict(distance="dtw" if enc.cfg.pooling == "frames" else "cosine", threshold=0.25, scoring="mean", calibration={"mean": {"genuine": [0.9], "skilled": [0.1]}},
              provenance={"seed": 0, "data_fingerprint": "abc"}, offset_weight=0.5)
    save_checkpoint(path, enc, FeatureConfig(n_steps=None), **{**kw, **over})
    return enc


def test_a_recurrent_encoder_gives_every_frame_the_whole_signature_and_ignores_padding(tmp_path):
    """``recurrent`` (DsDTW's CNN-GRU): a bidirectional GRU over each signature's own frames, so the first frame
    hears the end of the signature, which the convolutions' 23 steps cannot reach; padding still changes nothing."""
    torch.manual_seed(0)
    enc = TDNN(TDNNConfig.from_preset("modern", 8, recurrent=32).member).eval()
    plain = TDNN(TDNNConfig.from_preset("modern", 8).member).eval()
    assert enc.cfg.frame_dim == 32 and enc.cfg.output_dim == enc.cfg.segments * 32
    seqs = [torch.randn(n, 8) for n in (90, 213, 41, 150, 1)]
    alone = torch.cat([enc(s[None], torch.tensor([len(s)])) for s in seqs])
    counts = (alone.reshape(len(seqs), -1, 32).norm(dim=-1) > 0).sum(1).tolist()
    assert counts == [23, 54, 11, 38, 1]
    x, lengths = pad_batch(seqs)
    x = x + (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None]) * 7.0  # garbage past the end
    torch.testing.assert_close(enc(x, lengths), alone, rtol=1e-5, atol=1e-5)
    s = seqs[1]
    late = torch.cat([s[:40], s[40:] + 1.0])  # only steps from 40 on differ: past the 4 + 11 steps frame 0 can see
    first = lambda e, q: e(q[None])[0, : e.cfg.frame_dim]  # noqa: E731
    torch.testing.assert_close(first(plain, late), first(plain, s))
    assert not torch.allclose(first(enc, late), first(enc, s), atol=1e-4)
    enc.set_input_stats(torch.zeros(8), torch.ones(8))
    _save(tmp_path / "model.pt", enc)
    torch.testing.assert_close(load_checkpoint(tmp_path / "model.pt").encoder(x, lengths), enc(x, lengths))
    wide = TDNNConfig.from_preset("modern", 8, recurrent=48, embedding_dim=0)  # no projection: the GRU's outputs are the frames
    assert wide.frame_dim == wide.pooled_dim == 48 and TDNN(wide.member).eval()(x, lengths).shape == (len(seqs), wide.segments * 48)
    with pytest.raises(ConfigError, match="even integer"):
        TDNNConfig.from_preset("modern", 8, recurrent=33)
    with pytest.raises(ConfigError, match="'frames' pooling"):
        TDNNConfig.from_preset("modern", 8, recurrent=32, pooling="stats")


def test_an_input_skip_projects_each_frames_mean_input_beside_the_convolutions(tmp_path):
    """``input_skip``: each frame's projection also reads the mean of its own steps' standardised inputs. With the
    convolutions' columns of the projection zeroed, a frame is exactly the projected, unit-length mean of its steps'
    inputs; padding changes nothing, the file round-trips, and it needs the encoder's steps to be the input's."""
    torch.manual_seed(0)
    enc = TDNN(TDNNConfig.from_preset("modern", 8, input_skip=True).member).eval()
    assert enc.cfg.pooled_dim == 128 + 8 and enc.proj.in_features == 136
    mean, std = torch.randn(8), torch.rand(8) + 0.5
    enc.set_input_stats(mean, std)
    seqs = [torch.randn(n, 8) for n in (90, 13, 41)]
    x, lengths = pad_batch(seqs)
    x = x + (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None]) * 7.0  # garbage past the end
    alone = torch.cat([enc(s[None], torch.tensor([len(s)])) for s in seqs])
    torch.testing.assert_close(enc(x, lengths), alone, rtol=1e-5, atol=1e-5)
    _save(tmp_path / "model.pt", enc)
    torch.testing.assert_close(load_checkpoint(tmp_path / "model.pt").encoder(x, lengths), enc(x, lengths))
    with torch.no_grad():
        enc.proj.weight[:, :128] = 0.0
    s = seqs[1]  # 13 steps: ceil(13 / 4) = 4 frames, equal stretches (step t in frame floor(4t / 13))
    frames = enc(s[None])[0].reshape(-1, 32)[:4]
    z = (s - mean) / std
    want = torch.stack([z[a:b].mean(0) for a, b in ((0, 4), (4, 7), (7, 10), (10, 13))]) @ enc.proj.weight[:, 128:].T
    torch.testing.assert_close(frames, F.normalize(want + enc.proj.bias, dim=-1), rtol=1e-5, atol=1e-6)
    plain = TDNN(TDNNConfig.from_preset("modern", 8).member)
    assert plain.cfg.pooled_dim == 128 and not plain.cfg.input_skip  # off by default: files without the key read as before
    for bad in (dict(pooling="stats"), dict(strides=(1, 2, 1, 1, 1))):
        with pytest.raises(ConfigError, match="input_skip"):
            TDNNConfig.from_preset("modern", 8, input_skip=True, **bad)


def test_checkpoint_round_trip_is_self_contained(tmp_path):
    enc = _save(tmp_path / "model.pt")
    ck = load_checkpoint(tmp_path / "model.pt")
    assert ck.encoder.cfg == enc.cfg and ck.feature_config == FeatureConfig(n_steps=None)
    assert (ck.threshold, ck.distance, ck.scoring) == (0.25, "dtw" if enc.cfg.pooling == "frames" else "cosine", "mean")
    assert ck.calibration == {"mean": {"genuine": [0.9], "skilled": [0.1]}} and ck.provenance["seed"] == 0
    x = torch.randn(2, 77, 8)
    torch.testing.assert_close(ck.encoder(x), enc(x))
    assert not ck.encoder.training


def test_a_model_file_keeps_at_most_calibration_max_scores_per_kind_as_quantiles(tmp_path):
    """Validation over many writers and reference draws: beyond CALIBRATION_MAX scores a kind keeps evenly spaced
    quantiles (extremes included), so the file stays small and its thresholds stay where the full set puts them."""
    from tdnn_siamese.metrics import eer
    from tdnn_siamese.model import CALIBRATION_MAX

    rng = np.random.default_rng(0)
    g, s = rng.normal(1, 1, 3 * CALIBRATION_MAX), rng.normal(-1, 1, 2 * CALIBRATION_MAX + 7)
    _save(tmp_path / "model.pt", calibration={"mean": {"genuine": g.tolist(), "skilled": s.tolist(), "random": [0.5, -0.5]}})
    cal = load_checkpoint(tmp_path / "model.pt").calibration["mean"]
    assert len(cal["genuine"]) == len(cal["skilled"]) == CALIBRATION_MAX and cal["random"] == [0.5, -0.5]  # small: as given
    assert cal["genuine"] == sorted(cal["genuine"]) and (cal["genuine"][0], cal["genuine"][-1]) == (g.min(), g.max())
    np.testing.assert_allclose(np.quantile(cal["skilled"], [0.1, 0.5, 0.9]), np.quantile(s, [0.1, 0.5, 0.9]), atol=2e-3)
    assert eer(cal["genuine"], cal["skilled"])[0] == pytest.approx(eer(g, s)[0], abs=2e-3)
    _save(tmp_path / "small.pt", calibration={"mean": {"genuine": [0.9], "skilled": [0.1]}})
    grown = (tmp_path / "model.pt").stat().st_size - (tmp_path / "small.pt").stat().st_size
    assert grown < 12 * 2 * CALIBRATION_MAX + 4000  # the kept scores only (all 25,007 would take about twice that)


def test_a_file_from_before_znorm_reads_as_not_normalised(tmp_path):
    """Models saved before ``features.znorm`` existed hold no such key: they were trained without it."""
    _save(tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    del payload["feature_config"]["znorm"]
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").feature_config.znorm is False
    payload["feature_config"]["znorm"] = True
    torch.save(payload, tmp_path / "new.pt")
    assert load_checkpoint(tmp_path / "new.pt").feature_config.znorm is True


def test_version_1_files_are_read_as_the_mean_strategy(tmp_path):
    enc = _save(tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload.update(format_version=1, calibration={"genuine": [0.9], "skilled": [0.1]})
    torch.save(payload, tmp_path / "v1.pt")
    ck = load_checkpoint(tmp_path / "v1.pt")
    assert ck.calibration == {"mean": {"genuine": [0.9], "skilled": [0.1]}} and ck.scoring == "mean"
    torch.testing.assert_close(ck.encoder.state_dict()["convs.0.weight"], enc.state_dict()["convs.0.weight"])


def test_the_offset_weight_travels_with_the_model_and_older_files_keep_a_quarter(tmp_path):
    """The offsets' share of the spread is stored (format 3): the verifier scores with the weight the model's
    calibration scores were computed with. Files before version 3 used a fixed quarter; a damaged weight is refused."""
    from tdnn_siamese.model import LEGACY_OFFSET_WEIGHT
    from tdnn_siamese.verifier import Verifier

    _save(tmp_path / "model.pt", offset_weight=0.75)
    assert load_checkpoint(tmp_path / "model.pt").offset_weight == 0.75
    assert Verifier.from_checkpoint(tmp_path / "model.pt").offset_weight == 0.75
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["format_version"] == 3
    for version in (1, 2):
        older = {k: v for k, v in payload.items() if k != "offset_weight"}
        older.update(format_version=version, calibration={"mean": {"genuine": [0.9], "skilled": [0.1]}} if version == 2 else
                     {"genuine": [0.9], "skilled": [0.1]})
        torch.save(older, tmp_path / f"v{version}.pt")
        assert load_checkpoint(tmp_path / f"v{version}.pt").offset_weight == LEGACY_OFFSET_WEIGHT == 0.25
    for bad in (float("nan"), -0.5, float("inf")):
        torch.save({**payload, "offset_weight": bad}, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match="offset weight"):
            load_checkpoint(tmp_path / "bad.pt")
    torch.save({k: v for k, v in payload.items() if k != "offset_weight"}, tmp_path / "lost.pt")
    with pytest.raises(CheckpointError, match="damaged model file.*offset_weight"):
        load_checkpoint(tmp_path / "lost.pt")


def test_bad_model_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such model file"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(CheckpointError, match="not a readable tdnn-siamese model file"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="no 'format: tdnn-siamese' marker"):
        load_checkpoint(foreign)
    good = tmp_path / "good.pt"
    _save(good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(truncated)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_model_files_never_unpickle_code(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"format": "tdnn-siamese", "payload": Evil()}, buf)
    evil.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(evil)
    assert "must never run" not in capsys.readouterr().out


def test_checkpoint_with_wrong_version_or_damaged_weights(tmp_path):
    p = tmp_path / "m.pt"
    _save(p)
    payload = torch.load(p, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, p)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(p)
    payload["format_version"] = 1
    payload["state_dict"].pop("proj.weight")
    torch.save(payload, p)
    with pytest.raises(CheckpointError, match="damaged model file"):
        load_checkpoint(p)


def test_one_long_sequence_does_not_shrink_every_batch(monkeypatch):
    """embed_all sizes each forward pass by the sequences in it, not by the longest one to come."""
    enc = encoder("modern")
    calls = []
    real = enc.forward
    monkeypatch.setattr(enc, "forward", lambda x, lengths=None: calls.append(x.shape[0]) or real(x, lengths))
    seqs = [torch.randn(200, 8) for _ in range(80)] + [torch.randn(3000, 8)]
    out = embed_all(enc, seqs)
    torch.testing.assert_close(out[-1:], real(seqs[-1][None]), rtol=1e-5, atol=1e-5)
    width = max(enc.cfg.channels)
    assert calls[0] == ACTIVATION_BUDGET // (200 * width) and len(calls) <= 4  # 40 + 40 + the long one alone


def test_training_embeds_mixed_lengths_in_groups_and_keeps_their_order_and_gradients():
    from tdnn_siamese.model import embed_batch

    enc = encoder(pooling="frames", segments=16, frame_steps=8, embedding_dim=4).train()
    seqs = [torch.randn(n, 8) for n in (90, 13, 213, 40, 150, 41, 7)]
    grouped = embed_batch(enc, seqs, group=3)  # sorted by length into groups of 3: 7,13,40 | 41,90,150 | 213
    alone = torch.cat([enc(s[None]) for s in seqs])
    torch.testing.assert_close(grouped, alone, rtol=1e-5, atol=1e-5)
    w = torch.randn_like(grouped)
    g1 = torch.autograd.grad((grouped * w).sum(), list(enc.parameters()))
    g2 = torch.autograd.grad((alone * w).sum(), list(enc.parameters()))
    for a, b in zip(g1, g2):  # float32 sums grouped differently (batch shape, thread count): error relative to the tensor's scale
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    same = [torch.randn(50, 8) for _ in range(3)]
    torch.testing.assert_close(embed_batch(enc, same), enc(torch.stack(same)), rtol=1e-5, atol=1e-6)


def _frames_encoder(seed):
    return encoder(seed=seed, pooling="frames", segments=64, frame_steps=4, embedding_dim=8, channels=(8, 8, 8, 8, 16))


def test_an_ensemble_embeds_with_every_member_and_scores_their_mean_distance(tmp_path):
    """TDNNEnsemble: the members' frame sequences side by side; Distance(members=2) aligns each member's frames with the
    same member's and averages the members' soft-DTW distances (rows and matrices alike); the model file keeps it."""
    a, b = _frames_encoder(0), _frames_encoder(1)
    ens = TDNNEnsemble.of([a, b]).eval()
    assert ens.cfg.members == 2 and ens.cfg.member == a.cfg and ens.cfg.output_dim == 2 * a.cfg.output_dim
    x, lengths = torch.randn(3, 90, 8), torch.tensor([90, 70, 41])
    e, ea, eb = ens(x, lengths), a(x, lengths), b(x, lengths)
    torch.testing.assert_close(e, torch.cat([ea, eb], dim=1))
    one, two = Distance.for_encoder("dtw", 8), Distance.for_encoder("dtw", 8, members=2)
    torch.testing.assert_close(two.raw(e[:2], e[1:]), (one.raw(ea[:2], ea[1:]) + one.raw(eb[:2], eb[1:])) / 2)
    torch.testing.assert_close(two.matrix(e, e[:2]), (one.matrix(ea, ea[:2]) + one.matrix(eb, eb[:2])) / 2)
    assert not torch.allclose(one.matrix(ea, ea[:2]), one.matrix(eb, eb[:2]))  # the members differ: the mean is news
    _save(tmp_path / "ens.pt", ens)
    ck = load_checkpoint(tmp_path / "ens.pt")
    assert isinstance(ck.encoder, TDNNEnsemble) and ck.encoder.cfg == ens.cfg
    torch.testing.assert_close(embed_all(ck.encoder, [x[0], x[1, :70], x[2, :41]]), e)
    with pytest.raises(ValueError, match="share one architecture"):
        TDNNEnsemble.of([a, encoder(pooling="frames", segments=64, frame_steps=4, embedding_dim=16, channels=(8, 8, 8, 8, 16))])
    with pytest.raises(ConfigError, match="members must be"):
        TDNNConfig.from_preset("modern", 8, members=0)
    with pytest.raises(ConfigError, match="'frames' encoders"):
        TDNNConfig.from_preset("modern", 8, pooling="stats", members=2)
    with pytest.raises(ValueError, match="distance 'dtw' only"):
        Distance("cosine", members=2)
