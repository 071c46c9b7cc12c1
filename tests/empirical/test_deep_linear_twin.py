"""Deep linear networks on the shared Monte Carlo engine: exact theory (book Ch. 3) vs ensembles."""

import numpy as np
import pytest

from pdlt import MLP
from pdlt.empirical import deep_linear as emp
from pdlt.empirical import preactivations
from pdlt.theory import deep_linear as th


@pytest.mark.parametrize("method", ["gaussian", "naive"])
def test_even_moments_exact_at_small_width(method):
    """G_{2m}^{(ℓ)} = Π c_{2m}(n_ℓ') (G_2^{(ℓ)})^m (eq. 3.47), at widths where 1/n effects are large."""
    widths = [3, 6, 5, 7, 6]
    net = MLP(widths=widths, activation="linear", C_b=0.0, C_W=1.0)
    x = np.array([[1.0, -0.5, 0.8]])
    G0 = float(x[0] @ x[0]) / 3
    z = np.concatenate([s[4] for _, _, s in preactivations(net, x, networks=60000, seed=5, method=method,
                                                             layers=[4])])
    # m = 3 (z⁶) is too heavy-tailed at these widths for a Gaussian error bar (its sample mean is
    # skewed low); tests/theory/test_deep_linear.py checks it on wider networks.
    for m in (1, 2):
        est = emp.even_moment(m, z)
        exact = th.even_moment(m, 4, widths, 1.0, G0)
        assert abs(est.mean - exact) <= 4 * est.stderr, (m, est, exact)
    # the infinite-width value (G_2)^m is excluded at m = 2: the 1/n effect is resolved
    est = emp.even_moment(2, z)
    assert abs(est.mean - (G0 ** 2)) > 4 * est.stderr
