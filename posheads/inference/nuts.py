"""NUTS started at the mode with the Laplace covariance as its metric: :class:`NUTS` and
:func:`fit_nuts`.

What posheads adds to NUTS is the geometry it is run in (``docs/inference.md``, "NUTS in
the Laplace metric"):

1. the mode ``theta_hat`` of the density of ``theta`` and the Laplace covariance
   ``H^{-1}`` (:func:`~posheads.inference.map.find_mode` and
   :meth:`~posheads.models.target.Target.hessian`);
2. the whitening ``theta = theta_hat + L z`` with ``L L^T = H^{-1}`` (dense, or its
   diagonal), so NUTS samples ``z`` from a posterior close to a standard normal: step
   sizes near 1, short trees, no mass-matrix warm-up windows;
3. a potential built on the target's ``potential_and_grad`` (closed-form for a
   SoftplusGLM) instead of a trace-based one.

Without mass-matrix adaptation (the default with ``init="map"``), or with a diagonal one
(Stan's windows), the chain is run by posheads' own sampler
(:func:`~posheads.inference.nuts_sampler.sample_chain`: one call of the potential and a
few vector operations per leapfrog step); with a dense one, by Pyro's
:class:`~pyro.infer.NUTS` and :class:`~pyro.infer.MCMC`, the potential handed to Pyro as
one autograd node (:class:`~posheads.inference.whitening.whitened_potential`).

Chains run one after the other, each from its own seed and its own starting point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from posheads.models.protocol import as_model
from posheads.posterior import Posterior

from .common import check_int, check_real, child_seeds, intra_op_threads, seeded
from .map import find_mode
from .nuts_sampler import sample_chain
from .whitening import Whitening, covariance_from_hessian, whitened_potential

__all__ = ["NUTS", "fit_nuts", "laplace_metric", "single_precision_potential",
           "whitened_evaluate"]

_INITS = ("map", "uniform", "median")
_PRECISIONS = ("auto", "double", "single")
# Designs with at least this many entries get the float32 data pass under "auto": below
# it a potential's cost is mostly fixed per call and float32 saves little.
_SINGLE_ENTRIES = 2**19


def laplace_metric(target) -> tuple[torch.Tensor, torch.Tensor]:
    """The mode of the density of ``theta`` and the inverse Hessian there.

    Returns
    -------
    (Tensor, Tensor)
        ``theta_hat`` of shape ``(d,)`` and the covariance of shape ``(d, d)``; a diagonal
        one, with a ``RuntimeWarning``, where the Hessian is not positive definite.
    """
    mode = find_mode(target, jacobian=True)
    hessian = target.hessian(mode.theta, jacobian=True)
    return mode.theta, covariance_from_hessian(hessian).detach()


class _Recorder:
    """MCMC hook: per-draw statistics and the progress bar."""

    def __init__(self, potential: whitened_potential, num_samples: int, pbar):
        self.potential, self.pbar = potential, pbar
        self.calls = self.divergences = 0
        self.diverging = torch.zeros(num_samples, dtype=torch.bool)
        self.n_steps = torch.zeros(num_samples, dtype=torch.long)
        self.step_size = torch.zeros(num_samples, dtype=torch.float64)
        self.accept = torch.zeros(num_samples, dtype=torch.float64)
        self.lp = torch.zeros(num_samples, dtype=torch.float64)
        self._mean_accept = 0.0

    def __call__(self, kernel, params, stage: str, i: int) -> None:
        steps, self.calls = self.potential.calls - self.calls, self.potential.calls
        if stage.startswith("Sample"):
            # One potential evaluation per leapfrog step (Pyro caches the current one).
            self.n_steps[i] = steps
            self.step_size[i] = float(kernel.step_size)
            # Pyro keeps a running mean of the acceptance statistic over the draws;
            # undo the running mean to get this draw's value.
            mean = float(getattr(kernel, "_mean_accept_prob", float("nan")))
            self.accept[i] = (i + 1) * mean - i * self._mean_accept
            self._mean_accept = mean
            self.lp[i] = -float(getattr(kernel, "_potential_energy_last", float("nan")))
            # The kernel lists the draws (after warm-up) whose trajectory diverged.
            divergences = len(kernel.diagnostics()["divergences"])
            self.diverging[i] = divergences > self.divergences
            self.divergences = divergences
        self.pbar.update(1)
        if i % 25 == 0:
            self.pbar.set_postfix_str(f"{stage.lower()}, step size {kernel.step_size:.3g}",
                                      refresh=False)


@dataclass(frozen=True)
class NUTS:
    """Configuration of the NUTS engine.

    Parameters
    ----------
    num_samples, num_warmup : int
        Draws kept, and warm-up iterations (step-size adaptation), per chain.
    num_chains : int
        Chains, run one after the other.
    dense_mass : bool
        Whiten with the full Cholesky factor of the Laplace covariance (``True``) or only
        its diagonal; with mass adaptation on, adapt a dense or a diagonal matrix.
    target_accept_prob : float
        Target of the step-size adaptation, in (0, 1).
    max_tree_depth : int
        Largest number of trajectory doublings.
    init : {"map", "uniform", "median"}
        ``"map"``: whiten with the Laplace approximation and start each chain at a draw
        from it, ``theta_hat + L z0`` with ``z0 ~ N(0, I)``. ``"uniform"``: plain NUTS,
        each chain starting at a uniform draw from ``[-2, 2]^d`` in unconstrained space
        (Pyro's ``init_to_uniform``) with the mass matrix adapted during warm-up.
        ``"median"``: plain NUTS from the target's own start (the prior median of a Pyro
        model, the intercept-only fit of a GLM), for posteriors whose mode says little
        about their shape (a funnel).
    adapt_mass_matrix : bool, optional
        Also adapt a mass matrix during warm-up (Stan's windows), on top of the
        whitening: a diagonal one in posheads' own sampler, a dense one
        (``dense_mass=True``) in Pyro's. Default: off with ``init="map"`` (the Laplace
        metric is kept), on otherwise.
    data_precision : {"auto", "double", "single"}
        Precision of the passes over the data in posheads' own sampler (no dense mass
        adaptation) for a float64 model with a closed-form objective (a SoftplusGLM with
        a dense design). ``"single"``: each leapfrog step evaluates the rows in float32
        (about half the cost of a pass over a large design) and the sampler keeps its
        state, Hamiltonian and acceptance in float64 (see
        :func:`single_precision_potential`); ``"double"``: all float64; ``"auto"``:
        single for designs of at least ``2**19`` entries.

    Examples
    --------
    >>> import torch
    >>> from posheads.models.glm import GLMData, SoftplusGLM
    >>> X = torch.randn(200, 3, dtype=torch.float64)
    >>> y = torch.poisson(torch.nn.functional.softplus(1.0 + X[:, 0]))
    >>> post = NUTS(num_samples=100, num_warmup=100, num_chains=2).fit(
    ...     SoftplusGLM("poisson"), GLMData(X, y), seed=0, verbose=0)
    >>> post.samples["coef"].shape
    torch.Size([2, 100, 3])
    """

    num_samples: int = 1000
    num_warmup: int = 500
    num_chains: int = 1
    dense_mass: bool = True
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    init: str = "map"
    adapt_mass_matrix: bool | None = None
    data_precision: str = "auto"

    def __post_init__(self):
        for name, low in (("num_samples", 1), ("num_warmup", 0), ("num_chains", 1),
                          ("max_tree_depth", 1)):
            object.__setattr__(self, name, check_int(name, getattr(self, name), low))
        check_real("target_accept_prob", self.target_accept_prob, 0.0, 1.0)
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {self.init!r}")
        if self.data_precision not in _PRECISIONS:
            raise ValueError(f"data_precision must be one of {_PRECISIONS}, "
                             f"got {self.data_precision!r}")
        if self.adapt_mass_matrix is None:
            object.__setattr__(self, "adapt_mass_matrix", self.init != "map")

    def fit(self, model, data, *, seed=None, verbose=1, start=None) -> Posterior:
        """Sample ``model``'s posterior given ``data``; see :func:`fit_nuts`.

        ``start`` (constrained site values, e.g. the median of a variational fit) is where
        every chain starts instead of a draw of ``init``'s; the metric is still
        ``init``'s (with ``"uniform"``: the identity, adapted during warm-up).
        """
        m = as_model(model)
        chain_seeds = child_seeds(seed, self.num_chains + 1)
        with seeded(chain_seeds[0]):
            target = m.target(data, validate=True, seed=chain_seeds[0])
            extra = {}
            if self.init == "map":
                theta_hat, cov = laplace_metric(target)
                whitening = Whitening(theta_hat, cov, dense=self.dense_mass)
                extra.update(map_theta=theta_hat, cov=cov)
            else:
                whitening = Whitening(torch.zeros_like(target.init()))
        like = whitening.loc
        draws, stats, evaluations = [], [], 0
        total = self.num_chains * (self.num_warmup + self.num_samples)
        with intra_op_threads(target.work_size, like.device), \
                tqdm(total=total, desc="NUTS", disable=not verbose, leave=False) as pbar:
            for c in range(self.num_chains):
                pbar.set_description(f"NUTS chain {c + 1}/{self.num_chains}")
                with seeded(chain_seeds[c + 1], like.device):
                    if start is not None:
                        z0 = whitening.to_z(target.pack(_on(start, like)).to(like))
                    elif self.init == "median":
                        z0 = target.init().to(like)
                    elif self.init == "map":
                        z0 = torch.randn(like.shape, dtype=like.dtype, device=like.device)
                    else:
                        z0 = 4.0 * torch.rand(like.shape, dtype=like.dtype,
                                              device=like.device) - 2.0
                    z, chain_stats, calls = self._run_chain(target, whitening, z0, pbar)
                draws.append(z)
                stats.append(chain_stats)
                evaluations += calls
        theta = whitening.to_theta(torch.stack(draws))  # (chains, draws, d)
        values = target.unpack(theta.reshape(-1, theta.shape[-1]))
        shape = (self.num_chains, self.num_samples)
        samples = {name: v.detach().reshape(shape + v.shape[1:]) for name, v in values.items()}
        sample_stats = {k: torch.stack([s[k] for s in stats]) for k in stats[0]}
        extra["num_evaluations"] = evaluations
        return Posterior(model, samples, method="nuts", data=target.data,
                         num_chains=self.num_chains, sample_stats=sample_stats, extra=extra)

    def _run_chain(self, target, whitening, z0, pbar):
        if not (self.adapt_mass_matrix and self.dense_mass):
            return self._run_lean_chain(target, whitening, z0, pbar)
        return self._run_pyro_chain(target, whitening, z0, pbar)

    def _run_lean_chain(self, target, whitening, z0, pbar):
        """A chain of posheads' own sampler (:mod:`.nuts_sampler`): no mass adaptation,
        or a diagonal one."""

        single = self.data_precision == "single" or (
            self.data_precision == "auto" and (target.work_size or 0) >= _SINGLE_ENTRIES)
        potential = single_precision_potential(target, whitening.loc) if single else None
        evaluate = whitened_evaluate(target, whitening, potential)

        def progress(i, warmup, step_size):
            pbar.update(1)
            if i % 25 == 0:
                stage = "warmup" if warmup else "sample"
                pbar.set_postfix_str(f"{stage}, step size {step_size:.3g}", refresh=False)

        z, stats, calls = sample_chain(
            evaluate, z0, num_warmup=self.num_warmup, num_samples=self.num_samples,
            target_accept_prob=self.target_accept_prob, max_tree_depth=self.max_tree_depth,
            on_iteration=progress, adapt_diagonal=self.adapt_mass_matrix)
        return z.to(z0), stats, calls

    def _run_pyro_chain(self, target, whitening, z0, pbar):
        from pyro.infer import MCMC
        from pyro.infer import NUTS as PyroNUTS

        potential = whitened_potential(target, whitening)
        kernel = PyroNUTS(
            potential_fn=potential,
            adapt_step_size=True,
            adapt_mass_matrix=self.adapt_mass_matrix,
            full_mass=self.dense_mass and self.adapt_mass_matrix,
            target_accept_prob=self.target_accept_prob,
            max_tree_depth=self.max_tree_depth,
        )
        recorder = _Recorder(potential, self.num_samples, pbar)
        setup = kernel.setup

        def setup_then_count(*args, **kwargs):
            # The evaluations of the set-up (initial step size search) are no draw's.
            setup(*args, **kwargs)
            recorder.calls = potential.calls

        kernel.setup = setup_then_count
        mcmc = MCMC(kernel, num_samples=self.num_samples, warmup_steps=self.num_warmup,
                    initial_params={"z": z0}, hook_fn=recorder, disable_progbar=True)
        mcmc.run()
        z = mcmc.get_samples()["z"].to(z0)
        stats = {
            "diverging": recorder.diverging,
            "step_size": recorder.step_size,
            "tree_depth": torch.as_tensor([int(n).bit_length() for n in recorder.n_steps]),
            "n_steps": recorder.n_steps,
            "acceptance_rate": recorder.accept,
            "lp": recorder.lp,
        }
        return z, stats, potential.calls


def single_precision_potential(target, theta_ref: torch.Tensor):
    """``target``'s potential with the passes over the data in float32, or None.

    The rows are evaluated on a float32 copy of the data (the objective's
    :meth:`~posheads.models.glm_loss.GLMLoss.in_dtype`), ``theta`` and the returned
    ``U`` and gradient stay in ``theta``'s dtype: a sampler keeps its state, Hamiltonian
    and acceptance in float64. Leapfrog steps stay exactly reversible and
    volume-preserving whatever the gradient's rounding (it is a fixed function of the
    position); what float32 changes is the density sampled, by the rounding of ``U``:
    about 0.02 in ``U`` (sd across states) on a Poisson GLM of 100,000 rows, against
    energy errors of order 1 per trajectory. ``U`` is shifted by a constant so that it
    equals the float64 potential at ``theta_ref``.

    Parameters
    ----------
    target : Target
        A target whose ``newton_loss(jacobian=True)`` has ``in_dtype`` (a SoftplusGLM's).
    theta_ref : Tensor, shape ``(d,)``
        Where the two potentials are matched (the mode).

    Returns
    -------
    callable or None
        ``theta -> (U, dU/dtheta)`` like ``target.potential_and_grad``; None when the
        target has no such objective, its data are not float64, or its design is sparse.
    """
    loss = target.newton_loss(jacobian=True)
    cast = getattr(loss, "in_dtype", None)
    if cast is None or theta_ref.dtype != torch.float64:
        return None
    low = cast(torch.float32)
    if low is loss:
        return None
    single = low.potential_and_grad
    theta_ref = theta_ref.detach()
    u_ref = float(target.potential_and_grad(theta_ref)[0])
    shift = u_ref - float(single(theta_ref.to(torch.float32))[0])

    def potential(theta):
        u, g = single(theta.to(torch.float32))
        return float(u) + shift, g.to(theta.dtype)

    return potential


def whitened_evaluate(target, whitening: Whitening, potential=None):
    """``z -> (U, dU/dz)`` of ``target`` seen through ``whitening``, ``U`` as a float.

    The same map as :meth:`Whitening.to_theta` and :meth:`Whitening.grad_to_z`, each
    in one fused operation (``addmv``, ``addcmul``): a leapfrog step of a small model
    costs little more than the target's own gradient.

    Parameters
    ----------
    target : Target
    whitening : Whitening
    potential : callable, optional
        ``theta -> (U, dU/dtheta)`` to use instead of ``target.potential_and_grad``
        (e.g. :func:`single_precision_potential`).

    Returns
    -------
    callable
        ``z`` of shape ``(d,)`` to ``(float, Tensor of shape (d,))``.
    """
    loc, scale = whitening.loc, whitening.scale
    potential = target.potential_and_grad if potential is None else potential
    if scale is None:
        def evaluate(z):
            u, g = potential(loc + z)
            return float(u), g
    elif scale.dim() == 1:
        def evaluate(z):
            u, g = potential(torch.addcmul(loc, z, scale))
            return float(u), g * scale
    else:
        scale_t = scale.T.contiguous()

        def evaluate(z):
            u, g = potential(torch.addmv(loc, scale, z))
            return float(u), torch.mv(scale_t, g)
    return evaluate


def _on(values: dict, like: torch.Tensor) -> dict:
    """``values`` as tensors of ``like``'s dtype and device (detached)."""
    return {k: torch.as_tensor(v).detach().to(dtype=like.dtype, device=like.device)
            for k, v in values.items()}


def fit_nuts(model, data, *, num_samples=1000, num_warmup=500, num_chains=1, init="map",
             dense_mass=True, adapt_mass_matrix=None, target_accept_prob=0.8,
             max_tree_depth=10, data_precision="auto", seed=None, verbose=1) -> Posterior:
    """Sample the posterior with NUTS, in the metric of the Laplace approximation.

    Parameters
    ----------
    model : PosteriorModel or callable
        A :class:`~posheads.models.glm.SoftplusGLM` (closed-form gradient) or any Pyro
        model with continuous latent sites.
    data : GLMData or dict
        For a SoftplusGLM, its ``GLMData`` (or a dict of its fields); for any other
        model, the keyword arguments that condition it.
    num_samples, num_warmup, num_chains, init, dense_mass, adapt_mass_matrix, \
target_accept_prob, max_tree_depth, data_precision
        See :class:`NUTS`.
    seed : int, optional
        Seed for the whole fit (chains get seeds derived from it); the caller's random
        state is left untouched. ``None`` draws from torch's global generator.
    verbose : int
        0 silences the progress bar.

    Returns
    -------
    Posterior
        ``method="nuts"``; ``samples[site]`` of shape ``(num_chains, num_samples,
        *site_shape)`` in constrained space; ``sample_stats`` of ``(num_chains,
        num_samples)`` tensors: ``"diverging"``, ``"step_size"``, ``"tree_depth"``,
        ``"n_steps"`` (leapfrog steps), ``"acceptance_rate"`` and ``"lp"`` (log joint of
        the draw in unconstrained space); ``extra``: ``"map_theta"`` (d,) and ``"cov"``
        (d, d) of the Laplace fit (``init="map"``), ``"num_evaluations"`` (potential and
        gradient evaluations, all chains).
    """
    config = NUTS(num_samples=num_samples, num_warmup=num_warmup, num_chains=num_chains,
                  dense_mass=dense_mass, target_accept_prob=target_accept_prob,
                  max_tree_depth=max_tree_depth, init=init,
                  adapt_mass_matrix=adapt_mass_matrix, data_precision=data_precision)
    return config.fit(model, data, seed=seed, verbose=verbose)
