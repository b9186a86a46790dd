"""What each ``posheads`` subcommand does (argument parsing lives in :mod:`posheads.cli`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ._cli_io import CLIError, FeatureSpec, _require_columns, atomic_dir, atomic_file, read_table

__all__ = ["cmd_datasets", "cmd_demo", "cmd_fit", "cmd_predict"]

_ESTIMATORS = {
    "poisson": "PoissonSoftplusRegressor",
    "negative-binomial": "NegativeBinomialSoftplusRegressor",
    "zero-inflated-poisson": "ZeroInflatedPoissonSoftplusRegressor",
    "zero-inflated-negative-binomial": "ZeroInflatedNegativeBinomialSoftplusRegressor",
    "hurdle-poisson": "HurdlePoissonSoftplusRegressor",
    "hurdle-negative-binomial": "HurdleNegativeBinomialSoftplusRegressor",
}


def _loaders():
    from . import datasets as ds

    return {
        "biochemists": ds.load_biochemists,
        "nmes1988": ds.load_nmes1988,
        "seatbelts": ds.load_seatbelts,
        "nyc_departures_daily": lambda as_frame: ds.load_nyc_departures("D", as_frame=as_frame),
        "nyc_departures_hourly": lambda as_frame: ds.load_nyc_departures("h", as_frame=as_frame),
    }


def cmd_datasets(args) -> int:
    from .datasets import list_datasets

    names = list_datasets()
    if args.action == "list":
        width = max(map(len, names))
        for name, text in names.items():
            print(f"{name:<{width}}  {text}")
        return 0
    if not args.name or not args.file:
        raise CLIError("usage: posheads datasets export NAME FILE.csv "
                       f"(NAME is one of: {', '.join(names)})")
    if args.name not in names:
        raise CLIError(f"unknown data set {args.name!r}; choose one of: {', '.join(names)}")
    frame = _loaders()[args.name](as_frame=True).frame
    if isinstance(frame.index, pd.DatetimeIndex):
        frame = frame.reset_index()
    with atomic_file(args.file) as tmp:
        frame.to_csv(tmp, index=False)
    if not args.quiet:
        print(f"wrote {len(frame)} rows of {args.name} to {args.file}")
    return 0


def _target(frame: pd.DataFrame, column: str) -> np.ndarray:
    _require_columns(frame, [column])
    col = frame[column]
    if not pd.api.types.is_numeric_dtype(col):
        raise CLIError(f"target column {column!r} is not numeric (e.g. {col.iloc[0]!r}): "
                       "it must hold counts 0, 1, 2, ...")
    if col.isna().any():
        raise CLIError(f"target column {column!r} has {int(col.isna().sum())} missing "
                       "value(s): drop those rows first")
    y = col.to_numpy(np.float64)
    if np.any(y < 0):
        raise CLIError(f"target column {column!r} has negative values: counts must be >= 0")
    return y


def cmd_fit(args) -> int:
    import posheads

    frame = read_table(args.data)
    y = _target(frame, args.target)
    features = args.features or [c for c in frame.columns if c not in (args.target, args.exposure)]
    spec = FeatureSpec.from_frame(frame, features, args.exposure)
    X = spec.design(frame)
    exposure = spec.exposure_of(frame)
    cls = getattr(posheads, _ESTIMATORS[args.model])
    est = cls(alpha=args.alpha, inference=args.inference, random_state=args.seed,
              device=args.device, verbose=0 if args.quiet else 1)
    est.fit(X, y, exposure=exposure)
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(est.summary().round(4).to_string())
    print(f"\nrows {len(y)}, model {args.model}, inference {args.inference}, "
          f"D2 {est.score(X, y):.4f}, iterations {est.n_iter_}")
    if args.out:
        with atomic_dir(args.out) as tmp:
            est.save(tmp)
            spec.save(tmp)
        print(f"saved the model to {args.out}")
    return 0


def cmd_predict(args) -> int:
    from .estimators import load

    folder = Path(args.model_dir)
    if not (folder / "features.json").is_file():
        raise CLIError(f"{args.model_dir} is not a model folder (no features.json): "
                       "write one with `posheads fit ... --out DIR`")
    if not 0 < args.coverage < 1:
        raise CLIError(f"--coverage must be between 0 and 1, got {args.coverage}")
    try:
        spec = FeatureSpec.load(folder)
        est = load(folder)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CLIError(f"cannot read the model in {args.model_dir}: {exc}") from exc
    frame = read_table(args.data)
    X = spec.design(frame)
    exposure = spec.exposure_of(frame)
    mean = est.predict(X, exposure=exposure)
    bounds = est.predict_interval(X, coverage=args.coverage, exposure=exposure)
    out = pd.DataFrame({"mean": mean, "lower": bounds[:, 0], "upper": bounds[:, 1]})
    if args.out is None:
        out.to_csv(sys.stdout, index=False)
        return 0
    with atomic_file(args.out) as tmp:
        out.to_csv(tmp, index=False)
    if not args.quiet:
        print(f"wrote {len(out)} predictions to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from ._demo import run_demo

    return run_demo(out=args.out, fast=args.fast, seed=args.seed, device=args.device,
                    quiet=args.quiet)
