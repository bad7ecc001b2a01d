"""In-place initialisers for parameters, as in `torch.nn.init` (names end in `_` because they modify).

Each fills `tensor.data` in its own dtype and returns the tensor. `rng` is a `np.random.Generator`, an int
seed, or None for the generator that `npnorm.manual_seed` seeds, so seeding once makes a model reproducible.
Draws are made in float64 and then rounded to the parameter's dtype.
"""

from __future__ import annotations

from . import _checks


def uniform_(tensor, a: float = 0.0, b: float = 1.0, *, rng=None):
    """Fill with draws from U(a, b)."""
    gen = _checks.generator("uniform_", rng)
    tensor.data[...] = gen.uniform(a, b, size=tensor.shape)
    return tensor


def normal_(tensor, mean: float = 0.0, std: float = 1.0, *, rng=None):
    """Fill with draws from N(mean, std²)."""
    gen = _checks.generator("normal_", rng)
    tensor.data[...] = gen.normal(mean, std, size=tensor.shape)
    return tensor


def ones_(tensor):
    tensor.data[...] = 1
    return tensor


def zeros_(tensor):
    tensor.data[...] = 0
    return tensor
