"""The lifecycle rules without ROS: state machine, safe pose moves, checks, driver preparation order, and the
sim bridge's driver emulation."""
import math

import numpy as np
import pytest

from cosmos_policy_ros.core.episode import (DEFAULT_REST_POSE, DEFAULT_START_POSE, EpisodeConfig, Lifecycle,
                                            LifecycleError, State, hold_actions, max_steps, plan_move, pose_errors,
                                            stale_inputs, stop_cause)


def test_lifecycle_allows_the_episode_sequence_and_refuses_the_rest_with_reasons():
    life = Lifecycle()
    for cmd in ("go", "stop", "reset_estop"):
        with pytest.raises(LifecycleError, match=f"{cmd} refused in state IDLE .*allowed now: start"):
            life.request(cmd)
    life.request("start")
    life.enter(State.RESETTING, "moving")
    with pytest.raises(LifecycleError, match="start refused in state RESETTING"):
        life.request("start")
    life.enter(State.READY)
    life.request("go")
    life.enter(State.RUNNING)
    with pytest.raises(LifecycleError, match="label refused in state RUNNING"):
        life.request("label")
    life.request("stop")
    life.enter(State.STOPPED)
    for cmd in ("label", "rest", "start"):
        life.request(cmd)
    for state in State:  # e-stop is always allowed
        life.enter(state)
        life.request("estop")
    with pytest.raises(LifecycleError, match="unknown command"):
        life.request("jump")


def test_start_refusals_say_what_to_run():
    """A start refused while e-stopped or while an episode runs names the command that gets the operator on."""
    from cosmos_policy_ros.ros.cli_episode import start_refusal

    life = Lifecycle()
    life.enter(State.ESTOPPED, "e-stop engaged")
    for cmd in ("start", "go", "rest"):
        with pytest.raises(LifecycleError, match="release the e-stop first: cosmos-policy episode reset"):
            life.request(cmd)
    life.enter(State.RUNNING)
    with pytest.raises(LifecycleError, match=r"stop it first|stop the episode first.*episode start --restart"):
        life.request("start")
    # the CLI's own check against the commander's ~/episode_status answer
    assert "cosmos-policy episode reset" in start_refusal(False, "e-stop latched", False)
    assert "cosmos-policy episode reset" in start_refusal(False, "e-stop latched", True)  # --restart: still latched
    msg = start_refusal(True, "20260101-000000-abcdef", False)
    assert "episode 20260101-000000-abcdef is running" in msg and "--restart" in msg
    assert start_refusal(True, "20260101-000000-abcdef", True) == ""
    assert start_refusal(False, "no episode running", False) == ""


@pytest.mark.parametrize("speed,grip_speed", [(0.8, 1.5), (0.2, 0.5), (2.0, 4.0)])
def test_plan_move_stays_under_the_speed_limit_and_ends_at_the_goal(speed, grip_speed):
    cfg = EpisodeConfig(max_joint_speed=speed, max_gripper_speed=grip_speed)
    rng = np.random.default_rng(0)
    for _ in range(20):
        start = np.array(DEFAULT_START_POSE) + rng.uniform(-0.8, 0.8, 14)
        start[[6, 13]] = rng.uniform(0, 1, 2)
        goal = np.array(DEFAULT_REST_POSE)
        prev = start + 0.0  # the command the commander holds when the move arrives
        traj = plan_move(start, goal, cfg)
        arm, grip = max_steps(traj, previous=prev)
        assert arm <= cfg.max_step_arm + 1e-12 and grip <= cfg.max_step_gripper + 1e-12
        np.testing.assert_array_equal(traj[-1], goal)
        np.testing.assert_array_equal(traj[:cfg.lead_in_ticks], np.repeat(start[None], cfg.lead_in_ticks, 0))
        # spliced 2 ticks late (lead-in skipped) it still starts without a jump
        assert max_steps(traj[2:], previous=prev)[0] <= cfg.max_step_arm + 1e-12
        # between start and goal at every tick (never overshoots, so never leaves the limits)
        lo, hi = np.minimum(start, goal) - 1e-12, np.maximum(start, goal) + 1e-12
        assert np.all((traj >= lo) & (traj <= hi))
    # the duration follows the largest distance: 1 rad at 0.8 rad/s with the smooth profile's 1.5 peak factor
    far = np.array(DEFAULT_START_POSE)
    far[0] += 1.0
    traj = plan_move(DEFAULT_START_POSE, far, EpisodeConfig(max_joint_speed=0.8, lead_in_ticks=0))
    assert len(traj) - 5 == math.ceil(1.5 * 1.0 / (0.8 * 0.04))


def test_plan_move_refuses_bad_input():
    cfg = EpisodeConfig()
    with pytest.raises(ValueError, match="shape"):
        plan_move(np.zeros(13), np.zeros(14), cfg)
    bad = np.zeros(14)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        plan_move(bad, np.zeros(14), cfg)


def test_config_validation_names_the_problem():
    pose = list(DEFAULT_START_POSE)
    pose[1] = -2.5
    with pytest.raises(ValueError, match="start_pose: expected a pose inside the joint limits, got left_shoulder -2.5000"):
        EpisodeConfig(start_pose=pose)
    pose = list(DEFAULT_REST_POSE)
    pose[13] = 1.5
    with pytest.raises(ValueError, match="right_gripper 1.5000 outside"):
        EpisodeConfig(rest_pose=pose)
    with pytest.raises(ValueError, match="start_pose: expected 14 finite values"):
        EpisodeConfig(start_pose=[0.0] * 12)
    with pytest.raises(ValueError, match="max_joint_speed: expected a positive finite number, got 0"):
        EpisodeConfig(max_joint_speed=0)
    with pytest.raises(ValueError, match="max_duration"):
        EpisodeConfig(max_duration=-1)


def test_hold_pose_and_input_checks():
    cfg = EpisodeConfig(pose_tolerance=0.05, gripper_tolerance=0.1)
    cmd = np.array(DEFAULT_START_POSE)
    h = hold_actions(cmd, 25)
    assert h.shape == (25, 14) and np.ptp(h, axis=0).max() == 0
    with pytest.raises(ValueError):
        hold_actions(cmd, 0)
    measured = cmd.copy()
    assert pose_errors(measured, cmd, cfg) == []
    measured[2] += 0.06
    measured[13] -= 0.2
    errs = pose_errors(measured, cmd, cfg)
    assert errs[0].startswith("left_elbow off by 0.060 rad") and errs[1].startswith("right_gripper off by 0.200")
    assert len(pose_errors(measured, cmd, EpisodeConfig(gripper_tolerance=0))) == 1  # grippers not checked
    stale = stale_inputs({"camera /a": 9.0, "camera /b": None, "joints": 9.9}, now=10.0, max_age=0.5)
    assert stale == ["camera /a: stale, last message 1.00 s ago (max_input_age 0.5 s)", "camera /b: nothing received"]
    assert stop_cause(10.0, 0.0, 60.0, success=False) is None
    assert stop_cause(60.0, 0.0, 60.0, success=False) == "timeout"
    assert stop_cause(1.0, 0.0, 60.0, success=True) == "success"
    assert stop_cause(1e6, 0.0, 0.0, success=False) is None  # no limit


def test_robot_preparation_follows_the_aloha_order():
    from cosmos_policy_ros.ros.robot_prep import PrepConfig, prep_steps

    steps = prep_steps(PrepConfig())
    left = [(s, f) for arm, s, f in steps if arm == "/follower_left"]
    assert [s for s, _ in left] == ["reboot_motors", "set_operating_modes", "set_operating_modes", "torque_enable",
                                    "torque_enable"]
    assert left[0][1] == {"cmd_type": "single", "name": "gripper", "enable": True, "smart_reboot": False}
    assert (left[1][1]["name"], left[1][1]["mode"]) == ("arm", "position")
    assert (left[2][1]["name"], left[2][1]["mode"]) == ("gripper", "current_based_position")
    assert len(steps) == 10
    assert prep_steps(PrepConfig(enabled=False)) == []
    with pytest.raises(ValueError, match="prep_gripper_mode: expected one of"):
        PrepConfig(gripper_mode="torque")


def test_sim_driver_emulation():
    from cosmos_policy_ros.ros.sim_bridge import DriverEmulation

    d = DriverEmulation()
    assert d.limp() == ()
    assert d.torque_enable("group", "arm", False) == (tuple(range(6)), None)
    assert d.limp() == tuple(range(6))
    assert d.torque_enable("single", "gripper", False) == ((6,), None)
    assert d.reboot("single", "gripper", True) == ((6,), None)
    assert d.limp() == tuple(range(6))
    assert d.torque_enable("group", "all", True)[1] is None and d.limp() == ()
    assert "unknown group 'legs'" in d.torque_enable("group", "legs", True)[1]
    assert "cmd_type" in d.torque_enable("both", "arm", True)[1]
    assert d.set_mode("single", "gripper", "current_based_position") is None
    assert d.modes == {"single:gripper": "current_based_position"}
    assert "unknown operating mode" in d.set_mode("group", "arm", "fast")
