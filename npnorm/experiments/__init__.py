"""The reproducible experiments behind `npnorm train` and `examples/`; each returns plain dicts and lists.

mlp.py       Ba et al. 2016 §6.6 at toy scale: no norm / BatchNorm / LayerNorm at batch sizes 128 and 4;
             also the LayerNorm MLP of `npnorm demo`
variants.py  Xu et al. 2019: LayerNorm, LayerNorm-simple, DetachNorm, AdaNorm; over-fitting and the
             re-centring / re-scaling of input gradients
recurrent.py Ba et al. 2016 §3, §6: LSTM/GRU against LN-LSTM/LN-GRU on digits by rows, permuted pixel digits
             and the adding problem (per-step training curves, steps to a target, final test metrics)
reproduce.py all three experiments -> docs/results.md with tables, verdicts and plots (`reproduce(quick, out_dir)`)
_train.py    the shared training loop: seeding, Adam, divergence guard, per-epoch metrics

Every run is a function of its seed: `npnorm.manual_seed(seed)` fixes the initial weights, the batch order
uses the same seed, the data split is fixed, and the kernels are deterministic, so a re-run gives the same
numbers to the last digit.
"""

from ._train import NonFiniteLossError, evaluate, single_threaded_blas, train_classifier
from .mlp import make_mlp, run_batch_size, run_demo
from .recurrent import SequenceModel, run_recurrent
from .variants import VARIANTS, make_deep_mlp, run_variants

__all__ = [
    "VARIANTS",
    "SequenceModel",
    "NonFiniteLossError",
    "evaluate",
    "make_deep_mlp",
    "make_mlp",
    "run_batch_size",
    "run_demo",
    "run_recurrent",
    "run_variants",
    "single_threaded_blas",
    "train_classifier",
]
