"""The ``pdlt`` command line: help, JSON output, a tiny comparison, one-line errors with exit code 2."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pdlt.cli import app

runner = CliRunner()
TINY = ["--depth", "3", "--width", "8", "--input-dim", "3", "--inputs", "random:2"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", [[], ["theory"], ["measure"], ["compare"]])
def test_help(command):
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if command:
        for option in ("--activation", "--widths", "--C-W", "--inputs", "--layers", "--json"):
            assert option in result.output


def test_theory_json_shapes():
    result = run("theory", *TINY, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert doc["net"]["widths"] == [3, 8, 8, 8]
    assert [entry["layer"] for entry in doc["layers"]] == [1, 2, 3]
    for entry in doc["layers"]:
        assert np.shape(entry["K"]) == (2, 2)
        assert np.shape(entry["G1"]) == (2, 2)
        assert np.shape(entry["V"]) == (2, 2, 2, 2)
        assert np.shape(entry["V_normalized"]) == (2,)
    assert doc["layers"][0]["n_prev"] == 3 and doc["layers"][1]["n_prev"] == 8


def test_theory_layers_widths_and_activation_params():
    result = run("theory", "--widths", "2,5,5,1", "--activation", "leaky_relu", "--activation-param",
                 "a=0.2", "--C-W", "1.5,1.5,1.5", "--inputs", "random:1", "--layers", "2-3", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["net"]["activation_params"] == {"a": 0.2}
    assert [entry["layer"] for entry in doc["layers"]] == [2, 3]


def test_theory_table():
    result = run("theory", *TINY)
    assert result.exit_code == 0, result.output
    assert "V/(n K²)" in result.output


def test_inputs_from_files(tmp_path):
    X = np.random.default_rng(3).standard_normal((2, 5))
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    docs = []
    for name in ("x.npy", "x.csv"):
        result = run("theory", "--depth", "2", "--inputs", tmp_path / name, "--json")
        assert result.exit_code == 0, result.output
        docs.append(json.loads(result.stdout))
    assert docs[0]["net"]["widths"][0] == 5  # n0 from the file's columns
    np.testing.assert_allclose(docs[0]["X"], X)
    np.testing.assert_allclose(docs[1]["layers"][1]["K"], docs[0]["layers"][1]["K"], rtol=1e-12)


def test_compare_tiny_runs():
    pytest.importorskip("pdlt.empirical")
    result = run("compare", *TINY, "--networks", "400")
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert "judged checks pass" in last


def test_compare_json():
    pytest.importorskip("pdlt.empirical")
    result = run("compare", *TINY, "--networks", "400", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    checks = doc["checks"]
    assert checks["total"] == 2 * 3  # one G row and one V row per layer
    assert 0 <= checks["passed"] <= checks["judged"] <= checks["total"]
    assert doc["threshold"] >= 4.0
    rows = {(r["name"], r["layer"]): r for r in doc["rows"]}
    assert np.shape(rows[("G", 3)]["theory"]) == (2, 2) and np.shape(rows[("V", 3)]["theory"]) == (2, 2, 2, 2)
    assert np.shape(rows[("G", 3)]["measured"]["mean"]) == (2, 2)


def test_measure_json():
    pytest.importorskip("pdlt.empirical")
    result = run("measure", *TINY, "--networks", "100", "--layers", "3", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [entry["layer"] for entry in doc["layers"]] == [3]
    assert np.shape(doc["layers"][0]["V"]["mean"]) == (2, 2, 2, 2)


def test_measure_on_a_local_dask_cluster_matches_the_serial_run():
    pytest.importorskip("pdlt.empirical")
    pytest.importorskip("distributed")
    args = ("measure", *TINY, "--networks", "200", "--layers", "2,3", "--json")
    serial = run(*args)
    cluster = run(*args, "--scheduler", "local")
    assert cluster.exit_code == 0, cluster.output
    assert json.loads(cluster.stdout) == json.loads(serial.stdout)  # same bits, so same JSON


@pytest.mark.parametrize("args, words", [
    (["--activation", "nope"], "unknown activation"),
    (["--width", "-3"], "width"),
    (["--C-W", "0"], "C_W"),
    (["--C-W", "abc"], "--C-W"),
    (["--activation", "leaky_relu", "--activation-param", "b=1"], "no parameter 'b'"),
    (["--activation", "leaky_relu", "--activation-param", "a=__import__('os')"], "must be a float"),
    (["--activation-param", "a"], "NAME=VALUE"),
    (["--inputs", "no/such/file.npy"], "not found"),
    (["--inputs", "random:zero"], "random:N"),
    (["--layers", "7"], "layer"),
    (["--activation", "relu", "--C-W", "8", "--depth", "400"], "overflow"),
])
@pytest.mark.parametrize("command", ["theory", "compare"])
def test_bad_input_is_one_red_line_with_exit_code_2(command, args, words):
    result = run(command, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert words in lines[0]
    assert result.stdout == ""


def test_bad_measure_options():
    pytest.importorskip("pdlt.empirical")
    for args in (["--method", "exact"], ["--backend", "jax"], ["--networks", "1"]):
        result = run("measure", *TINY, *args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and "Traceback" not in result.output


# --- pdlt criticality / pdlt tune (book Ch. 5, App. A) -----------------------------------------


@pytest.fixture
def crit_engine():
    """Commands built on the criticality engine skip until pdlt.theory.criticality exists."""
    return pytest.importorskip("pdlt.theory.criticality")


def flat(text):
    return " ".join(text.split())


@pytest.mark.parametrize("command, options", [
    (["criticality"], ["ACT", "--activation-param", "--json"]),
    (["tune"], ["--activation", "--width", "--n-out", "--xi", "--depth", "--activation-param", "--json"]),
])
def test_criticality_and_tune_help(command, options):
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    for option in options:
        assert option in result.output


def test_criticality_json(crit_engine):
    result = run("criticality", "relu", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # one JSON document, nothing else
    assert doc == json.loads(json.dumps(crit_engine.criticality("relu").to_dict(), default=str))
    assert doc["universality_class"] == "scale-invariant"
    assert doc["C_W"] == pytest.approx(2.0) and doc["C_b"] == pytest.approx(0.0, abs=1e-12)


def test_criticality_activation_param_and_table(crit_engine):
    result = run("criticality", "leaky_relu", "--activation-param", "a=0.2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["C_W"] == pytest.approx(2.0 / 1.04, rel=1e-6)
    result = run("criticality", "tanh")
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "Criticality of tanh: K*=0" in out and "asymptotics" in out


def test_criticality_sigmoid_has_none(crit_engine):
    result = run("criticality", "sigmoid")
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "Criticality of sigmoid: none" in out and "no criticality" in out
    result = run("criticality", "sigmoid", "--json")
    assert json.loads(result.stdout)["universality_class"] == "none"


def test_tune_json(crit_engine):
    aspect = pytest.importorskip("pdlt.theory.aspect_ratio")
    result = run("tune", "--activation", "tanh", "--width", "128", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["universality_class"] == "K*=0"
    assert doc["C_W"] == pytest.approx(1.0) and doc["C_b"] == pytest.approx(0.0, abs=1e-12)
    assert doc["width"] == 128 and doc["n_out"] == 1 and doc["xi"] == 0.0
    assert doc["recommended_max_depth"] == aspect.recommended_max_depth("tanh", 128, n_L=1, xi=0.0)
    assert doc["optimal_aspect_ratio"] == pytest.approx(aspect.optimal_aspect_ratio(2.0 / 3.0, 1))  # ν = 2/3
    lr = doc["learning_rate"]  # without --depth: the equivalence principle at the recommended depth
    assert lr["implemented"] is True and lr["depth"] == doc["recommended_max_depth"]
    assert lr["depth_source"] == "recommended max depth" and len(lr["lambda_b"]) == lr["depth"]
    assert "param_groups(model, scaling='equivalence'" in lr["pytorch"]


def test_tune_residual_scales_the_critical_point(crit_engine):
    aspect = pytest.importorskip("pdlt.theory.aspect_ratio")
    result = run("tune", "--activation", "relu", "--width", "512", "--xi", "0.5", "--n-out", "3", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["network"] == "residual"
    assert doc["C_W"] == pytest.approx(0.75 * 2.0) and doc["C_b"] == pytest.approx(0.0, abs=1e-12)  # (1 − ξ²)·2
    assert doc["recommended_max_depth"] == aspect.recommended_max_depth("relu", 512, n_L=3, xi=0.5)
    result = run("tune", "--activation", "relu", "--width", "512", "--xi", "1.5")
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output


def test_tune_table(crit_engine):
    pytest.importorskip("pdlt.theory.aspect_ratio")
    result = run("tune", "--activation", "relu", "--width", "256", "--n-out", "10")
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    for words in ("scale-invariant", "C_b, C_W", "max depth", "learning rates", "λ_b^(ℓ) = λ̃_b/L",
                  "recommended max depth", "λ per layer", "NTK Θ^(L)", "pdlt.torch.param_groups(model,"):
        assert words in out, out
    assert "not yet implemented" not in out


@pytest.mark.parametrize("args, words", [
    (["criticality", "nope"], "unknown activation"),
    (["criticality", "leaky_relu", "--activation-param", "b=1"], "no parameter 'b'"),
    (["tune", "--activation", "nope", "--width", "64"], "unknown activation"),
])
def test_criticality_and_tune_bad_input(args, words):
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.output


def test_tune_sigmoid_is_an_error(crit_engine):
    pytest.importorskip("pdlt.theory.aspect_ratio")
    result = run("tune", "--activation", "sigmoid", "--width", "64")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no criticality" in lines[0]


def test_tune_learning_rates_with_depth(crit_engine):
    pytest.importorskip("pdlt.theory.aspect_ratio")
    lr = pytest.importorskip("pdlt.theory.learning_rates")
    result = run("tune", "--activation", "tanh", "--width", "128", "--depth", "20", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)["learning_rate"]
    assert doc["implemented"] is True and "Ch. 9" in doc["section"] and doc["depth"] == 20
    lb, lw = lr.equivalence_principle("tanh", 20)
    assert doc["lambda_b"] == pytest.approx(list(lb)) and doc["lambda_W"] == pytest.approx(list(lw))
    assert doc["lambda_b"][1] == pytest.approx(0.5) and doc["lambda_W"][0] == pytest.approx(1.0)  # λ̃/ℓ, λ̃
    assert doc["Theta_limit_value"] == pytest.approx(1.5)
    result = run("tune", "--activation", "relu", "--width", "64", "--depth", "4", "--json")
    assert json.loads(result.stdout)["learning_rate"]["lambda_W"] == pytest.approx([0.25] * 4)
    result = run("tune", "--activation", "relu", "--width", "64", "--depth", "4")
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "λ per layer" in out and "NTK Θ^(L)" in out and "ℓ=4: λ_b=0.25, λ_W=0.25" in out
    result = run("tune", "--activation", "relu", "--width", "64", "--depth", "0")
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    result = run("tune", "--activation", "relu", "--width", "64", "--depth", "4", "--xi", "0.5", "--json")
    assert json.loads(result.stdout)["learning_rate"]["implemented"] is False


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
def test_criticality_ntk_section(crit_engine, act):
    result = run("criticality", act, "--json")
    assert result.exit_code == 0, result.output
    ntk = json.loads(result.stdout)["ntk"]
    assert ntk["chi_perp"] == 1.0 and ntk["lambda_b"].startswith("λ_b^(ℓ)") and ntk["laws"]
    result = run("criticality", act)
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    for words in ("NTK: gradients and learning rates (book Ch. 9)", "χ⊥ at criticality", "off criticality",
                  "λ_b per layer", "λ_W per layer", "NTK Θ^(L)", "NTK asymptotics"):
        assert words in out, (words, out)
    if act == "tanh":
        assert "not known to pdlt" in out


def _contributions(act, lr, K1=None):
    from pdlt import MLP
    from pdlt.theory.criticality import criticality
    from pdlt.theory.learning_rates import layer_contributions

    c = criticality(act)
    K1 = K1 if K1 is not None else (c.K_star if c.K_star else 1.0)
    net = MLP(1, 8, lr["depth"], act, C_b=c.C_b, C_W=c.C_W, lambda_b=lr["lambda_b"], lambda_W=lr["lambda_W"])
    return layer_contributions(net, [np.sqrt((K1 - c.C_b) / c.C_W)])


@pytest.mark.parametrize("act, width", [("relu", 256), ("gelu", 128), ("tanh", 256)])
def test_tune_learning_rates_obey_the_equivalence_principle(crit_engine, act, width):
    """Each layer's contribution to Θ^(L) (layer_contributions) is 1/L with the printed λ's."""
    pytest.importorskip("pdlt.theory.aspect_ratio")
    result = run("tune", "--activation", act, "--width", width, "--json")
    assert result.exit_code == 0, result.output
    lr = json.loads(result.stdout)["learning_rate"]
    L = lr["depth"]
    assert L >= 2 and len(lr["lambda_b"]) == len(lr["lambda_W"]) == L
    if act == "tanh":   # closed form: exact for K ≈ 1/(2ℓ), i.e. up to the first few layers
        lc = _contributions(act, lr)
        assert np.max(np.abs(lc.share - 1 / L)) < 0.5 / L
        assert np.max(np.abs(lc.share[L // 5:] * L - 1)) < 0.1
        assert lc.Theta_L == pytest.approx(lr["Theta_limit_value"], rel=0.05)
    else:               # scale-invariant (any input) and half-stable at K⁽¹⁾ = K*: exact
        lc = _contributions(act, lr, K1=1.7 if act == "relu" else None)
        np.testing.assert_allclose(lc.share, 1 / L, rtol=1e-9)
        if lr["Theta_limit_value"] is not None:
            assert lc.Theta_L == pytest.approx(lr["Theta_limit_value"], rel=1e-9)
        else:
            assert lc.Theta_L == pytest.approx(1 + 1.7 / 2, rel=1e-12)   # λ̃_b + λ̃_W A₂K*
    result = run("tune", "--activation", act, "--width", width)
    assert result.exit_code == 0, result.output
    assert f"{L} (recommended max depth)" in flat(result.output)


# --- pdlt train-predict (book Ch. 10) ------------------------------------------------------------

TRAIN_TINY = ["--width", "64", "--networks", "60", "--steps", "4", "--data", "synthetic:4,3"]


def test_train_predict_help():
    result = run("train-predict", "--help")
    assert result.exit_code == 0, result.output
    for option in ("--activation", "--depth", "--width", "--C-W", "--lambda-b", "--lambda-W", "--data",
                   "--data-seed", "--eta", "--steps", "--newton", "--finite-width", "--frozen-slopes", "--networks",
                   "--seed", "--plot",
                   "--json"):
        assert option in result.output


def test_train_predict_json(tmp_path):
    pytest.importorskip("pdlt.empirical.training")
    pytest.importorskip("matplotlib")
    path = tmp_path / "pred.png"
    result = run("train-predict", *TRAIN_TINY, "--json", "--plot", path)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["net"]["widths"] == [4, 64, 1] and doc["net"]["C_W"] == [1.0, 1.0]   # tanh at criticality
    assert doc["training"]["method"] == "gradient descent" and doc["training"]["steps"] == 4
    assert doc["training"]["eta"] == pytest.approx(0.5 * doc["training"]["eta_max"])
    assert len(doc["rows"]) == 3 and {"theory_mean", "measured_mean", "z_mean", "z_variance"} <= set(doc["rows"][0])
    assert doc["allowance"] == pytest.approx(3.0 / 64) and doc["threshold"] >= 4.0
    assert doc["checks"]["total"] == 2 * 3 + 2 and 0 <= doc["checks"]["passed"] <= doc["checks"]["total"]
    assert path.is_file() and doc["plot"] == str(path)
    # a wrong comparison is reported, not an error: the theory mean is what the rows were judged against
    np.testing.assert_allclose([r["theory_mean"] for r in doc["rows"]], doc["theory"]["mean"])


def test_train_predict_finite_width_column():
    """--finite-width adds the O(1/n) mean of pdlt.theory.finite_width_mean, the same numbers."""
    from pdlt import MLP
    from pdlt.theory.finite_width import finite_width_mean

    result = run("train-predict", "--width", "32", "--networks", "20", "--newton", "--data", "synthetic:3,2",
                 "--finite-width", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    d = doc["data"]
    net = MLP(len(d["X_train"][0]), 32, 2, "tanh", C_b=0.0, C_W=1.0, lambda_b=0.5, lambda_W=1.0, output_dim=1)
    want = finite_width_mean(net, d["X_train"], d["y_train"], d["X_test"], newton=True).total
    np.testing.assert_allclose([r["finite_width_mean"] for r in doc["rows"]], want, rtol=1e-10)
    table = run("train-predict", "--width", "32", "--networks", "20", "--newton", "--data", "synthetic:3,2",
                "--finite-width")
    assert table.exit_code == 0 and "mean 1/n" in table.output


@pytest.mark.parametrize("frozen", [False, True])
def test_train_predict_finite_width_relu_kinks(frozen):
    """ReLU after --newton: real networks get the δ-function kink terms, --frozen-slopes networks the a.e. ones."""
    from pdlt import MLP
    from pdlt.theory.finite_width import finite_width_mean

    result = run("train-predict", "--activation", "relu", "--width", "32", "--networks", "20", "--newton",
                 "--data", "synthetic:3,2", "--finite-width", "--json", *(["--frozen-slopes"] if frozen else []))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    d = doc["data"]
    kinks = "a.e." if frozen else "delta"
    assert doc["training"]["finite_width_kinks"] == kinks
    net = MLP(len(d["X_train"][0]), 32, 2, "relu", C_b=0.0, C_W=2.0, lambda_b=0.5, lambda_W=1.0, output_dim=1)
    want = finite_width_mean(net, d["X_train"], d["y_train"], d["X_test"], newton=True, kinks=kinks).total
    np.testing.assert_allclose([r["finite_width_mean"] for r in doc["rows"]], want, rtol=1e-10)


def test_train_predict_newton_relu_table():
    pytest.importorskip("pdlt.empirical.training")
    result = run("train-predict", "--activation", "relu", "--width", "64", "--networks", "40", "--newton",
                 "--data", "synthetic:3,2")
    assert result.exit_code == 0, result.output
    assert "newton step" in result.output and "comparisons pass" in result.output
    assert "C_W=2.0" in result.output        # ReLU's critical C_W by default


def test_train_predict_frozen_slopes():
    """--frozen-slopes trains the frozen-slope twin (same numbers as the API); a smooth σ is refused."""
    from pdlt import MLP
    from pdlt.empirical.training import train_ensemble

    args = ["train-predict", "--activation", "relu", "--width", "16", "--networks", "20", "--newton",
            "--data", "synthetic:3,2", "--json"]
    doc = json.loads(run(*args, "--frozen-slopes").stdout)
    real = json.loads(run(*args).stdout)
    assert doc["training"]["frozen_slopes"] is True and doc["training"]["method"] == "newton step, frozen slopes"
    d = doc["data"]
    net = MLP(len(d["X_train"][0]), 16, 2, "relu", C_b=0.0, C_W=2.0, lambda_b=0.5, lambda_W=1.0, output_dim=1)
    m = train_ensemble(net, d["X_train"], d["y_train"], d["X_test"], 20, 0, newton=True, frozen_slopes=True,
                       groups=20)
    np.testing.assert_allclose([r["measured_mean"] for r in doc["rows"]], m.mean.mean, rtol=1e-12)
    assert not np.allclose([r["measured_mean"] for r in real["rows"]], m.mean.mean)
    bad = run("train-predict", "--width", "16", "--networks", "20", "--newton", "--frozen-slopes")
    assert bad.exit_code == 2 and "piecewise-linear activation" in bad.output


def test_train_predict_digits_json():
    pytest.importorskip("sklearn")
    pytest.importorskip("pdlt.empirical.training")
    result = run("train-predict", "--data", "digits:6,4", "--width", "32", "--networks", "30", "--steps", "2",
                 "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["net"]["widths"][0] == 64 and set(doc["data"]["y_train"]) == {1.0, -1.0}
    assert len(doc["rows"]) == 4


@pytest.mark.parametrize("args, words", [
    (["--eta", "5"], "gradient descent diverges"),
    (["--eta", "-1"], "eta must be > 0"),
    (["--data", "mnist"], "--data must be"),
    (["--data", "synthetic:0,2"], "two integers >= 1"),
    (["--newton", "--steps", "3"], "not both"),
    (["--activation", "sigmoid"], "no criticality"),
    (["--plot", "fig.pdf"], ".png or .svg"),
])
def test_train_predict_bad_input(args, words):
    result = run("train-predict", "--width", "16", "--networks", "10", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert words in lines[0] and "Traceback" not in result.output and "nan" not in lines[0].lower()
