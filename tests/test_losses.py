"""Each loss against a plain-Python reference on hand-made embeddings (after pytorch-metric-learning's tests)."""

import math

import pytest
import torch

from tdnn_siamese.distances import Distance, to_score
from tdnn_siamese.losses import PairLoss

A = [[1.0, 0.0], [0.6, 0.8], [3.0, 4.0], [-1.0, 2.0]]
B = [[1.0, 0.0], [0.8, 0.6], [0.0, -2.0], [2.0, 1.0]]
Y = [1, 1, 0, 0]


def cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / (math.hypot(*u) * math.hypot(*v))


def euc(u, v):
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def rho(kind, u, v):
    return 1 - cos(u, v) if kind == "cosine" else euc(u, v)


def reference(name, kind, margin):
    total = 0.0
    for u, v, y in zip(A, B, Y):
        r = rho(kind, u, v)
        if name == "contrastive":
            total += y * r + (1 - y) * max(0.0, margin - r)
        elif name == "contrastive_squared":
            total += 0.5 * y * r**2 + 0.5 * (1 - y) * max(0.0, margin - r) ** 2
        else:
            total += (cos(u, v) - (1.0 if y else -0.9)) ** 2
    return total / len(Y)


@pytest.mark.parametrize("name,kind", [("contrastive", "cosine"), ("contrastive", "euclidean"), ("contrastive_squared", "cosine"),
                                       ("contrastive_squared", "euclidean"), ("bromley", "cosine")])
@pytest.mark.parametrize("margin", [0.5, 1.0, 4.0])
def test_loss_equals_plain_python(name, kind, margin):
    loss = PairLoss(name, Distance(kind), margin=margin)
    got = loss(torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64), torch.tensor(Y))
    assert float(got) == pytest.approx(reference(name, kind, margin), rel=1e-9, abs=1e-12)


def test_margin_only_matters_for_close_forgeries():
    loss = PairLoss("contrastive", Distance("euclidean"), margin=1.0)
    far = loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([0]))
    assert float(far) == 0.0  # a forgery pair beyond the margin costs nothing


def test_bromley_loss_needs_cosine_and_names_are_checked():
    with pytest.raises(ValueError, match="cosine"):
        PairLoss("bromley", Distance("euclidean"))
    with pytest.raises(ValueError, match="unknown loss"):
        PairLoss("triplet", Distance("cosine"))
    with pytest.raises(ValueError, match="unknown distance"):
        Distance("manhattan")


@pytest.mark.parametrize("kind", ["cosine", "euclidean"])
def test_distance_direction_and_score(kind):
    d = Distance(kind)
    a, near, far = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.9, 0.1]]), torch.tensor([[-1.0, 0.5]])
    assert float(d.rho(a, near)) < float(d.rho(a, far))  # rho: smaller = closer
    assert float(to_score(d.raw(a, near), d)) > float(to_score(d.raw(a, far), d))  # score: higher = more genuine
    assert d.larger_is_closer == (kind == "cosine")
    assert float(d.raw(a, near)) == pytest.approx(cos([1, 0], [0.9, 0.1]) if kind == "cosine" else euc([1, 0], [0.9, 0.1]), rel=1e-6)


def test_euclidean_gradient_is_finite_for_identical_embeddings():
    a = torch.tensor([[1.0, 2.0]], requires_grad=True)
    PairLoss("contrastive", Distance("euclidean"))(a, a.detach().clone(), torch.tensor([1])).backward()
    assert torch.isfinite(a.grad).all()
