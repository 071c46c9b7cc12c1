"""Monte Carlo estimates: mean ± standard error over an ensemble of networks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate"]


@dataclass(frozen=True)
class Estimate:
    """An ensemble estimate of an observable.

    Attributes
    ----------
    mean : estimate, same shape as the theoretical observable.
    stderr : one standard error of ``mean`` (same shape).
    count : number of independent networks that went into it.
    """

    mean: np.ndarray
    stderr: np.ndarray
    count: int

    @property
    def shape(self):
        return np.shape(self.mean)

    def z_score(self, theory, allowance=0.0) -> np.ndarray:
        """(mean − theory)/stderr, with |mean − theory| first reduced by an explicit allowance."""
        diff = np.abs(np.asarray(self.mean) - np.asarray(theory)) - np.asarray(allowance)
        diff = np.maximum(diff, 0.0) * np.sign(np.asarray(self.mean) - np.asarray(theory))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.asarray(self.stderr) > 0, diff / np.asarray(self.stderr),
                            np.where(diff == 0, 0.0, np.inf))

    def __getitem__(self, idx) -> "Estimate":
        return Estimate(np.asarray(self.mean)[idx], np.asarray(self.stderr)[idx], self.count)

    def __format__(self, spec: str) -> str:
        spec = spec or ".4g"
        m, s = np.asarray(self.mean), np.asarray(self.stderr)
        if m.ndim == 0:
            return f"{format(float(m), spec)} ± {format(float(s), '.2g')}"
        flat = [f"{format(float(a), spec)} ± {format(float(b), '.2g')}" for a, b in zip(m.ravel(), s.ravel())]
        return "[" + ", ".join(flat) + "]" + (f" (shape {m.shape})" if m.ndim > 1 else "")

    def __str__(self) -> str:
        return format(self, "")

    def to_dict(self) -> dict:
        return {"mean": np.asarray(self.mean).tolist(), "stderr": np.asarray(self.stderr).tolist(),
                "count": int(self.count)}


def _line_fit(x, y, se):
    r"""Weighted least squares :math:`y = a + b\,x` (weights 1/se²), entry by entry over trailing axes.

    The width sweeps of the twin tests and of ``pdlt verify`` fit n·(measured − theory) = a + b·n^{-p}
    with x = n^{-p}. x (W,); y, se (W, ...) → a, σ_a, b, σ_b, each of shape (...).
    """
    y, se = np.asarray(y, dtype=np.float64), np.asarray(se, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64).reshape((-1,) + (1,) * (y.ndim - 1))
    w = 1.0 / se ** 2
    S, Sx, Sxx = w.sum(0), (w * x).sum(0), (w * x * x).sum(0)
    Sy, Sxy = (w * y).sum(0), (w * x * y).sum(0)
    det = S * Sxx - Sx ** 2
    return (Sxx * Sy - Sx * Sxy) / det, np.sqrt(Sxx / det), (S * Sxy - Sx * Sy) / det, np.sqrt(S / det)
