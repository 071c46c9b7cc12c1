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
