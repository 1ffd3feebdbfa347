"""diagnose's t = 0 readout: the check that separates a first chunk that follows the cube from one that
predicts the demos' mean (sessions 8-10 of issue #13)."""
from __future__ import annotations

import types

import numpy as np

from cosmos_policy_ros.core.policy import make_tiny_policy
from cosmos_policy_training.diagnose import demo_observation, t0_readout


def _episode(policy, seed, target):
    rng = np.random.default_rng(seed)
    action = np.zeros((60, 14))
    action[:, 7:13] = target
    st = policy.stats
    return types.SimpleNamespace(
        images={c: rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8) for c in policy.layout.cameras},
        qpos=np.tile((st.proprio_min + st.proprio_max) / 2, (60, 1)), action=action, num_steps=60,
        task=policy.instructions[0])


def test_t0_readout_reports_spreads_correlation_and_the_mean_baseline():
    policy = make_tiny_policy(seed=0)
    targets = np.array([[0.1 * k + 0.01 * j for j in range(6)] for k in range(4)])  # (4 episodes, 6 joints)
    eps = [_episode(policy, k, targets[k]) for k in range(4)]
    r = t0_readout(policy, eps, step=49)
    assert r["episodes"] == 4 and r["step"] == 49
    np.testing.assert_allclose(r["demo_std"], targets.std(0).round(4), atol=1e-4)
    assert abs(r["mean_mae"] - np.abs(targets - targets.mean(0)).mean()) < 1e-9
    preds = np.stack([policy.infer(demo_observation(policy, e, 0), seed=195).actions[49, 7:13] for e in eps])
    np.testing.assert_allclose(r["pred_std"], preds.std(0).round(4), atol=1e-4)
    assert abs(r["policy_mae"] - np.abs(preds - targets).mean()) < 1e-6
    assert all(-1.0 <= c <= 1.0 for c in r["corr"])

