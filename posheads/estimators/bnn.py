"""``BayesianNeuralCountRegressor``: a Bayesian MLP for counts with a scikit-learn interface.

The network is :class:`posheads.models.bnn.BayesianCountMLP` (hidden layers, a softplus-GLM
skip term, a Poisson / negative-binomial / zero-inflated count head); the fit is SVI
(:mod:`posheads.inference`) or, for small networks, NUTS. Inputs are
standardised inside (weighted mean and standard deviation), so the priors mean the same
thing whatever the units of ``X``. Predictions average over posterior draws: ``predict``
is the posterior mean of ``E[y | x]``, intervals and samples come from the posterior
predictive distribution.
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from posheads import families
from posheads.inference.checks import diagnose_draws
from posheads.inference.common import GUIDES, intra_op_threads, seeded

from ._persist import PersistMixin
from ._scoring import d2_score
from ._validation import (
    check_counts,
    check_exposure,
    check_not_all_zero,
    check_sample_weight,
    check_target_scale,
    numeric_target,
    resolve_device,
    resolve_dtype,
    to_torch,
    torch_seed,
)
from .design import DataDesign, needs_encoding

__all__ = ["BayesianNeuralCountRegressor"]

# Rows per chunk of a prediction are chosen so that draws x rows x width stays below this.
_CHUNK_ELEMENTS = 2**24
# SVI steps whose largest activation holds fewer numbers than this run on one intra-op
# thread: below it, synchronising threads costs more than they save.
_SERIAL_STEP = 2**20
# The step size decays tenfold over the run, damping the jitter of Monte Carlo gradients.
_LR_DECAY = 0.1


def _weighted_moments(X, w, chunk: int = 65536):
    """Weighted mean and standard deviation of the columns, in float64, ``chunk`` rows at a
    time (two passes; no temporary of the size of ``X``).

    Returns
    -------
    mean, sd : ndarray of shape (n_features,)
    """
    total = w.sum()
    mean = sum(w[i:i + chunk] @ X[i:i + chunk].astype(np.float64)
               for i in range(0, len(X), chunk)) / total
    var = sum(w[i:i + chunk] @ (X[i:i + chunk].astype(np.float64) - mean) ** 2
              for i in range(0, len(X), chunk)) / total
    return mean, np.sqrt(var)


class BayesianNeuralCountRegressor(PersistMixin, RegressorMixin, BaseEstimator):
    """Bayesian neural network regression of counts with a softplus-link head.

    ``E[y | x] = exposure * softplus(b + tau_L h(x) @ W_h + x @ W_x)``, with ``h`` an MLP
    of the standardised inputs, Gaussian priors on all weights and a count likelihood.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(32,)
        Widths of the hidden layers (``()``: a Bayesian softplus GLM).
    activation : {"softplus", "relu", "tanh", "gelu", "silu", "elu", "sigmoid"}
        Hidden activation.
    likelihood : str or Family, default="negative_binomial"
        The family of the count head (``posheads.families.get_family``): ``"poisson"``,
        ``"negative_binomial"``, the zero-inflated and hurdle families, or your own.
        Poisson and negative binomial accept non-integer targets (a quasi-likelihood, as
        scikit-learn's Poisson regression does).
    activation_beta : float, default=1.0
        Softness of the softplus activation.
    skip_connection : bool, default=True
        Add the linear term ``x @ W_x`` (a softplus GLM) to the head's predictor.
    prior_scale : float, default=2.0
        Scale ``tau`` of the hidden weights: layer ``i`` applies ``tau * W`` with
        ``W ~ Normal(0, 1 / fan_in)``. With ``hierarchical=True``, the scale of a
        ``HalfNormal`` prior on ``tau``.
    hierarchical : bool, default=False
        Learn ``tau`` per layer (a latent site) instead of fixing it.
    coef_scale : float, default=1.0
        Prior scale of the skip coefficients (per standardised feature).
    inference : {"svi", "nuts"}, default="svi"
        SVI, or NUTS started from the SVI fit (small networks only: NUTS costs a full
        pass over the data per leapfrog step).
    guide : {"last_layer", "normal", "multivariate_normal", "lowrank"}, default="last_layer"
        Variational family (:func:`posheads.inference.common.make_guide`): point
        estimates of the hidden layers with a mean-field Gaussian over the head and
        scales, a mean-field Gaussian over everything, a full-rank or a low-rank Gaussian.
        Point estimates for the feature layers with a Bayesian read-out keep both the
        features and the predictive uncertainty of the head, where a fully mean-field
        network pays a KL price for every hidden weight it moves away from its prior
        and leans on the GLM skip term instead.
    engine : {"auto", "torch", "pyro"}, default="auto"
        How SVI computes its loss. ``"torch"``: the ELBO in one batched pass of the
        network (:class:`posheads.inference.bnn_elbo.MeanFieldBNN`: local
        reparameterisation of the Gaussian layers, closed-form KL terms), for the
        ``"normal"`` and ``"last_layer"`` guides; ``"pyro"``: Pyro's ``Trace_ELBO`` on
        the model and an autoguide (every guide). ``"auto"`` is ``"torch"`` where it
        applies. Both optimise the same objective with the same variational family.
    num_steps : int, default=1500
        Largest number of SVI steps.
    batch_size : int or None, default=None
        Rows per SVI step (``None``: all rows, one step per epoch).
    learning_rate : float, default=0.01
        Adam's initial step size (decays tenfold over ``num_steps``).
    init_scale : float, default=0.01
        Initial standard deviation of the Gaussian guide (softplus-mapped).
    patience : int or None, default=300
        Stop SVI when the smoothed loss has not improved for this many steps.
    num_samples : int, default=500
        Posterior draws kept for prediction.
    num_warmup : int, default=300
        NUTS warm-up steps.
    device : str or torch.device, default="auto"
        "auto" is CUDA when available, else CPU.
    dtype : {"float32", "float64"}, default="float32"
        Floating dtype of the fit (float32 halves the memory traffic of every step).
        Predictions are computed in float64 from the stored draws.
    random_state : int, RandomState or None, default=None
    verbose : int, default=0
        Progress bars when > 0.

    Attributes
    ----------
    samples_ : dict of str to Tensor
        Posterior draws, ``site -> (num_samples, *site_shape)``.
    model_ : BayesianCountMLP
        The fitted network's structure and priors.
    x_mean_, x_scale_ : ndarray of shape (n_features_in_,)
        Standardisation of the inputs.
    loss_curve_ : ndarray of shape (n_iter_,)
        SVI loss per row at every step.
    n_iter_ : int
    converged_ : bool
        Whether SVI stopped on its plateau rule.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` had string column names.
    design_ : DataDesign or None
        How a data frame with categorical, string or boolean columns became the inputs
        (treatment coding, :mod:`posheads.estimators.design`), re-applied at predict
        time; ``None`` for numeric inputs.

    Notes
    -----
    Steps whose largest activation holds fewer than ``2**20`` numbers run on one CPU
    thread (restored afterwards): at that size torch's intra-op threads cost more in
    synchronisation than they save, badly so on a busy machine.

    Examples
    --------
    >>> import numpy as np
    >>> from posheads import BayesianNeuralCountRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 2))
    >>> y = rng.poisson(np.logaddexp(0, 1 + np.sin(2 * X[:, 0])))
    >>> est = BayesianNeuralCountRegressor((8,), num_steps=200, random_state=0).fit(X, y)
    >>> est.predict_interval(X[:3]).shape
    (3, 2)
    """

    _parameter_constraints: ClassVar[dict] = {
        "hidden_layer_sizes": [tuple, list],
        "activation": [StrOptions({"softplus", "relu", "tanh", "gelu", "silu", "elu",
                                   "sigmoid"})],
        "likelihood": [str, families.Family],
        "activation_beta": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "skip_connection": ["boolean"],
        "prior_scale": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "hierarchical": ["boolean"],
        "coef_scale": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "inference": [StrOptions({"svi", "nuts"})],
        "guide": [StrOptions(set(GUIDES))],
        "engine": [StrOptions({"auto", "torch", "pyro"})],
        "num_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "init_scale": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "patience": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "num_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "num_warmup": [Interval(numbers.Integral, 0, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [str, torch.dtype, type],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, hidden_layer_sizes=(32,), activation="softplus", *,
                 likelihood="negative_binomial", activation_beta=1.0, skip_connection=True,
                 prior_scale=2.0, hierarchical=False, coef_scale=1.0, inference="svi",
                 guide="last_layer", engine="auto", num_steps=1500, batch_size=None,
                 learning_rate=0.01, init_scale=0.01, patience=300, num_samples=500,
                 num_warmup=300,
                 device="auto", dtype="float32", random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.likelihood = likelihood
        self.activation_beta = activation_beta
        self.skip_connection = skip_connection
        self.prior_scale = prior_scale
        self.hierarchical = hierarchical
        self.coef_scale = coef_scale
        self.inference = inference
        self.guide = guide
        self.engine = engine
        self.num_steps = num_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.init_scale = init_scale
        self.patience = patience
        self.num_samples = num_samples
        self.num_warmup = num_warmup
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags

    # ------------------------------------------------------------- validation
    @property
    def _family(self) -> families.Family:
        return families.get_family(self.likelihood)

    def _validate_fit_data(self, X, y, sample_weight, exposure):
        y = numeric_target(y)
        if needs_encoding(X):  # categorical, text or boolean columns: treatment coding
            design, X, _, y = DataDesign.fit(X, y=y)
            if y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                                 "target y is None")
            y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
            if len(y) != X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)}")
            self.design_ = design
            self.feature_names_in_ = np.asarray(design.feature_names_in, dtype=object)
            self.n_features_in_ = len(self.feature_names_in_)
        else:
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True,
                                 reset=True)
            self.design_ = None
        y = np.asarray(y, dtype=np.float64)
        check_counts(y, integer=self._family.integer)
        check_target_scale(y, whole=self._family.support == "counts")
        w = check_sample_weight(sample_weight, X, dtype=np.float64)
        check_not_all_zero(y, w)
        t = check_exposure(exposure, X.shape[0], np.float64)
        return X, y, w, t

    def _standardised(self, X, exposure=None):
        """Validated ``X`` as a standardised float64 tensor, and the exposure as a tensor."""
        check_is_fitted(self)
        if getattr(self, "design_", None) is not None:
            X = check_array(self.design_.transform(X)[0], dtype=np.float64)
        else:
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        t = check_exposure(exposure, X.shape[0], np.float64)
        Z = (np.asarray(X, dtype=np.float64) - self.x_mean_) / self.x_scale_
        return (to_torch(Z, device=self._device, dtype=torch.float64),
                to_torch(t, device=self._device, dtype=torch.float64))

    def _torch(self, a):
        return to_torch(a, device=self._device, dtype=self._dtype)

    def _standardised_copy(self, X) -> torch.Tensor:
        """``(X - x_mean_) / x_scale_`` as one new tensor of the fit's dtype and device."""
        # np.require copies a read-only array (a copy-on-write frame's) for torch
        Z = torch.as_tensor(np.require(X, requirements="W")).to(
            device=self._device, dtype=self._dtype, copy=True)
        Z.sub_(torch.as_tensor(self.x_mean_, device=self._device, dtype=self._dtype))
        return Z.div_(torch.as_tensor(self.x_scale_, device=self._device, dtype=self._dtype))

    # -------------------------------------------------------------------- fit
    def _build_model(self, n_features: int):
        from posheads.models.bnn import BayesianCountMLP, local_params

        sizes = tuple(int(h) for h in self.hidden_layer_sizes)
        with local_params():  # the module keeps its parameters to itself
            model = BayesianCountMLP(
                n_features, sizes, activation=self.activation,
                activation_beta=float(self.activation_beta), likelihood=self._family,
                skip=self.skip_connection, prior_scale=float(self.prior_scale),
                learn_prior_scale=self.hierarchical, coef_scale=float(self.coef_scale))
        return model.to(device=self._device, dtype=self._dtype)

    def fit(self, X, y, sample_weight=None, exposure=None):
        """Fit the posterior of the network's weights.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            A data frame's categorical, string and boolean columns are encoded in
            treatment coding (as the GLM regressors do), then standardised.
        y : array-like of shape (n_samples,)
            Counts (non-negative; whole numbers for the zero-inflated heads).
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights scaling each row's log-likelihood.
        exposure : array-like of shape (n_samples,), default=None
            Positive exposure ``t``: the mean is ``t * softplus(eta)``.

        Returns
        -------
        self : object
        """
        self._validate_params()
        sizes = self.hidden_layer_sizes
        if not all(isinstance(h, numbers.Integral) and h >= 1 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must hold positive ints, got {sizes!r}")
        X, y, w, t = self._validate_fit_data(X, y, sample_weight, exposure)
        self._device, self._dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        self.x_mean_, spread = _weighted_moments(X, w)
        self.x_scale_ = np.where(spread > 0, spread, 1.0)  # a constant column stays 0
        data = {"X": self._standardised_copy(X), "y": self._torch(y),
                "exposure": self._torch(t), "weights": self._torch(w)}
        self.model_ = self._build_model(X.shape[1])
        keep = torch.as_tensor(w > 0, device=self._device)
        self.model_.init_from_targets(data["y"][keep],
                                      None if t is None else data["exposure"][keep])
        width = max((*self.model_.hidden_sizes, X.shape[1]))
        rows = X.shape[0] if self.batch_size is None else min(self.batch_size, X.shape[0])
        with intra_op_threads(rows * width, self._device, limit=_SERIAL_STEP):
            self._fit_posterior(data, torch_seed(self.random_state))
        self._train = (X, y, t)
        budget = {"num_steps": self.num_steps} if self.inference == "svi" else \
            {"num_warmup": self.num_warmup, "num_samples": self.num_samples}
        self.diagnostics_ = diagnose_draws(
            self.inference, {k: v[None] for k, v in self.samples_.items()},
            sample_stats={k: v[None] for k, v in self.sample_stats_.items()},
            extra={"converged": self.converged_, "n_iter": self.n_iter_}, budget=budget,
            plateau=self.patience is not None)
        return self

    def _fit_posterior(self, data: dict, seed: int | None) -> None:
        """SVI on mini-batches of an epoch-wise permutation (the inference stack's state,
        plateau rule and guide factory), then draws from the guide or, for
        ``inference="nuts"``, NUTS started at the guide's median."""
        from posheads.inference import NUTS
        from posheads.inference.common import Plateau, child_seeds, epoch_batches, make_guide
        from posheads.inference.svi import SVIState, run_steps
        from posheads.models.bnn import init_locations, local_params

        n = data["X"].shape[0]
        svi_seed, batch_seed = child_seeds(seed, 2)
        if self._one_pass():
            return self._fit_one_pass(data, seed, svi_seed, batch_seed)
        with local_params():
            guide = make_guide(self.model_, self.guide, init_locations(self.model_),
                               init_scale=float(self.init_scale))
            # the data were validated by fit(): Pyro checks the first step only
            state = SVIState(self.model_, guide, learning_rate=self.learning_rate,
                             gamma=_LR_DECAY ** (1.0 / self.num_steps), clip_norm=10.0,
                             seed=svi_seed, check_every_step=False)
            batches = ({**data, "subsample": idx} for idx in
                       epoch_batches(n, self.batch_size, batch_seed, data["X"].device))
            converged = run_steps(state, batches, self.num_steps,
                                  Plateau(self.patience, 0.0), self.verbose, loss_scale=1.0 / n)
            self.loss_curve_ = np.asarray(state.losses, dtype=np.float64) / n
            self.n_iter_, self.converged_ = state.num_steps, bool(converged)
            if self.inference == "svi":
                draws = state.sample(self.num_samples, data)
                self.sample_stats_ = {}
            else:
                start = {k: v.detach() for k, v in guide.median(**data).items()}
                nuts = NUTS(num_samples=self.num_samples, num_warmup=self.num_warmup,
                            init="uniform", dense_mass=False, max_tree_depth=8)
                post = nuts.fit(self.model_, data, seed=seed, verbose=self.verbose,
                                start=start)
                draws = {k: v[0] for k, v in post.samples.items()}
                self.sample_stats_ = {"diverging": post.sample_stats["diverging"][0]}
        self.samples_ = {k: v.detach() for k, v in draws.items()}

    def _one_pass(self) -> bool:
        """Whether SVI runs on the one-pass ELBO (``engine``, for the mean-field guides)."""
        mean_field = self.guide in ("normal", "last_layer")
        if self.engine == "torch" and not mean_field:
            raise ValueError(f"engine='torch' needs guide 'normal' or 'last_layer', got "
                             f"guide={self.guide!r}; use engine='pyro' for it")
        return mean_field and self.engine != "pyro"

    def _fit_one_pass(self, data: dict, seed, svi_seed, batch_seed) -> None:
        """SVI on the one-pass ELBO of the mean-field posterior (the same schedule as the
        Pyro path), then draws from it or NUTS started at its median."""
        from posheads.inference import NUTS
        from posheads.inference.bnn_elbo import MeanFieldBNN
        from posheads.inference.bnn_svi import MeanFieldSVI
        from posheads.inference.common import Plateau, epoch_batches
        from posheads.inference.svi import run_steps
        from posheads.models.bnn import init_locations, local_params

        n = data["X"].shape[0]
        if bool((data["weights"] == 1).all()):  # unweighted: spare a gather and a product
            data = {**data, "weights": None}
        point = [f"hidden.{i}.{p}" for i in range(len(self.model_.hidden_sizes))
                 for p in ("weight", "bias")] if self.guide == "last_layer" else []
        with local_params(), seeded(svi_seed, self._device):
            posterior = MeanFieldBNN(self.model_, point, init_loc_fn=init_locations(self.model_),
                                     init_scale=float(self.init_scale))
        state = MeanFieldSVI(posterior, learning_rate=self.learning_rate,
                             gamma=_LR_DECAY ** (1.0 / self.num_steps), clip_norm=10.0,
                             seed=svi_seed)
        batches = ({**data, "subsample": idx} for idx in
                   epoch_batches(n, self.batch_size, batch_seed, data["X"].device))
        converged = run_steps(state, batches, self.num_steps, Plateau(self.patience, 0.0),
                              self.verbose, loss_scale=1.0 / n)
        self.loss_curve_ = np.asarray(state.losses, dtype=np.float64) / n
        self.n_iter_, self.converged_ = state.num_steps, bool(converged)
        self.sample_stats_ = {}
        if self.inference == "svi":
            generator = torch.Generator(device=self._device)
            generator.manual_seed(int(torch.randint(2**62, ())) if svi_seed is None
                                  else svi_seed + 1)
            draws = posterior.sample(self.num_samples, generator)
        else:
            with local_params():
                nuts = NUTS(num_samples=self.num_samples, num_warmup=self.num_warmup,
                            init="uniform", dense_mass=False, max_tree_depth=8)
                post = nuts.fit(self.model_, data, seed=seed, verbose=self.verbose,
                                start=posterior.median())
            draws = {k: v[0] for k, v in post.samples.items()}
            self.sample_stats_ = {"diverging": post.sample_stats["diverging"][0]}
        self.samples_ = {k: v.detach() for k, v in draws.items()}

    # ------------------------------------------------------------- predicting
    def _chunks(self, n: int):
        width = max((*self.model_.hidden_sizes, self.n_features_in_, 1))
        draws = next(iter(self.samples_.values())).shape[0]
        step = max(1, _CHUNK_ELEMENTS // (draws * width))
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    def _distributions(self, Z, t):
        """Yield ``(rows, distribution with batch_shape (S, rows))`` chunk by chunk.

        Computed in float64 whatever ``dtype`` trained the network: in float32 the
        rounding of a matrix product depends on how many rows share it, and a row's
        prediction should not depend on which other rows are predicted with it.
        """
        params = {k: v.to(torch.float64) for k, v in self.samples_.items()}
        Z = Z.to(torch.float64)
        t = None if t is None else t.to(torch.float64)
        for rows in self._chunks(Z.shape[0]):
            with torch.no_grad():
                yield rows, self.model_.distribution(Z[rows], params,
                                                     None if t is None else t[rows])

    def predict(self, X, exposure=None):
        """Posterior mean of the expected count ``E[y | x]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        exposure : array-like of shape (n_samples,), default=None

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        Z, t = self._standardised(X, exposure)
        out = torch.empty(Z.shape[0], dtype=torch.float64)
        for rows, d in self._distributions(Z, t):
            out[rows] = d.mean.mean(0).to("cpu", torch.float64)
        return out.numpy()

    def sample_posterior_predictive(self, X, n_samples=1000, exposure=None, random_state=None):
        """Counts drawn from the posterior predictive distribution.

        Each count comes from one posterior draw of the weights; the draws are used in a
        shuffled order, each ``ceil(n_samples / num_samples)`` times at most.

        Parameters
        ----------
        X : array-like of shape (n_samples_X, n_features)
        n_samples : int, default=1000
        exposure : array-like of shape (n_samples_X,), default=None
        random_state : int, RandomState or None, default=None

        Returns
        -------
        ndarray of shape (n_samples, n_samples_X)
            Whole-number counts (float64).
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) \
                or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        Z, t = self._standardised(X, exposure)
        S = next(iter(self.samples_.values())).shape[0]
        reps = -(-n_samples // S)
        out = torch.empty(n_samples, Z.shape[0], dtype=torch.float64)
        devices = [self._device.index or 0] if self._device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed = torch_seed(random_state)
            torch.manual_seed(seed if seed is not None else torch.seed())
            # row j of the (reps * S) draws comes from posterior draw j mod S
            order = torch.randperm(S * reps)[:n_samples].to(self._device)
            for rows, d in self._distributions(Z, t):
                draws = d.sample((reps,)).reshape(reps * S, -1)[order]
                out[:, rows] = draws.to("cpu", torch.float64)
        return out.numpy()

    def predict_interval(self, X, coverage=0.9, exposure=None):
        """Posterior-predictive interval of the counts, equal-tailed where the support allows.

        The lower bound is the ``(1 - coverage) / 2`` quantile. Counts cannot fall below 0,
        so when that quantile is at the floor the lower tail holds less than its share
        of probability; the share left over moves to the upper tail. The upper bound is
        therefore the ``coverage + P(y < lower)`` quantile: the interval holds at least
        ``coverage`` of the predictive probability, and no more than the discreteness of
        the counts forces (a plain central interval of a count with many zeros holds
        ``1 - (1 - coverage) / 2``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        coverage : float, default=0.9
            Probability in (0, 1) between the bounds.
        exposure : array-like of shape (n_samples,), default=None

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Lower and upper bounds (whole numbers), from at least 2000 predictive draws.
        """
        if not (isinstance(coverage, numbers.Real) and 0 < coverage < 1):
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        from posheads.posterior import count_interval

        draws = self.sample_posterior_predictive(
            X, max(2000, self.num_samples), exposure=exposure,
            random_state=torch_seed(self.random_state))
        lo, hi = (b.numpy() for b in count_interval(torch.from_numpy(draws), coverage))
        return np.stack([lo, hi], axis=1)

    def score(self, X, y, sample_weight=None):
        """D², the fraction of the family's deviance explained (the Poisson's for counts).

        Returns
        -------
        float
            For a constant ``y``: 1 for a perfect fit, else 0 (never ``-inf`` or NaN).
        """
        mu = self.predict(X)
        mu = np.maximum(mu, np.finfo(np.float64).tiny)  # a zero mean has finite deviance
        return d2_score(self._family, y, mu, sample_weight)

    def hidden_activations(self, X):
        """Outputs of the hidden layers at the posterior mean of the weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        list of ndarray
            One ``(n_samples, width_i)`` array per hidden layer.
        """
        Z, _ = self._standardised(X)
        mean = {k: v.to(torch.float64).mean(0) for k, v in self.samples_.items()}
        with torch.no_grad():
            return [h.cpu().numpy() for h in self.model_.hidden_activations(Z, mean)]

    # ---------------------------------------------------------------- reports
    def to_inference_data(self, X=None, y=None, exposure=None):
        """The posterior as ``arviz.InferenceData``.

        Groups: ``posterior`` (every site, one chain), ``posterior_predictive`` and
        ``log_likelihood`` (site ``"obs"``, one value per draw and row),
        ``observed_data`` and, for NUTS, ``sample_stats`` (``diverging``).

        Parameters
        ----------
        X, y, exposure : array-like, optional
            Rows to evaluate; default the training data (kept by ``fit``).
        """
        import arviz as az

        check_is_fitted(self)
        if X is None:
            if not hasattr(self, "_train"):
                raise ValueError("no training data kept (a loaded estimator): pass X and y")
            X, y, exposure = self._train
        if y is None:
            raise ValueError("to_inference_data needs the counts y of the rows X")
        y = check_counts(np.asarray(y, dtype=np.float64).ravel(), integer=False)
        Z, t = self._standardised(X, exposure)
        logp = np.empty((self.num_draws_, Z.shape[0]))
        draws = np.empty_like(logp)
        with seeded(torch_seed(self.random_state), self._device):
            for rows, d in self._distributions(Z, t):
                obs = torch.as_tensor(y[rows], dtype=torch.float64, device=self._device)
                logp[:, rows] = d.log_prob(obs).cpu().numpy()
                draws[:, rows] = d.sample().cpu().numpy()
        posterior = {k: v.cpu().numpy()[None] for k, v in self.samples_.items()}
        stats = {k: v.cpu().numpy()[None] for k, v in self.sample_stats_.items()}
        return az.from_dict(posterior=posterior, posterior_predictive={"obs": draws[None]},
                            log_likelihood={"obs": logp[None]}, observed_data={"obs": y},
                            sample_stats=stats or None)

    @property
    def num_draws_(self) -> int:
        """Number of posterior draws kept."""
        check_is_fitted(self)
        return int(next(iter(self.samples_.values())).shape[0])

    # ------------------------------------------------------------ persistence
    def _get_state(self) -> dict:
        state = {"n_features_in_": int(self.n_features_in_), "x_mean_": self.x_mean_,
                 "x_scale_": self.x_scale_, "loss_curve_": self.loss_curve_,
                 "n_iter_": int(self.n_iter_), "converged_": self.converged_,
                 "samples_": dict(self.samples_), "sample_stats_": dict(self.sample_stats_),
                 "model_state": dict(self.model_.state_dict())}
        if hasattr(self, "feature_names_in_"):
            state["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        design = getattr(self, "design_", None)
        state["design_"] = None if design is None else design.to_dict()  # JSON
        return state

    def _set_state(self, state: dict) -> None:
        self._device, self._dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        self.n_features_in_ = int(state["n_features_in_"])
        if "feature_names_in_" in state:
            self.feature_names_in_ = np.asarray(state["feature_names_in_"], dtype=object)
        design = state.get("design_")
        self.design_ = None if design is None else DataDesign.from_dict(design)
        for name in ("x_mean_", "x_scale_", "loss_curve_"):
            setattr(self, name, np.asarray(state[name], dtype=np.float64))
        self.n_iter_, self.converged_ = int(state["n_iter_"]), bool(state["converged_"])
        self.model_ = self._build_model(len(self.x_mean_))  # the encoded width
        self.model_.load_state_dict(state["model_state"])
        move = {"device": self._device, "dtype": self._dtype}
        self.samples_ = {k: v.to(**move) for k, v in state["samples_"].items()}
        self.sample_stats_ = {k: v.to(self._device) for k, v in state["sample_stats_"].items()}
