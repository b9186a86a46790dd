"""Covariance matrices of a MAP fit: model-based, heteroscedasticity- and cluster-robust.

Everything is computed on the flat unconstrained vector ``theta`` of the model's
``layout`` (shapes as ``u`` with ``r = softplus(u)``), from two ingredients at the mode:

* the Hessian ``H`` of the negative log posterior (no log-Jacobian), the one the Newton
  solver and the Laplace approximation use: with ``alpha=0`` and flat priors it is the
  observed information, otherwise the *penalised* information;
* the per-row scores ``s_i = d l_i / d theta`` (unweighted): the family's per-row
  first derivatives in each linear predictor and shape
  (:class:`~posheads.families.RowTerms`) times the row of the design.

The sandwich is ``H^-1 M H^-1`` with ``M = sum_i w_i s_i s_i^T`` (``HC0``) or its cluster
sums; row weights count as frequencies (a weight of 2 is a repeated row).
:func:`natural_scale` maps estimates to the natural scale (a shape's covariance then
follows by the delta method, ``dr/du = sigmoid(u)``). The derivations are in
``docs/inference.md``, "Inference tables of MAP fits".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "KINDS",
    "Block",
    "MapFit",
    "feature_names",
    "map_fit",
    "natural_scale",
    "parameter_blocks",
    "parameter_labels",
    "predictors_of",
    "theta_covariance",
]

KINDS = ("model", "HC0", "HC1", "HC3", "cluster")
_SHAPES = ("joint", "fixed")
# rows of the per-row score matrix made at once: chunk * d entries per block stay small
_CHUNK_ENTRIES = 2**20


@dataclass(frozen=True)
class Block:
    """One site of ``theta``: where it sits and how each row's score reaches it.

    Attributes
    ----------
    site : str
        The site's name in the model's ``layout``.
    key : str
        The per-row quantity it acts through: ``"eta"``, a part's name, or a shape's name.
    design : {"ones", "X", "Z"}
        Its column(s) of the row's design: an intercept or shape (ones), the count
        part's coefficients (``X``) or a part's coefficients (``X_zero``).
    index : slice
        Its coordinates in ``theta``.
    labels : tuple of str
        One label per coordinate, as in ``summary()``.
    shape : bool
        Whether it is a shape (reported on the natural scale, fixed with
        ``shapes="fixed"``).
    variables : tuple of str
        For coefficients, the name of each one's column (the same variable may have a
        coefficient in the count part and in a zero part); empty otherwise.
    """

    site: str
    key: str
    design: str
    index: slice
    labels: tuple
    shape: bool = False
    variables: tuple = ()


@dataclass
class MapFit:
    """What the tables need of a MAP fit: model, training data, mode and layout."""

    model: object
    data: object
    theta: torch.Tensor
    layout: list
    blocks: list

    @property
    def labels(self) -> list:
        return [label for b in self.blocks for label in b.labels]

    @property
    def shape_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.theta.numel(), dtype=torch.bool, device=self.theta.device)
        for b in self.blocks:
            if b.shape:
                mask[b.index] = True
        return mask

    @property
    def weights(self) -> torch.Tensor:
        w = self.data.weights
        return torch.ones_like(self.data.y) if w is None else w

    @property
    def n_obs(self) -> float:
        """The number of observations: the sum of the (frequency) weights."""
        w = self.data.weights
        return float(self.data.n) if w is None else float(w.sum())


def feature_names(est) -> tuple:
    """The names of a fitted estimator's coefficients: of the count part and of the zero
    part (``coef_names_``, ``zero_coef_names_`` where the estimator has them, else
    ``feature_names_in_`` or ``x0, x1, ...``; ``None`` for the zero part when it reads
    the same design)."""
    names = getattr(est, "coef_names_", None)
    if names is None:
        names = getattr(est, "feature_names_in_", None)
    if names is None:
        names = [f"x{j}" for j in range(est.n_features_in_)]
    zero = getattr(est, "zero_coef_names_", None)
    return [str(n) for n in names], None if zero is None else [str(n) for n in zero]


def _blocks(model, layout, names, q) -> list:
    """The :class:`Block` of every site of ``layout``, in its order."""
    family = model.family
    names, zero_names = names
    if zero_names is None or len(zero_names) != q:
        zero_names = names if q == len(names) else [f"z{j}" for j in range(q)]
    roles = {"intercept": ("eta", "ones", ("intercept",), ()),
             "coef": ("eta", "X", tuple(names), tuple(names))}
    for s in family.shape_names:
        roles[s] = (s, "ones", (s,), ())
    for p in family.part_names:
        roles[f"{p}_intercept"] = (p, "ones", (f"{p}_intercept",), ())
        roles[f"{p}_coef"] = (p, "Z", tuple(f"{p}:{n}" for n in zero_names),
                              tuple(zero_names))
    out, i = [], 0
    shapes = set(family.shape_names)
    for site, size in layout:
        k = size.numel()
        key, design, labels, variables = roles[site]
        out.append(Block(site, key, design, slice(i, i + k), labels, site in shapes,
                         variables))
        i += k
    return out


def _training_data(est, what):
    post = est.posterior_
    if post.data is None:
        raise ValueError(f"this fit was loaded without its training data, so {what} "
                         "cannot be computed; refit to get it")
    return post.model, post.data


def _layout_blocks(est, model, data):
    layout = model.layout(data.X, data.X_zero)
    q = (data.X if data.X_zero is None else data.X_zero).shape[1]
    return layout, _blocks(model, layout, feature_names(est), q)


def map_fit(est, what: str = "this table") -> MapFit:
    """The :class:`MapFit` of a fitted estimator.

    Raises
    ------
    ValueError
        For a fit by a Bayesian engine (its draws are its uncertainty) or a fit loaded
        without its training data.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    post = est.posterior_
    if post.method != "map" or "theta" not in post.extra:
        raise ValueError(f"{what} needs a MAP fit (inference='map'), got a "
                         f"{post.method!r} fit; its posterior draws give the uncertainty "
                         "of a Bayesian fit (summary())")
    model, data = _training_data(est, what)
    layout, blocks = _layout_blocks(est, model, data)
    return MapFit(model, data, post.extra["theta"].detach(), layout, blocks)


def parameter_blocks(est) -> list:
    """The :class:`Block` of every site of a fitted estimator (any engine), in the order
    of the model's ``layout``."""
    model, data = _training_data(est, "summary()")
    return _layout_blocks(est, model, data)[1]


def parameter_labels(est) -> list:
    """The label of every coordinate of ``theta`` (the rows of ``summary()``)."""
    return [label for b in parameter_blocks(est) for label in b.labels]


# ----------------------------------------------------------------- per-row terms
def predictors_of(model, values: dict, data) -> tuple:
    """The model's linear predictors on ``data`` (its offset, where it has one, included)."""
    offset = getattr(data, "offset", None)
    if offset is None:
        return model.predictors(values, data.X, data.X_zero)
    return model.predictors(values, data.X, data.X_zero, offset)


def _rows_of(fit: MapFit, need_curvature: bool):
    """Unweighted per-row first derivatives ``{key: (n,)}`` and, when asked, negated
    second derivatives ``{(key, key): (n,)}`` at the mode."""
    model, data = fit.model, fit.data
    rows = model.family.rows(data.y, data.exposure, None, beta=model.beta,
                             threshold=model.threshold)
    values = model.unpack(fit.theta, fit.layout)
    eta, parts = predictors_of(model, values, data)
    raw = model.split(fit.theta, fit.layout)
    u = {s: raw[s].reshape(()) for s in model.family.shape_names}
    P = {"eta": eta, **parts}
    first = rows.gradient(P, u)
    return first, rows.curvature(P, u) if need_curvature else None


def _row_designs(fit: MapFit, start: int, stop: int, keep: torch.Tensor) -> dict:
    """Per key, the rows ``start:stop`` of its design placed in the kept coordinates of
    ``theta``: ``{key: (rows, len(keep))}``, so a row's score is ``sum_k a_k D_k``."""
    data, theta = fit.data, fit.theta
    m = stop - start
    designs = {}
    for b in fit.blocks:
        D = designs.get(b.key)
        if D is None:
            D = designs[b.key] = torch.zeros(m, theta.numel(), dtype=theta.dtype,
                                             device=theta.device)
        if b.design == "ones":
            D[:, b.index] = 1.0
        else:
            M = data.X if b.design == "X" or data.X_zero is None else data.X_zero
            D[:, b.index] = _dense_rows(M, start, stop)
    return {k: D[:, keep] for k, D in designs.items()}


def _dense_rows(M: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    if M.layout == torch.strided:
        return M[start:stop]
    from posheads.models.design import Design

    index = torch.arange(start, stop, device=M.device)
    return Design(M).rows(index).to_dense()


def _meat(fit, kind, keep, bread, group_index, n_groups):
    """``sum_i w_i s_i s_i^T`` (HC0/HC1), with ``1 / (1 - h_i)^2`` (HC3), or the sum over
    clusters of ``(sum_{i in g} w_i s_i)(...)^T``; only the kept coordinates."""
    first, curv = _rows_of(fit, need_curvature=kind == "HC3")
    w = fit.weights
    d, n = int(keep.numel()), fit.data.n
    like = fit.theta
    meat = torch.zeros(d, d, dtype=like.dtype, device=like.device)
    sums = None if kind != "cluster" else torch.zeros(n_groups, d, dtype=like.dtype,
                                                      device=like.device)
    step = max(1, _CHUNK_ENTRIES // max(fit.theta.numel(), 1))
    for start in range(0, n, step):
        stop = min(start + step, n)
        D = _row_designs(fit, start, stop, keep)
        S = sum(first[k][start:stop, None] * D[k] for k in D if k in first)
        wc = w[start:stop]
        if kind == "cluster":
            sums.index_add_(0, group_index[start:stop], S * wc[:, None])
            continue
        if kind == "HC3":
            lev = _leverage(D, curv, bread, start, stop)
            if bool((lev[wc > 0] >= 1.0).any()):
                raise ValueError("a row has leverage 1 (it alone determines a parameter), "
                                 "so HC3 is undefined; use kind='HC0' or 'HC1'")
            wc = wc / (1.0 - lev) ** 2
        meat += S.t() @ (S * wc[:, None])
    return meat if sums is None else sums.t() @ sums


def _leverage(D, curv, bread, start, stop):
    """``h_i = tr(H_i H^-1)`` per row: ``H_i`` row ``i``'s (unweighted) information.

    For a one-predictor GLM this is the hat value ``c_i x_i^T H^-1 x_i`` with the
    observed-information weight ``c_i``; the weighted ``h_i`` sum to ``tr(H_lik H^-1)``
    (the number of parameters when nothing is penalised).
    """
    out = 0.0
    projected = {k: Dk @ bread for k, Dk in D.items()}
    for (ki, kj), h in curv.items():
        if ki not in D or kj not in D:
            continue
        q = (projected[ki] * D[kj]).sum(dim=1)
        out = out + (1.0 if ki == kj else 2.0) * h[start:stop] * q
    return out


def _group_index(groups, n: int, device):
    """Integer codes ``(n,)`` of ``groups`` and their number; ValueError on bad input."""
    import pandas as pd

    if groups is None:
        raise ValueError("kind='cluster' needs groups: one cluster label per training row")
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"groups must have one label per training row, shape ({n},), "
                         f"got shape {labels.shape}")
    codes, uniques = pd.factorize(labels)
    if (codes < 0).any():
        raise ValueError("groups contains missing values (NaN or None)")
    if len(uniques) < 2:
        raise ValueError(f"kind='cluster' needs at least 2 clusters, got {len(uniques)}")
    return torch.as_tensor(codes, dtype=torch.long, device=device), len(uniques)


def theta_covariance(fit: MapFit, kind: str = "model", groups=None, shapes: str = "joint"):
    """Covariance of the mode on the unconstrained ``theta`` scale.

    Parameters
    ----------
    fit : MapFit
    kind : {"model", "HC0", "HC1", "HC3", "cluster"}
    groups : array-like of shape (n_samples,), optional
        Cluster labels (``kind="cluster"`` only).
    shapes : {"joint", "fixed"}
        ``"joint"``: every parameter, the shapes estimated with the rest; ``"fixed"``:
        the shapes treated as known (their rows and columns left out of the Hessian
        and the scores), as a GLM with a fixed dispersion.

    Returns
    -------
    (Tensor of shape (k, k), Tensor of shape (k,))
        The covariance and the coordinates of ``theta`` it covers.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if shapes not in _SHAPES:
        raise ValueError(f"shapes must be one of {_SHAPES}, got {shapes!r}")
    if groups is not None and kind != "cluster":
        raise ValueError(f"groups is only used with kind='cluster', got kind={kind!r}")
    group_index, n_groups = (None, 0)
    if kind == "cluster":
        group_index, n_groups = _group_index(groups, fit.data.n, fit.theta.device)
    all_ = torch.arange(fit.theta.numel(), device=fit.theta.device)
    keep = all_ if shapes == "joint" else all_[~fit.shape_mask]
    target = fit.model.target(fit.data, validate=False)
    H = target.hessian(fit.theta, jacobian=False)[keep][:, keep]
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0 or not bool(torch.isfinite(L).all()):
        raise ValueError("the Hessian at the mode is not positive definite (collinear "
                         "columns, or a direction the data do not determine): no covariance")
    bread = torch.cholesky_inverse(L)
    if kind == "model":
        return bread, keep
    meat = _meat(fit, kind, keep, bread, group_index, n_groups)
    cov = bread @ meat @ bread
    n, k = fit.n_obs, int(keep.numel())
    if kind in ("HC1", "cluster") and n <= k:
        raise ValueError(f"kind={kind!r} needs more observations ({n:g}) than parameters "
                         f"({k})")
    if kind == "HC1":
        cov = cov * (n / (n - k))
    elif kind == "cluster":
        cov = cov * (n_groups / (n_groups - 1.0) * (n - 1.0) / (n - k))
    return 0.5 * (cov + cov.t()), keep


def natural_scale(fit: MapFit):
    """Estimates on the natural scale and ``d natural / d theta`` (a diagonal), ``(d,)``.

    Each natural coordinate depends on its own coordinate of ``theta`` only (a shape
    through ``r = softplus(u)``, the rest unchanged), so the gradient of their sum is the
    diagonal of the Jacobian.
    """
    with torch.enable_grad():
        theta = fit.theta.clone().requires_grad_(True)
        values = fit.model.unpack(theta, fit.layout)
        flat = torch.cat([values[name].reshape(-1) for name, _ in fit.layout])
        (diag,) = torch.autograd.grad(flat.sum(), theta)
    return flat.detach(), diag.detach()
