"""Predictive draws of a mixed model that carry the group-level uncertainty.

:class:`MixedPredictiveMixin` gives :class:`~posheads.estimators.mixed.MixedCountRegressor`
:meth:`~MixedPredictiveMixin.sample_posterior_predictive` and
:meth:`~MixedPredictiveMixin.predict_interval`. Each predictive draw takes

* the fixed parameters: for a maximum-likelihood fit from their asymptotic normal
  ``N(theta_hat, fit_.cov)``; for a Bayesian fit from the posterior draws;
* the effect of a level seen in fitting: for maximum likelihood from its conditional
  distribution, ``N(u_hat_g, C_g)`` (the conditional mode and the conditional covariance
  ``Lambda H_g^{-1} Lambda'`` of the Laplace approximation); for a Bayesian fit the
  draw's own effect;
* the effect of a new level from ``N(0, Sigma)`` at the drawn ``Sigma``, one effect per
  new level shared by its rows (a row without a grouping label is a level of its own);

and then a count from the family at the resulting ``eta`` (and, with a zero part's
effects, at the resulting logits of the zero part).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from posheads.inference.mixed_bayes import draw_eta, draw_params
from posheads.models.mixed import RandomEffect, correlation_cholesky, part_logits
from posheads.posterior import count_interval

__all__ = ["MixedPredictiveMixin", "level_positions"]


def level_positions(levels: np.ndarray, labels: np.ndarray):
    """Position of each label among the sorted fitted ``levels`` and whether it is one.

    Returns
    -------
    (ndarray of int, ndarray of bool), shapes ``(n,)``
    """
    pos = np.clip(np.searchsorted(levels, labels), 0, len(levels) - 1)
    return pos, levels[pos] == labels


def _mvn(mean: torch.Tensor, cov: torch.Tensor, S: int, gen: torch.Generator):
    """``S`` draws of ``N(mean[g], cov[g])`` for every ``g``: shape ``(S, G, q)``."""
    q = cov.shape[-1]
    # the covariances come from an inverse Hessian: symmetrise and floor the eigenvalues
    # at 0 so that a numerically indefinite one still gives draws
    vals, vecs = torch.linalg.eigh(0.5 * (cov + cov.transpose(-1, -2)))
    root = vecs * vals.clamp_min(0).sqrt().unsqueeze(-2)
    eps = torch.randn((S, *mean.shape[:-1], q), generator=gen, dtype=mean.dtype)
    return mean + (root @ eps.unsqueeze(-1)).squeeze(-1)


def _batched_corr_chol(raw, q, S, dtype):
    """:func:`~posheads.models.mixed.correlation_cholesky` of each of ``S`` raw vectors."""
    M = torch.eye(q, dtype=dtype).repeat(S, 1, 1)
    if q > 1:
        rows, cols = torch.tril_indices(q, q, offset=-1)
        M[:, rows, cols] = raw
    return M / M.norm(dim=-1, keepdim=True)


class MixedPredictiveMixin:
    """Predictive draws with group-level uncertainty (see the module docstring)."""

    # ------------------------------------------------------------ parameter draws
    def _ml_draws(self, S: int, gen: torch.Generator) -> dict:
        """Site values of ``S`` draws of the fixed parameters and the seen levels' effects
        (``"{k}_u"``, ``(S, G, q)``) from the maximum-likelihood fit's normal laws."""
        fit, model, layout_data = self.fit_, self.model_, self._layout_data()
        theta = torch.as_tensor(fit.theta)
        if fit.cov is not None and np.isfinite(fit.cov).all():
            thetas = _mvn(theta[None], torch.as_tensor(fit.cov)[None], S, gen)[:, 0]
        else:  # no covariance (not computed or singular): the estimate itself
            thetas = theta.expand(S, -1)
        blocks, i = {}, 0
        for key, shape in model.layout(layout_data).items():  # batched unpack
            size = int(torch.Size(shape).numel())
            blocks[key] = thetas[:, i:i + size].reshape(S, *shape)
            i += size
        values = {"coef": blocks["coef"]}
        for p in model.family.parts:
            for key in (f"{p.name}_intercept", f"{p.name}_coef"):
                if key in blocks:
                    values[key] = blocks[key]
        for s in model.family.shapes:
            values[s.name] = torch.nn.functional.softplus(blocks[s.name])
        for name, terms in self.random_terms_.items():
            q = len(terms)
            values[f"{name}_sd"] = blocks[f"{name}_log_sd"].exp()
            values[f"{name}_corr_chol"] = _batched_corr_chol(blocks.get(f"{name}_corr"), q,
                                                             S, theta.dtype)
            mode = torch.as_tensor(self.random_effects_[name].to_numpy())
            values[f"{name}_u"] = _mvn(mode, torch.as_tensor(self.conditional_cov_[name]),
                                       S, gen)
        return values

    def _bayes_draws(self, S: int, gen: torch.Generator) -> dict:
        """``S`` posterior draws (evenly spaced, or resampled when more are asked for)."""
        draws = self.posterior_.draws()
        total = len(draws["coef"])
        if S <= total:
            idx = torch.linspace(0, total - 1, S).round().long()
        else:
            idx = torch.randint(total, (S,), generator=gen)
        values = {k: v[idx] for k, v in draws.items()}
        for name, terms in self.random_terms_.items():
            if len(terms) == 1:
                values[f"{name}_corr_chol"] = torch.ones(S, 1, 1, dtype=values["coef"].dtype)
            lam = values[f"{name}_sd"].unsqueeze(-1) * values[f"{name}_corr_chol"]
            values[f"{name}_u"] = values[f"{name}_z"] @ lam.transpose(-1, -2)
        return values

    def _parameter_draws(self, S: int, gen: torch.Generator) -> dict:
        if self.inference == "ml":
            return self._ml_draws(S, gen)
        return self._bayes_draws(S, gen)

    # ------------------------------------------------------------ rows
    def _row_terms(self, X, groups, X_zero=None, exposure=None):
        """The rows' :class:`MixedData` without effects (the fixed and zero-part designs,
        the exposure) and, per factor, ``(Z, labels or None)``."""
        check_is_fitted(self, "levels_")
        Xf, _ = self._fixed_design(X, False)
        data = self._prediction_rows(Xf, X, X_zero, exposure)
        frame = X if self.formula is not None else (
            None if groups is None else self._grouping(groups, len(Xf)))
        out = {}
        for name, terms in self.random_terms_.items():
            factor, _ = self._factor_of(name)
            Z = self._effect_design(frame if self.formula else X, factor, terms, False)
            labels = None
            if frame is not None and all(c in frame.columns for c in factor.split(":")):
                labels = self._labels_of(frame, factor)
            out[name] = (Z, labels)
        return data, out

    def _draw_rows(self, values, rows, terms, S, gen):
        """``eta`` of every row under every draw ``(S, n)``, new levels' effects drawn;
        the data; and a zero part's logits ``{part: (S, n)}`` where it has effects."""
        n = rows.n
        effects, local, parts = [], {}, {}
        for name, (Z, labels) in terms.items():
            levels = self.levels_[name]
            if labels is None:
                pos, seen = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
                new_codes = np.arange(n)
            else:
                pos, seen = level_positions(levels, labels)
                _, new_codes = np.unique(np.where(seen, "", labels), return_inverse=True)
            n_new = int(new_codes.max()) + 1 if n else 0
            G = len(levels)
            q = Z.shape[1]
            lam = values[f"{name}_sd"].unsqueeze(-1) * values[f"{name}_corr_chol"]
            z_new = torch.randn((S, n_new, q), generator=gen, dtype=lam.dtype)
            u = torch.cat([values[f"{name}_u"], z_new @ lam.transpose(-1, -2)], dim=1)
            codes = np.where(seen, pos, G + new_codes)
            Zt = torch.as_tensor(Z, dtype=lam.dtype)
            _, part = self._factor_of(name)
            if part is not None:  # a zero part's effects: onto its logits
                term = (Zt * u[:, torch.as_tensor(codes)]).sum(-1)
                if part not in parts:
                    parts[part] = part_logits(values[f"{part}_intercept"].unsqueeze(-1),
                                              values.get(f"{part}_coef"), rows.X_zero)
                parts[part] = parts[part] + term
                continue
            effects.append(RandomEffect(name, tuple(self.random_terms_[name]), Zt,
                                        torch.as_tensor(codes, dtype=torch.int64), G + n_new))
            local[f"{name}_z"] = u  # draw_eta with an identity factor: z is u itself
            local[f"{name}_sd"] = torch.ones(S, q, dtype=lam.dtype)
            local[f"{name}_corr_chol"] = torch.eye(q, dtype=lam.dtype).expand(S, q, q)
        data = dataclasses.replace(rows, effects=tuple(effects))
        local["coef"] = values["coef"]
        return draw_eta(local, data), data, parts

    # ------------------------------------------------------------ public
    def sample_posterior_predictive(self, X, groups=None, n_samples=1000, exposure=None,
                                    random_state=None, X_zero=None):
        """Draws of counts that carry the parameters' and the group effects' uncertainty.

        Parameters
        ----------
        X : array-like or DataFrame, shape ``(n, p)``
        groups : as in :meth:`fit`, optional
            Rows of a level seen in fitting draw that level's effect from its conditional
            law (ML) or posterior (Bayesian engines); rows of a new level share one draw
            from ``N(0, Sigma)``; without ``groups`` every row is a new level of its own.
        n_samples : int, default=1000
        exposure : array-like, shape ``(n,)``, optional
        random_state : int, optional
            Seeds the draws (default: the estimator's ``random_state``).
        X_zero : array-like or DataFrame, shape ``(n, p_zero)``, optional
            The zero part's covariates, when the model was fitted with ``X_zero``.

        Returns
        -------
        ndarray, shape ``(n_samples, n)``
        """
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        S = int(n_samples)
        gen = torch.Generator()
        seed = self.random_state if random_state is None else random_state
        gen.manual_seed(0 if seed is None else int(seed))
        rows, terms = self._row_terms(X, groups, X_zero, exposure)
        values = self._parameter_draws(S, gen)
        eta, data, parts = self._draw_rows(values, rows, terms, S, gen)
        law = self.model_.distribution(eta, draw_params(self.model_, values), data, parts)
        torch_seed = int(torch.randint(2**62, (1,), generator=gen))
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(torch_seed)
            return law.sample().numpy().astype(np.float64)

    def predict_interval(self, X, groups=None, coverage=0.9, exposure=None, n_samples=2000,
                         random_state=None, X_zero=None):
        """Predictive interval of the counts, with the group-level uncertainty.

        The interval of :func:`posheads.posterior.count_interval` over
        :meth:`sample_posterior_predictive`'s draws (equal-tailed where the support
        allows; whole numbers).

        Parameters
        ----------
        X, groups, exposure, random_state, X_zero : as in
            :meth:`sample_posterior_predictive`
        coverage : float in (0, 1), default=0.9
        n_samples : int, default=2000

        Returns
        -------
        ndarray, shape ``(n, 2)``
            Lower and upper bounds.
        """
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        draws = self.sample_posterior_predictive(X, groups, n_samples=n_samples,
                                                 exposure=exposure,
                                                 random_state=random_state, X_zero=X_zero)
        lo, hi = count_interval(torch.as_tensor(draws), coverage)
        return np.stack([lo.numpy(), hi.numpy()], axis=1)

    # ------------------------------------------------------------ posterior averages
    def _bayes_average(self, X, groups, exposure, n_nodes, y=None, max_draws=400,
                       X_zero=None):
        """Posterior-averaged ``E[y]`` (``y`` None) or ``log p(y)`` of each row ``(n,)``.

        Each draw's seen levels use the draw's effects; new levels are integrated out
        over ``N(0, Sigma)`` of the draw by Gauss-Hermite quadrature (with a zero part's
        effects, the tensor product of an axis for ``eta`` and one for the part's
        logits); then the draws (at most ``max_draws``, evenly spaced) are averaged.
        """
        from scipy.special import logsumexp

        data, terms = self._row_terms(X, groups, X_zero, exposure)
        gen = torch.Generator().manual_seed(0)
        values = self._bayes_draws(min(max_draws, self.posterior_.num_draws
                                       * self.posterior_.num_chains), gen)
        S, n = len(values["coef"]), data.n
        eta = values["coef"] @ data.X.T
        # per predictor (None: eta; else a part's logits): mean and new levels' variance
        pred = {None: [eta, torch.zeros(S, n, dtype=eta.dtype)]}
        for name, (Z, labels) in terms.items():
            _, part = self._factor_of(name)
            if part not in pred:
                pred[part] = [part_logits(values[f"{part}_intercept"].unsqueeze(-1),
                                          values.get(f"{part}_coef"), data.X_zero)
                              .expand(S, n), torch.zeros(S, n, dtype=eta.dtype)]
            Z = torch.as_tensor(Z, dtype=eta.dtype)
            lam = values[f"{name}_sd"].unsqueeze(-1) * values[f"{name}_corr_chol"]
            cov = lam @ lam.transpose(-1, -2)
            seen = torch.zeros(n, dtype=torch.bool)
            if labels is not None:
                pos, seen_np = level_positions(self.levels_[name], labels)
                seen = torch.as_tensor(seen_np)
                u = values[f"{name}_u"][:, torch.as_tensor(pos)]  # (S, n, q)
                pred[part][0] = pred[part][0] + torch.where(seen, (Z * u).sum(-1), 0.0)
            s2 = torch.einsum("iq,sqr,ir->si", Z, cov, Z)
            pred[part][1] = pred[part][1] + torch.where(seen, 0.0, s2)
        x, w = np.polynomial.hermite.hermgauss(n_nodes)
        x, w = torch.as_tensor(x), w / math.sqrt(math.pi)

        def nodes(mean, var):  # (K, S, n)
            return mean + math.sqrt(2.0) * var.sqrt() * x.view(-1, 1, 1)

        eta_mv = pred.pop(None)
        zero = next(iter(pred.items()), None)  # a zero part with effects (at most one)
        if zero is not None:
            w = np.outer(w, w).ravel()  # eta's nodes outer the part's
        params = draw_params(self.model_, values)
        # draws in chunks: the laws over nodes x draws x rows stay ~16 MiB
        step = max(1, 2_000_000 // max(1, len(w) * n))
        out = []
        for a in range(0, S, step):
            sl = slice(a, a + step)
            eta, parts = nodes(eta_mv[0][sl], eta_mv[1][sl]), {}
            if zero is not None:
                part, (mean, var) = zero
                parts[part] = nodes(mean[sl], var[sl]).repeat(n_nodes, 1, 1)
                eta = eta.repeat_interleave(n_nodes, dim=0)
            law = self.model_.distribution(eta, {k: v[sl] for k, v in params.items()},
                                           data, parts)
            if y is None:
                out.append(np.einsum("j,jsn->n", w, law.mean.numpy()))
            else:
                log_p = law.log_prob(torch.as_tensor(y)).numpy() + np.log(w)[:, None, None]
                out.append(logsumexp(log_p.reshape(-1, n), axis=0))
        if y is None:
            return np.sum(out, axis=0) / S
        return logsumexp(np.stack(out), axis=0) - math.log(S)

    # ------------------------------------------------------------ count-scale ICC
    def _icc_table(self, coverage, n_draws=200):
        """Rows ``("icc", factor)`` (and ``("icc share", factor)`` with several factors):
        the count-scale intraclass variation of :mod:`.mixed_icc`, with the spread over
        ``n_draws`` parameter draws as standard error and its percentile interval (for
        maximum likelihood: draws from the asymptotic normal; the estimate is at
        ``theta_hat``; for a Bayesian fit: posterior draws, the estimate their mean)."""
        import pandas as pd

        from .mixed_icc import count_scale_variances

        Xf, Zs, t, Xz = self._icc_data
        gen = torch.Generator().manual_seed(0)
        values = self._parameter_draws(n_draws, gen)
        if self.inference == "ml":  # the point estimate first: draw 0 at theta_hat
            plug = self._ml_point_values()
            values = {k: torch.cat([plug[k], v]) for k, v in values.items() if k in plug}
        eta = values["coef"] @ torch.as_tensor(Xf).T
        s2 = []
        for name, Z in zip(self.random_terms_, Zs, strict=True):
            lam = values[f"{name}_sd"].unsqueeze(-1) * values[f"{name}_corr_chol"]
            Zt = torch.as_tensor(Z, dtype=eta.dtype)
            s2.append(torch.einsum("iq,sqr,ir->si", Zt, lam @ lam.transpose(-1, -2), Zt))
        with torch.no_grad():
            v_k, v_u, e_res = count_scale_variances(
                self.model_, eta, s2, draw_params(self.model_, values),
                None if t is None else torch.as_tensor(t),
                parts=[self._factor_of(name)[1] for name in self.random_terms_],
                X_zero=None if Xz is None else torch.as_tensor(Xz))
        stats = {"icc": (v_k / (v_u + e_res)).numpy()}
        if len(s2) > 1:
            stats["icc share"] = (v_k / v_u).numpy()
        lo, hi = (1 - coverage) / 2, (1 + coverage) / 2
        rows = []
        for kind, table in stats.items():
            for name, x in zip(self.random_terms_, table, strict=True):
                point, spread = (x[0], x[1:]) if self.inference == "ml" else (x.mean(), x)
                rows.append((kind, name, float(point), float(np.std(spread, ddof=1)),
                             float(np.quantile(spread, lo)), float(np.quantile(spread, hi))))
        return pd.DataFrame(rows, columns=["kind", "name", "estimate", "std_error", "lower",
                                           "upper"]).set_index(["kind", "name"])

    def _ml_point_values(self) -> dict:
        """The maximum-likelihood estimate as one draw of site values."""
        params = {k: torch.as_tensor(v) for k, v in self.fit_.params.items()}
        values = {"coef": params["coef"][None]}
        for p in self.model_.family.parts:
            values[f"{p.name}_intercept"] = params[f"{p.name}_intercept"].reshape(1)
            if f"{p.name}_coef" in params:
                values[f"{p.name}_coef"] = params[f"{p.name}_coef"][None]
        for s in self.model_.family.shapes:
            values[s.name] = torch.nn.functional.softplus(params[s.name]).reshape(1)
        for name, terms in self.random_terms_.items():
            values[f"{name}_sd"] = torch.as_tensor(self.sd_[name])[None]
            values[f"{name}_corr_chol"] = correlation_cholesky(
                params.get(f"{name}_corr", params["coef"][:0]), len(terms))[None]
        return values
