"""The ``posheads`` command: ``demo``, ``fit``, ``predict``, ``diagnose``, ``datasets``
and ``forecast``.

Each subcommand is one module of this package, holding its parser and its command; this
module joins them and handles errors. Every user mistake (a missing file or column, a bad
target, NaN in a used column, an unreadable model directory) ends with one line on stderr
and exit status 2; ``--debug`` shows the traceback instead. Outputs are written to a
temporary name and moved into place only when complete, so a failed run leaves nothing
half-written.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from .. import __version__
from .datasets import add_datasets_parser
from .demo import add_demo_parser
from .diagnose import add_diagnose_parser
from .fit import add_fit_parser
from .forecast import add_forecast_parser
from .io import CLIError
from .predict import add_predict_parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``posheads`` parser, with every subcommand; each sets ``func`` to its command."""
    parser = argparse.ArgumentParser(
        prog="posheads", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Softplus-link count models: fit, predict and compare on real data.",
        epilog="example:\n  posheads demo\n  posheads datasets export nmes1988 nmes.csv\n"
               "  posheads fit nmes.csv --target visits --out model/",
    )
    parser.add_argument("--version", action="version", version=f"posheads {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (add_demo_parser, add_fit_parser, add_predict_parser, add_diagnose_parser,
                add_datasets_parser, add_forecast_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``posheads``; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success; 2 for a user mistake (one line on stderr, or the traceback with
        ``--debug``) and for no subcommand (the help is printed).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"posheads {args.command}: error: {exc}", file=sys.stderr)
        return 2
    # Errors the libraries raise for bad input are user mistakes too; --debug re-raises
    # them so the whole traceback (and Python's exit status) shows where they came from.
    except (ValueError, OSError, KeyError) as exc:
        if args.debug:
            raise
        print(f"posheads {args.command}: error: {exc}", file=sys.stderr)
        return 2
