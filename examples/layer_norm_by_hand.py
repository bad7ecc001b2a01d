"""LayerNorm three ways, side by side: composed from primitive ops, hand-derived NumPy, fused Numba kernels.

    y = γ ⊙ (x − μ)/√(σ² + ε) + β,   per row over its H features

The three implementations compute the same forward and, through `backward`, the gradients dL/dx, dL/dγ,
dL/dβ for one upstream gradient g = dL/dy. This script prints them and their largest differences, then
checks one fact of Xu et al. 2019 by hand: each row of dL/dx sums to zero (the mean's gradient re-centres).

Run:  python examples/layer_norm_by_hand.py
"""

import numpy as np

import npnorm
import npnorm.functional as F

np.set_printoptions(precision=4, suppress=True, linewidth=100)
rng = np.random.default_rng(0)
N, H = 3, 5
x0 = rng.standard_normal((N, H)) * 2 + 1  # (N, H) rows with mean ≈ 1, std ≈ 2
w0, b0 = 1 + 0.1 * rng.standard_normal(H), 0.1 * rng.standard_normal(H)  # γ, β: (H,)
g = rng.standard_normal((N, H))  # upstream gradient dL/dy: (N, H)

results = {}
for impl in ("composed", "numpy", "numba"):
    x, w, b = (npnorm.tensor(a, requires_grad=True) for a in (x0, w0, b0))  # float64
    y = F.layer_norm(x, H, w, b, impl=impl)
    y.backward(g)
    results[impl] = {"y": y.data, "dx": x.grad, "dweight": w.grad, "dbias": b.grad}

for name in ("y", "dx", "dweight", "dbias"):
    print(f"--- {name} {results['numba'][name].shape}, first values")
    for impl, r in results.items():
        print(f"{impl:>9}: {r[name].ravel()[:8]}")
    for impl in ("numpy", "numba"):
        gap = np.max(np.abs(results[impl][name] - results["composed"][name]))
        print(f"   max |{impl} - composed| = {gap:.2e}")

# The closed form that numpy and numba implement (docs/layer_norm.md derives it):
#   dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)),  with ĝ = γ ⊙ g
mean = x0.mean(axis=1, keepdims=True)  # (N, 1)
rstd = 1 / np.sqrt(((x0 - mean) ** 2).mean(axis=1, keepdims=True) + 1e-5)  # (N, 1), two-pass variance
xhat = (x0 - mean) * rstd  # (N, H)
ghat = w0 * g  # (N, H)
dx = rstd * (ghat - ghat.mean(1, keepdims=True) - xhat * (ghat * xhat).mean(1, keepdims=True))
print(f"\nby hand, max |dx - composed| = {np.max(np.abs(dx - results['composed']['dx'])):.2e}")
print("row sums of dx (re-centred, Xu et al.):", " ".join(f"{s:.1e}" for s in results["numba"]["dx"].sum(axis=1)))
