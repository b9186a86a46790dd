"""The ``posheads`` command: run in this process through ``posheads.cli.main`` (the same
function the installed command calls), and as a subprocess where the process itself
matters (start-up imports, a closed pipe)."""

import functools
import os
import stat
import subprocess
import sys
from io import StringIO

import numpy as np
import pandas as pd
import pytest

import posheads.estimators
from posheads.cli import EXIT_BROKEN_PIPE, main


def run(*args, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "posheads", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )
    return proc


@pytest.fixture
def cli(capsys):
    """``cli(*args) -> (status, stdout, stderr)`` of ``main`` run in this process."""
    def call(*args):
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err
    return call


def _fails(result, needle):
    status, _, err = result
    assert status == 2, result
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "error: " in lines[0]


@pytest.fixture(scope="module")
def biochem_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "bio.csv"
    assert main(["datasets", "export", "biochemists", str(path), "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def series_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("series") / "series.csv"
    counts = np.random.default_rng(0).poisson(6.0, size=40)
    pd.DataFrame({"date": pd.date_range("2024-01-01", periods=40), "count": counts}).to_csv(
        path, index=False)
    return path


def test_help_on_every_subcommand(cli):
    for sub in ["demo", "fit", "predict", "datasets", "diagnose", "forecast"]:
        status, out, _ = cli(sub, "--help")
        assert status == 0
        assert "example" in out
    status, out, _ = cli("demo", "--help")
    assert "90% interval" in out and "%%" not in out


def test_usage_errors_are_one_line(cli):
    _fails(cli("forecast", "data.csv", "--date", "d", "--target", "y", "--horizon", "x"),
           "invalid int value: 'x'")
    _fails(cli("fit", "--no-such-option"), "the following arguments are required")
    _fails(cli("fit", "d.csv", "--target", "y", "--model", "gaussian"), "invalid choice")


def test_datasets_list(cli):
    status, out, _ = cli("datasets")
    assert status == 0
    for name in ["biochemists", "nmes1988", "seatbelts", "nyc_departures_daily"]:
        assert name in out


def test_fit_predict_round_trip(biochem_csv, tmp_path, cli):
    model = tmp_path / "model"
    status, out, err = cli("fit", biochem_csv, "--target", "art", "--model",
                           "negative-binomial", "--out", model, "--quiet")
    assert status == 0, err
    assert "ment" in out and "D2" in out and "iterations" in out
    assert (model / "estimator.json").is_file() and (model / "features.json").is_file()
    preds = tmp_path / "preds.csv"
    status, _, err = cli("predict", model, biochem_csv, "--out", preds, "--coverage", "0.8")
    assert status == 0, err
    out = pd.read_csv(preds)
    assert list(out.columns) == ["mean", "lower", "upper"]
    assert len(out) == 915
    assert np.all(out["lower"] <= out["upper"])
    # The mean of the predictions matches the mean count (an intercept model property).
    assert abs(out["mean"].mean() - pd.read_csv(biochem_csv)["art"].mean()) < 0.05
    # '-' (and no --out) is standard output, the same table
    for extra in (["--out", "-"], []):
        status, text, _ = cli("predict", model, biochem_csv, "--coverage", "0.8", *extra)
        assert status == 0
        pd.testing.assert_frame_equal(pd.read_csv(StringIO(text)), out)
    # a model folder is replaced as a whole, a folder of other files is not
    assert cli("fit", biochem_csv, "--target", "art", "--out", model, "--quiet")[0] == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    _fails(cli("fit", biochem_csv, "--target", "art", "--out", tmp_path / "other"),
           "holds other files")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_datasets_export_to_standard_output(cli, biochem_csv):
    status, text, _ = cli("datasets", "export", "biochemists", "-")
    assert status == 0
    pd.testing.assert_frame_equal(pd.read_csv(StringIO(text)), pd.read_csv(biochem_csv))


def test_bad_input_missing_file(tmp_path, cli):
    _fails(cli("fit", tmp_path / "nope.csv", "--target", "y"), "no such file")


def test_bad_input_missing_column(biochem_csv, tmp_path, cli):
    out = tmp_path / "m"
    _fails(cli("fit", biochem_csv, "--target", "articles", "--out", out), "missing column")
    assert not out.exists()


def test_bad_input_target(tmp_path, cli):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1, -2, 3, 0]})
    frame.to_csv(tmp_path / "neg.csv", index=False)
    _fails(cli("fit", tmp_path / "neg.csv", "--target", "y"), "negative")
    frame.assign(y=["a", "b", "c", "d"]).to_csv(tmp_path / "text.csv", index=False)
    _fails(cli("fit", tmp_path / "text.csv", "--target", "y"), "not numeric")
    frame.assign(y=[1.0, 1e308, 3.0, 0.0]).to_csv(tmp_path / "huge.csv", index=False)
    for model in ("poisson", "negative-binomial"):
        _fails(cli("fit", tmp_path / "huge.csv", "--target", "y", "--model", model),
               "value 1e+308 in row 1, which is too large")


def test_bad_input_nan_feature(tmp_path, cli):
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, 4.0], "y": [1, 2, 3, 0]})
    frame.to_csv(tmp_path / "nan.csv", index=False)
    out = tmp_path / "m"
    _fails(cli("fit", tmp_path / "nan.csv", "--target", "y", "--out", out), "missing value")
    assert not out.exists()


def test_bad_tables_are_one_line(tmp_path, cli, biochem_csv, series_csv):
    """Empty files, header-only files, repeated column names, bytes that are not UTF-8."""
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("x,y\n")
    (tmp_path / "twice.csv").write_text("x,y,x\n1,2,3\n4,5,6\n")
    (tmp_path / "latin1.csv").write_bytes("x,y\n1,2\n\xe9,3\n".encode("latin-1"))
    (tmp_path / "dates.csv").write_text("date,count\n")
    model = tmp_path / "m"
    assert cli("fit", biochem_csv, "--target", "art", "--out", model, "--quiet")[0] == 0
    fc = ("--date", "date", "--target", "count", "--horizon", "3", "--out", tmp_path / "f.csv")
    cases = [
        (("fit", tmp_path / "empty.csv", "--target", "y"), "is empty"),
        (("fit", tmp_path / "header.csv", "--target", "y"), "has a header but no rows"),
        (("predict", model, tmp_path / "header.csv"), "has a header but no rows"),
        (("forecast", tmp_path / "dates.csv", *fc), "has a header but no rows"),
        (("fit", tmp_path / "twice.csv", "--target", "y"), "names column(s) 'x' more than once"),
        (("fit", tmp_path / "latin1.csv", "--target", "y"), "not UTF-8"),
    ]
    for args, needle in cases:
        _fails(cli(*args), needle)
    assert not (tmp_path / "f.csv").exists()


def test_features_may_not_name_the_target(biochem_csv, cli):
    _fails(cli("fit", biochem_csv, "--target", "art", "--features", "ment", "art"),
           "--features includes the target column 'art'")
    _fails(cli("fit", biochem_csv, "--target", "art", "--features", "ment", "ment"),
           "more than once")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this torch has CUDA")
def test_cuda_on_a_cpu_torch_is_one_line(biochem_csv, tmp_path, cli):
    _fails(cli("fit", biochem_csv, "--target", "art", "--device", "cuda"), "no CUDA")
    _fails(cli("demo", "--device", "cuda", "--out", tmp_path), "no CUDA")
    _fails(cli("fit", biochem_csv, "--target", "art", "--device", "gpu9"), "is not a device")


def test_output_location_checked_before_any_work(biochem_csv, tmp_path, cli, monkeypatch):
    # the demo would print its data line (and fit for a minute) before writing: it prints
    # nothing, so the check came first
    status, out, err = cli("demo", "--out", "/proc/posheads-x")
    _fails((status, out, err), "cannot write --out /proc/posheads-x")
    assert out == ""
    _fails(cli("fit", biochem_csv, "--target", "art", "--out", biochem_csv), "is a file")
    _fails(cli("datasets", "export", "biochemists", tmp_path), "is a folder")
    _fails(cli("datasets", "export", "biochemists", biochem_csv / "x.csv"), "not a folder")

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted before checking the output")

    monkeypatch.setattr(posheads.estimators, "regressor_for", no_fit)
    _fails(cli("fit", biochem_csv, "--target", "art", "--out", "/proc/posheads-x/m"),
           "cannot write")


def test_forecast_checks_the_series(series_csv, tmp_path, cli):
    frame = pd.read_csv(series_csv)
    frame.assign(count=frame["count"].astype(float).where(frame.index != 5, 1e308)).to_csv(
        tmp_path / "huge.csv", index=False)
    _fails(cli("forecast", tmp_path / "huge.csv", "--date", "date", "--target", "count",
               "--horizon", "3", "--out", "-"), "value 1e+308 in row 5")
    status, out, err = cli("forecast", series_csv, "--date", "date", "--target", "count",
                           "--horizon", "3", "--steps", "20", "--out", "-", "--quiet")
    assert status == 0, err
    table = pd.read_csv(StringIO(out))
    assert list(table.columns) == ["date", "mean", "lower", "upper"] and len(table) == 3
    assert not list(tmp_path.glob("*.png"))


def test_files_follow_the_umask_and_are_written_atomically(biochem_csv, tmp_path, cli):
    old = os.umask(0o027)
    try:
        model, table = tmp_path / "m", tmp_path / "bio.csv"
        assert cli("fit", biochem_csv, "--target", "art", "--out", model, "--quiet")[0] == 0
        assert cli("datasets", "export", "biochemists", table, "--quiet")[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(model.stat().st_mode) == 0o750
    for path in [table, *model.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    # a failed fit leaves neither the folder nor a temporary file beside it
    frame = pd.read_csv(biochem_csv).assign(art=-1)
    frame.to_csv(tmp_path / "neg.csv", index=False)
    before = set(tmp_path.iterdir())
    _fails(cli("fit", tmp_path / "neg.csv", "--target", "art", "--out", tmp_path / "m2"),
           "negative")
    assert set(tmp_path.iterdir()) == before


def _small(monkeypatch, **params):
    """Make ``posheads fit`` build its regressor with ``params`` (small budgets)."""
    real = posheads.estimators.regressor_for
    monkeypatch.setattr(posheads.estimators, "regressor_for",
                        lambda name: functools.partial(real(name), **params))


def test_an_unconverged_fit_is_an_error_unless_allowed(biochem_csv, tmp_path, cli,
                                                       monkeypatch):
    _small(monkeypatch, max_iter=1)
    model = tmp_path / "m"
    _fails(cli("fit", biochem_csv, "--target", "art", "--out", model, "--quiet"),
           "did not converge")
    assert not model.exists()
    status, _, err = cli("fit", biochem_csv, "--target", "art", "--out", model, "--quiet",
                         "--allow-unconverged")
    assert status == 0 and model.is_dir()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "warning: the fit did not converge" in lines[0], err
    assert "1 iteration" in lines[0] and "gradient" in lines[0] and ".py" not in lines[0]


def test_nuts_summary_reports_draws_not_iterations(tmp_path, cli, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=60)
    pd.DataFrame({"x": x, "y": rng.poisson(np.log1p(np.exp(1 + x)))}).to_csv(
        tmp_path / "d.csv", index=False)
    _small(monkeypatch, num_warmup=30, num_samples=20)
    status, out, err = cli("fit", tmp_path / "d.csv", "--target", "y", "--inference", "nuts",
                           "--quiet")
    assert status == 0, err
    assert "1 chain(s) of 20 draws after 30 warmup" in out and "iterations" not in out


def test_errors_are_one_line_and_bugs_show_a_traceback(cli, monkeypatch):
    from posheads.cli import datasets

    def dump(args):  # a library error that prints a tensor into its message
        raise ValueError("Expected parameter loc found invalid values:\n"
                         + "tensor([nan, nan])\n" * 50)

    monkeypatch.setattr(datasets, "cmd_datasets", dump)  # read when the parser is built
    _fails(cli("datasets"), "Expected parameter loc found invalid values")
    assert "tensor" not in cli("datasets")[2]

    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(datasets, "cmd_datasets", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["datasets"])


def test_debug_shows_traceback(tmp_path, cli):
    status, _, err = cli("fit", tmp_path / "nope.csv", "--target", "y", "--debug")
    assert status == 2
    assert "Traceback" in err


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``posheads datasets export nmes1988 - | head -c 100``: no error, status 141."""
    proc = subprocess.Popen([sys.executable, "-m", "posheads", "datasets", "export",
                             "nmes1988", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=600) == EXIT_BROKEN_PIPE
    assert err == ""


@pytest.mark.slow
def test_demo_fast(tmp_path):
    proc = run("demo", "--fast", "--out", tmp_path, "--quiet")
    assert proc.returncode == 0, proc.stderr
    for name in ["scikit-learn Poisson", "posheads NB, softplus, NUTS"]:
        assert name in proc.stdout
    assert (tmp_path / "nmes1988_demo.png").stat().st_size > 10_000


def test_every_glm_estimator_has_a_model_name():
    """--model offers every family a regressor fits, and each name fits that regressor."""
    import argparse

    import posheads
    from posheads.cli import fit
    from posheads.estimators import regressor_for

    parser = fit.add_fit_parser(argparse.ArgumentParser().add_subparsers())
    (model,) = [action for action in parser._actions if action.dest == "model"]
    glms = {name for name in posheads.__all__ if name.endswith("SoftplusRegressor")}
    assert {regressor_for(name).__name__ for name in model.choices} == glms
    assert "negative-binomial" in model.choices and "discretized-logistic" not in model.choices
    # --help names the option's values, without reading the registry (torch and Pyro)
    assert "--model MODEL" in parser.format_help() and "hurdle-poisson" not in parser.format_help()


def test_help_does_not_load_torch():
    code = ("import sys; from posheads.cli import build_parser; build_parser(); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------ posheads diagnose
@pytest.fixture(scope="module")
def poisson_model(biochem_csv, tmp_path_factory):
    """A Poisson model folder as `posheads fit --out` writes it (fitted in this process)."""
    from posheads import PoissonSoftplusRegressor
    from posheads.cli.spec import FeatureSpec

    model = tmp_path_factory.mktemp("diag") / "model"
    model.mkdir()
    frame = pd.read_csv(biochem_csv)
    spec = FeatureSpec.from_frame(frame, [c for c in frame.columns if c != "art"], None)
    est = PoissonSoftplusRegressor(alpha=0).fit(spec.design(frame), frame["art"])
    est.save(model)
    spec.save(model)
    return model


def test_diagnose_writes_plots_residuals_and_summary(biochem_csv, poisson_model, tmp_path,
                                                     cli):
    out = tmp_path / "diag"
    status, stdout, err = cli("diagnose", poisson_model, biochem_csv, "--target", "art",
                              "--out", out, "--bins", "8")
    assert status == 0, err
    for name in ["rootogram.png", "qq_plot.png", "pit_histogram.png"]:
        assert (out / name).stat().st_size > 5_000
    summary = (out / "summary.txt").read_text()
    assert "Kolmogorov-Smirnov" in summary and "dispersion test" in summary
    assert summary in stdout
    art = pd.read_csv(biochem_csv)["art"].to_numpy()
    freq = pd.read_csv(out / "frequencies.csv", index_col="count")
    np.testing.assert_array_equal(freq["observed"], np.bincount(art))
    assert abs(freq["expected"].sum() - len(art)) < 1.0
    resid = pd.read_csv(out / "residuals.csv")
    assert len(resid) == len(art) and np.all(resid["pit_lower"] <= resid["pit_upper"])
    # the Poisson model is too narrow for these over-dispersed counts: residuals too wide
    assert resid["quantile_residual"].std() > 1.2


def test_diagnose_bad_input(biochem_csv, poisson_model, tmp_path, cli):
    """Each mistake ends with one line on stderr and status 2, and writes nothing."""
    out = tmp_path / "diag"
    frame = pd.read_csv(biochem_csv)
    frame.assign(art=frame["art"] + 0.5).to_csv(tmp_path / "frac.csv", index=False)
    cases = [
        ((tmp_path, biochem_csv, "--target", "art"), "not a model folder"),
        ((poisson_model, biochem_csv, "--target", "articles"), "missing column"),
        ((poisson_model, tmp_path / "frac.csv", "--target", "art"), "whole numbers"),
        ((poisson_model, biochem_csv, "--target", "art", "--bins", "0"), "--bins"),
        ((poisson_model, biochem_csv), "give --target"),
    ]
    for args, needle in cases:
        _fails(cli("diagnose", *args, "--out", out), needle)
    assert not out.exists()


def test_diagnose_reads_the_response_of_a_formula_model(biochem_csv, tmp_path, cli):
    model, out = tmp_path / "model", tmp_path / "diag"
    assert cli("fit", biochem_csv, "--formula", "art ~ fem + ment + phd",
               "--model", "negative-binomial", "--out", model, "--quiet")[0] == 0
    assert cli("diagnose", model, biochem_csv, "--out", out, "--quiet")[0] == 0
    assert "target 'art'" in (out / "summary.txt").read_text()
    freq = pd.read_csv(out / "frequencies.csv", index_col="count")
    np.testing.assert_array_equal(freq["observed"],
                                  np.bincount(pd.read_csv(biochem_csv)["art"]))


def test_damaged_model_folder_is_one_line(biochem_csv, poisson_model, tmp_path, cli):
    import shutil

    import torch

    bad = tmp_path / "bad"
    shutil.copytree(poisson_model, bad)
    blob = torch.load(bad / "tensors.pt", weights_only=True)
    blob["arrays"]["coef_"] = torch.full_like(blob["arrays"]["coef_"], float("nan"))
    torch.save(blob, bad / "tensors.pt")
    _fails(cli("predict", bad, biochem_csv), "'arrays/coef_' holds NaN")
    (bad / "features.json").write_text("[]")
    _fails(cli("predict", bad, biochem_csv), "features.json holds a JSON list")
