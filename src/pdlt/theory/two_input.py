r"""Two nearby inputs: the δ-expansion of the kernel and the finite-angle ReLU flow (book §5.1, §5.5).

**δ-expansion.** For :math:`x_\pm = x_0 \pm \delta x/2` the 2×2 kernel is rotated to the γ-basis

.. math:: K_{[0]} = \tfrac14(K_{++}+K_{--}+2K_{+-}),\quad K_{[1]} = \tfrac12(K_{++}-K_{--}),\quad
          K_{[2]} = \tfrac14(K_{++}+K_{--}-2K_{+-}),

(so :math:`K_{[0]}, K_{[2]}` are the variances of :math:`(z_+ \pm z_-)/2` and :math:`K_{[1]}/2` their
covariance) and expanded in δx: :math:`K_{[0]} = K_{00} + \delta\delta K_{[0]} + O(\delta^4)`,
:math:`K_{[1]} = \delta K_{[1]} + O(\delta^3)`, :math:`K_{[2]} = \delta\delta K_{[2]} + O(\delta^4)`.
The leading-order kernel recursion then splits into (χ's and h at :math:`K_{00}^{(\ell)}`)

.. math::
    K_{00}' = C_b + C_W g(K_{00}),\qquad \delta K_{[1]}' = \chi_\parallel\,\delta K_{[1]},\qquad
    \delta\delta K_{[2]}' = \chi_\perp\,\delta\delta K_{[2]} + h\,(\delta K_{[1]})^2,

.. math::
    \delta\delta K_{[0]}' = \chi_\parallel\,\delta\delta K_{[0]} + (\chi_\parallel-\chi_\perp)\,\delta\delta K_{[2]}
        + \big(\tfrac12 C_W g''(K_{00}) - h\big)(\delta K_{[1]})^2,

with :math:`\chi_\parallel = C_W g'(K)`, :math:`\chi_\perp = C_W\langle\sigma'^2\rangle_K`,
:math:`h = \tfrac12 d\chi_\perp/dK = \frac{C_W}{4K^2}\langle\sigma'^2(z^2-K)\rangle_K` (formula sheet §3).
The last line (the O(δ²) shift of the midpoint kernel) is our derivation: write
:math:`z_\pm = a \pm b` with Var a = K_{[0]}, Var b = K_{[2]}, Cov(a, b) = K_{[1]}/2, expand
:math:`\sigma(a\pm b)` to second order in b and use :math:`C_W\langle\sigma\sigma''\rangle = \chi_\parallel - \chi_\perp`.
With it the reconstructed 2×2 kernel is accurate to O(δ³) (the K_{[1]} term); without it to O(δ²).

**Finite angle (ReLU, C_b = 0).** With :math:`\cos\psi = K_{+-}/\sqrt{K_{++}K_{--}}`, the arc-cosine
kernel gives :math:`\cos\psi' = [\sin\psi + (\pi-\psi)\cos\psi]/\pi` at any C_W, and
:math:`\psi^{(\ell)} \to 3\pi/\ell`: nearby inputs converge only as a power law. The ψ³/(3π) term that
drives it is odd in ψ, i.e. non-analytic in δ (ψ ∝ |δ|): the δ-expansion, a series in δ², misses it,
so for ReLU δδK_{[2]} stays constant (χ_⊥ = 1, h = 0) while the true K_{[2]} decays (book §5.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _validate, gaussian
from ..activations import Activation, PiecewiseLinear, get_activation
from ..mlp import MLP
from ._gauss import Expectations

__all__ = ["DeltaFlow", "delta_expansion", "from_kernel", "to_kernel", "correlation", "angle",
           "susceptibilities", "relu_angle_flow", "scale_invariant_angle_flow", "relu_angle_asymptotic"]


# ---------------------------------------------------------------------------------------------
# γ-basis


def from_kernel(K) -> np.ndarray:
    r"""2×2 kernel(s) → γ-basis (K_{[0]}, K_{[1]}, K_{[2]}).

    K : (..., 2, 2) with index 0 = x₊, 1 = x₋. Returns (..., 3). Book §5.1 (γ-basis), formula sheet §3.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape[-2:] != (2, 2):
        raise ValueError(f"K must have shape (..., 2, 2), got {K.shape}")
    pp, mm = K[..., 0, 0], K[..., 1, 1]
    pm = 0.5 * (K[..., 0, 1] + K[..., 1, 0])
    return np.stack([0.25 * (pp + mm + 2 * pm), 0.5 * (pp - mm), 0.25 * (pp + mm - 2 * pm)], axis=-1)


def to_kernel(gamma) -> np.ndarray:
    r"""γ-basis (..., 3) → 2×2 kernel(s) (..., 2, 2): K₊₊ = K₀+K₁+K₂, K₋₋ = K₀−K₁+K₂, K₊₋ = K₀−K₂."""
    g = np.asarray(gamma, dtype=np.float64)
    if g.shape[-1] != 3:
        raise ValueError(f"gamma must have shape (..., 3), got {g.shape}")
    k0, k1, k2 = g[..., 0], g[..., 1], g[..., 2]
    out = np.empty(g.shape[:-1] + (2, 2))
    out[..., 0, 0] = k0 + k1 + k2
    out[..., 1, 1] = k0 - k1 + k2
    out[..., 0, 1] = out[..., 1, 0] = k0 - k2
    return out


def correlation(K) -> np.ndarray:
    r"""ρ = K₊₋/√(K₊₊K₋₋) = cos ψ for 2×2 kernel(s) (..., 2, 2) → (...)."""
    K = np.asarray(K, dtype=np.float64)
    return K[..., 0, 1] / np.sqrt(K[..., 0, 0] * K[..., 1, 1])


def angle(K) -> np.ndarray:
    r"""ψ = arccos ρ ∈ [0, π] for 2×2 kernel(s), as ψ = 2 arcsin(½‖u₊ − u₋‖) (u = unit vectors).

    Uses K₊₊ + K₋₋ − 2K₊₋ = 4K_{[2]} directly and never returns NaN when rounding puts ρ above 1.
    """
    K = np.asarray(K, dtype=np.float64)
    # ‖u₊ − u₋‖² = 2 − 2ρ for unit vectors; 2 − 2ρ = (K₊₊ + K₋₋ − 2K₊₋)/√(K₊₊K₋₋) − (√K₊₊ − √K₋₋)²/√(K₊₊K₋₋)
    d = np.sqrt(K[..., 0, 0] * K[..., 1, 1])
    two_minus = (K[..., 0, 0] + K[..., 1, 1] - 2 * K[..., 0, 1]) / d \
        - (np.sqrt(K[..., 0, 0]) - np.sqrt(K[..., 1, 1])) ** 2 / d
    return 2.0 * np.arcsin(np.clip(0.5 * np.sqrt(np.maximum(two_minus, 0.0)), 0.0, 1.0))


# ---------------------------------------------------------------------------------------------
# Single-input susceptibilities (local; see pdlt.theory.criticality for the solver)


def susceptibilities(activation, K, C_W: float = 1.0) -> dict[str, np.ndarray]:
    r"""χ_∥, χ_⊥, h and the midpoint coefficient at variance K (arrays broadcast).

    .. math:: \chi_\parallel = C_W g'(K),\quad \chi_\perp = C_W\langle\sigma'^2\rangle_K,\quad
              h = \frac{C_W}{4K^2}\langle\sigma'^2(z^2-K)\rangle_K,\quad
              k_0 = \tfrac12 C_W g''(K) - h .

    activation : an :class:`~pdlt.activations.Activation`, registered name, or an
        :class:`~pdlt.theory._gauss.Expectations` (reused). K : array of variances > 0.
    Returns a dict with keys ``g``, ``chi_par``, ``chi_perp``, ``h``, ``k0`` (same shape as K).
    Book §5.1; formula sheet §3. Piecewise-linear σ uses closed forms (χ_⊥ = C_W A₂, h = 0);
    other activations must be smooth (pointwise σ' is then the whole story).
    """
    if isinstance(activation, Expectations):
        E, act = activation, activation.act
    else:
        act = activation if isinstance(activation, Activation) else get_activation(activation)
        E = Expectations(act)
    K = np.asarray(K, dtype=np.float64)
    g, d2, d4 = E.g_derivs(K)
    if isinstance(act, PiecewiseLinear):
        s2 = np.full_like(K, act.A2)
        dh = np.zeros_like(K)
    elif act.smooth:
        d1 = lambda z: act.derivative(z, 1) ** 2  # noqa: E731
        s2 = gaussian.expect1(d1, K)
        with np.errstate(divide="ignore", invalid="ignore"):
            dh = (gaussian.expect1(lambda z: d1(z) * z * z, K) - K * s2) / (4.0 * K * K)
    else:
        raise NotImplementedError(
            f"activation {act.name!r} has δ-function derivatives: ⟨σ'²⟩ is not a pointwise integral")
    h = C_W * dh
    return {"g": g, "chi_par": 0.5 * C_W * d2, "chi_perp": C_W * s2, "h": h,
            "k0": 0.125 * C_W * d4 - h}


# ---------------------------------------------------------------------------------------------
# δ-expansion


@dataclass(frozen=True)
class DeltaFlow:
    r"""The δ-expanded kernel of two nearby inputs x± = x₀ ± δx/2 through depth (book §5.1).

    All arrays have shape (L,), entry ℓ−1 for layer ℓ = 1..L.

    Attributes
    ----------
    net : the :class:`~pdlt.mlp.MLP`.  x0, dx : (n₀,) midpoint and difference.
    K00 : midpoint kernel :math:`K_{00}^{(\ell)}` (the single-input kernel of x₀).
    dK1 : :math:`\delta K_{[1]}^{(\ell)}` (O(δ)).  ddK2 : :math:`\delta\delta K_{[2]}^{(\ell)}` (O(δ²)).
    ddK0 : :math:`\delta\delta K_{[0]}^{(\ell)}`, the O(δ²) shift of K_{[0]} (0 at ℓ = 1).
    chi_par, chi_perp, h : susceptibilities at :math:`K_{00}^{(\ell)}` with :math:`C_W^{(\ell+1)}`
        (the step ℓ → ℓ+1; the last entry uses :math:`C_W^{(L)}`).
    """

    net: MLP
    x0: np.ndarray
    dx: np.ndarray
    K00: np.ndarray
    dK1: np.ndarray
    ddK2: np.ndarray
    ddK0: np.ndarray
    chi_par: np.ndarray
    chi_perp: np.ndarray
    h: np.ndarray

    def gamma(self, midpoint_shift: bool = True) -> np.ndarray:
        r"""Predicted γ-basis (L, 3): (K₀₀ + δδK_{[0]}, δK_{[1]}, δδK_{[2]}); without the shift K₀₀ alone."""
        k0 = self.K00 + (self.ddK0 if midpoint_shift else 0.0)
        return np.stack([k0, self.dK1, self.ddK2], axis=-1)

    def kernel(self, midpoint_shift: bool = True) -> np.ndarray:
        """Predicted 2×2 kernels (L, 2, 2) of (x₊, x₋), accurate to O(δ³) (O(δ²) without the shift)."""
        return to_kernel(self.gamma(midpoint_shift))

    def correlation(self) -> np.ndarray:
        """Predicted ρ^{(ℓ)} = K₊₋/√(K₊₊K₋₋), shape (L,)."""
        return correlation(self.kernel())

    def scaled(self, t: float) -> "DeltaFlow":
        """The same flow for δx → t δx (δK_{[1]} ∝ t, δδK ∝ t²): exact within the expansion."""
        return DeltaFlow(self.net, self.x0, t * self.dx, self.K00, t * self.dK1, t * t * self.ddK2,
                         t * t * self.ddK0, self.chi_par, self.chi_perp, self.h)


def delta_expansion(net: MLP, x0, dx) -> DeltaFlow:
    r"""Run the δ-expansion recursions of the two-input kernel through every layer (book §5.1).

    .. math:: K_{00}^{(1)} = C_b + \tfrac{C_W}{n_0}x_0\!\cdot\!x_0,\quad
              \delta K_{[1]}^{(1)} = \tfrac{C_W}{n_0}x_0\!\cdot\!\delta x,\quad
              \delta\delta K_{[2]}^{(1)} = \tfrac{C_W}{4n_0}\delta x\!\cdot\!\delta x,\quad \delta\delta K_{[0]}^{(1)} = 0

    (exact at layer 1), then the recursions in the module docstring.

    net : the network (per-layer C_b, C_W honoured). x0, dx : (n₀,) arrays. Returns :class:`DeltaFlow`.
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    x0 = _validate.inputs("x0", np.reshape(np.asarray(x0, dtype=np.float64), (1, -1)), net.input_dim)[0]
    dx = _validate.inputs("dx", np.reshape(np.asarray(dx, dtype=np.float64), (1, -1)), net.input_dim)[0]
    n0 = net.input_dim
    C_b, C_W = net.hyper(1)
    K00 = C_b + C_W * float(x0 @ x0) / n0
    if K00 <= 0:
        raise ValueError("the midpoint x0 is zero and C_b = 0 in layer 1: K00 = 0; give C_b > 0")
    dK1 = C_W * float(x0 @ dx) / n0
    ddK2 = 0.25 * C_W * float(dx @ dx) / n0
    ddK0 = 0.0
    E = Expectations(net.activation)
    L = net.depth
    rows = []
    for ell in range(1, L + 1):
        C_b, C_W = net.hyper(min(ell + 1, L))
        s = susceptibilities(E, K00, C_W)
        cp, cq, h, k0 = (float(s[k]) for k in ("chi_par", "chi_perp", "h", "k0"))
        rows.append((K00, dK1, ddK2, ddK0, cp, cq, h))
        if ell == L:
            break
        K00, dK1, ddK2, ddK0 = (C_b + C_W * float(s["g"]), cp * dK1, cq * ddK2 + h * dK1 * dK1,
                                cp * ddK0 + (cp - cq) * ddK2 + k0 * dK1 * dK1)
        if not all(math.isfinite(v) for v in (K00, dK1, ddK2, ddK0)):
            raise OverflowError(f"the δ-expansion overflowed at layer {ell + 1}; lower C_W or the depth")
    arr = np.array(rows).T
    return DeltaFlow(net, x0, dx, *arr)


# ---------------------------------------------------------------------------------------------
# Finite-angle flow of scale-invariant activations


def _sin_minus_psi_cos(psi: float) -> float:
    """sin ψ − ψ cos ψ without cancellation at small ψ (series ψ³/3 − ψ⁵/30 + ψ⁷/840 − ψ⁹/45360)."""
    if psi < 0.1:
        p2 = psi * psi
        return psi * p2 * (1 / 3 - p2 * (1 / 30 - p2 * (1 / 840 - p2 / 45360)))
    return math.sin(psi) - psi * math.cos(psi)


def scale_invariant_angle_flow(psi0: float, depth: int, a_plus: float = 1.0, a_minus: float = 0.0
                               ) -> np.ndarray:
    r"""Angle ψ^{(ℓ)}, ℓ = 1..depth, between two inputs for σ = a₊z (z ≥ 0), a₋z (z < 0), C_b = 0.

    .. math:: \cos\psi' = \cos\psi + c\,(\sin\psi - \psi\cos\psi),\qquad
              c = \frac{(a_+ - a_-)^2}{2\pi A_2},\quad A_2 = \tfrac12(a_+^2 + a_-^2)

    (from the arc-cosine kernel; independent of C_W because σ is homogeneous). Iterated as
    :math:`1-\cos\psi' = 2\sin^2(\psi/2) - c(\sin\psi - \psi\cos\psi)` so that ψ ≈ 10⁻⁴ keeps full
    relative precision. ψ ≈ 3/(cℓ) at large ℓ. psi0 ∈ [0, π]: the angle at layer 1. Returns (depth,).
    Book §5.5.
    """
    psi0 = _validate.real("psi0", psi0, low=0.0, high=math.pi)
    depth = _validate.positive_int("depth", depth)
    A2 = 0.5 * (a_plus ** 2 + a_minus ** 2)
    if A2 <= 0:
        raise ValueError("a_plus and a_minus cannot both be 0")
    c = (a_plus - a_minus) ** 2 / (2 * math.pi * A2)
    out = np.empty(depth)
    psi = psi0
    for k in range(depth):
        out[k] = psi
        one_minus_cos = 2.0 * math.sin(0.5 * psi) ** 2 - c * _sin_minus_psi_cos(psi)
        psi = 2.0 * math.asin(min(1.0, math.sqrt(max(0.5 * one_minus_cos, 0.0))))
    return out


def relu_angle_flow(psi0: float, depth: int) -> np.ndarray:
    r"""ReLU angle ψ^{(ℓ)}, ℓ = 1..depth, at C_b = 0 (any C_W):
    :math:`\cos\psi^{(\ell+1)} = [\sin\psi^{(\ell)} + (\pi-\psi^{(\ell)})\cos\psi^{(\ell)}]/\pi`.

    psi0 : ψ^{(1)} ∈ [0, π]. Returns (depth,). ψ^{(ℓ)} ≈ 3π/ℓ at large ℓ (book §5.5, formula sheet §3(a)).
    """
    return scale_invariant_angle_flow(psi0, depth, 1.0, 0.0)


def relu_angle_asymptotic(ell) -> np.ndarray:
    r"""Leading large-depth ReLU angle :math:`\psi^{(\ell)} \approx 3\pi/\ell` (book §5.5)."""
    return 3.0 * math.pi / np.asarray(ell, dtype=np.float64)
