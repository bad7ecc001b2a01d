"""`Module` and `Parameter`: the bookkeeping every layer shares, with PyTorch's names and semantics.

A Module owns three kinds of state, registered simply by assigning attributes in `__init__`:

* parameters — `self.weight = Parameter(...)`: trained, listed by `parameters()`, saved in `state_dict()`;
* buffers — `self.register_buffer("running_mean", np.zeros(C))`: NumPy arrays that are saved in
  `state_dict()` but not trained (BatchNorm's running statistics);
* submodules — `self.fc = Linear(...)`: their state appears under dotted names, `fc.weight`.

Names in `state_dict()` are the attribute paths, so a model built with the same structure as a PyTorch
model loads PyTorch's weights: `model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable: `requires_grad=True` unless told otherwise.

    Like `Tensor(data)`, it wraps an ndarray without copying it (a Tensor's array is shared).
    """

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(strict=False)` skipped: keys the model has but the dict lacks, and the reverse."""

    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of every layer and model. Subclasses call `super().__init__()` first, then assign state."""

    training: bool

    def __init__(self):
        # object.__setattr__: our own __setattr__ would look for these dicts before they exist.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---------------------------------------------------------------------------------- registration
    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register `param` (or None: a declared but absent parameter, like a Linear without bias)."""
        self._check_name("register_parameter", name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"register_parameter: {name!r} must be an npnorm.nn.Parameter or None, got {type(param).__name__}"
            )
        self._remove(name, keep=self._parameters)
        self._parameters[name] = param

    def register_buffer(self, name: str, array: np.ndarray | None) -> None:
        """Register a NumPy array that is saved in `state_dict()` but is not a parameter."""
        self._check_name("register_buffer", name)
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"register_buffer: {name!r} must be a numpy.ndarray or None, got {type(array).__name__}")
        self._remove(name, keep=self._buffers)
        self._buffers[name] = array

    def add_module(self, name: str, module: Module | None) -> None:
        self._check_name("add_module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be an npnorm.nn.Module or None, got {type(module).__name__}")
        self._remove(name, keep=self._modules)
        self._modules[name] = module

    def _check_name(self, who: str, name) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{who}: call Module.__init__() (super().__init__()) before assigning state")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{who}: name must be a non-empty string without '.', got {name!r}")
        if hasattr(type(self), name):
            raise KeyError(f"{who}: {name!r} would hide the attribute {type(self).__name__}.{name}")

    def _remove(self, name: str, keep: dict) -> None:
        """Forget `name` everywhere but in `keep` (re-assigning a parameter keeps its place in the order)."""
        for store in (self.__dict__, self._parameters, self._buffers, self._modules):
            if store is not keep:
                store.pop(name, None)

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        if isinstance(value, Parameter):
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self.add_module(name, value)
        elif "_parameters" in d and name in d["_parameters"]:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter {name!r} "
                    "(an npnorm.nn.Parameter or None is expected)"
                )
            self._parameters[name] = None
        elif "_buffers" in d and name in d["_buffers"]:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(
                    f"cannot assign {type(value).__name__} to buffer {name!r} (an ndarray or None is expected)"
                )
            self._buffers[name] = value
        elif "_modules" in d and name in d["_modules"]:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to submodule {name!r} (a Module or None is expected)"
                )
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        # Called only when normal lookup fails, i.e. for registered state (and for genuine typos).
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    # -------------------------------------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "", _memo: set | None = None) -> Iterator[tuple[str, Module]]:
        """This module and all below it, each once (a module reached twice keeps its first name)."""
        memo = set() if _memo is None else _memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(self, store: str, recurse: bool):
        seen = set()
        modules = self.named_modules() if recurse else [("", self)]
        for prefix, module in modules:
            for name, value in getattr(module, store).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))  # a shared (tied) parameter is listed once, under its first name
                yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self, recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs; a parameter shared by several modules appears once."""
        return self._named_members("_parameters", recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse):
            yield param

    def named_buffers(self, recurse: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        return self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, buf in self.named_buffers(recurse):
            yield buf

    def apply(self, fn) -> Module:
        """Call `fn(module)` on every submodule (children first) and on self; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # --------------------------------------------------------------------------------------- training
    def train(self, mode: bool = True) -> Module:
        """Set training mode (Dropout drops, BatchNorm uses batch statistics) here and in every submodule."""
        if not isinstance(mode, bool):
            raise ValueError(f"train: mode must be True or False, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: the same as `train(False)`."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter."""
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget accumulated gradients: `.grad = None` (or, with set_to_none=False, fill them with zeros)."""
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param._grad = None  # not through the checking setter: this runs per parameter per step
            else:
                param.grad[...] = 0

    # ------------------------------------------------------------------------------------- state dict
    def _state_arrays(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Every parameter array and buffer under its dotted name. Unlike `named_parameters`, a shared
        parameter appears under each of its names, as in PyTorch's state_dict."""
        for name, param in self._parameters.items():
            if param is not None:
                yield prefix + name, param.data
        for name, buf in self._buffers.items():
            if buf is not None:
                yield prefix + name, buf
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_arrays(f"{prefix}{name}.")

    def state_dict(self) -> dict[str, np.ndarray]:
        """{dotted name: copy of the array} for every parameter and buffer; later training leaves it unchanged."""
        return {name: array.copy() for name, array in self._state_arrays()}

    def load_state_dict(self, state_dict: Mapping, strict: bool = True) -> IncompatibleKeys:
        """Copy the arrays of `state_dict` into this model's parameters and buffers, in place.

        Values are cast to each parameter's dtype and written into the existing arrays, so an optimizer
        holding the parameters sees the new values. Everything is checked before anything is written: on
        any error the model is unchanged and one RuntimeError lists every problem — missing keys and
        unexpected keys (with strict=True), and shape mismatches or unusable values (always). Returns the
        missing and unexpected keys.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict: expected a dict of arrays, got {type(state_dict).__name__}")
        targets = dict(self._state_arrays())
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        errors = []
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        staged = []
        for key, target in targets.items():
            if key not in state_dict:
                continue
            value, problem = _as_array(state_dict[key])
            if problem is None and value.shape != target.shape:
                problem = (
                    f"size mismatch for {key}: copying a value of shape {value.shape} from the state_dict, "
                    f"the shape in the current model is {target.shape}."
                )
            elif problem is None and not target.flags.writeable:
                problem = f"cannot load {key}: the model's array is read-only."
            elif problem is not None:
                problem = f"bad value for {key}: {problem}."
            if problem is None:
                staged.append((target, value.astype(target.dtype, copy=False)))
            else:
                errors.append(problem)
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for target, value in staged:
            np.copyto(target, value)
        return IncompatibleKeys(missing, unexpected)

    # ---------------------------------------------------------------------------------------- display
    def extra_repr(self) -> str:
        """The arguments shown inside `ClassName(...)`; layers override it."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        children = [f"({name}): {_indent(repr(module))}" for name, module in self._modules.items()]
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = extra.split("\n") + children if extra else children
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _as_array(value) -> tuple[np.ndarray | None, str | None]:
    """A state_dict value as a numeric ndarray, or None and the reason it is not one."""
    if isinstance(value, Tensor):
        value = value.data
    try:
        array = np.asarray(value)
    except Exception as exc:  # e.g. a torch tensor that still requires grad
        return None, f"cannot convert {type(value).__name__} to an array ({exc})"
    if array.dtype.kind not in "biuf":
        return None, f"expected a numeric array, got dtype {array.dtype}"
    return array, None


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")
