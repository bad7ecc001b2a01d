"""The start-up rows of `npnorm bench`, each timed in fresh interpreters: ``import npnorm``, a first
LayerNorm call with the kernels in the on-disk cache, and compiling every kernel into an empty cache."""

from __future__ import annotations

import os
import statistics

from .targets import STARTUP_SECONDS
from .timing import run_in_fresh_process

STARTUP_RUNS = 5  # fresh processes per warm startup row (median)
# Cold compiles (median), each into an empty cache: single runs on this 2-core VM read 9.6 to 15.6 s for the
# same code within hours, so one run could not tell a change from the machine's noise.
COLD_RUNS = 3

# Each script prints the seconds it measured, in a fresh interpreter.
_IMPORT_SCRIPT = """
import time
start = time.perf_counter()
import npnorm
print(time.perf_counter() - start)
"""
_FIRST_CALL_SCRIPT = """
import time
import numpy as np
import npnorm
from npnorm import functional as F
x = npnorm.Tensor(np.ones((64, 64), np.float32), requires_grad=True)
weight = npnorm.Tensor(np.ones(64, np.float32), requires_grad=True)
bias = npnorm.Tensor(np.zeros(64, np.float32), requires_grad=True)
start = time.perf_counter()
y = F.layer_norm(x, 64, weight, bias, impl="numba")
y.backward(np.ones_like(y.data))
print(time.perf_counter() - start)
"""
_COLD_SCRIPT = """
from npnorm.warmup import warmup
print(warmup(progress=None)["seconds"])
"""

# name -> (label, script, target in seconds from the performance issue)
STARTUP: dict[str, tuple[str, str, float]] = {
    "import": ("import npnorm", _IMPORT_SCRIPT, STARTUP_SECONDS["import"]),
    "first_call": ("first LayerNorm fwd+bwd, warm cache", _FIRST_CALL_SCRIPT, STARTUP_SECONDS["first_call"]),
    "cold_compile": ("npnorm warmup, empty cache", _COLD_SCRIPT, STARTUP_SECONDS["cold_compile"]),
}


def _seconds_in_fresh_process(script: str, env: dict | None = None) -> float:
    return float(run_in_fresh_process(script, env).split()[-1])


def measure_startup(cold: bool) -> list[dict]:
    """Start-up costs, each in fresh interpreters: ``import npnorm`` and a first LayerNorm forward+backward
    (numba import plus loading the kernels from the on-disk cache, which an untimed run fills first), median
    of STARTUP_RUNS; with ``cold``, also compiling every kernel (``npnorm.warmup``) into an empty cache, median
    of COLD_RUNS."""
    import tempfile

    _seconds_in_fresh_process(_FIRST_CALL_SCRIPT)  # fills the cache if it is empty; not timed
    names = ["import", "first_call"] + (["cold_compile"] if cold else [])
    records = []
    for name in names:
        label, script, target = STARTUP[name]
        if name == "cold_compile":
            times = []
            for _ in range(COLD_RUNS):
                with tempfile.TemporaryDirectory(prefix="npnorm-cold-cache-") as cache:
                    times.append(_seconds_in_fresh_process(script, env={**os.environ, "NUMBA_CACHE_DIR": cache}))
        else:
            times = [_seconds_in_fresh_process(script) for _ in range(STARTUP_RUNS)]
        records.append(
            {
                "kind": "startup",
                "op": name,
                "label": label,
                "median_s": statistics.median(times),
                "min_s": min(times),
                "runs": len(times),
                "target_s": target,
            }
        )
    return records
