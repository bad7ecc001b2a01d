"""`npnorm bench`: the report is well-formed and its numbers agree with each other. Never asserts on timings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

import numpy as np
import pytest

import npnorm
import npnorm.cli
from npnorm import bench

QUICK_SHAPES = [[256, 256], [64, 64]]
OPS = ["forward", "backward", "forward_backward"]
ENGINE_CASES = ["mlp_step", "ln_lstm_step", "add_forward", "chain_forward_backward", "mlp_step_default_threads"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `--quick` run for the whole module (norm rows, then engine rows): (exit code, the JSON it wrote)."""
    path = tmp_path_factory.mktemp("bench") / "b.json"
    code = bench.main(["--quick", "--json", str(path)])
    return code, json.loads(path.read_text())


def expected_impls():
    return ["numba", "numpy"] + (["torch"] if bench.torch_available() else [])


def expected_engine_impls():
    return ["npnorm"] + (["torch"] if bench.torch_available() else [])


def records_of(result, kind):
    return [r for r in result["records"] if r["kind"] == kind]


def test_quick_run_has_one_record_per_shape_op_impl(quick_run):
    code, result = quick_run
    assert code == 0
    assert {r["kind"] for r in result["records"]} == {"norm", "engine"}
    keys = sorted((r["norm"], r["op"], tuple(r["shape"]), r["impl"]) for r in records_of(result, "norm"))
    wanted = sorted(
        (norm, op, tuple(s), impl)
        for norm in bench.NORMS
        for op in OPS
        for s in QUICK_SHAPES
        for impl in expected_impls()
    )
    assert keys == wanted


def test_numbers_are_positive_finite_and_consistent(quick_run):
    _, result = quick_run
    meta, records = result["meta"], records_of(result, "norm")
    numba = {(r["norm"], r["op"], tuple(r["shape"])): r for r in records if r["impl"] == "numba"}
    for r in records:
        for key in ("median_ms", "min_ms", "gbps", "copy_gbps", "share_of_copy", "numba_speedup", "numba_speedup_min"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["min_ms"] <= r["median_ms"]
        assert 1 <= r["reps"] <= bench.QUICK_REPS
        N, H = r["shape"]
        assert r["bytes"] == {"forward": 2, "backward": 3, "forward_backward": 5}[r["op"]] * N * H * 4
        assert r["gbps"] == pytest.approx(r["bytes"] / (r["min_ms"] * 1e-3) / 1e9)
        assert r["share_of_copy"] == pytest.approx(r["gbps"] / r["copy_gbps"])  # the copy timed beside the row
        assert meta["copy_rows_gbps"][0] <= r["copy_gbps"] <= meta["copy_rows_gbps"][1]
        # the row's implementations were timed with the same probe, so one row's records share its bandwidth
        reference = numba[r["norm"], r["op"], tuple(r["shape"])]
        assert r["copy_gbps"] == reference["copy_gbps"]
        assert r["numba_speedup"] == pytest.approx(r["median_ms"] / reference["median_ms"])
        assert r["numba_speedup_min"] == pytest.approx(r["min_ms"] / reference["min_ms"])
        if r["impl"] == "numba":
            assert r["numba_speedup"] == r["numba_speedup_min"] == 1.0


def test_quick_run_has_one_engine_record_per_case_and_impl(quick_run):
    _, result = quick_run
    keys = [(r["op"], r["impl"]) for r in records_of(result, "engine")]
    assert list(bench.ENGINE) == ENGINE_CASES
    assert keys == [(case, impl) for case in ENGINE_CASES for impl in expected_engine_impls()]


def test_engine_numbers_are_positive_finite_and_consistent(quick_run):
    _, result = quick_run
    records = records_of(result, "engine")
    npnorm_rows = {r["op"]: r for r in records if r["impl"] == "npnorm"}
    for r in records:
        for key in ("median_ms", "min_ms", "npnorm_speedup", "npnorm_speedup_min", "npnorm_time_ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["min_ms"] <= r["median_ms"]
        assert 1 <= r["reps"] <= bench.QUICK_REPS and r["calls_per_rep"] >= 1
        assert r["what"] == bench.ENGINE[r["op"]].what
        assert r["threads"] == ("default" if bench.ENGINE[r["op"]].default_threads else "one each")
        assert r["ops_per_call"] == bench.ENGINE[r["op"]].ops_per_call
        if r["ops_per_call"] is None:  # a whole training step
            assert r["us_per_op"] is None
        else:
            assert r["us_per_op"] == pytest.approx(r["median_ms"] * 1e3 / r["ops_per_call"])
        reference = npnorm_rows[r["op"]]
        assert r["npnorm_speedup"] == pytest.approx(r["median_ms"] / reference["median_ms"])
        assert r["npnorm_speedup_min"] == pytest.approx(r["min_ms"] / reference["min_ms"])
        assert r["npnorm_time_ratio"] == pytest.approx(1 / r["npnorm_speedup"])
        if r["impl"] == "npnorm":
            assert r["npnorm_speedup"] == r["npnorm_speedup_min"] == r["npnorm_time_ratio"] == 1.0


def test_metadata(quick_run):
    _, result = quick_run
    meta = result["meta"]
    for key in ("numpy", "numba", "numba_threads", "cpu_count", "copy_gbps", "copy_1thread_gbps", "copy_new_gbps"):
        assert meta[key], key
    assert meta["dtype"] == "float32"
    from npnorm._machine import machine_description

    assert meta["machine"] == machine_description()  # CPU and BLAS kernels: runs on two hosts differ
    assert f"machine: {meta['machine']}" in bench.format_table(result).splitlines()[1]
    assert meta["copy_gbps"] == max(meta["copy_1thread_gbps"], meta["copy_threaded_gbps"])
    low, high = meta["copy_rows_gbps"]
    assert 0 < low <= high and math.isfinite(high)
    assert meta["timing_spread"] == pytest.approx(bench.timing_spread(result["records"]))
    assert meta["timing_spread"] >= 1.0
    if bench.torch_available():
        assert meta["torch"] and meta["torch_threads"] >= 1
    else:
        assert meta["torch"] is None
    assert meta["engine_npnorm_impl"] in ("numba", "numpy", "composed")
    threads = meta["engine_threads"]
    assert threads["numba"] == 1 and threads["blas"] in (1, None)
    assert threads["torch"] == (1 if bench.torch_available() else None)


def test_copy_probe_copies_every_element_in_its_threads_slices():
    with bench.CopyProbe(threads=3, nbytes=4 * 1001) as probe:  # 1001 floats: slices of unequal length
        probe.src[:] = np.arange(1001, dtype=np.float32)
        probe.dst[:] = -1
        probe.copy()
        assert np.array_equal(probe.dst, probe.src)
        assert probe.gbps(1e-6) == pytest.approx(2 * 4 * 1001 / 1e-6 / 1e9)  # a read and a write per byte


def test_cells_take_turns_in_order_so_none_always_follows_the_same_one():
    calls = []
    cells = [bench.Cell(name, lambda name=name: calls.append(name)) for name in "abc"]
    bench.time_interleaved(cells, quick=True)
    runs = [name for k, name in enumerate(calls) if k == 0 or calls[k - 1] != name]  # a sample is many calls
    assert runs == list("abc" + "abc" + "bca" + "cab")  # each cell's warm-up, then QUICK_REPS = 3 rounds
    assert bench.QUICK_REPS == 3
    assert all(len(cell.samples) == bench.QUICK_REPS for cell in cells)


def test_timing_spread_is_the_geometric_mean_of_median_over_min_of_the_timed_rows():
    records = [
        {"kind": "norm", "median_ms": 2.0, "min_ms": 1.0},
        {"kind": "engine", "median_ms": 16.0, "min_ms": 2.0},
        {"kind": "startup", "median_s": 30.0, "min_s": 1.0},  # one measurement per process: not a spread
    ]
    assert bench.timing_spread(records) == pytest.approx(4.0)  # sqrt(2 * 8), not the mean 5
    assert bench.timing_spread(records[2:]) is None


@pytest.mark.parametrize("spread,warned", [(1.04, False), (bench.UNSTEADY_SPREAD + 0.01, True), (None, False)])
def test_report_gives_the_timing_spread_and_warns_when_unsteady(quick_run, spread, warned):
    _, result = quick_run
    result = {**result, "meta": {**result["meta"], "timing_spread": spread}}
    lines = bench.format_table(result).splitlines()
    assert any(line.startswith("timing spread:") for line in lines) == (spread is not None)
    assert any(line.startswith("WARNING: timings were unsteady") for line in lines) == warned


def test_competing_load_counts_the_processes_the_bench_started_as_its_own():
    """The start-up rows and the warm-up run in child processes; their CPU time is the bench's, not another
    process's (before, `npnorm bench --startup` warned that "other processes" kept 1.7 of 2 CPUs busy)."""
    import subprocess

    before = bench.CompetingLoad.own_cpu_seconds()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert bench.CompetingLoad.own_cpu_seconds() - before >= 0.3


def test_engine_threads_are_one_each_and_restored_afterwards():
    def settings():
        torch_threads = None
        if bench.torch_available():
            import torch

            torch_threads = torch.get_num_threads()
        return npnorm.get_num_threads(), torch_threads, bench.blas_threads()

    before = settings()
    with bench.one_thread_each(with_torch=bench.torch_available()) as threads:
        numba_threads, torch_threads, blas_threads = settings()
        assert numba_threads == 1
        assert torch_threads == threads["torch"]  # 1, or None without torch
        if threads["blas"] is not None:
            assert blas_threads == 1
    assert settings() == before


def test_default_threads_rows_run_each_library_in_a_fresh_process_with_its_default_threads(monkeypatch):
    """The "default threads" row runs as a plain training loop would, one process per library; the other
    engine rows run here, with one thread each."""
    import numba

    seen = set()
    case = bench.ENGINE["add_forward"]
    runners = lambda with_torch: {"npnorm": lambda: seen.add(npnorm.get_num_threads())}  # noqa: E731
    monkeypatch.setitem(bench.ENGINE, "add_forward", dataclasses.replace(case, runners=runners))
    before = npnorm.get_num_threads()
    result = bench.run([], [], [], ["numba"], quick=True, engine=["add_forward", "mlp_step_default_threads"])
    assert seen == {1} and npnorm.get_num_threads() == before
    one_each, default = result["records"]
    assert (one_each["threads"], one_each["process_threads"]) == ("one each", None)
    assert default["op"] == "mlp_step_default_threads" and default["threads"] == "default"
    assert default["process_threads"]["numba"] == numba.config.NUMBA_NUM_THREADS  # a fresh process's default
    assert default["process_threads"]["openmp_spin"]  # what start_numba_threads found there
    assert 1 <= default["reps"] <= bench.QUICK_REPS and default["min_ms"] <= default["median_ms"]
    assert math.isfinite(default["median_ms"]) and default["median_ms"] > 0
    table = bench.format_table(result)
    assert "npnorm in a fresh process of its own" in table.split("MLP step, default threads:")[1]


def test_a_run_of_default_threads_rows_only_claims_no_one_thread_budget(monkeypatch):
    from npnorm.bench import engine_rows

    cell = {"number": 1, "reps": 3, "samples": [0.002, 0.0021, 0.0022]}
    cell["threads"] = {"blas": 2, "numba": 2, "openmp_spin": "GNU OpenMP's default"}
    monkeypatch.setattr(engine_rows, "run_in_fresh_process", lambda script: json.dumps(cell))
    result = bench.run([], [], [], ["numba"], quick=True, engine=["mlp_step_default_threads"])
    assert result["meta"]["engine_threads"] is None  # no row ran with one thread each
    assert result["meta"]["engine_npnorm_impl"] in ("numba", "numpy", "composed")
    (header,) = [line for line in bench.format_table(result).splitlines() if line.startswith("engine rows:")]
    assert "one thread each" not in header and "each library's default threads" in header, header


def test_engine_threads_without_threadpoolctl_leave_blas_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # `import threadpoolctl` now raises ImportError
    assert bench.blas_threads() is None
    with bench.one_thread_each(with_torch=False) as threads:
        assert threads == {"blas": None, "numba": 1, "torch": None}


@pytest.mark.skipif(not bench.torch_available(), reason="needs torch")
@pytest.mark.parametrize("make_runners", [bench.mlp_step_runners, bench.ln_lstm_step_runners])
def test_engine_steps_compute_the_same_numbers_in_npnorm_and_torch(make_runners):
    """Same weights, batch and optimizer: the losses agree, before and after an Adam step."""
    runners = make_runners(with_torch=True)
    with bench.one_thread_each(with_torch=True):  # as the bench runs them (threaded BLAS can be ~35x slower)
        for _ in range(2):
            assert runners["npnorm"]().item() == pytest.approx(runners["torch"]().item(), rel=1e-5)


def test_cli_prints_a_table(capsys):
    argv = [
        "bench",
        "--quick",
        "--norms",
        "layer_norm",
        "--shapes",
        "64x64",
        "--ops",
        "forward",
        "--impls",
        "numpy,numba",
        "--no-engine",
    ]
    assert npnorm.cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "copy bandwidth" in out and "engine rows" not in out
    rows = [line.split() for line in out.splitlines() if line.startswith("LayerNorm forward")]
    assert [(row[2], row[3]) for row in rows] == [("64x64", "numpy"), ("64x64", "numba")]


def test_cli_engine_prints_only_the_engine_rows_asked_for(capsys):
    assert npnorm.cli.main(["bench", "--quick", "--engine", "add_forward"]) == 0
    out = capsys.readouterr().out
    assert "engine rows" in out and "copy bandwidth" not in out and "LayerNorm" not in out
    label = bench.ENGINE["add_forward"].label + " "  # a table row; its footnote has a colon after the label
    impls = [line[len(label) :].split()[0] for line in out.splitlines() if line.startswith(label)]
    assert impls == expected_engine_impls()


def test_an_unwritable_json_fails_before_the_run(tmp_path, monkeypatch, capsys):
    from npnorm.bench import cli as bench_cli

    def never(*args, **kwargs):
        raise AssertionError("benchmarked although the result could not be written")

    monkeypatch.setattr(bench_cli, "run", never)
    for argv, main in ((["bench", "--quick"], npnorm.cli.main), (["--quick"], bench.main)):
        assert main([*argv, "--json", str(tmp_path)]) == 1  # a folder, not a file
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("npnorm bench: error: cannot write --json"), err


def test_json_paths_that_cannot_be_written_fail_before_the_run_and_leave_nothing_behind(tmp_path, monkeypatch, capsys):
    from npnorm.bench import cli as bench_cli

    def never(*args, **kwargs):
        raise AssertionError("benchmarked although the result could not be written")

    monkeypatch.setattr(bench_cli, "run", never)
    for path in (f"{tmp_path}/new_folder/", f"{tmp_path}/{'a' * 300}.json"):
        assert npnorm.cli.main(["bench", "--quick", "--json", path]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"npnorm bench: error: cannot write --json {path}:"), err
    existing = tmp_path / "old.json"
    existing.write_text("kept")
    bench_cli.check_output(str(existing), "--json")  # a file that exists is opened, not truncated
    bench_cli.check_output(str(tmp_path / "new.json"), "--json")  # nor is a new one left behind
    assert existing.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


def test_bad_settings_fail_before_the_run_from_either_entry_point(monkeypatch, capsys):
    from npnorm.bench import cli as bench_cli

    def never(*args, **kwargs):
        raise AssertionError("benchmarked with settings that fail")

    monkeypatch.setattr(bench_cli, "run", never)
    one_row = ["--quick", "--norms", "layer_norm,batch_norm", "--shapes", "64x64,1x64"]
    for main, prefix in ((npnorm.cli.main, ["bench"]), (bench.main, [])):
        assert main([*prefix, *one_row]) == 2
        assert "batch_norm needs at least 2 rows, got --shapes 1x64" in capsys.readouterr().err
        monkeypatch.setenv("NPNORM_IMPL", "bogus")
        assert main([*prefix, "--quick"]) == 2
        assert "NPNORM_IMPL must be one of" in capsys.readouterr().err
        monkeypatch.delenv("NPNORM_IMPL")


def test_all_names_every_choice():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--engine", "all"])
    assert args.engine == list(bench.ENGINE)
    args = parser.parse_args(["--norms", "all", "--impls", "all", "--ops", "all"])
    assert (args.norms, args.impls, args.ops) == (list(bench.NORMS), list(bench.IMPLS), list(bench.OPS))


def test_parse_shapes():
    assert bench.parse_shapes("8192x1024, 64X64,8192x1024") == [(8192, 1024), (64, 64)]


@pytest.mark.parametrize(
    "argv",
    [
        ["--shapes", "8192"],
        ["--shapes", "axb"],
        ["--shapes", "0x64"],
        ["--shapes", "64x64,"],
        ["--shapes", "-1x64"],
        ["--shapes", "2x3x4"],
        ["--ops", "sideways"],
        ["--impls", "numba,jax"],
        ["--engine", "mlp"],
        ["--engine", "--no-engine"],
    ],
)
def test_garbage_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        npnorm.cli.main(["bench", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("npnorm bench: error: argument --"), err
