"""Optimizers, clipping and schedulers: hand-computed steps, PyTorch trajectories, state save/resume.

Three kinds of evidence:
1. a few steps of each update rule written out with NumPy in the test (every branch: momentum, dampening,
   Nesterov, L2 and decoupled weight decay);
2. 20-step trajectories on a small least-squares problem against torch.optim (float64, to 1e-10), when
   torch is installed;
3. state_dict -> npnorm.save -> npnorm.load -> load_state_dict resumes bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import npnorm
from npnorm.optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR, clip_grad_norm_


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


# ------------------------------------------------------------------------------------------ helpers
def _problem(rng, dtype=np.float64):
    """A linear least-squares problem: parameters W (3, 4), b (3,), and grad(W, b) -> (dW, db)."""
    x = rng.standard_normal((8, 4))  # (N, in)
    y = rng.standard_normal((8, 3))  # (N, out)
    w0 = rng.standard_normal((3, 4)).astype(dtype)
    b0 = rng.standard_normal(3).astype(dtype)

    def grad(w, b):
        # L = mean((x W^T + b - y)^2): dL/dW = 2/(N·out) r^T x, dL/db = 2/(N·out) Σ_n r
        r = x.astype(w.dtype) @ w.T + b - y.astype(w.dtype)  # (N, out)
        scale = w.dtype.type(2 / r.size)
        return scale * r.T @ x.astype(w.dtype), scale * r.sum(0)

    return w0, b0, grad


def _params(*arrays):
    return [npnorm.tensor(a, requires_grad=True) for a in arrays]


def _set_grads(params, grad):
    for p, g in zip(params, grad(*(p.data for p in params)), strict=True):
        p.grad = g


def _torch_run(torch, name, kwargs, arrays, grad, steps, groups=None):
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    spec = tparams if groups is None else [dict(g, params=[tparams[i] for i in g["params"]]) for g in groups]
    opt = getattr(torch.optim, name)(spec, **kwargs)
    history = []
    for _ in range(steps):
        for p, g in zip(tparams, grad(*(p.detach().numpy() for p in tparams)), strict=True):
            p.grad = torch.from_numpy(np.array(g))
        opt.step()
        history.append([p.detach().numpy().copy() for p in tparams])
    return history


def _our_run(name, kwargs, arrays, grad, steps, groups=None):
    params = _params(*arrays)
    spec = params if groups is None else [dict(g, params=[params[i] for i in g["params"]]) for g in groups]
    opt = getattr(npnorm.optim, name)(spec, **kwargs)
    history = []
    for _ in range(steps):
        _set_grads(params, grad)
        opt.step()
        history.append([p.data.copy() for p in params])
    return history, params, opt


CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.05, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1, "nesterov": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.02, "betas": (0.5, 0.9), "weight_decay": 0.3}),
]
CASE_IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw in CASES]


# --------------------------------------------------------------------------------- by hand: SGD
def test_sgd_plain_step_by_hand():
    theta0, g0, g1 = np.array([1.0, -2.0, 0.5]), np.array([0.5, 0.25, -4.0]), np.array([-1.0, 2.0, 0.0])
    (p,) = _params(theta0)
    opt = SGD([p], lr=0.1)
    p.grad = g0.copy()
    opt.step()
    theta1 = theta0 - 0.1 * g0
    np.testing.assert_array_equal(p.data, theta1)
    p.grad = g1.copy()
    opt.step()
    np.testing.assert_array_equal(p.data, theta1 - 0.1 * g1)
    np.testing.assert_array_equal(p.grad, g1)  # the gradient itself is left alone
    assert opt.state[id(p)] == {}  # plain SGD keeps no state


# a 0-d parameter too: with weight decay, g + λθ is then a NumPy scalar, not an array
@pytest.mark.parametrize("shape", [(2,), ()], ids=["vector", "0-d"])
def test_sgd_momentum_dampening_weight_decay_by_hand(shape):
    lr, mu, tau, lam = 0.1, 0.9, 0.2, 0.01
    theta = [np.array([1.0, -2.0])[: shape[0] if shape else 1].reshape(shape)]
    grads = [np.array(v)[: shape[0] if shape else 1].reshape(shape) for v in ([0.5, 0.25], [-1.0, 2.0], [0.3, 0.1])]
    (p,) = _params(theta[0])
    opt = SGD([p], lr=lr, momentum=mu, dampening=tau, weight_decay=lam)
    for g in grads:
        p.grad = g.copy()
        opt.step()
    # Written out: d_t = g_t + λθ_t; b_1 = d_0 (no dampening on the first step); b_t = μb + (1 − τ)d_t.
    d0 = grads[0] + lam * theta[0]
    b1 = d0
    theta.append(theta[0] - lr * b1)
    d1 = grads[1] + lam * theta[1]
    b2 = mu * b1 + (1 - tau) * d1
    theta.append(theta[1] - lr * b2)
    d2 = grads[2] + lam * theta[2]
    b3 = mu * b2 + (1 - tau) * d2
    theta.append(theta[2] - lr * b3)
    np.testing.assert_allclose(p.data, theta[3], rtol=1e-14)
    np.testing.assert_allclose(opt.state[id(p)]["momentum_buffer"], b3, rtol=1e-14)


def test_sgd_nesterov_by_hand():
    lr, mu = 0.05, 0.8
    theta0 = np.array([2.0, -1.0, 0.5])
    g0, g1 = np.array([1.0, -3.0, 0.5]), np.array([0.2, 0.4, -0.6])
    (p,) = _params(theta0)
    opt = SGD([p], lr=lr, momentum=mu, nesterov=True)
    for g in (g0, g1):
        p.grad = g.copy()
        opt.step()
    b1 = g0
    theta1 = theta0 - lr * (g0 + mu * b1)  # look-ahead: step along g + μb
    b2 = mu * b1 + g1
    theta2 = theta1 - lr * (g1 + mu * b2)
    np.testing.assert_allclose(p.data, theta2, rtol=1e-14)


# -------------------------------------------------------------------------------- by hand: Adam
def test_adam_by_hand_with_l2_weight_decay():
    lr, (b1, b2), eps, lam = 0.01, (0.9, 0.999), 1e-8, 0.1
    theta0 = np.array([1.0, -2.0, 3.0])
    g0, g1 = np.array([0.5, -0.25, 2.0]), np.array([-1.0, 0.5, 0.1])
    (p,) = _params(theta0)
    opt = Adam([p], lr=lr, weight_decay=lam)
    p.grad = g0.copy()
    opt.step()
    d0 = g0 + lam * theta0  # L2: the decay goes through the moments
    m, v = (1 - b1) * d0, (1 - b2) * d0**2
    theta1 = theta0 - lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)
    np.testing.assert_allclose(p.data, theta1, rtol=1e-13)
    # The first Adam step moves every coordinate by about lr, against the sign of its gradient.
    np.testing.assert_allclose(p.data, theta0 - lr * np.sign(d0), rtol=1e-6)

    p.grad = g1.copy()
    opt.step()
    d1 = g1 + lam * theta1
    m, v = b1 * m + (1 - b1) * d1, b2 * v + (1 - b2) * d1**2
    theta2 = theta1 - lr * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps)
    np.testing.assert_allclose(p.data, theta2, rtol=1e-13)
    state = opt.state[id(p)]
    assert state["step"] == 2
    np.testing.assert_allclose(state["exp_avg"], m, rtol=1e-14)
    np.testing.assert_allclose(state["exp_avg_sq"], v, rtol=1e-14)


def test_adamw_by_hand_decoupled_weight_decay():
    lr, (b1, b2), eps, lam = 0.05, (0.8, 0.95), 1e-3, 0.2
    theta0 = np.array([1.0, -2.0])
    g0, g1 = np.array([0.3, 0.7]), np.array([-0.4, 0.1])
    (p,) = _params(theta0)
    opt = AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=lam)
    for g in (g0, g1):
        p.grad = g.copy()
        opt.step()
    # θ ← θ(1 − γλ) first; the moments see the raw gradient.
    m, v = (1 - b1) * g0, (1 - b2) * g0**2
    theta1 = theta0 * (1 - lr * lam)
    theta1 = theta1 - lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)
    m, v = b1 * m + (1 - b1) * g1, b2 * v + (1 - b2) * g1**2
    theta2 = theta1 * (1 - lr * lam)
    theta2 = theta2 - lr * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps)
    np.testing.assert_allclose(p.data, theta2, rtol=1e-13)


def test_adamw_default_weight_decay_differs_from_adam():
    assert AdamW(_params(np.zeros(2))).param_groups[0]["weight_decay"] == 1e-2
    assert Adam(_params(np.zeros(2))).param_groups[0]["weight_decay"] == 0.0


# ------------------------------------------------------------------------------- against PyTorch
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_trajectory_matches_torch_float64(torch, rng, name, kwargs):
    w0, b0, grad = _problem(rng)
    ours, _, _ = _our_run(name, kwargs, (w0, b0), grad, steps=20)
    theirs = _torch_run(torch, name, kwargs, (w0, b0), grad, steps=20)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-10, err_msg=f"step {step + 1}")
    assert np.abs(ours[-1][0] - w0).max() > 1e-3  # the parameters did move


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_float32_params_stay_float32_and_match_torch(torch, rng, name, kwargs):
    w0, b0, grad = _problem(rng, np.float32)
    ours, params, opt = _our_run(name, kwargs, (w0, b0), grad, steps=5)
    theirs = _torch_run(torch, name, kwargs, (w0, b0), grad, steps=5)
    for p in params:
        assert p.data.dtype == np.float32
        for value in opt.state[id(p)].values():
            assert not isinstance(value, np.ndarray) or value.dtype == np.float32
    for x, y in zip(ours[-1], theirs[-1], strict=True):
        assert y.dtype == np.float32
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_param_groups_match_torch(torch, rng):
    w0, b0, grad = _problem(rng)
    groups = [{"params": [0], "lr": 0.1, "nesterov": True}, {"params": [1], "weight_decay": 0.5}]
    kwargs = {"lr": 0.01, "momentum": 0.9}
    ours, params, opt = _our_run("SGD", kwargs, (w0, b0), grad, steps=10, groups=groups)
    theirs = _torch_run(torch, "SGD", kwargs, (w0, b0), grad, steps=10, groups=groups)
    for x, y in zip(ours[-1], theirs[-1], strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-10)
    first, second = opt.param_groups
    assert first["params"] == [params[0]] and second["params"] == [params[1]]
    assert (first["lr"], first["momentum"], first["nesterov"], first["weight_decay"]) == (0.1, 0.9, True, 0.0)
    assert (second["lr"], second["momentum"], second["nesterov"], second["weight_decay"]) == (0.01, 0.9, False, 0.5)


def test_training_a_linear_layer_with_the_engine_matches_torch(torch, rng):
    """End to end: npnorm's autograd computes the gradients, Adam applies them, 15 steps as in PyTorch."""
    x, y = rng.standard_normal((16, 5)), rng.standard_normal((16, 2))
    layer = npnorm.nn.Linear(5, 2, dtype=np.float64)
    tlayer = torch.nn.Linear(5, 2, dtype=torch.float64)
    with torch.no_grad():
        tlayer.weight.copy_(torch.from_numpy(layer.weight.data))
        tlayer.bias.copy_(torch.from_numpy(layer.bias.data))
    opt = Adam(layer.parameters(), lr=0.05, weight_decay=0.01)
    topt = torch.optim.Adam(tlayer.parameters(), lr=0.05, weight_decay=0.01)
    for _ in range(15):
        opt.zero_grad()
        loss = ((layer(npnorm.tensor(x)) - y) ** 2).mean()
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss = ((tlayer(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).mean()
        tloss.backward()
        topt.step()
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(layer.weight.data, tlayer.weight.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(layer.bias.data, tlayer.bias.detach().numpy(), rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------- bookkeeping
def test_zero_grad_sets_none_or_zeros():
    a, b = _params(np.ones(3), np.ones(2))
    opt = SGD([a, b], lr=0.1)
    a.grad, b.grad = np.full(3, 2.0), np.full(2, 3.0)
    kept = a.grad
    opt.zero_grad(set_to_none=False)
    assert a.grad is kept and not a.grad.any() and not b.grad.any()
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_parameters_without_grad_are_skipped():
    a, b = _params(np.ones(3), np.ones(2))
    for opt in (SGD([a, b], lr=0.1, momentum=0.9), Adam([a, b]), AdamW([a, b])):
        a.grad, b.grad = np.full(3, 0.5), None
        before = b.data.copy()
        opt.step()
        np.testing.assert_array_equal(b.data, before)
        assert id(b) not in opt.state and id(a) in opt.state


def test_update_is_in_place():
    (p,) = _params(np.ones(4))
    array = p.data
    for opt in (SGD([p], lr=0.1, momentum=0.5), Adam([p]), AdamW([p])):
        p.grad = np.ones(4)
        opt.step()
    assert p.data is array


def test_step_returns_the_closure_loss():
    (p,) = _params(np.array([3.0]))
    opt = SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 9.0 and p.data[0] == 3.0 - 0.25 * 6.0


BAD_HYPERPARAMETERS = [
    (SGD, {"lr": -0.1}, "lr"),
    (SGD, {"lr": math.nan}, "lr"),
    (SGD, {"lr": 0.1, "momentum": -0.5}, "momentum"),
    (SGD, {"lr": 0.1, "weight_decay": -1e-4}, "weight_decay"),
    (SGD, {"lr": 0.1, "nesterov": True}, "nesterov"),
    (SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, "nesterov"),
    (Adam, {"lr": -1e-3}, "lr"),
    (Adam, {"eps": -1e-8}, "eps"),
    (Adam, {"betas": (1.0, 0.999)}, r"betas\[0\]"),
    (Adam, {"betas": (0.9, -0.1)}, r"betas\[1\]"),
    (Adam, {"weight_decay": -0.1}, "weight_decay"),
    (AdamW, {"weight_decay": -0.1}, "weight_decay"),
    (AdamW, {"betas": (0.9, 1.5)}, r"betas\[1\]"),
]


@pytest.mark.parametrize(("cls", "kwargs", "name"), BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_raise_value_error_naming_them(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(_params(np.zeros(2)), **kwargs)


def test_bad_parameter_lists():
    a, b = _params(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        SGD(a, lr=0.1)
    with pytest.raises(TypeError, match="Tensors"):
        SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        SGD([a, a], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        SGD([{"params": [a]}, {"params": [a, b]}], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        SGD([{"params": [a]}, {"params": [b], "lr": -1.0}], lr=0.1)
    with pytest.raises(ValueError, match="unknown option"):
        Adam([{"params": [a], "weight_deacy": 0.1}])
    with pytest.raises(ValueError, match="non-leaf"):
        SGD([a * 2], lr=0.1)


# -------------------------------------------------------------------------------------- clipping
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(torch, rng, norm_type, max_norm):
    arrays = [rng.standard_normal((3, 4)), rng.standard_normal(5), rng.standard_normal(2)]
    params = _params(*arrays)
    tparams = [torch.tensor(a, requires_grad=True) for a in arrays]
    for i, (p, tp) in enumerate(zip(params, tparams, strict=True)):
        if i == 2:
            continue  # this one has no gradient and is ignored
        g = rng.standard_normal(p.shape)
        p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(ttotal.item(), rel=1e-12)
    for p, tp in zip(params[:2], tparams[:2], strict=True):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)
    assert params[2].grad is None
    if max_norm < total:  # clipped: the new norm is max_norm (up to the 1e-6 guard)
        new_total = clip_grad_norm_(params, math.inf, norm_type=norm_type)
        assert new_total == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_keeps_float32_and_handles_edge_cases(torch):
    (p,) = _params(np.zeros(3, dtype=np.float32))
    p.grad = np.array([3.0, 4.0, 0.0], dtype=np.float32)
    assert clip_grad_norm_(p, 1.0) == pytest.approx(5.0)  # a single Tensor is accepted
    assert p.grad.dtype == np.float32
    np.testing.assert_allclose(p.grad, [0.6, 0.8, 0.0], rtol=1e-6)
    (q,) = _params(np.zeros(2))
    assert clip_grad_norm_([q], 1.0) == 0.0  # no gradients at all
    # A non-finite norm is returned, and used as PyTorch uses it (error_if_nonfinite=False).
    for bad in ([np.inf, 1.0], [np.nan, 1.0]):
        (r,) = _params(np.zeros(2))
        (tr,) = [torch.zeros(2, dtype=torch.float64, requires_grad=True)]
        r.grad, tr.grad = np.array(bad), torch.tensor(bad, dtype=torch.float64)
        total = clip_grad_norm_([r], 1.0)
        ttotal = torch.nn.utils.clip_grad_norm_([tr], 1.0)
        np.testing.assert_array_equal(total, ttotal.item())
        np.testing.assert_array_equal(r.grad, tr.grad.numpy())
        with pytest.raises(RuntimeError, match="non-finite"):
            clip_grad_norm_([r], 1.0, error_if_nonfinite=True)


# ------------------------------------------------------------------------------------ schedulers
@pytest.mark.parametrize(
    ("ours", "theirs", "kwargs"),
    [
        ("StepLR", "StepLR", {"step_size": 3, "gamma": 0.5}),
        ("StepLR", "StepLR", {"step_size": 1, "gamma": 0.9}),
        ("CosineAnnealingLR", "CosineAnnealingLR", {"T_max": 7, "eta_min": 0.001}),
        ("CosineAnnealingLR", "CosineAnnealingLR", {"T_max": 10}),
    ],
)
def test_schedulers_match_torch(torch, ours, theirs, kwargs):
    params = _params(np.zeros(2), np.zeros(3))
    opt = SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.3}], lr=0.1)
    sched = getattr(npnorm.optim, ours)(opt, **kwargs)
    tparams = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    topt = torch.optim.SGD([{"params": [tparams[0]]}, {"params": [tparams[1]], "lr": 0.3}], lr=0.1)
    tsched = getattr(torch.optim.lr_scheduler, theirs)(topt, **kwargs)
    assert sched.get_last_lr() == tsched.get_last_lr() == [0.1, 0.3]
    for _ in range(25):  # past T_max: the cosine comes back up, in both
        topt.step()
        sched.step()
        tsched.step()
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12, atol=1e-15)
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()


def test_bad_scheduler_arguments():
    opt = SGD(_params(np.zeros(2)), lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        CosineAnnealingLR(opt, T_max=0)
    for eta_min in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="eta_min"):
            CosineAnnealingLR(opt, T_max=5, eta_min=eta_min)
    with pytest.raises(TypeError, match="Optimizer"):
        StepLR(object(), step_size=2)


def test_a_group_added_after_the_scheduler_is_a_clear_error_that_changes_nothing():
    opt = SGD(_params(np.zeros(2)), lr=0.1)
    sched = StepLR(opt, step_size=1)
    opt.add_param_group({"params": _params(np.zeros(3)), "lr": 0.5})
    with pytest.raises(ValueError, match="StepLR.step: the optimizer has 2 parameter groups but the scheduler knows 1"):
        sched.step()
    assert sched.last_epoch == 0 and [g["lr"] for g in opt.param_groups] == [0.1, 0.5]


@pytest.mark.parametrize(
    "state",
    [
        {"last_epoch": np.array(2.7), "base_lrs": np.array([0.1])},
        {"last_epoch": np.array(-3), "base_lrs": np.array([0.1])},
        {"last_epoch": np.array([2]), "base_lrs": np.array([0.1])},
        {"last_epoch": np.array(2), "base_lrs": np.array([np.nan])},
        {"last_epoch": np.array(2), "base_lrs": np.array([-0.1])},
    ],
    ids=["float epoch", "negative epoch", "1-d epoch", "nan lr", "negative lr"],
)
def test_scheduler_load_state_dict_refuses_bad_values_and_changes_nothing(state):
    opt = SGD(_params(np.zeros(2)), lr=0.1)
    sched = StepLR(opt, step_size=2)
    with pytest.raises(ValueError, match="StepLR.load_state_dict"):
        sched.load_state_dict(state)
    assert sched.last_epoch == 0 and sched.base_lrs == [0.1]


# ------------------------------------------------------------------------------- save and resume
RESUME_CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {"lr": 0.02, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.02}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "kwargs"), RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_after_save_load_is_bit_exact(tmp_path, rng, name, kwargs, dtype):
    """10 straight steps == 5 steps, checkpoint to disk, rebuild everything, 5 more steps (bit for bit)."""
    w0, b0, grad = _problem(rng, dtype)
    groups = [{"params": [0]}, {"params": [1], "lr": kwargs["lr"] / 2}]

    def build(w, b):
        params = _params(w, b)
        opt = getattr(npnorm.optim, name)([dict(g, params=[params[i] for i in g["params"]]) for g in groups], **kwargs)
        return params, opt, CosineAnnealingLR(opt, T_max=8, eta_min=1e-4)

    def train(params, opt, sched, steps):
        for _ in range(steps):
            _set_grads(params, grad)
            opt.step()
            sched.step()

    straight = build(w0, b0)
    train(*straight, 10)

    first = build(w0, b0)
    train(*first, 5)
    params, opt, sched = first
    checkpoint = {"model.w": params[0].data, "model.b": params[1].data}
    checkpoint.update({f"optim.{k}": v for k, v in opt.state_dict().items()})
    checkpoint.update({f"sched.{k}": v for k, v in sched.state_dict().items()})
    npnorm.save(checkpoint, tmp_path / "ckpt.npz")
    del first, params, opt, sched

    loaded = npnorm.load(tmp_path / "ckpt.npz")
    params, opt, sched = build(loaded["model.w"], loaded["model.b"])
    opt.load_state_dict({k[len("optim.") :]: v for k, v in loaded.items() if k.startswith("optim.")})
    sched.load_state_dict({k[len("sched.") :]: v for k, v in loaded.items() if k.startswith("sched.")})
    train(params, opt, sched, 5)

    for p, q in zip(params, straight[0], strict=True):
        assert p.data.dtype == dtype
        np.testing.assert_array_equal(p.data, q.data)
    resumed, reference = opt.state_dict(), straight[1].state_dict()
    assert resumed.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key], err_msg=key)
        assert resumed[key].dtype == reference[key].dtype, key
    assert sched.get_last_lr() == straight[2].get_last_lr()


def test_state_dict_layout_and_snapshot():
    a, b = _params(np.ones(2), np.ones(3, dtype=np.float32))
    opt = Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], betas=(0.8, 0.9))
    a.grad = np.ones(2)
    opt.step()
    sd = opt.state_dict()
    assert sorted(sd) == sorted([
        "param_groups.0.params", "param_groups.0.lr", "param_groups.0.betas", "param_groups.0.eps",
        "param_groups.0.weight_decay", "param_groups.1.params", "param_groups.1.lr", "param_groups.1.betas",
        "param_groups.1.eps", "param_groups.1.weight_decay", "state.0.step", "state.0.exp_avg",
        "state.0.exp_avg_sq",
    ])  # fmt: skip
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    np.testing.assert_array_equal(sd["param_groups.1.params"], [1])
    np.testing.assert_array_equal(sd["param_groups.0.betas"], [0.8, 0.9])
    assert sd["param_groups.1.lr"].shape == () and sd["param_groups.1.lr"] == 0.5
    assert sd["state.0.step"].dtype == np.int64 and sd["state.0.step"] == 1
    snapshot = sd["state.0.exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state.0.exp_avg"], snapshot)  # a copy, not the live state


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    a, b = _params(np.ones(2), np.ones(3))
    opt = SGD([a, b], lr=0.1, momentum=0.9)
    a.grad, b.grad = np.ones(2), np.ones(3)
    opt.step()
    good = opt.state_dict()
    before = {k: v.copy() for k, v in good.items()}

    other = SGD(_params(np.ones(2)), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="parameters"):
        other.load_state_dict(good)  # one group of 2 parameters saved, one group of 1 here
    for bad in (
        {**good, "state.1.momentum_buffer": np.ones(4)},  # wrong shape
        {**good, "state.0.exp_avg": np.ones(2)},  # not SGD state
        {**good, "param_groups.0.lr": np.array(-1.0)},  # invalid option
        {**good, "extra": np.array(1.0)},  # unknown key
        {k: v for k, v in good.items() if k != "param_groups.0.momentum"},  # missing option
    ):
        with pytest.raises(ValueError):
            opt.load_state_dict(bad)
    after = opt.state_dict()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    with pytest.raises(ValueError, match="Adam"):
        Adam([a, b]).load_state_dict(good)  # SGD options do not fit Adam


# ------------------------------------------------------------------ Adam's fused kernel vs its NumPy twin
ADAM_KERNEL_CASES = [
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.02, "betas": (0.5, 0.9), "weight_decay": 0.3}),
]


def _adam_trajectory(monkeypatch, use_kernel, name, kwargs, arrays, grads):
    """Parameters and moments after len(grads) steps, with the kernel or with optim's NumPy twin."""
    from npnorm import optim

    if not use_kernel:
        monkeypatch.setattr(optim, "_adam_kernel", lambda: None)
    params = _params(*arrays)
    opt = getattr(optim, name)(params, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.copy()
        opt.step()
    monkeypatch.undo()
    return [p.data for p in params], opt.state_dict()


def _assert_kernel_gives_the_twins_bits(monkeypatch, name, kwargs, arrays, grads, dtype):
    kernel_params, kernel_state = _adam_trajectory(monkeypatch, True, name, kwargs, arrays, grads)
    numpy_params, numpy_state = _adam_trajectory(monkeypatch, False, name, kwargs, arrays, grads)
    for a, b in zip(kernel_params, numpy_params, strict=True):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    for key in numpy_state:
        np.testing.assert_array_equal(kernel_state[key], numpy_state[key], err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("name", "kwargs"), ADAM_KERNEL_CASES, ids=[c[0] + str(i) for i, c in enumerate(ADAM_KERNEL_CASES)]
)
def test_adam_kernel_is_bit_identical_to_numpy_twin(monkeypatch, rng, dtype, name, kwargs):
    """Same operations in the same order, rounded to the dtype: the two must agree bit for bit, including
    gradients far from 1, zeros (v = 0, so √v/c + ε = ε) and a 3-D parameter."""
    from npnorm import optim

    if optim._adam_kernel() is None:
        pytest.skip("numba kernels unavailable (numba missing or NUMBA_DISABLE_JIT)")
    shapes = [(7, 5), (13,), (2, 3, 4)]
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = []
    for step in range(6):
        scale = 10.0 ** rng.integers(-6, 4)
        step_grads = [(scale * rng.standard_normal(s)).astype(dtype) for s in shapes]
        if step == 2:
            step_grads[1][:] = 0
        grads.append(step_grads)
    _assert_kernel_gives_the_twins_bits(monkeypatch, name, kwargs, arrays, grads, dtype)


@settings(max_examples=15)
@given(
    shapes=st.lists(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6), min_size=1, max_size=3),
    dtype=st.sampled_from([np.float32, np.float64]),
    case=st.sampled_from(range(len(ADAM_KERNEL_CASES))),
    seed=st.integers(0, 2**16),
)
def test_adam_kernel_is_bit_identical_to_numpy_twin_at_random_shapes(shapes, dtype, case, seed):
    """The same property over random parameter shapes (0-d, empty, up to 3-D), several parameters at once."""
    from npnorm import optim

    if optim._adam_kernel() is None:
        pytest.skip("numba kernels unavailable (numba missing or NUMBA_DISABLE_JIT)")
    name, kwargs = ADAM_KERNEL_CASES[case]
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]  # 0-d: an array, not a scalar
    grads = [
        [np.asarray(10.0 ** rng.integers(-6, 4) * rng.standard_normal(s), dtype=dtype) for s in shapes]
        for _ in range(3)
    ]
    with pytest.MonkeyPatch.context() as monkeypatch:
        _assert_kernel_gives_the_twins_bits(monkeypatch, name, kwargs, arrays, grads, dtype)


def test_adam_kernel_keeps_nan_and_inf_where_numpy_does(monkeypatch):
    from npnorm import optim

    if optim._adam_kernel() is None:
        pytest.skip("numba kernels unavailable")
    arrays = [np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)]
    grads = [[np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)]]
    with np.errstate(invalid="ignore"):
        kernel_params, _ = _adam_trajectory(monkeypatch, True, "Adam", {"lr": 0.1}, arrays, grads)
        numpy_params, _ = _adam_trajectory(monkeypatch, False, "Adam", {"lr": 0.1}, arrays, grads)
    np.testing.assert_array_equal(kernel_params[0], numpy_params[0])  # NaN positions equal too
    assert np.isnan(kernel_params[0][:3]).all() and np.isfinite(kernel_params[0][3])


def test_adam_non_contiguous_parameter_takes_the_numpy_twin(monkeypatch, rng):
    """A parameter whose array is a strided view cannot be flattened in place: the NumPy twin updates it."""
    from npnorm import optim

    calls = []
    kern = optim._adam_kernel()
    if kern is not None:
        original = kern.adam_update
        monkeypatch.setattr(kern, "adam_update", lambda *a: (calls.append(1), original(*a)))
    base = rng.standard_normal((6, 4))
    p = npnorm.Tensor(base[:, ::2], requires_grad=True)  # (6, 2), not contiguous
    before = p.data.copy()
    p.grad = np.ones((6, 2))
    optim.Adam([p], lr=0.1).step()
    assert calls == []
    np.testing.assert_allclose(p.data, before - 0.1, rtol=1e-6)  # first Adam step: θ − lr·sign(g)
    np.testing.assert_array_equal(base[:, ::2], p.data)  # updated in place, in the caller's array


def test_adam_under_disable_jit_uses_numpy_not_a_python_loop():
    """NUMBA_DISABLE_JIT=1 (debugging the norm kernels) must not turn every Adam step into a Python loop."""
    import subprocess
    import sys

    code = (
        "import numpy as np, npnorm\n"
        "from npnorm import optim\n"
        "assert optim._adam_kernel() is None\n"
        "p = npnorm.tensor(np.ones(3), requires_grad=True); p.grad = np.ones(3)\n"
        "optim.Adam([p], lr=0.5).step(); print(p.data[0])\n"
    )
    env = dict(__import__("os").environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == pytest.approx(0.5)
