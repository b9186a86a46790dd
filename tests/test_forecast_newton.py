"""The pieces of the panel Newton step: closed-form derivatives and banded algebra.

References are independent: the count laws' derivatives in ``eta``, log-shapes and gate
logits against autograd through the families' own log densities (to 1e-10), the
``LDL'`` sweeps against dense triangular solves, the batched feature products against
``einsum``, and the covariance of the last level and the weights against the dense
inverse of the whole Hessian.
"""

import numpy as np
import pytest
import torch

from posheads.estimators.forecasting.laplace import state_covariance
from posheads.estimators.forecasting.laplace_newton import likelihood_derivatives_autograd
from posheads.estimators.forecasting.tridiagonal import (
    backward_substitute,
    feature_products,
    forward_substitute,
    ldl_pivots,
)
from posheads.families import get_family
from posheads.models.forecast_panel import LocalLevelPanel, PanelData, PanelParams


def _case(family, seed, beta=1.0, eta_loc=0.0, eta_sd=2.0):
    """A model, data with zeros and padding, parameters and ``eta`` of shape (2, 4, 30)."""
    gen = torch.Generator().manual_seed(seed)
    g, s, t = 2, 4, 30
    fam = get_family(family)
    model = LocalLevelPanel(fam, bias=0.54, beta=beta)
    eta = eta_loc + eta_sd * torch.randn(g, s, t, generator=gen, dtype=torch.float64)
    rate = torch.rand(s, t, generator=gen, dtype=torch.float64) * 8.0
    y = torch.poisson(rate, generator=gen) * (torch.rand(s, t, generator=gen) > 0.4)
    mask = torch.ones(s, t, dtype=torch.float64)
    mask[0, :7] = 0.0  # a left-padded series
    scale = 0.5 + torch.rand(s, generator=gen, dtype=torch.float64)
    data = PanelData(y.double(), mask, torch.zeros(s, t, 0, dtype=torch.float64), scale)
    n_shapes, n_parts = len(fam.shapes), len(fam.parts)
    params = PanelParams(
        z=torch.zeros(g, s, t - 1, dtype=torch.float64),
        level0=torch.zeros(g, s, dtype=torch.float64),
        weight=torch.zeros(g, s, 0, dtype=torch.float64),
        log_shapes=torch.randn(g, s, n_shapes, generator=gen, dtype=torch.float64),
        gates=torch.randn(g, s, n_parts, generator=gen, dtype=torch.float64),
        weight_mean=torch.zeros(g, 0, dtype=torch.float64),
        shape_mean=torch.zeros(g, n_shapes, dtype=torch.float64),
        gate_mean=torch.zeros(g, n_parts, dtype=torch.float64))
    return model, eta, params, data


@pytest.mark.parametrize("family", ["poisson", "negative_binomial", "hurdle_poisson",
                                    "hurdle_negative_binomial", "discretized_logistic"])
@pytest.mark.parametrize(("beta", "eta_loc", "eta_sd"),
                         [(1.0, 0.0, 2.0), (1.0, -3.0, 3.0), (2.5, 1.0, 1.5), (1.0, 6.0, 1.0)])
def test_closed_form_derivatives_match_autograd(family, beta, eta_loc, eta_sd):
    model, eta, params, data = _case(family, seed=3, beta=beta, eta_loc=eta_loc, eta_sd=eta_sd)
    if family == "discretized_logistic":  # one series' dispersion held at its floor (0.05)
        params.log_shapes[:, 1] = -4.0
    got = model.likelihood_derivatives(eta, params, data)
    ref = likelihood_derivatives_autograd(model, eta, params, data)
    names = ("g_eta", "g_ab", "h_eta", "cross", "h_ab")
    for name, a, b in zip(names, got, ref, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10, err_msg=name)


def test_closed_form_derivatives_leave_the_inputs_alone():
    model, eta, params, data = _case("hurdle_negative_binomial", seed=5)
    before = [t.clone() for t in (eta, *params.tensors(), data.y, data.mask, data.scale)]
    model.likelihood_derivatives(eta, params, data)
    after = (eta, *params.tensors(), data.y, data.mask, data.scale)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)


def test_laws_without_a_closed_form_fall_back_to_autograd():
    model, eta, params, data = _case("zero_inflated_negative_binomial", seed=1)
    assert model.likelihood_derivatives(eta, params, data) is None


def _dense(diag, off):
    return np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)


def test_ldl_sweeps_match_dense_triangular_solves():
    rng = np.random.default_rng(0)
    n, batch = 40, (3, 2)
    diag = torch.as_tensor(rng.uniform(2.5, 5.0, size=(*batch, n)))
    off = torch.as_tensor(rng.normal(size=(*batch, n - 1)))
    rhs = torch.as_tensor(rng.normal(size=(n, *batch, 4)))  # time-major
    pivot, ratio = ldl_pivots(diag, off)
    fwd = forward_substitute(ratio, rhs.clone())
    back = backward_substitute(ratio[..., None], rhs.clone())
    for i in range(batch[0]):
        for j in range(batch[1]):
            h = _dense(diag[i, j].numpy(), off[i, j].numpy())
            lower = np.eye(n) + np.diag(ratio[1:, i, j].numpy(), -1)
            np.testing.assert_allclose(lower @ np.diag(pivot[:, i, j].numpy()) @ lower.T, h,
                                       rtol=1e-12, atol=1e-12)
            b = rhs[:, i, j].numpy()
            np.testing.assert_allclose(fwd[:, i, j].numpy(), np.linalg.solve(lower, b),
                                       rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(back[:, i, j].numpy(), np.linalg.solve(lower.T, b),
                                       rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("k", "r"), [(3, 6), (0, 6), (3, 0), (0, 0)])
def test_feature_products_match_einsum(k, r):
    rng = np.random.default_rng(1)
    feats = torch.as_tensor(rng.normal(size=(5, 17, k)))
    m = torch.as_tensor(rng.normal(size=(4, 5, 17, r)))
    got = feature_products(feats, m)
    assert got.shape == (4, 5, k, r)
    np.testing.assert_allclose(got.numpy(), torch.einsum("stk,gstr->gskr", feats, m).numpy(),
                               rtol=1e-12, atol=1e-12)


def test_state_covariance_batches_match_the_dense_inverse(monkeypatch):
    # several batches of series (a forced small batch size) against the dense inverse of
    # the Hessian in (level path, weights)
    from posheads.estimators.forecasting import laplace_newton

    monkeypatch.setattr(laplace_newton, "_BATCH_ELEMENTS", 1)
    rng = np.random.default_rng(2)
    g, s, t, k = 2, 3, 12, 2
    model = LocalLevelPanel(get_family("poisson"), bias=0.54)
    w = rng.uniform(0.0, 3.0, size=(g, s, t))
    f = rng.normal(size=(s, t, k))
    sigma = np.array([0.05, 0.3])
    cov = state_covariance(model, torch.as_tensor(w), torch.as_tensor(f),
                           torch.as_tensor(sigma)).numpy()
    level0_prec, weight_prec = model.prior_precisions(s)
    q = _dense(np.r_[1.0, np.full(t - 2, 2.0), 1.0], -np.ones(t - 1))
    for i in range(g):
        for j in range(s):
            a = np.diag(w[i, j]) + q / sigma[i] ** 2
            a[0, 0] += level0_prec
            b = w[i, j][:, None] * f[j]
            c = f[j].T @ (w[i, j][:, None] * f[j]) + weight_prec * np.eye(k)
            full = np.linalg.inv(np.block([[a, b], [b.T, c]]))
            keep = [t - 1, *range(t, t + k)]
            np.testing.assert_allclose(cov[i, j], full[np.ix_(keep, keep)], rtol=1e-8,
                                       atol=1e-12)
