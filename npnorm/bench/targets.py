"""The performance issue's targets, judged on one `npnorm bench` result.

Every target is a ratio or a time that one run of the bench measures; this module reads it from the run's
records and says whether it holds. A target whose rows did not run (``--quick`` has no shape of a million
elements, no torch means no comparison with it) is left out, not counted as met. The report prints the
verdicts last; the JSON has them under ``"targets"``.

What each target reads (the same numbers the tables print):

* roofline: ``share_of_copy`` of the numba rows of LayerNorm and RMSNorm at every shape of at least 2^20
  elements, forward and backward; the worst shape decides;
* against PyTorch: numba's speed-up over torch, of the medians (``numba_speedup`` of the torch row), on
  forward+backward at the shapes the issue names;
* 64x64: numba's time over torch's, of the medians (1 / that speed-up);
* engine: npnorm's µs per op for ``a + b``, and npnorm's time over torch's for the training steps
  (``npnorm_time_ratio``), one thread each;
* start-up: the median of the fresh processes (``median_s``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MILLION = 2**20  # "at >= 1M elements": 8192x1024, 32768x256 and 1024x4096 all hold exactly 2^22
# Start-up targets in seconds, by the name of the bench's start-up row (it prints them beside the rows too).
STARTUP_SECONDS = {"import": 0.3, "first_call": 0.5, "cold_compile": 10.0}


@dataclass(frozen=True)
class Target:
    """One target: `read` takes the run's records and returns (value, where) or None if its rows did not run."""

    what: str
    bound: float
    higher_is_better: bool
    unit: str  # "%", "x", "us" or "s"
    read: Callable[[list[dict]], tuple[float, str] | None]

    def met(self, value: float) -> bool:
        return _holds(value, self.bound, self.higher_is_better)


def _holds(value: float, bound: float, higher_is_better: bool) -> bool:
    return value >= bound if higher_is_better else value <= bound


def _norm_rows(records, norm, op, impl):
    return [r for r in records if r["kind"] == "norm" and (r["norm"], r["op"], r["impl"]) == (norm, op, impl)]


def _shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


def _worst_share(norm: str, op: str):
    def read(records):
        rows = [r for r in _norm_rows(records, norm, op, "numba") if r["shape"][0] * r["shape"][1] >= MILLION]
        if not rows:
            return None
        worst = min(rows, key=lambda r: r["share_of_copy"])
        return 100 * worst["share_of_copy"], _shape_text(worst["shape"])

    return read


def _torch_speedup(norm: str, shape: tuple[int, int], inverse: bool = False):
    """numba's speed-up over torch (medians) on forward+backward at `shape`; its inverse, the time ratio."""

    def read(records):
        rows = [r for r in _norm_rows(records, norm, "forward_backward", "torch") if tuple(r["shape"]) == shape]
        if not rows:
            return None
        speedup = rows[0]["numba_speedup"]
        if speedup is None:  # no numba row beside it (--impls without numba): nothing to compare
            return None
        return (1 / speedup if inverse else speedup), _shape_text(shape)

    return read


def _engine(op: str, impl: str, key: str):
    """`key` of the engine row of case `op` and `impl` (npnorm's µs per op; the torch row's time ratio)."""

    def read(records):
        rows = [r for r in records if r["kind"] == "engine" and (r["op"], r["impl"]) == (op, impl)]
        return (rows[0][key], "") if rows else None

    return read


def _startup(op: str):
    def read(records):
        rows = [r for r in records if r["kind"] == "startup" and r["op"] == op]
        return (rows[0]["median_s"], "") if rows else None

    return read


TARGETS: tuple[Target, ...] = (
    Target("LayerNorm forward, % copy at >= 1M elements", 80, True, "%", _worst_share("layer_norm", "forward")),
    Target("LayerNorm backward, % copy at >= 1M elements", 70, True, "%", _worst_share("layer_norm", "backward")),
    Target("RMSNorm forward, % copy at >= 1M elements", 80, True, "%", _worst_share("rms_norm", "forward")),
    Target("RMSNorm backward, % copy at >= 1M elements", 70, True, "%", _worst_share("rms_norm", "backward")),
    Target("LayerNorm fwd+bwd, speed-up over PyTorch", 2.5, True, "x", _torch_speedup("layer_norm", (8192, 1024))),
    Target("LayerNorm fwd+bwd, speed-up over PyTorch", 2.5, True, "x", _torch_speedup("layer_norm", (32768, 256))),
    Target("LayerNorm fwd+bwd, speed-up over PyTorch", 1.2, True, "x", _torch_speedup("layer_norm", (1024, 4096))),
    Target("BatchNorm fwd+bwd, speed-up over PyTorch", 1.5, True, "x", _torch_speedup("batch_norm", (8192, 1024))),
    Target("GroupNorm fwd+bwd, speed-up over PyTorch", 1.5, True, "x", _torch_speedup("group_norm", (8192, 1024))),
    Target(
        "LayerNorm fwd+bwd, time over PyTorch's",
        0.5,
        False,
        "x",
        _torch_speedup("layer_norm", (64, 64), inverse=True),
    ),
    Target("engine overhead per recorded op (a + b)", 3.0, False, "us", _engine("add_forward", "npnorm", "us_per_op")),
    Target("MLP train step, time over PyTorch's", 0.8, False, "x", _engine("mlp_step", "torch", "npnorm_time_ratio")),
    Target(
        "LN-LSTM train step, time over PyTorch's",
        1.0,
        False,
        "x",
        _engine("ln_lstm_step", "torch", "npnorm_time_ratio"),
    ),
    Target("import npnorm", STARTUP_SECONDS["import"], False, "s", _startup("import")),
    Target("first LayerNorm call, warm cache", STARTUP_SECONDS["first_call"], False, "s", _startup("first_call")),
    Target("compiling every kernel cold", STARTUP_SECONDS["cold_compile"], False, "s", _startup("cold_compile")),
)


def verdicts(records: list[dict]) -> list[dict]:
    """One entry per target whose rows ran: what, where (a shape, or ""), value, bound, unit, met."""
    out = []
    for target in TARGETS:
        reading = target.read(records)
        if reading is None:
            continue
        value, where = reading
        out.append(
            {
                "what": target.what,
                "where": where,
                "value": value,
                "bound": target.bound,
                "unit": target.unit,
                "higher_is_better": target.higher_is_better,
                "met": target.met(value),
            }
        )
    return out


_DIGITS = {"%": 0, "x": 2, "us": 2, "s": 3}  # decimals a value is printed with
_SUFFIX = {"%": "%", "x": "x", "us": " us", "s": " s"}


def printed_value(value: float, unit: str, bound: float, higher_is_better: bool, suffix: bool = True) -> str:
    """The value as printed, with as many more decimals as it takes for the printed number to get the value's
    verdict too: 1.1994x against ">= 1.2x" prints as 1.199x, not as a 1.20x beside "NO"."""
    met = _holds(value, bound, higher_is_better)
    digits = _DIGITS[unit]
    text = f"{value:.{digits}f}"
    while digits < _DIGITS[unit] + 6 and _holds(float(text), bound, higher_is_better) != met:
        digits += 1
        text = f"{value:.{digits}f}"
    return text + (_SUFFIX[unit] if suffix else "")


def _amount(entry: dict) -> str:
    return printed_value(entry["value"], entry["unit"], entry["bound"], entry["higher_is_better"])


def format_verdicts(entries: list[dict], unsteady: bool) -> list[str]:
    """The report's last block: every target that ran, its bound, this run's value and whether it holds."""
    if not entries:
        return []
    header = f"{'target of the performance issue':<46} {'where':>11} {'bound':>10} {'this run':>10}  met"
    lines = ["", header, "-" * len(header)]
    for e in entries:
        bound = f"{'>=' if e['higher_is_better'] else '<='} {e['bound']:g}{_SUFFIX[e['unit']]}"
        lines.append(f"{e['what']:<46} {e['where']:>11} {bound:>10} {_amount(e):>10}  {'yes' if e['met'] else 'NO'}")
    met = sum(e["met"] for e in entries)
    lines.append(f"{met} of {len(entries)} targets met in this run")
    lines.append(
        "roofline rows: the worst shape of at least 2^20 elements; PyTorch: ratios of medians; start-up: medians."
    )
    if unsteady and met < len(entries):
        lines.append("this run was unsteady (see the timing spread above): a miss may be the host's, not the code's")
    return lines
