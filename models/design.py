"""Design matrices, dense or torch-sparse, and the products a Newton solver needs.

:class:`Design` wraps an ``(n, p)`` matrix ``X`` and computes ``X @ v``, ``X.T @ u`` and
weighted Gram matrices ``A.T @ diag(h) @ B`` without densifying a sparse ``X``: a sparse
matrix is kept in CSR form together with its transpose (also CSR, so that ``X.T @ u`` is
a row-wise product), and ``diag(h) @ X`` scales the stored values of each row.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["Design", "as_design", "is_sparse"]

_SPARSE = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr,
           torch.sparse_bsc)


# Below this many entries a Gram product is too small for syrk's saving to pay for the
# round trip through NumPy and its thread pool.
_SYRK_ENTRIES = 2**18


def is_sparse(X: torch.Tensor) -> bool:
    """Whether ``X`` has one of torch's sparse layouts."""
    return X.layout in _SPARSE


def _csr(X: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        # torch flags CSR support as beta on every conversion; it is what we want here.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        if X.layout == torch.sparse_coo:
            X = X.coalesce()
        return X.to_sparse_csr()


class Design:
    """An ``(n, p)`` design matrix with matrix-vector and weighted Gram products.

    Parameters
    ----------
    X : Tensor, shape ``(n, p)``
        Dense (strided) or sparse (COO, CSR, CSC). Not copied when dense.

    Examples
    --------
    >>> D = Design(torch.eye(3, dtype=torch.float64))
    >>> D.gram(torch.ones(3, dtype=torch.float64))[0]
    tensor([[1., 0., 0.],
            [0., 1., 0.],
            [0., 0., 1.]], dtype=torch.float64)
    """

    def __init__(self, X: torch.Tensor):
        if X.dim() != 2:
            raise ValueError(f"X must be 2-dimensional, got shape {tuple(X.shape)}")
        self.shape = X.shape
        self.dtype, self.device = X.dtype, X.device
        self.sparse = is_sparse(X)
        if self.sparse:
            self.X = _csr(X)
            counts = self.X.crow_indices().diff()
            self._rows = torch.repeat_interleave(
                torch.arange(X.shape[0], device=X.device), counts)
        else:
            self.X = X
            # A small dense X is also kept transposed (made on first use): products
            # then run along contiguous rows of X.T, the fastest layout for tiny kernels.
            self.small = X.shape[0] * X.shape[1] < _SYRK_ENTRIES

    @property
    def Xt(self):
        """``X.T`` as a contiguous tensor (CSR when sparse); None for a large dense X."""
        if "_Xt" not in self.__dict__:
            self._Xt = (self.X.t().contiguous() if self.small else None) if not self.sparse \
                else _csr(self.X.t())
        return self._Xt

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``X @ v``, shape ``(n,)``."""
        return self.X @ v

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        """``X.T @ u``, shape ``(p,)``."""
        if self.Xt is not None:
            return self.Xt @ u
        return torch.mv(self.X.t(), u)

    def scaled_rows(self, h: torch.Tensor) -> torch.Tensor:
        """``diag(h) @ X``, sparse when ``X`` is."""
        if not self.sparse:
            return self.X * h[:, None]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                self.X.crow_indices(), self.X.col_indices(), self.X.values() * h[self._rows],
                size=self.shape, check_invariants=False)  # the indices are X's own

    def gram(self, h: torch.Tensor, other: Design | None = None, nonnegative: bool = False,
             single: bool = False, border: bool = True):
        """``X.T @ diag(h) @ B`` as a dense ``(p, q)`` tensor, and ``B.T @ h``.

        Parameters
        ----------
        h : Tensor, shape ``(n,)``
            Row weights.
        other : Design, optional
            Right factor ``B`` with ``n`` rows; defaults to ``X`` itself.
        nonnegative : bool
            The caller knows ``h >= 0`` (a convex loss): a dense CPU ``X.T diag(h) X`` is
            then computed as ``A.T @ A`` with ``A = sqrt(h) X``, which NumPy hands to
            BLAS ``syrk`` (half the flops of a general product), when ``X`` is large.
        single : bool
            For a float64 ``X`` that is large (with ``nonnegative``) or small (kept
            transposed), compute in float32 (two to three times the speed) and return
            float64: for a Hessian that may be approximate.
        border : bool
            Also compute ``B.T @ h``; else the second item may be None (a design with
            its column of ones has that border in the Gram matrix already).

        Returns
        -------
        (Tensor of shape (p, q), Tensor of shape (q,) or None)
            The weighted Gram matrix and ``B.T @ h`` (the border an intercept adds).
        """
        other = self if other is None else other
        if not self.sparse and not other.sparse:
            if other is self and nonnegative and self.device.type == "cpu" \
                    and self.dtype in (torch.float32, torch.float64) \
                    and self.shape[0] * self.shape[1] >= _SYRK_ENTRIES:
                # h >= 0 in exact arithmetic; the clamp only removes a rounding-level
                # negative before the square root.
                root = h.clamp(min=0.0).sqrt()
                if single and self.dtype == torch.float64:
                    if "_X32" not in self.__dict__:  # kept: made once, not every step
                        self._X32 = self.X.to(torch.float32, memory_format=torch.contiguous_format)
                    root = root.to(torch.float32)
                    A = torch.mul(self._X32, root[:, None], out=self._workspace(torch.float32))
                else:
                    A = torch.mul(self.X, root[:, None], out=self._workspace())
                An = A.numpy()
                gram = torch.from_numpy(An.T @ An).to(self.dtype)
                return gram, torch.mv(A.t(), root).to(self.dtype) if border else None
            if self.Xt is not None and other.Xt is not None:
                if single and self.dtype == torch.float64:
                    Xt, Wt = self._single_t(), other._single_t()
                    Wt = torch.mul(Wt, h.to(torch.float32),
                                   out=other._workspace(torch.float32, transposed=True))
                    return (torch.mm(Xt, Wt.t()).to(self.dtype),
                            Wt.sum(1).to(self.dtype) if border else None)
                Wt = torch.mul(other.Xt, h, out=other._workspace(transposed=True))
                return torch.mm(self.Xt, Wt.t()), Wt.sum(1) if border else None
            W = torch.mul(other.X, h[:, None], out=other._workspace())
            return torch.mm(self.X.t(), W), W.sum(0)
        border = other.rmatvec(h)
        if self.sparse and other.sparse:
            return (self.Xt @ other.scaled_rows(h)).to_dense(), border
        if self.sparse:  # sparse X.T times a dense, row-scaled B
            return self.Xt @ (other.X * h[:, None]), border
        return (other.Xt @ self.scaled_rows(h)).t(), border

    def _single_t(self) -> torch.Tensor:
        """``X.T`` in float32, made once (for approximate Gram products of a small X)."""
        if "_Xt32" not in self.__dict__:
            self._Xt32 = self.Xt.to(torch.float32)
        return self._Xt32

    def _workspace(self, dtype: torch.dtype | None = None, transposed=False) -> torch.Tensor:
        """A buffer shaped like ``X`` (or ``X.T``), allocated once per dtype: row-scaled
        copies of ``X`` go there (a fresh allocation costs page faults on every step)."""
        dtype = self.dtype if dtype is None else dtype
        buffers = self.__dict__.setdefault("_buffers", {})
        if (dtype, transposed) not in buffers:
            shape = self.shape[::-1] if transposed else self.shape
            buffers[dtype, transposed] = torch.empty(shape, dtype=dtype, device=self.device)
        return buffers[dtype, transposed]

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The rows ``X[index]`` as a tensor of the same kind (sparse stays sparse)."""
        if not self.sparse:
            return self.X.index_select(0, index)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return self.X.to_sparse_coo().index_select(0, index).coalesce()


def as_design(X: torch.Tensor | Design) -> Design:
    """``X`` itself when it is a :class:`Design`, else ``Design(X)``."""
    return X if isinstance(X, Design) else Design(X)
