r"""Recurrent cells (RNNCell, LSTMCell, GRUCell) and sequence models (RNN, LSTM, GRU), with or without
layer normalization.

**Without layer_norm** these are PyTorch's models, with its parameter names, shapes, gate order and
initialisation (every parameter U(−1/√H, 1/√H)), so weights copied from PyTorch give the same outputs and
gradients. With x the input, h the previous hidden state, c the previous cell state:

    RNN   h' = act(W_ih x + b_ih + W_hh h + b_hh)                     act = tanh or relu
    LSTM  [i; f; g; o] = W_ih x + b_ih + W_hh h + b_hh                 four blocks of H rows
          c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
          h' = σ(o) ⊙ tanh(c')
    GRU   [r; z; n] rows of W_ih, W_hh                                 three blocks of H rows
          r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz)
          n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
          h' = (1 − z) ⊙ n + z ⊙ h                                     z keeps the *old* state

**With layer_norm=True** they are the models of Ba, Kiros & Hinton 2016 ("Layer Normalization"), equation
for equation. LN(a; α, β) normalizes each row of a over all its features, then scales by the gain α and
shifts by β; every LN here is an `nn.LayerNorm` submodule with α = 1, β = 0 at initialisation and the
cell's `eps`:

    RNN   h' = act(LN(W_hh h + W_ih x; g, b))                           (§3.1: one LN over the summed inputs,
                                                                        its β is the bias b)
    LSTM  [i; f; g; o] = LN(W_hh h; α₁, β₁) + LN(W_ih x; α₂, β₂) + b     (supplement, eq. 20–22)
          c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
          h' = σ(o) ⊙ tanh(LN(c'; α₃, β₃))
    GRU   [r; z] = LN(W_hh[r,z] h; α₁, β₁) + LN(W_ih[r,z] x; α₂, β₂)     (eq. 26–28)
          n  = tanh(LN(W_ih[n] x; α₃, β₃) + σ(r) ⊙ LN(W_hh[n] h; α₄, β₄))
          h' = (1 − σ(z)) ⊙ h + σ(z) ⊙ n                                z weights the *new* state

Which formulation, and why. The recurrent and input projections are normalized *separately*, and each LN
spans all the gate pre-activations of its projection at once (4H for the LSTM, 2H for the GRU's r and z),
as in the paper. Many libraries instead normalize each gate's H-slice of the *sum* W_ih x + W_hh h: that is
a different model (other statistics, other invariances), not Ba et al.'s. Keeping the two LNs apart is what
makes the cell invariant to re-scaling W_ih or W_hh alone (Table 1's "weight matrix re-scaling", per
matrix); the tests check it. For the plain RNN the paper normalizes the summed inputs aᵗ = W_hh hᵗ⁻¹ + W_xh xᵗ
with one LN, so only scaling both matrices together leaves it unchanged.

Conventions that differ from the paper's text or from PyTorch, on purpose:
* Gate order is PyTorch's in both modes (LSTM i, f, g, o; GRU r, z, n), so `weight_ih` and `weight_hh`
  have the same layout with and without LN. The paper lists [f; i; o; g] and [z; r]; an LN over a block of
  rows treats its rows alike (a permutation of them permutes α and β with it), so the order is a naming
  choice, not a different model.
* LN-GRU: z weights the new state as in the paper, h' = (1 − σ(z))h + σ(z)n, whereas PyTorch's GRU (and
  this GRU without LN) has h' = (1 − z)n + z h. Without LN the two are one model (negate the z rows of
  the weights and biases: σ(−a) = 1 − σ(a)); with LN that negation would change the LN's statistics.
* LN-LSTM has one bias `b` of shape (4H,), added after the two LNs (eq. 20), initialised to 0 (the paper
  initialises biases to 0). It overlaps with β₁ + β₂, as in the paper. LN-RNN and LN-GRU have no bias
  beyond the LNs' β (the paper's equations have none).
* `bias=False` removes every additive parameter: b_ih and b_hh without LN; b and the β of every LN with it.

Parameter names (state_dict keys). A cell holds `weight_ih` (gates·H, input_size), `weight_hh`
(gates·H, H) and, without LN, `bias_ih`, `bias_hh` (gates·H,); with LN, `bias` (LSTM only) and the LN
submodules `ln` (RNN), `ln_ih`, `ln_hh`, `ln_cell` (LSTM), `ln_ih`, `ln_hh` (GRU, over r and z) and
`ln_in`, `ln_hn` (GRU, over the candidate n; PyTorch calls the matching blocks W_in and W_hn). A sequence
model holds the same parameters itself, per layer, with PyTorch's suffix `_l{k}` — `weight_ih_l0`,
`bias_hh_l1`, `ln_cell_l0.weight` — rather than a list of cells (whose keys would read `cells.0.weight_ih`),
so `lstm.load_state_dict(torch_lstm.state_dict())` loads PyTorch's weights. Cells and sequence models run
the very same step function (`_rnn_step`, `_lstm_step`, `_gru_step`) on a layer's parameters, looked up
by name at each call, so layer k of `LSTM` is exactly an `LSTMCell` holding `weight_ih_lk`, ... and
looping that cell over time gives the same numbers (up to rounding from PRETRANSPOSE_FROM_STEPS steps on,
where the sequence model multiplies by transposed copies of its weights, which NumPy's BLAS does faster).

Backprop through time is the engine's: each step is built from `F.linear`, `F.layer_norm` (its fused
kernel by default, `impl` selectable), slices and elementwise ops, and the outputs are joined with
`F.stack`. The LSTM's pointwise part is fused, as in PyTorch's LSTM cell: `lstm_cell_state` (c' from the
gates and c) and `lstm_cell_output` (h' from the gates and c' or LN(c')) are one node each, with
hand-derived backward passes (npnorm/nn/_lstm_cell.py), instead of some twenty slices, activations and
products per step; they give the same numbers as that composition, up to rounding. So is the GRU's:
`gru_cell_output` (h' from the gate pre-activations, the candidate's two parts and h;
npnorm/nn/_gru_cell.py) is one node instead of about twelve.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from .. import functional as F
from .. import ops
from ..norms import _checks as _norm_checks
from ..tensor import Tensor
from . import _checks, init
from ._gru_cell import gru_cell_output
from ._lstm_cell import lstm_cell_output, lstm_cell_state
from .module import Module, Parameter
from .normalization import LayerNorm

# Blocks of H rows in weight_ih and weight_hh: one per gate.
_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}

# The LayerNorms of a layer_norm=True layer: name -> width in units of H.
_LAYER_NORMS = {
    "RNN": {"ln": 1},
    "LSTM": {"ln_ih": 4, "ln_hh": 4, "ln_cell": 1},
    "GRU": {"ln_ih": 2, "ln_hh": 2, "ln_in": 1, "ln_hn": 1},
}

_NONLINEARITIES = ("tanh", "relu")


# ----------------------------------------------------------------------------------------- one step

# A sequence model multiplies by each of its weights once per time step. For x of few rows (a batch),
# NumPy's OpenBLAS computes x @ W.T, W in PyTorch's (out, in) layout, slower than x @ Wᵀ with Wᵀ copied
# into rows (float32, one thread, x @ W.T against the copy: batch 32, 128 -> 512 features 74-87 µs against
# 50-56; 256 -> 1024 361 against 258; batch 3-4, 128 -> 512 39-52 against 6-7; about equal at batch 1-2).
# So a sequence of at least PRETRANSPOSE_FROM_STEPS steps copies each weight transposed once per forward
# call and multiplies by the copy at every step (`_project`); the gradient still goes to W. NumPy's
# transposing copy is itself slow (40 µs at 512x128 float32, 0.27 ms at 1 MiB, 3.6 ms at 2048x512), so
# only weights of at most PRETRANSPOSE_MAX_BYTES are copied, where it costs the gain of 1-13 steps in the
# shapes measured at batch 32.
PRETRANSPOSE_FROM_STEPS = 16
PRETRANSPOSE_MAX_BYTES = 2**20


def _transposed_weights(p: SimpleNamespace, steps: int) -> dict:
    """{"ih": W_ihᵀ, "hh": W_hhᵀ} copied into rows, for those worth copying over `steps` time steps."""
    if steps < PRETRANSPOSE_FROM_STEPS:
        return {}
    weights = {"ih": p.weight_ih.data, "hh": p.weight_hh.data}
    return {k: np.ascontiguousarray(w.T) for k, w in weights.items() if w.nbytes <= PRETRANSPOSE_MAX_BYTES}


def _project(v: Tensor, p: SimpleNamespace, which: str, bias=None) -> Tensor:
    """W v + b for W = p.weight_ih or p.weight_hh (`which` "ih" or "hh"), as `F.linear`, multiplying by
    the layer's transposed copy of W when it has one (see PRETRANSPOSE_FROM_STEPS)."""
    weight = getattr(p, "weight_" + which)
    weight_t = p.transposed.get(which)
    if weight_t is None:
        return F.linear(v, weight, bias)
    return ops.Linear.apply(v, weight, bias, weight_t=weight_t)


def _rnn_step(p, x: Tensor, state: tuple) -> tuple:
    """(h',) from x (B, in) and state (h,), each (B, H), for the layer whose parameters `p` holds.

    PyTorch:  h' = act(W_ih x + b_ih + W_hh h + b_hh).    LN (Ba et al. §3.1):  h' = act(LN(W_hh h + W_ih x)).
    """
    (h,) = state
    if p.layer_norm:
        a = p.ln(_project(h, p, "hh") + _project(x, p, "ih"))  # (B, H), LN's β is the bias
    else:
        a = _project(x, p, "ih", p.bias_ih) + _project(h, p, "hh", p.bias_hh)  # (B, H)
    return (F.tanh(a) if p.nonlinearity == "tanh" else F.relu(a),)


def _lstm_step(p, x: Tensor, state: tuple) -> tuple:
    """(h', c') from x (B, in) and state (h, c), each (B, H).

    gates = W_ih x + b_ih + W_hh h + b_hh              (PyTorch)
    gates = LN(W_hh h) + LN(W_ih x) + b                (Ba et al. eq. 20: separate LNs over all 4H)
    c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g);  h' = σ(o) ⊙ tanh(c'), or tanh(LN(c')) with LN (eq. 21–22),
    each line one fused node (lstm_cell_state, lstm_cell_output).
    """
    h, c = state
    if p.layer_norm:
        gates = p.ln_hh(_project(h, p, "hh")) + p.ln_ih(_project(x, p, "ih"))  # (B, 4H)
        if p.bias is not None:
            gates = gates + p.bias
    else:
        gates = _project(x, p, "ih", p.bias_ih) + _project(h, p, "hh", p.bias_hh)  # (B, 4H)
    # The pointwise rest in two fused nodes with hand-derived backward passes (see _lstm_cell), not ~20 small ops.
    c_new = lstm_cell_state(gates, c)  # (B, H)
    h_new = lstm_cell_output(gates, p.ln_cell(c_new) if p.layer_norm else c_new)  # (B, H)
    return h_new, c_new


def _gru_step(p, x: Tensor, state: tuple) -> tuple:
    """(h',) from x (B, in) and state (h,), each (B, H). Rows of W_ih and W_hh: [r; z; n].

    PyTorch:  r, z = σ(W_i x + b_i + W_h h + b_h) on their rows;  n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn));
              h' = (1 − z) ⊙ n + z ⊙ h.
    LN (Ba et al. eq. 26–28):  [r; z] = σ(LN(W_h h) + LN(W_x x)) over 2H;  n = tanh(LN(W_in x) + r ⊙ LN(W_hn h));
              h' = (1 − z) ⊙ h + z ⊙ n.
    """
    (h,) = state
    H = p.hidden_size
    if p.layer_norm:
        gi = _project(x, p, "ih")  # (B, 3H)
        gh = _project(h, p, "hh")  # (B, 3H)
        rz = p.ln_hh(gh[:, : 2 * H]) + p.ln_ih(gi[:, : 2 * H])  # (B, 2H), one LN per projection
        # the pointwise rest in one fused node with a hand-derived backward (see _gru_cell), not ~12 small ops;
        # the paper's convention: z weighs the new state
        return (gru_cell_output(rz, p.ln_in(gi[:, 2 * H :]), p.ln_hn(gh[:, 2 * H :]), h),)
    gi = _project(x, p, "ih", p.bias_ih)  # (B, 3H)
    gh = _project(h, p, "hh", p.bias_hh)  # (B, 3H)
    rz = gi[:, : 2 * H] + gh[:, : 2 * H]  # (B, 2H) reset and update gates' pre-activations
    return (gru_cell_output(rz, gi[:, 2 * H :], gh[:, 2 * H :], h, z_keeps_old=True),)  # PyTorch's convention


_STEPS = {"RNN": _rnn_step, "LSTM": _lstm_step, "GRU": _gru_step}


# -------------------------------------------------------------------------- what cells and models share


class _Recurrent(Module):
    """Constructor checks, per-layer parameters (a cell's suffix is "", layer k's is "_lk"), initialisation
    and input checks, for the cells and the sequence models alike."""

    _mode = ""  # "RNN", "LSTM" or "GRU"

    def __init__(self, input_size, hidden_size, bias, layer_norm, eps, nonlinearity, dtype, impl):
        super().__init__()
        who = type(self).__name__
        self.input_size = _checks.size(who, "input_size", input_size)
        self.hidden_size = _checks.size(who, "hidden_size", hidden_size)
        # Not `self.bias`: with layer_norm the LSTM has a parameter of that name.
        self.use_bias = _checks.flag(who, "bias", bias)
        self.layer_norm = _checks.flag(who, "layer_norm", layer_norm)
        self.eps = _norm_checks.check_eps(who, eps)
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"{who}: nonlinearity must be one of {_NONLINEARITIES}, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.dtype = _checks.float_dtype(who, dtype)
        self.impl = _checks.impl(who, impl)
        self._suffixes = []  # one per layer, in order: "" for a cell, "_l0", "_l1", ... for a sequence model

    def _add_layer(self, suffix: str, input_size: int) -> None:
        """Register one layer's parameters (PyTorch's order: weight_ih, weight_hh, biases) and LNs."""
        rows = _GATES[self._mode] * self.hidden_size
        H, dtype = self.hidden_size, self.dtype
        setattr(self, "weight_ih" + suffix, Parameter(np.empty((rows, input_size), dtype=dtype)))
        setattr(self, "weight_hh" + suffix, Parameter(np.empty((rows, H), dtype=dtype)))
        if not self.layer_norm:
            for name in ("bias_ih", "bias_hh"):
                param = Parameter(np.empty(rows, dtype=dtype)) if self.use_bias else None
                self.register_parameter(name + suffix, param)
        else:
            if self._mode == "LSTM":
                self.register_parameter(
                    "bias" + suffix, Parameter(np.empty(rows, dtype=dtype)) if self.use_bias else None
                )
            for name, width in _LAYER_NORMS[self._mode].items():
                ln = LayerNorm(width * H, eps=self.eps, bias=self.use_bias, dtype=dtype, impl=self.impl)
                setattr(self, name + suffix, ln)
        self._suffixes.append(suffix)

    def reset_parameters(self, rng=None) -> None:
        """Weights (and, without LN, biases) U(−1/√H, 1/√H) as in PyTorch, drawn layer by layer in PyTorch's
        order; with LN, the LSTM's `bias` 0 and every LN's gain 1 and bias 0."""
        gen = _checks.generator(type(self).__name__, rng)
        bound = 1 / math.sqrt(self.hidden_size)
        for suffix in self._suffixes:
            p = self._layer(suffix)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):  # bias_* exist only without LN
                param = getattr(p, name, None)
                if param is not None:
                    init.uniform_(param, -bound, bound, rng=gen)
            if self.layer_norm:
                if self._mode == "LSTM" and p.bias is not None:
                    init.zeros_(p.bias)
                for name in _LAYER_NORMS[self._mode]:
                    getattr(p, name).reset_parameters()

    def _layer(self, suffix: str, steps: int = 1) -> SimpleNamespace:
        """One layer's parameters and LNs under their suffix-free names, plus what the step function reads
        (with `transposed`, its weights copied transposed if `steps` time steps make that pay)."""
        names = ["weight_ih", "weight_hh"]
        if not self.layer_norm:
            names += ["bias_ih", "bias_hh"]
        else:
            names += (["bias"] if self._mode == "LSTM" else []) + list(_LAYER_NORMS[self._mode])
        p = SimpleNamespace(**{name: getattr(self, name + suffix) for name in names})
        p.hidden_size, p.layer_norm, p.nonlinearity = self.hidden_size, self.layer_norm, self.nonlinearity
        p.transposed = _transposed_weights(p, steps)
        return p

    # ------------------------------------------------------------------------------------ input checks
    def _tensor(self, value, what: str) -> Tensor:
        who = type(self).__name__
        t = F.as_tensor(value, who, what)
        if t.dtype != self.dtype:
            raise TypeError(
                f"{who}: {what} is {t.dtype} but the parameters are {self.dtype}; use one dtype for both "
                f"(build the module with dtype={t.dtype.name!r} or cast the {what})"
            )
        return t

    def _state_tensors(self, hx, shape: tuple, what: str) -> tuple:
        """The given state (hx for RNN/GRU, (h, c) for LSTM) as Tensors of `shape`, or zeros when hx is None."""
        who = type(self).__name__
        names = ("h", "c") if self._mode == "LSTM" else ("h",)
        if hx is None:
            zeros = Tensor(np.zeros(shape, dtype=self.dtype))
            return tuple(zeros for _ in names)
        if self._mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{who}: hx must be a tuple (h, c) of two tensors of shape {what}, or None")
            parts = tuple(hx)
        else:
            parts = (hx,)
        out = []
        for name, part in zip(names, parts):
            t = self._tensor(part, f"initial state {name}")
            if t.shape != shape:
                raise ValueError(f"{who}: expected initial state {name} of shape {what}, got {t.shape}")
            out.append(t)
        return tuple(out)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if getattr(self, "num_layers", 1) != 1:
            s += f", num_layers={self.num_layers}"
        if not self.use_bias:
            s += ", bias=False"
        if getattr(self, "batch_first", False):
            s += ", batch_first=True"
        if self._mode == "RNN" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.layer_norm:
            s += f", layer_norm=True, eps={self.eps}"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype.name}"
        return s


# ---------------------------------------------------------------------------------------------- cells


class _Cell(_Recurrent):
    """One time step: `cell(input (B, input_size), hx=None)` -> the new state; hx None means zeros."""

    def __init__(self, input_size, hidden_size, bias, layer_norm, *, eps, nonlinearity, dtype, rng, impl):
        super().__init__(input_size, hidden_size, bias, layer_norm, eps, nonlinearity, dtype, impl)
        self._add_layer("", self.input_size)
        self.reset_parameters(rng)

    def forward(self, input, hx=None):
        who = type(self).__name__
        x = self._tensor(input, "input")
        if x.ndim != 2 or x.shape[1] != self.input_size:
            hint = " (unbatched input is not supported: add a batch axis, x.reshape(1, -1))" if x.ndim == 1 else ""
            raise ValueError(
                f"{who}: expected input of shape (batch, input_size={self.input_size}), got {x.shape}{hint}"
            )
        B = x.shape[0]
        what = f"(batch={B}, hidden_size={self.hidden_size})"
        state = self._state_tensors(hx, (B, self.hidden_size), what)
        new = _STEPS[self._mode](self._layer(""), x, state)
        return new if self._mode == "LSTM" else new[0]


class RNNCell(_Cell):
    """Elman cell, h' = act(W_ih x + b_ih + W_hh h + b_hh) (PyTorch's nn.RNNCell), act = tanh or relu.

    layer_norm=True: h' = act(LN(W_hh h + W_ih x)), Ba et al. 2016 §3.1 — one LN (`ln`) over the summed
    inputs, whose β is the bias; there is no other bias. `forward(input (B, input_size), hx (B, H) | None)`
    returns h' (B, H). See the module docstring for the formulation and the parameter names.
    """

    _mode = "RNN"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        layer_norm: bool = False,
        *,
        eps: float = 1e-5,
        nonlinearity: str = "tanh",
        dtype=np.float32,
        rng=None,
        impl=None,
    ):
        super().__init__(
            input_size,
            hidden_size,
            bias,
            layer_norm,
            eps=eps,
            nonlinearity=nonlinearity,
            dtype=dtype,
            rng=rng,
            impl=impl,
        )


class LSTMCell(_Cell):
    """LSTM cell (PyTorch's nn.LSTMCell): gates i, f, g, o in blocks of H rows of `weight_ih`, `weight_hh`.

    layer_norm=True: Ba et al. 2016, eq. 20–22 — gates = LN(W_hh h) + LN(W_ih x) + b, each LN over all 4H
    gate pre-activations (`ln_hh`, `ln_ih`), one bias `bias` (4H,) added after them, and
    h' = σ(o) ⊙ tanh(LN(c')) (`ln_cell`); the gate order stays i, f, g, o. `forward(input (B, input_size),
    hx=(h, c) | None)` returns (h', c'), each (B, H). See the module docstring.
    """

    _mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        layer_norm: bool = False,
        *,
        eps: float = 1e-5,
        dtype=np.float32,
        rng=None,
        impl=None,
    ):
        super().__init__(
            input_size, hidden_size, bias, layer_norm, eps=eps, nonlinearity="tanh", dtype=dtype, rng=rng, impl=impl
        )


class GRUCell(_Cell):
    """GRU cell (PyTorch's nn.GRUCell): blocks r, z, n; n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)) and
    h' = (1 − z) ⊙ n + z ⊙ h.

    layer_norm=True: Ba et al. 2016, eq. 26–28, with four LNs — [r; z] = σ(LN(W_h h) + LN(W_x x)) over 2H
    (`ln_hh`, `ln_ih`), n = tanh(LN(W_in x) + r ⊙ LN(W_hn h)) over H (`ln_in`, `ln_hn`), no other bias, and
    the paper's h' = (1 − z) ⊙ h + z ⊙ n: here z weights the *new* state, the opposite of PyTorch's
    convention. `forward(input (B, input_size), hx (B, H) | None)` returns h' (B, H).
    """

    _mode = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        layer_norm: bool = False,
        *,
        eps: float = 1e-5,
        dtype=np.float32,
        rng=None,
        impl=None,
    ):
        super().__init__(
            input_size, hidden_size, bias, layer_norm, eps=eps, nonlinearity="tanh", dtype=dtype, rng=rng, impl=impl
        )


# ------------------------------------------------------------------------------------ sequence models


class _Sequence(_Recurrent):
    """A stack of `num_layers` cells run over time; layer k+1 reads layer k's hidden states.

    `forward(input, hx=None)`: input (T, B, input_size), or (B, T, input_size) with batch_first; hx the
    initial state(s) of shape (num_layers, B, H), zeros when None. Returns (output, h_n) with output the
    last layer's hidden states, (T, B, H) or (B, T, H), and h_n (num_layers, B, H) the final states.
    """

    def __init__(
        self, input_size, hidden_size, num_layers, bias, batch_first, layer_norm, *, eps, nonlinearity, dtype, rng, impl
    ):
        super().__init__(input_size, hidden_size, bias, layer_norm, eps, nonlinearity, dtype, impl)
        self.num_layers = _checks.size(type(self).__name__, "num_layers", num_layers)
        self.batch_first = _checks.flag(type(self).__name__, "batch_first", batch_first)
        for k in range(self.num_layers):
            self._add_layer(f"_l{k}", self.input_size if k == 0 else self.hidden_size)
        self.reset_parameters(rng)

    def forward(self, input, hx=None):
        who = type(self).__name__
        x = self._tensor(input, "input")
        layout = "(batch, seq_len, input_size" if self.batch_first else "(seq_len, batch, input_size"
        if x.ndim != 3 or x.shape[2] != self.input_size:
            hint = " (unbatched input is not supported: add a batch axis)" if x.ndim == 2 else ""
            raise ValueError(f"{who}: expected input of shape {layout}={self.input_size}), got {x.shape}{hint}")
        B, T = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        if T == 0:
            raise ValueError(f"{who}: the input sequence is empty (seq_len = 0, input shape {x.shape})")
        L, H = self.num_layers, self.hidden_size
        initial = self._state_tensors(hx, (L, B, H), f"(num_layers={L}, batch={B}, hidden_size={H})")
        step = _STEPS[self._mode]
        inputs = [x[:, t] if self.batch_first else x[t] for t in range(T)]  # T tensors (B, in)
        finals = []
        for k in range(L):
            layer = self._layer(f"_l{k}", steps=T)
            state = tuple(s[k] for s in initial)  # (B, H) each
            outputs = []
            for x_t in inputs:
                state = step(layer, x_t, state)
                outputs.append(state[0])
            finals.append(state)
            inputs = outputs  # the next layer reads this one's hidden states
        output = F.stack(inputs, axis=1 if self.batch_first else 0)  # (T, B, H) or (B, T, H)
        last = tuple(F.stack([state[j] for state in finals]) for j in range(len(initial)))  # (L, B, H) each
        return (output, last) if self._mode == "LSTM" else (output, last[0])


class RNN(_Sequence):
    """Multi-layer Elman RNN (PyTorch's nn.RNN); parameters `weight_ih_l{k}`, `weight_hh_l{k}`,
    `bias_ih_l{k}`, `bias_hh_l{k}`, or with layer_norm=True the LN-RNN of RNNCell (`ln_l{k}`).
    Returns (output, h_n), h_n of shape (num_layers, B, H). See _Sequence and the module docstring."""

    _mode = "RNN"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        layer_norm: bool = False,
        *,
        eps: float = 1e-5,
        nonlinearity: str = "tanh",
        dtype=np.float32,
        rng=None,
        impl=None,
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            layer_norm,
            eps=eps,
            nonlinearity=nonlinearity,
            dtype=dtype,
            rng=rng,
            impl=impl,
        )


class LSTM(_Sequence):
    """Multi-layer LSTM (PyTorch's nn.LSTM), or with layer_norm=True Ba et al.'s LN-LSTM (see LSTMCell);
    parameters as LSTMCell's with the suffix `_l{k}` (`weight_ih_l0`, `bias_l0`, `ln_cell_l0.weight`, ...).
    `forward(input, hx=(h_0, c_0) | None)` returns (output, (h_n, c_n)), h_n and c_n (num_layers, B, H)."""

    _mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        layer_norm: bool = False,
        *,
        eps: float = 1e-5,
        dtype=np.float32,
        rng=None,
        impl=None,
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            layer_norm,
            eps=eps,
            nonlinearity="tanh",
            dtype=dtype,
            rng=rng,
            impl=impl,
        )


class GRU(_Sequence):
    """Multi-layer GRU (PyTorch's nn.GRU), or with layer_norm=True Ba et al.'s LN-GRU (see GRUCell, and
    mind its convention for z); parameters as GRUCell's with the suffix `_l{k}`. Returns (output, h_n)."""

    _mode = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        layer_norm: bool = False,
        *,
        eps: float = 1e-5,
        dtype=np.float32,
        rng=None,
        impl=None,
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            layer_norm,
            eps=eps,
            nonlinearity="tanh",
            dtype=dtype,
            rng=rng,
            impl=impl,
        )
