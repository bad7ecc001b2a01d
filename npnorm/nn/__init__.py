"""`npnorm.nn`: modules with PyTorch's names, parameter layouts and state_dict keys.

module.py         Module (parameters, buffers, submodules, state_dict) and Parameter
layers.py         Linear, Embedding, Dropout, Identity, Sequential, ModuleList, activations
normalization.py  LayerNorm, AdaNorm (thin classes over npnorm.functional)
init.py           in-place initialisers (uniform_, normal_, ones_, zeros_)
"""

from . import init
from .layers import GELU, Dropout, Embedding, Identity, Linear, ModuleList, ReLU, Sequential, Sigmoid, Tanh
from .module import IncompatibleKeys, Module, Parameter
from .normalization import AdaNorm, LayerNorm

__all__ = [
    "GELU",
    "AdaNorm",
    "Dropout",
    "Embedding",
    "Identity",
    "IncompatibleKeys",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "init",
]
