"""How a GLMM's group effects reach the rows, and the sparse structure of their Hessian.

The non-centred effects of all grouping factors are stacked in one flat vector ``z``
(shape ``(R,)``, ``R = sum_k G_k q_k``: factor by factor, level by level, term by term).
Row ``i`` touches only ``q_k`` entries of each factor ``k``, so with ``A_k = Z_k Lambda_k``
the Hessian of ``f(z) = sum_i l_i - ||z||^2 / 2``,

    H = I + A' diag(w) A,      w_i = -d2 l_i / d eta_i^2,

is sparse. :class:`EffectsStructure` never forms it densely over all ``R`` effects:

* one factor: ``H`` is block-diagonal, ``G`` blocks of ``q x q``, summed over rows by
  ``index_add`` and factorised by one batched Cholesky (``O(n q^2 + G q^3)`` time,
  ``O(G q^2)`` memory);
* several crossed or nested factors: the effects of the factor with the most of them
  (``B``) are eliminated block by block. Ordering ``z = (z_B, z_C)``,

      H = [[H_BB, H_BC], [H_CB, H_CC]],   S = H_CC - H_CB H_BB^{-1} H_BC,
      log det H = log det H_BB + log det S,

  with ``H_BB`` block-diagonal as above, ``H_BC`` held as one ``q_B`` vector per distinct
  (level of ``B``, effect of ``C``) pair that occurs in the rows, and ``S`` dense over the
  ``R_C`` effects of the other factors only (at most ``dense_limit``). Time and memory are
  linear in the levels of ``B`` and in the rows, plus ``O(R_C^2)`` memory and
  ``O(R_C^3)`` time for ``S``'s Cholesky, plus ``sum_g m_g^2`` products where ``m_g`` is
  the number of ``C`` effects that share a row with level ``g`` of ``B``.

Effects may reach two linear predictors (:attr:`RandomEffect.part`: a zero part's
logits as well as ``eta``, channels 0 and 1). Then ``w_i`` is the row's ``2 x 2``
negated Hessian in ``(eta_i, gate_i)`` and the entry of ``H`` between two effects takes
``w_i[c, c']`` of their channels: the structure (blocks, pairs) is the same.

Every step is a torch operation (``index_add``, batched triangular solves, Cholesky), so
the log-determinant and the solve are exact and differentiable by autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PAIR_LIMIT", "EffectsStructure", "JointFactor", "JointHessian"]

#: Most products ``X_p . X_p'`` (pairs of the other factors' effects that share a level of
#: the eliminated factor) kept for the Schur complement: three int64 indices each, 1.2 GB.
PAIR_LIMIT = 50_000_000


@dataclass
class JointHessian:
    """``H`` of several factors in block form (see the module docstring).

    Attributes
    ----------
    blocks : Tensor, shape ``(G_B, q_B, q_B)``
        ``H_BB``'s diagonal blocks.
    cross : Tensor, shape ``(n_pairs, q_B)``
        ``H_BC``: for each (level of ``B``, effect of ``C``) pair, its column in that block.
    rest : Tensor, shape ``(R_C, R_C)``
        ``H_CC``.
    """

    blocks: torch.Tensor
    cross: torch.Tensor
    rest: torch.Tensor


@dataclass
class JointFactor:
    """The factorisation of a :class:`JointHessian`.

    Attributes
    ----------
    blocks : Tensor, shape ``(G_B, q_B, q_B)``
        Cholesky factors ``L_g`` of ``H_BB``'s blocks.
    cross : Tensor, shape ``(n_pairs, q_B)``
        ``L_g^{-1}`` times each column of ``H_BC``.
    schur : Tensor, shape ``(R_C, R_C)``
        Cholesky factor of the Schur complement ``S``.
    """

    blocks: torch.Tensor
    cross: torch.Tensor
    schur: torch.Tensor


def _check(info):
    if bool((info != 0).any()):
        raise FloatingPointError("the Hessian of the random effects is not definite")


class EffectsStructure:
    """How the flat effects ``z`` (shape ``(R,)``) reach the rows, and ``H``'s structure.

    Parameters
    ----------
    effects : tuple of RandomEffect
    dense_limit : int
        Largest number of effects of the factors other than the largest one (the dense
        Schur complement's size) with several factors.
    """

    def __init__(self, effects, dense_limit: int = 8000):
        if not effects:
            raise ValueError("a mixed model needs at least one grouping factor")
        self.effects = tuple(effects)
        parts = {e.part for e in self.effects if e.part is not None}
        if len(parts) > 1:
            raise ValueError(f"group effects may reach one part besides eta, got {parts}")
        #: the predictor each factor reaches: 0 for ``eta``, 1 for the part
        self.channel = [0 if e.part is None else 1 for e in self.effects]
        self.n_channels = 2 if parts else 1
        sizes = [e.n_groups * e.q for e in self.effects]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.R = int(self.offsets[-1])
        self.blocked = len(self.effects) == 1
        self.block = int(np.argmax(sizes))
        self.R_C = self.R - sizes[self.block]
        if self.R_C > dense_limit:
            raise ValueError(
                f"several grouping factors: the factors other than the largest have "
                f"{self.R_C} effects; their Schur complement is dense, at most "
                f"dense_limit={dense_limit}")
        if not self.blocked:
            self._pairs()

    def _pairs(self):
        """Index maps of the block elimination (numpy, once)."""
        b, eB = self.block, self.effects[self.block]
        dev = eB.codes.device
        self.others = [k for k in range(len(self.effects)) if k != b]
        c_off = np.concatenate([[0], np.cumsum([self.effects[k].n_groups * self.effects[k].q
                                                for k in self.others])])
        # flat positions of B's and C's effects in z
        self.pos_B = torch.arange(self.offsets[b], self.offsets[b + 1], device=dev)
        self.pos_C = torch.cat([torch.arange(self.offsets[k], self.offsets[k + 1], device=dev)
                                for k in self.others])
        # each row's C positions, (n, m) with m = sum of the other factors' q
        cpos = np.concatenate([
            c_off[j] + self.effects[k].codes.cpu().numpy()[:, None] * self.effects[k].q
            + np.arange(self.effects[k].q) for j, k in enumerate(self.others)], axis=1)
        gB = eB.codes.cpu().numpy()
        keys = gB[:, None].astype(np.int64) * self.R_C + cpos
        uniq, inverse = np.unique(keys.reshape(-1), return_inverse=True)
        pair_g, pair_c = uniq // self.R_C, uniq % self.R_C
        self.cpos = torch.as_tensor(cpos, device=dev)
        self.chan_C = torch.as_tensor(np.concatenate(
            [np.full(self.effects[k].q, self.channel[k]) for k in self.others]), device=dev)
        self.rest_index = (self.cpos.unsqueeze(2) * self.R_C + self.cpos.unsqueeze(1)).reshape(-1)
        self.pair_of = torch.as_tensor(inverse.reshape(-1), device=dev)
        self.pair_g = torch.as_tensor(pair_g, device=dev)
        self.pair_c = torch.as_tensor(pair_c, device=dev)
        # every two pairs that share a level of B: one product each in S
        m = np.bincount(pair_g, minlength=eB.n_groups)
        if int((m * m).sum()) > PAIR_LIMIT:
            raise ValueError(
                f"several grouping factors: {int((m * m).sum())} products for the Schur "
                f"complement (levels of {eB.name!r} share rows with up to {int(m.max())} "
                f"effects of the other factors); at most {PAIR_LIMIT}")
        start = np.concatenate([[0], np.cumsum(m)])[:-1]
        group = np.repeat(np.arange(eB.n_groups), m * m)
        local = np.arange(len(group)) - np.repeat(np.concatenate([[0], np.cumsum(m * m)])[:-1],
                                                   m * m)
        first = start[group] + local // m[group]
        second = start[group] + local % m[group]
        self.pp = (torch.as_tensor(first, device=dev), torch.as_tensor(second, device=dev))
        self.pp_target = torch.as_tensor(pair_c[first] * self.R_C + pair_c[second], device=dev)

    # ------------------------------------------------------------ rows
    def split(self, z: torch.Tensor) -> list:
        """The flat ``z`` as one ``(G_k, q_k)`` tensor per factor."""
        return [z[self.offsets[k]:self.offsets[k + 1]].reshape(e.n_groups, e.q)
                for k, e in enumerate(self.effects)]

    def rows(self, lams: list) -> list:
        """``A_k = Z_k @ Lambda_k`` per factor, shapes ``(n, q_k)``."""
        return [e.Z @ lam for e, lam in zip(self.effects, lams, strict=True)]

    def eta(self, A: list, z: torch.Tensor, channel: int = 0) -> torch.Tensor:
        """The effects' part of the linear predictor of ``channel`` (0: ``eta``, 1: the
        part's logits), shape ``(n,)``."""
        out = [(a * zk[e.codes]).sum(-1)
               for a, e, zk, c in zip(A, self.effects, self.split(z), self.channel,
                                      strict=True) if c == channel]
        return sum(out) if out else A[0].new_zeros(A[0].shape[0])

    def gradient(self, A: list, d1: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``df/dz = A' d1 - z``, shape ``(R,)``; ``d1`` is ``(n,)``, or ``(n, 2)`` (in
        ``eta`` and the part's logits) with two channels."""
        parts = [torch.zeros(e.n_groups, e.q, dtype=z.dtype, device=z.device)
                 .index_add(0, e.codes, (d1 if d1.dim() == 1 else d1[:, c]).unsqueeze(1) * a)
                 for a, e, c in zip(A, self.effects, self.channel, strict=True)]
        return torch.cat([p.reshape(-1) for p in parts]) - z

    # ------------------------------------------------------------ Hessian
    def hessian(self, A: list, w: torch.Tensor):
        """``H = I + A' diag(w) A``: ``(G, q, q)`` blocks for one factor, else a
        :class:`JointHessian`. ``w`` is ``(n,)``, or ``(n, 2, 2)`` with two channels."""
        aB, eB = A[self.block], self.effects[self.block]
        cB = self.channel[self.block]
        wB = w if w.dim() == 1 else w[:, cB, cB]
        outer = (wB.view(-1, 1, 1) * aB.unsqueeze(2)) * aB.unsqueeze(1)
        blocks = torch.zeros(eB.n_groups, eB.q, eB.q, dtype=aB.dtype, device=aB.device)
        blocks = blocks.index_add(0, eB.codes, outer) + torch.eye(eB.q, dtype=aB.dtype,
                                                                  device=aB.device)
        if self.blocked:
            return blocks
        aC = torch.cat([A[k] for k in self.others], dim=1)                   # (n, m)
        if w.dim() == 1:
            waC = w.unsqueeze(1) * aC
            outer_C = waC.unsqueeze(2) * aC.unsqueeze(1)
        else:  # each pair of columns weighs by its channels' entry of the row's w
            waC = w[:, self.chan_C, cB] * aC
            outer_C = (w[:, self.chan_C][:, :, self.chan_C] * aC.unsqueeze(2)
                       * aC.unsqueeze(1))
        rest = torch.zeros(self.R_C * self.R_C, dtype=w.dtype, device=w.device)
        rest = rest.index_add(0, self.rest_index, outer_C.reshape(-1))
        rest = rest.view(self.R_C, self.R_C) + torch.eye(self.R_C, dtype=w.dtype,
                                                           device=w.device)
        vals = (waC.unsqueeze(2) * aB.unsqueeze(1)).reshape(-1, eB.q)           # (n m, q_B)
        cross = torch.zeros(len(self.pair_g), eB.q, dtype=w.dtype, device=w.device)
        cross = cross.index_add(0, self.pair_of, vals)
        return JointHessian(blocks, cross, rest)

    def cholesky(self, H):
        """Cholesky factor of ``H``: of the blocks for one factor, else a
        :class:`JointFactor`; raises ``FloatingPointError`` if ``H`` is not definite."""
        if self.blocked:
            L, info = torch.linalg.cholesky_ex(H)
            _check(info)
            return L
        LB, info = torch.linalg.cholesky_ex(H.blocks)
        _check(info)
        X = torch.linalg.solve_triangular(LB[self.pair_g], H.cross.unsqueeze(2),
                                          upper=False).squeeze(2)             # (pairs, q_B)
        prod = (X[self.pp[0]] * X[self.pp[1]]).sum(-1)
        S = H.rest.reshape(-1).index_add(0, self.pp_target, -prod).view_as(H.rest)
        LS, info = torch.linalg.cholesky_ex(S)
        _check(info)
        return JointFactor(LB, X, LS)

    def solve(self, H, g: torch.Tensor) -> torch.Tensor:
        """``H^{-1} g``, shape ``(R,)``."""
        L = self.cholesky(H)
        if self.blocked:
            return torch.cholesky_solve(g.view(L.shape[0], -1, 1), L).reshape(-1)
        qB = L.blocks.shape[-1]
        yB = torch.linalg.solve_triangular(L.blocks, g[self.pos_B].view(-1, qB, 1),
                                           upper=False).squeeze(2)            # L^{-1} g_B
        rhs = g[self.pos_C].index_add(0, self.pair_c,
                                      -(L.cross * yB[self.pair_g]).sum(-1))
        xC = torch.cholesky_solve(rhs.unsqueeze(1), L.schur).squeeze(1)
        t = torch.zeros_like(yB).index_add(0, self.pair_g, L.cross * xC[self.pair_c]
                                           .unsqueeze(1))
        xB = torch.linalg.solve_triangular(L.blocks.transpose(-1, -2),
                                           (yB - t).unsqueeze(2), upper=True).reshape(-1)
        return torch.zeros_like(g).index_add(0, self.pos_B, xB).index_add(0, self.pos_C, xC)

    def logdet(self, H) -> torch.Tensor:
        """``log det H`` (0-d)."""
        L = self.cholesky(H)
        if self.blocked:
            return 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum()
        return 2.0 * (L.blocks.diagonal(dim1=-2, dim2=-1).log().sum()
                      + L.schur.diagonal().log().sum())
