"""``pdlt`` command line: theory, measurement and their comparison, layer by layer.

A thin layer over the public API (:class:`pdlt.MLP`, :func:`pdlt.theory.theory`,
:func:`pdlt.empirical.measure`). Every API error (ValueError, OverflowError, a missing file…) is
printed as one red ``error: …`` line with exit code 2; ``--json`` prints one JSON document only.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .activations import REGISTRY, get_activation, parse_activation_params
from .mlp import MLP

__all__ = ["app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="The effective theory of deep networks (Roberts & Yaida), checked on real ensembles.")

SIGMAS = 4.0
"""A check passes when |z| < SIGMAS."""

_NET = "Network"
_MC = "Monte Carlo"

# --- options shared by every command -----------------------------------------------------------

Activation = Annotated[str, typer.Option(
    help=f"Activation: {', '.join(sorted(REGISTRY))}.", rich_help_panel=_NET)]
ActivationParam = Annotated[list[str] | None, typer.Option(
    "--activation-param", metavar="NAME=VALUE",
    help="Activation parameter, e.g. a=0.2 for leaky_relu (repeatable; parsed, never evaluated).",
    rich_help_panel=_NET)]
Depth = Annotated[int, typer.Option(help="Number of layers L (the last is the output).",
                                    rich_help_panel=_NET)]
Width = Annotated[int, typer.Option(help="Hidden (and output) width n.", rich_help_panel=_NET)]
InputDim = Annotated[int | None, typer.Option(
    help="Input dimension n0 (default: 4, or the columns of an --inputs file).", rich_help_panel=_NET,
    show_default=False)]
Widths = Annotated[str | None, typer.Option(
    metavar="n0,n1,...,nL", help="All widths, e.g. 4,64,64,1 (overrides --input-dim/--width/--depth).",
    rich_help_panel=_NET)]
CB = Annotated[str, typer.Option("--C-b", metavar="FLOAT[,...]",
                                 help="Bias variance C_b, or one per layer as a comma list.",
                                 rich_help_panel=_NET)]
CW = Annotated[str, typer.Option("--C-W", metavar="FLOAT[,...]",
                                 help="Weight variance C_W (1 = criticality for tanh), or a comma list.",
                                 rich_help_panel=_NET)]
Inputs = Annotated[str, typer.Option(
    metavar="random:N|PATH",
    help="random:N for N standard-normal inputs (seeded by --input-seed), or a .npy/.csv file of "
         "shape (N, n0), one input per row.", rich_help_panel=_NET)]
InputSeed = Annotated[int, typer.Option(help="Seed of random:N inputs.", rich_help_panel=_NET)]
Layers = Annotated[str | None, typer.Option(
    metavar="LIST", help="Layers to show, e.g. 1,3,5-6 (default: all).", rich_help_panel=_NET,
    show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print a single JSON document and nothing else.")]

Networks = Annotated[int, typer.Option(help="Ensemble size (networks sampled).", rich_help_panel=_MC)]
Seed = Annotated[int, typer.Option(help="Seed of the ensemble.", rich_help_panel=_MC)]
Method = Annotated[str, typer.Option(
    help="gaussian (exact in law, fast) or naive (explicit weights).", rich_help_panel=_MC)]
Backend = Annotated[str, typer.Option(help="numpy or torch.", rich_help_panel=_MC)]
Device = Annotated[str | None, typer.Option(help="Torch device, e.g. cpu or cuda:0.", rich_help_panel=_MC)]
Checkpoint = Annotated[str | None, typer.Option(
    metavar="DIR", help="Save finished shards in DIR; a rerun resumes from them.", rich_help_panel=_MC)]
Scheduler = Annotated[str | None, typer.Option(
    metavar="ADDRESS|local", rich_help_panel=_MC,
    help="Compute the shards on a Dask cluster (needs the 'dask' extra of pdlt): a scheduler address such as "
         "tcp://host:8786, or 'local' for a 2-worker LocalCluster; same bits as the serial run.")]


def _handle_errors(fn):
    """Turn API errors into one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, ArithmeticError, OSError, ImportError) as exc:
            msg = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in msg:
                msg = f"{msg}: {exc.filename}"
            Console(stderr=True, soft_wrap=True).print(Text(f"error: {msg}", style="bold red"))
            raise typer.Exit(2) from None

    return wrapper


# --- parsing -----------------------------------------------------------------------------------


def _numbers(option: str, text: str, kind=float):
    """'1.5' -> 1.5; '1,2,3' -> [1.0, 2.0, 3.0] (kind int or float; never evaluated)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = [kind(p) for p in parts]
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{option} must be {what} or a comma list of them, got {text!r}") from None
    return vals[0] if len(vals) == 1 and kind is float else vals


def _load_inputs(spec: str, input_dim: int | None, seed: int) -> np.ndarray:
    """random:N -> N standard-normal rows of dimension input_dim; else a .npy or .csv file."""
    if spec.startswith("random:"):
        count = spec.split(":", 1)[1].strip()
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--inputs random:N needs an integer N >= 1, got {spec!r}")
        return np.random.default_rng(seed).standard_normal((int(count), input_dim or 4))
    ext = os.path.splitext(spec)[1].lower()
    if ext not in (".npy", ".csv"):
        raise ValueError(f"--inputs must be random:N or a .npy/.csv file, got {spec!r}")
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"inputs file not found: {spec}")
    try:
        if ext == ".npy":
            return np.load(spec, allow_pickle=False)
        return np.loadtxt(spec, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"cannot read {spec} as a numeric {ext} array: {exc}") from None


def _build(activation, activation_param, depth, width, input_dim, widths, C_b, C_W, inputs,
           input_seed) -> tuple[MLP, np.ndarray]:
    params = parse_activation_params(activation, activation_param)
    ws = _numbers("--widths", widths, int) if widths is not None else None
    X = _load_inputs(inputs, ws[0] if ws else input_dim, input_seed)
    kw = dict(activation=activation, C_b=_numbers("--C-b", C_b), C_W=_numbers("--C-W", C_W),
              activation_params=params)
    if ws is not None:
        return MLP(widths=ws, **kw), X
    n0 = input_dim if input_dim is not None else (X.shape[-1] if X.ndim == 2 else 4)
    return MLP(n0, width, depth, **kw), X


def _layers(spec: str | None, net: MLP) -> list[int]:
    """'1,3,5-6' -> [1, 3, 5, 6] (checked against 1..L); None -> all layers."""
    if spec is None:
        return list(range(1, net.depth + 1))
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"--layers must list layers or ranges like 1,3,5-6, got {spec!r}") from None
        if a > b:
            raise ValueError(f"--layers range {part.strip()!r} is empty")
        out.update(net.check_layer(l) for l in range(a, b + 1))
    return sorted(out)


def _measure(net, X, layers, networks, seed, method, backend, device, checkpoint, quiet, scheduler=None):
    from .empirical import measure  # imported lazily: theory-only use needs no engine

    return measure(net, X, networks=networks, seed=seed, method=method, backend=backend, device=device,
                   layers=layers, checkpoint=checkpoint, progress=False if quiet else None,
                   scheduler=scheduler)


# --- output ------------------------------------------------------------------------------------


def _jsonable(obj):
    """Arrays -> nested lists; non-finite floats -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _emit_json(doc: dict) -> None:
    sys.stdout.write(json.dumps(_jsonable(doc), allow_nan=False) + "\n")


def _g(x) -> str:
    return f"{float(x):.4g}"


def _pm(mean, err) -> str:
    return f"{float(mean):.4g} ± {float(err):.2g}"


def _z(z) -> Text:
    z = float(z)
    return Text(f"{z:+.2f}", style="green" if abs(z) < SIGMAS else "bold red")


def _lines(items) -> str:
    return "\n".join(items)


def _matrix(cell, N: int, full_up_to: int) -> str:
    """Rows of cell(a, b) for small N; the diagonal cell(a, a) otherwise."""
    if N <= full_up_to:
        return _lines("  ".join(cell(a, b) for b in range(N)) for a in range(N))
    return "diag " + _lines(cell(a, a) for a in range(N))


def _diag(V: np.ndarray) -> np.ndarray:
    """V_{(aa)(aa)} for each input a."""
    return np.array([V[a, a, a, a] for a in range(V.shape[0])])


def _normalized(V, K, n_prev) -> np.ndarray:
    """V_{(aa)(aa)} / (n_{ℓ−1} K_aa²): the dimensionless non-Gaussianity of one input."""
    k = np.diag(K)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _diag(V) / (n_prev * k * k)


def _pairs(N):
    return [(a, b) for a in range(N) for b in range(a, N)]


def _v_entries(N):
    """Distinct V entries under (ab)(cd) = (ba)(cd) = (cd)(ab)."""
    p = _pairs(N)
    return [(*p[i], *p[j]) for i in range(len(p)) for j in range(i, len(p))]


def _header(console, net, X, extra="") -> None:
    console.print(Text(f"{net!r}; N = {X.shape[0]} input(s){extra}", style="dim"))


# --- commands ----------------------------------------------------------------------------------


@app.command()
@_handle_errors
def theory(
    activation: Activation = "tanh", activation_param: ActivationParam = None, depth: Depth = 6,
    width: Width = 64, input_dim: InputDim = None, widths: Widths = None, C_b: CB = "0",
    C_W: CW = "1", inputs: Inputs = "random:2", input_seed: InputSeed = 0, layers: Layers = None,
    json_: Json = False,
):
    """Leading-order theory per layer: kernel K, four-point vertex V and 1/n correction G1 (book Ch. 4)."""
    from . import theory as th_mod

    net, X = _build(activation, activation_param, depth, width, input_dim, widths, C_b, C_W, inputs,
                    input_seed)
    th = th_mod.theory(net, X)
    chosen = _layers(layers, net)
    if json_:
        doc = th.to_dict()
        doc["layers"] = [dict(th.layer(l).to_dict(), V_normalized=_normalized(
            th.layer(l).V, th.layer(l).K, th.layer(l).n_prev)) for l in chosen]
        _emit_json(doc)
        return
    console = Console()
    _header(console, net, X)
    table = Table(title=Text("theory: K, G1 (row a, columns b), V_(aa)(aa) and V/(n K²) per input a"))
    for col in ("ℓ", "n_{ℓ−1}", "K", "G1", "V_(aa)(aa)", "V/(n K²)"):
        table.add_column(col, justify="right")
    for l in chosen:
        s = th.layer(l)
        N = s.K.shape[0]
        table.add_row(str(l), str(s.n_prev), _matrix(lambda a, b: _g(s.K[a, b]), N, 4),
                      _matrix(lambda a, b: _g(s.G1[a, b]), N, 4), _lines(map(_g, _diag(s.V))),
                      _lines(map(_g, _normalized(s.V, s.K, s.n_prev))), end_section=True)
    console.print(table)


@app.command()
@_handle_errors
def measure(
    activation: Activation = "tanh", activation_param: ActivationParam = None, depth: Depth = 6,
    width: Width = 64, input_dim: InputDim = None, widths: Widths = None, C_b: CB = "0",
    C_W: CW = "1", inputs: Inputs = "random:2", input_seed: InputSeed = 0, layers: Layers = None,
    networks: Networks = 20000, seed: Seed = 0, method: Method = "gaussian", backend: Backend = "numpy",
    device: Device = None, checkpoint: Checkpoint = None, scheduler: Scheduler = None, json_: Json = False,
):
    """Measure G = ⟨z z⟩ and V on an ensemble of random networks (mean ± jackknife standard error)."""
    net, X = _build(activation, activation_param, depth, width, input_dim, widths, C_b, C_W, inputs,
                    input_seed)
    chosen = _layers(layers, net)
    m = _measure(net, X, chosen, networks, seed, method, backend, device, checkpoint, json_, scheduler)
    if json_:
        _emit_json(m.to_dict())
        return
    console = Console()
    _header(console, net, X, f"; {m.networks} networks, seed {m.seed}, {m.method}, {m.backend} on {m.device}")
    table = Table(title=Text("measured: G (row a, columns b) and V_(aa)(aa) per input a, mean ± error"))
    for col in ("ℓ", "n_ℓ", "G", "V_(aa)(aa)"):
        table.add_column(col, justify="right")
    for l in chosen:
        G = m.layer(l).G
        N = G.shape[0]
        g = _matrix(lambda a, b: _pm(G.mean[a, b], G.stderr[a, b]), N, 3)
        if net.n(l) >= 2:
            V = m.layer(l).V
            v = _lines(_pm(V.mean[a, a, a, a], V.stderr[a, a, a, a]) for a in range(N))
        else:
            v = "n/a (n_ℓ = 1)"
        table.add_row(str(l), str(net.n(l)), g, v, end_section=True)
    console.print(table)


@app.command()
@_handle_errors
def compare(
    activation: Activation = "tanh", activation_param: ActivationParam = None, depth: Depth = 6,
    width: Width = 64, input_dim: InputDim = None, widths: Widths = None, C_b: CB = "0",
    C_W: CW = "1", inputs: Inputs = "random:2", input_seed: InputSeed = 0, layers: Layers = None,
    networks: Networks = 20000, seed: Seed = 0, method: Method = "gaussian", backend: Backend = "numpy",
    device: Device = None, checkpoint: Checkpoint = None, json_: Json = False,
):
    """Theory vs measurement per layer (the observables table): G vs K + G1/n, and V.

    Each row passes when every entry satisfies |measured − theory| ≤ k·stderr + the O(1/n²)
    allowance, with k the family-wise threshold (≥ 4). Layers where the 1/n expansion has broken
    down (relative 1/n effect ε > 0.5) are shown but not judged.
    """
    from . import theory as th_mod
    from .observables import compare as compare_twins
    from .observables import family_threshold

    net, X = _build(activation, activation_param, depth, width, input_dim, widths, C_b, C_W, inputs,
                    input_seed)
    chosen = _layers(layers, net)
    th = th_mod.theory(net, X)
    m = _measure(net, X, chosen, networks, seed, method, backend, device, checkpoint, json_)
    rows = [r for r in compare_twins(th, m, layers=chosen) if r.measured is not None]
    k = family_threshold(rows)
    judged = [r for r in rows if r.valid]
    passed = [r for r in judged if r.ok(k)]
    # diagnostic: the kernel without its 1/n correction
    no_g1 = {l: float(np.max(np.abs(m.layer(l).G.z_score(th.layer(l).K)))) for l in chosen}
    if json_:
        _emit_json({"net": net.to_dict(), "X": X, "networks": m.networks, "seed": m.seed, "method": m.method,
                    "backend": m.backend, "device": m.device, "threshold": k,
                    "rows": [r.to_dict() for r in rows], "max_abs_z_G_vs_K_alone": no_g1,
                    "checks": {"passed": len(passed), "judged": len(judged), "total": len(rows)}})
        return
    console = Console()
    _header(console, net, X, f"; {m.networks} networks, seed {m.seed}, {m.method}, {m.backend}")
    table = Table(title=Text(f"theory vs measurement: |Δ| ≤ {k:.2f}·stderr + O(1/n²) allowance"))
    for col in ("ℓ", "obs", "theory (diag)", "measured (diag)", "ε", "max|z|", "verdict"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        diag = np.diagonal(r.theory) if r.name == "G" else np.array([r.theory[a, a, a, a] for a in range(len(X))])
        mdiag = (np.diagonal(r.measured.mean), np.diagonal(r.measured.stderr)) if r.name == "G" else (
            np.array([r.measured.mean[a, a, a, a] for a in range(len(X))]),
            np.array([r.measured.stderr[a, a, a, a] for a in range(len(X))]))
        verdict = (Text("not judged", style="dim") if not r.valid
                   else Text("ok", style="green") if r.ok(k) else Text("FAIL", style="bold red"))
        table.add_row(str(r.layer), r.name, _lines(_g(x) for x in diag),
                      _lines(f"{_g(a)}±{b:.1g}" for a, b in zip(*mdiag)), f"{r.effect:.2g}",
                      _z(r.max_abs_z()), verdict, end_section=(r.name == "V"))
    console.print(table)
    console.print(Text("G: E[z_a z_b] vs K + G1/n_{ℓ-1};  V: n_{ℓ-1}·Cov(z_i z_i, z_j z_j) vs V;  "
                       "ε: relative 1/n effect (judged when ε ≤ 0.5)", style="dim"))
    worst = max(no_g1.values()) if no_g1 else 0.0
    console.print(Text(f"G vs K alone (no 1/n correction): max |z| = {worst:.1f}", style="dim"))
    console.print(Text(f"{len(passed)}/{len(judged)} judged checks pass ({len(rows) - len(judged)} not judged)",
                       style="bold green" if len(passed) == len(judged) else "bold yellow"))


# --- criticality and tuning (book Ch. 5, App. A) -----------------------------------------------

ActArg = Annotated[str, typer.Argument(metavar="ACT", help=f"Activation: {', '.join(sorted(REGISTRY))}.",
                                       show_default=False)]

LEARNING_RATE_SECTION = "book Ch. 9: learning-rate equivalence principle"
TORCH_LR_HINT = ("torch.optim.SGD(pdlt.torch.param_groups(model, scaling='equivalence', lr=η)) trains with these "
                 "λ (one group per bias and weight; weights get λ_W/fan_in)")


def _learning_rates(act, crit, depth: int, depth_source: str, xi: float) -> dict:
    """The "learning_rate" entry of ``pdlt tune``: the equivalence principle's λ per layer (book Ch. 9).

    λ_b^{(ℓ)}, λ_W^{(ℓ)} make every layer contribute equally to the NTK Θ^{(L)} (λ̃_b = λ̃_W = 1);
    scalings and the resulting Θ^{(L)} as in ``Criticality.ntk``.
    """
    if depth < 1:
        if depth_source == "--depth":
            raise ValueError(f"--depth must be >= 1, got {depth}")
        return {"implemented": False, "depth": depth, "depth_source": depth_source,
                "note": "the recommended maximum depth is 0 at this width: give --depth L for learning rates"}
    if xi != 0.0:
        return {"implemented": False, "depth": depth, "depth_source": depth_source,
                "note": "the learning-rate equivalence principle (book Ch. 9) is implemented for plain MLPs "
                        "(--xi 0) only, not for residual networks"}
    from .theory.learning_rates import equivalence_principle, theta_limit

    lam_b, lam_W = equivalence_principle(act, depth)
    ntk = crit.ntk
    value = None if crit.universality_class == "scale-invariant" else theta_limit(act)  # K* = K⁽¹⁾ there
    return {"implemented": True, "section": LEARNING_RATE_SECTION, "depth": depth, "depth_source": depth_source,
            "lambda_b_tilde": 1.0, "lambda_W_tilde": 1.0,
            "lambda_b_rule": ntk.lambda_b, "lambda_W_rule": ntk.lambda_W,
            "rule": f"{ntk.lambda_b}, {ntk.lambda_W} with λ̃_b = λ̃_W = 1",
            "Theta_limit": ntk.theta_limit, "Theta_limit_value": value,
            "lambda_b": list(lam_b), "lambda_W": list(lam_W),
            "weight_lr": "λ_W^(ℓ)/n_(ℓ−1) per weight, λ_b^(ℓ) per bias",
            "pytorch": TORCH_LR_HINT}


def _activation(name: str, params: list[str] | None):
    return get_activation(name, **parse_activation_params(name, params))


def _act_label(act) -> str:
    p = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in act.params.items())
    return f"{act.name}({p})" if p else act.name


@app.command()
@_handle_errors
def criticality(act: ActArg, activation_param: ActivationParam = None, json_: Json = False):
    """Criticality of an activation (book Ch. 5): universality class, critical (C_b, C_W), K*, asymptotics."""
    a = _activation(act, activation_param)
    from .theory.criticality import criticality as solve

    crit = solve(a)
    if json_:
        _emit_json(crit.to_dict())
        return
    _print_criticality(Console(), a, crit)


def _print_criticality(console: Console, act, crit) -> None:
    """Criticality.report() laid out with rich: the numbers, the explanation, the asymptotic laws."""
    cls = crit.universality_class
    none = cls == "none"
    console.print(Text(f"Criticality of {_act_label(act)}: {cls}", style="bold yellow" if none else "bold green"))
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("universality class", cls)
    if crit.C_W is not None:
        table.add_row("critical C_b, C_W", f"{crit.C_b:.10g}, {crit.C_W:.10g}")
        table.add_row("fixed point K*", "a line of fixed points (every K)" if crit.K_star is None
                      else f"{crit.K_star:.10g}")
    for key in ("a1", "b1", "p_perp", "nu"):
        if getattr(crit, key) is not None:
            table.add_row(key, f"{getattr(crit, key):.6g}")
    if crit.stable_side:
        table.add_row("stable side", crit.stable_side)
    console.print(table)
    console.print(Panel(Text(crit.explanation), title="what it means (book Ch. 5)", title_align="left",
                        border_style="yellow" if none else "green"))
    if crit.asymptotics:
        laws = Table(title=Text("asymptotics at large depth ℓ"), title_justify="left")
        laws.add_column("law")
        laws.add_column("source")
        for law in crit.asymptotics:
            laws.add_row(Text(law.text), law.source)  # Text: "[z²]" is not rich markup
        console.print(laws)
    if crit.ntk is not None:
        _print_ntk(console, crit.ntk)
    if getattr(crit, "dntk", None) is not None:
        _print_dntk(console, crit.dntk)
    if none:
        console.print(Text(f"{_act_label(act)} has no criticality (universality class 'none'): no choice of "
                           "(C_b, C_W) keeps deep signals from decaying or exploding exponentially.",
                           style="bold yellow"))


def _print_laws(console: Console, title: str, laws) -> None:
    """A table of depth laws (text, source), nothing when there are none."""
    if not laws:
        return
    table = Table(title=Text(title), title_justify="left")
    table.add_column("law")
    table.add_column("source")
    for law in laws:
        table.add_row(Text(law.text), law.source)
    console.print(table)


def _print_ntk(console: Console, ntk) -> None:
    """Criticality.ntk (book Ch. 9): gradients, equivalence-principle learning rates, NTK laws."""
    console.print(Panel(Text(ntk.gradients), title="NTK: gradients and learning rates (book Ch. 9)",
                        title_align="left", border_style="green"))
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("χ⊥ at criticality", f"{ntk.chi_perp:.6g}")
    table.add_row("off criticality", Text(ntk.off_criticality))
    table.add_row("λ_b per layer", Text(ntk.lambda_b))
    table.add_row("λ_W per layer", Text(ntk.lambda_W))
    table.add_row("NTK Θ^(L)", Text(ntk.theta_limit))
    console.print(table)
    _print_laws(console, "NTK asymptotics at large depth ℓ (layer-independent λ)", ntk.laws)
    if ntk.unknown:
        console.print(Text(ntk.unknown, style="yellow"))


def _print_dntk(console: Console, dntk) -> None:
    """Criticality.dntk (book Ch. 11, ∞): normalized dNTK/ddNTK statistics and their depth scaling."""
    console.print(Panel(Text(f"{dntk.normalization}\n\nLearning rates: {dntk.learning_rates}"),
                        title="dNTK and ddNTKs at criticality (book Ch. 11, ∞)", title_align="left",
                        border_style="green"))
    _print_laws(console, "dNTK/ddNTK depth scaling (one input, large depth ℓ)", dntk.laws)
    if dntk.notes:
        console.print(Text(dntk.notes))
    if dntk.unknown:
        console.print(Text(dntk.unknown, style="yellow"))


@app.command()
@_handle_errors
def tune(
    activation: Annotated[str, typer.Option(help=f"Activation: {', '.join(sorted(REGISTRY))}.",
                                            show_default=False)],
    width: Annotated[int, typer.Option(help="Hidden width n of the network.", show_default=False)],
    n_out: Annotated[int, typer.Option(help="Output width n_L.")] = 1,
    xi: Annotated[float, typer.Option(
        help="Residual skip strength ξ, |ξ| < 1: z' = ξz + b + Wσ(z) (App. B); 0 for a plain MLP.")] = 0.0,
    depth: Annotated[int | None, typer.Option(
        help="Depth L for the per-layer learning rates λ_b, λ_W of the equivalence principle (Ch. 9); "
             "default: the recommended maximum depth.", show_default=False)] = None,
    activation_param: ActivationParam = None,
    json_: Json = False,
):
    """Practical initialization for a width: critical (C_b, C_W), class, maximum depth from r* (App. A)
    and learning rates.

    The learning rates are the equivalence principle's per-layer λ_b, λ_W (book Ch. 9), for the
    recommended maximum depth or --depth L, with the resulting NTK Θ^(L)."""
    a = _activation(activation, activation_param)
    from .theory.aspect_ratio import effective_nu, optimal_aspect_ratio, recommended_max_depth
    from .theory.criticality import criticality as solve
    from .theory.residual import residual_critical

    crit = solve(a)
    if crit.universality_class == "none":
        raise ValueError(f"{_act_label(a)} has no criticality (universality class 'none'), so there are no "
                         f"critical (C_b, C_W) to recommend: {crit.explanation}")
    C_b, C_W = (float(crit.C_b), float(crit.C_W)) if xi == 0.0 else map(float, residual_critical(a, xi))
    max_depth = int(recommended_max_depth(a, width, n_L=n_out, xi=xi))
    nu = float(effective_nu(a, width, n_L=n_out, xi=xi))
    r_star = float(optimal_aspect_ratio(nu, n_out))
    network = "mlp" if xi == 0.0 else "residual"
    doc = {"activation": a.name, "activation_params": a.params, "universality_class": crit.universality_class,
           "network": network, "C_b": C_b, "C_W": C_W, "width": width, "n_out": n_out, "xi": xi, "nu": nu,
           "optimal_aspect_ratio": r_star, "recommended_max_depth": max_depth,
           "learning_rate": _learning_rates(a, crit, max_depth if depth is None else depth,
                                            "recommended max depth" if depth is None else "--depth", xi)}
    if json_:
        _emit_json(doc)
        return
    console = Console()
    kind = "MLP" if xi == 0.0 else f"residual MLP (ξ = {xi:g})"
    table = Table(title=Text(f"critical initialization of a width-{width} {_act_label(a)} {kind}"),
                  show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("universality class", crit.universality_class)
    where = "Ch. 5" if xi == 0.0 else "(1 − ξ²) × the plain values, App. B"
    table.add_row("C_b, C_W", f"{C_b:.6g}, {C_W:.6g}   (b ~ N(0, C_b), W ~ N(0, C_W/fan_in); {where})")
    table.add_row("max depth", f"L ≤ {max_depth}   (r* = L/n = 4/((20 + 3n_L)ν) ≈ {r_star:.4g} with "
                               f"ν = {nu:.4g}, n_L = {n_out}; App. A)")
    lr = doc["learning_rate"]
    if lr["implemented"]:
        L = lr["depth"]
        table.add_row("learning rates", Text(f"{lr['rule']}   ({lr['section']})"))
        table.add_row("depth L", f"{L}   ({lr['depth_source']})")
        shown = [f"ℓ={ell}: λ_b={b:.4g}, λ_W={w:.4g}" for ell, b, w in
                 zip(range(1, L + 1), lr["lambda_b"], lr["lambda_W"])]
        if len(shown) > 6:
            shown = shown[:3] + ["…"] + shown[-2:]
        table.add_row("λ per layer", "\n".join(shown) + "\n(all layers: --json)" * (L > 6))
        value = "" if lr["Theta_limit_value"] is None else f"; {lr['Theta_limit_value']:.6g} at λ̃_b = λ̃_W = 1"
        table.add_row("NTK Θ^(L)", Text(f"{lr['Theta_limit']}{value}   (each layer contributes 1/L; formula sheet §5)"))
    else:
        table.add_row("learning rates", lr["note"])
    console.print(table)
    if xi == 0.0:
        console.print(Text("PyTorch: pdlt.torch.critical_init_(model) draws these in place",
                           style="dim"))
        if lr["implemented"]:
            console.print(Text(f"PyTorch: {TORCH_LR_HINT}", style="dim"))


VerifyOut = Annotated[str, typer.Option(
    "--out", metavar="DIR",
    help="Output directory: report.html, summary.json, and the saved results a rerun resumes from.")]


@app.command()
@_handle_errors
def verify(
    quick: Annotated[bool, typer.Option("--quick", help="Smaller ensembles: under 45 s on two cores.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Publication-quality ensembles (much slower).")] = False,
    out: VerifyOut = "pdlt-verify",
    checks: Annotated[str | None, typer.Option(
        "--checks", metavar="a,b", help="Run only these checks (default: all), e.g. kernel,vertex.",
        show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Reuse finished checks and measurement shards found in --out.")] = True,
    json_: Json = False,
):
    """Check every observable's theory against real network ensembles; write an HTML report.

    Default settings take under 3 minutes on two cores, --quick under 45 s. Exit status 0 when
    every check passes, 1 when any check fails (or errors), 2 on bad arguments.
    """
    from .verify import print_summary, run_verify

    if quick and full:
        raise ValueError("give --quick or --full, not both")
    mode = "quick" if quick else "full" if full else "default"
    res = run_verify(out, mode=mode, resume=resume, progress=False if json_ else None, json_only=json_,
                     checks=checks)
    if json_:
        _emit_json(res.to_dict())
    else:
        print_summary(res, Console())
    raise typer.Exit(res.exit_code)


# --- training: the infinite-width trained network vs a trained ensemble (book Ch. 10) -----------

#: The O(1/n) allowance of the trained-network twins, ALLOW/n (tests/empirical/test_training.py).
TRAIN_ALLOW = 3.0
_DATA = "Data"
_TRAIN = "Training"
_DATA_DEFAULTS = {"synthetic": (6, 4), "digits": (10, 6)}
#: The two digit classes of --data digits (targets +1 and −1).
DIGIT_CLASSES = (3, 8)

CriticalCB = Annotated[str | None, typer.Option(
    "--C-b", metavar="FLOAT[,...]", help="Bias variance C_b (default: the activation's critical value).",
    rich_help_panel=_NET, show_default=False)]
CriticalCW = Annotated[str | None, typer.Option(
    "--C-W", metavar="FLOAT[,...]", help="Weight variance C_W (default: the activation's critical value).",
    rich_help_panel=_NET, show_default=False)]


def _train_data(spec: str, input_dim: int | None, seed: int):
    """(X_train, y_train, X_test, y_test, description) for --data synthetic[:N,M] or digits[:N,M]."""
    name, _, sizes = str(spec).partition(":")
    name = name.strip().lower()
    if name not in _DATA_DEFAULTS:
        raise ValueError(f"--data must be synthetic[:N_train,N_test] or digits[:N_train,N_test], got {spec!r}")
    N, M = _DATA_DEFAULTS[name]
    if sizes:
        parts = [p.strip() for p in sizes.split(",")]
        if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise ValueError(f"--data {name}:N_train,N_test needs two integers >= 1, got {spec!r}")
        N, M = int(parts[0]), int(parts[1])
    rng = np.random.default_rng(seed)
    if name == "synthetic":
        n0 = 4 if input_dim is None else input_dim
        if n0 < 1:
            raise ValueError(f"--input-dim must be >= 1, got {n0}")
        w = rng.standard_normal(n0)
        X = rng.standard_normal((N + M, n0))
        y = np.sin(X @ w / math.sqrt(n0))
        desc = f"synthetic: y = sin(w·x/√n0), x ~ N(0, 1), n0 = {n0}, seed {seed}"
        return X[:N], y[:N], X[N:], y[N:], desc
    if input_dim is not None:
        raise ValueError("--input-dim applies to --data synthetic only (digits have 64 pixels)")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("--data digits needs scikit-learn: pip install 'pdlt[sklearn]'") from None
    digits = load_digits()
    pos, neg = (np.flatnonzero(digits.target == c) for c in DIGIT_CLASSES)
    n_pos = [(N + 1) // 2, (M + 1) // 2]
    n_neg = [N - n_pos[0], M - n_pos[1]]
    if n_pos[0] + n_pos[1] > len(pos) or n_neg[0] + n_neg[1] > len(neg):
        raise ValueError(f"--data digits: at most {len(neg)} samples per class, got {spec!r}")
    pos, neg = rng.permutation(pos), rng.permutation(neg)
    train = np.concatenate([pos[:n_pos[0]], neg[:n_neg[0]]])
    test = np.concatenate([pos[n_pos[0]:n_pos[0] + n_pos[1]], neg[n_neg[0]:n_neg[0] + n_neg[1]]])
    train, test = rng.permutation(train), rng.permutation(test)
    X = digits.data.astype(np.float64)
    mu, sd = X[train].mean(axis=0), X[train].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)       # pixels constant on the training set: centred, not scaled
    X = (X - mu) / sd
    y = np.where(digits.target == DIGIT_CLASSES[0], 1.0, -1.0)
    desc = (f"digits {DIGIT_CLASSES[0]} (+1) vs {DIGIT_CLASSES[1]} (−1), 8×8 pixels standardized on the "
            f"training set, seed {seed}")
    return X[train], y[train], X[test], y[test], desc


#: Critical (C_b, C_W) in closed form: tanh (K* = 0 class) and ReLU (scale-invariant), book §5.2–5.3.
_EXACT_CRITICAL = {"tanh": (0.0, 1.0), "relu": (0.0, 2.0)}


def _critical_point(act, C_b, C_W):
    if C_b is not None and C_W is not None:
        return _numbers("--C-b", C_b), _numbers("--C-W", C_W)
    exact = _EXACT_CRITICAL.get(act.name) if not act.params else None
    if exact is not None:      # known in closed form (book §5.2–5.3): skip the numerical solve
        return (exact[0] if C_b is None else _numbers("--C-b", C_b),
                exact[1] if C_W is None else _numbers("--C-W", C_W))
    from .theory.criticality import criticality as solve

    crit = solve(act)
    if crit.C_W is None:
        raise ValueError(f"{_act_label(act)} has no criticality (universality class "
                         f"{crit.universality_class!r}): give --C-b and --C-W")
    return (float(crit.C_b) if C_b is None else _numbers("--C-b", C_b),
            float(crit.C_W) if C_W is None else _numbers("--C-W", C_W))


@app.command("train-predict")
@_handle_errors
def train_predict(
    activation: Activation = "tanh", activation_param: ActivationParam = None, depth: Depth = 2,
    width: Width = 512, input_dim: Annotated[int | None, typer.Option(
        help="Input dimension n0 of --data synthetic (default 4).", rich_help_panel=_DATA,
        show_default=False)] = None,
    C_b: CriticalCB = None, C_W: CriticalCW = None,
    lambda_b: Annotated[float, typer.Option("--lambda-b", help="Bias learning rate λ_b (every layer).",
                                            rich_help_panel=_NET)] = 0.5,
    lambda_W: Annotated[float, typer.Option("--lambda-W", help="Weight learning rate λ_W (every layer; "
                                            "λ_W/fan_in per weight).", rich_help_panel=_NET)] = 1.0,
    data: Annotated[str, typer.Option(
        metavar="synthetic[:N,M]|digits[:N,M]",
        help="Training and test data: synthetic 1-D regression y = sin(w·x/√n0) (default 6 training, 4 test "
             "inputs), or digits: scikit-learn's 8×8 digits 3 vs 8 as ±1 targets (default 10, 6), "
             "standardized.", rich_help_panel=_DATA)] = "synthetic",
    data_seed: Annotated[int, typer.Option(help="Seed of the data (draw or subsample).",
                                           rich_help_panel=_DATA)] = 0,
    eta: Annotated[float | None, typer.Option(
        help="Global learning rate η (default: half of η* = 2/λ_max(Θ̃), the infinite-width divergence "
             "threshold).", rich_help_panel=_TRAIN, show_default=False)] = None,
    steps: Annotated[int | None, typer.Option(
        help="Full-batch gradient-descent steps (default 16).", rich_help_panel=_TRAIN, show_default=False)] = None,
    newton: Annotated[bool, typer.Option(
        "--newton", help="One Newton step instead (matrix learning rate Ĥ_AA⁻¹; at infinite width the "
                         "fully trained t = ∞ network).", rich_help_panel=_TRAIN)] = False,
    finite_width: Annotated[bool, typer.Option(
        "--finite-width", help="Also the O(1/n) trained mean (Ch. ∞: H¹, NTK fluctuations, dNTK, ddNTK; "
                               "pdlt.theory.finite_width_mean). Costly for many inputs; verified for smooth activations; for "
                               "ReLU against --frozen-slopes networks, and against real networks after --newton (the "
                               "δ-function terms of the kinks; after gradient descent real ReLU networks differ by "
                               "O(n^-1/2)).",
                               rich_help_panel=_TRAIN)] = False,
    frozen_slopes: Annotated[bool, typer.Option(
        "--frozen-slopes", help="Piecewise-linear activations: train networks whose hidden neurons keep their "
                                "initialization slope at each input (the network the a.e. 1/n expansion "
                                "describes; the kink crossings of real networks removed).",
                                rich_help_panel=_TRAIN)] = False,
    networks: Annotated[int, typer.Option(help="Networks trained.", rich_help_panel=_MC)] = 500,
    seed: Seed = 0,
    plot: Annotated[str | None, typer.Option(
        metavar="PATH", help="Write a figure (.png or .svg): theory mean ± √var vs measured mean ± stderr "
                             "and ± √var per test input.", show_default=False)] = None,
    json_: Json = False,
):
    """Trained networks: the infinite-width theory vs an ensemble of real networks trained on data (book Ch. 10).

    Per test input: the mean and variance (over initializations) of the trained output, theory vs
    measured (jackknife standard errors), z-scores with the O(1/n) allowance 3/n of the test suite,
    plus the test error (bias² + variance) and the final training loss. A comparison passes when
    |z| ≤ the family-wise threshold (≥ 4). This is a report: the exit code is 0 whether or not the
    comparisons pass (2 on bad input).
    """
    import warnings

    from rich import box

    from .activations import get_activation as _get
    from .empirical.training import train_ensemble
    from .theory import training as tr
    from .verify import bonferroni

    if newton and (steps is not None or eta is not None):
        raise ValueError("--newton takes one matrix-learning-rate step: give --newton or --steps/--eta, not both")
    if plot is not None:
        from . import plots

        plots._target(plot)
        plots._pyplot()
    params = parse_activation_params(activation, activation_param)
    act = _get(activation, **params)
    cb, cw = _critical_point(act, C_b, C_W)
    XA, yA, XB, yB, desc = _train_data(data, input_dim, data_seed)
    net = MLP(XA.shape[1], width, depth, activation, C_b=cb, C_W=cw, lambda_b=lambda_b, lambda_W=lambda_W,
              output_dim=1, activation_params=params)
    eta_max = tr.max_learning_rate(net, XA)
    if newton:
        th = tr.newton_step(net, XA, yA, XB, y_test=yB)
        run = dict(newton=True)
    else:
        steps = 16 if steps is None else steps
        eta = 0.5 * eta_max if eta is None else eta
        with warnings.catch_warnings():
            warnings.simplefilter("error", tr.DivergenceWarning)
            try:
                th = tr.gradient_descent(net, XA, yA, XB, eta=eta, steps=steps, y_test=yB)
            except tr.DivergenceWarning as exc:
                raise ValueError(str(exc)) from None
        run = dict(eta=eta, steps=steps)
    m = train_ensemble(net, XA, yA, XB, networks, seed, y_test=yB, groups=max(2, min(20, networks)),
                       progress=False if json_ else None, frozen_slopes=frozen_slopes, **run)
    fw = None
    # real kinked networks after one Newton step: the δ-function terms of the kink crossings
    kinks = "delta" if newton and not frozen_slopes and not act.smooth else "a.e."
    if finite_width:
        from .theory.finite_width import finite_width_mean
        fw = finite_width_mean(net, XA, yA, XB, kinks=kinks, **run).total
    allow = TRAIN_ALLOW / width
    z_mean = np.atleast_1d(m.mean.z_score(th.mean, allow))
    z_var = np.atleast_1d(m.variance.z_score(th.variance, allow))
    err = m.accumulation.jackknife(depth, lambda mm: np.mean(np.asarray(mm["err"])), ("err",))
    summary = [("test error (mean over test inputs)", float(np.mean(th.error)), err)]
    if not newton:
        loss_th = tr.expected_loss(net, XA, yA, eta=eta, steps=steps)[-1]
        summary.append((f"training loss after {steps} steps", float(loss_th), m.loss[steps]))
    z_sum = [float(e.z_score(t, allow)) for _, t, e in summary]
    k = bonferroni(z_mean.size + z_var.size + len(summary))
    zs = np.concatenate([z_mean, z_var, z_sum])
    passed, total = int(np.sum(np.abs(zs) <= k)), int(zs.size)
    path = None
    if plot is not None:
        path = str(plots.plot_training_prediction(th, m, plot))
    method = ("newton step" if newton else "gradient descent") + (", frozen slopes" if frozen_slopes else "")
    if json_:
        rows = [{"test_input": b, "y": yB[b], "theory_mean": th.mean[b], "measured_mean": m.mean.mean[b],
                 "mean_stderr": m.mean.stderr[b], "z_mean": z_mean[b], "theory_variance": th.variance[b],
                 "measured_variance": m.variance.mean[b], "variance_stderr": m.variance.stderr[b],
                 "z_variance": z_var[b], "ok": bool(abs(z_mean[b]) <= k and abs(z_var[b]) <= k)}
                | ({} if fw is None else {"finite_width_mean": fw[b]})
                for b in range(len(yB))]
        _emit_json({"net": net.to_dict(), "data": {"spec": data, "description": desc, "seed": data_seed,
                                                   "X_train": XA, "y_train": yA, "X_test": XB, "y_test": yB},
                    "training": {"method": method, "eta": None if newton else eta, "eta_max": eta_max,
                                 "steps": 1 if newton else steps, "networks": m.networks, "seed": m.seed,
                                 "frozen_slopes": frozen_slopes, "finite_width_kinks": kinks if finite_width else None},
                    "theory": th.to_dict(), "measured": m.to_dict() | {"test_error": err.to_dict()},
                    "rows": rows,
                    "summary_rows": [{"name": nm, "theory": t, "measured": e.to_dict(), "z": z,
                                      "ok": bool(abs(z) <= k)} for (nm, t, e), z in zip(summary, z_sum)],
                    "allowance": allow, "threshold": k,
                    "checks": {"passed": passed, "total": total, "ok": passed == total}, "plot": path})
        return
    console = Console()
    how = ("one Newton step (ηΘ̃ = 1 ⇔ t = ∞)" if newton else
           f"{steps} steps of gradient descent, η = {eta:.4g} = {eta / eta_max:.3g}·η*, η* = 2/λ_max(Θ̃) = {eta_max:.4g}")
    console.print(Text(f"{net!r}; λ_b = {lambda_b:g}, λ_W = {lambda_W:g}", style="dim"))
    console.print(Text(f"data: {desc}; {len(yA)} training, {len(yB)} test inputs", style="dim"))
    console.print(Text(f"{how}; {m.networks} networks, seed {m.seed}", style="dim"))
    table = Table(title=Text(f"trained output per test input: theory (n = ∞) vs measured (n = {width})"),
                  box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False)
    cols = ("#", "y", "mean th.") + (() if fw is None else ("mean 1/n",)) + (
        "mean meas.", "z", "var th.", "var meas.", "z")
    for col in cols:
        table.add_column(col, justify="right", no_wrap=True)
    for b in range(len(yB)):
        table.add_row(str(b), _g(yB[b]), _g(th.mean[b]), *(() if fw is None else (_g(fw[b]),)),
                      _pm1(m.mean.mean[b], m.mean.stderr[b]), _zk(z_mean[b], k),
                      _g(th.variance[b]), _pm1(m.variance.mean[b], m.variance.stderr[b]), _zk(z_var[b], k))
    console.print(table)
    extra = Table(box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False)
    for col in ("observable", "theory", "measured", "z"):
        extra.add_column(col, justify="right", no_wrap=True)
    for (nm, t, e), z in zip(summary, z_sum):
        extra.add_row(nm, _g(t), _pm(e.mean, e.stderr), _zk(z, k))
    console.print(extra)
    console.print(Text(f"z = (|measured − theory| − {TRAIN_ALLOW:g}/n)/stderr, the O(1/n) allowance of the "
                       f"test suite ({allow:.2g}); pass: |z| ≤ {k:.2f} (family-wise, floor 4)", style="dim"))
    if path is not None:
        console.print(Text(f"figure: {path}", style="dim"))
    console.print(Text(f"{method}: {passed}/{total} comparisons pass",
                       style="bold green" if passed == total else "bold yellow"))


def _pm1(mean, err) -> str:
    return f"{float(mean):.4g}±{float(err):.1g}"


def _zk(z, k) -> Text:
    z = float(z)
    return Text(f"{z:+.2f}", style="green" if abs(z) <= k else "bold red")


def main() -> None:  # pragma: no cover - `python -m pdlt.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
