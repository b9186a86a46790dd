"""A lean No-U-Turn sampler for a whitened target: :func:`sample_chain`.

The chain runs on ``z``, the target seen through the Laplace whitening (see
:mod:`posheads.inference.whitening`), so the metric is the identity and only the step size
is adapted. The transition is the multinomial NUTS of Betancourt (2017, "A conceptual
introduction to Hamiltonian Monte Carlo", appendix A) as Stan runs it: trajectories
doubled forwards or backwards at random, states drawn in proportion to ``exp(-H)``
(uniformly within a new subtree, biased towards the new subtree when merging), the
generalised U-turn criterion on the summed momenta, checked on every merge and across the
two halves of each merge, and a divergence where the energy error passes 1000. The step
size follows the dual averaging of Hoffman and Gelman (2014, section 3.2) with Stan's
constants. Each leapfrog step costs one call of ``evaluate`` and a few vector operations
of size ``d``, with no autograd graph and no trace.

With ``adapt_diagonal=True`` the chain also adapts a diagonal metric in Stan's windowed
warm-up (:func:`metric_windows`): at the end of each window the draws' variances,
regularised towards ``1e-3`` as Stan does, become the metric. A diagonal metric ``M^{-1} =
diag(v)`` is the identity metric in the coordinates ``z / sqrt(v)``, so the chain runs on
those and the transition stays the one above; each window's end rescales the state and
restarts the step-size search and its dual averaging.
"""

from __future__ import annotations

import math
import random

import torch

__all__ = ["StepSizeAdapter", "metric_windows", "sample_chain"]

# Stan's threshold on the energy error: a step past it ends the trajectory as divergent.
MAX_DELTA_H = 1000.0


class StepSizeAdapter:
    """Dual averaging of ``log(step_size)`` towards a target acceptance statistic.

    Parameters
    ----------
    step_size : float
        The starting step size; the iterates shrink towards ``mu = log(10 step_size)``.
    target : float
        Target mean acceptance statistic, in (0, 1).
    gamma, t0, kappa : float
        Hoffman and Gelman's (2014) constants (Stan's defaults).
    """

    def __init__(self, step_size: float, target: float, gamma=0.05, t0=10.0, kappa=0.75):
        self.mu, self.target = math.log(10.0 * step_size), target
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.count, self.s_bar, self.x_bar = 0, 0.0, 0.0

    def update(self, accept: float) -> float:
        """Take one acceptance statistic; return the next step size to use."""
        self.count += 1
        t = self.count
        eta = 1.0 / (t + self.t0)
        self.s_bar = (1.0 - eta) * self.s_bar + eta * (self.target - min(accept, 1.0))
        x = self.mu - self.s_bar * math.sqrt(t) / self.gamma
        weight = t ** -self.kappa
        self.x_bar = weight * x + (1.0 - weight) * self.x_bar
        return math.exp(x)

    @property
    def final(self) -> float:
        """The averaged step size, used after warm-up."""
        return math.exp(self.x_bar) if self.count else math.exp(self.mu) / 10.0


class _Tree:
    """A trajectory's far end, its end momenta, summed momentum, proposal and weight."""

    __slots__ = ("end", "log_weight", "p_beg", "p_end", "proposal", "rho", "valid")

    def __init__(self, end, p_beg, p_end, rho, proposal, log_weight, valid):
        self.end, self.p_beg, self.p_end, self.rho = end, p_beg, p_end, rho
        self.proposal, self.log_weight, self.valid = proposal, log_weight, valid


def _no_u_turn(p_a: torch.Tensor, p_b: torch.Tensor, rho: torch.Tensor) -> bool:
    """The generalised criterion: both end momenta still point along ``rho``."""
    return float(torch.dot(p_a, rho)) > 0.0 and float(torch.dot(p_b, rho)) > 0.0


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


class _Transition:
    """One NUTS transition's bookkeeping: evaluations, acceptance sum, divergence."""

    def __init__(self, evaluate, step_size: float, h0: float, rng: random.Random):
        self.evaluate, self.eps, self.h0, self.rng = evaluate, step_size, h0, rng
        self.n_steps, self.sum_accept, self.diverging = 0, 0.0, False

    def leapfrog(self, state, eps):
        """``(z, p, g, u)`` one step of size ``eps`` (negative: backwards) later."""
        z, p, g, _ = state
        p = torch.add(p, g, alpha=-0.5 * eps)
        z = torch.add(z, p, alpha=eps)
        u, g = self.evaluate(z)
        p.add_(g, alpha=-0.5 * eps)  # p is this step's own tensor
        return z, p, g, u

    def build(self, state, depth: int, eps: float) -> _Tree:
        """A subtree of ``2**depth`` steps from ``state``; ``valid`` is False where it
        diverged or made a U-turn (its draws are then not used)."""
        if depth == 0:
            new = self.leapfrog(state, eps)
            self.n_steps += 1
            p, u = new[1], new[3]
            h = u + 0.5 * float(torch.dot(p, p))
            log_w = self.h0 - h if math.isfinite(h) else -math.inf
            if not log_w > -MAX_DELTA_H:  # also catches NaN
                self.diverging = True
                return _Tree(new, p, p, p, new, -math.inf, False)
            self.sum_accept += 1.0 if log_w > 0 else math.exp(log_w)
            return _Tree(new, p, p, p, new, log_w, True)
        left = self.build(state, depth - 1, eps)
        if not left.valid:
            return left
        right = self.build(left.end, depth - 1, eps)
        if not right.valid:
            return right
        log_weight = _log_add(left.log_weight, right.log_weight)
        proposal = left.proposal
        # uniform progressive sampling within a subtree
        if self.rng.random() < math.exp(right.log_weight - log_weight):
            proposal = right.proposal
        rho = left.rho + right.rho
        valid = (_no_u_turn(left.p_beg, right.p_end, rho)
                 and _no_u_turn(left.p_beg, right.p_beg, left.rho + right.p_beg)
                 and _no_u_turn(left.p_end, right.p_end, right.rho + left.p_end))
        return _Tree(right.end, left.p_beg, right.p_end, rho, proposal, log_weight, valid)

    def run(self, start, p0, max_tree_depth: int):
        """The next state of the chain from ``start = (z, p, g, u)`` with momentum ``p0``."""
        start = (start[0], p0, start[2], start[3])
        back = front = sample = start
        p_back = p_front = p0
        rho, log_weight = p0.clone(), 0.0
        for depth in range(max_tree_depth):
            forward = self.rng.random() < 0.5
            tree = self.build(front if forward else back, depth, self.eps if forward
                              else -self.eps)
            if not tree.valid:
                break
            # biased progressive sampling: favour the new subtree
            if tree.log_weight > log_weight or \
                    self.rng.random() < math.exp(tree.log_weight - log_weight):
                sample = tree.proposal
            log_weight = _log_add(log_weight, tree.log_weight)
            old_rho, old_near = rho, (p_front if forward else p_back)
            rho = rho + tree.rho
            if forward:
                front, p_front = tree.end, tree.p_end
            else:
                back, p_back = tree.end, tree.p_end
            if not (_no_u_turn(p_back, p_front, rho)
                    and _no_u_turn(p_back if forward else p_front, tree.p_beg,
                                   old_rho + tree.p_beg)
                    and _no_u_turn(old_near, tree.p_end, tree.rho + old_near)):
                break
        return sample


def _initial_step_size(evaluate, state, rng_normal, step_size=1.0, target=0.8) -> float:
    """Stan's heuristic: double or halve the step until one leapfrog step's acceptance
    crosses ``target`` (at most 50 times, so a flat or broken target still returns)."""
    z, g, u = state[0], state[2], state[3]
    direction = 0
    for _ in range(50):
        p = rng_normal()
        h0 = u + 0.5 * float(torch.dot(p, p))
        t = _Transition(evaluate, step_size, h0, None)
        _, p1, _, u1 = t.leapfrog((z, p, g, u), step_size)
        h = u1 + 0.5 * float(torch.dot(p1, p1))
        delta = h0 - h if math.isfinite(h) else -math.inf
        up = delta > math.log(target)
        if direction == 0:
            direction = 1 if up else -1
        elif (direction == 1) != up:
            break
        step_size = step_size * 2.0 if direction == 1 else step_size / 2.0
    return step_size


def metric_windows(num_warmup: int) -> list:
    """Stan's metric-adaptation windows of a warm-up of ``num_warmup`` iterations.

    An initial buffer of 75 iterations (step size only), windows of 25, 50, 100, ...
    iterations, the last one stretched to end 50 iterations before the warm-up does (a
    terminal buffer for the step size alone); below 150 iterations the buffers are 15%
    and 10% of the warm-up and one window fills the rest; below 20, no window.

    Returns
    -------
    list of (int, int)
        ``(start, end)`` iteration indices of each window, ``end`` exclusive.
    """
    if num_warmup < 20:
        return []
    init, term, base = 75, 50, 25
    if init + term + base > num_warmup:
        init, term = int(0.15 * num_warmup), int(0.1 * num_warmup)
        base = num_warmup - init - term
    last = num_warmup - term
    windows, start, size = [], init, base
    while start < last:
        end = start + size
        if end + 2 * size >= last:  # the next window would not fit: stretch this one
            end = last
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


def sample_chain(evaluate, z0: torch.Tensor, *, num_warmup: int, num_samples: int,
                 target_accept_prob: float = 0.8, max_tree_depth: int = 10,
                 step_size: float = 1.0, on_iteration=None, adapt_diagonal: bool = False):
    """Run one NUTS chain with an identity (or adapted diagonal) metric and an adapted
    step size.

    Parameters
    ----------
    evaluate : callable
        ``z -> (u, g)``: the potential ``U(z)`` as a Python float (``inf`` or NaN where
        the density is zero) and its gradient, a tensor like ``z``.
    z0 : Tensor, shape ``(d,)``
        Start; ``U(z0)`` must be finite.
    num_warmup, num_samples : int
        Step-size adaptation iterations (draws discarded), then draws kept.
    target_accept_prob : float
        Target of the step-size adaptation.
    max_tree_depth : int
        Largest number of trajectory doublings.
    step_size : float
        Where the search for a first step size starts.
    on_iteration : callable, optional
        Called as ``on_iteration(i, warmup, step_size)`` after each iteration.
    adapt_diagonal : bool
        Adapt a diagonal metric in :func:`metric_windows` (see the module docstring);
        else the metric is the identity.

    Returns
    -------
    draws : Tensor, shape ``(num_samples, d)``
    stats : dict of str to Tensor, each of shape ``(num_samples,)``
        ``"diverging"``, ``"step_size"``, ``"tree_depth"`` (bit length of the step
        count), ``"n_steps"``, ``"acceptance_rate"`` (mean Metropolis acceptance over the
        trajectory) and ``"lp"`` (``-U`` of the draw).
    evaluations : int
        Calls of ``evaluate``, the step-size search included.

    Notes
    -----
    Momenta come from torch's generator for ``z0``'s device, the uniform draws from a
    Python generator seeded from it, so a run is reproducible under ``torch.manual_seed``.
    """
    calls = [0]
    like = z0.detach()
    # the chain runs on z / scale: a diagonal metric diag(scale^2) (identity until adapted)
    scale = torch.ones_like(like)

    def counted(z):
        calls[0] += 1
        if not adapt_diagonal:
            return evaluate(z)
        u, g = evaluate(z * scale)
        return u, g * scale

    rng = random.Random(int(torch.randint(2**62, (), device=like.device)))

    def normal():
        return torch.randn(like.shape, dtype=like.dtype, device=like.device)

    u, g = counted(like)
    if not math.isfinite(u):
        raise ValueError("the potential is not finite at the chain's starting point")
    state = (like, None, g, u)
    eps = _initial_step_size(counted, state, normal, step_size, target_accept_prob)
    adapter = StepSizeAdapter(eps, target_accept_prob)
    keys = ("diverging", "step_size", "tree_depth", "n_steps", "acceptance_rate", "lp")
    stats = {k: [0] * num_samples for k in keys}
    draws = []
    windows = dict(metric_windows(num_warmup)) if adapt_diagonal else {}  # start -> end
    window_end = -1
    for i in range(num_warmup + num_samples):
        warmup = i < num_warmup
        if not warmup and i == num_warmup:
            eps = adapter.final
        if i in windows:  # a window opens: Welford's running moments of z
            window_end = windows[i]
            n_w, mean_w, m2_w = 0, torch.zeros_like(like), torch.zeros_like(like)
        p0 = normal()
        h0 = state[3] + 0.5 * float(torch.dot(p0, p0))
        t = _Transition(counted, eps, h0, rng)
        state = t.run(state, p0, max_tree_depth)
        accept = t.sum_accept / max(t.n_steps, 1)
        if warmup:
            eps = adapter.update(accept)
            if i < window_end:
                x = state[0] * scale
                n_w += 1
                delta = x - mean_w
                mean_w += delta / n_w
                m2_w += delta * (x - mean_w)
            if i + 1 == window_end:  # the window closes: its variances become the metric
                var = m2_w / max(n_w - 1, 1)
                var = (n_w / (n_w + 5.0)) * var + 1e-3 * (5.0 / (n_w + 5.0))
                new = var.sqrt()
                z, _, g, u = state
                state = (z * scale / new, None, g / scale * new, u)
                scale.copy_(new)
                eps = _initial_step_size(counted, state, normal, eps, target_accept_prob)
                adapter = StepSizeAdapter(eps, target_accept_prob)
        else:
            j = i - num_warmup
            draws.append(state[0] * scale if adapt_diagonal else state[0])
            for key, value in zip(keys, (t.diverging, eps, t.n_steps.bit_length(),
                                         t.n_steps, accept, -state[3]), strict=True):
                stats[key][j] = value
        if on_iteration is not None:
            on_iteration(i, warmup, eps)
    dtypes = (torch.bool, torch.float64, torch.long, torch.long, torch.float64, torch.float64)
    out = {k: torch.tensor(stats[k], dtype=dt) for k, dt in zip(keys, dtypes, strict=True)}
    return torch.stack(draws), out, calls[0]
