"""The ``posheads fit`` subcommand: fit a count regression to a table and save it.

It prints the coefficient table, and with ``--out`` saves the estimator (with its fitted
table encoding or formula design) and its :class:`~posheads.cli.io.FeatureSpec` (the safe
format: JSON + tensors) to one folder, which ``posheads predict`` reads. ``--formula``
takes a Wilkinson formula instead of ``--target`` and ``--features``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from .choices import regression_families
from .io import CLIError, FeatureSpec, atomic_dir, read_table, require_columns
from .options import add_common_options

__all__ = ["add_fit_parser", "cmd_fit"]

_INFERENCE = ["map", "laplace", "svi", "nuts"]


def add_fit_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``fit`` subcommand to ``subparsers`` (from ``add_subparsers``).

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser, with :func:`cmd_fit` as its ``func`` default.
    """
    p = subparsers.add_parser(
        "fit", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="fit a count model to a CSV or Parquet file",
        description="Fit a softplus-link count regression; print the coefficient table and "
                    "save the model (safe format: JSON + tensors) to --out.",
        epilog="example:\n  posheads fit nmes.csv --target visits --model negative-binomial "
               "--out model/\n"
               "  posheads fit nmes.csv --formula 'visits ~ C(health) + chronic + "
               "bs(income, 4)' --out model/",
    )
    p.add_argument("data", help="CSV or Parquet file, one row per observation")
    p.add_argument("--target", default=None,
                   help="column of counts to model (required without --formula)")
    p.add_argument("--features", nargs="+", default=None,
                   help="feature columns (default: every other column); text columns are "
                        "encoded in treatment coding (first level in sorted order dropped)")
    p.add_argument("--formula", default=None,
                   help="Wilkinson formula instead of --target/--features, e.g. "
                        "'visits ~ C(health) + age | chronic' (after '|': the zero part of "
                        "zero-inflated and hurdle models)")
    p.add_argument("--model", choices=regression_families(), default="poisson",
                   metavar="MODEL",
                   help="the likelihood, one of: %(choices)s (default %(default)s)")
    p.add_argument("--inference", choices=_INFERENCE, default="map")
    p.add_argument("--exposure", default=None, help="column of positive exposures")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="L2 penalty on scikit-learn's scale (default 0: maximum likelihood)")
    p.add_argument("--out", default=None, help="folder to save the fitted model in")
    add_common_options(p)
    p.set_defaults(func=cmd_fit)
    return p


def _target(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The target column as float64 counts; a :class:`CLIError` for anything else."""
    require_columns(frame, [column])
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


def cmd_fit(args: argparse.Namespace) -> int:
    """Run ``posheads fit``; return the exit status.

    Raises
    ------
    CLIError
        For a missing file or column, a target that is not counts, or a bad feature column.
    """
    from posheads.estimators import regressor_for

    frame = read_table(args.data)
    if args.formula is not None and (args.target or args.features):
        raise CLIError("--formula names the target and the features: drop --target and "
                       "--features")
    if args.formula is None and args.target is None:
        raise CLIError("give --target (the column of counts) or --formula")
    if args.exposure:
        require_columns(frame, [args.exposure])
    est = regressor_for(args.model)(
        alpha=args.alpha, inference=args.inference, random_state=args.seed,
        device=args.device, verbose=0 if args.quiet else 1, formula=args.formula)
    exposure = FeatureSpec([], {}, args.exposure).exposure_of(frame)
    if args.formula is None:
        y = _target(frame, args.target)
        features = args.features or [c for c in frame.columns
                                     if c not in (args.target, args.exposure)]
        spec = FeatureSpec.from_frame(frame, features, args.exposure)
        X = spec.design(frame)
        est.fit(X, y, exposure=exposure)
    else:
        X = frame
        est.fit(X, exposure=exposure)
        y = est.design_.response_of(frame)
        spec = FeatureSpec.from_frame(frame, list(est.feature_names_in_), args.exposure,
                                      formula=args.formula)
        X = spec.design(frame)
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
