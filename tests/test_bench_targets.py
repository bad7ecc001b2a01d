"""The performance issue's targets as the bench judges them: which number each reads, on which side of its
bound it holds, and which are left out when their rows did not run. Synthetic records: never timings."""

from __future__ import annotations

import json

import pytest

from npnorm import bench
from npnorm.bench import targets as bench_targets
from npnorm.bench.targets import TARGETS, format_verdicts, verdicts

BIG_SHAPES = [(8192, 1024), (32768, 256), (1024, 4096)]


def norm_row(norm, op, shape, impl, share=1.0, speedup=1.0):
    return {
        "kind": "norm",
        "norm": norm,
        "op": op,
        "shape": list(shape),
        "impl": impl,
        "share_of_copy": share,
        "numba_speedup": speedup,
    }


def full_run(share=1.0, speedup=3.0, small_ratio=0.4, us_per_op=2.0, step_ratio=0.7, seconds=0.1):
    """Records of a full run in which every target reads the value given (one value per kind of target)."""
    records = []
    for norm in ("layer_norm", "rms_norm"):
        for op in ("forward", "backward"):
            for shape in BIG_SHAPES + [(256, 256)]:
                records.append(norm_row(norm, op, shape, "numba", share=share))
    compared = [("layer_norm", s) for s in BIG_SHAPES] + [("batch_norm", (8192, 1024)), ("group_norm", (8192, 1024))]
    for norm, shape in compared:
        records.append(norm_row(norm, "forward_backward", shape, "torch", speedup=speedup))
    records.append(norm_row("layer_norm", "forward_backward", (64, 64), "torch", speedup=1 / small_ratio))
    records.append({"kind": "engine", "op": "add_forward", "impl": "npnorm", "us_per_op": us_per_op})
    for op in ("mlp_step", "ln_lstm_step"):
        records.append({"kind": "engine", "op": op, "impl": "torch", "npnorm_time_ratio": step_ratio})
    for op in ("import", "first_call", "cold_compile"):
        records.append({"kind": "startup", "op": op, "median_s": seconds})
    return records


def test_every_target_is_read_from_a_full_run_and_met_when_well_inside_its_bound():
    entries = verdicts(full_run())
    assert len(entries) == len(TARGETS)
    assert all(e["met"] for e in entries), [e for e in entries if not e["met"]]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.what} {t.bound}")
def test_each_target_holds_at_its_bound_and_fails_just_beyond_it(target):
    for value, met in [(target.bound, True), (target.bound * (0.99 if target.higher_is_better else 1.01), False)]:
        assert target.met(value) is met


def test_values_are_the_numbers_the_tables_print():
    records = full_run(share=0.9, speedup=2.0, small_ratio=0.55, us_per_op=3.5, step_ratio=0.85, seconds=0.4)
    by_what = {}
    for e in verdicts(records):
        by_what.setdefault(e["what"], []).append(e)
    assert [e["value"] for e in by_what["LayerNorm forward, % copy at >= 1M elements"]] == [pytest.approx(90)]
    speedups = by_what["LayerNorm fwd+bwd, speed-up over PyTorch"]
    assert [(e["where"], e["value"], e["met"]) for e in speedups] == [
        ("8192x1024", 2.0, False),
        ("32768x256", 2.0, False),
        ("1024x4096", 2.0, True),  # its bound is 1.2x
    ]
    (small,) = by_what["LayerNorm fwd+bwd, time over PyTorch's"]
    assert small["value"] == pytest.approx(0.55) and not small["met"]  # 1 / numba's speed-up over torch
    (per_op,) = by_what["engine overhead per recorded op (a + b)"]
    assert per_op["value"] == 3.5 and not per_op["met"]
    steps = by_what["MLP train step, time over PyTorch's"] + by_what["LN-LSTM train step, time over PyTorch's"]
    assert [e["met"] for e in steps] == [False, True]  # 0.85 against 0.8 and 1.0
    startup = [e for e in verdicts(records) if e["unit"] == "s"]
    assert [e["met"] for e in startup] == [False, True, True]  # 0.4 s against 0.3, 0.5 and 10


def test_the_worst_large_shape_decides_the_roofline_and_small_shapes_do_not_count():
    records = full_run()
    for r in records:
        if r["kind"] == "norm" and (r["norm"], r["op"]) == ("layer_norm", "backward"):
            r["share_of_copy"] = {(1024, 4096): 0.69, (256, 256): 0.1}.get(tuple(r["shape"]), 0.9)
    (entry,) = [e for e in verdicts(records) if e["what"] == "LayerNorm backward, % copy at >= 1M elements"]
    assert (entry["where"], entry["value"], entry["met"]) == ("1024x4096", pytest.approx(69), False)


def test_targets_whose_rows_did_not_run_are_left_out():
    records = [r for r in full_run() if r["kind"] != "startup" and r.get("impl") != "torch"]
    whats = {e["what"] for e in verdicts(records)}
    assert not any("PyTorch" in what for what in whats)
    assert "import npnorm" not in whats
    assert "engine overhead per recorded op (a + b)" in whats
    assert verdicts([]) == [] and format_verdicts([], unsteady=True) == []


def test_pytorch_rows_without_a_numba_row_beside_them_are_left_out():
    """--impls numpy,torch: the norm rows of torch have no numba row to compare with (numba_speedup None)."""
    records = [dict(r, numba_speedup=None) if r["kind"] == "norm" and r["impl"] == "torch" else r for r in full_run()]
    entries = verdicts(records)
    assert not any("fwd+bwd" in e["what"] for e in entries)  # the six comparisons with PyTorch's norms
    assert len(entries) == len(TARGETS) - 6


@pytest.mark.parametrize(
    "unit, bound, higher_is_better, value, printed",
    [
        ("x", 1.2, True, 1.1994, "1.199x"),  # a miss that would round to its bound
        ("%", 80, True, 79.96, "79.96%"),
        ("us", 3, False, 3.004, "3.004 us"),
        ("s", 0.3, False, 0.3004, "0.3004 s"),
        ("x", 1.2, True, 1.2, "1.20x"),  # met: as many decimals as usual
        ("us", 3, False, 2.996, "3.00 us"),  # met, and so is its rounding
        ("%", 80, True, float("nan"), "nan%"),  # NaN is a miss, printed as it is
    ],
)
def test_a_printed_value_never_contradicts_its_verdict(unit, bound, higher_is_better, value, printed):
    target = bench_targets.Target("a target", bound, higher_is_better, unit, read=lambda records: None)
    entry = {"what": "a target", "where": "", "value": value, "bound": bound, "unit": unit}
    entry.update(higher_is_better=higher_is_better, met=target.met(value))
    (line,) = [line for line in format_verdicts([entry], unsteady=False) if line.startswith("a target")]
    assert line.endswith(f" {printed}  {'yes' if entry['met'] else 'NO'}"), line


def test_the_start_up_table_never_prints_a_miss_as_its_bound():
    from npnorm.bench.report import _startup_table

    rows = [
        {"label": "import npnorm", "median_s": 0.3004, "min_s": 0.25, "runs": 5, "target_s": 0.3},
        {"label": "first call", "median_s": 0.2996, "min_s": 0.25, "runs": 5, "target_s": 0.3},
    ]
    lines = _startup_table(rows)
    assert lines[3].split()[-5:] == ["0.3004", "0.250", "5", "0.3", "no"], lines[3]
    assert lines[4].split()[-5:] == ["0.300", "0.250", "5", "0.3", "yes"], lines[4]


def test_report_block_counts_the_targets_met_and_blames_the_host_only_in_an_unsteady_run():
    entries = verdicts(full_run(seconds=0.45))  # import misses its 0.3 s
    lines = format_verdicts(entries, unsteady=False)
    assert f"{len(entries) - 1} of {len(entries)} targets met in this run" in lines
    assert sum(line.endswith("  NO") for line in lines) == 1
    assert not any("unsteady" in line for line in lines)
    assert any("unsteady" in line for line in format_verdicts(entries, unsteady=True))
    assert not any("unsteady" in line for line in format_verdicts(verdicts(full_run()), unsteady=True))


def test_start_up_rows_carry_the_targets_judged_here():
    assert {name: target for name, (_, _, target) in bench.STARTUP.items()} == bench_targets.STARTUP_SECONDS


def test_quick_run_reports_its_verdicts(tmp_path, capsys):
    path = tmp_path / "b.json"
    assert bench.main(["--quick", "--no-engine", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    result = json.loads(path.read_text())
    assert result["targets"] == verdicts(result["records"])
    # --quick has no shape of 2^20 elements, so no roofline target; 64x64 against torch when torch is there
    assert not any("% copy" in e["what"] for e in result["targets"])
    assert any(e["where"] == "64x64" for e in result["targets"]) == bench.torch_available()
    if result["targets"]:
        assert "targets met in this run" in out
