"""Fixtures for runtime node tests: a synthetic ALOHA (cameras + follower joint states) over real DDS.

The synthetic robot publishes three small camera images and both followers' joint states, with stamps on
the 25 Hz grid (so the test double's plan steps are integers), echoes the commander's commands back as
the measured joint positions (a perfect robot), and can inject every input fault the nodes must handle.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

PERIOD = 0.04
IMG_H, IMG_W = 48, 64


class SyntheticRobot:
    """Publishes cameras (25 Hz) and joint states (50 Hz) from a node of a RosSession; injects faults."""

    CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")

    def __init__(self, session, generation="aloha2", arm=None, name_order=None, extra_joints=()):
        """arm: {side: (6,) start pose}; name_order: {side: permutation of the 9 joints} (the order of names and
        positions in each JointState); extra_joints: (name, value) pairs appended to every JointState."""
        from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState

        from cosmos_policy_ros.core.robot import gripper_convention

        self.conv = gripper_convention(generation)
        self.node = session.make_node("synthetic_robot")
        self.Image, self.JointState = Image, JointState
        self.cam_pubs = {c: self.node.create_publisher(Image, f"/{c}/camera/color/image_rect_raw", qos_profile_sensor_data)
                         for c in self.CAMERAS}
        self.js_pubs = {s: self.node.create_publisher(JointState, f"/follower_{s}/joint_states", 10)  # reliable, like xs_sdk
                        for s in ("left", "right")}
        self._lock = threading.Lock()
        self.arm = {s: np.array((arm or {}).get(s, np.zeros(6)), dtype=np.float64) for s in ("left", "right")}
        self.name_order = dict(name_order or {})
        self.extra_joints = list(extra_joints)
        self.gripper_rad = {s: float(self.conv.command_to_joint(0.5)) for s in ("left", "right")}
        for s in ("left", "right"):
            self.node.create_subscription(JointGroupCommand, f"/follower_{s}/commands/joint_group",
                                          lambda m, s=s: self._on_group(s, m), 10)
            self.node.create_subscription(JointSingleCommand, f"/follower_{s}/commands/joint_single",
                                          lambda m, s=s: self._on_single(s, m), 10)
        # fault knobs
        self.stopped_cameras = set()
        self.stopped_arms = set()
        self.encoding = {c: "rgb8" for c in self.CAMERAS}
        self.size = {c: (IMG_H, IMG_W) for c in self.CAMERAS}
        self.nan_arms = set()
        self.frames = {}
        self._cam_timer = self.node.create_timer(PERIOD, self._publish_cameras)
        self._js_timer = self.node.create_timer(PERIOD / 2, self._publish_joint_states)

    def _on_group(self, side, msg):
        with self._lock:
            self.arm[side] = np.asarray(msg.cmd, dtype=np.float64)

    def _on_single(self, side, msg):
        with self._lock:
            self.gripper_rad[side] = float(msg.cmd)

    def stamp(self):
        """Now, quantised to the 25 Hz grid (plan steps of the test double become integers)."""
        from builtin_interfaces.msg import Time

        t = self.node.get_clock().now().nanoseconds * 1e-9
        ns = int(round(round(t / PERIOD) * PERIOD * 1e9))
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def _frame(self, cam):
        h, w = self.size[cam]
        enc = self.encoding[cam]
        key = (h, w, enc)
        if key not in self.frames:
            ch = 1 if enc == "mono8" else 3
            self.frames[key] = np.full((h, w, ch), 100, np.uint8).tobytes()
        return h, w, enc, self.frames[key]

    def _publish_cameras(self):
        stamp = self.stamp()
        for cam, pub in self.cam_pubs.items():
            if cam in self.stopped_cameras:
                continue
            h, w, enc, data = self._frame(cam)
            msg = self.Image()
            msg.header.stamp = stamp
            msg.height, msg.width, msg.encoding = h, w, enc
            msg.step = len(data) // h
            msg.data = data
            pub.publish(msg)

    def _publish_joint_states(self):
        stamp = self.stamp()
        for side, pub in self.js_pubs.items():
            if side in self.stopped_arms:
                continue
            with self._lock:
                arm = self.arm[side].copy()
                grip = self.gripper_rad[side]
            finger = float(self.conv.unnormalize_finger(self.conv.joint_to_command(grip)))
            pos = list(arm) + [grip, finger, -finger]
            if side in self.nan_arms:
                pos[2] = float("nan")
            msg = self.JointState()
            msg.header.stamp = stamp
            names = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper",
                     "left_finger", "right_finger"]
            order = self.name_order.get(side)
            if order is not None:
                names, pos = [names[i] for i in order], [pos[i] for i in order]
            msg.name = names + [n for n, _ in self.extra_joints]
            msg.position = [float(v) for v in pos] + [float(v) for _, v in self.extra_joints]
            pub.publish(msg)

    def clear_faults(self):
        self.stopped_cameras.clear()
        self.stopped_arms.clear()
        self.nan_arms.clear()
        self.encoding = {c: "rgb8" for c in self.CAMERAS}
        self.size = {c: (IMG_H, IMG_W) for c in self.CAMERAS}


class TraceWatcher:
    """Collects the commander's per-tick trace and /diagnostics and /policy/status."""

    def __init__(self, session):
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from std_msgs.msg import Float64MultiArray

        from cosmos_policy_ros.ros.harness import Collector

        self.node = session.make_node("trace_watcher")
        self.trace = Collector(self.node, Float64MultiArray, "/commander/trace", 500)
        self.diag = Collector(self.node, DiagnosticArray, "/diagnostics", 100)
        self.status = Collector(self.node, DiagnosticStatus, "/policy/status", 500)

    def rows(self, start=0):
        return [np.asarray(m.data) for m in self.trace.snapshot()[start:]]

    def wait_rows(self, predicate, timeout, start=0, what="trace condition"):
        """Wait until some trace row at index >= start satisfies predicate; return its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.rows()
            for i in range(start, len(rows)):
                if predicate(rows[i]):
                    return i
            time.sleep(0.02)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    def diag_values(self, name_part, since=0):
        """Key/value dicts of every /diagnostics status whose name contains name_part."""
        from cosmos_policy_ros.ros.diagnostics import status_values

        out = []
        for arr in self.diag.snapshot()[since:]:
            for st in arr.status:
                if name_part in st.name:
                    d = status_values(st)
                    d["_message"] = st.message
                    out.append(d)
        return out


@pytest.fixture
def synthetic_robot_cls():
    return SyntheticRobot


@pytest.fixture
def trace_watcher_cls():
    return TraceWatcher


def runtime_graph(checkpoint, policy_overrides=None, commander_overrides=None):
    """Node specs for the policy node + commander from the shared graph definition (no sim, no recorder)."""
    from cosmos_policy_ros.ros.graph import graph_nodes

    nodes = graph_nodes("aloha", {"checkpoint": checkpoint, "record": False, "task": "test task"},
                        node_parameters={
                            "policy": {"image_height": IMG_H, "image_width": IMG_W, **(policy_overrides or {})},
                            "commander": dict(commander_overrides or {})})
    return [n.spec for n in nodes]


@pytest.fixture
def runtime_graph_fn():
    return runtime_graph
