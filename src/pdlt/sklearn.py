r"""scikit-learn estimators for infinite-width networks (book Ch. 6 and Ch. 10).

- :class:`NNGPRegressor`: the Bayesian posterior of the infinite-width network (the neural network
  Gaussian process with kernel K^{(L)}; book §6.3):
  :math:`m = K_{BA}(K_{AA}+\sigma_\varepsilon^2)^{-1}y`, :math:`\Sigma = K_{BB} - K_{BA}(K_{AA}+\sigma_\varepsilon^2)^{-1}K_{AB}`.
- :class:`NTKRegressor`: the infinite-width network trained by full-batch gradient descent on the
  MSE loss for t steps (or t = ∞) from a random initialization (book §10.2):
  :math:`m = \Theta_{BA}\tilde\Theta^{-1}(1-(1-\eta\tilde\Theta)^t)y`, with the initialization's spread
  as predictive variance.
- :class:`NNGPKernel`: K^{(L)} as a scikit-learn ``Kernel`` (no tunable hyperparameters), e.g. for
  ``GaussianProcessRegressor(kernel=NNGPKernel(...), optimizer=None)``.

The networks are described by the book's hyperparameters: ``activation``, ``depth`` L (number of
layers, the last one the output), ``C_b``, ``C_W`` (defaults: ReLU at criticality, C_b = 0,
C_W = 2) and for the NTK the learning rates ``lambda_b``, ``lambda_W`` (default λ = C, as in
:class:`pdlt.MLP`). The hidden width plays no role at infinite width.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Kernel
from sklearn.utils.validation import check_is_fitted, validate_data

from .mlp import MLP
from .theory import bayes, training

__all__ = ["NNGPRegressor", "NTKRegressor", "NNGPKernel"]


def _net(est, n_features: int) -> MLP:
    """The infinite-width network described by an estimator's hyperparameters (width is irrelevant)."""
    return MLP(n_features, 1, est.depth, est.activation, C_b=est.C_b, C_W=est.C_W,
               lambda_b=getattr(est, "lambda_b", None), lambda_W=getattr(est, "lambda_W", None),
               output_dim=1)


class NNGPKernel(Kernel):
    r"""The output kernel K^{(L)}_{αβ} of an infinite-width network as a scikit-learn kernel (book §4.3).

    ``k(X, Y)`` (n_X, n_Y) is computed pair by pair by :func:`pdlt.theory.bayes.kernel_blocks`. No
    hyperparameters are tuned (``theta`` is empty); use it with ``optimizer=None``.
    """

    def __init__(self, activation="relu", depth=3, C_b=0.0, C_W=2.0, order2=None):
        self.activation = activation
        self.depth = depth
        self.C_b = C_b
        self.C_W = C_W
        self.order2 = order2

    def __call__(self, X, Y=None, eval_gradient=False):
        X = np.asarray(X, dtype=np.float64)
        net = _net(self, X.shape[1])
        if Y is None:
            K = bayes.kernel_blocks(net, X, order2=self.order2).train
        else:
            K = bayes.kernel_blocks(net, X, np.asarray(Y, dtype=np.float64), test_cov=False,
                                    order2=self.order2).cross.T
        if eval_gradient:
            if Y is not None:
                raise ValueError("gradient can only be evaluated when Y is None")
            return K, np.empty((K.shape[0], K.shape[1], 0))
        return K

    def diag(self, X):
        X = np.asarray(X, dtype=np.float64)
        return bayes.kernel_blocks(_net(self, X.shape[1]), X[:1], X, test_cov=False,
                                   order2=self.order2).test_diag

    def is_stationary(self):
        return False

    def __repr__(self):
        return (f"NNGPKernel(activation={self.activation!r}, depth={self.depth}, C_b={self.C_b}, "
                f"C_W={self.C_W})")


class _InfiniteWidthRegressor(RegressorMixin, BaseEstimator):
    """Shared fit/predict plumbing: targets (n,) or (n, n_targets); predict(X, return_std, return_cov)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.non_deterministic = False
        return tags

    @property
    def net_(self) -> MLP:
        """The :class:`pdlt.MLP` of the fitted estimator, built from the current parameters."""
        check_is_fitted(self, "alpha_")
        return _net(self, self.n_features_in_)

    def _fit_data(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        self._one_d = y.ndim == 1
        self.X_train_ = X
        self.y_train_ = y
        return X, (y[:, None] if y.ndim == 1 else y)

    def _shape(self, mean, var, cov, return_std, return_cov):
        if return_std and return_cov:
            raise RuntimeError("at most one of return_std or return_cov can be requested")
        mean = mean[:, 0] if self._one_d else mean
        if return_std:
            std = np.sqrt(np.maximum(var, 0.0))
            return mean, (std if self._one_d else np.repeat(std[:, None], self.y_train_.shape[1], axis=1))
        if return_cov:
            return mean, (cov if self._one_d else np.repeat(cov[:, :, None], self.y_train_.shape[1], axis=2))
        return mean


class NNGPRegressor(_InfiniteWidthRegressor):
    r"""Bayesian inference with an infinite-width network: the NNGP posterior (book §6.3).

    .. math:: m(x) = K_{xA}(K_{AA} + \sigma_\varepsilon^2)^{-1}y,\qquad
              \mathrm{Var}(x) = K_{xx} - K_{xA}(K_{AA} + \sigma_\varepsilon^2)^{-1}K_{Ax}.

    Parameters
    ----------
    activation, depth, C_b, C_W : the network (default ReLU at criticality, L = 3).
    noise : observation-noise variance σ_ε² ≥ 0 (default 1e-10, the jitter of
        ``GaussianProcessRegressor``; 0 makes duplicate training inputs an error).
    order2 : quadrature order of the kernel's pair moments (None: pdlt's default).

    Attributes: ``X_train_``, ``y_train_``, ``alpha_`` = (K+σ²)⁻¹y, ``log_marginal_likelihood_value_``
    (the log evidence, book §6.3.1), ``net_`` (the :class:`pdlt.MLP`).
    """

    def __init__(self, activation="relu", depth=3, C_b=0.0, C_W=2.0, noise=1e-10, order2=None):
        self.activation = activation
        self.depth = depth
        self.C_b = C_b
        self.C_W = C_W
        self.noise = noise
        self.order2 = order2

    def fit(self, X, y):
        X, Y = self._fit_data(X, y)
        net = _net(self, X.shape[1])
        K = bayes.kernel_blocks(net, X, order2=self.order2).train
        self.L_, self.alpha_ = bayes.gp_factor(K, Y, self.noise, X_train=X)
        self.log_marginal_likelihood_value_ = bayes._evidence(self.L_, self.alpha_, Y)
        return self

    def predict(self, X, return_std=False, return_cov=False):
        """Posterior mean (n,) or (n, n_targets); with ``return_std`` / ``return_cov`` also the
        posterior std / covariance (shared by all targets, repeated per target for 2-D y)."""
        check_is_fitted(self, "alpha_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        kb = bayes.kernel_blocks(self.net_, self.X_train_, X, test_cov=return_cov, order2=self.order2)
        if not (return_std or return_cov):
            return self._shape(kb.cross @ self.alpha_, None, None, False, False)
        mean, c = bayes.gp_predict(self.L_, self.alpha_, kb.cross, kb.test if return_cov else kb.test_diag)
        return self._shape(mean, np.diagonal(c) if return_cov else c, c, return_std, return_cov)


class NTKRegressor(_InfiniteWidthRegressor):
    r"""The infinite-width network trained by gradient descent on the MSE loss (book §10.2).

    .. math:: m(x) = \Theta_{xA}M_t\,y,\qquad M_t = \tilde\Theta^{-1}\big(1-(1-\eta\tilde\Theta)^t\big),

    \mathrm{Var}(x) = K_{xx} - 2\,\Theta_{xA}M_tK_{Ax} + \Theta_{xA}M_tK_{AA}M_t\Theta_{Ax}

    (the spread over random initializations). ``steps=None``: fully trained (t = ∞; η drops out,
    the result is algorithm independent).

    Parameters
    ----------
    activation, depth, C_b, C_W, lambda_b, lambda_W : the network and its learning rates.
    eta : global learning rate η (needed for finite ``steps``; must be < 2/λ_max(Θ̃)).
    steps : number of full-batch steps t, or None for t = ∞.
    order2 : quadrature order of the pair moments.
    """

    def __init__(self, activation="relu", depth=3, C_b=0.0, C_W=2.0, lambda_b=None, lambda_W=None,
                 eta=None, steps=None, order2=None):
        self.activation = activation
        self.depth = depth
        self.C_b = C_b
        self.C_W = C_W
        self.lambda_b = lambda_b
        self.lambda_W = lambda_W
        self.eta = eta
        self.steps = steps
        self.order2 = order2

    def fit(self, X, y):
        X, Y = self._fit_data(X, y)
        kb = bayes.kernel_blocks(_net(self, X.shape[1]), X, ntk=True, order2=self.order2)
        self.M_, info = training.gd_operator(kb.Theta_train, self.eta, self.steps, X_train=X)
        self.eta_max_ = info["eta_max"]
        self.K_train_ = kb.train
        self.y_2d_ = Y
        self.alpha_ = self.M_ @ Y
        return self

    def predict(self, X, return_std=False, return_cov=False):
        """Mean of the trained outputs (n,) or (n, n_targets); with ``return_std`` / ``return_cov``
        their std / covariance over initializations."""
        check_is_fitted(self, "alpha_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        kb = bayes.kernel_blocks(self.net_, self.X_train_, X, ntk=True, test_cov=return_cov,
                                 order2=self.order2)
        if not (return_std or return_cov):
            return self._shape(kb.Theta_cross @ self.alpha_, None, None, False, False)
        mean, c = training.trained_from_operator(self.M_, self.K_train_, kb.cross,
                                                 kb.test if return_cov else kb.test_diag, kb.Theta_cross,
                                                 self.y_2d_)
        return self._shape(mean, np.diagonal(c) if return_cov else c, c, return_std, return_cov)
