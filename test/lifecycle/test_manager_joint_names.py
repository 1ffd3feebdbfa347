"""The episode manager reads follower joint states by name, over DDS: a follower that lists its joints in another
order with an extra joint is understood (the start move begins at the measured pose); a joint state missing a
joint, or without names, refuses a start with a message naming the problem."""
import time

import numpy as np
import pytest

from cosmos_policy_ros.core.robot import JS_NAMES, gripper_convention
from cosmos_policy_ros.ros.episode_manager import OWN_CHUNK_ID_BASE
from cosmos_policy_ros.ros.harness import Collector, NodeProcess, NodeSpec, wait_for

from .conftest import FakeFollower

pytestmark = pytest.mark.ros

CONV = gripper_convention("aloha2")
#: one follower's pose by canonical name: every arm joint differs, so a by-index read shows as a wrong value
POSE = {"waist": 0.3, "shoulder": -0.5, "elbow": 0.7, "forearm_roll": 0.1, "wrist_angle": -0.2, "wrist_rotate": 0.05,
        "gripper": float(CONV.command_to_joint(0.4)), "left_finger": 0.03, "right_finger": -0.03}


def test_manager_maps_joint_states_by_name_and_refuses_missing_or_unnamed(ros_session, node_log_dir,
                                                                        manager_client_cls):
    from cosmos_policy_ros.msg import ActionChunk

    client = manager_client_cls(ros_session)
    own = Collector(client.node, ActionChunk, "/episode_manager/action_chunk", 100)
    follower = FakeFollower(client.node, [POSE[n] for n in JS_NAMES])
    # reversed order, an extra joint first (a driver may publish more joints than the Interbotix nine)
    shuffled = ["ee_gripper_extra"] + list(reversed(JS_NAMES))
    follower.set(shuffled, [9.9] + [POSE[n] for n in reversed(JS_NAMES)])
    # no commander, no cameras, no policy: the manager alone, its start move planned from the measured pose
    spec = NodeSpec(module="cosmos_policy_ros.ros.episode_manager", name="episode_manager",
                    parameters={"camera_topics": [""], "require_policy_ok": False, "prep_enabled": False,
                                "settle_timeout": 0.5, "max_input_age": 1.0})
    try:
        with NodeProcess(spec, node_log_dir) as proc:
            client.wait_state("IDLE", 60, [proc])
            deadline = time.monotonic() + 30
            while True:  # until the manager's subscriptions have matched the follower (discovery under load)
                res = client.call("start")
                if res.success:
                    break
                assert "nothing received" in res.message and time.monotonic() < deadline, res.message
                time.sleep(0.3)
            msg = own.wait(1, 20)[0]
            assert msg.chunk_id > OWN_CHUNK_ID_BASE
            first = np.asarray(msg.positions, dtype=np.float64).reshape(msg.horizon, 14)[0]
            # the move starts where the follower is, joint by joint (left arm 0..6, right arm 7..13)
            for arm in (0, 7):
                np.testing.assert_allclose(first[arm:arm + 6], [POSE[n] for n in JS_NAMES[:6]], atol=1e-6)
                assert abs(first[arm + 6] - 0.4) < 1e-4  # gripper motor joint -> normalised command
            # without a commander the robot never reaches the start pose: the reset fails and the manager idles
            wait_for(lambda: client.state().get("state") == "IDLE" and client.state().get("last_error"), 30,
                     what="the failed reset (no commander in this test)")

            # a follower that stops publishing the elbow: refused, the reply names the joint
            follower.set([n for n in shuffled if n != "elbow"],
                         [9.9] + [POSE[n] for n in reversed(JS_NAMES) if n != "elbow"])
            n_own = len(own)
            time.sleep(0.5)  # the manager has the new messages before the next start request
            wait_for(lambda: "missing required joint(s) ['elbow']" in client.call("start").message, 10,
                     interval=0.3, what="a start refused for the missing elbow")
            res = client.call("start")
            assert not res.success
            assert "left joint states refused" in res.message and "'elbow'" in res.message, res.message

            # unnamed joint states (positions in the index layout): refused unless allow_unnamed_joint_states
            follower.set([], [POSE[n] for n in JS_NAMES])
            time.sleep(0.5)
            wait_for(lambda: "no joint names" in client.call("start").message, 10, interval=0.3,
                     what="a start refused for unnamed joint states")
            res = client.call("start")
            assert not res.success and "allow_unnamed_joint_states" in res.message, res.message
            assert len(own) == n_own  # nothing moved after the refusals
            assert "refusing joint state" in proc.output()
    finally:
        follower.close()
