"""gradcheck checks itself: it passes correct gradients, and catches, locates and describes wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

import npnorm
from npnorm import Function, GradcheckError, gradcheck, ops

MODES = pytest.mark.parametrize("fast_mode", [False, True], ids=["full", "fast"])


def leaf(data) -> npnorm.Tensor:
    return npnorm.tensor(data, requires_grad=True)


class WrongSecondGrad(Function):
    """out = a * b, with db deliberately doubled: da = g b (right), db = 2 g a (wrong)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return grad * b, 2 * grad * a


class OneWrongEntry(Function):
    """out = 3 aᵀ, with d out[2, 1] / d a[1, 2] given as 4 instead of 3: one wrong Jacobian entry, whose output
    and input indices differ."""

    @staticmethod
    def forward(ctx, a):
        return 3 * a.T

    @staticmethod
    def backward(ctx, grad):
        da = 3 * grad.T
        da[1, 2] = 4 * grad[2, 1]
        return da


_noise = np.random.default_rng()


class NoisyBackward(Function):
    """out = 2a, with a backward that adds a little random noise: right on average, never the same twice."""

    @staticmethod
    def forward(ctx, a):
        return 2 * a

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad + 1e-9 * _noise.standard_normal(grad.shape)


# -------------------------------------------------------------------------------------- correct gradients


@MODES
def test_passes_on_correct_functions(fast_mode, rng):
    a, b, c = leaf(rng.standard_normal((3, 4))), leaf(rng.standard_normal((4, 2))), leaf(rng.standard_normal(2))
    assert gradcheck(lambda a, b, c: (a @ b).tanh().sum(axis=0) * c, (a, b, c), fast_mode=fast_mode) is True
    assert gradcheck(lambda a: (a * a).sum(), a, fast_mode=fast_mode) is True  # a single Tensor, not a tuple
    assert gradcheck(lambda a: a.exp(), (a,), fast_mode=fast_mode, raise_exception=False) is True
    assert gradcheck(lambda a, b: a @ b, [a, b], fast_mode=fast_mode) is True  # a list, as in PyTorch


@MODES
@pytest.mark.parametrize("layout", ["transposed", "permuted", "strided"])
def test_passes_whatever_the_inputs_memory_layout(fast_mode, layout, rng):
    """Finite differences step element by element in C order, whatever order x is stored in."""
    base = rng.standard_normal((4, 3, 2))
    data = {"transposed": base[:, :, 0].T, "permuted": base.transpose(1, 0, 2), "strided": base[::2, ::2]}[layout]
    x = npnorm.Tensor(data, requires_grad=True)  # Tensor keeps the array as it is
    assert not x.data.flags.c_contiguous
    assert gradcheck(lambda x: x * 2.0, x, fast_mode=fast_mode) is True
    assert gradcheck(lambda x: (x * x).sum(axis=0), x, fast_mode=fast_mode) is True
    # and a wrong gradient is still found at the element where it is wrong, in C-order coordinates
    with pytest.raises(GradcheckError) as caught:
        gradcheck(lambda x: WrongAt.apply(x, index=(1, 0) + (0,) * (x.ndim - 2)), x, fast_mode=fast_mode)
    assert caught.value.element_index == (1, 0) + (0,) * (x.ndim - 2)


class WrongAt(Function):
    """y = x, with the gradient of one element doubled."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.index = index
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        grad = grad.copy()
        grad[ctx.index] *= 2.0
        return grad


def test_non_tensor_and_constant_inputs_pass_through(rng):
    x, w = leaf(rng.standard_normal(5)), npnorm.tensor(rng.standard_normal(5))
    assert gradcheck(lambda x, w, p: (x * w) ** p, (x, w, 2))
    assert w.grad is None


def test_output_independent_of_the_input():
    x = leaf([1.0, 2.0])
    assert gradcheck(lambda x: npnorm.tensor([3.0]), (x,))


# --------------------------------------------------------------------------------------- wrong gradients


@MODES
def test_catches_a_detached_factor_and_reports_the_numbers(fast_mode):
    # d/dx (x * const(x)) is x, but the function's true derivative is 2x: analytic x[k], numerical 2 x[k].
    data = np.array([0.5, -1.5, 3.0, 2.0])
    x = leaf(data)
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: x * x.detach(), (x,), fast_mode=fast_mode)
    e = info.value
    assert isinstance(e, AssertionError)
    k = int(np.argmax(np.abs(data)))  # the largest excess over the tolerance is at the largest |x|
    assert e.input_index == 0
    assert e.element_index == (k,) and e.output_index == (k,)
    assert e.analytic == pytest.approx(data[k], rel=1e-12)
    assert e.numerical == pytest.approx(2 * data[k], rel=1e-6)
    assert e.abs_error == pytest.approx(abs(data[k]), rel=1e-6)
    assert e.rel_error == pytest.approx(0.5, rel=1e-6)
    assert e.allowed == pytest.approx(1e-5 + 1e-3 * abs(2 * data[k]), rel=1e-6)
    assert (e.num_failed, e.num_total) == (4, 16)  # the diagonal of a 4 x 4 Jacobian
    message = str(e)
    for fragment in ("input 0", "[2]", "3.00000000e+00", "6.0000000", "4 of 16"):
        assert fragment in message, fragment


@MODES
def test_reports_the_second_input_when_only_its_gradient_is_wrong(fast_mode, rng):
    a_data, b_data = rng.uniform(0.5, 2.0, (2, 3)), rng.standard_normal((2, 3))
    a, b = leaf(a_data), leaf(b_data)
    with pytest.raises(GradcheckError, match="input 1") as info:
        gradcheck(WrongSecondGrad.apply, (a, b), fast_mode=fast_mode)
    e = info.value
    assert e.input_index == 1
    assert e.output_index == e.element_index  # elementwise: only the diagonal of the Jacobian is non-zero
    k = e.element_index
    assert e.analytic == pytest.approx(2 * a_data[k], rel=1e-12)
    assert e.numerical == pytest.approx(a_data[k], rel=1e-6)
    assert e.num_failed == 6


@MODES
def test_locates_a_single_wrong_entry(fast_mode, rng):
    x = leaf(rng.standard_normal((2, 4)))
    with pytest.raises(GradcheckError) as info:
        gradcheck(OneWrongEntry.apply, (x,), fast_mode=fast_mode)
    e = info.value
    assert (e.element_index, e.output_index) == ((1, 2), (2, 1))
    assert e.analytic == pytest.approx(4.0) and e.numerical == pytest.approx(3.0)
    assert (e.num_failed, e.num_total) == (1, 64)
    assert "d(output[2, 1]) / d(input0[1, 2])" in str(e)


@MODES
def test_raise_exception_false_returns_false(fast_mode):
    x = leaf([1.0, 2.0])
    assert gradcheck(lambda x: x * x.detach(), (x,), raise_exception=False, fast_mode=fast_mode) is False


def test_tolerances_decide():
    # A gradient 0.05% too large is within the default rtol 1e-3, but not within rtol 1e-4.
    class SlightlyOff(Function):
        @staticmethod
        def forward(ctx, a):
            return 3 * a

        @staticmethod
        def backward(ctx, grad):
            return 3 * grad * 1.0005

    x = leaf([1.0, -2.0])
    assert gradcheck(SlightlyOff.apply, (x,))
    assert not gradcheck(SlightlyOff.apply, (x,), rtol=1e-4, raise_exception=False)


@MODES
def test_catches_a_non_deterministic_backward(fast_mode):
    x = leaf([1.0, 2.0, 3.0])
    with pytest.raises(GradcheckError, match="not deterministic") as info:
        gradcheck(NoisyBackward.apply, (x,), fast_mode=fast_mode)
    assert info.value.input_index == 0


@MODES
@pytest.mark.parametrize("modify", ["add", "scale"])
def test_catches_fn_that_modifies_its_input(fast_mode, modify):
    def fn(x):
        if modify == "add":
            x.data += 1.0
        else:
            x.data *= 2.0
        return x * 1.0

    x = leaf([1.0, 2.0])
    with pytest.raises(GradcheckError, match="modified input 0 in place") as info:
        gradcheck(fn, (x,), fast_mode=fast_mode)
    assert info.value.input_index == 0


# ------------------------------------------------------------------------------------------ bad arguments


def test_float32_input_raises_and_suggests_float64():
    x = npnorm.tensor([1.0, 2.0], dtype=np.float32, requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: x * 2.0, (x,))


@pytest.mark.parametrize("result", [lambda x: x.data * 2, lambda x: 1.0, lambda x: None])
def test_fn_must_return_a_tensor(result):
    with pytest.raises(TypeError, match="Tensor"):
        gradcheck(result, (leaf([1.0, 2.0]),))


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda x: x * 2.0, (npnorm.tensor([1.0]),))


def test_rejects_read_only_inputs_it_would_have_to_perturb():
    x = npnorm.Tensor(np.broadcast_to(np.ones(1), (3,)), requires_grad=True)
    with pytest.raises(ValueError, match="input 0 holds a read-only array"):
        gradcheck(lambda x: x * 2.0, (x,))


def test_rejects_non_leaf_inputs():
    x = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(ValueError, match="leaf"):
        gradcheck(lambda x: x * 2.0, (x,))


@pytest.mark.parametrize(
    "kwargs",
    [{"eps": 0.0}, {"atol": -1.0}, {"rtol": -1e-3}, {"eps": float("nan")}, {"atol": float("nan")}, {"eps": np.inf}],
)
def test_rejects_bad_tolerances(kwargs):
    with pytest.raises(ValueError, match="gradcheck"):
        gradcheck(lambda x: x * 2.0, (leaf([1.0]),), **kwargs)


# --------------------------------------------------------------------------------------------- side effects


@MODES
@pytest.mark.parametrize("passes", [True, False])
def test_restores_grads_and_data(fast_mode, passes):
    x, y = leaf([1.0, 2.0]), leaf([3.0, -4.0])
    grad_before = np.array([7.0, 8.0])
    x.grad = grad_before
    data_before = (x.data.copy(), y.data.copy())
    fn = (lambda x, y: x * y) if passes else (lambda x, y: x * y.detach() + y * y.detach())
    assert gradcheck(fn, (x, y), fast_mode=fast_mode, raise_exception=False) is passes
    assert x.grad is grad_before
    np.testing.assert_array_equal(x.grad, [7.0, 8.0])
    assert y.grad is None
    np.testing.assert_array_equal(x.data, data_before[0])
    np.testing.assert_array_equal(y.data, data_before[1])


# ------------------------------------------------------------------------------------ edges of the verdict


class LogWithGradScaled(ops.Log):
    """The engine's y = log(a), with its gradient scaled by `scale[k]` per element (1: right)."""

    scale = np.array([1.0])

    @staticmethod
    def backward(ctx, grad):
        return ops.Log.backward(ctx, grad) * LogWithGradScaled.scale


@MODES
@pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")  # log(0): the point
def test_an_infinite_numerical_derivative_passes_only_an_equal_analytic_one(fast_mode, monkeypatch):
    """At x = 1e-6, x - eps reaches 0 and log gives -inf: numerically d/dx = inf. A finite (here: zero) analytic
    value must fail there, as numpy.allclose(0, inf) is False; the tolerance atol + rtol·inf passed anything."""
    monkeypatch.setattr(LogWithGradScaled, "scale", np.array([0.0]))
    with pytest.raises(GradcheckError, match="numerical inf"):
        gradcheck(LogWithGradScaled.apply, leaf([1e-6]), fast_mode=fast_mode)


def test_the_reported_element_is_one_that_fails():
    """An entry infinite on both sides passes (as in numpy.allclose), and its excess inf - inf = NaN must not make
    it the one reported: the failing entry is."""
    from npnorm.gradcheck import _compare_jacobians

    analytic = np.array([[np.inf, 0.0], [0.0, 2.0]])
    numerical = np.array([[np.inf, 0.0], [0.0, 1.0]])
    problem = _compare_jacobians(0, analytic, numerical, (2,), (2,), atol=1e-5, rtol=1e-3)
    assert problem.element_index == (1,) and problem.output_index == (1,) and problem.num_failed == 1


class NaNOnceBackward(Function):
    """y = a; the first backward leaves a NaN in its last element (as an uninitialised buffer might)."""

    calls = 0

    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, grad):
        NaNOnceBackward.calls += 1
        out = grad.copy()
        if NaNOnceBackward.calls == 1:
            out[-1] = np.nan
        return out


@pytest.mark.parametrize("n", [1, 3])
def test_a_backward_that_differs_by_a_nan_is_named_at_its_first_difference(n, monkeypatch):
    monkeypatch.setattr(NaNOnceBackward, "calls", 0)
    match = rf"backward is not deterministic for input 0.*first at element \({n - 1},\)"
    with pytest.raises(GradcheckError, match=match):
        gradcheck(NaNOnceBackward.apply, leaf(np.arange(1.0, n + 1)))


def test_a_float32_output_is_refused_with_the_reason():
    with pytest.raises(TypeError, match="fn returned float32; finite differences need a float64 output"):
        gradcheck(lambda x: (x * 3.0).tanh().astype(np.float32), leaf([0.1, 0.2]))


def test_a_random_forward_is_named_as_such_not_as_a_wrong_gradient():
    x = leaf(np.arange(1.0, 7.0))
    with pytest.raises(GradcheckError, match="fn is not deterministic: two calls on the same inputs"):
        gradcheck(lambda t: npnorm.functional.dropout(t, 0.5, True), x)
    fixed = lambda t: npnorm.functional.dropout(t, 0.5, True, generator=np.random.default_rng(3))  # noqa: E731
    assert gradcheck(fixed, x)  # the same mask every call: a fine function to check


def test_parameters_fn_uses_keep_their_grad():
    """Only the checked inputs' .grad used to be restored; a layer's parameters kept every backward's sum."""
    lin = npnorm.nn.Linear(3, 2, dtype=np.float64, rng=0)
    held = np.array([5.0, 6.0])
    lin.bias.grad = held
    x = leaf(np.ones((4, 3)))
    assert gradcheck(lambda t: lin(t), x)
    assert lin.weight.grad is None and x.grad is None
    assert lin.bias.grad is held  # the same array, with its values back (backward adds into it in place)
    np.testing.assert_array_equal(held, [5.0, 6.0])


# ------------------------------------------------------------------------ the largest gap (npnorm check)


def test_largest_gap_is_the_largest_entry_of_every_inputs_jacobian_gap(rng):
    from npnorm.gradcheck import _full_jacobians, largest_gap_or_raise

    a, b = leaf(rng.standard_normal((3, 2))), leaf(rng.standard_normal(2))

    def fn(a, b):
        return (a * b).tanh() @ b

    gap = largest_gap_or_raise(fn, (a, b))
    expected = max(
        float(np.max(np.abs(analytic - numerical)))
        for analytic, numerical, _ in (_full_jacobians(fn, (a, b), i, 1e-6) for i in (0, 1))
    )
    assert gap == expected and 0 < gap < 1e-8


def test_largest_gap_raises_what_gradcheck_raises():
    from npnorm.gradcheck import largest_gap_or_raise

    x = leaf(np.array([0.5, -1.5, 3.0]))
    with pytest.raises(GradcheckError, match="input 0") as info:
        largest_gap_or_raise(lambda x: x * x.detach(), (x,))
    assert info.value.element_index == (2,)  # the largest |x|, as gradcheck names it
