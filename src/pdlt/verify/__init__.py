"""``pdlt verify``: every theoretical observable checked against real network ensembles, in one report.

:func:`run_verify` runs the registered checks (kernel and its 1/n correction, four-point vertex,
NTK mean and fluctuations, criticality laws, exact deep linear results, residual MLPs), writes
``summary.json`` and a self-contained ``report.html`` into an output directory, and resumes an
interrupted run from what it saved there.

Adding a check is one function and one registration::

    from pdlt.verify import register, Row

    @register("my_check", title="…", observable="…", book="book §…", description="…",
              settings={"test": {...}, "quick": {...}, "default": {...}, "full": {...}},
              requires=("pdlt.empirical.dntk:measure_dntk",))   # skipped (with a note) if missing
    def my_check(ctx):
        s = ctx.settings                                   # this mode's settings (JSON-able)
        arrays = ctx.part("config-1", lambda: {...})       # a measurement, saved atomically
        ctx.add_rows([Row(...)])                           # judged rows (z-scores, threshold)
        ctx.snippet("...")                                 # code that reproduces it
        ctx.set_figure(fig)                                # one matplotlib Figure

See :mod:`pdlt.verify.checks` for the built-in checks and their helpers.
"""

from ._core import (
    MODES,
    REGISTRY,
    Check,
    CheckResult,
    Context,
    Measured,
    Row,
    VerifyResult,
    bonferroni,
    pack_estimates,
    register,
    run_verify,
    unregister,
)
from .report import cli_command, print_summary, render_html

__all__ = ["run_verify", "VerifyResult", "CheckResult", "Row", "Check", "Context", "REGISTRY", "MODES",
           "register", "unregister", "bonferroni", "Measured", "pack_estimates", "render_html",
           "print_summary", "cli_command"]
