"""Every identity stated in docs/layer_norm.md, checked on every implementation (numba, numpy, composed).

The doc's closing table maps each identity to the test below that proves it. Gradients come from the public
API (`F.layer_norm` / `F.ada_norm`, then `y.backward(dy)`); the expected values are recomputed here from the
definitions, never taken from `npnorm.norms.layer_norm`'s backward. Inputs are float64 unless a test is
about float32.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npnorm
import npnorm.functional as F
from npnorm.norms import layer_norm as ln_ref

IMPLS = ("numba", "numpy", "composed")
EPS_VALUES = (0.0, 1e-5, 0.1, 1.0)
DETACH_VARIANTS = {  # name -> (detach_mean, detach_var)
    "layer_norm": (False, False),
    "detach_mean": (True, False),
    "detach_var": (False, True),
    "both": (True, True),
}


# ------------------------------------------------------------------------------------------------ helpers


def _rows(rng, N, H, *, shift=3.0):
    """(N, H) float64 rows, each with its own scale in [0.5, 2] and shift in [-shift, shift]: real variance."""
    scale = rng.uniform(0.5, 2.0, size=(N, 1))
    return rng.uniform(-shift, shift, size=(N, 1)) + scale * rng.standard_normal((N, H))


def _stats(x, eps):
    """mean, var (biased), rstd of shape (N, 1) and xhat (N, H), from the definitions, in float64."""
    x = x.astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)  # (N, 1)
    c = x - mean  # (N, H)
    var = (c * c).mean(axis=1, keepdims=True)  # (N, 1)  two passes, biased
    rstd = 1.0 / np.sqrt(var + eps)  # (N, 1)
    return mean, var, rstd, c * rstd


def _layer_norm(x, dy, impl, *, eps=1e-5, weight=None, bias=None, detach_mean=False, detach_var=False):
    """y, dx, dweight, dbias through npnorm's autograd (dweight/dbias None when the parameter is absent)."""
    xt = npnorm.tensor(x, requires_grad=True)
    wt = None if weight is None else npnorm.tensor(weight, requires_grad=True)
    bt = None if bias is None else npnorm.tensor(bias, requires_grad=True)
    y = F.layer_norm(xt, x.shape[-1], wt, bt, eps, detach_mean=detach_mean, detach_var=detach_var, impl=impl)
    y.backward(dy)
    return y.data, xt.grad, None if wt is None else wt.grad, None if bt is None else bt.grad


def _ada_norm(x, dz, impl, *, C, k, eps=1e-5):
    xt = npnorm.tensor(x, requires_grad=True)
    z = F.ada_norm(xt, x.shape[-1], C=C, k=k, eps=eps, impl=impl)
    z.backward(dz)
    return z.data, xt.grad


def _ln_simple_backward(x, g, eps):
    """dx = rstd (g − mean(g) − x̂ mean(g ⊙ x̂)), LayerNorm-simple's closed-form backward, from the definitions."""
    _, _, rstd, xhat = _stats(x, eps)
    return rstd * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))


def _fd_vjp(f, x, dy, h=1e-6):
    """Σ dy ⊙ ∂f/∂x by central differences: the gradient of <f(x), dy> that the forward alone implies."""
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        out[idx] = np.sum(dy * (f(xp) - f(xm))) / (2 * h)
    return out


def _ln_forward(impl, eps=1e-5, **kw):
    def f(x):
        with npnorm.no_grad():
            return F.layer_norm(npnorm.tensor(x), x.shape[-1], eps=eps, impl=impl, **kw).data

    return f


# ------------------------------------------------------------------------------------------ §1 forward


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", EPS_VALUES)
def test_forward_matches_definition(impl, eps, rng):
    N, H = 5, 7
    x = _rows(rng, N, H)
    w, b = rng.standard_normal(H), rng.standard_normal(H)
    _, _, rstd, xhat = _stats(x, eps)
    y, _, _, _ = _layer_norm(x, np.zeros((N, H)), impl, eps=eps, weight=w, bias=b)
    np.testing.assert_allclose(y, w * xhat + b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ("numba", "numpy"))
def test_saved_statistics_recompute_xhat(impl, rng):
    # Backward keeps mean and rstd — (N,) float64, 2N numbers — and recomputes xhat = (x − mean)·rstd.
    x = (rng.standard_normal((6, 33)) * 0.1 + 50.0).astype(np.float32)
    if impl == "numpy":
        y, mean, rstd = ln_ref.forward_reference(x, None, None, 1e-5)
    else:
        from npnorm.kernels import layer_norm as kern

        y, mean, rstd = np.empty_like(x), np.empty(6), np.empty(6)
        kern.layer_norm_forward(y, mean, rstd, x, None, None, 1e-5)
    assert mean.shape == rstd.shape == (6,) and mean.dtype == rstd.dtype == np.float64
    ref_mean, _, ref_rstd, _ = _stats(x, 1e-5)
    np.testing.assert_allclose(mean, ref_mean[:, 0], rtol=1e-14)
    np.testing.assert_allclose(rstd, ref_rstd[:, 0], rtol=1e-10)
    xhat = (x - mean[:, None]) * rstd[:, None]  # float64, recomputed as backward does
    np.testing.assert_allclose(xhat, y, atol=1e-6)  # y is the same xhat rounded once to float32


@pytest.mark.parametrize("impl", IMPLS)
def test_two_pass_variance_float32_large_mean(impl, rng):
    H = 256
    x = (1e4 + 1e-2 * rng.standard_normal((4, H))).astype(np.float32)
    _, var, _, xhat = _stats(x, 0.0)  # float64, two passes: the truth for this float32 data
    naive = np.mean(x * x, axis=1) - np.mean(x, axis=1) ** 2  # one pass, float32: a multiple of 8
    assert np.all(np.abs(naive - var[:, 0]) > 0.5 * var[:, 0])  # wrong by ≥ 50% (0, ±8, ... vs 1e-4)
    y, _, _, _ = _layer_norm(x, np.zeros_like(x), impl, eps=0.0)
    np.testing.assert_allclose(y, xhat, atol=1e-5)  # float32 output of float64 statistics


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", EPS_VALUES)
def test_xhat_row_moments(impl, eps, rng):
    N, H = 6, 9
    x = _rows(rng, N, H)
    _, var, _, _ = _stats(x, eps)
    xhat, _, _, _ = _layer_norm(x, np.zeros((N, H)), impl, eps=eps)
    np.testing.assert_allclose(xhat.sum(axis=1), 0.0, atol=1e-13)
    np.testing.assert_allclose((xhat**2).sum(axis=1), H * var[:, 0] / (var[:, 0] + eps), rtol=1e-13)


# --------------------------------------------------------------------------------- §3 chain rule, Jacobian


def _doc_jacobian(x_row, eps):
    """J_ij = ∂x̂_i/∂x_j = rstd (δ_ij − 1/H − x̂_i x̂_j / H), the formula of docs/layer_norm.md §3 step 5."""
    H = x_row.size
    _, _, rstd, xhat = _stats(x_row[None, :], eps)
    xhat, rstd = xhat[0], rstd[0, 0]
    return rstd * (np.eye(H) - 1.0 / H - np.outer(xhat, xhat) / H)


def _backward_jacobian(x_row, impl, eps):
    """The row Jacobian that impl's backward computes: row i is dx for dy = e_i."""
    H = x_row.size
    return np.stack([_layer_norm(x_row[None, :], np.eye(H)[i][None, :], impl, eps=eps)[1][0] for i in range(H)])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", (0.0, 0.1))
def test_jacobian_matches_finite_differences(impl, eps, rng):
    H = 6
    x_row = _rows(rng, 1, H)[0]
    J = _doc_jacobian(x_row, eps)
    f = _ln_forward(impl, eps)
    numerical = np.stack([_fd_vjp(f, x_row[None, :], np.eye(H)[i][None, :])[0] for i in range(H)])
    np.testing.assert_allclose(J, numerical, atol=1e-7)  # the doc's formula is the forward's derivative
    np.testing.assert_allclose(_backward_jacobian(x_row, impl, eps), J, atol=1e-13)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", (0.0, 1e-5, 0.5))
def test_jacobian_spectrum(impl, eps, rng):
    H = 7
    x_row = _rows(rng, 1, H)[0]
    _, var, rstd, _ = _stats(x_row[None, :], eps)
    r, v = rstd[0, 0], var[0, 0]
    J = _backward_jacobian(x_row, impl, eps)
    np.testing.assert_allclose(J, J.T, atol=1e-14)
    expected = np.sort(np.r_[0.0, r * eps / (v + eps), np.full(H - 2, r)])
    np.testing.assert_allclose(np.linalg.eigvalsh((J + J.T) / 2), expected, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", EPS_VALUES)
def test_dx_matches_chain_rule_from_scratch(impl, eps, rng):
    N, H = 4, 6
    x, dy = _rows(rng, N, H), rng.standard_normal((N, H))
    w, b = rng.standard_normal(H), rng.standard_normal(H)
    _, dx, dw, db = _layer_norm(x, dy, impl, eps=eps, weight=w, bias=b)
    # The chain rule of §3, step by step and unsimplified (Σ c = 0 is not used), one row at a time.
    expected = np.zeros((N, H))
    xhat = np.zeros((N, H))
    for n in range(N):
        mu = x[n].sum() / H
        c = x[n] - mu
        var = (c**2).sum() / H
        rstd = (var + eps) ** -0.5
        dc_dx = np.eye(H) - 1.0 / H  # ∂c_i/∂x_j
        dvar_dx = 2.0 / H * c @ dc_dx  # ∂σ²/∂x_j = (2/H) Σ_i c_i ∂c_i/∂x_j
        drstd_dx = -0.5 * (var + eps) ** -1.5 * dvar_dx  # ∂rstd/∂x_j
        dxhat_dx = dc_dx * rstd + np.outer(c, drstd_dx)  # product rule on x̂_i = c_i·rstd
        g = dy[n] * w  # ∂L/∂x̂
        expected[n] = g @ dxhat_dx  # dx_j = Σ_i g_i ∂x̂_i/∂x_j
        xhat[n] = c * rstd
    np.testing.assert_allclose(dx, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw, (dy * xhat).sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum(axis=0), rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------------------- §4 the three terms of dx


def _g_and_stats(x, dy, w, eps):
    mean, var, rstd, xhat = _stats(x, eps)
    g = dy * w if w is not None else dy
    return g, var[:, 0], rstd[:, 0], xhat


def _check_sum_zero(x, dy, w, b, impl, eps):
    _, dx, _, _ = _layer_norm(x, dy, impl, eps=eps, weight=w, bias=b)
    g, _, rstd, _ = _g_and_stats(x, dy, w, eps)
    scale = rstd * np.abs(g).sum(axis=1)  # the size of the terms that cancel
    assert np.all(np.abs(dx.sum(axis=1)) <= 1e-12 * scale)


def _check_dot_xhat(x, dy, w, b, impl, eps):
    _, dx, _, _ = _layer_norm(x, dy, impl, eps=eps, weight=w, bias=b)
    g, var, rstd, xhat = _g_and_stats(x, dy, w, eps)
    H = x.shape[1]
    expected = H * rstd * (g * xhat).mean(axis=1) * eps / (var + eps)
    scale = rstd * np.abs(g).sum(axis=1) * (1 + np.abs(xhat).max(axis=1)) ** 2
    np.testing.assert_array_less(np.abs((dx * xhat).sum(axis=1) - expected), 1e-11 * scale)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", EPS_VALUES)
@pytest.mark.parametrize("affine", (False, True), ids=("simple", "affine"))
def test_dx_sums_to_zero(impl, eps, affine, rng):
    N, H = 5, 8
    x, dy = _rows(rng, N, H), rng.standard_normal((N, H))
    w, b = (rng.standard_normal(H), rng.standard_normal(H)) if affine else (None, None)
    _check_sum_zero(x, dy, w, b, impl, eps)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", EPS_VALUES)
@pytest.mark.parametrize("affine", (False, True), ids=("simple", "affine"))
def test_dx_dot_xhat(impl, eps, affine, rng):
    N, H = 5, 8
    x, dy = _rows(rng, N, H), rng.standard_normal((N, H))
    w, b = (rng.standard_normal(H), rng.standard_normal(H)) if affine else (None, None)
    _check_dot_xhat(x, dy, w, b, impl, eps)


_cases = st.tuples(
    st.integers(1, 4),  # N
    st.integers(2, 9),  # H
    st.integers(0, 2**32 - 1),  # seed
    st.sampled_from(EPS_VALUES),
    st.booleans(),  # affine
)


def _draw(case):
    N, H, seed, eps, affine = case
    rng = np.random.default_rng(seed)
    x, dy = _rows(rng, N, H), rng.standard_normal((N, H))
    w, b = (rng.standard_normal(H), rng.standard_normal(H)) if affine else (None, None)
    return x, dy, w, b, eps


@pytest.mark.parametrize("impl", IMPLS)
@given(case=_cases)
def test_dx_sums_to_zero_property(impl, case):
    x, dy, w, b, eps = _draw(case)
    _check_sum_zero(x, dy, w, b, impl, eps)


@pytest.mark.parametrize("impl", IMPLS)
@given(case=_cases)
def test_dx_dot_xhat_property(impl, case):
    x, dy, w, b, eps = _draw(case)
    _check_dot_xhat(x, dy, w, b, impl, eps)


@pytest.mark.parametrize("impl", IMPLS)
def test_dx_orthogonal_to_xhat_only_for_eps_zero(impl, rng):
    N, H = 6, 10
    x, dy = _rows(rng, N, H), rng.standard_normal((N, H))
    _, var, rstd, xhat = _stats(x, 0.0)
    scale = rstd[:, 0] * np.abs(dy).sum(axis=1) * (1 + np.abs(xhat).max(axis=1)) ** 2
    _, dx0, _, _ = _layer_norm(x, dy, impl, eps=0.0)
    assert np.all(np.abs((dx0 * xhat).sum(axis=1)) <= 1e-12 * scale)  # ε = 0: dx ⟂ x̂
    for eps in (1e-5, 0.1):
        _, dx, _, _ = _layer_norm(x, dy, impl, eps=eps)
        _, _, _, xh = _stats(x, eps)
        # ε > 0: a component along x̂ survives, far above rounding (ε/σ² ≥ 1e-6 here, rounding ~1e-15).
        assert np.all(np.abs((dx * xh).sum(axis=1)) > 1e3 * 1e-12 * scale)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", (0.0, 1e-5, 1.0))
def test_ln_gradient_no_longer_than_detachnorm(impl, eps, rng):
    N, H = 8, 6
    x, dy, w = _rows(rng, N, H), rng.standard_normal((N, H)), rng.standard_normal(H)
    _, dx, _, _ = _layer_norm(x, dy, impl, eps=eps, weight=w)
    g, _, rstd, _ = _g_and_stats(x, dy, w, eps)
    assert np.all(np.linalg.norm(dx, axis=1) <= rstd * np.linalg.norm(g, axis=1) * (1 + 1e-12))


# ------------------------------------------------------------------------------------------ §5 DetachNorm


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("variant", DETACH_VARIANTS)
@pytest.mark.parametrize("eps", (0.0, 1e-5, 0.1))
def test_detach_variants(impl, variant, eps, rng):
    detach_mean, detach_var = DETACH_VARIANTS[variant]
    N, H = 5, 8
    x, dy, w = _rows(rng, N, H), rng.standard_normal((N, H)), rng.standard_normal(H)
    _, dx, _, _ = _layer_norm(x, dy, impl, eps=eps, weight=w, detach_mean=detach_mean, detach_var=detach_var)
    g, var, rstd, xhat = _g_and_stats(x, dy, w, eps)
    r, s = rstd[:, None], (var / (var + eps))
    mean_g, mean_gx = g.mean(axis=1), (g * xhat).mean(axis=1)
    # The doc's table (§5), row by row: dx / rstd, Σ dx, Σ dx·x̂.
    expected = g.copy()
    if not detach_mean:
        expected -= mean_g[:, None]
    if not detach_var:
        expected -= xhat * mean_gx[:, None]
    expected *= r
    if variant == "both":  # DetachNorm: dx = rstd·γ⊙dy exactly (one product per element, nothing cancels)
        np.testing.assert_allclose(dx, rstd[:, None] * w * dy, rtol=1e-14, atol=0)
    np.testing.assert_allclose(dx, expected, rtol=1e-11, atol=1e-12)
    sum_dx = 0.0 if not detach_mean else H * rstd * mean_g
    dot = H * rstd * mean_gx * ((1 - s) if not detach_var else 1.0)
    np.testing.assert_allclose(dx.sum(axis=1), sum_dx, atol=1e-11)
    np.testing.assert_allclose((dx * xhat).sum(axis=1), dot, rtol=1e-10, atol=1e-11)
    if detach_mean:  # re-centring is gone: Σ dx = H·rstd·mean(g), clearly nonzero for these g
        assert np.all(np.abs(dx.sum(axis=1)) > 1e-3)


def _frozen_forward(x0, eps, detach_mean, detach_var):
    """LayerNorm with μ and/or σ² replaced by their values at x0 (docs §5): its derivative at x0 is DetachNorm's."""
    mean0, var0, _, _ = _stats(x0, eps)

    def f(x):
        mean = mean0 if detach_mean else x.mean(axis=1, keepdims=True)
        c = x - mean
        var = var0 if detach_var else (c * c).mean(axis=1, keepdims=True)
        return c / np.sqrt(var + eps)

    return f


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("variant", ("detach_mean", "detach_var", "both"))
def test_detached_backward_is_frozen_derivative(impl, variant, rng):
    detach_mean, detach_var = DETACH_VARIANTS[variant]
    N, H, eps = 3, 5, 1e-5
    x, dy = _rows(rng, N, H), rng.standard_normal((N, H))
    _, dx, _, _ = _layer_norm(x, dy, impl, eps=eps, detach_mean=detach_mean, detach_var=detach_var)
    frozen = _fd_vjp(_frozen_forward(x, eps, detach_mean, detach_var), x, dy)
    np.testing.assert_allclose(dx, frozen, atol=1e-7)
    # The forward is plain LayerNorm, so its finite differences give LayerNorm's gradient, not this one.
    forward = _fd_vjp(_ln_forward(impl, eps, detach_mean=detach_mean, detach_var=detach_var), x, dy)
    assert np.abs(dx - forward).max() > 1e-2 * np.abs(forward).max()


# --------------------------------------------------------------------------------------------- §6 AdaNorm

ADA_PARAMS = ((1.0, 0.1), (2.0, 0.1), (1.5, 0.3))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("C", "k"), ADA_PARAMS)
def test_ada_forward(impl, C, k, rng):
    x = _rows(rng, 4, 9)
    _, _, _, y = _stats(x, 1e-5)
    z, _ = _ada_norm(x, np.zeros_like(x), impl, C=C, k=k)
    np.testing.assert_allclose(z, C * (1 - k * y) * y, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("C", "k"), ADA_PARAMS)
def test_ada_backward_is_ln_simple_of_dz_phi(impl, C, k, rng):
    x, dz = _rows(rng, 4, 9), rng.standard_normal((4, 9))
    _, _, _, y = _stats(x, 1e-5)
    _, dx = _ada_norm(x, dz, impl, C=C, k=k)
    g = dz * C * (1 - k * y)  # φ(y) is a constant in backward
    _, dx_simple, _, _ = _layer_norm(x, g, impl, eps=1e-5)  # LayerNorm-simple's own backward of g
    np.testing.assert_allclose(dx, dx_simple, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(dx, _ln_simple_backward(x, g, 1e-5), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("C", "k"), ADA_PARAMS)
def test_ada_backward_is_not_forward_derivative(impl, C, k, rng):
    N, H, eps = 3, 6, 1e-5
    x, dz = _rows(rng, N, H), rng.standard_normal((N, H))
    _, _, _, y0 = _stats(x, eps)
    _, dx = _ada_norm(x, dz, impl, C=C, k=k)

    def forward(xx):
        with npnorm.no_grad():
            return F.ada_norm(npnorm.tensor(xx), H, C=C, k=k, eps=eps, impl=impl).data

    def frozen(xx):  # φ fixed at its value at x: the function whose derivative AdaNorm's backward is
        return C * (1 - k * y0) * _stats(xx, eps)[3]

    np.testing.assert_allclose(dx, _fd_vjp(frozen, x, dz), atol=1e-7)
    true_dx = _fd_vjp(forward, x, dz)
    # The true derivative has ∂z/∂y = C(1 − 2ky): LayerNorm-simple's backward of dz ⊙ C(1 − 2ky) ...
    np.testing.assert_allclose(true_dx, _ln_simple_backward(x, dz * C * (1 - 2 * k * y0), eps), atol=1e-7)
    # ... which is far from AdaNorm's (the gap is LayerNorm-simple's backward of dz ⊙ C k y, of relative
    # size ~k), so this cannot pass by accident.
    assert np.abs(dx - true_dx).max() > 0.1 * k * np.abs(true_dx).max()


@pytest.mark.parametrize("impl", IMPLS)
def test_xhat_bounds_keep_phi_positive(impl, rng):
    for H, eps in ((10, 0.0), (100, 0.0), (100, 1e-5), (101, 0.0)):
        x = np.vstack([np.eye(H)[:3], _rows(rng, 3, H), rng.standard_t(1.5, size=(3, H))])  # one-hot, normal, heavy
        _, var, _, _ = _stats(x, eps)
        s = var[:, 0] / (var[:, 0] + eps)
        y, _, _, _ = _layer_norm(x, np.zeros_like(x), impl, eps=eps)
        bound = np.sqrt((H - 1) * s)
        assert np.all(np.abs(y).max(axis=1) <= bound * (1 + 1e-12))
        if eps == 0.0:  # attained by a one-hot row
            np.testing.assert_allclose(np.abs(y[:3]).max(axis=1), bound[:3], rtol=1e-12)
        for t in (1.5, 3.0, 10.0):  # Chebyshev on each row: a fraction ≤ s/t² has |y| ≥ t
            assert np.all((np.abs(y) >= t).mean(axis=1) <= s / t**2 + 1e-12)
        phi = 1.0 * (1 - 0.1 * y)  # C = 1, k = 1/10
        if H <= 100:
            assert np.all(phi > 0)
        else:  # H = 101, ε = 0: the one-hot row reaches y = 10, φ = 0
            assert np.isclose(phi[:3].min(), 0.0, atol=1e-12)


# ---------------------------------------------------------------------------------------- §7 ε convention


@pytest.mark.parametrize("impl", IMPLS)
def test_reference_code_eps_convention_differs(impl, rng):
    N, H = 4, 16
    x = _rows(rng, N, H)
    for eps in (1e-5, 0.1):
        y, _, _, _ = _layer_norm(x, np.zeros_like(x), impl, eps=eps)
        c = x - x.mean(axis=1, keepdims=True)
        np.testing.assert_allclose(y, c / np.sqrt(c.var(axis=1, ddof=0, keepdims=True) + eps), rtol=1e-12)
        # Xu et al.'s reference code: (x − μ)/(std + ε) with the unbiased std. For H = 16 Bessel's factor
        # alone scales the output by √(15/16) ≈ 0.968, i.e. a ~3% difference; far above rounding.
        y_code = c / (c.std(axis=1, ddof=1, keepdims=True) + eps)
        assert np.abs(y - y_code).max() > 1e-2
    # ε placement alone (same biased σ): √(σ² + ε) vs σ + ε. With ε = 0.1 and σ ~ 1 they differ by ~5%.
    y, _, _, _ = _layer_norm(x, np.zeros_like(x), impl, eps=0.1)
    y_outside = c / (c.std(axis=1, ddof=0, keepdims=True) + 0.1)
    assert np.abs(y - y_outside).max() > 1e-2


# ------------------------------------------------------------------------------------------ §8 invariances


@pytest.mark.parametrize("impl", IMPLS)
def test_invariance_rescale_recentre_eps0(impl, rng):
    N, H = 6, 12
    x = _rows(rng, N, H)
    a = rng.uniform(0.01, 100.0, size=(N, 1))  # one positive scale per row
    c = rng.uniform(-50.0, 50.0, size=(N, 1))  # one shift per row
    y, _, _, _ = _layer_norm(x, np.zeros_like(x), impl, eps=0.0)
    y2, _, _, _ = _layer_norm(a * x + c, np.zeros_like(x), impl, eps=0.0)
    np.testing.assert_allclose(y2, y, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", (1e-5, 0.1))
def test_shift_invariance_any_eps_scale_needs_eps0(impl, eps, rng):
    N, H = 6, 12
    x = _rows(rng, N, H)
    y, _, _, _ = _layer_norm(x, np.zeros_like(x), impl, eps=eps)
    y_shift, _, _, _ = _layer_norm(x + rng.uniform(-50, 50, size=(N, 1)), np.zeros_like(x), impl, eps=eps)
    np.testing.assert_allclose(y_shift, y, atol=1e-10)
    # Scaling so that a²σ² is comparable to ε changes the output: ε breaks scale invariance.
    a = np.sqrt(eps)
    y_scaled, _, _, _ = _layer_norm(a * x, np.zeros_like(x), impl, eps=eps)
    assert np.all(np.abs(y_scaled - y).max(axis=1) > 1e-2)
