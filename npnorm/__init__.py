"""npnorm: a small NumPy autograd engine built to teach, verify and run normalization layers.

The public face: Tensor, tensor, no_grad, gradcheck, GradcheckError, manual_seed, and the submodules
functional (alias F), nn and optim. Importing npnorm compiles nothing; Numba kernels compile on first use.
"""

from . import functional, nn, optim
from . import functional as F
from ._random import manual_seed
from ._threads import get_num_threads, set_num_threads
from .autograd import Function, is_grad_enabled, no_grad
from .functional import cat, stack
from .gradcheck import GradcheckError, gradcheck
from .io import load, save
from .tensor import Tensor, tensor

__version__ = "0.1.0"

__all__ = [
    "F",
    "Function",
    "GradcheckError",
    "Tensor",
    "cat",
    "functional",
    "get_num_threads",
    "gradcheck",
    "is_grad_enabled",
    "load",
    "manual_seed",
    "nn",
    "no_grad",
    "optim",
    "save",
    "set_num_threads",
    "stack",
    "tensor",
]
