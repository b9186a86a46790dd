"""The ``posheads fit`` subcommand: fit a count regression to a table and save it.

It prints the coefficient table, and with ``--out`` saves the estimator (with its fitted
table encoding or formula design) and its :class:`~posheads.cli.spec.FeatureSpec` (the safe
format: JSON + tensors) to one folder, which ``posheads predict`` reads. ``--formula``
takes a Wilkinson formula instead of ``--target`` and ``--features``.
"""

from __future__ import annotations

import argparse
import warnings
from typing import TYPE_CHECKING

from .choices import HelpFormatter, regression_families
from .io import (
    CLIError,
    atomic_dir,
    check_device,
    check_output,
    check_target_values,
    one_line,
    read_table,
    require_columns,
)
from .options import add_common_options
from .spec import FeatureSpec

if TYPE_CHECKING:  # numpy and pandas are imported by the command, not by its --help
    import numpy as np
    import pandas as pd

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
        "fit", formatter_class=HelpFormatter,
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
                   help="the likelihood: the name of a family, with hyphens, e.g. "
                        "negative-binomial (default %(default)s); a name that is not "
                        "one lists those that are")
    p.add_argument("--inference", choices=_INFERENCE, default="map")
    p.add_argument("--exposure", default=None, help="column of positive exposures")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="L2 penalty on scikit-learn's scale (default 0: maximum likelihood)")
    p.add_argument("--out", default=None, help="folder to save the fitted model in")
    p.add_argument("--allow-unconverged", action="store_true",
                   help="keep (print and save) a fit whose optimiser did not converge; "
                        "without it such a fit is an error")
    add_common_options(p)
    p.set_defaults(func=cmd_fit)
    return p


def _target(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The target column as float64 counts; a :class:`CLIError` for anything else."""
    import numpy as np
    import pandas as pd

    require_columns(frame, [column])
    col = frame[column]
    if not pd.api.types.is_numeric_dtype(col):
        raise CLIError(f"target column {column!r} is not numeric (e.g. {col.iloc[0]!r}): "
                       "it must hold counts 0, 1, 2, ...")
    if col.isna().any():
        raise CLIError(f"target column {column!r} has {int(col.isna().sum())} missing "
                       "value(s): drop those rows first")
    y = col.to_numpy(np.float64)
    check_target_values(y, column)
    return y


def cmd_fit(args: argparse.Namespace) -> int:
    """Run ``posheads fit``; return the exit status.

    Raises
    ------
    CLIError
        For a missing file or column, a target that is not counts, or a bad feature column.
    """
    import pandas as pd

    from posheads.estimators import regressor_for

    if args.formula is not None and (args.target or args.features):
        raise CLIError("--formula names the target and the features: drop --target and "
                       "--features")
    if args.formula is None and args.target is None:
        raise CLIError("give --target (the column of counts) or --formula")
    _check_features(args)
    check_device(args.device)
    if args.out:
        check_output(args.out, folder=True, replace_marker="features.json")
    frame = read_table(args.data)
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
        _fit_checked(est, args, X, y, exposure=exposure)
    else:
        X = frame
        _fit_checked(est, args, X, exposure=exposure)
        y = est.design_.response_of(frame)
        spec = FeatureSpec.from_frame(frame, list(est.feature_names_in_), args.exposure,
                                      formula=args.formula)
        X = spec.design(frame)
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(est.summary().round(4).to_string())
    print(f"\nrows {len(y)}, model {args.model}, inference {args.inference}, "
          f"D2 {est.score(X, y):.4f}, {_budget(est, args.inference)}")
    if args.out:
        with atomic_dir(args.out) as tmp:
            est.save(tmp)
            spec.save(tmp)
        print(f"saved the model to {args.out}")
    return 0


def _check_features(args: argparse.Namespace) -> None:
    """A :class:`CLIError` for ``--features`` naming the target, the exposure or a column
    twice."""
    features = args.features or []
    for role, column in (("target", args.target), ("exposure", args.exposure)):
        if column is not None and column in features:
            raise CLIError(f"--features includes the {role} column {column!r}: a model "
                           f"cannot use its {role} as a feature")
    twice = sorted({c for c in features if features.count(c) > 1})
    if twice:
        raise CLIError(f"--features names {', '.join(map(repr, twice))} more than once")


def _fit_checked(est, args: argparse.Namespace, X, y=None, **fit_params) -> None:
    """``est.fit``; a fit that did not converge is a :class:`CLIError` unless
    ``--allow-unconverged``, then one warning. Other warnings pass on unchanged."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if y is None:
            est.fit(X, **fit_params)
        else:
            est.fit(X, y, **fit_params)
    unconverged = []
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            unconverged.append(one_line(w.message))
        else:  # to the caller's handling (the command prints each one once)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if unconverged and not args.allow_unconverged:
        raise CLIError(f"the fit did not converge: {unconverged[0]} (pass "
                       "--allow-unconverged to keep it anyway)")
    for text in dict.fromkeys(unconverged):
        warnings.warn(f"the fit did not converge: {text}", ConvergenceWarning, stacklevel=2)


def _budget(est, inference: str) -> str:
    """The work the fit did, in the engine's terms: draws for NUTS, steps for SVI,
    iterations of the mode search otherwise."""
    if inference == "nuts":
        return (f"{est.num_chains} chain(s) of {est.num_samples} draws after "
                f"{est.num_warmup} warmup")
    if inference == "svi":
        return f"{est.n_iter_ or est.num_steps} SVI steps"
    return f"iterations {est.n_iter_}"
