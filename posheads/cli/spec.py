"""The feature spec of a model folder: which columns of a table the model reads.

``posheads fit --out`` saves it as ``features.json`` beside the estimator; ``predict``
and ``diagnose`` read it back (checking the file) and check a new table against it
before the model sees the table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .io import CLIError, one_line, require_columns

if TYPE_CHECKING:  # pandas is imported by the methods that read a table
    import pandas as pd

__all__ = ["FeatureSpec"]


@dataclass
class FeatureSpec:
    """Which columns of a table a model reads, saved beside it so ``predict`` agrees.

    The encoding itself is the estimator's (:mod:`posheads.estimators.design`: numeric
    columns as they are, categorical and text columns in treatment coding, or a formula),
    saved with the estimator; the spec records the input columns and their kinds as seen
    in training (a :class:`~posheads.estimators.design.ColumnSchema`), so that a table
    with a missing column, a missing value, a string in a numeric column or a level not
    seen in training is reported by column and row before the model sees it.

    Parameters
    ----------
    columns : list of str
        The input columns the model reads, in order.
    schema : dict
        :meth:`ColumnSchema.to_dict` of those columns.
    exposure : str or None, default=None
        The column of positive exposures, if any.
    formula : str or None, default=None
        The model's formula, when it was fitted with ``--formula``.
    """

    columns: list[str]
    schema: dict
    exposure: str | None = None
    formula: str | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: list[str], exposure: str | None,
                   formula: str | None = None):
        """The spec of ``columns`` of a training table.

        Raises
        ------
        CLIError
            For a missing column or a bad value (named by column and row).
        """
        from posheads.estimators.design import ColumnSchema

        require_columns(frame, list(columns) + ([exposure] if exposure else []))
        try:
            schema = ColumnSchema.from_frame(frame, list(columns))
        except ValueError as exc:
            raise CLIError(one_line(exc)) from exc
        return cls(columns=list(columns), schema=schema.to_dict(), exposure=exposure,
                   formula=formula)

    def design(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns of ``frame``, checked against training.

        Raises
        ------
        CLIError
            For a missing column or a bad value (named by column and row).
        """
        from posheads.estimators.design import ColumnSchema

        require_columns(frame, self.columns + ([self.exposure] if self.exposure else []))
        try:
            ColumnSchema.from_dict(self.schema).check(frame)
        except (ValueError, KeyError, TypeError) as exc:
            raise CLIError(one_line(exc)) from exc
        return frame[self.columns]

    def exposure_of(self, frame: pd.DataFrame):
        """The exposures of ``frame`` as a float64 array, or None without an exposure column."""
        if self.exposure is None:
            return None
        import numpy as np
        import pandas as pd

        t = pd.to_numeric(frame[self.exposure], errors="coerce").to_numpy(np.float64)
        if not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise CLIError(f"exposure column {self.exposure!r} must be positive numbers "
                           "with no missing values")
        return t

    def save(self, folder: Path) -> None:
        """Write the spec to ``folder/features.json``."""
        (folder / "features.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> FeatureSpec:
        """Read the spec that :meth:`save` wrote to ``folder``.

        Raises
        ------
        CLIError
            For a missing, empty or damaged ``features.json`` (naming the file and what is
            wrong), or a spec written before posheads encoded tables inside the estimator.
        """
        path = Path(folder) / "features.json"
        if not path.is_file():
            raise CLIError(f"{folder} is not a model folder (no features.json): write one "
                           "with `posheads fit ... --out DIR`")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CLIError(f"{path} is damaged: not UTF-8 text") from None
        if not text.strip():
            raise CLIError(f"{path} is empty")
        try:
            state = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CLIError(f"{path} is not valid JSON (truncated or damaged?): {exc.msg} "
                           f"at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(state, dict):
            raise CLIError(f"{path} holds a JSON {type(state).__name__}, not an object")
        if "categories" in state:
            raise CLIError(f"{folder} was written by an older posheads (its table encoding "
                           "is no longer read): fit the model again")
        _check_spec_fields(path, state)
        from posheads.estimators.design import ColumnSchema

        try:
            ColumnSchema.from_dict(state["schema"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CLIError(f"{path}: 'schema' is damaged ({one_line(exc)})") from None
        return cls(**state)


def _check_spec_fields(path: Path, state: dict) -> None:
    """A :class:`CLIError` naming ``path`` for a missing, unknown or mistyped field."""
    known = {f.name for f in fields(FeatureSpec)}
    unknown = sorted(set(state) - known)
    if unknown:
        raise CLIError(f"{path} has unknown field(s) {', '.join(map(repr, unknown))}")
    for name in ("columns", "schema"):
        if name not in state:
            raise CLIError(f"{path} lacks the field {name!r}")
    columns = state["columns"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise CLIError(f"{path}: 'columns' must be a list of column names")
    if not isinstance(state["schema"], dict):
        raise CLIError(f"{path}: 'schema' must be an object")
    for name in ("exposure", "formula"):
        if not isinstance(state.get(name), (str, type(None))):
            raise CLIError(f"{path}: {name!r} must be a string or null")
