r"""`npnorm bench`: how fast the norms run, side by side, and how close they come to the memory roofline.

**Why GB/s.** A norm does a handful of flops per element (a sum, a squared deviation, a multiply-add),
while a modern core can do dozens per nanosecond; what it cannot do faster is move the bytes. LayerNorm's
forward must read x and write y, 2·N·H·itemsize bytes (γ and β are H numbers each, negligible); forward
plus backward must in addition read x and dy and write dx, 5·N·H·itemsize in all. Divided by the time,
that is an *effective bandwidth*. No implementation can beat the bandwidth the machine can sustain, so

    share of copy = effective GB/s / copy GB/s

says how close an implementation comes to that limit (the roofline). The copy bandwidth is measured in the
same run, by ``np.copyto`` on a 64 MiB float32 array (one read plus one write per element, so it moves
2 × 64 MiB) split over as many threads as the Numba kernels use (one core rarely saturates memory), and it
is timed beside each row: one more cell interleaved with the row's implementations, whose best is that
row's 100% (``CopyProbe``: on a virtual machine the bandwidth drifts by a third within a minute, and a
single probe at the start made the shares read high or low with it). Measured, because a number from a
data sheet says little about a shared, virtualised or throttled machine. A share near 1 means there is little left
to gain; a share of 0.1 means the implementation is bound by something else (temporaries, extra passes,
Python overhead, float64 conversions).

Three caveats in reading the share. Every implementation allocates its outputs, as a user's call does,
and first-touching fresh memory costs page faults that the copy into an existing array does not pay; the
report also gives the bandwidth of ``x.copy()`` (a copy into a new array), a more honest ceiling for
large arrays. Shapes whose arrays fit in a cache (256×256 float32 is 256 KiB) are measured against cache,
not memory, bandwidth: there a share above 1 is possible, and the small shapes mostly measure call
overhead — which is what a user with small layers pays. And other processes on the machine compete for
cores and memory; the report measures how many CPUs they kept busy and warns when that is more than a
fraction of one (parallel kernels suffer most: a barrier waits for the slowest thread). A virtual machine's
busy host is not load it can see; the report's timing spread (how far medians sit above minima) shows it,
with a warning when the run was unsteady.

**How it measures.** All implementations see the same data. For each shape and op, every implementation
is warmed up first (the first call compiles the Numba kernels; that is not timed), then calls are timed in
samples of several calls, sized so that a sample lasts a few milliseconds and a cell (shape × op × impl)
about 0.3 s with at least 5 samples. The implementations (and the copy, see above) are interleaved sample by
sample, each round starting one cell later, so a drift in clock speed or a noisy neighbour affects all of
them alike. Reported: the median and the minimum time per call, the effective GB/s at the minimum, its
share of the copy's bandwidth, and numba's speed-up over each other implementation (ratio of medians; above
1 means numba is faster).

The implementations are called exactly as a user would: npnorm's ``F.layer_norm(..., impl=...)`` on
Tensors with ``requires_grad=True`` (forward + backward is ``y.backward(dy)``, with gradients cleared by
``.grad = None`` before each call), and, when torch can be imported, ``torch.nn.functional.layer_norm``
with autograd on the CPU.

**Engine rows** measure the engine around the norms, against PyTorch's on the CPU: a whole training step
of a LayerNorm MLP (64-256-256-10, batch 128) and of Ba et al.'s LN-LSTM (28 steps, batch 32, hidden 128),
each zero_grad, forward, cross-entropy, backward and Adam step, and the cost of one tiny op (``a + b`` on
4×4 leaves, forward; a 3-op chain, forward + backward) in µs per op, which is mostly bookkeeping: wrapping
arrays, recording graph nodes, walking the graph. Both sides are written the same way, as a user would
(npnorm's ``nn``/``optim`` against ``torch.nn``/``torch.optim``; the LN-LSTM, which torch lacks, as a loop
over time of two bias-free Linears, three LayerNorms and a bias, npnorm/nn/rnn.py's equations line by
line); torch's model starts from npnorm's weights and sees the same batch, so both compute the same numbers
(the tests check the first loss). npnorm runs its default impl (``NPNORM_IMPL``, else numba).

The engine rows run with **one thread each**, for everything: BLAS (through threadpoolctl, when it can be
imported), npnorm's Numba kernels (``npnorm.set_num_threads(1)``) and torch (``torch.set_num_threads(1)``,
its intra-op pool, which also runs its matrix products), all restored afterwards and reported in the
metadata as ``engine_threads``. Equal budgets make the comparison about the engines rather than about
thread pools; these matrices are small, so threads mostly add hand-off costs. One more row, "MLP step,
default threads", runs the same step with every library's default threads, as a plain training loop does:
on few cores a threaded BLAS next to Numba's OpenMP pool can oversubscribe them (measured on a 2-core VM,
npnorm's MLP step took 26-125 ms with both at 2 threads, until kernels/_jit.py shortened OpenMP's spinning:
1.0-1.5 ms since), and this row shows if that comes back. The norm rows keep every library's default threads.

**Start-up rows** (full run, or ``--startup``) time fresh interpreters: ``import npnorm`` and a first
LayerNorm forward+backward with the kernels already in the on-disk cache (median of 5 processes each), and
``npnorm warmup`` compiling every kernel into an empty ``NUMBA_CACHE_DIR`` (COLD_RUNS times, each into a new
one; left out with ``--quick``).

**Targets.** The report ends with the performance issue's targets judged on this run's rows: each one's
bound, the value read and whether it holds (``npnorm/bench_targets.py``; in the JSON under ``"targets"``).

**Adding a norm** is one entry in :data:`NORMS`: its npnorm call, its torch call (or None) and the
names of its affine parameters. **Adding an engine workload** is one entry in :data:`ENGINE`: a function
that builds the npnorm and the torch runner on the same weights and data.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .bench_targets import STARTUP_SECONDS, format_verdicts, verdicts

# ------------------------------------------------------------------------------------------ registries


@dataclass(frozen=True)
class NormCase:
    """One norm to benchmark: how to call it in npnorm and in torch, and which (H,) parameters it takes."""

    label: str
    params: tuple[str, ...]  # affine parameters, each of shape (H,), passed as keyword arguments
    npnorm_call: Callable  # (F, x, params, impl) -> Tensor
    torch_call: Callable | None  # (torch.nn.functional, x, params) -> torch.Tensor; None: no torch peer


NORMS: dict[str, NormCase] = {
    "layer_norm": NormCase(
        label="LayerNorm",
        params=("weight", "bias"),
        npnorm_call=lambda F, x, p, impl: F.layer_norm(x, x.shape[-1], p["weight"], p["bias"], impl=impl),
        torch_call=lambda tF, x, p: tF.layer_norm(x, (x.shape[-1],), p["weight"], p["bias"]),
    ),
    "rms_norm": NormCase(
        label="RMSNorm",
        params=("weight",),
        npnorm_call=lambda F, x, p, impl: F.rms_norm(x, x.shape[-1], p["weight"], impl=impl),
        torch_call=lambda tF, x, p: tF.rms_norm(x, (x.shape[-1],), p["weight"]),
    ),
    # Training mode: batch statistics over the N rows of each of the H channels (no running statistics).
    "batch_norm": NormCase(
        label="BatchNorm",
        params=("weight", "bias"),
        npnorm_call=lambda F, x, p, impl: F.batch_norm(x, None, None, p["weight"], p["bias"], training=True, impl=impl),
        torch_call=lambda tF, x, p: tF.batch_norm(x, None, None, p["weight"], p["bias"], training=True),
    ),
    # The H features as channels in gcd(32, H) groups (32 for the default shapes).
    "group_norm": NormCase(
        label="GroupNorm",
        params=("weight", "bias"),
        npnorm_call=lambda F, x, p, impl: F.group_norm(x, math.gcd(32, x.shape[-1]), p["weight"], p["bias"], impl=impl),
        torch_call=lambda tF, x, p: tF.group_norm(x, math.gcd(32, x.shape[-1]), p["weight"], p["bias"]),
    ),
}

# op -> how many (N, H) arrays it must move at least: forward reads x, writes y; backward reads x and dy,
# writes dx. Parameters and per-row statistics are O(N + H), negligible next to O(N·H). "backward" times
# y.backward(dy) alone, on a graph recorded once beforehand (torch: retain_graph=True).
OPS: dict[str, int] = {"forward": 2, "backward": 3, "forward_backward": 2 + 3}

IMPLS = ("numba", "numpy", "torch")
SHAPES = ((8192, 1024), (32768, 256), (1024, 4096), (256, 256), (64, 64))
QUICK_SHAPES = ((256, 256), (64, 64))
DTYPE = np.float32

TARGET_CELL_S = 0.3  # time spent measuring one shape × op × impl
TARGET_SAMPLE_S = 2e-3  # one timed sample: enough calls to dwarf the timer's own cost
MIN_REPS = 5
QUICK_REPS = 3
COPY_PROBE_BYTES = 64 * 2**20
ENGINE_CELL_S = 1.0  # an engine cell (case × impl): its steps allocate, so its samples spread more
# A run whose timed rows' medians exceed their minima by more than this (geometric mean, see timing_spread)
# is reported as unsteady. Full runs on this 2-core VM (6 December): 1.05-1.09 when every target held; 1.18
# (norm rows) and 1.29 (engine rows) in a run whose cold compile took 13.1 s against 9.2-9.6 s an hour
# before, on a host that was slower than usual without any load this machine could see.
UNSTEADY_SPREAD = 1.15

# The engine workloads (float32 throughout, as DTYPE).
MLP_SIZES = (64, 256, 256, 10)  # input, hidden, hidden, classes
MLP_BATCH = 128
LSTM_STEPS, LSTM_BATCH, LSTM_INPUT, LSTM_HIDDEN, LSTM_CLASSES = 28, 32, 28, 128, 10
TINY_SHAPE = (4, 4)
ENGINE_LR = 1e-3


@dataclass(frozen=True)
class EngineCase:
    """One engine workload, written once with npnorm and once with torch (see "Engine rows" above)."""

    label: str  # the table's first column
    what: str  # one line for the footnotes and the JSON
    ops_per_call: int | None  # engine ops in one call, for µs per op; None for a whole training step
    runners: Callable  # (with_torch: bool) -> {"npnorm": fn, "torch": fn}, zero-argument callables
    default_threads: bool = False  # run with every library's default threads instead of one thread each


ENGINE: dict[str, EngineCase] = {
    "mlp_step": EngineCase(
        label="MLP train step",
        what="64-256-256-10, Linear -> LayerNorm -> ReLU per hidden layer, cross-entropy, Adam; batch 128",
        ops_per_call=None,
        runners=lambda with_torch: mlp_step_runners(with_torch),
    ),
    "ln_lstm_step": EngineCase(
        label="LN-LSTM train step",
        what="LSTM(28, 128, layer_norm=True) over 28 steps of batch 32, Linear head on h_n, cross-entropy, Adam",
        ops_per_call=None,
        runners=lambda with_torch: ln_lstm_step_runners(with_torch),
    ),
    "add_forward": EngineCase(
        label="a + b, forward",
        what="a + b on (4, 4) float32 leaves that require grad: one op, its graph node recorded",
        ops_per_call=1,
        runners=lambda with_torch: tiny_op_runners(with_torch, backward=False),
    ),
    "chain_forward_backward": EngineCase(
        label="(a*b + a).sum(), fwd+bwd",
        what="the same leaves, gradients cleared, then 3 ops forward and backward: us/op = time / 3",
        ops_per_call=3,
        runners=lambda with_torch: tiny_op_runners(with_torch, backward=True),
    ),
    "mlp_step_default_threads": EngineCase(
        label="MLP step, default threads",
        what="the MLP train step with every library's default threads (BLAS, numba, torch), as a plain loop runs",
        ops_per_call=None,
        runners=lambda with_torch: mlp_step_runners(with_torch),
        default_threads=True,
    ),
}

# ------------------------------------------------------------------------------------------ timing


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


# ------------------------------------------------------------------------------------------ runners


def make_data(case: NormCase, shape: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """x, dy of `shape` and each parameter of shape (H,), float32, the same for every implementation."""
    rng = np.random.default_rng(seed)
    N, H = shape
    data = {
        "x": rng.standard_normal((N, H), dtype=DTYPE),
        "dy": rng.standard_normal((N, H), dtype=DTYPE),
    }
    for name in case.params:
        data[name] = (1.0 + 0.1 * rng.standard_normal(H)).astype(DTYPE)
    return data


def npnorm_runner(case: NormCase, data: dict, op: str, impl: str) -> Callable[[], object]:
    """A zero-argument callable doing `op` through npnorm's public API with `impl`."""
    import npnorm
    import npnorm.functional as F

    x = npnorm.Tensor(data["x"], requires_grad=True)
    params = {name: npnorm.Tensor(data[name], requires_grad=True) for name in case.params}
    leaves = [x, *params.values()]
    dy = data["dy"]

    def forward():
        return case.npnorm_call(F, x, params, impl)

    def forward_backward():
        for t in leaves:
            t.grad = None
        case.npnorm_call(F, x, params, impl).backward(dy)

    def backward():
        for t in leaves:
            t.grad = None
        recorded.backward(dy)

    recorded = forward() if op == "backward" else None
    return {"forward": forward, "backward": backward, "forward_backward": forward_backward}[op]


def torch_runner(case: NormCase, data: dict, op: str) -> Callable[[], object]:
    """The same for PyTorch on the CPU, with autograd."""
    import torch
    import torch.nn.functional as tF

    x = torch.from_numpy(data["x"]).requires_grad_(True)
    params = {name: torch.from_numpy(data[name]).requires_grad_(True) for name in case.params}
    leaves = [x, *params.values()]
    dy = torch.from_numpy(data["dy"])

    def forward():
        return case.torch_call(tF, x, params)

    def forward_backward():
        for t in leaves:
            t.grad = None
        case.torch_call(tF, x, params).backward(dy)

    def backward():
        for t in leaves:
            t.grad = None
        recorded.backward(dy, retain_graph=True)

    recorded = forward() if op == "backward" else None
    return {"forward": forward, "backward": backward, "forward_backward": forward_backward}[op]


def make_runner(case: NormCase, data: dict, op: str, impl: str) -> Callable[[], object]:
    if impl == "torch":
        return torch_runner(case, data, op)
    return npnorm_runner(case, data, op, impl)


# ------------------------------------------------------------------------------------------ engine runners


def _leaf_data(seed: int, *shapes) -> list[np.ndarray]:
    """Standard normal float32 arrays of the given shapes, the same for every run with this seed."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=DTYPE) for shape in shapes]


def _copy_into_torch(torch_module, state: dict[str, np.ndarray]) -> None:
    """Load npnorm's state dict (same keys) into a torch module, so both start from the same weights."""
    import torch

    torch_module.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()})


def mlp_step_runners(with_torch: bool, seed: int = 0) -> dict[str, Callable[[], object]]:
    """One training step of the LayerNorm MLP, in npnorm and (with_torch) in torch; each returns its loss.

    Linear -> LayerNorm -> ReLU for each hidden layer, then a Linear to the logits (MLP_SIZES), cross-entropy
    on a fixed batch of MLP_BATCH, Adam. A step is what a training loop does: zero_grad, forward, loss,
    backward, optimizer step.
    """
    import npnorm
    import npnorm.functional as F
    from npnorm import nn, optim

    (x,) = _leaf_data(seed, (MLP_BATCH, MLP_SIZES[0]))  # (B, 64)
    target = np.random.default_rng(seed + 1).integers(0, MLP_SIZES[-1], MLP_BATCH)  # (B,) classes
    d_in, h1, h2, d_out = MLP_SIZES
    gen = np.random.default_rng(seed)  # not npnorm.manual_seed: a benchmark leaves global state alone
    model = nn.Sequential(
        nn.Linear(d_in, h1, rng=gen),
        nn.LayerNorm(h1),
        nn.ReLU(),
        nn.Linear(h1, h2, rng=gen),
        nn.LayerNorm(h2),
        nn.ReLU(),
        nn.Linear(h2, d_out, rng=gen),
    )
    optimizer = optim.Adam(model.parameters(), lr=ENGINE_LR)
    x_t = npnorm.Tensor(x)

    def npnorm_step():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_t), target)
        loss.backward()
        optimizer.step()
        return loss

    runners = {"npnorm": npnorm_step}
    if not with_torch:
        return runners

    import torch
    import torch.nn.functional as tF
    from torch import nn as tnn

    t_model = tnn.Sequential(
        tnn.Linear(d_in, h1),
        tnn.LayerNorm(h1),
        tnn.ReLU(),
        tnn.Linear(h1, h2),
        tnn.LayerNorm(h2),
        tnn.ReLU(),
        tnn.Linear(h2, d_out),
    )
    _copy_into_torch(t_model, model.state_dict())  # same keys: "0.weight", "1.bias", ...
    t_optimizer = torch.optim.Adam(t_model.parameters(), lr=ENGINE_LR)
    t_x, t_target = torch.from_numpy(x), torch.from_numpy(target)

    def torch_step():
        t_optimizer.zero_grad()
        loss = tF.cross_entropy(t_model(t_x), t_target)
        loss.backward()
        t_optimizer.step()
        return loss

    runners["torch"] = torch_step
    return runners


def torch_ln_lstm(input_size: int, hidden_size: int):
    """Ba et al.'s LN-LSTM layer in torch, written as npnorm/nn/rnn.py's `_lstm_step`, one step at a time.

    gates = LN(W_hh h) + LN(W_ih x) + b     (two LNs over all 4H, the bias after them; gate order i, f, g, o)
    c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g);   h' = σ(o) ⊙ tanh(LN(c'))
    `forward(x (T, B, input_size))` returns (output (T, B, H), (h_n, c_n) (1, B, H)), as nn.LSTM does.
    """
    import torch
    from torch import nn as tnn

    class LNLSTM(tnn.Module):
        def __init__(self):
            super().__init__()
            H = hidden_size
            self.hidden_size = H
            self.ih = tnn.Linear(input_size, 4 * H, bias=False)  # W_ih
            self.hh = tnn.Linear(H, 4 * H, bias=False)  # W_hh
            self.ln_ih, self.ln_hh, self.ln_cell = tnn.LayerNorm(4 * H), tnn.LayerNorm(4 * H), tnn.LayerNorm(H)
            self.bias = tnn.Parameter(torch.zeros(4 * H))  # b

        def forward(self, x):
            B, H = x.shape[1], self.hidden_size
            h = c = torch.zeros(B, H, dtype=x.dtype)  # (B, H) each
            outputs = []
            for x_t in x:  # (B, input_size)
                gates = self.ln_hh(self.hh(h)) + self.ln_ih(self.ih(x_t)) + self.bias  # (B, 4H)
                i, f, g, o = gates.chunk(4, dim=1)  # (B, H) each
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(self.ln_cell(c))
                outputs.append(h)
            return torch.stack(outputs), (h[None], c[None])

    return LNLSTM()


def ln_lstm_step_runners(with_torch: bool, seed: int = 0) -> dict[str, Callable[[], object]]:
    """One training step of an LN-LSTM classifier, in npnorm and (with_torch) in torch; each returns its loss.

    npnorm's `nn.LSTM(layer_norm=True)` over LSTM_STEPS time steps of a (T, B, input) batch, a Linear head
    on the last hidden state, cross-entropy, Adam; torch runs `torch_ln_lstm` with the same weights.
    """
    import npnorm
    import npnorm.functional as F
    from npnorm import nn, optim

    (x,) = _leaf_data(seed, (LSTM_STEPS, LSTM_BATCH, LSTM_INPUT))  # (T, B, input)
    target = np.random.default_rng(seed + 1).integers(0, LSTM_CLASSES, LSTM_BATCH)  # (B,)
    gen = np.random.default_rng(seed)
    lstm = nn.LSTM(LSTM_INPUT, LSTM_HIDDEN, layer_norm=True, rng=gen)
    head = nn.Linear(LSTM_HIDDEN, LSTM_CLASSES, rng=gen)
    optimizer = optim.Adam([*lstm.parameters(), *head.parameters()], lr=ENGINE_LR)
    x_t = npnorm.Tensor(x)

    def npnorm_step():
        optimizer.zero_grad()
        _, (h_n, _) = lstm(x_t)  # h_n (1, B, H)
        loss = F.cross_entropy(head(h_n[0]), target)
        loss.backward()
        optimizer.step()
        return loss

    runners = {"npnorm": npnorm_step}
    if not with_torch:
        return runners

    import torch
    import torch.nn.functional as tF
    from torch import nn as tnn

    t_lstm = torch_ln_lstm(LSTM_INPUT, LSTM_HIDDEN)
    state = lstm.state_dict()
    _copy_into_torch(
        t_lstm,
        {
            "ih.weight": state["weight_ih_l0"],
            "hh.weight": state["weight_hh_l0"],
            "bias": state["bias_l0"],
            **{f"{ln}.{p}": state[f"{ln}_l0.{p}"] for ln in ("ln_ih", "ln_hh", "ln_cell") for p in ("weight", "bias")},
        },
    )
    t_head = tnn.Linear(LSTM_HIDDEN, LSTM_CLASSES)
    _copy_into_torch(t_head, head.state_dict())
    t_optimizer = torch.optim.Adam([*t_lstm.parameters(), *t_head.parameters()], lr=ENGINE_LR)
    t_x, t_target = torch.from_numpy(x), torch.from_numpy(target)

    def torch_step():
        t_optimizer.zero_grad()
        _, (h_n, _) = t_lstm(t_x)
        loss = tF.cross_entropy(t_head(h_n[0]), t_target)
        loss.backward()
        t_optimizer.step()
        return loss

    runners["torch"] = torch_step
    return runners


def tiny_op_runners(with_torch: bool, backward: bool, seed: int = 0) -> dict[str, Callable[[], object]]:
    """The engine's cost per op, on (4, 4) leaves that require grad, where the arithmetic is nothing:
    `a + b` forward only, or (backward) clear the gradients, then `(a * b + a).sum()` forward and backward."""
    import npnorm

    a_data, b_data = _leaf_data(seed, TINY_SHAPE, TINY_SHAPE)

    def runner(a, b):
        def add_forward():
            return a + b

        def chain_forward_backward():
            a.grad = b.grad = None
            (a * b + a).sum().backward()

        return chain_forward_backward if backward else add_forward

    runners = {"npnorm": runner(npnorm.Tensor(a_data, requires_grad=True), npnorm.Tensor(b_data, requires_grad=True))}
    if with_torch:
        import torch

        runners["torch"] = runner(
            torch.from_numpy(a_data).requires_grad_(True), torch.from_numpy(b_data).requires_grad_(True)
        )
    return runners


# ------------------------------------------------------------------------------------------ the run


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


def measure(norm: str, shape: tuple[int, int], op: str, impls: list[str], quick: bool, probe: CopyProbe) -> list[dict]:
    """Records for every impl on one norm, shape and op, measured interleaved with each other and with
    `probe`'s copy, whose bandwidth at the minimum goes into every record as `copy_gbps`."""
    case = NORMS[norm]
    data = make_data(case, shape)
    cells = [Cell(impl, make_runner(case, data, op, impl)) for impl in impls]
    probe_cell = Cell("copy", probe.copy)
    time_interleaved([*cells, probe_cell], quick)
    copy_gbps = probe.gbps(min(probe_cell.samples))

    nbytes = OPS[op] * data["x"].nbytes
    records = []
    for cell in cells:
        best = min(cell.samples)
        records.append(
            {
                "kind": "norm",
                "norm": norm,
                "op": op,
                "shape": list(shape),
                "impl": cell.impl,
                "median_ms": statistics.median(cell.samples) * 1e3,
                "min_ms": best * 1e3,
                "reps": cell.reps,
                "calls_per_rep": cell.number,
                "bytes": nbytes,
                "gbps": nbytes / best / 1e9,
                "copy_gbps": copy_gbps,
            }
        )
    return records


def add_ratios(records: list[dict]) -> None:
    """Fill in share_of_copy (of the copy timed beside the row), and numba's speed-up over each impl (>1: numba
    is faster): numba_speedup = median(impl) / median(numba), numba_speedup_min = min(impl) / min(numba)."""
    numba = {(r["norm"], r["op"], tuple(r["shape"])): r for r in records if r["impl"] == "numba"}
    for r in records:
        r["share_of_copy"] = r["gbps"] / r["copy_gbps"]
        reference = numba.get((r["norm"], r["op"], tuple(r["shape"])))
        r["numba_speedup"] = None if reference is None else r["median_ms"] / reference["median_ms"]
        r["numba_speedup_min"] = None if reference is None else r["min_ms"] / reference["min_ms"]


def measure_engine(name: str, impls: list[str], quick: bool) -> list[dict]:
    """Records for npnorm and (if "torch" in impls) torch on one engine case, measured interleaved."""
    case = ENGINE[name]
    if case.default_threads:
        # each library in a fresh process of its own, as a user's training loop runs: in one process the two
        # would share thread pools (torch's libgomp is numba's too once loaded) and each other's spinning
        cells, threads = [], {}
        for impl in ["npnorm"] + (["torch"] if "torch" in impls else []):
            cell = json.loads(_run_in_fresh_process(_ENGINE_CELL_SCRIPT.format(name=name, impl=impl, quick=quick)))
            cells.append(Cell(impl, None, cell["number"], cell["reps"], cell["samples"]))
            threads[impl] = cell["threads"]
    else:
        runners = case.runners("torch" in impls)
        cells = [Cell(impl, fn) for impl, fn in runners.items()]
        time_interleaved(cells, quick, ENGINE_CELL_S)
        threads = {impl: None for impl in runners}  # the engine rows' one thread each (metadata)
    records = []
    for cell in cells:
        median = statistics.median(cell.samples)
        records.append(
            {
                "kind": "engine",
                "op": name,
                "impl": cell.impl,
                "what": case.what,
                "median_ms": median * 1e3,
                "min_ms": min(cell.samples) * 1e3,
                "reps": cell.reps,
                "calls_per_rep": cell.number,
                "ops_per_call": case.ops_per_call,
                "us_per_op": None if case.ops_per_call is None else median * 1e6 / case.ops_per_call,
                "threads": "default" if case.default_threads else "one each",
                "process_threads": threads[cell.impl],  # default-threads rows: what that fresh process had
            }
        )
    return records


_ENGINE_CELL_SCRIPT = """
import json
from npnorm import bench
print(json.dumps(bench.time_engine_cell({name!r}, {impl!r}, {quick!r})))
"""


def time_engine_cell(name: str, impl: str, quick: bool) -> dict:
    """Time one engine case for one impl ("npnorm" or "torch") here, with this process's threads: {"samples":
    seconds per call, "number", "reps", "threads": the thread counts and OpenMP setting it ran with}."""
    from ._threads import get_num_threads, openmp_spin_setting

    cell = Cell(impl, ENGINE[name].runners(impl == "torch")[impl])
    time_interleaved([cell], quick, ENGINE_CELL_S)
    threads = {"blas": blas_threads()}
    if impl == "torch":  # (npnorm's kernels never ran here: numba's threads were not started)
        import torch

        threads["torch"] = torch.get_num_threads()
    else:
        threads.update(numba=get_num_threads(), openmp_spin=openmp_spin_setting())
    return {"samples": cell.samples, "number": cell.number, "reps": cell.reps, "threads": threads}


def _run_in_fresh_process(script: str, env: dict | None = None) -> str:
    """The last line `script` prints, run in a fresh interpreter (with `env`, or this one's environment)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def add_engine_ratios(records: list[dict]) -> None:
    """Fill in npnorm's speed-up over each impl, as numba's over the others in the norm rows (>1: npnorm is
    faster): npnorm_speedup = median(impl) / median(npnorm), npnorm_speedup_min likewise of the minima; and
    its inverse npnorm_time_ratio = median(npnorm) / median(impl), how many times impl's time npnorm takes."""
    npnorm = {r["op"]: r for r in records if r["impl"] == "npnorm"}
    for r in records:
        reference = npnorm[r["op"]]
        r["npnorm_speedup"] = r["median_ms"] / reference["median_ms"]
        r["npnorm_speedup_min"] = r["min_ms"] / reference["min_ms"]
        r["npnorm_time_ratio"] = reference["median_ms"] / r["median_ms"]


@contextlib.contextmanager
def one_thread_each(with_torch: bool):
    """One thread for BLAS, for npnorm's Numba kernels and (with_torch) for torch, restored on exit; yields
    the settings, {"blas": 1 or None, "numba": 1, "torch": 1 or None} (None: left alone).

    BLAS is limited through threadpoolctl when it can be imported (scikit-learn brings it along); without it
    BLAS keeps its threads (set OPENBLAS_NUM_THREADS=1 before starting Python to do the same by hand).
    `torch.set_num_threads` sizes torch's intra-op pool, which also runs its matrix products.
    """
    from . import get_num_threads, set_num_threads

    threads = {"blas": None, "numba": 1, "torch": None}
    with contextlib.ExitStack() as restore:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            restore.enter_context(threadpool_limits(limits=1, user_api="blas"))
            threads["blas"] = 1
        restore.callback(set_num_threads, get_num_threads())
        set_num_threads(1)
        if with_torch:
            import torch

            restore.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(1)
            threads["torch"] = 1
        yield threads


def blas_threads() -> int | None:
    """How many threads BLAS uses by default (the most of any BLAS loaded), or None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return max((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"), default=None)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def metadata(impls: list[str], copy: dict, competing: dict, engine_threads: dict | None = None) -> dict:
    """The run's conditions. `copy` is empty when no norm row ran; `engine_threads` None when no engine row
    ran. The `*_threads` entries are the defaults, which the norm rows use; `engine_threads` what the
    engine rows used."""
    import numba

    from . import __version__, kernels
    from ._machine import machine_description
    from ._threads import openmp_spin_setting
    from .norms import _dispatch

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
        "engine_npnorm_impl": None if engine_threads is None else _dispatch.resolve_impl(None, "npnorm bench"),
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
    from ._threads import get_num_threads, start_numba_threads

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
    if engine:
        with one_thread_each("torch" in impls) as engine_threads:
            for name in engine:
                if not ENGINE[name].default_threads:
                    engine_records += measure_engine(name, impls, quick)
        for name in engine:
            if ENGINE[name].default_threads:
                engine_records += measure_engine(name, impls, quick)
        add_engine_ratios(engine_records)
    startup_records = measure_startup(cold=startup == "all") if startup else []
    competing["other_busy_cpus_during"] = during.cpus()
    meta = metadata(impls, copy, competing, engine_threads)
    meta["timing_spread"] = timing_spread(records + engine_records)
    everything = records + engine_records + startup_records
    return {"meta": meta, "records": everything, "targets": verdicts(everything)}


# ------------------------------------------------------------------------------------------ startup

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
    return float(_run_in_fresh_process(script, env).split()[-1])


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


def _startup_table(records: list[dict]) -> list[str]:
    header = f"{'startup (fresh processes)':<38} {'median s':>9} {'min s':>8} {'runs':>5} {'target s':>9}  met"
    lines = ["", header, "-" * len(header)]
    for r in records:
        met = "yes" if r["median_s"] <= r["target_s"] else "no"
        lines.append(
            f"{r['label']:<38} {r['median_s']:>9.3f} {r['min_s']:>8.3f} {r['runs']:>5} {r['target_s']:>9.1f}  {met}"
        )
    return lines + [
        "",
        "import: `import npnorm` timed inside the process (interpreter start-up excluded);",
        "first call: numba import plus loading the kernels from the on-disk cache, after an untimed run filled it;",
        f"empty cache: every kernel compiled with NUMBA_CACHE_DIR set to a new temporary folder, {COLD_RUNS} runs.",
    ]


# ------------------------------------------------------------------------------------------ report


def format_table(result: dict) -> str:
    """The plain-text report: the run's conditions, the norm rows grouped by norm, op and shape, then the
    engine rows."""
    meta, records = result["meta"], result["records"]
    threads = f"numba {meta['numba']} ({meta['numba_threads']} threads, layer {meta['numba_threading_layer']})"
    if meta["torch"]:
        threads += f", torch {meta['torch']} ({meta['torch_threads']} threads)"
    if meta["blas_threads"] is not None:
        threads += f", BLAS {meta['blas_threads']} threads"
    lines = [f"npnorm bench: {meta['dtype']}, numpy {meta['numpy']}, {threads}, {meta['cpu_count']} CPUs"]
    if meta.get("machine"):  # a result saved before the machine was recorded has none
        lines.append(f"machine: {meta['machine']}")
    if meta["numba_threading_layer"] == "omp":
        lines.append(f"OpenMP idle spinning: {meta['openmp_spin']}")
    if "copy_gbps" in meta:
        low, high = meta["copy_rows_gbps"]
        lines += [
            f"copy bandwidth, {meta['copy_probe_bytes'] // 2**20} MiB float32, read + write, at the start:",
            f"  {meta['copy_1thread_gbps']:6.1f} GB/s  np.copyto into an existing array, 1 thread",
            f"  {meta['copy_threaded_gbps']:6.1f} GB/s  the same, {meta['copy_threads']} threads",
            f"  {meta['copy_new_gbps']:6.1f} GB/s  x.copy() into a new array, 1 thread (page faults included)",
            f"  {low:.1f}-{high:.1f} GB/s  the {meta['copy_threads']}-thread copy timed beside each row's cells, "
            "each row's 100% in '% copy'",
        ]
    for when in ("before", "during"):
        busy = meta[f"other_busy_cpus_{when}"]
        if busy is not None and busy > 0.2:
            lines.append(
                f"WARNING: other processes kept {busy:.1f} of {meta['cpu_count']} CPUs busy {when} the run; "
                "timings are noisy"
            )
    spread = meta.get("timing_spread")
    unsteady = spread is not None and spread > UNSTEADY_SPREAD
    if spread is not None:
        lines.append(f"timing spread: medians {spread:.2f}x their minima (geometric mean over the timed rows)")
        if unsteady:
            lines.append(
                f"WARNING: timings were unsteady (spread above {UNSTEADY_SPREAD}): something this machine cannot "
                "see as load slowed it (a busy host?); compare minima, and expect the start-up rows to read high"
            )
    if not meta["numba_kernels"]:
        lines.append("WARNING: numba cannot be imported; impl 'numba' ran the NumPy reference")
    norm_records = [r for r in records if r["kind"] == "norm"]
    engine_records = [r for r in records if r["kind"] == "engine"]
    if norm_records:
        lines += _norm_table(norm_records)
    if engine_records:
        lines += _engine_table(meta, engine_records)
    startup_records = [r for r in records if r["kind"] == "startup"]
    if startup_records:
        lines += _startup_table(startup_records)
    lines += format_verdicts(result["targets"], unsteady=unsteady)  # as run() judged them, the JSON's too
    return "\n".join(lines)


def _norm_table(records: list[dict]) -> list[str]:
    header = [
        f"{'':<26} {'':>11}  {'':<6} {'':>10} {'':>10} {'':>7} {'':>7}   {'numba speed-up':^17}",
        f"{'op':<26} {'shape':>11}  {'impl':<6} {'median ms':>10} {'min ms':>10} "
        f"{'GB/s':>7} {'% copy':>7}   {'median':>8} {'min':>8}",
    ]
    lines = []
    previous = None
    for r in records:
        group = (r["norm"], r["op"])
        if group != previous:
            lines += ["", *header, "-" * len(header[1])]
            previous = group
        name = f"{NORMS[r['norm']].label} {r['op']}"
        shape = "x".join(str(n) for n in r["shape"])
        speedups = [
            "-" if r["impl"] == "numba" or r[key] is None else f"{r[key]:.2f}x"
            for key in ("numba_speedup", "numba_speedup_min")
        ]
        lines.append(
            f"{name:<26} {shape:>11}  {r['impl']:<6} {r['median_ms']:>10.3f} {r['min_ms']:>10.3f} "
            f"{r['gbps']:>7.1f} {100 * r['share_of_copy']:>6.0f}%   {speedups[0]:>8} {speedups[1]:>8}"
        )
    return lines + [
        "",
        "GB/s: bytes that must move (forward 2, backward 3, forward+backward 5 arrays of N x H) / min time;",
        "% copy: that as a share of the copy's bandwidth timed beside the row (cache-resident shapes can exceed 100%);",
        "numba speed-up: time(impl) / time(numba), of the medians and of the minima; above 1 numba is faster.",
    ]


def _engine_table(meta: dict, records: list[dict]) -> list[str]:
    threads = meta["engine_threads"]
    blas = "BLAS 1" if threads["blas"] else "BLAS not limited (no threadpoolctl)"
    torch = f", torch {threads['torch']}" if threads["torch"] else ""
    header = [
        f"{'':<26} {'':<6} {'':>10} {'':>10} {'':>9} {'':>12}   {'npnorm speed-up':^17}",
        f"{'engine':<26} {'impl':<6} {'median ms':>10} {'min ms':>10} {'us/op':>9} {'npnorm/torch':>12}   "
        f"{'median':>8} {'min':>8}",
    ]
    lines = [
        "",
        f"engine rows: npnorm (impl {meta['engine_npnorm_impl']}){' vs torch' if threads['torch'] else ''}, "
        "one thread each "
        f"({blas}, numba {threads['numba']}{torch})",
        *header,
        "-" * len(header[1]),
    ]
    for r in records:
        us_per_op = "-" if r["us_per_op"] is None else f"{r['us_per_op']:.2f}"
        ratios = [
            "-" if r["impl"] == "npnorm" else f"{r[key]:.2f}x"
            for key in ("npnorm_time_ratio", "npnorm_speedup", "npnorm_speedup_min")
        ]
        lines.append(
            f"{ENGINE[r['op']].label:<26} {r['impl']:<6} {r['median_ms']:>10.3f} {r['min_ms']:>10.3f} "
            f"{us_per_op:>9} {ratios[0]:>12}   {ratios[1]:>8} {ratios[2]:>8}"
        )
    lines.append("")
    for name in dict.fromkeys(r["op"] for r in records):
        lines.append(f"{ENGINE[name].label}: {ENGINE[name].what}")
        for r in records:
            if r["op"] == name and r["process_threads"]:
                t = r["process_threads"]
                blas = "?" if t["blas"] is None else t["blas"]
                own = (
                    f"torch {t['torch']}"
                    if "torch" in t
                    else f"numba {t['numba']} (OpenMP idle spinning: {t['openmp_spin']})"
                )
                lines.append(f"  {r['impl']} in a fresh process of its own: BLAS {blas} threads, {own}")
    return lines + [
        "us/op: median time per call / ops per call, in microseconds;",
        "npnorm/torch: time(npnorm) / time(torch), of the medians; above 1 npnorm takes longer;",
        "npnorm speed-up: time(torch) / time(npnorm), of the medians and of the minima; above 1 npnorm is faster.",
    ]


# ------------------------------------------------------------------------------------------ command line


def _comma_list(choices: tuple[str, ...] | list[str], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, bad)) or repr(text)}; choose from {', '.join(choices)}"
            )
        return list(dict.fromkeys(items))  # drop repeats, keep order

    return parse


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'8192x1024,64x64' -> [(8192, 1024), (64, 64)]; anything else is an argparse error."""
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(
                f"bad shape {item.strip()!r} in {text!r}: expected ROWSxH with positive integers, e.g. 8192x1024,64x64"
            )
        shapes.append((int(parts[0]), int(parts[1])))
    return list(dict.fromkeys(shapes))


DESCRIPTION = (
    "time the norms (numba, numpy, torch) side by side, as ms and as a share of copy bandwidth, "
    "then the engine (training steps and per-op overhead, npnorm vs torch), then start-up (import, first call, "
    "cold compile)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `npnorm bench`, shared by the CLI subcommand and `python -m npnorm.bench`."""
    default_shapes = ",".join(f"{n}x{h}" for n, h in SHAPES)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_REPS} reps, shapes {','.join(f'{n}x{h}' for n, h in QUICK_SHAPES)} unless --shapes",
    )
    parser.add_argument("--shapes", type=parse_shapes, help=f"ROWSxH,... (default {default_shapes})")
    parser.add_argument(
        "--ops", type=_comma_list(tuple(OPS), "op"), default=list(OPS), help=f"of {','.join(OPS)} (default all)"
    )
    parser.add_argument(
        "--impls",
        type=_comma_list(IMPLS, "impl"),
        help=f"of {','.join(IMPLS)} (default all; torch only if it can be imported)",
    )
    parser.add_argument(
        "--norms", type=_comma_list(tuple(NORMS), "norm"), default=list(NORMS), help=f"of {','.join(NORMS)}"
    )
    rows = parser.add_mutually_exclusive_group()
    rows.add_argument(
        "--engine",
        nargs="?",
        const=list(ENGINE),
        type=_comma_list(tuple(ENGINE), "engine case"),
        metavar="CASES",
        help=f"only the engine rows: all, or CASES of {','.join(ENGINE)} (the norm options are then ignored)",
    )
    rows.add_argument("--no-engine", action="store_true", help="only the norm rows")
    rows.add_argument(
        "--startup",
        action="store_true",
        help="only the start-up rows: import time, first call with a warm cache and, unless --quick, compiling "
        "every kernel into an empty cache (the full run includes them; --quick leaves them out)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the records and metadata as JSON")


def run_from_args(args: argparse.Namespace) -> int:
    shapes = args.shapes or list(QUICK_SHAPES if args.quick else SHAPES)
    impls = args.impls or list(IMPLS)
    if "torch" in impls and not torch_available():
        if args.impls:  # asked for by name: say why it is missing
            print("npnorm bench: torch cannot be imported; skipping impl torch", file=sys.stderr)
        impls = [impl for impl in impls if impl != "torch"]
    norms = [] if args.engine or args.startup else args.norms
    engine = [] if args.startup else args.engine or ([] if args.no_engine else list(ENGINE))
    everything = not (args.quick or args.engine or args.no_engine)
    startup = ("warm" if args.quick else "all") if args.startup or everything else None
    if not impls and norms:
        print("npnorm bench: no implementation left to run", file=sys.stderr)
        return 2
    result = run(norms, shapes, args.ops, impls, quick=args.quick, engine=engine, startup=startup)
    print(format_table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="npnorm bench", description=DESCRIPTION)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
