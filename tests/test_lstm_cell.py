"""The fused LSTM pointwise Functions (npnorm/nn/_lstm_cell.py): LSTMCellState and LSTMCellOutput.

Oracles, for each Function:
  * finite differences (float64 gradcheck), every input and each one alone (the needs_input_grad paths);
  * the unfused composition of F.sigmoid, F.tanh, slices, * and + (written below): forward and backward;
  * float32 against the float64 evaluation of the same float32 inputs, within a few float32 ulps;
  * limits at extreme gates (±100, ±inf): finite, correct, and no warnings.
And at the model level: an LSTMCell (plain and LN) equals a step written with the unfused composition.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _cell_helpers import (
    GRADIENT_VARIANTS,
    counting_kernels,
    gradient_variant,
    outputs_and_grads,
    random_cell,
    same_bits,
    within_ulps,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

import npnorm
import npnorm.functional as F
from npnorm import nn
from npnorm.nn import _lstm_cell as cell_module
from npnorm.nn._lstm_cell import LSTMCellOutput, LSTMCellState, lstm_cell_output, lstm_cell_state
from npnorm.ops import sigmoid_array

SHAPES = [(1, 1), (1, 3), (4, 1), (2, 3), (3, 5)]  # (B, H); gates are (B, 4H)


# ------------------------------------------------------------------------------------- the oracle


def state_composed(gates, c):
    """c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g), from engine primitives (what _lstm_step recorded before fusing)."""
    H = c.shape[1]
    i = F.sigmoid(gates[:, :H])
    f = F.sigmoid(gates[:, H : 2 * H])
    g = F.tanh(gates[:, 2 * H : 3 * H])
    return f * c + i * g


def output_composed(gates, s):
    """h' = σ(o) ⊙ tanh(s), from engine primitives."""
    H = s.shape[1]
    return F.sigmoid(gates[:, 3 * H :]) * F.tanh(s)


FUNCTIONS = {
    # name: (fused wrapper, unfused oracle, name of the second input)
    "state": (lstm_cell_state, state_composed, "c"),
    "output": (lstm_cell_output, output_composed, "s"),
}


def leaves(rng, B, H, dtype=np.float64, requires_grad=(True, True)):
    """gates (B, 4H) with pre-activations of a few units, and c or s (B, H)."""
    gates = npnorm.tensor(2 * rng.standard_normal((B, 4 * H)), dtype=dtype, requires_grad=requires_grad[0])
    other = npnorm.tensor(rng.standard_normal((B, H)), dtype=dtype, requires_grad=requires_grad[1])
    return gates, other


def forward_backward(fn, gates, other, dout):
    """fn(gates, other) and the gradients of <out, dout> (None for an input without requires_grad)."""
    gates.grad = other.grad = None
    out = fn(gates, other)
    out.backward(dout)
    return out.data, gates.grad, other.grad


# ------------------------------------------------------------------------------- gradient checks


@pytest.mark.parametrize("requires_grad", [(True, True), (True, False), (False, True)], ids=["both", "gates", "other"])
@pytest.mark.parametrize("B, H", SHAPES)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_gradcheck(name, B, H, requires_grad, rng):
    fused = FUNCTIONS[name][0]
    gates, other = leaves(rng, B, H, requires_grad=requires_grad)
    assert npnorm.gradcheck(fused, (gates, other))
    # An input that does not require grad gets none (backward returned None for it); the others get theirs.
    fused(gates, other).backward(np.ones((B, H)))
    for t, needs in zip((gates, other), requires_grad):
        assert (t.grad is None) == (not needs)


def test_gradcheck_of_a_whole_step_with_shared_gates(rng):
    # gates feed both Functions, with an LN in between: the engine sums the two dense gate gradients.
    B, H = 3, 4
    gates, c = leaves(rng, B, H)
    ln = nn.LayerNorm(H, dtype=np.float64)
    ln.weight.data[...] = rng.uniform(0.5, 1.5, H)
    ln.bias.data[...] = rng.uniform(-0.5, 0.5, H)

    def step(gates, c, *_):
        c_new = lstm_cell_state(gates, c)
        return F.cat([lstm_cell_output(gates, ln(c_new)).reshape(-1), c_new.reshape(-1)])

    assert npnorm.gradcheck(step, (gates, c, ln.weight, ln.bias))


# ------------------------------------------------------------------------- against the composition


@pytest.mark.parametrize("B, H", SHAPES)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_equals_unfused_composition(name, B, H, rng):
    fused, composed, _ = FUNCTIONS[name]
    gates, other = leaves(rng, B, H)
    dout = rng.standard_normal((B, H))
    expected = forward_backward(composed, gates, other, dout)
    actual = forward_backward(fused, gates, other, dout)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-15)


@given(
    B=st.integers(1, 4),
    H=st.integers(1, 5),
    scale=st.sampled_from([0.1, 1.0, 5.0, 30.0]),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_equals_unfused_composition_property(B, H, scale, seed, dtype):
    # Both Functions in a step, as _lstm_step uses them; gates up to ±30·(a few) reach both saturations.
    rng = np.random.default_rng(seed)
    gates = npnorm.tensor(scale * rng.standard_normal((B, 4 * H)), dtype=dtype, requires_grad=True)
    c = npnorm.tensor(rng.standard_normal((B, H)), dtype=dtype, requires_grad=True)
    dh, dc = rng.standard_normal((B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)
    results = []
    for state_fn, output_fn in ((lstm_cell_state, lstm_cell_output), (state_composed, output_composed)):
        gates.grad = c.grad = None
        c_new = state_fn(gates, c)
        h_new = output_fn(gates, c_new)
        ((h_new * npnorm.Tensor(dh)).sum() + (c_new * npnorm.Tensor(dc)).sum()).backward()
        results.append((h_new.data, c_new.data, gates.grad, c.grad))
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    for a, e in zip(*results):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * 1e-3)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["pytorch", "ln"])
def test_lstm_cell_equals_unfused_step(layer_norm, rng):
    # The model-level check: LSTMCell (now fused) against its former step, written with the composition.
    cell, x, (h, c) = random_cell(nn.LSTMCell, layer_norm, rng, states=2)  # parameters randomized: all matter
    dh, dc = rng.standard_normal(h.shape), rng.standard_normal(c.shape)
    params = [h, c, *cell.parameters()]

    def unfused(x, h, c):
        if layer_norm:
            gates = cell.ln_hh(F.linear(h, cell.weight_hh)) + cell.ln_ih(F.linear(x, cell.weight_ih)) + cell.bias
        else:
            gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
        c_new = state_composed(gates, c)
        return output_composed(gates, cell.ln_cell(c_new) if layer_norm else c_new), c_new

    results = [
        outputs_and_grads(step, (x, h, c), params, (dh, dc)) for step in (lambda x, h, c: cell(x, (h, c)), unfused)
    ]
    for a, e in zip(*results):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14)


def test_reused_node_and_leaf_gradients_accumulate(rng):
    # returns_fresh_grads lets the engine adopt dgates and dc as .grad and add into them in place: a second
    # backward through the same graph must double the gradients and leave the saved arrays untouched.
    gates, c = leaves(rng, 2, 3)
    c_new = lstm_cell_state(gates, c)
    h_new = lstm_cell_output(gates, c_new)
    out = h_new.sum() + c_new.sum()
    out.backward()
    first = gates.grad.copy(), c.grad.copy()
    out.backward()
    np.testing.assert_allclose(gates.grad, 2 * first[0], rtol=1e-15)
    np.testing.assert_allclose(c.grad, 2 * first[1], rtol=1e-15)


# ----------------------------------------------------------------------------------------- float32


@pytest.mark.parametrize("B, H", [(1, 1), (8, 16)])
def test_float32_within_ulps_of_float64(B, H, rng):
    gates64 = (3 * rng.standard_normal((B, 4 * H))).astype(np.float32).astype(np.float64)  # float32 values
    c64 = rng.standard_normal((B, H)).astype(np.float32).astype(np.float64)
    dout64 = rng.standard_normal((B, H)).astype(np.float32).astype(np.float64)
    si, sf, so = (special.expit(gates64[:, k * H : (k + 1) * H]) for k in (0, 1, 3))
    tg, ts = np.tanh(gates64[:, 2 * H : 3 * H]), np.tanh(c64)
    g = np.abs(dout64)
    # The envelope of each result: the product of the factors' sizes, with 1 − σ and 1 − tanh² taken as 1
    # (their absolute error is an ulp of 1 whatever their size; near saturation that is all float32 can do).
    envelopes = {
        "state": (
            np.abs(sf * c64) + np.abs(si * tg),
            np.hstack([g * np.abs(tg) * si, g * np.abs(c64) * sf, g * si, 0 * g]),
            g * sf,
        ),
        "output": (so * np.abs(ts), np.hstack([0 * g, 0 * g, 0 * g, g * np.abs(ts) * so]), g * so),
    }
    for name, (fused, _, _) in FUNCTIONS.items():
        results = {}
        for dtype in (np.float32, np.float64):
            gates = npnorm.tensor(gates64, dtype=dtype, requires_grad=True)
            other = npnorm.tensor(c64, dtype=dtype, requires_grad=True)
            results[dtype] = forward_backward(fused, gates, other, dout64.astype(dtype))
        for what, a, e, env in zip(("out", "dgates", "d" + FUNCTIONS[name][2]), *results.values(), envelopes[name]):
            assert a.dtype == np.float32
            within_ulps(a, e, env, ulps=6, what=f"{name} {what}")


# ----------------------------------------------------------------------------------- extreme inputs

EXTREMES = [-np.inf, -100.0, -30.0, 0.0, 30.0, 100.0, np.inf]


def _extreme_gates(H_values, dtype):
    """Every combination of extreme values over the four blocks, one per row: gates (B, 4) with H = 1."""
    grid = np.array(np.meshgrid(*[H_values] * 4, indexing="ij")).reshape(4, -1).T  # (7⁴, 4)
    return grid.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_gates_give_finite_limits_without_warnings(dtype, rng):
    gates_np = _extreme_gates(EXTREMES, dtype)  # (B, 4): blocks i, f, g, o of H = 1
    B = gates_np.shape[0]
    c_np = rng.uniform(-3, 3, (B, 1)).astype(dtype)
    s_np = rng.choice(EXTREMES + [-1.5, 0.7], (B, 1)).astype(dtype)  # tanh(s) saturates too
    dout = rng.standard_normal((B, 1)).astype(dtype)

    # The limits, in float64 with scipy's expit (σ(±inf) = 1, 0; tanh(±inf) = ±1; derivatives 0 there).
    a = gates_np.astype(np.float64)
    si, sf, tg, so = special.expit(a[:, :1]), special.expit(a[:, 1:2]), np.tanh(a[:, 2:3]), special.expit(a[:, 3:])
    c, ts, d = c_np.astype(np.float64), np.tanh(s_np.astype(np.float64)), dout.astype(np.float64)
    zero = np.zeros_like(d)
    expected = {
        "state": (
            sf * c + si * tg,
            np.hstack([d * tg * si * (1 - si), d * c * sf * (1 - sf), d * si * (1 - tg * tg), zero]),
            d * sf,
        ),
        "output": (so * ts, np.hstack([zero, zero, zero, d * ts * so * (1 - so)]), d * so * (1 - ts * ts)),
    }
    # Near saturation 1 − σ and 1 − tanh² are known only to an ulp of 1 (σ(30) rounds to 1 in float32, σ(100)
    # in float64), so the derivatives there are right to an absolute error of a few ulps of the terms (|c| <= 3).
    rtol, atol = (1e-12 if dtype == np.float64 else 1e-6), 50 * float(np.finfo(dtype).eps)
    for name, other_np in (("state", c_np), ("output", s_np)):
        gates = npnorm.tensor(gates_np, requires_grad=True)
        other = npnorm.tensor(other_np, requires_grad=True)
        with warnings.catch_warnings(), np.errstate(over="warn", invalid="warn", divide="warn"):
            warnings.simplefilter("error")  # any RuntimeWarning (overflow, invalid value) fails the test
            actual = forward_backward(FUNCTIONS[name][0], gates, other, dout)
        for a, e in zip(actual, expected[name]):
            assert a.dtype == dtype and np.all(np.isfinite(a))
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def test_saturated_gates_are_exact_limits():
    # σ(+inf) = 1 and σ(−inf) = 0 exactly: c' = c (forget everything new), h' = tanh(s) (output all).
    gates = npnorm.tensor([[-np.inf, np.inf, 0.3, np.inf]])
    c = npnorm.tensor([[0.25]])
    c_new = lstm_cell_state(gates, c)
    np.testing.assert_array_equal(c_new.data, [[0.25]])
    np.testing.assert_array_equal(lstm_cell_output(gates, c_new).data, np.tanh([[0.25]]))


# --------------------------------------------------------------- the Numba kernels and their NumPy twins

needs_kernels = pytest.mark.skipif(
    cell_module._kernels() is None, reason="no compiled kernels (numba missing or NUMBA_DISABLE_JIT)"
)
NEEDS = [(True, True), (True, False), (False, True), (False, False)]


@needs_kernels
@given(
    B=st.integers(0, 9),
    H=st.integers(0, 40),
    scale=st.sampled_from([0.1, 1.0, 5.0, 30.0, 100.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
    needs=st.sampled_from(NEEDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernels_give_the_twins_bits(B, H, scale, dtype, needs, seed):
    # kernels/lstm_cell.py against _state_backward_numpy and _output_backward_numpy: the same operations in
    # the same order, bit for bit (signed zeros included), for every combination of wanted gradients; the
    # gates reach both saturations (σ = 0 or 1 exactly, tanh = ±1).
    rng = np.random.default_rng(seed)
    gates = (scale * rng.standard_normal((B, 4 * H))).astype(dtype)
    c = rng.standard_normal((B, H)).astype(dtype)
    grad = rng.standard_normal((B, H)).astype(dtype)
    sif, tg = sigmoid_array(gates[:, : 2 * H]), np.tanh(gates[:, 2 * H : 3 * H])  # as the forward saves them
    so, ts = sigmoid_array(gates[:, 3 * H :]), np.tanh(c)
    kern = cell_module._kernels()
    need_gates, need_other = needs

    def outputs():
        return (np.empty((B, 4 * H), dtype) if need_gates else None, np.empty((B, H), dtype) if need_other else None)

    dgates, dc = outputs()
    kern.lstm_cell_state_backward(dgates, dc, grad, sif, tg, c)
    expected = cell_module._state_backward_numpy(grad, sif, tg, c, need_gates, need_other)
    for a, e, what in zip((dgates, dc), expected, ("state dgates", "dc")):
        same_bits(a, e, what)
    dgates, ds = outputs()
    kern.lstm_cell_output_backward(dgates, ds, grad, so, ts)
    expected = cell_module._output_backward_numpy(grad, so, ts, need_gates, need_other)
    for a, e, what in zip((dgates, ds), expected, ("output dgates", "ds")):
        same_bits(a, e, what)


@needs_kernels
def test_an_lstm_runs_its_cell_backward_through_the_kernels(monkeypatch, rng):
    # The speed-up is real only if the model's backward reaches the kernels: 2 calls per step and layer, also
    # where the gradient arrives as a broadcast view (the backward of .sum()).
    spy, calls = counting_kernels(cell_module._kernels(), "lstm_cell_state_backward", "lstm_cell_output_backward")
    monkeypatch.setattr(cell_module, "_kernels", lambda: spy)
    T, B = 5, 3
    lstm = nn.LSTM(4, 6, layer_norm=True, dtype=np.float32, rng=rng)
    x = npnorm.tensor(rng.standard_normal((T, B, 4)), dtype=np.float32)
    out, _ = lstm(x)
    out.sum().backward()
    assert sorted(calls) == sorted(["lstm_cell_state_backward", "lstm_cell_output_backward"] * T)


@pytest.mark.parametrize("variant", GRADIENT_VARIANTS)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_kernels_and_twins_give_the_same_gradients_through_the_functions(name, variant, monkeypatch, rng):
    # Through the Functions, with the kernels (where numba runs them) and with the twins: the same bits. A
    # strided gradient is copied into a contiguous one first; one the kernels do not take (read-only, of another
    # dtype) goes to the twins, and the float64 one is promoted as NumPy promotes it.
    fused = FUNCTIONS[name][0]
    B, H = 3, 5
    gates_np = (3 * rng.standard_normal((B, 4 * H))).astype(np.float32)
    other_np = rng.standard_normal((B, H)).astype(np.float32)
    dout = rng.standard_normal((B, H)).astype(np.float32)
    dout = gradient_variant(dout, variant)
    results = []
    # First the kernels on a writable copy of the gradient: a read-only one never reaches them, and the two runs
    # below would then compare the twin with itself.
    for kernels_on, gradient in ((True, np.array(dout)), (True, dout), (False, dout)):
        if not kernels_on:
            monkeypatch.setattr(cell_module, "_kernels", lambda: None)
        gates = npnorm.Tensor(gates_np.copy(), requires_grad=True)
        other = npnorm.Tensor(other_np.copy(), requires_grad=True)
        results.append(forward_backward(fused, gates, other, gradient))
    for kernel, *others, what in zip(*results, ("out", "dgates", "d" + FUNCTIONS[name][2])):
        for other in others:
            same_bits(other, kernel, what)


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "fn, gates_shape, other_shape, match",
    [
        (lstm_cell_state, (8,), (2, 2), r"lstm_cell_state: gates must be 2-D.*got shape \(8,\)"),
        (lstm_cell_state, (1, 2, 8), (2, 2), r"lstm_cell_state: gates must be 2-D"),
        (lstm_cell_state, (2, 6), (2, 2), r"lstm_cell_state: gates must be 2-D, \(batch, 4·hidden_size\)"),
        (lstm_cell_state, (2, 8), (2, 3), r"lstm_cell_state: c must have shape .* = \(2, 2\).*got \(2, 3\)"),
        (lstm_cell_state, (2, 8), (3, 2), r"lstm_cell_state: c must have shape"),
        (lstm_cell_state, (2, 8), (2, 2, 1), r"lstm_cell_state: c must have shape"),
        (lstm_cell_output, (3,), (1, 1), r"lstm_cell_output: gates must be 2-D"),
        (lstm_cell_output, (2, 7), (2, 1), r"lstm_cell_output: gates must be 2-D"),
        (lstm_cell_output, (2, 8), (2, 8), r"lstm_cell_output: s must have shape .* = \(2, 2\)"),
        (lstm_cell_output, (2, 8), (1, 2), r"lstm_cell_output: s must have shape"),
    ],
)
def test_bad_shapes_raise(fn, gates_shape, other_shape, match):
    with pytest.raises(ValueError, match=match):
        fn(npnorm.tensor(np.zeros(gates_shape)), npnorm.tensor(np.zeros(other_shape)))


@pytest.mark.parametrize("fn, name", [(lstm_cell_state, "c"), (lstm_cell_output, "s")])
def test_mixed_dtypes_raise(fn, name):
    gates = npnorm.tensor(np.zeros((2, 8)), dtype=np.float32)
    other = npnorm.tensor(np.zeros((2, 2)), dtype=np.float64)
    with pytest.raises(TypeError, match=f"{fn.__name__}: gates are float32 but {name} is float64"):
        fn(gates, other)


@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
def test_any_gate_shape_works_or_raises_value_error(shape):
    # Whatever shape the gates have, either it is a valid (B, 4H) with its matching state, or the error
    # names the function; never a NumPy IndexError or broadcasting error from inside forward.
    gates = np.zeros(shape)
    for cls, who in ((LSTMCellState, "lstm_cell_state"), (LSTMCellOutput, "lstm_cell_output")):
        valid = gates.ndim == 2 and gates.shape[1] % 4 == 0
        other = np.zeros((gates.shape[0], gates.shape[1] // 4)) if valid else np.zeros((1, 1))
        if valid:
            assert cls.apply(npnorm.Tensor(gates), npnorm.Tensor(other)).shape == other.shape
        else:
            with pytest.raises(ValueError, match=who):
                cls.apply(npnorm.Tensor(gates), npnorm.Tensor(other))
