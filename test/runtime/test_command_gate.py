"""The commander's one final gate and its bad-input rules, without ROS (CommanderLogic + CommandGate).

Joint states by name (reordered, shuffled, extra, missing), the first command from a measured pose beyond a
limit, deviation vs step on the published stream, chunks validated whole on arrival (a future stamp does not
block later chunks), future-stamped joint states, a silent policy node after a fault; and a property-based
search over input sequences proving that the published stream never leaves the joint limits and never moves
more than one step per tick.
"""
import numpy as np
import pytest

from cosmos_policy_ros.core.chunking import Chunk, SpliceConfig
from cosmos_policy_ros.core.robot import JS_NAMES, JointNameMap, gripper_convention
from cosmos_policy_ros.core.safety import CommandGate, SafetyConfig
from cosmos_policy_ros.ros.commander_logic import HOLD_FAULT, HOLD_IDLE, CommanderConfig, CommanderLogic

P = 0.04
CONV = gripper_convention("aloha2")
#: a pose away from zero for every joint, so a joint read from the wrong place shows
LEFT = np.array([0.3, -0.5, 0.6, 0.1, 0.4, -0.2, 0.7])  # 6 arm joints (rad) + gripper (normalised)
RIGHT = np.array([-0.25, -0.7, 0.9, -0.1, 0.2, 0.35, 0.3])
TRUE = np.concatenate([LEFT, RIGHT])


def js_positions(arm7):
    """(7,) arm + normalised gripper -> (9,) Interbotix JointState positions (JS_NAMES order)."""
    finger = float(CONV.unnormalize_finger(arm7[6]))
    return [*arm7[:6], float(CONV.command_to_joint(arm7[6])), finger, -finger]


def make(safety=None, **cfg):
    return CommanderLogic(SpliceConfig(period=P), safety or SafetyConfig(), CONV, CommanderConfig(**cfg))


def send_js(logic, side, t, arm7, order=None, extra=()):
    names, pos = list(JS_NAMES), js_positions(arm7)
    if order is not None:
        names, pos = [names[i] for i in order], [pos[i] for i in order]
    names += [n for n, _ in extra]
    pos += [v for _, v in extra]
    return logic.on_joint_state(side, t, names, pos)


def feed(logic, t, left=LEFT, right=RIGHT, **kw):
    send_js(logic, "left", t, left, **kw)
    send_js(logic, "right", t, right, **kw)
    logic.on_policy_status(True, "ready", t)


def const_chunk(chunk_id, stamp, pose, h=50):
    return Chunk(chunk_id, stamp, P, np.tile(pose, (h, 1)))


# -- joint states by name -------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [
    [1, 0, 2, 3, 4, 5, 6, 7, 8],  # waist and shoulder swapped
    list(reversed(range(9))),  # reversed
    [4, 8, 0, 6, 2, 7, 1, 5, 3],  # shuffled
])
def test_reordered_names_hold_the_true_pose_and_a_chunk_moves_from_it(order):
    logic = make()
    feed(logic, 0.0, order=order)
    first = logic.tick(0.0)
    assert first.held and first.hold_code == HOLD_IDLE
    np.testing.assert_allclose(first.command, TRUE, atol=1e-9)  # not a jump to a misread pose
    target = TRUE.copy()
    target[0] += 0.05
    assert logic.on_chunk(const_chunk(1, 0.0, target), 0.01).accepted
    feed(logic, P, order=order)
    r = logic.tick(P)
    assert not r.held
    np.testing.assert_allclose(r.command, target, atol=1e-9)  # within a step of the true pose: sent unchanged
    assert not r.safety_kinds


def test_extra_joints_are_ignored_and_shuffled_per_message():
    logic = make()
    rng = np.random.default_rng(0)
    extra = [("camera_pan", 12.0), ("wrist_fan", float("nan"))]
    for k in range(20):
        order = list(rng.permutation(9))
        feed(logic, k * P, order=order, extra=extra)
        r = logic.tick(k * P)
        np.testing.assert_allclose(r.command, TRUE, atol=1e-9)
        assert r.held and r.hold_code == HOLD_IDLE  # no fault: extra joints (even NaN) are not read


def test_missing_joint_is_a_fault_that_names_it_and_holds():
    logic = make()
    feed(logic, 0.0)
    logic.tick(0.0)
    assert logic.on_chunk(const_chunk(1, 0.0, TRUE), 0.01).accepted
    feed(logic, P)
    assert not logic.tick(P).held
    names = [n for n in JS_NAMES if n != "elbow"]
    pos = [v for n, v in zip(JS_NAMES, js_positions(LEFT)) if n != "elbow"]
    err = logic.on_joint_state("left", 2 * P, names, pos)
    assert "missing required joint(s) ['elbow']" in err
    send_js(logic, "right", 2 * P, RIGHT)
    r = logic.tick(2 * P)
    assert r.held and r.hold_code == HOLD_FAULT and "left follower" in r.reason and "'elbow'" in r.reason
    np.testing.assert_allclose(r.command, TRUE, atol=1e-9)


def test_unnamed_joint_states_only_with_the_parameter():
    logic = make()
    err = logic.on_joint_state("left", 0.0, [], js_positions(LEFT))
    assert "allow_unnamed_joint_states" in err
    logic = make(joints=JointNameMap(allow_unnamed=True))
    assert logic.on_joint_state("left", 0.0, [], js_positions(LEFT)) is None
    assert logic.on_joint_state("right", 0.0, [], js_positions(RIGHT)) is None
    np.testing.assert_allclose(logic.tick(0.0).command, TRUE, atol=1e-9)


def test_joint_states_stamped_in_the_future_are_a_fault():
    logic = make(joint_state_max_age=0.1)
    feed(logic, 0.0)
    logic.tick(0.0)
    feed(logic, 5.0)  # 5 s ahead of the commander's clock
    r = logic.tick(P)
    assert r.held and r.hold_code == HOLD_FAULT and "in the future" in r.reason


# -- the first command ------------------------------------------------------------------------------------------
def test_first_command_from_a_measured_pose_beyond_a_limit_never_jumps():
    lower_shoulder = SafetyConfig().arm_limits[1][0]  # -1.85005
    # within one step beyond the limit (the ALOHA sleep pose sits ~0.03 rad below it): clamped within one step
    left = LEFT.copy()
    left[1] = lower_shoulder - 0.03
    logic = make()
    feed(logic, 0.0, left=left)
    r = logic.tick(0.0)
    assert r.command[1] == pytest.approx(lower_shoulder) and "joint_limit" in r.safety_kinds
    # far beyond: nothing is published, and the refusal names the joint
    left[1] = lower_shoulder - 0.5
    logic = make()
    feed(logic, 0.0, left=left)
    assert logic.tick(0.0) is None
    assert "left_shoulder" in logic.refusal and "beyond its limits" in logic.refusal
    assert logic.on_chunk(const_chunk(1, 0.0, TRUE), 0.01).accepted
    feed(logic, P, left=left)
    assert logic.tick(P) is None  # a chunk cannot start from there either
    feed(logic, 2 * P)  # the arm was moved back within its limits
    r = logic.tick(2 * P)
    assert r is not None and logic.refusal == ""
    assert np.all(np.abs(r.command - TRUE) <= SafetyConfig().step + 1e-9)


def test_gate_refuses_without_any_reference():
    gate = CommandGate(SafetyConfig())
    res = gate.send(np.zeros(14))
    assert res.command is None and res.kinds == ["refused"] and gate.last_sent is None


# -- deviation vs step --------------------------------------------------------------------------------------------
def test_deviation_never_undoes_the_step_limit_on_the_published_stream():
    """ALOHA's max_deviation 0.3 rad: an arm pushed 1 rad away from its command must not make the command jump
    after it (the deviation clamp ran last and moved commands by up to 0.3 rad in one tick)."""
    logic = make(SafetyConfig(max_step_arm=0.1, max_deviation=0.3))
    feed(logic, 0.0)
    sent = [logic.tick(0.0).command]
    assert logic.on_chunk(const_chunk(1, 0.0, TRUE), 0.01).accepted
    pushed = LEFT.copy()
    pushed[0] += 1.0  # a person pushes the left waist 1 rad away
    for k in range(1, 15):
        feed(logic, k * P, left=pushed)
        sent.append(logic.tick(k * P).command)
    steps = np.abs(np.diff(sent, axis=0))
    assert steps[:, :6].max() <= 0.1 + 1e-9, steps[:, 0]
    assert sent[-1][0] == pytest.approx(pushed[0] - 0.3)  # walked to within max_deviation of the measured pose


# -- chunks validated whole on arrival -----------------------------------------------------------------------------
def test_future_stamped_chunk_is_rejected_and_later_chunks_run():
    logic = make()
    feed(logic, 0.0)
    logic.tick(0.0)
    acc = logic.on_chunk(const_chunk(1, 3600.0, TRUE), 0.01)
    assert not acc.accepted and acc.reason == "future_stamp"
    assert "chunk 1 (stamp 3600.000): future_stamp" in logic.last_rejection and "in the future" in logic.last_rejection
    feed(logic, P)
    assert logic.tick(P).held  # none of its actions ran
    target = TRUE.copy()
    target[2] += 0.05
    assert logic.on_chunk(const_chunk(2, P, target), P + 0.01).accepted
    for k in range(2, 5):
        feed(logic, k * P)
        r = logic.tick(k * P)
        assert not r.held and r.chunk_id == 2
    assert logic.chunks_rejected == {"future_stamp": 1}


def test_episode_start_and_estop_reset_restart_the_chunk_ordering():
    """A chunk stamped slightly ahead (within the tolerance) sets the ordering; an episode start or an e-stop
    reset forgets it, so the next correctly stamped chunk runs."""
    for restart in ("episode", "estop"):
        logic = make(chunk_future_tolerance=1.0)
        feed(logic, 0.0)
        logic.tick(0.0)
        assert logic.on_chunk(const_chunk(1, 0.9, TRUE), 0.01).accepted  # 0.9 s ahead: tolerated
        feed(logic, P)
        logic.tick(P)
        if restart == "episode":
            logic.begin_episode(0.1)
        else:
            logic.estop("test")
            feed(logic, 2 * P)
            logic.tick(2 * P)
            logic.reset_estop(0.1)
        assert logic.on_chunk(const_chunk(2, 0.12, TRUE), 0.13).accepted, logic.last_rejection
        feed(logic, 4 * P)
        r = logic.tick(4 * P)
        assert not r.held and r.chunk_id == 2


@pytest.mark.parametrize("mutate, reason", [
    (lambda c: Chunk(c.chunk_id, c.stamp, P, c.actions[:, :13]), "action_dim"),
    (lambda c: Chunk(c.chunk_id, c.stamp, 0.05, c.actions), "period"),
    (lambda c: Chunk(c.chunk_id, c.stamp - 10.0, P, c.actions), "expired"),
])
def test_other_whole_chunk_rejections_name_reason_and_stamp(mutate, reason):
    logic = make()
    feed(logic, 0.0)
    logic.tick(0.0)
    bad = mutate(const_chunk(7, 0.0, TRUE))
    acc = logic.on_chunk(bad, 0.01)
    assert not acc.accepted and acc.reason == reason
    assert logic.last_rejection.startswith(f"chunk 7 (stamp {bad.stamp:.3f}): {reason}")


# -- policy node silent after a fault ----------------------------------------------------------------------------
def test_policy_node_silent_after_a_fault_is_reported_as_silent():
    logic = make(policy_timeout=0.5)
    feed(logic, 0.0)
    logic.tick(0.0)
    logic.on_policy_status(False, "inference failed: CUDA error", 0.1)
    send_js(logic, "left", 0.1, LEFT)
    send_js(logic, "right", 0.1, RIGHT)
    assert "policy fault: inference failed" in logic.tick(0.1).reason
    for k in range(3, 25):  # the policy node exits: no status any more
        send_js(logic, "left", k * P, LEFT)
        send_js(logic, "right", k * P, RIGHT)
        r = logic.tick(k * P)
    assert r.held and r.reason.startswith("policy node silent for") and "its last status: inference failed" in r.reason
    assert logic.hold_reasons["policy node silent for"] > 0  # counted under one key, not one per duration
