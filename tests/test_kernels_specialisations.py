"""The kernel wrappers pass an absent weight or bias to the jitted kernels as an array, never as None.

None is a numba type of its own: a kernel that took it would compile one specialisation per combination of
present and absent parameters (per dtype and variant), and `npnorm warmup` would have to compile them all.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled kernels")

PARAMS = ("weight", "bias")


def _call_every_wrapper(dtype, weight, bias):
    """Every public kernel wrapper that takes γ or β, on a small (serial) input, with the given weight, bias."""
    from npnorm.kernels import batch_norm, group_norm, layer_norm, rms_norm

    rng = np.random.default_rng(0)
    N, H = 6, 8
    x, dy = rng.standard_normal((N, H)).astype(dtype), rng.standard_normal((N, H)).astype(dtype)
    y, dx, mean, rstd = np.empty_like(x), np.empty_like(x), np.empty(N), np.empty(N)
    dw, db = np.empty(H, dtype), np.empty(H, dtype)
    layer_norm.layer_norm_forward(y, mean, rstd, x, weight, bias, 1e-5)
    layer_norm.layer_norm_backward(dx, dw, db, dy, x, mean, rstd, weight)
    rms_norm.rms_norm_forward(y, rstd, x, weight, 1e-5)
    rms_norm.rms_norm_backward(dx, dw, dy, x, rstd, weight)
    x3, dy3 = x.reshape(N, H, 1), dy.reshape(N, H, 1)  # (N, C, L) with C = H
    ch_mean, ch_rstd = np.zeros(H), np.ones(H)
    batch_norm.batch_norm_forward(np.empty_like(x3), x3, ch_mean, ch_rstd, weight, bias)
    batch_norm.batch_norm_backward(np.empty_like(x3), dw, db, dy3, x3, ch_mean, ch_rstd, weight, True)
    group_norm.group_norm_affine_forward(x3.copy(), weight, bias)
    g = np.empty_like(x3)
    group_norm.group_norm_affine_backward(g, dw, db, dy3, x3, np.zeros((N, 2)), np.ones((N, 2)), weight)


def _dispatchers():
    """(name, numba dispatcher, positions of weight/bias in its arguments) for every kernel's dispatchers."""
    from npnorm.kernels import _jit, batch_norm, group_norm, layer_norm, rms_norm

    for module in (batch_norm, group_norm, layer_norm, rms_norm):
        for name, kernel in vars(module).items():
            if isinstance(kernel, _jit.ChunkedKernel):
                args = list(inspect.signature(kernel.py_func).parameters)
                positions = [args.index(p) for p in PARAMS if p in args]
                for dispatcher in kernel.dispatchers:
                    yield f"{module.__name__}.{name}", dispatcher, positions


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_absent_weight_and_bias_reach_the_kernels_as_arrays(dtype):
    from numba import types

    compiled_before = [len(dispatcher.signatures) for _, dispatcher, _ in _dispatchers()]
    H = 8
    for weight in (None, np.full(H, 1.5, dtype)):
        for bias in (None, np.full(H, 0.5, dtype)):
            _call_every_wrapper(dtype, weight, bias)
    for (name, dispatcher, positions), n_before in zip(_dispatchers(), compiled_before, strict=True):
        for signature in dispatcher.signatures:
            for pos in positions:
                assert signature[pos] != types.none, f"{name} was compiled for {signature}"
        # four combinations of weight and bias, one dtype: at most one new specialisation per kernel
        assert len(dispatcher.signatures) - n_before <= 1, (name, dispatcher.signatures)


# Outputs a caller may not want, and BatchNorm's evaluation mode, are run-time flags with empty stand-ins
# too: GroupNorm's g (no input gradient, or no γ) and partial sums (no dγ, dβ), BatchNorm's batch means.


def _none_free_kernels():
    """(name, dispatcher) for every kernel dispatcher of the modules that take no None at all."""
    from npnorm.kernels import _jit, batch_norm, group_norm

    for module in (batch_norm, group_norm):
        for name, kernel in vars(module).items():
            if isinstance(kernel, _jit.ChunkedKernel):
                for dispatcher in kernel.dispatchers:
                    yield f"{module.__name__}.{name}", dispatcher


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_norm_and_batch_norm_backward_compile_once_whatever_is_wanted(dtype):
    from numba import types

    from npnorm.kernels import batch_norm, group_norm

    compiled_before = [len(dispatcher.signatures) for _, dispatcher in _none_free_kernels()]
    rng = np.random.default_rng(1)
    N, C, G = 6, 8, 2
    x, dy = rng.standard_normal((N, C, 1)).astype(dtype), rng.standard_normal((N, C, 1)).astype(dtype)
    mean, rstd = np.zeros((N, G)), np.ones((N, G))
    for weight in (None, np.full(C, 1.5, dtype)):
        for want_g in (False, True):
            for want_w, want_b in ((False, False), (True, False), (False, True), (True, True)):
                g = np.empty_like(x) if want_g else None
                dw = np.empty(C, dtype) if want_w else None
                db = np.empty(C, dtype) if want_b else None
                if g is not None or dw is not None or db is not None:  # what norms/group_norm.py calls
                    group_norm.group_norm_affine_backward(g, dw, db, dy, x, mean, rstd, weight)
                for training in (False, True):
                    dx = np.empty_like(x) if want_g else None
                    batch_norm.batch_norm_backward(dx, dw, db, dy, x, np.zeros(C), np.ones(C), weight, training)
    for (name, dispatcher), n_before in zip(_none_free_kernels(), compiled_before, strict=True):
        for signature in dispatcher.signatures:
            assert types.none not in signature, f"{name} was compiled for {signature}"
        # every combination, one dtype: at most one new specialisation per kernel
        assert len(dispatcher.signatures) - n_before <= 1, (name, dispatcher.signatures)


# A dtype test on a kernel's own argument is folded before numba types the kernel (_jit._FoldDtypeTests), so
# numba types only the branch of the specialisation's dtype. The probe below types for float64 arrays only:
# a kernel that reaches it from float32 compiles only if that branch was dropped before typing.


def _float64_only_probe():
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def float64_only(typingctx, a):
        if not (isinstance(a, types.Array) and a.dtype == types.float64):
            return None  # numba: no signature matches, a TypingError

        def codegen(context, builder, signature, llargs):
            return context.get_constant(types.float64, 1.0)

        return types.float64(a), codegen

    return float64_only


def _dtype_branching_kernels():
    """Kernels that write 1.0 (the probe, float64 only) or 2.0 into out[0] by x's dtype, each by another route:
    ``if is_float64(x)``, ``one_pass = not is_float64(x)`` and an inlined helper given that flag."""
    from npnorm.kernels._jit import is_float64, kernel

    probe = _float64_only_probe()

    def direct(out, x):
        if is_float64(x):
            out[0] = probe(x)
        else:
            out[0] = 2.0

    def negated(out, x):
        one_pass = not is_float64(x)
        for i in range(out.shape[0]):  # the flag tested inside a loop, as the kernels do
            if one_pass:
                out[i] = 2.0
            else:
                out[i] = probe(x)

    @kernel(parallel=False, inline=True)
    def helper(out, x, wide):
        if wide:
            out[0] = probe(x)
        else:
            out[0] = 2.0

    def through_helper(out, x):
        helper(out, x, is_float64(x))

    return {f.__name__: f for f in (direct, negated, through_helper)}


@pytest.mark.parametrize("route", ["direct", "negated", "through_helper"])
def test_a_kernel_types_only_the_branch_of_its_dtype(route):
    import numba

    from npnorm.kernels import _jit

    py_func = _dtype_branching_kernels()[route]
    compiled = _jit.kernel(parallel=False)(py_func)
    for dtype, expected in ((np.float64, 1.0), (np.float32, 2.0)):
        out = np.zeros(1)
        compiled(out, np.zeros(3, dtype))
        assert out[0] == expected, (route, dtype)
    # the probe does refuse float32: numba's own compiler, which types both branches, fails on it
    with pytest.raises(numba.core.errors.TypingError):
        numba.njit(py_func)(np.zeros(1), np.zeros(3, np.float32))


def test_a_dtype_test_on_anything_but_an_argument_still_answers_at_run_time():
    from npnorm.kernels import _jit

    def rows_are_float64(out, x):
        out[0] = _jit.is_float64(x[0])  # a row of x, no argument: not folded, the intrinsic decides

    compiled = _jit.kernel(parallel=False)(rows_are_float64)
    for dtype, expected in ((np.float64, True), (np.float32, False)):
        out = np.zeros(1, dtype=np.bool_)
        compiled(out, np.zeros((2, 3), dtype))
        assert out[0] == expected


def test_a_folded_flag_passed_to_a_called_helper_compiles_it_once():
    """BatchNorm's statistics branch on ``corrected`` and pass it on to ``_combine_chunks`` (a called kernel). The
    fold settles the branches only: had it made ``corrected`` itself a constant, numba would pass it as a literal
    and compile the helper once per dtype of x instead of once."""
    import numba
    from numba import types

    from npnorm.kernels import _jit, batch_norm

    # A copy of the statistics kernel without a cache, so that numba types it (and its call of the helper) here
    # whatever the on-disk cache holds; a kernel loaded from there would type nothing.
    body = numba.njit(
        fastmath=set(_jit.FASTMATH_REASSOC),
        nogil=True,
        error_model="numpy",
        no_cfunc_wrapper=True,
        pipeline_class=_jit._KernelCompiler,
    )(_jit._variant(batch_norm._batch_stats.py_func, parallel=False))
    f64 = types.float64
    for dtype in (types.float32, types.float64):
        body.compile(
            (f64[::1], f64[::1], dtype[:, :, ::1], types.int64, f64[:, ::1], f64[:, ::1], types.int64, types.int64)
        )
    assert [sig[-1] for sig in batch_norm._combine_chunks.signatures] == [types.boolean]


def test_kernels_compile_with_numbas_own_pipeline_where_the_fold_has_no_place(monkeypatch):
    """A numba whose pipeline lacks the pass the fold follows: kernels still compile, without the fold, and answer
    the same."""
    import numba
    from numba.core.compiler_machinery import FunctionPass, register_pass

    from npnorm.kernels import _jit

    @register_pass(mutates_CFG=False, analysis_only=True)
    class NotInThePipeline(FunctionPass):
        _name = "npnorm_test_not_in_the_pipeline"

        def __init__(self):
            FunctionPass.__init__(self)

        def run_pass(self, state):
            return False

    folds = []
    monkeypatch.setattr(_jit, "InlineInlinables", NotInThePipeline)
    monkeypatch.setattr(_jit._FoldDtypeTests, "run_pass", lambda self, state: folds.append(state) or False)

    def tell_dtype(out, x):
        if _jit.is_float64(x):
            out[0] = 1.0
        else:
            out[0] = 2.0

    compiled = numba.njit(pipeline_class=_jit._KernelCompiler)(tell_dtype)  # no cache: compiled here
    for dtype, expected in ((np.float64, 1.0), (np.float32, 2.0)):
        out = np.zeros(1)
        compiled(out, np.zeros(3, dtype))
        assert out[0] == expected
    assert folds == []


def test_a_helper_kernel_called_from_python_raises_instead_of_crashing():
    """helper=True kernels have no Python entry point; numba's dispatcher jumped to it anyway (a segfault)."""
    from npnorm.kernels import _jit
    from npnorm.kernels import layer_norm as K

    x = np.ones((2, 4), np.float32)
    with pytest.raises(TypeError, match=r"npnorm\.kernels\._jit\._add_up_chunks is a helper kernel"):
        _jit.add_up_chunks(np.empty(4, np.float32), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="layer_norm._dx_row is a helper kernel"):
        K._dx_row(x.copy(), x, x, x[0], True, 0, 0.0, 1.0, 0.0, 0.0)
    # the kernels that call them still do (compiled here, or loaded from the cache)
    dx, dw, db = np.empty_like(x), np.empty(4, np.float32), np.empty(4, np.float32)
    K.layer_norm_backward(dx, dw, db, x, x, np.zeros(2), np.ones(2), x[0])
    np.testing.assert_array_equal(db, [2, 2, 2, 2])
