"""Layers with PyTorch's names, parameter layouts and default initialisation; containers; activations."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import _checks, init
from .module import Module, Parameter

# ---------------------------------------------------------------------------------------- layers


class Linear(Module):
    """y = x Wᵀ + b, with `weight` W of shape (out_features, in_features) and `bias` b of shape (out_features,).

    Initialised as in PyTorch: W and b uniform in ±1/√in_features (PyTorch's kaiming_uniform with a = √5
    works out to exactly this bound). `rng`: a Generator, an int seed, or None for the generator that
    `npnorm.manual_seed` seeds.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = _checks.size("Linear", "in_features", in_features, minimum=0)
        self.out_features = _checks.size("Linear", "out_features", out_features, minimum=0)
        dtype = _checks.float_dtype("Linear", dtype)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        if _checks.flag("Linear", "bias", bias):
            self.bias = Parameter(np.empty(self.out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        gen = _checks.generator("Linear", rng)
        bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        init.uniform_(self.weight, -bound, bound, rng=gen)  # weight first, then bias, as PyTorch draws them
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound, rng=gen)

    def forward(self, x) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: `embedding(indices)` has shape indices.shape + (embedding_dim,).

    `weight` has shape (num_embeddings, embedding_dim), initialised N(0, 1) as in PyTorch. Indices are
    integers in [0, num_embeddings): an integer ndarray, a list, an int, or a Tensor holding whole numbers.
    A row looked up several times receives the sum of its gradients.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype=np.float32, rng=None):
        super().__init__()
        self.num_embeddings = _checks.size("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = _checks.size("Embedding", "embedding_dim", embedding_dim, minimum=0)
        dtype = _checks.float_dtype("Embedding", dtype)
        self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim), dtype=dtype))
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        init.normal_(self.weight, 0.0, 1.0, rng=_checks.generator("Embedding", rng))

    def forward(self, indices) -> Tensor:
        return self.weight[self._check_indices(indices)]

    def _check_indices(self, indices) -> np.ndarray:
        data = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
        if data.dtype.kind == "f" and isinstance(indices, Tensor):
            # Tensors hold floats, so a Tensor of indices must hold whole numbers.
            if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
                raise TypeError("Embedding: an index Tensor must hold whole numbers")
        elif data.dtype.kind not in "iu" and data.size:
            raise TypeError(f"Embedding: indices must be integers, got an array of dtype {data.dtype}")
        # The range is checked before the cast to intp, which would wrap 1e30 or a uint64 >= 2**63 around
        bad = (data < 0) | (data >= self.num_embeddings)
        if np.any(bad):
            first = data[bad].flat[0]
            shown = int(first) if data.dtype.kind in "iu" else f"{float(first):g}"  # 5, 2**63 exactly; 5.0 as 5
            raise IndexError(
                f"Embedding: index {shown} is out of range for {self.num_embeddings} embeddings "
                f"(valid indices are 0 .. {self.num_embeddings - 1})"
            )
        return data.astype(np.intp)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """During training, zero each element with probability p and scale the rest by 1/(1-p); the identity
    in eval mode. The mask comes from `rng` if given, else from the generator `npnorm.manual_seed` seeds."""

    def __init__(self, p: float = 0.5, *, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = None if rng is None else _checks.generator("Dropout", rng)

    def forward(self, x) -> Tensor:
        return F.dropout(x, self.p, training=self.training, generator=self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Identity(Module):
    """Returns its input: a placeholder where a layer is optional (e.g. `norm = Identity()`)."""

    def forward(self, x):
        return x


# ------------------------------------------------------------------------------------ containers


class Sequential(Module):
    """Applies its modules in order. `Sequential(a, b)` names them "0", "1" (PyTorch's state_dict keys);
    `Sequential({"fc": a, "act": b})` keeps the given names. Indexable (a slice gives a Sequential), iterable."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            items = modules[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(modules))
        for name, module in items:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: element {name!r} is a {type(module).__name__}, not a Module")
            self.add_module(name, module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(dict(items[index]))
        return items[_list_index("Sequential", index, len(items))][1]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a Module, got {type(module).__name__}")
        self.add_module(str(len(self)), module)
        return self


class ModuleList(Module):
    """A list of submodules, registered under "0", "1", ... (e.g. the layers of a stacked RNN). It has no
    forward: the owner decides how to call them."""

    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> ModuleList:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList.append: expected a Module, got {type(module).__name__}")
        self.add_module(str(len(self)), module)
        return self

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(modules[index])
        return modules[_list_index("ModuleList", index, len(modules))]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


def _list_index(who: str, index, n: int) -> int:
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError(f"{who}: indices must be integers or slices, got {type(index).__name__}")
    if not -n <= index < n:
        raise IndexError(f"{who}: index {index} is out of range for {n} modules")
    return int(index) % n


# ----------------------------------------------------------------------------------- activations


class ReLU(Module):
    def forward(self, x) -> Tensor:
        return F.relu(x)


class Tanh(Module):
    def forward(self, x) -> Tensor:
        return F.tanh(x)


class Sigmoid(Module):
    def forward(self, x) -> Tensor:
        return F.sigmoid(x)


class GELU(Module):
    """x Φ(x) (exact, with erf); approximate="tanh" for the tanh approximation."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"
