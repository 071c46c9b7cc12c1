"""The nearly-kernel dynamics of pdlt.theory.finite_width against real training (book Ch. ∞.2).

Oracle: for one network, its own z(0), Ĥ, dĤ, dd_IĤ, dd_IIĤ at initialization (forward equations of
pdlt.empirical, equal to torch.func autodiff) are run through ``nearly_kernel_step`` and compared
with the network actually trained by ``train_networks``. The dynamics is the Taylor series of one
step in Δθ cut after the third order, so the error after a few steps must be O(η⁴): halving η
divides it by ≈ 16. A missing or wrong term in the z, Ĥ or dĤ update leaves an O(η²) or O(η³)
error (ratio 4 or 8). Then the ensemble method: the complex-step / ±√d-rule mean against brute-force
Gauss–Hermite quadrature over z(0) with real finite differences.
"""

import itertools

import numpy as np
import pytest

from pdlt import MLP
from pdlt.empirical.dntk import forward_ddntk, forward_dntk
from pdlt.empirical.ntk import forward_ntk, sample_parameters
from pdlt.empirical.training import train_networks
from pdlt.theory.finite_width import (finite_width_mean, nearly_kernel_couplings, nearly_kernel_mean,
                                      nearly_kernel_step)

RNG = np.random.default_rng(11)
XA = RNG.standard_normal((2, 3))
XB = RNG.standard_normal((1, 3))
Y = RNG.standard_normal((2, 2))


def _flat(T, k):
    """(n_L,)*k + (N,)*k per-network tensor → flattened (α, i) index, (M,)*k."""
    perm = [a for j in range(k) for a in (k + j, j)]
    T = T.transpose(perm)
    M = T.shape[0] * T.shape[1]
    return T.reshape((M,) * k)


def _predict(net, params, eta, steps, newton):
    X = np.vstack([XA, XB])
    L = net.depth
    z, H = (a[0] for a in forward_ntk(net, X, params, layers=[L])[L])
    dH = forward_dntk(net, X, params, layers=[L])[L][0]
    ddI, ddII = (a[0] for a in forward_ddntk(net, X, params, layers=[L])[L])
    MA = XA.shape[0] * net.n(L)
    zf = z.T.reshape(1, -1)
    Hf, dHf = _flat(H, 2)[None], _flat(dH, 3)[None]
    G = nearly_kernel_couplings(_flat(ddI, 4), _flat(ddII, 4), MA)
    y = Y.reshape(-1)
    for _ in range(steps):
        zf, Hf, dHf = nearly_kernel_step(zf, Hf, dHf, G, y, eta=eta, newton=newton)
    return zf[0, MA:]


@pytest.mark.parametrize("act", ["tanh", "gelu", "relu"])
@pytest.mark.parametrize("newton,steps", [(False, 3), (True, 2)])
def test_dynamics_error_is_fourth_order_in_eta(act, newton, steps):
    """ReLU: the a.e. derivatives (σ″ = σ‴ = 0) describe the network with frozen slopes
    (``frozen_slopes=True``), a polynomial in θ, and the dynamics must reproduce it to O(η⁴)."""
    net = MLP(3, 5, 3, act, C_b=0.2, C_W=1.5, lambda_b=0.7, lambda_W=1.3, output_dim=2)
    params = sample_parameters(net, 5, 0, 1)
    frozen = act == "relu"
    errs = []
    # ReLU GD: an O(η⁵) term is large here (ratios 8.9, 11.8 from η = 0.08; 13.7, 14.8 from 0.02)
    for eta in (0.02, 0.01, 0.005) if frozen else (0.08, 0.04, 0.02):
        true = train_networks(net, params, XA, Y, XB, eta=eta, steps=steps, newton=newton,
                              frozen_slopes=frozen).z_test[0].reshape(-1)
        z0 = train_networks(net, params, XA, Y, XB, eta=eta, steps=0).z_test[0].reshape(-1)
        pred = _predict(net, params, eta, steps, newton)
        assert np.max(np.abs(true - z0)) > 1e-3  # the outputs moved
        errs.append(np.max(np.abs(true - pred)))
    r1, r2 = errs[0] / errs[1], errs[1] / errs[2]
    assert 12 < r2 < 20 and 10 < r1 < 22, (errs, r1, r2)


def _brute_mean(Theta, dHz, ddI, ddII, K, y, eta, steps, newton, s=1e-6, order=6):
    """E_z[(z_B(T; s) − z_B(T; −s))/2s] by tensor-product Gauss–Hermite over z_A(0) ~ N(0, K)."""
    MA = K.shape[0]
    x, w = np.polynomial.hermite_e.hermegauss(order)
    w = w / w.sum()
    Lc = np.linalg.cholesky(K)
    Ki = np.linalg.inv(K)
    M = Theta.shape[0]
    acc = 0.0
    for idx in itertools.product(range(order), repeat=MA):
        zA = Lc @ x[list(idx)]
        wt = np.prod(w[list(idx)])
        out = []
        for sg in (s, -s):
            z = np.zeros((1, M))
            z[0, :MA] = zA
            H = Theta[None].copy()
            dH = sg * np.einsum("IJKu,u->IJK", dHz[..., :MA], Ki @ zA)[None]
            G = nearly_kernel_couplings(sg * ddI, sg * ddII, MA)
            for _ in range(steps):
                z, H, dH = nearly_kernel_step(z, H, dH, G, y, eta=eta, newton=newton)
            out.append(z[0, MA:])
        acc = acc + wt * (out[0] - out[1]) / (2 * s)
    return acc


@pytest.mark.parametrize("newton,steps,eta", [(False, 3, 0.3), (True, 2, 1.0)])
def test_complex_step_mean_equals_quadrature(newton, steps, eta):
    """Random symmetric-enough tensors: the ±√d rule with the complex step is the exact Gaussian mean."""
    rng = np.random.default_rng(2)
    M, MA = 4, 2
    Q = rng.standard_normal((M, M))
    Theta = Q @ Q.T / M + np.eye(M)
    R = rng.standard_normal((MA, MA))
    K = R @ R.T + 0.5 * np.eye(MA)
    dHz, ddI, ddII = (0.3 * rng.standard_normal((M,) * 4) for _ in range(3))
    y = rng.standard_normal(MA)
    got = nearly_kernel_mean(Theta, dHz, ddI, ddII, K, y, eta=eta, steps=steps, newton=newton)
    ref = _brute_mean(Theta, dHz, ddI, ddII, K, y, eta, steps, newton)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-8)


def test_moving_parts_odd_and_linear_in_y():
    """The dNTK part is linear in y (E[dĤ z] meets one −y), the ddNTK part odd (Γ ∝ y³, yK)."""
    net = MLP(3, 16, 2, "tanh", C_b=0.1, C_W=1.0, lambda_b=0.5, lambda_W=1.0, output_dim=1)
    y = Y[:, 0]
    a = finite_width_mean(net, XA, y, XB, eta=0.3, steps=5, parts=("dNTK", "ddNTK"))
    b = finite_width_mean(net, XA, 2 * y, XB, eta=0.3, steps=5, parts=("dNTK", "ddNTK"))
    c = finite_width_mean(net, XA, -y, XB, eta=0.3, steps=5, parts=("dNTK", "ddNTK"))
    np.testing.assert_allclose(b.parts["dNTK"], 2 * a.parts["dNTK"], rtol=1e-9)
    np.testing.assert_allclose(c.parts["ddNTK"], -a.parts["ddNTK"], rtol=1e-9)
    assert not np.allclose(b.parts["ddNTK"], 2 * a.parts["ddNTK"], rtol=1e-3)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_converged_gd_fits_training_inputs_at_every_order(act):
    """Gradient descent run to convergence fits the training set at finite width too: every 1/n part
    vanishes on the training inputs (a Newton step does not: the NTK moves during the step)."""
    net = MLP(3, 16, 2, act, C_b=0.1, C_W=1.0 if act == "tanh" else 2.0, lambda_b=0.5, lambda_W=1.0,
              output_dim=1)
    p = finite_width_mean(net, XA, Y[:, 0], XA, eta=0.5, steps=None)
    for k, c in p.parts.items():
        np.testing.assert_allclose(c, 0.0, atol=1e-7, err_msg=k)
    q = finite_width_mean(net, XA, Y[:, 0], XA, newton=True, parts=("dNTK", "ddNTK"))
    assert act == "relu" or np.max(np.abs(q.correction)) > 1e-3


def test_moving_parts_need_an_algorithm():
    net = MLP(3, 16, 2, "tanh", C_W=1.0, output_dim=1)
    with pytest.raises(ValueError, match="eta"):
        finite_width_mean(net, XA, Y[:, 0], XB, steps=None)
    with pytest.raises(ValueError, match="2/λ_max"):
        finite_width_mean(net, XA, Y[:, 0], XB, eta=1e3, steps=3)
    with pytest.raises(ValueError, match="singular.*duplicate"):
        finite_width_mean(net, np.vstack([XA, XA[:1]]), np.r_[Y[:, 0], Y[0, 0]], XB, newton=True)
    with pytest.raises(ValueError, match="y_train"):
        finite_width_mean(net, XA, Y, XB, newton=True)
    with pytest.raises(ValueError, match="steps"):
        finite_width_mean(net, XA, Y[:, 0], XB, newton=True, steps=0)


def _gradient_flow_dntk(net, XA, y, XB):
    """The dNTK part at t = ∞ in the gradient-flow limit, derived independently of the step dynamics.

    With ε⁰(t) = e^{−Θ̃t}ε(0) and δĤ_{Iβ}(t) = −∫_0^t (dĤ_{Iβα} + dĤ_{βIα})ε⁰_α(s)ds, integrating
    dz/dt = −Ĥε to t = ∞ gives z¹_δ = M_δ − Θ_{δA}Θ̃⁻¹M_A with M_I = −∫δĤ_{IA}(t)ε⁰(t)dt; the mean uses
    E[dĤ_{abc}ε_uε_v] = −C_{abcu}y_v − C_{abcv}y_u and ∫_0^∞dt e^{−λ_m t}∫_0^t e^{−λ_k s}ds = 1/(λ_m(λ_k+λ_m)).
    """
    import pdlt

    X = np.vstack([XA, XB])
    NA, A = XA.shape[0], slice(0, XA.shape[0])
    s = pdlt.theory(net, X, dntk=True).layer(net.depth)
    H, C = s.Theta, s.P + s.Q + np.einsum("acbd->abcd", s.Q)
    lam, V = np.linalg.eigh(H[A, A])
    Pk = np.einsum("ak,uk->kau", V, V)
    G = np.einsum("km,kau,mbv->aubv", 1.0 / (lam[None, :] * (lam[:, None] + lam[None, :])), Pk, Pk)
    M = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        Cs = C[i, A, A, :][:, :, A] + C[A, i, A, :][:, :, A]
        M[i] = -(np.einsum("aubv,bau,v->", G, Cs, y) + np.einsum("aubv,bav,u->", G, Cs, y))
    return M[NA:] - H[NA:, A] @ np.linalg.solve(H[A, A], M[A])


def test_dntk_part_has_the_gradient_flow_limit():
    """Small-step gradient descent to convergence → the analytic gradient-flow dNTK part, with an O(η) gap."""
    from pdlt.theory.training import max_learning_rate

    net = MLP(3, 32, 3, "tanh", C_b=0.1, C_W=1.0, lambda_b=0.5, lambda_W=1.0, output_dim=1)
    y = Y[:, 0]
    exact = _gradient_flow_dntk(net, XA, y, XB)
    eta0 = max_learning_rate(net, XA)
    gaps = [np.max(np.abs(finite_width_mean(net, XA, y, XB, eta=f * eta0, steps=None, parts=("dNTK",))
                          .parts["dNTK"] - exact)) for f in (0.02, 0.01)]
    assert gaps[1] < 5e-3 * np.max(np.abs(exact)) and 1.7 < gaps[0] / gaps[1] < 2.3, (gaps, exact)
