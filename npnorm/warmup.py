"""`npnorm warmup`: compile every Numba kernel ahead of time, so that no user call pays for compilation.

Numba compiles a kernel on its first call, once per *specialisation*: per dtype (float32, float64) and per
combination of argument types. Each kernel body is compiled once and runs either serially (below
``SERIAL_BELOW`` elements) or on numba's threads through the one launcher all kernels share, which compiles
on the first parallel run (see ChunkedKernel in kernels/_jit.py). Each compiled specialisation lands in the
on-disk cache, from which later processes load it in milliseconds instead of compiling it again.

An absent weight or bias is not a type of its own: the kernel wrappers pass ones or zeros and a run-time
flag instead of None (kernels/_jit.py), so with or without affine parameters is one specialisation. The same
holds for GroupNorm's affine backward (no g, no parameter gradients: empty stand-ins and flags) and for
BatchNorm's evaluation mode (a flag of ``_grad_input``). None still makes one where it skips real work: no
parameter gradient wanted in the LayerNorm and RMSNorm backward kernels (as a flag it cost 5-20% on narrow
rows, measured twice: docs/performance.md).

``warmup()`` therefore calls every norm's public ``F.*`` function, forward and backward with
``impl="numba"``, on one small input (serial runs) and one just large enough for parallel runs: with
trainable affine parameters and without any (which also runs the wrappers' None paths), and in both
training and evaluation modes where a norm has them (BatchNorm: they share their kernels, and evaluation
costs milliseconds once training has compiled them; it stays as a check of the wrappers' path). Numba
compiles in one thread, so norms that share no compiled function (the :data:`UNITS`) compile in separate
processes at once, as many as the CPUs allow and the work can use (:func:`plan`), each with Python's garbage
collector paused while it compiles (npnorm/_collector.py).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from . import _collector

DTYPES = ("float32", "float64")
H = 64  # features of every warm-up input; the row count decides serial vs parallel
SMALL_ROWS = 4  # 4 x 64 = 256 elements: serial runs


def _parallel_rows() -> int:
    """Rows of the input that reaches parallel runs: N * H >= SERIAL_BELOW."""
    try:
        from .kernels._jit import SERIAL_BELOW
    except ImportError:  # no numba: impl="numba" runs the NumPy reference, any size will do
        SERIAL_BELOW = 32_768
    return math.ceil(SERIAL_BELOW / H)


def _fwd_bwd(norm: Callable, x: np.ndarray, params: dict[str, np.ndarray | None], *args, **options) -> None:
    """``norm(x, *args, **params, **options)``, then backward with a ones gradient.

    x and the parameters are Tensors that require grad.
    """
    from .tensor import Tensor

    xt = Tensor(x, requires_grad=True)
    pt = {k: None if v is None else Tensor(v, requires_grad=True) for k, v in params.items()}
    y = norm(xt, *args, **pt, **options, impl="numba")
    y.backward(np.ones_like(y.data))


def _affine_choices(dtype) -> list[dict[str, np.ndarray | None]]:
    """weight and bias both present, and both absent.

    The forward kernels compile once for both (an absent parameter goes in as ones or zeros); the backward
    kernels twice (with and without dweight, dbias). One parameter alone adds no specialisation.
    """
    return [dict(weight=np.ones(H, dtype=dtype), bias=np.zeros(H, dtype=dtype)), dict(weight=None, bias=None)]


def _layer_norm(x):
    from . import functional as F

    # detach_mean and detach_var are run-time flags of the same kernels: no specialisations of their own
    for params in _affine_choices(x.dtype):
        _fwd_bwd(F.layer_norm, x, params, H)


def _ada_norm(x):
    from . import functional as F

    _fwd_bwd(F.ada_norm, x, {}, H)


def _rms_norm(x):
    from . import functional as F

    w = np.ones(H, dtype=x.dtype)
    for params in (dict(weight=w), dict(weight=None)):  # rms_norm has a weight only
        _fwd_bwd(F.rms_norm, x, params, H)


def _batch_norm(x):
    from . import functional as F

    # training and evaluation share every specialisation (evaluation is a run-time flag of _grad_input); the
    # evaluation calls compile nothing more and run in milliseconds, but keep its path warm if that changes
    for params in _affine_choices(x.dtype):
        _fwd_bwd(F.batch_norm, x, params, None, None, training=True)
        running_mean, running_var = np.zeros(H, dtype=x.dtype), np.ones(H, dtype=x.dtype)
        _fwd_bwd(F.batch_norm, x, params, running_mean, running_var, training=False)


def _group_norm(x):
    from . import functional as F

    affine, none = _affine_choices(x.dtype)
    # The affine backward compiles once per dtype whichever of g, dγ, dβ are wanted (absent ones
    # are flags, kernels/group_norm.py), so frozen γ, β or no γ need no calls of their own.
    _fwd_bwd(F.group_norm, x, affine, 4)  # the affine forward and backward
    _fwd_bwd(F.group_norm, x, none, 4)  # LayerNorm's row kernels only


def _weight_norm(x):
    from . import functional as F

    g = np.ones((x.shape[0], 1), dtype=x.dtype)
    _fwd_bwd(F.weight_norm, x, dict(g=g), dim=0)  # x is v; g as a keyword


def _adam(x):
    """optim.Adam's update kernel (kernels/adam.py): one serial specialisation per dtype."""
    from . import optim
    from .tensor import Tensor

    p = Tensor(np.ones(H, dtype=x.dtype), requires_grad=True)
    p.grad = np.ones(H, dtype=x.dtype)
    optim.Adam([p]).step()


def _lstm_cell(x):
    """The fused LSTM cell's two backward kernels (kernels/lstm_cell.py): serial, one specialisation per dtype.

    Both Functions forward and backward on gates (N, 64) and a state (N, 16) from x's values.
    """
    from .nn._lstm_cell import lstm_cell_output, lstm_cell_state
    from .tensor import Tensor

    gates = Tensor(x, requires_grad=True)  # (N, 4H), H = 16
    c = Tensor(np.ascontiguousarray(x[:, : H // 4]), requires_grad=True)  # (N, H)
    c_new = lstm_cell_state(gates, c)
    lstm_cell_output(gates, c_new).backward(np.ones_like(c.data))


def _gru_cell(x):
    """The fused GRU cell's backward kernel (kernels/gru_cell.py): serial, one specialisation per dtype (both
    conventions for z are a run-time flag). Forward and backward on gates (N, 32) and n_x, n_h, h (N, 16)."""
    from .nn._gru_cell import gru_cell_output
    from .tensor import Tensor

    h = H // 4  # the cell's hidden size, 16
    gates = Tensor(np.ascontiguousarray(x[:, : 2 * h]), requires_grad=True)  # (N, 2h)
    rest = [Tensor(np.ascontiguousarray(x[:, k : k + h]), requires_grad=True) for k in (0, h, 2 * h)]  # (N, h)
    gru_cell_output(gates, *rest).backward(np.ones_like(rest[0].data))


# Every part of npnorm that has kernels: the norms, the fused LSTM and GRU cells' backward and the optimizer's
# update (the name says "norms" because they are nearly all of it).
NORMS: dict[str, Callable[[np.ndarray], None]] = {
    "layer_norm": _layer_norm,
    "ada_norm": _ada_norm,
    "rms_norm": _rms_norm,
    "batch_norm": _batch_norm,
    "group_norm": _group_norm,
    "weight_norm": _weight_norm,
    "lstm_cell": _lstm_cell,
    "gru_cell": _gru_cell,
    "adam": _adam,
}


# Units of compilation: norms whose kernels share no compiled function with any other unit, so that compiling
# units in separate processes never has two processes write one cache file. Numba reads, updates and
# rewrites a function's whole index file, and two writers could drop each other's entries. GroupNorm runs
# LayerNorm's kernels on its rows, so those two are one unit. AdaNorm shares only LayerNorm's row statistics
# (`_row_mean_rstd`), which numba inlines and never caches on its own, so it is a unit of its own.
#
# Two functions of kernels/_jit.py are needed by several units all the same: the launcher (one signature)
# and `add_up_chunks` (one per output dtype). This process compiles them before its units, and the other
# processes only read their cache entries (`_jit.read_shared_from_cache_only`, in `_start_worker`): they find them there
# by the time they need them (their first parallel run; their first sums over rows), and one that did not
# would compile its own copy without saving it. Two writers would be worse than wasted work: numba names a
# function's data files by the first free number in its index, so two processes saving different entries at
# the same moment could leave an index that gives one signature the other's code. That could happen with
# `add_up_chunks`, which LayerNorm's float32 run needs for float32 first and BatchNorm's for float64 first
# (its sums are float64 whatever x's dtype).
#
# Each unit's weight is the seconds it took to compile alone, cold, float32 and float64, in a fresh process
# whose numba had already started (its registries loaded, the shared functions compiled), with the garbage
# collector paused as warmup() pauses it; measured 7 December on the 2-vCPU AMD EPYC (Zen 3) host, two runs
# each: layer_norm + group_norm 7.42-7.46, batch_norm 5.77-5.78, rms_norm 3.70-3.82, ada_norm 1.14-1.24,
# lstm_cell 1.10, weight_norm 1.02-1.16, gru_cell 1.02-1.06, adam 0.27-0.28. (The weights before, measured
# 6 December on a host that compiled about 1.3 times faster, and estimated there for the two cells, gave the
# same split. Earlier still, before every kernel shared one launcher and absent parameters became flags,
# the same compiled in 44-69 s: the history is in docs/performance-history.md.) On the Zen 4 host (7 December,
# three runs each, medians) they read 5.74, 5.45, 2.89, 0.97, 0.85, 0.74, 0.63 and 0.19 s: by those, weight
# norm would join this process's share. Measured, that finished later (four runs alternated: 9.66-11.43 s
# against 9.37-11.36 s): this process ends 0.9-1.3 s later than its units' seconds add up to (numba's import
# and registries, then the shared functions), the worker 0.36-0.43 s later, and with the split below the two
# ended within 0.6 s of each other. So the weights stay. The twenty-second session's row blocks made LayerNorm's
# unit about 0.45 s heavier (LayerNorm 4.14-4.25 s and GroupNorm 1.89-1.99 s in two cold warm-ups, against
# 3.69-3.77 and 1.99 s before): the split is the same by either set of weights. This process now ends last:
# its units were done 9.23-9.36 s into `npnorm warmup`, the worker's 8.51-8.77 s (three runs). Besides its
# units it pays numba's registries at its first compile (0.43 s, 0.2 s of that importing scipy.linalg for
# numba's BLAS check; the worker pays them too) and the shared functions (about 0.3 s). Swapping the GRU cell
# and Adam between the two shares read 9.05-9.65 s against 9.16-9.48 s (five pairs alternated): no gain the
# noise lets one see.
UNITS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("layer_norm", "group_norm"), 7.44),
    (("batch_norm",), 5.78),
    (("rms_norm",), 3.76),
    (("ada_norm",), 1.19),
    (("lstm_cell",), 1.10),
    (("weight_norm",), 1.09),
    (("gru_cell",), 1.04),
    (("adam",), 0.28),
)


def plan(processes: int) -> list[list[str]]:
    """The norms each of ``processes`` processes compiles, the first list this process's.

    Longest processing time first: the units, heaviest first, each go to the process with the least
    work so far (the first such process on a tie). Every process gets at least one unit, so at most
    ``len(UNITS)`` lists come back. Two processes get (LayerNorm, GroupNorm, AdaNorm, the LSTM and GRU cells)
    and (BatchNorm, RMSNorm, weight norm, Adam), 10.8 and 10.9 s by the weights. Measured on 2 cores before the
    cells had kernels (on a faster host), four runs each: 8.97-9.28 s with numba's start-up and the two
    processes slowing each other, against 9.35-9.63 s for the split measured best before the forward's four-row
    kernel (weight norm with LayerNorm's share). Three get LayerNorm and GroupNorm (7.4 s), BatchNorm, weight
    norm and Adam, RMSNorm and the rest; more cannot beat the largest unit.
    """
    if processes < 1:
        raise ValueError(f"warmup: processes must be >= 1, got {processes}")
    bins: list[list[str]] = [[] for _ in range(min(processes, len(UNITS)))]
    load = [0.0] * len(bins)
    for names, seconds in sorted(UNITS, key=lambda unit: -unit[1]):
        k = load.index(min(load))
        bins[k].extend(names)
        load[k] += seconds
    return bins


def _longest(bins: list[list[str]]) -> float:
    """Seconds of the process with the most work, by the weights of :data:`UNITS` (each counted by its first norm)."""
    seconds = {names[0]: s for names, s in UNITS}
    return max(sum(seconds.get(name, 0.0) for name in b) for b in bins)


def _shapes() -> dict:
    return {"serial": (SMALL_ROWS, H), "parallel": (_parallel_rows(), H)}


def _warm(names, dtypes) -> dict[str, float]:
    """Run the warm-up of `names` in this process; {norm: seconds}."""
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape).astype(dtype) for dtype in dtypes for shape in _shapes().values()]
    seconds = {}
    for name in names:
        t0 = time.perf_counter()
        for x in inputs:
            NORMS[name](x)
        seconds[name] = time.perf_counter() - t0
    return seconds


def _start_worker() -> None:
    """How a warm-up worker starts (:func:`_worker_main`): the garbage collector off for the worker's life (it
    compiles and leaves; see :func:`warmup`), the functions all units share read from the cache only (see
    :data:`UNITS`), and the exit without teardown (:func:`_exit_without_teardown`)."""
    gc.disable()
    plain_compile_errors()
    from . import kernels

    jit = kernels.load("_jit")  # None without numba: nothing is cached
    if jit is not None:
        jit.read_shared_from_cache_only()
    _exit_without_teardown()


def plain_compile_errors() -> None:
    """Numba's compile errors as plain text in this process, unless numba is imported already (it reads the
    setting when imported) or the environment chose otherwise.

    For the warm-up's own processes: the worker (:func:`_start_worker`) and `npnorm warmup`'s. While typing a kernel,
    numba tries overload templates and rejects most of them, and it builds an error message for each rejection, marked
    up for a terminal through colorama where that is installed (set up and torn down for every piece of every
    message). That markup is about 2% of a cold warm-up's CPU time (one process, three rounds alternated: 0.1-0.7 s of
    19.5-23 s; measured 7 December), for messages that are thrown away, and a warm-up's real errors travel as text
    into a :class:`WarmupError`, where terminal codes would be noise. A user's process that calls :func:`warmup` keeps
    numba's default.
    """
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")


def _exit_without_teardown() -> None:
    """Part of a warm-up worker's initializer (:func:`_start_worker`): when the worker exits, skip the
    interpreter's teardown.

    A spawned process ends with a full interpreter shutdown, and after numba has compiled its kernels that
    took 0.4-0.5 s (measured: between the last result and the pool's shutdown), which the warm-up spent
    waiting. Everything the worker does is done by then: numba writes each compiled kernel to the cache as it
    compiles it, and the results are already sent (multiprocessing has flushed and closed its pipes before the
    interpreter exits). atexit runs its handlers last registered, first: registered after numba's and
    llvmlite's (imported by then), the exit runs first and skips them along with the teardown; none of them
    has anything to write.
    """
    import atexit

    atexit.register(_exit_now)


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow), else all."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def _default_jobs() -> int:
    """Processes for a cold warm-up: the fewest that finish as soon as one per usable CPU would (by
    :func:`plan` and the weights of :data:`UNITS`: 1 on one CPU, 2 on two, 3 from three on); 1 when there is
    nothing to compile.

    Without importing numba (0.15-0.2 s that the second process would otherwise wait for): whether it is
    installed, and its NUMBA_DISABLE_JIT setting, which it reads from the environment as below.
    """
    if jit_disabled():
        return 1
    return _jobs_for(_usable_cpus())


def jit_disabled() -> bool:
    """Whether there is nothing to compile: numba is missing, or NUMBA_DISABLE_JIT is set (read as numba
    reads it, without importing numba unless it already is)."""
    import importlib.util

    if importlib.util.find_spec("numba") is None:
        return True
    if "numba" in sys.modules:  # already imported: its setting, which may have been changed since
        return bool(sys.modules["numba"].config.DISABLE_JIT)
    try:  # numba reads int(value); a value it cannot read leaves the JIT on
        return int(os.environ.get("NUMBA_DISABLE_JIT") or 0) != 0
    except ValueError:
        return False


def _jobs_for(cpus: int) -> int:
    """The fewest processes (at most ``cpus``) whose :func:`plan` finishes as soon as ``cpus`` processes would."""
    fastest = _longest(plan(cpus))
    return next(k for k in range(1, cpus + 1) if _longest(plan(k)) <= fastest)


def warmup(
    dtypes=DTYPES, progress: Callable[[str], object] | None = print, jobs: int | None = None, require_cache=False
) -> dict:
    """Compile (or load from the on-disk cache) every kernel specialisation the norms can reach.

    With ``jobs`` > 1 (default: :func:`_default_jobs`) the :data:`UNITS` compile in up to that many processes
    at once (:func:`plan`; never more than there are units), this one and fresh ones; numba compiles in one
    thread, so on 2 cores this nearly halves a cold warm-up (16.5-17.2 s → 8.6-9.2 s, measured 6 December). Returns
    {"seconds": total, "norms": {norm: seconds}, "dtypes": [...], "shapes": {"serial": (N, H), "parallel":
    (N, H)}, "jobs": the processes used}.
    ``progress`` receives one line per norm as soon as that norm is done (None: silent).

    A norm that fails to compile, or a process that dies, raises :class:`WarmupError` naming the norm and the
    norms left uncompiled; the other processes are ended at once, as they are on Ctrl-C (KeyboardInterrupt).
    ``require_cache=True`` (`npnorm warmup`) raises WarmupError before compiling when no cache directory is
    writable: the compiled kernels would not be kept.
    """
    jobs = _default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"warmup: jobs must be >= 1, got {jobs}")
    # Python's garbage collector stays off for the whole warm-up, in this process and (_start_worker) in each
    # worker, not only during each compile (as kernels/_jit.py pauses it): a collection after each compile
    # still walks all that the compile left. BatchNorm and RMSNorm compiled in one process: 0.6 s faster with
    # the collector paused per compile, 0.9 s paused throughout; paused per norm kept most of the cost.
    # Measured, one process compiling LayerNorm, GroupNorm, AdaNorm, weight norm and Adam cold: the collector
    # took 1.0-1.05 s of its 9.8-10.1 s, and paused it holds about 85 MB more at its peak (319 MB against 235),
    # until the next collection after the warm-up. A whole cold warm-up on 2 cores, ten runs alternated with
    # the collector left on: 8.7-11.2 s (median 9.1) against 9.4-12.6 s (median 10.2), faster in nine of the
    # ten pairs, 1.2-1.4 s less CPU time.
    with _collector.paused():
        return _warm_all(dtypes, progress, jobs, require_cache)


def _refuse_uncached() -> None:
    """WarmupError if numba cannot write its cache: compiling would keep nothing for the next process. (A
    cache that is complete but read-only is not read either: numba enables a cache only where it can write.)"""
    from . import kernels

    jit = kernels.load("_jit")
    if jit is not None and jit.kernel_cache_dir() is None:
        where = os.environ.get("NUMBA_CACHE_DIR")
        raise WarmupError(
            (f"NUMBA_CACHE_DIR={where} is not a writable directory" if where else "no writable cache directory")
            + ": the compiled kernels would not be kept; set NUMBA_CACHE_DIR to a writable directory"
        )


class WarmupError(RuntimeError):
    """A norm that failed to compile, or a warm-up process that died: which norm, why, and what is not cached."""


def _compile(name: str, dtypes) -> dict[str, float]:
    """:func:`_warm` of one norm; an error (not an interrupt) as a :class:`WarmupError` that names the norm."""
    try:
        return _warm((name,), dtypes)
    except Exception as exc:
        raise WarmupError(f"compiling {name} failed: {type(exc).__name__}: {exc}") from exc


class _Interrupted:
    """Whether Ctrl-C was pressed during the warm-up (see :func:`_noting_interrupts`)."""

    def __init__(self) -> None:
        self.noted = False

    def check(self) -> None:
        if self.noted:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _noting_interrupts():
    """Ctrl-C raises KeyboardInterrupt as always, and is also noted, because numba's compiler may swallow it.

    It often arrives while LLVM compiles, inside a callback of llvmlite's that ignores exceptions; the compile
    then fails with another error (measured: "RuntimeError: no compiled object yet"), or goes on. Either
    way the warm-up ends as interrupted (KeyboardInterrupt, chained to that error). Only where Python's own
    Ctrl-C handler is in force, in the main thread; elsewhere nothing changes.
    """
    interrupted = _Interrupted()
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield interrupted
        return

    def note(signum, frame):
        interrupted.noted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield interrupted
        interrupted.check()  # an interrupt that numba swallowed without an error
    except Exception as exc:
        if interrupted.noted:
            raise KeyboardInterrupt from exc
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _worker_main(names, dtypes, results) -> None:
    """A warm-up worker, in a fresh process: compile ``names`` one at a time and send ("done", name, {name:
    seconds}) after each, or ("failed", name, why) and stop. Ctrl-C is the main process's to handle (it ends
    the workers), so it is ignored here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _start_worker()
    for name in names:
        try:
            part = _warm((name,), dtypes)
        except BaseException as exc:  # SystemExit and MemoryError too: say what went wrong, then stop
            results.send(("failed", name, f"{type(exc).__name__}: {exc}"))
            return
        results.send(("done", name, part))


class _Worker:
    """One fresh process compiling a share of the :data:`UNITS`, and a thread here that reports each of its
    norms as it arrives, or what went wrong: an error it sent, or its death (an exit or a signal)."""

    def __init__(self, context, share: list[str], dtypes, report: Callable[[dict[str, float]], None]):
        self.share = list(share)
        self.done: list[str] = []
        self.failure: str | None = None
        self._stopping = False
        reader, writer = context.Pipe(duplex=False)
        self.process = context.Process(target=_worker_main, args=(self.share, tuple(dtypes), writer), daemon=True)
        self.process.start()
        writer.close()  # the worker holds the other end: when it ends, recv() below ends with EOFError
        self._thread = threading.Thread(target=self._listen, args=(reader, report), daemon=True)
        self._thread.start()

    def _listen(self, reader, report) -> None:
        with reader:
            while len(self.done) < len(self.share):
                try:
                    kind, name, payload = reader.recv()
                except (EOFError, OSError):
                    if not self._stopping:
                        self.failure = f"the process compiling {', '.join(self._left())} {self._death()}"
                    return
                if kind == "failed":
                    self.failure = f"compiling {name} failed in a warm-up process: {payload}"
                    return
                self.done.append(name)
                report(payload)

    def _left(self) -> list[str]:
        return [name for name in self.share if name not in self.done]

    def _death(self) -> str:
        self.process.join(timeout=10)
        code = self.process.exitcode
        if code is None:
            return "stopped answering"
        if code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code} before it was done"

    def wait(self) -> None:
        """Until the worker is done; a WarmupError if it failed, naming the norms it left uncompiled."""
        while self._thread.is_alive():
            self._thread.join(timeout=0.1)  # in slices: Ctrl-C interrupts the main thread between them
        self.process.join(timeout=10)
        if self.failure is not None:
            left = ", ".join(self._left())
            raise WarmupError(f"{self.failure}; not compiled: {left}")

    def stop(self) -> None:
        """End the worker now (on an error or an interrupt elsewhere): terminate, then kill if it lingers."""
        self._stopping = True
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self._thread.join(timeout=5)


def _warm_in_processes(shares: list[list[str]], dtypes, report, interrupted: _Interrupted, require_cache: bool):
    """This process compiles the first share; one fresh process per further share compiles the others.

    A fresh process for every share would keep each waiting for numba's start-up in a new interpreter (about a
    second). Measured, cold, both dtypes, 2 cores: 9.6-10.9 s this way (20 runs, median 10.3 s) when both
    processes compiled the launcher; 10.7-11.5 s with two worker processes; 11.6 s with two workers and the
    launcher compiled here before they started. With the shares swapped (this process compiling RMSNorm and
    BatchNorm) 10.3-10.9 s. With the launcher compiled here only (below), ten runs alternated with the code
    before: 9.7-13.1 s (median 10.2) against 9.8-12.5 s (median 10.5), on a machine whose noise is larger
    than the 0.3 s this saves. "spawn": fresh interpreters, safe whatever threads (OpenMP, numba's pool) this
    process has started.

    Each worker owns whole units (so no two processes compile one function) and sends each norm's seconds as
    soon as that norm is done. On the first error anywhere, or Ctrl-C, every worker is ended at once; the
    error names the norm and the norms left uncompiled. The workers ignore Ctrl-C (a terminal sends it to
    every process of the group): they start with it ignored, which a new process keeps.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    lock = threading.Lock()  # the workers' lines arrive on their threads

    def locked_report(part: dict[str, float]) -> None:
        with lock:
            report(part)

    workers: list[_Worker] = []
    try:
        with _sigint_ignored_by_new_processes():
            for share in shares[1:]:
                workers.append(_Worker(context, share, dtypes, locked_report))
        if require_cache:  # here, while the workers start (numba's import here would delay them 0.2 s)
            _refuse_uncached()
        # The functions all kernels share (the launcher and add_up_chunks, see UNITS), first: while the other
        # processes start up and compile their first serial kernels, this one writes them to the cache, where
        # the others find them by their first parallel run and first sums over rows.
        from .kernels import _jit

        _jit.compile_shared()
        for name in shares[0]:
            locked_report(_compile(name, dtypes))
            interrupted.check()
        for worker in workers:
            worker.wait()
    except BaseException:
        for worker in workers:
            worker.stop()
        raise


@contextlib.contextmanager
def _sigint_ignored_by_new_processes():
    """SIGINT ignored while the workers start, so that they start with it ignored (a new program keeps an
    ignored signal): a Ctrl-C in their first second, before :func:`_worker_main` ignores it too, would print
    their tracebacks. Main thread only; a Ctrl-C in these milliseconds is lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _warm_all(dtypes, progress: Callable[[str], object] | None, jobs: int, require_cache: bool) -> dict:
    """The body of :func:`warmup`, with ``jobs`` ≥ 1."""
    start = time.perf_counter()
    seconds: dict[str, float] = {}

    def report(part: dict[str, float]) -> None:
        seconds.update(part)
        if progress is not None:
            for name, s in part.items():
                progress(f"  {name:<12} {s:6.2f} s")

    shares = plan(jobs)
    with _noting_interrupts() as interrupted:
        if len(shares) == 1:
            if require_cache:
                _refuse_uncached()
            for name in shares[0]:
                report(_compile(name, dtypes))
                interrupted.check()
        else:
            _warm_in_processes(shares, dtypes, report, interrupted, require_cache)
    return {
        "seconds": time.perf_counter() - start,
        "norms": {name: seconds[name] for name in NORMS},
        "dtypes": [str(np.dtype(d)) for d in dtypes],
        "shapes": _shapes(),
        "jobs": len(shares),
    }
