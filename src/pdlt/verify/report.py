"""The self-contained HTML report of ``pdlt verify`` (inline CSS and base64 PNG figures, no scripts,
no external resources) and a plain-text summary for the terminal."""

from __future__ import annotations

import base64
import html
import json
import math

from ._core import CheckResult, VerifyResult

__all__ = ["render_html", "print_summary", "cli_command"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0 auto;
max-width:1180px;padding:0 22px 40px;color:#1d2330;line-height:1.45;background:#fff}
h1{font-size:1.6em;margin:24px 0 4px}h2{font-size:1.25em;margin:30px 0 6px;border-bottom:1px solid #dde1e8;
padding-bottom:4px}h3{font-size:1.0em;margin:16px 0 4px;color:#3a4252}
.meta{color:#5b6475;margin:0 0 14px;font-size:.92em}
.banner{font-size:1.5em;font-weight:700;padding:16px 20px;border-radius:8px;margin:12px 0 18px}
.banner.pass{background:#e3f6e8;color:#11612b;border:2px solid #2f9e55}
.banner.fail{background:#d61f1f;color:#fff;border:4px solid #7a0000;font-size:1.9em;letter-spacing:.02em}
.banner small{display:block;font-size:.55em;font-weight:500;margin-top:4px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:.88em}
th,td{border:1px solid #d6dbe3;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.bad td{background:#fde2e2}tr.skip td{color:#7a8291}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-size:.78em;font-weight:700;
vertical-align:middle;margin-left:6px}
.badge.pass{background:#2f9e55;color:#fff}.badge.fail,.badge.error{background:#d61f1f;color:#fff}
.badge.skipped{background:#c9a227;color:#fff}.badge.resumed{background:#6b7689;color:#fff}
section.check{margin-top:26px}section.check.fail h2,section.check.error h2{color:#b00000}
pre{background:#f6f8fa;border:1px solid #dde1e8;border-radius:6px;padding:10px;overflow-x:auto;
font-size:.82em;line-height:1.35}
figure{margin:10px 0}figure img{max-width:100%;height:auto;border:1px solid #e3e6ec}
figcaption{color:#5b6475;font-size:.85em}
.book{color:#5b6475;font-style:italic;margin:2px 0 6px}.error{color:#b00000;font-weight:600}
details summary{cursor:pointer;font-weight:600;margin:6px 0}
ul.notes li{margin:2px 0}
footer{margin-top:36px;color:#7a8291;font-size:.82em;border-top:1px solid #dde1e8;padding-top:8px}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _z(x) -> str:
    if x is None:
        return "—"
    x = float(x)
    if math.isnan(x):
        return "nan"
    return "∞" if math.isinf(x) else f"{x:.2f}"


def _g(x) -> str:
    return "—" if x is None else f"{float(x):.6g}"


def cli_command(mode: str, checks=None, out: str = "verify-out") -> str:
    """The command line that reruns (a part of) a verification in ``mode``."""
    names = "" if not checks else f" --checks {','.join(checks)}"
    if mode == "test":
        sel = "" if not checks else f", checks={list(checks)!r}"
        return f"python -c \"from pdlt.verify import run_verify; run_verify({out!r}, mode='test'{sel})\""
    flag = {"quick": " --quick", "full": " --full"}.get(mode, "")
    return f"pdlt verify{flag}{names} --out {out}"


def _verdict(c: CheckResult) -> str:
    return f'<span class="badge {c.status}">{_e(c.status.upper())}</span>'


def _summary_table(res: VerifyResult) -> str:
    out = ['<table class="summary"><thead><tr><th>#</th><th>check</th><th>observable</th>'
           '<th>layers judged</th><th>worst |z|</th><th>threshold</th><th>pass</th><th>time</th>'
           '</tr></thead><tbody>']
    for i, c in enumerate(res.checks, 1):
        w = c.worst
        cls = "" if c.ok else "bad"
        cls = "skip" if c.status == "skipped" else cls
        t = "resumed" if c.resumed else f"{c.elapsed:.1f} s"
        out.append(f'<tr class="{cls}"><td>{i}</td><td><a href="#check-{_e(c.name)}">{_e(c.title)}</a></td>'
                   f'<td>{_e(c.observable)}</td><td>{_e(c.layers_judged())}</td>'
                   f'<td class="num">{_z(None if w is None else w.max_abs_z)}</td>'
                   f'<td class="num">{_z(None if w is None else w.threshold)}</td>'
                   f'<td>{_verdict(c)}</td><td class="num">{_e(t)}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _rows_table(c: CheckResult) -> str:
    out = ['<table class="rows"><thead><tr><th>config</th><th>observable</th><th>layer</th><th>entry</th>'
           '<th>theory</th><th>measured ± s.e.</th><th>allowance</th><th>max |z|</th><th>threshold</th>'
           '<th>verdict</th><th>note</th></tr></thead><tbody>']
    for r in c.rows:
        ok = r.ok
        cls = "skip" if ok is None else ("" if ok else "bad")
        verdict = "not judged" if ok is None else ("ok" if ok else "FAIL")
        meas = "—" if r.measured is None else f"{_g(r.measured)} ± {_g(r.stderr)}"
        out.append(f'<tr class="{cls}"><td>{_e(r.config)}</td><td>{_e(r.name)}</td>'
                   f'<td class="num">{"" if r.layer is None else r.layer}</td><td>{_e(r.entry)}</td>'
                   f'<td class="num">{_g(r.theory)}</td><td class="num">{_e(meas)}</td>'
                   f'<td class="num">{_g(r.allowance)}</td><td class="num">{_z(r.max_abs_z)}</td>'
                   f'<td class="num">{_z(r.threshold)}</td><td>{verdict}</td><td>{_e(r.note)}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _check_section(i: int, c: CheckResult) -> str:
    parts = [f'<section class="check {c.status}" id="check-{_e(c.name)}">',
             f'<h2>{i}. {_e(c.title)} {_verdict(c)}'
             + (' <span class="badge resumed">resumed</span>' if c.resumed else "") + "</h2>",
             f'<p class="book">{_e(c.book)}</p>', f"<p>{_e(c.description)}</p>"]
    if c.error:
        parts.append(f'<p class="error">error: {_e(c.error)}</p>')
    w = c.worst
    if w is not None:
        parts.append(f"<p>Worst judged row: {_e(w.config)}, {_e(w.name)}"
                     + ("" if w.layer is None else f" at layer {w.layer}")
                     + f": |z| = {_z(w.max_abs_z)} against the family-wise threshold {_z(w.threshold)}.</p>")
    parts.append("<h3>Settings and seed</h3>")
    settings = "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                                  for k, v in c.settings.items()) + "\n}"
    parts.append(f"<pre><code>{_e(settings)}</code></pre>")
    parts.append("<h3>Reproduce</h3>")
    code = f"# this check, as in this report:\n{cli_command(c.mode, [c.name])}\n"
    if c.snippet:
        code += "\n# or directly with the API:\nimport numpy as np\nimport pdlt\n" \
                "from pdlt.observables import compare, family_threshold\n\n" + c.snippet
    parts.append(f"<pre><code>{_e(code)}</code></pre>")
    if c.figure is not None:
        b64 = base64.b64encode(c.figure).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{b64}" alt="{_e(c.title)}: theory (lines) '
                     f'and measurement (points with one standard error)">'
                     f"<figcaption>Figure {i}: {_e(c.title)}. Lines: theory; points: measured on real "
                     f"network ensembles, ± 1 standard error (delete-one-group jackknife).</figcaption></figure>")
    if c.notes:
        parts.append("<h3>Notes</h3><ul class=\"notes\">" + "".join(f"<li>{_e(n)}</li>" for n in c.notes) + "</ul>")
    if c.rows:
        judged = len(c.judged)
        opened = " open" if c.status in ("fail", "error") else ""
        parts.append(f"<details{opened}><summary>All rows: {judged} judged, {len(c.rows) - judged} not judged "
                     f"(click to {'hide' if opened else 'show'})</summary>{_rows_table(c)}</details>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(res: VerifyResult) -> str:
    """The report as one HTML document (UTF-8, no external resources, no scripts)."""
    from .. import __version__

    counts = res.counts()
    failed = [c for c in res.checks if not c.ok]
    if res.ok:
        banner = (f'<div class="banner pass" role="status">PASS: every check agrees with the theory'
                  f'<small>{counts["pass"]} passed'
                  + (f', {counts["skipped"]} skipped (module missing)' if counts["skipped"] else "")
                  + "</small></div>")
    else:
        names = ", ".join(f"{c.title} ({c.status})" for c in failed)
        banner = (f'<div class="banner fail" role="alert">FAIL: {len(failed)} of {len(res.checks)} checks '
                  f"did not pass<small>{_e(names)}</small></div>")
    from ._core import source_digest

    info = {**res.machine, "pdlt sources (sha256)": source_digest(), "output directory": str(res.out_dir)}
    machine = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in info.items())
    head = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>pdlt verify: {res.status}</title>\n<link rel="icon" href="data:,">\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n")
    body = [
        "<header><h1>pdlt verify: theory against experiment</h1>",
        f'<p class="meta">pdlt {_e(__version__)} · mode <b>{_e(res.mode)}</b> · {_e(res.created)} · '
        f"{res.elapsed:.1f} s · {len(res.checks)} checks</p></header>",
        banner,
        "<p>Every observable of the effective theory of deep networks (Roberts &amp; Yaida, <i>The Principles "
        "of Deep Learning Theory</i>) that pdlt implements is computed by its recursions and measured on "
        "ensembles of real random networks at initialization. A row passes when, for every entry, "
        "|measured − theory| ≤ k·stderr + allowance: the allowance is the theory's own first neglected "
        "order (zero where the theory is exact), and k is the family-wise (Bonferroni) threshold over all "
        "entries a check compares (α = 10⁻³, at least 4; 4.5 for fourth-moment estimates). Rows where the "
        "1/n expansion does not apply (relative 1/n effect ε &gt; 0.5) are shown but not judged.</p>",
        "<h2>Summary</h2>", _summary_table(res),
        "<h2>Run</h2>",
        f"<pre><code>{_e(cli_command(res.mode))}</code></pre>",
        "<p>An interrupted run resumes from the saved results and measurement shards in the output "
        "directory; every seed is fixed, so the numbers are identical.</p>",
        f'<table class="machine">{machine}</table>',
    ]
    body += [_check_section(i, c) for i, c in enumerate(res.checks, 1)]
    body.append(f"<footer>Generated by pdlt {_e(__version__)} (pdlt verify). Self-contained: figures are "
                f"embedded; no scripts or external resources.</footer>")
    return head + "\n".join(body) + "\n</body>\n</html>\n"


def print_summary(res: VerifyResult, console=None) -> None:
    """A rich table of the checks and the overall verdict (for the command line)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    table = Table(title=f"pdlt verify ({res.mode}): theory vs experiment")
    for col in ("check", "layers judged", "worst |z|", "threshold", "result", "time"):
        table.add_column(col, justify="right" if col in ("worst |z|", "threshold", "time") else "left",
                         no_wrap=col != "layers judged")
    styles = {"pass": "green", "fail": "bold red", "error": "bold red", "skipped": "yellow"}
    for c in res.checks:
        w = c.worst
        table.add_row(Text(c.name), Text(c.layers_judged()),
                      _z(None if w is None else w.max_abs_z),
                      _z(None if w is None else w.threshold), Text(c.status.upper(), style=styles[c.status]),
                      "resumed" if c.resumed else f"{c.elapsed:.1f} s")
    console.print(table)
    for c in res.checks:
        if c.error:
            console.print(Text(f"{c.name}: {c.error}", style="red"))
    verdict = Text(f" {res.status} ", style="bold white on green" if res.ok else "bold white on red")
    files = f"report: {res.html_path}" if res.html_path is not None else ""
    console.print(Text.assemble(verdict, f"  {res.elapsed:.1f} s  summary: {res.json_path}  {files}"))
