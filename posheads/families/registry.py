"""The registry of families: :func:`get_family` turns a user's string into a family, once.

Names are matched case-insensitively, with hyphens read as underscores
(``"negative-binomial"`` is ``"negative_binomial"``), and through each family's aliases.
A :class:`~posheads.families.Family` object passes through unchanged, registered or not,
so a new likelihood can be used without registering it.
"""

from __future__ import annotations

from .base import Family

__all__ = ["available_families", "get_family", "register_family", "registered",
           "unregister_family"]

_FAMILIES: dict[str, Family] = {}
_LOOKUP: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_family(family: Family) -> Family:
    """Make ``family`` known to :func:`get_family` by its name and aliases.

    Raises
    ------
    ValueError
        When the name or an alias is already taken by another family.
    """
    if not isinstance(family, Family):
        raise ValueError(f"register_family takes a Family, got {type(family).__name__}")
    keys = {_key(family.name), *(_key(a) for a in family.aliases)}
    taken = {k for k in keys if k in _LOOKUP and _FAMILIES[_LOOKUP[k]] is not family}
    if taken:
        raise ValueError(f"family name(s) {sorted(taken)} already registered")
    _FAMILIES[family.name] = family
    for k in keys:
        _LOOKUP[k] = family.name
    return family


def unregister_family(family: Family | str) -> None:
    """Forget a family registered with :func:`register_family`."""
    family = get_family(family)
    for k in [k for k, v in _LOOKUP.items() if v == family.name]:
        del _LOOKUP[k]
    _FAMILIES.pop(family.name, None)


def registered(family: Family) -> bool:
    """Whether ``family`` is the family registered under its name."""
    return _FAMILIES.get(family.name) is family


def available_families() -> tuple[Family, ...]:
    """The registered families, in the order they were registered."""
    return tuple(_FAMILIES.values())


def get_family(family) -> Family:
    """The family a user means: a registered name or alias, or a :class:`Family` itself.

    Parameters
    ----------
    family : str or Family

    Returns
    -------
    Family

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).

    Examples
    --------
    >>> get_family("negative-binomial").name
    'negative_binomial'
    """
    if isinstance(family, Family):
        return family
    if isinstance(family, str) and _key(family) in _LOOKUP:
        return _FAMILIES[_LOOKUP[_key(family)]]
    known = ", ".join(f.name for f in _FAMILIES.values())
    raise ValueError(f"unknown likelihood {family!r}: choose one of {known}, or pass a "
                     "posheads.families.Family")
