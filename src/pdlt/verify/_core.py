"""The verify machinery: check registry, per-check context, resumable storage and the runner.

Layout of an output directory ``OUT``::

    OUT/report.html                 self-contained report (figures inline)
    OUT/summary.json                per-check rows and the overall status
    OUT/work/<check>.json           a finished check (its rows, notes, settings); written last
    OUT/work/<check>.png            its figure
    OUT/work/parts/<check>/*.npz    finished measurements of a check (estimates), one per config
    OUT/work/checkpoints/<check>/*  engine checkpoints (``pdlt.measure(..., checkpoint=DIR)``)

Every file is written atomically (temp file in the same directory, then ``os.replace``), so a run
killed at any moment leaves only complete files.  A rerun with ``resume=True`` reuses a finished
check whose fingerprint (check name, mode, settings, format, and a digest of pdlt's sources, so that
an edited formula is always recomputed) matches, a finished part whose key and
fingerprint match, and the engine's finished shards; since every seed is fixed and the engine's
results do not depend on how the ensemble was sharded, the resumed numbers are identical to an
uninterrupted run.  Only ``json`` and ``np.load(allow_pickle=False)`` are used to read files back.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MODES", "Row", "Check", "CheckResult", "VerifyResult", "Context", "REGISTRY", "register",
           "unregister", "run_verify", "bonferroni", "Measured", "pack_estimates"]

#: Run modes: ``test`` (tiny, for the test suite), ``quick`` (< 45 s), ``default`` (< 3 min on two
#: cores), ``full`` (publication-quality sweeps).
MODES = ("test", "quick", "default", "full")

CHECK_FORMAT = "pdlt-verify-check/1"
SUMMARY_FORMAT = "pdlt-verify-summary/1"
_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")


# ---------------------------------------------------------------------------------------------
# numbers in JSON: exact round trip, no NaN/Infinity literals


def _num(x):
    """A float for JSON: repr round-trips exactly; non-finite values become the strings 'inf', 'nan'."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _unnum(x):
    return None if x is None else float(x)


def bonferroni(m: int, floor: float = 4.0, alpha: float = 1e-3) -> float:
    r"""Family-wise threshold for m comparisons: max(floor, Φ⁻¹(1 − α/2m)), as
    :func:`pdlt.observables.family_threshold` (α = 10⁻³)."""
    from scipy import special

    if m <= 0:
        return floor
    return max(floor, float(-special.ndtri(alpha / (2 * m))))


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class Row:
    """One judged comparison: an observable of one configuration at one layer (or a global fit).

    ``max_abs_z`` is the largest entrywise |z| with z = (|measured − theory| − allowance)/stderr
    (signed); ``theory``, ``measured``, ``stderr`` are the entry where it is reached (``entry``).
    Rows with ``valid = False`` are shown but not judged (``ok`` is None).
    """

    config: str
    name: str
    layer: int | None
    max_abs_z: float
    threshold: float
    valid: bool = True
    theory: float | None = None
    measured: float | None = None
    stderr: float | None = None
    allowance: float = 0.0
    entry: str = ""
    note: str = ""

    @property
    def ok(self) -> bool | None:
        """True/False for a judged row (|z| ≤ threshold), None when not judged."""
        if not self.valid:
            return None
        return bool(self.max_abs_z <= self.threshold)

    def to_dict(self) -> dict:
        return {"config": self.config, "name": self.name, "layer": self.layer,
                "max_abs_z": _num(self.max_abs_z), "threshold": _num(self.threshold), "ok": self.ok,
                "valid": self.valid, "theory": _num(self.theory), "measured": _num(self.measured),
                "stderr": _num(self.stderr), "allowance": _num(self.allowance), "entry": self.entry,
                "note": self.note}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Row":
        return cls(d["config"], d["name"], d["layer"], _unnum(d["max_abs_z"]), _unnum(d["threshold"]),
                   bool(d["valid"]), _unnum(d["theory"]), _unnum(d["measured"]), _unnum(d["stderr"]),
                   _unnum(d["allowance"]), d.get("entry", ""), d.get("note", ""))


@dataclass
class CheckResult:
    """The outcome of one check: ``status`` is "pass", "fail", "skipped" or "error"."""

    name: str
    title: str
    observable: str
    book: str
    description: str
    status: str
    mode: str
    settings: dict
    fingerprint: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    snippet: str = ""
    figure: bytes | None = None
    elapsed: float = 0.0
    resumed: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Passed, or skipped (a module it needs is missing)."""
        return self.status in ("pass", "skipped")

    @property
    def judged(self) -> list[Row]:
        return [r for r in self.rows if r.valid]

    @property
    def worst(self) -> Row | None:
        """The judged row closest to (or furthest beyond) its threshold."""
        judged = self.judged
        if not judged:
            return None

        def ratio(r):
            z = r.max_abs_z
            return math.inf if not math.isfinite(z) else z / r.threshold
        return max(judged, key=ratio)

    @property
    def seed(self):
        return self.settings.get("seed")

    def layers_judged(self) -> str:
        """The layers with judged rows, as ranges, plus the number of judged rows, e.g. '1–10 (20 rows)'."""
        layers = sorted({r.layer for r in self.judged if r.layer is not None})
        parts, start, prev = [], None, None
        for l in layers + [None]:
            if start is None:
                start = prev = l
            elif l is not None and l == prev + 1:
                prev = l
            else:
                parts.append(f"{start}" if start == prev else f"{start}–{prev}")
                start = prev = l
        n, skipped = len(self.judged), len(self.rows) - len(self.judged)
        text = ", ".join(p for p in parts if p != "None") or "—"
        text += f" ({n} row{'s' if n != 1 else ''}"
        text += f", {skipped} not judged)" if skipped else ")"
        return text

    def to_dict(self, rows: bool = True) -> dict:
        w = self.worst
        d = {"name": self.name, "title": self.title, "observable": self.observable, "book": self.book,
             "description": self.description, "status": self.status, "ok": self.ok, "mode": self.mode,
             "worst_abs_z": None if w is None else _num(w.max_abs_z),
             "threshold": None if w is None else _num(w.threshold),
             "layers_judged": self.layers_judged(), "settings": self.settings, "seed": self.seed,
             "fingerprint": self.fingerprint, "elapsed_s": round(self.elapsed, 3), "resumed": self.resumed,
             "notes": list(self.notes), "snippet": self.snippet, "error": self.error}
        if rows:
            d["rows"] = [r.to_dict() for r in self.rows]
        return d


@dataclass
class VerifyResult:
    """What :func:`run_verify` returns: every check's result, the files written, the overall status."""

    mode: str
    out_dir: Path
    checks: list[CheckResult]
    elapsed: float
    json_path: Path
    html_path: Path | None
    created: str
    machine: dict

    @property
    def ok(self) -> bool:
        """True when no check failed or errored (skipped checks do not count against it)."""
        return all(c.ok for c in self.checks)

    @property
    def status(self) -> str:
        return "PASS" if self.ok else "FAIL"

    @property
    def exit_code(self) -> int:
        """0 when every check passed (or was skipped), 1 otherwise."""
        return 0 if self.ok else 1

    def counts(self) -> dict:
        out = {"pass": 0, "fail": 0, "skipped": 0, "error": 0}
        for c in self.checks:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        from .. import __version__

        return {"format": SUMMARY_FORMAT, "status": self.status, "ok": self.ok, "exit_code": self.exit_code,
                "mode": self.mode, "pdlt_version": __version__, "source_sha256": source_digest(),
                "created": self.created,
                "machine": self.machine, "elapsed_s": round(self.elapsed, 3),
                "report": None if self.html_path is None else self.html_path.name,
                "counts": self.counts(), "checks": [c.to_dict() for c in self.checks]}


# ---------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Check:
    """A registered check: ``run(ctx)`` measures, compares and fills ``ctx`` (rows, figure, notes).

    ``settings`` maps each mode ("test", "quick", "default", "full") to a JSON-able dict (networks,
    widths, seed, …); a missing mode falls back to "default". ``requires`` lists modules (or
    ``"module:attribute"``) the check needs: when one is missing the check is skipped with a note.
    """

    name: str
    run: Callable[["Context"], None]
    title: str
    observable: str
    book: str
    description: str
    settings: Mapping[str, Mapping]
    requires: tuple[str, ...] = ()

    def settings_for(self, mode: str) -> dict:
        s = self.settings.get(mode) or self.settings["default"]
        return json.loads(json.dumps(s))  # a deep, JSON-clean copy

    def missing(self) -> list[str]:
        """The requirements that cannot be imported here."""
        out = []
        for req in self.requires:
            mod, _, attr = req.partition(":")
            try:
                m = importlib.import_module(mod)
                if attr and not hasattr(m, attr):
                    out.append(req)
            except ImportError:
                out.append(req)
        return out


#: The registered checks, in report order (registration order).
REGISTRY: dict[str, Check] = {}


def register(name: str, *, title: str, observable: str, book: str, description: str,
             settings: Mapping[str, Mapping], requires: Iterable[str] = (), replace: bool = False):
    """Decorator: register ``fn(ctx)`` as the check ``name`` (see :class:`Check`).

    Example (a future check, skipped where ``pdlt.empirical.dntk`` is missing)::

        @register("dntk", title="dNTK", observable="P, Q", book="book Ch. 11",
                  description="...", requires=("pdlt.empirical.dntk:measure_dntk",),
                  settings={"test": {...}, "quick": {...}, "default": {...}, "full": {...}})
        def dntk(ctx):
            ...                                   # ctx.settings, ctx.part(...), ctx.add_rows(...)
    """
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"check names are lower-case identifiers, got {name!r}")
    if "default" not in settings:
        raise ValueError(f"check {name!r} needs settings for the 'default' mode")
    unknown = set(settings) - set(MODES)
    if unknown:
        raise ValueError(f"check {name!r}: unknown modes {sorted(unknown)}; modes are {MODES}")

    def deco(fn):
        if name in REGISTRY and not replace:
            raise ValueError(f"a check named {name!r} is already registered (pass replace=True)")
        REGISTRY[name] = Check(name, fn, title, observable, book, description,
                               {k: dict(v) for k, v in settings.items()}, tuple(requires))
        return fn
    return deco


def unregister(name: str) -> None:
    """Remove a registered check (KeyError if unknown)."""
    del REGISTRY[name]


# ---------------------------------------------------------------------------------------------
# atomic files


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)          # mkstemp makes 0600; the report is meant to be read and shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of pdlt's Python sources (all but the command line and the report layout): a saved
    result is reused only by the code that computed it, so an edited formula is never masked by a
    resumed run."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if rel in ("cli.py", "verify/report.py"):
            continue
        h.update(rel.encode() + b"\0")
        with contextlib.suppress(OSError):
            h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def fingerprint(check: Check, mode: str, settings: dict) -> str:
    """Identifies a check's result: same check, mode, settings and code ⇒ same numbers."""
    from .. import __version__

    return _hash({"format": CHECK_FORMAT, "check": check.name, "mode": mode, "settings": settings,
                  "pdlt": __version__, "source": source_digest()})


# ---------------------------------------------------------------------------------------------
# measured estimates, storable as plain float arrays


def pack_estimates(m, names: Iterable[str], layers: Iterable[int], prefix: str = "") -> dict[str, np.ndarray]:
    """The estimates ``m.layer(l)[name]`` as plain arrays (for :meth:`Context.part`)."""
    out = {}
    for l in layers:
        view = m.layer(l)
        for nm in names:
            e = view[nm]
            out[f"{prefix}{nm}/{l}/mean"] = np.asarray(e.mean, dtype=np.float64)
            out[f"{prefix}{nm}/{l}/stderr"] = np.asarray(e.stderr, dtype=np.float64)
            out[f"{prefix}{nm}/{l}/count"] = np.asarray(int(e.count), dtype=np.int64)
    return out


class Measured:
    """Estimates restored from :func:`pack_estimates`, usable with :func:`pdlt.observables.compare`.

    ``Measured(net, arrays, names).layer(l).V`` is an :class:`~pdlt.estimate.Estimate`.
    """

    def __init__(self, net, arrays: Mapping[str, np.ndarray], names: Iterable[str], prefix: str = ""):
        from ..estimate import Estimate

        self.net = net
        self.names = tuple(names)
        self._est: dict[tuple[str, int], Estimate] = {}
        for key in arrays:
            if not key.startswith(prefix) or not key.endswith("/mean"):
                continue
            nm, l, _ = key[len(prefix):].split("/")
            if nm in self.names:
                base = f"{prefix}{nm}/{l}"
                self._est[(nm, int(l))] = Estimate(arrays[base + "/mean"], arrays[base + "/stderr"],
                                                   int(arrays[base + "/count"]))
        self.layers = tuple(sorted({l for _, l in self._est}))
        est = self._est
        # a class per instance: observables.compare looks the rows up on the type
        attrs = {nm: property(lambda self, nm=nm: est[(nm, self.layer)]) for nm in self.names}
        attrs["__getitem__"] = lambda self, nm: est[(nm, self.layer)]
        self._cls = type("MeasuredLayer", (), attrs)

    def layer(self, l: int):
        if l not in self.layers:
            raise ValueError(f"layer {l} was not measured (measured: {list(self.layers)})")
        view = self._cls()
        view.layer = l
        return view


# ---------------------------------------------------------------------------------------------
# context handed to a check


class Context:
    """What a check sees: its settings, resumable storage, and the result it fills in.

    - ``settings`` (dict), ``seed``, ``mode``.
    - ``part(key, compute)``: ``compute()`` → {name: ndarray}, saved atomically under ``key``; a
      resumed run loads it instead of recomputing. Put one measurement (one config) in a part.
    - ``checkpoint(key)``: a directory for ``pdlt.measure(..., checkpoint=...)`` (shard-level resume).
    - ``add_rows(rows)``, ``note(text)``, ``snippet(code)``, ``set_figure(fig)``, ``status(text)``.
    """

    def __init__(self, check: Check, mode: str, settings: dict, work: Path, fp: str, resume: bool,
                 status: Callable[[str], None] | None = None):
        self.check, self.mode, self.settings = check, mode, settings
        self._work, self._fp, self._resume = work, fp, resume
        self._status = status or (lambda text: None)
        self.used: set[str] = set()     # part files and checkpoint directories of this run
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.snippets: list[str] = []
        self.figure: bytes | None = None

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    def _key(self, key: str) -> str:
        return f"{_SAFE.sub('_', key)[:80]}-{_hash([self._fp, key])[:12]}"

    def part(self, key: str, compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Load the finished part ``key`` or compute and save it (atomically)."""
        path = self._work / "parts" / self.check.name / f"{self._key(key)}.npz"
        self.used.add(path.name)
        if self._resume and path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    if str(data["__fingerprint__"]) == self._fp:
                        return {k: data[k] for k in data.files if k != "__fingerprint__"}
            except (OSError, ValueError, KeyError, EOFError):
                pass  # unreadable: recompute
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        if any(a.dtype == object for a in arrays.values()):
            raise TypeError(f"part {key!r}: arrays must be numeric (object arrays would need pickle)")
        buf = io.BytesIO()
        np.savez(buf, __fingerprint__=np.array(self._fp), **arrays)
        _atomic_write(path, buf.getvalue())
        return arrays

    def checkpoint(self, key: str) -> str:
        """A directory for the engine's shard checkpoints of the measurement ``key``."""
        path = self._work / "checkpoints" / self.check.name / self._key(key)
        self.used.add(path.name)
        return os.fspath(path)

    def prune(self) -> None:
        """Delete this check's parts and checkpoints that this run did not use (other settings or code)."""
        for sub in ("parts", "checkpoints"):
            folder = self._work / sub / self.check.name
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name in self.used or entry.name.startswith("."):
                    continue
                with contextlib.suppress(OSError):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def status(self, text: str) -> None:
        self._status(text)

    def add_rows(self, rows: Iterable[Row]) -> None:
        self.rows.extend(rows)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def snippet(self, code: str) -> None:
        self.snippets.append(code.strip("\n"))

    def set_figure(self, fig) -> None:
        """A matplotlib Figure (or PNG bytes) as the check's figure."""
        if isinstance(fig, bytes | bytearray):
            self.figure = bytes(fig)
            return
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
        self.figure = buf.getvalue()


# ---------------------------------------------------------------------------------------------
# running


def _machine() -> dict:
    import platform

    import scipy

    info = {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__}
    with contextlib.suppress(AttributeError, OSError):
        info["cpus_available"] = len(os.sched_getaffinity(0))
    try:
        import matplotlib
        info["matplotlib"] = matplotlib.__version__
    except ImportError:
        info["matplotlib"] = None
    return info


def _select(checks) -> list[Check]:
    importlib.import_module(f"{__package__}.checks")    # registers the built-in checks

    if checks is None:
        return list(REGISTRY.values())
    names = [c.strip() for c in checks.split(",")] if isinstance(checks, str) else [str(c) for c in checks]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    if not names:
        raise ValueError(f"checks must name at least one check; known: {', '.join(REGISTRY)}")
    seen = set()
    return [REGISTRY[n] for n in names if not (n in seen or seen.add(n))]


def _base(check: Check, mode: str, settings: dict, fp: str, status: str) -> CheckResult:
    return CheckResult(check.name, check.title, check.observable, check.book, check.description, status,
                       mode, settings, fp)


def _load_saved(check: Check, mode: str, settings: dict, fp: str, work: Path) -> CheckResult | None:
    path = work / f"{check.name}.json"
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != CHECK_FORMAT or d.get("fingerprint") != fp:
            return None
        res = _base(check, mode, settings, fp, d["status"])
        res.rows = [Row.from_dict(r) for r in d["rows"]]
        res.notes, res.snippet, res.elapsed = list(d["notes"]), d["snippet"], float(d["elapsed_s"])
        fig = work / f"{check.name}.png"
        if d.get("figure"):
            if not fig.exists():
                return None
            res.figure = fig.read_bytes()
        res.resumed = True
        return res
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(res: CheckResult, work: Path) -> None:
    if res.figure is not None:
        _atomic_write(work / f"{res.name}.png", res.figure)
    d = res.to_dict()
    d["format"] = CHECK_FORMAT
    d["figure"] = f"{res.name}.png" if res.figure is not None else None
    _atomic_write(work / f"{res.name}.json", json.dumps(d, indent=1, allow_nan=False).encode())


def _status_of(rows: list[Row]) -> str:
    judged = [r for r in rows if r.valid]
    if not judged:
        return "error"
    return "pass" if all(r.ok for r in judged) else "fail"


def _run_check(check: Check, mode: str, work: Path, resume: bool, status) -> CheckResult:
    settings = check.settings_for(mode)
    fp = fingerprint(check, mode, settings)
    if resume:
        saved = _load_saved(check, mode, settings, fp, work)
        if saved is not None:
            return saved
    missing = check.missing()
    if missing:
        res = _base(check, mode, settings, fp, "skipped")
        res.notes = [f"skipped: needs {', '.join(missing)}, not available in this installation"]
        return res
    ctx = Context(check, mode, settings, work, fp, resume, status)
    t0 = time.perf_counter()
    res = _base(check, mode, settings, fp, "error")
    try:
        check.run(ctx)
    except Exception as exc:  # a broken check is reported (status "error"), not fatal to the run
        res.error = f"{type(exc).__name__}: {exc}"
        res.notes = ctx.notes + ["traceback (last lines): " + " | ".join(
            traceback.format_exc().strip().splitlines()[-6:])]
        res.rows, res.snippet, res.figure = ctx.rows, "\n\n".join(ctx.snippets), ctx.figure
        res.elapsed = time.perf_counter() - t0
        return res
    res.elapsed = time.perf_counter() - t0
    res.rows, res.notes, res.snippet, res.figure = ctx.rows, ctx.notes, "\n\n".join(ctx.snippets), ctx.figure
    res.status = _status_of(ctx.rows)
    if res.status == "error":
        res.error = "the check produced no judged rows"
    else:
        _save(res, work)
        ctx.prune()
    return res


class _Quiet:
    def start(self, name: str) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def done(self, res: CheckResult) -> None:
        pass


@contextlib.contextmanager
def _reporter(show: bool, total: int):
    if not show:
        yield _Quiet()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), "[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("verify", total=total)

        class _Bar:
            name = ""

            def start(self, name: str) -> None:
                self.name = name
                bar.update(task, description=f"verify: {name}")

            def status(self, text: str) -> None:
                bar.update(task, description=f"verify: {self.name}: {text}")

            def done(self, res: CheckResult) -> None:
                w = res.worst
                style = {"pass": "green", "fail": "bold red", "error": "bold red", "skipped": "yellow"}[res.status]
                z = "" if w is None else f"  worst |z| {w.max_abs_z:.2f} / {w.threshold:.2f}"
                src = "resumed" if res.resumed else f"{res.elapsed:.1f} s"
                bar.console.print(f"[{style}]{res.status.upper():>7}[/] {res.name}{z}  ({src})",
                                  highlight=False)
                bar.advance(task, 1)

        yield _Bar()


def run_verify(out_dir, mode: str = "default", resume: bool = True, progress: bool | None = None,
               json_only: bool = False, checks=None) -> VerifyResult:
    """Run the theory-vs-experiment checks and write ``summary.json`` (and ``report.html``).

    Parameters
    ----------
    out_dir : output directory (created). Finished checks, measurements and engine shards are kept
        under ``out_dir/work`` so an interrupted run resumes.
    mode : "quick" (< 45 s), "default" (< 3 min on two cores), "full" (publication quality) or
        "test" (tiny ensembles, for the test suite).
    resume : reuse finished checks, parts and shards from an earlier run in ``out_dir`` (same
        settings ⇒ identical numbers). ``False`` deletes ``out_dir/work`` first.
    progress : a rich progress bar on stderr (None: when stderr is a terminal and not json_only).
    json_only : write only ``summary.json`` (no HTML report).
    checks : names to run (a list or a comma-separated string); default all registered checks.

    Returns a :class:`VerifyResult`; ``result.exit_code`` is 1 when any check failed or errored.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    selected = _select(checks)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory")
    work = out / "work"
    if not resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.rglob(".tmp-*.part"):      # left by a killed run (every write is temp + rename)
        with contextlib.suppress(OSError):
            stale.unlink()
    show = (sys.stderr.isatty() and not json_only) if progress is None else bool(progress)
    created = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.perf_counter()
    results = []
    with _reporter(show, len(selected)) as rep:
        for check in selected:
            rep.start(check.name)
            res = _run_check(check, mode, work, resume, rep.status)
            rep.done(res)
            results.append(res)
    result = VerifyResult(mode, out, results, time.perf_counter() - t0, out / "summary.json",
                          None if json_only else out / "report.html", created, _machine())
    if result.html_path is not None:
        from .report import render_html

        _atomic_write(result.html_path, render_html(result).encode("utf-8"))
    _atomic_write(result.json_path, json.dumps(result.to_dict(), indent=1, allow_nan=False).encode())
    return result
