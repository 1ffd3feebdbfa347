"""diagnose's t = 0 readout: the check that separates a first chunk that follows the cube from one that
predicts the demos' mean whatever the scene."""
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



def test_trace_compares_the_commands_sent_with_the_experts_actions_and_flags_clipped_joints():
    """`diagnose --trace`: the real sim, a tiny (untrained) policy whose left-arm joint 4 range is one value,
    so every command of that joint is clipped onto it; the expert column is the expert's own episode."""
    import dataclasses

    from cosmos_policy_ros.sim.aloha_sim import TASK_DESCRIPTIONS, AlohaSim
    from cosmos_policy_ros.sim.expert import make_expert
    from cosmos_policy_training.diagnose import format_trace, trace_against_expert

    policy = make_tiny_policy(seed=0, instructions=[TASK_DESCRIPTIONS["transfer_cube"]])
    lo, hi = np.array(policy.stats.actions_min, float), np.array(policy.stats.actions_max, float)
    lo[4] = hi[4] = -0.3
    policy.stats = dataclasses.replace(policy.stats, actions_min=lo, actions_max=hi)
    sim = AlohaSim("transfer_cube", seed=0, image_size=(48, 64), cameras=policy.layout.cameras, max_steps=120,
                   render=False)
    tr = trace_against_expert(policy, sim, seed=3, every=20, image_size=(48, 64))
    assert [r["t"] for r in tr["rows"]] == [0, 20, 40]
    sim.reset(3, render=False)
    expert = make_expert(sim)
    want = []
    for _ in range(60):
        a = expert.action(sim.step_count + 2)
        want.append(a)
        for _ in range(2):
            sim.step(a, render=False)
    sim.close()
    assert tr["expert_success"] is False  # 60 steps are too short for the hand-over
    for r in tr["rows"]:
        assert 4 in r["left"]["at_bound"]
        for side in ("left", "right"):
            s = r[side]
            assert s["expert"] == want[r["t"]][s["joint"]]
            assert s["err"] == abs(s["policy"] - s["expert"]) and s["joint"] not in (6, 13)
        assert r["gripper"][1] == want[r["t"]][6] and r["gripper"][3] == want[r["t"]][13]
    assert "| 20 |" in format_trace(tr)


class ScriptedExpertPolicy:
    """Test double of a trained policy (none can be trained here to expert precision): the scripted expert's own
    actions as chunks, so a grasp check of it must find no offset and the expert's own first touch."""

    def __init__(self, layout, sim, seed):
        from cosmos_policy_training.rollouts import expert_actions

        self.layout, self.horizon, self.policy_id = layout, 50, "scripted-expert-double"
        self.sim, self.ref = sim, expert_actions(sim, seed)

    def infer(self, obs, seed=None):
        from types import SimpleNamespace

        t = self.sim.step_count // 2
        idx = np.minimum(np.arange(t, t + self.horizon), len(self.ref) - 1)
        return SimpleNamespace(actions=self.ref[idx], value=0.0)


def test_grasp_check_finds_no_offset_for_the_expert_and_an_early_touch_or_offset_for_an_untrained_policy():
    """`diagnose --grasp`: right gripper minus cube, policy minus expert, and the first finger-on-cube step, in the
    real sim. The expert replayed as a policy must match itself (0 cm, same first touch, success); the tiny
    untrained policy must not."""
    from cosmos_policy_ros.sim.aloha_sim import TASK_DESCRIPTIONS, AlohaSim
    from cosmos_policy_training.diagnose import format_grasps, grasp_against_expert

    policy = make_tiny_policy(seed=0, instructions=[TASK_DESCRIPTIONS["transfer_cube"]])
    sim = AlohaSim("transfer_cube", seed=0, image_size=(48, 64), cameras=policy.layout.cameras, max_steps=400,
                   render=False)
    try:
        same = grasp_against_expert(ScriptedExpertPolicy(policy.layout, sim, 4), sim, seed=4, image_size=(48, 64))
        other = grasp_against_expert(policy, sim, seed=4, image_size=(48, 64))
    finally:
        sim.close()
    assert same["success"] and same["max_reward"] == 4
    assert same["first_touch"]["policy"] == same["first_touch"]["expert"]
    assert 60 <= same["first_touch"]["expert"] <= 90  # the expert touches the cube when it closes on it
    assert all(abs(v) < 1e-6 for t in same["offset_cm"] for v in same["offset_cm"][t])
    assert same["cube_pushed_cm"] < 0.1  # the cube only settles on the table (0.02 cm)
    assert not other["success"]
    assert max(abs(v) for t in other["offset_cm"] for v in other["offset_cm"][t]) > 2.0  # > 2 cm off somewhere
    table = format_grasps([same, other])
    assert "| 4 | 4 |" in table and "mean abs" in table
