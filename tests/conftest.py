"""Shared test set-up: Hypothesis profiles and a seeded random generator.

Profiles (choose one with the environment variable HYPOTHESIS_PROFILE; without it, "ci" when the environment
variable CI is set — so a red CI run reproduces — else "default"):
    default     25 examples per property, no deadline (the first call of an op may be slow)
    ci          the same, derandomized, so a CI failure reproduces on every run
    ci-nightly  500 examples per property, for the scheduled long run
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=25, deadline=None)
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci-nightly", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id: every test draws its own numbers, the same ones on every run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
