"""Finite-difference gradient checking: does backward agree with the function it differentiates?

For f: inputs -> output, the analytic Jacobian J comes from backward (one call per output element, with a
one-hot upstream gradient), the numerical one from central differences,

    J_num[:, k] = (f(x + eps·e_k) - f(x - eps·e_k)) / (2 eps),

whose error is O(eps²) (truncation) + O(machine_eps / eps) (rounding): with eps = 1e-6 in float64 both are
around 1e-10 for well-scaled functions, far below the default tolerance. An entry passes when

    |analytic - numerical| <= atol + rtol·|numerical|       (as numpy.allclose and PyTorch's gradcheck).

Fast mode replaces the full Jacobians by random projections vᵀJu (HIPS autograd's and PyTorch's idea): one
backward and two forward calls per input instead of one per element. With u, v standard Gaussian and an
error matrix E = J_analytic - J_numerical, vᵀEu has standard deviation ‖E‖_F, which is at most
atol·√(mn) + rtol·‖J‖_F when every entry is within tolerance; ‖J‖_F is estimated by ‖Jᵀv‖. A projection
that misses by more than three such deviations fails, and full mode is then run on that input to name the
worst element. That allowance grows with √(mn), while a single wrong entry moves vᵀEu by only its own error:
fast mode finds errors spread over many entries (a wrong formula), not one wrong element of a large Jacobian
(measured: a 1% error in one of 100 entries of y = 2x went unnoticed in 98 of 100 tries). To find those,
use full mode, as the package's own tests do.

Also checked first: fn returns float64 (float32 rounding divided by 2·eps would swamp the derivative), gives
the same values twice on the same inputs (a random forward, such as dropout without a fixed generator, would
otherwise read as a wrong gradient), and backward is deterministic. Afterwards every leaf of fn's graph has the
`.grad` it had before, parameters that fn uses as well as the checked inputs.
"""

from __future__ import annotations

import numpy as np

from .autograd import _topological_order, no_grad
from .tensor import Tensor

_FAST_PROJECTIONS = 3
_FAST_SIGMAS = 3.0


class GradcheckError(AssertionError):
    """A gradient check failed. Attributes name the input, the output and input elements, and the numbers."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.__dict__.update(details)


def gradcheck(
    fn,
    inputs,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    fast_mode: bool = False,
) -> bool:
    """Compare the gradients that backward computes for `fn(*inputs)` with central finite differences.

    `inputs` is a Tensor or a tuple (or list) of arguments; the Tensors among them with `requires_grad=True`
    are checked and must be float64, in writable arrays (each is perturbed in place). `fn` returns a Tensor of
    any shape. Also checked: backward is deterministic (two calls give identical gradients) and `fn` does not
    modify its inputs.

    Returns True when everything agrees. Otherwise raises `GradcheckError` (an AssertionError) naming the
    input, the output element, the input element, the analytic and numerical values, the absolute and
    relative error, the allowed error and how many entries fail — or returns False when
    `raise_exception=False`.
    """
    problem = _run_checks(fn, inputs, eps, atol, rtol, fast_mode, gaps=None)
    if problem is None:
        return True
    if raise_exception:
        raise problem
    return False


def largest_gap_or_raise(fn, inputs, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3) -> float:
    """:func:`gradcheck` in full mode that, when everything agrees, returns the largest |analytic − numerical|
    over every Jacobian entry of every checked input (for `npnorm check`'s table); raises GradcheckError
    otherwise. One pass over the Jacobians serves both the verdict and the number."""
    gaps: list[float] = []
    problem = _run_checks(fn, inputs, eps, atol, rtol, False, gaps=gaps)
    if problem is not None:
        raise problem
    return max(gaps)


def _run_checks(fn, inputs, eps, atol, rtol, fast_mode, gaps) -> GradcheckError | None:
    """Every check of :func:`gradcheck`, in order; the first problem found, or None. With a list ``gaps``
    (full mode only), each input's largest |analytic − numerical| is appended to it."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    checked = _checked_inputs(inputs)
    if not (0 < eps < np.inf and 0 <= atol < np.inf and 0 <= rtol < np.inf):  # NaN fails every comparison
        raise ValueError(f"gradcheck: need eps > 0, atol >= 0, rtol >= 0; got eps={eps}, atol={atol}, rtol={rtol}")
    snapshots = [np.array(inputs[i].data, copy=True) for i in checked]
    # every leaf that fn's backward reaches (a layer's parameters, not only the inputs): restored at the end
    leaves = {id(inputs[i]): inputs[i] for i in checked}
    saved_grads = None
    try:
        out = _evaluate(fn, inputs)
        leaves.update((id(t), t) for t in _topological_order(out) if t._node is None and t.requires_grad)
        # the arrays themselves and their values: backward adds into a parameter's .grad in place
        saved_grads = [(t, t.grad, None if t.grad is None else t.grad.copy()) for t in leaves.values()]
        # First: an fn that rewrites its input (x.data *= 2) would otherwise be reported as a random forward or
        # a wrong gradient, since every later call then sees a changed function.
        problem = _check_unmodified(inputs, checked, snapshots)
        if problem is None:
            problem = _check_forward_determinism(fn, inputs, out)
        if problem is None:
            problem = _check_determinism(out, inputs, checked)
        if problem is None:
            if fast_mode:
                problem = _check_fast(fn, inputs, checked, eps, atol, rtol)
            else:
                problem = _check_full(fn, inputs, checked, eps, atol, rtol, gaps)
        if problem is None:
            problem = _check_unmodified(inputs, checked, snapshots)
    finally:
        for t, grad, values in saved_grads or ():
            if grad is not None:
                grad[...] = values
            t._grad = grad
    return problem


# ---------------------------------------------------------------------------------------------- checks


def _checked_inputs(inputs: tuple) -> list[int]:
    checked = []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            if x.dtype != np.float64:
                raise TypeError(
                    f"gradcheck: input {i} is {x.dtype}; finite differences need float64 "
                    f"(create it with dtype=np.float64, e.g. npnorm.tensor(data, dtype='float64'))"
                )
            if not x.is_leaf:
                raise ValueError(
                    f"gradcheck: input {i} is not a leaf tensor; pass leaves (e.g. x.detach().requires_grad_())"
                )
            if not x.data.flags.writeable:
                raise ValueError(
                    f"gradcheck: input {i} holds a read-only array, and finite differences perturb each input in "
                    "place; pass a writable copy (npnorm.tensor(np.array(data), requires_grad=True))"
                )
            checked.append(i)
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")
    return checked


def _evaluate(fn, inputs) -> Tensor:
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise TypeError(
            f"gradcheck: fn returned {out.dtype}; finite differences need a float64 output (its rounding, divided "
            "by 2·eps, would swamp the derivative)"
        )
    return out


def _first_difference(a: np.ndarray, b: np.ndarray) -> tuple:
    """The first index (in C order) where a and b differ, NaN counting as equal to NaN."""
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    return tuple(int(k) for k in np.unravel_index(int(np.flatnonzero(differ)[0]), a.shape)) if a.ndim else ()


def _check_forward_determinism(fn, inputs, out):
    again = _evaluate(fn, inputs)
    if again.shape != out.shape or not np.array_equal(again.data, out.data, equal_nan=True):
        where = _first_difference(out.data, again.data) if again.shape == out.shape else "its shape"
        return GradcheckError(
            f"gradcheck: fn is not deterministic: two calls on the same inputs returned different values, first at "
            f"element {where}; finite differences need the same function every call (fix any random generator's seed)"
        )
    return None


def _backward_grads(out: Tensor, upstream: np.ndarray, inputs, checked) -> list[np.ndarray]:
    """Gradients of <out, upstream> with respect to each checked input (zeros where none arrives)."""
    for i in checked:
        inputs[i].grad = None
    if out.requires_grad:
        out.backward(upstream.astype(out.dtype))
    return [np.zeros_like(inputs[i].data) if inputs[i].grad is None else inputs[i].grad for i in checked]


def _check_determinism(out, inputs, checked):
    """Two backward passes through `out`'s graph (the first evaluation's: a graph may be walked again) agree."""
    v = np.random.default_rng(0).standard_normal(out.shape)
    first = _backward_grads(out, v, inputs, checked)
    second = _backward_grads(out, v, inputs, checked)
    for i, a, b in zip(checked, first, second):
        if not np.array_equal(a, b, equal_nan=True):
            return GradcheckError(
                f"gradcheck: backward is not deterministic for input {i}: two calls with the same upstream "
                f"gradient differ, first at element {_first_difference(a, b)}",
                input_index=i,
            )
    return None


def _check_unmodified(inputs, checked, snapshots):
    for i, before in zip(checked, snapshots):
        if not np.array_equal(inputs[i].data, before, equal_nan=True):
            return GradcheckError(f"gradcheck: fn modified input {i} in place", input_index=i)
    return None


def _numerical_directional(fn, inputs, i: int, direction: np.ndarray, eps: float) -> np.ndarray:
    """(f(x_i + eps·d) - f(x_i - eps·d)) / (2 eps), the derivative of the output along d."""
    x = inputs[i].data
    original = x.copy()
    with no_grad():
        try:
            x += eps * direction
            plus = np.array(_evaluate(fn, inputs).data, dtype=np.float64)
            x[...] = original - eps * direction
            minus = np.array(_evaluate(fn, inputs).data, dtype=np.float64)
        finally:
            x[...] = original
    return (plus - minus) / (2 * eps)


def _full_jacobians(fn, inputs, i: int, eps: float) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Analytic and numerical Jacobians of the output with respect to input i, shape (out.size, x.size)."""
    out = _evaluate(fn, inputs)
    x = inputs[i].data
    analytic = np.zeros((out.size, x.size))
    onehot = np.zeros(out.size)
    for j in range(out.size):
        onehot[j] = 1.0
        (g,) = _backward_grads(out, onehot.reshape(out.shape), inputs, [i])
        analytic[j] = g.ravel()
        onehot[j] = 0.0
    numerical = np.zeros_like(analytic)
    # C order whatever x's layout, so that `flat` is a view of `direction` and k counts as ravel() does
    direction = np.zeros(x.shape)
    flat = direction.reshape(-1)
    for k in range(x.size):
        flat[k] = 1.0
        numerical[:, k] = _numerical_directional(fn, inputs, i, direction, eps).ravel()
        flat[k] = 0.0
    return analytic, numerical, out.shape


def _check_full(fn, inputs, checked, eps, atol, rtol, gaps=None):
    for i in checked:
        analytic, numerical, out_shape = _full_jacobians(fn, inputs, i, eps)
        problem = _compare_jacobians(i, analytic, numerical, out_shape, inputs[i].shape, atol, rtol)
        if problem is not None:
            return problem
        if gaps is not None:
            gaps.append(float(np.max(np.abs(analytic - numerical), initial=0.0)))
    return None


def _compare_jacobians(i, analytic, numerical, out_shape, in_shape, atol, rtol):
    with np.errstate(invalid="ignore"):  # inf - inf below: NaN, which counts as a failure
        err = np.abs(analytic - numerical)
        allowed = atol + rtol * np.abs(numerical)
        # numpy.allclose's rule, infinities included: an infinite numerical derivative passes only an equal
        # analytic one (err <= atol + rtol·inf would pass anything); NaN on either side fails
        bad = ~np.isclose(analytic, numerical, rtol=rtol, atol=atol)
        n_bad = int(bad.sum())
        if n_bad == 0:
            return None
        # Worst = the failing entry with the largest excess over the allowed error (NaN or inf excess first)
        excess = np.where(bad, np.nan_to_num(err - allowed, nan=np.inf), -np.inf)
    j, k = np.unravel_index(np.argmax(excess), err.shape)
    out_index = tuple(int(t) for t in np.unravel_index(j, out_shape)) if out_shape else ()
    in_index = tuple(int(t) for t in np.unravel_index(k, in_shape)) if in_shape else ()
    a, n, e, tol = analytic[j, k], numerical[j, k], err[j, k], allowed[j, k]
    with np.errstate(invalid="ignore"):  # inf / inf: NaN, printed as such
        rel = e / abs(n) if n != 0 else np.inf
    message = (
        f"gradcheck failed for input {i}: d(output{list(out_index)}) / d(input{i}{list(in_index)}): "
        f"analytic {a:.8e}, numerical {n:.8e}, abs error {e:.3e}, rel error {rel:.3e}, "
        f"allowed {tol:.3e} (atol {atol:g} + rtol {rtol:g}·|numerical|); "
        f"{n_bad} of {err.size} Jacobian entries fail (input shape {in_shape}, output shape {tuple(out_shape)})"
    )
    return GradcheckError(
        message,
        input_index=i,
        output_index=out_index,
        element_index=in_index,
        analytic=float(a),
        numerical=float(n),
        abs_error=float(e),
        rel_error=float(rel),
        allowed=float(tol),
        num_failed=n_bad,
        num_total=int(err.size),
    )


def _check_fast(fn, inputs, checked, eps, atol, rtol):
    rng = np.random.default_rng(1234)
    out = _evaluate(fn, inputs)
    for _ in range(_FAST_PROJECTIONS):
        v = rng.standard_normal(out.shape)
        grads = _backward_grads(out, v, inputs, checked)
        for i, g in zip(checked, grads):
            u = rng.standard_normal(inputs[i].shape)
            analytic = float(np.sum(g * u))
            numerical = float(np.sum(_numerical_directional(fn, inputs, i, u, eps) * v))
            scale = atol * np.sqrt(out.size * u.size) + rtol * float(np.linalg.norm(g))
            if not abs(analytic - numerical) <= _FAST_SIGMAS * scale:
                # Name the worst element: full mode on this input only.
                detailed = _check_full(fn, inputs, [i], eps, atol, rtol)
                if detailed is not None:
                    return detailed
                return GradcheckError(
                    f"gradcheck (fast mode) failed for input {i}: projection vᵀJu analytic {analytic:.8e}, "
                    f"numerical {numerical:.8e}, abs error {abs(analytic - numerical):.3e}, allowed "
                    f"{_FAST_SIGMAS * scale:.3e}; element-wise all entries were within tolerance",
                    input_index=i,
                    analytic=analytic,
                    numerical=numerical,
                )
    return None
