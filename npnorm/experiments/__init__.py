"""The reproducible experiments behind `npnorm train` and `examples/`; each returns plain dicts and lists.

mlp.py       Ba et al. 2016 §6.6 at toy scale: no norm / BatchNorm / LayerNorm at batch sizes 128 and 4;
             also the LayerNorm MLP of `npnorm demo`
variants.py  Xu et al. 2019: LayerNorm, LayerNorm-simple, DetachNorm, AdaNorm; over-fitting and the
             re-centring / re-scaling of input gradients
_train.py    the shared training loop: seeding, Adam, divergence guard, per-epoch metrics
(recurrent experiments will live in their own module here)

Every run is a function of its seed: `npnorm.manual_seed(seed)` fixes the initial weights, the batch order
uses the same seed, the data split is fixed, and the kernels are deterministic, so a re-run gives the same
numbers to the last digit.
"""

from ._train import NonFiniteLossError, evaluate, single_threaded_blas, train_classifier
from .mlp import make_mlp, run_batch_size, run_demo
from .variants import VARIANTS, make_deep_mlp, run_variants

__all__ = [
    "VARIANTS",
    "NonFiniteLossError",
    "evaluate",
    "make_deep_mlp",
    "make_mlp",
    "run_batch_size",
    "run_demo",
    "run_variants",
    "single_threaded_blas",
    "train_classifier",
]
