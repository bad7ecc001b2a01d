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
bound, the value read and whether it holds (``npnorm/bench/targets.py``; in the JSON under ``"targets"``).

**Adding a norm** is one entry in :data:`NORMS`: its npnorm call, its torch call (or None) and the
names of its affine parameters. **Adding an engine workload** is one entry in :data:`ENGINE`: a function
that builds the npnorm and the torch runner on the same weights and data.

**Where each part lives.** ``timing`` (samples, interleaving, the copy probe, the load of other processes,
the timing spread), ``norm_rows`` and ``engine_rows`` (what each row runs and records), ``startup`` (the
fresh-process rows), ``suite`` (one whole run and its conditions), ``report`` (the printed tables),
``targets`` (the performance issue's targets judged on a run) and ``cli`` (the options).
"""

from __future__ import annotations

from .cli import DESCRIPTION, add_arguments, main, parse_shapes, run_from_args
from .engine_rows import (
    ENGINE,
    ENGINE_CELL_S,
    EngineCase,
    blas_threads,
    ln_lstm_step_runners,
    measure_engine,
    mlp_step_runners,
    one_thread_each,
    time_engine_cell,
    tiny_op_runners,
    torch_ln_lstm,
)
from .norm_rows import DTYPE, IMPLS, NORMS, OPS, QUICK_SHAPES, SHAPES, NormCase, make_data, make_runner, measure
from .report import format_table
from .startup import COLD_RUNS, STARTUP, STARTUP_RUNS, measure_startup
from .suite import metadata, run, torch_available
from .timing import (
    QUICK_REPS,
    UNSTEADY_SPREAD,
    Cell,
    CompetingLoad,
    CopyProbe,
    copy_bandwidth,
    time_interleaved,
    timing_spread,
)

__all__ = [
    "COLD_RUNS",
    "Cell",
    "CompetingLoad",
    "CopyProbe",
    "DESCRIPTION",
    "DTYPE",
    "ENGINE",
    "ENGINE_CELL_S",
    "EngineCase",
    "IMPLS",
    "NORMS",
    "NormCase",
    "OPS",
    "QUICK_REPS",
    "QUICK_SHAPES",
    "SHAPES",
    "STARTUP",
    "STARTUP_RUNS",
    "UNSTEADY_SPREAD",
    "add_arguments",
    "blas_threads",
    "copy_bandwidth",
    "format_table",
    "ln_lstm_step_runners",
    "main",
    "make_data",
    "make_runner",
    "measure",
    "measure_engine",
    "measure_startup",
    "metadata",
    "mlp_step_runners",
    "one_thread_each",
    "parse_shapes",
    "run",
    "run_from_args",
    "time_engine_cell",
    "time_interleaved",
    "timing_spread",
    "tiny_op_runners",
    "torch_available",
    "torch_ln_lstm",
]
