"""Ba, Kiros & Hinton 2016, Table 1, as executable tests: which transformations of the weights or the data
leave the output of a normalized layer unchanged.

The model is the paper's (§5.1): summed inputs a = W x, one row w_i of W per hidden unit, and

    h_i = g_i/σ_i · (a_i − μ_i) + b_i

with the norm's own gain g and bias b after the normalization (the paper applies f on top; any f keeps
these verdicts, so we leave it out). The three methods differ only in μ and σ:

    BatchNorm    μ_i, σ_i: mean and std of a_i over the cases of the batch (training-mode statistics,
                 F.batch_norm(..., training=True));
    LayerNorm    μ, σ: mean and std over the H hidden units of one case (F.layer_norm);
    WeightNorm   μ_i = 0, σ_i = ‖w_i‖ — a norm of the weights, no data statistics: h = x wᵀ + b with
                 w = g · W/‖W‖ row by row (weight_norm), W playing the role of PyTorch's weight_v.

All in float64 with ε = 0, so an "invariant" cell holds to rounding (we assert 1e-10); a "no" cell must
differ by more than MARGIN = 0.05 somewhere (the outputs are of order 1), so it cannot pass by accident.
g and b are fixed random vectors, never transformed: they are not weights of the summed inputs.

The transformations (the scale factors are > 0; a negative one flips the sign of a normalized output,
see test_negative_scale_flips_the_output):

    W re-scaling            W' = δW, one δ for the whole matrix;
    W re-centering          W' = δW + 1γᵀ, every row shifted by the same vector γ (the paper's definition,
                            which includes a re-scaling; test_pure_recentering checks δ = 1 as well);
                            for a case x every unit's summed input gains the same γᵀx;
    W row re-scaling        w_i' = δ_i w_i, each row by its own factor;
    data re-scaling         x' = δx for every case, one δ;
    data re-centering       x' = x + c for every case, the same vector c;
    single-case re-scaling  x_n' = δ_n x_n, each case by its own factor.

Why there is no bias inside, h = norm(W x + c): the paper's model has none, and for BatchNorm it would be
redundant (the mean removes it). For LayerNorm it changes the table: W re-scaling is then invariant only if
c is re-scaled with W (the augmented matrix [W c] acting on [x; 1]), and data re-scaling and single-case
re-scaling stop being invariant. test_bias_before_the_norm spells that out.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import npnorm
import npnorm.functional as F
from npnorm.norms.weight_norm import weight_norm

TABLE_1 = """
|          |W re-scaling|W re-centering|W row re-scaling|data re-scaling|data re-centering|single-case re-scaling|
|----------|------------|--------------|----------------|---------------|-----------------|----------------------|
|BatchNorm |invariant   |no            |invariant       |invariant      |invariant        |no                    |
|WeightNorm|invariant   |no            |invariant       |no             |no               |no                    |
|LayerNorm |invariant   |invariant     |no              |invariant      |no               |invariant             |
"""

IMPLS = {
    "BatchNorm": ("numba", "numpy", "composed"),
    "LayerNorm": ("numba", "numpy", "composed"),
    "WeightNorm": ("numba", "numpy", "composed"),
}

N, D, H = 8, 5, 6  # cases in the batch, inputs, hidden units
TOL = 1e-10
MARGIN = 0.05


def parse_table(text: str) -> dict:
    """{(row, column): verdict} from a Markdown table whose first column names the rows."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip().startswith("|")]
    split = [[cell.strip() for cell in ln.strip("|").split("|")] for ln in lines]
    header, rows = split[0], [r for r in split[1:] if not set("".join(r)) <= set("-: ")]
    return {(r[0], col): verdict.lower() for r in rows for col, verdict in zip(header[1:], r[1:])}


# -------------------------------------------------------------------------------------------- the model


def layer(norm: str, impl: str, W: np.ndarray, X: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """h for the batch X (N, D) and weights W (H, D), the norm's gain g and bias b (H,)."""
    X, W, g, b = (npnorm.tensor(a) for a in (X, W, g, b))
    if norm == "WeightNorm":
        return F.linear(X, weight_norm(W, g.reshape(H, 1), impl=impl), b).data
    a = F.linear(X, W)  # (N, H) summed inputs
    if norm == "BatchNorm":
        return F.batch_norm(a, None, None, g, b, training=True, eps=0.0, impl=impl).data
    return F.layer_norm(a, H, g, b, eps=0.0, impl=impl).data


# --------------------------------------------------------------------------------- the transformations
# each: (W, X, rng) -> (W', X')


def w_rescaling(W, X, rng):
    return 2.5 * W, X


def w_recentering(W, X, rng, delta=1.7):
    gamma = rng.standard_normal(D)  # (D,)
    return delta * W + np.ones((H, 1)) * gamma, X  # W' = δW + 1γᵀ


def w_row_rescaling(W, X, rng):
    return rng.uniform(0.25, 4.0, size=(H, 1)) * W, X


def data_rescaling(W, X, rng):
    return W, 3.0 * X


def data_recentering(W, X, rng):
    return W, X + rng.standard_normal(D)


def single_case_rescaling(W, X, rng):
    return W, rng.uniform(0.25, 4.0, size=(N, 1)) * X


TRANSFORMS = {
    "W re-scaling": w_rescaling,
    "W re-centering": w_recentering,
    "W row re-scaling": w_row_rescaling,
    "data re-scaling": data_rescaling,
    "data re-centering": data_recentering,
    "single-case re-scaling": single_case_rescaling,
}

VERDICTS = parse_table(TABLE_1)
CELLS = [(norm, col, impl) for (norm, col) in VERDICTS for impl in IMPLS[norm]]


def _setup(rng):
    W = rng.standard_normal((H, D))
    X = 0.5 + rng.standard_normal((N, D))
    g = 1.0 + 0.3 * rng.standard_normal(H)
    b = 0.5 * rng.standard_normal(H)
    return W, X, g, b


def _assert_verdict(verdict: str, h: np.ndarray, h2: np.ndarray, what: str) -> None:
    assert np.all(np.isfinite(h)) and np.all(np.isfinite(h2)), what
    if verdict == "invariant":
        np.testing.assert_allclose(h2, h, rtol=TOL, atol=TOL, err_msg=f"{what}: expected invariant")
    else:
        gap = np.abs(h2 - h).max()
        assert gap > MARGIN, f"{what}: expected the output to change, but it moved only {gap:.3g}"


# ------------------------------------------------------------------------------------------------ Table 1


def test_table_is_complete():
    assert {n for n, _ in VERDICTS} == set(IMPLS)
    assert {c for _, c in VERDICTS} == set(TRANSFORMS)
    assert len(VERDICTS) == 18 and set(VERDICTS.values()) == {"invariant", "no"}


@pytest.mark.parametrize("norm,column,impl", CELLS, ids=[f"{n}-{c}-{i}" for n, c, i in CELLS])
def test_table_1(norm, column, impl, rng):
    W, X, g, b = _setup(rng)
    W2, X2 = TRANSFORMS[column](W, X, rng)
    h = layer(norm, impl, W, X, g, b)
    h2 = layer(norm, impl, W2, X2, g, b)
    _assert_verdict(VERDICTS[norm, column], h, h2, f"{norm} under {column}")


@pytest.mark.parametrize("norm", list(IMPLS))
def test_pure_recentering(norm, rng):
    """W' = W + 1γᵀ (δ = 1): the same verdict as the paper's W' = δW + 1γᵀ."""
    W, X, g, b = _setup(rng)
    W2, _ = w_recentering(W, X, rng, delta=1.0)
    for impl in IMPLS[norm]:
        h, h2 = layer(norm, impl, W, X, g, b), layer(norm, impl, W2, X, g, b)
        _assert_verdict(VERDICTS[norm, "W re-centering"], h, h2, f"{norm} ({impl}) under W + 1γᵀ")


def test_table_matches_docs():
    """docs/comparison.md shows the same table the tests run."""
    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "comparison.md").read_text(encoding="utf-8")
    block = re.search(r"^\|[^\n]*W re-scaling[^\n]*\n(?:\|[^\n]*\n)+", doc, re.MULTILINE)
    assert block is not None, "docs/comparison.md has no Table 1"
    assert parse_table(block.group(0)) == VERDICTS


# ------------------------------------------------------------------------------- the fine print of the table


@pytest.mark.parametrize("norm", list(IMPLS))
@pytest.mark.parametrize("column", ["W re-scaling", "W row re-scaling", "data re-scaling", "single-case re-scaling"])
def test_negative_scale_flips_the_output(norm, column, rng):
    """The scale invariances need δ > 0: δ = −1 negates every summed input, and every normalized output
    flips, h − b → −(h − b) — for the methods invariant in that column, and the rest only change more."""
    W, X, g, b = _setup(rng)
    if column.startswith("W"):
        W2, X2 = -W, X
    elif column == "data re-scaling":
        W2, X2 = W, -X
    else:  # one case negated
        W2, X2 = W, X * np.where(np.arange(N) == 3, -1.0, 1.0)[:, None]
    impl = IMPLS[norm][-1]
    h, h2 = layer(norm, impl, W, X, g, b), layer(norm, impl, W2, X2, g, b)
    if VERDICTS[norm, column] == "invariant" and column != "single-case re-scaling":
        np.testing.assert_allclose(h2 - b, -(h - b), rtol=TOL, atol=TOL)
    elif VERDICTS[norm, column] == "invariant":  # LayerNorm: only the negated case flips
        np.testing.assert_allclose(h2[3] - b, -(h[3] - b), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(np.delete(h2, 3, 0), np.delete(h, 3, 0), rtol=TOL, atol=TOL)
    _assert_verdict("no", h, h2, f"{norm} under {column} with δ = −1")


@pytest.mark.parametrize("impl", IMPLS["LayerNorm"])
def test_bias_before_the_norm(impl, rng):
    """h = LN(W x + c): re-scaling W alone is no longer invariant, re-scaling [W c] together is, and data
    re-scaling is not. BatchNorm does not care: its mean removes c."""
    W, X, g, b = _setup(rng)
    c = rng.standard_normal(H)

    def ln(W_, c_, X_):
        a = F.linear(npnorm.tensor(X_), npnorm.tensor(W_), npnorm.tensor(c_))
        return F.layer_norm(a, H, npnorm.tensor(g), npnorm.tensor(b), eps=0.0, impl=impl).data

    def bn(W_, c_, X_):
        a = F.linear(npnorm.tensor(X_), npnorm.tensor(W_), npnorm.tensor(c_))
        return F.batch_norm(a, None, None, npnorm.tensor(g), npnorm.tensor(b), training=True, eps=0.0, impl=impl).data

    h = ln(W, c, X)
    _assert_verdict("invariant", h, ln(2.5 * W, 2.5 * c, X), "LN(Wx + c) under W, c → δW, δc")
    _assert_verdict("no", h, ln(2.5 * W, c, X), "LN(Wx + c) under W → δW alone")
    _assert_verdict("no", h, ln(W, c, 3.0 * X), "LN(Wx + c) under x → δx")
    h_bn = bn(W, c, X)
    _assert_verdict("invariant", h_bn, bn(W, 0 * c, X), "BN(Wx + c) against BN(Wx)")
    _assert_verdict("invariant", h_bn, bn(2.5 * W, c, X), "BN(Wx + c) under W → δW alone")
    _assert_verdict("invariant", h_bn, bn(W, c, 3.0 * X), "BN(Wx + c) under x → δx")


@pytest.mark.parametrize("norm", ["BatchNorm", "LayerNorm"])
def test_eps_makes_scale_invariance_approximate(norm, rng):
    """With ε > 0 the data-statistics norms compute (a − μ)/√(σ² + ε): re-scaling by δ changes the output
    by a factor √((σ² + ε)/(δ²σ² + ε)), negligible unless δ²σ² is comparable with ε. Table 1 is about ε = 0."""
    W, X, g, b = _setup(rng)
    a = npnorm.tensor(X @ W.T)
    gt, bt = npnorm.tensor(g), npnorm.tensor(b)
    if norm == "BatchNorm":

        def run(a_):
            return F.batch_norm(a_, None, None, gt, bt, training=True, eps=1e-5, impl="numpy").data
    else:

        def run(a_):
            return F.layer_norm(a_, H, gt, bt, eps=1e-5, impl="numpy").data

    h = run(a)
    np.testing.assert_allclose(run(a * 10.0), h, rtol=1e-4, atol=1e-4)  # σ² ≫ ε: nearly invariant
    _assert_verdict("no", h, run(a * 1e-3), f"{norm} with ε = 1e-5 and δ = 1e-3")  # δ²σ² ≈ ε: not
