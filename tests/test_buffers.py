"""The output buffer pool (npnorm._buffers): a buffer is handed out again only when nothing else can see it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import npnorm
import npnorm.functional as F
from npnorm import _buffers
from npnorm.norms.layer_norm import backward_reference, forward_reference

BIG = (512, 1024)  # float32: 2 MiB, above _buffers.MIN_BYTES


def _memory(a: np.ndarray) -> int:
    """Where a's bytes are: the pool hands out a new view of a reused buffer, so its id says nothing."""
    return a.__array_interface__["data"][0]


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    monkeypatch.setattr(_buffers, "_enabled", True)
    _buffers.clear()
    yield
    _buffers.clear()


def test_a_buffer_is_reused_only_after_every_view_is_gone():
    a = _buffers.empty(BIG, np.float32)
    first = _memory(a)
    view = a[10:, ::2]  # holds a reference to a's memory
    del a
    b = _buffers.empty(BIG, np.float32)
    assert _memory(b) != first  # the view still sees the old buffer
    del view, b
    c = _buffers.empty(BIG, np.float32)
    assert _memory(c) == first  # now nothing does: same memory again


def test_shape_and_dtype_must_match():
    a = _buffers.empty(BIG, np.float32)
    first = _memory(a)
    del a
    assert _memory(_buffers.empty(BIG, np.float64)) != first
    assert _memory(_buffers.empty((BIG[1], BIG[0]), np.float32)) != first


def test_small_arrays_are_not_pooled():
    before = _buffers.held_bytes()
    a = _buffers.empty((16, 16), np.float32)
    assert a.shape == (16, 16) and _buffers.held_bytes() == before


def test_pool_size_is_bounded(monkeypatch):
    monkeypatch.setattr(_buffers, "MAX_POOL_BYTES", 5 << 20)  # room for two 2 MiB buffers
    kept = [_buffers.empty(BIG, np.float32) for _ in range(4)]  # all in use: two pooled, two outside
    assert _buffers.held_bytes() <= 5 << 20
    assert len({_memory(a) for a in kept}) == 4
    del kept
    other = _buffers.empty((BIG[0] * 2, BIG[1]), np.float32)  # 4 MiB: free buffers are dropped to make room
    assert other.shape == (BIG[0] * 2, BIG[1]) and _buffers.held_bytes() <= 5 << 20


def test_disabled_pool_allocates_fresh(monkeypatch):
    monkeypatch.setattr(_buffers, "_enabled", False)
    a = _buffers.empty(BIG, np.float32)
    assert a.shape == BIG and a.dtype == np.float32
    assert _buffers.held_bytes() == 0


def test_clear_keeps_buffers_in_use():
    a = _buffers.empty(BIG, np.float32)
    _buffers.empty(BIG, np.float64)  # dropped at once: free
    _buffers.clear()
    assert _buffers.held_bytes() == a.nbytes


def test_outputs_that_are_kept_are_never_overwritten(rng):
    """Results held across calls keep their values; gradients of two graphs accumulate."""
    x1 = rng.standard_normal(BIG).astype(np.float32)
    x2 = rng.standard_normal(BIG).astype(np.float32) + 3.0
    w = npnorm.Tensor(rng.standard_normal(BIG[1]).astype(np.float32), requires_grad=True)
    b = npnorm.Tensor(rng.standard_normal(BIG[1]).astype(np.float32), requires_grad=True)
    t1 = npnorm.Tensor(x1, requires_grad=True)
    y1 = F.layer_norm(t1, (BIG[1],), w, b, impl="numba")
    y1_copy = y1.data.copy()
    for _ in range(3):  # the pool now has buffers of this shape, some free
        F.layer_norm(npnorm.Tensor(x2), (BIG[1],), w, b, impl="numba")
    y2 = F.layer_norm(npnorm.Tensor(x2), (BIG[1],), w, b, impl="numba")
    np.testing.assert_array_equal(y1.data, y1_copy)
    assert not np.shares_memory(y1.data, y2.data)

    dy = rng.standard_normal(BIG).astype(np.float32)
    y1.backward(dy)
    g1 = t1.grad.copy()
    F.layer_norm(t1, (BIG[1],), w, b, impl="numba").backward(dy)  # a second graph: t1.grad accumulates
    x64, w64 = x1.astype(np.float64), w.data.astype(np.float64)
    _, mean, rstd = forward_reference(x64, w64, None, 1e-5)
    dx_ref, _, _ = backward_reference(dy.astype(np.float64), x64, mean, rstd, w64)
    np.testing.assert_allclose(t1.grad, 2 * dx_ref, rtol=1e-5, atol=1e-5 * np.abs(dx_ref).max())
    np.testing.assert_allclose(g1, dx_ref, rtol=1e-5, atol=1e-5 * np.abs(dx_ref).max())


def test_threads_never_share_a_buffer():
    errors = []
    start = threading.Barrier(4)

    def work(k: int) -> None:
        start.wait()
        for _ in range(200):
            a = _buffers.empty(BIG, np.float32)
            a[0, 0] = k
            a[-1, -1] = k
            time.sleep(0)  # let the other threads run while this one holds the buffer
            if a[0, 0] != k or a[-1, -1] != k:
                errors.append(k)
            del a

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _buffers.held_bytes() <= 4 * np.prod(BIG) * 4


def test_environment_variable_turns_the_pool_off():
    code = (
        "import numpy as np, npnorm.functional as F; from npnorm import _buffers; "
        "F.layer_norm(np.ones((512, 1024), np.float32), 1024, impl='numba'); print(_buffers.held_bytes())"
    )
    for value, pooled in (("0", False), ("1", True)):
        env = {**os.environ, "NPNORM_BUFFER_POOL": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert (int(out.stdout) > 0) is pooled, out


def test_each_call_gets_an_array_object_of_its_own():
    """What a caller does to the array it got stays with it: a weak reference dies with it (it used to come back
    holding another call's output), and making it read-only does not reach the next call's output."""
    import weakref

    x1, x2 = (np.random.default_rng(seed).standard_normal(BIG).astype(np.float32) for seed in (1, 2))
    y1 = F.layer_norm(npnorm.Tensor(x1), BIG[1], impl="numba").data
    address, ref = _memory(y1), weakref.ref(y1)
    y1.setflags(write=False)
    del y1
    assert ref() is None
    y2 = F.layer_norm(npnorm.Tensor(x2), BIG[1], impl="numba").data  # the same memory, written again
    assert _memory(y2) == address and y2.flags.writeable
    np.testing.assert_allclose(y2, forward_reference(x2, None, None, 1e-5)[0], rtol=1e-5, atol=1e-5)
