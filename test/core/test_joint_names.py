"""Joint states are read by name: any order, extra joints ignored, a missing / duplicate / unnamed / non-finite
joint a clear JointStateError (the commander and the observation turn it into a fault and a hold)."""
from __future__ import annotations

import numpy as np
import pytest

from cosmos_policy_ros.core.robot import (JS_ARM, JS_GRIPPER, JS_LEFT_FINGER, JS_NAMES, JS_RIGHT_FINGER,
                                          REQUIRED_FOR_COMMAND_AND_OBS, JointNameMap, JointStateError,
                                          arm_qpos_from_joint_state, gripper_convention, joint_name_map)

CANON = np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 1.0, 0.05, -0.05])


def test_required_minimum_is_arm_gripper_and_finger():
    assert REQUIRED_FOR_COMMAND_AND_OBS == JS_NAMES[:8]


def test_in_order_message_maps_to_itself():
    np.testing.assert_array_equal(JointNameMap().canonical(list(JS_NAMES), CANON), CANON)


def test_reordered_names_map_by_name():
    names = list(JS_NAMES)
    names[0], names[1] = names[1], names[0]  # waist and shoulder swapped, positions with them
    pos = CANON.copy()
    pos[0], pos[1] = pos[1], pos[0]
    out = JointNameMap().canonical(names, pos)
    np.testing.assert_array_equal(out, CANON)
    # the existing index constants apply to the mapped vector
    np.testing.assert_array_equal(out[JS_ARM], CANON[:6])
    assert out[JS_GRIPPER] == 1.0 and out[JS_LEFT_FINGER] == 0.05


def test_shuffled_names_with_extra_joints():
    rng = np.random.default_rng(3)
    m = JointNameMap()
    for _ in range(50):
        names = list(JS_NAMES) + ["camera_pan", "wrist_fan"]
        pos = np.concatenate([CANON, [np.nan, 99.0]])  # extra joints may be anything, even NaN
        perm = rng.permutation(len(names))
        out = m.canonical([names[i] for i in perm], pos[perm], side="left")
        np.testing.assert_array_equal(out, CANON)


def test_custom_names_and_optional_joint_absent_is_nan():
    pref = tuple("follower_left/" + n for n in JS_NAMES)
    m = joint_name_map(pref)
    names = list(reversed(pref[:8]))  # right_finger not published: optional
    out = m.canonical(names, list(reversed(CANON[:8])))
    np.testing.assert_array_equal(out[:8], CANON[:8])
    assert np.isnan(out[JS_RIGHT_FINGER])
    assert joint_name_map([]).names == JS_NAMES


def test_missing_required_joint_is_a_clear_error():
    names = [n for n in JS_NAMES if n != "elbow"]
    with pytest.raises(JointStateError, match=r"left follower.*missing required joint\(s\) \['elbow'\].*received"):
        JointNameMap().canonical(names, np.zeros(len(names)), side="left")
    # a joint the caller does not need may be absent
    out = JointNameMap().canonical(names, np.zeros(len(names)), required=("waist",))
    assert np.isnan(out[2])


def test_duplicate_names_rejected():
    names = list(JS_NAMES) + ["waist"]
    with pytest.raises(JointStateError, match="'waist' twice"):
        JointNameMap().canonical(names, np.zeros(10))


def test_length_mismatch_rejected():
    with pytest.raises(JointStateError, match="9 names but 8 positions"):
        JointNameMap().canonical(list(JS_NAMES), np.zeros(8))


def test_unnamed_only_with_opt_in():
    with pytest.raises(JointStateError, match="allow_unnamed_joint_states"):
        JointNameMap().canonical([], CANON, side="right")
    np.testing.assert_array_equal(JointNameMap(allow_unnamed=True).canonical([], CANON), CANON)
    # unnamed and too short for the required minimum
    with pytest.raises(JointStateError, match=r"missing required joint\(s\) \['left_finger'\]"):
        JointNameMap(allow_unnamed=True).canonical([], CANON[:7])
    with pytest.raises(JointStateError, match="empty name at index 3"):
        JointNameMap().canonical(["waist", "shoulder", "elbow", ""], np.zeros(4))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_required_joint_rejected(bad):
    pos = CANON.copy()
    pos[4] = bad
    with pytest.raises(JointStateError, match="wrist_angle"):
        JointNameMap().canonical(list(JS_NAMES), pos)
    pos = CANON.copy()
    pos[JS_RIGHT_FINGER] = bad  # not required: passed through
    out = JointNameMap().canonical(list(JS_NAMES), pos)
    assert not np.isfinite(out[JS_RIGHT_FINGER])


@pytest.mark.parametrize("names,match", [
    (JS_NAMES[:8], "expected 9 names"),
    (JS_NAMES[:8] + ("waist",), "distinct"),
    (JS_NAMES[:8] + ("",), "non-empty"),
])
def test_map_validates_its_names(names, match):
    with pytest.raises(ValueError, match=match):
        JointNameMap(names)


def test_mapped_vector_feeds_existing_helpers():
    names = list(reversed(JS_NAMES))
    out = JointNameMap().canonical(names, CANON[::-1])
    conv = gripper_convention("aloha2")
    q = arm_qpos_from_joint_state(out, conv)
    np.testing.assert_array_equal(q[:6], CANON[:6])
    assert q[6] == pytest.approx(float(conv.normalize_finger(0.05)))
