"""The ``posheads`` command, run as a subprocess the way a user runs it."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


def run(*args, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "posheads", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )
    return proc


@pytest.fixture(scope="module")
def biochem_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "bio.csv"
    proc = run("datasets", "export", "biochemists", path)
    assert proc.returncode == 0, proc.stderr
    return path


def test_help_on_every_subcommand():
    for sub in ["demo", "fit", "predict", "datasets"]:
        proc = run(sub, "--help")
        assert proc.returncode == 0
        assert "example:" in proc.stdout


def test_datasets_list():
    proc = run("datasets")
    assert proc.returncode == 0
    for name in ["biochemists", "nmes1988", "seatbelts", "nyc_departures_daily"]:
        assert name in proc.stdout


def test_fit_predict_round_trip(biochem_csv, tmp_path):
    model = tmp_path / "model"
    proc = run("fit", biochem_csv, "--target", "art", "--model", "negative-binomial",
               "--out", model, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "ment" in proc.stdout and "D2" in proc.stdout
    assert (model / "estimator.json").is_file() and (model / "features.json").is_file()
    preds = tmp_path / "preds.csv"
    proc = run("predict", model, biochem_csv, "--out", preds, "--coverage", "0.8")
    assert proc.returncode == 0, proc.stderr
    out = pd.read_csv(preds)
    assert list(out.columns) == ["mean", "lower", "upper"]
    assert len(out) == 915
    assert np.all(out["lower"] <= out["upper"])
    # The mean of the predictions matches the mean count (an intercept model property).
    assert abs(out["mean"].mean() - pd.read_csv(biochem_csv)["art"].mean()) < 0.05


def _fails(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0], lines[0]


def test_bad_input_missing_file(tmp_path):
    _fails(run("fit", tmp_path / "nope.csv", "--target", "y"), "no such file")


def test_bad_input_missing_column(biochem_csv, tmp_path):
    out = tmp_path / "m"
    _fails(run("fit", biochem_csv, "--target", "articles", "--out", out), "missing column")
    assert not out.exists()


def test_bad_input_target(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1, -2, 3, 0]})
    frame.to_csv(tmp_path / "neg.csv", index=False)
    _fails(run("fit", tmp_path / "neg.csv", "--target", "y"), "negative")
    frame.assign(y=["a", "b", "c", "d"]).to_csv(tmp_path / "text.csv", index=False)
    _fails(run("fit", tmp_path / "text.csv", "--target", "y"), "not numeric")


def test_bad_input_nan_feature(tmp_path):
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, 4.0], "y": [1, 2, 3, 0]})
    frame.to_csv(tmp_path / "nan.csv", index=False)
    out = tmp_path / "m"
    _fails(run("fit", tmp_path / "nan.csv", "--target", "y", "--out", out), "missing value")
    assert not out.exists()


def test_bad_input_model_dir(biochem_csv, tmp_path):
    _fails(run("predict", tmp_path, biochem_csv), "not a model folder")
    (tmp_path / "features.json").write_text("{not json")
    _fails(run("predict", tmp_path, biochem_csv), "cannot read the model")


def test_debug_shows_traceback(tmp_path):
    proc = run("fit", tmp_path / "nope.csv", "--target", "y", "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


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
    assert "--model MODEL" in parser.format_help() and "hurdle-poisson" in parser.format_help()


def test_help_does_not_load_torch():
    code = ("import sys; from posheads.cli import build_parser; build_parser(); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------ posheads diagnose
@pytest.fixture(scope="module")
def poisson_model(biochem_csv, tmp_path_factory):
    """A Poisson model folder as `posheads fit --out` writes it (fitted in this process)."""
    from posheads import PoissonSoftplusRegressor
    from posheads.cli.io import FeatureSpec

    model = tmp_path_factory.mktemp("diag") / "model"
    model.mkdir()
    frame = pd.read_csv(biochem_csv)
    spec = FeatureSpec.from_frame(frame, [c for c in frame.columns if c != "art"], None)
    est = PoissonSoftplusRegressor(alpha=0).fit(spec.design(frame), frame["art"])
    est.save(model)
    spec.save(model)
    return model


def test_diagnose_writes_plots_residuals_and_summary(biochem_csv, poisson_model, tmp_path):
    out = tmp_path / "diag"
    proc = run("diagnose", poisson_model, biochem_csv, "--target", "art", "--out", out,
               "--bins", "8")
    assert proc.returncode == 0, proc.stderr
    for name in ["rootogram.png", "qq_plot.png", "pit_histogram.png"]:
        assert (out / name).stat().st_size > 5_000
    summary = (out / "summary.txt").read_text()
    assert "Kolmogorov-Smirnov" in summary and "dispersion test" in summary
    assert summary in proc.stdout
    art = pd.read_csv(biochem_csv)["art"].to_numpy()
    freq = pd.read_csv(out / "frequencies.csv", index_col="count")
    np.testing.assert_array_equal(freq["observed"], np.bincount(art))
    assert abs(freq["expected"].sum() - len(art)) < 1.0
    resid = pd.read_csv(out / "residuals.csv")
    assert len(resid) == len(art) and np.all(resid["pit_lower"] <= resid["pit_upper"])
    # the Poisson model is too narrow for these over-dispersed counts: residuals too wide
    assert resid["quantile_residual"].std() > 1.2


def test_diagnose_bad_input(biochem_csv, poisson_model, tmp_path, capsys):
    """Each mistake ends with one line on stderr and status 2, and writes nothing (run in
    this process: the same main() as the command, without a start-up per case)."""
    from posheads.cli import main

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
        assert main(["diagnose", *map(str, args), "--out", str(out)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines
    assert not out.exists()
    proc = run("diagnose", "--help")
    assert proc.returncode == 0 and "example:" in proc.stdout


def test_diagnose_reads_the_response_of_a_formula_model(biochem_csv, tmp_path, capsys):
    from posheads.cli import main

    model, out = tmp_path / "model", tmp_path / "diag"
    assert main(["fit", str(biochem_csv), "--formula", "art ~ fem + ment + phd",
                 "--model", "negative-binomial", "--out", str(model), "--quiet"]) == 0
    assert main(["diagnose", str(model), str(biochem_csv), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert "target 'art'" in (out / "summary.txt").read_text()
    freq = pd.read_csv(out / "frequencies.csv", index_col="count")
    np.testing.assert_array_equal(freq["observed"],
                                  np.bincount(pd.read_csv(biochem_csv)["art"]))
