"""Shared fixtures for the model-core tests: one tiny random policy per test session (real diffusers
classes in a CPU-sized config) and an in-distribution observation for it."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on the shared 2-core machine, 2 OpenMP threads under load made a tiny infer
    ~10x slower (measured 3 s vs 30 s at load average 14). Restored after each test."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_policy():
    from cosmos_policy_ros.core.policy import make_tiny_policy
    return make_tiny_policy(seed=0)


def make_observation(policy, seed=0, size=(120, 160), instruction=None):
    """Random camera frames of ``size`` and a proprio in the middle of the stats range."""
    from cosmos_policy_ros.core.types import Observation
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, size + (3,), dtype=np.uint8) for c in policy.layout.cameras}
    st = policy.stats
    proprio = st.proprio_min + (st.proprio_max - st.proprio_min) * rng.uniform(0.2, 0.8, st.proprio_dim)
    return Observation(images=images, proprio=proprio, instruction=instruction or policy.instructions[0])


@pytest.fixture
def observation(tiny_policy):
    return make_observation(tiny_policy)


@pytest.fixture(scope="session")
def make_obs():
    """The observation factory, for tests that need variants."""
    return make_observation
