"""Data as analysts hold it: data frames and formulas turned into design matrices.

One implementation serves the regressors, the BNN and the ``posheads`` command:

* :class:`ColumnSchema` records, from the training frame, each input column's kind
  (numeric, categorical with its levels, boolean) and checks a later frame against it,
  raising a ``ValueError`` that names the column and the first bad row (a missing
  column, a missing value, a string in a numeric column, a level not seen in training);
* :class:`FrameEncoder` is the design of a plain frame: numeric columns as they are,
  categorical, string and boolean columns in treatment coding (one 0/1 column per level
  but the reference level, named ``health[poor]``);
* :class:`~posheads.estimators.formula.FormulaPart` (module :mod:`.formula`) is the
  design of a Wilkinson formula through formulaic, re-applied identically at predict
  time (the fitted state of stateful transforms: centring, spline knots, levels);
* :class:`DataDesign` ties them together: the count part's design, an optional zero
  part's design (``zero_formula``, pscl's ``y ~ x | z``, or a frame ``X_zero``) and the
  response of a formula. It is stored on a fitted estimator as ``design_`` and saved in
  JSON (:meth:`DataDesign.to_dict`).

The reference level of a categorical column is its first category (a pandas
``Categorical`` keeps its own order; strings are sorted; ``False`` for booleans). Nothing
the caller passed is modified. See ``docs/formulas.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ColumnSchema", "DataDesign", "FrameEncoder", "check_unique_columns", "is_frame",
           "needs_encoding", "numeric_values", "row_label"]

_NUMERIC, _CATEGORICAL, _BOOLEAN = "numeric", "categorical", "boolean"


def check_unique_columns(frame) -> None:
    """Raise a ``ValueError`` naming a column label that a frame holds twice (``frame[c]``
    would then be a frame, not a column)."""
    columns = frame.columns
    if not columns.is_unique:
        twice = list(dict.fromkeys(c for c in columns[columns.duplicated()]))
        raise ValueError(f"the data frame has the column(s) {', '.join(map(repr, twice[:5]))} "
                         "more than once: give every column its own name")


def is_frame(X) -> bool:
    """Whether ``X`` is a pandas ``DataFrame`` (checked without importing pandas)."""
    return type(X).__module__.startswith("pandas") and hasattr(X, "columns") \
        and hasattr(X, "dtypes")


def needs_encoding(X) -> bool:
    """Whether ``X`` is a frame with a column that is not plain numbers (categorical,
    string, boolean or object): such a frame goes through a :class:`FrameEncoder`."""
    if not is_frame(X):
        return False
    import pandas as pd

    check_unique_columns(X)
    return any(not pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t)
               for t in X.dtypes)


def row_label(frame, i: int) -> str:
    """``"row i"``, with the index label when the frame's index is not ``0..n-1``."""
    import pandas as pd

    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return f"row {i}"
    return f"row {i} (index {index[i]!r})"


def numeric_values(col, name: str, frame) -> np.ndarray:
    """A numeric column as float64, a ``ValueError`` naming a string in it (a
    ``TypeError`` for a value that is neither string nor number).

    Parameters
    ----------
    col : pandas.Series of shape (n,)
    name : str
        The column's name, for the message.
    frame : pandas.DataFrame
        The frame it came from (for the row label).

    Returns
    -------
    ndarray of shape (n,), float64
    """
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(np.isnan(values) & col.notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        value = col.iloc[i]
        if not isinstance(value, str):  # not data at all (a dict, a list): a type error
            raise TypeError(f"column {name!r} holds {value!r} at {row_label(frame, i)}: "
                            "each argument must be a string or a number")
        raise ValueError(f"column {name!r} is numeric but {row_label(frame, i)} holds "
                         f"{value!r}: fix or drop that row (or make the column a "
                         "category to encode it)")
    return values


def _named(frame):
    """``frame`` with its column labels as strings (a new frame only when they are not)."""
    check_unique_columns(frame)
    if all(isinstance(c, str) for c in frame.columns):
        return frame
    return frame.rename(columns=str)


def _first_missing(values: np.ndarray):
    """Position of the first NaN of a float array, or None (one pass when there is none)."""
    if not np.isnan(values.sum()):
        return None
    return int(np.flatnonzero(np.isnan(values))[0])


@dataclass
class ColumnSchema:
    """The kinds of a frame's input columns as seen in training, and the check of a frame.

    Parameters
    ----------
    names : list of str
        Input columns, in order.
    kinds : dict of str to str
        ``"numeric"``, ``"categorical"`` or ``"boolean"`` per column.
    levels : dict of str to list of str
        The training levels of each categorical or boolean column, reference first.
    """

    names: list[str]
    kinds: dict[str, str]
    levels: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, frame, names=None) -> ColumnSchema:
        """The schema of ``names`` (default: every column) of a training frame.

        Raises
        ------
        ValueError
            For a missing column, a missing value, a column that mixes numbers and
            strings, or a categorical column with fewer than two levels.
        """
        import pandas as pd

        frame = _named(frame)
        names = [str(c) for c in frame.columns] if names is None else list(names)
        _require(frame, names, "data")
        if len(frame) == 0:
            raise ValueError("the data frame has no rows: a fit needs at least one")
        kinds, levels = {}, {}
        for name in names:
            col = frame[name]
            kind = _kind_of(col)
            if kind == _NUMERIC:
                if _first_missing(numeric_values(col, name, frame)) is not None:
                    _raise_missing(frame, name)
            else:
                if col.isna().any():
                    _raise_missing(frame, name)
                if kind == _BOOLEAN:
                    found = ["False", "True"]
                elif isinstance(col.dtype, pd.CategoricalDtype):
                    cats = col.cat.categories
                    used = np.bincount(col.cat.codes.to_numpy(), minlength=len(cats)) > 0
                    found = [str(c) for c, u in zip(cats, used, strict=True) if u]
                else:
                    found = sorted(map(str, col.unique()))
                if kind != _BOOLEAN and len(found) < 2:
                    raise ValueError(f"column {name!r} is a factor with one level "
                                     f"({found[0]!r}): it cannot be estimated; drop it")
                levels[name] = found
            kinds[name] = kind
        return cls(names=names, kinds=kinds, levels=levels)

    def check(self, frame, names=None) -> None:
        """Check ``names`` (default: all) of ``frame`` against the training schema.

        Raises
        ------
        ValueError
            Naming the column and the first bad row: a missing column, a missing value,
            a string in a numeric column, a level not seen in training.
        """
        names = self.names if names is None else names
        frame = _named(frame)
        _require(frame, names, "data")
        for name in names:
            if self.kinds[name] == _NUMERIC:
                if _first_missing(numeric_values(frame[name], name, frame)) is not None:
                    _raise_missing(frame, name)
            else:
                self.codes(frame, name)

    def codes(self, frame, name: str) -> np.ndarray:
        """Level codes ``0..k-1`` of a categorical or boolean column (0: reference).

        Raises
        ------
        ValueError
            For a missing value or a level not seen in training, naming the first row.
        """
        import pandas as pd

        col = frame[name]
        levels = self.levels[name]
        if col.isna().any():
            _raise_missing(frame, name)
        if pd.api.types.is_bool_dtype(col.dtype):
            return col.to_numpy(dtype=np.int8)
        text = col.astype(str) if not isinstance(col.dtype, pd.CategoricalDtype) \
            else col.cat.rename_categories([str(c) for c in col.cat.categories])
        codes = pd.Index(levels).get_indexer(text)
        bad = np.flatnonzero(codes < 0)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"column {name!r} has the level {col.iloc[i]!r} at "
                             f"{row_label(frame, i)}, not seen in training (levels "
                             f"{levels[:8]})")
        return codes

    def to_dict(self) -> dict:
        """The schema as JSON-ready values."""
        return {"names": list(self.names), "kinds": dict(self.kinds),
                "levels": {k: list(v) for k, v in self.levels.items()}}

    @classmethod
    def from_dict(cls, state: dict) -> ColumnSchema:
        """Inverse of :meth:`to_dict`."""
        return cls(names=list(state["names"]), kinds=dict(state["kinds"]),
                   levels={k: list(v) for k, v in state["levels"].items()})


def _kind_of(col) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(col.dtype):
        return _BOOLEAN
    if isinstance(col.dtype, pd.CategoricalDtype):
        return _CATEGORICAL
    if pd.api.types.is_numeric_dtype(col.dtype):
        return _NUMERIC
    # object or string: numbers stored as text are numbers; text is a factor; a column
    # of mostly numbers with a stray string is a typo, reported as such
    parsed = pd.to_numeric(col, errors="coerce")
    present = int(col.notna().sum())
    numbers = int(parsed.notna().sum())
    if present and numbers == present:
        return _NUMERIC
    if numbers * 2 > present:
        return _NUMERIC  # numeric_values() names the first string
    return _CATEGORICAL


def _require(frame, names, what):
    missing = [n for n in names if n not in frame.columns]
    if missing:
        shown = ", ".join(map(repr, list(frame.columns)[:12]))
        raise ValueError(f"{what} lacks the column(s) {', '.join(map(repr, missing))}; "
                         f"it has: {shown}")


def _raise_missing(frame, name):
    i = int(np.flatnonzero(frame[name].isna().to_numpy())[0])
    raise ValueError(f"column {name!r} has a missing value at {row_label(frame, i)}: "
                     "drop or fill those rows first")


@dataclass
class FrameEncoder:
    """The design of a plain frame: numbers as they are, factors in treatment coding.

    Parameters
    ----------
    schema : ColumnSchema
        The columns, their kinds and levels (reference first).

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"age": [70.0, 81.0, 66.0], "health": ["poor", "good", "poor"]})
    >>> enc = FrameEncoder.fit(frame)
    >>> enc.column_names
    ['age', 'health[poor]']
    >>> enc.transform(frame)[:, 1]
    array([1., 0., 1.])
    """

    schema: ColumnSchema

    @classmethod
    def fit(cls, frame, names=None) -> FrameEncoder:
        """The encoder of a training frame (see :meth:`ColumnSchema.from_frame`)."""
        return cls(ColumnSchema.from_frame(frame, names))

    @property
    def feature_names_in(self) -> list[str]:
        """The input columns."""
        return list(self.schema.names)

    @property
    def column_names(self) -> list[str]:
        """The design's columns: ``age``, ``health[poor]``, ``married[True]``."""
        out = []
        for name in self.schema.names:
            if self.schema.kinds[name] == _NUMERIC:
                out.append(name)
            else:
                out += [f"{name}[{lvl}]" for lvl in self.schema.levels[name][1:]]
        return out

    def transform(self, frame, dtype=np.float64) -> np.ndarray:
        """The design matrix of ``frame``, shape ``(n, len(column_names))``.

        Raises
        ------
        ValueError
            As :meth:`ColumnSchema.check`.
        """
        schema = self.schema
        frame = _named(frame)
        _require(frame, schema.names, "data")
        out = np.zeros((len(frame), len(self.column_names)), dtype=dtype)
        j = 0
        for name in schema.names:
            if schema.kinds[name] == _NUMERIC:
                values = numeric_values(frame[name], name, frame)
                if _first_missing(values) is not None:
                    _raise_missing(frame, name)
                out[:, j] = values
                j += 1
                continue
            codes = schema.codes(frame, name)
            k = len(schema.levels[name]) - 1
            rows = np.flatnonzero(codes > 0)
            out[rows, j + codes[rows] - 1] = 1.0
            j += k
        return out

    def to_dict(self) -> dict:
        """The encoder as JSON-ready values (its schema)."""
        return {"kind": "frame", "schema": self.schema.to_dict()}


class DataDesign:
    """How the caller's data becomes the model's design matrices (fitted in training).

    Build one with :meth:`fit` (from a frame with categorical columns, and optionally a
    frame ``X_zero`` for the zero part, or from a formula); apply it to new data with
    :meth:`transform`.

    Parameters
    ----------
    count : FrameEncoder or FormulaPart
        The count part's design.
    zero : FrameEncoder or FormulaPart, optional
        The zero part's design.
    formula : str, optional
        The formula the design was built from (``None`` for frames).
    response : FormulaPart, optional
        The response of a formula (its left-hand side).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"y": [0, 2, 1, 4], "x": [0.5, 1.5, 1.0, 2.0],
    ...                    "g": ["a", "b", "a", "b"]})
    >>> design, X, X_zero, y = DataDesign.fit(df, formula="y ~ x + g")
    >>> design.column_names, X.shape, y.tolist()
    (['x', 'g[b]'], (4, 2), [0.0, 2.0, 1.0, 4.0])
    """

    def __init__(self, count, zero=None, *, formula=None, response=None):
        self.count, self.zero = count, zero
        self.formula, self.response = formula, response

    # ---------------------------------------------------------------- building
    @classmethod
    def fit(cls, X, *, formula=None, zero_formula=None, X_zero=None, fit_intercept=True,
            y=None, dtype=np.float64):
        """Fit the design on training data and return it with the training matrices.

        Parameters
        ----------
        X : pandas.DataFrame
            The training frame.
        formula : str, optional
            ``"visits ~ C(health) + age"``; pscl's ``"y ~ x | z"`` gives the zero part
            its own right-hand side ``z``. Without it, every column of ``X`` is a feature
            (:class:`FrameEncoder`).
        zero_formula : str, optional
            The zero part's right-hand side (``"~ z1 + z2"``), with no response.
        X_zero : pandas.DataFrame, optional
            Without a formula: the zero part's frame.
        fit_intercept : bool
            Whether the estimator fits intercepts: a formula must agree (``- 1`` removes
            its intercept).
        y : array-like of shape (n,), optional
            The response, when the formula has none (or without a formula).
        dtype : numpy dtype
            Of the returned matrices (the estimator's): each is built once, C-contiguous,
            in this dtype, so an estimator uses it as it is, without a copy.

        Returns
        -------
        design : DataDesign
        X : ndarray of shape (n, p), C-contiguous
        X_zero : ndarray of shape (n, q), C-contiguous, or None
        y : ndarray of shape (n,) or None
            The formula's response, else ``y`` as given.

        Raises
        ------
        ValueError
            For an unknown column, a missing response, a response given twice, a factor
            with one level, a zero part given twice, an intercept that disagrees with
            ``fit_intercept``, and the bad values :meth:`ColumnSchema.check` names.
        """
        if not is_frame(X):
            raise TypeError(f"X must be a pandas DataFrame here, got {type(X).__name__}")
        if formula is None:
            if zero_formula is not None:
                raise ValueError("zero_formula needs formula as well")
            if X_zero is not None and not is_frame(X_zero):
                raise TypeError("X is a data frame to encode, so X_zero must be a data "
                                f"frame as well, got {type(X_zero).__name__}")
            design = cls(FrameEncoder.fit(X),
                         None if X_zero is None else FrameEncoder.fit(X_zero))
            Xd, Zd = design.transform(X, X_zero, dtype=dtype)
            return design, Xd, Zd, y
        from .formula import FormulaPart, split_formula

        if X_zero is not None:
            raise ValueError("with a formula, the zero part comes from zero_formula (or "
                             "'y ~ x | z'), not X_zero")
        lhs, rhs, zero_rhs = split_formula(formula, zero_formula)
        if lhs is None and y is None:
            raise ValueError(f"the formula {formula!r} has no response and no y was "
                             "given: write 'y ~ ...' or pass y")
        if lhs is not None and y is not None:
            raise ValueError(f"the formula {formula!r} names its response; do not pass y "
                             "as well")
        count, Xd = FormulaPart.fit(X, rhs, fit_intercept=fit_intercept, what="formula",
                                    dtype=dtype)
        zero, Zd = None, None
        if zero_rhs is not None:
            zero, Zd = FormulaPart.fit(X, zero_rhs, fit_intercept=fit_intercept,
                                       what="zero part of the formula", dtype=dtype)
        response = None
        if lhs is not None:
            response, Y = FormulaPart.fit(X, lhs, fit_intercept=None,
                                          what="response of the formula",
                                          dtype=np.float64)
            if Y.shape[1] != 1:
                raise ValueError(f"the response of {formula!r} must be one column, got "
                                 f"{Y.shape[1]}")
            y = Y[:, 0]
        return cls(count, zero, formula=formula, response=response), Xd, Zd, y

    # ---------------------------------------------------------------- applying
    @property
    def feature_names_in(self) -> list[str]:
        """The input columns the design reads (count part, then the zero part's others)."""
        names = self.count.feature_names_in
        if self.zero is not None and self.formula is not None:
            names += [n for n in self.zero.feature_names_in if n not in names]
        return names

    @property
    def column_names(self) -> list[str]:
        """Names of the count part's design columns (the coefficients)."""
        return self.count.column_names

    @property
    def zero_column_names(self):
        """Names of the zero part's design columns, or None when it reads ``X``."""
        return None if self.zero is None else self.zero.column_names

    def transform(self, X, X_zero=None, dtype=np.float64):
        """The design matrices of new data.

        Parameters
        ----------
        X : pandas.DataFrame
        X_zero : pandas.DataFrame, optional
            The zero part's frame, for a frame design fitted with one.
        dtype : numpy dtype

        Returns
        -------
        (ndarray of shape (n, p), ndarray of shape (n, q) or None)
        """
        if not is_frame(X):
            raise TypeError(f"this estimator was fitted on a data frame; X must be a "
                            f"pandas DataFrame, got {type(X).__name__}")
        Xd = self.count.transform(X, dtype=dtype)
        if self.formula is not None:
            if X_zero is not None:
                raise ValueError("the zero part's design comes from the formula: do not "
                                 "pass X_zero")
            Z = None if self.zero is None else self.zero.transform(X, dtype=dtype)
            return Xd, Z
        if (X_zero is None) != (self.zero is None):
            raise ValueError("X_zero was given in fit but not here" if X_zero is None
                             else "this estimator was fitted without X_zero")
        if X_zero is None:
            return Xd, None
        if not is_frame(X_zero):
            raise TypeError(f"X_zero must be a pandas DataFrame, like in fit, got "
                            f"{type(X_zero).__name__}")
        Z = self.zero.transform(X_zero, dtype=dtype)
        if Z.shape[0] != Xd.shape[0]:
            raise ValueError(f"X_zero has {Z.shape[0]} rows, X has {Xd.shape[0]}")
        return Xd, Z

    def response_of(self, X) -> np.ndarray:
        """The formula's response evaluated on the frame ``X``, shape ``(n,)``.

        Raises
        ------
        ValueError
            When the design has no response (no formula, or ``"~ x"``), or as
            :meth:`transform`.
        """
        if self.response is None:
            raise ValueError("this design has no response: it was not fitted from "
                             "'y ~ ...'")
        return self.response.transform(X)[:, 0]

    # ---------------------------------------------------------------- storing
    def to_dict(self) -> dict:
        """The fitted design as JSON-ready values (no pickles)."""
        def part(p):
            return None if p is None else p.to_dict()

        return {"formula": self.formula, "count": part(self.count), "zero": part(self.zero),
                "response": part(self.response)}

    @classmethod
    def from_dict(cls, state: dict) -> DataDesign:
        """Inverse of :meth:`to_dict`."""
        def part(s):
            if s is None:
                return None
            if s["kind"] == "frame":
                return FrameEncoder(ColumnSchema.from_dict(s["schema"]))
            from .formula import FormulaPart

            return FormulaPart.from_dict(s)

        return cls(part(state["count"]), part(state["zero"]), formula=state["formula"],
                   response=part(state["response"]))
