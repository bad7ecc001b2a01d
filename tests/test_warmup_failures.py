"""`npnorm warmup` when things go wrong: a worker process that dies or fails, an error in this process, Ctrl-C
(once or twice), a cache that cannot be written, the JIT switched off. Each ends at once with one clear line
and the right exit code, and leaves no process behind.

The workers are fresh processes, so the tests replace the worker itself (``warmup._worker_main``) with the
stand-ins of tests/_warmup_workers.py, and the compile step of this process (``warmup._warm``) likewise.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import _warmup_workers as stand_ins
import pytest

import npnorm.cli
from npnorm import warmup

TESTS = os.path.dirname(os.path.abspath(__file__))


def _worker_share() -> list[str]:
    return warmup.plan(2)[1]


@pytest.fixture
def quick_main(monkeypatch):
    monkeypatch.setattr(warmup, "_warm", stand_ins.warm_quickly)


@pytest.mark.parametrize(
    "worker, why",
    [(stand_ins.killed, "was killed by signal SIGKILL"), (stand_ins.exits, "exited with code 3 before it was done")],
)
def test_a_worker_that_dies_is_one_error_naming_what_is_not_compiled(monkeypatch, quick_main, worker, why):
    monkeypatch.setattr(warmup, "_worker_main", worker)
    share = ", ".join(_worker_share())
    with pytest.raises(warmup.WarmupError) as error:
        warmup.warmup(dtypes=("float32",), progress=None, jobs=2)
    assert str(error.value) == f"the process compiling {share} {why}; not compiled: {share}"
    assert multiprocessing.active_children() == []


def test_a_worker_error_names_the_norm_and_what_is_left(monkeypatch, quick_main):
    monkeypatch.setattr(warmup, "_worker_main", stand_ins.fails_on_the_second)
    first, second, *rest = _worker_share()
    lines = []
    with pytest.raises(warmup.WarmupError) as error:
        warmup.warmup(dtypes=("float32",), progress=lines.append, jobs=2)
    left = ", ".join([second, *rest])
    assert str(error.value) == (
        f"compiling {second} failed in a warm-up process: RuntimeError: compile failed; not compiled: {left}"
    )
    assert any(line.split()[0] == first for line in lines)  # what was done was reported


def test_an_error_here_ends_the_workers_at_once(monkeypatch):
    def failing(names, dtypes):
        raise RuntimeError("compile failed")

    monkeypatch.setattr(warmup, "_warm", failing)
    monkeypatch.setattr(warmup, "_worker_main", stand_ins.compiles_slowly)
    start = time.monotonic()
    with pytest.raises(warmup.WarmupError, match=f"compiling {warmup.plan(2)[0][0]} failed: RuntimeError"):
        warmup.warmup(dtypes=("float32",), progress=None, jobs=2)
    assert time.monotonic() - start < 30  # not the worker's minute per norm
    assert multiprocessing.active_children() == []


def test_every_norm_is_reported_once_when_all_goes_well(monkeypatch, quick_main):
    monkeypatch.setattr(warmup, "_worker_main", stand_ins.quick)
    lines = []
    result = warmup.warmup(dtypes=("float32",), progress=lines.append, jobs=2)
    assert sorted(line.split()[0] for line in lines) == sorted(warmup.NORMS)
    assert result["jobs"] == 2 and set(result["norms"]) == set(warmup.NORMS)


def test_the_command_prints_a_warmup_error_as_one_line(monkeypatch, capsys):
    def failing(**kwargs):
        raise warmup.WarmupError("compiling adam failed: RuntimeError: boom")

    monkeypatch.setattr(warmup, "jit_disabled", lambda: False)
    monkeypatch.setattr(warmup, "warmup", failing)
    assert npnorm.cli.main(["warmup"]) == 1
    assert capsys.readouterr().err == "npnorm warmup: error: compiling adam failed: RuntimeError: boom\n"


_INTERRUPTED_RUN = """
import sys
import _warmup_workers as stand_ins
import npnorm.cli
from npnorm import warmup

warmup._warm = getattr(stand_ins, sys.argv[1])
warmup._worker_main = stand_ins.compiles_slowly
print("started", flush=True)
sys.exit(npnorm.cli.main(["warmup", "--jobs", "2", "--dtype", "float32"]))
"""


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups")
@pytest.mark.parametrize(
    "main_share, presses",
    [
        ("warm_slowly", 1),
        ("warm_slowly", 2),  # a second Ctrl-C while the first is handled: it hung in the atexit of the pool
        ("warm_and_swallow_interrupts", 1),  # numba swallowed it: the warm-up must still stop
        ("warm_and_turn_interrupts_into_errors", 1),  # numba turned it into another error
    ],
)
def test_ctrl_c_ends_every_process_at_once_with_exit_130(main_share, presses, tmp_path):
    """Ctrl-C in a terminal signals the whole process group: the workers ignore it, this process ends them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    run = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_RUN, main_share],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job
    )
    try:
        assert run.stdout.readline() == "started\n"
        time.sleep(2.0)  # the worker started, and this process is in its share
        for _ in range(presses):
            os.killpg(run.pid, signal.SIGINT)
            time.sleep(0.3)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    # 130, or for a second Ctrl-C that lands while the process exits, death by SIGINT (which a shell reports
    # as 130 too); never a hang or a traceback
    assert run.returncode == 130 or (presses > 1 and run.returncode == -signal.SIGINT), err
    assert err.strip() == "interrupted", err
    assert _group_empties(run.pid), "a process of the warm-up was left behind"


def _group_empties(group: int, within: float = 5.0) -> bool:
    """Whether process group `group` has no process left within `within` seconds (multiprocessing's resource
    tracker leaves shortly after the process that started it)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _command(env_changes, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_changes}
    return subprocess.run(
        [sys.executable, "-m", "npnorm", "warmup", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_an_unwritable_cache_is_refused_before_compiling(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    run = _command({"NUMBA_CACHE_DIR": str(blocker / "cache")}, "--jobs", "1")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        f"npnorm warmup: error: NUMBA_CACHE_DIR={blocker / 'cache'} is not a writable directory: "
        "the compiled kernels would not be kept; set NUMBA_CACHE_DIR to a writable directory"
    )
    assert not any(line.startswith("  ") for line in run.stdout.splitlines())  # no norm was compiled


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled kernels to cache")
@pytest.mark.parametrize("configured", [True, False])
def test_the_kernel_cache_is_where_numba_writes_it(configured, tmp_path, monkeypatch):
    """NUMBA_CACHE_DIR when set; else the kernels' __pycache__ (or numba's user cache) as numba chooses."""
    import numba

    from npnorm.kernels import _jit

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path) if configured else "")
    where = _jit.kernel_cache_dir()
    kernels_folder = os.path.dirname(_jit.__file__)
    assert (
        where == str(tmp_path)
        if configured
        else where in (os.path.join(kernels_folder, "__pycache__"), _jit._user_cache_dir())
    )


def test_without_the_jit_there_is_nothing_to_compile(tmp_path):
    run = _command({"NUMBA_DISABLE_JIT": "1", "NUMBA_CACHE_DIR": str(tmp_path)})
    assert run.returncode == 0 and run.stderr == ""
    assert run.stdout == (
        "npnorm warmup: the JIT is off (NUMBA_DISABLE_JIT): the kernels run as plain Python, nothing to compile\n"
    )


def test_a_dtype_given_twice_is_compiled_once(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(warmup, "jit_disabled", lambda: False)
    monkeypatch.setattr(warmup, "warmup", lambda **kw: seen.append(kw["dtypes"]) or {"seconds": 0.0, "jobs": 1})
    assert npnorm.cli.main(["warmup", "--dtype", "float32", "--dtype", "float32"]) == 0
    assert seen == [["float32"]] and "for float32 (" in capsys.readouterr().out
