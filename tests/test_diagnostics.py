"""``posheads.diagnostics``: rootograms, quantile residuals, PIT, the dispersion test and
the model comparison table.

References: scipy pmfs for the expected frequencies and log-likelihoods, statsmodels'
Cameron-Trivedi regression for the dispersion test, Monte Carlo over randomisations for
the non-randomized PIT histogram, and simulation with a known law for the statistical
tests (Kolmogorov-Smirnov on the quantile residuals, fixed seeds).
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.stats as st

from posheads import (
    NegativeBinomialSoftplusRegressor,
    PoissonSoftplusRegressor,
)
from posheads.diagnostics import (
    compare_models,
    dispersion_test,
    draw_qq,
    pit_bin_heights,
    pit_histogram,
    pit_values,
    qq_plot,
    quantile_residuals,
    randomized_pit,
    rootogram,
    rootogram_table,
)


def _nb_data(n, seed, r=1.5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    mu = np.logaddexp(0, 1.2 + X @ [0.8, -0.5])
    return X, rng.negative_binomial(r, r / (r + mu)).astype(np.float64)


@pytest.fixture(scope="module")
def nb_fits():
    X, y = _nb_data(2000, seed=11)
    pois = PoissonSoftplusRegressor(alpha=0).fit(X, y)
    nb = NegativeBinomialSoftplusRegressor(alpha=0).fit(X, y)
    return X, y, pois, nb


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_quantile_residuals_normal_under_the_true_model_not_under_poisson(nb_fits):
    X, y, pois, nb = nb_fits
    r_nb = quantile_residuals(nb, X, y, random_state=0)
    r_pois = quantile_residuals(pois, X, y, random_state=0)
    p_nb = st.kstest(r_nb, "norm").pvalue
    p_pois = st.kstest(r_pois, "norm").pvalue
    # correctly specified NB fit: N(0, 1) (KS p = 0.68 with these seeds); a Poisson fit to
    # over-dispersed counts: far too spread (KS p = 1.2e-25)
    assert p_nb > 0.05
    assert p_pois < 1e-8
    assert np.std(r_pois) > 1.3 and abs(np.std(r_nb) - 1) < 0.05
    # reproducible, and the randomisation only moves u within [F(y-1), F(y)]
    np.testing.assert_array_equal(r_nb, quantile_residuals(nb, X, y, random_state=0))
    u = pit_values(nb, X, y, random_state=3)
    bounds = nb.pit_interval(X, y)
    assert np.all((bounds[:, 0] <= u) & (u <= bounds[:, 1]))


def test_pit_histogram_is_the_mean_of_randomized_histograms(nb_fits):
    X, y, pois, _ = nb_fits
    bounds = pois.pit_interval(X[:300], y[:300])
    heights = pit_bin_heights(bounds, 10)
    assert heights.mean() == pytest.approx(1.0)
    reps = [np.histogram(pit_values(pois, X[:300], y[:300], random_state=s), bins=10,
                         range=(0, 1), density=True)[0] for s in range(300)]
    np.testing.assert_allclose(np.mean(reps, axis=0), heights, atol=0.03)
    # a continuous PIT (lo == hi) is an ordinary histogram
    u = np.random.default_rng(0).uniform(size=500)
    ref = np.histogram(u, bins=5, range=(0, 1), density=True)[0]
    np.testing.assert_allclose(pit_bin_heights(np.stack([u, u], 1), 5), ref)
    ax = pit_histogram(pois, X, y, bins=12)
    assert len(ax.patches) == 12
    # an over-dispersed truth under a Poisson fit: the U shape of an under-dispersed law
    h = pit_bin_heights(pois.pit_interval(X, y), 10)
    assert h[0] > 1.2 and h[-1] > 1.2 and h[4] < 0.9


def test_rootogram_table_and_styles(nb_fits):
    X, y, pois, _ = nb_fits
    table = rootogram_table(pois, X, y)
    top = int(y.max())
    assert list(table.index) == list(range(top + 1))
    np.testing.assert_array_equal(table["observed"], np.bincount(y.astype(int)))
    mu = pois.predict(X)
    expected = st.poisson.pmf(np.arange(top + 1)[None], mu[:, None]).sum(axis=0)
    np.testing.assert_allclose(table["expected"], expected, rtol=1e-9)
    wider = rootogram_table(pois, X, y, max_count=top + 5)
    assert len(wider) == top + 6 and wider["observed"].iloc[-5:].sum() == 0
    sq_o, sq_e = np.sqrt(table["observed"]), np.sqrt(table["expected"])
    fig, axes = plt.subplots(1, 3)
    for style, ax in zip(["hanging", "standing", "suspended"], axes, strict=True):
        assert rootogram(pois, X, y, style=style, ax=ax) is ax
    bottoms = [p.get_y() for p in axes[0].patches]
    np.testing.assert_allclose(bottoms, sq_e - sq_o, atol=1e-12)
    np.testing.assert_allclose([p.get_height() for p in axes[1].patches], sq_o)
    np.testing.assert_allclose([p.get_height() for p in axes[2].patches], sq_e - sq_o)
    assert rootogram(pois, X, y).figure is not fig  # a new figure without ax=


def test_qq_plot_draws_sorted_residuals(nb_fits):
    X, y, _, nb = nb_fits
    ax = qq_plot(nb, X, y, random_state=0)
    xs, ys = ax.lines[0].get_data()
    np.testing.assert_allclose(ys, np.sort(quantile_residuals(nb, X, y, random_state=0)))
    assert np.all(np.diff(xs) > 0)


def test_dispersion_test_matches_statsmodels(nb_fits):
    sm = pytest.importorskip("statsmodels.api")
    from statsmodels.discrete._diagnostics_count import test_poisson_dispersion

    X, y, pois, _ = nb_fits
    res = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson()).fit()

    class Fitted:  # the statsmodels fit's means, through the estimator interface
        def predict(self, X):
            return res.predict()

    ref = test_poisson_dispersion(res)
    ct_nb2 = ref.statistic[list(ref.method).index("CT nb2")]
    out = dispersion_test(Fitted(), X, y)
    assert out.statistic == pytest.approx(ct_nb2, rel=1e-10)
    assert out.pvalue == pytest.approx(st.norm.sf(ct_nb2), rel=1e-8)
    mu = res.predict()
    z = ((y - mu) ** 2 - y) / mu
    ols = sm.OLS(z, np.ones_like(z)).fit()
    nb1 = dispersion_test(Fitted(), X, y, alternative="nb1")
    assert nb1.statistic == pytest.approx(ols.tvalues[0], rel=1e-10)
    assert nb1.dispersion == pytest.approx(ols.params[0], rel=1e-10)
    # detects the over-dispersion of NB data (r = 1.5: a = 1 / r) ...
    ours = dispersion_test(pois, X, y)
    assert ours.pvalue < 1e-10 and ours.dispersion == pytest.approx(1 / 1.5, rel=0.25)
    # ... and not in Poisson data (fixed seed: p = 0.25)
    rng = np.random.default_rng(5)
    yp = rng.poisson(np.logaddexp(0, 1.2 + X @ [0.8, -0.5])).astype(np.float64)
    assert dispersion_test(PoissonSoftplusRegressor(alpha=0).fit(X, yp), X, yp).pvalue > 0.05


def test_compare_models(nb_fits):
    X, y, pois, nb = nb_fits
    Xt, yt = _nb_data(500, seed=12)
    table = compare_models({"poisson": pois, "nb": nb}, Xt, yt)
    assert list(table.index) == ["poisson", "nb"]
    ll_p = st.poisson.logpmf(y, pois.predict(X)).sum()
    r = nb.concentration_
    mu = nb.predict(X)
    ll_nb = st.nbinom.logpmf(y, r, r / (r + mu)).sum()
    assert table.loc["poisson", "loglik"] == pytest.approx(ll_p, rel=1e-9)
    assert table.loc["nb", "loglik"] == pytest.approx(ll_nb, rel=1e-9)
    assert list(table["n_params"]) == [3, 4]
    assert table.loc["nb", "aic"] == pytest.approx(2 * 4 - 2 * ll_nb, rel=1e-9)
    assert table.loc["nb", "bic"] == pytest.approx(4 * np.log(2000) - 2 * ll_nb, rel=1e-9)
    assert table.loc["nb", "aic"] < table.loc["poisson", "aic"]
    assert table.loc["nb", "log_score"] == pytest.approx(nb.log_score(Xt, yt))
    assert table.loc["nb", "log_score"] > table.loc["poisson", "log_score"]
    assert np.isnan(table.loc["nb", "elpd_loo"])  # a MAP fit has no draws for PSIS-LOO
    assert np.isnan(compare_models([nb])["log_score"].iloc[0])


def test_compare_models_elpd_loo_of_a_bayesian_fit():
    X, y = _nb_data(300, seed=13)
    lap = NegativeBinomialSoftplusRegressor(alpha=0.01, inference="laplace",
                                            num_samples=400, random_state=0).fit(X, y)
    row = compare_models([lap], names=["laplace"]).loc["laplace"]
    # ArviZ's p_loo is lppd - elpd_loo; lppd from our own averaged likelihood
    lppd = lap.log_predictive(X, y).sum()
    assert row["elpd_loo"] + row["p_loo"] == pytest.approx(lppd, rel=1e-8)
    assert 2 < row["p_loo"] < 8 and row["pareto_k_max"] < 0.7
    # information criteria are for maximised likelihoods: NaN for a Bayesian fit, whose
    # log-likelihood is reported at the posterior mean
    assert np.isnan(row["aic"]) and np.isnan(row["bic"])
    point = {k: v.cpu().numpy() for k, v in lap.posterior_.point_estimate().items()}
    mu = np.logaddexp(0, point["intercept"] + X @ point["coef"])
    r = point["concentration"]
    assert row["loglik"] == pytest.approx(st.nbinom.logpmf(y, r, r / (r + mu)).sum(),
                                          rel=1e-9)


def test_bad_input(nb_fits):
    X, y, pois, _ = nb_fits
    X0, y0 = X.copy(), y.copy()
    with pytest.raises(ValueError, match="below the largest observed count"):
        rootogram(pois, X, y, max_count=int(y.max()) - 1)
    with pytest.raises(ValueError, match="style"):
        rootogram(pois, X, y, style="hung")
    with pytest.raises(ValueError, match="X has 2000 row"):
        rootogram_table(pois, X, y[:-1])
    with pytest.raises(ValueError, match="X has 2000 row"):
        quantile_residuals(pois, X, y[:-1])
    with pytest.raises(ValueError, match="counts"):
        rootogram(pois, X, y + 0.5)
    with pytest.raises(ValueError, match="whole numbers"):
        quantile_residuals(pois, X, y + 0.5)
    with pytest.raises(ValueError, match="bins"):
        pit_histogram(pois, X, y, bins=0)
    with pytest.raises(ValueError, match="shape"):
        randomized_pit(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="empty"):
        draw_qq([])
    with pytest.raises(ValueError, match="alternative"):
        dispersion_test(pois, X, y, alternative="nb3")
    with pytest.raises(ValueError, match="both X and y"):
        compare_models([pois], X)
    with pytest.raises(TypeError, match="no predictive distribution"):
        rootogram(object(), X, y)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        quantile_residuals(PoissonSoftplusRegressor(), X, y)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)
