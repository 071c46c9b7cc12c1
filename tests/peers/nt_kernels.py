"""Run inside a neural-tangents virtual environment: write its infinite-width kernels to an .npz.

Usage: python nt_kernels.py IN.npz OUT.npz  — IN holds X (N, n0), activation (str), depth, C_b, C_W.
Arrays are exchanged through .npz files (allow_pickle=False on both sides); nothing is evaluated.
"""

import sys

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
from neural_tangents import stax  # noqa: E402

ACTIVATIONS = {"relu": stax.Relu, "erf": stax.Erf}


def main(src: str, dst: str) -> None:
    d = np.load(src, allow_pickle=False)
    X = d["X"].astype(np.float64)
    act = ACTIVATIONS[str(d["activation"])]
    depth, C_b, C_W = int(d["depth"]), float(d["C_b"]), float(d["C_W"])
    dense = lambda: stax.Dense(512, W_std=C_W ** 0.5, b_std=C_b ** 0.5)  # noqa: E731
    out = {}
    for L in range(1, depth + 1):
        layers = [dense()]
        for _ in range(L - 1):
            layers += [act(), dense()]
        _, _, kernel_fn = stax.serial(*layers)
        k = kernel_fn(X, X, ("nngp", "ntk"))
        out[f"nngp_{L}"] = np.asarray(k.nngp, dtype=np.float64)
        out[f"ntk_{L}"] = np.asarray(k.ntk, dtype=np.float64)
    np.savez(dst, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
