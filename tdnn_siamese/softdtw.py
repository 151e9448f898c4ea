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
    ends = None
    if n is not None or m is not None:
        n, m = _lengths(n, P, N), _lengths(m, P, M)
        if len(n) != P or len(m) != P or int(n.min()) < 1 or int(m.min()) < 1 or int(n.max()) > N or int(m.max()) > M:
            raise ValueError(f"lengths must lie in [1, {N}] and [1, {M}], one per matrix")
        if bool((n < N).any() or (m < M).any()):
            ends = (n, m)
    if cost.device.type == "cpu":
        if not (torch.is_grad_enabled() and cost.requires_grad):
            nm = (ends[0].numpy(), ends[1].numpy()) if ends is not None else None
            return torch.from_numpy(_soft_dtw_numpy(cost.detach().numpy(), gamma, nm)).to(cost.dtype)
        if gamma > 0:  # training: the analytic gradient, 2-10x faster than autograd through the loop
            n_, m_ = ends if ends is not None else (_lengths(None, P, N), _lengths(None, P, M))
            return _SoftDTWFunction.apply(cost, gamma, n_, m_)
    return _soft_dtw_torch(cost, gamma, ends)


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
    if la is not None or lb is not None:  # work on the longest pair's extent only
        la, lb = _lengths(la, len(a), a.shape[1]), _lengths(lb, len(b), b.shape[1])
        if len(a) > BUCKET:  # pairs of similar lengths together: a short pair need not run the longest one's diagonals
            order = torch.argsort(la + lb, stable=True)
            parts = [soft_dtw(a[k], b[k], gamma, la[k], lb[k]) for k in order.split(BUCKET)]
            return torch.cat(parts)[torch.argsort(order).to(a.device)]
        if len(a):
            a, b = a[:, : int(la.max())], b[:, : int(lb.max())]
    cost = (a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :] - 2 * a @ b.transpose(1, 2)
    if la is None:
        return soft_dtw_cost(cost.clamp_min(0), gamma) / (a.shape[1] + b.shape[1])
    return soft_dtw_cost(cost.clamp_min(0), gamma, la, lb) / (la + lb).to(cost.device, cost.dtype)


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


def _soft_dtw_numpy(cost: np.ndarray, gamma: float, ends: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
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
    if ends is not None:
        last, out = ends[0] + ends[1] - 2, np.zeros(P, cost.dtype)
    for t in range(skew.shape[1]):
        a, b, r = prev2[:, :-1], prev1[:, :-1], prev1[:, 1:]  # R[i-1, j-1], R[i-1, j], R[i, j-1]
        m = np.minimum(np.minimum(a, b), r)
        if gamma > 0:
            m = m - gamma * np.log(np.exp((m - a) / gamma) + np.exp((m - b) / gamma) + np.exp((m - r) / gamma))
        cur = np.empty_like(prev1)
        cur[:, 0] = _BIG
        np.add(skew[:, t], m, out=cur[:, 1:])  # off the matrix skew is _BIG, so such cells stay >= about _BIG: unreachable
        if ends is not None:
            hit = np.flatnonzero(last == t)
            out[hit] = cur[hit, ends[0][hit] + 1]
        prev2, prev1 = prev1, cur
    return out if ends is not None else prev1[:, N + 1]


class _SoftDTWFunction(torch.autograd.Function):
    """Soft-DTW with its analytic gradient (Cuturi & Blondel 2017, Algorithm 2), both recursions in NumPy.

    Autograd through the anti-diagonal loop keeps a dozen small tensors per
    diagonal and replays them backwards; the expected-alignment recursion
    needs only the forward table R. Layout: diagonal-major arrays (D, P, W)
    with ``[d, :, i + 1] = R[i, d - i]`` (column 0 a sentinel for i = -1).
    """

    @staticmethod
    def forward(ctx, cost: torch.Tensor, gamma: float, n: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        c = cost.detach().cpu().numpy()
        P, N, M = c.shape
        ni, mi = n.numpy(), m.numpy()
        I, J = np.meshgrid(np.arange(1, N + 1), np.arange(1, M + 1), indexing="ij")
        Dsk = np.zeros((N + M + 3, P, N + 3), c.dtype)
        Dsk[I + J, :, I + 1] = c.transpose(1, 2, 0)  # cost(i, j) on diagonal i + j, column i + 1
        G = np.full((N + M + 3, P, N + 3), _BIG, c.dtype)
        G[0, :, 1] = 0.0  # R[0, 0]
        i = np.arange(N + 2)  # columns 1..N+2 hold i = 0..N+1
        for d in range(2, N + M + 1):
            a, b, r = G[d - 2, :, 0 : N + 2], G[d - 1, :, 0 : N + 2], G[d - 1, :, 1 : N + 3]
            s = np.minimum(np.minimum(a, b), r)
            s = s - gamma * np.log(np.exp((s - a) / gamma) + np.exp((s - b) / gamma) + np.exp((s - r) / gamma))
            ok = (i >= 1) & (i <= N) & (d - i >= 1) & (d - i <= M)
            G[d, :, 1 : N + 3] = np.where(ok, Dsk[d, :, 1 : N + 3] + s, _BIG)
        rows = np.arange(P)
        value = G[ni + mi, rows, ni + 1]
        ctx.saved = (G, Dsk, ni, mi, gamma)
        return torch.from_numpy(value.copy()).to(cost.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        G, Dsk, ni, mi, gamma = ctx.saved
        Dn, P, W = G.shape
        N, M = W - 3, Dn - W
        rows = np.arange(P)
        d_ = np.arange(Dn)[:, None, None]
        col = np.arange(W)[None, None, :]
        ii, jj = col - 1, d_ - (col - 1)
        inside = (ii >= 1) & (ii <= ni[None, :, None]) & (jj >= 1) & (jj <= mi[None, :, None])  # (D, P, W)
        R = np.where(inside, G, -np.inf)
        R[ni + mi + 2, rows, ni + 2] = G[ni + mi, rows, ni + 1]  # the extra cell (n + 1, m + 1) that starts the recursion
        Dc = np.where(inside, Dsk, 0.0)
        E = np.zeros_like(G)
        E[ni + mi + 2, rows, ni + 2] = 1.0
        c, c1 = slice(2, N + 2), slice(3, N + 3)  # i = 1..N and its i + 1
        with np.errstate(invalid="ignore", over="ignore"):
            for d in range(int((ni + mi).max()), 1, -1):
                rc = R[d, :, c]
                e = (E[d + 1, :, c1] * np.exp((R[d + 1, :, c1] - rc - Dc[d + 1, :, c1]) / gamma)  # (i + 1, j)
                     + E[d + 1, :, c] * np.exp((R[d + 1, :, c] - rc - Dc[d + 1, :, c]) / gamma)  # (i, j + 1)
                     + E[d + 2, :, c1] * np.exp((R[d + 2, :, c1] - rc - Dc[d + 2, :, c1]) / gamma))  # (i + 1, j + 1)
                E[d, :, c] = np.where(inside[d, :, c], e, E[d, :, c])  # outside: 0, or a shorter pair's starting 1
        I, J = np.meshgrid(np.arange(1, N + 1), np.arange(1, M + 1), indexing="ij")
        E = np.where(inside, E, 0.0)  # the starting cells are no cost cells
        grad = torch.from_numpy(np.ascontiguousarray(E[I + J, :, I + 1].transpose(2, 0, 1)))  # (P, N, M)
        return grad.to(grad_out.dtype) * grad_out[:, None, None], None, None, None
