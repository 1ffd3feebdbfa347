"""Synthetic ALOHA traffic for recorder tests and the recorder benchmark (real publishers, real messages).

Publishes, at their real rates, what the robot graph publishes during an episode: three 480x640 rgb8 cameras
(30 Hz), both follower joint states in the Interbotix layout (100 Hz), arm + gripper commands for both
followers (25 Hz), ActionChunk (0.5 Hz), value (25 Hz) and diagnostics (1 Hz). Every published value is a
known function of its index, and every publish is logged (topic -> list of (index, time ns)), so a test can
compare a bag or a converted episode with what was sent. Not a test double: real messages over real DDS.
"""
from __future__ import annotations

import array
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
ARMS = ("follower_left", "follower_right")


def camera_topic(cam: str) -> str:
    return f"/{cam}/camera/color/image_rect_raw"


def joint_positions(arm_index: int, k: int) -> List[float]:
    """Interbotix JointState.position of follower ``arm_index`` at sample ``k``: 6 arm joints, gripper, fingers."""
    base = 0.3 * arm_index
    arm = [base + 0.2 * math.sin(0.013 * k + j) for j in range(6)]
    finger = 0.045 + 0.012 * (0.5 + 0.5 * math.sin(0.021 * k + arm_index))  # metres, inside aloha2 range
    return arm + [1.0 + 0.5 * math.sin(0.017 * k), finger, -finger]


def arm_command(arm_index: int, k: int) -> List[float]:
    """JointGroupCommand 'arm' values (6) of tick ``k`` (as float32, like the wire)."""
    return [float(np.float32(0.25 * arm_index + 0.15 * math.cos(0.04 * k + j))) for j in range(6)]


def gripper_command(arm_index: int, k: int) -> float:
    """JointSingleCommand 'gripper' value (rad) of tick ``k`` (as float32)."""
    return float(np.float32(0.7 + 0.8 * (0.5 + 0.5 * math.sin(0.05 * k + arm_index))))


def frame_index(image: np.ndarray) -> int:
    """Index stamped into a synthetic frame's first three pixels' red channel."""
    return int(image[0, 0, 0]) + 256 * int(image[0, 1, 0]) + 65536 * int(image[0, 2, 0])


@dataclass
class TrafficLog:
    """topic -> [(index, publish time ns)]"""

    published: Dict[str, List[Tuple[int, int]]] = field(default_factory=dict)

    def count(self, topic: str) -> int:
        return len(self.published.get(topic, []))


class RobotTraffic:
    """Publish the robot graph's traffic from a background thread until :meth:`stop`."""

    def __init__(self, node, *, image_hz: float = 30.0, joint_hz: float = 100.0, command_hz: float = 25.0,
                 height: int = 480, width: int = 640, depth: int = 50, keep_all: bool = False):
        from diagnostic_msgs.msg import DiagnosticArray
        from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
        from rclpy.qos import HistoryPolicy, QoSProfile
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float32

        from cosmos_policy_ros.msg import ActionChunk

        self.node = node
        self.log = TrafficLog()
        self.rates = {"image": image_hz, "joint": joint_hz, "command": command_hz}
        self.h, self.w = height, width
        # keep_all: publish() waits for a lagging reader instead of overwriting unacknowledged samples.
        qos = QoSProfile(depth=depth, history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST)
        self.Image, self.JointState = Image, JointState
        self.JointGroupCommand, self.JointSingleCommand = JointGroupCommand, JointSingleCommand
        self.Float32, self.ActionChunk, self.DiagnosticArray = Float32, ActionChunk, DiagnosticArray
        self.cam_pubs = {c: node.create_publisher(Image, camera_topic(c), qos) for c in CAMERAS}
        self.js_pubs = [node.create_publisher(JointState, f"/{a}/joint_states", qos) for a in ARMS]
        self.group_pubs = [node.create_publisher(JointGroupCommand, f"/{a}/commands/joint_group", qos) for a in ARMS]
        self.single_pubs = [node.create_publisher(JointSingleCommand, f"/{a}/commands/joint_single", qos) for a in ARMS]
        self.chunk_pub = node.create_publisher(ActionChunk, "/action_chunk", qos)
        self.value_pub = node.create_publisher(Float32, "/policy/value", qos)
        self.diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", qos)
        # Pre-rendered frames (distinct content per camera); the index goes into the first 3 pixels.
        rng = np.random.default_rng(0)
        self._frames = {c: rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for c in CAMERAS}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.publish_errors: List[str] = []

    def topics(self) -> List[str]:
        return ([camera_topic(c) for c in CAMERAS] + [f"/{a}/joint_states" for a in ARMS]
                + [f"/{a}/commands/joint_group" for a in ARMS] + [f"/{a}/commands/joint_single" for a in ARMS]
                + ["/action_chunk", "/policy/value", "/diagnostics"])

    def _stamp(self, msg, t_ns: int) -> None:
        msg.header.stamp.sec = t_ns // 1_000_000_000
        msg.header.stamp.nanosec = t_ns % 1_000_000_000

    def _note(self, topic: str, k: int, t_ns: int) -> None:
        self.log.published.setdefault(topic, []).append((k, t_ns))

    def _publish_image(self, cam: str, k: int) -> None:
        frame = self._frames[cam]
        frame[0, 0, 0], frame[0, 1, 0], frame[0, 2, 0] = k % 256, (k // 256) % 256, k // 65536
        msg = self.Image()
        t = self.node.get_clock().now().nanoseconds
        self._stamp(msg, t)
        msg.header.frame_id = cam
        msg.height, msg.width, msg.encoding, msg.step = self.h, self.w, "rgb8", self.w * 3
        msg.data = frame.tobytes()  # bytes assignment is fast; a numpy array here costs ~40 ms
        self.cam_pubs[cam].publish(msg)
        self._note(camera_topic(cam), k, t)

    def _publish_joints(self, k: int) -> None:
        for i, pub in enumerate(self.js_pubs):
            msg = self.JointState()
            t = self.node.get_clock().now().nanoseconds
            self._stamp(msg, t)
            msg.name = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper",
                        "left_finger", "right_finger"]
            msg.position = joint_positions(i, k)  # velocity/effort empty: the padding case rosbags rejects
            pub.publish(msg)
            self._note(f"/{ARMS[i]}/joint_states", k, t)

    def _publish_commands(self, k: int) -> None:
        for i in range(2):
            g = self.JointGroupCommand(name="arm")
            g.cmd = array.array("f", arm_command(i, k))
            t = self.node.get_clock().now().nanoseconds
            self.group_pubs[i].publish(g)
            self._note(f"/{ARMS[i]}/commands/joint_group", k, t)
            s = self.JointSingleCommand(name="gripper", cmd=gripper_command(i, k))
            t = self.node.get_clock().now().nanoseconds
            self.single_pubs[i].publish(s)
            self._note(f"/{ARMS[i]}/commands/joint_single", k, t)
        v = self.Float32(data=float(k % 100) / 100.0)
        self.value_pub.publish(v)
        self._note("/policy/value", k, self.node.get_clock().now().nanoseconds)
        if k % 50 == 0:
            c = self.ActionChunk(chunk_id=k // 50, period=0.04, horizon=50, action_dim=14, policy_id="traffic")
            c.positions = array.array("f", np.zeros(700, np.float32).tobytes())
            self.chunk_pub.publish(c)
            self._note("/action_chunk", k // 50, self.node.get_clock().now().nanoseconds)
        if k % 25 == 0:
            d = self.DiagnosticArray()
            self.diag_pub.publish(d)
            self._note("/diagnostics", k // 25, self.node.get_clock().now().nanoseconds)

    def _run(self, duration: float) -> None:
        # The schedule of ``duration`` seconds is published whole: a thread starved by a busy machine falls behind
        # and catches up (late, in bursts) instead of stopping early, so every run publishes the same messages.
        periods = {"image": 1.0 / self.rates["image"], "joint": 1.0 / self.rates["joint"],
                   "command": 1.0 / self.rates["command"]}
        counters = {k: 0 for k in periods}
        t0 = time.monotonic()
        nxt = {k: t0 for k in periods}
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                due = {k: v for k, v in nxt.items() if v - t0 < duration - 1e-9}
                if not due:
                    break
                kind = min(due, key=due.get)
                if nxt[kind] > now:
                    time.sleep(min(nxt[kind] - now, 0.002))
                    continue
                k = counters[kind]
                if kind == "image":
                    for cam in CAMERAS:
                        self._publish_image(cam, k)
                elif kind == "joint":
                    self._publish_joints(k)
                else:
                    self._publish_commands(k)
                counters[kind] += 1
                nxt[kind] += periods[kind]  # fixed schedule: catch up after a hiccup, never drift
        except Exception as exc:  # surfaced by the test
            self.publish_errors.append(repr(exc))

    def start(self, duration: float) -> None:
        """Publish ``duration`` seconds of traffic at the nominal rates (all of it, however late; see _run)."""
        self._thread = threading.Thread(target=self._run, args=(duration,), daemon=True)
        self._thread.start()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self.join(10.0)


def expected_steps(cmd_times, obs_times, fps: float = 25.0):
    """The converter's documented sampling rule, written out by brute force (independent of its code).

    cmd_times: stream name -> sorted command times (s, relative to the bag start); obs_times: stream name ->
    sorted observation times. Returns a list of steps, each {"obs": {stream: index}, "cmd": {stream: index or
    -1}}; steps before every observation stream has a sample are left out, as the converter drops them.
    """
    dt = 1.0 / fps
    all_cmds = sorted(t for ts in cmd_times.values() for t in ts)
    t0 = all_cmds[0] - dt / 2
    steps = []
    k = 0
    while True:
        start = t0 + k * dt
        end = start + dt
        if start > all_cmds[-1]:
            break
        first = [c for c in all_cmds if start <= c < end]
        o = min(first[0], start + dt / 2) if first else start + dt / 2
        obs = {s: max([i for i, t in enumerate(ts) if t <= o], default=-1) for s, ts in obs_times.items()}
        cmd = {s: max([i for i, t in enumerate(ts) if t < end], default=-1) for s, ts in cmd_times.items()}
        if min(obs.values()) >= 0:
            steps.append({"obs": obs, "cmd": cmd, "o": o})
        k += 1
    return steps
