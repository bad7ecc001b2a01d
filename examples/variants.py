"""Xu et al. 2019, "Understanding and Improving Layer Normalization", at toy scale on the digits.

Trains a 6-hidden-layer MLP with LayerNorm, LayerNorm-simple (no gain, no bias), DetachNorm (μ and σ constant
in backward, and each on its own), AdaNorm and no norm, then prints for each: the final training and test
loss (Xu et al.: gain and bias make over-fitting likelier) and how well the input gradients of the norm layers
are re-centred (LayerNorm's backward makes every row of dL/dx sum to zero; DetachNorm's does not).

Run:  python examples/variants.py [--quick] [--plot variants.png]      (about half a minute; --quick: seconds)
"""

import argparse

from npnorm.experiments.variants import LABELS, run_variants
from npnorm.plots import check_plot_path, plot_variants

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a tiny run, for a smoke test")
parser.add_argument("--plot", default="variants.png", help="where to write the figure (PNG; needs matplotlib)")
args = parser.parse_args()
try:  # before training, not after
    check_plot_path(args.plot)
except (ImportError, OSError) as exc:
    parser.error(str(exc))

result = run_variants(quick=args.quick)  # a progress bar on a terminal
print(f"{'variant':<31} {'train loss':>10} {'test loss':>9} {'test error':>10}  max over layers of |mean dx| / rms(dx)")
for variant, s in result["summary"].items():
    f, centring = s["final"], max(g["rel_mean"] for g in s["grad_stats"])
    losses = f"{f['train_loss']:>10.4f} {f['test_loss']:>9.4f}"
    print(f"{LABELS[variant]:<31} {losses} {f['test_error']:>10.1%}  {centring:.1e}")

print("\nSame trained LayerNorm weights and batch, backward terms switched off (Var(dx) of the last norm layer):")
for name, stats in result["same_point"].items():
    print(f"  {name:<12} Var(dx) = {stats[-1]['var']:.2e}   |mean dx| / rms = {stats[-1]['rel_mean']:.1e}")
print(f"figure: {plot_variants(result, args.plot)}")
