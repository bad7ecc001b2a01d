"""npnorm.nn recurrent cells and sequence models, and the ops that join tensors (stack, cat).

Oracles, per model (RNN, LSTM, GRU) and mode (PyTorch's, layer_norm=True):
  * finite differences (float64 gradcheck) for the cells and for 2-layer sequence models over T = 3 steps;
  * PyTorch (float64), without layer_norm: outputs and every gradient, weights loaded from its state_dict;
  * a hand-written NumPy forward of Ba et al.'s equations, with layer_norm=True;
  * Ba et al.'s Table 1: with LN, re-scaling a weight matrix leaves the output unchanged (per matrix for the
    LSTM and GRU, whose projections are normalized separately; only jointly for the RNN's one LN);
  * the sequence model equals a manual loop over cells holding the same parameters;
  * sequences long enough for the layers to multiply by transposed copies of their weights give the
    numbers and gradients of the products by W.T, up to rounding.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from _cell_helpers import randomize

import npnorm
import npnorm.functional as F
from npnorm import nn
from npnorm.nn import rnn
from npnorm.norms import IMPLS

MODES = ("RNN", "LSTM", "GRU")
CELLS = {"RNN": nn.RNNCell, "LSTM": nn.LSTMCell, "GRU": nn.GRUCell}
SEQUENCES = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
IN, H, B, T = 3, 4, 2, 3  # input size, hidden size, batch, sequence length


# ------------------------------------------------------------------------------------------ helpers


def make_cell(mode, layer_norm, rng, **kw):
    return randomize(CELLS[mode](IN, H, layer_norm=layer_norm, dtype=np.float64, rng=0, **kw), rng)


def make_sequence(mode, layer_norm, rng, num_layers=2, **kw):
    model = SEQUENCES[mode](IN, H, num_layers, layer_norm=layer_norm, dtype=np.float64, rng=0, **kw)
    return randomize(model, rng)


def tensor(rng, *shape, requires_grad=True):
    return npnorm.tensor(rng.standard_normal(shape), requires_grad=requires_grad)


def initial_state(mode, rng, *shape):
    """(h,) or (h, c) as leaf tensors that require grad."""
    return tuple(tensor(rng, *shape) for _ in range(2 if mode == "LSTM" else 1))


def as_hx(mode, state):
    return state if mode == "LSTM" else state[0]


def flat_outputs(mode, result) -> npnorm.Tensor:
    """Everything a cell or a sequence model returns, flattened into one vector (for gradcheck)."""
    if isinstance(result, npnorm.Tensor):  # RNNCell, GRUCell
        parts = [result]
    elif mode == "LSTM" and isinstance(result[1], tuple):  # LSTM: (output, (h_n, c_n))
        parts = [result[0], *result[1]]
    else:  # LSTMCell: (h, c); RNN, GRU: (output, h_n)
        parts = list(result)
    return F.cat([p.reshape(-1) for p in parts])


# ------------------------------------------------------------------------------------ stack and cat

JOIN_CASES = [
    # (name, function, shapes, axis)
    ("stack axis 0", F.stack, [(2, 3)] * 3, 0),
    ("stack axis 1", F.stack, [(2, 3)] * 2, 1),
    ("stack axis -1", F.stack, [(2, 3)] * 2, -1),
    ("stack 1-d", F.stack, [(4,)] * 2, 0),
    ("stack 0-d", F.stack, [()] * 3, 0),
    ("cat axis 0", F.cat, [(1, 3), (2, 3), (3, 3)], 0),
    ("cat axis 1", F.cat, [(2, 3), (2, 1)], 1),
    ("cat axis -1 of 3-d", F.cat, [(2, 1, 2), (2, 1, 3)], -1),
    ("cat one", F.cat, [(2, 3)], 0),
]


@pytest.mark.parametrize("name, fn, shapes, axis", JOIN_CASES, ids=[c[0] for c in JOIN_CASES])
def test_join_forward_and_gradcheck(name, fn, shapes, axis, rng):
    arrays = [rng.standard_normal(s) for s in shapes]
    inputs = tuple(npnorm.tensor(a, requires_grad=True) for a in arrays)
    expected = (np.stack if fn is F.stack else np.concatenate)(arrays, axis=axis)
    np.testing.assert_array_equal(fn(list(inputs), axis=axis).data, expected)
    assert npnorm.gradcheck(lambda *ts: fn(list(ts), axis=axis), inputs)
    if len(inputs) > 1:  # an input without requires_grad gets no gradient, the others still do
        frozen = (npnorm.tensor(arrays[0]),) + inputs[1:]
        assert npnorm.gradcheck(lambda *ts: fn(list(ts), axis=axis), frozen)
        assert frozen[0].grad is None


def test_join_reused_tensor_accumulates():
    a = npnorm.tensor([1.0, 2.0], requires_grad=True)
    (npnorm.stack([a, a, a]) * npnorm.tensor([[1.0], [2.0], [3.0]])).sum().backward()
    np.testing.assert_array_equal(a.grad, [6.0, 6.0])
    a.grad = None
    npnorm.cat([a, a]).sum().backward()
    np.testing.assert_array_equal(a.grad, [2.0, 2.0])


def test_join_keeps_float32():
    a = npnorm.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    out = npnorm.stack([a, a], axis=1)
    assert out.dtype == np.float32 and npnorm.cat([a, a]).dtype == np.float32
    out.sum().backward()
    assert a.grad.dtype == np.float32


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: F.stack([]), ValueError, "at least one tensor"),
        (lambda: F.stack(npnorm.tensor([1.0])), TypeError, "list or tuple"),
        (lambda: F.stack([np.ones(2), np.ones(3)]), ValueError, r"same shape, got \[\(2,\), \(3,\)\]"),
        (lambda: F.stack([np.ones(2)], axis=2), ValueError, "axis 2 is out of range"),
        (lambda: F.stack([np.ones(2), np.ones(2, np.float32)]), TypeError, "one dtype"),
        (lambda: F.cat([np.ones((2, 3)), np.ones((3, 2))], axis=1), ValueError, "other than axis 1"),
        (lambda: F.cat([np.ones(2), np.ones((1, 2))]), ValueError, "same number"),
        (lambda: F.cat([np.ones(())]), ValueError, "same number"),
        (lambda: F.cat([np.ones(2)], axis=1), ValueError, "axis 1 is out of range"),
    ],
)
def test_join_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------------- gradient checks

LN_CONFIGS = [(False, None)] + [(True, impl) for impl in IMPLS]


@pytest.mark.parametrize("layer_norm, impl", LN_CONFIGS, ids=["pytorch"] + [f"ln-{i}" for i in IMPLS])
@pytest.mark.parametrize("mode", MODES)
def test_cell_gradcheck(mode, layer_norm, impl, rng):
    cell = make_cell(mode, layer_norm, rng, impl=impl)
    x = tensor(rng, B, IN)
    state = initial_state(mode, rng, B, H)
    params = tuple(cell.parameters())
    k = len(state)

    def fn(x, *rest):
        return flat_outputs(mode, cell(x, as_hx(mode, rest[:k])))

    assert npnorm.gradcheck(fn, (x, *state, *params))


@pytest.mark.parametrize("layer_norm", [False, True], ids=["pytorch", "ln"])
@pytest.mark.parametrize("mode", MODES)
def test_cell_gradcheck_from_zero_state(mode, layer_norm, rng):
    # hx=None: the first step, where LN sees W_hh·0 = 0 (a constant row: LN gives β, its gradient is finite).
    cell = make_cell(mode, layer_norm, rng)
    params = tuple(cell.parameters())
    assert npnorm.gradcheck(lambda x, *_: flat_outputs(mode, cell(x)), (tensor(rng, B, IN), *params))


@pytest.mark.parametrize("layer_norm", [False, True], ids=["pytorch", "ln"])
def test_relu_rnn_cell_gradcheck(layer_norm, rng):
    cell = make_cell("RNN", layer_norm, rng, nonlinearity="relu")
    h = tensor(rng, B, H)
    params = tuple(cell.parameters())
    assert npnorm.gradcheck(lambda x, h, *_: cell(x, h), (tensor(rng, B, IN), h, *params))


@pytest.mark.parametrize("layer_norm, impl", LN_CONFIGS, ids=["pytorch"] + [f"ln-{i}" for i in IMPLS])
@pytest.mark.parametrize("mode", MODES)
def test_sequence_gradcheck(mode, layer_norm, impl, rng):
    # Two layers over T = 3 steps: backprop through time and through the stack of layers.
    model = make_sequence(mode, layer_norm, rng, batch_first=(mode == "GRU"), impl=impl)
    x = tensor(rng, *((B, T, IN) if model.batch_first else (T, B, IN)))
    state = initial_state(mode, rng, 2, B, H)
    params = tuple(model.parameters())
    k = len(state)

    def fn(x, *rest):
        return flat_outputs(mode, model(x, as_hx(mode, rest[:k])))

    assert npnorm.gradcheck(fn, (x, *state, *params))


# ------------------------------------------------------------------------------ layer norm invariance

SCALE = 3.7


def _run(model, x, state, mode):
    out = model(x, as_hx(mode, state))
    return flat_outputs(mode, out).data


@pytest.mark.parametrize("mode", MODES)
def test_ln_weight_rescaling_invariance(mode, rng):
    """Ba et al. Table 1: LN(δ W a) = LN(W a). With eps = 0 the identity is exact, so the tolerance is tight
    (a non-zero initial state keeps W_hh h away from the all-zero row that eps = 0 cannot normalize)."""
    model = make_sequence(mode, True, rng, num_layers=1, eps=0.0)
    x = tensor(rng, T, B, IN, requires_grad=False)
    state = initial_state(mode, rng, 1, B, H)
    reference = _run(model, x, state, mode)
    scaled_alone = ["weight_hh_l0", "weight_ih_l0"] if mode != "RNN" else []
    for name in scaled_alone:  # LSTM, GRU: each projection has its own LN, so each matrix alone
        getattr(model, name).data[...] *= SCALE
        np.testing.assert_allclose(_run(model, x, state, mode), reference, rtol=0, atol=1e-12, err_msg=name)
        getattr(model, name).data[...] /= SCALE
    model.weight_hh_l0.data[...] *= SCALE  # both together: invariant for every LN cell, the RNN included
    model.weight_ih_l0.data[...] *= SCALE
    np.testing.assert_allclose(_run(model, x, state, mode), reference, rtol=0, atol=1e-12)


def test_ln_rnn_normalizes_the_sum_once(rng):
    # One LN over W_hh h + W_ih x (Ba et al. §3.1): re-scaling W_hh alone changes the balance, hence the output.
    model = make_sequence("RNN", True, rng, num_layers=1, eps=0.0)
    x = tensor(rng, T, B, IN, requires_grad=False)
    state = initial_state("RNN", rng, 1, B, H)
    reference = _run(model, x, state, "RNN")
    model.weight_hh_l0.data[...] *= SCALE
    assert np.abs(_run(model, x, state, "RNN") - reference).max() > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_without_ln_rescaling_changes_the_output(mode, rng):
    model = make_sequence(mode, False, rng, num_layers=1)
    x = tensor(rng, T, B, IN, requires_grad=False)
    state = initial_state(mode, rng, 1, B, H)
    reference = _run(model, x, state, mode)
    model.weight_hh_l0.data[...] *= SCALE
    assert np.abs(_run(model, x, state, mode) - reference).max() > 1e-3


# --------------------------------------------------------------------- sequence model = loop over cells


def _layer_state(model_sd: dict, k: int) -> dict:
    """The entries of layer k of a sequence model's state_dict, renamed as a cell's (weight_ih_l1 -> weight_ih)."""
    pattern = re.compile(rf"_l{k}(?=\.|$)")
    return {pattern.sub("", key): v for key, v in model_sd.items() if pattern.search(key)}


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
@pytest.mark.parametrize("layer_norm", [False, True], ids=["pytorch", "ln"])
@pytest.mark.parametrize("mode", MODES)
def test_sequence_equals_loop_over_cells(mode, layer_norm, batch_first, rng):
    model = make_sequence(mode, layer_norm, rng, batch_first=batch_first)
    cells = []
    for k in range(2):
        cell = CELLS[mode](IN if k == 0 else H, H, layer_norm=layer_norm, dtype=np.float64)
        cell.load_state_dict(_layer_state(model.state_dict(), k))  # strict: the names line up exactly
        cells.append(cell)
    x = rng.standard_normal((T, B, IN))
    state = initial_state(mode, rng, 2, B, H)

    output, final = model(x.transpose(1, 0, 2) if batch_first else x, as_hx(mode, state))
    final = final if mode == "LSTM" else (final,)

    inputs = [x[t] for t in range(T)]
    for k, cell in enumerate(cells):
        s = tuple(part[k] for part in state)
        outs = []
        for x_t in inputs:
            s = cell(x_t, as_hx(mode, s))
            s = s if mode == "LSTM" else (s,)
            outs.append(s[0].data)
        for j, part in enumerate(s):
            np.testing.assert_array_equal(final[j].data[k], part.data)
        inputs = outs
    expected = np.stack(inputs, axis=1 if batch_first else 0)
    np.testing.assert_array_equal(output.data, expected)


# ------------------------------------------------- long sequences: the weights' transposed copies

T_LONG = rnn.PRETRANSPOSE_FROM_STEPS  # the shortest sequence whose layers multiply by transposed copies


def _forward_and_grads(model, mode, x, state):
    for t in (x, *state, *model.parameters()):
        t.grad = None
    output = flat_outputs(mode, model(x, as_hx(mode, state)))
    output.backward(np.linspace(-1.0, 1.0, output.size))  # a weighted sum: every output counts differently
    return output.data, [t.grad for t in (x, *state, *model.parameters())]


@pytest.mark.parametrize("layer_norm", [False, True], ids=["pytorch", "ln"])
@pytest.mark.parametrize("mode", MODES)
def test_long_sequence_multiplies_by_transposed_weights(mode, layer_norm, rng, monkeypatch):
    model = make_sequence(mode, layer_norm, rng, batch_first=(mode == "GRU"))
    layer = model._layer("_l1", steps=T_LONG)
    assert set(layer.transposed) == {"ih", "hh"}
    for which, copy in layer.transposed.items():
        weight = getattr(layer, "weight_" + which).data
        assert copy.flags.c_contiguous and np.array_equal(copy, weight.T)
    assert model._layer("_l1", steps=T_LONG - 1).transposed == {}

    x = tensor(rng, *((B, T_LONG, IN) if model.batch_first else (T_LONG, B, IN)))
    state = initial_state(mode, rng, 2, B, H)
    out, grads = _forward_and_grads(model, mode, x, state)
    monkeypatch.setattr(rnn, "PRETRANSPOSE_FROM_STEPS", T_LONG + 1)  # the same model, multiplying by W.T
    expected_out, expected_grads = _forward_and_grads(model, mode, x, state)
    np.testing.assert_allclose(out, expected_out, rtol=1e-13, atol=1e-13)
    for g, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-12)


def test_only_weights_up_to_the_size_limit_are_copied(rng, monkeypatch):
    model = make_sequence("LSTM", True, rng, num_layers=1)  # float64: W_ih (16, 3) 384 bytes, W_hh (16, 4) 512
    x = tensor(rng, T_LONG, B, IN)
    state = initial_state("LSTM", rng, 1, B, H)
    expected_out, expected_grads = _forward_and_grads(model, "LSTM", x, state)  # both weights copied
    monkeypatch.setattr(rnn, "PRETRANSPOSE_MAX_BYTES", 384)
    assert set(model._layer("_l0", steps=T_LONG).transposed) == {"ih"}
    out, grads = _forward_and_grads(model, "LSTM", x, state)  # W_hh multiplied as W.T
    np.testing.assert_allclose(out, expected_out, rtol=1e-13, atol=1e-13)
    for g, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-12)


def test_weights_changed_in_place_between_calls_are_used(rng, monkeypatch):
    # The copies are made per forward call: an optimizer's in-place step is seen by the next call.
    model = make_sequence("GRU", True, rng, num_layers=1)
    x = tensor(rng, T_LONG, B, IN)
    state = initial_state("GRU", rng, 1, B, H)
    before = _forward_and_grads(model, "GRU", x, state)[0]
    for p in model.parameters():
        p.data[...] *= 0.9
    out = _forward_and_grads(model, "GRU", x, state)[0]
    monkeypatch.setattr(rnn, "PRETRANSPOSE_FROM_STEPS", T_LONG + 1)
    np.testing.assert_allclose(out, _forward_and_grads(model, "GRU", x, state)[0], rtol=1e-13, atol=1e-13)
    assert np.abs(out - before).max() > 1e-3


def test_long_ln_lstm_gradcheck(rng):
    # Backprop through T_LONG steps of products by the copies. (The other models: equal to their products by
    # W.T above, which test_sequence_gradcheck checks by finite differences.)
    model = make_sequence("LSTM", True, rng, num_layers=1)
    x = tensor(rng, T_LONG, B, IN)
    state = initial_state("LSTM", rng, 1, B, H)
    assert npnorm.gradcheck(lambda x, *rest: flat_outputs("LSTM", model(x, rest[:2])), (x, *state, *model.parameters()))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_sequence_shapes_and_zero_initial_state(mode, batch_first, rng):
    model = SEQUENCES[mode](IN, H, num_layers=2, batch_first=batch_first, rng=0)  # float32
    x = rng.standard_normal((B, 5, IN) if batch_first else (5, B, IN)).astype(np.float32)
    output, final = model(x)
    assert output.shape == ((B, 5, H) if batch_first else (5, B, H)) and output.dtype == np.float32
    finals = final if mode == "LSTM" else (final,)
    assert len(finals) == (2 if mode == "LSTM" else 1)
    assert all(f.shape == (2, B, H) for f in finals)
    np.testing.assert_array_equal(finals[0].data[-1], output.data[:, -1] if batch_first else output.data[-1])
    zeros = tuple(np.zeros((2, B, H), np.float32) for _ in finals)
    np.testing.assert_array_equal(model(x, as_hx(mode, zeros))[0].data, output.data)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["pytorch", "ln"])
@pytest.mark.parametrize("mode", MODES)
def test_float32_backward(mode, layer_norm, rng):
    model = SEQUENCES[mode](IN, H, num_layers=2, layer_norm=layer_norm, rng=0)
    x = npnorm.tensor(rng.standard_normal((T, B, IN)), dtype=np.float32, requires_grad=True)
    output, _ = model(x)
    output.sum().backward()
    assert x.grad.dtype == np.float32
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == np.float32 and np.all(np.isfinite(p.grad)), name


@pytest.mark.parametrize("mode", MODES)
def test_ln_impls_agree(mode, rng):
    models = [make_sequence(mode, True, np.random.default_rng(7), impl=impl) for impl in IMPLS]
    x = rng.standard_normal((T, B, IN))
    outputs = [m(x)[0].data for m in models]
    for impl, out in zip(IMPLS[1:], outputs[1:]):
        np.testing.assert_allclose(out, outputs[0], rtol=1e-12, atol=1e-13, err_msg=impl)


# ------------------------------------------------------------------------ hand-written NumPy LN models


def np_ln(a, gain, bias, eps):
    mean = a.mean(axis=-1, keepdims=True)
    var = ((a - mean) ** 2).mean(axis=-1, keepdims=True)
    return gain * (a - mean) / np.sqrt(var + eps) + bias


def np_sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_ln_lstm(x, h, c, sd, eps):
    """Ba et al. eq. 20–22, gates in PyTorch's order i, f, g, o."""
    outputs = []
    for x_t in x:
        gates = (
            np_ln(h @ sd["weight_hh_l0"].T, sd["ln_hh_l0.weight"], sd["ln_hh_l0.bias"], eps)
            + np_ln(x_t @ sd["weight_ih_l0"].T, sd["ln_ih_l0.weight"], sd["ln_ih_l0.bias"], eps)
            + sd["bias_l0"]
        )
        i, f, g, o = np.split(gates, 4, axis=1)
        c = np_sigmoid(f) * c + np_sigmoid(i) * np.tanh(g)
        h = np_sigmoid(o) * np.tanh(np_ln(c, sd["ln_cell_l0.weight"], sd["ln_cell_l0.bias"], eps))
        outputs.append(h)
    return np.stack(outputs), (h, c)


def numpy_ln_gru(x, h, sd, eps):
    """Ba et al. eq. 26–28, blocks r, z, n; z weights the new state."""
    n_ = h.shape[1]
    outputs = []
    for x_t in x:
        wx, wh = x_t @ sd["weight_ih_l0"].T, h @ sd["weight_hh_l0"].T
        rz = np_ln(wh[:, : 2 * n_], sd["ln_hh_l0.weight"], sd["ln_hh_l0.bias"], eps) + np_ln(
            wx[:, : 2 * n_], sd["ln_ih_l0.weight"], sd["ln_ih_l0.bias"], eps
        )
        r, z = np_sigmoid(rz[:, :n_]), np_sigmoid(rz[:, n_:])
        cand = np.tanh(
            np_ln(wx[:, 2 * n_ :], sd["ln_in_l0.weight"], sd["ln_in_l0.bias"], eps)
            + r * np_ln(wh[:, 2 * n_ :], sd["ln_hn_l0.weight"], sd["ln_hn_l0.bias"], eps)
        )
        h = (1 - z) * h + z * cand
        outputs.append(h)
    return np.stack(outputs), (h,)


def numpy_ln_rnn(x, h, sd, eps):
    """Ba et al. §3.1: h' = tanh(LN(W_hh h + W_ih x)), the LN's bias is the only bias."""
    outputs = []
    for x_t in x:
        h = np.tanh(
            np_ln(h @ sd["weight_hh_l0"].T + x_t @ sd["weight_ih_l0"].T, sd["ln_l0.weight"], sd["ln_l0.bias"], eps)
        )
        outputs.append(h)
    return np.stack(outputs), (h,)


@pytest.mark.parametrize("eps", [1e-5, 0.1])
@pytest.mark.parametrize("mode", MODES)
def test_ln_models_equal_handwritten_numpy(mode, eps, rng):
    model = make_sequence(mode, True, rng, num_layers=1, eps=eps)
    sd = model.state_dict()
    x = rng.standard_normal((5, B, IN))
    state = tuple(rng.standard_normal((B, H)) for _ in range(2 if mode == "LSTM" else 1))
    if mode == "LSTM":
        expected, expected_final = numpy_ln_lstm(x, *state, sd, eps)
    elif mode == "GRU":
        expected, expected_final = numpy_ln_gru(x, *state, sd, eps)
    else:
        expected, expected_final = numpy_ln_rnn(x, *state, sd, eps)
    output, final = model(x, as_hx(mode, tuple(s[None] for s in state)))
    final = final if mode == "LSTM" else (final,)
    np.testing.assert_allclose(output.data, expected, rtol=1e-12, atol=1e-13)
    for got, want in zip(final, expected_final):
        np.testing.assert_allclose(got.data[0], want, rtol=1e-12, atol=1e-13)


def test_ln_lstm_cell_equals_handwritten_numpy(rng):
    cell = make_cell("LSTM", True, rng)
    x, h, c = rng.standard_normal((B, IN)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    sd = {re.sub(r"^(\w+?)(\.|$)", r"\1_l0\2", k): v for k, v in cell.state_dict().items()}
    _, (h_want, c_want) = numpy_ln_lstm(x[None], h, c, sd, cell.eps)
    h_got, c_got = cell(x, (h, c))
    np.testing.assert_allclose(h_got.data, h_want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c_got.data, c_want, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize("mode", MODES)
def test_layer_norm_parameters(mode):
    cell = CELLS[mode](IN, H, layer_norm=True, eps=1e-3, rng=0)
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[mode]
    sd = cell.state_dict()
    assert sd["weight_ih"].shape == (gates * H, IN) and sd["weight_hh"].shape == (gates * H, H)
    assert not any(k.startswith("bias_") for k in sd)
    assert ("bias" in sd) == (mode == "LSTM")
    if mode == "LSTM":
        assert sd["bias"].shape == (4 * H,) and np.all(sd["bias"] == 0)
    widths = {"RNN": {"ln": H}, "LSTM": {"ln_ih": 4 * H, "ln_hh": 4 * H, "ln_cell": H}}.get(
        mode, {"ln_ih": 2 * H, "ln_hh": 2 * H, "ln_in": H, "ln_hn": H}
    )
    for name, width in widths.items():
        ln = getattr(cell, name)
        assert isinstance(ln, nn.LayerNorm) and ln.normalized_shape == (width,) and ln.eps == 1e-3
        assert np.all(ln.weight.data == 1) and np.all(ln.bias.data == 0)
    # bias=False removes every additive parameter, the LNs' β included.
    no_bias = CELLS[mode](IN, H, bias=False, layer_norm=True, rng=0)
    assert not any(k == "bias" or k.endswith(".bias") for k in no_bias.state_dict())


@pytest.mark.parametrize("mode", MODES)
def test_init_bounds_and_reproducibility(mode):
    model = SEQUENCES[mode](IN, 16, num_layers=2, rng=0)
    bound = 1 / np.sqrt(16)
    for name, p in model.named_parameters():
        assert p.dtype == np.float32 and np.abs(p.data).max() <= bound, name
    values = np.concatenate([p.data.ravel() for p in model.parameters()])
    assert abs(values.std() - bound / np.sqrt(3)) < 0.1 * bound  # U(-b, b) has std b/√3
    again = SEQUENCES[mode](IN, 16, num_layers=2, rng=0)
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: nn.LSTMCell(3, 4)(np.ones(3, np.float32)), ValueError, r"\(batch, input_size=3\).*unbatched"),
        (lambda: nn.GRUCell(3, 4)(np.ones((2, 5), np.float32)), ValueError, r"\(batch, input_size=3\), got \(2, 5\)"),
        (
            lambda: nn.RNNCell(3, 4)(np.ones((2, 3), np.float32), np.ones((2, 5), np.float32)),
            ValueError,
            r"initial state h of shape \(batch=2, hidden_size=4\), got \(2, 5\)",
        ),
        (
            lambda: nn.LSTMCell(3, 4)(np.ones((2, 3), np.float32), np.ones((2, 4), np.float32)),
            TypeError,
            r"tuple \(h, c\)",
        ),
        (lambda: nn.LSTMCell(3, 4)(np.ones((2, 3))), TypeError, "input is float64 but the parameters are float32"),
        (
            lambda: nn.LSTM(3, 4)(np.ones((2, 3), np.float32)),
            ValueError,
            r"\(seq_len, batch, input_size=3\), got \(2, 3\).*unbatched",
        ),
        (
            lambda: nn.GRU(3, 4, batch_first=True)(np.ones((2, 5, 4), np.float32)),
            ValueError,
            r"\(batch, seq_len, input_size=3\), got \(2, 5, 4\)",
        ),
        (
            lambda: nn.RNN(3, 4, num_layers=2)(np.ones((5, 2, 3), np.float32), np.ones((1, 2, 4), np.float32)),
            ValueError,
            r"initial state h of shape \(num_layers=2, batch=2, hidden_size=4\), got \(1, 2, 4\)",
        ),
        (
            lambda: nn.LSTM(3, 4)(np.ones((5, 2, 3), np.float32), (np.zeros((1, 2, 4), np.float32),)),
            TypeError,
            r"tuple \(h, c\)",
        ),
        (lambda: nn.LSTM(3, 4)(np.ones((0, 2, 3), np.float32)), ValueError, "sequence is empty"),
        (
            lambda: nn.LSTMCell(3, 2)(np.zeros((4, 3), np.float32), (np.zeros((4, 2), np.float32), None)),
            TypeError,
            "^LSTMCell: initial state c must hold real numbers",  # it said "input"
        ),
        (lambda: nn.GRU(3, 2)(np.zeros((1, 4, 3), np.float32), "abc"), TypeError, "^GRU: initial state h must hold"),
        (lambda: nn.RNNCell(3, 4, nonlinearity="sigmoid"), ValueError, "nonlinearity must be one of"),
        (lambda: nn.LSTM(3, 4, num_layers=0), ValueError, "num_layers must be an integer >= 1"),
        (lambda: nn.GRUCell(0, 4), ValueError, "input_size must be an integer >= 1"),
        (lambda: nn.LSTMCell(3, 4, layer_norm=True, eps=-1.0), ValueError, "eps"),
        (lambda: nn.GRU(3, 4, dtype=np.int32), TypeError, "float32 or float64"),
        (lambda: nn.RNN(3, 4, impl="cuda"), ValueError, "impl must be"),
    ],
)
def test_errors_are_clear(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_repr():
    assert repr(nn.LSTMCell(3, 4)) == "LSTMCell(3, 4)"
    assert (
        repr(nn.GRU(3, 4, 2, bias=False, batch_first=True)) == "GRU(3, 4, num_layers=2, bias=False, batch_first=True)"
    )
    assert "(ln_cell): LayerNorm((4,)" in repr(nn.LSTMCell(3, 4, layer_norm=True))


# ------------------------------------------------------------------------------------------ PyTorch


def _torch_grads(module) -> dict:
    return {name: p.grad.numpy() for name, p in module.named_parameters()}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("mode", [*MODES, "RNN-relu"])
def test_cells_match_pytorch(mode, bias, rng):
    torch = pytest.importorskip("torch")
    kind, kw = (mode[:3], {"nonlinearity": "relu"}) if mode == "RNN-relu" else (mode, {})
    theirs = getattr(torch.nn, kind + "Cell")(IN, H, bias=bias, **kw).double()
    ours = CELLS[kind](IN, H, bias=bias, dtype=np.float64, **kw)
    ours.load_state_dict(theirs.state_dict())  # torch tensors load directly: same names, same shapes
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]

    x = rng.standard_normal((B, IN))
    state = [rng.standard_normal((B, H)) for _ in range(2 if kind == "LSTM" else 1)]
    weights = [rng.standard_normal((B, H)) for _ in state]  # loss = Σ_j <output_j, weights_j>

    x_t = torch.tensor(x, requires_grad=True)
    state_t = [torch.tensor(s, requires_grad=True) for s in state]
    out_t = theirs(x_t, tuple(state_t) if kind == "LSTM" else state_t[0])
    out_t = out_t if kind == "LSTM" else (out_t,)
    sum((o * torch.tensor(w)).sum() for o, w in zip(out_t, weights)).backward()

    x_n = npnorm.tensor(x, requires_grad=True)
    state_n = [npnorm.tensor(s, requires_grad=True) for s in state]
    out_n = ours(x_n, tuple(state_n) if kind == "LSTM" else state_n[0])
    out_n = out_n if kind == "LSTM" else (out_n,)
    sum((o * w).sum() for o, w in zip(out_n, weights)).backward()

    for o_n, o_t in zip(out_n, out_t):
        np.testing.assert_allclose(o_n.data, o_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x_n.grad, x_t.grad.numpy(), rtol=1e-10, atol=1e-13)
    for s_n, s_t in zip(state_n, state_t):
        np.testing.assert_allclose(s_n.grad, s_t.grad.numpy(), rtol=1e-10, atol=1e-13)
    theirs_grads = _torch_grads(theirs)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs_grads[name], rtol=1e-10, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
@pytest.mark.parametrize("mode", MODES)
def test_sequences_match_pytorch(mode, batch_first, bias, rng):
    torch = pytest.importorskip("torch")
    theirs = getattr(torch.nn, mode)(IN, H, num_layers=2, bias=bias, batch_first=batch_first).double()
    ours = SEQUENCES[mode](IN, H, num_layers=2, bias=bias, batch_first=batch_first, dtype=np.float64)
    ours.load_state_dict(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]

    x = rng.standard_normal((B, T, IN) if batch_first else (T, B, IN))
    state = [rng.standard_normal((2, B, H)) for _ in range(2 if mode == "LSTM" else 1)]
    w_out = rng.standard_normal((B, T, H) if batch_first else (T, B, H))
    w_state = [rng.standard_normal((2, B, H)) for _ in state]

    x_t = torch.tensor(x, requires_grad=True)
    state_t = [torch.tensor(s, requires_grad=True) for s in state]
    out_t, final_t = theirs(x_t, tuple(state_t) if mode == "LSTM" else state_t[0])
    final_t = final_t if mode == "LSTM" else (final_t,)
    loss_t = (out_t * torch.tensor(w_out)).sum() + sum((f * torch.tensor(w)).sum() for f, w in zip(final_t, w_state))
    loss_t.backward()

    x_n = npnorm.tensor(x, requires_grad=True)
    state_n = [npnorm.tensor(s, requires_grad=True) for s in state]
    out_n, final_n = ours(x_n, tuple(state_n) if mode == "LSTM" else state_n[0])
    final_n = final_n if mode == "LSTM" else (final_n,)
    loss_n = (out_n * w_out).sum() + sum((f * w).sum() for f, w in zip(final_n, w_state))
    loss_n.backward()

    np.testing.assert_allclose(out_n.data, out_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    for f_n, f_t in zip(final_n, final_t):
        np.testing.assert_allclose(f_n.data, f_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x_n.grad, x_t.grad.numpy(), rtol=1e-10, atol=1e-13)
    for s_n, s_t in zip(state_n, state_t):
        np.testing.assert_allclose(s_n.grad, s_t.grad.numpy(), rtol=1e-10, atol=1e-13)
    theirs_grads = _torch_grads(theirs)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs_grads[name], rtol=1e-10, atol=1e-13, err_msg=name)
