"""ROS-free simulated ALOHA: physics wrapper, renderer, conversions, scripted expert, demo files (real MuJoCo)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cosmos_policy_ros.core import robot
from cosmos_policy_ros.sim import (AlohaSim, SIM_GRIPPER, follower_joint_positions, gripper_command_from_joint,
                                   make_expert, sample_object_poses)
from cosmos_policy_ros.sim.generate_demos import generate, rollout_expert


@pytest.fixture(scope="module")
def sim():
    s = AlohaSim("transfer_cube", seed=0, image_size=(48, 64), render=False)
    yield s
    s.close()


def test_seed_names_the_same_scene_as_gym_aloha(sim):
    from gym_aloha.utils import sample_box_pose, sample_insertion_pose

    for seed in (0, 7, 123):
        np.testing.assert_array_equal(sample_object_poses("transfer_cube", seed), sample_box_pose(seed))
        np.testing.assert_array_equal(sample_object_poses("insertion", seed),
                                      np.concatenate(sample_insertion_pose(seed)))
        sim.reset(seed)
        placed = sample_box_pose(seed)
        np.testing.assert_allclose(sim.object_qpos()[:2], placed[:2], atol=1e-4)  # same spot on the table


def test_episodes_start_with_the_objects_resting_on_the_table():
    """gym-aloha places the cube 5 cm up; a real scene never shows it in mid-air, so step 0 must not either
    (a policy trained on mid-air first frames failed every scene whose cube had already landed)."""
    s = AlohaSim("transfer_cube", seed=5, image_size=(48, 64), render=False)
    try:
        s.reset(5)
        assert s.step_count == 0 and s.time == 0.0
        assert s.object_qpos()[2] == pytest.approx(0.02, abs=1e-3), "cube centre should rest at its half size"
        assert np.abs(s.data.qvel[-6:]).max() < 1e-3, "cube still moving at step 0"
        np.testing.assert_allclose(s.initial_object_qpos, s.object_qpos())
        np.testing.assert_allclose(s.qpos14()[:6], [0.0, -0.96, 1.16, 0.0, -0.3, 0.0], atol=0.02)  # arms held (steady-state sag)
        first = s.object_qpos().copy()
        s.reset(5)
        np.testing.assert_array_equal(s.object_qpos(), first)  # settling is deterministic
    finally:
        s.close()
    raw = AlohaSim("transfer_cube", seed=5, image_size=(48, 64), render=False, settle_steps=0)
    try:
        assert raw.object_qpos()[2] == pytest.approx(0.05)  # gym-aloha's first frame, on request
    finally:
        raw.close()
    with pytest.raises(ValueError, match="settle_steps"):
        AlohaSim("transfer_cube", seed=5, image_size=(48, 64), render=False, settle_steps=-1)


def test_holding_the_start_action_keeps_a_reset_scene_still():
    """What a sim bridge holds after a reset: the start pose's own targets keep the arms (and so the wrist
    cameras) where step 0 showed them; the measured pose as a target lets them sag further under gravity."""
    s = AlohaSim("transfer_cube", seed=3, image_size=(48, 64), render=False)
    try:
        s.reset(3)
        q0 = s.qpos14()
        np.testing.assert_allclose(s.action_to_ctrl(s.start_action()), s.data.ctrl)
        for _ in range(25):
            s.step(s.start_action())
        assert np.abs(s.qpos14() - q0).max() < 1e-4
        s.reset(3)
        for _ in range(25):
            s.step(q0)
        assert np.abs(s.qpos14() - q0).max() > 3e-3  # why the bridge must not hold the measured pose
    finally:
        s.close()


def test_gripper_scale_matches_gym_aloha():
    from gym_aloha import constants as c

    assert SIM_GRIPPER.finger_close == c.PUPPET_GRIPPER_POSITION_CLOSE
    assert SIM_GRIPPER.finger_open == c.PUPPET_GRIPPER_POSITION_OPEN


def test_reset_step_and_determinism(sim):
    obs = sim.reset(3)
    assert obs["qpos"].shape == (14,) and obs["qvel"].shape == (14,) and obs["images"] == {}
    target = obs["qpos"].copy()
    target[0] += 0.3  # left waist
    target[13] = 1.0  # right gripper open
    traj = []
    for _ in range(60):
        obs, reward, success, done = sim.step(target)
        traj.append(obs["qpos"])
    assert sim.step_count == 60 and abs(sim.time - 1.2) < 1e-9
    assert abs(obs["qpos"][0] - target[0]) < 0.02, "commanded waist target not reached"
    assert obs["qpos"][13] > 0.9, "gripper did not open"
    assert reward == 0 and not success and not done
    sim.reset(3)
    again = [sim.step(target)[0]["qpos"] for _ in range(60)]
    np.testing.assert_array_equal(np.array(traj), np.array(again))


def test_bad_actions_are_rejected_before_touching_the_physics(sim):
    sim.reset(0)
    before = sim.data.qpos.copy()
    with pytest.raises(ValueError, match=r"shape \(14,\)"):
        sim.step(np.zeros(13))
    bad = sim.qpos14()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        sim.step(bad)
    assert sim.step_count == 0
    np.testing.assert_array_equal(sim.data.qpos, before)


def test_episode_ends_at_max_steps():
    s = AlohaSim("transfer_cube", seed=0, render=False, max_steps=5)
    a = s.qpos14()
    dones = [s.step(a)[3] for _ in range(5)]
    assert dones == [False] * 4 + [True]


def test_render_sizes_and_cameras(sim):
    sim.reset(0)
    imgs = sim.render()
    assert set(imgs) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    for img in imgs.values():
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert img.std() > 5, "blank image"
    big = sim.render(["cam_high"], size=(480, 640))["cam_high"]
    assert big.shape == (480, 640, 3)
    # the red cube is visible from the top camera
    red = (big[..., 0] > 150) & (big[..., 1] < 60) & (big[..., 2] < 60)
    assert red.sum() > 50
    with pytest.raises(ValueError, match="unknown camera"):
        sim.render(["cam_nope"])


@pytest.mark.parametrize("generation", sorted(robot.GRIPPER_CONVENTIONS))
def test_interbotix_joint_states_round_trip(sim, generation):
    conv = robot.gripper_convention(generation)
    sim.reset(1)
    target = sim.qpos14()
    target[6], target[13] = 0.3, 0.8
    for _ in range(40):
        sim.step(target)
    left, right = follower_joint_positions(sim, conv)
    assert left.shape == (9,) and right.shape == (9,)
    np.testing.assert_allclose(left[robot.JS_ARM], sim.qpos14()[0:6])
    assert left[robot.JS_RIGHT_FINGER] == -left[robot.JS_LEFT_FINGER]
    np.testing.assert_allclose(robot.qpos_from_joint_states(left, right, conv), sim.qpos14(), atol=1e-9)
    # a gripper command in the robot's joint units maps back to the normalised command
    assert gripper_command_from_joint(conv.command_to_joint(0.25), conv) == pytest.approx(0.25)


def test_expert_transfers_the_cube():
    s = AlohaSim("transfer_cube", seed=0, render=False, max_steps=400)
    for seed in (4, 11):
        ep = rollout_expert(s, seed, render=False)
        assert ep.success and ep.success_at_end, f"seed {seed}: max reward {ep.max_reward}"
        assert ep.num_steps == 200


def test_expert_joint_trajectories_take_one_ik_branch():
    """The forearm roll / wrist rotate pair never winds to the flipped IK branch (+-pi), so scenes that differ
    only in the cube pose get the same hand-over motion in joint space: what a policy has to learn is a
    function of the scene, not of which branch the IK happened to drift into (docs/sim_checkpoint_results.md)."""
    s = AlohaSim("transfer_cube", seed=0, render=False, max_steps=400)
    eps = [rollout_expert(s, seed, render=False) for seed in (4, 11, 1003)]
    for ep in eps:
        assert ep.success
        assert np.abs(ep.action[:, [3, 5, 10, 12]]).max() < 1.6, np.abs(ep.action[:, [3, 5, 10, 12]]).max(0)
        assert np.abs(np.diff(ep.action[:, :6], axis=0)).max() < 0.1  # no branch jumps either
        assert np.abs(np.diff(ep.action[:, 7:13], axis=0)).max() < 0.25  # under the sim step limit 0.35
    handover = np.stack([ep.action[140:160] for ep in eps])  # right arm holds the cube at the meeting point
    assert np.ptp(handover, axis=0).max() < 0.02


def test_execution_noise_moves_the_states_but_records_the_clean_expert_actions():
    """--execution-noise: the arms execute perturbed targets (the recorded states leave the nominal path) while
    every recorded action is the expert's clean target for that step (the correction back to it)."""
    s = AlohaSim("transfer_cube", seed=0, render=False, max_steps=120)
    clean = rollout_expert(s, 7, render=False)
    noisy = rollout_expert(s, 7, render=False, execution_noise=0.05, noise_hold=10)
    np.testing.assert_allclose(noisy.action, clean.action, atol=1e-9)  # the expert plans on its own clock
    assert np.abs(noisy.qpos[10:] - clean.qpos[10:])[:, :6].max() > 0.01
    np.testing.assert_array_equal(noisy.qpos[:, [6, 13]] > 0.5, clean.qpos[:, [6, 13]] > 0.5)  # grippers untouched


def test_expert_inserts_the_peg():
    s = AlohaSim("insertion", seed=0, render=False, max_steps=400)
    ep = rollout_expert(s, 9, render=False)
    assert ep.success and ep.max_reward == 4


def test_expert_plans_from_the_current_scene():
    """The expert is planned from the scene the sim was reset to: its first grasp goes where the cube is."""
    s = AlohaSim("transfer_cube", seed=0, render=False)
    for seed in (0, 1):
        s.reset(seed)
        ex = make_expert(s)
        xyz, _, grip = ex.target("right", 130)
        np.testing.assert_allclose(xyz[:2], s.object_qpos()[:2])
        assert grip == 1.0


def test_generated_episodes_load_back_at_25_hz(tmp_path):
    from cosmos_policy_training.episodes import read_episode

    paths = generate("transfer_cube", 1, tmp_path, image_size=(32, 40), seed_start=5, max_steps=400, progress=False)
    assert [p.name for p in paths] == ["episode_0.hdf5"]
    ep = read_episode(paths[0])
    assert ep.qpos.shape == (200, 14) and ep.action.shape == (200, 14) and ep.qvel.shape == (200, 14)
    assert set(ep.images) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    for frames in ep.images.values():
        assert frames.shape == (200, 32, 40, 3) and frames.dtype == np.uint8
    assert ep.sim and ep.success and ep.success_score == 1.0 and ep.fps == 25.0
    assert ep.task.startswith("pick up the red cube")
    np.testing.assert_allclose(np.diff(ep.timestamps), 0.04)
    assert int(ep.attrs["seed"]) == 5
    # 25 Hz timing: obs[t] precedes action[t], which is held for two 50 Hz physics steps -> obs[t+1]
    s = AlohaSim("transfer_cube", seed=5, render=False)
    np.testing.assert_allclose(s.qpos14(), ep.qpos[0])
    for t in range(30):
        s.step(ep.action[t])
        s.step(ep.action[t])
        np.testing.assert_allclose(s.qpos14(), ep.qpos[t + 1], atol=1e-9)


def test_generate_demos_cli(tmp_path):
    out = tmp_path / "demos"
    cmd = [sys.executable, "-m", "cosmos_policy_ros.sim.generate_demos", "--task", "transfer_cube", "--episodes", "2",
           "--out", str(out), "--image-size", "24", "32", "--max-steps", "20", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    # 20 physics steps cannot finish the task: files are still written (success=False), exit code 0
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["episode_0.hdf5", "episode_1.hdf5"]
    import h5py

    with h5py.File(out / "episode_1.hdf5") as f:
        assert f["observations/images/cam_high"].shape == (10, 24, 32, 3)
        assert f["/action"].shape == (10, 14)
        assert not f.attrs["success"] and f.attrs["sim"]


def test_generate_demos_in_worker_processes_writes_the_same_files(tmp_path):
    """--workers splits the seeds into blocks: the same names, seeds and trajectories as one process."""
    from cosmos_policy_training.episodes import read_episode

    kw = dict(image_size=(24, 32), seed_start=3, max_steps=40, progress=False)
    one = generate("transfer_cube", 3, tmp_path / "one", **kw)
    two = generate("transfer_cube", 3, tmp_path / "two", workers=2, **kw)
    assert [p.name for p in two] == [p.name for p in one] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    for a, b in zip(one, two):
        ea, eb = read_episode(a), read_episode(b)
        assert int(ea.attrs["seed"]) == int(eb.attrs["seed"])
        np.testing.assert_array_equal(ea.action, eb.action)
        np.testing.assert_array_equal(ea.images["cam_high"], eb.images["cam_high"])
    assert [int(read_episode(p, load_images=False).attrs["seed"]) for p in two] == [3, 4, 5]
    with pytest.raises(ValueError, match="skip_failures"):
        generate("transfer_cube", 2, tmp_path / "x", workers=2, skip_failures=True, **kw)


def test_policy_episode_with_chunks_at_25_hz():
    """The evaluation loop (50-action chunks at 25 Hz, re-query) succeeds with the expert as the policy."""
    from cosmos_policy_ros.sim import ScriptedExpertPolicy, run_policy_episode

    s = AlohaSim("transfer_cube", seed=0, image_size=(32, 32), render=False, max_steps=400)
    policy = ScriptedExpertPolicy(s, horizon=50)
    res = run_policy_episode(s, policy, seed=6, record_cameras=("cam_high",), record_size=(24, 24))
    assert res.success and res.success_at_end and res.physics_steps == 400
    assert res.queries == 4  # 200 actions / 50 per chunk
    assert len(res.frames["cam_high"]) == 200 and res.frames["cam_high"][0].shape == (24, 24, 3)
    # early stop at the first success; a broken policy output is a clear error
    res = run_policy_episode(s, policy, seed=7, execute_horizon=25, stop_on_success=True)
    assert res.success and res.physics_steps < 400 and res.queries >= 6
    with pytest.raises(ValueError, match=r"\(N, 14\)"):
        run_policy_episode(s, lambda obs: np.zeros((50, 7)), seed=0)
