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
