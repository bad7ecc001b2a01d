"""LSTM against Ba et al.'s layer-normalized LSTM on permuted pixel-by-pixel digits (64 steps of 1 pixel).

Each 8×8 digit is read one pixel per step, in a fixed random order, by a one-layer LSTM with 64 units; a
Linear layer reads the class from the last hidden state. The LN-LSTM normalizes the input and recurrent
projections separately and the cell state (Ba et al. 2016, eq. 20-22); both train with the same Adam
learning rate, the same clipped gradients and the same batch order. The paper expects LN to help most on
long sequences like this one. Prints how fast each model's training loss falls and its test accuracy.
`npnorm.experiments.recurrent` holds the models and the loop; `npnorm reproduce` runs the full comparison.

Run:  python examples/train_lstm.py [--steps 300] [--seeds 2] [--plot lstm.png]   (about 30 s; --quick: seconds)
"""

import argparse

from npnorm.experiments.recurrent import LABELS, format_steps, plot_recurrent, run_recurrent
from npnorm.plots import check_plot_path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=300, help="Adam steps per run (batch 32)")
parser.add_argument("--seeds", type=int, default=2, help="runs per model, seeds 0, 1, ...")
parser.add_argument("--plot", help="write the training curves here (PNG)")
parser.add_argument("--quick", action="store_true", help="a tiny run, for a smoke test")
args = parser.parse_args()
if args.plot:
    try:  # before training, not after
        check_plot_path(args.plot)
    except (ImportError, OSError) as exc:
        parser.error(str(exc))

steps, seeds = (30, 1) if args.quick else (args.steps, args.seeds)
result = run_recurrent(["pixels"], ["lstm", "ln_lstm"], steps=steps, seeds=seeds, quick=args.quick)
summary, task = result["summary"]["pixels"], result["config"]["tasks"]["pixels"]

print(f"{task['label']}: {task['n_train']} training / {task['n_test']} test digits; {result['config']['optimizer']}")
print(f"{steps} steps, seeds {result['config']['seeds']}; mean [min, max] over seeds\n")
print(f"{'model':<8} {'test accuracy':<22} {'mean training loss':<20} steps to {100 * task['target']:.0f}% accuracy")
for model, s in summary.items():
    acc, loss = s["final"], s["mean_loss"]
    accuracy = f"{100 * acc['mean']:.1f}% [{100 * acc['min']:.1f}, {100 * acc['max']:.1f}]"
    mean_loss = f"{loss['mean']:.3f} [{loss['min']:.3f}, {loss['max']:.3f}]"
    print(f"{LABELS[model]:<8} {accuracy:<22} {mean_loss:<20} {format_steps(s)}")

plain, ln = summary["lstm"]["mean_loss"]["mean"], summary["ln_lstm"]["mean_loss"]["mean"]
verdict = "lower" if ln < plain else "not lower"
print(f"\nLN-LSTM's mean training loss is {verdict} than the LSTM's ({ln:.3f} vs {plain:.3f}): the area under")
print("the training curve, the paper's 'converges faster' in one number.")
if args.plot:
    print(f"curves: {plot_recurrent(result, args.plot)}")
