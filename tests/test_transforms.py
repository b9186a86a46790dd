"""SoftplusTransform, softplus_positive and softplus_for_positive, in the style of torch's
and Pyro's own transform tests: one parametrised suite over the transforms."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroParam
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import ExpTransform

from posheads.constraints import SoftplusPositive, softplus_positive
from posheads.transforms import SoftplusTransform, softplus_for_positive

from .conftest import DEVICES

TRANSFORMS = [
    SoftplusTransform(),
    SoftplusTransform(beta=2.5),
    SoftplusTransform(beta=0.3, low=1.5),
    SoftplusTransform(threshold=5.0, low=-2.0),
    SoftplusTransform(beta=4.0, threshold=40.0),
]
IDS = [repr(t) for t in TRANSFORMS]


def _grid(dtype, device):
    # Both sides of every switch, deep into the tails.
    core = torch.linspace(-30, 45, 301, dtype=torch.float64)
    tails = torch.tensor([-700.0, -100.0, -20.0, 0.0, 8.0, 16.0, 36.0, 100.0, 1e4])
    return torch.cat([core, tails.double()]).to(dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", TRANSFORMS, ids=IDS)
def test_round_trip_and_codomain(t, dtype, device):
    x = _grid(dtype, device)
    y = t(x)
    assert torch.isfinite(y).all()
    assert t.codomain.check(y[y > t.low + torch.finfo(dtype).tiny]).all()
    s = y - t.low
    ok = s > torch.finfo(dtype).tiny  # where softplus has not underflowed to 0
    back = t.inv(y[ok])
    # Condition of the round trip: y carries a rounding error of eps * |y|, which the
    # inverse magnifies by dx/dy = 1 / sigmoid(beta * x).
    eps = torch.finfo(dtype).eps
    sig = torch.sigmoid(t.beta * x[ok].double()).to(dtype)
    bound = 8 * eps * (x[ok].abs() + (abs(t.low) + s[ok]) / sig)
    assert ((back - x[ok]).abs() <= bound).all()


@pytest.mark.parametrize("t", TRANSFORMS, ids=IDS)
def test_inverse_of_inverse_and_equality(t):
    assert t.inv.inv is t
    assert t == SoftplusTransform(t.beta, t.threshold, t.low)
    assert t != SoftplusTransform(t.beta * 2, t.threshold, t.low)
    assert t != ExpTransform()
    assert t.sign == 1 and t.bijective
    assert t.domain is constraints.real
    assert isinstance(t.codomain, constraints.greater_than)
    assert t.codomain.lower_bound == t.low


@pytest.mark.parametrize("t", TRANSFORMS, ids=IDS)
def test_log_abs_det_jacobian_matches_autograd(t):
    x = _grid(torch.float64, "cpu")
    x = x[x.abs() < 500]
    deriv = torch.autograd.functional.jacobian(lambda v: t(v), x).diagonal()
    expected = deriv.log()
    ladj = t.log_abs_det_jacobian(x, t(x))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(ladj[finite], expected[finite], rtol=1e-12, atol=1e-14)
    assert torch.isfinite(ladj).all()
    # exactly 0 where the forward is exactly linear
    assert (ladj[x * t.beta > 40] == 0).all()


def test_caching():
    t = SoftplusTransform().with_cache()
    x = torch.randn(5)
    y = t(x)
    assert t.inv(y) is x
    assert t.with_cache(1) is t
    assert t.with_cache(0) == t


def test_bad_arguments():
    with pytest.raises(ValueError, match="beta"):
        SoftplusTransform(beta=0.0)
    with pytest.raises(ValueError, match="threshold"):
        SoftplusTransform(threshold=-1.0)
    with pytest.raises(ValueError, match="beta"):
        softplus_positive(beta=-2.0)


@pytest.mark.parametrize("registry", [biject_to, transform_to])
def test_softplus_positive_registered(registry):
    c = softplus_positive(beta=2.0, low=0.5)
    assert isinstance(c, SoftplusPositive)
    assert registry(c) == SoftplusTransform(beta=2.0, low=0.5)
    assert biject_to(registry(c).codomain) == registry(c)
    assert c.check(torch.tensor([0.6])).all() and not c.check(torch.tensor([0.5])).any()


def test_context_manager_switches_and_restores():
    before = [type(biject_to(constraints.positive)), type(transform_to(constraints.nonnegative))]
    with softplus_for_positive(beta=3.0):
        assert biject_to(constraints.positive) == SoftplusTransform(beta=3.0)
        assert transform_to(constraints.greater_than(2.0)) == SoftplusTransform(beta=3.0, low=2.0)
        assert biject_to(constraints.nonnegative) == SoftplusTransform(beta=3.0)
    after = [type(biject_to(constraints.positive)), type(transform_to(constraints.nonnegative))]
    assert before == after
    with pytest.raises(RuntimeError, match="boom"), softplus_for_positive():
        raise RuntimeError("boom")
    assert type(biject_to(constraints.positive)) is before[0]


def test_pyro_param_and_pyroparam_use_softplus():
    p = pyro.param("scale", torch.tensor(0.5), constraint=softplus_positive())
    unconstrained = pyro.get_param_store().get_state()["params"]["scale"]
    torch.testing.assert_close(unconstrained, torch.log(torch.expm1(torch.tensor(0.5))))
    torch.testing.assert_close(p, torch.tensor(0.5))

    class Scaled(PyroModule):
        def __init__(self):
            super().__init__()
            self.s = PyroParam(torch.tensor(2.0), constraint=softplus_positive(low=1.0))

    m = Scaled()
    torch.testing.assert_close(m.s, torch.tensor(2.0))
    torch.testing.assert_close(m.s_unconstrained, torch.log(torch.expm1(torch.tensor(1.0))))


def _gamma_model(y):
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Poisson(rate), obs=y)


def test_autonormal_uses_softplus_inside_context_and_fits():
    y = torch.tensor([3.0, 5.0, 4.0, 6.0, 2.0, 4.0, 5.0, 3.0, 4.0, 4.0])
    with softplus_for_positive():
        guide = AutoNormal(_gamma_model)
        svi = SVI(_gamma_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        for _ in range(600):
            svi.step(y)
        assert isinstance(biject_to(dist.Gamma(2.0, 1.0).support), SoftplusTransform)
        median = guide.median()["rate"]
    # Conjugate posterior: Gamma(2 + sum y, 1 + n) with mean 42 / 11.
    assert abs(median.item() - 41.5 / 11) < 0.15
    assert isinstance(biject_to(constraints.nonnegative), type(transform_to(constraints.positive)))
