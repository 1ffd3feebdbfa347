"""Commander process alone over real DDS, fed hand-made chunks: safety clamping on the wire, nothing published
before joint states, NaN chunk holds, Interbotix command format and gripper conversion, episode services."""
import time

import numpy as np
import pytest

from cosmos_policy_ros.core.robot import gripper_convention
from cosmos_policy_ros.ros.commander_logic import HOLD_ESTOP, HOLD_RUNNING, HOLD_SAFETY, TRACE_FIELDS
from cosmos_policy_ros.ros.harness import Collector, launch, wait_for, wait_for_subscribers

F = {name: i for i, name in enumerate(TRACE_FIELDS)}
NF = len(TRACE_FIELDS)
pytestmark = pytest.mark.ros


def _chunk_msg(actions, stamp_s, chunk_id):
    from cosmos_policy_ros.ros.conversions import chunk_to_msg

    return chunk_to_msg(np.asarray(actions, np.float32), stamp_s, chunk_id, 0.04, "hand-made")


@pytest.mark.timing  # tick-by-tick ramp values: starved by a second suite on 2 cores
def test_commander_clamps_jumps_both_ways_and_speaks_interbotix(ros_session, node_log_dir, synthetic_robot_cls,
                                                                  trace_watcher_cls):
    from diagnostic_msgs.msg import DiagnosticStatus
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from std_srvs.srv import Trigger

    from cosmos_policy_ros.msg import ActionChunk, EpisodeEvent
    from cosmos_policy_ros.ros.graph import graph_nodes

    watcher = trace_watcher_cls(ros_session)
    node = watcher.node
    group_l = Collector(node, JointGroupCommand, "/follower_left/commands/joint_group", 500)
    single_r = Collector(node, JointSingleCommand, "/follower_right/commands/joint_single", 500)
    episodes = Collector(node, EpisodeEvent, "/episode", 10)
    chunk_pub = node.create_publisher(ActionChunk, "/policy/action_chunk", 10)
    status_pub = node.create_publisher(DiagnosticStatus, "/policy/status", 10)
    spec = [n.spec for n in graph_nodes("aloha", {"record": False, "task": "fold"}) if n.name == "commander"]
    with launch(spec, node_log_dir) as procs:
        wait_for_subscribers(node, "/policy/action_chunk", timeout=30)
        time.sleep(1.0)
        # no joint states yet: the commander publishes nothing at all
        assert len(watcher.trace) == 0 and len(group_l) == 0
        robot = synthetic_robot_cls(ros_session)  # starts joint states (echoing commands) and cameras
        watcher.trace.wait(5, timeout=10)
        ok = DiagnosticStatus(level=b"\x00", name="policy", message="ready")
        node.create_timer(0.1, lambda: status_pub.publish(ok))  # a healthy policy node's heartbeat
        stamp = robot.node.get_clock().now().nanoseconds * 1e-9
        # 50 actions: left elbow jumps +1 rad, right elbow -1 rad, right gripper to 1 (open)
        actions = np.zeros((50, 14), np.float32)
        actions[:, 6] = 0.5
        actions[:, 13] = 1.0
        actions[:, 2] = 1.0
        actions[:, 9] = -1.0
        n0 = len(watcher.trace)
        chunk_pub.publish(_chunk_msg(actions, stamp, 1))
        i_run = watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_RUNNING, 5.0, n0, "chunk running")
        watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_RUNNING and r[F["index"]] >= 14, 5.0, i_run, "14 ticks")
        rows = watcher.rows()[i_run:i_run + 10]  # 0.1, 0.2, ... 1.0 rad
        left_elbow = [r[NF + 2] for r in rows]
        right_elbow = [r[NF + 9] for r in rows]
        # ramps at max_step_arm (0.1 rad / tick) in both directions instead of jumping
        np.testing.assert_allclose(np.diff(left_elbow), 0.1, atol=1e-6)
        np.testing.assert_allclose(np.diff(right_elbow), -0.1, atol=1e-6)
        assert all(r[F["safety_changed"]] == 1 for r in rows[:8])
        # on the wire: JointGroupCommand "arm" with 6 values; gripper in rad per the generation
        msgs = group_l.snapshot()
        assert all(m.name == "arm" and len(m.cmd) == 6 for m in msgs)
        assert max(m.cmd[2] for m in msgs) <= 1.0 + 1e-6
        steps = np.diff([m.cmd[2] for m in msgs])
        assert steps.max() <= 0.1 + 1e-5 and steps.min() >= -0.1 - 1e-5
        conv = gripper_convention("aloha2")
        wait_for(lambda: any(abs(m.cmd - conv.command_to_joint(1.0)) < 1e-4 for m in single_r.snapshot()), 5.0,
                 what="right gripper opened")
        assert all(m.name == "gripper" for m in single_r.snapshot())
        wait_for(lambda: any(int(d.get("safety_interventions", "0")) > 0 for d in watcher.diag_values(": commander")),
                 3.0, what="safety interventions in diagnostics")

        # a chunk containing NaN (here from action 20 on): refused whole on arrival, none of its actions runs,
        # the running chunk goes on; the rejection is named in /diagnostics
        bad = actions.copy()
        bad[:, 0] = 0.7  # would move the left waist if any of its actions ran
        bad[20:, 0] = np.nan
        n1 = len(watcher.trace)
        chunk_pub.publish(_chunk_msg(bad, robot.node.get_clock().now().nanoseconds * 1e-9, 2))
        wait_for(lambda: any("nonfinite" in d.get("last_chunk_rejected", "")
                             for d in watcher.diag_values(": commander")), 5.0, what="nonfinite in diagnostics")
        rows = watcher.rows()[n1:]
        assert all(r[F["chunk_id"]] != 2 and r[F["hold_code"]] != HOLD_SAFETY for r in rows)
        assert all(abs(r[NF + 0]) < 1e-9 and np.all(np.isfinite(r[NF:])) for r in rows)

        # episode services publish EpisodeEvent for the recorder
        def call(name):
            client = node.create_client(Trigger, f"/commander/{name}")
            assert client.wait_for_service(timeout_sec=10.0)
            fut = client.call_async(Trigger.Request())
            wait_for(fut.done, 10.0, what=name)
            return fut.result()

        started = call("start_episode")
        assert started.success
        stopped = call("stop_episode")
        assert stopped.success and stopped.message == started.message
        evs = episodes.wait(2)
        assert [e.event for e in evs[:2]] == [EpisodeEvent.START, EpisodeEvent.STOP]
        assert evs[0].task == "fold" and evs[0].episode_id == started.message and evs[1].reason == "operator"
        assert not call("stop_episode").success

        # the operator CLI drives the same services
        import subprocess
        import sys

        out = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", "episode", "estop"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "estop: ok" in out.stdout, out.stdout + out.stderr
        n2 = len(watcher.trace)
        watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_ESTOP, 5.0, n2, "e-stop hold")
        assert all(p.alive() for p in procs)


def test_episode_start_twice_at_one_clock_value_is_answered(ros_session):
    """With sim time (lock-step simulator) the clock can stand still between two ~/start_episode calls. The
    second asks the policy for nothing new (the first request covers it); the service must still answer and
    re-plan requests go out once, stamped with the start time."""
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header
    from std_srvs.srv import Trigger

    from cosmos_policy_ros.ros.commander_node import CommanderNode

    node = CommanderNode(parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, True)],
                         context=ros_session.context)
    try:
        requests = Collector(ros_session.make_node("replan_listener"), Header, "/commander/replan_request", 10)
        wait_for_subscribers(node, "/commander/replan_request", timeout=10)
        answers = [node._srv_start(Trigger.Request(), Trigger.Response()) for _ in range(2)]  # no /clock: time 0
        assert all(a.success for a in answers), [a.message for a in answers]
        got = requests.wait(1, 5)
        time.sleep(0.3)
        assert len(requests) == 1 and got[0].frame_id == "episode start" and got[0].stamp.sec == 0
    finally:
        node.destroy_node()
