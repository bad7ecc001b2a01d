"""`npnorm check`'s table (npnorm.checks): it catches a wrong forward behind a frozen function, keeps going
past a norm that raises, prints the largest gap it measured, and labels numba rows honestly."""

from __future__ import annotations

import numpy as np
import pytest

import npnorm.norms.layer_norm as layer_norm
import npnorm.norms.rms_norm as rms_norm
from npnorm import checks


def _table(**options) -> tuple[bool, list[str]]:
    lines = []
    ok = checks.run_checks(out=lines.append, **options)
    return ok, lines


def _rows(lines, norm):
    return [line for line in lines if line.startswith(norm)]


def test_a_wrong_ada_norm_forward_fails_although_its_backward_is_right(monkeypatch):
    """The AdaNorm rows differentiate a frozen copy of the maths; the norm's own values were thrown away."""
    right = layer_norm.ada_forward_reference
    monkeypatch.setattr(layer_norm, "ada_forward_reference", lambda x, C, k, eps: right(x, C, -k, eps))
    ok, lines = _table(norms=["ada_norm"], impls=["numpy"])
    assert not ok
    assert all(" FAIL " in row for row in _rows(lines, "ada_norm"))
    assert "the frozen function differs from the norm's forward" in "\n".join(lines)


def test_a_wrong_detach_norm_forward_fails(monkeypatch):
    right = layer_norm.forward_reference

    def scaled(x, weight, bias, eps):
        y, mean, rstd = right(x, weight, bias, eps)
        return y * 1.01, mean, rstd

    monkeypatch.setattr(layer_norm, "forward_reference", scaled)
    ok, lines = _table(norms=["layer_norm"], impls=["numpy"])
    assert not ok and all(" FAIL " in row for row in _rows(lines, "layer_norm"))
    detach_rows = [row for row in _rows(lines, "layer_norm") if "detach" in row.lower()]
    assert len(detach_rows) == 3


def test_a_norm_that_raises_is_a_fail_row_and_the_table_goes_on(monkeypatch):
    def broken(*args, **kwargs):
        raise FloatingPointError("overflow in the backward")

    monkeypatch.setattr(rms_norm, "backward_reference", broken)
    ok, lines = _table(norms=["rms_norm", "weight_norm"], impls=["numpy"])
    assert not ok
    assert all(" FAIL " in row for row in _rows(lines, "rms_norm"))
    assert "FloatingPointError: overflow in the backward" in "\n".join(lines)
    assert _rows(lines, "weight_norm") and all(" ok " in row for row in _rows(lines, "weight_norm"))
    assert lines[-2] == "some gradient checks FAILED" and lines[-1].startswith("max gap")


def test_each_passing_row_prints_the_largest_gap_it_measured():
    ok, lines = _table(norms=["rms_norm"], impls=["numpy"])
    assert ok
    for row in _rows(lines, "rms_norm"):
        gap = float(row.split()[-2])
        assert 0 < gap < 1e-5  # finite differences of a smooth function at step 1e-6: ~1e-10, never exactly 0


def test_an_impl_given_twice_runs_once():
    _, lines = _table(norms=["weight_norm"], impls=["numpy", "numpy"])
    assert len(_rows(lines, "weight_norm")) == 2  # its two variants, once each


def test_numba_rows_without_numba_say_what_they_ran(monkeypatch):
    monkeypatch.setattr(checks.kernels, "load", lambda name: None)
    _, lines = _table(norms=["rms_norm"], impls=["numba"])
    assert all(row.split()[-4] == "numba*" for row in _rows(lines, "rms_norm"))
    assert lines[-1] == "* numba cannot be imported here: the numba rows ran the NumPy reference"


@pytest.mark.parametrize("value_offset", [0.0, 1e-6])
def test_straight_through_keeps_both_functions(value_offset):
    import npnorm

    fn = checks.straight_through(lambda x: x * 2.0 + value_offset, lambda x: x * 3.0)
    x = npnorm.tensor(np.ones(3), requires_grad=True)
    y = fn(x)
    y.sum().backward()
    np.testing.assert_array_equal(y.data, 2.0 + value_offset)
    np.testing.assert_array_equal(x.grad, 3.0)
    assert fn.value_fn(x).data[0] == 2.0 + value_offset and fn.grad_fn(x).data[0] == 3.0


def test_each_inputs_jacobians_are_computed_once_per_row(monkeypatch):
    """The verdict and the printed gap come from one pass over the Jacobians (they were computed twice)."""
    import sys

    gc = sys.modules["npnorm.gradcheck"]  # the attribute npnorm.gradcheck is the function, not the module
    calls = []
    original = gc._full_jacobians

    def counting(fn, inputs, i, eps):
        calls.append(i)
        return original(fn, inputs, i, eps)

    monkeypatch.setattr(gc, "_full_jacobians", counting)
    monkeypatch.setattr(checks, "_full_jacobians", counting, raising=False)  # where checks once had its own copy
    ok, lines = _table(norms=["weight_norm"], impls=["numpy"])
    assert ok
    rows = _rows(lines, "weight_norm")
    checked_inputs = 2 * len(rows)  # v and g in each of weight norm's rows
    assert len(calls) == checked_inputs
