"""Bayesian multilayer perceptrons for counts with softplus-link heads (``posheads.models.bnn``).

:class:`BayesianCountMLP` is a :class:`~pyro.nn.PyroModule`: hidden layers
``h_i = act(W_i (tau_i h_{i-1}) + b_i)`` and a count head of :mod:`posheads.heads` that
reads the last hidden layer, scaled by ``tau_L``, next to the inputs themselves::

    eta = b + (tau_L h_L) @ W_h + X @ W_x          (the head's ``proj`` on [tau_L h_L, X])
    y ~ Head(eta, ...)  with mean  exposure * softplus(eta)

``X @ W_x`` is a softplus-GLM skip connection (``skip=True``): with the hidden scales
shrunk to zero the network *is* the softplus GLM, so on nearly linear data the prior has
a good model to fall back on.

Priors (non-centred)
--------------------
* ``layer_scale`` ``tau`` of shape ``(L + 1,)``: one scale per hidden layer and one for the
  head's hidden part. Learned (hierarchical, ``tau_i ~ HalfNormal(prior_scale)`` with a
  softplus-mapped support) or fixed at ``prior_scale`` (then a buffer, not a site).
* ``hidden.{i}.weight ~ Normal(0, 1 / sqrt(fan_in))``, ``hidden.{i}.bias ~ Normal(0, 1)``;
  the weight a layer applies to its input is ``tau_i * hidden.{i}.weight``.
* ``head.proj.weight``: ``Normal(0, 1 / sqrt(width))`` on the hidden columns (times
  ``tau_L``) and ``Normal(0, coef_scale)`` on the skip columns;
  ``head.proj.bias ~ Normal(b0, bias_scale)``, ``b0`` the head's moment-matched start
  (:meth:`BayesianCountMLP.init_from_targets`).

Writing the weights as a scale times a standard weight keeps every prior free of other
latent variables (the priors are fixed distributions held as buffers, so the module moves
with ``.to(device)`` and pickles), and lets the scale shrink a layer as a whole.

Data enter in ``pyro.plate("data", n, subsample_size=..., subsample=...)``: the global
weights are sampled before the plate, the network runs on the selected rows only, and row
weights scale the observation's log-likelihood.
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule, PyroSample
from torch import nn

from posheads import families, heads
from posheads.distributions import SoftplusHalfNormal

__all__ = ["ACTIVATIONS", "LIKELIHOODS", "BayesianCountMLP", "init_locations", "local_params"]

#: Names of the families registered when this module was imported (any family works:
#: see :func:`posheads.families.available_families`).
LIKELIHOODS = tuple(f.name for f in families.available_families())
ACTIVATIONS = ("softplus", "relu", "tanh", "gelu", "silu", "elu", "sigmoid")


def local_params():
    """Pyro's ``module_local_params`` setting: a network and its guide keep their
    parameters in their own modules, not in the global parameter store (enter it wherever
    they are built or used)."""
    return pyro.settings.context(module_local_params=True)


def init_locations(model):
    """An ``init_loc_fn`` for a guide of :class:`BayesianCountMLP`: a random network whose
    head predicts the moment-matched mean.

    Hidden weights are a draw from their prior (``1 / sqrt(fan_in)``, as LeCun's
    initialisation), hidden biases 0, the head's weights 0 and its biases at their prior
    location (the moment-matched start), layer scales at their prior scale.
    """
    del model  # every value follows from the site's prior

    def init(site):
        name, fn = site["name"], site["fn"]
        base = fn.base_dist if hasattr(fn, "base_dist") else fn
        if name == "layer_scale":
            return base.scale.detach().clone()
        if name.startswith("hidden.") and name.endswith(".weight"):
            return fn.sample().detach()
        if name == "head.proj.bias":
            return base.loc.detach().clone()
        return torch.zeros(fn.shape(), dtype=base.mean.dtype, device=base.mean.device)

    return init


class _BufferPrior:
    """A prior built from buffers of the module that owns the site, so it follows ``.to()``.

    A callable object rather than a function: ``PyroSample`` renames the functions it is
    given, which would make the module impossible to pickle.
    """

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, module):
        if self.kind == "weight":
            return dist.Normal(module.weight_loc, module.weight_scale).to_event(2)
        if self.kind == "bias":
            return dist.Normal(module.bias_loc, module.bias_scale).to_event(1)
        return SoftplusHalfNormal(module.layer_scale_prior).to_event(1)


def _bayesian_linear(layer: nn.Linear, weight_scale: torch.Tensor, bias_loc: torch.Tensor,
                     bias_scale: float) -> None:
    """Turn a ``PyroModule[nn.Linear]`` into a Bayesian layer with Gaussian priors."""
    layer.register_buffer("weight_loc", torch.zeros_like(layer.weight.detach()))
    layer.register_buffer("weight_scale", weight_scale.expand_as(layer.weight).clone())
    layer.register_buffer("bias_loc", bias_loc.clone())
    layer.register_buffer("bias_scale", torch.full_like(bias_loc, float(bias_scale)))
    layer.weight = PyroSample(_BufferPrior("weight"))
    layer.bias = PyroSample(_BufferPrior("bias"))


def _activation(name: str, beta: float) -> nn.Module:
    if name == "softplus":
        return heads.Softplus(beta=beta)
    table = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU,
             "elu": nn.ELU, "sigmoid": nn.Sigmoid}
    return table[name]()


def _check_options(in_features, hidden_sizes, activation, likelihood, prior_scale,
                   coef_scale, bias_scale) -> tuple[int, ...]:
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise ValueError(f"in_features must be a positive int, got {in_features!r}")
    sizes = tuple(hidden_sizes)
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in sizes):
        raise ValueError(f"hidden_sizes must be positive ints, got {hidden_sizes!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    for name, value in (("prior_scale", prior_scale), ("coef_scale", coef_scale),
                        ("bias_scale", bias_scale)):
        if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return sizes


class BayesianCountMLP(PyroModule):
    """A Bayesian MLP whose output layer is a softplus-link count head.

    Parameters
    ----------
    in_features : int
        Number of input columns ``p`` (standardise them: the priors assume unit scale).
    hidden_sizes : sequence of int, default=(32,)
        Widths of the hidden layers; ``()`` gives a Bayesian softplus GLM.
    activation : {"softplus", "relu", "tanh", "gelu", "silu", "elu", "sigmoid"}
        Hidden activation; ``"softplus"`` is :class:`posheads.heads.Softplus`.
    activation_beta : float, default=1.0
        Softness of the softplus activation.
    likelihood : str or Family
        The family of the head (:class:`posheads.heads.FamilyHead`): ``"poisson"``,
        ``"negative_binomial"``, the zero-inflated and hurdle families, or your own.
    skip : bool, default=True
        Feed the inputs to the head next to the last hidden layer (a GLM term).
    prior_scale : float, default=1.0
        Scale of the hidden layers' weights: the ``HalfNormal`` scale of ``tau`` when
        learned, the value of ``tau`` when fixed.
    learn_prior_scale : bool, default=True
        Hierarchical prior: ``tau`` is a latent site ``"layer_scale"`` (ignored without
        hidden layers).
    coef_scale : float, default=1.0
        Prior scale of the skip (GLM) coefficients.
    bias_scale : float, default=5.0
        Prior scale of the head's biases around their moment-matched start.
    beta, threshold : float
        Softplus link of the head (see :class:`posheads.heads.DistributionHead`).

    Shapes: ``X`` ``(n, in_features)``; ``y``, ``exposure``, ``weights`` ``(n,)``.

    Examples
    --------
    >>> net = BayesianCountMLP(3, (8,), likelihood="poisson")
    >>> X, y = torch.randn(20, 3), torch.poisson(torch.full((20,), 2.0))
    >>> tr = poutine.trace(net).get_trace(X, y)
    >>> tr.nodes["obs"]["value"].shape
    torch.Size([20])
    """

    def __init__(self, in_features, hidden_sizes=(32,), *, activation="softplus",
                 activation_beta=1.0, likelihood="negative_binomial", skip=True,
                 prior_scale=1.0, learn_prior_scale=True, coef_scale=1.0, bias_scale=5.0,
                 beta=1.0, threshold=20.0):
        sizes = _check_options(in_features, hidden_sizes, activation, likelihood,
                               prior_scale, coef_scale, bias_scale)
        family = families.get_family(likelihood)
        super().__init__()
        self.in_features, self.hidden_sizes, self.skip = in_features, sizes, bool(skip)
        self.family, self.activation_name = family, activation
        # without hidden layers there is no scale to learn: the network is a softplus GLM
        self.learn_prior_scale = bool(learn_prior_scale) and bool(sizes)
        self.bias_scale = float(bias_scale)
        self.act = _activation(activation, activation_beta)
        widths = (in_features, *sizes)
        self.hidden = PyroModule[nn.ModuleList](
            [PyroModule[nn.Linear](a, b) for a, b in itertools.pairwise(widths)])
        for layer, fan_in in zip(self.hidden, widths[:-1], strict=True):
            _bayesian_linear(layer, torch.tensor(fan_in ** -0.5), torch.zeros(layer.out_features),
                             1.0)
        width = sizes[-1] if sizes else 0
        head_in = width + (in_features if self.skip or not sizes else 0)
        self.head = PyroModule[heads.FamilyHead](head_in, family=family, beta=beta,
                                                 threshold=threshold, validate=False)
        columns = torch.cat([torch.full((width,), width ** -0.5 if width else 1.0),
                             torch.full((head_in - width,), float(coef_scale))])
        _bayesian_linear(self.head.proj, columns, self.head.proj.bias.detach(), bias_scale)
        scales = torch.full((len(sizes) + 1,), float(prior_scale))
        if self.learn_prior_scale:
            self.register_buffer("layer_scale_prior", scales)
            self.layer_scale = PyroSample(_BufferPrior("scale"))
        else:
            self.register_buffer("layer_scale", scales)

    @property
    def likelihood(self) -> str:
        """The family's name."""
        return self.family.name

    @property
    def raw_names(self) -> tuple[str, ...]:
        """Raw outputs of the head (``"eta"`` first)."""
        return self.head.raw_names

    def init_from_targets(self, y, exposure=None):
        """Centre the prior of the head's biases on moment-matched values from ``y``.

        Parameters
        ----------
        y : Tensor, shape ``(n,)``
            Training counts.
        exposure : Tensor, shape ``(n,)``, optional

        Returns
        -------
        self
        """
        plain = heads.FamilyHead(self.head.in_features, family=self.family,
                                 beta=self.head.beta, threshold=self.head.threshold)
        plain.init_from_targets(y.detach().cpu(), None if exposure is None else exposure.cpu())
        loc = self.head.proj.bias_loc
        loc.copy_(plain.proj.bias.detach().to(loc))
        return self

    # ------------------------------------------------------------------ network
    def sample_params(self) -> dict[str, torch.Tensor]:
        """The current value of every latent site (sampled under Pyro), keyed by site name."""
        values = {"layer_scale": self.layer_scale}
        for i, layer in enumerate(self.hidden):
            values[f"hidden.{i}.weight"], values[f"hidden.{i}.bias"] = layer.weight, layer.bias
        values["head.proj.weight"], values["head.proj.bias"] = (self.head.proj.weight,
                                                                self.head.proj.bias)
        return values

    def layer_scale_value(self, params: dict) -> torch.Tensor:
        """The layer scales ``tau``, shape ``(*S, L + 1)``: the site's value in ``params``
        when learned, the fixed buffer otherwise."""
        return params["layer_scale"] if "layer_scale" in params else self.layer_scale

    def column_scales(self, layer_scale: torch.Tensor) -> list[torch.Tensor]:
        """The scales :meth:`propagate` applies to each layer's weight, in layer order
        (the hidden layers, then the head).

        Parameters
        ----------
        layer_scale : Tensor, shape ``(*S, L + 1)``
            The scales ``tau`` (see :meth:`layer_scale_value`).

        Returns
        -------
        list of Tensor
            Hidden layer ``i``: ``tau_i``, shape ``(*S, 1, 1)``; the head: ``tau_L`` on
            the hidden columns and 1 on the skip columns, shape ``(*S, 1, in)`` (or
            ``(*S, 1, 1)`` where it reads only one of them). Constant where ``tau`` is
            fixed: a caller may compute them once and pass them to :meth:`propagate`.
        """
        tau = layer_scale[..., None, :]  # (*S, 1, L + 1): broadcasts against a weight
        n = len(self.hidden)
        out = [tau[..., i:i + 1] for i in range(n)]
        if not n:  # the head reads the inputs: a softplus GLM
            out.append(torch.ones_like(tau))
        elif self.skip:  # tau_L scales the hidden columns, not the inputs
            width = self.hidden_sizes[-1]
            out.append(torch.cat([tau[..., -1:].expand(*tau.shape[:-1], width),
                                  torch.ones_like(tau[..., :1]).expand(
                                      *tau.shape[:-1], self.in_features)], dim=-1))
        else:
            out.append(tau[..., -1:])
        return out

    def propagate(self, X: torch.Tensor, linear, layer_scale: torch.Tensor | None = None, *,
                  scales: list[torch.Tensor] | None = None):
        """Run the network with the affine maps supplied by ``linear``.

        This is the network's structure, written once: :meth:`raw_outputs` supplies the
        affine maps of given weights, an inference engine may supply others (e.g. the
        local reparameterisation of a Gaussian over the weights).

        Parameters
        ----------
        X : Tensor, shape ``(n, in_features)``
        linear : callable
            ``linear(prefix, u, scale, x)`` returns ``[u, x] @ (scale * W).T + b`` (shape
            ``(*S, n, out)``) for the layer whose sites are ``f"{prefix}.weight"`` and
            ``f"{prefix}.bias"`` (``"hidden.{i}"`` and ``"head.proj"``); ``u`` has shape
            ``(*S, n, k)`` or ``(n, k)``; ``x`` is None, or for the head with the skip
            term the inputs ``X`` (shape ``(n, in_features)``, read as the last columns
            of the layer's input, next to ``u``, for every draw); ``scale`` (the layer
            scales ``tau`` of the weight's columns) has shape ``(*S, 1, 1)`` or
            ``(*S, 1, in)``. Scaling the weight rather than ``u`` spares a pass over the
            activations; passing ``X`` apart lets an engine skip the concatenation and
            the gradient of the data.
        layer_scale : Tensor, shape ``(*S, L + 1)``
            The scales ``tau`` (see :meth:`layer_scale_value`).
        scales : list of Tensor, optional
            :meth:`column_scales` of ``layer_scale``, computed beforehand (then
            ``layer_scale`` is not needed).

        Returns
        -------
        hidden : list of Tensor
            Output of each hidden layer, shape ``(*S, n, width_i)``.
        raw : dict of str to Tensor
            The head's raw outputs, each of shape ``(*S, n)``.
        """
        if scales is None:
            scales = self.column_scales(layer_scale)
        hidden, h = [], X
        for i in range(len(scales) - 1):
            h = self.act(linear(f"hidden.{i}", h, scales[i], None))
            hidden.append(h)
        if not hidden:
            out = linear("head.proj", X, scales[-1], None)
        else:  # the skip columns passed apart: no concatenated array, no gradient for X
            out = linear("head.proj", h, scales[-1], X if self.skip else None)
        return hidden, {name: out[..., j] for j, name in enumerate(self.raw_names)}

    def _affine(self, params: dict):
        """``linear`` of :meth:`propagate` for the weights in ``params``."""
        def linear(prefix, u, scale, x):
            w, b = params[f"{prefix}.weight"], params[f"{prefix}.bias"]
            if x is not None:
                u = torch.cat([u, x.expand(*u.shape[:-1], x.shape[-1])], dim=-1)
            return torch.matmul(u, (w * scale).transpose(-1, -2)) + b.unsqueeze(-2)
        return linear

    def hidden_activations(self, X: torch.Tensor, params: dict) -> list[torch.Tensor]:
        """Outputs of each hidden layer, shape ``(*S, n, width_i)``.

        Parameters
        ----------
        X : Tensor, shape ``(n, in_features)``
        params : dict
            Site values as from :meth:`sample_params`, each with optional leading draw
            dimensions ``S`` (shared by all sites); a fixed ``layer_scale`` may be omitted.
        """
        return self.propagate(X, self._affine(params), self.layer_scale_value(params))[0]

    def raw_outputs(self, X: torch.Tensor, params: dict) -> dict[str, torch.Tensor]:
        """The head's raw outputs, each of shape ``(*S, n)``; see :meth:`hidden_activations`."""
        return self.propagate(X, self._affine(params), self.layer_scale_value(params))[1]

    def distribution(self, X, params, exposure=None):
        """The count distribution of rows ``X`` under ``params``: ``batch_shape (*S, n)``."""
        return self.head.distribution(self.raw_outputs(X, params), exposure)

    # --------------------------------------------------------------- the model
    def forward(self, X, y=None, *, exposure=None, weights=None, subsample_size=None,
                subsample=None):
        """Run the model: weights from their priors, then ``"obs"`` for the selected rows.

        Parameters
        ----------
        X : Tensor, shape ``(n, in_features)``
        y : Tensor, shape ``(n,)``, optional
            Observed counts (``None``: sample them).
        exposure, weights : Tensor, shape ``(n,)``, optional
        subsample_size : int, optional
            Rows drawn at random for this call (the log-likelihood is scaled by ``n / size``).
        subsample : Tensor of int64, optional
            Explicit row indices for this call (e.g. one batch of an epoch).

        Returns
        -------
        Tensor, shape ``(rows,)``
            The observed (or sampled) counts of the selected rows.
        """
        params = self.sample_params()  # global sites, sampled outside the data plate
        plate = pyro.plate("data", X.shape[0], subsample_size=subsample_size,
                           subsample=subsample, device=X.device)
        idx = plate.indices
        full = idx.numel() == X.shape[0] and subsample is None and subsample_size is None
        pick = (lambda a: a) if full else (lambda a: None if a is None else a.index_select(0, idx))
        d = self.distribution(pick(X), params, exposure=pick(exposure))
        w = pick(weights)
        with plate, poutine.scale(scale=1.0 if w is None else w):
            return pyro.sample("obs", d, obs=pick(y))

    def extra_repr(self) -> str:
        return (f"hidden_sizes={self.hidden_sizes}, activation={self.activation_name!r}, "
                f"likelihood={self.likelihood!r}, skip={self.skip}, "
                f"learn_prior_scale={self.learn_prior_scale}")
