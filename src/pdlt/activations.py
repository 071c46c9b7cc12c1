r"""Activation functions as small objects (book Ch. 2, §5.3).

One activation = one object: ``name``, ``params``, :meth:`Activation.sigma`, derivatives
:meth:`Activation.derivative` up to order 4, and optional closed-form Gaussian expectations
:meth:`Activation.closed_pair` of

.. math:: \langle \sigma^{(j)}(z_a)\,\sigma^{(k)}(z_b) \rangle_C ,\qquad
          (z_a, z_b) \sim \mathcal N\!\left(0, \begin{pmatrix} C_{aa} & C_{ab} \\ C_{ab} & C_{bb}\end{pmatrix}\right).

Where no closed form exists, :mod:`pdlt.gaussian` integrates by quadrature.

Activations with kinks (ReLU, leaky ReLU, the perceptron step) have distributional derivatives
(σ'' ∝ δ(z) for ReLU).  Their pointwise :meth:`~Activation.derivative` is the classical derivative
away from the kink; every Gaussian expectation that involves a δ-function comes from the closed
forms, obtained from Price's theorem
:math:`\partial \langle F \rangle_C / \partial C_{ab} = \langle \partial_a \partial_b F\rangle_C`
applied to the arc-sine kernels.

A plain Python callable is accepted wherever an activation is: :func:`get_activation` wraps it in
:class:`CallableActivation`, whose derivatives come from a complex contour integral (Cauchy's
formula, machine precision for analytic functions that accept complex arrays) or, failing that,
from high-order central finite differences (|error| ≲ 1e-9 for σ', 1e-7 for σ'', 1e-5 for σ''',
1e-4 for σ'''' on O(1) smooth functions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import special

__all__ = [
    "Activation", "PiecewiseLinear", "Linear", "ReLU", "LeakyReLU", "Tanh", "Sin", "Sigmoid",
    "Softplus", "Swish", "GELU", "Erf", "Monomial", "Step", "CallableActivation",
    "get_activation", "REGISTRY", "parse_activation_params",
]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


class Activation:
    """Base class. Subclasses set ``name`` and implement :meth:`sigma` and :meth:`derivative`.

    Attributes
    ----------
    name : registry name, e.g. ``"tanh"``.
    smooth : True when the pointwise derivatives are the whole story (no δ-functions), so that
        quadrature of derivative products is valid.
    kink : location of the kink for piecewise-smooth activations (quadrature splits there), or None.
    """

    name: str = "activation"
    smooth: bool = True
    kink: float | None = None

    @property
    def params(self) -> dict:
        return {}

    def sigma(self, z):
        raise NotImplementedError

    def __call__(self, z):
        return self.sigma(z)

    def derivative(self, z, order: int = 1):
        """Pointwise derivative σ^{(order)}(z) for order 0..4."""
        raise NotImplementedError

    def derivatives(self, z, max_order: int = 4) -> list:
        """[σ, σ′, …, σ^{(max_order)}] at z (subclasses share work between orders)."""
        return [self.derivative(z, k) for k in range(max_order + 1)]

    def closed_pair(self, j: int, k: int, Caa, Cab, Cbb):
        r"""Closed form of :math:`\langle\sigma^{(j)}_a\sigma^{(k)}_b\rangle_C`, or None if unknown."""
        return None

    def closed_pairs(self, orders, Caa, Cab, Cbb) -> list:
        """:meth:`closed_pair` for several (j, k) at once (an activation may share work between them)."""
        return [self.closed_pair(j, k, Caa, Cab, Cbb) for j, k in orders]

    def closed_single(self, m: int, K):
        r"""Closed form of :math:`\langle \partial^{2m} \sigma(z)^2\rangle_K = 2^m g^{(m)}(K)`, m=0,1,2, or None."""
        return None

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({p})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.params == other.params

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params.items()))))


def _finite_real(name: str, v) -> float:
    """``v`` as a float, or a ValueError naming the activation parameter ``name``."""
    if isinstance(v, bool) or not (isinstance(v, int | float | np.floating | np.integer) and math.isfinite(float(v))):
        raise ValueError(f"{name} must be a finite real number, got {v!r}")
    return float(v)


def _arc(Caa, Cab, Cbb):
    """Return (D, s) with D = sqrt(Caa Cbb - Cab²) and s = arcsin(Cab / sqrt(Caa Cbb))."""
    Caa, Cab, Cbb = np.broadcast_arrays(*(np.asarray(c, dtype=np.float64) for c in (Caa, Cab, Cbb)))
    det = np.maximum(Caa * Cbb - Cab * Cab, 0.0)
    D = np.sqrt(det)
    rho = np.clip(Cab / np.sqrt(Caa * Cbb), -1.0, 1.0)
    return Caa, Cab, Cbb, D, np.arcsin(rho)


class PiecewiseLinear(Activation):
    r"""σ(z) = a₊ z for z ≥ 0, a₋ z for z < 0: the scale-invariant universality class (§5.2).

    With α = (a₊+a₋)/2 and β = (a₊−a₋)/2, σ(z) = α z + β |z| and the arc-cosine kernel gives
    :math:`\langle\sigma_a\sigma_b\rangle = \alpha^2 C_{ab} + \tfrac{2\beta^2}{\pi}(D + C_{ab}\arcsin\rho)`,
    D = √(C_aa C_bb − C_ab²). Price's theorem gives every other closed form.
    """

    name = "piecewise_linear"

    def __init__(self, a_plus: float = 1.0, a_minus: float = 0.0):
        self.a_plus = _finite_real("a_plus", a_plus)
        self.a_minus = _finite_real("a_minus", a_minus)
        self.smooth = self.a_plus == self.a_minus
        self.kink = None if self.smooth else 0.0

    @property
    def params(self) -> dict:
        return {"a_plus": self.a_plus, "a_minus": self.a_minus}

    @property
    def A2(self) -> float:
        """A₂ = (a₊² + a₋²)/2, so ⟨σ²⟩_K = A₂ K."""
        return 0.5 * (self.a_plus ** 2 + self.a_minus ** 2)

    @property
    def A4(self) -> float:
        """A₄ = (a₊⁴ + a₋⁴)/2, so ⟨σ⁴⟩_K = 3 A₄ K²."""
        return 0.5 * (self.a_plus ** 4 + self.a_minus ** 4)

    def sigma(self, z):
        z = np.asarray(z)
        return np.where(z >= 0, self.a_plus * z, self.a_minus * z)

    def derivative(self, z, order: int = 1):
        z = np.asarray(z)
        if order == 0:
            return self.sigma(z)
        if order == 1:
            return np.where(z >= 0, self.a_plus, self.a_minus) * np.ones_like(z, dtype=float)
        return np.zeros_like(z, dtype=float)

    def closed_single(self, m, K):
        K = np.asarray(K, dtype=np.float64)
        if m == 0:
            return self.A2 * K
        if m == 1:
            return 2.0 * self.A2 * np.ones_like(K)
        if m == 2:
            return np.zeros_like(K)
        return None

    def closed_pair(self, j, k, Caa, Cab, Cbb):
        if j < k:  # symmetric under (a, j) <-> (b, k)
            return self.closed_pair(k, j, Cbb, Cab, Caa)
        al = 0.5 * (self.a_plus + self.a_minus)
        be2 = (0.5 * (self.a_plus - self.a_minus)) ** 2
        Caa, Cab, Cbb, D, s = _arc(Caa, Cab, Cbb)
        c = 2.0 * be2 / math.pi
        with np.errstate(divide="ignore", invalid="ignore"):
            if (j, k) == (0, 0):
                return al * al * Cab + c * (D + Cab * s)
            if (j, k) == (1, 0):
                return None
            if (j, k) == (1, 1):
                return al * al + c * s
            if (j, k) == (2, 0):
                return c * D / Caa
            if be2 == 0.0:  # linear: every higher derivative vanishes
                return np.zeros_like(D)
            if (j, k) == (2, 2):
                return c / D
            if (j, k) == (3, 1):
                return -c * Cab / (Caa * D)
            if (j, k) == (4, 0):
                return c * (2.0 * Cab * Cab - Caa * Cbb) / (D * Caa * Caa)
        return None


class Linear(PiecewiseLinear):
    """σ(z) = z: deep linear networks (Ch. 3)."""

    name = "linear"

    def __init__(self):
        super().__init__(1.0, 1.0)

    @property
    def params(self) -> dict:
        return {}


class ReLU(PiecewiseLinear):
    """σ(z) = max(0, z)."""

    name = "relu"

    def __init__(self):
        super().__init__(1.0, 0.0)

    @property
    def params(self) -> dict:
        return {}


class LeakyReLU(PiecewiseLinear):
    """σ(z) = z for z ≥ 0, a z for z < 0."""

    name = "leaky_relu"

    def __init__(self, a: float = 0.01):
        self.a = _finite_real("a", a)
        super().__init__(1.0, self.a)

    @property
    def params(self) -> dict:
        return {"a": self.a}


class Step(Activation):
    r"""Perceptron step σ(z) = γ₀ + γ₁ sgn(z); default γ₀ = γ₁ = ½ gives Θ(z) (§5.3, Ch. 0).

    Closed forms from :math:`\langle\sigma_a\sigma_b\rangle = \gamma_0^2 + \tfrac{2\gamma_1^2}{\pi}\arcsin\rho`
    and Price's theorem. σ' = 2γ₁ δ(z): pointwise derivatives are zero.
    """

    name = "step"
    smooth = False
    kink = 0.0

    def __init__(self, low: float = 0.0, high: float = 1.0):
        self.low, self.high = _finite_real("low", low), _finite_real("high", high)

    @property
    def params(self) -> dict:
        return {"low": self.low, "high": self.high}

    @property
    def _g(self):
        return 0.5 * (self.high + self.low), 0.5 * (self.high - self.low)

    def sigma(self, z):
        z = np.asarray(z)
        return np.where(z >= 0, self.high, self.low) * np.ones_like(z, dtype=float)

    def derivative(self, z, order: int = 1):
        return self.sigma(z) if order == 0 else np.zeros_like(np.asarray(z), dtype=float)

    def closed_single(self, m, K):
        K = np.asarray(K, dtype=np.float64)
        g0, g1 = self._g
        if m == 0:
            return (g0 * g0 + g1 * g1) * np.ones_like(K)
        if m in (1, 2):
            return np.zeros_like(K)
        return None

    def closed_pair(self, j, k, Caa, Cab, Cbb):
        if j < k:
            return self.closed_pair(k, j, Cbb, Cab, Caa)
        g0, g1 = self._g
        Caa, Cab, Cbb, D, s = _arc(Caa, Cab, Cbb)
        c = 2.0 * g1 * g1 / math.pi
        with np.errstate(divide="ignore", invalid="ignore"):
            if (j, k) == (0, 0):
                return g0 * g0 + c * s
            if (j, k) == (1, 1):
                return c / D
            if (j, k) == (2, 0):  # 2 ∂/∂C_aa of the arcsine kernel
                return -c * Cab / (Caa * D)
            if (j, k) == (2, 2):
                return c * Cab / D ** 3
            if (j, k) == (3, 1):
                return -c * Cbb / D ** 3
            if (j, k) == (4, 0):
                return c * Cab * (2.0 * D * D + Caa * Cbb) / (Caa * Caa * D ** 3)
        return None


class Tanh(Activation):
    """σ(z) = tanh(z): the K* = 0 universality class (§5.3.3)."""

    name = "tanh"

    def sigma(self, z):
        return np.tanh(z)

    def derivative(self, z, order: int = 1):
        return self.derivatives(z, order)[order]

    def derivatives(self, z, max_order: int = 4) -> list:
        t = np.tanh(z)
        s = 1.0 - t * t
        return [t, s, -2.0 * t * s, -2.0 * s * (1.0 - 3.0 * t * t),
                8.0 * t * s * (2.0 - 3.0 * t * t)][:max_order + 1]


class Sin(Activation):
    """σ(z) = sin(z): K* = 0 class with a₁ = b₁ = −1."""

    name = "sin"

    def sigma(self, z):
        return np.sin(z)

    def derivative(self, z, order: int = 1):
        return [np.sin, np.cos, lambda x: -np.sin(x), lambda x: -np.cos(x), np.sin][order](z)

    def closed_pair(self, j, k, Caa, Cab, Cbb):
        # sin^{(j)}(z) = Im/Re of i^j e^{iz}; <e^{i(s z_a + t z_b)}> = exp(-(Caa + 2 s t Cab + Cbb)/2)
        Caa, Cab, Cbb = (np.asarray(c, dtype=np.float64) for c in (Caa, Cab, Cbb))
        if (j + k) % 2:
            return None
        e = np.exp(-0.5 * (Caa + Cbb))
        # sin^{(j)} = (-1)^{floor(j/2)} (sin if j even else cos); <sin sin> = e sinh, <cos cos> = e cosh
        sign = (-1) ** (j // 2 + k // 2)
        if j % 2 == 0:
            return sign * e * np.sinh(Cab)
        return sign * e * np.cosh(Cab)

    def closed_single(self, m, K):
        K = np.asarray(K, dtype=np.float64)
        g = [0.5 * (1.0 - np.exp(-2 * K)), np.exp(-2 * K) * 2.0, -8.0 * np.exp(-2 * K)]
        return g[m] if m < 3 else None


def _sigmoid(z):
    return special.expit(z)


def _sigmoid_derivs(z):
    s = _sigmoid(z)
    d1 = s * (1.0 - s)
    return [s, d1, d1 * (1.0 - 2.0 * s), d1 * (1.0 - 6.0 * s + 6.0 * s * s),
            d1 * (1.0 - 2.0 * s) * (1.0 - 12.0 * s + 12.0 * s * s)]


class Sigmoid(Activation):
    """σ(z) = 1/(1+e^{−z}): no criticality (§5.3.2)."""

    name = "sigmoid"

    def sigma(self, z):
        return _sigmoid(z)

    def derivative(self, z, order: int = 1):
        return _sigmoid_derivs(z)[order]


class Softplus(Activation):
    """σ(z) = log(1+e^z): no criticality (§5.3.2)."""

    name = "softplus"

    def sigma(self, z):
        return np.logaddexp(0.0, z)

    def derivative(self, z, order: int = 1):
        if order == 0:
            return self.sigma(z)
        return _sigmoid_derivs(z)[order - 1]


class Swish(Activation):
    """SWISH σ(z) = z/(1+e^{−z}): half-stable class (§5.3.4)."""

    name = "swish"

    def sigma(self, z):
        return z * _sigmoid(z)

    def derivative(self, z, order: int = 1):
        s = _sigmoid_derivs(z)
        return z * s[order] + (order * s[order - 1] if order else 0.0)


class GELU(Activation):
    """GELU σ(z) = z Φ(z) = (z/2)(1 + erf(z/√2)): half-stable class (§5.3.4)."""

    name = "gelu"

    def sigma(self, z):
        return z * special.ndtr(z)

    def derivative(self, z, order: int = 1):
        z = np.asarray(z, dtype=np.float64)
        phi = np.exp(-0.5 * z * z) / _SQRT2PI
        if order == 0:
            return self.sigma(z)
        if order == 1:
            return special.ndtr(z) + z * phi
        z2 = z * z
        return [None, None, phi * (2.0 - z2), phi * (z2 * z - 4.0 * z),
                phi * (-z2 * z2 + 7.0 * z2 - 4.0)][order]

    @staticmethod
    def _pair00(Caa, Cab, Cbb, derivative: bool = False):
        r"""⟨σ_aσ_b⟩ in closed form and, with ``derivative``, ⟨σ'_aσ'_b⟩ = ∂⟨σ_aσ_b⟩/∂C_ab (Price).

        With a = C_aa, b = C_bb, c = C_ab: Φ(z) = P(ξ ≤ z) for an independent ξ ~ N(0, 1), so
        ⟨σ_aσ_b⟩ = E[z_az_b 1_{s≥0}1_{t≥0}], s = z_a − ξ_a, t = z_b − ξ_b (Cov(s, t) = c, Var s = a + 1).
        Gaussian integration by parts in z_a, then conditioning on s = 0 or t = 0, gives with
        S = (a+1)(b+1), det = S − c², ρ = c/√S:

        .. math:: \langle\sigma_a\sigma_b\rangle = \frac c4 + \frac{c\arcsin\rho}{2\pi}
                  + \frac{ab + c^2(1 - ab)/S}{2\pi\sqrt{\det}},\qquad
                  \langle\sigma'_a\sigma'_b\rangle = \frac14 + \frac{\arcsin\rho + c/\sqrt{\det}}{2\pi}
                  + \frac{2c(1-ab)/S}{2\pi\sqrt{\det}} + \frac{c\,[ab + c^2(1-ab)/S]}{2\pi\det^{3/2}}.

        ρ < 1 always (S > c²), so both are smooth, coincident inputs included.
        """
        tp = 2.0 * math.pi
        a, b, c = Caa, Cbb, Cab
        S = (a + 1.0) * (b + 1.0)
        det = S - c * c
        sq = np.sqrt(det)
        asin = np.arcsin(c / np.sqrt(S))
        one_ab = (1.0 - a * b) / S
        N = a * b + c * c * one_ab
        val = 0.25 * c + (c * asin + N / sq) / tp
        if not derivative:
            return val
        return val, 0.25 + (asin + c / sq + 2.0 * c * one_ab / sq + N * c / (det * sq)) / tp

    def closed_pair(self, j, k, Caa, Cab, Cbb):
        r"""(0, 0) by :meth:`_pair00`; (1, 1) = ∂⟨σ_aσ_b⟩/∂C_ab (Price's theorem), by the chain rule."""
        if (j, k) not in ((0, 0), (1, 1)):
            return None
        Caa, Cab, Cbb = np.broadcast_arrays(*(np.asarray(c, dtype=np.float64) for c in (Caa, Cab, Cbb)))
        if (j, k) == (0, 0):
            return self._pair00(Caa, Cab, Cbb)
        return self._pair00(Caa, Cab, Cbb, derivative=True)[1]

    def closed_pairs(self, orders, Caa, Cab, Cbb) -> list:
        orders = [tuple(o) for o in orders]
        if sorted(orders) != [(0, 0), (1, 1)]:
            return super().closed_pairs(orders, Caa, Cab, Cbb)
        Caa, Cab, Cbb = np.broadcast_arrays(*(np.asarray(c, dtype=np.float64) for c in (Caa, Cab, Cbb)))
        both = dict(zip([(0, 0), (1, 1)], self._pair00(Caa, Cab, Cbb, derivative=True)))
        return [both[o] for o in orders]


class Erf(Activation):
    r"""σ(z) = erf(z). Closed form :math:`\langle\sigma_a\sigma_b\rangle = \tfrac{2}{\pi}\arcsin\frac{2C_{ab}}{\sqrt{(1+2C_{aa})(1+2C_{bb})}}`."""

    name = "erf"

    def sigma(self, z):
        return special.erf(z)

    def derivative(self, z, order: int = 1):
        z = np.asarray(z, dtype=np.float64)
        if order == 0:
            return special.erf(z)
        d = 2.0 / math.sqrt(math.pi) * np.exp(-z * z)
        return [None, d, -2.0 * z * d, (4.0 * z * z - 2.0) * d, (-8.0 * z ** 3 + 12.0 * z) * d][order]

    def closed_pair(self, j, k, Caa, Cab, Cbb):
        if (j, k) == (0, 0):
            Caa, Cab, Cbb = (np.asarray(c, dtype=np.float64) for c in (Caa, Cab, Cbb))
            return 2.0 / math.pi * np.arcsin(2.0 * Cab / np.sqrt((1.0 + 2.0 * Caa) * (1.0 + 2.0 * Cbb)))
        if (j, k) == (1, 1):
            Caa, Cab, Cbb = (np.asarray(c, dtype=np.float64) for c in (Caa, Cab, Cbb))
            return 4.0 / math.pi / np.sqrt((1.0 + 2.0 * Caa) * (1.0 + 2.0 * Cbb) - 4.0 * Cab * Cab)
        return None


class Monomial(Activation):
    """σ(z) = z^p (p ≥ 1 integer): no criticality for p ≥ 2 (§5.3.2)."""

    name = "monomial"

    def __init__(self, p: int = 2):
        if (isinstance(p, bool) or not isinstance(p, int | float | np.integer | np.floating)
                or not float(p).is_integer() or int(p) < 1):
            raise ValueError(f"monomial power p must be an integer >= 1, got {p!r}")
        self.p = int(p)

    @property
    def params(self) -> dict:
        return {"p": self.p}

    def sigma(self, z):
        return np.asarray(z, dtype=np.float64) ** self.p

    def derivative(self, z, order: int = 1):
        z = np.asarray(z, dtype=np.float64)
        if order > self.p:
            return np.zeros_like(z)
        return math.perm(self.p, order) * z ** (self.p - order)


# ---------------------------------------------------------------------------------------------
# User callables


def _fd_derivative(f, z, order, h=None):
    """High-order central finite differences (8th order in h) for σ^{(order)}."""
    z = np.asarray(z, dtype=np.float64)
    # Stencils for derivatives 1..4 on points -4..4 (8th-order accurate for 1,2; 6th for 3,4).
    stencils = {
        1: (np.array([1 / 280, -4 / 105, 1 / 5, -4 / 5, 0, 4 / 5, -1 / 5, 4 / 105, -1 / 280]), 1e-2),
        2: (np.array([-1 / 560, 8 / 315, -1 / 5, 8 / 5, -205 / 72, 8 / 5, -1 / 5, 8 / 315, -1 / 560]), 2e-2),
        3: (np.array([-7 / 240, 3 / 10, -169 / 120, 61 / 30, 0, -61 / 30, 169 / 120, -3 / 10, 7 / 240]), 3e-2),
        4: (np.array([7 / 240, -2 / 5, 169 / 60, -122 / 15, 91 / 8, -122 / 15, 169 / 60, -2 / 5, 7 / 240]), 5e-2),
    }
    coeffs, h0 = stencils[order]
    h = h0 if h is None else h
    out = np.zeros_like(z)
    for m, c in zip(range(-4, 5), coeffs):
        if c:
            out = out + c * np.asarray(f(z + m * h), dtype=np.float64)
    return out / h ** order


def _contour_derivative(f, z, order, radius, points=48):
    """Cauchy's integral formula on a circle: σ^{(k)}(z) = k!/(2π r^k) ∫ σ(z + r e^{iθ}) e^{-ikθ} dθ."""
    z = np.asarray(z, dtype=np.float64)
    theta = 2.0 * math.pi * np.arange(points) / points
    w = radius * np.exp(1j * theta)
    vals = np.asarray(f(z[..., None] + w), dtype=np.complex128)
    coef = np.mean(vals * np.exp(-1j * order * theta), axis=-1)
    return (math.factorial(order) / radius ** order) * coef.real


class CallableActivation(Activation):
    """A user's function σ(z), vectorized over numpy arrays. Derivatives are numerical.

    If σ accepts complex arrays and is analytic near the real axis (np.tanh, np.sin, polynomials…),
    derivatives come from Cauchy's formula (checked against a second radius); otherwise from central
    finite differences. The ``derivative_method`` attribute says which was chosen.
    """

    name = "callable"

    def __init__(self, fn: Callable, name: str | None = None):
        if not callable(fn):
            raise ValueError(f"activation must be a registered name, an Activation or a callable; got {fn!r}")
        self.fn = fn
        if name:
            self.name = name
        probe = np.linspace(-3.0, 3.0, 7)
        try:
            val = np.asarray(fn(probe), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - user code: report, don't crash
            raise ValueError(f"activation callable failed on a numpy array: {exc!r}") from None
        if val.shape != probe.shape:
            raise ValueError(
                f"activation callable must act elementwise (shape {probe.shape} in, got {val.shape} out)")
        if not np.all(np.isfinite(val)):
            raise ValueError("activation callable returned NaN/inf on [-3, 3]")
        self.derivative_method = "finite-difference"
        try:
            with np.errstate(all="ignore"):
                d1 = _contour_derivative(fn, probe, 2, 0.25)
                d2 = _contour_derivative(fn, probe, 2, 0.125)
            if np.all(np.isfinite(d1)) and np.allclose(d1, d2, rtol=1e-7, atol=1e-7):
                fd = _fd_derivative(fn, probe, 2)
                if np.allclose(d1, fd, rtol=1e-4, atol=1e-4):
                    self.derivative_method = "complex-contour"
        except Exception:  # noqa: BLE001 - the function does not take complex input
            pass

    @property
    def params(self) -> dict:
        return {"fn": getattr(self.fn, "__name__", repr(self.fn))}

    def sigma(self, z):
        return np.asarray(self.fn(np.asarray(z, dtype=np.float64)), dtype=np.float64)

    def derivative(self, z, order: int = 1):
        if order == 0:
            return self.sigma(z)
        if self.derivative_method == "complex-contour":
            return _contour_derivative(self.fn, z, order, 0.25)
        return _fd_derivative(self.sigma, z, order)

    def __eq__(self, other):
        return isinstance(other, CallableActivation) and other.fn is self.fn

    def __hash__(self):
        return id(self.fn)


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class RegistryEntry:
    """How to build an activation by name, its parameters and sane parameters for tests."""

    factory: Callable[..., Activation]
    test_params: dict = field(default_factory=dict)
    param_types: dict = field(default_factory=dict)


REGISTRY: dict[str, RegistryEntry] = {
    "linear": RegistryEntry(Linear),
    "relu": RegistryEntry(ReLU),
    "leaky_relu": RegistryEntry(LeakyReLU, {"a": 0.2}, {"a": float}),
    "piecewise_linear": RegistryEntry(PiecewiseLinear, {"a_plus": 1.0, "a_minus": -0.5},
                                      {"a_plus": float, "a_minus": float}),
    "tanh": RegistryEntry(Tanh),
    "sin": RegistryEntry(Sin),
    "sigmoid": RegistryEntry(Sigmoid),
    "softplus": RegistryEntry(Softplus),
    "swish": RegistryEntry(Swish),
    "gelu": RegistryEntry(GELU),
    "erf": RegistryEntry(Erf),
    "monomial": RegistryEntry(Monomial, {"p": 2}, {"p": int}),
    "step": RegistryEntry(Step, {}, {"low": float, "high": float}),
}


def get_activation(spec, **params) -> Activation:
    """Resolve a registered name, an :class:`Activation` or a plain callable to an :class:`Activation`."""
    if isinstance(spec, Activation):
        if params:
            raise ValueError("activation parameters can only be given with a registered name")
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower().replace("-", "_")
        if key not in REGISTRY:
            raise ValueError(f"unknown activation {spec!r}; registered: {', '.join(sorted(REGISTRY))}")
        entry = REGISTRY[key]
        unknown = set(params) - set(entry.param_types)
        if unknown:
            allowed = ", ".join(entry.param_types) or "none"
            raise ValueError(f"activation {key!r} has no parameter(s) {sorted(unknown)}; allowed: {allowed}")
        return entry.factory(**params)
    if callable(spec):
        if params:
            raise ValueError("activation parameters can only be given with a registered name")
        return CallableActivation(spec)
    raise ValueError(f"activation must be a registered name, an Activation or a callable; got {spec!r}")


def parse_activation_params(name: str, items: list[str] | None) -> dict:
    """Parse ``["a=0.2", ...]`` from the CLI into typed parameters (never evaluated as code)."""
    key = name.strip().lower().replace("-", "_")
    if key not in REGISTRY:
        raise ValueError(f"unknown activation {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    types = REGISTRY[key].param_types
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--activation-param must look like NAME=VALUE, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in types:
            allowed = ", ".join(types) or "none"
            raise ValueError(f"activation {key!r} has no parameter {k!r}; allowed: {allowed}")
        try:
            out[k] = types[k](float(v)) if types[k] is int and float(v).is_integer() else types[k](v)
        except ValueError:
            raise ValueError(f"--activation-param {k} must be a {types[k].__name__}, got {v!r}") from None
    return out
