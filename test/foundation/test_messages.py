"""Generated messages on the wire: our ActionChunk and the robot's interbotix_xs_msgs types."""
import array
import math

import pytest

from cosmos_policy_ros.ros.harness import Collector, NodeProcess, NodeSpec, wait_for, wait_for_publishers, wait_for_subscribers

pytestmark = pytest.mark.ros


def _chunk(chunk_id: int):
    from cosmos_policy_ros.msg import ActionChunk
    from cosmos_policy_ros.core.robot import JOINT_NAMES

    msg = ActionChunk()
    msg.header.stamp.sec = 1700000000
    msg.header.stamp.nanosec = 123456789
    msg.header.frame_id = "aloha"
    msg.chunk_id = chunk_id
    msg.period = 0.04
    msg.horizon = 50
    msg.action_dim = 14
    msg.joint_names = list(JOINT_NAMES)
    msg.positions = array.array("f", [(t * 14 + j) * 0.001 for t in range(50) for j in range(14)])
    msg.value = 0.75
    msg.policy_id = "test-policy"
    return msg


def test_action_chunk_round_trip_between_two_processes(ros_session, repo_root, tmp_path, node_log_dir):
    """An ActionChunk published here crosses a relay node in another process and arrives intact."""
    from cosmos_policy_ros.msg import ActionChunk

    params = tmp_path / "relay.yaml"
    params.write_text("/**:\n  ros__parameters:\n    message_type: cosmos_policy_ros/msg/ActionChunk\n    queue_depth: 20\n")
    spec = NodeSpec(module="cosmos_policy_ros.ros.relay", name="chunk_relay", params_files=[str(params)],
                    remaps={"in": "/test/chunks_in", "out": "/test/chunks_out"})
    node = ros_session.make_node("chunk_round_trip")
    pub = node.create_publisher(ActionChunk, "/test/chunks_in", 20)
    got = Collector(node, ActionChunk, "/test/chunks_out", 20)
    with NodeProcess(spec, node_log_dir) as relay:
        wait_for_subscribers(node, "/test/chunks_in", timeout=30)
        wait_for_publishers(node, "/test/chunks_out", timeout=30)
        sent = [_chunk(i) for i in range(5)]
        for msg in sent:
            pub.publish(msg)
        received = got.wait(5, timeout=20)
        assert relay.alive(), relay.output()
    assert [m.chunk_id for m in received] == [0, 1, 2, 3, 4]
    for a, b in zip(sent, received):
        assert b.header.stamp.sec == a.header.stamp.sec and b.header.stamp.nanosec == a.header.stamp.nanosec
        assert b.header.frame_id == "aloha"
        assert (b.period, b.horizon, b.action_dim) == (0.04, 50, 14)
        assert list(b.joint_names) == list(a.joint_names)
        assert len(b.positions) == 700
        assert list(b.positions) == list(a.positions)  # float32 on both sides: bit-exact
        assert math.isclose(b.value, 0.75) and b.policy_id == "test-policy"


def test_interbotix_commands_are_received(ros_session):
    """The test-only interbotix_xs_msgs build speaks the robot's command types."""
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand

    node = ros_session.make_node("interbotix_types")
    group_pub = node.create_publisher(JointGroupCommand, "/follower_left/commands/joint_group", 10)
    single_pub = node.create_publisher(JointSingleCommand, "/follower_left/commands/joint_single", 10)
    group = Collector(node, JointGroupCommand, "/follower_left/commands/joint_group")
    single = Collector(node, JointSingleCommand, "/follower_left/commands/joint_single")
    wait_for(lambda: group_pub.get_subscription_count() >= 1 and single_pub.get_subscription_count() >= 1, 10,
             what="command subscriptions")
    group_pub.publish(JointGroupCommand(name="arm", cmd=[0.1, -0.2, 0.3, -0.4, 0.5, -0.6]))
    single_pub.publish(JointSingleCommand(name="gripper", cmd=1.25))
    g = group.wait(1)[0]
    s = single.wait(1)[0]
    assert g.name == "arm" and [round(x, 6) for x in g.cmd] == [0.1, -0.2, 0.3, -0.4, 0.5, -0.6]
    assert s.name == "gripper" and s.cmd == pytest.approx(1.25)


def test_relay_without_type_fails_clearly(node_log_dir):
    """A node started with missing parameters exits non-zero and says what is missing."""
    proc = NodeProcess(NodeSpec(module="cosmos_policy_ros.ros.relay", name="bad_relay"), node_log_dir)
    proc.process.wait(60)
    out = proc.output()
    proc.stop()
    assert proc.process.returncode != 0
    assert "message_type" in out
