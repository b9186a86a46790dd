"""The posterior of a :class:`~posheads.models.glm.SoftplusGLM` on one flat vector.

:class:`GLMTarget` is the :class:`~posheads.models.target.Target` a GLM gives the engines:
the gradient from the model's closed-form ``potential_and_grad``, the exact Hessian and
the Newton loss from :class:`~posheads.models.glm_loss.GLMLoss`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .target import Target

if TYPE_CHECKING:  # annotations only: glm imports this module
    from .data import GLMData
    from .glm import SoftplusGLM

__all__ = ["GLMTarget"]


class GLMTarget(Target):
    """The posterior of a :class:`SoftplusGLM` on one flat vector, with closed forms.

    The gradient comes from :meth:`SoftplusGLM.potential_and_grad`, the Hessian and the
    Newton loss from :class:`~posheads.models.glm_loss.GLMLoss`.

    Parameters
    ----------
    model : SoftplusGLM
    data : GLMData
        Validated.
    prior : bool
        ``False``: the likelihood alone (:meth:`likelihood`): every prior flat, and no
        log-Jacobian whatever ``jacobian`` says.
    """

    def __init__(self, model: SoftplusGLM, data: GLMData, *, prior: bool = True):
        if not prior:
            model = type(model)(
                model.family, beta=model.beta, threshold=model.threshold,
                fit_intercept=model.fit_intercept, coef_scale=None, intercept_scale=None,
                gate_coef_scale=None,
                shape_priors=dict.fromkeys(model.family.shape_names, "flat"))
        self.model, self.data, self.prior = model, data, prior
        self.layout = model.layout(data.X, data.X_zero)
        self.num_obs = float(data.weights.sum()) if data.weights is not None else float(data.n)
        self.work_size = int(data.X.shape[0] * data.X.shape[1])
        self._losses = {}

    def _loss(self, jacobian, **options):
        from .glm_loss import GLMLoss

        key = (jacobian and self.prior, tuple(sorted(options.items())))
        if key not in self._losses:
            self._losses[key] = GLMLoss(self.model, self.data, jacobian=key[0],
                                        validate=False, **options)
        return self._losses[key]

    def init(self):
        # the start does not depend on the loss's options: reuse one built already
        loss = next(iter(self._losses.values()), None) or self._loss(False)
        return loss.init_theta()

    def unpack(self, theta):
        return self.model.unpack(theta, self.layout)

    def pack(self, values):
        return self.model.pack(values, self.layout)

    def log_joint(self, theta, jacobian=True):
        return self.model.log_joint(theta, self.data, jacobian=jacobian and self.prior)

    def log_likelihood(self, theta):
        values = self.unpack(theta)
        d = self.data
        ll = self.model.distribution(values, d.X, d.exposure, d.X_zero,
                                     validate_args=False, offset=d.offset).log_prob(d.y)
        return ll.sum() if d.weights is None else torch.dot(ll, d.weights)

    def likelihood(self) -> GLMTarget:
        """This target with flat priors and no log-Jacobian, closed forms kept."""
        return GLMTarget(self.model, self.data, prior=False)

    def potential_and_grad(self, theta):
        if not self.prior:
            return self._loss(False, normalize=False).potential_and_grad(theta)
        return self.model.potential_and_grad(theta, self.data)

    def hessian(self, theta, jacobian=True):
        loss = self._loss(jacobian, normalize=False)
        return loss.hessian(theta, loss.predictors(theta), exact=True)

    def newton_loss(self, jacobian=False):
        """:class:`~posheads.models.glm_loss.GLMLoss` per unit weight, with a sub-sampled
        Hessian for a large dense design."""
        return self._loss(jacobian, hessian_rows="auto")
