"""Wilkinson formulas through formulaic: one right-hand side, fitted once, re-applied.

:class:`FormulaPart` materialises one side of a formula on a training frame and keeps
formulaic's ``ModelSpec``, whose fitted state (the levels of each factor and their
contrasts, the centre of ``center(x)``, the knots of ``bs(x, 4)``) makes the design of new
data identical in meaning to the training design. Before formulaic sees a frame, the
part's :class:`~posheads.estimators.design.ColumnSchema` checks the columns it reads, so
a bad value is named by column and row. formulaic's columns are written once into the
final design (C-contiguous, the estimator's dtype, no intercept column), which the
estimator then uses without a copy. The fitted state is stored in JSON
(:func:`encode_state`), whitelisting the few formulaic types it may hold.

formulaic is an optional dependency: ``pip install posheads[formula]``.
"""

from __future__ import annotations

import functools
import re
import warnings

import numpy as np

from .design import ColumnSchema

__all__ = ["FormulaPart", "decode_state", "encode_state", "split_formula"]

# formulaic names a treatment-coded column `health[T.poor]`; posheads says `health[poor]`
_TREATMENT = re.compile(r"\[T\.")


def _formulaic():
    try:
        import formulaic
    except ImportError as exc:
        raise ImportError("formulas need formulaic: pip install 'posheads[formula]'") from exc
    return formulaic


def split_formula(formula, zero_formula=None):
    """The response, the right-hand side and the zero part's right-hand side of a formula.

    Parameters
    ----------
    formula : str
        ``"y ~ x1 + x2"``, ``"~ x1 + x2"``, or pscl's ``"y ~ x | z"``.
    zero_formula : str, optional
        ``"~ z"`` or ``"z"``: the zero part's right-hand side.

    Returns
    -------
    (formula or None, formula, formula or None)
        formulaic formulas.

    Raises
    ------
    ValueError
        For a formula that does not parse, more than two right-hand sides, a zero part
        given twice, or a response in ``zero_formula``.
    """
    f = _parse(formula, "formula")
    lhs, rhs = (f.lhs, f.rhs) if hasattr(f, "lhs") else (None, f)
    zero = None
    if isinstance(rhs, tuple):
        if len(rhs) != 2:
            raise ValueError(f"the formula {formula!r} has {len(rhs)} right-hand sides "
                             "separated by '|'; at most two: 'y ~ count part | zero part'")
        rhs, zero = rhs
    if zero_formula is not None:
        if zero is not None:
            raise ValueError("the zero part is given twice: in the formula (after '|') and "
                             "as zero_formula")
        z = _parse(zero_formula, "zero_formula")
        if hasattr(z, "lhs"):
            raise ValueError(f"zero_formula {zero_formula!r} must have no response: write "
                             "'~ z1 + z2'")
        if isinstance(z, tuple) or hasattr(z, "rhs"):
            raise ValueError(f"zero_formula {zero_formula!r} must be one right-hand side")
        zero = z
    return lhs, rhs, zero


def _parse(text, name):
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    formulaic = _formulaic()
    try:
        return _parsed(text, formulaic)
    except Exception as exc:  # formulaic's parser errors have no common base
        raise ValueError(f"cannot parse the {name} {text!r}: {exc}") from exc


@functools.lru_cache(maxsize=64)
def _parsed(text, formulaic):
    """``formulaic.Formula(text)``, parsed once per text (a refit or a grid search parses
    the same formula again; formulas are not changed after parsing). Keyed on the module
    too, so a re-imported formulaic never meets a formula of its predecessor."""
    return formulaic.Formula(text)


class FormulaPart:
    """One side of a formula, fitted on a training frame.

    Parameters
    ----------
    spec : formulaic.ModelSpec
        The fitted model spec.
    schema : ColumnSchema
        The frame columns the side reads, with their kinds and levels.
    intercept : int or None
        Position of formulaic's intercept column, dropped from the design (the
        estimator fits its own intercept).
    """

    def __init__(self, spec, schema: ColumnSchema, intercept=None):
        self.spec, self.schema, self.intercept = spec, schema, intercept
        self.expected_columns = None  # set when read back from JSON, checked on first use

    @classmethod
    def fit(cls, frame, formula, *, fit_intercept, what, dtype=np.float64):
        """Materialise ``formula`` (one side) on ``frame``: the part and its design.

        ``fit_intercept`` says whether the estimator fits an intercept (the side must
        have one exactly then); ``None`` for a response, which has none.

        Raises
        ------
        ValueError
            For a column the frame lacks, a factor with one level, a value formulaic
            cannot use, an intercept that disagrees with ``fit_intercept``.

        Returns
        -------
        (FormulaPart, ndarray of shape (n, p))
            The design is C-contiguous, of ``dtype``, without formulaic's intercept
            column, written once (see :func:`_design_materializer`).
        """
        variables = _variables(formula)
        columns = [v for v in sorted(variables) if v in frame.columns]
        unknown = sorted(variables - set(columns))
        if unknown:
            shown = ", ".join(map(repr, list(frame.columns)[:12]))
            raise ValueError(f"the {what} names column(s) {', '.join(map(repr, unknown))} "
                             f"that the data lacks; it has: {shown}")
        ordered = [c for c in map(str, frame.columns) if c in columns]
        schema = ColumnSchema.from_frame(frame, ordered)
        formulaic = _formulaic()
        ensure_full_rank = fit_intercept is not None
        spec = formulaic.ModelSpec(formula=formula, materializer="pandas",
                                   ensure_full_rank=ensure_full_rank, na_action="raise",
                                   output="numpy")
        matrix = _materialise(spec, frame, what, dtype)
        spec = matrix.model_spec
        names = list(spec.column_names)
        has = "Intercept" in names
        if fit_intercept is not None and has != bool(fit_intercept):
            raise ValueError(
                f"the {what} {'has' if has else 'removes'} an intercept but fit_intercept="
                f"{bool(fit_intercept)}: " + ("write '- 1' in it or pass fit_intercept=True"
                                              if has else "pass fit_intercept=False"))
        for factor, (kind, state) in spec.encoder_state.items():
            levels = state.get("categories") if isinstance(state, dict) else None
            if getattr(kind, "value", kind) == "categorical" and levels is not None \
                    and len(levels) < 2:
                raise ValueError(f"{factor} in the {what} is a factor with one level "
                                 f"({levels[0]!r}): it cannot be estimated; drop it")
        part = cls(spec, schema, names.index("Intercept") if has else None)
        return part, _design_of(matrix)

    @property
    def feature_names_in(self) -> list[str]:
        """The frame columns this side reads."""
        return list(self.schema.names)

    @property
    def column_names(self) -> list[str]:
        """The design's columns, intercept dropped, treatment levels as ``health[poor]``."""
        names = [_TREATMENT.sub("[", n) for n in self.spec.column_names]
        if self.intercept is not None:
            del names[self.intercept]
        return names

    def transform(self, frame, dtype=np.float64) -> np.ndarray:
        """The design of ``frame`` under the training state, shape ``(n, p)``,
        C-contiguous, of ``dtype`` (stateful transforms are re-applied, not refitted).

        Raises
        ------
        ValueError
            As :meth:`ColumnSchema.check` (column and row named), or naming the term
            formulaic could not evaluate.
        """
        self.schema.check(frame)
        matrix = _materialise(self.spec, frame, "formula", dtype)
        expected = getattr(self, "expected_columns", None)
        if expected is not None:  # read back from JSON: the state must give the same design
            if list(matrix.model_spec.column_names) != expected:
                raise ValueError(f"the saved formula gives the columns "
                                 f"{list(matrix.model_spec.column_names)}, not {expected} "
                                 "as in training")
            self.spec, self.expected_columns = matrix.model_spec, None
        return _design_of(matrix)

    # ---------------------------------------------------------------- storing
    def to_dict(self) -> dict:
        """The fitted side in JSON-ready values."""
        s = self.spec
        return {"kind": "formula", "formula": str(s.formula), "response": self.intercept
                is None and not s.ensure_full_rank,
                "ensure_full_rank": bool(s.ensure_full_rank),
                "transform_state": encode_state(s.transform_state),
                "encoder_state": encode_state(s.encoder_state),
                "column_names": list(s.column_names),
                "schema": self.schema.to_dict(), "intercept": self.intercept}

    @classmethod
    def from_dict(cls, state: dict) -> FormulaPart:
        """Inverse of :meth:`to_dict`; checks that the columns come out the same."""
        formulaic = _formulaic()
        formula = formulaic.Formula(state["formula"])
        if state.get("response"):  # a left-hand side: parsed as one, with no intercept
            formula = formulaic.Formula(f"{state['formula']} ~ 1").lhs
        spec = formulaic.ModelSpec(
            formula=formula, materializer="pandas",
            ensure_full_rank=state["ensure_full_rank"], na_action="raise", output="numpy",
            transform_state=decode_state(state["transform_state"]),
            encoder_state=decode_state(state["encoder_state"]))
        part = cls(spec, ColumnSchema.from_dict(state["schema"]), state["intercept"])
        part.expected_columns = list(state["column_names"])
        return part


def _variables(formula) -> set:
    """The data columns a formula side reads.

    formulaic lists the variables of plain lookups and of most expressions, but not
    those inside its stateful transforms (``center(age)``); the expression's names
    that are neither called nor the base of an attribute (``np.log``) fill the gap.
    """
    import ast

    out = set(formula.required_variables)
    for term in formula:
        for factor in term.factors:
            out |= set(getattr(factor, "required_variables", ()))
            if getattr(factor.eval_method, "value", None) != "python":
                continue
            try:
                tree = ast.parse(str(factor.expr), mode="eval")
            except SyntaxError:  # formulaic's own syntax (backticks): its list stands
                continue
            skip = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    skip.add(id(node.func))
                elif isinstance(node, ast.Attribute):
                    skip.add(id(node.value))
            out |= {n.id for n in ast.walk(tree)
                    if isinstance(n, ast.Name) and id(n) not in skip}
    return out


def _materialise(spec, frame, what, dtype):
    """``spec.get_model_matrix(frame)`` as one C-contiguous ``dtype`` array without the
    intercept column (see :func:`_design_materializer`), formulaic's errors turned into
    ``ValueError``.

    Returns
    -------
    formulaic.ModelMatrix
        Wrapping the design; its ``model_spec`` still lists ``"Intercept"`` (where the
        side has one), so the fitted state is formulaic's own.
    """
    _formulaic()
    from formulaic.errors import DataMismatchWarning, FormulaicError

    materializer = _design_materializer()(frame)
    materializer.design_dtype = np.dtype(dtype)
    with warnings.catch_warnings():
        # a level not seen in training becomes NaN in formulaic, with a warning: an error
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            out = materializer.get_model_matrix(spec)
        except DataMismatchWarning as exc:
            raise ValueError(f"the {what}: {exc}") from None
        except FormulaicError as exc:
            raise ValueError(f"the {what} cannot be evaluated on the data: {exc}") from exc
    return out


def _design_of(matrix) -> np.ndarray:
    """The array a :func:`_materialise` matrix wraps (formulaic wraps it in a proxy)."""
    return getattr(matrix, "__wrapped__", matrix)


_MATERIALIZER = []  # the subclass below, built on first use (formulaic is optional)
_BLOCK_BYTES = 1 << 18  # rows of the design written at a time: well inside a core's L2


def _design_materializer():
    """formulaic's pandas materializer, writing the design straight into its final array.

    formulaic stacks a side's columns into a new ``(n, p + 1)`` array whose first column
    is the intercept; the estimator fits its own intercept, so dropping that column
    left either a strided view or a second copy of the whole design, and then another
    one for a ``float32`` estimator. This subclass instead allocates one C-contiguous
    ``(n, p)`` array of the estimator's dtype and writes each non-intercept column into
    it once: the array the engine then shares (``to_torch(..., share=True)``). Column
    values, order and the fitted state are formulaic's, unchanged; only the collation
    step differs. It is not registered in formulaic (its specs still name ``"pandas"``,
    so a saved state reads back with formulaic alone).
    """
    if not _MATERIALIZER:
        from formulaic.materializers import PandasMaterializer
        from interface_meta import override  # formulaic's interfaces require it

        class DesignMaterializer(PandasMaterializer):
            """Pandas materializer whose numpy output is the final design array."""

            design_dtype = None  # set per instance by _materialise

            @override
            def _combine_columns(self, cols, spec, drop_rows):
                if spec.output != "numpy" or self.design_dtype is None:
                    return super()._combine_columns(cols, spec, drop_rows)
                n = self.nrows - len(drop_rows)
                kept = [np.broadcast_to(np.asarray(values), (n,)) for name, values in cols
                        if name != "Intercept"]
                out = np.empty((n, len(kept)), dtype=self.design_dtype)
                # in blocks of rows that stay in cache: one pass over the design
                # instead of one strided pass per column
                step = max(1024, _BLOCK_BYTES // (8 * max(len(kept), 1)))
                for start in range(0, n, step):
                    rows = slice(start, start + step)
                    for j, values in enumerate(kept):
                        out[rows, j] = values[rows]
                return out

        _MATERIALIZER.append(DesignMaterializer)
    return _MATERIALIZER[0]


_CONTRASTS = ("TreatmentContrasts", "SASContrasts", "SumContrasts", "HelmertContrasts",
              "DiffContrasts", "PolyContrasts", "CustomContrasts")


def encode_state(value):
    """formulaic's fitted state as JSON-ready values (tagged dicts for its own types).

    Raises
    ------
    TypeError
        For a value of a type the format does not know (a custom stateful transform's
        state, say): such a formula cannot be saved.
    """
    from enum import Enum

    from formulaic.transforms.contrasts import Contrasts, ContrastsState

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, Enum):
        return {"__enum__": type(value).__name__, "value": value.value}
    if isinstance(value, tuple):
        return {"__tuple__": [encode_state(v) for v in value]}
    if isinstance(value, list):
        return [encode_state(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: encode_state(v) for k, v in value.items()}
        return {"__items__": [[encode_state(k), encode_state(v)] for k, v in value.items()]}
    if isinstance(value, ContrastsState):
        return {"__contrasts_state__": {"contrasts": encode_state(value.contrasts),
                                        "levels": encode_state(list(value.levels))}}
    if isinstance(value, Contrasts) and type(value).__name__ in _CONTRASTS:
        fields = {k: encode_state(v) for k, v in vars(value).items()}
        return {"__contrasts__": type(value).__name__, "fields": fields}
    raise TypeError(f"cannot store formulaic state of type {type(value).__name__} as JSON")


def decode_state(value):
    """Inverse of :func:`encode_state`."""
    if isinstance(value, list):
        return [decode_state(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__enum__" in value:
        return _enum(value["__enum__"], value["value"])
    if "__tuple__" in value:
        return tuple(decode_state(v) for v in value["__tuple__"])
    if "__items__" in value:
        return {decode_state(k): decode_state(v) for k, v in value["__items__"]}
    if "__contrasts_state__" in value:
        from formulaic.transforms.contrasts import ContrastsState

        s = value["__contrasts_state__"]
        return ContrastsState(contrasts=decode_state(s["contrasts"]),
                              levels=decode_state(s["levels"]))
    if "__contrasts__" in value:
        from formulaic.transforms import contrasts

        name = value["__contrasts__"]
        if name not in _CONTRASTS:
            raise ValueError(f"unknown contrasts {name!r} in a saved formula")
        fields = {k: decode_state(v) for k, v in value["fields"].items()}
        return getattr(contrasts, name)(**fields)
    return {k: decode_state(v) for k, v in value.items()}


def _enum(name, value):
    from formulaic.parser.types import Factor
    from formulaic.utils.sentinels import Sentinel

    enums = {"Kind": Factor.Kind, "Sentinel": Sentinel}
    if name not in enums:
        raise ValueError(f"unknown formulaic enum {name!r} in a saved formula")
    return enums[name](value)
