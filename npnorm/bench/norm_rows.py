"""The norm rows of `npnorm bench`: each norm called as a user calls it, through npnorm (impl numba or
numpy) and through PyTorch's ``torch.nn.functional``, timed interleaved with each other and with the copy
probe. Adding a norm is one entry in :data:`NORMS`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .timing import Cell, CopyProbe, time_interleaved


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
