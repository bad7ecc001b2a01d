"""The engine rows of `npnorm bench`: whole training steps (a LayerNorm MLP, Ba et al.'s LN-LSTM) and the
cost of one tiny op, each written once with npnorm and once with torch on the same weights and data, run
with one thread each (or, for the "default threads" row, each library in a fresh process with its default
threads). Adding a workload is one entry in :data:`ENGINE`."""

from __future__ import annotations

import contextlib
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .norm_rows import DTYPE
from .timing import Cell, run_in_fresh_process, time_interleaved

ENGINE_CELL_S = 1.0  # an engine cell (case × impl): its steps allocate, so its samples spread more

# The engine workloads (float32 throughout, as DTYPE).
MLP_SIZES = (64, 256, 256, 10)  # input, hidden, hidden, classes
MLP_BATCH = 128
LSTM_STEPS, LSTM_BATCH, LSTM_INPUT, LSTM_HIDDEN, LSTM_CLASSES = 28, 32, 28, 128, 10
TINY_SHAPE = (4, 4)
ENGINE_LR = 1e-3


@dataclass(frozen=True)
class EngineCase:
    """One engine workload, written once with npnorm and once with torch ("Engine rows" in the package docstring)."""

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


def _leaf_data(seed: int, *shapes) -> list[np.ndarray]:
    """Standard normal float32 arrays of the given shapes, the same for every run with this seed."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=DTYPE) for shape in shapes]


def _copy_into_torch(torch_module, state: dict[str, np.ndarray]) -> None:
    """Load npnorm's state dict (same keys) into a torch module, so both start from the same weights."""
    import torch

    torch_module.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()})


def _training_step(optimizer, loss_of: Callable[[], object]) -> Callable[[], object]:
    """One training step as a loop runs it, for npnorm and torch alike (same API): zero_grad, the loss of the
    forward, backward, the optimizer's step; returns the loss."""

    def step():
        optimizer.zero_grad()
        loss = loss_of()
        loss.backward()
        optimizer.step()
        return loss

    return step


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

    runners = {"npnorm": _training_step(optimizer, lambda: F.cross_entropy(model(x_t), target))}
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

    runners["torch"] = _training_step(t_optimizer, lambda: tF.cross_entropy(t_model(t_x), t_target))
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

    def npnorm_loss():
        _, (h_n, _) = lstm(x_t)  # h_n (1, B, H)
        return F.cross_entropy(head(h_n[0]), target)

    runners = {"npnorm": _training_step(optimizer, npnorm_loss)}
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

    def torch_loss():
        _, (h_n, _) = t_lstm(t_x)
        return tF.cross_entropy(t_head(h_n[0]), t_target)

    runners["torch"] = _training_step(t_optimizer, torch_loss)
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


def measure_engine(name: str, impls: list[str], quick: bool) -> list[dict]:
    """Records for npnorm and (if "torch" in impls) torch on one engine case, measured interleaved."""
    case = ENGINE[name]
    if case.default_threads:
        # each library in a fresh process of its own, as a user's training loop runs: in one process the two
        # would share thread pools (torch's libgomp is numba's too once loaded) and each other's spinning
        cells, threads = [], {}
        for impl in ["npnorm"] + (["torch"] if "torch" in impls else []):
            cell = json.loads(run_in_fresh_process(_ENGINE_CELL_SCRIPT.format(name=name, impl=impl, quick=quick)))
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
    from .._threads import get_num_threads, openmp_spin_setting

    cell = Cell(impl, ENGINE[name].runners(impl == "torch")[impl])
    time_interleaved([cell], quick, ENGINE_CELL_S)
    threads = {"blas": blas_threads()}
    if impl == "torch":  # (npnorm's kernels never ran here: numba's threads were not started)
        import torch

        threads["torch"] = torch.get_num_threads()
    else:
        threads.update(numba=get_num_threads(), openmp_spin=openmp_spin_setting())
    return {"samples": cell.samples, "number": cell.number, "reps": cell.reps, "threads": threads}


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
    from .. import get_num_threads, set_num_threads

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
