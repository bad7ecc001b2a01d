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
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = [
    "GELU",
    "GRU",
    "LSTM",
    "RNN",
    "AdaNorm",
    "Dropout",
    "Embedding",
    "GRUCell",
    "Identity",
    "IncompatibleKeys",
    "LSTMCell",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "Parameter",
    "RNNCell",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "init",
]
