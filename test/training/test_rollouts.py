"""ROS-free sim rollouts recorded as training episodes, including DAgger data: the policy's observations and
outcome with the scripted expert's actions as labels (real MuJoCo sim, a tiny untrained policy)."""
from __future__ import annotations

import numpy as np
import pytest

from cosmos_policy_ros.core.policy import make_tiny_policy
from cosmos_policy_ros.sim.aloha_sim import TASK_DESCRIPTIONS, AlohaSim
from cosmos_policy_training.episodes import read_episode
from cosmos_policy_training.rollouts import expert_actions, run_episode

SIZE = (48, 64)


@pytest.fixture(scope="module")
def setup():
    policy = make_tiny_policy(seed=0, instructions=[TASK_DESCRIPTIONS["transfer_cube"]])
    sim = AlohaSim("transfer_cube", seed=0, image_size=SIZE, cameras=policy.layout.cameras, max_steps=80,
                   render=False)
    yield policy, sim
    sim.close()


def test_expert_labels_replace_the_recorded_actions_not_the_observations(setup, tmp_path):
    policy, sim = setup
    labels = expert_actions(sim, 4)
    assert labels.shape == (40, 14)
    np.testing.assert_array_equal(labels, expert_actions(sim, 4))  # deterministic per scene
    assert np.abs(labels - expert_actions(sim, 5)).max() > 1e-3  # and the scene matters
    plain = run_episode(policy, sim, 4, image_size=SIZE, record=tmp_path / "plain.hdf5")
    dagger = run_episode(policy, sim, 4, image_size=SIZE, record=tmp_path / "dagger.hdf5", labels=labels)
    a, b = read_episode(plain.path), read_episode(dagger.path)
    np.testing.assert_array_equal(b.action, labels)
    np.testing.assert_array_equal(b.qpos, a.qpos)  # the policy's own states (same policy, same scene)
    for cam in policy.layout.cameras:
        np.testing.assert_array_equal(b.images[cam], a.images[cam])
    assert np.abs(a.action - labels).max() > 0.05  # the untrained policy is not the expert
    assert b.success == dagger.success and b.attrs["action_labels"] == "expert"
    assert a.attrs["action_labels"] == "executed"
    with pytest.raises(ValueError, match="labels: expected"):
        run_episode(policy, sim, 4, image_size=SIZE, labels=labels[:10])


def test_sample_steps_store_only_the_replanning_frames_and_change_nothing_else(setup, tmp_path):
    """DAgger files for the states the policy re-plans from: only the chosen steps (and their futures) are
    rendered and stored, the dataset samples only them, and the episode itself is the same as a full record."""
    from cosmos_policy_training.dataset import file_sample_frames

    policy, sim = setup
    full = run_episode(policy, sim, 6, image_size=SIZE, record=tmp_path / "full.hdf5")
    sparse = run_episode(policy, sim, 6, image_size=SIZE, record=tmp_path / "sparse.hdf5", sample_steps=[0, 5])
    a, b = read_episode(full.path), read_episode(sparse.path)
    assert (sparse.success, sparse.max_reward, sparse.queries) == (full.success, full.max_reward, full.queries)
    np.testing.assert_array_equal(b.qpos, a.qpos)
    np.testing.assert_array_equal(b.action, a.action)
    assert list(b.attrs["sample_steps"]) == [0, 5]
    kept = file_sample_frames(b.attrs, b.num_steps, policy.horizon)
    assert kept == sorted({0, 5, min(policy.horizon, b.num_steps - 1), min(5 + policy.horizon, b.num_steps - 1)})
    for cam in policy.layout.cameras:
        for t in range(b.num_steps):
            if t in kept:
                np.testing.assert_array_equal(b.images[cam][t], a.images[cam][t])
            else:
                assert not b.images[cam][t].any(), f"{cam} frame {t} should be black"
    assert (tmp_path / "sparse.hdf5").stat().st_size < (tmp_path / "full.hdf5").stat().st_size / 3
    # an untrained policy fails: failure_sample_steps decide what its file trains on
    assert not sparse.success
    short = run_episode(policy, sim, 6, image_size=SIZE, record=tmp_path / "short.hdf5", sample_steps=[0, 5],
                        failure_sample_steps=[0])
    assert list(read_episode(short.path).attrs["sample_steps"]) == [0]
    with pytest.raises(ValueError, match="subset"):
        run_episode(policy, sim, 6, image_size=SIZE, sample_steps=[0, 5], failure_sample_steps=[7])


def test_pause_ticks_hold_the_last_action_before_each_replan_outside_the_recorded_timeline(setup, tmp_path):
    """Rollouts like the ROS graph's execution:=pause: the arms hold (and settle) before every re-plan after
    the first; the held ticks are simulated but the episode's timeline and recorded steps stay the same."""
    policy, sim = setup
    plain = run_episode(policy, sim, 7, execute=20, image_size=SIZE, record=tmp_path / "plain.hdf5")
    steps_plain = sim.step_count
    paused = run_episode(policy, sim, 7, execute=20, image_size=SIZE, record=tmp_path / "paused.hdf5",
                         pause_ticks=10)
    a, b = read_episode(plain.path), read_episode(paused.path)
    assert a.num_steps == b.num_steps == 40 and paused.queries == plain.queries == 2
    assert sim.step_count == steps_plain + 2 * 10
    h = 20  # the first chunk's executed actions
    np.testing.assert_array_equal(b.qpos[:h], a.qpos[:h])  # the first chunk runs the same
    np.testing.assert_array_equal(b.action[:h], a.action[:h])
    assert np.abs(b.qpos[h] - a.qpos[h]).max() > 1e-4  # the arms moved on while holding before the re-plan
    with pytest.raises(ValueError, match="pause_ticks"):
        run_episode(policy, sim, 7, image_size=SIZE, pause_ticks=-1)


def test_observe_before_pause_plans_from_the_moving_robot_and_executes_after_the_hold(setup, tmp_path):
    """The graph's order (observe when a chunk runs out, hold while the policy thinks, then execute): the re-plan
    sees what a pause-free run sees, so it plans the same chunk, but the robot starts it from a settled pose."""
    policy, sim = setup
    plain = run_episode(policy, sim, 7, execute=20, image_size=SIZE, record=tmp_path / "plain.hdf5")
    steps_plain = sim.step_count
    graph = run_episode(policy, sim, 7, execute=20, image_size=SIZE, record=tmp_path / "graph.hdf5",
                        pause_ticks=10, observe_before_pause=True)
    a, b = read_episode(plain.path), read_episode(graph.path)
    assert sim.step_count == steps_plain + 2 * 10 and graph.queries == plain.queries == 2
    h = 20
    np.testing.assert_array_equal(b.qpos[:h + 1], a.qpos[:h + 1])  # observed before the hold: the same state
    for cam in policy.layout.cameras:
        np.testing.assert_array_equal(b.images[cam][h], a.images[cam][h])
    np.testing.assert_allclose(b.action[h:], a.action[h:])  # the same observation, the same chunk
    assert np.abs(b.qpos[h + 1] - a.qpos[h + 1]).max() > 1e-4  # but executed from where the hold left the arms


def test_streaming_with_rtc_keeps_the_executed_actions_and_removes_the_switch_jump(setup):
    """The ROS-free streaming loop (the graph's splice by observation time, simulated with an inference delay):
    with RTC every new chunk starts with exactly the actions the robot executed meanwhile."""
    from cosmos_policy_ros.core.rtc import RtcConfig
    from cosmos_policy_training.rollouts import run_stream_episode

    policy, sim = setup
    calls = []

    class Recording:  # the tiny policy, recording each query's prefix and chunk
        horizon, period, layout = policy.horizon, policy.period, policy.layout

        def infer(self, obs, seed=None, prefix=None):
            out = policy.infer(obs, seed=seed, **({"prefix": prefix} if prefix is not None else {}))
            calls.append((prefix, np.asarray(out.actions, dtype=np.float64)))
            return out

    executed = {}
    on_step = lambda t, a: executed.__setitem__(t, np.array(a))  # noqa: E731
    rtc = run_stream_episode(Recording(), sim, 3, delay_ticks=4, rtc=RtcConfig("replace", delay_margin=1),
                             execution_horizon=10, image_size=SIZE, on_step=on_step)
    assert rtc.queries == 4 and rtc.held_ticks == 4  # held only while the first chunk was computed
    assert calls[0][0] is None  # nothing ran before the first chunk
    for k, (prefix, actions) in enumerate(calls[1:], start=1):
        obs_t = 10 * k
        previous = calls[k - 1][1]
        assert prefix.frozen == 5  # 4 delay ticks + 1 margin
        # the target is the running chunk from the observation's tick on
        np.testing.assert_allclose(prefix.target, previous[10:], rtol=0, atol=0)
        for j in range(4):  # the delay ticks ran the previous chunk: the new one starts with exactly those
            np.testing.assert_allclose(actions[j], executed[obs_t + j], rtol=0, atol=1e-6)
        # the switch tick sends the new chunk's action 4, still frozen: the running chunk's own plan for that tick
        np.testing.assert_allclose(executed[obs_t + 4], previous[10 + 4], rtol=0, atol=1e-6)
