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
compiles in one thread, so groups of norms that share no compiled function (:data:`GROUPS`) compile in
separate processes at once.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np

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


# Every part of npnorm that has kernels: the norms, and the optimizer's update (the name says "norms"
# because they are nearly all of it).
NORMS: dict[str, Callable[[np.ndarray], None]] = {
    "layer_norm": _layer_norm,
    "ada_norm": _ada_norm,
    "rms_norm": _rms_norm,
    "batch_norm": _batch_norm,
    "group_norm": _group_norm,
    "weight_norm": _weight_norm,
    "adam": _adam,
}


# Norms whose kernels share no compiled function, so that compiling the groups in separate processes never
# has two processes write one cache file: numba reads, updates and rewrites a function's whole index file,
# and two writers could drop each other's entries. GroupNorm runs LayerNorm's kernels on its rows, so those
# two go together. AdaNorm shares only LayerNorm's row statistics (`_row_mean_rstd`), which numba inlines
# and never caches on its own, so it may go in either group. Two functions of kernels/_jit.py are needed by
# both groups all the same. The launcher (one signature) is compiled by this process before its group, and
# the other process finds it in the cache by its first parallel run (were it not there yet, it would compile
# the same entry). `add_up_chunks` (one per output dtype) is compiled by both, in the same order (every group
# starts with its float32 inputs), so they write the same entries under the same file names. (Entries in
# another order could be worse than dropped: numba names a function's data files by their position in its
# index, so a second writer could pair one key with another signature's code.) Measured cold, 2 cores, one
# after another:
# layer_norm 12 s, group_norm 7.5, rms_norm 5.3, batch_norm 12.4, weight_norm 2.5, ada_norm 3.6 (44 s; 53-56 s
# with group_norm 14 s and batch_norm 15 s before GroupNorm's absent g and partial sums and BatchNorm's
# evaluation mode became flags too; 65-69 s before absent weights and biases stopped being specialisations
# of their own, with layer_norm 24 s).
# Adam's kernel (under a second) and weight norm's share nothing with any norm, so they balance the groups,
# and so may AdaNorm. Two processes at once each take longer per norm than one alone. Measured 6 December
# after the four-row passes of RMSNorm's and BatchNorm's kernels (which made those two take longer to
# compile): layer_norm 11.7 s, group_norm 7.7, ada_norm 3.4, weight_norm 2.5, adam 0.2 | rms_norm 9.3,
# batch_norm 16.3. Three alternated runs each on a busy machine: 29.6-32.6 s with ada_norm in the first group,
# 33.6-37.6 s in the second (before those passes, weight_norm moved to the first group: 28.8-31.7 → 25.4-26.7 s).
# Then LayerNorm and AdaNorm became chunked kernels (kernels/_jit.py, ChunkedKernel): layer_norm 7.0 s, ada_norm
# 2.7: 27.3 s in all, the second group now the longer (21 s against 26 s), to rebalance as the others follow.
# Then every kernel became one, all sharing one launcher: layer_norm 3.7 s (0.8 s of it numba's start-up),
# group_norm 2.7, ada_norm 1.0, weight_norm 1.0, adam 0.2 | rms_norm 2.9, batch_norm 5.3 in one process
# (17.6 s); the groups are balanced as they are: 9.6-10.9 s in two processes (one of them this one).
GROUPS = (("layer_norm", "group_norm", "ada_norm", "weight_norm", "adam"), ("rms_norm", "batch_norm"))


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


def _exit_without_teardown() -> None:
    """A warm-up worker's initializer: when the worker exits, skip the interpreter's teardown.

    A spawned process ends with a full interpreter shutdown, and after numba has compiled its kernels that
    took 0.4-0.5 s (measured: between the last result and the pool's shutdown), which the warm-up spent
    waiting. Everything the worker does is done by then: numba writes each compiled kernel to the cache as it
    compiles it, and the results are already sent. Registered first, the exit runs after every other atexit
    handler (numba's included), then leaves at once.
    """
    import atexit

    atexit.register(_exit_now)


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _default_jobs() -> int:
    """Processes for a cold warm-up: one per group, at most one per CPU; 1 when there is nothing to compile.

    Without importing numba (0.15-0.2 s that the second process would otherwise wait for): whether it is
    installed, and its NUMBA_DISABLE_JIT setting, which it reads from the environment as below.
    """
    import importlib.util

    if importlib.util.find_spec("numba") is None:
        return 1
    if "numba" in sys.modules:  # already imported: its setting, which may have been changed since
        disabled = bool(sys.modules["numba"].config.DISABLE_JIT)
    else:
        try:  # numba reads int(value); a value it cannot read leaves the JIT on
            disabled = int(os.environ.get("NUMBA_DISABLE_JIT") or 0) != 0
        except ValueError:
            disabled = False
    if disabled:
        return 1
    return max(1, min(len(GROUPS), os.cpu_count() or 1))


def warmup(dtypes=DTYPES, progress: Callable[[str], object] | None = print, jobs: int | None = None) -> dict:
    """Compile (or load from the on-disk cache) every kernel specialisation the norms can reach.

    With ``jobs`` > 1 (default: one per group in :data:`GROUPS`, at most one per CPU) the groups compile in
    that many processes at once, this one and ``jobs - 1`` fresh ones; numba compiles in one thread, so on 2
    cores this nearly halves a cold warm-up (17.6 s → 9.6-10.9 s measured). Returns {"seconds": total,
    "norms": {norm: seconds}, "dtypes": [...], "shapes": {"serial": (N, H), "parallel": (N, H)}, "jobs": n}.
    ``progress`` receives one line per norm as soon as that norm is done (None: silent).
    """
    jobs = _default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"warmup: jobs must be >= 1, got {jobs}")
    start = time.perf_counter()
    seconds: dict[str, float] = {}

    def report(part: dict[str, float]) -> None:
        seconds.update(part)
        if progress is not None:
            for name, s in part.items():
                progress(f"  {name:<12} {s:6.2f} s")

    processes = min(jobs, len(GROUPS))
    own = [name for i, group in enumerate(GROUPS) if i % processes == 0 for name in group]
    if processes == 1:
        for name in own:
            report(_warm((name,), dtypes))
    else:
        import concurrent.futures
        import contextlib
        import multiprocessing
        import threading

        # This process compiles its share (group 0, ...) itself, while one fresh process per further job
        # compiles the others: a process of its own for every group would keep each waiting for numba's
        # start-up in a new interpreter (about a second). Measured, cold, both dtypes, 2 cores: 9.6-10.9 s this
        # way (20 runs, median 10.3 s) when both processes compiled the launcher; 10.7-11.5 s with two worker
        # processes; 11.6 s with two workers and the launcher compiled here before they started. With the groups
        # swapped (this process compiling RMSNorm and BatchNorm) 10.3-10.9 s. With the launcher compiled
        # here only (below), ten runs alternated with the code before: 9.7-13.1 s (median 10.2) against
        # 9.8-12.5 s (median 10.5), on a machine whose noise is larger than the 0.3 s this saves.
        # "spawn": fresh interpreters, safe whatever threads (OpenMP, numba's pool) this process has started.
        context = multiprocessing.get_context("spawn")
        lock = threading.Lock()  # the workers' lines arrive on the pools' threads

        def report_done(future) -> None:
            if future.exception() is None:
                with lock:
                    report(future.result())

        # One single-process pool per worker, each owning whole groups (so no two processes compile one
        # function), fed one norm at a time: a norm's line is printed when it is done, not when its group is.
        with contextlib.ExitStack() as stack:
            pools = [
                stack.enter_context(
                    concurrent.futures.ProcessPoolExecutor(
                        max_workers=1, mp_context=context, initializer=_exit_without_teardown
                    )
                )
                for _ in range(processes - 1)
            ]
            futures = [
                pools[i % processes - 1].submit(_warm, (name,), tuple(dtypes))
                for i, group in enumerate(GROUPS)
                if i % processes != 0
                for name in group
            ]
            for future in futures:
                future.add_done_callback(report_done)
            # The launcher all kernels share (kernels/_jit.py), first: while the other process starts up and
            # compiles its first serial kernels, this one writes it to the cache, where the other then finds
            # it on its first parallel run instead of compiling it as well.
            from .kernels import _jit

            _jit.install_launcher()
            for name in own:
                part = _warm((name,), dtypes)
                with lock:
                    report(part)
            for future in futures:
                future.result()  # a worker's error, raised here
    return {
        "seconds": time.perf_counter() - start,
        "norms": {name: seconds[name] for name in NORMS},
        "dtypes": [str(np.dtype(d)) for d in dtypes],
        "shapes": _shapes(),
        "jobs": jobs,
    }
