"""pdlt.plots: kernel flow, susceptibilities and vertex growth figures are written (PNG and SVG)."""

import sys

import numpy as np
import pytest

import pdlt
from pdlt.estimate import Estimate

pytest.importorskip("matplotlib")
from pdlt import plots  # noqa: E402


@pytest.fixture
def crit():
    """Figures built from the criticality engine skip until pdlt.theory.criticality exists."""
    return pytest.importorskip("pdlt.theory.criticality")


def assert_figure(path, returned):
    assert returned == path
    assert path.is_file() and path.stat().st_size > 1024
    if path.suffix == ".png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert b"<svg" in path.read_bytes()[:2000]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_kernel_flow(crit, tmp_path, suffix):
    path = tmp_path / f"flow{suffix}"
    assert_figure(path, plots.plot_kernel_flow("tanh", [0.8, 1.0, 1.2], 1.0, 40, path))


def test_kernel_flow_several_starts_and_half_stable(crit, tmp_path):
    path = tmp_path / "gelu.png"
    C_W = crit.criticality("gelu").C_W
    assert_figure(path, plots.plot_kernel_flow("gelu", [0.95 * C_W, C_W, 1.05 * C_W], [0.2, 1.0, 3.0], 100, path))


def test_susceptibilities(crit, tmp_path):
    path = tmp_path / "chi.png"
    assert_figure(path, plots.plot_susceptibilities("tanh", 1.0, np.geomspace(1e-3, 10.0, 40), path))
    path = tmp_path / "chi.svg"
    assert_figure(path, plots.plot_susceptibilities(pdlt.get_activation("leaky_relu", a=0.3), 1.8,
                                                    np.linspace(0.1, 5.0, 20), path))


def test_vertex_growth_from_theory(tmp_path):
    net = pdlt.MLP(input_dim=4, width=32, depth=12, activation="relu", C_b=0.0, C_W=2.0)
    X = np.random.default_rng(0).standard_normal((1, 4))
    th = pdlt.theory(net, X)
    normalized = {}
    for l in range(2, 13):
        s = th.layer(l)
        normalized[l] = s.V[0, 0, 0, 0] / (s.n_prev * s.K[0, 0] ** 2)
    rng = np.random.default_rng(1)
    measured = {l: Estimate(v + 0.01 * rng.standard_normal(), 0.01, 1000) for l, v in normalized.items()
                if l % 3 == 0}
    measured[4] = (normalized[4], 0.02)  # a (mean, stderr) pair works too
    path = tmp_path / "vertex.png"
    assert_figure(path, plots.plot_vertex_growth(normalized, measured, path))
    path = tmp_path / "vertex.svg"  # sequences run over ℓ = 1, 2, …; None skips a layer
    assert_figure(path, plots.plot_vertex_growth([None, *normalized.values()], None, path))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=".png or .svg"):
        plots.plot_vertex_growth([1.0, 2.0], None, tmp_path / "v.pdf")
    with pytest.raises(ValueError, match="Estimate or a \\(mean, stderr\\) pair"):
        plots.plot_vertex_growth([1.0], {1: "x"}, tmp_path / "v.png")
    with pytest.raises(ValueError, match="both empty"):
        plots.plot_vertex_growth([], {}, tmp_path / "v.png")
    assert not any(tmp_path.iterdir())


def test_missing_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'pdlt\[plot\]'"):
        plots.plot_vertex_growth([1.0, 2.0], None, tmp_path / "v.png")


# --- trained networks (book Ch. 10) ------------------------------------------------------------


def _regression():
    rng = np.random.default_rng(3)
    XA, XB, w = rng.standard_normal((4, 4)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    return XA, np.sin(XA @ w / 2), XB, np.sin(XB @ w / 2)


def _axes_labels(path):
    """The figure's axis labels, read back from the SVG text (matplotlib writes text as <text> or paths
    with the label in a comment)."""
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_training_prediction(tmp_path, suffix):
    train = pytest.importorskip("pdlt.empirical.training")
    from pdlt.theory import training as tr

    XA, yA, XB, yB = _regression()
    net = pdlt.MLP(4, 64, 2, "tanh", C_b=0.0, C_W=1.0, lambda_b=0.5, lambda_W=1.0, output_dim=1)
    eta = 0.5 * tr.max_learning_rate(net, XA)
    th = tr.gradient_descent(net, XA, yA, XB, eta=eta, steps=4, y_test=yB)
    m = train.train_ensemble(net, XA, yA, XB, 40, 0, eta=eta, steps=4, y_test=yB, groups=10)
    path = tmp_path / f"pred{suffix}"
    assert_figure(path, plots.plot_training_prediction(th, m, path))
    if suffix == ".svg":
        text = _axes_labels(path)
        assert "test input" in text and "trained output" in text
    # a mapping of plain arrays works too (what pdlt verify stores)
    path = tmp_path / "pred-arrays.png"
    arrays = {"mean": m.mean.mean, "mean_se": m.mean.stderr}
    assert_figure(path, plots.plot_training_prediction(tr.newton_step(net, XA, yA, XB), arrays, path))


def test_training_prediction_axes_labelled(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    plots.draw_training_prediction(ax, [0.1, 0.5], [0.04, 0.01], [0.12, 0.48], [0.01, 0.01], [0.05, 0.012],
                                   [0.004, 0.001], [0.2, 0.6], title="demo")
    assert ax.get_xlabel() and "trained output" in ax.get_ylabel() and ax.get_title() == "demo"
    assert len(ax.get_legend().get_texts()) >= 4


def test_test_error_vs_depth(crit, tmp_path):
    XA, yA, XB, yB = _regression()
    path = tmp_path / "depth.svg"
    assert_figure(path, plots.plot_test_error_vs_depth("tanh", [0.8, 1.0, 1.2], range(1, 9), XA, yA, XB, yB, path))
    text = path.read_text(encoding="utf-8")
    assert "depth" in text and "critical" in text
    # gradient descent for a few steps, ReLU, with measured points from a tiny trained ensemble
    pytest.importorskip("pdlt.empirical.training")
    path = tmp_path / "depth.png"
    assert_figure(path, plots.plot_test_error_vs_depth("relu", [1.8, 2.0, 2.2], [1, 2, 3, 4, 6, 8], XA, yA, XB,
                                                       yB, path, steps=10, measure_depths=[2], width=16,
                                                       networks=10))


def test_training_plots_bad_arguments(tmp_path):
    XA, yA, XB, yB = _regression()
    with pytest.raises(ValueError, match="Prediction"):
        plots.plot_training_prediction("x", {"mean": [0.0], "mean_se": [0.1]}, tmp_path / "p.png")
    with pytest.raises(ValueError, match="C_W_values"):
        plots.plot_test_error_vs_depth("tanh", [-1.0], [1, 2], XA, yA, XB, yB, tmp_path / "d.png")
    with pytest.raises(ValueError, match="depths"):
        plots.plot_test_error_vs_depth("tanh", [1.0], [0], XA, yA, XB, yB, tmp_path / "d.png")
    assert not any(tmp_path.iterdir())
