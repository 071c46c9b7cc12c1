r"""Figures of the effective theory: kernel flow, susceptibilities and vertex growth (book Ch. 4–5),
trained-network predictions and the generalization error against depth (book Ch. 10).

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

__all__ = ["plot_kernel_flow", "plot_susceptibilities", "plot_vertex_growth", "plot_training_prediction",
           "plot_test_error_vs_depth"]

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


# ---------------------------------------------------------------------------------------------
# Trained networks (book Ch. 10)


def _values(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{what} must hold one number per test input (one output), got shape {arr.shape}")
    return arr


def draw_training_prediction(ax, theory_mean, theory_var, measured_mean, mean_se, measured_var=None,
                             var_se=None, y_test=None, *, title: str | None = None) -> None:
    r"""Draw trained-network predictions per test input on the axes ``ax`` (all arrays (N_B,)).

    Theory: the mean (bar) and its band ± √var (the spread of the trained outputs over
    initializations). Measured: the ensemble mean ± 1 standard error (points) and, when given,
    mean ± the measured √var (dashed caps; ± the stderr of √var as a thicker segment is not
    drawn). ``y_test``: the targets (×). Used by :func:`plot_training_prediction` and ``pdlt verify``.
    """
    tm, tv = _values(theory_mean, "theory mean"), _values(theory_var, "theory variance")
    mm, ms = _values(measured_mean, "measured mean"), _values(mean_se, "measured mean stderr")
    N = tm.size
    if not (tv.size == mm.size == ms.size == N):
        raise ValueError("theory and measured arrays must have one entry per test input each")
    x = np.arange(N, dtype=np.float64)
    sd = np.sqrt(np.maximum(tv, 0.0))
    ax.bar(x - 0.14, 2 * sd, bottom=tm - sd, width=0.22, color="C0", alpha=0.25,
           label=r"theory mean $\pm\sqrt{\mathrm{var}}$")
    ax.plot(np.stack([x - 0.25, x - 0.03]), np.stack([tm, tm]), "-", color="C0", lw=2.2)
    ax.plot([], [], "-", color="C0", lw=2.2, label="theory mean (n = ∞)")
    ax.errorbar(x + 0.14, mm, yerr=ms, fmt="o", ms=4, capsize=3, color="C3", label="measured mean ± 1 s.e.")
    if measured_var is not None:
        mv = _values(measured_var, "measured variance")
        msd = np.sqrt(np.maximum(mv, 0.0))
        bars = ax.errorbar(x + 0.14, mm, yerr=msd, fmt="none", capsize=6, color="C3", lw=0.9, alpha=0.8,
                           label=r"measured mean $\pm\sqrt{\mathrm{var}}$")
        bars[-1][0].set_linestyle("--")
        if var_se is not None:
            vs = _values(var_se, "measured variance stderr")
            # the stderr of √var (delta method) as short ticks around the dashed caps
            dsd = vs / (2 * np.maximum(msd, 1e-300))
            for sign in (-1, 1):
                ax.errorbar(x + 0.14, mm + sign * msd, yerr=dsd, fmt="none", capsize=0, color="C3", lw=2.5,
                            alpha=0.5)
    if y_test is not None:
        ax.plot(x, _values(y_test, "y_test"), "x", color="k", ms=7, mew=1.5, label="target $y$")
    ax.set_xticks(x)
    ax.set_xticklabels([f"β̇={i}" for i in range(N)], fontsize=8 if N <= 12 else 6)
    ax.set_xlabel(r"test input $\dot\beta$")
    ax.set_ylabel(r"trained output $z_{\dot\beta}(t)$")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _measured_arrays(measurement):
    """(mean, mean_se, var, var_se) from a TrainingMeasurement-like object (``.mean``/``.variance``
    Estimates) or a mapping with those keys."""
    if isinstance(measurement, Mapping):
        try:
            return (measurement["mean"], measurement["mean_se"], measurement.get("variance"),
                    measurement.get("variance_se"))
        except KeyError:
            raise ValueError("a measurement mapping needs 'mean' and 'mean_se' (and optionally 'variance', "
                             "'variance_se')") from None
    try:
        m, v = measurement.mean, measurement.variance
        return m.mean, m.stderr, v.mean, v.stderr
    except AttributeError:
        raise ValueError("measurement must be a pdlt.empirical.training.TrainingMeasurement (or a mapping "
                         f"with 'mean', 'mean_se'), got {type(measurement).__name__}") from None


def plot_training_prediction(theory_prediction, measurement, path, *, title: str | None = None) -> Path:
    r"""Infinite-width trained-network prediction vs a trained ensemble, per test input (book §10.2).

    ``theory_prediction``: a :class:`~pdlt.theory.bayes.Prediction` from
    :func:`pdlt.theory.training.gradient_descent` / :func:`~pdlt.theory.training.newton_step` (one
    output: mean (N_B,)); drawn as its mean with a band ± √var. ``measurement``: the
    :class:`~pdlt.empirical.training.TrainingMeasurement` of :func:`pdlt.empirical.train_ensemble`
    on the same data (or a mapping with 'mean', 'mean_se', 'variance', 'variance_se'); drawn as
    mean ± 1 stderr and mean ± the measured √var. The targets at the test inputs are marked when
    the prediction has them.
    """
    try:
        tm, tv, yt = theory_prediction.mean, theory_prediction.variance, theory_prediction.y_test
    except AttributeError:
        raise ValueError("theory_prediction must be a pdlt Prediction (gradient_descent, newton_step, posterior), "
                         f"got {type(theory_prediction).__name__}") from None
    mm, ms, mv, vs = _measured_arrays(measurement)
    target = _target(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * np.size(tm)), 4.4))
    info = getattr(theory_prediction, "info", {}) or {}
    if title is None:
        method = getattr(theory_prediction, "method", "") or "trained network"
        steps = info.get("steps")
        when = "" if steps is None else (" (t = ∞)" if isinstance(steps, float) and math.isinf(steps)
                                         else f" (t = {int(steps)})")
        title = f"{method}{when}: theory (n = ∞) vs trained ensemble"
    draw_training_prediction(ax, tm, tv, mm, ms, mv, vs, yt, title=title)
    return _save(fig, target, plt)


def _mean_error_estimate(m):
    """The generalization error averaged over test inputs, with its jackknife stderr (a measurement)."""
    acc = m.accumulation
    return acc.jackknife(m.net.depth, lambda mm: np.mean(np.asarray(mm["err"])), ("err",))


def plot_test_error_vs_depth(activation, C_W_values, depths, X_train, y_train, X_test, y_test, path, *,
                             C_b: float | None = None, lambda_b: float = 0.5, lambda_W: float = 1.0,
                             steps: int | None = None, eta_fraction: float = 0.5,
                             measure_depths: Iterable[int] | None = None, width: int = 256,
                             networks: int = 200, seed: int = 0) -> Path:
    r"""The infinite-width generalization error against depth, at and off criticality (book §10.3).

    For each C_W (one curve) and depth L, the theory of the trained network (book §10.2) gives the
    expected squared error per test input, bias² + variance, averaged over the test inputs:
    :math:`\frac1{N_B}\sum_{\dot\beta}\big[(m_{\dot\beta} - y_{\dot\beta})^2 + \mathrm{Var}\,z_{\dot\beta}\big]`.
    ``steps`` None: the fully trained network (t = ∞, algorithm independent); else ``steps`` of
    gradient descent at η = ``eta_fraction`` × 2/λ_max(Θ̃) of each network. ``C_b`` defaults to the
    activation's critical C_b; learning rates λ_b, λ_W per layer. Depths where the training NTK is
    singular (deep nets lose the distinction between inputs) end the curve.

    ``measure_depths``: also train real ensembles (``networks`` of width ``width``, ``seed``) at
    these depths and plot their measured error ± 1 stderr (for t = ∞ by the one Newton step, which
    is the t = ∞ network at infinite width). Keep them small: the cost grows with depth × width².
    X_train (N_A, n_0), y_train (N_A,), X_test (N_B, n_0), y_test (N_B,).
    """
    from .mlp import MLP
    from .theory.training import gradient_descent, max_learning_rate

    act = get_activation(activation)
    C_Ws = [float(c) for c in np.atleast_1d(np.asarray(C_W_values, dtype=np.float64))]
    if not C_Ws or any(c <= 0 or not math.isfinite(c) for c in C_Ws):
        raise ValueError(f"C_W_values must be positive numbers, got {C_W_values!r}")
    Ls = sorted({int(d) for d in np.atleast_1d(np.asarray(depths))})
    if not Ls or Ls[0] < 1:
        raise ValueError(f"depths must be integers >= 1, got {depths!r}")
    XA = np.asarray(X_train, dtype=np.float64)
    if XA.ndim != 2:
        raise ValueError(f"X_train must have shape (N_A, n_0), got {XA.shape}")
    yA = _values(y_train, "y_train")
    yB = _values(y_test, "y_test")
    if steps is not None and not 0 < float(eta_fraction) < 1:
        raise ValueError(f"eta_fraction must be in (0, 1) (η = fraction × 2/λ_max converges), got {eta_fraction!r}")
    crit = None
    if C_b is None:
        from .theory.criticality import criticality

        crit = criticality(act)
        if crit.C_b is None:
            raise ValueError(f"{_label(act)} has no criticality (class {crit.universality_class!r}); pass C_b")
        C_b = float(crit.C_b)
    else:
        with _suppress():
            from .theory.criticality import criticality

            crit = criticality(act)
    crit_CW = None if crit is None or crit.C_W is None else float(crit.C_W)
    meas_Ls = sorted({int(d) for d in measure_depths}) if measure_depths is not None else []
    target = _target(path)

    def net_for(C_W, L, n=4):
        return MLP(XA.shape[1], n, L, act, C_b=C_b, C_W=C_W, lambda_b=lambda_b, lambda_W=lambda_W, output_dim=1)

    def run_theory(net):
        if steps is None:
            return gradient_descent(net, XA, yA, X_test, y_test=yB)
        eta = eta_fraction * max_learning_rate(net, XA)
        return gradient_descent(net, XA, yA, X_test, eta=eta, steps=steps, y_test=yB)

    curves, points = {}, {}
    for C_W in C_Ws:
        errs = []
        for L in Ls:
            try:
                errs.append(float(np.mean(run_theory(net_for(C_W, L)).error)))
            except (ValueError, ArithmeticError):
                errs.append(math.nan)   # singular training NTK or overflow: the curve ends here
        curves[C_W] = np.array(errs)
        if meas_Ls:
            from .empirical.training import train_ensemble

            pts = []
            for i, L in enumerate(meas_Ls):
                net = net_for(C_W, L, width)
                if steps is None:
                    m = train_ensemble(net, XA, yA, X_test, networks, seed + i, newton=True, y_test=yB,
                                       groups=max(2, min(20, int(networks))))
                else:
                    eta = eta_fraction * max_learning_rate(net, XA)
                    m = train_ensemble(net, XA, yA, X_test, networks, seed + i, eta=eta, steps=steps, y_test=yB,
                                       groups=max(2, min(20, int(networks))))
                e = _mean_error_estimate(m)
                pts.append((L, float(e.mean), float(e.stderr)))
            points[C_W] = pts
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, C_W in enumerate(C_Ws):
        col = f"C{i}"
        is_crit = crit_CW is not None and math.isclose(C_W, crit_CW, rel_tol=1e-6)
        ax.plot(Ls, curves[C_W], "-" if is_crit else "--", marker="." if len(Ls) <= 30 else None, color=col,
                lw=2.2 if is_crit else 1.4,
                label=f"$C_W$ = {C_W:.4g}" + (" (critical)" if is_crit else "") + ", theory (n = ∞)")
        if C_W in points:
            p = np.array(points[C_W])
            ax.errorbar(p[:, 0], p[:, 1], yerr=p[:, 2], fmt="o", ms=4, capsize=3, color=col, mfc="white",
                        label=f"$C_W$ = {C_W:.4g}, measured (n = {width}, {networks} nets)")
    _log_if_wide(ax, [v for c in curves.values() for v in c if np.isfinite(v)])
    if Ls[-1] > 50:
        ax.set_xscale("log")
    when = "t = ∞" if steps is None else f"t = {steps}, η = {eta_fraction:g}·η*"
    ax.set_xlabel("depth $L$")
    ax.set_ylabel(r"test error $\langle(z - y)^2\rangle$ = bias² + variance")
    ax.set_title(f"generalization error vs depth, σ = {_label(act)}, $C_b$ = {C_b:.4g}, {when} (book §10.3)",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, target, plt)


class _suppress:
    """Ignore a missing criticality engine (only used to mark the critical curve)."""

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ is not None and issubclass(typ, (ImportError, ValueError))
