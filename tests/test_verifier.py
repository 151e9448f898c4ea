"""Scoring strategies against plain-loop references, thresholds, templates, the enroll/verify round trip."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tdnn_siamese import datasets
from tdnn_siamese.distances import Distance
from tdnn_siamese.metrics import eer, threshold_at_far
from tdnn_siamese.model import TDNN, TDNNConfig
from tdnn_siamese.features import FeatureConfig
from tdnn_siamese.verifier import OFFSET_WEIGHT, STRATEGIES, Decision, Verifier, VerifierError, reference_spread, template_scores

from .conftest import SAMPLE


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _euc(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _unit(a):
    n = math.sqrt(sum(x * x for x in a))
    return [x / n for x in a]


def reference_score(refs, q, kind, strategy):
    """Slow, obvious versions of each strategy on Python lists."""
    sim = (lambda a, b: _cos(a, b)) if kind == "cosine" else (lambda a, b: -_euc(a, b))
    rho = (lambda a, b: 1 - _cos(a, b)) if kind == "cosine" else _euc
    if strategy == "mean":
        return sum(sim(q, r) for r in refs) / len(refs)
    if strategy == "nearest":
        return max(sim(q, r) for r in refs)
    if strategy == "centroid":
        rr = [_unit(r) for r in refs] if kind == "cosine" else refs
        c = [sum(col) / len(rr) for col in zip(*rr)]
        return sim(q, c)
    if strategy == "gaussian":
        rr, qq = ([_unit(r) for r in refs], _unit(q)) if kind == "cosine" else (refs, q)
        d, k = len(qq), len(rr)
        mu = [sum(r[j] for r in rr) / k for j in range(d)]
        var = [sum((r[j] - mu[j]) ** 2 for r in rr) / (k - 1) for j in range(d)]
        mean_var = sum(var) / d
        var = [0.5 * v + 0.5 * mean_var + 1e-6 for v in var]
        return sum(-0.5 * ((qq[j] - mu[j]) ** 2 / var[j] + math.log(2 * math.pi * var[j])) for j in range(d)) / d
    within = [rho(a, b) for i, a in enumerate(refs) for j, b in enumerate(refs) if i != j]
    spread = sum(within) / len(within)
    if strategy == "mean_offset":
        return reference_score(refs, q, kind, "mean") + 0.25 * spread
    if strategy == "nearest_offset":
        return reference_score(refs, q, kind, "nearest") + 0.25 * spread
    assert strategy == "wnorm", strategy
    return -(sum(rho(q, r) for r in refs) / len(refs)) / spread


@pytest.mark.parametrize("kind", ["cosine", "euclidean"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_matches_a_plain_loop(strategy, kind):
    g = torch.Generator().manual_seed(3)
    refs, queries = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    got = template_scores(refs, queries, Distance(kind), strategy)
    want = [reference_score(refs.tolist(), q, kind, strategy) for q in queries.tolist()]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("kind", ["cosine", "euclidean", "dtw"])
def test_reference_spread_reads_each_distinct_pair_once(kind, k, monkeypatch):
    """The spread compares each of the K (K - 1) / 2 pairs i < j once, equals the mean over every ordered pair
    i != j of the full matrix (each distance is symmetric), and the wnorm score divides by it."""
    g = torch.Generator().manual_seed(5)
    refs, queries = torch.randn(k, 24, generator=g, dtype=torch.float64), torch.randn(3, 24, generator=g, dtype=torch.float64)
    d = Distance(kind, frame_dim=4 if kind == "dtw" else 0)
    if kind == "dtw":  # unit-length frames, as the encoder makes them
        refs = torch.nn.functional.normalize(refs.view(k, 6, 4), dim=-1).view(k, 24)
        queries = torch.nn.functional.normalize(queries.view(3, 6, 4), dim=-1).view(3, 24)
    full = d.as_rho(d.matrix(refs, refs))
    want = full[~torch.eye(k, dtype=torch.bool)].mean()
    seen = []
    raw = Distance.raw
    monkeypatch.setattr(Distance, "raw", lambda self, a, b: seen.append((a, b)) or raw(self, a, b))
    got = reference_spread(refs, d)
    monkeypatch.undo()
    assert [len(a) for a, _ in seen] == [k * (k - 1) // 2]  # one call, each distinct pair once
    pairs = {(int(torch.nonzero((refs == x).all(1))[0]), int(torch.nonzero((refs == y).all(1))[0])) for x, y in zip(*seen[0])}
    assert pairs == {(i, j) for i in range(k) for j in range(i + 1, k)}
    assert float(got) > 0 and float(got) == pytest.approx(float(want), rel=1e-9)
    wn = template_scores(refs, queries, d, "wnorm")
    np.testing.assert_allclose(wn.numpy(), (-d.as_rho(d.matrix(queries, refs)).mean(1) / want).numpy(), rtol=1e-9)
    for base in ("mean", "nearest"):  # the offsets shift the base scores by a share of the same spread
        shifted = template_scores(refs, queries, d, f"{base}_offset") - template_scores(refs, queries, d, base)
        np.testing.assert_allclose(shifted.numpy(), np.full(3, OFFSET_WEIGHT * float(want)), rtol=1e-9)
        for w in (0.0, 0.5, 1.5):
            shifted = template_scores(refs, queries, d, f"{base}_offset", offset_weight=w) - template_scores(refs, queries, d, base)
            np.testing.assert_allclose(shifted.numpy(), np.full(3, w * float(want)), rtol=1e-9, atol=1e-12)


def test_offsets_move_whole_writers_and_keep_each_writers_order():
    """Two writers, one with tight references, one with spread-out ones (DTW frames): the offsets leave each
    writer's query order (so the writer-specific EER) as mean / nearest give it, and raise the spread-out
    writer's scores more, which is what lets one threshold fit both."""
    g = torch.Generator().manual_seed(11)
    d = Distance("dtw", frame_dim=4)
    unit = lambda x: torch.nn.functional.normalize(x.view(len(x), 6, 4), dim=-1).view(len(x), 24)
    centre = torch.randn(1, 24, generator=g, dtype=torch.float64)
    tight, loose = unit(centre + 0.05 * torch.randn(5, 24, generator=g, dtype=torch.float64)), \
        unit(centre + 0.8 * torch.randn(5, 24, generator=g, dtype=torch.float64))
    queries = unit(centre + 0.4 * torch.randn(6, 24, generator=g, dtype=torch.float64))
    lift = {}
    for name, refs in (("tight", tight), ("loose", loose)):
        for base in ("mean", "nearest"):
            plain, off = template_scores(refs, queries, d, base), template_scores(refs, queries, d, f"{base}_offset")
            assert torch.equal(torch.argsort(plain), torch.argsort(off))
            lift[name, base] = float((off - plain).mean())
    for base in ("mean", "nearest"):
        assert lift["loose", base] > 2 * lift["tight", base] > 0


@pytest.mark.parametrize("kind", ["cosine", "euclidean"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_higher_means_closer_to_the_references(strategy, kind):
    g = torch.Generator().manual_seed(0)
    centre = torch.randn(8, generator=g) * 3
    refs = centre + 0.1 * torch.randn(5, 8, generator=g)
    near = centre + 0.1 * torch.randn(1, 8, generator=g)
    far = -centre + 0.1 * torch.randn(1, 8, generator=g)
    s = template_scores(refs, torch.cat([near, far]), Distance(kind), strategy)
    assert s[0] > s[1]
    assert torch.isfinite(s).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_scores_ignore_reference_order_and_identical_references_stay_finite(strategy):
    g = torch.Generator().manual_seed(1)
    refs, q = torch.randn(5, 8, generator=g), torch.randn(2, 8, generator=g)
    d = Distance("cosine")
    torch.testing.assert_close(template_scores(refs, q, d, strategy), template_scores(refs.flip(0), q, d, strategy))
    same = refs[:1].repeat(3, 1)
    assert torch.isfinite(template_scores(same, q, d, strategy)).all()


def test_strategies_needing_two_references_say_so():
    with pytest.raises(VerifierError, match="at least 2 references"):
        template_scores(torch.randn(1, 4), torch.randn(1, 4), Distance("cosine"), "gaussian")
    with pytest.raises(VerifierError, match="at least 2 references.*score with 'nearest'"):
        template_scores(torch.randn(1, 4), torch.randn(1, 4), Distance("cosine"), "nearest_offset")
    with pytest.raises(VerifierError, match="unknown scoring strategy"):
        template_scores(torch.randn(2, 4), torch.randn(1, 4), Distance("cosine"), "median")


# --------------------------------------------------------------------------- thresholds


def brute_threshold_at_far(impostor, far):
    for t in sorted(set(impostor) | {np.nextafter(v, np.inf) for v in impostor}):
        if sum(v >= t for v in impostor) / len(impostor) <= far + 1e-12:
            return t
    raise AssertionError


@pytest.mark.parametrize("seed", range(20))
def test_threshold_at_far_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    imp = rng.integers(0, 6, rng.integers(1, 12)).astype(float).tolist()  # many ties
    for far in (0.0, 0.01, 0.1, 0.25, 0.5, 1.0):
        t = threshold_at_far(imp, far)
        assert t == brute_threshold_at_far(imp, far)
        assert np.mean(np.array(imp) >= t) <= far + 1e-12


def _verifier(calibration, strategy="mean"):
    torch.manual_seed(0)
    enc = TDNN(TDNNConfig.from_preset("bromley", 8))
    return Verifier(enc, FeatureConfig(), "cosine", strategy, calibration)


def test_thresholds_come_from_the_stored_validation_scores():
    cal = {"mean": {"genuine": [0.9, 0.8, 0.7, 0.6], "skilled": [0.1, 0.65, 0.3, 0.2], "random": [0.0]}}
    v = _verifier(cal)
    assert v.threshold() == eer(cal["mean"]["genuine"], cal["mean"]["skilled"])[1]
    assert v.threshold(0.0) > 0.65 and v.threshold(0.25) == pytest.approx(0.3, abs=1e-9)
    with pytest.raises(VerifierError, match="between 0 and 1"):
        v.threshold(1.5)
    with pytest.raises(VerifierError, match="no validation scores for strategy 'wnorm'"):
        _verifier(cal, "wnorm").threshold()
    with pytest.raises(VerifierError, match="'mean_offset' .a model trained before this strategy existed holds none"):
        _verifier(cal, "mean_offset").threshold()  # a model file from before the offsets: its calibration lacks them
    with pytest.raises(VerifierError, match="no validation scores for strategy 'mean'; give"):
        _verifier({}).threshold()  # no calibration at all: nothing suggests an older model


@pytest.mark.parametrize("strategy", ["wnorm", "mean_offset", "nearest_offset", "mean"])
def test_a_template_carries_its_spread_so_queries_do_not_recompute_it(strategy, monkeypatch):
    """Made for a strategy that reads the spread, a template holds it (the value reference_spread gives);
    scoring a query then does not compute it again, and gives the scores of the recomputing path. A template made for another strategy holds none and is still
    scored by every strategy."""
    v = _verifier({}, strategy)
    g = np.random.default_rng(4)
    reps = g.normal(size=(5, v.encoder.cfg.output_dim)).astype(np.float32)
    queries = g.normal(size=(3, v.encoder.cfg.output_dim)).astype(np.float32)
    t = v.template("w", reps)
    if strategy == "mean":
        assert t.spread is None
        v.strategy = "mean_offset"  # scored by a strategy the template was not made for: computed on the fly
    else:
        assert t.spread == pytest.approx(float(reference_spread(torch.from_numpy(reps), v.distance)), rel=1e-7)
    want = template_scores(torch.from_numpy(reps), torch.from_numpy(queries), v.distance, v.strategy).numpy()
    import tdnn_siamese.verifier as verifier_module

    calls = []
    spread_fn = verifier_module.reference_spread
    monkeypatch.setattr(verifier_module, "reference_spread", lambda refs, d: calls.append(len(refs)) or spread_fn(refs, d))
    got = v.score_reps(t, queries)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert calls == ([] if t.spread is not None else [5])


def test_a_verifier_scores_the_offsets_with_its_models_weight():
    """A model's offset weight (stored in its file) is the one its queries are scored with: the scores of two
    weights differ by the difference of weights times the template's spread, every query alike."""
    g = np.random.default_rng(5)
    reps, queries = (g.normal(size=(n, 16)).astype(np.float32) for n in (5, 4))
    scores = {}
    for w in (0.25, 0.75):
        v = _verifier({}, "nearest_offset")
        v = Verifier(v.encoder, v.feature_config, "cosine", "nearest_offset", {}, offset_weight=w)
        t = v.template("w", reps)
        scores[w] = v.score_reps(t, queries)
        want = template_scores(torch.from_numpy(reps), torch.from_numpy(queries), v.distance, "nearest_offset", offset_weight=w)
        np.testing.assert_allclose(scores[w], want.numpy(), rtol=1e-6)
    np.testing.assert_allclose(scores[0.75] - scores[0.25], np.full(4, 0.5 * t.spread), rtol=1e-5)
    for bad in (-0.25, float("nan")):
        with pytest.raises(VerifierError, match="offset_weight must be a finite number >= 0"):
            Verifier(v.encoder, v.feature_config, "cosine", "nearest_offset", {}, offset_weight=bad)


def test_templates_from_another_model_are_refused(sample_model):
    v = Verifier.from_checkpoint(sample_model)
    other = _verifier({})
    t = other.template("w", np.ones((2, other.encoder.cfg.output_dim), np.float32))
    with pytest.raises(VerifierError, match="enrolled with another model"):
        v.score_reps(t, np.ones((1, 16), np.float32))
    with pytest.raises(VerifierError, match="no reference signatures"):
        v.enroll("w", [])


def test_a_later_feature_field_at_its_old_value_keeps_the_fingerprint():
    """A model made before ``features.znorm`` existed (so without it) keeps the fingerprint it had, and with it
    its template stores; a model trained with znorm has another one."""
    import hashlib

    from tdnn_siamese.verifier import model_fingerprint

    torch.manual_seed(0)
    enc = TDNN(TDNNConfig.from_preset("modern", 5, channels=(8, 8, 8, 8, 8), embedding_dim=4, segments=16).member)
    old = FeatureConfig(feature_set="kinematic", n_steps=None)

    def as_before(features: dict) -> str:  # the fingerprint as computed before znorm existed
        h = hashlib.sha256()
        h.update(repr(sorted(enc.cfg.to_dict().items())).encode())
        h.update(repr(sorted(features.items())).encode())
        h.update(b"dtw")
        for name, t in sorted(enc.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    before = {k: v for k, v in old.to_dict().items() if k != "znorm"}
    assert model_fingerprint(enc, old, "dtw") == as_before(before)
    assert model_fingerprint(enc, old.replace(znorm=True), "dtw") not in (as_before(before), model_fingerprint(enc, old, "dtw"))


# --------------------------------------------------------------------------- round trip


def test_round_trip_on_the_sample_genuines_score_higher_than_forgeries(sample_model):
    """Acceptance: enroll 5 genuines, verify held-out genuines and skilled forgeries of the same writer."""
    table = datasets.load(SAMPLE)
    v = Verifier.from_checkpoint(sample_model)
    writers = [w for w in datasets.writers(table)]
    gaps = []
    for w in writers:
        rows = table[table.writer == w]
        gen = [datasets.read_row(r) for r in rows[rows.label == "genuine"].sort_values("number").to_dict("records")]
        skl = [datasets.read_row(r) for r in rows[rows.label == "skilled"].to_dict("records")]
        template = v.enroll(w, gen[:5])
        assert template.n_references == 5 and template.model_fingerprint == v.fingerprint
        g, s = v.score_many(template, gen[5:]), v.score_many(template, skl)
        assert np.isfinite(g).all() and np.isfinite(s).all()
        gaps.append(g.mean() - s.mean())
        d = v.verify(template, gen[5])
        assert isinstance(d, Decision) and d.accepted == (d.score >= d.threshold) and d.score == pytest.approx(g[0], rel=1e-3, abs=1e-6)
    assert gaps[0] > 0  # the writer the acceptance names: the first
    assert np.mean(np.array(gaps) > 0) >= 0.9, pd.Series(gaps, index=writers)


def test_log_odds_is_an_increasing_map_fitted_on_the_validation_scores(sample_model):
    v = Verifier.from_checkpoint(sample_model)
    cal = v.calibration[v.strategy]
    raw = np.sort(np.concatenate([cal["genuine"], cal["skilled"]]))
    lo = v.log_odds(raw)
    assert np.isfinite(lo).all() and (np.diff(lo) >= 0).all() and lo[-1] > lo[0]
    assert np.mean(v.log_odds(cal["genuine"])) > 0 > np.mean(v.log_odds(cal["skilled"]))  # genuine on the positive side
    bare = Verifier(v.encoder, v.feature_config, "cosine", "mean", calibration={})
    with pytest.raises(VerifierError, match="no validation scores"):
        bare.log_odds([0.5])


def test_a_signature_too_short_for_the_encoder_is_a_feature_error_naming_it():
    from tdnn_siamese.features import FeatureError
    from tdnn_siamese.signature import Signature

    enc = TDNN(TDNNConfig.from_preset("bromley", 8)).eval()  # needs 38 steps
    v = Verifier(enc, FeatureConfig(n_steps=None), "cosine", "mean", calibration={})
    t = np.arange(20) * 10.0
    short = Signature(t=t, x=np.cos(t / 50), y=np.sin(t / 50), pen_down=np.ones(20, bool), source="short.csv")
    with pytest.raises(FeatureError, match="short.csv: 20 time steps; the model needs at least 38"):
        v.features(short)


def test_constant_channels_give_finite_embeddings():
    enc = TDNN(TDNNConfig.from_preset("modern", 8, segments=1).member).eval()
    x = torch.full((3, 50, 8), 37.0)
    assert torch.isfinite(enc(x)).all()


def test_log_odds_refuses_inverted_validation_scores(sample_model):
    v = Verifier.from_checkpoint(sample_model)
    inverted = Verifier(v.encoder, v.feature_config, "cosine", "mean",
                        calibration={"mean": {"genuine": [0.1, 0.2, 0.3], "skilled": [0.5, 0.6, 0.7]}})
    with pytest.raises(VerifierError, match="rank impostors above genuine"):
        inverted.log_odds([0.5])
