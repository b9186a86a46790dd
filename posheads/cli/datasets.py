"""The ``posheads datasets`` subcommand: list the shipped count data sets, or export one
to CSV.
"""

from __future__ import annotations

import argparse

from .io import STDOUT, CLIError, check_output, write_table
from .options import add_common_options

__all__ = ["add_datasets_parser", "cmd_datasets"]


def add_datasets_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``datasets`` subcommand to ``subparsers`` (from ``add_subparsers``).

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser, with :func:`cmd_datasets` as its ``func`` default.
    """
    p = subparsers.add_parser(
        "datasets", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="list or export the shipped data sets",
        description="List the shipped count data sets, or export one to CSV.",
        epilog="example:\n  posheads datasets\n  posheads datasets export biochemists bio.csv",
    )
    p.add_argument("action", nargs="?", choices=["list", "export"], default="list")
    p.add_argument("name", nargs="?", help="data set to export")
    p.add_argument("file", nargs="?", help="CSV file to write ('-': standard output)")
    add_common_options(p, seed=False, device=False)
    p.set_defaults(func=cmd_datasets)
    return p


def _loaders():
    """``{name: loader}``; each loader takes ``as_frame`` and returns a bunch."""
    from .. import datasets as ds

    return {
        "biochemists": ds.load_biochemists,
        "nmes1988": ds.load_nmes1988,
        "seatbelts": ds.load_seatbelts,
        "nyc_departures_daily": lambda as_frame: ds.load_nyc_departures("D", as_frame=as_frame),
        "nyc_departures_hourly": lambda as_frame: ds.load_nyc_departures("h", as_frame=as_frame),
    }


def cmd_datasets(args: argparse.Namespace) -> int:
    """Run ``posheads datasets``; return the exit status.

    Raises
    ------
    CLIError
        For ``export`` without a name and a file, or with an unknown name.
    """
    import pandas as pd

    from ..datasets import list_datasets

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
    check_output(args.file, what="FILE")
    frame = _loaders()[args.name](as_frame=True).frame
    # A time series keeps its dates as a column, so the CSV can be read back with them.
    if isinstance(frame.index, pd.DatetimeIndex):
        frame = frame.reset_index()
    write_table(frame, args.file, index=False)
    if not args.quiet and args.file != STDOUT:
        print(f"wrote {len(frame)} rows of {args.name} to {args.file}")
    return 0
