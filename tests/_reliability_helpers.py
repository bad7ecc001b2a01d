"""Helpers for tests/test_reliability.py that must be importable by child processes.

A `multiprocessing` pool with the "spawn" context pickles the function it maps by reference, so that
function has to live in an importable module, not in the `-c` script of a subprocess; and the
subprocesses that run without numba, or with NUMBA_DISABLE_JIT=1, all compute the same table of norm
outputs. Both live here. Nothing in this file imports numba itself.
"""

from __future__ import annotations

import importlib.abc
import sys

import numpy as np


def norm_outputs(impl: str = "numba", seed: int = 0, big: tuple = ()) -> dict[str, np.ndarray]:
    """Forward and backward of every norm on fixed small inputs: {"<norm>.<y|dx|dweight|...>": array}.

    `big` names norms ("layer_norm", "rms_norm", "batch_norm", "group_norm") to run a second time on an
    input of 2 * SERIAL_BELOW elements, large enough to take the parallel kernels (the threshold is read
    from kernels/_jit.py, which needs numba); those entries are "<norm>_parallel.<...>".
    """
    import npnorm
    import npnorm.functional as F

    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}

    def record(name, fn, x, **params):
        xt = npnorm.tensor(x, requires_grad=True)
        pt = {k: npnorm.tensor(v, requires_grad=True) for k, v in params.items()}
        y = fn(xt, **pt)
        y.backward(rng.standard_normal(y.shape).astype(y.dtype))
        out[f"{name}.y"] = y.data
        out[f"{name}.dx"] = xt.grad
        for k, t in pt.items():
            out[f"{name}.d{k}"] = t.grad

    def batch_norm(name, x, w, b):
        running_mean, running_var = np.zeros(x.shape[1], x.dtype), np.ones(x.shape[1], x.dtype)
        record(name, lambda x, w, b: F.batch_norm(x, running_mean, running_var, w, b, training=True, impl=impl),
               x, w=w, b=b)  # fmt: skip
        out[f"{name}.running_mean"], out[f"{name}.running_var"] = running_mean, running_var

    x = rng.standard_normal((6, 16)) * 3 + 1
    record("layer_norm", lambda x, w, b: F.layer_norm(x, 16, w, b, impl=impl), x,
           w=rng.standard_normal(16), b=rng.standard_normal(16))  # fmt: skip
    record("ada_norm", lambda x: F.ada_norm(x, 16, C=2.0, impl=impl), x)
    record("rms_norm", lambda x, w: F.rms_norm(x, 16, w, impl=impl), x, w=rng.standard_normal(16))
    batch_norm("batch_norm", rng.standard_normal((8, 3, 4)), rng.standard_normal(3), rng.standard_normal(3))
    record("group_norm", lambda x, w, b: F.group_norm(x, 3, w, b, impl=impl), rng.standard_normal((4, 6, 3)),
           w=rng.standard_normal(6), b=rng.standard_normal(6))  # fmt: skip
    record("weight_norm", lambda v, g: F.weight_norm(v, g, dim=0, impl=impl), rng.standard_normal((5, 7)),
           g=rng.standard_normal(5))  # fmt: skip
    if big:
        from npnorm.kernels._jit import SERIAL_BELOW

        N, H = 2 * SERIAL_BELOW // 128, 128  # float32, with a mean far from 0 as in real activations

        def data(*shape):
            return (rng.standard_normal(shape) + 2.0).astype(np.float32)

        if "layer_norm" in big:
            record("layer_norm_parallel", lambda x, w, b: F.layer_norm(x, H, w, b, impl=impl), data(N, H),
                   w=data(H), b=data(H))  # fmt: skip
        if "rms_norm" in big:
            record("rms_norm_parallel", lambda x, w: F.rms_norm(x, H, w, impl=impl), data(N, H), w=data(H))
        if "batch_norm" in big:
            batch_norm("batch_norm_parallel", data(N, H // 4, 4), data(H // 4), data(H // 4))
        if "group_norm" in big:
            record("group_norm_parallel", lambda x, w, b: F.group_norm(x, 8, w, b, impl=impl), data(N, 32, 4),
                   w=data(32), b=data(32))  # fmt: skip
    return out


ALL_PARALLEL = ("layer_norm", "rms_norm", "batch_norm", "group_norm")


def pool_task(seed: int) -> dict[str, np.ndarray]:
    """What a pool worker maps: every numba kernel, including a parallel one."""
    return norm_outputs("numba", seed, big=ALL_PARALLEL)


class _BlockNumba(importlib.abc.MetaPathFinder):
    """A meta-path finder that makes `import numba` (and llvmlite) fail as if they were not installed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in ("numba", "llvmlite"):
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by the test)", name=fullname)
        return None


def block_numba() -> None:
    """From now on numba cannot be imported in this process (call before anything imports it)."""
    assert "numba" not in sys.modules, "numba was imported before it could be blocked"
    sys.meta_path.insert(0, _BlockNumba())
