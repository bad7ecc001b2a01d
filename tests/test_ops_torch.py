"""A third oracle where PyTorch is installed: the same values and gradients as torch, in float64.

Skipped without torch; nothing else in the suite needs it.
"""

from __future__ import annotations

import numpy as np
import pytest

import npnorm
import npnorm.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

TARGET = np.array([2, 0, 1, 2, 4])
TARGET_NCL = np.array([[0, 3, 3], [2, 1, 0]])

# name: (npnorm fn, torch fn, input shapes); both take the inputs in the same order.
ROWS = {
    "matmul-broadcast": (lambda a, b: a @ b, lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)]),
    "matmul-1d-batch": (lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (2, 4, 3)]),
    "pow-tensor": (lambda a, b: (a * a + 0.5) ** b, lambda a, b: (a * a + 0.5) ** b, [(3, 1), (1, 4)]),
    "var-ddof1": (lambda a: a.var(axis=(0, 2), ddof=1), lambda a: a.var(dim=(0, 2), correction=1), [(2, 3, 4)]),
    "mean-keepdims": (lambda a: a.mean(axis=-1, keepdims=True), lambda a: a.mean(dim=-1, keepdim=True), [(2, 3, 4)]),
    "max-axis": (lambda a: a.max(axis=1), lambda a: a.amax(dim=1), [(3, 5)]),
    "getitem-repeated": (lambda a: a[np.array([0, 0, 2]), 1:], lambda a: a[torch.tensor([0, 0, 2]), 1:], [(3, 4)]),
    "transpose": (lambda a: a.transpose(2, 0, 1), lambda a: a.permute(2, 0, 1), [(2, 3, 4)]),
    "linear": (F.linear, TF.linear, [(2, 3, 4), (5, 4), (5,)]),
    "gelu": (F.gelu, TF.gelu, [(3, 4)]),
    "gelu-tanh": (lambda a: F.gelu(a, approximate="tanh"), lambda a: TF.gelu(a, approximate="tanh"), [(3, 4)]),
    "sigmoid": (F.sigmoid, torch.sigmoid, [(3, 4)]),
    "softmax-axis0": (lambda a: F.softmax(a, axis=0), lambda a: TF.softmax(a, dim=0), [(3, 4)]),
    "log_softmax": (F.log_softmax, lambda a: TF.log_softmax(a, dim=-1), [(3, 4)]),
    "cross_entropy": (
        lambda a: F.cross_entropy(a, TARGET),
        lambda a: TF.cross_entropy(a, torch.tensor(TARGET)),
        [(5, 6)],
    ),
    "cross_entropy-NCL-sum": (
        lambda a: F.cross_entropy(a, TARGET_NCL, reduction="sum"),
        lambda a: TF.cross_entropy(a, torch.tensor(TARGET_NCL), reduction="sum"),
        [(2, 4, 3)],
    ),
    "mse_loss": (F.mse_loss, TF.mse_loss, [(3, 4), (3, 4)]),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_values_and_gradients_match_torch(name, rng):
    ours, theirs, shapes = ROWS[name]
    arrays = [rng.standard_normal(s) for s in shapes]
    xs = [npnorm.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, expected = ours(*xs), theirs(*ts)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.tensor(upstream))
    for x, t in zip(xs, ts, strict=True):
        np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_pow_at_zero_bases_and_zero_exponents_matches_torch():
    """0^0 (da = 0, not 0·0^-1 = NaN), 0^b for b < 1 (inf), a negative base (db NaN), 0^b for b > 0 (db 0)."""
    base = np.array([0.0, 0.0, 2.0, -1.5, 0.0, 0.0, 3.0])
    exponent = np.array([0.0, 1.0, 0.0, 2.0, 0.5, 3.0, -1.0])
    a, b = npnorm.tensor(base, requires_grad=True), npnorm.tensor(exponent, requires_grad=True)
    ta, tb = torch.tensor(base, requires_grad=True), torch.tensor(exponent, requires_grad=True)
    (a**b).sum().backward()
    (ta**tb).sum().backward()
    np.testing.assert_array_equal(a.grad, ta.grad.numpy())  # equal, inf and NaN in the same places
    np.testing.assert_array_equal(b.grad, tb.grad.numpy())


@pytest.mark.parametrize("after", ["log", "sqrt"])
def test_relu_gradient_under_an_infinite_upstream_matches_torch(after):
    data = np.array([-1.0, 0.0, 2.0, np.nan, -0.0])
    x, t = npnorm.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        getattr(x.relu(), after)().sum().backward()
    getattr(t.relu(), after)().sum().backward()
    np.testing.assert_array_equal(x.grad, t.grad.numpy())


def test_max_ties_share_the_gradient_like_amax():
    data = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    x, t = npnorm.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    x.max(axis=1).sum().backward()
    t.amax(dim=1).sum().backward()
    np.testing.assert_allclose(x.grad, t.grad.numpy())
