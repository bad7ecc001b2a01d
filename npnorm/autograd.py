"""The graph, and only the graph: Context, Function.apply, reverse-mode backward, no_grad.

A `Function` subclass holds one operation's math as two static methods on NumPy arrays::

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b):            # arrays in, array out
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad):           # dL/d(out) in, one dL/d(input) per positional input
            a, b = ctx.saved
            return grad * b, grad * a

`Function.apply(*args, **options)` unwraps Tensor arguments to their arrays, runs `forward`, wraps the result
in a Tensor and, when gradients are wanted, records a `Node` so that `backward` can later visit it. Non-Tensor
arguments (axes, exponents, index arrays, flags) pass through unchanged and receive no gradient; a Tensor
goes positionally (as a keyword it would get no gradient, so that is an error). `forward` returns a float32 or
float64 array, and `backward` NumPy arrays or None (bool or integer gradients are summed as floats and cast
to the input's dtype, as in PyTorch).

A graph holds its inputs' arrays by reference, and backward may walk it more than once (gradients add up;
gradcheck relies on it). Unlike PyTorch, nothing tracks changes made in place in the meantime: after an
optimizer step, a second backward through the graph built before it uses the updated weights. Call backward
once per forward, and detach state carried across steps (truncated backpropagation through time).

`backward` walks the recorded graph in reverse topological order without recursion (a chain of 10,000 ops
must not hit Python's recursion limit), summing the gradients of every node that is used more than once.
Nothing in this file knows any math.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

_Tensor = None  # set by npnorm.tensor (the import order is tensor -> autograd, never the reverse)
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)  # the dtypes every native float array holds


class _GradMode(threading.local):
    # Thread-local, as in PyTorch: `no_grad()` in one thread must not switch off recording in another.
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _grad_mode.enabled


@contextmanager
def no_grad():
    """Within this block, operations record no graph: results have `requires_grad=False`."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


class IndexedGrad:
    """A gradient that is zero except at `index`, where it holds `values`: what indexing (GetItem) returns.

    Slicing a tensor into many pieces (gates of an LSTM, the time steps of a sequence) would otherwise give
    every piece's backward a full-size array of zeros, and the engine would then add those up: O(pieces x
    size) work for O(size) of information. The engine instead writes each piece into one dense gradient.
    Only the engine sees these: every Function's backward and every `.grad` receives a dense array.
    """

    __slots__ = ("shape", "dtype", "index", "values", "basic")

    def __init__(self, shape: tuple, index, values: np.ndarray, basic: bool):
        self.shape, self.dtype, self.index, self.values = shape, values.dtype, index, values
        self.basic = basic  # ints and slices: each element at most once; else integer arrays (may repeat)

    def add_into(self, dense: np.ndarray) -> None:
        if self.basic:
            dense[self.index] += self.values
        else:
            np.add.at(dense, self.index, self.values)

    def dense(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=self.dtype)
        self.add_into(out)
        return out


def _sum_grads(pending: tuple, g) -> tuple:
    """(array, owned) + g -> (array, True): in place into an owned array of the right dtype, else a new one."""
    acc, owned = pending
    if isinstance(acc, IndexedGrad):
        acc, owned = acc.dense(), True
    dtype = acc.dtype
    if dtype is not g.dtype or (dtype is not _FLOAT32 and dtype is not _FLOAT64):
        # np.result_type costs ~1 µs: only for mixed dtypes. At least float32: two bool gradients (a Function's
        # backward may return them) would otherwise OR, two int8 ones wrap round; the leaf casts to its dtype
        dtype = np.result_type(dtype, g.dtype, _FLOAT32)
    if isinstance(g, IndexedGrad):
        if not owned or acc.dtype != dtype:
            acc = acc.astype(dtype, copy=True)
        g.add_into(acc)
    elif owned and acc.dtype == dtype:
        # In place into an array the engine owns: no new array per use of a tensor (a weight used at each of
        # 28 steps of an RNN would otherwise allocate 28 sums).
        acc += g
    else:
        # Out of place: the stored array may alias another node's gradient (Add returns `grad` twice).
        acc = (acc if acc.dtype.kind == "f" else acc.astype(dtype)) + g
    return acc, True


class Context:
    """Scratch space that `forward` fills for `backward`.

    `needs_input_grad[i]` says whether positional input i needs a gradient, so `backward` can skip work
    (e.g. dX of the first layer of a network). Any other attribute may be set freely.
    """

    saved = ()  # until save_for_backward (a class default: one attribute less to set per recorded op)

    def __init__(self, needs_input_grad: tuple):
        self.needs_input_grad = needs_input_grad

    def save_for_backward(self, *arrays) -> None:
        self.saved = arrays


class Node:
    """What backward needs of one recorded operation: the Function, its Context, its Tensor inputs."""

    __slots__ = ("fn", "ctx", "parents")

    def __init__(self, fn, ctx, parents):
        self.fn = fn
        self.ctx = ctx
        self.parents = parents  # one entry per positional argument: a Tensor that needs grad, or None


class Function:
    """Base class of every differentiable operation (see the module docstring)."""

    # Set True on a Function whose backward always returns new arrays (or views of new arrays) that nothing
    # else refers to: no inputs, saved arrays or pass-through of `grad`. The engine may then hand them to
    # leaves as `.grad` without a copy (for a large LayerNorm that copy costs as much as the kernel).
    returns_fresh_grads = False

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        if kwargs:  # options only: a Tensor here would reach forward unwrapped and get no gradient
            for key, value in kwargs.items():
                if isinstance(value, _Tensor):
                    raise TypeError(
                        f"{cls.__name__}.apply: the Tensor {key}= must be passed positionally to get a gradient"
                    )
        # One pass over the arguments (arrays, flags and parents together) and the result Tensor built in
        # place: this runs once per recorded op. Measured: 1.9 µs against 2.3 µs for two list comprehensions
        # and Tensor._wrap; then the parents gathered in this loop instead of a comprehension over zip()
        # afterwards, 2.5-2.8 µs against 3.1-3.7 µs for `a + b` (a slower host, measured 7 December).
        Tensor = _Tensor
        enabled = _grad_mode.enabled
        arrays = []
        needs = []
        parents = []
        record = False
        for a in args:
            if isinstance(a, Tensor):
                arrays.append(a.data)
                if enabled and a.requires_grad:
                    needs.append(True)
                    parents.append(a)
                    record = True
                    continue
            else:
                arrays.append(a)
            needs.append(False)
            parents.append(None)
        ctx = Context(tuple(needs))
        out = cls.forward(ctx, *arrays, **kwargs)
        result = object.__new__(Tensor)
        result.data = out if type(out) is np.ndarray else np.asarray(out)
        result._grad = None
        result.requires_grad = record
        result._node = Node(cls, ctx, tuple(parents)) if record else None
        return result


def backward(root, grad: np.ndarray) -> None:
    """Accumulate d(root)/d(leaf) · grad into `.grad` of every leaf that requires grad.

    Each pending gradient travels with a flag saying whether the engine owns it outright (a fresh array
    that nothing else refers to). A leaf's first gradient is stored without a copy only when it is owned;
    anything else (the caller's `grad`, views, an array handed to two inputs) is copied, because `.grad`
    is later accumulated in place.
    """
    order = _topological_order(root)
    grads = {id(root): (grad, False)}
    pop, get = grads.pop, grads.get  # bound once: this loop runs once per recorded tensor
    for tensor in reversed(order):
        pending = pop(id(tensor), None)
        if pending is None:
            continue
        g, owned = pending
        if type(g) is IndexedGrad:
            g, owned = g.dense(), True
        node = tensor._node
        if node is None:
            _accumulate_leaf(tensor, g, owned)
            continue
        fn, parents = node.fn, node.parents
        dtype = tensor.data.dtype
        if dtype is not _FLOAT32 and dtype is not _FLOAT64 and dtype.kind != "f":  # identities first: cheap
            raise TypeError(_non_float_message(tensor))
        input_grads = fn.backward(node.ctx, g)
        if type(input_grads) is not tuple:
            input_grads = (input_grads,)
        if len(input_grads) != len(parents):
            raise RuntimeError(
                f"{fn.__name__}.backward returned {len(input_grads)} gradients for {len(parents)} inputs"
            )
        fresh = fn.returns_fresh_grads
        if fresh and len(input_grads) > 1 and _repeats_an_array(input_grads):
            fresh = False  # one array handed to two inputs: neither may be added into in place
        for parent, pg in zip(parents, input_grads):
            if parent is None or pg is None:
                continue
            kind = type(pg)
            if kind is not np.ndarray and kind is not IndexedGrad:
                if not isinstance(pg, np.generic):  # a NumPy scalar is what NumPy makes of 0-d arithmetic
                    raise TypeError(
                        f"{fn.__name__}.backward returned a {kind.__name__} as a gradient; return NumPy arrays"
                    )
                pg = np.asarray(pg)
            if pg.shape != parent.data.shape:
                raise RuntimeError(
                    f"{fn.__name__}.backward returned a gradient of shape {pg.shape} "
                    f"for an input of shape {parent.data.shape}"
                )
            key = id(parent)
            pending = get(key)
            if pending is None:
                if type(pg) is IndexedGrad:
                    grads[key] = (pg, True)
                else:
                    # a read-only result (np.broadcast_to) cannot be added into later
                    grads[key] = (pg, fresh and pg.flags.writeable)
            else:
                grads[key] = _sum_grads(pending, pg)


def _non_float_message(tensor) -> str:
    """Why the recorded result `tensor` holds no float values: the earliest recorded result upstream whose inputs
    are float (`_Round.apply(x) * 0.5` is an integer Mul because _Round returned integers), or a leaf whose
    .data was replaced by integers."""
    while True:
        parents = [p for p in tensor._node.parents if p is not None and p.data.dtype.kind != "f"]
        leaves = [p for p in parents if p._node is None]
        if leaves:
            return _non_float_leaf_message(leaves[0].data.dtype)
        if not parents:
            return (
                f"{tensor._node.fn.__name__}.forward returned an array of dtype {tensor.data.dtype}, which has no "
                "gradient: a Function must return float32 or float64 to be differentiated"
            )
        tensor = parents[0]


def _non_float_leaf_message(dtype) -> str:
    return (
        f"backward: a leaf holds an array of dtype {dtype} (assigned to its .data?), which has no gradient; "
        "leaves that require grad hold float32 or float64"
    )


def _repeats_an_array(grads: tuple) -> bool:
    """True if one array object appears twice among `grads` (a Function returns two or three: pairwise is quickest)."""
    if len(grads) == 3:  # the norms' (dx, dweight, dbias): written out, 0.1 µs against 0.37 for the loop
        a, b, c = grads
        return (a is not None and (a is b or a is c)) or (b is not None and b is c)
    for i, g in enumerate(grads):
        if g is not None:
            for h in grads[i + 1 :]:
                if g is h:
                    return True
    return False


def _topological_order(root) -> list:
    """Tensors reachable from `root` through recorded nodes, every input before its consumers.

    Depth-first post-order with an explicit stack of (tensor, iterator over its inputs) instead of recursion
    (a chain of 10,000 ops must not hit the recursion limit): a tensor is appended once all of its inputs
    have been, so the reversed list visits every consumer before what it consumes. A leaf has no inputs and
    is appended as soon as it is found, without a stack frame of its own.
    """
    if root._node is None:
        return [root]
    order = []
    append = order.append
    seen = {id(root)}
    stack = [(root, iter(root._node.parents))]
    while stack:
        tensor, inputs = stack[-1]
        for parent in inputs:
            if parent is None or id(parent) in seen:
                continue  # no gradient wanted, or reached before through another path: its place is fixed
            seen.add(id(parent))
            node = parent._node
            if node is None:
                append(parent)
            else:
                stack.append((parent, iter(node.parents)))
                break  # descend; this tensor's iterator resumes where it stopped
        else:
            stack.pop()
            append(tensor)
    return order


def _accumulate_leaf(tensor, g: np.ndarray, owned: bool) -> None:
    if g.dtype != tensor.data.dtype:
        if tensor.data.dtype.kind != "f":
            raise TypeError(_non_float_leaf_message(tensor.data.dtype))
        g, owned = g.astype(tensor.data.dtype), True
    if tensor._grad is None:
        # Unless the engine owns `g`, it may be a view of, or the same object as, another gradient or a
        # user's array: copy it, since later backward calls add into `.grad` in place.
        tensor._grad = g if owned else np.array(g, copy=True)
    else:
        tensor._grad += g
