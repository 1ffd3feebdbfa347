"""The latency test double's plan, executed by the simulator with irregular timing (the way a loaded machine
delivers commands to the real-time sim bridge): with ``pose=start`` the two arms never touch, and the left
waist follows its commanded sine at about 1x in every half-cycle window, whatever the timing. The sim graph
test (test/runtime/test_sim_graph.py) relies on this."""
import mujoco
import numpy as np

from cosmos_policy_ros.core.test_doubles import LatencyPolicyTestDouble
from cosmos_policy_ros.sim.aloha_sim import AlohaSim

AMPLITUDE, CYCLE, PERIOD = 0.08, 150, 0.04


def _arm_contacts(sim: AlohaSim) -> list:
    """Contacts between a left-arm body and a right-arm body."""
    m = sim.model

    def side(g):
        body = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, m.geom_bodyid[g]) or ""
        return body.split("/")[0]

    return [(a, b) for a, b in sim.contact_pairs() if {side(a), side(b)} == {"vx300s_left", "vx300s_right"}]


def _drive(sim: AlohaSim, double: LatencyPolicyTestDouble, seed: int):
    """Run the double's plan tick by tick, with 0..4 physics steps per commanded tick (2 on average, like 50 Hz
    physics under a 25 Hz commander, but jittered) and a per-tick step limit like the commander's."""
    rng = np.random.default_rng(seed)
    sim.reset(0, render=False)
    cur = sim.start_action().astype(np.float64)
    k0 = int(rng.integers(0, CYCLE))
    commanded, measured, touching = [], [], 0
    for k in range(k0, k0 + 450):
        target = double.chunk_for(k * PERIOD)[0]
        cur = cur + np.clip(target - cur, -0.1, 0.1)
        for _ in range(int(rng.choice([0, 1, 2, 2, 2, 3, 4]))):
            sim.step(cur, render=False)
        touching += bool(_arm_contacts(sim))
        commanded.append(cur[0])
        measured.append(sim.qpos14()[0])
    return np.array(commanded[150:]), np.array(measured[150:]), touching


def test_start_pose_double_keeps_the_arms_apart_and_the_waist_tracks_under_any_timing():
    double = LatencyPolicyTestDouble.from_spec(f"test-double:amplitude={AMPLITUDE},cycle={CYCLE},pose=start")
    sim = AlohaSim("transfer_cube", seed=0, render=False, max_steps=100000)
    try:
        for seed in range(3):
            commanded, measured, touching = _drive(sim, double, seed)
            assert touching == 0, f"seed {seed}: the arms touched in {touching} ticks"
            half = CYCLE // 2  # every window of half a cycle, as the sim graph test measures
            ratios = [np.ptp(measured[i:i + half]) / np.ptp(commanded[i:i + half])
                      for i in range(0, len(commanded) - half, 5)]
            assert min(ratios) > 0.7, f"seed {seed}: waist followed at {min(ratios):.2f}x in the worst window"
            assert np.abs(measured - commanded).max() < AMPLITUDE  # within the sim graph test's margin
    finally:
        sim.close()
