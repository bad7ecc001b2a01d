"""`npnorm bench`: the report is well-formed and its numbers agree with each other. Never asserts on timings."""

from __future__ import annotations

import json
import math

import pytest

import npnorm.cli
from npnorm import bench

QUICK_SHAPES = [[256, 256], [64, 64]]
OPS = ["forward", "forward_backward"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `--quick` run for the whole module: (exit code, the JSON it wrote)."""
    path = tmp_path_factory.mktemp("bench") / "b.json"
    code = bench.main(["--quick", "--json", str(path)])
    return code, json.loads(path.read_text())


def expected_impls():
    return ["numba", "numpy"] + (["torch"] if bench.torch_available() else [])


def test_quick_run_has_one_record_per_shape_op_impl(quick_run):
    code, result = quick_run
    assert code == 0
    keys = sorted((r["norm"], r["op"], tuple(r["shape"]), r["impl"]) for r in result["records"])
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
    meta, records = result["meta"], result["records"]
    copy_gbps = meta["copy_gbps"]
    assert math.isfinite(copy_gbps) and copy_gbps > 0
    numba = {(r["norm"], r["op"], tuple(r["shape"])): r for r in records if r["impl"] == "numba"}
    for r in records:
        for key in ("median_ms", "min_ms", "gbps", "share_of_copy", "numba_speedup", "numba_speedup_min"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["min_ms"] <= r["median_ms"]
        assert 1 <= r["reps"] <= bench.QUICK_REPS
        N, H = r["shape"]
        assert r["bytes"] == {"forward": 2, "forward_backward": 5}[r["op"]] * N * H * 4
        assert r["gbps"] == pytest.approx(r["bytes"] / (r["min_ms"] * 1e-3) / 1e9)
        assert r["share_of_copy"] == pytest.approx(r["gbps"] / copy_gbps)
        reference = numba[r["norm"], r["op"], tuple(r["shape"])]
        assert r["numba_speedup"] == pytest.approx(r["median_ms"] / reference["median_ms"])
        assert r["numba_speedup_min"] == pytest.approx(r["min_ms"] / reference["min_ms"])
        if r["impl"] == "numba":
            assert r["numba_speedup"] == r["numba_speedup_min"] == 1.0


def test_metadata(quick_run):
    _, result = quick_run
    meta = result["meta"]
    for key in ("numpy", "numba", "numba_threads", "cpu_count", "copy_gbps", "copy_1thread_gbps", "copy_new_gbps"):
        assert meta[key], key
    assert meta["dtype"] == "float32"
    assert meta["copy_gbps"] == max(meta["copy_1thread_gbps"], meta["copy_threaded_gbps"])
    if bench.torch_available():
        assert meta["torch"] and meta["torch_threads"] >= 1
    else:
        assert meta["torch"] is None


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
    ]
    assert npnorm.cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "copy bandwidth" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("LayerNorm forward")]
    assert [(row[2], row[3]) for row in rows] == [("64x64", "numpy"), ("64x64", "numba")]


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
        ["--ops", "backward"],
        ["--impls", "numba,jax"],
    ],
)
def test_garbage_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        npnorm.cli.main(["bench", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("npnorm bench: error: argument --"), err
