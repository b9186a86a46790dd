"""The grouping terms of the mixed-model regressor: grouping frames, factor labels and
lme4-style bar terms of a formula.

A zero part's formula (``zero_formula="~ x + (1 | patient)"``, glmmTMB's ``ziformula``)
is parsed by the same :func:`bar_terms` as the count part's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["bar_terms", "factor_labels", "grouping_frame", "zero_part_spec"]


def grouping_frame(groups, n):
    """The grouping columns as a frame of ``n`` rows (``ValueError`` naming a bad one)."""
    if groups is None:
        raise ValueError("groups is required (a frame, dict of arrays or 1-d array of "
                         "group labels), or give random-effect terms in formula=")
    if isinstance(groups, pd.Series):
        frame = groups.to_frame(groups.name if groups.name is not None else "group")
    elif isinstance(groups, pd.DataFrame):
        frame = groups
    elif isinstance(groups, dict):
        frame = pd.DataFrame({k: np.asarray(v) for k, v in groups.items()})
    else:
        a = np.asarray(groups)
        if a.ndim == 1:
            frame = pd.DataFrame({"group": a})
        elif a.ndim == 2:
            frame = pd.DataFrame(a, columns=[f"group{j}" for j in range(a.shape[1])])
        else:
            raise ValueError(f"groups must be 1-d or 2-d, got shape {a.shape}")
    if len(frame) != n:
        raise ValueError(f"groups has {len(frame)} rows but X has {n}")
    for name in frame.columns:
        if frame[name].isna().any():
            raise ValueError(f"grouping column {name!r} holds missing values (NaN)")
    return frame


def factor_labels(frame, name):
    """The labels of factor ``name``; ``"a:b"`` joins columns ``a`` and ``b``."""
    cols = name.split(":")
    for c in cols:
        if c not in frame.columns:
            raise ValueError(f"random-effect term {name!r}: no grouping column {c!r} "
                             f"(have {list(frame.columns)})")
    if len(cols) == 1:
        return frame[cols[0]].astype(str).to_numpy()
    return frame[cols].astype(str).agg(":".join, axis=1).to_numpy()


def bar_terms(formula: str):
    """The random-effect spec ``{factor: [terms]}`` and the fixed terms of a formula.

    ``formula`` may omit its response (``"~ (1 | patient)"``, as a zero part's formula
    does). Parsed by the ``formulae`` package; ``"1"`` stands for an intercept.

    Returns
    -------
    (dict of str to list of str, list of str)
    """
    import formulae

    text = formula if formula.split("~")[0].strip() else "zero_part " + formula.lstrip()
    desc = formulae.model_description(text)
    spec, fixed = {}, []
    for term in desc.terms:
        kind = type(term).__name__
        if kind == "GroupSpecificTerm":
            name = "1" if term.expr.name == "Intercept" else term.expr.name
            spec.setdefault(term.factor.name, []).append(name)
        elif kind == "Intercept":
            fixed.append("1")
        else:
            fixed.append(term.name)
    return spec, fixed


def zero_part_spec(zero_formula, zero_random_effects, family):
    """The zero part's ``{factor: [terms]}`` (``{}`` without one), checked against the
    family (which must have a zero part), and ``zero_formula``'s fixed terms other than
    the intercept (its covariates; the intercept cannot be removed).

    Returns
    -------
    (dict of str to list of str, list of str)
    """
    if zero_formula is not None and zero_random_effects is not None:
        raise ValueError("give the zero part's group effects once: zero_formula= or "
                         "zero_random_effects=, not both")
    extra = []
    if zero_formula is not None:
        spec, fixed = bar_terms(zero_formula)
        if "1" not in fixed:
            raise ValueError(f"zero_formula {zero_formula!r}: the zero part keeps its "
                             "intercept (drop the '0 +' / '- 1')")
        extra = [t for t in fixed if t != "1"]
    else:
        spec = dict(zero_random_effects or {})
    if (spec or extra) and not family.parts:
        raise ValueError(f"zero-part term(s) {sorted(spec) + extra}: the family "
                         f"{family.name!r} has no zero part (use a zero-inflated or "
                         "hurdle family)")
    return spec, extra
