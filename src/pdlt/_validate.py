"""Input validation shared by the public API: every error names the parameter and its allowed range."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np


def positive_int(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def real(name: str, value, *, low: float | None = None, low_open: bool = False,
         high: float | None = None) -> float:
    """Return ``value`` as a finite float in the given range or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real | np.floating | np.integer):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None:
        if low_open and not v > low:
            raise ValueError(f"{name} must be > {low}, got {v}")
        if not low_open and not v >= low:
            raise ValueError(f"{name} must be >= {low}, got {v}")
    if high is not None and not v <= high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def inputs(name: str, X, input_dim: int | None = None) -> np.ndarray:
    """Validate an input matrix of shape (N, n0): finite float64, N >= 1."""
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (N, n0): {exc}") from None
    if arr.ndim == 1:
        raise ValueError(
            f"{name} must have shape (N, n0) with one input per row; got a 1-D array of "
            f"length {arr.shape[0]} (use X.reshape(1, -1) for a single input)")
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, n0) with N >= 1, n0 >= 1; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; all inputs must be finite")
    if input_dim is not None and arr.shape[1] != input_dim:
        raise ValueError(
            f"{name} has {arr.shape[1]} columns but the network's input_dim is {input_dim}")
    return arr
