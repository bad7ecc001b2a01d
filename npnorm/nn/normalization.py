"""Normalization modules: thin classes that hold γ, β (and, for batch statistics, buffers) and call `F.*`.

The math and its three implementations live in `npnorm/norms/`; here are only the parameters, argument
checks at construction (so a bad eps fails where the model is built, not at the first forward) and repr.
`impl` chooses the implementation ("numba", "numpy", "composed"); None defers to the environment variable
NPNORM_IMPL at each call, else "numba".
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..norms import _checks as _norm_checks
from ..norms import batch_norm as _batch_norm
from ..tensor import Tensor
from . import _checks, init
from .module import Module, Parameter


class LayerNorm(Module):
    """y = γ ⊙ (x − μ)/√(σ² + ε) + β over the trailing `normalized_shape` dims (Ba et al. 2016).

    `weight` γ (ones) and `bias` β (zeros) have shape `normalized_shape`. `elementwise_affine=False`
    drops both (Xu et al.'s LayerNorm-simple); `bias=False` keeps only γ. `detach_mean`/`detach_var` treat
    μ or σ as constants in backward (both: Xu et al.'s DetachNorm).
    """

    def __init__(
        self,
        normalized_shape,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        detach_mean: bool = False,
        detach_var: bool = False,
        *,
        dtype=np.float32,
        impl=None,
    ):
        super().__init__()
        who = "LayerNorm"
        self.normalized_shape = _checks.shape(who, normalized_shape)
        self.eps = _norm_checks.check_eps(who, eps)
        self.elementwise_affine = _checks.flag(who, "elementwise_affine", elementwise_affine)
        bias = _checks.flag(who, "bias", bias)
        self.detach_mean = _checks.flag(who, "detach_mean", detach_mean)
        self.detach_var = _checks.flag(who, "detach_var", detach_var)
        self.impl = _checks.impl(who, impl)
        dtype = _checks.float_dtype(who, dtype)
        # An absent γ or β is registered as None (as in PyTorch), so `self.bias` reads None.
        if self.elementwise_affine:
            self.weight = Parameter(np.empty(self.normalized_shape, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        if self.elementwise_affine and bias:
            self.bias = Parameter(np.empty(self.normalized_shape, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0: the layer starts as pure normalization."""
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x) -> Tensor:
        return F.layer_norm(
            x,
            self.normalized_shape,
            self.weight,
            self.bias,
            self.eps,
            detach_mean=self.detach_mean,
            detach_var=self.detach_var,
            impl=self.impl,
        )

    def extra_repr(self) -> str:
        s = f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        if self.elementwise_affine and self.bias is None:
            s += ", bias=False"
        if self.detach_mean:
            s += ", detach_mean=True"
        if self.detach_var:
            s += ", detach_var=True"
        if self.impl is not None:
            s += f", impl={self.impl!r}"
        return s


class AdaNorm(Module):
    """z = C(1 − k·y) ⊙ y with y = (x − μ)/√(σ² + ε) (Xu et al. 2019), C(1 − k·y) a constant in backward.

    No parameters: the adaptive scale φ(y) = C(1 − k·y) replaces γ and β. The paper uses k = 0.1 and
    chooses C so that the scale suits the task (C = 1 in the ablations).
    """

    def __init__(self, normalized_shape, C: float = 1.0, k: float = 0.1, eps: float = 1e-5, *, impl=None):
        super().__init__()
        who = "AdaNorm"
        self.normalized_shape = _checks.shape(who, normalized_shape)
        self.C = _norm_checks.check_real(who, "C", C)
        self.k = _norm_checks.check_real(who, "k", k)
        self.eps = _norm_checks.check_eps(who, eps)
        self.impl = _checks.impl(who, impl)

    def forward(self, x) -> Tensor:
        return F.ada_norm(x, self.normalized_shape, self.C, self.k, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        s = f"{self.normalized_shape}, C={self.C}, k={self.k}, eps={self.eps}"
        if self.impl is not None:
            s += f", impl={self.impl!r}"
        return s


class RMSNorm(Module):
    """y = γ ⊙ x/√(mean(x²) + ε) over the trailing `normalized_shape` dims (Zhang & Sennrich 2019).

    As `torch.nn.RMSNorm`: `eps=None` means the machine epsilon of the input's dtype, chosen at each call;
    `weight` γ (ones) has shape `normalized_shape`, and `elementwise_affine=False` drops it. There is no bias.
    """

    def __init__(
        self,
        normalized_shape,
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype=np.float32,
        impl=None,
    ):
        super().__init__()
        who = "RMSNorm"
        self.normalized_shape = _checks.shape(who, normalized_shape)
        self.eps = None if eps is None else _norm_checks.check_eps(who, eps)
        self.elementwise_affine = _checks.flag(who, "elementwise_affine", elementwise_affine)
        self.impl = _checks.impl(who, impl)
        dtype = _checks.float_dtype(who, dtype)
        if self.elementwise_affine:
            self.weight = Parameter(np.empty(self.normalized_shape, dtype=dtype))
        else:
            self.register_parameter("weight", None)  # absent γ reads None, as in PyTorch
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1: the layer starts as pure normalization."""
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, x) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        s = f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        if self.impl is not None:
            s += f", impl={self.impl!r}"
        return s


def _check_channels(who: str, name: str, C: int, x: Tensor, *per_channel) -> None:
    """A clear error for an input whose channel count is not the layer's (the functional call would blame a
    weight's or running statistic's shape). Only where the layer holds per-channel state: without any, PyTorch
    normalizes any channel count, and so does this layer."""
    if any(p is not None for p in per_channel) and x.ndim >= 2 and x.shape[1] != C:
        raise ValueError(f"{who}: input of shape {x.shape} has {x.shape[1]} channels, but the layer has {name}={C}")


class BatchNorm1d(Module):
    """y = γ ⊙ (x − μ)/√(σ² + ε) + β per channel over the batch (Ioffe & Szegedy 2015), as torch.nn.BatchNorm1d.

    Input (N, C) or (N, C, L) with C = `num_features`. `weight` γ (ones) and `bias` β (zeros) have shape (C,);
    `affine=False` drops both. With `track_running_stats=True` the buffers `running_mean` (zeros),
    `running_var` (ones) and `num_batches_tracked` (0, int64, shape () as in PyTorch) are saved in
    `state_dict()`: in training the layer normalizes with the batch's statistics and updates the buffers in
    place (running ← (1 − momentum)·running + momentum·batch, unbiased variance; `momentum=None` is the
    cumulative average), in evaluation it normalizes with the buffers. With `track_running_stats=False` there
    are no buffers and batch statistics are used in both modes.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype=np.float32,
        impl=None,
    ):
        super().__init__()
        who = "BatchNorm1d"
        self.num_features = _checks.size(who, "num_features", num_features)
        self.eps = _norm_checks.check_eps(who, eps)
        self.momentum = _batch_norm.check_momentum(who, momentum)
        self.affine = _checks.flag(who, "affine", affine)
        self.track_running_stats = _checks.flag(who, "track_running_stats", track_running_stats)
        self.impl = _checks.impl(who, impl)
        dtype = _checks.float_dtype(who, dtype)
        C = self.num_features
        if self.affine:
            self.weight = Parameter(np.empty(C, dtype=dtype))
            self.bias = Parameter(np.empty(C, dtype=dtype))
        else:  # absent γ, β read None, as in PyTorch
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dtype=dtype))
            self.register_buffer("running_var", np.ones(C, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """running_mean = 0, running_var = 1, num_batches_tracked = 0 (in place: optimizers and views stay valid)."""
        if self.track_running_stats:
            self.running_mean.fill(0)
            self.running_var.fill(1)
            self.num_batches_tracked.fill(0)

    def reset_parameters(self) -> None:
        """Fresh running statistics, γ = 1, β = 0: the layer starts as pure normalization."""
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x) -> Tensor:
        x = F.as_tensor(x, "BatchNorm1d")
        if x.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d: expected 2D or 3D input (N, C) or (N, C, L), got shape {x.shape}")
        _check_channels("BatchNorm1d", "num_features", self.num_features, x, self.weight, self.running_mean)
        # As PyTorch: without running statistics the batch's own are used in evaluation too.
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=self.momentum,
            eps=self.eps,
            num_batches_tracked=self.num_batches_tracked,
            impl=self.impl,
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )
        if self.impl is not None:
            s += f", impl={self.impl!r}"
        return s


class GroupNorm(Module):
    """y = γ_c · x̂ + β_c, x̂ normalized over each (sample, group of channels) (Wu & He 2018), as torch's GroupNorm.

    Input (N, C, *) with C = `num_channels`, split into `num_groups` groups of consecutive channels.
    `weight` γ (ones) and `bias` β (zeros) have shape (C,); `affine=False` drops both. num_groups = 1 is
    LayerNorm over (C, *) with a per-channel affine; num_groups = C is InstanceNorm.
    """

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *, dtype=np.float32, impl=None
    ):
        super().__init__()
        who = "GroupNorm"
        self.num_groups = _checks.size(who, "num_groups", num_groups)
        self.num_channels = _checks.size(who, "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(f"{who}: num_channels={num_channels} must be divisible by num_groups={num_groups}")
        self.eps = _norm_checks.check_eps(who, eps)
        self.affine = _checks.flag(who, "affine", affine)
        self.impl = _checks.impl(who, impl)
        dtype = _checks.float_dtype(who, dtype)
        if self.affine:
            self.weight = Parameter(np.empty(self.num_channels, dtype=dtype))
            self.bias = Parameter(np.empty(self.num_channels, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0: the layer starts as pure normalization."""
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x) -> Tensor:
        x = F.as_tensor(x, "GroupNorm")
        _check_channels("GroupNorm", "num_channels", self.num_channels, x, self.weight)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        s = f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
        if self.impl is not None:
            s += f", impl={self.impl!r}"
        return s
