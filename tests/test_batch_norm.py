"""BatchNorm: one table of impl × variant × shape × mode, each meeting two oracles (finite differences and
the other implementations), then running statistics (PyTorch and hand-computed values), numerics and bad
input — including that a failing call never touches the running statistics."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npnorm
import npnorm.functional as F
from npnorm.kernels import _jit
from npnorm.norms import batch_norm as bn

IMPLS = ["numba", "numpy", "composed"]

# (N, C); (N, C, L); L = 1; C = 1; N·L = 2 with N = 1; (N, C, *) with two trailing dims.
SHAPES = [(6, 4), (5, 3, 7), (4, 3, 1), (5, 1), (1, 2, 2), (3, 2, 2, 3)]

# name -> (weight?, bias?)
VARIANTS = {"affine": (True, True), "gain_only": (True, False), "simple": (False, False), "bias_only": (False, True)}

MODES = {"train": True, "eval": False}


def _inputs(rng, shape, variant, dtype=np.float64):
    C = shape[1]
    x = npnorm.tensor(rng.standard_normal(shape) * 2 + 0.5, requires_grad=True, dtype=dtype)
    w = npnorm.tensor(rng.standard_normal(C), requires_grad=True, dtype=dtype)
    b = npnorm.tensor(rng.standard_normal(C), requires_grad=True, dtype=dtype)
    has_w, has_b = VARIANTS[variant]
    return x, (w if has_w else None), (b if has_b else None)


def _running(rng, C, dtype=np.float64):
    """Running statistics unlike the batch's, so that evaluation and training differ."""
    return rng.standard_normal(C).astype(dtype), (0.5 + rng.random(C)).astype(dtype)


def _grads(fn, tensors, dy):
    for t in tensors:
        if t is not None:
            t.grad = None
    out = fn()
    out.backward(dy)
    return out.data, [None if t is None else t.grad for t in tensors]


def _assert_close(a, b, rtol, atol, what):
    if a is None or b is None:
        assert a is None and b is None, what
        return
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


# ------------------------------------------------------------------------------ oracle 1: finite differences


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_gradcheck(impl, mode, variant, shape):
    rng = np.random.default_rng(0)
    x, w, b = _inputs(rng, shape, variant)
    rm0, rv0 = _running(rng, shape[1])
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def fn(*args):
        it = iter(args)
        x_ = next(it)
        w_ = next(it) if w is not None else None
        b_ = next(it) if b is not None else None
        # fresh copies: in training every call updates the running statistics in place
        return F.batch_norm(x_, rm0.copy(), rv0.copy(), w_, b_, training=MODES[mode], impl=impl)

    assert npnorm.gradcheck(fn, inputs)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_tells_training_gradient_from_evaluation_gradient(impl):
    """Evaluation with the batch's own statistics passed as running ones has training's values but treats
    the statistics as constants: finite differences see the difference, so the training rows have teeth."""
    x, _, _ = _inputs(np.random.default_rng(1), (4, 3, 2), "simple")

    def frozen_stats(x_):
        mean, var = bn.stats_reference(x_.data)  # biased, exactly what training normalizes with
        return F.batch_norm(x_, mean, var, training=False, impl=impl)

    np.testing.assert_allclose(
        frozen_stats(x).data, F.batch_norm(x, None, None, training=True, impl=impl).data, rtol=1e-12, atol=1e-12
    )
    assert not npnorm.gradcheck(frozen_stats, (x,), raise_exception=False)


# ------------------------------------------------------------------------- oracle 2: the implementations agree


def _run_all_impls(x0, w0, b0, dy, training, dtype, momentum=0.1):
    rng = np.random.default_rng(2)
    rm0, rv0 = _running(rng, x0.shape[1], dtype)
    results = {}
    for impl in IMPLS:
        x = npnorm.tensor(x0, requires_grad=True, dtype=dtype)
        w = None if w0 is None else npnorm.tensor(w0, requires_grad=True, dtype=dtype)
        b = None if b0 is None else npnorm.tensor(b0, requires_grad=True, dtype=dtype)
        rm, rv = rm0.copy(), rv0.copy()
        call = partial(F.batch_norm, x, rm, rv, w, b, training=training, momentum=momentum, impl=impl)
        out, grads = _grads(call, (x, w, b), dy)
        results[impl] = (out, grads, (rm, rv))
    return results


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", SHAPES + [(0, 3), (0, 2, 4)])
def test_impls_agree_float64(mode, variant, shape):
    rng = np.random.default_rng(3)
    x, w, b = _inputs(rng, shape, variant)
    dy = rng.standard_normal(shape)
    res = _run_all_impls(
        x.data, None if w is None else w.data, None if b is None else b.data, dy, MODES[mode], np.float64
    )
    ref_out, ref_grads, ref_stats = res["numpy"]
    for impl in ("numba", "composed"):
        out, grads, stats = res[impl]
        _assert_close(out, ref_out, 1e-12, 1e-12, f"{impl} forward")
        for name, g, rg in zip(("dx", "dweight", "dbias"), grads, ref_grads):
            _assert_close(g, rg, 1e-10, 1e-11, f"{impl} {name}")
        for name, s, rs in zip(("running_mean", "running_var"), stats, ref_stats):
            _assert_close(s, rs, 1e-13, 1e-14, f"{impl} {name}")


def _assert_numba_matches_numpy(x0, w0, b0, dy, training, stats_atol):
    """Forward, gradients and batch statistics of impl="numba" against the NumPy reference, float64."""
    res = _run_all_impls(x0, w0, b0, dy, training, np.float64)
    (out_a, grads_a, stats_a), (out_b, grads_b, stats_b) = res["numba"], res["numpy"]
    np.testing.assert_allclose(out_a, out_b, rtol=1e-9, atol=1e-9)
    for g, rg in zip(grads_a, grads_b):
        _assert_close(g, rg, 1e-8, 1e-9 * (1 + (0 if rg is None else np.abs(rg).max(initial=0))), "grad")
    for s, rs in zip(stats_a, stats_b):
        np.testing.assert_allclose(s, rs, rtol=1e-10, atol=stats_atol)


@given(
    N=st.integers(2, 24),
    C=st.integers(1, 6),
    L=st.integers(1, 9),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    shift=st.sampled_from([0.0, 5.0, -1e3]),
    training=st.booleans(),
    affine=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_numba_equals_numpy_reference(N, C, L, scale, shift, training, affine, seed):
    rng = np.random.default_rng(seed)
    shape = (N, C) if L == 1 else (N, C, L)
    x0 = shift + scale * rng.standard_normal(shape)
    w0 = rng.standard_normal(C) if affine else None
    b0 = rng.standard_normal(C) if affine else None
    dy = rng.standard_normal(shape)
    _assert_numba_matches_numpy(x0, w0, b0, dy, training, stats_atol=1e-12 * (1 + scale * scale + abs(shift)))


@pytest.mark.parametrize("N", [5, 7, 203])
@pytest.mark.parametrize("C", [1024, 1030])
@pytest.mark.parametrize("shift, scale", [(0.0, 1.0), (-1e3, 1e-3)])
def test_wide_channels_four_rows_at_a_time_equal_the_reference(N, C, shift, scale):
    """C ≥ FOUR_ROWS_FROM_C: the statistics and gradient sums add four rows per partial update, then the
    N mod 4 rows left in each chunk one by one (N = 5, 7: one chunk; 203 at C = 1030: 16 chunks of 12-13)."""
    from npnorm.kernels import batch_norm as kern

    assert C >= kern.FOUR_ROWS_FROM_C
    rng = np.random.default_rng(N * C)
    x0 = shift + scale * rng.standard_normal((N, C))
    w0, b0, dy = rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal((N, C))
    _assert_numba_matches_numpy(x0, w0, b0, dy, True, stats_atol=1e-12 * (1 + scale * scale + abs(shift)))


@settings(max_examples=15, deadline=None)
@given(N=st.integers(2, 40), extra=st.integers(0, 70), training=st.booleans(), seed=st.integers(0, 2**16))
def test_wide_channels_match_reference_random_shapes(N, extra, training, seed):
    from npnorm.kernels import batch_norm as kern

    C = kern.FOUR_ROWS_FROM_C + extra
    rng = np.random.default_rng(seed)
    x0 = 3.0 + rng.standard_normal((N, C))
    w0, b0, dy = rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal((N, C))
    _assert_numba_matches_numpy(x0, w0, b0, dy, training, stats_atol=1e-11)


@pytest.mark.parametrize("shape", [(1000, 7), (12, 5, 700), (203, 1030)])
def test_serial_and_parallel_kernels_are_bit_identical(shape):
    """Partial sums per chunk, chunks fixed by N: the thread count cannot change a single bit."""
    from npnorm.kernels import batch_norm as kern

    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).reshape(shape[0], shape[1], -1)  # float64: the serial variants are compiled already
    dy = rng.standard_normal(x.shape)
    C = shape[1]
    mean, var = bn.stats_reference(x)
    rstd = 1.0 / np.sqrt(var + 1e-5)
    scale = rstd * 1.5
    bias = rng.standard_normal(C)
    nchunks = kern.num_chunks(shape[0], C, size=_jit.SERIAL_BELOW)  # the blocks of a parallel-sized input
    assert nchunks > 1
    # a parallel run with L = 1 has one item per chunk; with L > 1 any split of the (chunk, channel) pairs
    # into items (here 5, uneven) must give the bits of the serial run's single item
    items = nchunks if x.shape[2] == 1 else 5
    out = {}
    for variant in ("serial", "parallel"):
        call = partial(_call_variant, variant, items)
        # a parallel run brings the partial sums; a serial run allocates its own
        parts = [np.empty((nchunks, C)) if variant == "parallel" else _jit.NO_PARTIALS for _ in range(2)]
        k_mean, k_var = np.empty(C), np.empty(C)
        call(kern._batch_stats, k_mean, k_var, x, nchunks, *parts)
        np.testing.assert_allclose(k_mean, mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(k_var, var, rtol=1e-12)
        y = np.empty_like(x)
        call(kern._apply, y, x, mean, scale, bias, True)  # the kernel takes β as an array and a flag
        sum_dy, sum_dyx = np.empty(C), np.empty(C)
        call(kern._grad_sums, sum_dy, sum_dyx, dy, x, mean, rstd, nchunks, *parts)
        np.testing.assert_allclose(sum_dy, dy.sum(axis=(0, 2)), rtol=1e-12, atol=1e-12)
        dx = np.empty_like(x)
        call(kern._grad_input, dx, dy, x, mean, rstd, scale, sum_dy, sum_dyx, True)
        dx_eval = np.empty_like(x)  # evaluation: a flag and empty stand-ins for the means, dx = scale · dy
        no_means = _jit.shared_empty(1, np.float64)
        call(kern._grad_input, dx_eval, dy, x, mean, rstd, scale, no_means, no_means, False)
        np.testing.assert_array_equal(dx_eval, scale[:, None] * dy)
        out[variant] = (k_mean, k_var, y, sum_dy, sum_dyx, dx, dx_eval)
    for a, b in zip(out["serial"], out["parallel"]):
        np.testing.assert_array_equal(a, b)


def test_a_parallel_run_without_partials_raises():
    """The statistics' items cannot keep partial sums of their own across calls: without the caller's
    buffers a parallel run must fail loudly, not add up garbage (a serial run allocates them itself)."""
    from npnorm.kernels import batch_norm as kern

    x = np.random.default_rng(9).standard_normal((64, 3, 1))
    mean, var = np.empty(3), np.empty(3)
    with pytest.raises(RuntimeError, match="failed in a parallel run"):
        _call_variant("parallel", 4, kern._batch_stats, mean, var, x, 4, _jit.NO_PARTIALS, _jit.NO_PARTIALS)
    _call_variant("serial", 4, kern._batch_stats, mean, var, x, 4, _jit.NO_PARTIALS, _jit.NO_PARTIALS)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)), rtol=1e-13)


def _call_variant(variant, items, kernel, *args):
    """A serial or a parallel run of a chunked kernel body with ``items`` work items (the parallel one only
    through call_parallel)."""
    if variant == "serial":
        return kernel.serial(items, *args)
    return _jit.call_parallel(kernel.parallel, items, *args)


# ------------------------------------------------------------------------------------ running statistics


def _torch_batch_norm(torch, x0, w0, b0, rm, rv, training, momentum, eps, dy):
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x0, w0, b0))
    ty = torch.nn.functional.batch_norm(tx, rm, rv, tw, tb, training=training, momentum=momentum, eps=eps)
    ty.backward(torch.from_numpy(dy))
    return ty.detach().numpy(), [t.grad.numpy() for t in (tx, tw, tb)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5)])
@pytest.mark.parametrize("momentum", [0.1, 0.7])
def test_matches_pytorch_float64_over_several_steps(impl, shape, momentum):
    """Three training steps then one evaluation step: outputs, gradients and running statistics."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    C = shape[1]
    w0, b0 = rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = np.zeros(C), np.ones(C)
    trm, trv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    for training in (True, True, True, False):
        x0 = rng.standard_normal(shape) * 3 + rng.standard_normal()
        dy = rng.standard_normal(shape)
        x, w, b = (npnorm.tensor(a, requires_grad=True) for a in (x0, w0, b0))
        call = partial(F.batch_norm, x, rm, rv, w, b, training=training, momentum=momentum, eps=1e-3, impl=impl)
        out, grads = _grads(call, (x, w, b), dy)
        t_out, t_grads = _torch_batch_norm(torch, x0, w0, b0, trm, trv, training, momentum, 1e-3, dy)
        np.testing.assert_allclose(out, t_out, rtol=1e-12, atol=1e-12)
        for g, tg in zip(grads, t_grads):
            np.testing.assert_allclose(g, tg, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("impl", IMPLS)
def test_hand_computed_values(impl):
    """Channel 0 holds 1 and 3 (μ 2, σ² 1, unbiased 2); channel 1 holds 2 and 6 (μ 4, σ² 4, unbiased 8)."""
    x = npnorm.tensor([[1.0, 2.0], [3.0, 6.0]])
    rm, rv = np.zeros(2), np.ones(2)
    y = F.batch_norm(x, rm, rv, training=True, momentum=0.1, eps=0.0, impl=impl)
    np.testing.assert_allclose(y.data, [[-1.0, -1.0], [1.0, 1.0]], atol=1e-15)
    np.testing.assert_allclose(rm, [0.9 * 0 + 0.1 * 2, 0.9 * 0 + 0.1 * 4], rtol=1e-15)
    np.testing.assert_allclose(rv, [0.9 * 1 + 0.1 * 2, 0.9 * 1 + 0.1 * 8], rtol=1e-15)
    # evaluation uses those running statistics and leaves them alone
    y = F.batch_norm(
        npnorm.tensor([[0.2, 1.4]]), rm, rv, weight=np.array([2.0, 1.0]), bias=np.array([0.5, 0.0]), eps=0.0, impl=impl
    )
    np.testing.assert_allclose(y.data, [[0.5, (1.4 - 0.4) / np.sqrt(1.7)]], rtol=1e-14)
    np.testing.assert_allclose(rm, [0.2, 0.4], rtol=1e-15)


@pytest.mark.parametrize("impl", IMPLS)
def test_momentum_none_is_the_cumulative_average(impl):
    rng = np.random.default_rng(6)
    batches = [rng.standard_normal((5, 3, 2)) * (i + 1) + i for i in range(4)]
    rm, rv = np.full(3, 7.0), np.full(3, 7.0)  # the first batch replaces whatever was there (m = 1/1)
    count = np.zeros((), dtype=np.int64)
    for xb in batches:
        F.batch_norm(xb, rm, rv, training=True, momentum=None, num_batches_tracked=count, impl=impl)
    assert count == 4
    np.testing.assert_allclose(rm, np.mean([xb.mean(axis=(0, 2)) for xb in batches], axis=0), rtol=1e-13)
    np.testing.assert_allclose(rv, np.mean([xb.var(axis=(0, 2), ddof=1) for xb in batches], axis=0), rtol=1e-13)


def test_momentum_none_matches_torch_module():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    module = torch.nn.BatchNorm1d(3, momentum=None, affine=False, dtype=torch.float64)
    rm, rv, count = np.zeros(3), np.ones(3), np.zeros((), dtype=np.int64)
    for _ in range(3):
        xb = rng.standard_normal((6, 3, 4)) + 2
        module(torch.from_numpy(xb))
        F.batch_norm(xb, rm, rv, training=True, momentum=None, num_batches_tracked=count)
    np.testing.assert_allclose(rm, module.running_mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(rv, module.running_var.numpy(), rtol=1e-13)
    assert int(count) == int(module.num_batches_tracked)


def test_num_batches_tracked_counts_every_training_update_only():
    x = np.random.default_rng(8).standard_normal((4, 2))
    rm, rv, count = np.zeros(2), np.ones(2), np.array([5], dtype=np.int64)
    F.batch_norm(x, rm, rv, training=True, momentum=0.1, num_batches_tracked=count)
    assert count[0] == 6
    F.batch_norm(x, rm, rv, training=False, momentum=None, num_batches_tracked=count)  # eval: no update
    F.batch_norm(x, None, None, training=True, momentum=None, num_batches_tracked=count)  # nothing tracked
    assert count[0] == 6


@pytest.mark.parametrize("impl", IMPLS)
def test_training_without_running_stats(impl):
    x = np.random.default_rng(9).standard_normal((6, 3))
    y = F.batch_norm(x, None, None, training=True, impl=impl).data
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1 / (1 + 1e-5 / x.var(axis=0)), rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_eval_gradient_is_direct_path_only(impl):
    """Running statistics are constants: dx = dy · γ · rstd, elementwise, with no coupling between samples."""
    rng = np.random.default_rng(10)
    x, w, b = _inputs(rng, (5, 3, 4), "affine")
    rm, rv = _running(rng, 3)
    dy = rng.standard_normal((5, 3, 4))
    F.batch_norm(x, rm, rv, w, b, training=False, impl=impl).backward(dy)
    np.testing.assert_allclose(x.grad, dy * (w.data / np.sqrt(rv + 1e-5))[:, None], rtol=1e-13)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_training_gradient_identities(impl, eps):
    """Per channel: Σ dx = 0 (the path through μ), Σ dx·x̂ = M·γ·rstd·mean(dy·x̂)·ε/(σ² + ε) (through σ)."""
    rng = np.random.default_rng(11)
    x, w, _ = _inputs(rng, (6, 3, 4), "gain_only")
    dy = rng.standard_normal((6, 3, 4))
    F.batch_norm(x, None, None, w, training=True, eps=eps, impl=impl).backward(dy)
    mean, var = bn.stats_reference(x.data)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (x.data - mean[:, None]) * rstd[:, None]
    M = 6 * 4
    np.testing.assert_allclose(x.grad.sum(axis=(0, 2)), 0, atol=1e-12)
    expected = M * w.data * rstd * (dy * xhat).mean(axis=(0, 2)) * eps / (var + eps)
    np.testing.assert_allclose((x.grad * xhat).sum(axis=(0, 2)), expected, atol=1e-12)


# -------------------------------------------------------------------------------- failures change nothing


def _bad_calls():
    """name -> keyword overrides that make a call fail, each with a valid running_mean/running_var."""
    return {
        "bias shape": dict(bias=np.zeros(4)),
        "weight dtype": dict(weight=np.ones(3, dtype=np.float32)),
        "running_var shape": dict(running_var=np.ones(4)),
        "running_var dtype": dict(running_var=np.ones(3, dtype=np.float32)),
        "running_var read-only": dict(running_var=np.broadcast_to(np.ones(1), (3,))),
        "momentum": dict(momentum=1.5),
        "eps": dict(eps=-1.0),
        "momentum None, no counter": dict(momentum=None),
        "one value per channel": dict(x=np.ones((1, 3))),
        "impl": dict(impl="cuda"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_failing_call_leaves_running_stats_untouched(case):
    rng = np.random.default_rng(12)
    rm, rv = _running(rng, 3)
    count = np.array([3], dtype=np.int64)
    kwargs = dict(
        x=rng.standard_normal((4, 3)), running_mean=rm, running_var=rv, training=True, num_batches_tracked=count
    )
    kwargs.update(_bad_calls()[case])
    if case == "momentum None, no counter":
        kwargs["num_batches_tracked"] = None
    before = rm.copy(), kwargs["running_var"].copy(), count.copy()
    with pytest.raises((ValueError, TypeError)):
        F.batch_norm(**kwargs)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(kwargs["running_var"], before[1])
    np.testing.assert_array_equal(count, before[2])


@pytest.mark.parametrize("impl", IMPLS)
def test_failure_inside_the_forward_leaves_running_stats_untouched(impl, monkeypatch):
    def broken(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(bn.BatchNormFunction, "forward", staticmethod(broken))
    monkeypatch.setattr(bn, "batch_norm_composed", broken)
    rng = np.random.default_rng(13)
    rm, rv = _running(rng, 3)
    before = rm.copy(), rv.copy()
    with pytest.raises(MemoryError):
        F.batch_norm(rng.standard_normal((4, 3)), rm, rv, training=True, impl=impl)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])


# ---------------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("impl", ["numba", "numpy"])
@pytest.mark.parametrize("mode", list(MODES))
def test_float32_matches_float64_reference(impl, mode):
    rng = np.random.default_rng(14)
    x, w, b = _inputs(rng, (64, 6, 9), "affine")
    dy = rng.standard_normal((64, 6, 9))
    ref = _run_all_impls(x.data, w.data, b.data, dy, MODES[mode], np.float64)["numpy"]
    res = _run_all_impls(
        x.data.astype(np.float32),
        w.data.astype(np.float32),
        b.data.astype(np.float32),
        dy.astype(np.float32),
        MODES[mode],
        np.float32,
    )[impl]
    assert res[0].dtype == np.float32 and res[1][0].dtype == np.float32 and res[2][0].dtype == np.float32
    np.testing.assert_allclose(res[0], ref[0], rtol=1e-5, atol=1e-5)
    for g, rg in zip(res[1], ref[1]):
        np.testing.assert_allclose(g, rg, rtol=1e-4, atol=1e-4 * np.abs(rg).max())
    for s, rs in zip(res[2], ref[2]):
        np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["numba", "numpy"])
@pytest.mark.parametrize("shape", [(4096, 3), (16, 3, 256)])
def test_large_mean_small_spread_float32(impl, shape):
    """Channels with mean 1e4 and std 1e-2: E[x²] − E[x]² would lose everything; float64 two-pass does not."""
    rng = np.random.default_rng(15)
    x32 = (1e4 + 1e-2 * rng.standard_normal(shape)).astype(np.float32)
    x64 = x32.astype(np.float64)  # the same data, float64 math
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = F.batch_norm(x32, rm, rv, training=True, momentum=1.0, impl=impl).data
    axes = (0,) if len(shape) == 2 else (0, 2)
    expected = F.batch_norm(x64, None, None, training=True, impl="numpy").data
    assert np.abs(y - expected).max() < 1e-5
    np.testing.assert_allclose(rv, x64.var(axis=axes, ddof=1), rtol=1e-5)


@pytest.mark.parametrize("variant", ["serial", "parallel"])
@pytest.mark.parametrize("shape", [(4096, 3), (4099, 1030), (64, 3, 65)])  # narrow, four-row and (N, C, L) paths
def test_float32_statistics_shifted_by_a_first_value_as_far_off_as_can_be(shape, variant, monkeypatch):
    """float32 channels take each chunk's Σd and Σd², d = x − x[0, c], in one pass; the origin x[0, c] lies
    farthest from the mean at Samuelson's bound (one outlier, every other value equal), which loses at most a
    factor M = N·L of float64's precision. Such channels, on and far off centre, with chunks whose means differ,
    keep mean (relative to σ) and variance within 1e-9 of the float64 reference (float32 resolves 6e-8)."""
    monkeypatch.setattr(_jit, "SERIAL_BELOW", 2**62 if variant == "serial" else 0)
    rng = np.random.default_rng(31)
    N, C = shape[:2]
    L = shape[2] if len(shape) == 3 else 1
    M = N * L
    z = np.ones((N, C, L))
    z[0, :, 0] = -(M - 1)  # channel sum 0: x[0, c] at Samuelson's bound
    z[N // 2 :] += rng.standard_normal((N - N // 2, C, L))  # later chunks: another mean and spread
    offset = np.array([0.0, 1e4, -3e6] * C)[:C, None]
    scale = np.array([1.0, 1e-2, 5.0] * C)[:C, None]
    x = (offset + scale * z).astype(np.float32).reshape(shape)
    mean, var = bn.batch_stats(x, "numba")
    mean_ref, var_ref = bn.stats_reference(x.astype(np.float64).reshape(N, C, L))
    np.testing.assert_allclose(var, var_ref, rtol=1e-9)
    assert np.all(np.abs(mean - mean_ref) <= 1e-9 * np.sqrt(var_ref))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", list(MODES))
def test_constant_channel_gives_bias_and_finite_gradients(impl, mode):
    x = npnorm.tensor(np.full((4, 2, 3), 2.5), requires_grad=True)
    w = npnorm.tensor([0.5, 1.5], requires_grad=True)
    b = npnorm.tensor([-1.0, 1.0], requires_grad=True)
    rm, rv = np.full(2, 2.5), np.zeros(2)  # evaluation: the running statistics say "constant 2.5" too
    y = F.batch_norm(x, rm, rv, w, b, training=MODES[mode], impl=impl)
    np.testing.assert_allclose(y.data, np.broadcast_to(b.data[:, None], (4, 2, 3)), atol=1e-12)
    y.backward(np.random.default_rng(16).standard_normal((4, 2, 3)))
    for t in (x, w, b):
        assert np.all(np.isfinite(t.grad))
    assert np.all(np.isfinite(rm)) and np.all(np.isfinite(rv))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("impl", IMPLS)
def test_nan_stays_in_its_channel(impl):
    data = np.random.default_rng(17).standard_normal((5, 3, 2))
    data[2, 1, 0] = np.nan
    rm, rv = np.zeros(3), np.ones(3)
    x = npnorm.tensor(data, requires_grad=True)
    y = F.batch_norm(x, rm, rv, training=True, impl=impl)
    y.backward(np.ones((5, 3, 2)))
    clean = [0, 2]
    expected = F.batch_norm(data[:, clean], None, None, training=True, impl="numpy").data
    np.testing.assert_allclose(y.data[:, clean], expected, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(x.grad[:, clean])) and np.all(np.isnan(y.data[:, 1]))
    assert np.all(np.isfinite(rm[clean])) and np.isnan(rm[1]) and np.isnan(rv[1])


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_input(impl):
    base = np.random.default_rng(18).standard_normal((3, 6))
    x = npnorm.tensor(base, requires_grad=True)
    y = F.batch_norm(x.T, None, None, training=True, impl=impl)  # (6, 3), a non-contiguous view
    expected = F.batch_norm(np.ascontiguousarray(base.T), None, None, training=True, impl="numpy")
    np.testing.assert_allclose(y.data, expected.data, rtol=1e-12, atol=1e-12)
    assert npnorm.gradcheck(lambda t: F.batch_norm(t.T, None, None, training=True, impl=impl), (x,))


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch_in_training_is_counted_and_updates_nothing_else(impl):
    """As PyTorch: an empty batch gives an empty output and leaves the running statistics alone, but counts as
    a batch (PyTorch's module counts every training call; with momentum=None the next batch weighs 1/2)."""
    rm, rv, count = np.zeros(3), np.ones(3), np.zeros((), np.int64)
    x = npnorm.tensor(np.zeros((0, 3, 2)), requires_grad=True)
    w = npnorm.tensor(np.ones(3), requires_grad=True)
    y = F.batch_norm(x, rm, rv, w, training=True, momentum=None, num_batches_tracked=count, impl=impl)
    assert y.shape == (0, 3, 2)
    y.backward(np.zeros((0, 3, 2)))
    np.testing.assert_array_equal(w.grad, np.zeros(3))
    np.testing.assert_array_equal(rm, np.zeros(3))
    assert count == 1
    batch = np.arange(12.0).reshape(2, 3, 2)
    F.batch_norm(batch, rm, rv, training=True, momentum=None, num_batches_tracked=count, impl=impl)
    assert count == 2
    np.testing.assert_allclose(rm, batch.mean(axis=(0, 2)) / 2, rtol=1e-15)


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1)])
def test_one_value_per_channel_in_training(shape):
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(np.ones(shape), None, None, training=True)
    F.batch_norm(np.ones(shape), np.zeros(3), np.ones(3), training=False)  # evaluation is fine


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(weight=np.ones(4)), ValueError, r"batch_norm: weight has shape \(4,\), expected \(3,\)"),
        (dict(bias=np.ones((3, 1))), ValueError, r"bias has shape \(3, 1\), expected \(3,\)"),
        (dict(running_mean=np.zeros(4)), ValueError, r"running_mean has shape \(4,\), expected \(3,\)"),
        (dict(running_var=np.ones(3, np.float32)), ValueError, "running_var is float32 but the input is float64"),
        (dict(running_mean=[0.0, 0.0, 0.0]), TypeError, "running_mean must be a numpy.ndarray"),
        (dict(running_var=None), ValueError, "both be None or neither be None"),
        (dict(momentum=-0.1), ValueError, r"momentum must be a number in \[0, 1\] or None"),
        (dict(momentum=True), ValueError, "momentum must be a number"),
        (dict(eps=-1e-5), ValueError, "eps must be a number >= 0"),
        (dict(momentum=None), ValueError, "momentum=None .* needs num_batches_tracked"),
        (dict(num_batches_tracked=np.zeros(1, np.int32)), ValueError, "one-element int64"),
        (dict(impl="cuda"), ValueError, "impl must be one of"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, message):
    args = dict(running_mean=np.zeros(3), running_var=np.ones(3), training=True)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        F.batch_norm(np.zeros((4, 3)), **args)


def test_bad_input_shapes_and_missing_eval_stats():
    with pytest.raises(ValueError, match=r"input must have shape \(N, C\) or \(N, C, L\), got \(5,\)"):
        F.batch_norm(np.zeros(5), None, None, training=True)
    with pytest.raises(ValueError, match="required when training=False"):
        F.batch_norm(np.zeros((4, 3)), None, None, training=False)
    with pytest.raises(ValueError, match="running_mean is read-only"):
        F.batch_norm(np.zeros((4, 3)), np.broadcast_to(np.zeros(1), (3,)), np.ones(3), training=True)
    # read-only running statistics are fine where nothing is written
    F.batch_norm(np.zeros((4, 3)), np.broadcast_to(np.zeros(1), (3,)), np.ones(3), training=False)
