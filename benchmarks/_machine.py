"""What every benchmark script records about the machine, and how it ends a run (shared by bench_*.py).

Imports only the standard library and numpy at module level: bench_peers.py also runs as a worker in
neural-tangents' own environment, where pdlt is not installed.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np


def machine(**extra) -> dict:
    """CPU, cores, BLAS, thread settings, load average and versions (pdlt's if importable), plus ``extra``."""
    cpu = platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = "?"
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:  # noqa: BLE001 - informational only
        pass
    try:
        import pdlt
        version = getattr(pdlt, "__version__", "?")
    except ImportError:
        version = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)), "numpy_blas": blas,
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "numpy": np.__version__, "pdlt": version, **extra}


def machine_line(doc: dict, settings: str) -> str:
    """The report's "machine :" line: CPU, cores, the script's ``settings`` and the load at start and end."""
    m = doc["machine"]
    return (f"machine : {m['cpu']}; {m['cores']} cores ({m['cores_usable']} usable); {settings}; load average "
            f"{', '.join(map(str, m['load_average']))} (start), {', '.join(map(str, doc['load_average_end']))} (end)")


def finish(doc: dict, t0: float, as_json: bool, report) -> None:
    """Stamp the end load and total time on ``doc``, then print it as one JSON document or as ``report``."""
    doc["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["total_seconds"] = time.perf_counter() - t0
    if as_json:
        print(json.dumps(doc))
    else:
        print()
        report(doc)
