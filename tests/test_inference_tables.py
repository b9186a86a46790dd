"""Inference tables of MAP fits: covariance matrices, summary statistics and tests.

References: statsmodels' GLM with a softplus link class (``tools/peers.py``) for the
model-based, HC0, HC1 and cluster-robust covariances and the Wald and likelihood-ratio
tests on NMES1988; scipy log-likelihoods differentiated by finite differences for the
families statsmodels cannot fit with this link (the joint NB covariance, zero-inflated NB
scores); R pscl's ``vuong`` formula computed by hand from scipy log-probabilities.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import special, stats
from sklearn.exceptions import NotFittedError

from posheads import (
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
    ZeroInflatedNegativeBinomialSoftplusRegressor,
    ZeroInflatedPoissonSoftplusRegressor,
)
from posheads.datasets import load_nmes1988, nmes1988_design
from posheads.estimators import load

sm = pytest.importorskip("statsmodels.api")
from statsmodels.stats import sandwich_covariance  # noqa: E402

from tools.peers import statsmodels_softplus_link  # noqa: E402

RTOL = 1e-6  # the bar for statsmodels agreement


@pytest.fixture(scope="module")
def nmes():
    frame = load_nmes1988(as_frame=True).frame
    X = nmes1988_design(frame, standardize=True)
    return X, frame["visits"].to_numpy(dtype=np.float64), frame["school"].to_numpy()


def _sm_glm(X, y, family, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' DomainWarning for a custom link
        return sm.GLM(y, sm.add_constant(np.asarray(X), has_constant="add"), family=family,
                      **kw)


_STARTS = {}


def _sm_fit(model, cov_type="nonrobust", **kw):
    """IRLS to convergence (``tol=1e-13``), with the covariance ``cov_type``; the
    ``"nonrobust"`` one from Newton's method (the observed information). Refits start
    from the model's converged IRLS fit, made once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if id(model) not in _STARTS:
            _STARTS[id(model)] = (model, model.fit(method="IRLS", tol=1e-13,
                                                   maxiter=300).params)
        start = _STARTS[id(model)][1]
        if cov_type == "nonrobust":
            return model.fit(method="newton", start_params=start, tol=1e-13)
        return model.fit(method="IRLS", start_params=start, tol=1e-13, maxiter=300,
                         cov_type=cov_type, **kw)


def _se(frame):
    return np.sqrt(np.diag(frame.to_numpy()))


@pytest.fixture(scope="module")
def poisson_pair(nmes):
    X, y, _ = nmes
    est = PoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(X, y)
    family = sm.families.Poisson(link=statsmodels_softplus_link(), check_link=False)
    return est, _sm_glm(X, y, family)


@pytest.fixture(scope="module")
def nb_pair(nmes):
    X, y, _ = nmes
    est = NegativeBinomialSoftplusRegressor(alpha=0, tol=1e-10).fit(X, y)
    family = sm.families.NegativeBinomial(alpha=1.0 / est.concentration_,
                                          link=statsmodels_softplus_link(), check_link=False)
    return est, _sm_glm(X, y, family)


# ------------------------------------------------------- statsmodels agreement
@pytest.mark.parametrize("pair", ["poisson_pair", "nb_pair"])
def test_standard_errors_match_statsmodels_on_nmes1988(request, nmes, pair):
    """model/HC0/HC1/cluster SEs equal statsmodels' to 1e-6 relative (NB: the
    concentration fixed at posheads' estimate, as statsmodels' GLM family fixes alpha)."""
    est, model = request.getfixturevalue(pair)
    groups = nmes[2]
    shapes = "fixed"  # no shape in the Poisson model: the same as "joint" there
    ref = {"model": _sm_fit(model).bse, "HC0": _sm_fit(model, "HC0").bse,
           "cluster": _sm_fit(model, "cluster", cov_kwds={"groups": groups}).bse}
    # statsmodels' GLM "HC1" is its HC0 (no cov_HC1 for GLMs): the n / (n - k) factor
    # comes from its sandwich function with use_correction=True
    ref["HC1"] = np.sqrt(np.diag(sandwich_covariance.cov_white_simple(
        _sm_fit(model, "HC0"), use_correction=True)))
    np.testing.assert_allclose(_sm_fit(model).params, np.r_[est.intercept_, est.coef_],
                               rtol=RTOL)
    for kind, bse in ref.items():
        cov = est.covariance_matrix(kind, groups=groups if kind == "cluster" else None,
                                    shapes=shapes)
        assert list(cov.index) == ["intercept", *nmes[0].columns]
        np.testing.assert_allclose(_se(cov), bse, rtol=RTOL, err_msg=kind)
        np.testing.assert_allclose(cov.to_numpy(), cov.to_numpy().T)


def test_hc3_matches_a_hand_computation_from_statsmodels_derivatives(poisson_pair):
    # HC3 = H^-1 (sum s_i s_i^T / (1 - h_i)^2) H^-1, h_i = c_i x_i^T H^-1 x_i with the
    # observed-information weight c_i; scores and weights from statsmodels
    est, model = poisson_pair
    params = _sm_fit(model).params
    X = model.exog
    scores = model.score_obs(params)
    factor = -model.hessian_factor(params, observed=True)
    bread = np.linalg.inv(X.T @ (X * factor[:, None]))
    lev = factor * np.einsum("ij,jk,ik->i", X, bread, X)
    assert lev.sum() == pytest.approx(X.shape[1])
    hc3 = bread @ (scores.T @ (scores / (1 - lev)[:, None] ** 2)) @ bread
    np.testing.assert_allclose(est.covariance_matrix("HC3").to_numpy(), hc3, rtol=RTOL)


def test_frequency_weights_match_statsmodels_and_repeated_rows(nmes):
    X, y, groups = nmes
    X, y, groups = X.iloc[:800], y[:800], groups[:800]
    w = np.random.default_rng(0).integers(0, 4, size=len(y)).astype(float)
    est = PoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(X, y, sample_weight=w)
    family = sm.families.Poisson(link=statsmodels_softplus_link(), check_link=False)
    pos = w > 0  # statsmodels' Newton fit gives NaN with zero weights: drop those rows
    model = _sm_glm(X[pos], y[pos], family, freq_weights=w[pos])
    np.testing.assert_allclose(_se(est.covariance_matrix("model")), _sm_fit(model).bse,
                               rtol=RTOL)
    np.testing.assert_allclose(_se(est.covariance_matrix("HC0")),
                               _sm_fit(model, "HC0").bse, rtol=RTOL)
    # statsmodels' cluster factor counts rows, posheads' the weights (the observations)
    n, k, total = pos.sum(), X.shape[1] + 1, w.sum()
    ratio = (total - 1) / (total - k) / ((n - 1) / (n - k))
    ref = _sm_fit(model, "cluster", cov_kwds={"groups": groups[pos]}).bse * np.sqrt(ratio)
    np.testing.assert_allclose(_se(est.covariance_matrix("cluster", groups=groups)), ref,
                               rtol=RTOL)
    # a weight of k is the row repeated k times (0: dropped), for every kind
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    dup = PoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(X.iloc[rep], y[rep])
    for kind in ("model", "HC0", "HC1", "HC3", "cluster"):
        g = {"groups": groups} if kind == "cluster" else {}
        gd = {"groups": groups[rep]} if kind == "cluster" else {}
        np.testing.assert_allclose(est.covariance_matrix(kind, **g).to_numpy(),
                                   dup.covariance_matrix(kind, **gd).to_numpy(),
                                   rtol=1e-6, atol=1e-12, err_msg=kind)
    assert est.loglik_ == pytest.approx(dup.loglik_, rel=1e-10)
    assert est.bic() == pytest.approx(dup.bic(), rel=1e-10)


def test_sparse_design_gives_the_dense_tables(nmes):
    X, y, groups = nmes
    X = X.to_numpy()[:600]
    X[np.abs(X) < 0.5] = 0.0
    y, groups = y[:600], groups[:600]
    dense = PoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(X, y)
    sparse = PoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(sp.csr_matrix(X), y)
    for kind in ("model", "HC0", "HC3", "cluster"):
        g = {"groups": groups} if kind == "cluster" else {}
        np.testing.assert_allclose(sparse.covariance_matrix(kind, **g).to_numpy(),
                                   dense.covariance_matrix(kind, **g).to_numpy(), rtol=1e-7)


# ------------------------------------------ finite differences of scipy likelihoods
def _nb_logpmf(y, mu, r):
    return stats.nbinom.logpmf(y, r, r / (r + mu))


def _zinb_rows(theta, X, y):
    """Per-row ZINB log-likelihood at natural parameters (b0, b, r, g0, g)."""
    p = X.shape[1]
    b0, b, r, g0, g = theta[0], theta[1:1 + p], theta[1 + p], theta[2 + p], theta[3 + p:]
    mu = np.logaddexp(0.0, b0 + X @ b)
    pi = special.expit(g0 + X @ g)
    nb = _nb_logpmf(y, mu, r)
    return np.where(y == 0, np.log(pi + (1 - pi) * np.exp(nb)), np.log1p(-pi) + nb)


def _log_prior_r(r):
    # posheads' default: 1 / sqrt(r) ~ HalfNormal(1), i.e. r ~ InverseGamma(1/2, 1/2)
    return stats.invgamma(a=0.5, scale=0.5).logpdf(r)


def _fd_hessian(f, x, h=1e-3):
    d = len(x)
    H = np.empty((d, d))
    for i in range(d):
        for j in range(i, d):
            e_i, e_j = np.eye(d)[i] * h, np.eye(d)[j] * h
            H[i, j] = H[j, i] = (f(x + e_i + e_j) - f(x + e_i - e_j) - f(x - e_i + e_j)
                                 + f(x - e_i - e_j)) / (4 * h * h)
    return H


def _fd_scores(rows, x, h=1e-5):
    return np.stack([(rows(x + e) - rows(x - e)) / (2 * h) for e in np.eye(len(x)) * h],
                    axis=1)


def _zinb_data(n=400, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    mu = np.logaddexp(0.0, 1.0 + X @ [0.8, -0.4])
    r = 2.0
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    y[rng.random(n) < special.expit(-1.0 + X @ [0.5, 0.0])] = 0.0
    return X, y


def test_joint_covariance_with_shape_and_zero_part_matches_finite_differences():
    # every block at once: count part, concentration (natural scale, delta method), zero
    # part. The MAP has the default priors: r ~ InverseGamma(1/2, 1/2), gate_coef ~ N(0, 1)
    X, y = _zinb_data()
    est = ZeroInflatedNegativeBinomialSoftplusRegressor(alpha=0, tol=1e-11).fit(X, y)
    theta = np.r_[est.intercept_, est.coef_, est.concentration_, est.gate_intercept_,
                  est.gate_coef_]

    def log_post(t):
        return (_zinb_rows(t, X, y).sum() + _log_prior_r(t[3])
                + stats.norm.logpdf(t[5:]).sum())

    H = -_fd_hessian(log_post, theta)
    bread = np.linalg.inv(H)
    model = est.covariance_matrix("model")
    assert list(model.index) == ["intercept", "x0", "x1", "concentration", "gate_intercept",
                                 "gate:x0", "gate:x1"]
    # central differences carry about 1e-5 of the largest entry (amplified by the inverse):
    # a wrong block would be off by far more
    _assert_close_to_fd(model.to_numpy(), bread)
    S = _fd_scores(lambda t: _zinb_rows(t, X, y), theta)
    _assert_close_to_fd(est.covariance_matrix("HC0").to_numpy(), bread @ (S.T @ S) @ bread)
    # the fixed-shape block: the same without the concentration's row and column
    keep = [0, 1, 2, 4, 5, 6]
    fixed = est.covariance_matrix("HC0", shapes="fixed")
    assert "concentration" not in fixed.index
    Hk = np.linalg.inv(H[np.ix_(keep, keep)])
    _assert_close_to_fd(fixed.to_numpy(), Hk @ (S[:, keep].T @ S[:, keep]) @ Hk)


def _assert_close_to_fd(actual, reference):
    np.testing.assert_allclose(actual, reference, rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())


# ------------------------------------------------------------------ summary
def test_summary_statistics_and_delta_method_marginal_effects(poisson_pair):
    est, _ = poisson_pair
    table = est.summary(coverage=0.95, cov_type="HC0")
    cov = est.covariance_matrix("HC0")
    se = _se(cov)
    np.testing.assert_allclose(table["std_err"], se, rtol=1e-12)
    z = table["estimate"] / table["std_err"]
    np.testing.assert_allclose(table["z"], z, rtol=1e-12)
    np.testing.assert_allclose(table["p_value"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-9)
    q = stats.norm.ppf(0.975)
    np.testing.assert_allclose(table["upper"], table["estimate"] + q * se, rtol=1e-9)
    # AME_j = mean_i sigmoid(eta_i) * b_j for a Poisson fit without exposure; its
    # gradient by central differences, its variance g^T V g
    X = est.posterior_.data.X.numpy()

    def ame(t):
        return special.expit(t[0] + X @ t[1:]).mean() * t[1:]

    t0 = np.r_[est.intercept_, est.coef_]
    G = np.stack([(ame(t0 + e) - ame(t0 - e)) / 2e-6 for e in np.eye(len(t0)) * 1e-6],
                 axis=1)
    features = list(cov.index[1:])
    np.testing.assert_allclose(table.loc[features, "ame"], ame(t0), rtol=1e-10)
    np.testing.assert_allclose(table.loc[features, "ame_std_err"],
                               np.sqrt(np.diag(G @ cov.to_numpy() @ G.T)), rtol=1e-6)
    assert table.loc["intercept", ["ame", "ame_std_err"]].isna().all()


def test_marginal_effects_go_through_every_part_that_has_the_variable():
    # a zero part with its own design: "a" acts through both parts, "z" through the gate
    # only (its effect is reported on the gate:z row); reference: central differences of
    # the mean (1 - pi) * mu over the data, the variable moved in every design holding it
    rng = np.random.default_rng(5)
    n = 600
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    Z = pd.DataFrame({"a": X["a"], "z": rng.normal(size=n)})
    y = rng.poisson(np.logaddexp(0.0, 1.0 + X.to_numpy() @ [0.8, -0.5])).astype(float)
    y[rng.random(n) < special.expit(-1.0 + Z.to_numpy() @ [0.7, 0.5])] = 0.0
    est = ZeroInflatedPoissonSoftplusRegressor(alpha=0).fit(X, y, X_zero=Z)
    table = est.summary()

    def mean(Xv, Zv):
        mu = np.logaddexp(0.0, est.intercept_ + Xv @ est.coef_)
        return (1 - special.expit(est.gate_intercept_ + Zv @ est.gate_coef_)) * mu

    Xv, Zv = X.to_numpy(), Z.to_numpy()
    h, none = 1e-6, np.zeros(2)
    first, second = np.array([h, 0.0]), np.array([0.0, h])

    def slope(dx, dz):
        return (mean(Xv + dx, Zv + dz) - mean(Xv - dx, Zv - dz)) / (2 * h)

    shift_a, shift_b, shift_z = slope(first, first), slope(second, none), slope(none, second)
    for row, ref in [("a", shift_a), ("b", shift_b), ("gate:z", shift_z)]:
        assert table.loc[row, "ame"] == pytest.approx(ref.mean(), rel=1e-6), row
        assert table.loc[row, "ame_std_err"] > 0
    assert np.isnan(table.loc["gate:a", "ame"])


def test_summary_of_a_shape_is_a_positive_interval_without_a_z(nb_pair):
    est, _ = nb_pair
    table = est.summary(coverage=0.99)
    row = table.loc["concentration"]
    assert 0 < row["lower"] < row["estimate"] < row["upper"]
    assert np.isnan(row["z"]) and np.isnan(row["p_value"])
    assert row["std_err"] == pytest.approx(_se(est.covariance_matrix().loc[
        ["concentration"], ["concentration"]])[0])


def test_bayesian_fits_keep_their_posterior_table():
    X, y = _zinb_data(n=300)
    est = PoissonSoftplusRegressor(alpha=0, inference="laplace", num_samples=400,
                                   random_state=0).fit(X, y)
    table = est.summary()
    assert list(table.columns) == ["estimate", "std_err", "lower", "upper", "ame",
                                   "ame_std_err", "ame_lower", "ame_upper"]
    assert np.isnan(est.loglik_)
    with pytest.raises(ValueError, match="MAP fits"):
        est.summary(cov_type="HC0")
    with pytest.raises(ValueError, match="needs a MAP fit"):
        est.covariance_matrix()
    with pytest.raises(ValueError, match="maximised log-likelihood"):
        est.aic()


# ---------------------------------------------------------- likelihoods and tests
def test_loglik_aic_bic_match_statsmodels_and_scipy(poisson_pair, nb_pair, nmes):
    est, model = poisson_pair
    res = _sm_fit(model)
    assert est.loglik_ == pytest.approx(res.llf, rel=1e-12)
    assert est.aic() == pytest.approx(res.aic, rel=1e-12)
    assert est.bic() == pytest.approx(res.bic_llf, rel=1e-12)
    nb, _ = nb_pair
    mu = nb.predict(nmes[0])
    ll = _nb_logpmf(nmes[1], mu, nb.concentration_).sum()
    assert nb.loglik_ == pytest.approx(ll, rel=1e-10)
    assert nb.aic() == pytest.approx(-2 * ll + 2 * (nmes[0].shape[1] + 2), rel=1e-10)


def test_wald_test_matches_statsmodels(poisson_pair, nmes):
    est, model = poisson_pair
    labels = ["age", "income", "employed_yes"]
    res = _sm_fit(model, "HC0")
    R = np.zeros((3, nmes[0].shape[1] + 1))
    for i, name in enumerate(labels):
        R[i, 1 + list(nmes[0].columns).index(name)] = 1.0
    ref = res.wald_test(R, scalar=True, use_f=False)
    out = est.wald_test(labels, kind="HC0")
    assert (out.df, out.test) == (3, "wald")
    assert out.statistic == pytest.approx(float(ref.statistic), rel=RTOL)
    assert out.p_value == pytest.approx(float(ref.pvalue), rel=RTOL)
    # the same restrictions as a matrix, with values: R b = r
    r = np.array([0.1, 0.0, -0.2])
    R_copy = R.copy()
    by_matrix = est.wald_test(R, value=r, kind="HC0")
    np.testing.assert_array_equal(R, R_copy)  # the caller's matrix is not modified
    ref = res.wald_test((R, r), scalar=True, use_f=False)
    assert by_matrix.statistic == pytest.approx(float(ref.statistic), rel=RTOL)


def test_lr_test_matches_statsmodels(poisson_pair, nmes):
    X, y, _ = nmes
    est, model = poisson_pair
    small = PoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(X.iloc[:, :10], y)
    family = sm.families.Poisson(link=statsmodels_softplus_link(), check_link=False)
    ref_small = _sm_fit(_sm_glm(X.iloc[:, :10], y, family))
    out = est.lr_test(small)
    stat = 2 * (_sm_fit(model).llf - ref_small.llf)
    assert out.statistic == pytest.approx(stat, rel=1e-9)
    assert out.df == 6
    assert out.p_value == pytest.approx(stats.chi2.sf(stat, 6), rel=1e-6)
    # under the null (a pure-noise column added) the test rarely rejects
    noise = np.random.default_rng(1).normal(size=len(y))
    bigger = PoissonSoftplusRegressor(alpha=0, tol=1e-10).fit(X.assign(noise=noise), y)
    assert bigger.lr_test(est).df == 1


def _zip_data(n=1500, seed=7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = rng.poisson(np.logaddexp(0.0, 1.5 + X @ [0.6, -0.4])).astype(float)
    y[rng.random(n) < 0.3] = 0.0  # 30% structural zeros
    return X, y


def test_vuong_prefers_the_zero_inflated_model_on_zero_inflated_data():
    X, y = _zip_data()
    zip_ = ZeroInflatedPoissonSoftplusRegressor(alpha=0).fit(X, y)
    pois = PoissonSoftplusRegressor(alpha=0).fit(X, y)
    out = zip_.vuong_test(pois)
    assert list(out.index) == ["raw", "aic", "bic"]
    assert (out["statistic"] > 5).all() and (out["preferred"] == "self").all()
    assert (out["p_value"] < 1e-6).all()
    back = pois.vuong_test(zip_)
    np.testing.assert_allclose(back["statistic"].loc["raw"], -out["statistic"].loc["raw"])
    assert back["preferred"].loc["raw"] == "other"
    # the hand computation of pscl::vuong from scipy log-probabilities
    mu1 = np.logaddexp(0.0, zip_.intercept_ + X @ zip_.coef_)
    pi = special.expit(zip_.gate_intercept_ + X @ zip_.gate_coef_)
    l1 = np.where(y == 0, np.log(pi + (1 - pi) * np.exp(-mu1)),
                  np.log1p(-pi) + stats.poisson.logpmf(y, mu1))
    l2 = stats.poisson.logpmf(y, np.logaddexp(0.0, pois.intercept_ + X @ pois.coef_))
    m, n, k1, k2 = l1 - l2, len(y), 6, 3
    for name, c in [("raw", 0.0), ("aic", k1 - k2), ("bic", (k1 - k2) * np.log(n) / 2)]:
        v = (m.sum() - c) / (m.std(ddof=1) * np.sqrt(n))
        assert out.loc[name, "statistic"] == pytest.approx(v, rel=1e-8)
        assert out.loc[name, "p_value"] == pytest.approx(stats.norm.sf(abs(v)), rel=1e-6)


# ---------------------------------------------------------------- bad input
def test_bad_input_raises_value_errors_naming_the_problem(poisson_pair, nb_pair, nmes):
    X, y, groups = nmes
    est, _ = poisson_pair
    with pytest.raises(ValueError, match="one label per training row"):
        est.covariance_matrix("cluster", groups=groups[:-1])
    with pytest.raises(ValueError, match="needs groups"):
        est.covariance_matrix("cluster")
    with pytest.raises(ValueError, match="only used with kind='cluster'"):
        est.covariance_matrix("HC0", groups=groups)
    with pytest.raises(ValueError, match="at least 2 clusters"):
        est.covariance_matrix("cluster", groups=np.zeros(len(y)))
    with pytest.raises(ValueError, match="kind must be one of"):
        est.covariance_matrix("HC2")
    with pytest.raises(ValueError, match="missing values"):
        est.summary(cov_type="cluster", groups=np.r_[np.nan, groups[1:]])
    with pytest.raises(ValueError, match=r"shape \(q, 17\)"):
        est.wald_test(np.ones((1, 16)))
    with pytest.raises(ValueError, match="unknown parameters"):
        est.wald_test(["age", "agee"])
    with pytest.raises(ValueError, match="one entry per restriction"):
        est.wald_test(["age"], value=[0.0, 1.0])
    # lr_test: different data, different families, not nested, the wrong way round
    other_y = PoissonSoftplusRegressor(alpha=0).fit(X.iloc[:, :10], y + 1)
    with pytest.raises(ValueError, match="different data: their y differ"):
        est.lr_test(other_y)
    fewer_rows = PoissonSoftplusRegressor(alpha=0).fit(X.iloc[:-5, :10], y[:-5])
    with pytest.raises(ValueError, match="different data: 4406 and 4401 rows"):
        est.lr_test(fewer_rows)
    with pytest.raises(ValueError, match="families differ"):
        nb_pair[0].lr_test(est)
    shifted = PoissonSoftplusRegressor(alpha=0).fit(X.iloc[:, :10] * 2.0, y)
    with pytest.raises(ValueError, match="not a column of the bigger"):
        est.lr_test(shifted)
    small = PoissonSoftplusRegressor(alpha=0).fit(X.iloc[:, :10], y)
    with pytest.raises(ValueError, match="call lr_test on the bigger one"):
        small.lr_test(est)
    with pytest.raises(ValueError, match="different data"):
        est.vuong_test(other_y)
    with pytest.raises(TypeError, match="fitted posheads GLM regressor"):
        est.vuong_test("poisson")
    with pytest.raises(NotFittedError):
        PoissonSoftplusRegressor().covariance_matrix()
    g = groups.copy()
    est.covariance_matrix("cluster", groups=g)
    np.testing.assert_array_equal(g, groups)  # the caller's labels are not modified


def test_penalised_lr_test_warns_and_loaded_fit_needs_its_data(tmp_path, nmes):
    X, y, _ = nmes
    big = PoissonSoftplusRegressor(alpha=0.01).fit(X, y)
    small = PoissonSoftplusRegressor(alpha=0.01).fit(X.iloc[:, :8], y)
    with pytest.warns(UserWarning, match="penalised"):
        big.lr_test(small)
    # loglik_ is the likelihood at the (penalised) mode, without the prior
    ll = stats.poisson.logpmf(y, big.predict(X)).sum()
    assert big.loglik_ == pytest.approx(ll, rel=1e-10)
    big.save(tmp_path / "fit")
    back = load(tmp_path / "fit")
    assert back.loglik_ == big.loglik_ and back.aic() == big.aic()
    with pytest.raises(ValueError, match="without its training data"):
        back.covariance_matrix()
    assert isinstance(big.covariance_matrix(), pd.DataFrame)
