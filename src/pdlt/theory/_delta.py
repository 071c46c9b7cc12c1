r"""Gaussian moments with the δ-function derivatives of a kinked activation (the "delta" convention).

For σ continuous and piecewise linear with one kink at 0 (σ(z) = a₊z, z ≥ 0; a₋z, z < 0), σ'' = Jδ(z)
and σ''' = Jδ'(z) with the jump J = a₊ − a₋.  A moment with such a factor at input a is finite when
no other factor sits at the same input (or only powers of σ, which vanish at the kink):

.. math::
    \langle\delta(z_a)\,g(z_r)\rangle_K = p_a(0)\,\langle g\rangle_{K|a},\qquad
    \langle\delta'(z_a)\,g(z_r)\rangle_K = -p_a(0)\sum_r\frac{K_{ra}}{K_{aa}}\langle\partial_r g\rangle_{K|a},

p_a(0) = (2πK_aa)^{-1/2}, ⟨·⟩_{K|a} over the conditional law of the other inputs given z_a = 0
(mean 0, covariance K_rr' − K_raK_ar'/K_aa); the second line is ∫δ'(t) p_a(t)G(t)dt = −p_a(0)G'(0)
with G(t) = E[g | z_a = t].  ∂_r g may bring new δ's at other inputs: the rule recurses.  Moments
with a δ meeting σ' (or another δ) at one input are ill-defined (σ'(0)) or infinite (δ²) and are
returned as NaN: they belong to coincident inputs, which the callers must not use.  What is left has
only σ and σ' factors and is integrated by the kink-split rule of :mod:`pdlt.theory.ntk`.

Used by :mod:`pdlt.theory.dntk` when ``Expectations.kinks == "delta"``: the expansion of a network
whose neurons may cross the kink during training (book Ch. ∞.2 with distributional derivatives).
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np

from .. import gaussian

_Q = {1: 48, 2: 32, 3: 24}   # kink-split Gauss–Legendre order per dimension


def check_delta_activation(act) -> None:
    """Raise unless the delta rule covers ``act``: continuous, linear on both sides of a kink at 0."""
    a_plus, a_minus = getattr(act, "a_plus", None), getattr(act, "a_minus", None)
    if act.smooth:
        return
    if a_plus is None or a_minus is None or float(act.kink or 0.0) != 0.0:
        raise NotImplementedError(
            f"kinks='delta' covers continuous piecewise-linear activations with a kink at 0 (ReLU, leaky "
            f"ReLU); {act.name!r} is not one: use kinks='a.e.'")


def _derive(counts, a_plus: float, a_minus: float) -> list[tuple[float, tuple]]:
    """Distributional ∂_z of σ^{c0}σ'^{c1}σ''^{c2} as [(coefficient, counts)], a σ'' counting as Jδ.

    σ^{c0}σ'^{c1} is one piecewise function of z: for c0 ≥ 1 it is continuous and vanishes at the kink,
    so its derivative is the pointwise one, c0 σ^{c0−1}σ'^{c1+1}; for c0 = 0 it is a step of height
    a₊^{c1} − a₋^{c1}, whose derivative is that height times δ (not c1 σ'^{c1−1}σ'', which would put
    a δ next to a σ' at one input)."""
    c0, c1, c2, c3 = counts
    if c3 or c2 > 1:
        raise ValueError("δ'' or δ² at one input is not needed by any recursion")
    J = a_plus - a_minus
    if c2:
        # σ^{c0}δ ≡ 0 for c0 ≥ 1 (σ(0) = 0); with σ' at the input the result is ill-defined, as _expand says
        return [] if c0 and not c1 else [(1.0, (c0, c1, 0, 1))]
    if c0:
        return [(float(c0), (c0 - 1, c1 + 1, 0, 0))]
    if c1:
        return [((a_plus ** c1 - a_minus ** c1) / J, (0, 0, 1, 0))]
    return []


def _expand(C: np.ndarray, counts: list, act, coef: float, out: list) -> bool:
    """Append (coef, C, counts) terms with σ, σ' factors only; False when the moment is ill-defined."""
    keep = [i for i, c in enumerate(counts) if any(c)]
    C = C[np.ix_(keep, keep)]
    counts = [counts[i] for i in keep]
    for a, ca in enumerate(counts):
        if ca[2] or ca[3]:
            break
    else:
        out.append((coef, C, tuple(counts)))
        return True
    if ca[1] or ca[2] + ca[3] > 1:
        return False                          # σ'(0) or δ² at one input
    if ca[0]:
        if ca[3] and ca[0] == 1:
            return False
        return True                           # σ(0)^p δ(z) = 0 (and σ^p δ' = 0 for p ≥ 2)
    Caa = C[a, a]
    if not Caa > 0.0:
        return False
    rest = [i for i in range(len(counts)) if i != a]
    Cc = C[np.ix_(rest, rest)] - np.outer(C[rest, a], C[a, rest]) / Caa
    cr = [counts[i] for i in rest]
    p0 = (act.a_plus - act.a_minus) / math.sqrt(2.0 * math.pi * Caa)
    if ca[2]:
        return _expand(Cc, cr, act, coef * p0, out)
    ok = True
    for j, i in enumerate(rest):
        for c, new in _derive(cr[j], act.a_plus, act.a_minus):
            sub = list(cr)
            sub[j] = new
            ok &= _expand(Cc, sub, act, -coef * p0 * C[i, a] / Caa * c, out)
    return ok


def delta_moments(act, K: np.ndarray, requests) -> np.ndarray:
    r"""⟨Π_s σ^{(o_s)}(z_{v_s})⟩_K with δ-function σ'', σ''' for each request ((v_1, o_1), (v_2, o_2), …).

    K (N, N) the kernel; returns an array of len(requests), NaN where the moment is ill-defined
    (module docstring).  Terms are batched by their factor pattern for the kink-split quadrature.
    """
    from .ntk import _fn, _nested_split

    check_delta_activation(act)
    K = np.asarray(K, dtype=np.float64)
    vals = np.zeros(len(requests))
    groups: dict[tuple, list] = {}
    for r, req in enumerate(requests):
        vs = sorted({v for v, _ in req})
        counts = [[0, 0, 0, 0] for _ in vs]
        for v, o in req:
            counts[vs.index(v)][o] += 1
        terms: list = []
        if not _expand(K[np.ix_(vs, vs)], [tuple(c) for c in counts], act, 1.0, terms):
            vals[r] = np.nan
            continue
        for coef, C, sig in terms:
            groups.setdefault(sig, []).append((r, coef, C))
    for sig, items in groups.items():
        k = len(sig)
        if k == 0:
            for r, coef, _ in items:
                vals[r] += coef
            continue
        L = gaussian.psd_cholesky(np.array([C for _, _, C in items]))
        fs = [_fn(act, c[0], c[1]) for c in sig]
        res = _nested_split(fs, L, 0.0, _Q[k])
        for (r, coef, _), x in zip(items, res):
            vals[r] += coef * x
    return vals


def delta_tensor(act, K: np.ndarray, orders) -> np.ndarray:
    """⟨σ^{(o_1)}_a σ^{(o_2)}_b … ⟩_K over all input tuples (a, b, …), shape (N,)*len(orders); NaN where
    ill-defined."""
    N = K.shape[0]
    keys: dict[tuple, list[int]] = {}
    for flat, idx in enumerate(product(range(N), repeat=len(orders))):
        keys.setdefault(tuple(sorted(zip(idx, orders))), []).append(flat)
    reqs = list(keys)
    vals = delta_moments(act, K, reqs)
    out = np.empty(N ** len(orders))
    for req, val in zip(reqs, vals):
        out[keys[req]] = val
    return out.reshape((N,) * len(orders))
