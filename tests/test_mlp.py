"""pdlt.MLP: one test per validation rule, immutability, ``replace``, defaults; and the input checks of
``pdlt.theory.theory``.  Every error is a ValueError whose message names the offending parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pdlt
from pdlt import MLP
from pdlt.activations import LeakyReLU, ReLU, Tanh
from pdlt.theory import theory


def _raises(needle, **kw):
    base = dict(input_dim=3, width=5, depth=2)
    base.update(kw)
    with pytest.raises(ValueError, match=needle):
        MLP(**base)


# ---------------------------------------------------------------------------------------------
# one test per validation rule


@pytest.mark.parametrize("w", [0, -3])
def test_width_below_one(w):
    _raises(r"^width must be an integer >= 1", width=w)


@pytest.mark.parametrize("d", [0, -1])
def test_depth_below_one(d):
    _raises(r"^depth must be an integer >= 1", depth=d)


def test_input_dim_below_one():
    _raises(r"^input_dim must be an integer >= 1", input_dim=0)


def test_output_dim_below_one():
    _raises(r"^output_dim must be an integer >= 1", output_dim=0)


@pytest.mark.parametrize("w", [2.5, 4.0, "8", True, None, np.float64(3.0)])
def test_width_not_an_integer(w):
    if w is None:
        _raises("give input_dim, width and depth", width=w)
    else:
        _raises(r"^width must be an integer", width=w)


def test_numpy_integers_accepted():
    net = MLP(np.int64(3), np.int32(5), np.int16(2))
    assert net.widths == (3, 5, 5) and all(type(n) is int for n in net.widths)


@pytest.mark.parametrize("cw", [0.0, -1.0, 0])
def test_C_W_not_positive(cw):
    _raises(r"^C_W must be > 0", C_W=cw)


@pytest.mark.parametrize("cb", [-1e-12, -2.0])
def test_C_b_negative(cb):
    _raises(r"^C_b must be >= 0", C_b=cb)


@pytest.mark.parametrize("name", ["C_W", "C_b", "lambda_W", "lambda_b"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_hyperparameters_not_finite(name, bad):
    _raises(rf"^{name} must be finite", **{name: bad})


@pytest.mark.parametrize("name", ["C_W", "C_b", "lambda_W", "lambda_b"])
def test_hyperparameters_not_numbers(name):
    _raises(rf"^{name} must be a real number", **{name: "1.0"})
    _raises(rf"^{name} must be a real number", **{name: True})


@pytest.mark.parametrize("name", ["lambda_W", "lambda_b"])
def test_learning_rates_negative(name):
    _raises(rf"^{name} must be >= 0", **{name: -0.1})


@pytest.mark.parametrize("name", ["C_W", "C_b", "lambda_W", "lambda_b"])
@pytest.mark.parametrize("values", [[1.0], [1.0, 1.0, 1.0], []])
def test_per_layer_list_of_wrong_length(name, values):
    _raises(rf"^{name} has {len(values)} entries but the network has depth 2", **{name: values})


def test_per_layer_entries_validated_and_named_by_layer():
    _raises(r"^C_W\[2\] must be > 0", C_W=[1.0, 0.0])
    _raises(r"^C_b\[1\] must be >= 0", C_b=(-1.0, 0.0))
    _raises(r"^lambda_W\[2\] must be finite", lambda_W=np.array([1.0, np.nan]))


def test_unknown_activation():
    _raises(r"unknown activation 'relux'", activation="relux")
    _raises(r"activation must be a registered name", activation=3.0)


def test_bad_activation_params():
    _raises(r"activation 'leaky_relu' has no parameter\(s\) \['b'\]", activation="leaky_relu",
            activation_params={"b": 0.1})
    _raises(r"^a must be a finite real number", activation="leaky_relu", activation_params={"a": math.nan})
    _raises(r"parameters can only be given with a registered name", activation=ReLU(),
            activation_params={"a": 0.1})


@pytest.mark.parametrize("widths", [[3], [], [7]])
def test_widths_too_short(widths):
    with pytest.raises(ValueError, match=r"^widths must list \[n0, n1, \.\.\., nL\]"):
        MLP(widths=widths)


@pytest.mark.parametrize("widths, i", [([3, 0, 2], 1), ([0, 4], 0), ([3, 4, -1], 2), ([3, 4.5, 2], 1)])
def test_widths_containing_bad_entries(widths, i):
    with pytest.raises(ValueError, match=rf"^widths\[{i}\] must be an integer >= 1"):
        MLP(widths=widths)


def test_missing_shape():
    with pytest.raises(ValueError, match="give input_dim, width and depth, or widths"):
        MLP(input_dim=3, width=5)


# ---------------------------------------------------------------------------------------------
# theory(net, X) input checks

NET = MLP(3, 4, 2, activation="tanh", C_b=0.0, C_W=1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_theory_rejects_non_finite_inputs(bad):
    X = np.ones((2, 3))
    X[1, 2] = bad
    with pytest.raises(ValueError, match=r"^X contains NaN or inf"):
        theory(NET, X)


def test_theory_rejects_one_dimensional_input():
    with pytest.raises(ValueError, match=r"^X must have shape \(N, n0\).*1-D array of length 3"):
        theory(NET, np.ones(3))


def test_theory_rejects_wrong_number_of_columns():
    with pytest.raises(ValueError, match=r"^X has 4 columns but the network's input_dim is 3"):
        theory(NET, np.ones((2, 4)))


@pytest.mark.parametrize("X", [np.ones((0, 3)), np.ones((2, 3, 1)), np.float64(1.0)])
def test_theory_rejects_other_shapes(X):
    with pytest.raises(ValueError, match=r"^X must have shape \(N, n0\)"):
        theory(NET, X)


def test_theory_rejects_non_numeric_input():
    with pytest.raises(ValueError, match=r"^X must be a numeric array"):
        theory(NET, [["a", "b", "c"]])


def test_theory_rejects_all_zero_input_without_bias():
    X = np.array([[1.0, 0.5, -0.2], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"X contains an all-zero input and C_b = 0"):
        theory(NET, X)
    # with a bias variance the zero input is fine
    th = theory(NET.replace(C_b=0.1), X)
    assert th.layer(1).K[1, 1] == pytest.approx(0.1)


def test_theory_rejects_non_networks():
    with pytest.raises(ValueError, match=r"^net must be a pdlt.MLP"):
        theory({"widths": [3, 4, 4]}, np.ones((1, 3)))


def test_theory_callable_module_and_valid_call():
    X = np.array([[1.0, 0.0, 0.5]])
    th = pdlt.theory(NET, X)        # the package is callable
    assert th.layer(1).K[0, 0] == pytest.approx(1.25 / 3)     # C_b + C_W |x|²/n0
    with pytest.raises(ValueError, match=r"layer must be an integer in 1\.\.2"):
        th.layer(3)


# ---------------------------------------------------------------------------------------------
# immutability, replace, defaults


def test_defaults():
    net = MLP(3, 5, 4)
    assert net.widths == (3, 5, 5, 5, 5) and net.depth == 4 and net.input_dim == 3
    assert isinstance(net.activation, ReLU)
    assert net.C_b == (0.0,) * 4 and net.C_W == (2.0,) * 4
    assert MLP(3, 5, 2, output_dim=1).widths == (3, 5, 1)
    assert MLP(widths=[2, 7, 1]).widths == (2, 7, 1)


def test_learning_rates_default_to_variances():
    net = MLP(3, 5, 3, C_b=[0.1, 0.2, 0.3], C_W=1.5)
    assert net.lambda_b == net.C_b == (0.1, 0.2, 0.3)
    assert net.lambda_W == net.C_W == (1.5, 1.5, 1.5)
    net2 = MLP(3, 5, 3, C_b=0.1, C_W=1.5, lambda_b=0.0, lambda_W=[1.0, 2.0, 3.0])
    assert net2.lambda_b == (0.0,) * 3 and net2.lambda_W == (1.0, 2.0, 3.0)


def test_immutable():
    net = MLP(3, 5, 2, activation="tanh")
    for attr, value in (("widths", (3, 7, 7)), ("C_W", 1.0), ("activation", ReLU()), ("depth", 3), ("new", 1)):
        with pytest.raises(AttributeError):
            setattr(net, attr, value)
    with pytest.raises(TypeError):
        net.C_b[0] = 1.0                     # per-layer values are tuples
    assert net.widths == (3, 5, 5) and isinstance(net.activation, Tanh)
    assert hash(net) == hash(MLP(3, 5, 2, activation="tanh"))
    assert net == MLP(3, 5, 2, activation="tanh") and net != MLP(3, 5, 2, activation="relu")


def test_replace_changes_only_what_is_asked():
    net = MLP(3, 5, 2, activation="leaky_relu", activation_params={"a": 0.2}, C_b=0.1, C_W=[1.0, 2.0])
    new = net.replace(C_W=[1.5, 1.5], activation=Tanh())
    assert new.C_W == (1.5, 1.5) and isinstance(new.activation, Tanh)
    assert new.widths == net.widths and new.C_b == net.C_b
    assert net.C_W == (1.0, 2.0) and net.activation == LeakyReLU(0.2)   # the original is untouched
    assert new.replace() == new and new.replace() is not new
    with pytest.raises(ValueError, match=r"^C_W must be > 0"):
        net.replace(C_W=0.0)
    with pytest.raises(ValueError, match=r"C_W has 3 entries"):
        net.replace(C_W=[1.0, 1.0, 1.0])


def test_replace_shape():
    """input_dim/width/depth/output_dim rebuild the widths (they used to be silently ignored)."""
    net = MLP(3, 5, 2, C_b=0.5, C_W=1.5)
    assert net.replace(depth=4).widths == (3, 5, 5, 5, 5)
    assert net.replace(depth=4).C_W == (1.5,) * 4 and net.replace(depth=4).lambda_b == (0.5,) * 4
    assert net.replace(width=8).widths == (3, 8, 8)
    assert net.replace(input_dim=1, output_dim=2).widths == (1, 5, 2)
    assert net.replace(widths=[3, 4, 4, 1]).widths == (3, 4, 4, 1)
    assert MLP(3, 5, 3, output_dim=1).replace(width=7).widths == (3, 7, 7, 1)
    with pytest.raises(ValueError, match=r"^depth must be an integer >= 1"):
        net.replace(depth=0)
    with pytest.raises(ValueError, match="not both"):
        net.replace(widths=[3, 4, 4], depth=2)
    with pytest.raises(ValueError, match=r"hidden widths \[4, 6\] differ"):
        MLP(widths=[2, 4, 6, 1]).replace(depth=2)
    # per-layer values that differ cannot follow a change of depth: the usual length error
    with pytest.raises(ValueError, match=r"C_W has 2 entries but the network has depth 3"):
        MLP(3, 5, 2, C_W=[1.0, 2.0]).replace(depth=3)


def test_to_dict_round_trip():
    net = MLP(3, 5, 2, activation="leaky_relu", activation_params={"a": 0.2}, C_b=0.1)
    d = net.to_dict()
    back = MLP(widths=d["widths"], activation=d["activation"], activation_params=d["activation_params"],
               C_b=d["C_b"], C_W=d["C_W"], lambda_b=d["lambda_b"], lambda_W=d["lambda_W"])
    assert back == net
    assert "leaky_relu" in repr(net) or "LeakyReLU" in repr(net)


def test_layer_accessors():
    net = MLP(3, 5, 3, output_dim=2, C_b=[0.0, 0.1, 0.2])
    assert [net.n(l) for l in range(4)] == [3, 5, 5, 2]
    assert net.hyper(2) == (0.1, 2.0)
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.3"):
        net.n(4)
    for bad in (0, 4, 1.0, True):
        with pytest.raises(ValueError, match=r"layer must be an integer in 1\.\.3"):
            net.check_layer(bad)


def test_replace_moves_defaulted_learning_rates_with_the_variances():
    net = MLP(3, 5, 2, "relu", C_b=0.1, C_W=2.0)
    moved = net.replace(C_W=1.5, C_b=0.2)
    assert moved.lambda_W == (1.5, 1.5) and moved.lambda_b == (0.2, 0.2)
    fixed = MLP(3, 5, 2, "relu", C_b=0.1, C_W=2.0, lambda_W=0.7).replace(C_W=1.5)
    assert fixed.lambda_W == (0.7, 0.7) and fixed.lambda_b == (0.1, 0.1)


def test_pickle_round_trip_keeps_defaulted_learning_rates():
    import pickle

    net = MLP(widths=[3, 5, 2], activation="tanh", C_b=[0.1, 0.2], C_W=1.5, lambda_W=0.7)
    back = pickle.loads(pickle.dumps(net))
    assert back == net and back._lambda_given == net._lambda_given
    assert back.replace(C_b=0.5).lambda_b == net.replace(C_b=0.5).lambda_b == (0.5, 0.5)
