"""A damped Newton solver with Armijo backtracking, in the style of scikit-learn's.

:class:`NewtonSolver` follows ``sklearn/linear_model/_glm/_newton_solver.py``: one
object walks ``setup -> gradient -> convergence check -> Hessian -> Newton direction ->
line search`` until the gradient is small, then ``finalize`` reports the result and
warns with :class:`sklearn.exceptions.ConvergenceWarning` when it is not converged (it
never silently returns a start value). It knows nothing of GLMs: it drives any *loss*
with the methods of :class:`posheads.models.glm_loss.GLMLoss`::

    predictors(theta, start=False) -> P   linear in theta: P(theta + a d) = P + a P(d)
    step(P, dP, a)    -> P'       the predictors at theta + a d
    value(theta, P)   -> float    objective (NaN when not finite)
    gradient(theta, P), hessian(theta, P, exact=bool)

The engines that run it (:func:`posheads.inference.map.newton_mode`) also read
``log_joint(theta, P)`` (the model's log joint, reusing ``P``) and, if present,
``inference_mode_safe`` (the solver may run without autograd bookkeeping). The method is derived
in ``docs/inference.md``, "The Newton solver".
"""

from __future__ import annotations

import math
import warnings

import torch
from sklearn.exceptions import ConvergenceWarning

from .checks import user_stacklevel

__all__ = ["NewtonSolver"]


class NewtonSolver:
    """Minimise a smooth objective by Newton steps with an Armijo line search.

    Parameters
    ----------
    loss : object
        See the module docstring.
    tol : float
        Converged when ``max |gradient| <= tol`` (the objective is per unit weight, as in
        scikit-learn, so ``tol`` is scale-free). Raised to a few ulps of the dtype, the
        most a gradient can be resolved to.
    max_iter : int
        Maximum number of Newton steps.
    verbose : int
        Print one line per iteration when > 0.

    Attributes
    ----------
    theta : Tensor, shape ``(d,)``
        Current (after :meth:`solve`, final) point.
    converged : bool
    n_iter : int
        Newton steps taken.
    """

    # Armijo's sufficient-decrease constant and the backtracking schedule (Nocedal &
    # Wright, Numerical Optimization, 2nd ed., section 3.1: c1 = 1e-4, halving).
    armijo = 1e-4
    max_backtracks = 30
    exact_after = 6
    slow_rate = 0.25
    # A full step is refined (see _refine) when the quadratic model's best step differs
    # from 1 by more than `refine_skip`; the refined step is kept within `refine_range`.
    refine_skip = 0.1
    refine_range = (0.1, 2.0)

    def __init__(self, loss, *, tol=1e-8, max_iter=100, verbose=0):
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        self.loss, self.max_iter, self.verbose = loss, max_iter, verbose
        self.tol = tol

    # ------------------------------------------------------------ steps
    def setup(self, theta0: torch.Tensor) -> None:
        """Start at ``theta0``; fail loudly if the objective is not finite there."""
        self.theta = theta0.detach().clone()
        self.eps = torch.finfo(self.theta.dtype).eps
        self.tol_eff = max(self.tol, 16 * self.eps)
        self.P = self.loss.predictors(self.theta, start=True)
        self.f = self.loss.value(self.theta, self.P)
        if not math.isfinite(self.f):
            raise ValueError("the objective is not finite at the starting point")
        self.converged, self.n_iter, self.message = False, 0, ""
        self.exact, self.g_max = False, math.inf

    def update_gradient(self) -> None:
        self.g_prev = self.g_max
        self.g = self.loss.gradient(self.theta, self.P)
        self.g_max = float(torch.linalg.vector_norm(self.g, math.inf)) if self.g.numel() else 0.0

    def check_convergence(self) -> bool:
        if not math.isfinite(self.g_max):
            self.message = "the gradient is not finite"
            return False
        self.converged = self.g_max <= self.tol_eff
        return self.converged

    def update_hessian(self) -> None:
        # A loss may approximate the Hessian (a row subset), which makes the convergence
        # linear with a rate near the relative error of the approximation (a few %). When
        # a step past the first two cuts the gradient by less than `slow_rate`, or after
        # `exact_after` steps, the exact Hessian is asked for from then on.
        if self.n_iter > self.exact_after or (
                self.n_iter > 2 and self.g_max > self.slow_rate * self.g_prev):
            self.exact = True
        self.H = self.loss.hessian(self.theta, self.P, exact=self.exact)

    def newton_direction(self) -> None:
        """Solve ``H d = -g`` by Cholesky; add ``lambda I`` while ``H`` is not positive definite."""
        H, g = self.H, self.g
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) != 0:
            # Levenberg-Marquardt damping: a non-convex region (NB, zero inflation) or a
            # singular Hessian (collinear columns under a flat prior). Start at a relative
            # size the dtype can resolve and grow tenfold until H + lambda I factorizes.
            scale = float(H.diagonal().abs().max()) if H.numel() else 1.0
            lam = max(scale, 1.0) * math.sqrt(self.eps)
            eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
            for _ in range(40):
                L, info = torch.linalg.cholesky_ex(H + lam * eye)
                if int(info) == 0:
                    break
                lam *= 10.0
        if int(info) != 0:  # not even damping helps (non-finite H): steepest descent
            self.d = -g
        else:
            self.d = torch.cholesky_solve(-g[:, None], L)[:, 0]
        self.slope = float(torch.dot(g, self.d))
        if not self.slope < 0:
            self.d, self.slope = -g, -float(torch.dot(g, g))

    def line_search(self) -> bool:
        """Backtrack from the full step until Armijo's condition holds; False on failure."""
        loss, f, slope = self.loss, self.f, self.slope
        dP = loss.predictors(self.d)
        # Below this the decrease the model predicts is round-off in f: near the optimum
        # a full Newton step is then taken if it does not raise f beyond round-off.
        noise = 64 * self.eps * max(abs(f), 1.0)
        a = 1.0
        for _ in range(self.max_backtracks):
            theta = torch.add(self.theta, self.d, alpha=a)
            P = loss.step(self.P, dP, a)
            f_new = loss.value(theta, P)
            if math.isfinite(f_new) and (
                f_new <= f + self.armijo * a * slope
                or (-slope <= noise and f_new <= f + noise)
            ):
                if a == 1.0 and -slope > noise:
                    theta, P, f_new, a = self._refine(theta, P, f_new, dP)
                self.theta, self.P, self.f_prev, self.f = theta, P, f, f_new
                self.step_size = a
                return True
            a *= 0.5
        self.message = "the line search could not decrease the objective"
        return False

    def _refine(self, theta, P, f_new, dP):
        """Try the minimum of the quadratic through ``f(0)``, ``f'(0)`` and ``f(1)``.

        In the quadratic regime it is ``a = 1``. Far from the optimum a Newton step
        often overshoots (or stops short of) the minimum along its direction; one more
        value there costs a pass over the predictors, not a Hessian, and moving to it
        can save whole iterations.
        """
        curvature = f_new - self.f - self.slope
        if not curvature > 0:
            return theta, P, f_new, 1.0
        a = min(max(-self.slope / (2.0 * curvature), self.refine_range[0]),
                self.refine_range[1])
        if abs(a - 1.0) <= self.refine_skip:
            return theta, P, f_new, 1.0
        theta_a = torch.add(self.theta, self.d, alpha=a)
        P_a = self.loss.step(self.P, dP, a)
        f_a = self.loss.value(theta_a, P_a)
        if math.isfinite(f_a) and f_a < f_new:
            return theta_a, P_a, f_a, a
        return theta, P, f_new, 1.0

    def finalize(self) -> torch.Tensor:
        if not self.converged:
            detail = f" ({self.message})" if self.message else ""
            warnings.warn(
                f"Newton solver did not converge in {self.n_iter} iteration(s){detail}: "
                f"max |gradient| = {self.g_max:.3g} > tol = {self.tol_eff:.3g}. Increase "
                "max_iter, or check the data and the priors.",
                ConvergenceWarning, stacklevel=user_stacklevel())
        return self.theta

    # ------------------------------------------------------------ driver
    def solve(self, theta0: torch.Tensor) -> torch.Tensor:
        """Run Newton's method from ``theta0`` and return the final ``theta``."""
        self.setup(theta0)
        self.update_gradient()
        self._report()
        self.check_convergence()
        while not self.converged and self.n_iter < self.max_iter:
            self.update_hessian()
            self.newton_direction()
            if not self.line_search():
                break
            self.n_iter += 1
            self.update_gradient()
            self._report()
            if not self.check_convergence() and self.g_max < 1e3 * self.tol_eff:
                self._stalled()
        return self.finalize()

    def _stalled(self) -> bool:
        """A step that changes neither theta nor f beyond round-off: converged to precision."""
        step = self.step_size * float(self.d.abs().max()) if self.d.numel() else 0.0
        size = float(self.theta.abs().max()) if self.theta.numel() else 0.0
        if step <= 4 * self.eps * max(size, 1.0) and abs(self.f - self.f_prev) <= (
                4 * self.eps * max(abs(self.f), 1.0)):
            self.converged = True
            self.message = "stopped at working precision"
        return self.converged

    def _report(self) -> None:
        if self.verbose > 0:
            print(f"Newton iter {self.n_iter:3d}  f = {self.f:.12g}  "
                  f"max|grad| = {self.g_max:.3g}")
