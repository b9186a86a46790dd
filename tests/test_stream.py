"""Mini-batches streamed from disk (posheads.inference.stream) and fits on them."""

import numpy as np
import pytest
import torch

from posheads import PoissonSoftplusRegressor
from posheads.inference import fit_laplace, fit_map
from posheads.inference.stream import ArraySource, ParquetSource, fit_svi_stream
from posheads.models.glm import GLMData, SoftplusGLM

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _counts(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    t = rng.uniform(0.5, 2.0, size=n)
    y = rng.poisson(t * np.logaddexp(0, 1.0 + X @ [0.5, -0.5, 0.2])).astype(np.float64)
    return X, y, t


@pytest.fixture
def npy_files(tmp_path):
    X, y, t = _counts()
    paths = {}
    for name, v in (("X", X), ("y", y), ("exposure", t)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], v)
    return paths, (X, y, t)


def _parquet(tmp_path, X, y, t, row_group_size=250):
    table = pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "n": y, "years": t})
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_array_source_yields_every_row_once_per_epoch_in_bounded_memory(npy_files):
    paths, (X, y, _) = npy_files
    src = ArraySource(
        paths["X"], paths["y"], exposure=paths["exposure"], batch_size=64, block_size=300, seed=1
    )
    assert (src.num_rows, src.num_features, src.num_batches) == (2000, 3, 32)
    batches = list(src)
    assert {tuple(b) for b in batches} == {("X", "y", "exposure")}
    assert all(len(b["y"]) == 64 for b in batches[:-1]) and len(batches[-1]["y"]) == 16
    Xs = torch.cat([b["X"] for b in batches]).numpy()
    order = np.lexsort(Xs.T)
    np.testing.assert_array_equal(Xs[order], X[np.lexsort(X.T)])  # a permutation of X
    assert not np.array_equal(Xs, X)  # shuffled
    # rows stay together: each y and exposure follows its X row
    ys = torch.cat([b["y"] for b in batches]).numpy()
    np.testing.assert_array_equal(ys[order], y[np.lexsort(X.T)])
    # at most one block plus an unfinished mini-batch in memory
    assert 300 <= src.peak_rows < 300 + 64
    again = torch.cat([b["X"] for b in src]).numpy()  # the next epoch: another order
    assert not np.array_equal(again, Xs)
    same = ArraySource(paths["X"], paths["y"], batch_size=64, block_size=300, seed=1)
    np.testing.assert_array_equal(torch.cat([b["X"] for b in same]).numpy(), Xs)


def test_shards_split_the_blocks(npy_files):
    paths, _ = npy_files
    src = ArraySource(paths["X"], paths["y"], batch_size=50, block_size=300, shuffle=False)
    parts = [src.shard(r, 3) for r in range(3)]
    assert sum(p.num_rows for p in parts) == 2000
    rows = np.concatenate([torch.cat([b["X"] for b in p]).numpy()[:, 0] for p in parts])
    np.testing.assert_array_equal(np.sort(rows), np.sort(np.load(paths["X"])[:, 0]))


def test_parquet_source_reads_named_columns(tmp_path):
    X, y, t = _counts()
    path = _parquet(tmp_path, X, y, t)
    src = ParquetSource(
        path, ["a", "b", "c"], "n", exposure="years", batch_size=100, block_size=200, seed=0
    )
    assert (src.num_rows, src.num_features, src.num_batches) == (2000, 3, 20)
    batches = list(src)
    Xs = torch.cat([b["X"] for b in batches]).numpy()
    np.testing.assert_allclose(np.sort(Xs[:, 1]), np.sort(X[:, 1]))
    assert src.peak_rows < 200 + 100
    totals = src.totals()
    assert totals["rows"] == 2000
    np.testing.assert_allclose(totals["y"], y.sum())
    np.testing.assert_allclose(totals["exposure"], t.sum())


def test_streamed_svi_matches_the_in_memory_posterior(npy_files):
    paths, (X, y, t) = npy_files
    src = ArraySource(
        paths["X"], paths["y"], exposure=paths["exposure"], batch_size=100, block_size=500, seed=0
    )
    model = SoftplusGLM("poisson")
    post = fit_svi_stream(
        model,
        src,
        epochs=8,
        learning_rate=0.03,
        num_samples=300,
        average_window=50,
        seed=0,
        verbose=0,
    )
    data = GLMData(*(torch.as_tensor(v) for v in (X, y, t)))
    ref = fit_laplace(model, data, num_samples=2000, seed=0)
    for site in ("intercept", "coef"):
        mean, sd = post.samples[site].mean((0, 1)), ref.samples[site].std((0, 1))
        z = (mean - ref.samples[site].mean((0, 1))) / sd
        # 160 noisy steps from the first batch's mode: within a posterior sd or so
        assert z.abs().max() < 1.5, (site, z)
    assert post.extra["n_iter"] == 8 * 20
    assert src.peak_rows < 500 + 100


def test_estimator_fit_stream_matches_fit_on_parquet(tmp_path):
    X, y, _ = _counts(seed=3)
    path = _parquet(tmp_path, X, y, np.ones_like(y))
    src = ParquetSource(path, ["a", "b", "c"], "n", batch_size=200, block_size=250, seed=0)
    est = PoissonSoftplusRegressor(
        alpha=0, learning_rate=0.01, num_samples=50, random_state=0
    ).fit_stream(src, epochs=3)
    full = PoissonSoftplusRegressor(alpha=0).fit(X, y)
    np.testing.assert_allclose(est.coef_, full.coef_, atol=0.1)
    assert est.n_features_in_ == 3 and est.n_iter_ == 3 * 10
    assert est.predict(X[:5]).shape == (5,)
    est.partial_fit(X[:100], y[:100])  # the stream's state carries on


@pytest.mark.parametrize(
    "bad, match",
    [
        ("nan", r"X contains NaN.*rows 500\.\.999"),
        ("negative", r"y must be non-negative.*rows 0\.\.499"),
        ("exposure", r"exposure must be positive"),
    ],
)
def test_a_bad_block_names_the_problem(tmp_path, npy_files, bad, match):
    _, (X, y, t) = npy_files
    X, y, t = X.copy(), y.copy(), t.copy()
    if bad == "nan":
        X[777, 1] = np.nan
    elif bad == "negative":
        y[3] = -1
    else:
        t[5] = 0.0
    src = ArraySource(X, y, exposure=t, batch_size=100, block_size=500, shuffle=False)
    with pytest.raises(ValueError, match=match):
        list(src)


def test_bad_sources_raise(tmp_path, npy_files):
    paths, (X, y, t) = npy_files
    with pytest.raises(ValueError, match=r"y must have shape \(2000,\)"):
        ArraySource(paths["X"], y[:-1])
    with pytest.raises(ValueError, match="X must be 2-dimensional"):
        ArraySource(y, y)
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        ArraySource(X, y, batch_size=0)
    path = _parquet(tmp_path, X, y, t)
    with pytest.raises(ValueError, match=r"columns \['d'\] are not in"):
        ParquetSource(path, ["a", "d"], "n")
    nulls = pa.table({"a": pa.array([1.0, None, 2.0]), "n": pa.array([1.0, 2.0, 3.0])})
    pq.write_table(nulls, tmp_path / "nulls.parquet")
    src = ParquetSource(tmp_path / "nulls.parquet", ["a"], "n", batch_size=2)
    with pytest.raises(ValueError, match="X contains NaN, missing"):
        list(src)
    with pytest.raises(ValueError, match="whole-number counts"):
        src = ArraySource(X, y + 0.5, batch_size=500)
        PoissonSoftplusRegressor().fit_stream(src)


def test_streamed_map_start_is_the_mode_of_a_batch(npy_files):
    # the default start: the first batch's mode, a few Newton steps (no full-data pass)
    paths, (X, y, _) = npy_files
    src = ArraySource(paths["X"], paths["y"], batch_size=2000, block_size=2000, seed=0)
    post = fit_svi_stream(
        SoftplusGLM("poisson"), src, epochs=1, learning_rate=1e-6, num_samples=20, seed=0, verbose=0
    )
    mode = fit_map(
        SoftplusGLM("poisson"), GLMData(torch.as_tensor(X), torch.as_tensor(y)), jacobian=True
    ).extra["map"]
    np.testing.assert_allclose(post.samples["coef"].mean((0, 1)), mode["coef"], atol=0.1)


class _CountingSource(ArraySource):
    calls = 0

    def totals(self):
        type(self).calls += 1
        return super().totals()


def test_totals_are_read_only_for_a_model_whose_priors_use_them(npy_files):
    paths, _ = npy_files
    options = {"epochs": 1, "num_samples": 5, "init": "median", "seed": 0, "verbose": 0}
    for model, reads in ((SoftplusGLM("poisson", intercept_loc=0.0), 0),
                         (SoftplusGLM("poisson"), 1)):
        _CountingSource.calls = 0
        src = _CountingSource(paths["X"], paths["y"], batch_size=500, block_size=1000)
        fit_svi_stream(model, src, **options)
        assert _CountingSource.calls == reads


def test_stream_options_are_checked():
    src = ArraySource(np.zeros((10, 2)), np.zeros(10), batch_size=5)
    with pytest.raises(ValueError, match="do not apply to a streamed fit"):
        fit_svi_stream(SoftplusGLM(), src, num_steps=10)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        fit_svi_stream(SoftplusGLM(), src, epochs=0)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        fit_svi_stream(SoftplusGLM(), src, learning_rate=-1.0)
    with pytest.raises(ValueError, match="source must be a BatchSource"):
        fit_svi_stream(SoftplusGLM(), [{"X": torch.zeros(2, 2)}])
