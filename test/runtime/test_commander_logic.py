"""CommanderLogic without ROS: hold rules, within-one-tick fault response, e-stop latch, publish nothing early."""
import numpy as np
import pytest

from cosmos_policy_ros.core.chunking import Chunk, SpliceConfig
from cosmos_policy_ros.core.robot import JS_NAMES, gripper_convention
from cosmos_policy_ros.core.safety import SafetyConfig
from cosmos_policy_ros.ros.commander_logic import (HOLD_ESTOP, HOLD_FAULT, HOLD_IDLE, HOLD_SAFETY, CommanderConfig,
                                                   CommanderLogic, joint_commands)

P = 0.04
CONV = gripper_convention("aloha2")
JS = [0.0] * 6 + [float(CONV.command_to_joint(0.5)), 0.05, -0.05]


def make(**cfg):
    return CommanderLogic(SpliceConfig(period=P), SafetyConfig(), CONV, CommanderConfig(**cfg))


def feed(logic, t):
    logic.on_joint_state("left", t, JS_NAMES, JS)
    logic.on_joint_state("right", t, JS_NAMES, JS)
    logic.on_policy_status(True, "ready", t)


def ramp(chunk_id, stamp, h=50):
    a = np.zeros((h, 14))
    a[:, 0] = np.arange(h) * 0.01  # small steps
    a[:, 6] = a[:, 13] = 0.5
    return Chunk(chunk_id, stamp, P, a)


def run(logic, t0, n):
    out = []
    for k in range(n):
        t = t0 + k * P
        feed(logic, t)
        out.append(logic.tick(t))
    return out


def test_nothing_published_before_both_arms_and_hold_at_measured():
    logic = make()
    assert logic.tick(0.0) is None
    logic.on_joint_state("left", 0.02, JS_NAMES, JS)
    assert logic.tick(0.04) is None  # one arm is not enough
    logic.on_joint_state("right", 0.05, JS_NAMES, JS)
    res = logic.tick(0.08)
    assert res is not None and res.held and res.hold_code == HOLD_IDLE
    np.testing.assert_allclose(res.command[6], 0.5)  # gripper joint -> normalised command
    np.testing.assert_allclose(res.command[:6], 0.0)


def test_runs_chunk_then_policy_fault_holds_at_the_next_tick_and_rejects_old_chunks():
    logic = make()
    run(logic, 0.0, 2)  # ticks 0, 1
    logic.on_chunk(ramp(1, 0.04), 0.05)
    res = run(logic, 2 * P, 5)  # ticks 2..6
    assert [r.index for r in res] == [0, 1, 2, 3, 4] and not any(r.held for r in res)
    t = 7 * P
    feed(logic, t - 0.01)
    logic.on_policy_status(False, "cam_high: stale", t - 0.01)
    r = logic.tick(t)  # the very next tick holds
    assert r.held and r.hold_code == HOLD_FAULT and "cam_high" in r.reason
    np.testing.assert_array_equal(r.command, res[-1].command)
    # a chunk observed before the fault is refused even after recovery
    logic.on_policy_status(True, "ready", t + 0.01)
    acc = logic.on_chunk(ramp(2, t - 0.1), t + 0.01)
    assert not acc.accepted
    res = run(logic, t + P, 2)
    assert all(r.held and r.hold_code == HOLD_IDLE for r in res)
    # a chunk observed after it starts from its first action
    assert logic.on_chunk(ramp(3, t + 0.05), t + 2.5 * P).accepted
    r = run(logic, t + 3 * P, 1)[0]
    assert not r.held and r.chunk_id == 3 and r.index == 0


def test_chunk_arriving_during_a_fault_waits_for_recovery():
    logic = make()
    run(logic, 0.0, 2)
    logic.on_policy_status(False, "inference failed", 0.1)
    logic.tick(0.12)
    acc = logic.on_chunk(ramp(1, 0.13), 0.14)
    assert acc.reason == "pending_fault"
    logic.on_policy_status(True, "ready", 0.15)
    feed(logic, 0.16)
    r = logic.tick(0.16)
    assert not r.held and r.chunk_id == 1 and r.index == 0


def test_joint_state_faults_hold_within_one_tick():
    logic = make(joint_state_max_age=0.1)
    run(logic, 0.0, 2)
    logic.on_chunk(ramp(1, 0.04), 0.05)
    assert not run(logic, 0.08, 2)[-1].held
    logic.on_joint_state("left", 0.17, JS_NAMES, [np.nan] * 9)
    r = logic.tick(0.16 + P)
    assert r.held and "left follower joint state: joint(s) ['waist'" in r.reason and "not finite" in r.reason
    np.testing.assert_array_equal(r.command, logic.last_command)
    # one arm only: the right arm goes silent
    logic2 = make(joint_state_max_age=0.1)
    run(logic2, 0.0, 2)
    logic2.on_joint_state("left", 0.2, JS_NAMES, JS)
    logic2.on_policy_status(True, "ok", 0.2)
    r = logic2.tick(0.2)
    assert r.held and "right arm joint states stale" in r.reason


def test_policy_silence_holds():
    logic = make(policy_timeout=0.5)
    run(logic, 0.0, 2)
    logic.on_joint_state("left", 1.0, JS_NAMES, JS)
    logic.on_joint_state("right", 1.0, JS_NAMES, JS)
    r = logic.tick(1.0)
    assert r.held and "silent" in r.reason


def test_estop_latches_until_reset_and_needs_a_new_chunk():
    logic = make()
    run(logic, 0.0, 2)
    logic.on_chunk(ramp(1, 0.04), 0.05)
    run(logic, 0.08, 3)
    logic.estop("test")
    res = run(logic, 0.2, 10)
    assert all(r.held and r.hold_code == HOLD_ESTOP for r in res)
    logic.on_chunk(ramp(2, 0.5), 0.55)  # still latched
    assert all(r.held for r in run(logic, 0.6, 3))
    assert "released" in logic.reset_estop(0.8)
    assert run(logic, 0.8, 1)[0].hold_code == HOLD_IDLE  # the pre-reset chunk does not resume
    logic.on_chunk(ramp(3, 0.81), 0.82)
    r = run(logic, 0.84, 1)[0]  # tick 21, the next one
    assert not r.held and r.chunk_id == 3 and r.index == 0


def test_episode_start_drops_the_running_chunk_and_waits_for_one_observed_after_it():
    """A reset scene must not be driven by a chunk planned for the old one (make demo resets the sim)."""
    logic = make()
    run(logic, 0.0, 2)
    logic.on_chunk(ramp(1, 0.04), 0.05)
    before = run(logic, 0.08, 3)
    assert not any(r.held for r in before)
    logic.begin_episode(0.2)
    res = run(logic, 0.2, 3)
    assert all(r.held and r.hold_code == HOLD_IDLE for r in res)
    assert before[-1].command[0] > 0.015  # the chunk had moved the left waist away from the measured 0
    # holds where the robot is (e.g. just reset by a simulator), not at the last command
    np.testing.assert_allclose(res[0].command, logic.measured_reference())
    assert not logic.on_chunk(ramp(2, 0.18), 0.3).accepted  # observed before the episode started
    assert run(logic, 0.32, 1)[0].held
    assert logic.on_chunk(ramp(3, 0.25), 0.34).accepted
    r = run(logic, 0.36, 1)[0]
    assert not r.held and r.chunk_id == 3 and r.index == 0  # the robot held: starts at its first action


def test_episode_start_never_re_anchors_under_a_running_chunk():
    """A fresh chunk that starts before joint states newer than the episode start arrive keeps being checked
    against the commands actually sent: no jump back to the (lagging) measured pose on the wire."""
    logic = make()
    run(logic, 0.0, 2)
    logic.begin_episode(0.1)
    a = np.zeros((50, 14))
    a[:, 0] = 1.0  # far from the measured 0: ramps at max_step_arm per tick
    a[:, 6] = a[:, 13] = 0.5
    assert logic.on_chunk(Chunk(1, 0.11, P, a), 0.11).accepted
    sent = []
    for k in range(3, 8):  # joint states still stamped before the episode start (fresh enough)
        t = k * P
        logic.on_joint_state("left", 0.09, JS_NAMES, JS)
        logic.on_joint_state("right", 0.09, JS_NAMES, JS)
        logic.on_policy_status(True, "ready", t)
        sent.append(logic.tick(t).command[0])
    sent += [r.command[0] for r in run(logic, 8 * P, 3)]  # now newer joint states arrive
    steps = np.diff(sent)
    assert sent[-1] > 0.5 and np.all(np.abs(steps) <= SafetyConfig().max_step_arm + 1e-9), sent


def test_episode_start_can_hold_at_the_last_command():
    logic = make()
    run(logic, 0.0, 2)
    logic.on_chunk(ramp(1, 0.04), 0.05)
    before = run(logic, 0.08, 3)
    logic.begin_episode(0.2, hold_at_measured=False)
    res = run(logic, 0.2, 2)
    assert all(r.held for r in res)
    np.testing.assert_allclose(res[0].command, before[-1].command)


def test_step_clamps_are_counted_and_a_nan_at_action_k_refuses_the_whole_chunk_before_any_action_runs():
    logic = make()
    run(logic, 0.0, 2)
    a = np.zeros((50, 14))
    a[:, 6] = a[:, 13] = 0.5
    a[:, 2] = 1.0
    assert logic.on_chunk(Chunk(1, 0.04, P, a), 0.05).accepted
    res = run(logic, 0.08, 4)
    assert [round(r.command[2], 3) for r in res] == [0.1, 0.2, 0.3, 0.4]
    assert logic.safety_interventions == 4 and logic.safety_kinds["step"] == 4
    bad = np.zeros((50, 14))
    bad[:, 6] = bad[:, 13] = 0.5
    bad[:, 0] = -0.5  # would move the waist if any action ran
    bad[10, 5] = np.nan
    acc = logic.on_chunk(Chunk(2, 0.2, P, bad), 0.22)
    assert not acc.accepted and acc.reason == "nonfinite" and "action 10 index 5" in acc.detail
    assert logic.chunks_rejected["nonfinite"] == 1
    assert "chunk 2 (stamp 0.200): nonfinite" in logic.last_rejection
    res = run(logic, 0.24, 12)
    # none of chunk 2's actions ran: the accepted chunk goes on (a refused chunk never replaces a valid plan)
    assert all(r.chunk_id == 1 and r.command[0] == 0.0 for r in res)
    assert [round(r.command[2], 3) for r in res[:6]] == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_joint_commands_convert_gripper_per_generation():
    c = np.zeros(14)
    c[6], c[13] = 0.0, 1.0
    out = joint_commands(c, gripper_convention("aloha1"))
    assert out["left"][1] == pytest.approx(-0.6213) and out["right"][1] == pytest.approx(1.4910)
    assert len(out["left"][0]) == 6
    with pytest.raises(ValueError, match="expected a"):
        joint_commands(np.zeros(13), CONV)


def test_replan_requests_name_the_time_the_next_chunk_must_be_observed_after():
    """Episode start, e-stop reset and a fault cleared with nothing received meanwhile each ask the policy once
    for a chunk observed after the right time; a fault that cleared with a usable chunk waiting asks nothing."""
    logic = make()
    run(logic, 0.0, 2)
    assert logic.take_replan_request() is None  # nothing refused yet: the schedule is fine
    logic.begin_episode(0.1)
    assert logic.take_replan_request() == 0.1 and logic.replan_reason == "episode start"
    assert logic.take_replan_request() is None  # once per event
    logic.estop("test")
    run(logic, 0.12, 2)
    assert logic.take_replan_request() is None  # still latched: nothing could run
    logic.reset_estop(0.3)
    assert logic.take_replan_request() == 0.3 and logic.replan_reason == "e-stop reset"
    run(logic, 0.32, 1)  # the e-stop's own fault hold clears here: already covered by the reset's request
    assert logic.take_replan_request() is None
    # a policy fault from 0.4 to 0.6, no chunk meanwhile: after it clears, plan past the fault's start
    logic.on_policy_status(False, "inference failed", 0.4)
    for k in range(10, 15):
        logic.on_joint_state("left", k * P, JS_NAMES, JS)
        logic.on_joint_state("right", k * P, JS_NAMES, JS)
        assert logic.tick(k * P).hold_code == HOLD_FAULT
    assert logic.take_replan_request() is None  # not while the fault lasts
    run(logic, 0.6, 1)
    assert logic.take_replan_request() == 0.4 and logic.replan_reason == "fault cleared"
    # the same with a chunk observed during the fault: it starts when the fault clears, no request
    logic.on_policy_status(False, "inference failed", 0.7)
    logic.on_joint_state("left", 0.72, JS_NAMES, JS)
    logic.on_joint_state("right", 0.72, JS_NAMES, JS)
    logic.tick(0.72)
    logic.on_chunk(ramp(5, 0.75), 0.75)
    r = run(logic, 0.76, 1)[0]
    assert not r.held and r.chunk_id == 5
    assert logic.take_replan_request() is None


@pytest.mark.parametrize("pause", [False, True])
def test_pause_asks_for_an_observation_from_the_tick_a_chunk_runs_out(pause):
    """execution:=pause: the tick a chunk runs out (the robot starts holding) asks the policy once for a chunk
    observed after that tick, so the next chunk starts at its first action however late this one started.
    Streaming asks nothing: a chunk running out there means slow inference, and a request would cancel it."""
    logic = make(replan_on_chunk_end=pause)
    run(logic, 0.0, 2)  # ticks 0, 1
    logic.on_chunk(ramp(1, 0.04, h=5), 0.05)
    res = run(logic, 2 * P, 5)  # ticks 2..6: the five actions
    assert [r.index for r in res] == [0, 1, 2, 3, 4]
    assert logic.take_replan_request() is None  # not while the chunk runs
    end = run(logic, 7 * P, 2)  # tick 7: ran out, the robot holds
    assert all(r.held and r.hold_code == HOLD_IDLE for r in end)
    if pause:
        assert logic.take_replan_request() == pytest.approx(7 * P) and logic.replan_reason == "chunk ended"
    assert logic.take_replan_request() is None  # once per chunk end
    # the chunk planned from that observation starts at its first action
    logic.on_chunk(ramp(2, 7 * P + 0.01), 8.5 * P)
    assert [r.index for r in run(logic, 9 * P, 3)] == [0, 1, 2]


def test_demo_counts_the_chunks_the_commander_ran_from_its_trace():
    """`make demo --min-chunks` ends an episode on what the trace shows ran: held ticks and refused chunks do not count."""
    from cosmos_policy_ros.demo import chunks_run

    logic = make()
    rows = [r.trace(0, r.tick * P) for r in run(logic, 0.0, 3)]  # held: no chunk yet
    assert chunks_run(rows) == 0
    logic.on_chunk(ramp(1, 0.1), 0.11)
    rows += [r.trace(0, r.tick * P) for r in run(logic, 3 * P, 4)]
    assert chunks_run(rows) == 1
    assert not logic.on_chunk(ramp(2, 0.05), 0.3).accepted  # older than the running one
    rows += [r.trace(0, r.tick * P) for r in run(logic, 7 * P, 2)]
    assert chunks_run(rows) == 1
    assert logic.on_chunk(ramp(3, 0.3), 0.35).accepted
    rows += [r.trace(0, r.tick * P) for r in run(logic, 9 * P, 4)]
    assert chunks_run(rows) == 2
