"""Safety filter: limits, both-sign step clamp, gripper range, faults (no ROS)."""
import numpy as np
import pytest

from cosmos_policy_ros.core.safety import SafetyConfig, filter_action

CFG = SafetyConfig(max_step_arm=0.1, max_step_gripper=0.2)
REF = np.zeros(14)
REF[6] = REF[13] = 0.5


def test_small_action_passes_unchanged():
    a = REF.copy()
    a[0] += 0.05
    a[6] -= 0.1
    r = filter_action(a, REF, CFG)
    assert not r.changed and not r.fault
    np.testing.assert_array_equal(r.command, a)


@pytest.mark.parametrize("sign", [+1, -1])
def test_step_limit_clamps_both_directions(sign):
    a = REF.copy()
    a[2] += sign * 1.0  # left elbow jump
    a[9] -= sign * 0.7  # right elbow jump the other way
    r = filter_action(a, REF, CFG)
    assert r.kinds == ["step"] and not r.fault
    assert r.command[2] == pytest.approx(sign * 0.1)
    assert r.command[9] == pytest.approx(-sign * 0.1)
    assert "left_elbow" in r.reasons[0] and "right_elbow" in r.reasons[0]


def test_joint_limits_and_gripper_range():
    ref = REF.copy()
    ref[1] = -1.8  # near the shoulder's lower limit (-1.85)
    ref[13] = 0.95
    a = ref.copy()
    a[1] = -1.95
    a[13] = 1.1
    r = filter_action(a, ref, CFG)
    assert set(r.kinds) == {"joint_limit", "gripper_range"}
    assert r.command[1] == pytest.approx(-1.85005)
    assert r.command[13] == pytest.approx(1.0)


@pytest.mark.parametrize("bad, kind", [(np.zeros(13), "shape"), (None, "shape"), ("abc", "shape"),
                                       (np.full(14, np.nan), "nonfinite"), (np.r_[np.zeros(13), np.inf], "nonfinite")])
def test_faults_return_the_reference(bad, kind):
    r = filter_action(bad, REF, CFG)
    assert r.fault and r.kinds == [kind]
    np.testing.assert_array_equal(r.command, REF)


def test_deviation_from_measured():
    cfg = SafetyConfig(max_step_arm=1.0, max_deviation=0.2)
    a = REF.copy()
    a[0] = 0.5
    r = filter_action(a, REF, cfg, measured=np.zeros(14))
    assert r.kinds == ["deviation"] and r.command[0] == pytest.approx(0.2)


def test_deviation_runs_before_the_step_and_limit_clamps():
    """Measured pose far from the last command (an arm pushed or blocked): the deviation stage may ask for a
    big move, yet what is sent moves at most one step and stays within the joint limits."""
    cfg = SafetyConfig(max_step_arm=0.1, max_deviation=0.3)
    ref = REF.copy()
    ref[1] = -1.8  # left shoulder near its lower limit (-1.85005)
    measured = ref.copy()
    measured[0] = 1.0  # waist pushed 1 rad away
    measured[1] = -2.5  # shoulder measured beyond the limit
    a = ref.copy()
    r = filter_action(a, ref, cfg, measured=measured)
    assert r.command[0] == pytest.approx(0.1)  # one step towards measured - 0.3, not 0.7 at once
    assert r.command[1] == pytest.approx(-1.85005)  # limit wins over deviation
    assert np.all(np.abs(r.command - ref) <= cfg.step + 1e-12)
    assert "deviation" in r.kinds and "step" in r.kinds and "joint_limit" in r.kinds


def test_config_validation():
    with pytest.raises(ValueError, match="max_step_arm"):
        SafetyConfig(max_step_arm=0)
    with pytest.raises(ValueError, match="arm_limits"):
        SafetyConfig(arm_limits=[(0, 1)] * 5)
    with pytest.raises(ValueError, match="gripper range"):
        SafetyConfig(gripper_min=1, gripper_max=0)
