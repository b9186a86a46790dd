"""The Bayesian engines of the mixed-model regressor: NUTS, SVI and Laplace.

:class:`BayesianMixedMixin` fits :class:`~posheads.models.mixed.SoftplusGLMM` through
:class:`~posheads.inference.mixed_bayes.BayesianGLMM` with the engine that
``MixedCountRegressor(inference=...)`` names, sets the posterior means as the fitted
attributes, runs :func:`posheads.inference.checks.diagnose` (a
:class:`~posheads.inference.checks.SamplerWarning` per shortfall), and converts the draws to
``arviz.InferenceData`` with the group effects on named dimensions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted

from posheads.inference.checks import diagnose
from posheads.inference.mixed_bayes import BayesianGLMM

from ._inference import engine_budget
from ._validation import torch_seed

__all__ = ["ENGINES", "BayesianMixedMixin"]

#: The names ``inference=`` takes; "ml" is maximum marginal likelihood.
ENGINES = ("ml", "nuts", "svi", "laplace")


class BayesianMixedMixin:
    """NUTS / SVI / Laplace fits of a mixed model (see the module docstring)."""

    def _engine(self):
        """The configuration of :mod:`posheads.inference` that ``inference`` names."""
        from posheads import inference

        if self.inference == "nuts":
            # imported here: the NUTS machinery stays off the path of a MAP fit
            from posheads.inference.mixed_nuts import glmm_nuts

            return glmm_nuts(num_samples=self.num_samples, num_warmup=self.num_warmup,
                             num_chains=self.num_chains)
        if self.inference == "svi":
            # the guide starts at the joint mode: from the prior median a mean-field
            # guide of a non-centred hierarchy can take thousands of steps to find the
            # fixed effects
            return inference.SVI(num_steps=self.num_steps, num_samples=self.num_samples,
                                 init="map")
        if self.inference == "laplace":
            return inference.Laplace(num_samples=self.num_samples)
        raise ValueError(f"inference must be one of {ENGINES}, got {self.inference!r}")

    def _fit_bayes(self, data) -> None:
        """Fit with NUTS or SVI, or (``"laplace"``, after the ML fit) draw from the
        Laplace approximation of the marginal posterior; set the posterior means."""
        config = self._engine()
        if self.inference == "laplace":
            self.posterior_ = self._marginal_laplace(data)
        else:
            model = BayesianGLMM(self.model_)
            if self.inference == "nuts":
                from posheads.inference.mixed_nuts import nuts_model

                model = nuts_model(self.model_, data)  # NUTS's coordinates
            post = config.fit(model, data,
                              seed=torch_seed(self.random_state), verbose=self.verbose)
            for k in [k for k, v in post.samples.items() if not v.is_floating_point()]:
                del post.samples[k]  # a plate's subsample indices (SVI's guide)
            self.posterior_ = post
        self.n_obs_ = data.n
        self.loglik_ = float("nan")  # a posterior, not a maximum
        means = self.posterior_.point_estimate()
        coef = means["coef"].numpy()
        split = self.fit_intercept and not self.formula
        self.intercept_ = float(coef[0]) if split else 0.0
        self.coef_ = coef[1:] if split else coef
        for s in self.model_.family.shape_names:
            setattr(self, f"{s}_", float(means[s]))
        self._set_zero_part(means)
        self.sd_, self.corr_, self.random_effects_ = {}, {}, {}
        draws = self.posterior_.draws()
        for e in data.effects:
            sd, L = draws[f"{e.name}_sd"], self._corr_chol_draws(draws, e.name, e.q)
            lam = sd.unsqueeze(-1) * L
            u = draws[f"{e.name}_z"] @ lam.transpose(-1, -2)
            self.sd_[e.name] = sd.mean(0).numpy()
            self.corr_[e.name] = (L @ L.transpose(-1, -2)).mean(0).numpy()
            self.random_effects_[e.name] = pd.DataFrame(u.mean(0).numpy(),
                                                        index=self.levels_[e.name],
                                                        columns=list(e.terms))
        self.diagnostics_ = diagnose(self.posterior_, budget=engine_budget(config))

    def _marginal_laplace(self, data):
        """Draws of the fixed parameters from ``N(theta_hat, fit_.cov)`` of the ML fit and
        of each level's effect from its conditional normal: the Laplace approximation of
        the marginal posterior under flat priors (as INLA's empirical-Bayes variant).

        The Laplace approximation of the *joint* posterior of parameters and
        non-centred effects is not used: its mode trades small effects ``z`` for a
        large ``sd`` (up to where the SD's prior stops it), so its SDs are far too
        large.
        """
        from posheads.posterior import Posterior

        gen = torch.Generator().manual_seed(torch_seed(self.random_state) or 0)
        values = self._ml_draws(int(self.num_samples), gen)
        samples = {}
        for k, v in values.items():
            if not k.endswith("_u"):
                samples[k] = v
        for e in data.effects:
            lam = values[f"{e.name}_sd"].unsqueeze(-1) * values[f"{e.name}_corr_chol"]
            u = values[f"{e.name}_u"]  # (S, G, q) -> z with u = z lam'
            z = torch.linalg.solve_triangular(lam, u.transpose(-1, -2), upper=False)
            samples[f"{e.name}_z"] = z.transpose(-1, -2)
            if e.q == 1:
                del samples[f"{e.name}_corr_chol"]
        samples = {k: v[None] for k, v in samples.items()}
        extra = {"converged": self.fit_.converged, "n_iter": self.fit_.n_iter}
        return Posterior(BayesianGLMM(self.model_), samples, method="laplace", data=data,
                         extra=extra)

    @staticmethod
    def _corr_chol_draws(draws, name, q):
        key = f"{name}_corr_chol"
        if key in draws:
            return draws[key]
        S = len(draws[f"{name}_sd"])
        return torch.ones(S, 1, 1, dtype=draws[f"{name}_sd"].dtype)

    def _bayes_table(self, coverage) -> pd.DataFrame:
        """Posterior means, SDs and equal-tailed intervals of every parameter."""
        draws, lo, hi = self.posterior_.draws(), (1 - coverage) / 2, (1 + coverage) / 2
        rows = []

        def add(kind, name, x):
            x = np.asarray(x, dtype=np.float64)
            rows.append((kind, name, x.mean(), x.std(ddof=1) if len(x) > 1 else np.nan,
                         np.quantile(x, lo), np.quantile(x, hi)))

        coef = draws["coef"].numpy()
        for j, f in enumerate(self.feature_names_):
            add("fixed", f, coef[:, j])
        for name, terms in self.random_terms_.items():
            sd = draws[f"{name}_sd"].numpy()
            for j, t in enumerate(terms):
                add("sd", f"{name}: {t}", sd[:, j])
            L = self._corr_chol_draws(draws, name, len(terms))
            C = (L @ L.transpose(-1, -2)).numpy()
            for a, b in zip(*np.tril_indices(len(terms), -1), strict=True):
                add("corr", f"{name}: {terms[b]}, {terms[a]}", C[:, a, b])
        for s in self.model_.family.shape_names:
            add("family", s, draws[s].numpy())
        for p in self.model_.family.part_names:
            add("family", f"{p}_intercept (logit)", draws[f"{p}_intercept"].numpy())
        for key in self._zero_coef_blocks():  # "{part}_coef": rows "{part}:{name}"
            for j, f in enumerate(self.zero_coef_names_):
                add("fixed", f"{key[:-len('_coef')]}:{f}", draws[key][:, j].numpy())
        return pd.DataFrame(rows, columns=["kind", "name", "estimate", "std_error", "lower",
                                           "upper"]).set_index(["kind", "name"])

    def to_inference_data(self, predictive: bool = True):
        """The posterior as ``arviz.InferenceData`` (Bayesian engines only).

        The ``posterior`` group holds ``coef`` (dims ``chain, draw, term``), a zero
        part's coefficients ``{part}_coef`` (``{part}_term``, the names of
        ``zero_coef_names_``), each factor's
        ``{k}_sd`` (``{k}_term``), ``{k}_corr`` (``{k}_term, {k}_term_``) and
        ``{k}_effect`` -- the group effects ``u`` on the linear predictor of the
        factor's part (the count part's ``eta``, or for ``"{part}|{k}"`` the zero part's
        logits),
        dims ``(chain, draw, k, {k}_term)`` with the level labels and term names as
        coordinates -- beside the engine's own sites (the non-centred ``{k}_z``); and, as
        :meth:`posheads.posterior.Posterior.to_inference_data` gives them, the pointwise
        log-likelihood, the observed data and (``predictive``) the posterior predictive.

        Returns
        -------
        arviz.InferenceData
        """
        check_is_fitted(self, "levels_")
        if self.inference == "ml":
            raise ValueError("to_inference_data needs a Bayesian engine "
                             "(inference='nuts', 'svi' or 'laplace'); this fit is 'ml'")
        post = self.posterior_
        idata = post.to_inference_data(predictive=predictive,
                                       seed=torch_seed(self.random_state))
        chains, draws = post.num_chains, post.num_draws
        samples = post.draws()
        ds = idata.posterior.assign_coords(term=list(self.feature_names_))
        coef = samples["coef"].numpy().reshape(chains, draws, -1)
        ds = ds.assign(coef=(("chain", "draw", "term"), coef))
        for key in self._zero_coef_blocks():  # a zero part's coefficients, named
            dim = f"{key[:-len('_coef')]}_term"
            ds = ds.drop_vars([key, *[d for d in ds[key].dims if d not in ("chain", "draw")]])
            ds = ds.assign_coords({dim: list(self.zero_coef_names_)}).assign(
                {key: (("chain", "draw", dim), samples[key].numpy().reshape(chains, draws, -1))})
        for name, terms in self.random_terms_.items():
            q = len(terms)
            sd = samples[f"{name}_sd"]
            L = self._corr_chol_draws(samples, name, q)
            u = samples[f"{name}_z"] @ (sd.unsqueeze(-1) * L).transpose(-1, -2)
            corr = (L @ L.transpose(-1, -2)).numpy().reshape(chains, draws, q, q)
            tdim = f"{name}_term"
            ds = ds.assign_coords({name: [str(v) for v in self.levels_[name]],
                                   tdim: list(terms), f"{tdim}_": list(terms)})
            ds = ds.assign({
                f"{name}_sd": (("chain", "draw", tdim), sd.numpy().reshape(chains, draws, q)),
                f"{name}_corr": (("chain", "draw", tdim, f"{tdim}_"), corr),
                f"{name}_effect": (("chain", "draw", name, tdim),
                                   u.numpy().reshape(chains, draws, -1, q)),
            })
        idata.posterior = ds
        return idata
