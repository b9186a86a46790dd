"""Tests of posheads.families: the registry, the starts, the per-row terms, the simulator.

The last part is the proof of the redesign: a new likelihood (a geometric law) defined in
this file with public API only is fitted through ``SoftplusGLM``, a regressor subclass,
a head and the Bayesian neural network, and simulated by the data sets' simulator,
without editing a package file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import optimize, stats

from posheads import families
from posheads.datasets import make_count_regression
from posheads.distributions import SoftplusCounts, flat
from posheads.estimators import SoftplusGLMRegressor, load, regressor_for
from posheads.families import Family, get_family
from posheads.heads import FamilyHead
from posheads.models.glm import GLMData, SoftplusGLM

from ._families import BUILT_IN

F64 = torch.float64

# Values inside each support, zeros where the support has them and a non-integer amount
# where it is not counts.
SUPPORT_VALUES = {"counts": [0.0, 1.0, 5.0], "nonnegative": [0.0, 1.3, 5.0],
                  "positive": [0.4, 1.3, 5.0]}


# ------------------------------------------------------------------ registry
def test_get_family_resolves_names_aliases_and_objects():
    nb = families.NEGATIVE_BINOMIAL
    for name in ("negative_binomial", "negative-binomial", "NB", " nb2 "):
        assert get_family(name) is nb
    assert get_family(nb) is nb
    assert get_family("Gamma") is families.GAMMA and get_family("tweedie") is families.TWEEDIE
    with pytest.raises(ValueError, match=r"unknown likelihood 'no_such_law'.*poisson.*gamma"):
        get_family("no_such_law")


def test_registered_families_declare_consistent_arguments():
    for family in BUILT_IN:
        assert family.argument_names[0] == "eta"
        assert len(set(family.argument_names)) == len(family.argument_names)
        eta = torch.zeros(3, dtype=F64)
        shapes = {s.name: torch.tensor(s.default, dtype=F64) for s in family.shapes}
        parts = {p.name: torch.zeros(3, dtype=F64) for p in family.parts}
        d = family.build(eta, shapes=shapes, parts=parts)
        assert isinstance(d, family.distribution) and d.batch_shape == (3,)
        values = SUPPORT_VALUES[family.support]
        family.check_target(np.array(values))  # raises for a value outside the support
        assert torch.isfinite(d.log_prob(torch.tensor(values, dtype=F64))).all(), family


def test_register_family_refuses_a_taken_name():
    clone = Family("poisson", families.POISSON.distribution)
    with pytest.raises(ValueError, match="already registered"):
        families.register_family(clone)
    assert get_family("poisson") is families.POISSON


# ------------------------------------------------------------------ starts
def _zero_inflated_nb(n=40_000, r=2.0, mu=3.0, pi=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rate = torch._standard_gamma(torch.full((n,), r, dtype=F64), generator=gen) * mu / r
    y = torch.poisson(rate, generator=gen)
    return torch.where(torch.rand(n, generator=gen, dtype=F64) < pi, 0.0, y)


def test_starts_match_the_moments_they_come_from():
    y = _zero_inflated_nb()
    nb = families.NEGATIVE_BINOMIAL.start(y)
    assert nb.rate == pytest.approx(float(y.mean()))
    mean, var = float(y.mean()), float(y.var(unbiased=False))
    assert nb.shapes["concentration"] == pytest.approx(mean**2 / (var - mean))
    # zero inflation: the zeros beyond the Poisson's at the overall rate are structural
    zip_ = families.ZERO_INFLATED_POISSON.start(y)
    p0, m = float((y == 0).double().mean()), mean
    pi = (p0 - math.exp(-m)) / (1 - math.exp(-m))
    assert zip_.parts["gate"] == pytest.approx(pi)
    assert zip_.rate * (1 - zip_.parts["gate"]) == pytest.approx(mean)
    # hurdle: the gate is the share of zeros, the rate that of the truncated positive part
    hp = families.HURDLE_POISSON.start(y)
    assert hp.parts["gate"] == pytest.approx(p0)
    positive = float(y[y > 0].mean())
    assert hp.rate / -math.expm1(-hp.rate) == pytest.approx(positive, rel=1e-10)
    hnb = families.HURDLE_NEGATIVE_BINOMIAL.start(y)
    r = hnb.shapes["concentration"]
    zero = (r / (r + hnb.rate)) ** r
    assert hnb.rate / (1 - zero) == pytest.approx(positive, rel=1e-10)


def _in_support(family, y):
    try:
        family.check_target(y.numpy())
    except ValueError:
        return False
    return True


def test_starts_are_finite_for_degenerate_targets():
    for y in (torch.zeros(10, dtype=F64), torch.ones(10, dtype=F64),
              torch.tensor([7.0], dtype=F64), torch.full((4,), 0.3, dtype=F64)):
        for family in BUILT_IN:
            if not _in_support(family, y):  # all zeros are no Gamma amounts
                continue
            start = family.start(y)
            raw = family.raw_start(start)
            assert all(math.isfinite(v) for v in raw.values()), (family, y)


def test_weighted_start_equals_repeated_rows():
    counts = torch.tensor([0.0, 0.0, 1.0, 4.0, 2.0, 0.0], dtype=F64)
    w = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0, 1.0], dtype=F64)
    for family in BUILT_IN:
        # amounts are not whole numbers; a Gamma amount is not zero either
        y = counts if family.support == "counts" else counts * 1.7
        y = y + 0.3 if family.support == "positive" else y
        repeated = torch.repeat_interleave(y, w.long())
        a, b = family.start(y, weights=w), family.start(repeated)
        assert a.rate == pytest.approx(b.rate)
        assert a.shapes == pytest.approx(b.shapes) and a.parts == pytest.approx(b.parts)


# ------------------------------------------------------------------ per-row terms
def _row_targets(family, n, gen):
    """Counts of mean 2.5 with extra zeros, or the family's own amounts of mean 2.5
    (with the extra zeros where the support has them)."""
    y = torch.poisson(torch.full((n,), 2.5, dtype=F64), generator=gen)
    if family.support != "counts":
        rng = np.random.default_rng(1)
        y = torch.from_numpy(family.simulate(np.full(n, 2.5), rng)[0]).to(F64)
    if family.support != "positive":
        y[::4] = 0.0
    return y


@pytest.mark.parametrize("family", BUILT_IN, ids=lambda f: f.name)
def test_rows_match_autograd_of_the_distribution(family):
    """Every family's per-row terms -- closed form or not -- against autograd through
    the distribution, with weights and exposure, at predictors in both tails."""
    n = 50
    gen = torch.Generator().manual_seed(1)
    y = _row_targets(family, n, gen)
    t = torch.rand(n, generator=gen, dtype=F64) + 0.5
    w = torch.rand(n, generator=gen, dtype=F64) * 2
    rows = family.rows(y, t, w, beta=1.5)
    eta = torch.linspace(-40.0, 40.0, n, dtype=F64)
    P = {"eta": eta, **{p: torch.linspace(2.0, -2.0, n, dtype=F64) for p in family.part_names}}
    u = {s: torch.tensor(0.7, dtype=F64) for s in family.shape_names}
    keys = rows.keys
    leaves = [P[k].clone().requires_grad_() for k in keys if k in P]
    leaves += [u[k].expand(n).clone().requires_grad_() for k in keys if k in u]

    def row_ll(*xs):
        named = dict(zip(keys, xs, strict=True))
        d = family.build(named["eta"], beta=1.5, exposure=t, validate_args=False,
                         shapes={s: F.softplus(named[s]) for s in family.shape_names},
                         parts={p: named[p] for p in family.part_names})
        return d.log_prob(y) * w

    ll = row_ll(*leaves)
    torch.testing.assert_close(rows.log_likelihood(dict(P), u), ll.sum().detach())
    firsts = torch.autograd.grad(ll.sum(), leaves, create_graph=True)
    grad = rows.gradient(dict(P), u)
    for k, g in zip(keys, firsts, strict=True):
        torch.testing.assert_close(grad[k], g.detach(), rtol=1e-9, atol=1e-12)
    curv = rows.curvature(dict(P), u)
    for i, ki in enumerate(keys):
        second = torch.autograd.grad(firsts[i].sum(), leaves[i:], retain_graph=True,
                                     allow_unused=True)
        for kj, g in zip(keys[i:], second, strict=True):
            ref = torch.zeros(n, dtype=F64) if g is None else -g
            torch.testing.assert_close(curv.get((ki, kj), torch.zeros(n, dtype=F64)), ref,
                                       rtol=1e-8, atol=1e-10)
    # value() is -sum w l up to a constant that does not move with the parameters
    shifted = {k: v + 0.25 for k, v in P.items()}
    diff = [float(rows.value(dict(Q), u) + rows.log_likelihood(dict(Q), u))
            for Q in (P, shifted)]
    assert diff[0] == pytest.approx(diff[1], rel=1e-12, abs=1e-9)


def test_closed_form_families_say_so():
    assert families.POISSON.rows(torch.ones(3)).closed_form
    assert families.POISSON.rows(torch.ones(3)).convex
    assert families.NEGATIVE_BINOMIAL.rows(torch.ones(3)).closed_form
    assert families.ZERO_INFLATED_POISSON.rows(torch.ones(3)).closed_form
    assert not families.ZERO_INFLATED_POISSON.rows(torch.ones(3)).convex
    for family in (families.ZERO_INFLATED_NEGATIVE_BINOMIAL, families.HURDLE_POISSON,
                   families.HURDLE_NEGATIVE_BINOMIAL):
        assert family.rows(torch.ones(3)).closed_form
        assert not family.rows(torch.ones(3)).convex
    assert not families.DISCRETIZED_LOGISTIC.rows(torch.ones(3)).closed_form


# ------------------------------------------------------------------ simulator
@pytest.mark.parametrize("family", BUILT_IN, ids=lambda f: f.name)
def test_simulate_is_reproducible_and_has_the_stated_mean(family):
    mu = np.full(20_000, 3.0)
    shapes = {s.name: 2.0 for s in family.shapes}
    parts = {p.name: 0.25 for p in family.parts}
    y, expected = family.simulate(mu, np.random.default_rng(0), shapes=shapes, parts=parts)
    again, _ = family.simulate(mu, np.random.default_rng(0), shapes=shapes, parts=parts)
    np.testing.assert_array_equal(y, again)
    if family.support == "counts":
        assert y.dtype == np.int64 and (y >= 0).all()
    else:  # amounts: real draws, exact zeros only where the support has them
        assert y.dtype == np.float64 and (y != np.round(y)).mean() > 0.5
        assert (y > 0).all() if family.support == "positive" else (y >= 0).all()
        assert (y == 0).any() == (family.support == "nonnegative")
    assert family.check_target(y, proper=True) is y
    se = y.std() / math.sqrt(len(y))
    assert abs(y.mean() - expected.mean()) < 5 * se


# ================================================================== a new family
class SoftplusGeometric(SoftplusCounts):
    """Geometric counts of mean ``mu = exposure * softplus(eta)``: NB2 with ``r = 1``.

    ``log P(y) = y log mu - (y + 1) log(1 + mu)``.
    """

    arg_constraints = {"eta": torch.distributions.constraints.real,  # noqa: RUF012
                       "exposure": torch.distributions.constraints.positive}

    def __init__(self, eta, *, beta=1.0, threshold=20.0, low=0.0, exposure=None,
                 validate_args=None):
        super().__init__({"eta": eta, "exposure": exposure}, beta, threshold, low,
                         validate_args)

    def _count_log_prob(self, value):
        log_mu = self.log_rate
        return value * log_mu - (value + 1.0) * F.softplus(log_mu)

    def _count_sample(self, shape):
        mu = self.rate.expand(shape)
        return torch.poisson(mu * torch._standard_gamma(torch.ones_like(mu)))

    def _count_moments(self):
        mu = self.rate
        return mu, mu + mu * mu


GEOMETRIC = Family("geometric", SoftplusGeometric, description="geometric counts")


class GeometricSoftplusRegressor(SoftplusGLMRegressor):
    """Geometric regression with a softplus link."""

    family = GEOMETRIC


def _geometric_data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    coef = np.array([0.8, -0.5])
    mu = np.logaddexp(0.0, 1.0 + X @ coef)
    y = rng.geometric(1.0 / (1.0 + mu)) - 1.0  # failures before the first success
    return X, y, coef


def _reference_fit(X, y):
    """Maximum likelihood of the geometric GLM by SciPy, on SciPy's own pmf."""
    X1 = np.column_stack([np.ones(len(X)), X])

    def nll(b):
        mu = np.logaddexp(0.0, X1 @ b)
        return -stats.geom.logpmf(y + 1, 1.0 / (1.0 + mu)).sum()

    return optimize.minimize(nll, np.zeros(3), method="BFGS", options={"gtol": 1e-8}).x


def test_a_new_family_fits_through_the_glm_and_a_regressor():
    from posheads.inference import fit_map

    X, y, _ = _geometric_data()

    reference = _reference_fit(X, y)
    model = SoftplusGLM(GEOMETRIC, coef_scale=None, intercept_scale=None)
    post = fit_map(model, GLMData(torch.from_numpy(X), torch.from_numpy(y)), tol=1e-10)
    assert post.extra["converged"]
    fitted = np.r_[float(post.extra["map"]["intercept"]), post.extra["map"]["coef"].numpy()]
    np.testing.assert_allclose(fitted, reference, rtol=1e-5, atol=1e-6)
    est = GeometricSoftplusRegressor(alpha=0).fit(X, y)
    np.testing.assert_allclose(np.r_[est.intercept_, est.coef_], reference, rtol=1e-5,
                               atol=1e-6)
    assert regressor_for(GEOMETRIC) is GeometricSoftplusRegressor
    table = est.summary()
    assert {"intercept", "x0", "x1"} <= set(table.index)
    lo, hi = est.predict_interval(X[:200]).T
    inside = np.mean((y[:200] >= lo) & (y[:200] <= hi))
    assert inside > 0.8


def test_a_new_family_estimator_saves_and_loads(tmp_path):
    X, y, _ = _geometric_data(n=500)
    est = GeometricSoftplusRegressor(alpha=0).fit(X, y)
    est.save(tmp_path / "geometric")
    back = load(tmp_path / "geometric")
    assert type(back) is GeometricSoftplusRegressor
    np.testing.assert_allclose(back.predict(X[:5]), est.predict(X[:5]))


def test_a_new_family_head_learns_the_mean():
    X, y, coef = _geometric_data(n=4000, seed=1)
    x, target = torch.from_numpy(X).float(), torch.from_numpy(y).float()
    head = FamilyHead(2, family=GEOMETRIC).init_from_targets(target)
    assert head.raw_names == ("eta",)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        (-head(x).log_prob(target).mean()).backward()
        opt.step()
    np.testing.assert_allclose(head.proj.weight.detach().numpy()[0], coef, atol=0.15)


def test_a_new_family_drives_the_bayesian_network_and_the_simulator():
    from posheads import BayesianNeuralCountRegressor

    X, y, _, = make_count_regression(600, 2, likelihood=GEOMETRIC, random_state=0)
    est = BayesianNeuralCountRegressor((4,), likelihood=GEOMETRIC, num_steps=200,
                                       num_samples=50, random_state=0).fit(X, y)
    assert est.model_.likelihood == "geometric"
    assert est.predict(X[:3]).shape == (3,)
    assert np.isfinite(est.score(X, y))


def test_a_registered_new_family_is_found_by_name():
    families.register_family(GEOMETRIC)
    try:
        assert get_family("Geometric") is GEOMETRIC
        assert SoftplusGLM("geometric").family is GEOMETRIC
    finally:
        families.unregister_family(GEOMETRIC)
    with pytest.raises(ValueError, match="unknown likelihood"):
        get_family("geometric")


def test_flat_shape_priors_of_a_family_are_maximum_likelihood():
    model = SoftplusGLM("negative_binomial", shape_priors={"concentration": "flat"})
    assert isinstance(model.priors(GLMData(torch.zeros(2, 1)))["concentration"],
                      type(flat()))
    with pytest.raises(KeyError, match="dispersion"):
        SoftplusGLM("negative_binomial", shape_priors={"dispersion": "flat"})
