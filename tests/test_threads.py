"""npnorm starts numba's threads itself, so that GNU OpenMP's idle threads spin only briefly (_threads.py).

Each case runs in a fresh interpreter: the threads start once per process. A spy on numba.get_num_threads,
the call that starts numba's threading layer (and loads libgomp, which reads GOMP_SPINCOUNT as it loads),
records the environment at that moment. Asserts behaviour, never timings.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no kernel threads to start")

_SPY = """
import json, os, sys
import numba

seen = []
_get_num_threads = numba.get_num_threads

def spy():
    seen.append(os.environ.get("GOMP_SPINCOUNT"))
    return _get_num_threads()

numba.get_num_threads = spy
{before}
import numpy as np
import npnorm
import npnorm.functional as F
from npnorm import _threads

{first}
print(json.dumps({{
    "at_start": seen[0] if seen else None,  # None: npnorm did not start the threads (numba did, later)
    "after": os.environ.get("GOMP_SPINCOUNT"),
    "setting": _threads.openmp_spin_setting(),
}}))
"""

_FIRST_KERNEL = "F.layer_norm(npnorm.Tensor(np.ones((1024, 64), np.float32)), 64)  # a parallel run"


def _start(first: str = _FIRST_KERNEL, before: str = "", **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    script = _SPY.format(before=before, first=first)
    out = subprocess.run(
        [sys.executable, "-c", script], env={**environ, **env}, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_first_kernel_starts_the_threads_with_short_spins_and_leaves_no_variable_behind():
    result = _start()
    assert result == {"at_start": "1000", "after": None, "setting": "GOMP_SPINCOUNT=1000 (npnorm's)"}


def test_asking_for_the_thread_count_starts_them_the_same_way():
    result = _start(first="npnorm.get_num_threads()")
    assert result["at_start"] == "1000" and result["after"] is None


def test_set_num_threads_starts_them_the_same_way():
    result = _start(first="npnorm.set_num_threads(1)")
    assert result["at_start"] == "1000" and result["after"] is None


def test_the_users_spin_count_stands():
    result = _start(GOMP_SPINCOUNT="5")
    assert result == {"at_start": None, "after": "5", "setting": "the user's (GOMP_SPINCOUNT=5)"}


def test_the_users_wait_policy_stands():
    result = _start(OMP_WAIT_POLICY="passive")
    assert result["at_start"] is None and result["after"] is None
    assert result["setting"] == "the user's (OMP_WAIT_POLICY=passive)"


@pytest.mark.skipif(ctypes.util.find_library("gomp") is None, reason="no system libgomp to load first")
def test_a_libgomp_loaded_before_is_reported_not_changed():
    """Another library's libgomp (torch brings one) is shared by numba and keeps its own setting: say so."""
    result = _start(before="import ctypes, ctypes.util; ctypes.CDLL(ctypes.util.find_library('gomp'))")
    assert result["at_start"] is None and result["after"] is None
    assert "loaded before" in result["setting"]


_FOUR_THREADS_AT_ONCE = """
import threading
barrier = threading.Barrier(4)
errors = []

def first_kernel():
    barrier.wait()
    try:
        F.layer_norm(npnorm.Tensor(np.ones((1024, 64), np.float32)), 64)
    except Exception as exc:  # noqa: BLE001
        errors.append(repr(exc))

threads = [threading.Thread(target=first_kernel) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
"""


def test_four_threads_whose_first_kernels_start_at_once_start_numbas_threads_once():
    result = _start(first=_FOUR_THREADS_AT_ONCE)
    assert result == {"at_start": "1000", "after": None, "setting": "GOMP_SPINCOUNT=1000 (npnorm's)"}
