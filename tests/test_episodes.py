import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tdnn_siamese.distances import Distance
from tdnn_siamese.episodes import Episode, EpisodeSampler, template_ranking_loss
from tdnn_siamese.verifier import template_scores


def table(n_writers=6, n_gen=8, n_skl=4, short_writer=False):
    rows = [(f"w{w}", "genuine") for w in range(n_writers) for _ in range(n_gen)]
    rows += [(f"w{w}", "skilled") for w in range(n_writers) for _ in range(n_skl)]
    if short_writer:
        rows += [("short", "genuine")] * 2
    return pd.DataFrame(rows, columns=["writer", "label"])


def test_episodes_are_what_they_claim():
    t = table(short_writer=True)
    w, lab = t["writer"].to_numpy(), t["label"].to_numpy()
    eps = EpisodeSampler(t, k=5, min_refs=2, n_genuine_queries=5, n_skilled=3, n_random=2).sample(200, np.random.default_rng(0))
    assert len(eps) == 200
    for e in eps:
        writer = w[e.references[0]]
        assert writer != "short"  # 2 genuines cannot give 2 references and a query
        assert len(e.references) == 5 and len(e.genuine) == 3  # 8 genuines: 5 references, the other 3 as queries
        assert len(set(e.references) | set(e.genuine)) == 8 and all(w[i] == writer and lab[i] == "genuine" for i in e.rows[:8])
        skl, rnd = e.impostors[:3], e.impostors[3:]  # "short" may give a random forgery
        assert all(w[i] == writer and lab[i] == "skilled" for i in skl) and len(set(skl)) == 3
        assert len(rnd) == 2 and all(w[i] != writer and lab[i] == "genuine" for i in rnd)


def test_reference_count_follows_the_writer_and_sampling_is_seeded():
    t = table(n_gen=4)
    s = EpisodeSampler(t, k=5, min_refs=2)
    eps = s.sample(10, np.random.default_rng(3))
    assert all(len(e.references) == 3 and len(e.genuine) == 1 for e in eps)  # k capped at n_genuine - 1
    again = s.sample(10, np.random.default_rng(3))
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(eps, again))
    with pytest.raises(ValueError, match="3 genuine signatures"):
        EpisodeSampler(table(n_gen=2), min_refs=2)


def test_session_pool_enrolls_from_one_session_and_queries_with_the_rest():
    """pool "session": references all of one session (either, at random), genuine queries from the writer's other
    genuines; a writer without two usable sessions (here: no session known) is drawn as under "all"."""
    t = table(n_writers=4, n_gen=10)
    t["session"] = pd.array([1 + (i % 10 >= 6) if lab == "genuine" and w != "w3" else None
                             for i, (w, lab) in enumerate(zip(t["writer"], t["label"]))], dtype="Int64")
    ses, w = t["session"], t["writer"].to_numpy()
    eps = EpisodeSampler(t, k=5, n_genuine_queries=5, pool="session").sample(400, np.random.default_rng(1))
    sizes = set()
    for e in eps:
        refs = ses.iloc[e.references]
        if w[e.references[0]] == "w3":
            assert refs.isna().all() and len(e.references) == 5
            continue
        assert refs.nunique() == 1 and not refs.isna().any()  # one session: 6 signatures in session 1, 4 in session 2
        s = int(refs.iloc[0])
        sizes.add((s, len(e.references)))
        assert not set(e.references) & set(e.genuine) and len(e.genuine) == 5
        assert all(w[i] == w[e.references[0]] for i in e.genuine)
    assert sizes == {(1, 5), (2, 4)}  # session 2 holds only 4: all of them are the references
    # "all" (the default) draws across sessions: some episode mixes them
    mixed = EpisodeSampler(t, k=5, n_genuine_queries=5).sample(50, np.random.default_rng(1))
    assert any(ses.iloc[e.references].nunique() == 2 for e in mixed)
    with pytest.raises(ValueError, match="episode pool"):
        EpisodeSampler(t, pool="sessions")


def _manual(emb, eps, dist, strategy, scale):
    out, start = [], 0
    for e in eps:
        n = len(e.rows)
        x = emb[start : start + n]
        start += n
        k, ng = len(e.references), len(e.genuine)
        s = template_scores(x[:k], x[k:], dist, strategy)
        out.append(np.mean([np.log1p(np.exp(scale * float(f - g))) for g in s[:ng] for f in s[ng:]]))
    return float(np.mean(out))


@pytest.mark.parametrize("strategy", ["mean", "gaussian", "wnorm"])
def test_loss_is_the_mean_softplus_of_misordered_scores(strategy):
    torch.manual_seed(0)
    eps = [Episode(np.arange(3), np.arange(3, 5), np.arange(5, 9)), Episode(np.arange(4), np.arange(4, 5), np.arange(5, 7))]
    emb = torch.randn(9 + 7, 6, dtype=torch.float64, requires_grad=True)
    dist = Distance("cosine")
    loss = template_ranking_loss(emb, eps, dist, strategy, scale=2.0)
    assert loss.item() == pytest.approx(_manual(emb.detach(), eps, dist, strategy, 2.0), rel=1e-9)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="rows"):
        template_ranking_loss(emb[:-1], eps, dist, strategy, scale=2.0)


def test_loss_is_small_when_genuines_outrank_impostors_and_large_otherwise():
    refs = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [1.0, 0.0]]), dim=1)
    near, far = torch.tensor([[1.0, 0.05]]), torch.tensor([[0.0, 1.0]])
    ep = [Episode(np.arange(3), np.array([3]), np.array([4]))]
    dist = Distance("cosine")
    good = template_ranking_loss(torch.cat([refs, near, far]), ep, dist, "mean", scale=20.0)
    bad = template_ranking_loss(torch.cat([refs, far, near]), ep, dist, "mean", scale=20.0)
    assert good.item() < 1e-6 < 10 < bad.item()


def test_global_weight_adds_the_ranking_across_writers():
    torch.manual_seed(1)
    eps = [Episode(np.arange(3), np.arange(3, 5), np.arange(5, 8)), Episode(np.arange(3), np.arange(3, 4), np.arange(4, 6))]
    emb = torch.randn(8 + 6, 5, dtype=torch.float64)
    dist = Distance("cosine")
    within = template_ranking_loss(emb, eps, dist, "mean", scale=3.0)
    both = template_ranking_loss(emb, eps, dist, "mean", scale=3.0, global_weight=0.5)
    s1 = template_scores(emb[:3], emb[3:8], dist, "mean")
    s2 = template_scores(emb[8:11], emb[11:14], dist, "mean")
    g, f = torch.cat([s1[:2], s2[:1]]), torch.cat([s1[2:], s2[1:]])
    across = F.softplus(3.0 * (f[None, :] - g[:, None])).mean()
    assert both.item() == pytest.approx(within.item() + 0.5 * across.item(), rel=1e-12)


def test_no_impostor_for_any_template_writer_is_refused():
    """Writer A has genuines but no forgeries; B has only forgeries: no episode could have an impostor."""
    t = pd.DataFrame([("A", "genuine")] * 5 + [("B", "skilled")] * 3, columns=["writer", "label"])
    with pytest.raises(ValueError, match="impostors"):
        EpisodeSampler(t, min_refs=2)


@pytest.mark.parametrize("strategy", ["mean", "nearest", "wnorm", "mean_offset", "nearest_offset"])
def test_dtw_episodes_score_in_one_batch_what_template_scores_gives(strategy):
    """The batched soft-DTW path of the loss must equal scoring each episode with the verifier's template_scores."""
    torch.manual_seed(0)
    eps = [Episode(np.arange(3), np.arange(3, 5), np.arange(5, 9)), Episode(np.arange(4), np.arange(4, 5), np.arange(5, 7))]
    emb = torch.randn(9 + 7, 6 * 3, dtype=torch.float64)
    dist = Distance("dtw", frame_dim=3)
    loss = template_ranking_loss(emb, eps, dist, strategy, scale=2.0)
    assert loss.item() == pytest.approx(_manual(emb, eps, dist, strategy, 2.0), rel=1e-9)


def test_imitations_are_the_writers_other_genuines_drawn_after_everything_else():
    t = table(n_gen=9)
    w, lab = t["writer"].to_numpy(), t["label"].to_numpy()
    plain = EpisodeSampler(t, k=5, n_genuine_queries=2, n_skilled=2, n_random=1).sample(30, np.random.default_rng(4))[0]
    with_im = EpisodeSampler(t, k=5, n_genuine_queries=2, n_skilled=2, n_random=1, n_imitations=3).sample(30, np.random.default_rng(4))
    first = with_im[0]  # imitations are drawn last: the episode is otherwise the one drawn without them
    assert all(np.array_equal(getattr(first, f), getattr(plain, f)) for f in ("references", "genuine", "impostors"))
    assert len(plain.imitations) == 0 and not plain.is_imitation.any() and plain.n_impostors == 3
    for e in with_im:
        own = w[e.references[0]]
        assert len(e.imitations) == 3 and len(set(e.imitations)) == 3 and e.n_impostors == 6
        assert all(w[i] == own and lab[i] == "genuine" for i in e.imitations) and not set(e.imitations) & set(e.references)
        assert np.array_equal(e.rows[e.is_imitation], e.imitations) and e.is_imitation[-3:].all() and not e.is_imitation[:-3].any()


def test_the_loss_counts_imitations_as_impostors():
    torch.manual_seed(2)
    dist = Distance("cosine")
    emb = torch.randn(3 + 2 + 2 + 2, 4, dtype=torch.float64)
    with_im = [Episode(np.arange(3), np.arange(3, 5), np.arange(5, 7), np.array([3, 4]))]
    as_impostors = [Episode(np.arange(3), np.arange(3, 5), np.arange(5, 9))]  # the same rows, all called impostors
    assert template_ranking_loss(emb, with_im, dist, "mean", 2.0).item() == pytest.approx(
        template_ranking_loss(emb, as_impostors, dist, "mean", 2.0).item(), rel=1e-12)
    with pytest.raises(ValueError, match="rows"):
        template_ranking_loss(emb[:-1], with_im, dist, "mean", 2.0)


def test_imitations_alone_are_impostors_enough():
    """Writer A has genuines but no forgeries, B only forgeries: refused above, but imitations give A impostors."""
    t = pd.DataFrame([("A", "genuine")] * 5 + [("B", "skilled")] * 3, columns=["writer", "label"])
    eps = EpisodeSampler(t, min_refs=2, n_skilled=0, n_random=0, n_imitations=1).sample(3, np.random.default_rng(0))
    assert len(eps) == 3 and all(len(e.impostors) == 0 and len(e.imitations) == 1 and e.n_impostors == 1 for e in eps)


def test_no_imitations_draw_exactly_as_before_the_setting():
    t = table(n_gen=9)
    a = EpisodeSampler(t, k=5, n_genuine_queries=2).sample(40, np.random.default_rng(6))
    b = EpisodeSampler(t, k=5, n_genuine_queries=2, n_imitations=0).sample(40, np.random.default_rng(6))
    assert all(np.array_equal(x.rows, y.rows) and len(y.imitations) == 0 for x, y in zip(a, b))
