"""The machine a measurement ran on: its CPU and the BLAS kernels NumPy uses.

Both set a result's last bits (an OpenBLAS built for many CPUs picks its kernels at start-up, and they round
matrix products differently) and its speed, so `npnorm reproduce` and `npnorm bench` name them in what they
write. Nothing here is imported by `import npnorm`.
"""

from __future__ import annotations

import os
import platform

import numpy as np

__all__ = ["machine_description"]


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _blas() -> str:
    """The BLAS NumPy runs, with the kernels it picked for this CPU where threadpoolctl can tell: an OpenBLAS
    built for many CPUs chooses its kernels at start-up (e.g. "Haswell" or "SkylakeX"), and they round
    differently."""
    try:
        from threadpoolctl import threadpool_info

        blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
        # SciPy may bring a BLAS of its own; NumPy's (in numpy.libs/ for a wheel) does our products
        ours = [lib for lib in blas if "numpy" in os.path.basename(os.path.dirname(lib.get("filepath", "")))]
        if ours or blas:
            lib = (ours or blas)[0]
            name = f"{lib.get('internal_api', 'BLAS')} {lib.get('version') or ''}".strip()
            arch = lib.get("architecture")
            return f"{name} ({arch} kernels)" if arch else name
    except Exception:  # threadpoolctl is optional (scikit-learn brings it); any failure: fall back below
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # an internal layout of NumPy's build information
        return "unknown BLAS"


def machine_description() -> str:
    """The CPU and the BLAS, as "<CPU model>, <architecture>; BLAS <name> <version> (<kernels> kernels)":
    besides the code and the seeds, what sets a trained model's last bits and a benchmark's speed."""
    return f"{_cpu_model()}, {platform.machine()}; BLAS {_blas()}"
