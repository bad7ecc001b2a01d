"""Engine semantics: how the graph is recorded, walked and accumulated, and how errors read."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import npnorm
import npnorm.functional as F
from npnorm import Function, Tensor

# ---------------------------------------------------------------------------------------- accumulation


def test_reused_node_sums_its_gradients():
    # micrograd's test: x is used three times, so dy/dx = 2x + 1.
    x = npnorm.tensor([-2.0, 0.5, 3.0], requires_grad=True)
    y = x * x + x
    y.backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, 2 * x.data + 1)


def test_reused_intermediate_node():
    x = npnorm.tensor([0.3, -1.1], requires_grad=True)
    h = x.exp()  # used by two consumers
    y = (h * h).sum() + h.sum()
    y.backward()
    expected = (2 * np.exp(x.data) + 1) * np.exp(x.data)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-14)


def test_diamond_graph():
    x = npnorm.tensor([1.5, -2.0], requires_grad=True)
    a, b = x * 2.0, x * 3.0
    (a * b).sum().backward()  # 6 x^2
    np.testing.assert_allclose(x.grad, 12 * x.data)


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    x = npnorm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    first = x.grad.copy()
    np.testing.assert_array_equal(first, 2 * x.data)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * first)
    x.grad = None
    (x * 5.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0, 5.0])


def test_leaf_grad_owns_its_array():
    # The upstream array and an Add that hands the same array to both inputs must not alias a leaf's grad.
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    y = npnorm.tensor([3.0, 4.0], requires_grad=True)
    upstream = np.array([1.0, 1.0])
    (x + y).backward(upstream)
    assert not np.shares_memory(x.grad, y.grad)
    assert not np.shares_memory(x.grad, upstream)
    x.grad += 10.0
    np.testing.assert_array_equal(y.grad, [1.0, 1.0])
    np.testing.assert_array_equal(upstream, [1.0, 1.0])


def test_fresh_gradients_of_a_reused_tensor_are_summed_in_place_correctly():
    """A weight used by many fused ops (as in an RNN): the engine adds later gradients into the first one."""
    rng = np.random.default_rng(0)
    x = npnorm.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    weights = [npnorm.tensor(rng.standard_normal((4, 3)), requires_grad=True) for _ in range(3)]
    out = sum((F.linear(x, w) for w in weights[1:]), F.linear(x, weights[0]))
    g = rng.standard_normal((5, 4))
    out.backward(g)
    np.testing.assert_allclose(x.grad, g @ sum(w.data for w in weights), rtol=1e-12)
    for w in weights:
        np.testing.assert_allclose(w.grad, g.T @ x.data, rtol=1e-12)


def test_one_fresh_array_returned_for_two_inputs_is_not_added_into():
    class Both(Function):
        returns_fresh_grads = True  # fresh, but the same array for both inputs

        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, grad):
            shared = grad.copy()
            return shared, shared

    a = npnorm.tensor(np.ones(3), requires_grad=True)
    b = npnorm.tensor(np.ones(3), requires_grad=True)
    (Both.apply(a, b) + a * 2.0).sum().backward()  # a also gets 2 from the second term
    np.testing.assert_array_equal(a.grad, 3.0)
    np.testing.assert_array_equal(b.grad, 1.0)


def test_slices_of_one_tensor_scatter_into_one_gradient():
    """Basic and integer-array indexing, mixed with a dense use: every piece lands where it belongs."""
    x = npnorm.tensor(np.arange(24.0).reshape(6, 4), requires_grad=True)
    y = x[:2].sum() + x[2:].sum() * 2.0 + x[np.array([0, 0, 5])].sum() * 3.0 + (x * 4.0).sum()
    y.backward()
    expected = np.full((6, 4), 4.0)
    expected[:2] += 1.0
    expected[2:] += 2.0
    expected[0] += 6.0  # row 0 indexed twice
    expected[5] += 3.0
    np.testing.assert_array_equal(x.grad, expected)

    z = npnorm.tensor(np.ones((3, 2), np.float32), requires_grad=True)
    z[1:].sum().backward()  # one slice only: .grad is still a dense array of z's shape and dtype
    assert isinstance(z.grad, np.ndarray) and z.grad.dtype == np.float32
    np.testing.assert_array_equal(z.grad, [[0, 0], [1, 1], [1, 1]])


def test_only_leaves_that_require_grad_get_grad():
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    c = npnorm.tensor([3.0, 4.0])
    h = x * c
    (h * h).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * (x.data * c.data) * c.data)
    assert c.grad is None
    assert h.grad is None  # intermediate results keep no grad, as in PyTorch


def test_deep_chain_backward_needs_no_recursion():
    depth = 10_000
    assert sys.getrecursionlimit() < depth
    x = npnorm.tensor(0.7, requires_grad=True)
    y = x
    for _ in range(depth):
        y = y * 1.0001
    y.backward()
    assert np.isclose(y.item(), 0.7 * 1.0001**depth, rtol=1e-10)
    assert np.isclose(x.grad, 1.0001**depth, rtol=1e-10)


def test_wide_reuse_of_one_node():
    x = npnorm.tensor([2.0], requires_grad=True)
    total = x
    for _ in range(999):
        total = total + x
    total.backward(np.ones(1))
    assert x.grad[0] == 1000.0


# ---------------------------------------------------------------------------------------- no_grad, detach


def test_no_grad_records_nothing():
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    with npnorm.no_grad():
        y = (x * 2.0).sum()
    assert not y.requires_grad
    with pytest.raises(RuntimeError, match="no_grad|does not require grad"):
        y.backward()
    assert x.grad is None


def test_nested_no_grad_restores_state():
    assert npnorm.is_grad_enabled()
    with npnorm.no_grad():
        with npnorm.no_grad():
            assert not npnorm.is_grad_enabled()
        assert not npnorm.is_grad_enabled()
    assert npnorm.is_grad_enabled()
    with pytest.raises(KeyError), npnorm.no_grad():
        raise KeyError("an error inside the block")
    assert npnorm.is_grad_enabled()
    x = npnorm.tensor([1.0], requires_grad=True)
    assert (x * 2.0).requires_grad


def test_no_grad_is_thread_local():
    entered, release = threading.Event(), threading.Event()
    seen_in_thread = []

    def worker():
        with npnorm.no_grad():
            seen_in_thread.append(npnorm.is_grad_enabled())
            entered.set()
            release.wait(timeout=10)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert entered.wait(timeout=10)
        x = npnorm.tensor([1.0, 2.0], requires_grad=True)
        y = (x * x).sum()  # recorded here, although the other thread is inside no_grad
        assert npnorm.is_grad_enabled() and y.requires_grad
        y.backward()
        np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    finally:
        release.set()
        thread.join()
    assert seen_in_thread == [False]


def test_detach_shares_data_and_stops_gradients():
    x = npnorm.tensor([1.0, -2.0, 3.0], requires_grad=True)
    d = x.detach()
    assert np.shares_memory(d.data, x.data)
    assert not d.requires_grad and d.is_leaf
    (x * d).sum().backward()  # d is a constant: d/dx (x * c) = c = x
    np.testing.assert_array_equal(x.grad, x.data)


def test_operations_on_inputs_without_requires_grad_record_nothing():
    y = npnorm.tensor([1.0, 2.0]) * 3.0
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


# ------------------------------------------------------------------------------------------------ errors


class WrongShapeGrad(Function):
    """out = 2a, with a backward that returns an extra axis."""

    @staticmethod
    def forward(ctx, a):
        return 2 * a

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad[None]


class TooManyGrads(Function):
    @staticmethod
    def forward(ctx, a):
        return 2 * a

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad, 2 * grad


def test_gradient_of_wrong_shape_names_the_function():
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"WrongShapeGrad.*\(1, 2\).*\(2,\)"):
        WrongShapeGrad.apply(x).sum().backward()


def test_wrong_number_of_gradients_names_the_function():
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="TooManyGrads"):
        TooManyGrads.apply(x).sum().backward()


def test_custom_function_with_a_correct_backward():
    class Square(Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx, grad):
            (a,) = ctx.saved
            assert ctx.needs_input_grad == (True,)
            return 2 * a * grad

    x = npnorm.tensor([1.0, -3.0], requires_grad=True)
    Square.apply(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, -6.0])


def test_backward_of_non_scalar_needs_grad():
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\(2,\)"):
        (x * 2.0).backward()


def test_backward_grad_of_wrong_shape():
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        (x * 2.0).backward(np.ones(3))


def test_backward_of_a_one_element_non_0d_output():
    x = npnorm.tensor([[3.0]], requires_grad=True)
    (x * x).backward()
    np.testing.assert_array_equal(x.grad, [[6.0]])


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)), ((2, 3, 4), (5, 4, 2))],
)
def test_matmul_shape_mismatch(a_shape, b_shape):
    a, b = npnorm.tensor(np.ones(a_shape)), npnorm.tensor(np.ones(b_shape))
    with pytest.raises(ValueError, match="matmul") as info:
        a @ b
    assert str(a_shape) in str(info.value) and str(b_shape) in str(info.value)


def test_matmul_of_a_0d_operand():
    with pytest.raises(ValueError, match="matmul"):
        npnorm.tensor(2.0) @ npnorm.tensor([1.0])


@pytest.mark.parametrize(
    "op, name",
    [
        (lambda a, b: a + b, "add"),
        (lambda a, b: a - b, "sub"),
        (lambda a, b: a * b, "mul"),
        (lambda a, b: a / b, "div"),
        (lambda a, b: a**b, "pow"),
    ],
)
def test_broadcast_failure_names_op_and_shapes(op, name):
    a, b = npnorm.tensor(np.ones((2, 3))), npnorm.tensor(np.ones(4))
    with pytest.raises(ValueError, match=name) as info:
        op(a, b)
    assert "(2, 3)" in str(info.value) and "(4,)" in str(info.value)
    with pytest.raises(ValueError, match=name):
        op(a, np.ones(4))  # an ndarray operand goes the same way


@pytest.mark.parametrize("data", ["abc", [1, "a"], np.array([1j]), {"a": 1}, object()])
def test_non_numeric_data_raises_type_error(data):
    with pytest.raises(TypeError):
        npnorm.tensor(data)


def test_item():
    assert npnorm.tensor([[2.5]]).item() == 2.5
    assert isinstance(npnorm.tensor(3.0).item(), float)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        npnorm.tensor([1.0, 2.0]).item()


def test_reductions_reject_bad_axes():
    x = npnorm.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="sum: axis 2"):
        x.sum(axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        x.mean(axis=(0, -2))
    with pytest.raises(ValueError, match="var.*degrees of freedom"):
        npnorm.tensor([1.0]).var(ddof=1)


@pytest.mark.parametrize("axis", [1.5, True, "0", (0, 1.0)])
def test_reductions_refuse_axes_that_are_not_integers(axis):
    x = npnorm.tensor(np.ones((2, 3)))
    for reduce in (x.sum, x.mean, x.max, x.var):
        with pytest.raises(TypeError, match="axis must be an integer"):
            reduce(axis=axis)  # not truncated to axis 1 (or True read as 1)


@pytest.mark.parametrize("axis", [0, -1, (0,), (-1,)])
def test_axis_0_or_minus_1_of_a_0d_tensor_reduces_nothing(axis):
    x = npnorm.tensor(2.0, requires_grad=True)
    for y in (x.sum(axis=axis), x.mean(axis=axis), x.max(axis=axis)):
        assert y.shape == () and y.item() == 2.0
    with pytest.raises(ValueError, match="axis 1 is out of range"):
        x.sum(axis=1)


def test_reshape_and_transpose_errors_speak_our_language():
    x = npnorm.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"reshape.*\(2, 3\).*\(4, 2\)"):
        x.reshape(4, 2)
    for axes in [(0, 0), (1, 2), (-3, 0), (0,), (0, 1, 2), ((),)]:
        with pytest.raises(ValueError, match="transpose: axes"):
            x.transpose(*axes)
    assert x.transpose(None).shape == (3, 2) == x.transpose().shape
    scalar = npnorm.tensor(2.0)
    assert scalar.transpose().shape == () == scalar.transpose(()).shape
    with pytest.raises(ValueError, match="transpose: axes"):
        scalar.transpose(0)


def test_truth_value_follows_numpy():
    assert not npnorm.tensor([0.0]) and npnorm.tensor([2.0]) and not npnorm.tensor(0.0) and npnorm.tensor(-1.0)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(npnorm.tensor([1.0, 2.0]))


def test_iteration_yields_rows_in_the_graph_and_refuses_0d():
    x = npnorm.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    rows = list(x)
    assert [r.shape for r in rows] == [(2,)] * 3
    np.testing.assert_array_equal(rows[2].data, [5.0, 6.0])
    (rows[0] + 2.0 * rows[2]).sum().backward()
    np.testing.assert_array_equal(x.grad, [[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        list(npnorm.tensor(3.0))


# ---------------------------------------------------------------------------------- operands and storage


@pytest.mark.parametrize(
    "op",
    [
        lambda a, t: a + t,
        lambda a, t: a - t,
        lambda a, t: a * t,
        lambda a, t: a / t,
        lambda a, t: a**t,
        lambda a, t: a @ t,
    ],
    ids=["add", "sub", "mul", "div", "pow", "matmul"],
)
def test_ndarray_on_the_left_gives_a_tensor(op):
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = npnorm.tensor([[0.5, 1.5], [2.5, 3.5]], requires_grad=True)
    y = op(a, t)
    assert isinstance(y, Tensor)
    np.testing.assert_allclose(y.data, op(a, t.data))
    y.sum().backward()
    assert t.grad is not None and t.grad.shape == (2, 2)


def test_numpy_scalar_on_the_left_gives_a_tensor():
    t = npnorm.tensor([1.0, 2.0])
    for y in (np.float64(2.0) * t, np.float32(2.0) + t, np.int64(3) - t):
        assert isinstance(y, Tensor)


def test_tensor_copies_but_Tensor_of_a_float_array_does_not():
    a = np.array([1.0, 2.0, 3.0])
    copied, shared = npnorm.tensor(a), Tensor(a)
    assert shared.data is a
    a[0] = 99.0
    assert copied.data[0] == 1.0
    assert shared.data[0] == 99.0
    a32 = np.ones(2, dtype=np.float32)
    assert Tensor(a32).data is a32
    assert npnorm.tensor(copied).data is not copied.data  # tensor() of a Tensor copies too


def test_numpy_shares_the_array():
    t = npnorm.tensor([1.0, 2.0])
    assert t.numpy() is t.data
    np.testing.assert_array_equal(np.asarray(t), [1.0, 2.0])


def test_np_array_copies_and_np_asarray_shares_as_for_ndarrays():
    t = npnorm.tensor([1.0, 2.0])
    assert np.asarray(t) is t.data
    for copy in (np.array(t), np.array(t, dtype=np.float64), np.array(t, dtype=np.float32), np.array(t, copy=True)):
        copy[0] = 99.0
    assert t.data[0] == 1.0
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="without a copy"):
        np.array(t, dtype=np.float32, copy=False)


def test_tensor_description():
    t = npnorm.tensor(np.zeros((2, 3, 4)), requires_grad=True)
    assert (t.shape, t.ndim, t.size, t.dtype, len(t)) == ((2, 3, 4), 3, 24, np.float64, 2)
    assert t.is_leaf and t.grad is None
    assert "requires_grad=True" in repr(t)
    assert "float32" in repr(npnorm.tensor([1.0], dtype=np.float32))


def test_index_with_a_tensor():
    x = npnorm.tensor([10.0, 20.0, 30.0], requires_grad=True)
    x[npnorm.tensor([2, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 2.0])
    with pytest.raises(IndexError, match="whole numbers"):
        x[npnorm.tensor([0.5])]
    with pytest.raises(IndexError, match=r"\(3,\)"):
        x[5]


@pytest.mark.parametrize("as_list", [False, True], ids=["array", "list"])
@pytest.mark.parametrize("in_tuple", [False, True], ids=["alone", "in-a-tuple"])
def test_an_index_changed_after_the_forward_does_not_move_the_gradient(as_list, in_tuple):
    x = npnorm.tensor(np.arange(8.0).reshape(2, 4), requires_grad=True)
    index = [0, 0] if as_list else np.array([0, 0])
    y = x[:, index] if in_tuple else x[index]
    index[0] = index[1] = 1  # the caller reuses its index before backward
    y.sum().backward()
    expected = np.zeros((2, 4))
    if in_tuple:
        expected[:, 0] = 2.0
    else:
        expected[0] = 2.0
    np.testing.assert_array_equal(x.grad, expected)


# --------------------------------------------------------------------------------------------- seeding


def test_manual_seed_makes_dropout_reproducible():
    x = npnorm.tensor(np.ones((50, 40)))
    npnorm.manual_seed(123)
    first = F.dropout(x, 0.5).data.copy()
    second = F.dropout(x, 0.5).data.copy()  # the generator moves on: a new mask
    npnorm.manual_seed(123)
    again = F.dropout(x, 0.5).data
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    npnorm.manual_seed(124)
    assert not np.array_equal(first, F.dropout(x, 0.5).data)


@pytest.mark.parametrize("seed", [-1, 1.5, "1", True])
def test_manual_seed_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match="manual_seed"):
        npnorm.manual_seed(seed)


def test_dropout_rejects_bad_p():
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="dropout"):
            F.dropout(npnorm.tensor([1.0]), p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_with_p_one_drops_everything_as_pytorch_does(dtype):
    x = npnorm.tensor(np.array([np.nan, 1.0, -2.0], dtype), requires_grad=True)
    y = F.dropout(x, 1.0)
    np.testing.assert_array_equal(y.data, [np.nan, 0.0, 0.0])  # x·0: NaN stays NaN
    assert y.dtype == dtype
    y.backward(np.ones(3, dtype))
    np.testing.assert_array_equal(x.grad, np.zeros(3))
    assert F.dropout(x, 1.0, training=False) is x
    np.testing.assert_array_equal(npnorm.nn.Dropout(1.0)(x).data, [np.nan, 0.0, 0.0])


def test_repeats_an_array_finds_one_array_handed_to_two_inputs():
    """The engine may add into a fresh gradient in place only if no other input received the same array."""
    from npnorm.autograd import _repeats_an_array

    a, b, c = np.zeros(2), np.zeros(2), np.zeros(2)
    cases = [
        ((a, b), False), ((a, a), True), ((None, None), False),
        ((a, b, c), False), ((a, a, c), True), ((a, b, a), True), ((a, b, b), True),
        ((None, None, None), False), ((None, b, b), True), ((a, None, None), False), ((None, b, None), False),
        ((a, b, c, a), True), ((a, b, c, None), False),
    ]  # fmt: skip
    for grads, expected in cases:
        assert _repeats_an_array(grads) is expected, grads


# ---------------------------------------------------------------------------------- custom Functions


class _Scale(Function):
    """out = a * w, with w given by keyword: which must not be a Tensor (it would get no gradient)."""

    @staticmethod
    def forward(ctx, a, *, w):
        return a * w

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_a_tensor_by_keyword_is_refused_not_silently_left_without_gradient():
    x, w = npnorm.tensor([1.0, 2.0], requires_grad=True), npnorm.tensor([3.0, 4.0], requires_grad=True)
    with pytest.raises(TypeError, match="_Scale.apply: the Tensor w= must be passed positionally"):
        _Scale.apply(x, w=w)
    np.testing.assert_array_equal(_Scale.apply(x, w=2.0).data, [2.0, 4.0])  # other options are fine


class _Round(Function):
    @staticmethod
    def forward(ctx, a):
        return np.round(a).astype(np.int64)

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_a_non_float_forward_output_cannot_be_differentiated():
    x = npnorm.tensor([1.4, 2.6], requires_grad=True)
    for y in (_Round.apply(x), _Round.apply(x) * 0.5):  # the grad (or the 0.5) would be truncated to int
        with pytest.raises(TypeError, match="_Round.forward returned an array of dtype int64, which has no gradient"):
            y.backward(np.ones(2))
    assert x.grad is None
    leaf = npnorm.tensor([1.0, 2.0], requires_grad=True)
    leaf.data = np.array([1, 2])  # int data assigned to a leaf
    with pytest.raises(TypeError, match="a leaf holds an array of dtype int64"):
        (leaf * 2.0).sum().backward()


class _BoolGrad(Function):
    """y = a, with backward returning its "ones" as a bool array (or as `kind` asks)."""

    kind = "bool"

    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, grad):
        kind = _BoolGrad.kind
        if kind == "bool":
            return grad > -1
        if kind == "int8":
            return np.full(grad.shape, 100, np.int8)
        return 1.0  # a Python float


@pytest.mark.parametrize(("kind", "expected"), [("bool", 2.0), ("int8", 200.0)])
def test_non_float_gradients_are_cast_before_they_are_added(kind, expected, monkeypatch):
    """Two bool gradients would OR to 1 and two int8 100s wrap round to -56 if summed as they are."""
    monkeypatch.setattr(_BoolGrad, "kind", kind)
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    h = x * 1.0
    (_BoolGrad.apply(h) + _BoolGrad.apply(h)).sum().backward()
    np.testing.assert_array_equal(x.grad, [expected, expected])
    assert x.grad.dtype == np.float64


def test_a_gradient_that_is_not_an_array_names_the_function(monkeypatch):
    monkeypatch.setattr(_BoolGrad, "kind", "float")
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="_BoolGrad.backward returned a float as a gradient"):
        _BoolGrad.apply(x).sum().backward()


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (np.zeros((2, 3)), ValueError, r"shape \(3,\) and dtype float64, got shape \(2, 3\)"),
        (np.zeros(3, np.float32), ValueError, "got shape \\(3,\\) and dtype float32"),
        (npnorm.tensor([0.0, 0.0, 0.0]), TypeError, "a Tensor's array is its .data"),
        ([0.0, 0.0, 0.0], TypeError, "grad must be a NumPy array or None, got list"),
    ],
)
def test_grad_assignments_are_checked_as_in_pytorch(value, error, match):
    x = npnorm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(error, match=match):
        x.grad = value
    assert x.grad is None
    x.grad = np.ones(3)  # the right shape and dtype
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0, 3.0])
    x.grad = None
    assert x.grad is None


def test_requires_grad_on_a_non_leaf_may_only_confirm_what_it_is():
    x = npnorm.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    assert y.requires_grad_() is y and y.requires_grad_(True) is y  # already so: a no-op, as in PyTorch
    with pytest.raises(RuntimeError, match="only leaf tensors can change requires_grad"):
        y.requires_grad_(False)
    assert x.requires_grad_(False) is x and not x.requires_grad
