r"""Training real networks: the empirical twin of kernel learning (book Ch. 7, 10; formula sheet §0, §8).

The update rule is the book's, exactly (sheet §0):

.. math:: \theta_\mu \leftarrow \theta_\mu - \eta\sum_\nu\lambda_{\mu\nu}\frac{\partial\mathcal L}{\partial\theta_\nu},
          \qquad \mathcal L = \frac12\sum_{i=1}^{n_L}\sum_{\alpha\in A}(z_{i;\alpha} - y_{i;\alpha})^2,

the loss a **sum** (not a mean) over outputs and training inputs, λ diagonal: λ_b^{(ℓ)} for the
biases of layer ℓ and λ_W^{(ℓ)}/n_{ℓ−1} for its weights, η a global factor, full batch. So the
outputs move by :math:`\Delta z_{i;\delta} = -\eta\sum\hat H_{ij;\delta\alpha}\varepsilon_{j;\alpha} + O(\eta^2)`
with ε = z − y = ∂L/∂z and Ĥ the network's NTK.

Networks: network e of an ensemble with ``seed`` starts from exactly the weights of
:func:`pdlt.empirical.ntk.sample_parameters` (``SeedSequence(seed, spawn_key=(e,))``), the networks
of ``pdlt.measure(..., method="naive")``. Forward and backward passes are hand-written numpy,
batched over networks (one BLAS call per network and layer, so every network's numbers are
independent of how many share a shard); the ensemble is streamed in shards of bounded memory and
the per-group sums are added in a fixed order, so results are bitwise independent of
``shard_size``.

Newton step (``newton=True``): the real-network version of the book's one-step ηΘ̃ = 1 is the
matrix learning rate given by the network's own training-block NTK,

.. math:: \theta_\mu \leftarrow \theta_\mu - \eta\sum_\nu\lambda_{\mu\nu}\sum_{i,\alpha,j,\beta}
          \frac{dz_{i;\alpha}}{d\theta_\nu}\big[\hat H_{AA}^{-1}\big]_{(i\alpha)(j\beta)}\varepsilon_{j;\beta},

(η = 1: the Gauss–Newton / minimum-λ-norm step that fits the training set exactly in the
linearized model). It is defined whenever the (n_L N_A)×(n_L N_A) matrix Ĥ_AA of a network is
invertible (otherwise a clear error). At infinite width it is the book's ηΘ̃ = 1; at finite width
the training error after one step is O(1/n) (the NTK moves during the step: dNTK).

Frozen slopes (``frozen_slopes=True``, piecewise-linear σ only)
---------------------------------------------------------------
The book's finite-width expansion treats training as a Taylor series in Δθ whose coefficients are
derivatives at initialization; for a kinked σ those are taken almost everywhere (σ″ = σ‴ = 0,
:mod:`pdlt.theory.dntk`). That series describes exactly the network in which every hidden neuron
keeps, at each input, the slope σ'(z_{i;α}) it had at initialization — σ(z) = σ'(z)·z with σ'
frozen, a polynomial in θ. ``frozen_slopes=True`` trains that network (forward, backward and Newton
NTK with the frozen slopes): it is the empirical twin of :func:`pdlt.theory.finite_width_mean` for
ReLU-like σ. The difference real − frozen, network by network, is the effect of the neurons whose
preactivation crosses the kink during training, which the a.e. expansion leaves out (measured in
tests/test_finite_width_twin.py: O(1/n) at test inputs after one Newton step, O(n^{-1/2}) at the
training inputs after one step and at every input after two or more steps).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from .. import _validate as v
from ..estimate import Estimate
from ..mlp import MLP
from . import engine
from .ntk import Parameters, _sigma_prime, sample_parameters

__all__ = ["TrainingDivergedError", "TrainedNetworks", "train_networks", "train_ensemble",
           "TrainingMeasurement", "empirical_ntk_train", "DIVERGENCE_FACTOR"]

#: A network whose training loss exceeds this factor times its initial loss (or is not finite) diverged.
DIVERGENCE_FACTOR = 1e8


class TrainingDivergedError(FloatingPointError):
    """Gradient descent diverged: the training loss became non-finite or grew by DIVERGENCE_FACTOR."""


# ---------------------------------------------------------------------------------------------
# One batch of networks: forward, backward, update


class _Batch:
    """Explicit, mutable weights of E networks: ``W[l]`` (E, n_{l+1}, n_l), ``b[l]`` (E, n_{l+1})."""

    def __init__(self, net: MLP, params: Parameters, frozen_slopes: bool = False):
        self.net = net
        self.W = [np.ascontiguousarray(params.W(l)) for l in range(1, net.depth + 1)]
        self.b = [np.ascontiguousarray(params.b(l)) for l in range(1, net.depth + 1)]
        self.sigma = engine._NumpyBackend().sigma(net.activation)
        self.dsigma = _sigma_prime(net)
        # frozen_slopes: per layer (E, N, n) slopes σ'(z) of the first forward pass, kept for good
        self.slopes = [] if frozen_slopes else None

    @property
    def E(self) -> int:
        return self.W[0].shape[0]

    def forward(self, X: np.ndarray):
        """(zs, hs): zs[l] (E, N, n_{l+1}) preactivations of layer l+1; hs[l] its input (X or σ(z))."""
        hs, zs = [X], []
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            # W hᵀ with both operands row-major (a transposed operand can leave the fast BLAS path)
            hT = np.ascontiguousarray(np.swapaxes(hs[-1], -1, -2))
            z = np.ascontiguousarray((W @ hT).mT) + b[:, None, :]
            zs.append(z)
            if l < len(self.W) - 1:
                if self.slopes is None:
                    hs.append(self.sigma(z))
                    continue
                if len(self.slopes) == l:
                    self.slopes.append(self.dsigma(z))
                # piecewise linear with σ(0) = 0: σ(z) = σ'(z)·z, here with the slope of initialization
                hs.append(self.slope(l, z) * z)
        return zs, hs

    def slope(self, l: int, z: np.ndarray) -> np.ndarray:
        """σ'(z) of hidden layer l (z: (E, N', n)); with frozen slopes those of the first N' inputs of
        the first forward pass (the training inputs come first in every pass)."""
        if self.slopes is None:
            return self.dsigma(z)
        return self.slopes[l][:, :z.shape[1]]

    def backward(self, zs, hs, delta: np.ndarray):
        r"""Gradients of Σ_{α,i} δ_{i;α} z^{(L)}_{i;α} (a vector–Jacobian product; δ = ε gives ∂L/∂θ).

        δ^{(L)} = δ; ∂/∂W^{(ℓ)} = δ^{(ℓ)ᵀ}h^{(ℓ−1)}, ∂/∂b^{(ℓ)} = Σ_α δ^{(ℓ)}_α,
        δ^{(ℓ−1)} = (δ^{(ℓ)}W^{(ℓ)}) ⊙ σ'(z^{(ℓ−1)}).
        """
        gW, gb = [None] * len(self.W), [None] * len(self.W)
        for l in range(len(self.W) - 1, -1, -1):
            gW[l] = np.ascontiguousarray(delta.mT) @ hs[l]
            gb[l] = delta.sum(axis=1)
            if l > 0:
                delta = (delta @ self.W[l]) * self.slope(l - 1, zs[l - 1])
        return gW, gb

    def update(self, gW, gb, eta: float) -> None:
        """θ ← θ − η λ g with λ_b^{(ℓ)} for biases, λ_W^{(ℓ)}/n_{ℓ−1} for weights."""
        net = self.net
        for l in range(len(self.W)):
            gW[l] *= eta * net.lambda_W[l] / net.widths[l]
            self.W[l] -= gW[l]
            self.b[l] -= (eta * net.lambda_b[l]) * gb[l]

    def ntk_train(self, zs, hs, N_A: int) -> np.ndarray:
        r"""The network's output NTK on the first N_A inputs, (E, N_A·n_L, N_A·n_L), rows (α, i).

        :math:`\hat H_{(\alpha i)(\beta j)} = \sum_\ell \big[\sum_k D^{(\ell)}_{\alpha;ik}D^{(\ell)}_{\beta;jk}\big]
        \big(\lambda_b^{(\ell)} + \tfrac{\lambda_W^{(\ell)}}{n_{\ell-1}}h^{(\ell-1)}_\alpha\!\cdot h^{(\ell-1)}_\beta\big)`
        with :math:`D^{(\ell)}_{\alpha;ik} = dz^{(L)}_{i;\alpha}/dz^{(\ell)}_{k;\alpha}` (backpropagated identity).
        """
        net, E = self.net, self.E
        nL = net.widths[-1]
        D = np.broadcast_to(np.eye(nL), (E, N_A, nL, nL))
        H = np.zeros((E, N_A, nL, N_A, nL))
        for l in range(len(self.W) - 1, -1, -1):
            h = hs[l][..., :N_A, :]
            gram = h @ h.mT
            gram = np.broadcast_to(gram, (E, N_A, N_A))
            c = net.lambda_b[l] + (net.lambda_W[l] / net.widths[l]) * gram
            DD = np.einsum("eaik,ebjk->eaibj", D, D)
            H += DD * c[:, :, None, :, None]
            if l > 0:
                D = (D @ self.W[l][:, None]) * self.slope(l - 1, zs[l - 1][:, :N_A])[:, :, None, :]
        return H.reshape(E, N_A * nL, N_A * nL)


@contextlib.contextmanager
def _blas_threads(limit: int | None):
    """Limit BLAS threads while training (threadpoolctl, when installed; else a no-op).

    Every BLAS call here is one network's small product (inner dimension N or n_ℓ); a
    multithreaded BLAS gains nothing on them and, on a loaded machine, was measured 25–40× slower
    (n = 512, N = 6: 0.6–0.9 s against 0.024 s for 30 networks).
    """
    if limit is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(limits=limit, user_api="blas"):
        yield


def _loss(z: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """½ Σ_{α,i} (z − y)² per network: z (E, N_A, n_L) → (E,)."""
    d = z - Y
    return 0.5 * np.einsum("eai,eai->e", d, d)


@dataclass(frozen=True)
class TrainedNetworks:
    """Per-network results of :func:`train_networks` (E networks).

    ``z_test`` (E, N_B, n_L) trained outputs at the test inputs, ``z_test0`` the same at
    initialization, ``loss`` (E, steps+1) training loss ½Σ(z − y)² before each step and after the
    last, ``params`` the trained weights ``(Ws, bs)``.
    """

    z_test: np.ndarray
    z_test0: np.ndarray
    loss: np.ndarray
    params: tuple


def _check_data(net, X_train, y_train, X_test):
    XA = v.inputs("X_train", X_train, net.input_dim)
    from ..theory.bayes import targets

    Y, one_d = targets("y_train", y_train, XA.shape[0])
    if Y.shape[1] != net.n(net.depth):
        raise ValueError(f"y_train has {Y.shape[1]} outputs per input but the network has n_L = "
                         f"{net.n(net.depth)} outputs (give output_dim={Y.shape[1]} to MLP)")
    XB = XA[:0] if X_test is None else v.inputs("X_test", X_test, net.input_dim)
    return XA, Y, one_d, XB


def _threshold_hint(net, XA) -> str:
    try:
        from ..theory.training import max_learning_rate

        return (f"; at infinite width gradient descent converges only for eta < 2/λ_max(Θ̃) = "
                f"{max_learning_rate(net, XA):.6g}")
    except Exception:  # noqa: BLE001 - the hint is optional
        return ""


def _newton_direction(H: np.ndarray, eps: np.ndarray, first: int) -> np.ndarray:
    """c = Ĥ_AA⁻¹ ε per network, (E, N_A, n_L); a clear error when some Ĥ_AA is singular."""
    from ..theory.bayes import RCOND

    E, NA, nL = eps.shape
    w = np.linalg.eigvalsh(H)
    bad = np.flatnonzero(~(w[:, 0] > RCOND * w[:, -1]))
    if bad.size:
        e = int(bad[0])
        raise ValueError(
            f"newton step undefined for network {first + e}: its training-block NTK Ĥ_AA "
            f"({NA * nL}×{NA * nL}) is singular (smallest/largest eigenvalue {w[e, 0] / w[e, -1]:.3g}); "
            f"duplicate training inputs, or more training outputs than the network can fit in one step")
    return np.linalg.solve(H, eps.reshape(E, NA * nL, 1)).reshape(E, NA, nL)


def _train(batch: _Batch, XA, Y, XB, eta: float, steps: int, newton: bool, first: int):
    NA = XA.shape[0]
    X = np.vstack([XA, XB])
    loss = np.empty((batch.E, steps + 1))
    with np.errstate(all="ignore"):
        zs, hs = batch.forward(X)
        z_test0 = zs[-1][:, NA:].copy()
        for t in range(steps + 1):
            if t > 0:
                zs, hs = batch.forward(XA if t < steps else X)
            zA = zs[-1][:, :NA]
            loss[:, t] = _loss(zA, Y)
            bad = ~np.isfinite(loss[:, t]) | (loss[:, t] > DIVERGENCE_FACTOR * loss[:, 0])
            if bad.any():
                e = int(np.flatnonzero(bad)[0])
                raise TrainingDivergedError(
                    f"gradient descent diverged: network {first + e}'s training loss went from "
                    f"{loss[e, 0]:.4g} to {loss[e, t]:.4g} after {t} step(s) of eta = {eta:g}"
                    f"{_threshold_hint(batch.net, XA)}. Lower eta")
            if t == steps:
                break
            eps = zA - Y
            delta = _newton_direction(batch.ntk_train(zs, hs, NA), eps, first) if newton else eps
            if t == 0 and XB.shape[0]:
                zs, hs = [z[:, :NA] for z in zs], [hs[0][:NA]] + [h[:, :NA] for h in hs[1:]]
            gW, gb = batch.backward(zs, hs, np.ascontiguousarray(delta))
            batch.update(gW, gb, eta)
        if steps == 0:
            z_test = z_test0.copy()
        else:
            z_test = zs[-1][:, NA:].copy()
    return z_test, z_test0, loss


def _check_run(net, eta, steps, newton):
    if not isinstance(net, MLP):
        raise ValueError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    newton = bool(newton)
    if eta is None:
        if not newton:
            raise ValueError("eta (the global learning rate, > 0) is required for gradient descent")
        eta = 1.0
    eta = v.real("eta", eta, low=0.0, low_open=True)
    if steps is None:
        if not newton:
            raise ValueError("steps (an integer >= 0) is required: real networks train for finitely many steps")
        steps = 1
    steps = v.positive_int("steps", steps, minimum=0)
    return eta, steps, newton


def _check_frozen(net: MLP, frozen_slopes) -> bool:
    from .. import activations as A

    frozen = bool(frozen_slopes)
    if frozen and not (isinstance(net.activation, A.PiecewiseLinear)
                       and type(net.activation).derivative is A.PiecewiseLinear.derivative):
        raise ValueError(f"frozen_slopes=True needs a piecewise-linear activation (relu, leaky_relu, "
                         f"piecewise_linear, linear), got {net.activation.name!r}: only there is σ(z) = σ'(z)·z")
    return frozen


def train_networks(net: MLP, params: Parameters, X_train, y_train, X_test=None, *, eta: float | None = None,
                   steps: int | None = None, newton: bool = False, frozen_slopes: bool = False) -> TrainedNetworks:
    r"""Train the E networks of ``params`` by full-batch gradient descent (book Ch. 7, §10.1).

    .. math:: \theta_\mu \leftarrow \theta_\mu - \eta\sum_\nu\lambda_{\mu\nu}\partial_\nu\mathcal L,
              \qquad\mathcal L = \tfrac12\sum_{i,\alpha\in A}(z_{i;\alpha} - y_{i;\alpha})^2.

    Parameters
    ----------
    params : from :func:`pdlt.empirical.ntk.sample_parameters` (not modified).
    X_train : (N_A, n_0); y_train : (N_A,) or (N_A, n_L) with n_L the net's output width;
    X_test : (N_B, n_0) or None.
    eta : η > 0. steps : t ≥ 0 full-batch steps.
    newton : each step uses the matrix learning rate Ĥ_AA⁻¹ (module docstring); defaults
        eta = 1, steps = 1.
    frozen_slopes : piecewise-linear σ only: every hidden neuron keeps, at each input, its slope at
        initialization (module docstring, "Frozen slopes").

    Raises :class:`TrainingDivergedError` when a network's loss becomes non-finite or exceeds
    :data:`DIVERGENCE_FACTOR` × its initial loss. Returns :class:`TrainedNetworks`.
    """
    eta, steps, newton = _check_run(net, eta, steps, newton)
    frozen = _check_frozen(net, frozen_slopes)
    XA, Y, _, XB = _check_data(net, X_train, y_train, X_test)
    batch = _Batch(net, params, frozen)
    with _blas_threads(1):
        z, z0, loss = _train(batch, XA, Y, XB, eta, steps, newton, 0)
    return TrainedNetworks(z, z0, loss, (tuple(batch.W), tuple(batch.b)))


def empirical_ntk_train(net: MLP, params: Parameters, X) -> np.ndarray:
    """Each network's output NTK Ĥ_{ij;αβ} on X by backpropagated Jacobians: (E, n_L, n_L, N, N)
    (the layout of :func:`pdlt.empirical.ntk.forward_ntk`). Cost O(N n_L Σ n_ℓ n_{ℓ−1}) per network."""
    X = v.inputs("X", X, net.input_dim)
    batch = _Batch(net, params)
    zs, hs = batch.forward(X)
    N, nL = X.shape[0], net.widths[-1]
    H = batch.ntk_train(zs, hs, N).reshape(-1, N, nL, N, nL)
    return H.transpose(0, 2, 4, 1, 3).copy()


# ---------------------------------------------------------------------------------------------
# Ensembles


class _Name:
    def __init__(self, name: str):
        self.name = name


def _est_mean(m):
    return np.asarray(m["z"])


def _est_cov(m, z="z", zz="zz"):
    mz = np.asarray(m[z])
    c = m.count
    return c / (c - 1) * (np.asarray(m[zz]) - mz @ mz.T / mz.shape[1])


def _est_var(m):
    return np.diagonal(_est_cov(m)).copy()


_ESTIMATORS = {
    "mean": (_est_mean, ("z",)),
    "cov": (_est_cov, ("z", "zz")),
    "variance": (_est_var, ("z", "zz")),
    "initial_mean": (lambda m: np.asarray(m["z0"]), ("z0",)),
    "initial_cov": (lambda m: _est_cov(m, "z0", "zz0"), ("z0", "zz0")),
    "loss": (lambda m: np.asarray(m["loss"]), ("loss",)),
    "error": (lambda m: np.asarray(m["err"]), ("err",)),
}


class TrainingMeasurement:
    r"""Trained-ensemble statistics with jackknife standard errors (:class:`~pdlt.estimate.Estimate`).

    ``mean`` (N_B,) or (N_B, n_L) (the targets' shape): E[z_{i;β̇}(t)] over initializations;
    ``cov`` (N_B, N_B): :math:`\frac1{n_L}\sum_i\mathrm{Cov}[z_{i;\dot\beta_1}(t), z_{i;\dot\beta_2}(t)]`
    (unbiased), the twin of the theory's δ_{i1i2}-stripped covariance; ``variance`` its diagonal;
    ``initial_mean``/``initial_cov`` the same at t = 0 (twins of 0 and K); ``loss`` (steps+1,) the
    mean training loss per step; ``error`` E[(z − y_test)²] (with y_test). ``final_loss``,
    ``initial_loss``: (E,) per-network training losses.
    """

    def __init__(self, acc: engine.Accumulation, one_d: bool, settings: dict, initial_loss, final_loss):
        self.accumulation = acc
        self._one_d = one_d
        self.settings = settings
        self.initial_loss = initial_loss
        self.final_loss = final_loss
        self._cache: dict = {}

    net = property(lambda self: self.accumulation.net)
    networks = property(lambda self: self.accumulation.networks)
    seed = property(lambda self: self.accumulation.seed)
    groups = property(lambda self: self.accumulation.groups)
    shard_size = property(lambda self: self.accumulation.shard_size)

    def estimate(self, name: str) -> Estimate:
        if name not in _ESTIMATORS:
            raise ValueError(f"unknown training observable {name!r}; known: {', '.join(_ESTIMATORS)}")
        if name == "error" and self.settings.get("y_test") is None:
            raise ValueError("error needs y_test (targets at the test inputs)")
        if name not in self._cache:
            fn, feats = _ESTIMATORS[name]
            est = self.accumulation.jackknife(self.net.depth, fn, feats)
            if self._one_d and name in ("mean", "initial_mean", "error"):
                est = Estimate(est.mean[:, 0], est.stderr[:, 0], est.count)
            self._cache[name] = est
        return self._cache[name]

    mean = property(lambda self: self.estimate("mean"))
    cov = property(lambda self: self.estimate("cov"))
    variance = property(lambda self: self.estimate("variance"))
    initial_mean = property(lambda self: self.estimate("initial_mean"))
    initial_cov = property(lambda self: self.estimate("initial_cov"))
    loss = property(lambda self: self.estimate("loss"))
    error = property(lambda self: self.estimate("error"))

    def to_dict(self) -> dict:
        out = {"net": self.net.to_dict(), "networks": self.networks, "seed": self.seed,
               "groups": self.groups, "shard_size": self.shard_size,
               "settings": {k: (np.asarray(x).tolist() if isinstance(x, np.ndarray) else x)
                            for k, x in self.settings.items()},
               "final_loss": {"min": float(self.final_loss.min()), "median": float(np.median(self.final_loss)),
                              "max": float(self.final_loss.max())}}
        for name in _ESTIMATORS:
            if name == "error" and self.settings.get("y_test") is None:
                continue
            out[name] = self.estimate(name).to_dict()
        return out

    def __repr__(self) -> str:
        s = self.settings
        return (f"<TrainingMeasurement {self.net!r}, networks={self.networks}, eta={s['eta']:g}, "
                f"steps={s['steps']}{', newton' if s['newton'] else ''}>")


def default_training_shard_size(net: MLP, N: int, networks: int) -> int:
    """Networks per shard: weights, gradients and activations under :data:`engine.SHARD_BYTES`."""
    w = net.widths
    P = sum(w[l] * w[l - 1] + w[l] for l in range(1, len(w)))
    per = 8 * (4 * P + 4 * N * sum(w) + 4 * (N * w[-1]) ** 2)
    return max(1, min(networks, engine.SHARD_BYTES // per))


def train_ensemble(net: MLP, X_train, y_train, X_test, networks: int = 200, seed: int = 0, *,
                   eta: float | None = None, steps: int | None = None, newton: bool = False, y_test=None,
                   frozen_slopes: bool = False, groups: int = 20, shard_size: int | None = None,
                   progress: bool | None = None, checkpoint=None) -> TrainingMeasurement:
    r"""Train an ensemble of real networks and measure the trained outputs at test inputs
    (the twin of :func:`pdlt.theory.training.gradient_descent`; book Ch. 10).

    Network e starts from ``sample_parameters(net, seed, e, e+1)`` and takes ``steps`` full-batch
    steps of :math:`\theta \leftarrow \theta - \eta\lambda\,\partial\mathcal L/\partial\theta`,
    :math:`\mathcal L = \frac12\sum_{i,\alpha\in A}(z_{i;\alpha}-y_{i;\alpha})^2` (sum; module docstring).

    Parameters
    ----------
    X_train : (N_A, n_0); y_train : (N_A,) or (N_A, n_L) with n_L = the net's output width;
    X_test : (N_B, n_0). networks ≥ 2, seed ≥ 0, eta > 0, steps ≥ 0 (or ``newton=True``: one
    matrix-learning-rate step by default). y_test : optional (N_B,) / (N_B, n_L) targets.
    frozen_slopes : train the frozen-slope twin of a piecewise-linear network (module docstring).
    groups : jackknife groups (2..networks). shard_size : networks per shard (results do not depend on it).
    checkpoint : a directory; finished shards (group sums and per-network losses) are saved there
    atomically and skipped on a rerun with the same settings, so an interrupted run resumes exactly.

    Returns a :class:`TrainingMeasurement`. Raises :class:`TrainingDivergedError` on divergence.
    """
    eta, steps, newton = _check_run(net, eta, steps, newton)
    frozen = _check_frozen(net, frozen_slopes)
    XA, Y, one_d, XB = _check_data(net, X_train, y_train, X_test)
    if XB.shape[0] == 0:
        raise ValueError("X_test must hold at least one test input")
    E, seed, G = engine._check_ensemble(networks, seed, groups)
    yt = None
    if y_test is not None:
        from ..theory.bayes import _test_targets

        yt = _test_targets(y_test, XB.shape[0], Y.shape[1], one_d)
    Yt = None if yt is None else (yt[:, None] if one_d else yt)
    N = XA.shape[0] + XB.shape[0]
    shard = (default_training_shard_size(net, N, E) if shard_size is None
             else min(v.positive_int("shard_size", shard_size), E))
    NB, nL = XB.shape[0], Y.shape[1]
    shapes = {"z": (NB, nL), "zz": (NB, NB), "z0": (NB, nL), "zz0": (NB, NB), "loss": (steps + 1,)}
    if Yt is not None:
        shapes["err"] = (NB, nL)
    L = net.depth
    sums = {(L, k): np.zeros((G,) + s) for k, s in shapes.items()}
    starts = engine._group_starts(E, G)
    first_loss, last_loss = np.empty(E), np.empty(E)
    show = (E * steps >= 20000 and __import__("sys").stderr.isatty()) if progress is None else bool(progress)
    digest = engine._x_digest
    store = engine._checkpoint_store(
        checkpoint, net, XB, E, seed, shard, G, (L,), list(shapes), measurement="train_ensemble", eta=eta,
        steps=steps, newton=newton, frozen_slopes=frozen, X_train_sha256=digest(XA), y_train_sha256=digest(Y),
        y_test_sha256=None if Yt is None else digest(Yt))

    def accumulate(a, b, gid, segments):
        batch = _Batch(net, sample_parameters(net, seed, a, b), frozen)
        z, z0, loss = _train(batch, XA, Y, XB, eta, steps, newton, a)
        first_loss[a:b], last_loss[a:b] = loss[:, 0], loss[:, -1]
        feats = {"z": z, "zz": z @ z.mT / nL, "z0": z0, "zz0": z0 @ z0.mT / nL, "loss": loss}
        if Yt is not None:
            feats["err"] = (z - Yt) ** 2
        for k, F in feats.items():
            engine._add_by_group(sums[(L, k)], F, gid, segments)

    with engine._progress_bar(show, E, f"training {E} networks, {steps} steps") as bar, _blas_threads(1):
        engine._shard_loop(E, shard, starts, sums, store, bar, accumulate,
                           per_network={"first_loss": first_loss, "last_loss": last_loss})
    acc = engine.Accumulation(net, XB, E, seed, G, "training", "numpy", "cpu", shard, (L,),
                              tuple(_Name(k) for k in shapes), sums, np.diff(starts))
    settings = {"eta": eta, "steps": steps, "newton": newton, "frozen_slopes": frozen, "X_train": XA, "y_train": Y[:, 0] if one_d else Y,
                "X_test": XB, "y_test": yt}
    return TrainingMeasurement(acc, one_d, settings, first_loss, last_loss)
