"""Sim bridge node: the simulated ALOHA (cosmos_policy_ros.sim) behind the real robot's ROS interface.

Publishes what the real ALOHA publishes, on the same topics (all names are parameters):
- ``/follower_{left,right}/joint_states`` (sensor_msgs/JointState, Interbotix layout: position[0:6] arm rad,
  [6] gripper joint rad, [7] left finger m, [8] right finger m (negative, mirrored), names ``waist`` ...
  ``right_finger`` with an optional prefix), after every 50 Hz physics step;
- ``/<cam>/camera/color/image_rect_raw`` (sensor_msgs/Image rgb8, default 480x640) for cam_high (the sim's top
  camera), cam_left_wrist, cam_right_wrist at ``camera_rate_hz`` of simulated time;
- ``~/status`` (cosmos_policy_ros/SimStatus): reward, success, step, episode end, after every step.

Consumes the Interbotix commands the commander sends: ``/follower_{left,right}/commands/joint_group``
(interbotix_xs_msgs/JointGroupCommand, name "arm", 6 joint targets rad) and ``.../joint_single``
(JointSingleCommand, name "gripper", gripper joint target rad, mapped to the sim's normalised gripper through
the ``generation``'s GripperConvention). Anything else (other names, wrong lengths, NaN) is rejected with a
logged warning and the previous target is held.

Modes (parameter ``mode``):
- ``realtime``: physics advances with the wall clock at 50 Hz (a timer; missed ticks are caught up, at most
  ``max_catchup_steps`` per tick, so sim time tracks wall time). Cameras render on their own thread every
  1/camera_rate_hz wall seconds from a copy of the state (rendering never delays physics or joint states;
  an overloaded CPU lowers the frame rate, not the physics rate). Stamps are the node clock.
- ``lockstep``: physics advances only inside the ``~/step`` service (cosmos_policy_ros/srv/SimStep, N steps)
  and, when ``steps_per_command_batch`` > 0, by that many steps each time one complete command batch arrived
  (one valid message of every kind in ``command_batch``, in any order, since the last batch; 2 steps per batch
  keeps the physics in step with a 25 Hz commander whatever the CPU speed).
  Every step applies the latest received targets, then publishes joint states + status; a camera frame set is
  published whenever the simulated time reaches the next camera period (k / camera_rate_hz), so N steps
  publish exactly floor(N * 0.02 * camera_rate_hz) frames per camera after a reset. All stamps are simulated
  time (continuous across resets); with ``publish_clock`` the bridge also publishes /clock so nodes with
  use_sim_time follow it. Deterministic for a given seed and command sequence.

Both modes: a reset (startup, ``~/reset`` std_srvs/Trigger with the ``seed`` parameter, or ``~/reset_seed``
SimReset) places the objects from the seed, sets every target to the start pose and immediately publishes one
observation (joint states, one frame per camera, status at step 0). Until the first command that moves more
than ``still_tolerance`` from the reported pose, the scene stays exactly as reset (see the parameter). After ``max_steps`` the episode ends:
physics freezes (joint states and status keep coming in real-time mode) until a reset, or the next seed
starts when ``auto_reset`` is true.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import mujoco
import numpy as np
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.time import Time
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from cosmos_policy_ros.core import robot
from cosmos_policy_ros.msg import SimStatus
from cosmos_policy_ros.sim.aloha_sim import (CONTROL_DT, DEFAULT_CAMERA_MAP, TASKS, AlohaSim, FastRenderer,
                                             follower_joint_positions, follower_joint_velocities)
from cosmos_policy_ros.srv import SimReset, SimStep
from cosmos_policy_ros.ros.node_main import run_node

SIDES = ("left", "right")
DEFAULT_CAMERA_TOPICS = {cam: f"/{cam}/camera/color/image_rect_raw"
                         for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist", "cam_low")}
MODES = ("realtime", "lockstep")
COMMAND_KINDS = ("left_joint_group", "right_joint_group", "left_joint_single", "right_joint_single")


# ---------------------------------------------------------------------- plain logic (no rclpy.init needed)
class CommandTarget:
    """The 14-d action the bridge holds, updated from Interbotix commands; validation lives here.

    apply_group / apply_single return None when applied, else the reason the command was rejected.
    """

    def __init__(self, convention: robot.GripperConvention, initial: Sequence[float], still_tolerance: float = 0.0):
        self.convention = convention
        self.action = np.asarray(initial, dtype=np.float64).copy()
        if self.action.shape != (robot.ACTION_DIM,):
            raise ValueError(f"expected an initial action of shape ({robot.ACTION_DIM},), got {self.action.shape}")
        if not (still_tolerance >= 0 and math.isfinite(still_tolerance)):
            raise ValueError(f"expected still_tolerance >= 0, got {still_tolerance}")
        self.still_tolerance = float(still_tolerance)
        self._still: Optional[np.ndarray] = None  # the pose reported at reset, while the still rule holds
        #: commands since the last reset that kept the reset's own targets (the still rule)
        self.kept_still = 0
        self.received = {"left": 0, "right": 0}
        self.rejected = 0
        #: valid commands applied per kind ("left_joint_group", "right_joint_single", ...) since the last reset
        self.counts: Dict[str, int] = {k: 0 for k in COMMAND_KINDS}
        self.batches = 0

    def take_batch(self, required: Sequence[str]) -> bool:
        """True (once per batch) when every kind in ``required`` has one more command than batches taken.

        Counting per kind (not a set cleared per batch) keeps batches intact when messages of different
        topics arrive out of order.
        """
        if required and min(self.counts[k] for k in required) > self.batches:
            self.batches += 1
            return True
        return False

    def reset(self, action: Sequence[float], still_pose: Optional[Sequence[float]] = None) -> None:
        """Hold ``action`` (e.g. the start pose after a reset); command batches start again from zero.

        still_pose: the (14,) pose the joint states report after the reset. Until the first command farther
        than ``still_tolerance`` from it, commands within it (a commander holding the measured pose) keep
        ``action`` instead of replacing it, so a scene at rest stays exactly at rest (see
        :meth:`AlohaSim.start_action`): the way a real servo told to stay where it is does not move.
        """
        self.action[:] = action
        self.counts = {k: 0 for k in COMMAND_KINDS}
        self.batches = 0
        self.kept_still = 0
        self._still = None
        if still_pose is not None and self.still_tolerance > 0:
            self._still = np.asarray(still_pose, dtype=np.float64).copy()
            if self._still.shape != (robot.ACTION_DIM,):
                raise ValueError(f"expected a still pose of shape ({robot.ACTION_DIM},), got {self._still.shape}")

    @property
    def still(self) -> bool:
        """True while the still rule holds (after a reset, before the first command that moves)."""
        return self._still is not None

    def _set(self, start: int, values: np.ndarray) -> None:
        if self._still is not None:
            if np.max(np.abs(values - self._still[start:start + len(values)])) <= self.still_tolerance:
                self.kept_still += 1
                return
            self._still = None  # the first command that moves ends the rule for every joint
        self.action[start:start + len(values)] = values

    @staticmethod
    def _offset(side: str) -> int:
        if side not in SIDES:
            raise ValueError(f"expected side in {SIDES}, got {side!r}")
        return 0 if side == "left" else 7

    def apply_group(self, side: str, name: str, cmd: Sequence[float]) -> Optional[str]:
        """JointGroupCommand: name "arm" with 6 finite joint targets (rad)."""
        values = np.asarray(cmd, dtype=np.float64).ravel()
        if name != "arm":
            reason = f"JointGroupCommand for group {name!r} ignored: only 'arm' is supported"
        elif values.shape != (6,):
            reason = f"JointGroupCommand 'arm': expected 6 values, got {values.shape[0]}"
        elif not np.all(np.isfinite(values)):
            reason = f"JointGroupCommand 'arm': non-finite values {values.tolist()}"
        else:
            self._set(self._offset(side), values)
            self.received[side] += 1
            self.counts[f"{side}_joint_group"] += 1
            return None
        self.rejected += 1
        return reason

    def apply_single(self, side: str, name: str, cmd: float) -> Optional[str]:
        """JointSingleCommand: name "gripper", gripper joint target (rad) -> normalised 0..1 for the sim."""
        value = float(cmd)
        if name != "gripper":
            reason = f"JointSingleCommand for joint {name!r} ignored: only 'gripper' is supported"
        elif not math.isfinite(value):
            reason = f"JointSingleCommand 'gripper': non-finite value {value}"
        else:
            self._set(self._offset(side) + 6, np.array([float(self.convention.joint_to_command(value))]))
            self.received[side] += 1
            self.counts[f"{side}_joint_single"] += 1
            return None
        self.rejected += 1
        return reason


class CameraSchedule:
    """Camera frame times in simulated seconds: 0 (at reset), then k / rate_hz for k = 1, 2, ..."""

    def __init__(self, rate_hz: float):
        if not rate_hz > 0:
            raise ValueError(f"expected camera_rate_hz > 0, got {rate_hz}")
        self.period = 1.0 / rate_hz
        self.next_k = 1

    def reset(self) -> None:
        self.next_k = 1

    def due(self, sim_time: float) -> bool:
        """True (and advance past every missed slot) when ``sim_time`` reached the next frame time."""
        if sim_time + 1e-9 < self.next_k * self.period:
            return False
        self.next_k = int(math.floor(sim_time / self.period + 1e-9)) + 1
        return True


class DriverEmulation:
    """The xs_sdk driver services of one simulated follower: torque on/off, operating modes, motor reboot.

    Joints are indexed 0..5 (arm) and 6 (gripper). Group names: ``arm``, ``gripper``, ``all``; single names:
    the joint names (``waist`` ... ``wrist_rotate``, ``gripper``). What the simulation does with them:
    * torque off: the joint goes limp (its actuator target follows the measured position every physics step,
      so it exerts no holding force and sags under gravity); commands for it are ignored;
    * torque on: the joint holds where it is now (target = measured position) until the next command;
    * reboot: torque off, then on again when ``enable`` (the motor holds where it is afterwards);
    * operating modes: validated and remembered (see :attr:`modes`); the simulated actuators stay position
      controlled whatever the mode.
    Methods return None when done, else the reason the request was refused (the driver logs and ignores it).
    """

    GROUPS = {"arm": tuple(range(6)), "gripper": (6,), "all": tuple(range(7))}
    MODES = ("position", "ext_position", "velocity", "pwm", "current", "current_based_position", "linear_position")

    def __init__(self):
        self.torque = [True] * 7
        self.modes: Dict[str, str] = {}
        self.calls: Dict[str, int] = {"torque_enable": 0, "set_operating_modes": 0, "reboot_motors": 0}

    def joints(self, cmd_type: str, name: str):
        """Joint indices addressed by (cmd_type, name), or a reason string."""
        if cmd_type == "group":
            if name in self.GROUPS:
                return self.GROUPS[name]
            return f"unknown group {name!r}; expected one of {sorted(self.GROUPS)}"
        if cmd_type == "single":
            names = list(robot.ARM_JOINTS) + ["gripper"]
            if name in names:
                return (names.index(name),)
            return f"unknown joint {name!r}; expected one of {names}"
        return f"cmd_type: expected 'group' or 'single', got {cmd_type!r}"

    def torque_enable(self, cmd_type: str, name: str, enable: bool):
        """Returns (joints changed, None) or ((), reason)."""
        self.calls["torque_enable"] += 1
        idx = self.joints(cmd_type, name)
        if isinstance(idx, str):
            return (), idx
        for i in idx:
            self.torque[i] = bool(enable)
        return idx, None

    def set_mode(self, cmd_type: str, name: str, mode: str):
        self.calls["set_operating_modes"] += 1
        idx = self.joints(cmd_type, name)
        if isinstance(idx, str):
            return idx
        if mode not in self.MODES:
            return f"unknown operating mode {mode!r}; expected one of {list(self.MODES)}"
        self.modes[f"{cmd_type}:{name}"] = mode
        return None

    def reboot(self, cmd_type: str, name: str, enable: bool):
        """Returns (joints rebooted, None) or ((), reason); torque ends as ``enable``."""
        self.calls["reboot_motors"] += 1
        idx = self.joints(cmd_type, name)
        if isinstance(idx, str):
            return (), idx
        for i in idx:
            self.torque[i] = bool(enable)
        return idx, None

    def limp(self) -> Tuple[int, ...]:
        """Indices of joints with torque off."""
        return tuple(i for i, on in enumerate(self.torque) if not on)


def joint_names(prefix: str = "") -> List[str]:
    """The xs_sdk JointState names for one follower (``waist`` ... ``right_finger``), optionally prefixed."""
    return [prefix + n for n in robot.JS_NAMES]


@dataclass
class BridgeConfig:
    """Validated node parameters (see config/sim_bridge.yaml for descriptions)."""

    task: str = "transfer_cube"
    seed: int = 0
    mode: str = "realtime"
    generation: str = "aloha2"
    camera_rate_hz: float = 30.0
    image_height: int = 480
    image_width: int = 640
    cameras: Tuple[str, ...] = ("cam_high", "cam_left_wrist", "cam_right_wrist")
    max_steps: int = 600
    auto_reset: bool = False
    publish_clock: bool = False
    max_catchup_steps: int = 5
    reset_hold: float = 0.5
    still_tolerance: float = 0.002
    joint_name_prefix: str = ""
    steps_per_command_batch: int = 0
    command_batch: Tuple[str, ...] = COMMAND_KINDS

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"expected task in {TASKS}, got {self.task!r}")
        if self.mode not in MODES:
            raise ValueError(f"expected mode in {MODES}, got {self.mode!r}")
        robot.gripper_convention(self.generation)  # raises with the known names
        if not self.camera_rate_hz > 0:
            raise ValueError(f"expected camera_rate_hz > 0, got {self.camera_rate_hz}")
        if self.image_height <= 0 or self.image_width <= 0:
            raise ValueError(f"expected a positive image size, got {self.image_height}x{self.image_width}")
        self.cameras = tuple(c for c in self.cameras if c)
        unknown = [c for c in self.cameras if c not in DEFAULT_CAMERA_MAP]
        if unknown:
            raise ValueError(f"expected cameras among {sorted(DEFAULT_CAMERA_MAP)}, got {unknown}")
        if self.max_steps <= 0:
            raise ValueError(f"expected max_steps > 0, got {self.max_steps}")
        if self.steps_per_command_batch < 0:
            raise ValueError(f"expected steps_per_command_batch >= 0, got {self.steps_per_command_batch}")
        self.command_batch = tuple(k for k in self.command_batch if k)
        bad = [k for k in self.command_batch if k not in COMMAND_KINDS]
        if bad or (self.steps_per_command_batch and not self.command_batch):
            raise ValueError(f"expected command_batch to be a non-empty subset of {COMMAND_KINDS}, got {list(self.command_batch)}")
        if self.max_catchup_steps < 1:
            raise ValueError(f"expected max_catchup_steps >= 1, got {self.max_catchup_steps}")
        if not (self.reset_hold >= 0 and math.isfinite(self.reset_hold)):
            raise ValueError(f"expected reset_hold >= 0 seconds, got {self.reset_hold}")
        if not (self.still_tolerance >= 0 and math.isfinite(self.still_tolerance)):
            raise ValueError(f"expected still_tolerance >= 0 (rad), got {self.still_tolerance}")


# ---------------------------------------------------------------------- the node
_PARAMS = (
    ("task", "transfer_cube", "simulated task: transfer_cube or insertion"),
    ("seed", 0, "scene seed used at startup and by ~/reset (Trigger)"),
    ("mode", "realtime", "realtime (50 Hz wall-clock physics) or lockstep (physics only in ~/step)"),
    ("generation", "aloha2", "ALOHA generation whose gripper conventions the commands / joint states use"),
    ("camera_rate_hz", 30.0, "camera frames per second of simulated time"),
    ("image_height", 480, "camera image height (pixels)"),
    ("image_width", 640, "camera image width (pixels)"),
    ("cameras", ["cam_high", "cam_left_wrist", "cam_right_wrist"], "cameras to render and publish"),
    ("max_steps", 600, "50 Hz physics steps per episode; then episode_end and physics freezes"),
    ("auto_reset", False, "start the next seed automatically at episode end"),
    ("publish_clock", False, "lockstep: publish simulated time on /clock (for use_sim_time nodes)"),
    ("max_catchup_steps", 5, "realtime: most physics steps one timer tick may run to catch up with the wall clock"),
    ("reset_hold", 0.5, "realtime: seconds after a reset during which joint commands are ignored, so the new "
                        "episode starts at the start pose whatever a commander was still holding (the commander "
                        "re-anchors its hold at the measured pose when the episode starts)"),
    ("still_tolerance", 0.002, "after a reset, commands within this (rad; normalised for grippers) of the reported "
                               "start pose keep the start pose's own targets until the first command beyond it, so a "
                               "commander holding the measured pose leaves the scene exactly at rest (MuJoCo's arms "
                               "would sag a further few mrad under gravity and shift the wrist cameras); 0 disables"),
    ("joint_name_prefix", "", "prefix for JointState names (the xs_sdk publishes bare names: waist, ...)"),
    ("steps_per_command_batch", 0, "lockstep: also advance this many physics steps whenever one complete command "
                                   "batch arrived (2 = a 25 Hz commander); 0 = only the ~/step service"),
    ("command_batch", list(COMMAND_KINDS), "lockstep: the command kinds that make one batch"),
    ("driver_services", True, "serve the xs_sdk driver services <ns>/torque_enable, <ns>/set_operating_modes and "
                              "<ns>/reboot_motors for each follower (see DriverEmulation)"),
    ("driver_namespaces", ["/follower_left", "/follower_right"], "left, right follower namespaces of the driver services"),
    ("topics.left_joint_states", "/follower_left/joint_states", "left follower JointState topic"),
    ("topics.right_joint_states", "/follower_right/joint_states", "right follower JointState topic"),
    ("topics.left_joint_group", "/follower_left/commands/joint_group", "left JointGroupCommand topic"),
    ("topics.right_joint_group", "/follower_right/commands/joint_group", "right JointGroupCommand topic"),
    ("topics.left_joint_single", "/follower_left/commands/joint_single", "left JointSingleCommand topic"),
    ("topics.right_joint_single", "/follower_right/commands/joint_single", "right JointSingleCommand topic"),
    ("topics.status", "~/status", "SimStatus topic"),
) + tuple((f"topics.{cam}", topic, f"{cam} sensor_msgs/Image topic") for cam, topic in DEFAULT_CAMERA_TOPICS.items())


class SimBridgeNode(Node):
    """ROS node around :class:`cosmos_policy_ros.sim.AlohaSim` (see the module docstring)."""

    def __init__(self, node_name: str = "sim_bridge", **kwargs):
        super().__init__(node_name, **kwargs)
        values = {}
        for name, default, desc in _PARAMS:
            values[name] = self.declare_parameter(name, default, ParameterDescriptor(description=desc)).value
        self.cfg = BridgeConfig(
            task=values["task"], seed=int(values["seed"]), mode=values["mode"], generation=values["generation"],
            camera_rate_hz=float(values["camera_rate_hz"]), image_height=int(values["image_height"]),
            image_width=int(values["image_width"]), cameras=tuple(values["cameras"]),
            max_steps=int(values["max_steps"]), auto_reset=bool(values["auto_reset"]),
            publish_clock=bool(values["publish_clock"]), max_catchup_steps=int(values["max_catchup_steps"]),
            reset_hold=float(values["reset_hold"]), still_tolerance=float(values["still_tolerance"]),
            joint_name_prefix=values["joint_name_prefix"],
            steps_per_command_batch=int(values["steps_per_command_batch"]), command_batch=tuple(values["command_batch"]))
        self.topics = {k[len("topics."):]: v for k, v in values.items() if k.startswith("topics.")}
        self.convention = robot.gripper_convention(self.cfg.generation)
        self._lock = threading.RLock()
        self.sim = AlohaSim(self.cfg.task, seed=self.cfg.seed, image_size=(self.cfg.image_height, self.cfg.image_width),
                            cameras=self.cfg.cameras, max_steps=self.cfg.max_steps, render=False)
        self.target = CommandTarget(self.convention, self.sim.start_action(), self.cfg.still_tolerance)
        self.cameras = CameraSchedule(self.cfg.camera_rate_hz)
        self.episode = 0
        self._ignore_until = 0.0  # time.monotonic() until which commands are ignored (after a reset)
        self._time_offset = 0.0  # simulated seconds of the episodes before this one (lock-step stamps)
        self._names = joint_names(self.cfg.joint_name_prefix)
        self._zeros9 = [0.0] * 9

        qos = QoSProfile(depth=10)
        self.js_pubs = {s: self.create_publisher(JointState, self.topics[f"{s}_joint_states"], qos) for s in SIDES}
        self.image_pubs = {c: self.create_publisher(Image, self.topics[c], QoSProfile(depth=5)) for c in self.cfg.cameras}
        self.status_pub = self.create_publisher(SimStatus, self.topics["status"], qos)
        self.clock_pub = None
        if self.cfg.publish_clock:
            from rosgraph_msgs.msg import Clock

            self._Clock = Clock
            self.clock_pub = self.create_publisher(Clock, "/clock", qos)
        for side in SIDES:
            self.create_subscription(JointGroupCommand, self.topics[f"{side}_joint_group"],
                                     lambda m, s=side: self._on_group(s, m), qos)
            self.create_subscription(JointSingleCommand, self.topics[f"{side}_joint_single"],
                                     lambda m, s=side: self._on_single(s, m), qos)
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.drivers = {s: DriverEmulation() for s in SIDES}
        if values["driver_services"]:
            from interbotix_xs_msgs.srv import OperatingModes, Reboot, TorqueEnable

            namespaces = list(values["driver_namespaces"])
            if len(namespaces) != 2:
                raise ValueError(f"driver_namespaces: expected 2 (left, right), got {namespaces}")
            for side, ns in zip(SIDES, namespaces):
                ns = "/" + ns.strip("/")
                self.create_service(TorqueEnable, f"{ns}/torque_enable",
                                    lambda req, res, s=side: self._srv_torque(s, req, res))
                self.create_service(OperatingModes, f"{ns}/set_operating_modes",
                                    lambda req, res, s=side: self._srv_modes(s, req, res))
                self.create_service(Reboot, f"{ns}/reboot_motors",
                                    lambda req, res, s=side: self._srv_reboot(s, req, res))
        self.create_service(SimReset, "~/reset_seed", self._srv_reset_seed)
        self.create_service(SimStep, "~/step", self._srv_step)
        self._dt = CONTROL_DT
        self._wall_start = None
        self._timer = None
        # Real time: cameras render on their own thread from a snapshot of the state, so rendering (the
        # expensive part, GIL released) never delays the 50 Hz physics and joint states.
        self._cam_stop = threading.Event()
        self._cam_kick = threading.Event()
        self._cam_thread: Optional[threading.Thread] = None
        self.frames_published = 0
        self.reset(self.cfg.seed)
        if self.cfg.mode == "realtime":
            self._timer = self.create_timer(self._dt, self._on_timer)
            self._cam_thread = threading.Thread(target=self._camera_loop, name="sim-bridge-cameras", daemon=True)
            self._cam_thread.start()
        self.get_logger().info(
            f"sim bridge: task {self.cfg.task}, mode {self.cfg.mode}, seed {self.cfg.seed}, generation "
            f"{self.cfg.generation}, cameras {list(self.cfg.cameras)} {self.cfg.image_height}x{self.cfg.image_width} "
            f"at {self.cfg.camera_rate_hz:g} Hz")

    # ---------------------------------------------------------- commands
    def _ignoring(self) -> bool:
        """True during ``reset_hold`` after a reset (see the parameter)."""
        return time.monotonic() < self._ignore_until

    def _on_group(self, side: str, msg) -> None:
        with self._lock:
            if self._ignoring():
                return
            reason = self.target.apply_group(side, msg.name, msg.cmd)
        self._after_command(side, reason)

    def _on_single(self, side: str, msg) -> None:
        with self._lock:
            if self._ignoring():
                return
            reason = self.target.apply_single(side, msg.name, msg.cmd)
        self._after_command(side, reason)

    def _after_command(self, side: str, reason: Optional[str]) -> None:
        if reason:
            self.get_logger().warning(f"follower_{side}: {reason}", throttle_duration_sec=1.0)
            return
        if (self.cfg.mode == "lockstep" and self.cfg.steps_per_command_batch
                and self.target.take_batch(self.cfg.command_batch) and not self.sim.done):
            self.advance(self.cfg.steps_per_command_batch)

    # ---------------------------------------------------------- stepping
    def _stamp(self):
        if self.cfg.mode == "lockstep":
            return Time(nanoseconds=int(round((self._time_offset + self.sim.time) * 1e9))).to_msg()
        return self.get_clock().now().to_msg()

    def reset(self, seed: Optional[int] = None) -> int:
        """Reset the episode (seed None: the ``seed`` parameter) and publish the first observation."""
        with self._lock:
            if seed is None:
                seed = int(self.get_parameter("seed").value)
            if self.sim.step_count:
                self._time_offset += self.sim.time
                self.episode += 1
            self.sim.reset(seed, render=False)
            self.target.reset(self.sim.start_action(), still_pose=self.sim.qpos14())
            if self.cfg.mode == "realtime" and self.cfg.reset_hold > 0:
                self._ignore_until = time.monotonic() + self.cfg.reset_hold
            self.cameras.reset()
            self._wall_start = None
            stamp = self._stamp()
            self._publish_state(stamp)
            if self.cfg.mode == "lockstep":
                self._publish_cameras(stamp)
            else:
                self._cam_kick.set()  # the camera thread publishes the new scene at once
            return int(seed)

    def advance(self, steps: int) -> int:
        """Run up to ``steps`` physics steps with the held target; returns how many ran."""
        done = 0
        with self._lock:
            for _ in range(steps):
                if self.sim.done:
                    break
                self._go_limp()
                self.sim.step(self.target.action, render=False)
                done += 1
                stamp = self._stamp()
                self._publish_state(stamp)
                if self.cfg.mode == "lockstep" and self.cameras.due(self.sim.time):
                    self._publish_cameras(stamp)
            if self.sim.done and self.cfg.auto_reset:
                self.reset(int(self.sim.seed) + 1)
        return done

    def _on_timer(self) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        if self._wall_start is None:
            self._wall_start = now - self.sim.time
        due = int((now - self._wall_start) / self._dt) - self.sim.step_count
        if due > self.cfg.max_catchup_steps:
            # Fell behind (slow rendering / CPU contention): drop the backlog rather than burst.
            self._wall_start = now - (self.sim.step_count + self.cfg.max_catchup_steps) * self._dt
            due = self.cfg.max_catchup_steps
        if self.sim.done and not self.cfg.auto_reset:
            self._publish_state(self._stamp())  # frozen: observers still see the final state
            return
        if due > 0:
            self.advance(due)

    # ---------------------------------------------------------- publishing
    def _publish_state(self, stamp) -> None:
        left, right = follower_joint_positions(self.sim, self.convention)
        vleft, vright = follower_joint_velocities(self.sim, self.convention)
        for side, pos, vel in (("left", left, vleft), ("right", right, vright)):
            msg = JointState()
            msg.header.stamp = stamp
            msg.name = self._names
            msg.position = pos.tolist()
            msg.velocity = vel.tolist()
            msg.effort = self._zeros9
            self.js_pubs[side].publish(msg)
        st = SimStatus()
        st.header.stamp = stamp
        st.task = self.cfg.task
        st.seed = int(self.sim.seed)
        st.episode = self.episode
        st.step = self.sim.step_count
        st.sim_time = float(self.sim.time)
        st.reward = int(self.sim.reward)
        st.max_reward = int(self.sim.max_reward)
        st.success = bool(self.sim.success)
        st.ever_success = bool(self.sim.ever_success)
        st.episode_end = bool(self.sim.done)
        self.status_pub.publish(st)
        if self.clock_pub is not None:
            clk = self._Clock()
            clk.clock = stamp
            self.clock_pub.publish(clk)

    def _publish_cameras(self, stamp) -> None:
        """Lock-step: render the live state now (the caller holds the lock)."""
        for cam, img in self.sim.render(self.cfg.cameras, release=True).items():  # executors may switch threads
            self._publish_image(cam, img, stamp)

    def _camera_loop(self) -> None:
        """Real time: every 1/camera_rate_hz wall seconds (at once after a reset) copy the state under the
        lock, then render and publish every camera from the copy without holding it. When rendering is
        slower than the rate, frames come as fast as they can (no backlog)."""
        snapshot = mujoco.MjData(self.sim.model)
        renderer = None
        period = 1.0 / self.cfg.camera_rate_hz
        next_t = time.monotonic()
        try:
            while not self._cam_stop.is_set():
                wait = next_t - time.monotonic()
                if wait > 0:
                    self._cam_kick.wait(wait)
                if self._cam_stop.is_set():
                    break
                self._cam_kick.clear()
                next_t = max(next_t + period, time.monotonic())
                with self._lock:
                    mujoco.mj_copyData(snapshot, self.sim.model, self.sim.data)
                    stamp = self._stamp()
                if renderer is None:  # created here: a GL context is current in one thread only
                    renderer = FastRenderer(self.sim.model, self.cfg.image_height, self.cfg.image_width)
                for cam in self.cfg.cameras:
                    self._publish_image(cam, renderer.render(snapshot, self.sim.config.camera_map[cam]), stamp)
        except Exception as exc:  # noqa: BLE001 - a dead camera thread must be visible, not silent
            if not self._cam_stop.is_set():
                self.get_logger().error(f"camera thread stopped: {exc!r}")
        finally:
            if renderer is not None:
                renderer.close()

    def _publish_image(self, cam: str, img: np.ndarray, stamp) -> None:
        msg = Image()
        msg.header.stamp = stamp
        msg.header.frame_id = f"{cam}_color_optical_frame"
        msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
        msg.encoding = "rgb8"
        msg.is_bigendian = 0
        msg.step = int(img.shape[1]) * 3
        msg.data = img.tobytes()  # bytes assignment: ~50 us; a numpy array here costs ~40 ms
        self.image_pubs[cam].publish(msg)
        self.frames_published += 1

    # ---------------------------------------------------------- services
    def _srv_reset(self, request, response):
        try:
            seed = self.reset(None)
            response.success, response.message = True, f"reset to seed {seed}"
        except Exception as exc:  # noqa: BLE001 - report, do not crash the node
            response.success, response.message = False, f"reset failed: {exc}"
        return response

    def _srv_reset_seed(self, request, response):
        try:
            seed = self.reset(None if request.seed < 0 else int(request.seed))
            response.success, response.message, response.seed = True, f"reset to seed {seed}", seed
        except Exception as exc:  # noqa: BLE001
            response.success, response.message, response.seed = False, f"reset failed: {exc}", int(request.seed)
        return response

    def _srv_step(self, request, response):
        if self.cfg.mode != "lockstep":
            response.success, response.message = False, "~/step is only served in lockstep mode"
        elif self.sim.done and request.steps > 0:
            response.success, response.message = False, "episode ended: call ~/reset first"
        else:
            ran = self.advance(int(request.steps))
            response.success, response.message = True, f"advanced {ran} step(s)"
        with self._lock:
            response.step = self.sim.step_count
            response.sim_time = float(self.sim.time)
            response.reward = int(self.sim.reward)
            response.task_success = bool(self.sim.success)
            response.episode_end = bool(self.sim.done)
            response.applied_action = self.target.action.tolist()
        return response

    # ---------------------------------------------------------- driver services (xs_sdk emulation)
    def _hold_here(self, side: str, joints) -> None:
        """Targets of ``joints`` (0..6 of one arm) = their measured position (the caller holds the lock)."""
        q = self.sim.qpos14()
        o = 0 if side == "left" else 7
        for i in joints:
            self.target.action[o + i] = q[o + i]

    def _go_limp(self) -> None:
        for side in SIDES:
            limp = self.drivers[side].limp()
            if limp:
                self._hold_here(side, limp)

    def _srv_torque(self, side, request, response):
        with self._lock:
            joints, reason = self.drivers[side].torque_enable(request.cmd_type, request.name, request.enable)
            if joints:
                self._hold_here(side, joints)
        if reason:
            self.get_logger().error(f"follower_{side}/torque_enable: {reason}")
        else:
            self.get_logger().info(f"follower_{side}: torque {'on' if request.enable else 'off'} "
                                   f"({request.cmd_type} {request.name})")
        return response

    def _srv_modes(self, side, request, response):
        with self._lock:
            reason = self.drivers[side].set_mode(request.cmd_type, request.name, request.mode)
        if reason:
            self.get_logger().error(f"follower_{side}/set_operating_modes: {reason}")
        else:
            self.get_logger().info(f"follower_{side}: operating mode {request.mode} ({request.cmd_type} {request.name})")
        return response

    def _srv_reboot(self, side, request, response):
        with self._lock:
            joints, reason = self.drivers[side].reboot(request.cmd_type, request.name, request.enable)
            if joints:
                self._hold_here(side, joints)
        if reason:
            self.get_logger().error(f"follower_{side}/reboot_motors: {reason}")
        else:
            self.get_logger().info(f"follower_{side}: rebooted ({request.cmd_type} {request.name}), torque "
                                   f"{'on' if request.enable else 'off'}")
        return response

    def destroy_node(self):
        self._cam_stop.set()
        self._cam_kick.set()
        if self._cam_thread is not None:
            self._cam_thread.join(timeout=5.0)
        self.sim.close()
        return super().destroy_node()



def main(args: Optional[List[str]] = None) -> int:
    """Run the sim bridge until SIGINT / SIGTERM."""
    return run_node(SimBridgeNode, "sim_bridge", args)


if __name__ == "__main__":
    sys.exit(main())
