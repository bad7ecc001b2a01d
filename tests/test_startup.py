"""Start-up: `import npnorm` stays light, `npnorm warmup` fills the kernel cache, the bench reports start-up rows.

Asserts behaviour (which modules are imported, which kernels come from the cache), never timings.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

import npnorm.cli
from npnorm import bench, warmup

HEAVY_MODULES = ["numba", "scipy", "matplotlib", "sklearn", "tqdm", "torch"]

# Run in a fresh interpreter after `npnorm warmup`: every specialisation the warm-up reaches, then the cache
# statistics of each kernel variant (numba counts a specialisation loaded from disk as a hit, one it had to
# compile as a miss). Only the kernel modules whose source is stable here are counted.
_CACHE_PROBE = """
import json
from npnorm.warmup import warmup
from npnorm.kernels import _jit, adam, batch_norm, group_norm, gru_cell, layer_norm, lstm_cell, rms_norm

warmup(progress=None, jobs=1)  # in this process, so that its dispatchers count what they load
cell = [lstm_cell._state_backward, lstm_cell._output_backward, gru_cell._backward]
dispatchers = [adam._adam_update, _jit._launcher, _jit.add_up_chunks, *cell]
unreached = [d.py_func.__name__ for d in cell if not d.signatures]  # kernels that the warm-up never ran
for module in (batch_norm, group_norm, layer_norm, rms_norm):
    for name, kernel in vars(module).items():
        if isinstance(kernel, _jit.ChunkedKernel):
            dispatchers.extend(kernel.dispatchers)
            unreached += [f"{module.__name__}.{name}" for d in kernel.dispatchers if not d.signatures]
hits = sum(sum(d.stats.cache_hits.values()) for d in dispatchers)
misses = sum(sum(d.stats.cache_misses.values()) for d in dispatchers)
# every entry of add_up_chunks (written by one process of a multi-process warm-up) holds its own signature's code
from numba.core import types
sums = [(out[::1], types.float64[:, ::1]) for out in (types.float32, types.float64)]
for sig in sums:
    _jit.add_up_chunks.compile(sig)
own_code = all(sig in _jit.add_up_chunks.overloads for sig in sums)
print(json.dumps({"hits": hits, "misses": misses, "unreached": unreached, "own_code": own_code}))
"""


def _run(script: str) -> str:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout


def test_import_npnorm_imports_no_heavy_module():
    script = f"import sys, npnorm; print([m for m in {HEAVY_MODULES!r} if m in sys.modules])"
    assert _run(script).strip() == "[]"


def test_warmup_units_cover_every_norm_once():
    assert sorted(name for names, _ in warmup.UNITS for name in names) == sorted(warmup.NORMS)


@pytest.mark.parametrize("processes", range(1, 9))
def test_warmup_plan_gives_every_norm_to_one_process_and_keeps_units_whole(processes):
    shares = warmup.plan(processes)
    assert len(shares) == min(processes, len(warmup.UNITS)) and all(shares)
    assert sorted(name for share in shares for name in share) == sorted(warmup.NORMS)
    owner = {name: k for k, share in enumerate(shares) for name in share}
    for names, _ in warmup.UNITS:  # norms that share compiled functions never compile in two processes
        assert len({owner[name] for name in names}) == 1, (names, shares)


def test_warmup_plan_balances_the_processes_by_the_units_weights():
    """Longest processing time first: two processes get the split measured best on 2 cores; more processes
    never finish later, and from three on the heaviest unit alone decides."""
    assert warmup.plan(2) == [
        ["layer_norm", "group_norm", "ada_norm", "lstm_cell", "gru_cell"],
        ["batch_norm", "rms_norm", "weight_norm", "adam"],
    ]
    longest = [warmup._longest(warmup.plan(k)) for k in range(1, 9)]
    assert longest[0] == pytest.approx(sum(seconds for _, seconds in warmup.UNITS))
    assert all(later <= earlier for earlier, later in zip(longest, longest[1:]))
    assert longest[2] == pytest.approx(max(seconds for _, seconds in warmup.UNITS))


def test_warmup_starts_no_more_processes_than_finish_sooner():
    assert [warmup._jobs_for(cpus) for cpus in range(1, 9)] == [1, 2, 3, 3, 3, 3, 3, 3]


def test_warmup_plan_rejects_zero_processes():
    with pytest.raises(ValueError, match="processes"):
        warmup.plan(0)


def test_warmup_workers_leave_at_once_skipping_the_interpreters_teardown(monkeypatch):
    """The workers register an exit that skips the interpreter's teardown (0.4-0.5 s after numba compiled
    there); registered last, it runs first of the atexit handlers and skips the others too."""
    registered, exits = [], []
    monkeypatch.setattr("atexit.register", registered.append)
    monkeypatch.setattr(warmup.os, "_exit", exits.append)
    warmup._exit_without_teardown()
    assert registered == [warmup._exit_now]
    registered[0]()
    assert exits == [0]


@pytest.mark.parametrize("enabled", [True, False])
def test_warmup_compiles_with_the_collector_paused_and_leaves_it_as_it_was(monkeypatch, enabled):
    """Python's cyclic collector took about a tenth of a cold warm-up (numba's garbage, walked again by
    every full collection); it is off while the warm-up compiles, and as before afterwards."""
    import gc

    seen = []

    def fake_warm(names, dtypes):
        seen.append(gc.isenabled())
        return {name: 0.0 for name in names}

    monkeypatch.setattr(warmup, "_warm", fake_warm)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        result = warmup.warmup(dtypes=("float32",), progress=None, jobs=1)
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
    assert seen == [False] * len(warmup.NORMS)
    assert set(result["norms"]) == set(warmup.NORMS)


def test_warmup_collector_is_on_again_after_an_error(monkeypatch):
    import gc

    def failing_warm(names, dtypes):
        raise RuntimeError("compile failed")

    monkeypatch.setattr(warmup, "_warm", failing_warm)
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="compile failed"):
        warmup.warmup(dtypes=("float32",), progress=None, jobs=1)
    assert gc.isenabled()


def test_warmup_workers_compile_with_the_collector_off_read_the_shared_functions_and_leave_at_once(monkeypatch):
    import gc

    from npnorm import kernels

    registered, read_only, order = [], [], []
    monkeypatch.setattr("atexit.register", registered.append)
    jit = kernels.load("_jit")
    if jit is not None:
        monkeypatch.setattr(jit, "_read_cache_only", read_only.append)
    load = kernels.load
    monkeypatch.setattr(kernels, "load", lambda name: order.append("load") or load(name))
    monkeypatch.setattr(warmup, "plain_compile_errors", lambda: order.append("plain errors"))
    assert gc.isenabled()
    try:
        warmup._start_worker()
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert order == ["plain errors", "load"]  # the setting is made before numba's import, which reads it
    assert registered == [warmup._exit_now]
    if jit is not None:  # the functions every unit needs are written by the first process only
        assert read_only == [jit._launcher, jit.add_up_chunks]


_ERROR_MARKUP_PROBE = """
import os, sys
import npnorm.warmup as w
if sys.argv[1] == "numba first":
    import numba
w.plain_compile_errors()
import numba.core.errors as errors
print(repr(os.environ.get("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING")), type(errors.termcolor()).__name__)
"""


# numba marks its messages up only where it can import colorama (not a dependency of ours); without it, plain
_NUMBAS_DEFAULT = "HighlightColorScheme" if importlib.util.find_spec("colorama") else "NOPColorScheme"


@pytest.mark.parametrize(
    "preset, order, expected",
    [
        (None, "", "'1' NOPColorScheme"),  # a warm-up process: numba's messages as plain text
        ("", "", f"'' {_NUMBAS_DEFAULT}"),  # the environment's own setting stands
        (None, "numba first", f"None {_NUMBAS_DEFAULT}"),  # too late: numba read the setting at its import
    ],
)
def test_the_warm_up_processes_build_numba_errors_as_plain_text(preset, order, expected):
    """numba marks up every rejected overload's message for a terminal (where colorama is installed), about 2%
    of a cold warm-up; the warm-up's own processes switch that off before numba's import, and change nothing
    once numba is imported."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING"}
    if preset is not None:
        env["NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING"] = preset
    run = subprocess.run(
        [sys.executable, "-c", _ERROR_MARKUP_PROBE, order], env=env, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == expected


def test_warmup_rejects_zero_jobs():
    with pytest.raises(ValueError, match="jobs"):
        warmup.warmup(progress=None, jobs=0)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled kernels to cache")
@pytest.mark.parametrize("jobs", [2, 3])
def test_warmup_in_several_processes_then_a_fresh_process_compiles_nothing(tmp_path, jobs):
    """The shares compile at once into one cache folder; a fresh process then finds every kernel there.

    Three processes on a 2-CPU machine take longer than two, but write the cache the same way as on more CPUs:
    three at once compile `add_up_chunks` and look for the launcher."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "npnorm", "warmup", "--jobs", str(jobs), "--dtype", "float32"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"({jobs} processes)" in run.stdout
    # one line per norm, each printed once (the processes take one norm at a time)
    lines = [line.split()[0] for line in run.stdout.splitlines() if line.startswith("  ")]
    assert sorted(lines) == sorted(warmup.NORMS), run.stdout
    probe = _CACHE_PROBE.replace("warmup(progress=None, jobs=1)", "warmup(dtypes=('float32',), progress=None, jobs=1)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["hits"] > 0 and stats["misses"] == 0, stats
    assert stats["own_code"], stats


# Run twice in fresh interpreters sharing one NUMBA_CACHE_DIR: the first compiles, the second loads. Serial and
# parallel LayerNorm and RMSNorm, float64, forward and backward; then a user's own numba function that needs the
# registries (a dict, hash, np.dot) compiles in the same process.
_LOADED_PROBE = """
import hashlib, json, sys
import numpy as np
import npnorm
from npnorm import functional as F
from npnorm.kernels import _jit, layer_norm, rms_norm

rng = np.random.default_rng(0)
digest = hashlib.sha256()
for shape in [(8, 16), (512, 1024)]:  # below and above _jit.SERIAL_BELOW
    x = npnorm.Tensor(rng.standard_normal(shape), requires_grad=True)
    w = npnorm.Tensor(rng.standard_normal(shape[1]), requires_grad=True)
    for y in (F.layer_norm(x, shape[1], w, w, impl="numba"), F.rms_norm(x, shape[1], w, impl="numba")):
        y.backward(np.cos(y.data))
        for array in (y.data, x.grad, w.grad):
            digest.update(array.tobytes())
        x.grad = w.grad = None
dispatchers = [_jit._launcher] + [d for k in (layer_norm, rms_norm) for v in vars(k).values()
                                  if isinstance(v, _jit.ChunkedKernel) for d in v.dispatchers]
hits = sum(sum(d.stats.cache_hits.values()) for d in dispatchers)
misses = sum(sum(d.stats.cache_misses.values()) for d in dispatchers)
registries = "numba.np.arraymath" in sys.modules

import numba

@numba.njit
def users_own(a):
    table = {1.5: a}
    return np.dot(a, a) + hash(1.5) + table[1.5].sum()

print(json.dumps({"digest": digest.hexdigest(), "hits": hits, "misses": misses, "registries": registries,
                  "users_own": float(users_own(np.arange(3.0)))}))
"""


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled kernels to cache")
def test_kernels_load_from_the_cache_without_numbas_registries_and_give_the_same_bits(tmp_path):
    """Loading from the cache skips numba's refresh of its registries (kernels/_jit.py, "_prepare_to_run_cached_code"):
    the loaded kernels must run, give the bits the compiled ones gave, and leave numba able to compile user code."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _LOADED_PROBE], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    compiled, loaded = runs
    assert compiled["misses"] > 0 and compiled["registries"], compiled
    assert loaded["hits"] > 0 and loaded["misses"] == 0, loaded
    assert not loaded["registries"], "loading from the cache refreshed numba's registries"
    assert loaded["digest"] == compiled["digest"]
    expected = 5.0 + hash(1.5) + 3.0
    assert compiled["users_own"] == loaded["users_own"] == expected


def test_cache_loads_as_numba_does_where_numbas_cache_lacks_what_the_shortcut_needs(monkeypatch):
    pytest.importorskip("numba")
    from numba.core.caching import FunctionCache

    from npnorm.kernels import _jit

    owner = next(c for c in FunctionCache.__mro__ if "_guard_against_spurious_io_errors" in vars(c))
    _jit._stamped_cache_class.cache_clear()
    try:
        assert _jit._stamped_cache_class().load_overload is _jit._load_overload_without_refresh
        _jit._stamped_cache_class.cache_clear()
        monkeypatch.delattr(owner, "_guard_against_spurious_io_errors")
        assert _jit._stamped_cache_class().load_overload is FunctionCache.load_overload
    finally:
        monkeypatch.undo()
        _jit._stamped_cache_class.cache_clear()


def test_cache_load_refreshes_as_numba_does_where_numbas_runtime_module_has_moved(monkeypatch):
    pytest.importorskip("numba")
    from npnorm.kernels import _jit

    class Context:
        refreshed = 0

        def refresh(self):
            self.refreshed += 1

    context = Context()
    monkeypatch.setitem(sys.modules, "numba.core.runtime", None)  # `from numba.core.runtime import ...` fails
    _jit._prepare_to_run_cached_code(context)
    assert context.refreshed == 1


def test_warmup_names_every_norm_the_optimizer_and_both_variants():
    result = warmup.warmup(dtypes=("float32",), progress=None)
    norms = {"layer_norm", "ada_norm", "rms_norm", "batch_norm", "group_norm", "weight_norm"}
    assert set(result["norms"]) == norms | {"lstm_cell", "gru_cell", "adam"}
    assert result["dtypes"] == ["float32"]
    (n_small, h_small), (n_large, h_large) = result["shapes"]["serial"], result["shapes"]["parallel"]
    from npnorm.kernels._jit import SERIAL_BELOW

    assert n_small * h_small < SERIAL_BELOW <= n_large * h_large
    assert all(math.isfinite(s) and s >= 0 for s in result["norms"].values())


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled kernels to cache")
def test_warmup_command_fills_the_cache_for_a_fresh_process(capsys):
    assert npnorm.cli.main(["warmup"]) == 0
    out = capsys.readouterr().out
    for norm in warmup.NORMS:
        assert f"  {norm} " in out
    assert "done in" in out
    stats = json.loads(_run(_CACHE_PROBE).strip().splitlines()[-1])
    assert stats["unreached"] == [], "kernels that `npnorm warmup` never compiles"
    assert stats["hits"] > 0
    assert stats["misses"] == 0, "a fresh process had to compile kernels that `npnorm warmup` should have cached"


def test_bench_startup_rows_are_well_formed(tmp_path, capsys):
    path = tmp_path / "startup.json"
    assert bench.main(["--quick", "--startup", "--json", str(path)]) == 0
    records = json.loads(path.read_text())["records"]
    assert [r["kind"] for r in records] == ["startup", "startup"]  # --quick: no cold compile
    assert [r["op"] for r in records] == ["import", "first_call"]
    for r in records:
        assert math.isfinite(r["median_s"]) and 0 < r["min_s"] <= r["median_s"]
        assert r["runs"] == bench.STARTUP_RUNS
        assert r["label"] == bench.STARTUP[r["op"]][0] and r["target_s"] == bench.STARTUP[r["op"]][2]
    out = capsys.readouterr().out
    table, verdicts = out.split("target of the performance issue")  # the verdicts come last
    rows = [line for line in table.splitlines() if line.startswith(("import npnorm ", "first LayerNorm"))]
    assert len(rows) == 2 and "copy bandwidth" not in out and "engine rows" not in out
    assert "of 2 targets met in this run" in verdicts


def test_bench_cold_compile_row_is_the_median_of_runs_each_into_a_new_empty_cache(monkeypatch):
    calls = []

    def fake_seconds(script, env=None):
        cache = (env or {}).get("NUMBA_CACHE_DIR")
        calls.append((script, cache, cache is not None and not os.listdir(cache)))
        return float(len(calls))

    monkeypatch.setattr(bench.startup, "_seconds_in_fresh_process", fake_seconds)  # the module that calls it
    records = bench.measure_startup(cold=True)
    cold = [c for c in calls if c[0] == bench.STARTUP["cold_compile"][1]]
    assert len(cold) == bench.COLD_RUNS >= 3
    assert len({cache for _, cache, _ in cold}) == bench.COLD_RUNS  # a new folder each time
    assert all(empty for _, _, empty in cold)
    (row,) = [r for r in records if r["op"] == "cold_compile"]
    first = len(calls) - bench.COLD_RUNS + 1  # the fake's results for the cold runs: first, first + 1, ...
    assert row["runs"] == bench.COLD_RUNS and row["min_s"] == first
    assert row["median_s"] == first + (bench.COLD_RUNS - 1) / 2


@pytest.mark.parametrize("setting,expected", [("1", 1), ("0", None), ("", None)])
def test_default_jobs_reads_numbas_setting_without_importing_numba(setting, expected):
    """npnorm warmup decides how many processes to start before it imports numba, so that the second
    process need not wait for that import; NUMBA_DISABLE_JIT=1 (nothing to compile) means one."""
    pytest.importorskip("numba")
    script = "import sys; from npnorm import warmup; print(warmup._default_jobs(), 'numba' in sys.modules)"
    env = {**os.environ, "NUMBA_DISABLE_JIT": setting}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    jobs, imported = out.stdout.split()
    assert imported == "False"
    assert int(jobs) == (expected or warmup._jobs_for(warmup._usable_cpus()))


_INTERRUPTED_IMPORT_SCRIPT = """
import sys
import numpy as np
import npnorm.functional as F

class InterruptOnce:  # a Ctrl-C that lands while numba's import has reached TARGET
    def find_spec(self, name, path=None, target=None):
        if name == TARGET:
            sys.meta_path.remove(self)
            raise KeyboardInterrupt
        return None

TARGET = sys.argv[1]
sys.meta_path.insert(0, InterruptOnce())
x = np.random.default_rng(0).standard_normal((8, 16))
try:
    F.layer_norm(x, 16)
except KeyboardInterrupt:
    print("interrupted")
print(float(np.abs(F.layer_norm(x, 16).data - F.layer_norm(x, 16, impl="numpy").data).max()))
"""


@pytest.mark.parametrize("where", ["numba.core.types", "numba.core.typing.templates", "numba.np.ufunc", "yaml"])
def test_a_ctrl_c_during_numbas_import_leaves_the_next_call_working(where):
    """The first kernel call imports numba (a few tenths of a second), where a Ctrl-C most often lands. It left
    numba half-imported, and every later numba call in the process failed ("module 'numba' has no attribute
    'core'")."""
    out = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_IMPORT_SCRIPT, where], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "interrupted"
    assert float(out[1]) < 1e-12
