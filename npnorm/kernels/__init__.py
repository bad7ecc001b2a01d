"""Numba only; mirrors norms/; never imports Tensor or autograd.

Each module here holds fused CPU kernels for one norm: pure functions on C-contiguous ndarrays, out-params
first, allocated by the caller. Importing this package imports nothing else: numba is imported (and kernels
compiled) only when a norm first asks for a kernel module.
"""
