r"""The kernel recursion at leading order (book §4.3, §5.1).

.. math:: K^{(\ell+1)}_{\alpha_1\alpha_2} = C_b^{(\ell+1)} + C_W^{(\ell+1)}
          \langle \sigma_{\alpha_1}\sigma_{\alpha_2}\rangle_{K^{(\ell)}},\qquad
          K^{(1)}_{\alpha_1\alpha_2} = C_b^{(1)} + \frac{C_W^{(1)}}{n_0}\sum_j x_{j;\alpha_1}x_{j;\alpha_2}.
"""

from __future__ import annotations

import numpy as np

from ._gauss import Expectations

__all__ = ["first_layer_kernel", "kernel_step", "kernel_step_single"]


def first_layer_kernel(X: np.ndarray, C_b: float, C_W: float) -> np.ndarray:
    r"""K^{(1)} = C_b + C_W (1/n_0) X Xᵀ for X of shape (N, n_0); exact at any width (eqs. (4.7)–(4.8))."""
    return C_b + C_W * (X @ X.T) / X.shape[1]


def kernel_step(K: np.ndarray, C_b: float, C_W: float, E: Expectations) -> np.ndarray:
    r"""K^{(ℓ+1)} = C_b + C_W ⟨σ_{α1}σ_{α2}⟩_{K^{(ℓ)}} for K of shape (N, N) (book §4.3)."""
    return C_b + C_W * E.sigma_sigma(K)


def kernel_step_single(K: float, C_b: float, C_W: float, E: Expectations) -> float:
    r"""Single input: K' = C_b + C_W g(K), g(K) = ⟨σ(z)²⟩_K (book §5.1)."""
    return float(C_b + C_W * E.g_derivs(K)[0])
