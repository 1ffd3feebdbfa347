"""Commander process alone over real DDS, followers publishing their joints in another order than the
Interbotix layout (and extra joints): the commands on the wire start at the true pose and never move more than
one step per tick, with the real ALOHA settings (max_deviation 0.3 rad); a chunk stamped an hour ahead is
rejected with its reason in /diagnostics and the next chunk runs."""
import time

import numpy as np
import pytest

from cosmos_policy_ros.ros.commander_logic import HOLD_RUNNING, TRACE_FIELDS
from cosmos_policy_ros.ros.harness import Collector, launch, wait_for, wait_for_subscribers

F = {name: i for i, name in enumerate(TRACE_FIELDS)}
NF = len(TRACE_FIELDS)
pytestmark = pytest.mark.ros

LEFT = [0.3, -0.5, 0.6, 0.1, 0.4, -0.2]
RIGHT = [-0.25, -0.7, 0.9, -0.1, 0.2, 0.35]


def test_reordered_joint_names_do_not_make_commands_jump_on_the_wire(ros_session, node_log_dir, synthetic_robot_cls,
                                                                    trace_watcher_cls):
    from diagnostic_msgs.msg import DiagnosticStatus
    from interbotix_xs_msgs.msg import JointGroupCommand

    from cosmos_policy_ros.msg import ActionChunk
    from cosmos_policy_ros.ros.conversions import chunk_to_msg
    from cosmos_policy_ros.ros.graph import graph_nodes

    watcher = trace_watcher_cls(ros_session)
    node = watcher.node
    wire = {s: Collector(node, JointGroupCommand, f"/follower_{s}/commands/joint_group", 1000) for s in ("left", "right")}
    chunk_pub = node.create_publisher(ActionChunk, "/policy/action_chunk", 10)
    status_pub = node.create_publisher(DiagnosticStatus, "/policy/status", 10)
    ok = DiagnosticStatus(level=b"\x00", name="policy", message="ready")
    node.create_timer(0.1, lambda: status_pub.publish(ok))  # a healthy policy node's heartbeat
    # left: every joint in reverse order plus two extra joints; right: waist and shoulder swapped
    robot = synthetic_robot_cls(ros_session, arm={"left": LEFT, "right": RIGHT},
                                name_order={"left": list(reversed(range(9))), "right": [1, 0, 2, 3, 4, 5, 6, 7, 8]},
                                extra_joints=[("camera_pan", 2.5), ("camera_tilt", -1.0)])
    spec = [n.spec for n in graph_nodes("aloha", {"record": False, "task": "fold"}) if n.name == "commander"]
    with launch(spec, node_log_dir) as procs:
        wait_for_subscribers(node, "/policy/action_chunk", timeout=30)
        wire["left"].wait(3, timeout=20)
        first = {s: np.asarray(wire[s].snapshot()[0].cmd, dtype=np.float64) for s in wire}
        # the very first command holds the true pose (the old index reading asked for a 1 rad jump here)
        np.testing.assert_allclose(first["left"], LEFT, atol=1e-5)
        np.testing.assert_allclose(first["right"], RIGHT, atol=1e-5)

        # a chunk stamped an hour ahead: rejected, reported with its reason and stamp, nothing of it runs
        now = robot.node.get_clock().now().nanoseconds * 1e-9
        target = np.array(LEFT + [0.5] + RIGHT + [0.5], np.float32)
        target[0] += 0.8  # left waist 0.8 rad away: ramps at max_step_arm
        target[8] -= 0.8  # right shoulder the other way
        future = np.tile(target, (50, 1))
        future[:, 2] = 1.5  # would move the left elbow if any of it ran
        chunk_pub.publish(chunk_to_msg(future, now + 3600.0, 1, 0.04, "hand-made"))
        wait_for(lambda: any("future_stamp" in d.get("last_chunk_rejected", "")
                             for d in watcher.diag_values(": commander")), 5.0, what="future_stamp in diagnostics")
        # the next correctly stamped chunk runs
        n0 = len(watcher.trace)
        chunk_pub.publish(chunk_to_msg(np.tile(target, (50, 1)), robot.node.get_clock().now().nanoseconds * 1e-9,
                                       2, 0.04, "hand-made"))
        i_run = watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_RUNNING and r[F["chunk_id"]] == 2, 10.0, n0,
                                  "chunk 2 running")
        watcher.wait_rows(lambda r: r[F["chunk_id"]] == 2 and r[F["index"]] >= 12, 10.0, i_run, "12 actions")
        time.sleep(0.2)
        for side in ("left", "right"):
            cmds = np.array([m.cmd for m in wire[side].snapshot()], dtype=np.float64)
            steps = np.abs(np.diff(cmds, axis=0))
            assert steps.max() <= 0.1 + 1e-5, f"{side}: {steps.max():.3f} rad in one tick"
        left = np.array([m.cmd for m in wire["left"].snapshot()], dtype=np.float64)
        right = np.array([m.cmd for m in wire["right"].snapshot()], dtype=np.float64)
        assert left[-1, 0] == pytest.approx(target[0], abs=1e-5) and right[-1, 1] == pytest.approx(target[8], abs=1e-5)
        assert left[:, 2].max() <= LEFT[2] + 1e-5  # the future-stamped chunk's elbow never ran
        assert all(p.alive() for p in procs)
