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
