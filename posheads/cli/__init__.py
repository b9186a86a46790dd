"""The ``posheads`` command: ``demo``, ``fit``, ``predict``, ``diagnose``, ``datasets``
and ``forecast``.

Each subcommand is one module of this package, holding its parser and its command; this
module joins them and is the command's one error boundary:

* every expected failure -- a user mistake (:class:`~posheads.cli.io.CLIError`), a
  ``ValueError`` or ``TypeError`` from the library's input validation, an ``OSError`` on
  a file, a bad option -- ends with one line ``posheads COMMAND: error: ...`` on stderr
  and exit status 2 (``--debug`` shows the traceback instead);
* any other exception is a bug in posheads and shows its traceback;
* warnings are printed once each, as one line ``posheads COMMAND: warning: ...``, after
  a command that succeeds (the error line alone after one that fails);
* a closed standard output (``posheads predict ... | head``) ends the command quietly,
  with exit status 141 as for a process stopped by ``SIGPIPE``.

Outputs are checked before any work starts, written to a temporary name and moved into
place only when complete, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from .. import __version__
from .datasets import add_datasets_parser
from .demo import add_demo_parser
from .diagnose import add_diagnose_parser
from .fit import add_fit_parser
from .forecast import add_forecast_parser
from .io import CLIError, one_line
from .predict import add_predict_parser

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_ERROR", "build_parser", "main"]

#: Exit status of a user mistake or any other expected failure.
EXIT_ERROR = 2
#: Exit status when standard output was closed early (128 + SIGPIPE, as a shell reports).
EXIT_BROKEN_PIPE = 141

# The failures that are the user's to fix; anything else is a bug and shows a traceback.
_EXPECTED = (CLIError, ValueError, TypeError, OSError)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``posheads`` parser, with every subcommand; each sets ``func`` to its command."""
    parser = _Parser(
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
    """Run the command line; return the exit status (it never raises ``SystemExit``).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``posheads``; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success (and for ``--help``, ``--version``); 2 for a user mistake or a bad
        option (one line on stderr, or the traceback with ``--debug``) and for no
        subcommand (the help is printed, and the error line); 141 when standard output
        was closed early.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    if args.command is None:
        parser.print_help()
        print("posheads: error: give a command, e.g. posheads demo", file=sys.stderr)
        return EXIT_ERROR
    try:
        with warnings.catch_warnings(record=True) as caught:
            status = int(args.func(args) or 0)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except _EXPECTED as exc:
        if args.debug:
            traceback.print_exc()
        print(f"posheads {args.command}: error: {_message(exc)}", file=sys.stderr)
        return EXIT_ERROR
    _print_warnings(args.command, caught)
    return status


def _message(exc: BaseException) -> str:
    """One line saying what went wrong (an ``OSError`` as ``file: reason``)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return one_line(f"{where}{exc.strerror}")
    text = one_line(exc)
    return text or type(exc).__name__


def _print_warnings(command: str, caught) -> None:
    """Each distinct warning once, as one line (no source path, no code line)."""
    seen = set()
    for w in caught:
        text = one_line(w.message)
        if text and text not in seen:
            seen.add(text)
            print(f"posheads {command}: warning: {text}", file=sys.stderr)


def _silence_stdout() -> None:
    """Point standard output at ``os.devnull``, so that Python's flush at exit does not
    raise a second ``BrokenPipeError`` (the recipe of Python's ``signal`` documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # a standard output without a file descriptor (captured in-process)
