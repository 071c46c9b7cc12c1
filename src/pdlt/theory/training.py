r"""Kernel learning: the infinite-width network trained by gradient descent (book Ch. 10; sheet §8).

Setup (sheet §0, §8): MSE loss summed over outputs and training inputs,
:math:`\mathcal L = \frac12\sum_{i}\sum_{\alpha\in A}(z_{i;\alpha} - y_{i;\alpha})^2`, and full-batch gradient
descent :math:`\theta_\mu \leftarrow \theta_\mu - \eta\sum_\nu\lambda_{\mu\nu}\,\partial\mathcal L/\partial\theta_\nu`
with η a global factor multiplying the learning-rate tensor λ. At infinite width the NTK is frozen
and deterministic, :math:`\hat H_{i_1i_2;\delta_1\delta_2} = \delta_{i_1i_2}\Theta_{\delta_1\delta_2}`
(Θ = Θ^{(L)}, which already contains λ), so the outputs move linearly:
:math:`z_A(t+1) - y = (1 - \eta\tilde\Theta)(z_A(t) - y)` on the training block Θ̃ ≡ Θ_{AA} and

.. math:: z_{i;\dot\beta}(t) = z_{i;\dot\beta}(0) - \sum\Theta_{\dot\beta\alpha_1}
          \big[\tilde\Theta^{-1}\big(1 - (1 - \eta\tilde\Theta)^t\big)\big]^{\alpha_1\alpha_2}
          \big(z_{i;\alpha_2}(0) - y_{i;\alpha_2}\big).

With z(0) ~ N(0, K) (the infinite-width prior, K = K^{(L)}) and :math:`P_t \equiv \Theta_{BA}M_t`,
:math:`M_t \equiv \tilde\Theta^{-1}(1 - (1-\eta\tilde\Theta)^t)`, the trained outputs are Gaussian with

.. math:: m_{i;\dot\beta} = \sum (P_t)_{\dot\beta\alpha}y_{i;\alpha},\qquad
          \mathrm{Cov}[z_{i_1;\dot\beta_1}(t), z_{i_2;\dot\beta_2}(t)] = \delta_{i_1i_2}
          \big[K_{BB} - P_tK_{AB} - K_{BA}P_t^\top + P_tK_{AA}P_t^\top\big]_{\dot\beta_1\dot\beta_2}.

t → ∞ (any 0 < η < 2/λ_max(Θ̃)) and the one Newton step ηΘ̃ = 1 both give M = Θ̃⁻¹: the
fully trained result is algorithm independent. The spectral function
:math:`f_t(\lambda) = (1 - (1-\eta\lambda)^t)/\lambda` (→ ηt at λ = 0) is written once, in
:func:`spectral_filter`; the finite-width 1/n corrections (Ch. ∞, sheet §9) will add to the mean
and covariance of the same :class:`~pdlt.theory.bayes.Prediction`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .. import _validate as v
from ..mlp import MLP
from .bayes import Prediction, _check_net, _test_targets, kernel_blocks, targets

__all__ = ["DivergenceWarning", "spectral_filter", "gd_operator", "trained_from_kernels", "trained_from_operator",
           "gradient_descent", "newton_step", "max_learning_rate", "expected_loss"]


class DivergenceWarning(RuntimeWarning):
    """Gradient descent with η ≥ 2/λ_max(Θ̃): the training error grows instead of decaying."""


def _steps(steps) -> float:
    if steps is None or (isinstance(steps, float) and math.isinf(steps) and steps > 0):
        return math.inf
    return float(v.positive_int("steps", steps, minimum=0))


def spectral_filter(lam: np.ndarray, eta: float, steps: float) -> np.ndarray:
    r"""f_t(λ) = (1 − (1 − ηλ)^t)/λ for eigenvalues λ of Θ̃ (book §10.2): the smallest case.

    f_t(0) = ηt; t = ∞ gives 1/λ (the caller checks convergence). Stable for small ηλ
    (expm1/log1p).
    """
    lam = np.asarray(lam, dtype=np.float64)
    if math.isinf(steps):
        return 1.0 / lam
    x = eta * lam
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # (1 − ηλ)^t − 1 without cancellation when |ηλ| is small; any sign of 1 − ηλ
        base = 1.0 - x
        powm1 = np.where(base > 0, np.expm1(steps * np.log1p(-np.where(base > 0, x, 0.0))),
                         np.power(base, steps) - 1.0)
        out = np.where(lam != 0, -powm1 / np.where(lam != 0, lam, 1.0), eta * steps)
    return out


def max_learning_rate(net: MLP, X_train, *, order2: int | None = None) -> float:
    r"""η* = 2/λ_max(Θ̃): gradient descent on the infinite-width network converges iff η < η*
    (book §10.2). X_train (N_A, n_0)."""
    kb = kernel_blocks(_check_net(net), X_train, ntk=True, order2=order2)
    return 2.0 / float(np.linalg.eigvalsh(kb.Theta_train)[-1])


def gd_operator(Theta_train, eta: float | None, steps, *, X_train=None) -> tuple[np.ndarray, dict]:
    r"""M_t = Θ̃⁻¹(1 − (1 − ηΘ̃)^t) (N_A, N_A) by the eigendecomposition of the training NTK Θ̃.

    ``steps`` None/∞: the fully trained M = Θ̃⁻¹ (η only checked for convergence; None allowed);
    exact duplicate training inputs (``X_train`` given) are handled exactly: their null directions of
    Θ̃ are annihilated by Θ_BA, so M is the pseudo-inverse on the rest (the target of duplicates with
    different y is their average). Raises ValueError for t = ∞ when η ≥ 2/λ_max ("diverges") or Θ̃
    is singular beyond exact duplicates; warns
    (:class:`DivergenceWarning`) for finite t when η ≥ 2/λ_max. Returns (M, info).
    """
    from .bayes import RCOND, _singular_reason

    steps = _steps(steps)
    T = np.asarray(Theta_train, dtype=np.float64)
    lam, U = np.linalg.eigh(T)
    threshold = 2.0 / lam[-1] if lam[-1] > 0 else math.inf
    info = {"eta": eta, "steps": steps, "eta_max": threshold, "Theta_eigenvalues": lam}
    if eta is None:
        if not math.isinf(steps):
            raise ValueError("eta is required for a finite number of steps")
    else:
        eta = v.real("eta", eta, low=0.0, low_open=True)
        if eta >= threshold:
            msg = (f"gradient descent diverges: eta = {eta:g} >= 2/λ_max(Θ̃) = {threshold:.6g} (λ_max = "
                   f"{lam[-1]:.6g}); the training error grows as |1 − η λ_max|^t = {abs(1 - eta * lam[-1]):.4g}^t. "
                   f"Use eta < {threshold:.6g}")
            if math.isinf(steps):
                raise ValueError(msg)
            warnings.warn(msg, DivergenceWarning, stacklevel=3)
    f_lam = lam
    if math.isinf(steps):
        # exact duplicate training inputs give exact null directions of Θ̃ (differences of identical
        # columns) that Θ_BA annihilates, so t = ∞ is still determined: drop them (pseudo-inverse)
        small = ~(lam > RCOND * lam[-1])
        n_dup = 0 if X_train is None else len(X_train) - len(np.unique(np.asarray(X_train), axis=0))
        if small.sum() > n_dup:
            raise ValueError(
                f"the training NTK Θ̃ is singular (smallest/largest eigenvalue {lam[0] / lam[-1]:.3g}, "
                f"limit {RCOND:g}): {_singular_reason(None if X_train is None else np.asarray(X_train))}, "
                f"so the fully trained (t = ∞) network is not determined. Remove redundant inputs or give "
                f"a finite number of steps")
        f_lam = np.where(small, np.inf, lam)
        info["duplicates_dropped"] = int(small.sum())
    M = (U * spectral_filter(f_lam, eta if eta is not None else 1.0, steps)) @ U.T
    return M, info


def trained_from_kernels(K_train, K_cross, K_test, Theta_train, Theta_cross, y, eta: float | None,
                         steps, *, X_train=None) -> tuple[np.ndarray, np.ndarray, dict]:
    r"""Mean and covariance of the trained outputs from kernel blocks (book §10.2), the vectorized core.

    .. math:: m = P_t y,\qquad \Sigma = K_{BB} - P_tK_{AB} - K_{BA}P_t^\top + P_tK_{AA}P_t^\top,
              \qquad P_t = \Theta_{BA}\,\tilde\Theta^{-1}\big(1 - (1-\eta\tilde\Theta)^t\big).

    K_train, Theta_train (N_A, N_A); K_cross, Theta_cross (N_B, N_A); K_test (N_B, N_B) or its
    diagonal (N_B,); y (N_A, n_L). Returns (mean (N_B, n_L), cov, info).
    """
    M, info = gd_operator(Theta_train, eta, steps, X_train=X_train)
    mean, cov = trained_from_operator(M, K_train, K_cross, K_test, Theta_cross, y)
    return mean, cov, info


def trained_from_operator(M, K_train, K_cross, K_test, Theta_cross, y):
    r"""Mean P_t y and covariance K_BB − P_tK_AB − K_BAP_tᵀ + P_tK_AAP_tᵀ, P_t = Θ_BA M_t, given
    M_t = :func:`gd_operator` (N_A, N_A); shapes as in :func:`trained_from_kernels`; K_test None →
    covariance None."""
    P = np.asarray(Theta_cross) @ M
    mean = P @ y
    if K_test is None:
        return mean, None
    KBA = np.asarray(K_cross)
    PKA = P @ np.asarray(K_train)
    K_test = np.asarray(K_test, dtype=np.float64)
    if K_test.ndim == 2:
        cov = K_test - P @ KBA.T - KBA @ P.T + PKA @ P.T
        cov = 0.5 * (cov + cov.T)
    else:
        cov = K_test - 2.0 * np.einsum("ba,ba->b", P, KBA) + np.einsum("ba,ba->b", PKA, P)
    return mean, cov


def _predict(net, X_train, y_train, X_test, eta, steps, y_test, order2, method):
    net = _check_net(net)
    XA = v.inputs("X_train", X_train, net.input_dim)
    Y, one_d = targets("y_train", y_train, XA.shape[0])
    kb = kernel_blocks(net, XA, X_test, ntk=True, order2=order2)
    mean, cov, info = trained_from_kernels(kb.train, kb.cross, kb.test, kb.Theta_train, kb.Theta_cross,
                                           Y, eta, steps, X_train=XA)
    yt = None if y_test is None else _test_targets(y_test, mean.shape[0], Y.shape[1], one_d)
    info = {"eta": info["eta"], "steps": info["steps"], "eta_max": info["eta_max"], "order": "infinite width"}
    return Prediction(mean[:, 0] if one_d else mean, cov, yt, method, info)


def gradient_descent(net: MLP, X_train, y_train, X_test, *, eta: float | None = None, steps=None,
                     y_test=None, order2: int | None = None) -> Prediction:
    r"""The infinite-width network after t steps of full-batch gradient descent on the MSE loss
    (book §10.2; sheet §8).

    .. math:: m_{i;\dot\beta}(t) = \sum\Theta_{\dot\beta\alpha_1}\big[\tilde\Theta^{-1}(1 - (1-\eta\tilde\Theta)^t)
              \big]^{\alpha_1\alpha_2}y_{i;\alpha_2},\quad
              \mathrm{Cov} = \delta_{i_1i_2}\big[K_{BB} - P_tK_{AB} - K_{BA}P_t^\top + P_tK_{AA}P_t^\top\big].

    Parameters
    ----------
    X_train : (N_A, n_0); y_train : (N_A,) or (N_A, n_L); X_test : (N_B, n_0).
    eta : global learning rate η > 0 multiplying the net's λ tensor (None only with steps = ∞).
    steps : t ≥ 0, or None / ``math.inf`` for the fully trained network (t = ∞).
    y_test : optional targets at X_test (bias, error).

    Errors: t = ∞ with η ≥ 2/λ_max(Θ̃) → ValueError "diverges" (the threshold is in the message,
    and in ``info["eta_max"]``); finite t with such η → :class:`DivergenceWarning`; t = ∞ with a
    singular Θ̃ → ValueError, except exact duplicate training inputs, which are handled exactly
    (:func:`gd_operator`).
    """
    return _predict(net, X_train, y_train, X_test, eta, steps, y_test, order2, "gradient descent")


def newton_step(net: MLP, X_train, y_train, X_test, *, y_test=None, order2: int | None = None) -> Prediction:
    r"""One Newton step, the matrix learning rate ηΘ̃ = 1 (book §10.2.1): M = Θ̃⁻¹ after a single
    step, identical to t = ∞ gradient descent (algorithm independence at infinite width).
    Shapes as in :func:`gradient_descent`."""
    pred = _predict(net, X_train, y_train, X_test, None, None, y_test, order2, "newton step")
    info = dict(pred.info, steps=1, eta="Θ̃⁻¹ (matrix)")
    return Prediction(pred.mean, pred.cov, pred.y_test, "newton step", info)


def expected_loss(net: MLP, X_train, y_train, *, eta: float, steps: int, order2: int | None = None) -> np.ndarray:
    r"""Mean training loss E[L(t)], t = 0..steps, of the infinite-width network under gradient descent
    (book §10.2), averaged over initializations z_A(0) ~ N(0, K):

    .. math:: E[\mathcal L(t)] = \frac12\sum_k (1-\eta\lambda_k)^{2t}\Big[n_L\,(U^\top K_{AA}U)_{kk}
              + \sum_i (U^\top y_i)_k^2\Big],\qquad \tilde\Theta = U\,\mathrm{diag}(\lambda)\,U^\top,

    from z_A(t) − y = (1 − ηΘ̃)^t (z_A(0) − y). X_train (N_A, n_0), y_train (N_A,) or (N_A, n_L),
    η > 0, steps ≥ 0. Returns (steps + 1,).
    """
    net = _check_net(net)
    XA = v.inputs("X_train", X_train, net.input_dim)
    Y, _ = targets("y_train", y_train, XA.shape[0])
    eta = v.real("eta", eta, low=0.0, low_open=True)
    steps = v.positive_int("steps", steps, minimum=0)
    kb = kernel_blocks(net, XA, ntk=True, order2=order2)
    lam, U = np.linalg.eigh(kb.Theta_train)
    weight = Y.shape[1] * np.einsum("ak,ab,bk->k", U, kb.train, U) + np.sum((U.T @ Y) ** 2, axis=1)
    r2 = (1.0 - eta * lam) ** 2
    return 0.5 * (r2[None, :] ** np.arange(steps + 1)[:, None]) @ weight
