"""Command-line choices that come from the family registry, read when first needed.

The ``--model`` of ``posheads fit`` and the ``--likelihood`` of ``posheads forecast`` take
the name of a registered family (:func:`posheads.families.get_family`), written with
hyphens. The registry imports torch, which the other commands and ``posheads --help`` do
not need, so the choices are a lazy container that argparse reads only to check a value
given on the command line, and a subcommand's help (:class:`HelpFormatter`) names them by
a metavar instead of listing them; a value that is not a family is answered with the list.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Iterator

__all__ = ["FamilyChoices", "HelpFormatter", "forecast_families", "regression_families"]


class FamilyChoices:
    """The hyphenated names of the registered families that pass ``keep``, plus ``extra``.

    Parameters
    ----------
    keep : callable
        ``family -> bool``.
    extra : tuple of str
        Further accepted values, listed first (``"auto"``).
    """

    def __init__(self, keep: Callable, extra: tuple[str, ...] = ()):
        self.keep, self.extra = keep, tuple(extra)
        self._names: list[str] | None = None

    def _load(self) -> list[str]:
        if self._names is None:
            from posheads.families import available_families

            names = [f.name.replace("_", "-") for f in available_families() if self.keep(f)]
            self._names = [*self.extra, *names]
        return self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __contains__(self, value) -> bool:
        return value in self._load()

    def __len__(self) -> int:
        return len(self._load())


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The help formatter of a subcommand with family choices: it leaves them unread.

    argparse joins an option's choices into ``%(choices)s`` for its help text whether the
    text uses it or not; reading :class:`FamilyChoices` imports torch and Pyro, which
    ``--help`` does not need. An option with family choices therefore names its values
    by a ``metavar`` and does not use ``%(choices)s`` in its help.
    """

    def _expand_help(self, action):
        if isinstance(action.choices, FamilyChoices):
            action = copy.copy(action)  # the parser's action keeps its choices
            action.choices = None
        return super()._expand_help(action)


def _has_regressor(family) -> bool:
    from posheads.estimators import regressor_for

    try:
        regressor_for(family)
    except ValueError:
        return False
    return True


def regression_families() -> FamilyChoices:
    """Families that a regressor fits (``posheads fit --model``)."""
    return FamilyChoices(_has_regressor)


def forecast_families() -> FamilyChoices:
    """Families without a zero part, and ``"auto"`` (``posheads forecast --likelihood``)."""
    return FamilyChoices(lambda family: not family.parts, extra=("auto",))
