r"""Finite-width (O(1/n)) mean of the trained output (book Ch. ∞, §∞.2; formula sheet §8, §9).

Setup (sheet §0, §8): MSE loss :math:`\mathcal L = \frac12\sum_{i,\alpha\in A}(z_{i;\alpha} - y_{i;\alpha})^2`,
full-batch gradient descent with the learning-rate tensor λ and global rate η (t steps), or Newton
steps (matrix learning rate η Ĥ_AA⁻¹ from the network's own training-block NTK: the book's "giant
leap", η = 1), as :func:`pdlt.empirical.train_ensemble` does them.  Any number n_L of outputs; the
output index i and the input index α are flattened into one index (α, i) below.

**Infinite width** (sheet §8): with :math:`M_t(\tilde H) = \tilde H^{-1}\big(1 - (1-\eta\tilde H)^t\big)`
(t = ∞ or Newton: :math:`\tilde H^{-1}`) and :math:`f(H) \equiv H_{BA}\,M_t(H_{AA})\,y`,
:math:`m^\infty = f(\Theta)`.

The O(1/n) terms (n = n_{L−1}) come in two groups; the prediction is :math:`m^\infty + \sum_k c_k/n`.

**Frozen-NTK part** ("H1", "NTK-fluct"). For a network whose NTK does not move,
:math:`z(T) = z(0) + f(\hat H) - \hat H_{BA}M_t(\hat H_{AA})z_A(0)`; its mean drops every term odd in
z (W^{(L)} → −W^{(L)}), so with :math:`\hat H = \Theta + H^{\{1\}}/n + \Delta\hat H`,

.. math:: c_{H1} = \partial f[H^{\{1\}}],\qquad
          c_{\rm NTK\text{-}fluct} = \tfrac12\sum \mathcal C_{(I_1I_2)(I_3I_4)}
          \frac{\partial^2 f}{\partial H_{I_1I_2}\partial H_{I_3I_4}},

:math:`n\,\mathrm{Cov}(\hat H_{i_1i_2;\alpha_1\alpha_2},\hat H_{i_3i_4;\alpha_3\alpha_4}) = \mathcal C =
\delta_{i_1i_2}\delta_{i_3i_4}A_{(\alpha_1\alpha_2)(\alpha_3\alpha_4)} + \delta_{i_1i_3}\delta_{i_2i_4}
B_{\alpha_1\alpha_3\alpha_2\alpha_4} + \delta_{i_1i_4}\delta_{i_2i_3}B_{\alpha_1\alpha_4\alpha_2\alpha_3}`
(layouts of :class:`pdlt.theory.state.LayerState`). For t = ∞ this is the sheet's §9 ΔNTK term
:math:`-X_\delta + H_{\delta\alpha}\tilde H^{-1}X_\alpha` with the sheet's sign (not S5's; fast test
``test_fluctuation_part_matches_sheet_closed_form``). The derivatives of f are central differences
along the eigenvectors of 𝒞, Richardson-extrapolated, so one code covers every t and η.

**Moving-NTK part** ("dNTK", "ddNTK"; Ch. ∞.2). Taylor-expanding one step
:math:`\Delta\theta_\mu = -\sum\lambda_{\mu\nu}\,(dz_J/d\theta_\nu)\,c_J` (c = ηε for gradient descent,
c = ηĤ_AA⁻¹ε for Newton, ε = z_A − y) gives the nearly-kernel dynamics (sheet §0, §6; each line is
the Taylor series of z, Ĥ, dĤ in Δθ, cut where the next term is O(1/n²))

.. math::
    \Delta z_I &= -\hat H_{IJ}c_J + \tfrac12\,\widehat{dH}_{IJK}c_Jc_K - \tfrac16\,dd_I\hat H_{IJKL}c_Jc_Kc_L,\\
    \Delta\hat H_{IJ} &= -(\widehat{dH}_{IJK} + \widehat{dH}_{JIK})c_K
        + \tfrac12(dd_I\hat H_{IJKL} + dd_I\hat H_{JIKL} + dd_{II}\hat H_{IJKL} + dd_{II}\hat H_{IJLK})c_Kc_L,\\
    \Delta\widehat{dH}_{IJK} &= -(dd_I\hat H_{IJKL} + dd_{II}\hat H_{IJKL} + dd_{II}\hat H_{IKJL})c_L,

with the ddNTKs constant. At O(1/n) the dNTK enters linearly through its correlation with the
initial outputs, :math:`n\,E[\widehat{dH}_{IJK}z_L] = ` (P, Q with δ's; :class:`LayerState`), and the
ddNTKs through their means (R, S, T, U), while z_A(0) ~ N(0, K) at leading order. The mean of the
part of z(T) linear in dĤ and dd is therefore computed exactly as follows: replace dĤ(0) by its
regression on the initial outputs, :math:`E[\widehat{dH}\mid z_A(0)] = E[\widehat{dH}z_A]K_{AA}^{-1}z_A(0)`
(exact for the mean, since that part is linear in dĤ), and the ddNTKs by their means; run the
dynamics above with (dĤ, dd) multiplied by an imaginary ih (complex-step derivative: Im z(T)/h is
the part linear in them, to machine precision); it is a polynomial of degree 3 in z_A(0), whose
Gaussian mean an equal-weight ±√d rule on the 2d points :math:`\pm\sqrt d\,K_{AA}^{1/2}e_u`
integrates exactly (d = n_L N_A). No closed form is transcribed: the sheet's §9 Z-tensor formula
(S5, signs unverified) is the t = ∞ limit of the same dynamics. Terms mixing ΔĤ with dĤ have zero
or O(1/n²) mean (dĤ is odd under W^{(L)} → −W^{(L)}, ΔĤ even), so the two groups add.

Checks. The dynamics, run on one real network's own z(0), Ĥ, dĤ, dd_IĤ, dd_IIĤ, reproduces its
actual training with an O(η⁴) error (``tests/theory/test_finite_width_dynamics.py``); the mean
method equals brute-force Gauss–Hermite quadrature with finite differences. Twin
(``tests/test_finite_width_twin.py``, all layers training, depth 2, widths 32–256): for tanh, one
Newton step and 16 gradient-descent steps, n·(measured − prediction) extrapolates to 0 (e.g.
0.00 ± 0.10 against 0.60 ± 0.10 for m^∞ alone; numbers in the test module), the residual falling
like n^{-3/2} for gradient descent (an order we have not derived).

**Kinked activations (ReLU & co.): what is predicted** (``kinks``). With the a.e. convention (default;
σ″ = σ‴ = 0 per network, :mod:`pdlt.theory.dntk`) the Taylor series summed here is that of the network
whose hidden neurons keep their initialization slope at each input
(``train_ensemble(..., frozen_slopes=True)``), and against that network the prediction is a twin like
tanh's for every schedule (ReLU, one Newton step and 16 GD steps:
``test_finite_width_mean_twin_relu_frozen_slopes``). A real ReLU network differs by the neurons whose
preactivation crosses the kink during training; Taylor-expanding σ as a distribution (σ″ = Jδ,
σ‴ = Jδ′, J = a₊ − a₋; ``kinks="delta"``, :mod:`pdlt.theory._delta`) gives the terms of those crossings:

(i) after one Newton step, at test inputs distinct from the training inputs, the crossings shift the
mean by O(1/n), and the δ terms predict it: the real-network twin
``test_finite_width_mean_twin_relu_newton`` and, sharper, the paired kink part (real − frozen over the
same networks) ``test_relu_kink_part_twin_at_test_inputs`` (numbers in the test module);
(ii) at the training inputs the same step shifts the mean by O(n^{-1/2}) (n·Δ = 10.0, 21.9, 46.1 at
n = 64, 256, 1024): a neuron that is off at x_α gets no gradient from x_α, so crossings are one-sided
and the W^{(L)} → −W^{(L)} parity that removes odd orders fails — here the δ terms meet σ′ at the same
input and are ill-defined (NaN in the δ convention), as they should be;
(iii) the next gradient step carries that shift to every input, so after two or more steps the trained
mean of a real ReLU network has an n^{-1/2} term (two GD steps: n·Δ ≈ 0.17 + 0.023√n at a test input;
sixteen: n·Δ = −0.52 … −4.91 at n = 32 … 512). No expansion in 1/n captures (ii) and (iii), so
``kinks="delta"`` is refused for anything but one Newton step; for real ReLU networks trained by
gradient descent the prediction is the frozen-slope network's, and the difference is reported, not fitted.

The dNTK part also has the right gradient-flow limit: small-step descent to convergence approaches
an independent analytic derivation (``test_dntk_part_has_the_gradient_flow_limit``). The sheet's §9
closed form m^{dNTK} (S5's Z tensors, read with n_L = 1 and P + Q + Q^{(12)} = n E[dĤ z]) does
**not** agree: tanh, L = 3, t = ∞ at η = η*/20 it gives (0.377, 0.376) where the dynamics gives
(0.296, 0.378) and gradient flow (0.294, 0.376); it is not used.
**Covariance** (:func:`finite_width_covariance`): to O(1/n) when only the last layer trains, where the
network is linear in its trained parameters and everything is a function of the output layer's
stochastic metric Ĝ (K, G^{1}, V); twin ``test_finite_width_covariance_twin``. Not done: the covariance
when hidden layers train (the moving NTK's correlations with two outputs are not derived).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _validate as v
from ..mlp import MLP
from ._gauss import Expectations
from .bayes import RCOND

__all__ = ["FiniteWidthPrediction", "finite_width_mean", "finite_width_covariance", "trained_mean_function",
           "nearly_kernel_mean", "nearly_kernel_step", "nearly_kernel_couplings", "dntk_statistics"]

PARTS = ("H1", "NTK-fluct", "dNTK", "ddNTK")
FROZEN_PARTS = ("H1", "NTK-fluct")
#: Steps of gradient descent at which the t = ∞ moving-NTK dynamics gives up converging.
MAX_STEPS = 200_000


def _apply_m_t(HAA: np.ndarray, R: np.ndarray, eta, steps, newton: bool) -> np.ndarray:
    r"""M_t(Ĥ_AA) R = Ĥ_AA⁻¹(R − (1 − ηĤ_AA)^t R); Ĥ_AA⁻¹R for t = ∞ or Newton steps."""
    if newton or steps is None or math.isinf(steps):
        return np.linalg.solve(HAA, R)
    P = np.eye(HAA.shape[0]) - eta * HAA
    return np.linalg.solve(HAA, R - np.linalg.matrix_power(P, int(steps)) @ R)


def trained_mean_function(MA: int, y: np.ndarray, *, eta: float | None, steps, newton: bool):
    r"""f(H) = H_{BA} M_t(H_{AA}) y for a full (M, M) NTK matrix H (the M_A training rows first)."""
    y = np.asarray(y, dtype=np.float64)

    def f(H):
        return H[MA:, :MA] @ _apply_m_t(H[:MA, :MA], y, eta, steps, newton)

    return f


def _d1(f, H, V, h):
    return (f(H + h * V) - f(H - h * V)) / (2 * h)


def _d2(f, H, V, h):
    return (f(H + h * V) - 2 * f(H) + f(H - h * V)) / h ** 2


def _richardson(fn, f, H, V, h):
    a, b = fn(f, H, V, h), fn(f, H, V, h / 2)
    return (4 * b - a) / 3


def _directions(C: np.ndarray, M: int):
    """(w_k, U_k) over the eigenpairs of a symmetric (M², M²) covariance, U_k as (M, M) matrices,
    skipping the numerically zero ones: the directions of the second-order expansions."""
    w, U = np.linalg.eigh(C)
    tiny = 1e-14 * max(float(abs(w).max()), 1e-300)
    return [(w[k], U[:, k].reshape(M, M)) for k in range(w.size) if abs(w[k]) > tiny]


def _check_training_ntk(Theta_AA: np.ndarray) -> None:
    """ValueError unless the training block of the infinite-width NTK is invertible (finite-width theory)."""
    w = np.linalg.eigvalsh(Theta_AA)
    if not w[0] > RCOND * w[-1]:
        raise ValueError(f"the training-block NTK Θ_AA is singular (smallest/largest eigenvalue "
                         f"{w[0] / w[-1]:.3g}): duplicate or degenerate training inputs; remove them")


def _check_kinks(net: MLP, kinks: str, newton: bool, steps) -> bool:
    """Validate ``kinks`` for a schedule; True when the δ-function terms are used (kinked σ, "delta")."""
    if kinks not in Expectations.KINKS:
        raise ValueError(f"kinks must be 'a.e.' or 'delta', got {kinks!r}")
    delta = kinks == "delta" and not net.activation.smooth
    if delta and not (newton and steps == 1):
        raise ValueError("kinks='delta' predicts one Newton step (newton=True, steps=1) only: after "
                         "gradient-descent or further steps the kink crossings of a real network shift "
                         "its mean by O(n^-1/2), beyond any 1/n expansion; use kinks='a.e.' (the "
                         "frozen-slope network)")
    return delta


# ---------------------------------------------------------------------------------------------
# statistics with their neuron (output) structure, flattened over (α, i)


def _with_deltas(nL: int, terms) -> np.ndarray:
    """Σ X[perm] δ δ as an (M, M, M, M) array, M = N n_L, index (α, i) → α n_L + i.

    ``terms``: (X, labels of X's axes among a b c d, δ pair, δ pair) with output indices p q r s
    belonging to a b c d."""
    I = np.eye(nL)
    out = sum(np.einsum(f"{lab},{d1},{d2}->apbqcrds", X, I, I) for X, lab, d1, d2 in terms)
    M = out.shape[0] * nL
    return out.reshape(M, M, M, M)


def dntk_statistics(s, nL: int) -> dict:
    r"""n × the dNTK/ddNTK statistics of an output layer with n_L outputs, flattened (M, M, M, M).

    - ``"dHz"``: :math:`n\,E[\widehat{dH}_{i_0i_1i_2;\delta_0\delta_1\delta_2}z_{i_3;\delta_3}] =
      \delta_{i_0i_3}\delta_{i_1i_2}P_{\delta_0\delta_1\delta_2\delta_3} + \delta_{i_0i_1}\delta_{i_2i_3}Q_{\delta_0\delta_1\delta_2\delta_3}
      + \delta_{i_0i_2}\delta_{i_1i_3}Q_{\delta_0\delta_2\delta_1\delta_3}`
    - ``"ddI"``: :math:`n\,E[dd_I\hat H] = \delta_{i_0i_1}\delta_{i_2i_3}R_{\delta_0\delta_1\delta_2\delta_3}
      + \delta_{i_0i_2}\delta_{i_3i_1}R_{\delta_0\delta_2\delta_3\delta_1} + \delta_{i_0i_3}\delta_{i_1i_2}R_{\delta_0\delta_3\delta_1\delta_2}`
    - ``"ddII"``: :math:`n\,E[dd_{II}\hat H] = \delta_{i_1i_2}\delta_{i_3i_4}S_{\delta_1\delta_2\delta_3\delta_4}
      + \delta_{i_1i_3}\delta_{i_4i_2}T_{\delta_1\delta_3\delta_4\delta_2} + \delta_{i_1i_4}\delta_{i_2i_3}U_{\delta_1\delta_4\delta_2\delta_3}`

    (formula sheet §6; ``s`` a :class:`LayerState` with P, Q and, when computed, R…U; book Ch. 11, ∞).
    """
    P, Q = np.asarray(s.P), np.asarray(s.Q)
    out = {"dHz": _with_deltas(nL, [(P, "abcd", "ps", "qr"), (Q, "abcd", "pq", "rs"), (Q, "acbd", "pr", "qs")])}
    if s.R is not None:  # the ddNTKs were computed
        R, S, T, U = (np.asarray(getattr(s, k)) for k in "RSTU")
        out["ddI"] = _with_deltas(nL, [(R, "abcd", "pq", "rs"), (R, "acdb", "pr", "sq"), (R, "adbc", "ps", "qr")])
        out["ddII"] = _with_deltas(nL, [(S, "abcd", "pq", "rs"), (T, "acdb", "pr", "sq"), (U, "adbc", "ps", "qr")])
    return out


def _delta_statistics(st: dict, MA: int) -> dict:
    """The δ-convention statistics for one step: the entries a step moves a test output with (first
    slot a test input, the rest training inputs) must be finite; the others (NaN where a δ meets σ′ at
    one input) do not reach the test outputs after one step and are zeroed."""
    A, B = slice(0, MA), slice(MA, None)
    for name in ("dHz", "ddI"):
        if name in st and not np.all(np.isfinite(st[name][B, A, A, A])):
            raise ValueError(f"kinks='delta': the {name} entries of the test inputs are not finite; test "
                             f"inputs collinear with training inputs?")
    return {k: np.nan_to_num(x, nan=0.0) for k, x in st.items()}


def _ntk_covariance(A, B, nL: int) -> np.ndarray:
    """n Cov(Ĥ_{I1I2}, Ĥ_{I3I4}) as an (M², M²) matrix (module docstring)."""
    C = _with_deltas(nL, [(A, "abcd", "pq", "rs"), (B, "acbd", "pr", "qs"), (B, "adbc", "ps", "qr")])
    M = C.shape[0]
    C = C.reshape(M * M, M * M)
    return 0.5 * (C + C.T)


# ---------------------------------------------------------------------------------------------
# the moving-NTK part


def nearly_kernel_couplings(ddI, ddII, MA: int) -> tuple:
    r"""The ddNTK combinations that move z, Ĥ and dĤ, restricted to the M_A training slots.

    ddI, ddII (M, M, M, M) flattened over (α, i). Returns (dd_I[:, A, A, A],
    dd_I + dd_Iᵀ + dd_II + dd_IIᵀ on the last two slots [.., A, A], dd_I + dd_II + dd_II^{(12)} [.., A])
    (module docstring; book Ch. ∞.2).
    """
    A = slice(0, MA)
    return (ddI[:, A, A, A],
            (ddI + ddI.transpose(1, 0, 2, 3) + ddII + ddII.transpose(0, 1, 3, 2))[:, :, A, A],
            (ddI + ddII + ddII.transpose(0, 2, 1, 3))[:, :, :, A])


def nearly_kernel_step(z, H, dH, G, y, *, eta: float, newton: bool = False):
    r"""One step of the nearly-kernel dynamics (module docstring; book Ch. ∞.2), batched over a leading axis.

    z (p, M), H (p, M, M), dH (p, M, M, M) flattened over (α, i); G from
    :func:`nearly_kernel_couplings`; y (M_A,) the targets of the M_A training rows. The step's
    coefficients are c = ηε (gradient descent) or c = ηĤ_AA⁻¹ε (Newton), ε = z_A − y.
    Returns the new (z, H, dH); the ddNTKs do not move at this order.
    """
    dIA, G2A, G3A = G
    MA = y.shape[-1]
    A = slice(0, MA)
    eps = z[:, A] - y
    c = eta * (np.linalg.solve(H[:, A, A], eps[..., None])[..., 0] if newton else eps)
    dz = (-np.einsum("pIk,pk->pI", H[:, :, A], c)
          + 0.5 * np.einsum("pIjk,pj,pk->pI", dH[:, :, A, A], c, c)
          - np.einsum("Ijkl,pj,pk,pl->pI", dIA, c, c, c) / 6.0)
    dHt = dH[:, :, :, A]
    dHH = (-np.einsum("pIJk,pk->pIJ", dHt + dHt.transpose(0, 2, 1, 3), c)
           + 0.5 * np.einsum("IJkl,pk,pl->pIJ", G2A, c, c))
    ddH = -np.einsum("IJKl,pl->pIJK", G3A, c)
    return z + dz, H + dHH, dH + ddH


def nearly_kernel_mean(Theta, dHz, ddI, ddII, K_AA, y, *, eta: float, steps, newton: bool = False,
                       tol: float = 1e-12) -> np.ndarray:
    r"""n × the mean shift of the outputs linear in the dNTK and ddNTKs after training (book Ch. ∞.2).

    Flattened (α, i) index, M_A training rows first (module docstring for the method).
    Theta (M, M): the infinite-width NTK ⊗ δ; dHz (M, M, M, M) = n E[dĤ z]; ddI, ddII (M, M, M, M)
    = n E[dd Ĥ] (zero arrays switch a part off); K_AA (M_A, M_A) the kernel ⊗ δ of the training
    block; y (M_A,). ``steps`` an int, or None for t = ∞ (until the dynamics converges).
    Returns (M − M_A,): the coefficient c with E[z_B(T)] ⊃ c/n.
    """
    MA = K_AA.shape[0]
    M = Theta.shape[0]
    h = 1e-30
    w, Vk = np.linalg.eigh(K_AA)
    root = Vk * np.sqrt(np.clip(w, 0.0, None))
    pts = math.sqrt(MA) * np.concatenate([root.T, -root.T])          # (2d, M_A), rows ±√d K^{1/2} e_u
    reg = pts @ np.linalg.pinv(K_AA, hermitian=True)                 # K⁻¹ z(0) per point
    P = pts.shape[0]
    z = np.zeros((P, M), dtype=complex)
    z[:, :MA] = pts
    H = np.broadcast_to(Theta.astype(complex), (P, M, M)).copy()
    dH = 1j * h * np.einsum("IJKu,pu->pIJK", dHz[:, :, :, :MA], reg)
    G = nearly_kernel_couplings(1j * h * ddI, 1j * h * ddII, MA)
    T = None if steps is None or math.isinf(steps) else int(steps)
    scale = max(float(np.max(np.abs(y))), 1e-300)
    t = 0
    while T is None or t < T:
        z0 = z
        z, H, dH = nearly_kernel_step(z, H, dH, G, y, eta=eta, newton=newton)
        t += 1
        if not np.all(np.isfinite(z)):
            raise FloatingPointError(f"the nearly-kernel dynamics diverged after {t} steps (eta = {eta:g}); lower eta")
        if T is None:
            dz = z - z0
            if max(float(np.max(np.abs(dz.real))), float(np.max(np.abs(dz.imag))) / h) < tol * scale:
                break
            if t >= MAX_STEPS:
                raise ValueError(f"the dynamics did not converge in {MAX_STEPS} steps (eta = {eta:g}); give a "
                                 "finite number of steps or a larger eta")
    return np.mean(z[:, MA:].imag, axis=0) / h


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FiniteWidthPrediction:
    r"""Trained mean at the test inputs to O(1/n).

    infinite : (N_B,) or (N_B, n_L), m^∞ = f(Θ).
    parts : dict name → coefficient c of the 1/n correction, same shape (the prediction adds c/n).
    n : the width n_{L−1} that sets the expansion.
    total : m^∞ + Σ parts / n.
    """

    infinite: np.ndarray
    parts: dict
    n: int

    @property
    def correction(self) -> np.ndarray:
        return sum(self.parts.values()) if self.parts else np.zeros_like(self.infinite)

    @property
    def total(self) -> np.ndarray:
        return self.infinite + self.correction / self.n


def _training_setup(net: MLP, X_train, y_train, X_test, eta, steps, newton: bool):
    """Validated (X_A, X_B, Y (N_A, n_L), one_d, eta, steps) of a training schedule (ValueError otherwise)."""
    from .training import max_learning_rate

    if not isinstance(net, MLP):
        raise ValueError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    XA = v.inputs("X_train", X_train, net.input_dim)
    XB = v.inputs("X_test", X_test, net.input_dim)
    nL = net.n(net.depth)
    y = np.asarray(y_train, dtype=np.float64)
    one_d = y.ndim == 1
    Y = y.reshape(-1, 1) if one_d else y
    if Y.ndim != 2 or Y.shape != (XA.shape[0], nL) or not np.all(np.isfinite(Y)):
        raise ValueError(f"y_train must be finite with shape (N_A,) for one output or (N_A, n_L) = "
                         f"({XA.shape[0]}, {nL}); got {y.shape}")
    if newton:
        eta = 1.0 if eta is None else v.real("eta", eta, low=0.0, low_open=True)
        steps = 1 if steps is None else v.positive_int("steps", steps, minimum=1)
        if eta != 1.0:
            raise ValueError("newton steps take eta = 1 (the giant leap ηĤ_AA⁻¹ with η = 1)")
    elif steps is not None and not (isinstance(steps, float) and math.isinf(steps)):
        steps = v.positive_int("steps", steps, minimum=0)
        if eta is None:
            raise ValueError("eta is required for a finite number of steps")
    if eta is not None and not newton:
        eta = v.real("eta", eta, low=0.0, low_open=True)
        eta_max = max_learning_rate(net, XA)
        if eta >= eta_max:
            raise ValueError(f"eta = {eta:g} >= 2/λ_max(Θ̃) = {eta_max:g}: gradient descent diverges at "
                             f"infinite width; choose 0 < eta < {eta_max:g}")
    return XA, XB, Y, one_d, eta, steps


def finite_width_mean(net: MLP, X_train, y_train, X_test, *, eta: float | None = None, steps=None,
                      newton: bool = False, parts=PARTS, kinks: str = "a.e.") -> FiniteWidthPrediction:
    r"""Mean trained output at X_test to O(1/n) (module docstring; book Ch. ∞, §∞.2).

    X_train (N_A, n_0), y_train (N_A,) or (N_A, n_L), X_test (N_B, n_0).
    Gradient descent: ``eta`` and ``steps`` (an int, or None for t = ∞). ``newton=True``: ``steps``
    Newton steps (default 1, the giant leap) of the matrix rate Ĥ_AA⁻¹ (η = 1). The frozen parts need
    only M_t; the moving parts ("dNTK", "ddNTK") follow the algorithm step by step.

    ``kinks`` (kinked σ only): "a.e." (default) predicts the network whose neurons keep their
    initialization slopes (``train_ensemble(..., frozen_slopes=True)``), for every schedule; "delta"
    predicts the real network, with the δ-function σ″, σ‴ (:mod:`pdlt.theory._delta`), for one Newton
    step at test inputs distinct from the training inputs: the only case where kink crossings are
    O(1/n) (module docstring).
    """
    from .network import theory as _theory
    from .ntk_correction import ntk_mean_correction

    parts = tuple(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown parts {bad}; available: {PARTS}")
    XA, XB, Y, one_d, eta, steps = _training_setup(net, X_train, y_train, X_test, eta, steps, newton)
    nL = net.n(net.depth)
    delta = _check_kinks(net, kinks, newton, steps)
    if delta:
        if any(np.any(np.all(XA == x, axis=1)) for x in XB):
            raise ValueError("kinks='delta': a test input equals a training input, where the δ-function "
                             "terms are ill-defined (the real network's shift there is O(n^-1/2))")
    moving = [p for p in parts if p not in FROZEN_PARTS]
    if moving and not newton and eta is None:
        raise ValueError(f"the parts {moving} depend on the algorithm: give eta (and steps) or newton=True")
    NA, NB = XA.shape[0], XB.shape[0]
    MA = NA * nL
    X = np.vstack([XA, XB])
    th = _theory(net, X, ntk=True, dntk=bool(moving), ddntk="ddNTK" in moving, kinks=kinks)
    s = th.layer(net.depth)
    Ik = np.eye(nL)
    Theta = np.kron(np.asarray(s.Theta), Ik)
    _check_training_ntk(Theta[:MA, :MA])
    n = net.n(net.depth - 1)
    f = trained_mean_function(MA, Y.reshape(-1), eta=eta, steps=steps, newton=newton)
    shape = (NB,) if one_d else (NB, nL)
    m_inf = f(Theta).reshape(shape)
    scale = float(np.max(np.abs(np.diag(Theta))))
    h = 1e-3 * scale
    out = {}
    if "H1" in parts:
        H1 = np.kron(ntk_mean_correction(net, X, th)[-1], Ik)
        nrm = float(np.max(np.abs(H1))) or 1.0
        out["H1"] = (_richardson(_d1, f, Theta, H1 / nrm, h) * nrm).reshape(shape)
    if "NTK-fluct" in parts:
        C = _ntk_covariance(np.asarray(s.A), np.asarray(s.B), nL)
        acc = np.zeros(Theta.shape[0] - MA)
        for w, D in _directions(C, Theta.shape[0]):
            acc += 0.5 * w * _richardson(_d2, f, Theta, D, h)
        out["NTK-fluct"] = acc.reshape(shape)
    if moving:
        st = dntk_statistics(s, nL)
        if delta:
            st = _delta_statistics(st, MA)
        K_AA = np.kron(np.asarray(s.K)[:NA, :NA], Ik)
        zero = np.zeros_like(st["dHz"])
        kw = dict(eta=eta, steps=steps, newton=newton)
        if "dNTK" in moving:
            out["dNTK"] = nearly_kernel_mean(Theta, st["dHz"], zero, zero, K_AA, Y.reshape(-1), **kw).reshape(shape)
        if "ddNTK" in moving:
            out["ddNTK"] = nearly_kernel_mean(Theta, zero, st["ddI"], st["ddII"], K_AA,
                                              Y.reshape(-1), **kw).reshape(shape)
    return FiniteWidthPrediction(m_inf, out, n)


# ---------------------------------------------------------------------------------------------
# the covariance, when only the last layer trains

def _metric_expansion(G, V, G1, H_of, MA: int, Y, m_t):
    r"""Mean and covariance of the trained outputs to O(1/n) for a network linear in its trained
    parameters, as functions of its stochastic metric Ĝ (E[Ĝ] = G + G1/n, n Cov(Ĝ, Ĝ) = V).

    Given Ĝ the outputs are Gaussian with covariance Ĝ and the trained output is linear in them, so
    h(Ĝ) = Ĥ_BA M y and g(Ĝ) = Ĝ_BB − PĜ_AB − Ĝ_BA Pᵀ + PĜ_AA Pᵀ (P = Ĥ_BA M) are its conditional mean
    and covariance; E[z] = E[h], Cov[z] = E[g] + Cov[h], expanded to O(1/n) by directional central
    differences (Richardson-extrapolated) along G1 and the eigenvectors of V.
    Returns {"mean": (m^∞, {"G1": c, "V": c}), "cov": (Σ^∞, {"G1": c, "V": c})}.
    """
    N = G.shape[0]
    NB = N - MA
    nL = Y.shape[1]

    def f(Gm):
        H = H_of(Gm)
        P = H[MA:, :MA] @ m_t(H[:MA, :MA])
        g = Gm[MA:, MA:] - P @ Gm[:MA, MA:] - Gm[MA:, :MA] @ P.T + P @ Gm[:MA, :MA] @ P.T
        return np.concatenate([(P @ Y).reshape(-1), g.reshape(-1)])

    def split(x):
        return x[:NB * nL].reshape(NB, nL), x[NB * nL:].reshape(NB, NB)

    h = 1e-3 * float(np.max(np.abs(np.diag(G))))
    base = f(G)
    nrm = float(np.max(np.abs(G1))) or 1.0
    d_G1 = split(_richardson(_d1, f, G, G1 / nrm, h) * nrm)
    Vm = V.reshape(N * N, N * N)
    curv = np.zeros_like(base)
    cov_h = np.zeros((NB, NB))
    for w, D in _directions(0.5 * (Vm + Vm.T), N):
        curv += 0.5 * w * _richardson(_d2, f, G, D, h)
        dh = split(_richardson(_d1, f, G, D, h))[0]
        cov_h += w * dh @ dh.T / nL                    # (1/n_L) Σ_i Cov[h_i, h_i], the measured layout
    m0, c0 = split(base)
    mV, cV = split(curv)
    return {"mean": (m0, {"G1": d_G1[0], "V": mV}), "cov": (c0, {"G1": d_G1[1], "V": cV + cov_h})}


def finite_width_covariance(net: MLP, X_train, y_train, X_test, *, eta: float | None = None, steps=None,
                            newton: bool = False) -> FiniteWidthPrediction:
    r"""Covariance over initializations of the trained outputs at X_test to O(1/n), when only the last
    layer trains (book Ch. ∞, §∞.2; Ch. 10 at finite width).

    With λ^{(ℓ)} = 0 for ℓ < L the network is linear in its trained parameters (W^{(L)}, b^{(L)}): its
    NTK Ĥ = λ_b + λ_W Σ̂ and its metric Ĝ = C_b + C_W Σ̂ (Σ̂_{αβ} = Σ_j σ_{j;α}σ_{j;β}/n_{L−1}, layer-L
    hyperparameters) are frozen, Ĥ = λ_b + (λ_W/C_W)(Ĝ − C_b), and given Ĝ the initial outputs are
    Gaussian with covariance Ĝ. The trained output
    :math:`z_B(T) = z_B(0) - \hat H_{BA}M_t(\hat H_{AA})(z_A(0) - y)` has conditional mean
    h(Ĝ) = Ĥ_BA M y and covariance

    .. math:: g(\hat G) = \hat G_{BB} - P\hat G_{AB} - \hat G_{BA}P^\top + P\hat G_{AA}P^\top,\qquad P = \hat H_{BA}M_t,

    so :math:`\mathrm{Cov}[z_B(T)] = E[g(\hat G)] + \mathrm{Cov}[h(\hat G)]`. With
    :math:`E[\hat G] = K + G^{\{1\}}/n` and
    :math:`n\,\mathrm{Cov}(\hat G_{\alpha_1\alpha_2}, \hat G_{\alpha_3\alpha_4}) = V_{(\alpha_1\alpha_2)(\alpha_3\alpha_4)}`
    (layer L, book §4.1, §4.3), to O(1/n):

    .. math:: \Sigma = g(K) + \frac1n\Big(\partial g[G^{\{1\}}] + \tfrac12\sum V\,\partial^2 g
              + \sum V\,\partial h\,\partial h^\top\Big),

    parts "G1" (the first term in the bracket) and "V" (the other two). Cov is the measured layout of
    :attr:`pdlt.empirical.training.TrainingMeasurement.cov`, (1/n_L)Σ_i Cov[z_{i;β1}, z_{i;β2}].
    The same expansion of E[h] is the mean's "H1" + "NTK-fluct" parts of :func:`finite_width_mean`.

    Schedules as :func:`finite_width_mean` (gradient descent ``eta``, ``steps``; ``newton=True``: the
    network's own Ĥ_AA⁻¹, which for this linear model reaches the t = ∞ fit in one step). Returns a
    :class:`FiniteWidthPrediction` with (N_B, N_B) arrays. NotImplementedError when hidden layers train:
    the moving NTK's contributions to the covariance (dNTK, ddNTK against two outputs) are not derived.
    """
    from .network import theory as _theory

    XA, XB, Y, _, eta, steps = _training_setup(net, X_train, y_train, X_test, eta, steps, newton)
    L = net.depth
    if any(net.lambda_b[l] or net.lambda_W[l] for l in range(L - 1)):
        raise NotImplementedError(
            "finite_width_covariance needs a network in which only the last layer trains (lambda_b = "
            "lambda_W = 0 in layers 1..L-1): with hidden layers training the NTK moves, and its O(1/n) "
            "contributions to the covariance are not derived")
    C_b, C_W = net.hyper(L)
    lam_b, lam_W = net.lambda_b[L - 1], net.lambda_W[L - 1]
    NA = XA.shape[0]
    s = _theory(net, np.vstack([XA, XB])).layer(L)
    K, V, G1 = (np.asarray(a) for a in (s.K, s.V, s.G1))

    def H_of(G):                                        # the frozen NTK as a function of Ĝ
        return lam_b + lam_W * (G - C_b) / C_W

    _check_training_ntk(H_of(K[:NA, :NA]))
    out = _metric_expansion(K, V, G1, H_of, NA, Y, lambda HAA: _apply_m_t(HAA, np.eye(NA), eta, steps, newton))
    cov, parts = out["cov"]
    return FiniteWidthPrediction(cov, parts, net.n(L - 1))
