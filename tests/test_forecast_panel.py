"""The forecaster's Laplace engine, long frames of many series, hierarchies, zero parts.

References are independent: the tridiagonal elimination against NumPy's dense log
determinant and inverse, forecasts against the simulator's known levels, coherence as an
exact identity of draws. Series are short and the fits few, so the file runs in well
under a minute.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from posheads.estimators.forecasting import CountForecaster, laplace_newton
from posheads.estimators.forecasting.laplace import default_sigma_grid, tridiagonal_elimination
from posheads.estimators.forecasting.tridiagonal import tridiagonal_solve


def _panel(seed=0, lengths=(90, 60, 75), means=(3.0, 20.0, 60.0)):
    rng = np.random.default_rng(seed)
    frames = []
    for k, (n, mu) in enumerate(zip(lengths, means, strict=True)):
        ds = pd.date_range(end="2021-03-31", periods=n, freq="D")
        frames.append(pd.DataFrame({"unique_id": f"s{k}", "ds": ds, "y": rng.poisson(mu, n)}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def panel_fit():
    df = _panel()
    est = CountForecaster(num_samples=300, random_state=0,
                          hierarchy={"total": ["s0", "s1", "s2"]}).fit(df)
    return df, est


def test_tridiagonal_elimination_matches_dense_algebra():
    rng = np.random.default_rng(1)
    w = torch.as_tensor(rng.uniform(0, 5, size=(2, 3, 12)))
    sigma = torch.tensor([0.1, 0.7], dtype=torch.float64)
    logdet, last_var = tridiagonal_elimination(w, sigma)
    for g in range(2):
        for s in range(3):
            n = 11
            q = np.diag([2.0] * (n - 1) + [1.0]) - np.eye(n, k=1) - np.eye(n, k=-1)
            h = np.diag(w[g, s, 1:].numpy()) + q / sigma[g].item() ** 2
            assert np.isclose(logdet[g, s].item(), np.linalg.slogdet(h)[1], rtol=1e-10)
            assert np.isclose(last_var[g, s].item(), np.linalg.inv(h)[-1, -1], rtol=1e-10)


def test_level_follows_a_shift():
    # 100 steps at 10 then 50 at 30: the forecast must sit near 30, not the mean (~16.7)
    rng = np.random.default_rng(3)
    y = np.concatenate([rng.poisson(10.0, 100), rng.poisson(30.0, 50)])
    est = CountForecaster((), random_state=0, num_samples=300).fit(y)
    assert est.inference_ == "laplace"
    mean = est.predict(5)
    assert np.all(np.abs(mean - 30.0) < 5.0), mean
    lo, hi = est.predict_interval(5, coverage=0.9).T
    assert np.all(lo <= 30) and np.all(hi >= 30)


def test_single_series_api_is_unchanged():
    idx = pd.date_range("2020-01-01", periods=70, freq="D")
    y = pd.Series(np.random.default_rng(0).poisson(8.0, 70), index=idx, name="visits")
    est = CountForecaster(random_state=0, num_samples=100).fit(y)
    pred = est.predict(7)
    assert isinstance(pred, pd.Series) and pred.index[0] == idx[-1] + idx.freq
    assert est.sample_paths(7, 20).shape == (20, 7)
    frame = est.predict(3, level=[90])
    assert list(frame.columns) == ["unique_id", "ds", "mean", "median", "lo-90", "hi-90"]
    assert (frame["unique_id"] == "visits").all()


def test_panel_recovers_per_series_means_and_frame_shape(panel_fit):
    _, est = panel_fit
    frame = est.predict(4, level=[80, 90])
    assert list(frame.columns) == ["unique_id", "ds", "mean", "median", "lo-80", "hi-80",
                                   "lo-90", "hi-90"]
    assert list(frame["unique_id"].unique()) == ["s0", "s1", "s2", "total"]
    assert len(frame) == 16
    assert (frame["ds"].iloc[:4] == pd.date_range("2021-04-01", periods=4)).all()
    by = frame.groupby("unique_id", sort=False)["mean"].mean()
    for sid, mu in (("s0", 3.0), ("s1", 20.0), ("s2", 60.0)):
        assert abs(by[sid] - mu) < 0.25 * mu, (sid, by[sid])
    assert (frame["lo-90"] <= frame["lo-80"]).all() and (frame["hi-80"] <= frame["hi-90"]).all()


def test_hierarchy_draws_are_coherent(panel_fit):
    _, est = panel_fit
    paths = est.sample_paths(5, 50)
    assert paths.shape == (50, 4, 5) and est.series_ids_[-1] == "total"
    np.testing.assert_array_equal(paths[:, 3], paths[:, :3].sum(1))
    frame = est.predict(5)
    means = frame.pivot(index="ds", columns="unique_id", values="mean")
    np.testing.assert_allclose(means["total"], means[["s0", "s1", "s2"]].sum(1))


def test_panel_backtest_has_a_row_per_series_and_window():
    df = _panel(lengths=(40, 30), means=(5.0, 12.0))
    est = CountForecaster((), num_samples=100, num_steps=60, random_state=0)
    table = est.backtest(df, horizon=3, n_windows=2)
    assert len(table) == 4 and set(table["unique_id"]) == {"s0", "s1"}
    assert np.isfinite(table["crps"]).all()


def test_auto_likelihood_takes_the_hurdle_for_intermittent_series():
    rng = np.random.default_rng(5)
    y = rng.poisson(3.0, 120) * (rng.random(120) < 0.3)
    est = CountForecaster((), num_steps=50, num_samples=50, random_state=0).fit(y)
    assert est.likelihood_ == "hurdle_negative_binomial"
    assert 0 <= est.predict(3).min() and est.sample_paths(3, 10).min() >= 0


def _bad(df, column, row, value):
    df = df.copy()
    df.loc[row, column] = value
    return df


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: pd.concat([d, d.iloc[[5]]]), r"series 's0', row 5: duplicate"),
        (lambda d: d.drop(index=10), r"series 's0', row 11: a gap"),
        (lambda d: _bad(d, "y", 95, -1), r"series 's1', row 95: the count is negative"),
        (lambda d: _bad(d, "y", 96, 1.5), r"series 's1', row 96: .*not a whole number"),
        (lambda d: d.assign(x=1.0).pipe(_bad, "x", 7, np.nan), r"series 's0', row 7: a cov"),
        (lambda d: d[(d.unique_id != "s2") | (d.index > 220)], r"series 's2'.*one season"),
    ],
)
def test_bad_long_frames_name_the_series_and_row(change, match):
    with pytest.raises(ValueError, match=match):
        CountForecaster(num_steps=5).fit(change(_panel()))


def test_unseen_series_and_missing_future_rows():
    df = _panel().assign(x=0.0)
    est = CountForecaster((), num_steps=20, num_samples=20, random_state=0).fit(df)
    future = pd.DataFrame({"unique_id": "zz", "ds": pd.date_range("2021-04-01", periods=2),
                           "x": 1.0})
    with pytest.raises(ValueError, match="series 'zz' was not seen in fit"):
        est.predict(2, X_future=future)
    with pytest.raises(ValueError, match="series 's0': no row for ds"):
        est.predict(2, X_future=future.assign(unique_id="s1"))


def test_season_longer_than_the_series_is_refused():
    with pytest.raises(ValueError, match="fewer than the season"):
        CountForecaster((30,), num_steps=5).fit(np.ones(20))


def test_sigma_grid_spans_slow_to_fast_levels():
    grid = default_sigma_grid()
    assert grid[0] < 0.005 and grid[-1] > 0.3 and np.all(np.diff(grid) > 0)


# ---------------------------------------------------------------- scale: Newton, batches
def test_tridiagonal_solve_matches_a_dense_solve():
    rng = np.random.default_rng(2)
    for n in (1, 2, 3, 4, 7, 8, 33, 64):
        off = torch.as_tensor(rng.normal(size=(2, n - 1)))
        diag = torch.as_tensor(rng.uniform(2.1, 4.0, size=(2, n)))  # diagonally dominant
        rhs = torch.as_tensor(rng.normal(size=(2, n, 3)))
        x = tridiagonal_solve(diag, off, rhs)
        for b in range(2):
            h = np.diag(diag[b].numpy()) + np.diag(off[b].numpy(), 1) + \
                np.diag(off[b].numpy(), -1)
            np.testing.assert_allclose(x[b].numpy(), np.linalg.solve(h, rhs[b].numpy()),
                                       rtol=1e-10, atol=1e-12)


def _mode(df, family, monkeypatch=None, elements=None):
    """The Laplace engine's data, model and joint mode on ``df`` (batch size forced)."""
    from posheads.families import get_family

    if elements is not None:
        monkeypatch.setattr(laplace_newton, "_BATCH_ELEMENTS", elements)
    est = CountForecaster((7,), likelihood=family, num_steps=100, random_state=0)
    captured = {}
    real = laplace_newton.panel_mode

    def spy(model, data, params, sigma, **kw):
        captured.update(model=model, data=data, sigma=sigma, params=params)
        return real(model, data, params, sigma, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(laplace_newton, "panel_mode", spy)
        est.fit(df)
    assert est.likelihood_ == get_family(family).name
    return captured


@pytest.mark.parametrize("family", ["negative_binomial", "hurdle_negative_binomial"])
def test_newton_reaches_the_joint_mode(family):
    # reference: the log joint's gradient (autograd, in the model's own coordinates,
    # shared means included) vanishes at the mode, and the mode is unique
    df = _panel(seed=4, lengths=(80, 60, 70, 50, 65), means=(3.0, 20.0, 8.0, 1.0, 40.0))
    rng = np.random.default_rng(4)
    df["y"] = df["y"] * (rng.random(len(df)) < 0.6)  # zeros for the hurdle's gate
    got = _mode(df, family)
    model, data, params, sigma = (got[k] for k in ("model", "data", "params", "sigma"))
    leaves = [t.detach().clone().requires_grad_(True) for t in params.tensors()]
    p = type(params)(*leaves)
    joint = model.log_joint(p, sigma, data).sum()
    grads = torch.autograd.grad(joint, leaves, allow_unused=True, materialize_grads=True)
    # the flattest direction (a shape's shared mean on near-Poisson counts) is the last
    # to settle; 1e-2 is a change below 1e-6 in the log joint for a move of 1e-4 there
    worst = max(float(g.abs().max()) for g in grads if g.numel())
    assert worst < 1e-2, worst


def test_batches_give_the_same_mode_as_one(monkeypatch):
    df = _panel(seed=6, lengths=(40, 30, 35, 45), means=(3.0, 20.0, 8.0, 40.0))
    one = _mode(df, "negative_binomial")["params"]
    # 3 grid-value x series x step elements per batch: one series a batch, and the
    # shared means estimated from a spread sample before the full passes
    many = _mode(df, "negative_binomial", monkeypatch, elements=1)["params"]
    for a, b in zip(one.tensors(), many.tensors(), strict=True):
        # log-concentrations near 6 (near-Poisson counts) sit where the joint is flattest
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-4, rtol=5e-4)


def test_panel_save_load_round_trip(tmp_path):
    from posheads.estimators import load

    df = _panel(seed=8, lengths=(50, 35, 42)).assign(
        x=lambda d: np.random.default_rng(0).normal(size=len(d)))
    est = CountForecaster(num_samples=80, num_steps=40, random_state=3,
                          hierarchy={"total": ["s0", "s2"]}).fit(df)
    future = pd.concat([pd.DataFrame({"unique_id": u, "ds": pd.date_range("2021-04-01",
                                      periods=4), "x": 0.5}) for u in ("s0", "s1", "s2")])
    est.save(tmp_path / "fc")
    back = load(tmp_path / "fc")
    assert back.is_panel_ and back.series_ids_ == ["s0", "s1", "s2", "total"]
    pd.testing.assert_frame_equal(back.predict(4, future, level=[80]),
                                  est.predict(4, future, level=[80]))
    np.testing.assert_array_equal(back.sample_paths(4, 30, future),
                                  est.sample_paths(4, 30, future))
