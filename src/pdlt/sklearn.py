r"""scikit-learn estimators for infinite-width networks (book Ch. 6 and Ch. 10) and the O(1/n)
finite-width trained mean (Ch. ∞).

- :class:`NNGPRegressor`: the Bayesian posterior of the infinite-width network (the neural network
  Gaussian process with kernel K^{(L)}; book §6.3):
  :math:`m = K_{BA}(K_{AA}+\sigma_\varepsilon^2)^{-1}y`, :math:`\Sigma = K_{BB} - K_{BA}(K_{AA}+\sigma_\varepsilon^2)^{-1}K_{AB}`.
- :class:`NTKRegressor`: the infinite-width network trained by full-batch gradient descent on the
  MSE loss for t steps (or t = ∞) from a random initialization (book §10.2):
  :math:`m = \Theta_{BA}\tilde\Theta^{-1}(1-(1-\eta\tilde\Theta)^t)y`, with the initialization's spread
  as predictive variance.
- :class:`FiniteWidthRegressor`: the mean output of a network of hidden width n trained by gradient
  descent or Newton steps, to O(1/n): :math:`m = m^\infty + \sum_k c_k/n` (book Ch. ∞,
  :func:`pdlt.theory.finite_width.finite_width_mean`); spread as :class:`NTKRegressor`'s. For small
  data sets only (cost ∝ (N_train + N_test)^4).
- :class:`NNGPKernel`: K^{(L)} as a scikit-learn ``Kernel`` (no tunable hyperparameters), e.g. for
  ``GaussianProcessRegressor(kernel=NNGPKernel(...), optimizer=None)``.

The networks are described by the book's hyperparameters: ``activation``, ``depth`` L (number of
layers, the last one the output), ``C_b``, ``C_W`` (defaults: ReLU at criticality, C_b = 0,
C_W = 2) and for the NTK the learning rates ``lambda_b``, ``lambda_W`` (default λ = C, as in
:class:`pdlt.MLP`). The hidden width plays no role at infinite width; it sets n in
:class:`FiniteWidthRegressor`.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Kernel
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _validate as v
from .mlp import MLP
from .theory import bayes, finite_width, training

__all__ = ["NNGPRegressor", "NTKRegressor", "FiniteWidthRegressor", "NNGPKernel"]


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


class FiniteWidthRegressor(_InfiniteWidthRegressor):
    r"""The mean output of a trained network of finite hidden width n, to O(1/n) (book Ch. ∞, §∞.2).

    .. math:: m(x) = m^\infty(x) + \frac1n\big(c_{H1} + c_{\rm NTK\text{-}fluct} + c_{\rm dNTK}
              + c_{\rm ddNTK}\big)(x),\qquad m^\infty(x) = \Theta_{xA}M_t\,y,

    the mean over random initializations of the network
    ``MLP(n_features, width, depth, activation, C_b, C_W, lambda_b, lambda_W, output_dim=n_targets)``
    after full-batch gradient descent on the MSE loss (η, t steps; M_t as in :class:`NTKRegressor`) or
    after Newton steps (``newton=True``: the matrix rate Ĥ_AA⁻¹ of the network's own NTK, η = 1; one
    step is the book's "giant leap"), computed by :func:`pdlt.theory.finite_width.finite_width_mean`
    (n = ``width``, the last hidden layer's; c_H1: the NTK-mean shift H¹, c_NTK-fluct: the NTK's
    fluctuations A, B, c_dNTK / c_ddNTK: the moving NTK, P, Q and R, S, T, U).

    **Spread: infinite width only.** ``predict(X, return_std=True)`` / ``return_cov=True`` give the
    spread over initializations of the infinite-width network, the same numbers as
    :class:`NTKRegressor` with the same hyperparameters (t = ∞ for Newton steps); only the mean carries
    1/n terms. (The O(1/n) covariance exists when only the last layer trains,
    :func:`pdlt.theory.finite_width.finite_width_covariance`, a network this estimator's scalar λ_b, λ_W
    do not describe; with all layers training it is not derived.)

    **Cost.** The theory works with four-index tensors over all inputs; its cost grows like
    (N_train + N_test)^4 (times n_targets^4) and is recomputed at every ``predict``. The estimator is
    meant for small data sets: tens of points (seconds for ~5 points, minutes for ~20). The result
    for the last X predicted is kept, so ``predict(X)``, ``predict(X, return_std=True)`` and
    ``predict_parts(X)`` on the same X compute it once.

    **Kinked activations (ReLU & co.).** ``kinks="auto"`` (default) is "delta" for one Newton step on a
    kinked σ and "a.e." otherwise: the real network wherever the theory has it. ``kinks="a.e."`` predicts the network whose hidden
    neurons keep their initialization slopes at each input (``train_ensemble(..., frozen_slopes=True)``),
    for any schedule. ``kinks="delta"`` predicts the real network, with the δ-function σ″, σ‴; only for
    one Newton step (``newton=True``, ``steps`` None or 1) and test inputs distinct from the training
    inputs (a test input equal to a training input is a ValueError at ``predict``): after gradient
    descent or further steps the kink crossings of a real ReLU network move its mean by O(n^{-1/2}),
    beyond any 1/n expansion. For smooth activations ``kinks`` makes no difference.

    Parameters
    ----------
    activation, depth, C_b, C_W, lambda_b, lambda_W : the network and its learning rates (as
        :class:`NTKRegressor`).
    width : hidden width n (every hidden layer; integer ≥ 1).
    eta : global learning rate η of gradient descent, required with ``newton=False`` (the 1/n terms
        depend on the algorithm even for t = ∞); must be < 2/λ_max(Θ̃). With ``newton=True``: None
        or 1.
    steps : gradient-descent steps t (int ≥ 0, or None for t = ∞: run to convergence); with
        ``newton=True`` the number of Newton steps (None: 1).
    newton : Newton steps (default) instead of gradient descent.
    kinks : "auto", "a.e." or "delta" (above).
    order2 : quadrature order of the infinite-width kernels behind the spread (std / cov) and the
        fit's checks; the mean uses :mod:`pdlt.theory`'s default.

    Hyperparameters are checked at ``fit`` (ValueError): gradient descent without η, η ≥ 2/λ_max(Θ̃)
    (the limit is in the message and in ``eta_max_``), ``kinks="delta"`` with anything but one Newton
    step on a kinked activation, a singular training NTK (duplicate training inputs).

    Attributes: ``X_train_``, ``y_train_``, ``net_`` (the :class:`pdlt.MLP`), ``eta_max_`` = 2/λ_max(Θ̃),
    ``M_`` (the infinite-width M_t), ``alpha_`` = M_t y. ``predict_parts(X)`` returns the
    :class:`pdlt.theory.finite_width.FiniteWidthPrediction` (``infinite``, ``parts``, ``n``, ``total``).
    """

    def __init__(self, activation="relu", depth=3, width=64, C_b=0.0, C_W=2.0, lambda_b=None,
                 lambda_W=None, eta=None, steps=None, newton=True, kinks="auto", order2=None):
        self.activation = activation
        self.depth = depth
        self.width = width
        self.C_b = C_b
        self.C_W = C_W
        self.lambda_b = lambda_b
        self.lambda_W = lambda_W
        self.eta = eta
        self.steps = steps
        self.newton = newton
        self.kinks = kinks
        self.order2 = order2

    @property
    def net_(self) -> MLP:
        """The finite-width :class:`pdlt.MLP` of the fit (``width`` hidden, n_targets outputs)."""
        check_is_fitted(self, "alpha_")
        return self._network

    def _algorithm(self, net: MLP) -> dict:
        """The validated training algorithm as finite_width_mean keywords (ValueError otherwise)."""
        if self.kinks not in ("auto", "a.e.", "delta"):
            raise ValueError(f"kinks must be 'auto', 'a.e.' or 'delta', got {self.kinks!r}")
        if not isinstance(self.newton, bool | np.bool_):
            raise ValueError(f"newton must be True or False, got {self.newton!r}")
        if self.newton:
            if self.eta is not None and v.real("eta", self.eta, low=0.0, low_open=True) != 1.0:
                raise ValueError(f"newton=True takes eta = None or 1 (the matrix rate ηĤ_AA⁻¹ with "
                                 f"η = 1), got eta = {self.eta!r}")
            steps = 1 if self.steps is None else v.positive_int("steps", self.steps, minimum=1)
            algo = dict(eta=None, steps=steps, newton=True)
        else:
            if self.eta is None:
                raise ValueError("gradient descent needs a learning rate: give eta (and steps; None for "
                                 "t = ∞), or newton=True. The 1/n terms depend on the algorithm even at "
                                 "t = ∞")
            eta = v.real("eta", self.eta, low=0.0, low_open=True)
            training._steps(self.steps)                                   # int >= 0, None or inf
            algo = dict(eta=eta, steps=self.steps, newton=False)
        one_newton_step = algo["newton"] and algo["steps"] == 1
        auto = "delta" if one_newton_step and not net.activation.smooth else "a.e."
        kinks = auto if self.kinks == "auto" else self.kinks
        finite_width._check_kinks(net, kinks, algo["newton"], algo["steps"])
        return dict(algo, kinks=kinks)

    def fit(self, X, y):
        X, Y = self._fit_data(X, y)
        net = MLP(X.shape[1], self.width, self.depth, self.activation, C_b=self.C_b, C_W=self.C_W,
                  lambda_b=self.lambda_b, lambda_W=self.lambda_W, output_dim=Y.shape[1])
        algo = self._algorithm(net)
        kb = bayes.kernel_blocks(_net(self, X.shape[1]), X, ntk=True, order2=self.order2)
        lam = np.linalg.eigvalsh(kb.Theta_train)
        self.eta_max_ = 2.0 / lam[-1] if lam[-1] > 0 else np.inf
        if not algo["newton"] and algo["eta"] >= self.eta_max_:
            raise ValueError(f"gradient descent diverges: eta = {algo['eta']:g} >= 2/λ_max(Θ̃) = "
                             f"{self.eta_max_:.6g}; use 0 < eta < {self.eta_max_:.6g}")
        finite_width._check_training_ntk(kb.Theta_train)
        # the infinite-width counterpart (NTKRegressor's numbers): Newton steps are t = ∞
        eta, steps = (None, None) if algo["newton"] else (algo["eta"], algo["steps"])
        self.M_, _ = training.gd_operator(kb.Theta_train, eta, steps, X_train=X)
        self.K_train_ = kb.train
        self.y_2d_ = Y
        self._network = net
        self._run = algo
        self._last = None
        self.alpha_ = self.M_ @ Y
        return self

    def predict_parts(self, X):
        """The :class:`pdlt.theory.finite_width.FiniteWidthPrediction` at X: ``infinite`` (m^∞),
        ``parts`` (the 1/n coefficients c_k), ``n``, ``total`` (what :meth:`predict` returns);
        arrays (n_samples,) or (n_samples, n_targets)."""
        check_is_fitted(self, "alpha_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        last = getattr(self, "_last", None)       # the costly theory is kept for the last X of this fit
        if last is not None and last[0].shape == X.shape and np.array_equal(last[0], X):
            return last[1]
        pred = finite_width.finite_width_mean(self._network, self.X_train_, self.y_train_, X, **self._run)
        self._last = (X.copy(), pred)
        return pred

    def predict(self, X, return_std=False, return_cov=False):
        """Mean trained output to O(1/n), (n,) or (n, n_targets); with ``return_std`` /
        ``return_cov`` also the infinite-width std / covariance over initializations (no 1/n terms;
        shared by all targets, repeated per target for 2-D y)."""
        if return_std and return_cov:
            raise RuntimeError("at most one of return_std or return_cov can be requested")
        mean = self.predict_parts(X).total
        if not (return_std or return_cov):
            return mean
        X = validate_data(self, X, reset=False, dtype=np.float64)
        kb = bayes.kernel_blocks(_net(self, self.n_features_in_), self.X_train_, X, ntk=True,
                                 test_cov=return_cov, order2=self.order2)
        _, c = training.trained_from_operator(self.M_, self.K_train_, kb.cross,
                                              kb.test if return_cov else kb.test_diag, kb.Theta_cross,
                                              self.y_2d_)
        _, spread = self._shape(mean.reshape(X.shape[0], -1), np.diagonal(c) if return_cov else c, c,
                                return_std, return_cov)
        return mean, spread
