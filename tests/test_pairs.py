import numpy as np
import pandas as pd
import pytest

from tdnn_siamese.pairs import PairSampler


def table(n_writers=6, n_gen=5, n_skl=3):
    rows = [(f"w{w}", "genuine") for w in range(n_writers) for _ in range(n_gen)]
    rows += [(f"w{w}", "skilled") for w in range(n_writers) for _ in range(n_skl)]
    return pd.DataFrame(rows, columns=["writer", "label"])


def test_pairs_are_what_they_claim():
    t = table()
    p = PairSampler(t).sample(2000, np.random.default_rng(0))
    w, lab = t["writer"].to_numpy(), t["label"].to_numpy()
    for a, b, y, k in zip(p.a, p.b, p.y, p.kind):
        assert lab[a] == "genuine"
        if k == 0:
            assert y == 1 and a != b and w[a] == w[b] and lab[b] == "genuine"
        elif k == 1:
            assert y == 0 and w[a] == w[b] and lab[b] == "skilled"
        else:
            assert y == 0 and w[a] != w[b] and lab[b] == "genuine"
    shares = np.bincount(p.kind, minlength=3) / len(p)
    np.testing.assert_allclose(shares, [0.5, 0.4, 0.1], atol=0.04)  # Bromley et al.'s mix


def test_seeded_and_fresh_each_epoch():
    s = PairSampler(table())
    a, b, c = (s.sample(100, np.random.default_rng(seed)) for seed in ([1, 1], [1, 1], [1, 2]))
    assert np.array_equal(a.a, b.a) and np.array_equal(a.b, b.b)
    assert not np.array_equal(a.a, c.a)


def test_without_forgeries_their_share_goes_to_other_writers(caplog):
    s = PairSampler(table(n_skl=0))
    assert s.mix == (0.5, 0.0, 0.5)
    assert "no skilled forgeries" in caplog.text
    with pytest.raises(ValueError, match="two genuine"):
        PairSampler(table(n_gen=1))
    with pytest.raises(ValueError, match="sum to 1"):
        PairSampler(table(), mix=(0.5, 0.5, 0.5))
