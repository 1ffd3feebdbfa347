"""Sim bridge: the simulated ALOHA behind the real robot's topics, over real DDS with real Interbotix messages."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cosmos_policy_ros.core import robot
from cosmos_policy_ros.ros.sim_bridge import BridgeConfig, CameraSchedule, CommandTarget, joint_names

CAMS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
CAM_TOPIC = "/{}/camera/color/image_rect_raw"


def _command_publishers(node) -> dict:
    """{"left_group", "left_single", "right_group", "right_single"}: a commander's four Interbotix publishers,
    returned once the bridge subscribes to each."""
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand

    from cosmos_policy_ros.ros.harness import wait_for_subscribers

    pubs = {}
    for s in ("left", "right"):
        pubs[f"{s}_group"] = node.create_publisher(JointGroupCommand, f"/follower_{s}/commands/joint_group", 10)
        pubs[f"{s}_single"] = node.create_publisher(JointSingleCommand, f"/follower_{s}/commands/joint_single", 10)
        wait_for_subscribers(node, f"/follower_{s}/commands/joint_group")
        wait_for_subscribers(node, f"/follower_{s}/commands/joint_single")
    return pubs


# ---------------------------------------------------------------------- plain logic, no rclpy.init
def test_command_target_applies_valid_and_rejects_bad_commands():
    conv = robot.gripper_convention("aloha2")
    start = np.arange(14, dtype=float)
    t = CommandTarget(conv, start)
    assert t.apply_group("right", "arm", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) is None
    np.testing.assert_allclose(t.action[7:13], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert t.apply_single("left", "gripper", conv.joint_open) is None
    assert t.action[6] == pytest.approx(1.0)
    before = t.action.copy()
    assert "only 'arm'" in t.apply_group("left", "all", [0.0] * 6)
    assert "expected 6 values, got 5" in t.apply_group("left", "arm", [0.0] * 5)
    assert "non-finite" in t.apply_group("left", "arm", [0.0, math.nan, 0, 0, 0, 0])
    assert "only 'gripper'" in t.apply_single("left", "waist", 0.3)
    assert "non-finite" in t.apply_single("right", "gripper", math.inf)
    np.testing.assert_array_equal(t.action, before)  # every rejected command left the target alone
    assert t.rejected == 5 and t.received == {"left": 1, "right": 1}


def test_command_batches_complete_in_any_order():
    conv = robot.gripper_convention("aloha2")
    t = CommandTarget(conv, np.zeros(14))
    kinds = ("left_joint_group", "right_joint_group")
    t.apply_group("left", "arm", [0.0] * 6)
    t.apply_group("left", "arm", [0.1] * 6)  # next batch's left arrives before this batch's right
    assert not t.take_batch(kinds)
    t.apply_group("right", "arm", [0.0] * 6)
    assert t.take_batch(kinds) and not t.take_batch(kinds)
    t.apply_group("right", "bogus", [0.0] * 6)  # rejected commands do not count
    assert not t.take_batch(kinds)
    t.apply_group("right", "arm", [0.0] * 6)
    assert t.take_batch(kinds)
    t.reset(np.zeros(14))
    t.apply_group("right", "arm", [0.0] * 6)
    assert not t.take_batch(kinds)


def test_command_target_still_rule_keeps_the_reset_targets_until_a_command_moves():
    """After a reset, a commander holding the reported pose must not replace the start pose's own targets
    (MuJoCo's arms would sag further); the first command that moves ends the rule for every joint."""
    conv = robot.gripper_convention("aloha2")
    start = np.linspace(0.0, 1.3, 14)  # the targets the reset holds
    reported = start + 0.001  # where the arms rest, a little below their targets
    t = CommandTarget(conv, np.zeros(14), still_tolerance=0.002)
    t.reset(start, still_pose=reported)
    assert t.still
    assert t.apply_group("left", "arm", reported[0:6]) is None
    assert t.apply_single("right", "gripper", float(conv.command_to_joint(reported[13]))) is None
    np.testing.assert_array_equal(t.action, start)
    assert t.kept_still == 2 and t.counts["left_joint_group"] == 1  # kept commands still count for batches
    moved = reported[7:13] + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.05])
    assert t.apply_group("right", "arm", moved) is None
    assert not t.still
    np.testing.assert_allclose(t.action[7:13], moved)
    assert t.apply_group("left", "arm", reported[0:6]) is None  # now applied as sent
    np.testing.assert_allclose(t.action[0:6], reported[0:6])
    t.reset(start)  # no still pose: plain hold
    assert not t.still
    t.apply_group("left", "arm", reported[0:6])
    np.testing.assert_allclose(t.action[0:6], reported[0:6])
    with pytest.raises(ValueError, match="still_tolerance"):
        CommandTarget(conv, np.zeros(14), still_tolerance=-1.0)


def test_camera_schedule_counts_frames_in_sim_time():
    sched = CameraSchedule(30.0)
    frames = sum(sched.due((k + 1) * 0.02) for k in range(50))  # 1 s of 50 Hz physics
    assert frames == 30
    sched.reset()
    frames = sum(sched.due((k + 1) * 0.02) for k in range(7))
    assert frames == math.floor(7 * 0.02 * 30 + 1e-9)


def test_bridge_config_validation():
    with pytest.raises(ValueError, match="expected mode"):
        BridgeConfig(mode="fast")
    with pytest.raises(ValueError, match="unknown ALOHA generation"):
        BridgeConfig(generation="aloha9")
    with pytest.raises(ValueError, match="expected cameras"):
        BridgeConfig(cameras=("cam_top",))
    with pytest.raises(ValueError, match="reset_hold"):
        BridgeConfig(reset_hold=-1.0)
    with pytest.raises(ValueError, match="still_tolerance"):
        BridgeConfig(still_tolerance=math.nan)
    assert joint_names() == list(robot.JS_NAMES) and joint_names("x/")[0] == "x/waist"


# ---------------------------------------------------------------------- over DDS
def _call(node, client, request, timeout=30.0):
    from cosmos_policy_ros.ros.harness import wait_for

    wait_for(lambda: client.wait_for_service(timeout_sec=0.1), timeout, what=f"service {client.srv_name}")
    future = client.call_async(request)
    wait_for(future.done, timeout, what=f"response from {client.srv_name}")
    return future.result()


@pytest.mark.ros
def test_lockstep_bridge_follows_interbotix_commands(ros_session):
    """In-process bridge in lock-step: commands reach the physics, cameras at 30 Hz sim time, Interbotix layout."""
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image, JointState

    from cosmos_policy_ros.msg import SimStatus
    from cosmos_policy_ros.ros.harness import Collector, wait_for_subscribers
    from cosmos_policy_ros.ros.sim_bridge import SimBridgeNode
    from cosmos_policy_ros.srv import SimReset, SimStep

    bridge = SimBridgeNode(context=ros_session.context, parameter_overrides=[
        Parameter("mode", value="lockstep"), Parameter("seed", value=2), Parameter("camera_rate_hz", value=30.0)])
    ros_session.add_node(bridge)
    node = ros_session.make_node("fake_commander")
    deep = QoSProfile(depth=200)
    images = {c: Collector(node, Image, CAM_TOPIC.format(c), deep) for c in CAMS}
    js = {s: Collector(node, JointState, f"/follower_{s}/joint_states", deep) for s in ("left", "right")}
    status = Collector(node, SimStatus, "/sim_bridge/status", deep)
    group = {s: node.create_publisher(JointGroupCommand, f"/follower_{s}/commands/joint_group", 10) for s in ("left", "right")}
    single = {s: node.create_publisher(JointSingleCommand, f"/follower_{s}/commands/joint_single", 10) for s in ("left", "right")}
    step = node.create_client(SimStep, "/sim_bridge/step")
    reset = node.create_client(SimReset, "/sim_bridge/reset_seed")
    for s in ("left", "right"):
        wait_for_subscribers(node, f"/follower_{s}/commands/joint_group")
        wait_for_subscribers(node, f"/follower_{s}/commands/joint_single")

    res = _call(node, reset, SimReset.Request(seed=-1))  # negative: the `seed` parameter
    assert res.success and res.seed == 2
    for c in CAMS:
        images[c].wait(1)  # the reset publishes one observation at step 0
    start_js = js["left"].wait(1)[-1]
    assert list(start_js.name) == list(robot.JS_NAMES)
    assert len(start_js.position) == 9
    start = np.array(_call(node, step, SimStep.Request(steps=0)).applied_action)
    assert start.shape == (14,)

    # Commander-like commands: left arm to a new pose, right gripper open (rad, aloha2 convention).
    conv = robot.gripper_convention("aloha2")
    arm_target = start[0:6] + np.array([0.25, -0.15, 0.2, 0.0, 0.2, 0.3])
    group["left"].publish(JointGroupCommand(name="arm", cmd=arm_target.astype(np.float32).tolist()))
    single["right"].publish(JointSingleCommand(name="gripper", cmd=float(conv.joint_open)))
    group["right"].publish(JointGroupCommand(name="arm", cmd=[0.0] * 5))  # wrong length: rejected
    single["left"].publish(JointSingleCommand(name="wrist_angle", cmd=0.0))  # wrong name: rejected
    expected = start.copy()
    expected[0:6] = arm_target.astype(np.float32)
    expected[13] = 1.0

    # Commands arrive asynchronously: zero-step calls report the held target without moving the physics.
    from cosmos_policy_ros.ros.harness import wait_for

    wait_for(lambda: np.allclose(_call(node, step, SimStep.Request(steps=0)).applied_action, expected, atol=1e-6),
             10.0, what="commands applied")
    n_js_before = len(js["left"])
    frames_before = {c: len(images[c]) for c in CAMS}
    total = 0
    for _ in range(10):  # 10 x 5 steps = 1 s of simulated time
        res = _call(node, step, SimStep.Request(steps=5))
        assert res.success, res.message
        total += 5
    assert res.step == 50 and abs(res.sim_time - 1.0) < 1e-9 and not res.episode_end

    # exactly 30 frames per camera in 1 s of sim time at 30 Hz; one joint state per physics step
    for c in CAMS:
        msgs = images[c].wait(frames_before[c] + 30)
        assert len(msgs) == frames_before[c] + 30
        m = msgs[-1]
        assert (m.height, m.width, m.encoding, m.step) == (480, 640, "rgb8", 640 * 3)
        assert len(m.data) == 480 * 640 * 3
    msgs = js["left"].wait(n_js_before + 50)
    last_left = msgs[-1]
    assert (last_left.header.stamp.sec, last_left.header.stamp.nanosec) == (1, 0)  # stamps are sim time
    last_right = js["right"].wait(n_js_before + 50)[-1]

    # the commanded arm target is reached in the physics; the gripper opened
    np.testing.assert_allclose(np.array(last_left.position[0:6]), arm_target, atol=0.03)
    q14 = robot.qpos_from_joint_states(last_left.position, last_right.position, conv)
    assert q14[13] > 0.9
    assert last_right.position[robot.JS_RIGHT_FINGER] == pytest.approx(-last_right.position[robot.JS_LEFT_FINGER])
    st = status.wait(1)[-1]
    assert st.step == 50 and st.task == "transfer_cube" and st.seed == 2 and not st.episode_end
    assert bridge.target.rejected == 2


@pytest.mark.ros
def test_lockstep_steps_per_command_batch(ros_session):
    """steps_per_command_batch=2: each complete set of the four commander messages advances 40 ms of physics."""
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile

    from cosmos_policy_ros.msg import SimStatus
    from cosmos_policy_ros.ros.harness import Collector, wait_for
    from cosmos_policy_ros.ros.sim_bridge import SimBridgeNode

    bridge = SimBridgeNode(context=ros_session.context, parameter_overrides=[
        Parameter("mode", value="lockstep"), Parameter("steps_per_command_batch", value=2),
        Parameter("image_height", value=48), Parameter("image_width", value=64), Parameter("publish_clock", value=True)])
    ros_session.add_node(bridge)
    node = ros_session.make_node("commander_like")
    from rosgraph_msgs.msg import Clock

    status = Collector(node, SimStatus, "/sim_bridge/status", QoSProfile(depth=200))
    clock = Collector(node, Clock, "/clock", QoSProfile(depth=200))
    pubs = _command_publishers(node)
    start = bridge.sim.qpos14()
    conv = robot.gripper_convention("aloha2")
    for _ in range(10):
        for s, o in (("left", 0), ("right", 7)):
            pubs[f"{s}_group"].publish(JointGroupCommand(name="arm", cmd=start[o:o + 6].tolist()))
            pubs[f"{s}_single"].publish(JointSingleCommand(name="gripper", cmd=float(conv.command_to_joint(0.5))))
    wait_for(lambda: bridge.sim.step_count == 20, 20.0, what="20 physics steps from 10 command batches")
    wait_for(lambda: len(clock) > 0 and clock.snapshot()[-1].clock.nanosec == 400_000_000, 10.0,
             what="/clock at 0.4 s of simulated time")
    # an incomplete batch (no right gripper command) does not advance the physics
    pubs["left_group"].publish(JointGroupCommand(name="arm", cmd=start[0:6].tolist()))
    pubs["right_group"].publish(JointGroupCommand(name="arm", cmd=start[7:13].tolist()))
    pubs["left_single"].publish(JointSingleCommand(name="gripper", cmd=float(conv.command_to_joint(0.5))))
    wait_for(lambda: bridge.target.counts["left_joint_single"] == 11, 10.0, what="partial batch received")
    assert bridge.sim.step_count == 20
    wait_for(lambda: len(status) > 0 and status.snapshot()[-1].step == 20, 10.0, what="status at step 20")


@pytest.mark.ros
def test_lockstep_scene_stays_at_rest_while_a_commander_holds_the_measured_pose(ros_session):
    """What the policy's first observation shows: a commander holding where the joint states say the arms are
    (as ours does at episode start) leaves the reset scene as reset, camera views included; the first command
    that moves drives the arms."""
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image, JointState

    from cosmos_policy_ros.ros.harness import Collector, wait_for
    from cosmos_policy_ros.ros.sim_bridge import SimBridgeNode
    from cosmos_policy_ros.srv import SimReset

    bridge = SimBridgeNode(context=ros_session.context, parameter_overrides=[
        Parameter("mode", value="lockstep"), Parameter("steps_per_command_batch", value=2), Parameter("seed", value=7),
        Parameter("image_height", value=48), Parameter("image_width", value=64), Parameter("camera_rate_hz", value=25.0)])
    ros_session.add_node(bridge)
    node = ros_session.make_node("holding_commander")
    deep = QoSProfile(depth=200)
    js = {s: Collector(node, JointState, f"/follower_{s}/joint_states", deep) for s in ("left", "right")}
    wrist = Collector(node, Image, CAM_TOPIC.format("cam_right_wrist"), deep)
    pubs = _command_publishers(node)
    res = _call(node, node.create_client(SimReset, "/sim_bridge/reset_seed"), SimReset.Request(seed=7))
    assert res.success, res.message  # publishes the reset's observation (the same as at start-up)
    first = {s: js[s].wait(1)[-1] for s in ("left", "right")}
    first_frame = np.frombuffer(bytes(wrist.wait(1)[0].data), np.uint8)
    for k in range(25):  # 1 s of holding at the measured pose, batch by batch
        for s in ("left", "right"):
            pos = first[s].position
            pubs[f"{s}_group"].publish(JointGroupCommand(name="arm", cmd=list(pos[0:6])))
            pubs[f"{s}_single"].publish(JointSingleCommand(name="gripper", cmd=float(pos[robot.JS_GRIPPER])))
        wait_for(lambda: bridge.sim.step_count == 2 * (k + 1), 20.0, what=f"physics steps of command batch {k + 1}")
    wait_for(lambda: len(wrist) >= 26, 10.0, what="25 more wrist frames")
    for s in ("left", "right"):
        wait_for(lambda: len(js[s]) >= 51, 10.0, what=f"{s} joint states of all 50 steps")
    for s in ("left", "right"):
        # micro-settling only (~3e-6 rad); holding the measured pose without the rule sags the wrist ~9e-3 rad
        np.testing.assert_allclose(js[s].snapshot()[-1].position, first[s].position, atol=1e-4)
    last_frame = np.frombuffer(bytes(wrist.snapshot()[-1].data), np.uint8)
    assert np.abs(last_frame.astype(int) - first_frame).mean() < 0.1
    assert bridge.target.kept_still == 100
    # the first command that moves ends the rule: the right wrist turns
    pos = list(first["right"].position[0:6])
    pos[5] += 0.2
    for k in range(10):
        pubs["right_group"].publish(JointGroupCommand(name="arm", cmd=pos))
        pubs["left_group"].publish(JointGroupCommand(name="arm", cmd=list(first["left"].position[0:6])))
        for s in ("left", "right"):
            pubs[f"{s}_single"].publish(JointSingleCommand(name="gripper", cmd=float(first[s].position[robot.JS_GRIPPER])))
        wait_for(lambda: bridge.sim.step_count == 52 + 2 * k, 20.0, what=f"physics steps of moving batch {k + 1}")
    assert not bridge.target.still
    wait_for(lambda: abs(js["right"].snapshot()[-1].position[5] - pos[5]) < 0.05, 10.0,
             what="the right wrist at its new target in the joint states")  # they arrive after the steps


@pytest.mark.ros
def test_bridge_subprocess_realtime_with_params_file(ros_session, repo_root, node_log_dir):
    """The node as its own process, configured from config/sim_bridge.yaml, in real time on the wall clock."""
    import time

    from interbotix_xs_msgs.msg import JointGroupCommand
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image, JointState
    from std_srvs.srv import Trigger

    from cosmos_policy_ros.msg import SimStatus
    from cosmos_policy_ros.ros.harness import Collector, NodeProcess, NodeSpec, wait_for, wait_for_subscribers

    spec = NodeSpec(module="cosmos_policy_ros.ros.sim_bridge", name="sim_bridge",
                    params_files=[str(repo_root / "config" / "sim_bridge.yaml")],
                    parameters={"seed": 4, "image_height": 240, "image_width": 320})
    with NodeProcess(spec, node_log_dir) as proc:
        node = ros_session.make_node("observer")
        deep = QoSProfile(depth=100)
        cam = Collector(node, Image, CAM_TOPIC.format("cam_high"), deep)
        wrist = Collector(node, Image, CAM_TOPIC.format("cam_right_wrist"), deep)
        js = Collector(node, JointState, "/follower_right/joint_states", deep)
        status = Collector(node, SimStatus, "/sim_bridge/status", deep)
        try:
            cam.wait(1, timeout=60.0)
            js.wait(1, timeout=30.0)  # each subscription matches on its own: start counting once both flow
        except TimeoutError:
            raise AssertionError("no camera frames or joint states; node output:\n" + proc.output())
        n_cam, n_js, t0 = len(cam), len(js), time.monotonic()
        time.sleep(2.0)
        dt = time.monotonic() - t0
        cam_hz, js_hz = (len(cam) - n_cam) / dt, (len(js) - n_js) / dt
        # loose: 2 shared cores; nominal 30 Hz cameras, 50 Hz joint states
        assert 5.0 <= cam_hz <= 36.0, f"cam_high at {cam_hz:.1f} Hz"
        assert 20.0 <= js_hz <= 60.0, f"joint states at {js_hz:.1f} Hz"
        img = cam.snapshot()[-1]
        assert (img.height, img.width, img.encoding) == (240, 320, "rgb8")
        assert len(wrist) > 0
        msg = js.snapshot()[-1]
        assert list(msg.name) == list(robot.JS_NAMES) and len(msg.position) == 9

        # a command moves the right waist in real time
        pub = node.create_publisher(JointGroupCommand, "/follower_right/commands/joint_group", 10)
        wait_for_subscribers(node, "/follower_right/commands/joint_group")
        target = list(msg.position[0:6])
        target[0] += 0.3
        pub.publish(JointGroupCommand(name="arm", cmd=target))
        wait_for(lambda: abs(js.snapshot()[-1].position[0] - target[0]) < 0.03, 20.0, what="right waist at target")

        # lock-step stepping is refused in real-time mode
        from cosmos_policy_ros.srv import SimStep

        res = _call(node, node.create_client(SimStep, "/sim_bridge/step"), SimStep.Request(steps=5))
        assert not res.success and "lockstep" in res.message

        # ~/reset (Trigger) restarts the episode at step 0 with the seed parameter
        st = status.wait(1)[-1]
        assert st.step > 0 and st.seed == 4
        client = node.create_client(Trigger, "/sim_bridge/reset")
        res = _call(node, client, Trigger.Request())
        assert res.success, res.message
        wait_for(lambda: status.snapshot()[-1].episode == 1, 10.0, what="status of the new episode")
        assert abs(js.snapshot()[-1].position[0] - msg.position[0]) < 0.05, "arm not back at the start pose"

        # for reset_hold (0.5 s) a commander still sending the old pose cannot pull the new episode away;
        # afterwards commands drive the arm again
        res = _call(node, client, Trigger.Request())
        t_reset = time.monotonic()
        assert res.success, res.message
        while time.monotonic() < t_reset + 0.3:
            pub.publish(JointGroupCommand(name="arm", cmd=target))
            time.sleep(0.02)
        time.sleep(0.1)
        assert abs(js.snapshot()[-1].position[0] - msg.position[0]) < 0.05, "old command applied within reset_hold"
        deadline = time.monotonic() + 20.0
        while abs(js.snapshot()[-1].position[0] - target[0]) > 0.03:
            assert time.monotonic() < deadline, "commands ignored after reset_hold"
            pub.publish(JointGroupCommand(name="arm", cmd=target))
            time.sleep(0.02)
        assert proc.alive()
    assert proc.process.returncode in (0, -2), proc.output()
