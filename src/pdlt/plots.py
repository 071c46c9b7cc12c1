r"""Figures of the effective theory: kernel flow, susceptibilities and vertex growth (book Ch. 4–5).

matplotlib is an optional dependency (``pip install 'pdlt[plot]'``); it is imported lazily with the
non-interactive Agg backend. Every function writes one figure to ``path`` — PNG or SVG, chosen by the
suffix — and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .activations import get_activation

__all__ = ["plot_kernel_flow", "plot_susceptibilities", "plot_vertex_growth"]

_SUFFIXES = (".png", ".svg")


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or an ImportError that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("pdlt.plots needs matplotlib: pip install 'pdlt[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _target(path) -> Path:
    p = Path(path)
    if p.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"plot path must end in .png or .svg, got {str(path)!r}")
    return p


def _save(fig, path: Path, plt) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150 if path.suffix.lower() == ".png" else None)
    plt.close(fig)
    return path


def _label(act) -> str:
    p = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in act.params.items())
    return f"{act.name}({p})" if p and act.name != "callable" else act.name


def _log_if_wide(ax, values, axis: str = "y") -> None:
    v = np.asarray([x for x in np.ravel(values) if np.isfinite(x) and x > 0])
    if v.size and v.size == np.size(values) and v.max() / v.min() > 20.0:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def plot_kernel_flow(activation, C_W_values, K0, depth: int, path, *, C_b: float | None = None) -> Path:
    r"""K^{(ℓ)} for ℓ = 1..depth under K^{(ℓ+1)} = C_b + C_W⟨σ²⟩_{K^{(ℓ)}}, one line per C_W (book §5.1).

    ``K0`` is K^{(1)}, one number or several (one line each). ``C_b`` defaults to the critical C_b of
    the activation; its fixed point K* (when there is one) is drawn dashed. Flows that overflow stop.
    """
    from .theory.criticality import criticality, kernel_map

    act = get_activation(activation)
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    C_Ws = [float(c) for c in np.atleast_1d(np.asarray(C_W_values, dtype=np.float64))]
    starts = [float(k) for k in np.atleast_1d(np.asarray(K0, dtype=np.float64))]
    if not C_Ws or any(c <= 0 or not math.isfinite(c) for c in C_Ws):
        raise ValueError(f"C_W_values must be positive numbers, got {C_W_values!r}")
    if any(k < 0 or not math.isfinite(k) for k in starts):
        raise ValueError(f"K0 must be non-negative numbers, got {K0!r}")
    crit = criticality(act)
    crit_CW = None if crit.C_W is None else float(crit.C_W)
    if C_b is None:
        if crit.C_b is None:
            raise ValueError(f"{_label(act)} has no criticality (class {crit.universality_class!r}); pass C_b")
        C_b = float(crit.C_b)
    C_b = float(C_b)
    target = _target(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_vals = []
    for i, C_W in enumerate(C_Ws):
        for j, k in enumerate(starts):
            ks = [k]
            for _ in range(depth - 1):
                nxt = float(kernel_map(act, ks[-1], C_b, C_W))
                if not math.isfinite(nxt) or nxt > 1e300:
                    break
                ks.append(nxt)
            all_vals += ks
            is_crit = crit_CW is not None and math.isclose(C_W, crit_CW, rel_tol=1e-6)
            label = (f"$C_W$ = {C_W:.4g}" + (" (critical)" if is_crit else "")) if j == 0 else None
            ax.plot(np.arange(1, len(ks) + 1), ks, color=colors[i % len(colors)], lw=2.2 if is_crit else 1.4,
                    label=label)
    if (crit.K_star is not None and crit.C_b is not None and crit.K_star > 0
            and math.isclose(C_b, float(crit.C_b), rel_tol=1e-9, abs_tol=1e-12)):
        ax.axhline(float(crit.K_star), color="k", ls="--", lw=1, label=f"$K^*$ = {float(crit.K_star):.4g}")
    _log_if_wide(ax, all_vals)
    if depth > 50:
        ax.set_xscale("log")
    ax.set_xlabel(r"layer $\ell$")
    ax.set_ylabel(r"kernel $K^{(\ell)}$")
    ax.set_title(f"kernel flow, σ = {_label(act)}, $C_b$ = {C_b:.4g} (book §5.1)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, target, plt)


def plot_susceptibilities(activation, C_W: float, K_grid, path) -> Path:
    r"""χ∥(K) and χ⊥(K) for one C_W over a grid of K (book eqs. (5.50)–(5.51)); χ = 1 marks criticality."""
    from .theory.criticality import chi_parallel, chi_perp

    act = get_activation(activation)
    C_W = float(C_W)
    if not C_W > 0 or not math.isfinite(C_W):
        raise ValueError(f"C_W must be a positive number, got {C_W!r}")
    Ks = np.asarray(K_grid, dtype=np.float64).ravel()
    if Ks.size < 2 or not np.all(np.isfinite(Ks)) or np.any(Ks <= 0):
        raise ValueError("K_grid must hold at least two positive, finite kernel values")
    Ks = np.sort(Ks)
    par = np.array([float(chi_parallel(act, float(k), C_W)) for k in Ks])
    perp = np.array([float(chi_perp(act, float(k), C_W)) for k in Ks])
    target = _target(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(Ks, par, lw=1.8, label=r"$\chi_\parallel(K)$")
    ax.plot(Ks, perp, lw=1.8, ls="-.", label=r"$\chi_\perp(K)$")
    ax.axhline(1.0, color="k", ls="--", lw=1, label=r"$\chi = 1$")
    _log_if_wide(ax, Ks, axis="x")
    ax.set_xlabel(r"kernel $K$")
    ax.set_ylabel(r"susceptibility $\chi$")
    ax.set_title(f"susceptibilities, σ = {_label(act)}, $C_W$ = {C_W:.4g} (book §5.1)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, target, plt)


def _by_layer(values, what: str) -> dict[int, object]:
    """{ℓ: value} from a mapping, or from a sequence indexed ℓ = 1, 2, … (None entries skipped)."""
    if isinstance(values, Mapping):
        items = values.items()
    elif isinstance(values, Iterable) and not isinstance(values, str | bytes):
        items = enumerate(values, start=1)
    else:
        raise ValueError(f"{what} must be a mapping {{layer: value}} or a sequence for layers 1, 2, …")
    out = {}
    for l, v in items:
        if v is None:
            continue
        if isinstance(l, bool) or not isinstance(l, int | np.integer) or l < 1:
            raise ValueError(f"{what}: layers must be integers >= 1, got {l!r}")
        out[int(l)] = v
    return dict(sorted(out.items()))


def _mean_err(v, layer: int) -> tuple[float, float]:
    if hasattr(v, "mean") and hasattr(v, "stderr"):
        return float(np.asarray(v.mean)), float(np.asarray(v.stderr))
    try:
        m, s = v
        return float(m), float(s)
    except (TypeError, ValueError):
        raise ValueError(f"measured estimate for layer {layer} must be an Estimate or a (mean, stderr) pair, "
                         f"got {v!r}") from None


def plot_vertex_growth(theory_values, measured_estimates, path) -> Path:
    r"""Normalized vertex V^{(ℓ)}/(n K²) vs ℓ: theory as a line, measurements as points with error bars.

    ``theory_values``: {ℓ: value} or a sequence for ℓ = 1, 2, …; ``measured_estimates``: the same with
    :class:`~pdlt.estimate.Estimate` (scalar mean/stderr) or (mean, stderr) pairs, or None for no
    measurement. The growth with depth (∝ ℓ at criticality for the scale-invariant and K* = 0 classes,
    book §5.4) is the finite-width non-Gaussianity.
    """
    th = {l: float(v) for l, v in _by_layer(theory_values, "theory_values").items()}
    meas = {l: _mean_err(v, l) for l, v in _by_layer(measured_estimates or {}, "measured_estimates").items()}
    if not th and not meas:
        raise ValueError("nothing to plot: theory_values and measured_estimates are both empty")
    target = _target(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if th:
        ax.plot(list(th), list(th.values()), "-", lw=1.8, color="C0", label="theory (leading order)")
    if meas:
        ls = list(meas)
        ax.errorbar(ls, [m for m, _ in meas.values()], yerr=[s for _, s in meas.values()], fmt="o", ms=4,
                    capsize=3, color="C3", label="measured ± 1 s.e.")
    ax.set_xlabel(r"layer $\ell$")
    ax.set_ylabel(r"$V^{(\ell)} / (n K^{2})$")
    ax.set_title("normalized four-point vertex vs depth (book §4.3, §5.4)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, target, plt)
