r"""Bayesian learning with deep networks (book Ch. 6; formula sheet §7).

Infinite width
--------------
The outputs are a Gaussian process with kernel K = K^{(L)}: independent across the n_L outputs,
:math:`E[z_{i_1;\alpha_1}z_{i_2;\alpha_2}] = \delta_{i_1i_2}K_{\alpha_1\alpha_2}`. With training inputs
A (targets y, optional observation noise σ_ε²) and test inputs B (β̇), write
:math:`\tilde K^{\alpha_1\alpha_2}` for the inverse of the training block :math:`K_{\alpha_1\alpha_2} +
\sigma_\varepsilon^2\delta_{\alpha_1\alpha_2}`. Then (book §6.3)

.. math::
    m_{i;\dot\beta} = \sum K_{\dot\beta\alpha_1}\tilde K^{\alpha_1\alpha_2}y_{i;\alpha_2},\qquad
    \mathrm{Cov}[z_{i_1;\dot\beta_1}, z_{i_2;\dot\beta_2}\,|\,y] = \delta_{i_1i_2}\Big[K_{\dot\beta_1\dot\beta_2}
      - \sum K_{\dot\beta_1\alpha_1}\tilde K^{\alpha_1\alpha_2}K_{\alpha_2\dot\beta_2}\Big],

    \log p(y\,|\,\mathcal H) = -\frac12\sum_i y_i^\top(K_{AA}+\sigma_\varepsilon^2)^{-1}y_i
      - \frac{n_L}{2}\log\det\big(2\pi(K_{AA}+\sigma_\varepsilon^2)\big).

Finite width, O(1/n_{L−1}) (formula sheet §7): with G = K + G^{\{1\}}/n_{L−1} and V the four-point
vertex of the output layer, :func:`posterior_mean_nlo` and :func:`hebbian_shift`.

Kernels for many inputs
-----------------------
:func:`kernel_blocks` runs only the two-point recursions (K and, on request, the NTK mean Θ) pair by
pair, :math:`K'_{ab} = C_b + C_W\langle\sigma_a\sigma_b\rangle_K`, :math:`\Theta'_{ab} = \lambda_b +
\lambda_W\langle\sigma_a\sigma_b\rangle_K + C_W\langle\sigma'_a\sigma'_b\rangle_K\Theta_{ab}` — each entry
needs only its own pair's (K_aa, K_ab, K_bb), so a train×test block costs O(N_A N_B) and nothing
N⁴ is formed (``pdlt.theory`` builds V, an N⁴ tensor). The numbers are those of ``pdlt.theory``
(same quadrature: 1-D rule on the diagonal, pair moments off it; repeated inputs computed once).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from .. import _validate as v
from ..mlp import MLP
from ._gauss import Expectations
from .network import OVERFLOW
from .ntk import _sp2_single, check_ntk_activation

__all__ = ["KernelBlocks", "kernel_blocks", "Prediction", "posterior", "posterior_from_kernels",
           "gp_factor", "gp_predict",
           "log_evidence", "log_evidence_ratio", "evidence_from_kernel", "FiniteWidthMean",
           "posterior_mean_nlo", "hebbian_shift", "RCOND"]

#: A symmetric training block whose smallest/largest eigenvalue ratio is below this is singular.
RCOND = 1e-12
_NOISE_HINT = ("Give observation noise (noise > 0, e.g. 1e-6 × the kernel's scale) or remove duplicate "
               "training inputs")
_PAIR_CHUNK = 1024
_THREAD_MIN = 20000   # pairs per thread below which one thread is faster


# ---------------------------------------------------------------------------------------------
# Validation


def _check_net(net) -> MLP:
    if not isinstance(net, MLP):
        raise ValueError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    return net


def targets(name: str, y, N: int) -> tuple[np.ndarray, bool]:
    """Validate targets of shape (N,) or (N, n_L); return them as (N, n_L) and whether y was 1-D."""
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape ({N},) or ({N}, n_L): {exc}") from None
    if arr.ndim not in (1, 2) or arr.shape[0] != N or (arr.ndim == 2 and arr.shape[1] < 1):
        raise ValueError(f"{name} must have shape ({N},) or ({N}, n_L) with n_L >= 1 (one row per "
                         f"input); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; targets must be finite")
    return (arr[:, None] if arr.ndim == 1 else arr), arr.ndim == 1


def _noise(noise) -> float:
    return v.real("noise", noise, low=0.0)


def _duplicates(X: np.ndarray) -> tuple[int, int] | None:
    """The first pair (i, j), i < j, of identical rows of X, or None."""
    _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    for j in range(X.shape[0]):
        i = int(first[inverse[j]])
        if i != j:
            return i, j
    return None


def _singular_reason(X: np.ndarray | None) -> str:
    dup = _duplicates(X) if X is not None else None
    if dup is not None:
        return f"training inputs {dup[0]} and {dup[1]} are identical"
    if X is not None and X.shape[1] == 1:
        return ("with n_features = 1 the inputs are collinear, and a scale-invariant activation (ReLU) "
                "with C_b = 0 sees only their signs, so the kernel has rank <= 2")
    return "nearly collinear or redundant training inputs"


def factor(K: np.ndarray, noise: float = 0.0, *, what: str, X: np.ndarray | None = None,
           hint: str = _NOISE_HINT) -> np.ndarray:
    """Lower Cholesky factor of K + noise·1 for a positive-semidefinite training block K, or a clear
    ValueError (never NaN).

    noise = 0: K must be well conditioned, λ_min/λ_max > :data:`RCOND`. noise > 0: K + noise is
    positive definite in exact arithmetic; it is accepted unless rounding in K has eaten half of the
    noise (λ_min(K + noise) < noise/2), in which case the noise is too small for the kernel's scale.
    The message names duplicate training inputs when there are any.
    """
    M = np.asarray(K, dtype=np.float64) + noise * np.eye(len(K))
    w = np.linalg.eigvalsh(M)
    rc = w[0] / w[-1] if w[-1] > 0 else -np.inf
    ok = rc > RCOND if noise == 0 else w[0] >= 0.5 * noise
    L = None
    if ok:
        try:
            L = np.linalg.cholesky(M)
        except np.linalg.LinAlgError:
            L = None
    if L is None:
        label = what + (f" + noise {noise:g}" if noise else "")
        if noise == 0:
            detail = f"smallest/largest eigenvalue {rc:.3g}, limit {RCOND:g}"
        else:
            detail = (f"smallest eigenvalue {w[0]:.3g} < noise/2 = {noise / 2:.3g}: the noise is below the "
                      f"kernel's rounding error at its scale {w[-1]:.3g}")
        raise ValueError(f"{label} is singular or too ill-conditioned to invert ({detail}): "
                         f"{_singular_reason(X)}. {hint}".rstrip())
    return L


def _chol_solve(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    return cho_solve((L, True), B, check_finite=False)


# ---------------------------------------------------------------------------------------------
# Kernels K^{(L)} and Θ^{(L)} for many inputs


@dataclass(frozen=True)
class KernelBlocks:
    r"""Output-layer kernels K^{(L)} (and NTK means Θ^{(L)}) on training inputs A and test inputs B.

    ``train`` (N_A, N_A), ``cross`` (N_B, N_A) = K_{β̇α}, ``test`` (N_B, N_B) (None unless asked for),
    ``test_diag`` (N_B,); the ``Theta_*`` twins are None without ``ntk=True``.
    """

    train: np.ndarray
    cross: np.ndarray | None = None
    test: np.ndarray | None = None
    test_diag: np.ndarray | None = None
    Theta_train: np.ndarray | None = None
    Theta_cross: np.ndarray | None = None
    Theta_test: np.ndarray | None = None
    Theta_test_diag: np.ndarray | None = None


def _closed_threads(act, orders, Caa, Cab, Cbb) -> list:
    """Closed-form pair moments ⟨σ^{(j)}σ^{(k)}⟩ for (j, k) in ``orders`` over many pairs, split across
    the CPU's cores: numpy's elementwise ufuncs release the GIL, and each pair is computed alone, so
    the result does not depend on the split."""
    n = Cab.size
    parts = min(os.cpu_count() or 1, max(1, n // _THREAD_MIN))
    if parts == 1:
        return [np.asarray(v, dtype=np.float64) for v in act.closed_pairs(orders, Caa, Cab, Cbb)]
    cuts = np.linspace(0, n, parts + 1).astype(int)
    out = [np.empty(n) for _ in orders]

    def work(lo, hi):
        for o, val in zip(out, act.closed_pairs(orders, Caa[lo:hi], Cab[lo:hi], Cbb[lo:hi])):
            o[lo:hi] = val

    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(work, cuts[:-1], cuts[1:]))
    return out


def _diag_moment(E: Expectations, j: int, K) -> np.ndarray:
    """⟨σ^{(j)}(z)²⟩_K (j = 0, 1): the closed pair form at coincident inputs when there is one."""
    closed = E.act.closed_pair(j, j, K, K, K)
    if closed is not None:
        return np.asarray(closed, dtype=np.float64)
    return E.g_derivs(K)[0] if j == 0 else _sp2_single(E, K)[0]


def _pair_moments(E: Expectations, orders, Caa, Cab, Cbb) -> list:
    """[⟨σ^{(j)}_aσ^{(k)}_b⟩ for (j, k) in orders] over pairs: closed forms together, else quadrature."""
    if all(v is not None for v in E.act.closed_pairs(orders, Caa[:1], Cab[:1], Cbb[:1])):
        return _closed_threads(E.act, orders, Caa, Cab, Cbb)
    return [_pair_moment(E, j, k, Caa, Cab, Cbb) for j, k in orders]


def _pair_moment(E: Expectations, j: int, k: int, Caa, Cab, Cbb) -> np.ndarray:
    out = np.empty(Cab.shape)
    for s in range(0, Cab.size, _PAIR_CHUNK):
        sl = slice(s, s + _PAIR_CHUNK)
        out[sl] = E.pair(j, k, Caa[sl], Cab[sl], Cbb[sl])
    return out


def _pair_kernels(net: MLP, U: np.ndarray, a: np.ndarray, b: np.ndarray, ntk: bool, order2):
    r"""K^{(L)} (and Θ^{(L)}) for the pairs (U[a[k]], U[b[k]]), a[k] ≠ b[k], and on the diagonal of U.

    The smallest case, one pair (a, b), layer ℓ → ℓ+1, all ⟨·⟩ at K^{(ℓ)} (book (4.7), §4.3, Ch. 8):

    .. math:: K'_{ab} = C_b + C_W\langle\sigma_a\sigma_b\rangle,\qquad
              \Theta'_{ab} = \lambda_b + \lambda_W\langle\sigma_a\sigma_b\rangle
                + C_W\langle\sigma'_a\sigma'_b\rangle\Theta_{ab},

    with K^{(1)} = C_b + C_W x_a·x_b/n_0 and Θ^{(1)} = λ_b + λ_W x_a·x_b/n_0; vectorized over pairs.
    Returns (K_diag (N_U,), K_pair (P,), Θ_diag, Θ_pair) (the Θ's None without ``ntk``).
    """
    act = net.activation
    if ntk:
        check_ntk_activation(act)
    n0 = U.shape[1]
    gram_d = np.einsum("ij,ij->i", U, U) / n0
    gram_p = np.einsum("ij,ij->i", U[a], U[b]) / n0
    C_b, C_W = net.hyper(1)
    kd, kp = C_b + C_W * gram_d, C_b + C_W * gram_p
    td = tp = None
    if ntk:
        td = net.lambda_b[0] + net.lambda_W[0] * gram_d
        tp = net.lambda_b[0] + net.lambda_W[0] * gram_p
    if np.any(kd <= 0):
        raise ValueError("X contains an all-zero input and C_b = 0 in layer 1: its preactivations are "
                         "identically zero; give C_b > 0 or remove that input")
    base = Expectations(act, order2=order2)
    for ell in range(2, net.depth + 1):
        C_b, C_W = net.hyper(ell)
        lam_b, lam_W = net.lambda_b[ell - 1], net.lambda_W[ell - 1]
        E = Expectations(act, order2=base.order2(float(np.max(kd))))  # pdlt.theory's per-layer order
        with np.errstate(over="ignore", invalid="ignore"):
            g = _diag_moment(E, 0, kd)
            ss, *sp = _pair_moments(E, [(0, 0), (1, 1)] if ntk else [(0, 0)], kd[a], kp, kd[b])
            if ntk:
                sp_d, sp = _diag_moment(E, 1, kd), sp[0]
                td = lam_b + lam_W * g + C_W * sp_d * td
                tp = lam_b + lam_W * ss + C_W * sp * tp
            kd, kp = C_b + C_W * g, C_b + C_W * ss
        for name, arr in (("K", kd), ("K", kp), ("Theta", td), ("Theta", tp)):
            if arr is not None and (not np.all(np.isfinite(arr)) or np.max(np.abs(arr), initial=0) > OVERFLOW):
                raise OverflowError(
                    f"{name} overflowed at layer {ell} of {net.depth}: the kernel grows exponentially with "
                    f"depth away from criticality; lower C_W (now {C_W:g}) or the depth")
    return kd, kp, td, tp


def _unique(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows in order of first appearance and the index of each row of X among them."""
    _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return X[np.sort(first)], rank[inverse.reshape(-1)]


def kernel_blocks(net: MLP, X_train, X_test=None, *, ntk: bool = False, test_cov: bool = True,
                  order2: int | None = None) -> KernelBlocks:
    r"""The output-layer kernel K^{(L)} (and NTK mean Θ^{(L)}) on the training block, the test×train
    block and the test block (book §4.3, Ch. 8).

    Parameters
    ----------
    net : the network (its last layer L is the output).
    X_train : (N_A, n_0) training inputs; X_test : (N_B, n_0) test inputs or None.
    ntk : also compute Θ (the NTK mean, needed for gradient-descent training, Ch. 10).
    test_cov : compute the full (N_B, N_B) test block; otherwise only its diagonal.
    order2 : polar-rule order of the pair moments (None: ``pdlt.theory``'s default).

    Repeated inputs (also between A and B) are computed once, as in ``pdlt.theory``.
    """
    net = _check_net(net)
    XA = v.inputs("X_train", X_train, net.input_dim)
    XB = None if X_test is None else v.inputs("X_test", X_test, net.input_dim)
    X = XA if XB is None else np.vstack([XA, XB])
    U, idx = _unique(X)
    iA, iB = idx[:XA.shape[0]], (None if XB is None else idx[XA.shape[0]:])
    # which distinct pairs are needed
    blocks = [(iA, iA)]
    if iB is not None:
        blocks.append((iB, iA))
        if test_cov:
            blocks.append((iB, iB))
    Nu = U.shape[0]

    # which distinct off-diagonal pairs (lo < hi) are needed: a mask over the upper triangle, numbered
    # in row-major order (a sort-free np.unique)
    need = np.zeros((Nu, Nu), dtype=bool)
    for r, c in blocks:
        rr, cc = np.meshgrid(r, c, indexing="ij", sparse=True)
        need[np.minimum(rr, cc), np.maximum(rr, cc)] = True
    np.fill_diagonal(need, False)
    number = np.cumsum(need.ravel()).reshape(Nu, Nu) - 1
    a, b = np.nonzero(need)
    kd, kp, td, tp = _pair_kernels(net, U, a, b, ntk, order2)

    def assemble(diag, pair, r, c):
        rr, cc = np.meshgrid(r, c, indexing="ij", sparse=True)
        lo, hi = np.minimum(rr, cc), np.maximum(rr, cc)
        return np.where(lo == hi, diag[lo], pair[number[lo, hi]] if pair.size else 0.0)

    out = {"train": assemble(kd, kp, iA, iA)}
    if ntk:
        out["Theta_train"] = assemble(td, tp, iA, iA)
    if iB is not None:
        out["cross"] = assemble(kd, kp, iB, iA)
        out["test_diag"] = kd[iB].copy()
        if test_cov:
            out["test"] = assemble(kd, kp, iB, iB)
        if ntk:
            out["Theta_cross"] = assemble(td, tp, iB, iA)
            out["Theta_test_diag"] = td[iB].copy()
            if test_cov:
                out["Theta_test"] = assemble(td, tp, iB, iB)
    return KernelBlocks(**out)


# ---------------------------------------------------------------------------------------------
# The result object


@dataclass(frozen=True)
class Prediction:
    r"""A predicted distribution of the outputs at N_B test inputs (posterior or trained ensemble).

    Attributes
    ----------
    mean : (N_B,) or (N_B, n_L) — the shape of the targets given: E[z_{i;β̇}].
    cov : (N_B, N_B), :math:`\mathrm{Cov}[z_{i_1;\dot\beta_1}, z_{i_2;\dot\beta_2}] = \delta_{i_1i_2}\,
        \mathrm{cov}_{\dot\beta_1\dot\beta_2}` (the same for every output i at infinite width).
    y_test : targets at the test inputs (same shape as ``mean``) or None.
    method : what was predicted ("bayesian posterior", "gradient descent", "newton step").
    info : the settings (noise, η, steps, …) and extras (log evidence, divergence threshold, …).

    ``variance`` = diag(cov); ``bias`` = mean − y_test; ``error`` = bias² + variance, the expected
    squared error per test input and output (the generalization error's bias–variance split, Ch. 10).
    """

    mean: np.ndarray
    cov: np.ndarray
    y_test: np.ndarray | None = None
    method: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("mean", "cov", "y_test"):
            val = getattr(self, name)
            if val is not None:
                arr = np.array(val, dtype=np.float64)
                arr.setflags(write=False)
                object.__setattr__(self, name, arr)

    @property
    def variance(self) -> np.ndarray:
        """(N_B,) Var[z_{i;β̇}] for each test input (every output i)."""
        return np.diagonal(self.cov).copy()

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.variance, 0.0))

    @property
    def bias(self) -> np.ndarray | None:
        """mean − y_test (shape of ``mean``), None without y_test."""
        return None if self.y_test is None else self.mean - self.y_test

    @property
    def error(self) -> np.ndarray | None:
        r""":math:`E[(z_{i;\dot\beta} - y_{i;\dot\beta})^2]` = bias² + variance (shape of ``mean``)."""
        if self.y_test is None:
            return None
        var = self.variance if self.mean.ndim == 1 else self.variance[:, None]
        return self.bias ** 2 + var

    def to_dict(self) -> dict:
        def lst(x):
            return None if x is None else np.asarray(x).tolist()

        return {"method": self.method, "mean": lst(self.mean), "cov": lst(self.cov),
                "variance": lst(self.variance), "y_test": lst(self.y_test), "bias": lst(self.bias),
                "error": lst(self.error), "info": {k: (lst(x) if isinstance(x, np.ndarray) else x)
                                                   for k, x in self.info.items()}}


# ---------------------------------------------------------------------------------------------
# The infinite-width posterior


def posterior_from_kernels(K_train, K_cross, K_test, y, noise: float = 0.0, *, X_train=None):
    r"""GP posterior mean and covariance from kernel blocks (book §6.3), the vectorized core.

    .. math:: m = K_{BA}(K_{AA}+\sigma_\varepsilon^2)^{-1}y,\qquad
              \Sigma = K_{BB} - K_{BA}(K_{AA}+\sigma_\varepsilon^2)^{-1}K_{AB}.

    K_train (N_A, N_A), K_cross (N_B, N_A), K_test (N_B, N_B) or its diagonal (N_B,), y (N_A, n_L).
    Returns (mean (N_B, n_L), cov (N_B, N_B) or its diagonal (N_B,)). Split into
    :func:`gp_factor` (training data only) and :func:`gp_predict` (per test set).
    """
    L, alpha = gp_factor(K_train, y, noise, X_train=X_train)
    return gp_predict(L, alpha, K_cross, K_test)


def gp_factor(K_train, y, noise: float = 0.0, *, X_train=None) -> tuple[np.ndarray, np.ndarray]:
    """(L, α): the Cholesky factor of K_AA + σ_ε² (checked by :func:`factor`) and α = (K_AA + σ_ε²)⁻¹y."""
    L = factor(K_train, _noise(noise), what="the training kernel K_AA", X=X_train)
    return L, _chol_solve(L, np.asarray(y, dtype=np.float64))


def gp_predict(L: np.ndarray, alpha: np.ndarray, K_cross, K_test=None):
    """Posterior mean K_BA α (N_B, n_L) and covariance K_BB − WᵀW, W = L⁻¹K_AB ((N_B, N_B) for a full
    K_test, its diagonal for a 1-D one, None for None)."""
    K_cross = np.asarray(K_cross, dtype=np.float64)
    mean = K_cross @ alpha
    if K_test is None:
        return mean, None
    W = solve_triangular(L, K_cross.T, lower=True, check_finite=False)  # L⁻¹ K_AB
    K_test = np.asarray(K_test, dtype=np.float64)
    cov = K_test - W.T @ W if K_test.ndim == 2 else K_test - np.einsum("ab,ab->b", W, W)
    return mean, cov


def _evidence(L: np.ndarray, alpha: np.ndarray, y: np.ndarray) -> float:
    n_L = y.shape[1]
    logdet = 2.0 * float(np.sum(np.log(np.diag(L))))
    return -0.5 * float(np.sum(y * alpha)) - 0.5 * n_L * (logdet + L.shape[0] * np.log(2 * np.pi))


def posterior(net: MLP, X_train, y_train, X_test, noise: float = 0.0, *, y_test=None,
              order2: int | None = None) -> Prediction:
    r"""Infinite-width Bayesian posterior of the outputs at test inputs (book §6.3; sheet §7).

    .. math:: m_{i;\dot\beta} = \sum K_{\dot\beta\alpha_1}\tilde K^{\alpha_1\alpha_2}y_{i;\alpha_2},\quad
              \mathrm{Cov} = \delta_{i_1i_2}\big[K_{\dot\beta_1\dot\beta_2}
              - \sum K_{\dot\beta_1\alpha_1}\tilde K^{\alpha_1\alpha_2}K_{\alpha_2\dot\beta_2}\big],

    :math:`\tilde K = (K_{AA} + \sigma_\varepsilon^2)^{-1}`, K = K^{(L)} of ``net``.

    Parameters
    ----------
    X_train : (N_A, n_0); y_train : (N_A,) or (N_A, n_L) (any number of outputs: at infinite width
        they are independent, so the net's output_dim is not used); X_test : (N_B, n_0).
    noise : observation noise variance σ_ε² ≥ 0 (the likelihood y = z + ε, ε ~ N(0, σ_ε²)).
    y_test : optional targets at X_test (for bias/error).

    Returns a :class:`Prediction` (mean shaped like y_train per test input); ``info["log_evidence"]``
    holds :func:`log_evidence`. Duplicate training inputs without noise: ValueError suggesting noise.
    """
    net = _check_net(net)
    XA = v.inputs("X_train", X_train, net.input_dim)
    Y, one_d = targets("y_train", y_train, XA.shape[0])
    noise = _noise(noise)
    kb = kernel_blocks(net, XA, X_test, order2=order2)
    L, alpha = gp_factor(kb.train, Y, noise, X_train=XA)
    mean, cov = gp_predict(L, alpha, kb.cross, kb.test)
    yt = None if y_test is None else _test_targets(y_test, mean.shape[0], Y.shape[1], one_d)
    ev = _evidence(L, alpha, Y)
    return Prediction(mean[:, 0] if one_d else mean, cov, yt, "bayesian posterior",
                      {"noise": noise, "log_evidence": ev, "order": "infinite width"})


def _test_targets(y_test, N: int, n_L: int, one_d: bool) -> np.ndarray:
    Yt, _ = targets("y_test", y_test, N)
    if Yt.shape[1] != n_L:
        raise ValueError(f"y_test has {Yt.shape[1]} outputs but y_train has {n_L}")
    return Yt[:, 0] if one_d else Yt


def evidence_from_kernel(K_train, y, noise: float = 0.0, *, X_train=None) -> float:
    r"""log p(y|K) = −½ Σ_i y_iᵀ(K+σ²)⁻¹y_i − (n_L/2) log det(2π(K+σ²)); y (N_A, n_L) (book §6.3.1)."""
    y = np.asarray(y, dtype=np.float64)
    L, alpha = gp_factor(K_train, y, noise, X_train=X_train)
    return _evidence(L, alpha, y)


def log_evidence(net: MLP, X, y, noise: float = 0.0, *, order2: int | None = None) -> float:
    r"""Log evidence (marginal likelihood) of targets y at inputs X under the infinite-width prior
    of ``net`` (book §6.3.1; sheet §7):

    .. math:: \log p(y\,|\,\mathcal H) = -\frac12\sum_{i=1}^{n_L} y_i^\top (K+\sigma_\varepsilon^2)^{-1} y_i
              - \frac{n_L}{2}\log\det\!\big(2\pi (K+\sigma_\varepsilon^2)\big),

    K = K^{(L)} on X (N, n_0); y (N,) or (N, n_L); noise σ_ε² ≥ 0.
    """
    net = _check_net(net)
    X = v.inputs("X", X, net.input_dim)
    Y, _ = targets("y", y, X.shape[0])
    return evidence_from_kernel(kernel_blocks(net, X, order2=order2).train, Y, _noise(noise), X_train=X)


def log_evidence_ratio(net1: MLP, net2: MLP, X, y, noise: float = 0.0, *, order2: int | None = None) -> float:
    r"""Bayesian model comparison: :math:`\log\frac{p(y|\mathcal H_1)}{p(y|\mathcal H_2)}` for two
    networks on the same data (book §6.3.1, e.g. the evidence for criticality: C_W at vs off its
    critical value). Positive favours ``net1``. Shapes as in :func:`log_evidence`."""
    return (log_evidence(net1, X, y, noise, order2=order2)
            - log_evidence(net2, X, y, noise, order2=order2))


# ---------------------------------------------------------------------------------------------
# Finite width: O(1/n_{L−1})


@dataclass(frozen=True)
class FiniteWidthMean:
    r"""The posterior mean to O(1/n): ``mean`` = ``metric`` + ``correction``.

    ``infinite`` : K-based infinite-width mean; ``metric`` : the same with G = K + G^{\{1\}}/n_{L−1};
    ``correction`` : the V-term; all (N_B,) or (N_B, n_L) like the targets. ``n`` = n_{L−1}.
    """

    infinite: np.ndarray
    metric: np.ndarray
    correction: np.ndarray
    n: int

    @property
    def mean(self) -> np.ndarray:
        return self.metric + self.correction


def _nlo_setup(net, X_train, y_train, X_test, noise, order2, order4, X_name="X_test"):
    from .network import theory

    net = _check_net(net)
    XA = v.inputs("X_train", X_train, net.input_dim)
    Y, one_d = targets("y_train", y_train, XA.shape[0])
    if Y.shape[1] != net.n(net.depth):
        raise ValueError(f"y_train has {Y.shape[1]} outputs but the network has n_L = {net.n(net.depth)}; "
                         f"at finite width n_L enters the posterior, so they must agree")
    if net.depth < 2:
        raise ValueError("the 1/n corrections need depth >= 2 (a single layer is exactly Gaussian)")
    noise = _noise(noise)
    XB = XA[:0] if X_test is None else v.inputs(X_name, X_test, net.input_dim)
    s = theory(net, np.vstack([XA, XB]), order2=order2, order4=order4).layer(net.depth)
    NA = XA.shape[0]
    G, K = s.G, s.K
    Gt = _chol_solve(factor(G[:NA, :NA], noise, what="the training metric G_AA", X=XA), np.eye(NA))
    Kt = _chol_solve(factor(K[:NA, :NA], noise, what="the training kernel K_AA", X=XA), np.eye(NA))
    return net, s, NA, Y, one_d, G, K, Gt, Kt


def posterior_mean_nlo(net: MLP, X_train, y_train, X_test, noise: float = 0.0, *,
                       order2: int | None = None, order4: int | None = None) -> FiniteWidthMean:
    r"""Posterior mean of the outputs to O(1/n_{L−1}) (book §6.4; formula sheet §7, as stated there).

    .. math::
        E[z_{i;\dot\beta}\,|\,y_A] = \sum G_{\dot\beta\alpha_1}\tilde G^{\alpha_1\alpha_2}y_{i;\alpha_2}
        + \frac{1}{2n_{L-1}}\sum \tilde V_{(\dot\beta\alpha_1)(\alpha_2\alpha_3)}\Big[
          \hat y_{i;\alpha_1}\sum_{k=1}^{n_L}\hat y_{k;\alpha_2}\hat y_{k;\alpha_3}
          - 2\tilde G^{\alpha_1\alpha_2}\hat y_{i;\alpha_3} - n_L\tilde G^{\alpha_2\alpha_3}\hat y_{i;\alpha_1}\Big],

    with G = K + G^{\{1\}}/n_{L−1}, :math:`\tilde G = (G_{AA}+\sigma_\varepsilon^2)^{-1}`,
    :math:`\hat y_{i;\alpha} = \sum\tilde G^{\alpha\alpha'}y_{i;\alpha'}` and
    :math:`\tilde V_{(\dot\beta\alpha_1)(\alpha_2\alpha_3)} = V_{(\dot\beta\alpha_1)(\alpha_2\alpha_3)}
    - \sum K_{\dot\beta\alpha_4}\tilde K^{\alpha_4\alpha_5}V_{(\alpha_5\alpha_1)(\alpha_2\alpha_3)}`
    (:math:`\tilde K = (K_{AA}+\sigma_\varepsilon^2)^{-1}`). V, K, G^{\{1\}} are ``pdlt.theory``'s at
    layer L on the inputs A ∪ B (so N_A + N_B should be small: V is an N⁴ tensor).

    Derivation check (ours): the outputs are Gaussian given the penultimate metric Ĝ, whose mean is
    G and covariance V/n_{L−1}; expanding E[Ĝ_{BA}Ĝ_{AA}⁻¹y · p(y|Ĝ)]/E[p(y|Ĝ)] to second order in
    ΔĜ gives exactly these three terms.

    y_train must have n_L = net's output width columns (n_L enters). Returns :class:`FiniteWidthMean`.
    """
    net, s, NA, Y, one_d, G, K, Gt, Kt = _nlo_setup(net, X_train, y_train, X_test, noise, order2, order4)
    V = s.V
    nL = Y.shape[1]
    B, A = slice(NA, None), slice(0, NA)
    Vt = V[B, A, A, A] - np.einsum("ba,ac,cdef->bdef", K[B, A], Kt, V[A, A, A, A])
    yh = Gt @ Y                                   # ŷ_{α;i}, (N_A, n_L)
    S = yh @ yh.T                                 # Σ_k ŷ_{k;α2} ŷ_{k;α3}
    corr = (np.einsum("bpqr,pi,qr->bi", Vt, yh, S)
            - 2.0 * np.einsum("bpqr,pq,ri->bi", Vt, Gt, yh)
            - nL * np.einsum("bpqr,qr,pi->bi", Vt, Gt, yh)) / (2.0 * s.n_prev)
    inf = K[B, A] @ Kt @ Y
    met = G[B, A] @ Gt @ Y
    sq = (lambda x: x[:, 0]) if one_d else (lambda x: x)
    return FiniteWidthMean(sq(inf), sq(met), sq(corr), s.n_prev)


def hebbian_shift(net: MLP, X_train, y_train, X=None, noise: float = 0.0, *,
                  order2: int | None = None, order4: int | None = None) -> np.ndarray:
    r"""Posterior shift of the penultimate metric ("Hebbian" representation learning; book §6.4.2,
    formula sheet §7, as stated there):

    .. math:: E\big[\hat G^{(L)}_{\delta_1\delta_2}\,\big|\,y\big] - G_{\delta_1\delta_2}
              = \frac{1}{2n_{L-1}}\sum V_{(\delta_1\delta_2)(\alpha_1\alpha_2)}\Big[\sum_i \hat y_{i;\alpha_1}
              \hat y_{i;\alpha_2} - n_L\tilde G^{\alpha_1\alpha_2}\Big] + O(1/n^2),

    :math:`\hat G^{(L)}_{\delta_1\delta_2} = C_b + \frac{C_W}{n_{L-1}}\sum_j\sigma_{j;\delta_1}\sigma_{j;\delta_2}`
    (penultimate activations), ŷ and G̃ as in :func:`posterior_mean_nlo`.

    Returns the (N_D, N_D) shift on the inputs D = [X_train; X] (X (N, n_0) optional extra inputs).
    """
    net, s, NA, Y, one_d, G, K, Gt, Kt = _nlo_setup(net, X_train, y_train, X, noise, order2, order4, "X")
    yh = Gt @ Y
    M = yh @ yh.T - Y.shape[1] * Gt
    A = slice(0, NA)
    return np.einsum("deab,ab->de", s.V[:, :, A, A], M) / (2.0 * s.n_prev)
