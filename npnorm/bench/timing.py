"""Timing for `npnorm bench`: calls timed in samples, cells interleaved sample by sample, the copy that
"% copy" is measured against, the load of other processes, and how steady a run was (see the package
docstring for the method)."""

from __future__ import annotations

import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

TARGET_CELL_S = 0.3  # time spent measuring one shape × op × impl
TARGET_SAMPLE_S = 2e-3  # one timed sample: enough calls to dwarf the timer's own cost
MIN_REPS = 5
QUICK_REPS = 3
COPY_PROBE_BYTES = 64 * 2**20
# A run whose timed rows' medians exceed their minima by more than this (geometric mean, see timing_spread)
# is reported as unsteady. Full runs on this 2-core VM (6 December): 1.05-1.09 when every target held; 1.18
# (norm rows) and 1.29 (engine rows) in a run whose cold compile took 13.1 s against 9.2-9.6 s an hour
# before, on a host that was slower than usual without any load this machine could see.
UNSTEADY_SPREAD = 1.15


def time_calls(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of `fn`, averaged over `number` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def warm_up(fn: Callable[[], object], min_calls: int = 3, min_seconds: float = 0.05) -> float:
    """Call `fn` once untimed (compilation, first touch of memory), then until it has run `min_calls`
    times and `min_seconds`; returns an estimate of seconds per call."""
    fn()
    calls, elapsed = 0, 0.0
    while calls < min_calls or elapsed < min_seconds:
        elapsed += time_calls(fn, 1)
        calls += 1
    return elapsed / calls


def plan_reps(seconds_per_call: float, quick: bool, cell_seconds: float = TARGET_CELL_S) -> tuple[int, int]:
    """(number, reps): calls per timed sample, and samples per cell (lasting about `cell_seconds` in all)."""
    number = max(1, math.ceil(TARGET_SAMPLE_S / seconds_per_call))
    if quick:
        return number, QUICK_REPS
    reps = max(MIN_REPS, round(cell_seconds / (number * seconds_per_call)))
    return number, reps


class CopyProbe:
    """The copy that "% copy" is measured against: `nbytes` of float32 copied with ``np.copyto``, split into
    `threads` slices copied by as many Python threads (np.copyto releases the GIL; one core rarely saturates
    memory, and the parallel kernels use `threads` cores). A copy reads and writes every byte: 2·nbytes.

    Its arrays and threads are made once, and ``copy`` is timed both at the start of a run
    (``copy_bandwidth``) and as one more cell beside every norm row's implementations (``measure``), so that
    each row is compared with the bandwidth of the same moments. Measured on this 2-core VM (6 December,
    tenth session): probes taken a minute apart between LayerNorm backward rows read 24.8-34.0 GB/s, which
    put the same kernel at 62-84% of copy; timed interleaved with it, 32.6-34.2 GB/s and 69-75%.
    """

    def __init__(self, threads: int, nbytes: int = COPY_PROBE_BYTES):
        self.threads, self.nbytes = threads, nbytes
        self.src = np.ones(nbytes // 4, dtype=np.float32)
        self.dst = np.zeros_like(self.src)  # zeros_like may map lazily; the copy below touches every page
        np.copyto(self.dst, self.src)
        bounds = np.linspace(0, self.src.size, threads + 1).astype(int)
        self._slices = [(self.dst[a:b], self.src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        self._pool = ThreadPoolExecutor(threads)

    def copy(self) -> None:
        for future in [self._pool.submit(np.copyto, d, s) for d, s in self._slices]:
            future.result()

    def gbps(self, seconds: float) -> float:
        """Bandwidth of one `copy` that took `seconds`."""
        return 2 * self.nbytes / seconds / 1e9

    def __enter__(self) -> CopyProbe:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown()


def copy_bandwidth(probe: CopyProbe, reps: int = 10) -> dict:
    """GB/s of copying the probe's arrays, min time over `reps`, at one moment (the start of a run):

    * `copy_1thread_gbps`: `np.copyto` into an existing array, one thread;
    * `copy_threaded_gbps`: the same split over `probe.threads` threads (``CopyProbe.copy``);
    * `copy_gbps`: the better of the two;
    * `copy_new_gbps`: `src.copy()`, into a new array each time: it also pays for the page faults of first
      touching fresh memory, as does every call that allocates its output.
    """
    src, dst = probe.src, probe.dst
    probe.copy()
    threaded = min(time_calls(probe.copy, 1) for _ in range(reps))
    one = min(time_calls(lambda: np.copyto(dst, src), 1) for _ in range(reps))
    new = min(time_calls(src.copy, 1) for _ in range(reps))
    gbps = {"copy_1thread_gbps": probe.gbps(one), "copy_threaded_gbps": probe.gbps(threaded)}
    return {
        "copy_gbps": max(gbps.values()),
        **gbps,
        "copy_threads": probe.threads,
        "copy_new_gbps": probe.gbps(new),
        "copy_probe_bytes": probe.nbytes,
    }


class CompetingLoad:
    """How many CPUs *other* processes kept busy since this object was made (Linux; None elsewhere).

    A benchmark on a machine where tests or other jobs are running measures them as much as itself, so the
    report says so. Machine-wide busy CPU time (/proc/stat) minus this process's own (all its threads) and
    that of the processes it started and waited for (the start-up rows' fresh interpreters, the warm-up's
    workers, the default-threads engine rows), per second of wall time. Before those were subtracted, every
    full run warned of 0.3 "other" CPUs, and ``--startup`` of 1.7.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat", encoding="ascii") as f:
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        except (OSError, ValueError):
            return None
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")  # seconds
        return busy, CompetingLoad.own_cpu_seconds(), time.perf_counter()

    @staticmethod
    def own_cpu_seconds() -> float:
        """CPU seconds of this process and of its children that have ended and been waited for."""
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def cpus(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        (machine0, own0, wall0), (machine1, own1, wall1) = self.start, end
        return max(0.0, (machine1 - machine0) - (own1 - own0)) / (wall1 - wall0)


@dataclass
class Cell:
    """One shape × op × impl being measured."""

    impl: str
    fn: Callable[[], object]
    number: int = 1  # calls per timed sample
    reps: int = MIN_REPS  # timed samples
    samples: list[float] = field(default_factory=list)  # seconds per call, one per sample


def time_interleaved(cells: list[Cell], quick: bool, cell_seconds: float = TARGET_CELL_S) -> None:
    """Warm up every cell and size its samples, then fill `cell.samples`, the cells interleaved sample by sample.

    The order of the cells turns by one every round, so that no cell always runs right after the same other
    one: after the copy probe, which flushes the caches, or first of two (on this VM the second of two
    identical kernels at 8192x1024 read about 10% faster in a fixed order).
    """
    for cell in cells:
        seconds_per_call = warm_up(cell.fn, min_seconds=0.01 if quick else 0.05)
        cell.number, cell.reps = plan_reps(seconds_per_call, quick, cell_seconds)
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside one sample would be charged to whoever triggered it
    try:
        for rep in range(max(cell.reps for cell in cells)):
            turn = rep % len(cells)
            for cell in cells[turn:] + cells[:turn]:
                if rep < cell.reps:
                    cell.samples.append(time_calls(cell.fn, cell.number))
    finally:
        if gc_was_enabled:
            gc.enable()


def timing_spread(records: list[dict]) -> float | None:
    """How far the timed rows' medians sit above their minima: the geometric mean of median / min over the
    norm and engine rows (1.0 on a perfectly steady machine; None without such rows).

    The interleaved samples make the ratios between implementations robust to a machine that slows down
    for a while; this number says how much it did. The load count (CompetingLoad) sees other processes in
    this machine only; a virtual machine whose host is busy shows up here instead, and then the rows that
    are one measurement each, the start-up rows above all, read high.
    """
    ratios = [
        r["median_ms"] / r["min_ms"] for r in records if r["kind"] in ("norm", "engine") and r.get("min_ms", 0) > 0
    ]
    return statistics.geometric_mean(ratios) if ratios else None


def run_in_fresh_process(script: str, env: dict | None = None) -> str:
    """The last line `script` prints, run in a fresh interpreter (with `env`, or this one's environment)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]
