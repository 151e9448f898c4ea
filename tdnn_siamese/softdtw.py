"""Dynamic time warping of learned frame sequences, differentiable (soft-DTW).

The TDNN's ``frames`` pooling keeps a short sequence of per-frame vectors
instead of one embedding; two signatures are then compared by aligning
their frames with DTW, and the network is trained through the alignment
(the design of DsDTW: Jiang, Lai, Huang et al., "DsDTW: Local Representation
Learning with Deep Soft-DTW for Dynamic Signature Verification", IEEE TIFS
2022; soft-DTW: Cuturi & Blondel, "Soft-DTW: a Differentiable Loss Function
for Time-Series", ICML 2017).

The cost of aligning frame ``a_i`` with ``b_j`` is their squared Euclidean
distance; ``R[i, j] = cost(i, j) + softmin_gamma(R[i-1, j-1], R[i-1, j],
R[i, j-1])`` with ``softmin_gamma(x) = -gamma log sum exp(-x / gamma)``
(``gamma = 0``: the plain minimum, classic DTW). The distance is
``R[N, M] / (N + M)``. The recursion runs over anti-diagonals, so a batch
of pairs costs ``N + M - 1`` vectorised steps.

>>> import torch
>>> a = torch.tensor([[[0.0], [1.0], [2.0]]])
>>> soft_dtw(a, torch.tensor([[[0.0], [1.0], [1.0], [2.0]]]), gamma=0.0).tolist()
[0.0]
>>> round(float(soft_dtw(a, a + 1.0, gamma=0.0)[0]), 4)  # 1-1 and 2-2 free, 0-1 and 2-3 cost 1 each: 2 / (3 + 3)
0.3333
"""

from __future__ import annotations

import numpy as np
import torch

_BIG = 1e10  # an unreachable cell; finite, so that softmin's gradient stays finite where no path leads


def _softmin3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, gamma: float) -> torch.Tensor:
    if gamma == 0:
        return torch.minimum(torch.minimum(a, b), c)
    return -gamma * torch.logsumexp(torch.stack([a, b, c]) / -gamma, dim=0)


def soft_dtw_cost(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """Soft-DTW value of cost matrices (P, N, M) -> (P,), not normalised."""
    if cost.ndim != 3 or min(cost.shape[1:]) < 1:
        raise ValueError(f"cost matrices must be (P, N, M) with N, M >= 1, got {tuple(cost.shape)}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if not (torch.is_grad_enabled() and cost.requires_grad) and cost.device.type == "cpu":
        return torch.from_numpy(_soft_dtw_numpy(cost.detach().numpy(), gamma)).to(cost.dtype)
    P, N, M = cost.shape
    i = torch.arange(N + 1, device=cost.device)
    d = torch.arange(2, N + M + 1, device=cost.device)[:, None]  # (D, 1): the anti-diagonals i + j = d
    j = d - i  # (D, N + 1)
    valid = (i >= 1) & (i <= N) & (j >= 1) & (j <= M)
    flat = ((i - 1).clamp(0, N - 1) * M + (j - 1).clamp(0, M - 1)).reshape(-1)
    skew = cost.reshape(P, N * M)[:, flat].reshape(P, -1, N + 1)  # (P, D, N + 1): cost(i, d - i), gathered once
    skew = torch.where(valid, skew, _BIG)
    big = cost.new_full((P, 1), _BIG)
    prev2 = torch.cat([cost.new_zeros((P, 1)), cost.new_full((P, N), _BIG)], dim=1)  # diagonal 0: R[0, 0] = 0
    prev1 = cost.new_full((P, N + 1), _BIG)  # diagonal 1: R[0, 1], R[1, 0]
    for t in range(skew.shape[1]):
        diag = torch.cat([big, prev2[:, :-1]], dim=1)  # R[i-1, j-1]
        up = torch.cat([big, prev1[:, :-1]], dim=1)  # R[i-1, j]
        cur = skew[:, t] + _softmin3(diag, up, prev1, gamma)  # prev1 itself is R[i, j-1]
        cur = torch.where(valid[t], cur, _BIG)  # cells off the matrix stay unreachable
        prev2, prev1 = prev1, cur
    return prev1[:, N]


def soft_dtw(a: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
    """Normalised soft-DTW distance of frame sequences row by row: (P, N, C) x (P, M, C) -> (P,)."""
    cost = (a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :] - 2 * a @ b.transpose(1, 2)
    return soft_dtw_cost(cost.clamp_min(0), gamma) / (a.shape[1] + b.shape[1])


def soft_dtw_matrix(a: torch.Tensor, b: torch.Tensor, gamma: float, chunk: int = 1024) -> torch.Tensor:
    """All-against-all normalised soft-DTW: (Na, N, C) x (Nb, M, C) -> (Na, Nb)."""
    ia, ib = torch.meshgrid(torch.arange(len(a), device=a.device), torch.arange(len(b), device=b.device), indexing="ij")
    ia, ib = ia.reshape(-1), ib.reshape(-1)
    out = [soft_dtw(a[ia[s : s + chunk]], b[ib[s : s + chunk]], gamma) for s in range(0, len(ia), chunk)]
    return (torch.cat(out) if out else a.new_zeros(0)).reshape(len(a), len(b))


def _soft_dtw_numpy(cost: np.ndarray, gamma: float) -> np.ndarray:
    """The same recursion in NumPy, for scoring (no gradient): a NumPy call costs a fraction of a torch op's
    overhead, and a verification's few small matrices are all overhead (5 x 64 x 64: 2.4 ms against 13 ms)."""
    P, N, M = cost.shape
    i = np.arange(N + 1)
    j = np.arange(2, N + M + 1)[:, None] - i  # (D, N + 1)
    valid = (i >= 1) & (i <= N) & (j >= 1) & (j <= M)
    flat = ((i - 1).clip(0, N - 1) * M + (j - 1).clip(0, M - 1)).reshape(-1)
    skew = np.where(valid, cost.reshape(P, N * M)[:, flat].reshape(P, -1, N + 1), _BIG)  # cost(i, d - i), gathered once
    prev2 = np.full((P, N + 2), _BIG, cost.dtype)  # column 0 a sentinel: prev[:, :-1] shifted right is prev[:, 0:N + 1]
    prev2[:, 1] = 0.0  # diagonal 0: R[0, 0] = 0
    prev1 = np.full((P, N + 2), _BIG, cost.dtype)
    for t in range(skew.shape[1]):
        a, b, r = prev2[:, :-1], prev1[:, :-1], prev1[:, 1:]  # R[i-1, j-1], R[i-1, j], R[i, j-1]
        m = np.minimum(np.minimum(a, b), r)
        if gamma > 0:
            m = m - gamma * np.log(np.exp((m - a) / gamma) + np.exp((m - b) / gamma) + np.exp((m - r) / gamma))
        cur = np.empty_like(prev1)
        cur[:, 0] = _BIG
        np.add(skew[:, t], m, out=cur[:, 1:])  # off the matrix skew is _BIG, so such cells stay >= about _BIG: unreachable
        prev2, prev1 = prev1, cur
    return prev1[:, N + 1]
