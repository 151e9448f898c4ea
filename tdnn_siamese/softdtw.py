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

BUCKET = 128  # padded pairs are aligned in groups of this many, by length
_BIG = 1e10  # an unreachable cell; finite, so that softmin's gradient stays finite where no path leads


def _softmin3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, gamma: float) -> torch.Tensor:
    if gamma == 0:
        return torch.minimum(torch.minimum(a, b), c)
    return -gamma * torch.logsumexp(torch.stack([a, b, c]) / -gamma, dim=0)


def _lengths(lengths: torch.Tensor | None, count: int, full: int) -> torch.Tensor:
    """Per-sequence lengths on the CPU (long), ``full`` for each of ``count`` where none are given."""
    return torch.full((count,), full) if lengths is None else lengths.to("cpu", torch.long)


def soft_dtw_cost(cost: torch.Tensor, gamma: float, n: torch.Tensor | None = None, m: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-DTW value of cost matrices (P, N, M) -> (P,), not normalised.

    ``n``, ``m`` (P,): the pairs' own lengths, where the matrices are padded
    (default N and M); the value is then ``R[n, m]``, which padding cannot
    reach (a cell depends only on cells above and to its left).
    """
    if cost.ndim != 3 or min(cost.shape[1:]) < 1:
        raise ValueError(f"cost matrices must be (P, N, M) with N, M >= 1, got {tuple(cost.shape)}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    P, N, M = cost.shape
    n, m = _lengths(n, P, N), _lengths(m, P, M)
    if len(n) != P or len(m) != P or (P and (int(n.min()) < 1 or int(m.min()) < 1 or int(n.max()) > N or int(m.max()) > M)):
        raise ValueError(f"lengths must lie in [1, {N}] and [1, {M}], one per matrix")
    if cost.device.type == "cpu":
        if not (torch.is_grad_enabled() and cost.requires_grad):
            return torch.from_numpy(_forward(cost.detach().numpy(), gamma, n.numpy(), m.numpy(), keep_weights=False)[0]).to(cost.dtype)
        if gamma > 0:  # training: the analytic gradient, 2-10x faster than autograd through the loop
            return _SoftDTWFunction.apply(cost, gamma, n, m)
    padded = bool((n < N).any() or (m < M).any())
    return _soft_dtw_torch(cost, gamma, (n, m) if padded else None)


def _soft_dtw_torch(cost: torch.Tensor, gamma: float, ends: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The recursion in torch ops, differentiated by autograd (hard DTW's gradient, other devices)."""
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
    if ends is not None:  # R[n, m] lies on diagonal n + m, at position n: keep it when that diagonal passes
        last, rows = (ends[0] + ends[1] - 2).to(cost.device), torch.arange(P, device=cost.device)
        out = cost.new_zeros(P)
    for t in range(skew.shape[1]):
        diag = torch.cat([big, prev2[:, :-1]], dim=1)  # R[i-1, j-1]
        up = torch.cat([big, prev1[:, :-1]], dim=1)  # R[i-1, j]
        cur = skew[:, t] + _softmin3(diag, up, prev1, gamma)  # prev1 itself is R[i, j-1]
        cur = torch.where(valid[t], cur, _BIG)  # cells off the matrix stay unreachable
        if ends is not None:
            out = torch.where(last == t, cur[rows, ends[0].to(cost.device)], out)
        prev2, prev1 = prev1, cur
    return out if ends is not None else prev1[:, N]


def soft_dtw(a: torch.Tensor, b: torch.Tensor, gamma: float, la: torch.Tensor | None = None,
             lb: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised soft-DTW distance of frame sequences row by row: (P, N, C) x (P, M, C) -> (P,).

    ``la``, ``lb`` (P,): each row's own number of frames where the sequences
    are padded; the distance is then ``R[la, lb] / (la + lb)``.
    """
    if la is None and lb is None:
        return soft_dtw_cost(_costs(a, b), gamma) / (a.shape[1] + b.shape[1])
    la, lb = _lengths(la, len(a), a.shape[1]), _lengths(lb, len(b), b.shape[1])
    if not len(a):
        return a.new_zeros(0)
    # pairs of similar lengths together, each group cut to its longest pair's extent: a short pair need not run the
    # longest one's diagonals
    order = torch.argsort(la + lb, stable=True) if len(a) > BUCKET else torch.arange(len(a))
    groups = order.split(BUCKET)
    out = torch.cat([soft_dtw_cost(_costs(a[k][:, : int(la[k].max())], b[k][:, : int(lb[k].max())]), gamma, la[k], lb[k])
                     / (la[k] + lb[k]).to(a.device, a.dtype) for k in groups])
    return out if len(groups) == 1 else out[torch.argsort(order).to(a.device)]


def _costs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances of every frame of ``a`` with every frame of ``b``, row by row: (P, N, M)."""
    return ((a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :] - 2 * a @ b.transpose(1, 2)).clamp_min(0)


def soft_dtw_matrix(a: torch.Tensor, b: torch.Tensor, gamma: float, chunk: int = 1024, la: torch.Tensor | None = None,
                    lb: torch.Tensor | None = None) -> torch.Tensor:
    """All-against-all normalised soft-DTW: (Na, N, C) x (Nb, M, C) -> (Na, Nb); ``la``, ``lb`` as in :func:`soft_dtw`."""
    ia, ib = torch.meshgrid(torch.arange(len(a), device=a.device), torch.arange(len(b), device=b.device), indexing="ij")
    ia, ib = ia.reshape(-1), ib.reshape(-1)
    if la is None and lb is None:
        out = [soft_dtw(a[ia[s : s + chunk]], b[ib[s : s + chunk]], gamma) for s in range(0, len(ia), chunk)]
    else:
        la, lb = _lengths(la, len(a), a.shape[1]), _lengths(lb, len(b), b.shape[1])
        out = [soft_dtw(a[ia[s : s + chunk]], b[ib[s : s + chunk]], gamma, la[ia[s : s + chunk].cpu()], lb[ib[s : s + chunk].cpu()])
               for s in range(0, len(ia), chunk)]
    return (torch.cat(out) if out else a.new_zeros(0)).reshape(len(a), len(b))


def _forward(cost: np.ndarray, gamma: float, n: np.ndarray, m: np.ndarray, keep_weights: bool) -> tuple[np.ndarray, list | None]:
    """R[n, m] of each pair (P,) and, when asked, every cell's softmin weights of its three predecessors.

    Anti-diagonal d = i + j at a time, pairs innermost: row ``[i + 1]`` of a
    diagonal's (N + 3, P) array holds cell (i, d - i) of every pair (row 0 a
    sentinel for i = -1), so each step works on one contiguous block. Only
    the diagonal's cells on the matrix, i = lo..hi, are computed; the rest
    stay _BIG. The weights, per diagonal ``(lo, w)`` with w (3, hi - lo + 3, P)
    for i = lo - 1..hi + 1 (a zero row either side): the softmin's share of
    R[i-1, j-1], R[i-1, j] and R[i, j-1] in cell (i, j), i.e. d R[i, j] / d
    predecessor. The backward pass needs only these (Cuturi & Blondel 2017,
    Algorithm 2, with its exponentials taken once, here: in float32 its
    gradient is also 15-40x closer to float64's than re-exponentiating
    differences of R's large values).
    """
    P, N, M = cost.shape
    ct = np.ascontiguousarray(cost.transpose(1, 2, 0)).reshape(N * M, P)  # row (i - 1) M + j - 1: cell (i, j) of every pair
    step = np.arange(N) * (M - 1)  # cell (i, d - i) is row (i - 1)(M - 1) + d - 2
    W = N + 3
    prev2, prev1 = np.full((W, P), _BIG, cost.dtype), np.full((W, P), _BIG, cost.dtype)
    prev2[1] = 0.0  # diagonal 0: R[0, 0] = 0; diagonal 1 (R[0, 1], R[1, 0]) unreachable
    weights = [] if keep_weights and gamma > 0 else None
    last, out = n + m, np.zeros(P, cost.dtype)
    for d in range(2, N + M + 1):
        lo, hi = max(1, d - M), min(N, d - 1)
        a, b, r = prev2[lo : hi + 1], prev1[lo : hi + 1], prev1[lo + 1 : hi + 2]  # R[i-1, j-1], R[i-1, j], R[i, j-1]
        s = np.minimum(np.minimum(a, b), r)
        if gamma > 0:
            ea, eb, er = np.exp((s - a) / gamma), np.exp((s - b) / gamma), np.exp((s - r) / gamma)
            total = ea + eb + er
            s = s - gamma * np.log(total)
            if weights is not None:
                w = np.zeros((3, hi - lo + 3, P), cost.dtype)
                np.divide(ea, total, out=w[0, 1:-1]), np.divide(eb, total, out=w[1, 1:-1]), np.divide(er, total, out=w[2, 1:-1])
                weights.append((lo, w))
        cur = np.full((W, P), _BIG, cost.dtype)
        cur[lo + 1 : hi + 2] = ct.take(step[lo - 1 : hi] + (d - 2), axis=0) + s
        hit = np.flatnonzero(last == d)
        out[hit] = cur[n[hit] + 1, hit]
        prev2, prev1 = prev1, cur
    return out, weights


def _alignment(weights: list, n: np.ndarray, m: np.ndarray, N: int, M: int) -> np.ndarray:
    """d R[n, m] / d cost (P, N, M): the expected alignment E, from the end cell back along the forward's softmin
    weights: E[i, j] = E[i+1, j] w_up(i+1, j) + E[i, j+1] w_left(i, j+1) + E[i+1, j+1] w_diag(i+1, j+1).
    A pair's cells past its own (n, m) are never reached from its end cell, so their E stays 0. E is kept per
    diagonal like the weights: rows i = lo - 1..hi + 1, zero either side."""
    P = len(n)
    grad = np.zeros((N, M, P), weights[0][1].dtype)
    if not P:
        return grad.transpose(2, 0, 1)
    e1 = e2 = None  # E of diagonals d + 1 and d + 2: (lo, rows), None where it is all zero
    for d in range(int((n + m).max()), 1, -1):
        lo, hi = max(1, d - M), min(N, d - 1)
        e0 = np.zeros((hi - lo + 3, P), grad.dtype)
        body = e0[1:-1]
        if e1 is not None:
            lo1, w1 = weights[d - 1]  # weights[k] is diagonal k + 2
            up, left = slice(lo + 2 - lo1, hi + 3 - lo1), slice(lo + 1 - lo1, hi + 2 - lo1)  # rows of i + 1 and of i
            body += e1[1][up] * w1[1, up]  # successor (i + 1, j): its "up" predecessor is (i, j)
            body += e1[1][left] * w1[2, left]  # successor (i, j + 1): its "left"
        if e2 is not None:
            lo2, w2 = weights[d]
            diag = slice(lo + 2 - lo2, hi + 3 - lo2)
            body += e2[1][diag] * w2[0, diag]  # successor (i + 1, j + 1): its "diagonal"
        hit = np.flatnonzero(n + m == d)
        e0[n[hit] + 1 - lo, hit] += 1.0  # the end cell: d R[n, m] / d R[n, m] = 1
        i = np.arange(lo, hi + 1)
        grad[i - 1, d - i - 1] = body
        e2, e1 = e1, (lo, e0)
    return grad.transpose(2, 0, 1)


class _SoftDTWFunction(torch.autograd.Function):
    """Soft-DTW with its analytic gradient (Cuturi & Blondel 2017), both recursions in NumPy. Autograd through
    the anti-diagonal loop keeps a dozen small tensors per diagonal and replays them backwards; the
    expected-alignment recursion needs only the forward's softmin weights."""

    @staticmethod
    def forward(ctx, cost: torch.Tensor, gamma: float, n: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        value, weights = _forward(cost.detach().cpu().numpy(), gamma, n.numpy(), m.numpy(), keep_weights=True)
        ctx.saved = (weights, n.numpy(), m.numpy(), cost.shape[1], cost.shape[2])
        return torch.from_numpy(value).to(cost.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad = torch.from_numpy(_alignment(*ctx.saved)).to(grad_out.dtype)
        return grad * grad_out[:, None, None], None, None, None
