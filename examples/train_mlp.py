"""Train a LayerNorm MLP on scikit-learn's digits with a PyTorch-style loop, written out in full.

    64 pixels → Linear(128) → LayerNorm → ReLU → Linear(128) → LayerNorm → ReLU → Linear(10)

LayerNorm sits on the hidden layers only, not on the logits (Ba et al. 2016: the logits' scale carries the
model's confidence). The same seed gives the same numbers on every run. `npnorm train mlp` runs the paper's
batch-size comparison built from the same pieces (npnorm.experiments.mlp).

Run:  python examples/train_mlp.py [--seed 0] [--epochs 10] [--save mlp.npz]   (needs: pip install 'npnorm[examples]')
"""

import argparse

import npnorm
import npnorm.functional as F
from npnorm import nn, optim
from npnorm.data import Batches, load_digits
from npnorm.experiments import evaluate, single_threaded_blas

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--save", metavar="PATH", help="write the trained weights here (.npz)")
args = parser.parse_args()

npnorm.manual_seed(args.seed)  # the initial weights
data = load_digits("flat")  # standardized with training statistics; x (N, 64) float32, y (N,) int64
model = nn.Sequential(
    nn.Linear(64, 128), nn.LayerNorm(128), nn.ReLU(),
    nn.Linear(128, 128), nn.LayerNorm(128), nn.ReLU(),
    nn.Linear(128, 10),
)  # fmt: skip
optimizer = optim.Adam(model.parameters(), lr=1e-3)
batches = Batches(data.x_train, data.y_train, batch_size=32, seed=args.seed)  # the batch order

with single_threaded_blas():  # for matrices this small, BLAS threads cost more than they save (5-50x here)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for x, y in batches:
            loss = F.cross_entropy(model(npnorm.Tensor(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        train_loss, _ = evaluate(model, data.x_train, data.y_train)  # eval mode, no graph
        test_loss, test_error = evaluate(model, data.x_test, data.y_test)
        print(
            f"epoch {epoch:2d}  train loss {train_loss:.4f}  test loss {test_loss:.4f}  accuracy {1 - test_error:.1%}"
        )

if args.save:  # reload with model.load_state_dict(npnorm.load(path))
    npnorm.save(model.state_dict(), args.save)
    print(f"weights saved to {args.save}")
