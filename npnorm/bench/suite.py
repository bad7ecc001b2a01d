"""One run of `npnorm bench`: the norm rows, the engine rows and the start-up rows asked for, the run's
conditions (:func:`metadata`) and the targets judged on its records."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from .engine_rows import ENGINE, add_engine_ratios, blas_threads, measure_engine, one_thread_each
from .norm_rows import DTYPE, add_ratios, measure
from .startup import measure_startup
from .targets import verdicts
from .timing import QUICK_REPS, CompetingLoad, CopyProbe, copy_bandwidth, timing_spread


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def metadata(
    impls: list[str], copy: dict, competing: dict, engine_threads: dict | None = None, engine_ran: bool = False
) -> dict:
    """The run's conditions. `copy` is empty when no norm row ran; `engine_threads` None when no engine row
    ran with one thread each. The `*_threads` entries are the defaults, which the norm rows use;
    `engine_threads` what the one-thread engine rows used (the default-threads rows record their own)."""
    import numba

    from .. import __version__, kernels
    from .._machine import machine_description
    from .._threads import openmp_spin_setting
    from ..norms import _dispatch

    meta = {
        "npnorm": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "numba_kernels": kernels.load("layer_norm") is not None,
        "blas_threads": blas_threads(),
        "cpu_count": os.cpu_count(),
        "machine": machine_description(),
        **competing,
        "dtype": np.dtype(DTYPE).name,
        **copy,
        "torch": None,
        "torch_threads": None,
        "engine_threads": engine_threads,
        "engine_npnorm_impl": _dispatch.resolve_impl(None, "npnorm bench") if engine_ran else None,
    }
    try:
        meta["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run (e.g. only small shapes, which run serially)
        meta["numba_threading_layer"] = None
    meta["openmp_spin"] = openmp_spin_setting()
    if hasattr(os, "sched_getaffinity"):
        meta["cpus_usable"] = len(os.sched_getaffinity(0))
    if "torch" in impls:
        import torch

        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    return meta


def run(
    norms: list[str],
    shapes: list[tuple[int, int]],
    ops: list[str],
    impls: list[str],
    quick: bool = False,
    engine: list[str] = (),
    startup: str | None = None,
) -> dict:
    """Measure everything asked for: the norm rows, then the engine cases named in `engine` (npnorm, and torch
    if "torch" is in `impls`, with one thread each), then the start-up rows if `startup` is "warm" (import
    and first call) or "all" (also the cold compile); returns {"meta": {...}, "records": [...]}."""
    # here, not at the top: `npnorm --help` should not pay for importing numba. With torch imported already
    # (torch_available), numba's OpenMP layer shares torch's libgomp, with torch's settings: the norm rows
    # compare both libraries in one process, and torch's spinning stays as torch users have it. The header
    # says which setting is in force (_threads.py); the "default threads" rows use fresh processes.
    from .._threads import get_num_threads, start_numba_threads

    start_numba_threads()
    before = CompetingLoad()
    time.sleep(0.2 if quick else 1.0)  # idle, so that only other processes are counted
    competing = {"other_busy_cpus_before": before.cpus()}
    during = CompetingLoad()
    records, copy = [], {}
    if norms:
        with CopyProbe(threads=get_num_threads()) as probe:
            copy = copy_bandwidth(probe, reps=QUICK_REPS if quick else 10)
            for norm in norms:
                for op in ops:
                    for shape in shapes:
                        records += measure(norm, shape, op, impls, quick, probe)
        add_ratios(records)
        copy["copy_rows_gbps"] = [min(r["copy_gbps"] for r in records), max(r["copy_gbps"] for r in records)]
    engine_records, engine_threads = [], None
    one_each = [name for name in engine if not ENGINE[name].default_threads]
    if one_each:
        with one_thread_each("torch" in impls) as engine_threads:
            for name in one_each:
                engine_records += measure_engine(name, impls, quick)
    for name in engine:
        if ENGINE[name].default_threads:
            engine_records += measure_engine(name, impls, quick)
    add_engine_ratios(engine_records)
    startup_records = measure_startup(cold=startup == "all") if startup else []
    competing["other_busy_cpus_during"] = during.cpus()
    meta = metadata(impls, copy, competing, engine_threads, engine_ran=bool(engine))
    meta["timing_spread"] = timing_spread(records + engine_records)
    everything = records + engine_records + startup_records
    return {"meta": meta, "records": everything, "targets": verdicts(everything)}
