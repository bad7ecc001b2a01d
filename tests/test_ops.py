"""The op table: one row per Tensor operator, method and functional op.

Every row meets two oracles:
  * NumPy/SciPy computes the forward value (the op must compute the right thing, not only a consistent
    gradient);
  * `npnorm.gradcheck` compares backward with float64 central differences (full Jacobian on the small
    shapes of `CASES`, the random-projection fast mode on the larger shapes of `LARGE_CASES`).
The same rows run again in float32 (dtype kept, values close to float64), and Hypothesis draws shapes for
the elementwise, binary, matmul and reduction ops.

Inputs are kept away from points where the op is not differentiable: relu at 0, ties of max, log and
sqrt of non-positive numbers, division by numbers near zero, powers of non-positive bases.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special, stats

import npnorm
import npnorm.functional as F
from npnorm import Tensor, ops

# ------------------------------------------------------------------------------------------ input domains


def draw(rng: np.random.Generator, shape: tuple, domain: str) -> np.ndarray:
    """Random float64 data of `shape` from a domain where the op under test is smooth."""
    if domain == "real":
        return rng.standard_normal(shape)
    if domain == "positive":  # log, sqrt, the base of a power
        return rng.uniform(0.5, 2.0, shape)
    if domain == "nonzero":  # relu, denominators: |x| >= 0.3, far from the kink or pole
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)
    if domain == "distinct":  # max: values at least 0.2 apart, so no tie and no tie within eps
        n = int(np.prod(shape, dtype=int))
        return (rng.permutation(n) * 0.25 + rng.uniform(0.0, 0.05, n) - 0.125 * n).reshape(shape)
    raise ValueError(domain)


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Tensor]  # the op under test, on Tensors
    ref: Callable[..., np.ndarray] | None  # the oracle, on ndarrays (None: a dedicated test checks values)
    shapes: tuple  # one shape per differentiable input
    domains: tuple = ()  # one domain per input; default "real"
    f32_result: str = "float32"  # output dtype for float32 inputs ("float64" where a float64 array joins in)

    def __str__(self) -> str:
        return self.name

    def arrays(self, rng: np.random.Generator) -> list[np.ndarray]:
        domains = self.domains or ("real",) * len(self.shapes)
        return [draw(rng, s, d) for s, d in zip(self.shapes, domains, strict=True)]


def case(name, fn, ref, *shapes, domains=(), f32_result="float32") -> Case:
    return Case(name, fn, ref, tuple(shapes), tuple(domains), f32_result)


# --------------------------------------------------------------------------------------- constants in rows
# float64 arrays and Python scalars that meet a Tensor; positive, so they may be a base or a denominator.
K14 = np.array([[0.7, 1.3, 1.9, 0.4]])  # (1, 4)
K_SCALAR = 1.7
TARGET_NC = np.array([1, 0, 4, 1])  # classes for logits (4, 5); class 1 twice, classes 2 and 3 never
TARGET_NCL = np.array([[0, 3, 3], [2, 1, 0]])  # classes for logits (2, 4, 3)


def sigmoid_ref(a):
    return 1.0 / (1.0 + np.exp(-a))


def cross_entropy_ref(logits, target, reduction):
    """-log softmax along the class axis 1, picked at the target (PyTorch's definition)."""
    logp = special.log_softmax(logits, axis=1)
    picked = np.take_along_axis(logp, np.expand_dims(target, 1), axis=1).squeeze(1)
    return {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction](-picked)


# ----------------------------------------------------------------------------------------------- the table

BINARY = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "pow": operator.pow,
}


def _binary_domains(op: str) -> tuple:
    # A power needs a positive base; a quotient a denominator away from zero.
    return {"pow": ("positive", "real"), "div": ("real", "nonzero")}.get(op, ("real", "real"))


def _binary_rows() -> list[Case]:
    rows = []
    pairs = [
        ((3, 4), (3, 4)),
        ((3, 1), (1, 4)),
        ((4,), (2, 3, 4)),
        ((2, 3, 4), (4,)),
        ((), (2, 3)),
        ((2, 1, 3), (4, 1)),
    ]
    for name, op in BINARY.items():
        for sa, sb in pairs:
            rows.append(case(f"{name}-{sa}x{sb}", op, op, sa, sb, domains=_binary_domains(name)))
    # One operand a constant: Tensor op ndarray, ndarray op Tensor, Tensor op scalar, scalar op Tensor.
    for name, op in BINARY.items():
        left_domain = "positive" if name == "pow" else "real"  # x is the base
        right_domain = "nonzero" if name == "div" else "real"  # x is the denominator
        rows += [
            case(
                f"{name}-tensor-ndarray",
                lambda x, op=op: op(x, K14),
                lambda x, op=op: op(x, K14),
                (3, 1),
                domains=(left_domain,),
                f32_result="float64",
            ),
            case(
                f"{name}-ndarray-tensor",
                lambda x, op=op: op(K14, x),
                lambda x, op=op: op(K14, x),
                (3, 1),
                domains=(right_domain,),
                f32_result="float64",
            ),
            case(
                f"{name}-tensor-scalar",
                lambda x, op=op: op(x, K_SCALAR),
                lambda x, op=op: op(x, K_SCALAR),
                (3, 4),
                domains=(left_domain,),
            ),
            case(
                f"{name}-scalar-tensor",
                lambda x, op=op: op(K_SCALAR, x),
                lambda x, op=op: op(K_SCALAR, x),
                (3, 4),
                domains=(right_domain,),
            ),
        ]
    # More constant exponents: integer, negative, fractional, zero (its gradient is exactly 0).
    for p, domain in [(2, "real"), (3, "real"), (-1.5, "positive"), (0.5, "positive"), (0, "real")]:
        rows.append(
            case(f"pow-scalar-exponent{p}", lambda x, p=p: x**p, lambda x, p=p: x**p, (3, 4), domains=(domain,))
        )
    rows.append(case("neg", operator.neg, operator.neg, (3, 4)))
    return rows


def _matmul_rows() -> list[Case]:
    shape_pairs = [
        ((3, 4), (4, 2)),  # 2-D
        ((4,), (4, 2)),  # 1-D x 2-D
        ((3, 4), (4,)),  # 2-D x 1-D
        ((4,), (4,)),  # 1-D x 1-D: a 0-d result
        ((2, 3, 4), (2, 4, 5)),  # batched
        ((2, 1, 3, 4), (5, 4, 2)),  # broadcast batch dims
        ((3, 4), (2, 4, 5)),  # a matrix against a batch
        ((4,), (2, 4, 3)),  # 1-D against a batch
        ((2, 3, 4), (4,)),  # a batch against 1-D
    ]
    rows = [case(f"matmul-{sa}@{sb}", operator.matmul, np.matmul, sa, sb) for sa, sb in shape_pairs]
    k42 = np.linspace(-1.0, 1.0, 8).reshape(4, 2)
    k34 = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    rows += [
        case("matmul-tensor@ndarray", lambda x: x @ k42, lambda x: x @ k42, (3, 4), f32_result="float64"),
        case("matmul-ndarray@tensor", lambda x: k34 @ x, lambda x: k34 @ x, (4, 2), f32_result="float64"),
    ]
    return rows


AXES = [None, 0, 1, -1, (0, 2), (-1, 0), (0, 1, 2)]


def _reduction_rows() -> list[Case]:
    rows = []
    for axis in AXES:
        for keepdims in (False, True):
            tag = f"axis{axis}-keepdims{keepdims}".replace(" ", "")
            kw = {"axis": axis, "keepdims": keepdims}
            rows += [
                case(f"sum-{tag}", lambda x, kw=kw: x.sum(**kw), lambda x, kw=kw: np.sum(x, **kw), (2, 3, 4)),
                case(f"mean-{tag}", lambda x, kw=kw: x.mean(**kw), lambda x, kw=kw: np.mean(x, **kw), (2, 3, 4)),
                case(
                    f"max-{tag}",
                    lambda x, kw=kw: x.max(**kw),
                    lambda x, kw=kw: np.max(x, **kw),
                    (2, 3, 4),
                    domains=("distinct",),
                ),
            ]
            for ddof in (0, 1):
                rows.append(
                    case(
                        f"var-ddof{ddof}-{tag}",
                        lambda x, kw=kw, d=ddof: x.var(ddof=d, **kw),
                        lambda x, kw=kw, d=ddof: np.var(x, ddof=d, **kw),
                        (2, 3, 4),
                    )
                )
    return rows


def _elementwise_rows() -> list[Case]:
    return [
        case("exp", lambda x: x.exp(), np.exp, (3, 4)),
        case("log", lambda x: x.log(), np.log, (3, 4), domains=("positive",)),
        case("sqrt", lambda x: x.sqrt(), np.sqrt, (3, 4), domains=("positive",)),
        case("tanh", lambda x: x.tanh(), np.tanh, (3, 4)),
        case("sigmoid", lambda x: x.sigmoid(), sigmoid_ref, (3, 4)),
        case("relu", lambda x: x.relu(), lambda a: np.where(a > 0, a, 0.0), (3, 4), domains=("nonzero",)),
    ]


def _shape_rows() -> list[Case]:
    return [
        case("reshape-tuple", lambda x: x.reshape((4, 6)), lambda a: a.reshape(4, 6), (2, 3, 4)),
        case("reshape-varargs", lambda x: x.reshape(6, 4), lambda a: a.reshape(6, 4), (2, 3, 4)),
        case("reshape-infer", lambda x: x.reshape(3, -1), lambda a: a.reshape(3, -1), (2, 3, 4)),
        case("reshape-flat", lambda x: x.reshape(-1), lambda a: a.reshape(-1), (2, 3, 4)),
        case("transpose-reverse", lambda x: x.transpose(), lambda a: a.transpose(), (2, 3, 4)),
        case("transpose-perm", lambda x: x.transpose(2, 0, 1), lambda a: a.transpose(2, 0, 1), (2, 3, 4)),
        case("transpose-tuple", lambda x: x.transpose((1, 0, 2)), lambda a: a.transpose(1, 0, 2), (2, 3, 4)),
        case("transpose-negative", lambda x: x.transpose(-1, 0, -2), lambda a: a.transpose(-1, 0, -2), (2, 3, 4)),
        case("T-2d", lambda x: x.T, lambda a: a.T, (3, 4)),
        case("T-3d", lambda x: x.T, lambda a: a.T, (2, 3, 4)),
    ]


INDICES = {
    "int": 1,
    "negative-int": -1,
    "int-pair": (1, 3),  # a 0-d result
    "slice": slice(1, 3),
    "negative-step": slice(None, None, -1),
    "slices-2d": (slice(None, None, -2), slice(1, None)),
    "column": (slice(None), 2),
    "ellipsis-newaxis": (Ellipsis, None, 2),
    "int-array": np.array([2, 0]),
    "repeated-int-array": np.array([0, 0, 3, 0]),  # gradients of the repeats must add up
    "list": [3, 1],
    "tuple-of-arrays": (np.array([0, 1, 1, 3]), np.array([2, 0, 0, 4])),  # (1, 0) twice
    "slice-and-repeated-array": (slice(None), np.array([4, 4, 1])),
    "2d-int-array": np.array([[0, 2], [2, 2]]),
}


def _getitem_rows() -> list[Case]:
    return [
        case(f"getitem-{name}", lambda x, i=index: x[i], lambda a, i=index: a[i], (4, 5))
        for name, index in INDICES.items()
    ]


def _functional_rows() -> list[Case]:
    rows = [
        case("linear-bias", F.linear, lambda x, w, b: x @ w.T + b, (3, 4), (5, 4), (5,)),
        case("linear-no-bias", F.linear, lambda x, w: x @ w.T, (3, 4), (5, 4)),
        case("linear-3d-input", F.linear, lambda x, w, b: x @ w.T + b, (2, 3, 4), (5, 4), (5,)),
        case("linear-1d-input", F.linear, lambda x, w, b: w @ x + b, (4,), (5, 4), (5,)),
        case("F.relu", F.relu, lambda a: np.maximum(a, 0.0), (3, 4), domains=("nonzero",)),
        case("F.tanh", F.tanh, np.tanh, (3, 4)),
        case("F.sigmoid", F.sigmoid, sigmoid_ref, (3, 4)),
        case("F.gelu-exact", F.gelu, lambda a: a * stats.norm.cdf(a), (3, 4)),
        case(
            "F.gelu-tanh",
            lambda x: F.gelu(x, approximate="tanh"),
            lambda a: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3))),
            (3, 4),
        ),
    ]
    for shape, axis in [((3, 4), -1), ((3, 4), 0), ((3, 4), 1), ((2, 3, 4), 1), ((2, 3, 4), -3), ((5,), 0)]:
        rows += [
            case(
                f"F.softmax-{shape}-axis{axis}",
                lambda x, ax=axis: F.softmax(x, axis=ax),
                lambda a, ax=axis: special.softmax(a, axis=ax),
                shape,
            ),
            case(
                f"F.log_softmax-{shape}-axis{axis}",
                lambda x, ax=axis: F.log_softmax(x, axis=ax),
                lambda a, ax=axis: special.log_softmax(a, axis=ax),
                shape,
            ),
        ]
    for reduction in ("mean", "sum", "none"):
        rows += [
            case(
                f"F.cross_entropy-NC-{reduction}",
                lambda x, r=reduction: F.cross_entropy(x, TARGET_NC, r),
                lambda a, r=reduction: cross_entropy_ref(a, TARGET_NC, r),
                (4, 5),
            ),
            case(
                f"F.cross_entropy-NCL-{reduction}",
                lambda x, r=reduction: F.cross_entropy(x, TARGET_NCL, r),
                lambda a, r=reduction: cross_entropy_ref(a, TARGET_NCL, r),
                (2, 4, 3),
            ),
            case(
                f"F.mse_loss-{reduction}",
                lambda x, y, r=reduction: F.mse_loss(x, y, r),
                lambda a, b, r=reduction: {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[r]((a - b) ** 2),
                (3, 4),
                (3, 4),
            ),
        ]
    # The mask must be the same in every evaluation: a fresh generator with the same seed each call.
    rows.append(case("F.dropout", lambda x: F.dropout(x, 0.4, True, generator=np.random.default_rng(0)), None, (4, 5)))
    return rows


CASES = _binary_rows() + _matmul_rows() + _reduction_rows() + _elementwise_rows() + _shape_rows()
CASES += _getitem_rows() + _functional_rows()

LARGE_CASES = [
    case("L-matmul", operator.matmul, np.matmul, (16, 32), (32, 8)),
    case("L-matmul-batched", operator.matmul, np.matmul, (3, 1, 8, 16), (4, 16, 8)),
    case("L-linear", F.linear, lambda x, w, b: x @ w.T + b, (2, 16, 32), (8, 32), (8,)),
    case("L-mul-broadcast", operator.mul, operator.mul, (16, 1), (1, 32)),
    case("L-div-broadcast", operator.truediv, operator.truediv, (32,), (16, 32), domains=("real", "nonzero")),
    case("L-sum-axis0", lambda x: x.sum(axis=0), lambda a: a.sum(axis=0), (16, 32)),
    case("L-var-ddof1", lambda x: x.var(axis=-1, ddof=1), lambda a: a.var(axis=-1, ddof=1), (16, 32)),
    case("L-max-axis1", lambda x: x.max(axis=1), lambda a: a.max(axis=1), (16, 32), domains=("distinct",)),
    case("L-tanh", lambda x: x.tanh(), np.tanh, (16, 32)),
    case("L-gelu", F.gelu, lambda a: a * stats.norm.cdf(a), (16, 32)),
    case("L-softmax", F.softmax, lambda a: special.softmax(a, axis=-1), (16, 32)),
    case("L-log_softmax", lambda x: F.log_softmax(x, axis=0), lambda a: special.log_softmax(a, axis=0), (16, 32)),
    case(
        "L-cross_entropy",
        lambda x: F.cross_entropy(x, np.arange(32) % 10),
        lambda a: cross_entropy_ref(a, np.arange(32) % 10, "mean"),
        (32, 10),
    ),
    case("L-getitem-repeated", lambda x: x[np.arange(40) % 7], lambda a: a[np.arange(40) % 7], (32, 16)),
    case("L-dropout", lambda x: F.dropout(x, 0.5, True, generator=np.random.default_rng(1)), None, (16, 32)),
]


def _leaves(arrays, dtype=np.float64) -> list[Tensor]:
    return [npnorm.tensor(a, requires_grad=True, dtype=dtype) for a in arrays]


def assert_matches_reference(c: Case, rng: np.random.Generator) -> None:
    arrays = c.arrays(rng)
    out = c.fn(*_leaves(arrays))
    assert isinstance(out, Tensor)
    expected = np.asarray(c.ref(*arrays))
    assert out.shape == expected.shape
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------- the tests


def test_table_covers_every_op():
    names = {c.name.split("-")[0] for c in CASES}
    for op in [
        "add",
        "sub",
        "mul",
        "div",
        "pow",
        "neg",
        "matmul",
        "sum",
        "mean",
        "max",
        "var",
        "exp",
        "log",
        "sqrt",
        "tanh",
        "sigmoid",
        "relu",
        "reshape",
        "transpose",
        "T",
        "getitem",
        "linear",
        "F.relu",
        "F.tanh",
        "F.sigmoid",
        "F.gelu",
        "F.softmax",
        "F.log_softmax",
        "F.cross_entropy",
        "F.mse_loss",
        "F.dropout",
    ]:
        assert op in names, op
    assert len({c.name for c in CASES + LARGE_CASES}) == len(CASES) + len(LARGE_CASES), "row names must be unique"


@pytest.mark.parametrize("c", [c for c in CASES + LARGE_CASES if c.ref is not None], ids=str)
def test_forward_matches_numpy(c, rng):
    assert_matches_reference(c, rng)


@pytest.mark.parametrize("c", CASES, ids=str)
def test_gradcheck(c, rng):
    assert npnorm.gradcheck(c.fn, tuple(_leaves(c.arrays(rng))))


@pytest.mark.parametrize("c", LARGE_CASES, ids=str)
def test_gradcheck_fast(c, rng):
    assert npnorm.gradcheck(c.fn, tuple(_leaves(c.arrays(rng))), fast_mode=True)


@pytest.mark.parametrize("c", CASES, ids=str)
def test_float32_keeps_dtype_and_agrees_with_float64(c, rng):
    arrays = c.arrays(rng)
    x64, x32 = _leaves(arrays), _leaves(arrays, np.float32)
    out64, out32 = c.fn(*x64), c.fn(*x32)
    assert out32.dtype == np.dtype(c.f32_result)
    np.testing.assert_allclose(out32.data, out64.data, rtol=1e-4, atol=1e-5)
    upstream = rng.standard_normal(out64.shape)
    out64.backward(upstream)
    out32.backward(upstream.astype(out32.dtype))
    for a, b in zip(x32, x64, strict=True):
        assert a.grad.dtype == np.float32
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------ values with a known answer


def test_repeated_indices_add_their_gradients():
    x = npnorm.tensor(np.arange(5.0), requires_grad=True)
    x[np.array([0, 0, 3, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 0.0, 1.0, 0.0])

    m = npnorm.tensor(np.zeros((3, 4)), requires_grad=True)
    m[np.array([1, 1, 2]), np.array([0, 0, 3])].backward(np.array([1.0, 10.0, 100.0]))
    expected = np.zeros((3, 4))
    expected[1, 0], expected[2, 3] = 11.0, 100.0
    np.testing.assert_array_equal(m.grad, expected)


def test_max_shares_the_gradient_among_ties():
    x = npnorm.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]], requires_grad=True)
    x.max(axis=1).backward(np.array([1.0, 2.0]))
    np.testing.assert_allclose(x.grad, [[0.0, 0.5, 0.5, 0.0], [0.5, 0.5, 0.5, 0.5]])


def test_relu_gradient_at_zero_is_zero():
    # Not differentiable at 0; like PyTorch, the gradient there is 0 (the table keeps away from 0).
    x = npnorm.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    x.relu().sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 1.0])


def test_dropout_zeros_or_scales_every_element(rng):
    x = npnorm.tensor(rng.uniform(1.0, 2.0, (200, 50)))
    p = 0.3
    y = F.dropout(x, p, True, generator=np.random.default_rng(7)).data
    dropped = y == 0
    np.testing.assert_allclose(y[~dropped], x.data[~dropped] / (1 - p), rtol=1e-15)
    assert abs(dropped.mean() - p) < 0.02  # 10,000 Bernoulli(0.3) draws: the std of the mean is 0.0046
    # Same generator state, same mask; eval mode and p = 0 leave the input alone.
    np.testing.assert_array_equal(F.dropout(x, p, True, generator=np.random.default_rng(7)).data, y)
    assert F.dropout(x, p, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x


def test_sigmoid_and_softmax_do_not_overflow():
    x = npnorm.tensor([-1000.0, 0.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        np.testing.assert_array_equal(x.sigmoid().data, [0.0, 0.5, 1.0])
        np.testing.assert_allclose(F.softmax(x).data, [0.0, 0.0, 1.0])
        np.testing.assert_allclose(F.log_softmax(x).data, [-2000.0, -1000.0, 0.0])
        assert np.isclose(F.cross_entropy(npnorm.tensor([[1e4, -1e4]]), [1]).item(), 2e4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_accurate_in_relative_terms_over_the_whole_range(dtype):
    """Compared with scipy's expit, element by element: a few ulp, also where σ is tiny; limits exact."""
    from scipy import special

    a = np.concatenate([np.linspace(-80, 80, 2001), [-1e4, 1e4, np.inf, -np.inf]]).astype(dtype)
    with np.errstate(all="raise"):
        out = npnorm.tensor(a).sigmoid().data
    expected = special.expit(a.astype(np.float64))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=4 * np.finfo(dtype).eps, atol=0)
    assert np.isnan(npnorm.tensor(np.array([np.nan], dtype)).sigmoid().data).all()


@pytest.mark.parametrize("x_shape", [(3, 4), (2, 3, 4), (4,)], ids=["2-d", "3-d", "1-d"])
def test_linear_with_a_transposed_weight_copy(x_shape, rng):
    # What the recurrent layers pass (nn/rnn.py): Wᵀ copied into rows, used by the forward only.
    from npnorm import ops

    x, w, b = (npnorm.tensor(rng.standard_normal(s), requires_grad=True) for s in (x_shape, (5, 4), (5,)))
    plain = ops.Linear.apply(x, w, b)
    plain.backward(np.ones(plain.shape))
    grads = [t.grad for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    copied = ops.Linear.apply(x, w, b, weight_t=np.ascontiguousarray(w.data.T))
    copied.backward(np.ones(copied.shape))
    np.testing.assert_allclose(copied.data, plain.data, rtol=1e-14, atol=1e-14)
    for t, expected in zip((x, w, b), grads):
        np.testing.assert_array_equal(t.grad, expected)  # the backward never reads the copy

    def fn(x, w, b):  # the copy made from the perturbed weight, as a recurrent layer makes it per call
        return ops.Linear.apply(x, w, b, weight_t=np.ascontiguousarray(w.data.T))

    assert npnorm.gradcheck(fn, (x, w, b))


def test_linear_rejects_a_transposed_copy_of_the_wrong_shape(rng):
    from npnorm import ops

    x, w = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    with pytest.raises(ValueError, match=r"weight_t has shape \(5, 4\), expected \(4, 5\)"):
        ops.Linear.apply(npnorm.tensor(x), npnorm.tensor(w), None, weight_t=w)


def test_cross_entropy_single_sample():
    logits = np.array([0.5, -1.0, 2.0])
    expected = -special.log_softmax(logits)[2]
    assert np.isclose(F.cross_entropy(npnorm.tensor(logits), 2).item(), expected)
    assert F.cross_entropy(npnorm.tensor(logits), 2, reduction="none").shape == ()
    # one sample has one 0-d class target, as in PyTorch: anything else names the shapes
    for target in (np.array([2]), np.array([2, 1]), np.array([0.0, 0.0, 1.0])):
        with pytest.raises(ValueError, match=r"cross_entropy: logits of shape \(3,\).*0-d target"):
            F.cross_entropy(logits, target)
    with pytest.raises(ValueError, match=r"with C > 0, got \(0,\)"):
        F.cross_entropy(np.zeros(0), 0)


def test_reduction_over_a_0d_tensor():
    x = npnorm.tensor(2.5, requires_grad=True)
    for y in (x.sum(), x.mean(), x.max(), x.sum(axis=0), x.var(axis=None)):
        assert y.shape == ()
    x.sum(axis=0).backward()
    assert x.grad == 1.0


# ---------------------------------------------------------------------------------------------- dtype rules


FLOAT32_EXPRESSIONS = {
    "x*2.0": lambda x: x * 2.0,
    "2.0*x": lambda x: 2.0 * x,
    "2.0-x": lambda x: 2.0 - x,
    "x-2": lambda x: x - 2,
    "x+1": lambda x: x + 1,
    "1.5+x": lambda x: 1.5 + x,
    "x/3": lambda x: x / 3,
    "3.0/x": lambda x: 3.0 / x,
    "x**2": lambda x: x**2,
    "x**0.5": lambda x: x**0.5,
    "2.0**x": lambda x: 2.0**x,
    "x+np.float32": lambda x: x + np.float32(1.0),
    "-x": lambda x: -x,
    "x@x.T": lambda x: x @ x.T,
    "var": lambda x: x.var(axis=0),
    "mean": lambda x: x.mean(),
    "gelu": lambda x: F.gelu(x),
    "gelu-tanh": lambda x: F.gelu(x, approximate="tanh"),
    "softmax": lambda x: F.softmax(x),
    "cross_entropy": lambda x: F.cross_entropy(x, [0, 1]),
    "mse_loss": lambda x: F.mse_loss(x, x.detach() * 0.5),
    "dropout": lambda x: F.dropout(x, 0.5, True, generator=np.random.default_rng(0)),
}


@pytest.mark.parametrize("expr", FLOAT32_EXPRESSIONS.values(), ids=FLOAT32_EXPRESSIONS.keys())
def test_python_scalars_never_widen_float32(expr):
    x = npnorm.tensor(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), requires_grad=True)
    y = expr(x)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, dtype=np.float32))
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("array_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tensor_dtype", [np.float32, np.float64])
def test_arrays_follow_numpy_promotion(tensor_dtype, array_dtype):
    t = npnorm.tensor(np.ones(3, dtype=tensor_dtype))
    a = np.ones(3, dtype=array_dtype)
    expected = (np.ones(3, dtype=tensor_dtype) + a).dtype
    for y in (t + a, a + t, t * a, a - t, a / t, t @ a, a @ t):
        assert isinstance(y, Tensor)
        assert y.dtype == expected


@pytest.mark.parametrize("array_dtype", [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("tensor_dtype", [np.float32, np.float64])
def test_bool_and_integer_arrays_follow_numpy_promotion(tensor_dtype, array_dtype):
    """float32 with a mask or a small-integer array stays float32 (NumPy's rule); with int32/int64, float64."""
    x = npnorm.tensor(np.ones(3, dtype=tensor_dtype), requires_grad=True)
    a = np.array([1, 0, 1], dtype=array_dtype)
    expected = (np.ones(3, dtype=tensor_dtype) * a).dtype
    for y in (x * a, a * x, x + a, a - x, x / np.ones(3, array_dtype), a @ x):
        assert isinstance(y, Tensor) and y.dtype == expected
    (x * a).sum().backward()
    assert x.grad.dtype == tensor_dtype
    np.testing.assert_array_equal(x.grad, [1, 0, 1])


@pytest.mark.parametrize("data", [3, [1, 2, 3], [[1.0, 2.0]], np.arange(4), np.array([True, False]), 2.5])
def test_python_numbers_lists_and_ints_become_float64(data):
    assert npnorm.tensor(data).dtype == np.float64
    assert Tensor(data).dtype == np.float64
    np.testing.assert_array_equal(npnorm.tensor(data).data, np.asarray(data, dtype=np.float64))


def test_float_arrays_keep_their_dtype():
    assert npnorm.tensor(np.ones(2, dtype=np.float32)).dtype == np.float32
    assert npnorm.tensor(np.ones(2, dtype=np.float64)).dtype == np.float64
    assert npnorm.tensor(np.ones(2, dtype=np.float16)).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", "float64"])
def test_dtype_argument_is_honoured(dtype):
    for make in (npnorm.tensor, Tensor):
        for data in ([1, 2], np.ones(2, dtype=np.float32), np.ones(2), 7):
            assert make(data, dtype=dtype).dtype == np.dtype(dtype)


@pytest.mark.parametrize(
    "data", [np.array([1 + 2j]), [1j], np.array([1, "a"], dtype=object), "abc", ["a", "b"], [[1.0], [1.0, 2.0]], None]
)
def test_non_real_data_raises_type_error(data):
    with pytest.raises(TypeError):
        npnorm.tensor(data)
    with pytest.raises(TypeError):
        Tensor(data)


def test_unsupported_dtype_argument_raises_type_error():
    with pytest.raises(TypeError, match="float32 or float64"):
        npnorm.tensor([1.0], dtype=np.int64)


# ------------------------------------------------------------------------------------ Hypothesis: any shape

UNARY = {
    "exp": (lambda x: x.exp(), np.exp, "real"),
    "log": (lambda x: x.log(), np.log, "positive"),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, "positive"),
    "tanh": (lambda x: x.tanh(), np.tanh, "real"),
    "sigmoid": (lambda x: x.sigmoid(), sigmoid_ref, "real"),
    "relu": (lambda x: x.relu(), lambda a: np.maximum(a, 0.0), "nonzero"),
    "neg": (operator.neg, operator.neg, "real"),
    "pow3": (lambda x: x**3, lambda a: a**3, "real"),
    "gelu": (F.gelu, lambda a: a * stats.norm.cdf(a), "real"),
    "transpose": (lambda x: x.transpose(), np.transpose, "real"),
    "reshape-flat": (lambda x: x.reshape(-1), np.ravel, "real"),
}

small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
seeds = st.integers(0, 2**32 - 1)


def check_both_oracles(fn, ref, arrays, fast_mode=False):
    leaves = _leaves(arrays)
    out = fn(*leaves)
    expected = np.asarray(ref(*arrays))
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)
    assert npnorm.gradcheck(fn, tuple(leaves), fast_mode=fast_mode)


@given(op=st.sampled_from(sorted(UNARY)), shape=small_shapes, seed=seeds, fast_mode=st.booleans())
def test_unary_any_shape(op, shape, seed, fast_mode):
    fn, ref, domain = UNARY[op]
    check_both_oracles(fn, ref, [draw(np.random.default_rng(seed), shape, domain)], fast_mode)


@given(
    op=st.sampled_from(sorted(BINARY)),
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=4),
    seed=seeds,
    fast_mode=st.booleans(),
)
def test_binary_any_broadcast(op, shapes, seed, fast_mode):
    rng = np.random.default_rng(seed)
    arrays = [draw(rng, s, d) for s, d in zip(shapes.input_shapes, _binary_domains(op), strict=True)]
    check_both_oracles(BINARY[op], BINARY[op], arrays, fast_mode)


@given(
    shapes=hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=2, max_side=3),
    seed=seeds,
    fast_mode=st.booleans(),
)
def test_matmul_any_shape(shapes, seed, fast_mode):
    rng = np.random.default_rng(seed)
    check_both_oracles(operator.matmul, np.matmul, [rng.standard_normal(s) for s in shapes.input_shapes], fast_mode)


@st.composite
def shape_and_axis(draw_):
    shape = draw_(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    ndim = len(shape)
    axis = draw_(
        st.one_of(
            st.none(),
            st.integers(-ndim, ndim - 1),
            hnp.valid_tuple_axes(ndim, min_size=1),
        )
    )
    return shape, axis


@given(
    op=st.sampled_from(["sum", "mean", "max", "var0", "var1"]),
    shape_axis=shape_and_axis(),
    keepdims=st.booleans(),
    seed=seeds,
    fast_mode=st.booleans(),
)
def test_reduction_any_shape_and_axis(op, shape_axis, keepdims, seed, fast_mode):
    shape, axis = shape_axis
    rng = np.random.default_rng(seed)
    kw = {"axis": axis, "keepdims": keepdims}
    if op.startswith("var"):
        ddof = int(op[-1])
        reduced = np.prod([shape[a] for a in (range(len(shape)) if axis is None else np.atleast_1d(axis))])
        if reduced - ddof <= 0:
            ddof = 0  # one element and ddof=1 has no degrees of freedom (a ValueError, tested in test_engine)
        fn, ref, data = (lambda x: x.var(ddof=ddof, **kw)), (lambda a: np.var(a, ddof=ddof, **kw)), "real"
    else:
        fn, ref = (lambda x: getattr(x, op)(**kw)), (lambda a: getattr(np, op)(a, **kw))
        data = "distinct" if op == "max" else "real"
    check_both_oracles(fn, ref, [draw(rng, shape, data)], fast_mode)


def test_softmax_over_an_empty_axis_is_empty():
    """As in PyTorch (an empty axis has no maximum to shift by, which NumPy's max would refuse)."""
    for shape, axis in [((4, 0), -1), ((0,), 0), ((2, 0, 3), 1)]:
        x = npnorm.tensor(np.zeros(shape), requires_grad=True)
        for fn in (F.softmax, F.log_softmax):
            y = fn(x, axis=axis)
            assert y.shape == shape
            y.backward(np.zeros(shape))
            assert x.grad.shape == shape


@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
    axis_seed=st.integers(0, 100),
    seed=seeds,
)
def test_softmax_any_shape(shape, axis_seed, seed):
    axis = axis_seed % len(shape) - len(shape) * (axis_seed % 2)  # negative and non-negative axes
    arrays = [np.random.default_rng(seed).standard_normal(shape)]
    check_both_oracles(lambda x: F.softmax(x, axis=axis), lambda a: special.softmax(a, axis=axis), arrays)
    check_both_oracles(lambda x: F.log_softmax(x, axis=axis), lambda a: special.log_softmax(a, axis=axis), arrays)


def test_a_zero_exponent_has_a_zero_base_gradient_even_at_a_zero_base():
    """d(a^b)/da = b·a^(b-1) is 0 where b = 0, also at a = 0 (where 0·0^-1 would be NaN), as for a scalar exponent."""
    x = npnorm.tensor([0.0, 2.0, 0.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no divide-by-zero warning on the way
        (x ** np.array([0.0, 1.0, 0.0])).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 0.0])
    y = npnorm.tensor([0.0, 2.0, 0.0], requires_grad=True)
    (y**0).sum().backward()
    np.testing.assert_array_equal(y.grad, [0.0, 0.0, 0.0])  # the scalar-exponent path agrees


def test_relu_passes_nothing_back_where_it_is_zero_even_an_infinite_gradient():
    """log(relu(x)) at x <= 0: the upstream gradient there is inf, and relu's 0 must win (not 0·inf = NaN)."""
    x = npnorm.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf, then inf·0 on the way back
        x.relu().log().sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.5])
    y = npnorm.tensor([np.nan, 1.0], requires_grad=True)
    y.relu().backward(np.array([3.0, 4.0]))
    np.testing.assert_array_equal(y.grad, [3.0, 4.0])  # a NaN input passes the gradient through, as PyTorch
    z = npnorm.tensor(np.array([-1.0, 2.0], np.float32), requires_grad=True)
    z.relu().sum().backward()
    assert z.grad.dtype == np.float32


@pytest.mark.parametrize(("x_shape", "w_shape"), [((2, 0), (3, 0)), ((2, 4), (0, 4)), ((5, 2, 0), (3, 0))])
def test_linear_with_no_input_or_no_output_features_has_gradients(x_shape, w_shape):
    x = npnorm.tensor(np.ones(x_shape), requires_grad=True)
    w = npnorm.tensor(np.ones(w_shape), requires_grad=True)
    b = npnorm.tensor(np.ones(w_shape[0]), requires_grad=True)
    y = F.linear(x, w, b)
    assert y.shape == (*x_shape[:-1], w_shape[0])
    y.sum().backward()
    assert x.grad.shape == x_shape and w.grad.shape == w_shape
    np.testing.assert_array_equal(x.grad, 0.0)  # no output feature depends on x, or x has no features
    np.testing.assert_array_equal(b.grad, np.full(w_shape[0], float(np.prod(x_shape[:-1]))))


def test_softmax_of_a_0d_tensor_is_one_along_axis_0_or_minus_1():
    x = npnorm.tensor(2.0, requires_grad=True)
    for axis in (0, -1):
        assert F.softmax(x, axis=axis).item() == 1.0 and F.log_softmax(x, axis=axis).item() == 0.0
    with pytest.raises(ValueError, match="axis 1 is out of range"):
        F.softmax(x, axis=1)
    with pytest.raises(TypeError, match="axis must be an integer"):
        F.softmax(npnorm.tensor([1.0, 2.0]), axis=True)


def test_dropout_takes_a_generator_not_a_seed():
    with pytest.raises(TypeError, match="generator must be a numpy.random.Generator"):
        F.dropout(npnorm.tensor(np.ones(4)), 0.5, generator=3)


# ------------------------------------------------------------------ float32 sums over many terms (ops.WIDE_SUM_FROM)

LONG = 200_000  # rows: NumPy's float32 sum over axis 0 adds them one after another (error ~1e-3 here)


def _float32_columns(rng) -> np.ndarray:
    return (0.1 + rng.random((LONG, 3))).astype(np.float32)


def _assert_float32_and_close(result: np.ndarray, exact: np.ndarray) -> None:
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, exact, rtol=2e-7, atol=0)  # the float32 rounding of the exact value


@pytest.mark.parametrize("reduction", ["sum", "mean", "var"])
def test_float32_reductions_over_many_rows_accumulate_in_float64(reduction, rng):
    a = _float32_columns(rng)
    out = getattr(npnorm.tensor(a), reduction)(axis=0).data
    _assert_float32_and_close(out, getattr(a.astype(np.float64), reduction)(axis=0))


def test_float32_bias_gradients_over_many_rows_accumulate_in_float64(rng):
    g = _float32_columns(rng)
    exact = g.astype(np.float64).sum(axis=0)
    x = npnorm.tensor(np.zeros((LONG, 3), np.float32), requires_grad=True)
    b = npnorm.tensor(np.zeros(3, np.float32), requires_grad=True)
    (x + b).backward(g)  # unbroadcast
    _assert_float32_and_close(b.grad, exact)
    w = npnorm.tensor(np.eye(3, dtype=np.float32), requires_grad=True)
    c = npnorm.tensor(np.zeros(3, np.float32), requires_grad=True)
    F.linear(x, w, c).backward(g)  # Linear's own bias gradient
    _assert_float32_and_close(c.grad, exact)


def test_short_float32_sums_stay_float32_sums(rng):
    """Below WIDE_SUM_FROM terms nothing changes: the bits are NumPy's float32 sum's."""
    a = rng.standard_normal((ops.WIDE_SUM_FROM - 1, 5)).astype(np.float32)
    np.testing.assert_array_equal(npnorm.tensor(a).sum(axis=0).data, a.sum(axis=0))
