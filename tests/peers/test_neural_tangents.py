"""Cross-check against neural-tangents' infinite-width kernels (../shared/peers.md).

neural-tangents never becomes a pdlt dependency: it lives in its own virtual environment, found via
``PDLT_NT_PYTHON`` (a python executable) or ``nt-env/bin/python`` beside or above the repository, and
this test skips cleanly when there is none. Its 'ntk' parameterization has λ_W = C_W, λ_b = C_b.
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pdlt

ROOT = Path(__file__).resolve().parents[2]


def _nt_python() -> str | None:
    cands = [os.environ.get("PDLT_NT_PYTHON"), ROOT / "nt-env/bin/python", ROOT.parent / "nt-env/bin/python"]
    for c in cands:
        if c and Path(c).exists():
            return str(c)
    return None


NT = _nt_python()
pytestmark = pytest.mark.skipif(NT is None, reason="no neural-tangents environment (see README)")


def _nt_kernels(tmp_path, X, activation, depth, C_b, C_W):
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(src, X=X, activation=np.array(activation), depth=depth, C_b=C_b, C_W=C_W)
    script = Path(__file__).with_name("nt_kernels.py")
    subprocess.run([NT, str(script), str(src), str(dst)], check=True, capture_output=True, timeout=600)
    return np.load(dst, allow_pickle=False)


@pytest.mark.parametrize("activation, C_b, C_W", [("relu", 0.1, 2.0), ("erf", 0.2, 1.5)])
def test_nngp_kernel_matches_neural_tangents(tmp_path, activation, C_b, C_W):
    X = np.random.default_rng(3).normal(size=(5, 6))
    depth = 5
    nt = _nt_kernels(tmp_path, X, activation, depth, C_b, C_W)
    th = pdlt.theory(pdlt.MLP(6, 64, depth, activation, C_b=C_b, C_W=C_W), X)
    for L in range(1, depth + 1):
        np.testing.assert_allclose(th.layer(L).K, nt[f"nngp_{L}"], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("activation, C_b, C_W", [("relu", 0.1, 2.0), ("erf", 0.2, 1.5)])
def test_ntk_matches_neural_tangents(tmp_path, activation, C_b, C_W):
    """Θ with λ_b = C_b, λ_W = C_W (pdlt's default) is neural-tangents' 'ntk' parameterization."""
    X = np.random.default_rng(4).normal(size=(4, 6))
    depth = 4
    nt = _nt_kernels(tmp_path, X, activation, depth, C_b, C_W)
    th = pdlt.theory(pdlt.MLP(6, 64, depth, activation, C_b=C_b, C_W=C_W), X, ntk=True)
    for L in range(1, depth + 1):
        np.testing.assert_allclose(th.layer(L).Theta, nt[f"ntk_{L}"], rtol=1e-8, atol=1e-10)
