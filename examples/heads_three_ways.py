"""One distribution head, three ways: plain torch, a Pyro model, a Bayesian ``PyroModule``.

1. Plain torch: an MLP with a ``NegativeBinomialHead`` trained by Adam on
   ``-head(h).log_prob(y).mean()``; it recovers a nonlinear mean function of over-dispersed
   counts.
2. A Pyro model that scores the data with ``pyro.sample("obs", head(x), obs=y)``; SVI with
   an empty guide gives the maximum-likelihood coefficients of a linear zero-inflated head.
3. The same kind of head as ``PyroModule[PoissonHead]`` with ``PyroSample`` priors on its
   weights: a Bayesian GLM in a few lines, fitted with ``AutoNormal``, with posterior
   predictive draws from ``Predictive``.

Run ``python examples/heads_three_ways.py`` (about half a minute on a laptop CPU).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from torch import nn

from posheads import ops
from posheads.heads import NegativeBinomialHead, PoissonHead, ZeroInflatedPoissonHead


def true_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean function of example 1: ``softplus(1 + 1.5 sin(2x))``, shape ``(n,)``."""
    return ops.softplus(1.0 + 1.5 * torch.sin(2.0 * x)).squeeze(-1)


def plain_torch(n: int = 4000, steps: int = 600, concentration: float = 3.0) -> None:
    x = torch.rand(n, 1) * 4 - 2
    # NB counts as a Gamma-Poisson mixture with mean true_mean(x)
    gamma = torch.distributions.Gamma(concentration, 1.0).sample((n,))
    y = torch.poisson(true_mean(x) * gamma / concentration)

    body = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
    head = NegativeBinomialHead(32).init_from_targets(y)  # starts at the training mean
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        loss = -head(body(x)).log_prob(y).mean()
        loss.backward()
        opt.step()

    grid = torch.linspace(-1.8, 1.8, 50).unsqueeze(-1)
    with torch.no_grad():
        fitted = head(body(grid))
    rel = (fitted.mean / true_mean(grid) - 1).abs()
    print(f"[1] torch MLP + NB head: mean relative error {rel.mean():.3f} "
          f"(max {rel.max():.3f}), concentration {fitted.concentration.mean():.2f} "
          f"(true {concentration})")


def pyro_model(n: int = 3000, steps: int = 400) -> None:
    x = torch.randn(n, 1)
    rate = ops.softplus(0.5 + 1.0 * x[:, 0])
    structural_zero = torch.rand(n) < torch.sigmoid(torch.tensor(-1.0))
    y = torch.poisson(rate).masked_fill(structural_zero, 0.0)
    head = ZeroInflatedPoissonHead(1).init_from_targets(y)

    def model(x, y=None):
        pyro.module("head", head)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", head(x), obs=y)

    def guide(x, y=None):  # no latent variables: SVI is maximum likelihood here
        pass

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(steps):
        svi.step(x, y)
    w, b = head.proj.weight.detach()[:, 0].tolist(), head.proj.bias.detach().tolist()
    print(f"[2] Pyro model + ZIP head: eta = {b[0]:.2f} + {w[0]:.2f} x (true 0.50 + 1.00 x), "
          f"gate logits = {b[1]:.2f} + {w[1]:.2f} x (true -1.00 + 0.00 x)")


def bayesian_head(n: int = 1000, steps: int = 600) -> None:
    x = torch.randn(n, 2)
    true_w, true_b = torch.tensor([0.8, -0.5]), 1.0
    y = torch.poisson(ops.softplus(x @ true_w + true_b))

    head = PyroModule[PoissonHead](2)  # its `proj` is then a PyroModule[nn.Linear]
    head.proj.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 2]).to_event(2))
    head.proj.bias = PyroSample(dist.Normal(0.0, 5.0).expand([1]).to_event(1))

    def model(x, y=None):
        d = head(x)  # draws the weights: outside the data plate, they are global
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", d, obs=y)

    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(steps):
        svi.step(x, y)
    median = guide.median()
    draws = Predictive(model, guide=guide, num_samples=200)(x)["obs"]
    low, high = draws.quantile(0.05, dim=0), draws.quantile(0.95, dim=0)
    covered = ((y >= low) & (y <= high)).float().mean()
    weight = ", ".join(f"{v:.2f}" for v in median["proj.weight"][0].tolist())
    print(f"[3] Bayesian PyroModule head: weight [{weight}] (true [0.80, -0.50]), "
          f"bias {median['proj.bias'].item():.2f} (true {true_b:.2f}); "
          f"90% predictive intervals cover {covered:.0%} of the counts")


def main() -> None:
    pyro.set_rng_seed(0)
    plain_torch()
    pyro.clear_param_store()
    pyro_model()
    pyro.clear_param_store()
    bayesian_head()


if __name__ == "__main__":
    main()
