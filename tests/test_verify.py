"""``pdlt verify``: the report, the JSON summary, resuming, and failing loudly on a wrong formula.

Everything runs in the tiny ``mode="test"`` (a few seconds for all checks). The browser test opens
the report in headless Chromium when one is installed (marker ``browser``); it is skipped otherwise.
"""

import base64
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pdlt.verify import REGISTRY, Row, register, run_verify, unregister
from pdlt.verify import checks as builtin_checks

BUILTIN = ["kernel", "vertex", "ntk", "criticality", "deep_linear", "residual", "dntk", "learning", "finite_width"]


def _strict_json(path: Path) -> dict:
    def no_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)


def _numbers(summary: dict) -> dict:
    """Every check's rows (the numbers a rerun must reproduce exactly)."""
    return {c["name"]: (c["status"], c["rows"]) for c in summary["checks"]}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "out"
    t0 = time.perf_counter()
    res = run_verify(out, mode="test", progress=False)
    return out, res, time.perf_counter() - t0


def test_builtin_checks_registered():
    assert list(REGISTRY)[:len(BUILTIN)] == BUILTIN
    for name in BUILTIN:
        assert set(REGISTRY[name].settings) == {"test", "quick", "default", "full"}


def test_report_and_json_written(baseline):
    out, res, _ = baseline
    assert res.ok and res.status == "PASS" and res.exit_code == 0, [
        (c.name, c.status, c.error) for c in res.checks]
    summary = _strict_json(out / "summary.json")
    assert summary["status"] == "PASS" and summary["exit_code"] == 0 and summary["mode"] == "test"
    assert [c["name"] for c in summary["checks"]] == BUILTIN
    for c in summary["checks"]:
        assert c["status"] == "pass" and c["seed"] is not None and c["settings"]
        assert isinstance(c["worst_abs_z"], float) and c["threshold"] >= 4.0
        judged = [r for r in c["rows"] if r["valid"]]
        assert judged, c["name"]
        for r in c["rows"]:
            assert set(r) >= {"name", "layer", "max_abs_z", "threshold", "ok", "valid"}
            assert isinstance(r["max_abs_z"], float) and r["threshold"] >= 4.0
            assert r["ok"] is (True if r["valid"] else None)
    # each check's rows cover the layers of its networks
    kernel = summary["checks"][0]
    assert {r["layer"] for r in kernel["rows"]} == set(range(1, 11))


def test_html_is_self_contained(baseline):
    out, res, _ = baseline
    text = (out / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "</html>" in text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "<script" not in text.lower() and "@import" not in text
    assert 'class="banner pass"' in text
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(BUILTIN)
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    for name in BUILTIN:
        assert f'id="check-{name}"' in text
    assert _unbalanced_tags(text) == []


def _unbalanced_tags(text: str) -> list:
    """Tags closed out of order or never closed (void elements excepted): a broken document."""
    from html.parser import HTMLParser

    void = {"meta", "link", "img", "br", "hr", "input", "col", "wbr"}

    class Parser(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.bad = [], []

        def handle_starttag(self, tag, attrs):
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            if self.stack and self.stack[-1] == tag:
                self.stack.pop()
            else:
                self.bad.append((tag, self.getpos()))

    p = Parser()
    p.feed(text)
    p.close()
    return p.bad + p.stack
    assert "run_verify(" in text and "pdlt.measure(" in text   # reproduction snippets


def test_resume_loads_saved_results(baseline):
    out, res, first = baseline
    before = _strict_json(out / "summary.json")
    t0 = time.perf_counter()
    again = run_verify(out, mode="test", progress=False)
    assert time.perf_counter() - t0 < max(3.0, first / 3)
    assert all(c.resumed for c in again.checks)
    assert _numbers(_strict_json(out / "summary.json")) == _numbers(before)


def test_interrupted_run_resumes_identically(baseline, tmp_path):
    out, _, _ = baseline
    reference = _numbers(_strict_json(out / "summary.json"))
    other = tmp_path / "b"
    part = run_verify(other, mode="test", progress=False, checks=["kernel"])   # "interrupted" after one check
    assert [c.name for c in part.checks] == ["kernel"]
    rest = run_verify(other, mode="test", progress=False, checks="kernel,vertex")
    assert rest.check("kernel").resumed and not rest.check("vertex").resumed
    assert _numbers(_strict_json(other / "summary.json")) == {k: reference[k] for k in ("kernel", "vertex")}
    # a check killed after its measurements were saved, but before its result was: rebuilt from the
    # engine's shard checkpoints alone (its parts are gone too), to the same numbers
    (other / "work" / "vertex.json").unlink()
    shutil.rmtree(other / "work" / "parts" / "vertex")
    assert list((other / "work" / "checkpoints" / "vertex").rglob("shard-*.npz"))
    again = run_verify(other, mode="test", progress=False, checks="kernel,vertex")
    assert [c.resumed for c in again.checks] == [True, False]
    assert _numbers(_strict_json(other / "summary.json")) == {k: reference[k] for k in ("kernel", "vertex")}


def test_kill_9_mid_run_loses_no_finished_shard(baseline, tmp_path):
    out, _, _ = baseline
    names = ("kernel", "vertex")
    reference = {k: v for k, v in _numbers(_strict_json(out / "summary.json")).items() if k in names}
    target = tmp_path / "killed"
    code = ("import sys; from pdlt.verify import run_verify; "
            "run_verify(sys.argv[1], mode='test', progress=False, checks=sys.argv[2])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), ",".join(names)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = target / "work" / "checkpoints"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if shards.exists() and len(list(shards.rglob("shard-*.npz"))) >= 3:
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    for f in target.rglob("*.npz"):                     # every file that exists is complete
        with np.load(f, allow_pickle=False) as data:
            assert data.files
    res = run_verify(target, mode="test", progress=False, checks=",".join(names))
    assert res.ok
    assert not list(target.rglob(".tmp-*"))             # temp files of the killed run are swept
    assert _numbers(_strict_json(target / "summary.json")) == reference


def _scaled_vertex(monkeypatch, factor):
    import pdlt.theory.network as network

    real = network.vertex_step
    monkeypatch.setattr(network, "vertex_step", lambda *a, **k: factor * real(*a, **k))


def test_wrong_vertex_fails_loudly(monkeypatch, tmp_path):
    _scaled_vertex(monkeypatch, 1.3)
    res = run_verify(tmp_path / "wrong", mode="test", progress=False, checks=["vertex"])
    assert not res.ok and res.status == "FAIL" and res.exit_code == 1
    assert res.check("vertex").status == "fail"
    summary = _strict_json(tmp_path / "wrong" / "summary.json")
    assert summary["status"] == "FAIL" and summary["exit_code"] == 1
    assert any(r["ok"] is False for r in summary["checks"][0]["rows"])
    text = (tmp_path / "wrong" / "report.html").read_text(encoding="utf-8")
    assert 'class="banner fail"' in text and "FAIL" in text and 'class="banner pass"' not in text


def _scale_theory_field(monkeypatch, field: str, factor: float) -> None:
    """Make pdlt.theory return ``field`` × factor in every layer that has it (a wrong formula)."""
    import pdlt.theory.network as network

    real = network.theory

    def wrong(*a, **k):
        th = real(*a, **k)
        states = tuple(s if getattr(s, field) is None else dataclasses.replace(s, **{field: factor * getattr(s, field)})
                       for s in th.layers)
        return network.Theory(th.net, th.X, states)
    monkeypatch.setattr(network, "theory", wrong)


def test_wrong_ntk_mean_fails(monkeypatch, tmp_path):
    _scale_theory_field(monkeypatch, "Theta", 1.2)
    res = run_verify(tmp_path / "wrong", mode="test", progress=False, checks=["ntk"])
    assert res.exit_code == 1 and res.check("ntk").status == "fail"
    bad = [r for r in res.check("ntk").rows if r.ok is False]
    assert {r.name for r in bad} == {"Theta"} and len({r.layer for r in bad}) >= 2


def test_wrong_ddntk_fails(monkeypatch, tmp_path):
    """A wrong ddNTK T fails the dntk check's width sweep. The test mode's sweep (n = 8, 12, a few
    hundred networks) resolves T only to ~30%, so T is tripled here; the default mode rejects T × 1.5."""
    _scale_theory_field(monkeypatch, "T", 3.0)
    res = run_verify(tmp_path / "wrong", mode="test", progress=False, json_only=True, checks=["dntk"])
    assert res.exit_code == 1 and res.check("dntk").status == "fail"
    bad = {r.name for r in res.check("dntk").rows if r.ok is False}
    assert "T" in bad and bad <= {"T", "χ²: measured − theory ∝ 1/n"}


def test_learning_check_passes_in_test_mode(tmp_path):
    pytest.importorskip("pdlt.empirical.training")
    res = run_verify(tmp_path / "ok", mode="test", progress=False, json_only=True, checks=["learning"])
    c = res.check("learning")
    assert c.status == "pass" and c.figure is not None and "train_ensemble" in c.snippet, c.error
    names = {r.name for r in c.rows}
    assert {"mean E[z(t)]", "variance Var[z(t)]"} <= names and len({r.config for r in c.rows}) == 4
    assert all(r.allowance == pytest.approx(3.0 / 512) for r in c.rows)


def test_wrong_training_mean_fails(monkeypatch, tmp_path):
    """The trained mean of the infinite-width theory × 1.3 (gradient descent and the Newton step) fails."""
    pytest.importorskip("pdlt.empirical.training")
    import pdlt.theory.training as tr

    def scaled(fn):
        def wrong(*a, **k):
            p = fn(*a, **k)
            return dataclasses.replace(p, mean=1.3 * p.mean)
        return wrong
    monkeypatch.setattr(tr, "gradient_descent", scaled(tr.gradient_descent))
    monkeypatch.setattr(tr, "newton_step", scaled(tr.newton_step))
    res = run_verify(tmp_path / "wrong", mode="test", progress=False, json_only=True, checks=["learning"])
    assert res.exit_code == 1 and res.check("learning").status == "fail"
    bad = [r for r in res.check("learning").rows if r.ok is False]
    assert "mean E[z(t)]" in {r.name for r in bad} and len({r.config for r in bad}) >= 2
    assert all(r.name in ("mean E[z(t)]", "test error E[(z − y)²]") for r in bad)


def test_wrong_finite_width_corrections_fail(monkeypatch, tmp_path):
    """The 1/n coefficients of the trained mean and covariance × 3 fail the finite-width check, each on its row."""
    pytest.importorskip("pdlt.empirical.training")
    import pdlt.theory.finite_width as fw

    def tripled(real):
        def wrong(*a, **k):
            p = real(*a, **k)
            return dataclasses.replace(p, parts={name: 3.0 * c for name, c in p.parts.items()})
        return wrong
    monkeypatch.setattr(fw, "finite_width_mean", tripled(fw.finite_width_mean))
    monkeypatch.setattr(fw, "finite_width_covariance", tripled(fw.finite_width_covariance))
    res = run_verify(tmp_path / "wrong", mode="test", progress=False, json_only=True, checks=["finite_width"])
    assert res.exit_code == 1 and res.check("finite_width").status == "fail"
    assert {r.name for r in res.check("finite_width").rows if r.ok is False} == {
        "1/n coefficient of E[z(T)]", "1/n coefficient of Cov[z(T)] (Var_0, Cov_01, Var_1)"}


def test_registry_extension_skip_and_failure(tmp_path):
    @register("missing_module", title="needs a module", observable="x", book="-", description="-",
              settings={"default": {"seed": 1}}, requires=("pdlt.no_such_module",))
    def missing(ctx):
        raise AssertionError("must not run")

    @register("always_fails", title="deliberately failing", observable="x", book="-", description="-",
              settings={"default": {"seed": 2}})
    def always_fails(ctx):
        ctx.add_rows([Row("demo", "X", 1, 9.0, 4.0), Row("demo", "X", 2, 1.0, 4.0),
                      Row("demo", "X", 3, 50.0, 4.0, valid=False, note="not judged")])
        ctx.snippet("print('reproduce')")

    try:
        res = run_verify(tmp_path, mode="quick", progress=True, checks=["missing_module", "always_fails"])
    finally:
        unregister("missing_module")
        unregister("always_fails")
    skipped, failed = res.checks
    assert skipped.status == "skipped" and "pdlt.no_such_module" in skipped.notes[0]
    assert failed.status == "fail" and failed.worst.max_abs_z == 9.0
    assert [r.ok for r in failed.rows] == [False, True, None]
    assert res.exit_code == 1
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'class="banner fail"' in text and "skipped" in text


def test_broken_check_is_an_error_not_a_crash(tmp_path):
    @register("broken", title="broken", observable="x", book="-", description="-",
              settings={"default": {"seed": 3}})
    def broken(ctx):
        raise RuntimeError("boom")

    try:
        res = run_verify(tmp_path, mode="test", progress=False, checks="broken")
    finally:
        unregister("broken")
    assert res.checks[0].status == "error" and "boom" in res.checks[0].error and res.exit_code == 1


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        run_verify(tmp_path, mode="fast")
    with pytest.raises(ValueError, match="unknown check"):
        run_verify(tmp_path, mode="test", checks=["kernel", "nope"])
    with pytest.raises(ValueError, match="already registered"):
        register("kernel", title="", observable="", book="", description="",
                 settings={"default": {}})(lambda ctx: None)


def test_json_only_writes_no_html(tmp_path):
    @register("tiny", title="tiny", observable="x", book="-", description="-", settings={"default": {"seed": 4}})
    def tiny(ctx):
        ctx.add_rows([Row("demo", "X", None, 0.5, 4.0)])

    try:
        res = run_verify(tmp_path, mode="test", progress=False, json_only=True, checks=["tiny"])
    finally:
        unregister("tiny")
    assert res.ok and res.html_path is None and not (tmp_path / "report.html").exists()
    summary = _strict_json(tmp_path / "summary.json")
    assert summary["report"] is None and summary["checks"][0]["rows"][0]["layer"] is None


def test_settings_scale_with_mode():
    """quick < default < full in ensemble size for every built-in check."""
    def size(s):
        return sum(v for k, v in _flatten(s) if k == "networks")
    for name in BUILTIN:
        st = REGISTRY[name].settings
        assert size(st["test"]) <= size(st["quick"]) < size(st["default"]) < size(st["full"]), name
    assert builtin_checks.INPUTS.shape == (3, 4)


def _flatten(d, key=None):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, k)
    elif isinstance(d, list):
        for v in d:
            yield from _flatten(v, key)
    else:
        yield key, d


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.browser
def test_report_renders_in_headless_chromium(baseline, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed")
    out, _, _ = baseline
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         "--window-size=1280,3000", f"--screenshot={shot}", "--enable-logging=stderr", "--v=0",
         (out / "report.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if re.search(r"error|uncaught|failed", line, re.I)]
    assert not errors, errors
    assert "Failed to load resource" not in proc.stderr


def test_parts_are_reused_and_stale_ones_pruned(tmp_path):
    calls = []

    @register("counting", title="counting", observable="x", book="-", description="-",
              settings={"test": {"seed": 5, "networks": 10}, "default": {"seed": 5, "networks": 20}})
    def counting(ctx):
        def compute():
            calls.append(ctx.mode)
            return {"value": np.arange(ctx.settings["networks"], dtype=np.float64)}
        arrays = ctx.part("only", compute)
        ctx.add_rows([Row("demo", "X", None, float(arrays["value"].sum()) / 1e3, 4.0)])

    parts = tmp_path / "work" / "parts" / "counting"
    try:
        run_verify(tmp_path, mode="test", progress=False, checks="counting", json_only=True)
        (tmp_path / "work" / "counting.json").unlink()        # the result is lost, the part is not
        again = run_verify(tmp_path, mode="test", progress=False, checks="counting", json_only=True)
        assert calls == ["test"] and not again.checks[0].resumed
        run_verify(tmp_path, mode="quick", progress=False, checks="counting", json_only=True)
        assert calls == ["test", "quick"]
        assert len(list(parts.glob("*.npz"))) == 1           # the test-mode part was pruned
    finally:
        unregister("counting")
