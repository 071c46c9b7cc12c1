"""pdlt.torch.critical_init_: critical variances for PyTorch MLPs (book Ch. 5), signal propagation, errors."""

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pdlt.torch as pt  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def crit():
    """The criticality solver; tests that need it skip until pdlt.theory.criticality exists."""
    return pytest.importorskip("pdlt.theory.criticality").criticality


def mlp(act, widths, *, bias=True):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(act() if isinstance(act, type) else act)
    return nn.Sequential(*layers)


def assert_variance(t, expected, sigmas=5.0):
    """Sample variance of a zero-mean Gaussian tensor equals ``expected`` within ``sigmas`` stderr."""
    x = t.detach().double().reshape(-1)
    var = float((x ** 2).mean())  # the mean is known to be 0
    stderr = expected * math.sqrt(2.0 / x.numel())
    assert abs(var - expected) < sigmas * stderr, (var, expected, stderr)
    assert abs(float(x.mean())) < sigmas * math.sqrt(expected / x.numel())


def test_module_is_pdlt_torch_and_sees_real_torch():
    assert pt.__name__ == "pdlt.torch"
    assert pt.torch is torch and pt.nn is nn


@pytest.mark.parametrize("act, C_W", [(nn.ReLU, 2.0), (nn.Tanh, 1.0), (nn.Identity, 1.0)])
def test_weight_variance_is_C_W_over_fan_in(crit, act, C_W):
    model = mlp(act, [700, 1200, 900, 3])
    rep = pt.critical_init_(model, generator=torch.Generator().manual_seed(0))
    assert rep.C_W == pytest.approx(C_W, rel=1e-9) and rep.C_b == pytest.approx(0.0, abs=1e-12)
    for lin, fan_in in zip([model[0], model[2], model[4]], [700, 1200, 900]):
        assert_variance(lin.weight, C_W / fan_in)
        assert torch.all(lin.bias == 0)  # C_b = 0: biases vanish
    assert [l.fan_in for l in rep.layers] == [700, 1200, 900]
    assert rep.layers[-1].C_W == pytest.approx(C_W)  # the output layer too


def test_leaky_relu_slope_is_read(crit):
    model = mlp(nn.LeakyReLU(0.2), [500, 800, 1])
    rep = pt.critical_init_(model, generator=torch.Generator().manual_seed(1))
    assert rep.activation.params == {"a": 0.2}
    assert rep.universality_class == "scale-invariant"
    assert rep.C_W == pytest.approx(2.0 / (1.0 + 0.2 ** 2), rel=1e-6)
    assert_variance(model[2].weight, rep.C_W / 800)


def test_gelu_half_stable(crit):
    model = mlp(nn.GELU, [600, 1000, 1000, 2])
    rep = pt.critical_init_(model, generator=torch.Generator().manual_seed(2))
    ref = crit("gelu")
    assert rep.universality_class == "half-stable" == ref.universality_class
    assert (rep.C_b, rep.C_W) == pytest.approx((ref.C_b, ref.C_W), rel=1e-12)
    # K* = 3.5615528, §5.3.4; checked independently with mpmath quadrature (30 digits)
    assert (rep.C_b, rep.C_W) == pytest.approx((0.1729223908, 1.9830582574), rel=1e-8)
    assert_variance(model[2].weight, rep.C_W / 1000)
    assert_variance(torch.cat([model[0].bias, model[2].bias]), rep.C_b)


def test_silu_is_swish(crit):
    rep = pt.critical_init_(mlp(nn.SiLU, [8, 16, 1]))
    assert rep.activation.name == "swish" and rep.universality_class == "half-stable"


def test_unknown_module_goes_through_the_solver(crit):
    class MyTanh(nn.Module):
        def forward(self, z):
            return torch.tanh(z)

    rep = pt.critical_init_(mlp(MyTanh, [8, 16, 16, 1]))
    assert rep.universality_class == "K*=0"
    assert rep.C_W == pytest.approx(1.0, rel=1e-4) and rep.C_b == pytest.approx(0.0, abs=1e-6)


def test_gelu_tanh_approximation_warns(crit):
    with pytest.warns(UserWarning, match="tanh approximation"):
        rep = pt.critical_init_(mlp(nn.GELU(approximate="tanh"), [8, 16, 1]))
    assert rep.universality_class == "half-stable"
    assert rep.C_W == pytest.approx(crit("gelu").C_W, rel=2e-2)


def test_activation_override_and_report(crit):
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Sequential(nn.Tanh(), nn.Linear(5, 2)), nn.Sigmoid())
    g = torch.Generator().manual_seed(3)
    rep = pt.critical_init_(model, activation="tanh", generator=g)
    d = rep.to_dict()
    assert d["activation"] == "tanh" and [l["module"] for l in d["layers"]] == ["1", "2.1"]
    text = str(rep)
    for part in ("tanh", "K*=0", "fan_in", "C_W", "6→5", "5→2", "note"):
        assert part in text
    # a generator makes the draw reproducible
    w = model[1].weight.clone()
    pt.critical_init_(model, activation="tanh", generator=torch.Generator().manual_seed(3))
    assert torch.equal(model[1].weight, w)


def _mean_square_profile(model, x):
    out = []
    with torch.no_grad():
        for mod in model:
            x = mod(x)
            if isinstance(mod, nn.Linear):
                out.append(float((x ** 2).mean()))
    return np.array(out)


def test_deep_critical_relu_keeps_the_signal(crit):
    """Depth 30: the critical ReLU net keeps ⟨z²⟩ flat (§5.2); PyTorch's default init makes it vanish."""
    width, depth = 1024, 30
    g = torch.Generator().manual_seed(4)
    x = torch.randn(32, width, generator=g)
    critical = default = 0.0
    for _ in range(4):
        model = mlp(nn.ReLU, [width] * (depth + 1))
        default = default + _mean_square_profile(model, x)  # kaiming_uniform(a=√5): C_W = 1/3
        pt.critical_init_(model, generator=g)
        critical = critical + _mean_square_profile(model, x)
    ratio = critical / critical[0]
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    assert default[-1] / default[0] < 1e-2
    # off criticality (C_W = 2.5 instead of 2) the signal grows like (5/4)^ℓ
    model = mlp(nn.ReLU, [width] * (depth + 1))
    pt.critical_init_(model, generator=g)
    with torch.no_grad():
        for mod in model:
            if isinstance(mod, nn.Linear):
                mod.weight.mul_(math.sqrt(2.5 / 2.0))
    off = _mean_square_profile(model, x)
    assert off[-1] / off[0] > 50.0


@pytest.mark.parametrize("model, match", [
    (nn.Linear(4, 4), "nn.Sequential"),
    (nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Linear(2, 1)), "convolution"),
    (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)), "normalization"),
    (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 1)), "normalization"),
    (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.ReLU(), nn.Linear(4, 1)), "dropout"),
    (nn.Sequential(nn.ReLU(), nn.Tanh()), "no nn.Linear"),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)), "mixed activations"),
    (nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1)), "mixed activations"),
    (nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=-1), nn.Linear(4, 1)), "non-elementwise"),
])
def test_bad_architectures_raise(model, match):
    with pytest.raises(ValueError, match=match):
        pt.critical_init_(model)


def test_non_elementwise_custom_module_raises():
    class Normalize(nn.Module):
        def forward(self, z):
            return z / z.norm(dim=-1, keepdim=True)

    with pytest.raises(ValueError, match="elementwise"):
        pt.critical_init_(nn.Sequential(nn.Linear(4, 4), Normalize(), nn.Linear(4, 1)))


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Softplus])
def test_no_criticality_raises(crit, act):
    model = mlp(act, [4, 8, 1])
    before = model[0].weight.clone()
    with pytest.raises(ValueError, match="no criticality"):
        pt.critical_init_(model)
    assert torch.equal(model[0].weight, before)  # untouched


def test_missing_bias_when_C_b_is_needed(crit):
    with pytest.raises(ValueError, match="no bias"):
        pt.critical_init_(mlp(nn.GELU, [4, 8, 1], bias=False))
    rep = pt.critical_init_(mlp(nn.ReLU, [4, 8, 1], bias=False))  # C_b = 0: fine
    assert not rep.layers[0].bias and "no bias" in str(rep)


def test_no_warning_for_plain_modules(crit):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pt.critical_init_(mlp(nn.ReLU, [4, 8, 1]))


# --- param_groups: the learning-rate tensor (book Ch. 7, 9) --------------------------------------


def _ntk_and_step(model, groups, X, Y, eta):
    """Empirical NTK Θ̂ (torch.func, λ-weighted Jacobian contraction) and Δz after one SGD step at η."""
    from torch.func import functional_call, jacrev

    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    lam = {}
    for g in groups:
        name = g["name"]
        lam[name] = g["lambda"] / g["fan_in"] if g["kind"] == "weight" else g["lambda"]

    def f(p):
        return functional_call(model, p, (X,))

    z0 = f(params)
    jac = jacrev(f)(params)                    # name -> (N, n_L, *shape)
    N, nL = z0.shape
    ntk = sum(lam[k] * j.reshape(N * nL, -1) @ j.reshape(N * nL, -1).T for k, j in jac.items())
    eps = (z0 - Y).reshape(-1)                 # ε = ∂L/∂z for L = ½Σ(z − y)²
    opt = torch.optim.SGD([{**g, "lr": g["lr"] * eta} for g in groups])
    opt.zero_grad()
    loss = 0.5 * ((model(X) - Y) ** 2).sum()
    loss.backward()
    opt.step()
    with torch.no_grad():
        dz = (model(X) - z0).reshape(-1)
        for k, v in model.named_parameters():  # restore θ for the next η
            v.copy_(params[k])
    return ntk, eps, dz


@pytest.mark.parametrize("act, scaling", [(nn.Tanh, None), (nn.ReLU, "equivalence"),
                                          (nn.GELU, "equivalence")])
def test_param_groups_sgd_step_is_minus_eta_ntk_eps(act, scaling):
    torch.manual_seed(0)
    model = mlp(act, [3, 7, 6, 2]).double()
    pt.critical_init_(model)
    if scaling is None:
        groups = pt.param_groups(model, lambda_b=[0.5, 1.0, 2.0], lambda_W=[1.5, 0.7, 1.0])
    else:
        groups = pt.param_groups(model, 1.0, 2.0, scaling=scaling)
    X = torch.randn(4, 3, dtype=torch.float64)
    Y = torch.randn(4, 2, dtype=torch.float64)
    errs = []
    for eta in (1e-3, 1e-4):
        ntk, eps, dz = _ntk_and_step(model, groups, X, Y, eta)
        pred = -(ntk @ eps)
        errs.append(float((dz / eta - pred).norm() / pred.norm()))
    # Δz = −ηΘ̂ε + O(η²): the relative error of Δz/η falls ∝ η
    assert errs[1] < 3e-3
    assert errs[0] / errs[1] == pytest.approx(10.0, rel=0.1)
    # and the NTK is symmetric positive semi-definite
    assert torch.allclose(ntk, ntk.T)


def test_param_groups_lr_layout():
    model = mlp(nn.Tanh, [4, 8, 8, 3])
    model[2].bias = None
    groups = pt.param_groups(model, lambda_b=[1.0, 2.0, 3.0], lambda_W=2.0, lr=0.1)
    byname = {g["name"]: g for g in groups}
    assert list(byname) == ["0.weight", "0.bias", "2.weight", "4.weight", "4.bias"]
    assert byname["0.weight"]["lr"] == pytest.approx(0.1 * 2.0 / 4)
    assert byname["2.weight"]["lr"] == pytest.approx(0.1 * 2.0 / 8)
    assert byname["4.bias"]["lr"] == pytest.approx(0.1 * 3.0)
    assert byname["4.weight"]["layer"] == 3 and byname["4.weight"]["fan_in"] == 8
    opt = torch.optim.SGD(groups)  # every group carries its own lr
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in groups]


def test_param_groups_equivalence_matches_theory():
    lr_theory = pytest.importorskip("pdlt.theory.learning_rates")
    L = 5
    model = mlp(nn.Tanh, [3] + [6] * (L - 1) + [1])
    groups = pt.param_groups(model, 1.0, 2.0, scaling="equivalence")
    lb, lw = lr_theory.equivalence_principle("tanh", L, 1.0, 2.0)
    assert [g["lambda"] for g in groups if g["kind"] == "bias"] == pytest.approx(list(lb))
    assert [g["lambda"] for g in groups if g["kind"] == "weight"] == pytest.approx(list(lw))
    relu = mlp(nn.ReLU, [3, 6, 6, 6, 1])
    assert {g["lambda"] for g in pt.param_groups(relu, 1.0, 1.0, scaling="equivalence")} == {0.25}


@pytest.mark.parametrize("kwargs, words", [
    ({"lambda_b": [1.0, 2.0]}, "3 Linear layers"),
    ({"lambda_W": -1.0}, ">= 0"),
    ({"lr": 0.0}, "lr must be"),
    ({"scaling": "muP"}, "scaling must be"),
    ({"scaling": "equivalence", "lambda_b": [1.0, 1.0, 1.0]}, "one number each"),
])
def test_param_groups_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        pt.param_groups(mlp(nn.Tanh, [2, 4, 4, 1]), **kwargs)
    with pytest.raises(ValueError, match="no criticality"):
        pt.param_groups(mlp(nn.Sigmoid, [2, 4, 4, 1]), scaling="equivalence")
    with pytest.raises(ValueError, match="outside the book"):
        pt.param_groups(nn.Sequential(nn.Linear(2, 3), nn.PReLU(), nn.Linear(3, 1)))
