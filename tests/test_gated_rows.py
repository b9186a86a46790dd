"""Closed-form rows of the zero-inflated NB2 and the hurdle Poisson and NB2 laws
(``posheads/families/gated_rows.py``): value, gradient and Hessian against autograd of
posheads' own distributions over both tails, values against SciPy, and the GLMM and GLM
fits against the same fits through the autograd rows."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import special, stats

from posheads import families, ops
from posheads.estimators.glm import (
    HurdleNegativeBinomialSoftplusRegressor,
    HurdlePoissonSoftplusRegressor,
    ZeroInflatedNegativeBinomialSoftplusRegressor,
)
from posheads.estimators.mixed import MixedCountRegressor
from posheads.families import AutogradRows
from posheads.families.gated_rows import HurdleRows, ZeroInflatedRows

F64 = torch.float64
GATED = [families.ZERO_INFLATED_NEGATIVE_BINOMIAL, families.HURDLE_POISSON,
         families.HURDLE_NEGATIVE_BINOMIAL]
ROWS = {"zero_inflated_negative_binomial": ZeroInflatedRows, "hurdle_poisson": HurdleRows,
        "hurdle_negative_binomial": HurdleRows}


def _grid():
    """Every combination of eta in [-30, 30], gate logits in [-30, 30] and
    y in {0, 1, 3, 250}, with exposure and weights."""
    eta = torch.linspace(-30.0, 30.0, 25, dtype=F64)
    gate = torch.tensor([-30.0, -8.0, -1.0, 0.0, 0.5, 4.0, 30.0], dtype=F64)
    y = torch.tensor([0.0, 1.0, 3.0, 250.0], dtype=F64)
    E, G, Y = torch.meshgrid(eta, gate, y, indexing="ij")
    n = E.numel()
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(n, generator=gen, dtype=F64) * 2 + 0.25
    w = torch.rand(n, generator=gen, dtype=F64) * 2
    return E.reshape(-1), G.reshape(-1), Y.reshape(-1), t, w


def _reference(family, eta, gate, y, t, w, u, beta, split=True):
    """Per-row weighted log-likelihood, its gradient and negated Hessian by autograd of
    the family's distribution, in the rows' keys.

    torch's double backward of ``logaddexp(a, b)`` is NaN once ``|a - b|`` passes ~745,
    and the zero-inflated distribution's zero branch, unused at ``y > 0``, then poisons
    the Hessian of those rows (at ``eta < 0``, ``y = 250``); their reference is the count
    law's distribution plus ``log(1 - pi) = -softplus(g)``, the same row exactly.
    """
    if split and family.name.startswith("zero_inflated"):
        pos = y > 0
        out = [_reference(family, *(v[~pos] for v in (eta, gate, y, t, w)), u, beta, False),
               _reference(family.base, *(v[pos] for v in (eta, gate, y, t, w)), u, beta)]
        merged = []
        for zero_part, pos_part in zip(*out, strict=True):
            if isinstance(zero_part, dict):
                merged.append({k: _scatter(pos, v, pos_part[k]) for k, v in zero_part.items()})
            else:
                merged.append(_scatter(pos, zero_part, pos_part))
        return tuple(merged)
    keys = ("eta", "gate", *family.shape_names)
    n = eta.numel()
    leaves = {"eta": eta.clone().requires_grad_(), "gate": gate.clone().requires_grad_()}
    for s in family.shape_names:
        leaves[s] = u.expand(n).clone().requires_grad_()
    shapes = {s: ops.softplus(leaves[s]) for s in family.shape_names}
    if family.part_names:
        d = family.build(leaves["eta"], beta=beta, exposure=t, validate_args=False,
                         shapes=shapes, parts={"gate": leaves["gate"]})
        ll = d.log_prob(y) * w
    else:  # a count law behind a zero-inflated gate, at y > 0
        d = family.build(leaves["eta"], beta=beta, exposure=t, validate_args=False,
                         shapes=shapes)
        ll = (d.log_prob(y) - torch.nn.functional.softplus(leaves["gate"])) * w
    xs = [leaves[k] for k in keys]
    first = torch.autograd.grad(ll.sum(), xs, create_graph=True)
    hess = {}
    for i, ki in enumerate(keys):
        if not first[i].requires_grad:
            continue
        second = torch.autograd.grad(first[i].sum(), xs[i:], retain_graph=True,
                                     allow_unused=True)
        for kj, g in zip(keys[i:], second, strict=True):
            hess[ki, kj] = torch.zeros(n, dtype=F64) if g is None else -g.detach()
    return ll.detach(), dict(zip(keys, (g.detach() for g in first), strict=True)), hess


def _scatter(pos, at_zero, at_pos):
    out = torch.empty(pos.shape, dtype=F64)
    out[~pos], out[pos] = at_zero, at_pos
    return out


def _close(actual, expected, what):
    # 1e-10 relative, and 1e-10 absolute where the value is below 1
    assert bool(torch.isfinite(actual).all()) and bool(torch.isfinite(expected).all()), what
    err = ((actual - expected).abs() / expected.abs().clamp(min=1.0)).max()
    assert float(err) < 1e-10, (what, float(err))


# r small and large where the law has a concentration
CASES = [(f, r) for f in GATED for r in ([0.02, 1.3, 800.0] if f.shape_names else [1.3])]


@pytest.mark.parametrize(("family", "r"), CASES, ids=lambda v: getattr(v, "name", str(v)))
@pytest.mark.parametrize("beta", [1.0, 1.7])
def test_rows_match_autograd_over_both_tails(family, r, beta):
    eta, gate, y, t, w = _grid()
    u = ops.softplus_inverse(torch.tensor(r, dtype=F64))
    rows = family.rows(y, t, w, beta=beta)
    assert isinstance(rows, ROWS[family.name]) and rows.closed_form
    P = {"eta": eta, "gate": gate}
    U = {s: u for s in family.shape_names}
    ll, grad_ref, hess_ref = _reference(family, eta, gate, y, t, w, u, beta)
    assert float(rows.log_likelihood(dict(P), U)) == pytest.approx(float(ll.sum()), rel=1e-12)
    grad = rows.gradient(dict(P), U)
    assert set(grad) == set(rows.keys)
    for k in rows.keys:
        _close(grad[k], grad_ref[k], ("gradient", k))
    curv = rows.curvature(dict(P), U)
    for pair, ref in hess_ref.items():
        _close(curv.get(pair, torch.zeros_like(ref)), ref, ("curvature", pair))
    index = torch.arange(0, eta.numel(), 7)
    part = rows.curvature(dict(P), U, index)
    for pair, v in part.items():
        torch.testing.assert_close(v, curv[pair][index], rtol=0, atol=0)


@pytest.mark.parametrize("family", GATED, ids=lambda f: f.name)
def test_rows_stay_finite_past_the_grid(family):
    # predictors where softplus underflows (eta = -800) or the rate is huge
    eta = torch.tensor([-800.0, -800.0, 700.0, 700.0, 1e6], dtype=F64)
    gate = torch.tensor([40.0, -40.0, 40.0, -40.0, 0.0], dtype=F64)
    y = torch.tensor([0.0, 2.0, 0.0, 5.0, 1.0], dtype=F64)
    u = {s: torch.tensor(0.3, dtype=F64) for s in family.shape_names}
    rows = family.rows(y)
    P = {"eta": eta, "gate": gate}
    assert bool(torch.isfinite(rows.value(dict(P), u)))
    for v in [*rows.gradient(dict(P), u).values(), *rows.curvature(dict(P), u).values()]:
        assert bool(torch.isfinite(v).all())


def _scipy_rows(name, y, mu, pi, r):
    """Per-row log-likelihood from scipy.stats' Poisson and NB pmfs."""
    if name.endswith("poisson"):
        log_p, log_p0 = stats.poisson.logpmf(y, mu), -mu
    else:
        prob = r / (r + mu)
        log_p, log_p0 = stats.nbinom.logpmf(y, r, prob), stats.nbinom.logpmf(0, r, prob)
    if name.startswith("zero_inflated"):
        return np.where(y == 0, np.log(pi + (1 - pi) * np.exp(log_p0)),
                        np.log1p(-pi) + log_p)
    return np.where(y == 0, np.log(pi), np.log1p(-pi) + log_p - np.log(-np.expm1(log_p0)))


@pytest.mark.parametrize("family", GATED, ids=lambda f: f.name)
def test_values_match_scipy(family):
    gen = np.random.default_rng(2)
    n = 60
    eta = gen.uniform(-6, 6, n)
    gate = gen.uniform(-4, 4, n)
    y = gen.choice([0.0, 1.0, 2.0, 5.0, 40.0], n)
    t = gen.uniform(0.5, 2.0, n)
    r = 2.7
    mu = t * np.logaddexp(0.0, eta)
    ref = _scipy_rows(family.name, y, mu, special.expit(gate), r)
    u = {s: ops.softplus_inverse(torch.tensor(r, dtype=F64)) for s in family.shape_names}
    for i in range(n):  # row by row: each value on its own
        yi, ti, ei, gi = (torch.tensor(a[i:i + 1], dtype=F64) for a in (y, t, eta, gate))
        value = float(family.rows(yi, ti).log_likelihood({"eta": ei, "gate": gi}, u))
        assert value == pytest.approx(ref[i], rel=1e-11, abs=1e-11)


# ------------------------------------------------------------ fits as before
def _autograd_rows(family):
    def rows(y, exposure=None, weights=None, *, beta=1.0, threshold=20.0):
        return AutogradRows(family, y, exposure, weights, beta=beta, threshold=threshold)
    return rows


def _count_calls(cls, monkeypatch):
    """Count the closed forms' evaluations."""
    calls, inner = {"n": 0}, cls._rows

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(cls, "_rows", counted)
    return calls


def _simulate(name, seed, n=240, G=12):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    mu = np.logaddexp(0.0, 0.8 + 0.6 * x + rng.normal(0, 0.5, G)[g])
    gate = special.expit(-0.5 + rng.normal(0, 0.7, G)[g])
    r = 1.5
    if name.startswith("hurdle"):
        count = 1 + (rng.poisson(mu) if "poisson" in name else
                     rng.negative_binomial(r, r / (r + mu)))  # a shifted positive count
    else:
        count = rng.negative_binomial(r, r / (r + mu))
    y = np.where(rng.random(n) < gate, 0, count).astype(np.float64)
    return pd.DataFrame({"y": y, "x": x, "g": g})


@pytest.mark.parametrize("family", GATED, ids=lambda f: f.name)
@pytest.mark.parametrize("zero_formula", ["~ (1 | g)", None])
def test_glmm_fit_unchanged(family, zero_formula, monkeypatch):
    df = _simulate(family.name, 5)

    def fit():
        m = MixedCountRegressor(family.name, formula="y ~ x + (1 | g)",
                                zero_formula=zero_formula)
        return m.fit(df)

    calls = _count_calls(ROWS[family.name], monkeypatch)
    closed = fit()
    assert calls["n"] > 0
    monkeypatch.setattr(family, "rows", _autograd_rows(family))
    assert not family.rows(torch.ones(2)).closed_form
    ref = fit()
    assert closed.loglik_ == pytest.approx(ref.loglik_, rel=1e-6)
    np.testing.assert_allclose(closed.coef_, ref.coef_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(closed.gate_intercept_, ref.gate_intercept_, atol=1e-4)
    for k, sd in ref.sd_.items():
        np.testing.assert_allclose(closed.sd_[k], sd, rtol=1e-3, atol=1e-4)


GLMS = {"zero_inflated_negative_binomial": ZeroInflatedNegativeBinomialSoftplusRegressor,
        "hurdle_poisson": HurdlePoissonSoftplusRegressor,
        "hurdle_negative_binomial": HurdleNegativeBinomialSoftplusRegressor}


@pytest.mark.parametrize("family", GATED, ids=lambda f: f.name)
def test_glm_fit_unchanged(family, monkeypatch):
    df = _simulate(family.name, 6, n=400)
    X, y = df[["x"]].to_numpy(), df["y"].to_numpy()
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    calls = _count_calls(ROWS[family.name], monkeypatch)
    closed = GLMS[family.name]().fit(X, y, sample_weight=weights)
    assert calls["n"] > 0
    monkeypatch.setattr(family, "rows", _autograd_rows(family))
    ref = GLMS[family.name]().fit(X, y, sample_weight=weights)
    assert closed.loglik_ == pytest.approx(ref.loglik_, rel=1e-8)
    np.testing.assert_allclose(closed.coef_, ref.coef_, rtol=1e-5, atol=1e-6)
    assert closed.gate_intercept_ == pytest.approx(ref.gate_intercept_, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------ tails of the plain rows
def test_negative_binomial_row_value_is_exact_past_the_linear_threshold():
    # d = log(mu / r) beyond +-20, where torch's softplus switches to its linear branch
    # (off by log1p(exp(-20)) ~ 2e-9 there): the row value still equals a 50-digit one
    y = torch.tensor([0.0, 3.0, 7.0, 7.0, 5.0], dtype=F64)
    eta = torch.tensor([1e6, 3e7, 5e5, -17.0, -18.0], dtype=F64)
    r = torch.tensor([1e-4, 1e-3, 1e-5, 50.0, 20.0], dtype=F64)
    import mpmath

    mpmath.mp.dps = 50

    def logpmf(yi, ei, ri):  # NB2 at mean softplus(eta), in 50 digits
        yi, ri = mpmath.mpf(yi), mpmath.mpf(ri)
        mu = mpmath.log1p(mpmath.exp(mpmath.mpf(ei)))
        return float(mpmath.loggamma(yi + ri) - mpmath.loggamma(ri) - mpmath.loggamma(yi + 1)
                     + ri * mpmath.log(ri / (ri + mu)) + yi * mpmath.log(mu / (ri + mu)))

    ref = [logpmf(float(a), float(b), float(c)) for a, b, c in zip(y, eta, r, strict=True)]
    d = np.log(ops.softplus(eta).numpy()) - np.log(r.numpy())
    assert (np.abs(d) > 20).all(), d
    for i in range(len(y)):
        rows = families.NEGATIVE_BINOMIAL.rows(y[i:i + 1])
        u = {"concentration": ops.softplus_inverse(r[i])}
        value = float(rows.log_likelihood({"eta": eta[i:i + 1]}, u))
        assert value == pytest.approx(ref[i], rel=1e-13, abs=1e-13), (i, value, ref[i])
        # the objective's value leaves out lgamma(y + 1)
        objective = -float(rows.value({"eta": eta[i:i + 1]}, u)) - math.lgamma(y[i] + 1)
        assert objective == pytest.approx(ref[i], rel=1e-13, abs=1e-13), (i, objective)


def test_zero_inflated_poisson_gate_curvature_keeps_its_precision_at_large_logits():
    # minus the second derivative in the gate of a positive count's row is pi (1 - pi):
    # 9.4e-14 at g = 30, which 1 - sigmoid(g) would give only to about 1e-3
    from posheads.families.gated_rows import ZeroInflatedPoissonRows

    g = torch.tensor([30.0, 25.0, -30.0, 0.0], dtype=F64)
    y = torch.tensor([2.0, 5.0, 1.0, 3.0], dtype=F64)
    rows = families.ZERO_INFLATED_POISSON.rows(y)
    assert isinstance(rows, ZeroInflatedPoissonRows)
    h = rows.curvature({"eta": torch.zeros(4, dtype=F64), "gate": g})[("gate", "gate")]
    exact = special.expit(g.numpy()) * special.expit(-g.numpy())
    np.testing.assert_allclose(h.numpy(), exact, rtol=1e-14)
