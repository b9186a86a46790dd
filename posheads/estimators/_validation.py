"""Input checks shared by the estimators: arrays in, clear ``ValueError`` out.

Nothing here modifies what the caller passed: arrays are copied on conversion.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_array

__all__ = [
    "MAX_AMOUNT",
    "MAX_EXACT_COUNT",
    "check_counts",
    "check_exposure",
    "check_not_all_zero",
    "check_sample_weight",
    "check_target_scale",
    "numeric_target",
    "resolve_device",
    "resolve_dtype",
    "to_torch",
    "torch_seed",
]


def resolve_device(device) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else goes to ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}"
        ) from exc


def resolve_dtype(dtype) -> torch.dtype:
    """Map ``"float64"``, ``"float32"``, numpy or torch dtypes to a torch floating dtype."""
    table = {"float64": torch.float64, "float32": torch.float32, "double": torch.float64,
             "float": torch.float32}
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float64):
        return dtype
    key = dtype if isinstance(dtype, str) else getattr(np.dtype(dtype), "name", None)
    if key not in table:
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return table[key]


# Above 2**53 consecutive whole numbers are no longer distinct in float64: a count there
# is not a count any more (and a log-factorial or a log-gamma of it loses every digit).
MAX_EXACT_COUNT = 2.0 ** 53
# Amounts (Gamma, Tweedie) above this are refused: a Tweedie series' number of terms
# grows as y ** (2 - p) and overflows an integer from about 1e80, and float32 designs
# overflow at 3.4e38. 1e30 leaves every unit a user could mean; larger means "rescale".
MAX_AMOUNT = 1e30


def numeric_target(y, name: str = "y"):
    """``y`` as a float64 array, or a ``ValueError`` naming the first value that is not a
    number (a string target such as ``"3"`` or ``"abc"``). ``None`` stays ``None``.

    Numbers held as text (``"3"``, read from a file) are refused too: a target is data
    the caller should have parsed, and guessing would hide a wrong column.

    Returns
    -------
    ndarray or the input
        A new float64 array for string/object input; otherwise ``y`` as given (the
        caller's own checks convert it).
    """
    if y is None or sp.issparse(y):
        return y
    kind = getattr(getattr(y, "dtype", None), "kind", None)
    if kind is None:  # a list: look at what numpy makes of it
        kind = np.asarray(y).dtype.kind
    if kind in "US":
        first = np.asarray(y).ravel()[:1].tolist() or [""]
        raise ValueError(f"{name} holds text ({first[0]!r}, ...): the target must be numbers; "
                         "convert the column first (e.g. pandas.to_numeric)")
    if kind == "O":
        flat = np.asarray(y, dtype=object).ravel()
        for i, v in enumerate(flat):
            if isinstance(v, (str, bytes)) or not isinstance(v, (numbers.Real, type(None))):
                raise ValueError(f"{name} holds {v!r} at position {i}: the target must be "
                                 "numbers")
    return y


def check_target_scale(y: np.ndarray, *, whole: bool, name: str = "y") -> None:
    """Refuse targets too large to compute with.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Finite, float64.
    whole : bool
        The family models whole-number counts: values must stay below ``2**53``, where
        float64 still tells consecutive integers apart.

    Raises
    ------
    ValueError
        Naming the largest value and the limit.
    """
    if y.size == 0:
        return
    top = float(np.max(np.abs(y)))
    limit = MAX_EXACT_COUNT if whole else MAX_AMOUNT
    if top > limit:
        what = "a count" if whole else "an amount"
        raise ValueError(f"{name} holds {top:.4g}, too large for {what} (at most {limit:.4g}): "
                         "rescale the target (e.g. thousands) or check the column")


def check_not_all_zero(y: np.ndarray, sample_weight: np.ndarray) -> None:
    """Refuse a target that is 0 in every row of positive weight.

    The rate's estimate would then be 0, on the boundary where a softplus predictor has no
    finite value: the fit would drift toward ``-inf`` and report nonsense.

    Parameters
    ----------
    y : ndarray of shape (n,)
    sample_weight : ndarray of shape (n,)
    """
    if len(y) and not np.any(np.asarray(y)[np.asarray(sample_weight) > 0]):
        raise ValueError("y is 0 in every row: a count model needs some non-zero "
                         "counts (the rate's estimate would be 0, which no finite "
                         "coefficient reaches); check the target column")


def check_counts(y: np.ndarray, *, integer: bool, name: str = "y", why: str = "") -> np.ndarray:
    """Check a target of counts: finite, non-negative and, where needed, whole numbers.

    Parameters
    ----------
    y : ndarray, shape ``(n_samples,)``
        Already validated as a numeric 1-D array.
    integer : bool
        Whether the likelihood needs whole-number counts.
    why : str
        What needs them, for the error message (default: the likelihood).

    Returns
    -------
    ndarray
        ``y`` itself (never modified).
    """
    if not np.all(np.isfinite(y)):
        raise ValueError(f"Input {name} contains NaN or infinity: counts must be finite.")
    if np.any(y < 0):
        raise ValueError(
            f"Some value(s) of {name} are out of the valid range of the loss: "
            "counts must be >= 0, and there are negative values."
        )
    check_target_scale(y, whole=True, name=name)
    if integer and np.any(y != np.floor(y)):
        raise ValueError(
            f"Some value(s) of {name} are not whole numbers: "
            f"{why or 'this likelihood models counts 0, 1, 2, ...'} (round them, or fit "
            "PoissonSoftplusRegressor with inference='map', which accepts non-negative "
            "real targets as a quasi-likelihood)."
        )
    return y


def check_sample_weight(sample_weight, X, dtype) -> np.ndarray:
    """scikit-learn's weight check plus: weights must be finite and not all zero."""
    if sample_weight is None:  # unit weights: nothing to check
        return np.ones(X.shape[0], dtype=dtype)
    w = _check_sample_weight(sample_weight, X, dtype=dtype, ensure_non_negative=True)
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinity.")
    if not np.any(w > 0):
        raise ValueError("sample_weight must have at least one positive entry.")
    return w


def check_exposure(exposure, n_samples: int, dtype) -> np.ndarray | None:
    """Validate a per-row exposure: 1-D, length ``n_samples``, finite and ``> 0``."""
    if exposure is None:
        return None
    if isinstance(exposure, numbers.Number):
        exposure = np.full(n_samples, float(exposure))
    t = check_array(exposure, ensure_2d=False, dtype=dtype, input_name="exposure",
                    ensure_all_finite=True)
    if t.ndim != 1:
        raise ValueError(f"exposure must be 1-D, got an array of shape {t.shape}.")
    if t.shape[0] != n_samples:
        raise ValueError(
            f"exposure has {t.shape[0]} entries but X has {n_samples} rows: they must match."
        )
    if np.any(t <= 0):
        raise ValueError("exposure must be > 0 for every row (a rate needs a positive time).")
    return t


def to_torch(a, *, device: torch.device, dtype: torch.dtype, share: bool = False):
    """A numpy array or scipy sparse matrix as a torch tensor (sparse stays sparse: CSR).

    A dense array is copied unless ``share``: then a writeable CPU array already of
    ``dtype`` is used in place (posheads never writes into it): for a large design the
    copy would take about as long as the fit itself.
    """
    if a is None:
        return None
    if sp.issparse(a):
        csr = sp.csr_matrix(a)
        with warnings.catch_warnings():
            # torch's notes that sparse CSR is "in beta" and that its invariant checks are
            # off: scipy's CSR is valid by construction, and the user can do nothing
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
            return torch.sparse_csr_tensor(
                torch.as_tensor(csr.indptr, dtype=torch.int64),
                torch.as_tensor(csr.indices, dtype=torch.int64),
                torch.as_tensor(csr.data, dtype=dtype),
                size=csr.shape,
            ).to(device)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    if (share and torch.device(device).type == "cpu" and isinstance(a, np.ndarray)
            and a.dtype == np_dtype and a.flags.writeable and min(a.strides, default=0) >= 0):
        return torch.from_numpy(a)
    return torch.as_tensor(np.array(a, dtype=np_dtype, copy=True), device=device)


def torch_seed(random_state) -> int | None:
    """A torch seed from a scikit-learn ``random_state`` (None stays None: fresh entropy)."""
    if random_state is None:
        return None
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
