"""Python's garbage collector is paused while numba compiles (npnorm/_collector.py), and only then."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest

from npnorm import _collector


@pytest.fixture
def collector_restored():
    was = gc.isenabled()
    yield
    gc.enable() if was else gc.disable()


@pytest.mark.parametrize("enabled", [True, False])
def test_paused_turns_the_collector_off_and_leaves_it_as_it_was(collector_restored, enabled):
    gc.enable() if enabled else gc.disable()
    with _collector.paused():
        assert not gc.isenabled()
        with _collector.paused():  # nested: the inner block does not turn it on again
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled() is enabled


def test_paused_turns_the_collector_on_again_after_an_error(collector_restored):
    gc.enable()
    with pytest.raises(KeyError), _collector.paused():
        raise KeyError("compile failed")
    assert gc.isenabled()


def test_paused_in_two_threads_at_once_leaves_the_collector_on(collector_restored, monkeypatch):
    """Thread B enters while A has the collector off, and A leaves between B's look at the switch and what B
    does with it: the collector must still be on once both have left (it was left off when each block read and
    restored the switch on its own)."""
    gc.enable()
    a_inside, b_looked, a_left = threading.Event(), threading.Event(), threading.Event()
    isenabled = gc.isenabled

    def look_slowly_in_b():
        value = isenabled()
        if threading.current_thread().name == "B":
            b_looked.set()
            a_left.wait(timeout=5)  # A leaves here, if it can
        return value

    monkeypatch.setattr(gc, "isenabled", look_slowly_in_b)

    def a():
        with _collector.paused():
            a_inside.set()
            b_looked.wait(timeout=1)  # B does not look while A is inside: that is the fix
        a_left.set()

    def b():
        a_inside.wait(timeout=5)
        with _collector.paused():
            pass

    threads = [threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    monkeypatch.undo()
    assert gc.isenabled()


jit_only = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled kernels")


def _scale_rows(y, x):  # compiled afresh by the test below
    for i in range(x.shape[0]):
        y[i] = x[i] * 2.0


@jit_only
def test_a_kernel_compiles_with_the_collector_paused_and_runs_with_it_on(monkeypatch, collector_restored):
    import numba.core.dispatcher

    from npnorm.kernels import _jit

    states = []
    numba_compile = numba.core.dispatcher.Dispatcher.compile

    def recording_compile(self, sig):
        states.append(gc.isenabled())
        return numba_compile(self, sig)

    monkeypatch.setattr(numba.core.dispatcher.Dispatcher, "compile", recording_compile)
    monkeypatch.setattr(_jit, "_writable_cache_dir", lambda py_func: None)  # compile, never load
    monkeypatch.setattr(_jit, "_warn_no_cache", lambda reason: None)
    scale_rows = _jit.kernel(parallel=False)(_scale_rows)
    gc.enable()
    x, y = np.arange(4.0), np.empty(4)
    scale_rows(y, x)
    assert states == [False]  # the one compile, with the collector off
    assert gc.isenabled()  # and on again for everything else
    np.testing.assert_array_equal(y, 2.0 * x)


@jit_only
def test_every_kernel_of_npnorm_compiles_with_the_collector_paused():
    import numba.core.dispatcher

    from npnorm.kernels import _jit, adam, batch_norm, group_norm, layer_norm, rms_norm, weight_norm

    dispatchers = {}
    for module in (_jit, adam, batch_norm, group_norm, layer_norm, rms_norm, weight_norm):
        for name, value in vars(module).items():
            if isinstance(value, _jit.ChunkedKernel):
                for dispatcher in value.dispatchers:
                    dispatchers[f"{module.__name__}.{name}"] = dispatcher
            elif isinstance(value, numba.core.dispatcher.Dispatcher):
                dispatchers[f"{module.__name__}.{name}"] = value
    assert len(dispatchers) > 20
    unpaused = [name for name, d in dispatchers.items() if getattr(d.compile, "__wrapped__", None) is None]
    assert unpaused == []


def test_kernel_modules_are_imported_with_the_collector_paused(monkeypatch, collector_restored):
    """Importing numba (with the first kernel module) makes long-lived objects only: no collections then."""
    from npnorm import kernels

    states = []

    def recording_import(name):
        states.append((name, gc.isenabled()))
        return object()

    monkeypatch.setattr(kernels, "_modules", {})
    monkeypatch.setattr(kernels.importlib, "import_module", recording_import)
    gc.enable()
    kernels.load("layer_norm")
    assert states == [("npnorm.kernels.layer_norm", False)]
    assert gc.isenabled()


@jit_only
def test_a_cache_that_is_only_read_loads_entries_and_writes_none(tmp_path, monkeypatch):
    """kernels/_jit._read_cache_only, for npnorm warmup's other processes: they load what the first wrote,
    and compile what is missing without saving it."""
    import numba

    from npnorm.kernels import _jit

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    x, y = np.arange(4.0), np.empty(4)
    writer = _jit.kernel(parallel=False)(_scale_rows)
    writer(y, x)
    written = sorted(path.name for path in tmp_path.rglob("*"))
    assert any(name.endswith(".nbi") for name in written), written
    reader = _jit.kernel(parallel=False)(_scale_rows)  # as in another process: a dispatcher of its own
    _jit._read_cache_only(reader)
    reader(y, x)
    assert sum(reader.stats.cache_hits.values()) == 1  # the writer's entry
    y32 = np.empty(4, np.float32)
    reader(y32, x.astype(np.float32))  # a new signature: compiled here, not saved
    assert sum(reader.stats.cache_misses.values()) == 1
    assert sorted(path.name for path in tmp_path.rglob("*")) == written
    np.testing.assert_array_equal(y32, 2 * np.arange(4, dtype=np.float32))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_child_does_not_inherit_other_threads_pauses(collector_restored):
    """Forked while another thread compiled, a child had the collector off for good: that thread's block is
    never left in the child. The child now counts only its own thread's blocks."""
    gc.enable()
    inside, leave = threading.Event(), threading.Event()

    def compiling():
        with _collector.paused():
            inside.set()
            leave.wait()

    thread = threading.Thread(target=compiling)
    thread.start()
    inside.wait()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's test machinery
        with _collector.paused():
            paused_inside = not gc.isenabled()
        os.write(write, f"{gc.isenabled()} {paused_inside}".encode())
        os._exit(0)
    os.close(write)
    report = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    leave.set()
    thread.join()
    assert report == "True True"
    assert gc.isenabled()
