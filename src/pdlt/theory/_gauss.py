r"""Activation-aware Gaussian expectations used by the recursions (book eq. (4.25) notation).

Three kinds of quantity are needed at a layer with kernel K (N×N):

* pair moments :math:`\langle\sigma^{(j)}_a\sigma^{(k)}_b\rangle_K` (j+k ≤ 4) for a ≠ b — closed form
  when the activation has one (it must, if its derivatives contain δ-functions), else polar
  quadrature of the pointwise derivatives;
* single-variable derivatives of :math:`g(K) = \langle\sigma^2\rangle_K`, written with Hermite weights
  :math:`\langle\partial^{2}\sigma^2\rangle_K = \langle\sigma^2 (z^2-K)\rangle_K/K^2` and
  :math:`\langle\partial^{4}\sigma^2\rangle_K = \langle\sigma^2 (z^4-6Kz^2+3K^2)\rangle_K/K^4`, which need
  σ only (so they are exact for ReLU and for user callables);
* the fully symmetric four-point tensor :math:`\langle\sigma_a\sigma_b\sigma_c\sigma_d\rangle_K`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from itertools import combinations_with_replacement, permutations

import numpy as np

from .. import gaussian
from ..activations import Activation

_PAIR_ORDERS = ((0, 0), (2, 0), (1, 1), (0, 2), (4, 0), (3, 1), (2, 2), (1, 3), (0, 4))


class Expectations:
    """Gaussian expectations of one activation, with closed forms first and quadrature as fallback.

    Parameters
    ----------
    act : the activation.
    order2 : angular/radial Gauss–Legendre order of the 2-D polar rule. None (default): 32 while
        every variance is ≤ 4, 48 up to 20, 64 beyond (measured: ≤ 2e-9 relative at K = 3 with 32,
        5e-10 at K = 15 with 48; tests/test_gaussian.py).
    order4 : Gauss–Hermite order per dimension for the 3-D/4-D moments. None (default) chooses it
        per layer: the smallest of :data:`ORDER4_CHOICES` whose result on the few widest quartets
        agrees with order :data:`ORDER4_REFERENCE` to ``tol4`` relative; the error estimate of the
        last call is kept in ``quad4_error``.
    tol4 : relative tolerance for that choice.
    kinks : for a kinked σ, how the σ″, σ‴ that come from the forward equation are taken (by
        :mod:`pdlt.theory.dntk`): "a.e." (default; zero: the network whose neurons keep their slope)
        or "delta" (δ-functions, :mod:`pdlt.theory._delta`: the network whose neurons may cross the kink).
    """

    KINKS = ("a.e.", "delta")

    def __init__(self, act: Activation, order2: int | None = None, order4: int | None = None,
                 tol4: float = 1e-5, kinks: str = "a.e."):
        if kinks not in self.KINKS:
            raise ValueError(f"kinks must be one of {self.KINKS}, got {kinks!r}")
        self.act = act
        self.kinks = kinks
        self._order2 = order2
        self.order4 = order4
        self.tol4 = tol4
        self.quad4_error = 0.0
        self._last: dict[str, tuple[bytes, object]] = {}

    def order2(self, kmax: float) -> int:
        """Polar-rule order for variances up to ``kmax`` (the fixed order if one was given)."""
        if self._order2:
            return self._order2
        return 32 if kmax <= 4 else 48 if kmax <= 20 else 64

    def _memo(self, name: str, K: np.ndarray, compute):
        # kernel, vertex and G1 steps all ask for the same layer's tables: compute them once
        key = K.tobytes()
        hit = self._last.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = compute()
        self._last[name] = (key, value)
        return value

    # -- single variable -----------------------------------------------------------------------
    def g_derivs(self, K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""(g, ⟨∂²σ²⟩, ⟨∂⁴σ²⟩) at variance K, i.e. (g, 2g', 4g'') with g(K) = ⟨σ²⟩_K."""
        K = np.asarray(K, dtype=np.float64)
        closed = [self.act.closed_single(m, K) for m in range(3)]
        if all(c is not None for c in closed):
            return tuple(np.asarray(c, dtype=np.float64) for c in closed)
        s = self.act.sigma
        g = gaussian.expect1(lambda z: s(z) ** 2, K)
        with np.errstate(divide="ignore", invalid="ignore"):
            d2 = gaussian.expect1(lambda z: s(z) ** 2 * z * z, K) / K ** 2 - g / K
            m4 = gaussian.expect1(lambda z: s(z) ** 2 * z ** 4, K)
            d4 = (m4 - 6.0 * K * K * (d2 * K + g) + 3.0 * K * K * g) / K ** 4
        return g, d2, d4

    def sigma4(self, K) -> np.ndarray:
        """⟨σ⁴⟩_K."""
        return gaussian.expect1(lambda z: self.act.sigma(z) ** 4, K)

    # -- pairs ---------------------------------------------------------------------------------
    def pair(self, j: int, k: int, Caa, Cab, Cbb) -> np.ndarray:
        r"""⟨σ^{(j)}(z_a) σ^{(k)}(z_b)⟩ for the 2×2 covariance (arrays broadcast)."""
        closed = self.act.closed_pair(j, k, Caa, Cab, Cbb)
        if closed is not None:
            return np.asarray(closed, dtype=np.float64)
        if not self.act.smooth and (j > 0 or k > 0):
            raise NotImplementedError(
                f"activation {self.act.name!r} has δ-function derivatives but no closed form for "
                f"<σ^({j})σ^({k})>; give it a closed_pair method")
        d = self.act.derivative
        order = self.order2(max(np.max(Caa), np.max(Cbb)))
        return gaussian.expect2(lambda z: d(z, j), lambda z: d(z, k), Caa, Cab, Cbb, order=order)

    def pair_table(self, K: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
        """All pair moments ⟨σ^{(j)}_a σ^{(k)}_b⟩ (j+k ∈ {0,2,4}) as (N, N) arrays over a ≠ b (diagonal 0)."""
        K = np.asarray(K, dtype=np.float64)
        return self._memo("pair_table", K, lambda: self._pair_table(K))

    def _pair_table(self, K):
        N = K.shape[0]
        a, b = np.triu_indices(N, 1)
        out = {jk: np.zeros((N, N)) for jk in _PAIR_ORDERS}
        if not a.size:
            return out
        Caa, Cab, Cbb = K[a, a], K[a, b], K[b, b]
        missing = []
        for (j, k) in _PAIR_ORDERS:
            closed = self.act.closed_pair(j, k, Caa, Cab, Cbb)
            if closed is None:
                missing.append((j, k))
            else:
                out[(j, k)][a, b] = closed
                out[(j, k)][b, a] = self.act.closed_pair(j, k, Cbb, Cab, Caa)
        if missing:
            if not self.act.smooth:
                raise NotImplementedError(
                    f"activation {self.act.name!r} has δ-function derivatives but no closed form for "
                    f"<σ^(j)σ^(k)> with (j,k) in {missing}; give it a closed_pair method")
            def chunk(sel):
                za, zb, w = gaussian.polar_nodes(Caa[sel], Cab[sel], Cbb[sel], self.order2(np.max(K)))
                da = self.act.derivatives(za, 4)
                db = self.act.derivatives(zb, 4)
                return {jk: (np.sum(da[jk[0]] * db[jk[1]] * w, axis=-1),
                             np.sum(db[jk[0]] * da[jk[1]] * w, axis=-1)) for jk in missing}

            for sel, res in _parallel(chunk, a.size):
                for jk, (ab, ba) in res.items():
                    out[jk][a[sel], b[sel]] = ab
                    out[jk][b[sel], a[sel]] = ba
        return out

    def sigma_sigma(self, K: np.ndarray) -> np.ndarray:
        r"""⟨σ_a σ_b⟩_K as an (N, N) matrix (diagonal from the 1-D rule)."""
        K = np.asarray(K, dtype=np.float64)
        return self._memo("sigma_sigma", K, lambda: self._sigma_sigma(K))

    def _sigma_sigma(self, K):
        N = K.shape[0]
        S = np.empty((N, N))
        d = np.diag(K)
        S[np.diag_indices(N)] = self.g_derivs(d)[0]
        off = ~np.eye(N, dtype=bool)
        S[off] = self.pair_table(K)[(0, 0)][off]
        return S

    # -- four-point ----------------------------------------------------------------------------
    def sigma4_tensor(self, K: np.ndarray) -> np.ndarray:
        r"""⟨σ_a σ_b σ_c σ_d⟩_K, fully symmetric (N, N, N, N), computed once per multiset {a,b,c,d}.

        One distinct index: 1-D rule; two: 2-D polar rule; three or four: nested Gauss–Hermite (smooth σ)
        or the kink-split nested Gauss–Legendre rule of :func:`pdlt.theory.ntk.mixed4` (kinked σ).
        """
        K = np.asarray(K, dtype=np.float64)
        N = K.shape[0]
        s = self.act.sigma
        T = np.empty(N ** 4)
        for (k, pw), (idx, scatter, owner) in _multisets(N).items():
            if k == 1:
                vals = self.sigma4(K[idx[:, 0], idx[:, 0]])
            elif k == 2:
                p, q = pw
                ia, ib = idx[:, 0], idx[:, 1]
                vals = _gather(_parallel(lambda sel, p=p, q=q, ia=ia, ib=ib: gaussian.expect2(
                    lambda z: s(z) ** p, lambda z: s(z) ** q, K[ia[sel], ia[sel]], K[ia[sel], ib[sel]],
                    K[ib[sel], ib[sel]], order=self.order2(np.max(K))), len(idx)), len(idx))
            elif not self.act.smooth:
                # a tensor Gauss–Hermite rule is off by ~1.5 % on ⟨σσσσ⟩ of ReLU with three distinct
                # inputs (against Monte Carlo); the kink-split rule of the NTK moments is exact to ~1e-9
                from .ntk import SPLIT_ORDERS, _nested_split

                L = gaussian.psd_cholesky(K[idx[:, :, None], idx[:, None, :]])
                fs = [lambda z, p=p: s(z) ** p for p in pw]
                vals = _gather(_parallel(lambda sel, L=L, fs=fs: _nested_split(
                    fs, L[sel], float(self.act.kink or 0.0), SPLIT_ORDERS[k]), len(idx)), len(idx))
            else:
                C = K[idx[:, :, None], idx[:, None, :]]
                powers = np.broadcast_to(pw, idx.shape)
                Q = self.order4 or self._choose_order4(C, powers)
                vals = _gather(_parallel(lambda sel, C=C, powers=powers, Q=Q: gaussian.expect_powers(
                    s, C[sel], powers[sel], order=Q, kinked=not self.act.smooth),
                    len(idx)), len(idx))
            T[scatter] = vals[owner]
        return T.reshape((N,) * 4)

    def _choose_order4(self, C: np.ndarray, powers: np.ndarray) -> int:
        """Smallest Gauss–Hermite order meeting tol4 on the widest covariances of the batch."""
        kinked = not self.act.smooth
        choices = ORDER4_CHOICES["kinked" if kinked else "smooth"]
        probe = np.argsort(-np.max(np.diagonal(C, axis1=1, axis2=2), axis=1))[:3]
        ref = gaussian.expect_powers(self.act.sigma, C[probe], powers[probe], order=ORDER4_REFERENCE)
        scale = max(float(np.max(np.abs(ref))), 1e-300)
        for Q in choices:
            val = gaussian.expect_powers(self.act.sigma, C[probe], powers[probe], order=Q)
            err = float(np.max(np.abs(val - ref))) / scale
            if err <= self.tol4:
                break
        self.quad4_error = max(self.quad4_error, err)
        return Q


_WORKERS = max(1, min(4, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None


def _parallel(fn, n: int, min_chunk: int = 8):
    """[(slice, fn(slice))] over ≤ _WORKERS contiguous chunks of range(n).

    numpy releases the GIL inside its ufuncs and reductions, so threads use both cores here.
    """
    global _POOL
    k = max(1, min(_WORKERS, n // min_chunk))
    bounds = np.linspace(0, n, k + 1).astype(int)
    sels = [slice(bounds[i], bounds[i + 1]) for i in range(k)]
    if k == 1:
        return [(sels[0], fn(sels[0]))]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_WORKERS)
    return list(zip(sels, _POOL.map(fn, sels)))


def _gather(parts, n: int) -> np.ndarray:
    out = np.empty(n)
    for sel, val in parts:
        out[sel] = val
    return out


#: Candidate Gauss–Hermite orders for the 3-D/4-D moments, and the reference order of the probe.
ORDER4_CHOICES = {"smooth": (6, 8, 10, 12, 16), "kinked": (12, 16, 20)}
ORDER4_REFERENCE = 28


@lru_cache(maxsize=16)
def _multisets(N: int):
    """Multisets {a ≤ b ≤ c ≤ d} of N inputs grouped by (number of distinct indices, their powers).

    Returns {(k, powers): (distinct indices (P, k), flat positions of all orderings, owner of each)}.
    """
    groups: dict[tuple, tuple[list, list, list]] = {}
    for quad in combinations_with_replacement(range(N), 4):
        idx, counts = np.unique(quad, return_counts=True)
        key = (len(idx), tuple(int(c) for c in counts))
        g = groups.setdefault(key, ([], [], []))
        owner = len(g[0])
        g[0].append(idx)
        for perm in set(permutations(quad)):
            g[1].append(np.ravel_multi_index(perm, (N,) * 4))
            g[2].append(owner)
    return {key: (np.array(a), np.array(b), np.array(c)) for key, (a, b, c) in groups.items()}
