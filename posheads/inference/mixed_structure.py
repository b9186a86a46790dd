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

Factors on the same grouping (identical level codes: a count and a zero-part factor on
``g``, glmmTMB's ``(1 | g)`` in both formulas) form one *unit* whose effects of a level
are one block of ``q = sum q_k`` (a row's Jacobian into ``(eta, gate)`` is
``[[a_count, 0], [0, a_zero]]``, so the block is ``I + sum_i A_i' w_i A_i``). The units
take the place of the factors above: one unit is block-diagonal, and the Schur
complement is left to genuinely crossed or nested groupings.

Every step is a torch operation (``index_add``, batched triangular solves, Cholesky), so
the log-determinant and the solve are exact and differentiable by autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PAIR_LIMIT", "EffectsStructure", "JointFactor", "JointHessian", "orthogonal_design"]

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


def orthogonal_design(X: torch.Tensor):
    """The fixed design in orthogonal coordinates: ``X = Q T`` by a thin QR factorisation,
    scaled so that ``Q' Q = n I`` and ``X b = Q c`` with ``c = T b``.

    Uncentred or collinear covariates make the likelihood a long, narrow ridge in ``b``
    (an optimiser crawls along it, a sampler takes tiny steps across it); in ``c`` the
    fixed-effect block of the information is about ``I`` times the rows' curvature. Both
    the maximum-likelihood engine and the NUTS target work in ``c``.

    Parameters
    ----------
    X : Tensor of shape (n, p)

    Returns
    -------
    (Q, T) : Tensors of shapes (n, p) and (p, p), or None
        ``Q = sqrt(n) Q_thin`` and ``T = R / sqrt(n)`` (upper triangular); None where
        ``n <= p`` or ``X`` is rank deficient (a diagonal entry of ``R`` at most ``1e-10``
        of the largest), in which case ``b`` is kept.
    """
    n, p = X.shape
    if n <= p:
        return None
    Q, R = torch.linalg.qr(X.detach())
    d = R.diagonal().abs()
    if float(d.min()) <= 1e-10 * float(d.max()):
        return None
    scale = math.sqrt(n)
    return Q * scale, R / scale


def _check(info):
    if bool((info != 0).any()):
        raise FloatingPointError("the Hessian of the random effects is not definite")


class EffectsStructure:
    """How the flat effects ``z`` (shape ``(R,)``) reach the rows, and ``H``'s structure.

    Parameters
    ----------
    effects : tuple of RandomEffect
    dense_limit : int
        Largest number of effects of the units other than the largest one (the dense
        Schur complement's size) with several units.
    merge : bool
        Whether factors on the same grouping (identical level codes) form one unit, one
        block per level (default); ``False`` keeps each factor its own unit, so a count
        and a zero-part factor on one grouping go through the Schur complement.

    Attributes
    ----------
    units : list of tuple of int
        The factors of each unit, in the order of their first factor.
    block : int
        The unit eliminated block by block (the one with the most effects).
    R_C : int
        Number of effects of the other units (the Schur complement's side).
    dense_size : int
        Side of the largest dense matrix factorised: the block unit's ``q_B`` or ``R_C``.
    """

    def __init__(self, effects, dense_limit: int = 8000, merge: bool = True):
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
        self.units = _units(self.effects, merge)
        self._unit_maps()
        usizes = [sum(sizes[k] for k in u) for u in self.units]
        self.blocked = len(self.units) == 1
        self.block = int(np.argmax(usizes))
        self.R_C = self.R - usizes[self.block]
        self.dense_size = max(self.unit_q[self.block], self.R_C)
        if self.R_C > dense_limit:
            raise ValueError(
                f"several grouping factors: the factors other than the largest have "
                f"{self.R_C} effects; their Schur complement is dense, at most "
                f"dense_limit={dense_limit}")
        self.pos_B = self.unit_pos[self.block]
        if not self.blocked:
            self._pairs()

    def _unit_maps(self):
        """Per unit: its number of columns, their channels and flat positions in ``z``."""
        dev = self.effects[0].codes.device
        self.unit_q, self.unit_chan, self.unit_pos = [], [], []
        for u in self.units:
            G = self.effects[u[0]].n_groups
            pos = np.concatenate([self.offsets[k] + np.arange(G)[:, None] * self.effects[k].q
                                  + np.arange(self.effects[k].q) for k in u], axis=1)
            self.unit_q.append(pos.shape[1])
            self.unit_chan.append(torch.as_tensor(np.concatenate(
                [np.full(self.effects[k].q, self.channel[k]) for k in u]), device=dev))
            self.unit_pos.append(torch.as_tensor(pos.reshape(-1), device=dev))

    def _pairs(self):
        """Index maps of the block elimination (numpy, once)."""
        b = self.block
        eB = self.effects[self.units[b][0]]
        dev = eB.codes.device
        self.others = [j for j in range(len(self.units)) if j != b]
        c_off = np.concatenate([[0], np.cumsum([self.effects[self.units[j][0]].n_groups
                                                * self.unit_q[j] for j in self.others])])
        # flat positions of C's effects in z, unit by unit
        self.pos_C = torch.cat([self.unit_pos[j] for j in self.others])
        # each row's C positions, (n, m) with m = sum of the other units' q
        cpos = np.concatenate([
            c_off[i] + self.effects[self.units[j][0]].codes.cpu().numpy()[:, None]
            * self.unit_q[j] + np.arange(self.unit_q[j]) for i, j in enumerate(self.others)],
            axis=1)
        gB = eB.codes.cpu().numpy()
        keys = gB[:, None].astype(np.int64) * self.R_C + cpos
        uniq, inverse = np.unique(keys.reshape(-1), return_inverse=True)
        pair_g, pair_c = uniq // self.R_C, uniq % self.R_C
        self.cpos = torch.as_tensor(cpos, device=dev)
        self.chan_C = torch.cat([self.unit_chan[j] for j in self.others])
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

    def rescale(self, z: torch.Tensor, old: list, new: list) -> torch.Tensor:
        """The ``z`` whose effects ``u_k = z_k Lambda_k'`` under the factors ``new`` are
        those of ``z`` under ``old`` (``z_k Lambda_old' Lambda_new^{-T}``), shape ``(R,)``.

        The inner solve's warm start from one ``theta`` to the next: a trial SD far above
        the last one would otherwise start the rows' predictors that many times too far
        out, where Newton steps crawl; far below, the prior dominates ``f`` and one step
        lands. ``Lambda_k`` is lower triangular (``diag(sd) L``).
        """
        blocks = []
        for zk, a, b in zip(self.split(z), old, new, strict=True):
            u = zk @ a.T
            blocks.append(torch.linalg.solve_triangular(b, u.T, upper=False).T.reshape(-1))
        return torch.cat(blocks)

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
        """``H = I + A' diag(w) A``: ``(G, q, q)`` blocks for one unit, else a
        :class:`JointHessian`. ``w`` is ``(n,)``, or ``(n, 2, 2)`` with two channels."""
        b = self.block
        aB, chB = self._unit_rows(A, b), self.unit_chan[b]
        eB, qB = self.effects[self.units[b][0]], self.unit_q[b]
        blocks = torch.zeros(eB.n_groups, qB, qB, dtype=aB.dtype, device=aB.device)
        blocks = blocks.index_add(0, eB.codes, _outer(w, aB, aB, chB, chB)) + torch.eye(
            qB, dtype=aB.dtype, device=aB.device)
        if self.blocked:
            return blocks
        aC = torch.cat([self._unit_rows(A, j) for j in self.others], dim=1)     # (n, m)
        # each pair of columns weighs by its channels' entry of the row's w
        outer_C = _outer(w, aC, aC, self.chan_C, self.chan_C)
        rest = torch.zeros(self.R_C * self.R_C, dtype=w.dtype, device=w.device)
        rest = rest.index_add(0, self.rest_index, outer_C.reshape(-1))
        rest = rest.view(self.R_C, self.R_C) + torch.eye(self.R_C, dtype=w.dtype,
                                                           device=w.device)
        vals = _outer(w, aC, aB, self.chan_C, chB).reshape(-1, qB)              # (n m, q_B)
        cross = torch.zeros(len(self.pair_g), qB, dtype=w.dtype, device=w.device)
        cross = cross.index_add(0, self.pair_of, vals)
        return JointHessian(blocks, cross, rest)

    def _unit_rows(self, A: list, j: int) -> torch.Tensor:
        """The rows' ``A`` columns of unit ``j``, shape ``(n, q_j)``."""
        u = self.units[j]
        return A[u[0]] if len(u) == 1 else torch.cat([A[k] for k in u], dim=1)

    def cholesky(self, H):
        """Cholesky factor of ``H``: of the blocks for one unit, else a
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
            qB = L.shape[-1]
            x = torch.cholesky_solve(g[self.pos_B].view(-1, qB, 1), L).reshape(-1)
            return torch.zeros_like(g).index_add(0, self.pos_B, x)
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


def _units(effects, merge: bool) -> list:
    """The factors grouped by identical level codes (each its own with ``merge=False``)."""
    units = []
    for k, e in enumerate(effects):
        for u in units if merge else ():
            f = effects[u[0]]
            if f.n_groups == e.n_groups and torch.equal(f.codes, e.codes):
                u.append(k)
                break
        else:
            units.append([k])
    return [tuple(u) for u in units]


def _outer(w, a, b, chan_a, chan_b):
    """Each row's ``a_i b_i'`` weighed by ``w``, shape ``(n, q_a, q_b)``: ``w_i`` itself
    (``w`` of shape ``(n,)``) or the entry of the row's ``2 x 2`` ``w_i`` (``(n, 2, 2)``)
    between the two columns' channels."""
    if w.dim() == 1:
        return (w.view(-1, 1, 1) * a.unsqueeze(2)) * b.unsqueeze(1)
    return w[:, chan_a][:, :, chan_b] * a.unsqueeze(2) * b.unsqueeze(1)
