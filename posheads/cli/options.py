"""The options shared by the ``posheads`` subcommands: ``--quiet``, ``--debug``, ``--seed``
and ``--device``.

Each is defined once here, so its name, default and help text agree across subcommands.
"""

from __future__ import annotations

import argparse

__all__ = ["add_common_options"]


def add_common_options(parser: argparse.ArgumentParser, *, seed: bool = True,
                       device: bool = True) -> None:
    """Add the shared options to a subcommand's parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser. It always gets ``--quiet`` and ``--debug``; the error
        handling of :func:`posheads.cli.main` reads ``--debug``, so every subcommand needs it.
    seed : bool, default=True
        Add ``--seed`` (an int, default 0), for subcommands with random steps.
    device : bool, default=True
        Add ``--device`` (``auto``, ``cpu`` or ``cuda``), for subcommands that fit a model.
    """
    parser.add_argument("--quiet", action="store_true", help="print only results, no progress")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if device:
        parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
