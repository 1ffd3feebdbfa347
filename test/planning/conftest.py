"""Shared fixtures for planning tests: one tiny random policy (also used as the planning model) at 64 px
(8x8 latents: the smallest frame a 50x14 chunk fits in) so the VAE and the N*K*M batches stay cheap on CPU."""
from __future__ import annotations

import numpy as np
import pytest

TINY_IMAGE = 64


@pytest.fixture(scope="session")
def tiny_model():
    from cosmos_policy_ros.core.policy import make_tiny_policy
    # future images are decoded by the planner itself where a test asks for them (the VAE dominates CPU time)
    return make_tiny_policy(seed=0, image_size=TINY_IMAGE, decode_future_images=False)


def make_observation(model, seed=0, size=(48, 64)):
    from cosmos_policy_ros.core.types import Observation
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, size + (3,), dtype=np.uint8) for c in model.layout.cameras}
    st = model.stats
    proprio = st.proprio_min + (st.proprio_max - st.proprio_min) * rng.uniform(0.2, 0.8, st.proprio_dim)
    return Observation(images=images, proprio=proprio, instruction=model.instructions[0], stamp=12.0)


@pytest.fixture(scope="session")
def observation(tiny_model):
    return make_observation(tiny_model)


@pytest.fixture(scope="session")
def prepared(tiny_model, observation):
    """The observation encoded once (the VAE encode is the slowest step of a tiny query)."""
    from cosmos_policy_ros.core.planner import Planner
    return Planner(tiny_model).prepare(observation)


@pytest.fixture
def candidates(tiny_model):
    """Three random in-range chunks (robot units), as a policy would send them."""
    st = tiny_model.stats
    rng = np.random.default_rng(5)
    lo, hi = st.actions_min, st.actions_max
    return (lo + (hi - lo) * rng.uniform(0.05, 0.95, (3, 50, 14))).astype(np.float32)
