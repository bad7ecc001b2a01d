"""npnorm.nn: Module bookkeeping, state dicts, layers, norm modules, and agreement with PyTorch."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

import npnorm
import npnorm.functional as F
from npnorm import nn
from npnorm.norms import IMPLS

# ------------------------------------------------------------------------------------------ helpers


class Block(nn.Module):
    """fc -> norm, with a buffer: two levels of nesting once put inside Net."""

    def __init__(self, n: int, rng=0):
        super().__init__()
        self.fc = nn.Linear(n, n, rng=rng)
        self.norm = nn.LayerNorm(n)
        self.register_buffer("steps", np.zeros((), dtype=np.int64))

    def forward(self, x):
        return self.norm(self.fc(x))


class Net(nn.Module):
    def __init__(self, rng=0):
        super().__init__()
        self.block = Block(3, rng=rng)
        self.head = nn.Linear(3, 2, rng=rng)
        self.scale = nn.Parameter(np.ones(2, dtype=np.float32))
        self.register_buffer("running", np.arange(2, dtype=np.float32))

    def forward(self, x):
        return self.head(self.block(x)) * self.scale


NET_PARAMS = [
    "scale",
    "block.fc.weight",
    "block.fc.bias",
    "block.norm.weight",
    "block.norm.bias",
    "head.weight",
    "head.bias",
]
NET_BUFFERS = ["running", "block.steps"]


def randn(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def snapshot(model: nn.Module) -> dict:
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_state_equal(model: nn.Module, expected: dict) -> None:
    actual = model.state_dict()
    assert actual.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(actual[k], expected[k], err_msg=k)


# ------------------------------------------------------------------------------ registration, traversal


def test_registration_and_dotted_names():
    net = Net()
    assert sorted(n for n, _ in net.named_parameters()) == sorted(NET_PARAMS)
    assert [n for n, _ in net.named_buffers()] == NET_BUFFERS
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert [type(m).__name__ for m in net.children()] == ["Block", "Linear"]
    assert [n for n, _ in net.named_modules()] == ["", "block", "block.fc", "block.norm", "head"]
    assert net.block.fc.weight.shape == (3, 3)
    assert isinstance(net.running, np.ndarray)
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["scale"]


def test_reassigning_and_deleting_state():
    net = Net()
    net.head = nn.Identity()  # a module replaces a module: its parameters leave the list
    assert not any(n.startswith("head.") for n, _ in net.named_parameters())
    net.scale = None  # a declared parameter may become None ...
    assert net.scale is None and "scale" not in net.state_dict()
    with pytest.raises(TypeError, match="parameter 'scale'"):
        net.scale = npnorm.tensor([1.0, 2.0])  # ... but not a plain Tensor
    with pytest.raises(TypeError, match="buffer 'running'"):
        net.running = [1, 2]
    net.running = np.zeros(2, dtype=np.float32)
    np.testing.assert_array_equal(net.state_dict()["running"], [0, 0])
    del net.block
    assert [n for n, _ in net.named_modules()] == ["", "head"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = net.nope


def test_assigning_state_before_init_is_a_clear_error():
    class Forgetful(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Forgetful()


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda m: m.register_buffer("a.b", np.zeros(1)), KeyError),
        (lambda m: m.register_buffer("", np.zeros(1)), KeyError),
        (lambda m: m.register_buffer("forward", np.zeros(1)), KeyError),
        (lambda m: m.register_buffer("b", [1.0]), TypeError),
        (lambda m: m.register_parameter("w", npnorm.tensor([1.0])), TypeError),
        (lambda m: m.add_module("m", np.zeros(1)), TypeError),
    ],
)
def test_bad_registration(call, error):
    with pytest.raises(error):
        call(nn.Module())


def test_shared_parameter_listed_once():
    a, b = nn.Linear(3, 3, rng=0), nn.Linear(3, 3, rng=1)
    b.weight = a.weight  # tied weights
    model = nn.Sequential(a, nn.Tanh(), b, a)  # and a module used twice
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.bias"]
    assert len(list(model.parameters())) == 3
    assert len(list(model.modules())) == 4  # Sequential, a, Tanh, b
    # state_dict, like PyTorch's, lists a shared array under every name that reaches it.
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"]
    # Gradients from both uses accumulate into the one parameter.
    x = npnorm.tensor(randn(2, 3, dtype=np.float32))
    model(x).sum().backward()
    assert a.weight.grad is not None and b.weight.grad is a.weight.grad


def test_buffers_in_state_dict_not_in_parameters():
    net = Net()
    params = {id(p) for p in net.parameters()}
    assert all(id(b) not in params for b in net.buffers())
    assert sorted(net.state_dict()) == sorted(NET_PARAMS + NET_BUFFERS)
    assert net.state_dict()["block.steps"].dtype == np.int64  # buffers keep their dtype


def test_train_eval_propagate():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.block.train()
    assert net.block.fc.training and not net.training and not net.head.training
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="mode"):
        net.train("no")


def test_zero_grad_and_requires_grad():
    net = Net()
    x = npnorm.tensor(randn(4, 3))
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not net(x).requires_grad


def test_call_passes_arguments_to_forward():
    class Add(nn.Module):
        def forward(self, x, *, y=0):
            return x + y

    assert Add()(1, y=2) == 3
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        nn.Module()(1)


def test_repr_like_pytorch():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.LayerNorm(3, eps=1e-6), nn.Dropout(0.25))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=3, bias=True)\n"
        "  (1): ReLU()\n"
        "  (2): LayerNorm((3,), eps=1e-06, elementwise_affine=True)\n"
        "  (3): Dropout(p=0.25)\n"
        ")"
    )
    assert "(block): Block(\n    (fc): Linear" in repr(Net())
    assert repr(nn.Parameter(np.zeros(1))).startswith("Parameter containing:\ntensor(")


def test_deepcopy_gives_independent_parameters():
    net = Net()
    twin = copy.deepcopy(net)
    twin.head.weight.data[...] = 0
    assert net.head.weight.data.any()
    assert isinstance(twin.head.weight, nn.Parameter)


# ------------------------------------------------------------------------------------------- state dict


def test_state_dict_returns_copies():
    net = Net()
    sd = net.state_dict()
    before = {k: v.copy() for k, v in sd.items()}
    net.head.weight.data += 1  # training changes the model ...
    net.running += 1
    for k in sd:
        np.testing.assert_array_equal(sd[k], before[k])  # ... not the saved dict
    sd["head.bias"][...] = 99  # and editing the dict does not touch the model
    assert not (net.head.bias.data == 99).any()


def test_round_trip_into_fresh_model():
    source, target = Net(rng=1), Net(rng=2)
    x = npnorm.tensor(randn(5, 3))
    assert not np.allclose(source(x).data, target(x).data)
    weight_array = target.head.weight.data
    result = target.load_state_dict(source.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(source(x).data, target(x).data)
    assert target.head.weight.data is weight_array  # copied in place: optimizers keep their references


def test_load_casts_to_parameter_dtype_and_accepts_tensors():
    model = nn.Linear(2, 2)
    sd = {"weight": np.eye(2, dtype=np.float64), "bias": npnorm.tensor([1.0, 2.0])}
    model.load_state_dict(sd)
    assert model.weight.dtype == np.float32 and model.bias.dtype == np.float32
    np.testing.assert_array_equal(model.bias.data, [1, 2])


def test_strict_load_names_every_problem_and_changes_nothing():
    net = Net()
    before = snapshot(net)
    sd = Net(rng=5).state_dict()
    del sd["head.bias"], sd["block.steps"]
    sd["head.weight"] = np.zeros((3, 2), dtype=np.float32)  # transposed
    sd["running"] = np.zeros(5, dtype=np.float32)
    sd["extra.weight"] = np.zeros(1)
    sd["typo"] = np.zeros(1)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(sd)
    message = str(info.value)
    assert "for Net" in message
    assert 'Missing key(s) in state_dict: "block.steps", "head.bias".' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight", "typo".' in message
    assert re.search(r"size mismatch for head.weight: .*\(3, 2\).*\(2, 3\)", message)
    assert re.search(r"size mismatch for running: .*\(5,\).*\(2,\)", message)
    # The valid keys (e.g. block.fc.weight) were not loaded either: all or nothing.
    assert_state_equal(net, before)


def test_bad_value_is_reported():
    model = nn.Linear(2, 1)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="bad value for weight: expected a numeric array"):
        model.load_state_dict({"weight": np.array([["a", "b"]]), "bias": np.zeros(1)})
    assert_state_equal(model, before)
    with pytest.raises(TypeError, match="dict"):
        model.load_state_dict([("weight", np.zeros((1, 2)))])


def test_non_strict_load():
    net = Net(rng=1)
    source = Net(rng=2).state_dict()
    partial = {k: v for k, v in source.items() if k.startswith("head.")}
    partial["unused"] = np.zeros(3)
    result = net.load_state_dict(partial, strict=False)
    assert sorted(result.missing_keys) == sorted(set(NET_PARAMS + NET_BUFFERS) - {"head.weight", "head.bias"})
    assert result.unexpected_keys == ["unused"]
    np.testing.assert_array_equal(net.head.weight.data, source["head.weight"])
    assert not np.array_equal(net.block.fc.weight.data, source["block.fc.weight"])
    # A shape mismatch is an error even when not strict: there is no sensible way to load it.
    with pytest.raises(RuntimeError, match="size mismatch for head.bias"):
        net.load_state_dict({"head.bias": np.zeros(7)}, strict=False)


# --------------------------------------------------------------------------------------------- Linear


def test_linear_layout_and_init_bounds():
    lin = nn.Linear(16, 40, rng=0)
    assert lin.weight.shape == (40, 16) and lin.bias.shape == (40,)
    assert lin.weight.dtype == np.float32
    bound = 1 / np.sqrt(16)
    for p in (lin.weight, lin.bias):
        assert np.all(np.abs(p.data) <= bound)
    assert lin.weight.data.max() > 0.9 * bound and lin.weight.data.min() < -0.9 * bound  # fills the range
    assert nn.Linear(3, 2, bias=False).bias is None
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]


def test_linear_init_reproducible():
    npnorm.manual_seed(7)
    a = nn.Linear(5, 4)
    npnorm.manual_seed(7)
    b = nn.Linear(5, 4)
    c = nn.Linear(5, 4)  # the generator moved on
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(b.weight.data, c.weight.data)
    np.testing.assert_array_equal(nn.Linear(5, 4, rng=3).bias.data, nn.Linear(5, 4, rng=3).bias.data)
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(nn.Linear(5, 4, rng=g1).weight.data, nn.Linear(5, 4, rng=g2).weight.data)


def test_linear_forward_matches_formula():
    lin = nn.Linear(4, 3, dtype=np.float64, rng=0)
    x = randn(2, 5, 4, dtype=np.float64)
    np.testing.assert_allclose(lin(x).data, x @ lin.weight.data.T + lin.bias.data, rtol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(bias):
    lin = nn.Linear(4, 3, bias=bias, dtype=np.float64, rng=0)
    x = npnorm.tensor(randn(2, 4, dtype=np.float64), requires_grad=True)
    assert npnorm.gradcheck(lambda x, *params: lin(x), (x, *lin.parameters()))


def test_embedding_gradcheck():
    emb = nn.Embedding(5, 3, dtype=np.float64)
    index = np.array([[0, 4, 4], [2, 0, 1]])  # repeated rows: their gradients add up
    assert npnorm.gradcheck(lambda weight: emb(index) * emb(index), (emb.weight,))


@pytest.mark.parametrize("impl", ["numba", "numpy", "composed"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_module_gradcheck(impl, training):
    """Through the layer, with respect to the input, γ and β; evaluation with running statistics moved away from
    their initial 0 and 1."""
    rng = np.random.default_rng(8)
    bn = nn.BatchNorm1d(3, dtype=np.float64, impl=impl)
    for name in ("weight", "bias"):
        getattr(bn, name).data[...] = rng.standard_normal(3)
    bn.running_mean[...] = rng.standard_normal(3)
    bn.running_var[...] = rng.uniform(0.5, 2.0, 3)
    bn.train(training)
    x = npnorm.tensor(rng.standard_normal((5, 3, 2)), requires_grad=True)
    before = bn.running_mean.copy()
    # momentum 0 while checking: each call in training would move the running statistics otherwise
    bn.momentum = 0.0
    assert npnorm.gradcheck(lambda t, *params: bn(t), (x, *bn.parameters()))
    np.testing.assert_array_equal(bn.running_mean, before)


def test_grad_probe_gradcheck():
    from npnorm.experiments._train import GradProbe

    x = npnorm.tensor(np.random.default_rng(9).standard_normal((3, 4)), requires_grad=True)
    assert npnorm.gradcheck(lambda t: GradProbe.apply(t, []) ** 2, (x,))


def test_astype_gradcheck():
    """Cast's backward casts the gradient back: through float32 and back, with a step float32 can resolve."""
    x = npnorm.tensor(np.random.default_rng(10).standard_normal((3, 4)), requires_grad=True)
    fn = lambda t: t.astype(np.float32).astype(np.float64) * t  # noqa: E731
    assert npnorm.gradcheck(fn, (x,), eps=1e-2, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: nn.Linear(-1, 3), ValueError, "in_features"),
        (lambda: nn.Linear(3, 2.5), ValueError, "out_features"),
        (lambda: nn.Linear(3, 2, dtype=np.int32), TypeError, "dtype"),
        (lambda: nn.Linear(3, 2, rng="seed"), TypeError, "rng"),
        (lambda: nn.Embedding(0, 3), ValueError, "num_embeddings"),
        (lambda: nn.Dropout(1.5), ValueError, "p must be"),
        (lambda: nn.Dropout(-0.1), ValueError, "p must be"),
        (lambda: nn.GELU("fast"), ValueError, "approximate"),
        (lambda: nn.LayerNorm(4, eps=-1e-5), ValueError, "eps"),
        (lambda: nn.LayerNorm(0), ValueError, "normalized_shape"),
        (lambda: nn.LayerNorm(()), ValueError, "normalized_shape"),
        (lambda: nn.LayerNorm("4"), ValueError, "normalized_shape"),
        (lambda: nn.LayerNorm(4, impl="cuda"), ValueError, "impl"),
        (lambda: nn.LayerNorm(4, dtype="float16"), TypeError, "dtype"),
        (lambda: nn.AdaNorm(4, eps=-1.0), ValueError, "eps"),
        (lambda: nn.AdaNorm(4, k=float("nan")), ValueError, "k must"),
        (lambda: nn.AdaNorm(4, impl="fast"), ValueError, "impl"),
    ],
)
def test_constructor_validation(make, error, match):
    with pytest.raises(error, match=match):
        make()


# PyTorch's positional order, written for our classes: each lands a non-flag in one of our flags
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: nn.RNN(4, 3, 2, "relu"), "RNN: bias must be True or False, got 'relu'"),  # PyTorch: nonlinearity
        (lambda: nn.LSTM(3, 4, 2, True, False, 0.5), "LSTM: layer_norm must be True or False, got 0.5"),  # dropout
        (lambda: nn.GRU(3, 4, 1, True, "yes"), "GRU: batch_first must be True or False"),
        (lambda: nn.RNNCell(3, 4, True, "relu"), "RNNCell: layer_norm must be True or False, got 'relu'"),
        (lambda: nn.LSTMCell(3, 4, True, "cpu"), "LSTMCell: layer_norm must be True or False"),  # PyTorch: device
        (lambda: nn.GRUCell(3, 4, "no"), "GRUCell: bias must be True or False"),
        (lambda: nn.LayerNorm(4, 1e-5, True, True, "cpu"), "LayerNorm: detach_mean must be True or False"),
        (lambda: nn.LayerNorm(4, elementwise_affine=1), "LayerNorm: elementwise_affine must be True or False"),
        (lambda: nn.RMSNorm(4, None, "cpu"), "RMSNorm: elementwise_affine must be True or False"),
        (lambda: nn.BatchNorm1d(4, 1e-5, 0.1, True, "cpu"), "BatchNorm1d: track_running_stats must be True or"),
        (lambda: nn.GroupNorm(2, 4, 1e-5, "cpu"), "GroupNorm: affine must be True or False"),
        (lambda: nn.Linear(3, 2, "cpu"), "Linear: bias must be True or False"),
        (lambda: nn.WeightNormLinear(3, 2, 0), "WeightNormLinear: bias must be True or False, got 0"),
    ],
)
def test_flags_take_true_or_false_only(make, match):
    with pytest.raises(TypeError, match=re.escape(match)):
        make()
    assert nn.LSTM(3, 4, 1, np.bool_(True), False, True).layer_norm  # NumPy's bools are bools


# ------------------------------------------------------------------------------------------ containers


def test_sequential():
    layers = [nn.Linear(3, 4, rng=0), nn.Tanh(), nn.Linear(4, 2, rng=1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    x = npnorm.tensor(randn(5, 3))
    np.testing.assert_array_equal(seq(x).data, layers[2](layers[1](layers[0](x))).data)
    tail = seq[1:]
    assert isinstance(tail, nn.Sequential) and list(tail) == layers[1:]
    assert list(tail.state_dict()) == ["2.weight", "2.bias"]  # a slice keeps the names, as in PyTorch
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(nn.ReLU(), lambda x: x)
    named = nn.Sequential({"fc": nn.Linear(3, 2), "act": nn.ReLU()})
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    seq.append(nn.Sigmoid())
    assert len(seq) == 4 and isinstance(seq[3], nn.Sigmoid)
    assert nn.Sequential()(x) is x


def test_module_list():
    cells = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    cells.append(nn.LayerNorm(2))
    assert len(cells) == 3 and isinstance(cells[-1], nn.LayerNorm)
    assert list(cells.state_dict())[:2] == ["0.weight", "0.bias"]
    assert len(cells[:2]) == 2


# ------------------------------------------------------------------------------ activations and dropout


@pytest.mark.parametrize(
    "module, fn",
    [
        (nn.ReLU(), F.relu),
        (nn.Tanh(), F.tanh),
        (nn.Sigmoid(), F.sigmoid),
        (nn.GELU(), F.gelu),
        (nn.GELU("tanh"), lambda x: F.gelu(x, approximate="tanh")),
        (nn.Identity(), lambda x: x),
    ],
)
def test_activation_modules_equal_functional(module, fn):
    x = npnorm.tensor(randn(3, 4))
    np.testing.assert_array_equal(module(x).data, fn(x).data)


def test_dropout_train_and_eval():
    drop = nn.Dropout(0.5)
    x = npnorm.tensor(np.ones((200, 50), dtype=np.float32), requires_grad=True)
    y = drop(x).data
    assert set(np.unique(y)) == {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6
    drop.eval()
    assert drop(x) is x  # the identity in eval mode
    assert nn.Dropout(0.0)(x) is x
    npnorm.manual_seed(3)
    a = nn.Dropout(0.3)(x).data
    npnorm.manual_seed(3)
    np.testing.assert_array_equal(a, nn.Dropout(0.3)(x).data)
    np.testing.assert_array_equal(nn.Dropout(0.3, rng=1)(x).data, nn.Dropout(0.3, rng=1)(x).data)


# -------------------------------------------------------------------------------------------- Embedding


def test_embedding_forward_and_backward_with_repeats():
    emb = nn.Embedding(5, 3, dtype=np.float64, rng=0)
    assert emb.weight.shape == (5, 3)
    idx = np.array([[1, 3, 1], [1, 0, 4]])
    out = emb(idx)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.data, emb.weight.data[idx])
    upstream = randn(2, 3, 3, dtype=np.float64)
    out.backward(upstream)
    expected = np.zeros((5, 3))
    for (i, j), k in np.ndenumerate(idx):
        expected[k] += upstream[i, j]
    np.testing.assert_allclose(emb.weight.grad, expected, rtol=1e-12)  # row 1 gets three contributions
    assert not emb.weight.grad[2].any()
    # Other index forms: a list, an int, a Tensor of whole numbers.
    np.testing.assert_array_equal(emb([2, 2]).data, emb.weight.data[[2, 2]])
    np.testing.assert_array_equal(emb(4).data, emb.weight.data[4])
    np.testing.assert_array_equal(emb(npnorm.tensor([0, 4])).data, emb.weight.data[[0, 4]])


def test_embedding_init_is_standard_normal():
    w = nn.Embedding(1000, 20, rng=0).weight.data
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02


@pytest.mark.parametrize(
    "indices, error, match",
    [
        (np.array([0, 5]), IndexError, "index 5 is out of range for 5 embeddings"),
        (np.array([-1, 2]), IndexError, "index -1 is out of range"),
        (np.array([2, 2**63], dtype=np.uint64), IndexError, "index 9223372036854775808 is out of range"),
        (npnorm.tensor([1.0, 1e30]), IndexError, r"index 1e\+30 is out of range"),  # not wrapped round by a cast
        (npnorm.tensor([7.0]), IndexError, "index 7 is out of range"),
        (np.array([0.0, 1.0]), TypeError, "must be integers"),
        (np.array([True, False]), TypeError, "must be integers"),
        (npnorm.tensor([0.5]), TypeError, "whole numbers"),
    ],
)
def test_embedding_bad_indices(indices, error, match):
    with pytest.raises(error, match=match):
        nn.Embedding(5, 2)(indices)


# ---------------------------------------------------------------------------------------- norm modules


def config_id(config: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


LAYER_NORM_CONFIGS = [
    dict(),
    dict(bias=False),
    dict(elementwise_affine=False),
    dict(eps=0.0),
    dict(detach_mean=True),
    dict(detach_var=True),
    dict(detach_mean=True, detach_var=True),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", LAYER_NORM_CONFIGS, ids=config_id)
def test_layer_norm_module_equals_functional(impl, config):
    shape = (3, 4)
    module = nn.LayerNorm(shape, impl=impl, dtype=np.float64, **config)
    for i, p in enumerate(module.parameters()):  # non-trivial γ and β
        p.data[...] = randn(*shape, seed=10 + i, dtype=np.float64)
    x_data = randn(2, 3, 4, seed=1, dtype=np.float64) * 3 + 1
    upstream = randn(2, 3, 4, seed=2, dtype=np.float64)

    x1 = npnorm.tensor(x_data, requires_grad=True)
    out = module(x1)
    out.backward(upstream)
    module_grads = [p.grad for p in module.parameters()]
    module.zero_grad()
    params = list(module.parameters())

    x2 = npnorm.tensor(x_data, requires_grad=True)
    expected = F.layer_norm(
        x2,
        shape,
        module.weight,
        module.bias,
        config.get("eps", 1e-5),
        detach_mean=config.get("detach_mean", False),
        detach_var=config.get("detach_var", False),
        impl=impl,
    )
    expected.backward(upstream)
    np.testing.assert_allclose(out.data, expected.data, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)
    for g, p in zip(module_grads, params, strict=True):
        np.testing.assert_allclose(g, p.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_ada_norm_module_equals_functional(impl):
    module = nn.AdaNorm(6, C=2.0, k=0.2, eps=1e-4, impl=impl)
    assert list(module.parameters()) == [] and module.state_dict() == {}
    x_data = randn(4, 6, seed=3, dtype=np.float64)
    x1, x2 = npnorm.tensor(x_data, requires_grad=True), npnorm.tensor(x_data, requires_grad=True)
    out, expected = module(x1), F.ada_norm(x2, 6, C=2.0, k=0.2, eps=1e-4, impl=impl)
    upstream = randn(4, 6, seed=4, dtype=np.float64)
    out.backward(upstream)
    expected.backward(upstream)
    np.testing.assert_allclose(out.data, expected.data, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", [dict(), dict(bias=False), dict(elementwise_affine=False)], ids=config_id)
def test_layer_norm_gradcheck(impl, config):
    module = nn.LayerNorm(5, dtype=np.float64, impl=impl, **config)
    for i, p in enumerate(module.parameters()):
        p.data[...] = randn(5, seed=20 + i, dtype=np.float64)
    x = npnorm.tensor(randn(3, 5, seed=5, dtype=np.float64), requires_grad=True)
    assert npnorm.gradcheck(lambda x, *params: module(x), (x, *module.parameters()))


def test_layer_norm_parameters():
    full = nn.LayerNorm((2, 3))
    assert [n for n, _ in full.named_parameters()] == ["weight", "bias"]
    assert full.weight.shape == (2, 3) and full.weight.dtype == np.float32
    np.testing.assert_array_equal(full.weight.data, np.ones((2, 3)))
    np.testing.assert_array_equal(full.bias.data, np.zeros((2, 3)))
    assert nn.LayerNorm(4).normalized_shape == (4,)

    simple = nn.LayerNorm(4, elementwise_affine=False)  # LayerNorm-simple
    assert list(simple.parameters()) == [] and simple.weight is None and simple.bias is None
    assert simple.state_dict() == {}

    gain_only = nn.LayerNorm(4, bias=False)
    assert [n for n, _ in gain_only.named_parameters()] == ["weight"] and gain_only.bias is None
    assert "bias=False" in repr(gain_only)


@pytest.mark.parametrize(
    "layer, x",
    [
        (nn.BatchNorm1d(3), np.ones((4, 5), np.float32)),
        (nn.BatchNorm1d(3, affine=False), np.ones((4, 5, 2), np.float32)),  # running statistics only
        (nn.GroupNorm(1, 3), np.ones((4, 5, 2), np.float32)),
    ],
    ids=["batch_norm", "batch_norm-statistics-only", "group_norm"],
)
def test_an_input_with_the_wrong_channel_count_is_named_as_such(layer, x):
    """It was blamed on the weight ("weight has shape (3,), expected (5,)")."""
    with pytest.raises(ValueError, match=r"input of shape \(4, 5.*\) has 5 channels, but the layer has num_\w+=3"):
        layer(x)


def test_layers_without_per_channel_state_take_any_channel_count_as_pytorch_does():
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    assert nn.BatchNorm1d(3, affine=False, track_running_stats=False)(x).shape == (4, 5)
    assert nn.GroupNorm(1, 3, affine=False)(x).shape == (4, 5)


def test_layer_norm_dtype_mismatch_is_clear():
    with pytest.raises(TypeError, match="float32 but the input is float64"):
        nn.LayerNorm(3)(npnorm.tensor(np.ones((2, 3))))


# ------------------------------------------------------------------------------------------- PyTorch

TORCH_IMPLS = ["numpy", "composed", "numba"]


@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_matches_pytorch(impl):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(
        torch.nn.Linear(6, 8),
        torch.nn.LayerNorm(8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 4, bias=False),
        torch.nn.LayerNorm(4, eps=1e-3, bias=False),
        torch.nn.GELU(),
        torch.nn.LayerNorm(4, elementwise_affine=False),
    ).double()
    with torch.no_grad():  # move γ, β away from 1, 0 so that they matter
        for name, p in tmodel.named_parameters():
            if name.startswith(("1.", "4.")):
                p.add_(torch.randn_like(p))
    model = nn.Sequential(
        nn.Linear(6, 8, dtype=np.float64),
        nn.LayerNorm(8, dtype=np.float64, impl=impl),
        nn.Tanh(),
        nn.Linear(8, 4, bias=False, dtype=np.float64),
        nn.LayerNorm(4, eps=1e-3, bias=False, dtype=np.float64, impl=impl),
        nn.GELU(),
        nn.LayerNorm(4, elementwise_affine=False, impl=impl),
    )
    model.load_state_dict({k: v.numpy() for k, v in tmodel.state_dict().items()})  # strict: same keys

    x_data = randn(5, 6, seed=7, dtype=np.float64) * 2
    upstream = randn(5, 4, seed=8, dtype=np.float64)
    tx = torch.tensor(x_data, requires_grad=True)
    tout = tmodel(tx)
    tout.backward(torch.tensor(upstream))
    x = npnorm.tensor(x_data, requires_grad=True)
    out = model(x)
    out.backward(upstream)

    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    tgrads = {n: p.grad.numpy() for n, p in tmodel.named_parameters()}
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads.keys() == tgrads.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], tgrads[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_embedding_matches_pytorch():
    torch = pytest.importorskip("torch")
    temb = torch.nn.Embedding(6, 3).double()
    emb = nn.Embedding(6, 3, dtype=np.float64)
    emb.load_state_dict({k: v.numpy() for k, v in temb.state_dict().items()})
    idx = np.array([[0, 5, 5], [2, 0, 5]])
    upstream = randn(2, 3, 3, seed=9, dtype=np.float64)
    tout = temb(torch.tensor(idx))
    tout.backward(torch.tensor(upstream))
    out = emb(idx)
    out.backward(upstream)
    np.testing.assert_array_equal(out.data, tout.detach().numpy())
    np.testing.assert_allclose(emb.weight.grad, temb.weight.grad.numpy(), rtol=1e-12)


def test_linear_rejects_a_mixed_dtype_input():
    layer = nn.Linear(3, 2, rng=0)  # float32 parameters
    with pytest.raises(TypeError, match="linear: weight is float32 but the input is float64"):
        layer(npnorm.tensor(np.ones((1, 3))))


@pytest.mark.parametrize("impl", ["numba", "numpy", "composed"])
def test_batch_norm_module_matches_pytorch(impl):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    ours = nn.BatchNorm1d(4, momentum=0.2, dtype=np.float64, impl=impl)
    theirs = torch.nn.BatchNorm1d(4, momentum=0.2, dtype=torch.float64)
    ours.weight.data[...] = rng.standard_normal(4)
    theirs.weight.data = torch.from_numpy(ours.weight.data.copy())
    for _ in range(3):
        x0 = rng.standard_normal((6, 4, 3))
        x = npnorm.tensor(x0, requires_grad=True)
        tx = torch.tensor(x0, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        dy = rng.standard_normal(y.shape)
        y.backward(dy)
        ty.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), rtol=1e-12, err_msg=name)
    ours.eval()
    theirs.eval()
    x0 = rng.standard_normal((2, 4))
    np.testing.assert_allclose(ours(npnorm.tensor(x0)).data, theirs(torch.tensor(x0)).detach().numpy(), rtol=1e-10)


@pytest.mark.parametrize("impl", ["numba", "numpy", "composed"])
def test_group_norm_module_matches_functional(impl):
    rng = np.random.default_rng(6)
    m = nn.GroupNorm(2, 6, dtype=np.float64, impl=impl)
    m.weight.data[...] = rng.standard_normal(6)
    x = npnorm.tensor(rng.standard_normal((3, 6, 5)), requires_grad=True)
    np.testing.assert_array_equal(m(x).data, F.group_norm(x, 2, m.weight, m.bias, 1e-5, impl=impl).data)
    m.bias.data[...] = rng.standard_normal(6)
    assert npnorm.gradcheck(lambda t, *params: m(t), (x, *m.parameters()))  # weight and bias too
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(4, 6)
