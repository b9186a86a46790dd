"""Several grouping factors: the block elimination of :class:`EffectsStructure` against
the dense joint Hessian (numpy), the Laplace marginal likelihood against a dense scipy
reference, and a crossed problem beyond the old dense limit."""

import math

import numpy as np
import pytest
import torch
from scipy import optimize, special

from posheads.inference.mixed_laplace import EffectsStructure, inner_mode, marginal_log_lik
from posheads.models.mixed import MixedData, RandomEffect, SoftplusGLMM

f64 = torch.float64


def _crossed(rng, n, sizes, slope=(True, False, False)):
    """Rows with one factor per entry of ``sizes`` (random slopes where ``slope``)."""
    x = rng.normal(size=n)
    effects = []
    for k, G in enumerate(sizes):
        codes = rng.integers(0, G, n)
        codes[:G] = np.arange(G)  # every level occurs
        Z = np.c_[np.ones(n), x] if slope[k] else np.ones((n, 1))
        terms = ("1", "x") if slope[k] else ("1",)
        effects.append(RandomEffect(f"f{k}", terms, torch.tensor(Z), torch.tensor(codes), G))
    return x, tuple(effects)


def _dense_A(effects, lams):
    """The ``n x R`` matrix ``A`` with ``eta_effects = A z`` (numpy, by rows)."""
    n = effects[0].Z.shape[0]
    blocks = []
    for e, lam in zip(effects, lams, strict=True):
        a = e.Z.numpy() @ lam
        block = np.zeros((n, e.n_groups * e.q))
        for j in range(e.q):
            block[np.arange(n), e.codes.numpy() * e.q + j] = a[:, j]
        blocks.append(block)
    return np.hstack(blocks)


@pytest.mark.parametrize("sizes", [(13, 5), (6, 9, 4), (17, 3)])
def test_block_elimination_matches_the_dense_hessian(sizes):
    rng = np.random.default_rng(0)
    n = 150
    _, effects = _crossed(rng, n, sizes)
    lams = [np.tril(rng.normal(size=(e.q, e.q))) + 1.5 * np.eye(e.q) for e in effects]
    st = EffectsStructure(effects)
    assert not st.blocked
    w = rng.uniform(0.1, 3.0, n)
    A = _dense_A(effects, lams)
    H = np.eye(st.R) + A.T @ (w[:, None] * A)
    g = rng.normal(size=st.R)
    At = st.rows([torch.tensor(lam) for lam in lams])
    Hs = st.hessian(At, torch.tensor(w))
    _, ref = np.linalg.slogdet(H)
    assert abs(float(st.logdet(Hs)) - ref) < 1e-8 * abs(ref)
    np.testing.assert_allclose(st.solve(Hs, torch.tensor(g)).numpy(), np.linalg.solve(H, g),
                               rtol=1e-9, atol=1e-11)
    # d log det H / d w_i = a_i' H^{-1} a_i, through the elimination by autograd
    wt = torch.tensor(w, requires_grad=True)
    grad, = torch.autograd.grad(st.logdet(st.hessian(At, wt)), wt)
    lev = np.einsum("ij,ij->i", A, np.linalg.solve(H, A.T).T)
    np.testing.assert_allclose(grad.numpy(), lev, rtol=1e-9)


def test_nested_factors_take_the_largest_as_the_eliminated_block():
    rng = np.random.default_rng(1)
    n, G_outer, per = 200, 8, 5
    inner = rng.integers(0, G_outer * per, n)
    inner[:G_outer * per] = np.arange(G_outer * per)
    outer = inner // per  # each inner level sits in one outer level
    ones = torch.ones(n, 1, dtype=f64)
    effects = (RandomEffect("site", ("1",), ones, torch.tensor(outer), G_outer),
               RandomEffect("site:patient", ("1",), ones, torch.tensor(inner), G_outer * per))
    st = EffectsStructure(effects)
    assert st.block == 1 and st.R_C == G_outer
    lams = [np.array([[0.7]]), np.array([[1.3]])]
    w = rng.uniform(0.1, 3.0, n)
    A = _dense_A(effects, lams)
    H = np.eye(st.R) + A.T @ (w[:, None] * A)
    Hs = st.hessian(st.rows([torch.tensor(lam) for lam in lams]), torch.tensor(w))
    assert abs(float(st.logdet(Hs)) - np.linalg.slogdet(H)[1]) < 1e-8
    g = rng.normal(size=st.R)
    np.testing.assert_allclose(st.solve(Hs, torch.tensor(g)).numpy(), np.linalg.solve(H, g),
                               rtol=1e-9, atol=1e-11)


def test_crossed_laplace_matches_a_dense_scipy_reference():
    rng = np.random.default_rng(2)
    n, sizes = 160, (12, 5)
    x, effects = _crossed(rng, n, sizes, slope=(True, False))
    sd = np.array([0.6, 0.3, 0.5])
    u0 = rng.normal(size=(12, 2)) * sd[:2]
    u1 = rng.normal(size=5) * sd[2]
    c0, c1 = effects[0].codes.numpy(), effects[1].codes.numpy()
    eta = 1.0 + 0.5 * x + u0[c0, 0] + u0[c0, 1] * x + u1[c1]
    r = 4.0
    mu = np.logaddexp(0.0, eta)
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    X = torch.tensor(np.c_[np.ones(n), x])
    data = MixedData(X, effects, torch.tensor(y))
    model = SoftplusGLMM("negative_binomial")
    rho = 0.3
    params = {"coef": torch.tensor([1.0, 0.5], dtype=f64),
              "concentration": torch.tensor(r + math.log(-math.expm1(-r)), dtype=f64),
              "f0_log_sd": torch.tensor(np.log(sd[:2])),
              "f0_corr": torch.tensor([rho / math.sqrt(1 - rho**2)], dtype=f64),
              "f1_log_sd": torch.tensor(np.log(sd[2:]))}
    theta = model.pack(params, data)
    st = EffectsStructure(effects)
    z, ok = inner_mode(model, theta, data, st)
    assert ok
    laplace = float(marginal_log_lik(model, theta, data, st, z))
    # the reference: dense numpy A, scipy's Newton-CG mode, numpy's slogdet
    L0 = np.diag(sd[:2]) @ np.array([[1.0, 0.0], [rho, math.sqrt(1 - rho**2)]])
    A = _dense_A(effects, [L0, np.array([[sd[2]]])])
    fixed = 1.0 + 0.5 * x

    def rows(v):
        m = np.logaddexp(0.0, fixed + A @ v)
        ll = (special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1)
              + r * np.log(r / (r + m)) + y * np.log(m / (r + m)))
        return ll, m

    def negf(v):
        return -(rows(v)[0].sum() - 0.5 * v @ v)

    def d_eta(v):  # d l / d eta and -d2 l / d eta2 of the rows, by hand
        e = fixed + A @ v
        m, s = np.logaddexp(0.0, e), special.expit(e)
        dm = y / m - (y + r) / (r + m)
        d2m = -y / m**2 + (y + r) / (r + m) ** 2
        return dm * s, -(d2m * s * s + dm * s * (1 - s))

    def jac(v):
        return -(A.T @ d_eta(v)[0] - v)

    def hess(v):
        return np.eye(len(v)) + A.T @ (d_eta(v)[1][:, None] * A)

    res = optimize.minimize(negf, np.zeros(st.R), jac=jac, hess=hess, method="trust-exact",
                            options={"gtol": 1e-12})
    ref = -res.fun - 0.5 * np.linalg.slogdet(hess(res.x))[1]
    assert abs(laplace - ref) < 1e-8
    np.testing.assert_allclose(z.numpy(), res.x, atol=1e-7)


def test_crossed_factors_beyond_the_old_dense_limit():
    # 2 x 4000 + 40 = 8040 effects: the old engine refused more than 6000 (dense H of
    # 8040^2 doubles, 517 MB); the elimination keeps a 40 x 40 Schur complement
    rng = np.random.default_rng(3)
    n = 12000
    _, effects = _crossed(rng, n, (4000, 40), slope=(True, False))
    st = EffectsStructure(effects)
    assert st.R == 8040 and st.R_C == 40
    lams = [torch.tensor([[0.5, 0.0], [0.1, 0.3]], dtype=f64), torch.tensor([[0.4]], dtype=f64)]
    A = st.rows(lams)
    w = torch.tensor(rng.uniform(0.1, 3.0, n))
    g = torch.tensor(rng.normal(size=st.R))
    x = st.solve(st.hessian(A, w), g)
    # H x by rows (index_add), never forming H: it reproduces g
    Hx = st.gradient(A, w * st.eta(A, x), -x)  # A' W A x + x
    np.testing.assert_allclose(Hx.numpy(), g.numpy(), rtol=1e-9, atol=1e-10)


def test_dense_limit_names_the_schur_size():
    rng = np.random.default_rng(4)
    _, effects = _crossed(rng, 300, (60, 50, 40))
    with pytest.raises(ValueError, match=r"other than the largest have 90 effects.*"
                                         r"dense_limit=50"):
        EffectsStructure(effects, dense_limit=50)


def test_pair_limit_names_the_factor(monkeypatch):
    from posheads.inference import mixed_structure

    rng = np.random.default_rng(5)
    _, effects = _crossed(rng, 300, (60, 10))
    monkeypatch.setattr(mixed_structure, "PAIR_LIMIT", 100)
    with pytest.raises(ValueError, match=r"products for the Schur complement \(levels of 'f0'"):
        EffectsStructure(effects)


@pytest.mark.parametrize(("G", "n_sites"), [(13, 5), (4, 20)])
@pytest.mark.parametrize("merge", [True, False])
def test_count_and_zero_part_on_one_grouping_match_the_dense_hessian(G, n_sites, merge):
    # (1 + x | g) in eta, (1 | g) in the zero part, (1 | site) crossed: with merge, g's
    # count and zero effects are one block of 3 per level (the eliminated unit, or in the
    # Schur complement when site has more effects); rows weigh by a 2 x 2 w_i
    rng = np.random.default_rng(9)
    n = 160
    x = rng.normal(size=n)
    codes = rng.integers(0, G, n)
    codes[:G] = np.arange(G)
    site = rng.integers(0, n_sites, n)
    site[:n_sites] = np.arange(n_sites)
    ones = torch.ones(n, 1, dtype=f64)
    effects = (RandomEffect("g", ("1", "x"), torch.tensor(np.c_[np.ones(n), x]),
                            torch.tensor(codes), G),
               RandomEffect("site", ("1",), ones, torch.tensor(site), n_sites),
               RandomEffect("zi|g", ("1",), ones, torch.tensor(codes), G, part="gate"))
    st = EffectsStructure(effects, merge=merge)
    assert st.units == ([(0, 2), (1,)] if merge else [(0,), (1,), (2,)])
    lams = [np.array([[0.7, 0.0], [0.2, 0.4]]), np.array([[0.6]]), np.array([[0.9]])]
    dense = _dense_A(effects, lams)
    cols = np.cumsum([0] + [e.n_groups * e.q for e in effects])
    A_eta, A_gate = dense.copy(), dense.copy()
    A_eta[:, cols[2]:] = 0.0   # the zero factor's columns reach gate only
    A_gate[:, :cols[2]] = 0.0
    M = rng.normal(size=(n, 2, 2))
    w = M @ M.transpose(0, 2, 1) + 0.1 * np.eye(2)
    J = np.stack([A_eta, A_gate], axis=1)                               # (n, 2, R)
    H = np.eye(st.R) + np.einsum("iar,iab,ibs->rs", J, w, J)
    Hs = st.hessian(st.rows([torch.tensor(lam) for lam in lams]), torch.tensor(w))
    _, ref = np.linalg.slogdet(H)
    assert abs(float(st.logdet(Hs)) - ref) < 1e-10 * abs(ref)
    g = rng.normal(size=st.R)
    np.testing.assert_allclose(st.solve(Hs, torch.tensor(g)).numpy(), np.linalg.solve(H, g),
                               rtol=1e-10, atol=1e-12)


def test_rescale_keeps_each_factors_effects():
    # crossed factors, one with a correlated slope: z under the new factors carries the
    # same u_k = z_k Lambda_k' (and so the same rows' predictors) as z under the old
    rng = np.random.default_rng(11)
    _, effects = _crossed(rng, 120, (7, 5))
    st = EffectsStructure(effects)
    old = [torch.tensor([[0.7, 0.0], [0.2, 0.4]], dtype=f64), torch.tensor([[0.6]], dtype=f64)]
    new = [torch.tensor([[30.0, 0.0], [-1.5, 0.05]], dtype=f64),
           torch.tensor([[1e-3]], dtype=f64)]
    z = torch.tensor(rng.normal(size=st.R))
    moved = st.rescale(z, old, new)
    for zk, mk, a, b in zip(st.split(z), st.split(moved), old, new, strict=True):
        np.testing.assert_allclose((mk @ b.T).numpy(), (zk @ a.T).numpy(), rtol=1e-12,
                                   atol=1e-12)
    np.testing.assert_allclose(st.eta(st.rows(new), moved).numpy(),
                               st.eta(st.rows(old), z).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.rescale(z, old, old).numpy(), z.numpy(), rtol=1e-14)
