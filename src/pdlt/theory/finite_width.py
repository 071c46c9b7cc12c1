r"""Finite-width (O(1/n)) mean of the trained output (book Ch. ∞, §∞.2; formula sheet §8, §9).

Setup (sheet §0, §8): MSE loss :math:`\mathcal L = \frac12\sum_{\alpha\in A}(z_\alpha - y_\alpha)^2`,
full-batch gradient descent with the learning-rate tensor λ and global rate η (t steps), or the
one-step Newton update (matrix learning rate :math:`\hat H_{AA}^{-1}`); one output (n_L = 1).

**Infinite width** (sheet §8): with the operator
:math:`M_t(\tilde H) = \tilde H^{-1}\big(1 - (1-\eta\tilde H)^t\big)` (t = ∞ or Newton: :math:`\tilde H^{-1}`)
and :math:`f(H) \equiv H_{BA}\,M_t(H_{AA})\,y`,

.. math:: m^\infty_{\dot\beta} = f(\Theta)_{\dot\beta} = \sum\Theta_{\dot\beta\alpha_1}
          \big[M_t(\tilde\Theta)\big]^{\alpha_1\alpha_2}y_{\alpha_2}.

**Frozen-NTK part at O(1/n)** (algorithm dependent only through f): for a network whose NTK does
not move during training the trained output is :math:`z(T) = z(0) + f(\hat H) - \hat H_{BA}M_t(\hat H_{AA})z_A(0)`;
its mean drops every term odd in z (W^{(L)} → −W^{(L)}), so :math:`E[z(T)] = E[f(\hat H)]`, and
expanding :math:`\hat H = H + \Delta\hat H` with :math:`H = \Theta + H^{\{1\}}/n` (``ntk_mean``),

.. math:: E[z_{\dot\beta}(T)] = f(\Theta) + \frac1n\Big[\underbrace{\partial f[H^{\{1\}}]}_{\text{"H1"}}
          + \underbrace{\tfrac12\sum \mathcal C_{(\alpha_1\alpha_2)(\alpha_3\alpha_4)}
          \frac{\partial^2 f}{\partial H_{\alpha_1\alpha_2}\partial H_{\alpha_3\alpha_4}}}_{\text{"dNTK-fluct" (ΔNTK)}}\Big]
          + O(1/n^2),

with :math:`n\,\mathrm{Cov}(\hat H_{\alpha_1\alpha_2},\hat H_{\alpha_3\alpha_4}) = \mathcal C =
A_{(\alpha_1\alpha_2)(\alpha_3\alpha_4)} + B_{\alpha_1\alpha_3\alpha_2\alpha_4} + B_{\alpha_1\alpha_4\alpha_2\alpha_3}`
(n = n_{L−1}; A, B in the layout of :class:`pdlt.theory.state.LayerState`). For t = ∞ this is the
sheet's §9 ΔNTK term :math:`-X_\delta + H_{\delta\alpha}\tilde H^{-1}X_\alpha` written without
choosing a sign by hand (it agrees with the sheet's own sign to 1e-8, not S5's; fast test
``test_fluctuation_part_matches_sheet_closed_form``): the derivatives of f are taken numerically (central differences along the
eigenvectors of 𝒞, Richardson-extrapolated), so the same code covers any t and η.

**Moving NTK (dNTK, ddNTK)**: not implemented here (``parts`` accepts only "H1" and "dNTK-fluct").
The sheet's §9 [S] terms m^{dNTK}, m^{ddNTK} were not transcribed/verified within the time box.

Status (twin, ``tests/test_finite_width_twin.py``):

- "H1" + "dNTK-fluct" are **exact** at O(1/n) when only the last layer trains (λ^{(ℓ<L)} = 0: the
  model is linear in its parameters, the NTK is frozen); verified for ReLU (Newton; 16 GD steps at
  η*/4, n ≥ 32) and tanh (4 and 16 GD steps at η*/4): n·(measured − prediction) has intercept 0
  within errors. Not twinned: tanh Newton / t = ∞ (effect too small at this setup, |n·Δ| ≲ 0.1) and
  64-step GD (ReLU at η*/2 diverged at n = 16).
  Reduced sweep (y × 5, n = 16, 32, 64; fitted intercept a of n·(measured − prediction) = a + b/n,
  first test point): ReLU Newton a_∞ = −3.07 ± 0.30 → a = 0.15 ± 0.30; tanh 16 GD steps
  a_∞ = 1.39 ± 0.08 → a = −0.08 ± 0.08; tanh 4 GD steps a_∞ = 0.45 ± 0.10 → a = −0.11 ± 0.10.
  ReLU GD (16 steps, n = 32..128): consistent (a = −0.60 ± 0.60) but a_∞ only 1.8σ from 0.
- With all layers training the NTK moves; the remaining O(1/n) residual is the dNTK/ddNTK effect,
  **not predicted here** (e.g. depth 2, ReLU Newton: n·(measured − prediction) ≈ 0.62–0.75 at
  n = 16..64 on the first test point; numbers in the test module docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _validate as v
from ..mlp import MLP

__all__ = ["FiniteWidthMean", "finite_width_mean", "trained_mean_function"]

PARTS = ("H1", "dNTK-fluct")


def trained_mean_function(NA: int, y: np.ndarray, *, eta: float | None, steps, newton: bool):
    r"""f(H) = H_{BA} M_t(H_{AA}) y for a full (N, N) NTK matrix H (training inputs first)."""
    y = np.asarray(y, dtype=np.float64)

    def f(H):
        HAA, HBA = H[:NA, :NA], H[NA:, :NA]
        if newton or steps is None or math.isinf(steps):
            c = np.linalg.solve(HAA, y)
        else:
            P = np.eye(NA) - eta * HAA
            c = np.linalg.solve(HAA, y - np.linalg.matrix_power(P, int(steps)) @ y)
        return HBA @ c

    return f


def _d1(f, H, V, h):
    return (f(H + h * V) - f(H - h * V)) / (2 * h)


def _d2(f, H, V, h):
    return (f(H + h * V) - 2 * f(H) + f(H - h * V)) / h ** 2


def _richardson(fn, f, H, V, h):
    a, b = fn(f, H, V, h), fn(f, H, V, h / 2)
    return (4 * b - a) / 3


@dataclass(frozen=True)
class FiniteWidthMean:
    r"""Trained mean at the test inputs to O(1/n).

    infinite : (N_B,) m^∞ = f(Θ).
    parts : dict name → (N_B,) coefficient c of the 1/n correction (the prediction adds c/n).
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


def finite_width_mean(net: MLP, X_train, y_train, X_test, *, eta: float | None = None, steps=None,
                      newton: bool = False, parts=PARTS) -> FiniteWidthMean:
    r"""Mean trained output at X_test to O(1/n) (module docstring; book Ch. ∞, §∞.2).

    X_train (N_A, n_0), y_train (N_A,) or (N_A, 1), X_test (N_B, n_0); n_L must be 1.
    ``newton=True`` (one Newton step) or ``steps=None`` (t = ∞) give M = H̃⁻¹; otherwise ``eta`` and
    integer ``steps`` give M = H̃⁻¹(1 − (1 − ηH̃)^t).
    """
    from .network import theory as _theory
    from .ntk_correction import ntk_mean_correction

    if net.n(net.depth) != 1:
        raise ValueError("finite_width_mean supports n_L = 1 only")
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown or unimplemented parts {bad}; available: {PARTS}")
    XA = v.inputs("X_train", X_train, net.input_dim)
    XB = v.inputs("X_test", X_test, net.input_dim)
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    if y.shape[0] != XA.shape[0]:
        raise ValueError("y_train must have one target per training input")
    if not newton and steps is not None and not math.isinf(steps) and eta is None:
        raise ValueError("eta is required for a finite number of steps")
    NA = XA.shape[0]
    X = np.vstack([XA, XB])
    th = _theory(net, X, ntk=True)
    s = th.layer(net.depth)
    Theta = np.asarray(s.Theta)
    n = net.n(net.depth - 1)
    f = trained_mean_function(NA, y, eta=eta, steps=steps, newton=newton)
    m_inf = f(Theta)
    scale = float(np.max(np.abs(np.diag(Theta))))
    h = 1e-3 * scale
    out = {}
    if "H1" in parts:
        H1 = ntk_mean_correction(net, X, th)[-1]
        nrm = float(np.max(np.abs(H1))) or 1.0
        out["H1"] = _richardson(_d1, f, Theta, H1 / nrm, h) * nrm
    if "dNTK-fluct" in parts:
        A, B = np.asarray(s.A), np.asarray(s.B)
        N = X.shape[0]
        C = A + np.einsum("acbd->abcd", B) + np.einsum("adbc->abcd", B)
        C = C.reshape(N * N, N * N)
        C = 0.5 * (C + C.T)
        w, U = np.linalg.eigh(C)
        acc = np.zeros_like(m_inf)
        for k in range(w.size):
            if abs(w[k]) <= 1e-14 * max(abs(w).max(), 1e-300):
                continue
            Vk = U[:, k].reshape(N, N)
            acc += 0.5 * w[k] * _richardson(_d2, f, Theta, Vk, h)
        out["dNTK-fluct"] = acc
    return FiniteWidthMean(m_inf, out, n)
