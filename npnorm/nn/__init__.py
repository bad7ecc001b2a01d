"""`npnorm.nn`: modules with PyTorch's names, parameter layouts and state_dict keys.

module.py         Module (parameters, buffers, submodules, state_dict) and Parameter
layers.py         Linear, Embedding, Dropout, Identity, Sequential, ModuleList, activations
normalization.py  LayerNorm, AdaNorm, RMSNorm, BatchNorm1d, GroupNorm (thin classes over npnorm.functional)
rnn.py            RNNCell, LSTMCell, GRUCell and RNN, LSTM, GRU (Ba et al. 2016 layer-normalized variants)
weight_norm.py    WeightNormLinear (w = g·v/‖v‖, PyTorch's weight_g, weight_v)
init.py           in-place initialisers (uniform_, normal_, ones_, zeros_)
"""

from . import init
from .layers import GELU, Dropout, Embedding, Identity, Linear, ModuleList, ReLU, Sequential, Sigmoid, Tanh
from .module import IncompatibleKeys, Module, Parameter
from .normalization import AdaNorm, BatchNorm1d, GroupNorm, LayerNorm, RMSNorm
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .weight_norm import WeightNormLinear

__all__ = [
    "GELU",
    "GRU",
    "LSTM",
    "RNN",
    "AdaNorm",
    "BatchNorm1d",
    "Dropout",
    "Embedding",
    "GRUCell",
    "GroupNorm",
    "Identity",
    "IncompatibleKeys",
    "LSTMCell",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "Parameter",
    "RMSNorm",
    "RNNCell",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "WeightNormLinear",
    "init",
]
