"""Episode manager node: reset to the start pose, run, stop, label, rest, with e-stop at any time.

It sits between the policy node and the commander: the commander's ``chunk_topic`` is this node's
``~/action_chunk`` (/episode_manager/action_chunk). Policy chunks are forwarded only while an episode RUNS;
for the start / rest moves the node publishes its own ActionChunks (an interpolated joint trajectory from the
commander's last command to the pose, stamped now, so the commander splices it at once), and on a stop a hold
chunk (the last command repeated) replaces the rest of the policy's plan. Every motion therefore passes the
commander's safety filter and per-tick limits; this node never publishes a robot command itself.

States and rules: cosmos_policy_ros/core/episode.py. Services (std_srvs/Trigger unless noted):
``~/start`` (inputs fresh? -> robot preparation -> start pose -> READY, then RUNNING with ``auto_go``), ``~/go``,
``~/stop``, ``~/rest``, ``~/estop``, ``~/reset_estop``, ``~/label`` (cosmos_policy_ros/LabelEpisode, forwarded to
the recorder; then the rest pose with ``rest_after_label``). Status on ``~/status`` (DiagnosticStatus, latched).
docs/lifecycle.md has the full description.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
from typing import Callable, Dict, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from cosmos_policy_ros.msg import ActionChunk, EpisodeEvent
from cosmos_policy_ros.srv import LabelEpisode

from ..core.episode import (DEFAULT_REST_POSE, DEFAULT_START_POSE, EpisodeConfig, Lifecycle, LifecycleError, State,
                            hold_actions, max_steps, plan_move, pose_errors, stale_inputs, stop_cause)
from ..core.robot import JS_ARM, JS_GRIPPER, JS_NAMES, SIDES, JointStateError, gripper_convention, joint_name_map
from . import diagnostics as dg
from .commander_logic import HOLD_ESTOP, TRACE_FIELDS
from .conversions import chunk_to_msg, stamp_to_sec
from .params import Param, declare
from .robot_prep import DriverError, DriverServices, PrepConfig, modules_available
from .node_main import run_node

#: Chunk ids of the manager's own chunks start here (policy chunk ids count from 0), so traces tell them apart.
OWN_CHUNK_ID_BASE = 10_000_000_000
POLICY_ID = "episode_manager"

PARAMS = (
    Param("period", 0.04, "commander tick period (s); the manager's chunks use it"),
    Param("generation", "aloha2", "ALOHA generation (gripper joint <-> normalised command)"),
    Param("arms", ["follower_left", "follower_right"], "follower namespaces, left then right"),
    Param("joint_names", list(JS_NAMES), "published JointState name of each Interbotix joint (waist, shoulder, "
          "elbow, forearm_roll, wrist_angle, wrist_rotate, gripper, left_finger, right_finger), both followers; "
          "joint states are read by name, in any order, extra joints ignored"),
    Param("allow_unnamed_joint_states", False, "accept JointState messages with an empty name list in the index "
          "layout of joint_names (otherwise they are refused: the order cannot be checked)"),
    Param("camera_topics", ["/cam_high/camera/color/image_rect_raw", "/cam_left_wrist/camera/color/image_rect_raw",
                            "/cam_right_wrist/camera/color/image_rect_raw"],
          "cameras that must be fresh before an episode starts"),
    Param("max_input_age", 0.5, "a camera or joint state older than this (s, receive time) refuses a start"),
    Param("require_policy_ok", True, "refuse a start while the policy status is ERROR or silent"),
    Param("policy_status_topic", "/policy/status", "policy node health (DiagnosticStatus)"),
    Param("policy_chunk_topic", "/policy/action_chunk", "policy chunks, forwarded to ~/action_chunk while RUNNING"),
    Param("commander", "/commander", "commander node (services start_episode, stop_episode, estop, reset_estop; "
          "topics action, trace)"),
    Param("recorder", "/recorder", "recorder node (service label_episode)"),
    Param("start_pose", list(DEFAULT_START_POSE), "start pose: per arm 6 joints (rad) + gripper (0 closed..1 open)"),
    Param("rest_pose", list(DEFAULT_REST_POSE), "rest pose, same layout (default: ALOHA sleep pose, grippers closed)"),
    Param("max_joint_speed", 0.8, "peak arm joint speed of the start / rest moves (rad/s)"),
    Param("max_gripper_speed", 1.5, "peak gripper speed of the moves (normalised units/s)"),
    Param("pose_tolerance", 0.05, "a pose is reached when every arm joint is this close (rad)"),
    Param("gripper_tolerance", 0.15, "... and every gripper this close (normalised; 0 = not checked)"),
    Param("settle_timeout", 3.0, "seconds after a move's last planned tick to reach the pose, else the move fails"),
    Param("max_duration", 60.0, "episode length limit (s); 0 = none"),
    Param("lead_in_ticks", 3, "copies of the current command in front of a move (splice margin)"),
    Param("hold_ticks", 25, "length of the hold chunk published on a stop (ticks)"),
    Param("auto_go", False, "~/start goes on to RUNNING as soon as the start pose is reached"),
    Param("rest_after_label", True, "move to the rest pose after an episode is labelled"),
    Param("success_topic", "", "cosmos_policy_ros/SimStatus topic whose ever_success stops the episode "
          "(e.g. /sim_bridge/status); empty = none"),
    Param("service_timeout", 3.0, "seconds to wait for the commander's / recorder's services"),
    Param("prep_enabled", True, "prepare the robot through the driver services on ~/start"),
    Param("prep_reboot_gripper", True, "reboot the gripper motors on ~/start (ALOHA does)"),
    Param("prep_arm_mode", "position", "operating mode of the 'arm' group ('' = leave)"),
    Param("prep_gripper_mode", "current_based_position", "operating mode of the 'gripper' joint ('' = leave)"),
    Param("driver_timeout", 2.0, "seconds to wait for each driver service (missing or silent -> error, no motion)"),
    Param("status_period", 0.5, "seconds between ~/status messages (also sent on every change)"),
)


class Aborted(Exception):
    """A move or procedure was aborted by stop / e-stop."""


class EpisodeManagerNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs):
        super().__init__("episode_manager", **kwargs)
        p = declare(self, PARAMS)
        self.p = p
        if len(p["arms"]) != 2:
            raise ValueError(f"arms: expected 2 follower namespaces (left, right), got {p['arms']}")
        self.cfg = EpisodeConfig(start_pose=p["start_pose"], rest_pose=p["rest_pose"], period=p["period"],
                                 max_joint_speed=p["max_joint_speed"], max_gripper_speed=p["max_gripper_speed"],
                                 pose_tolerance=p["pose_tolerance"], gripper_tolerance=p["gripper_tolerance"],
                                 settle_timeout=p["settle_timeout"], max_duration=p["max_duration"],
                                 lead_in_ticks=int(p["lead_in_ticks"]))
        if p["hold_ticks"] < 2:
            raise ValueError(f"hold_ticks: expected >= 2, got {p['hold_ticks']}")
        self.prep_cfg = PrepConfig(enabled=p["prep_enabled"], reboot_gripper=p["prep_reboot_gripper"],
                                   arm_mode=p["prep_arm_mode"], gripper_mode=p["prep_gripper_mode"],
                                   timeout=p["driver_timeout"], arms=p["arms"])
        self.gripper = gripper_convention(p["generation"])
        self.joints = joint_name_map(p["joint_names"], p["allow_unnamed_joint_states"])
        self.life = Lifecycle()
        self._lock = threading.RLock()
        self._abort = threading.Event()
        self._jobs: "queue.Queue[Optional[Callable[[], None]]]" = queue.Queue()
        self.cb = ReentrantCallbackGroup()

        # inputs (receive times: monotonic seconds)
        self._seen: Dict[str, Optional[float]] = {}
        self._measured: Dict[str, np.ndarray] = {}
        self._js_error: Dict[str, str] = {}  # side -> why its latest joint state was refused ("" once valid)
        self._last_command: Optional[np.ndarray] = None
        self._last_command_t = 0.0
        self._hold_t = 0.0  # monotonic time of the last hold chunk
        self._going = False
        self._own_final: Optional[np.ndarray] = None  # last action of our newest chunk (None after a policy chunk)
        self._policy_ok: Optional[bool] = None
        self._policy_msg = "no policy status received"
        self._policy_t: Optional[float] = None
        self._estop_seen = False
        self._trace_quiet_until = 0.0
        self._success = False
        self._success_baseline = None  # (episode, ever_success) of the sim when the episode started
        self._sim_status = None

        for side, ns in zip(SIDES, p["arms"]):
            topic = "/" + ns.strip("/") + "/joint_states"
            self._seen[f"{side} joint states ({topic})"] = None
            self.create_subscription(JointState, topic, lambda m, s=side, k=f"{side} joint states ({topic})":
                                     self._on_js(s, k, m), qos_profile_sensor_data, callback_group=self.cb)
        for topic in p["camera_topics"]:
            if not topic:
                continue
            key = f"camera {topic}"
            self._seen[key] = None
            # raw: only the arrival matters; no image is deserialised here
            self.create_subscription(Image, topic, lambda _m, k=key: self._touch(k), qos_profile_sensor_data,
                                     raw=True, callback_group=self.cb)
        self.create_subscription(DiagnosticStatus, p["policy_status_topic"], self._on_policy_status, 10,
                                 callback_group=self.cb)
        self.create_subscription(ActionChunk, p["policy_chunk_topic"], self._on_policy_chunk, 10, callback_group=self.cb)
        cmdr = "/" + p["commander"].strip("/")
        self.create_subscription(JointState, f"{cmdr}/action", self._on_command, 10, callback_group=self.cb)
        self.create_subscription(Float64MultiArray, f"{cmdr}/trace", self._on_trace, 10, callback_group=self.cb)
        self.create_subscription(EpisodeEvent, "/episode", self._on_episode_event, 10, callback_group=self.cb)
        if p["success_topic"]:
            from cosmos_policy_ros.msg import SimStatus

            self.create_subscription(SimStatus, p["success_topic"], self._on_sim_status, 10, callback_group=self.cb)

        self.chunk_pub = self.create_publisher(ActionChunk, "~/action_chunk", 10)
        self.status_pub = self.create_publisher(
            DiagnosticStatus, "~/status", QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.cl = {name: self.create_client(Trigger, f"{cmdr}/{name}", callback_group=self.cb)
                   for name in ("start_episode", "stop_episode", "estop", "reset_estop")}
        self.label_client = self.create_client(LabelEpisode, "/" + p["recorder"].strip("/") + "/label_episode",
                                               callback_group=self.cb)
        self.driver = DriverServices(self, self.prep_cfg, callback_group=self.cb)
        for name, handler in (("start", self._srv_start), ("go", self._srv_go), ("stop", self._srv_stop),
                              ("rest", self._srv_rest), ("estop", self._srv_estop),
                              ("reset_estop", self._srv_reset_estop)):
            self.create_service(Trigger, f"~/{name}", handler, callback_group=self.cb)
        self.create_service(LabelEpisode, "~/label", self._srv_label, callback_group=self.cb)

        # episode bookkeeping
        self.episode_id = ""
        self.last_episode_id = ""
        self.stop_reason = ""
        self.last_error = ""
        self.started_at = 0.0
        self._own_stamp = 0.0  # stamp of the newest own chunk: policy chunks observed before it are dropped
        self._own_id = 0
        self.forwarded = 0
        self.dropped = 0
        self.moves = 0
        self.last_move = {}
        self._worker = threading.Thread(target=self._work, name="episode-manager-worker", daemon=True)
        self._worker.start()
        self.create_timer(0.05, self._monitor, callback_group=self.cb)
        self.create_timer(p["status_period"], self._publish_status, callback_group=self.cb)
        if modules_available():
            self.get_logger().info("interbotix_xs_modules is installed; the driver services are called directly "
                                   "(same services, with timeouts)")
        self.get_logger().info(
            f"episode manager: moves at {p['max_joint_speed']} rad/s ({self.cfg.max_step_arm:.4f} rad/tick), "
            f"prep {'on' if self.prep_cfg.enabled else 'off'}, max_duration {p['max_duration']} s, "
            f"cameras {[t for t in p['camera_topics'] if t]}")
        self._publish_status()

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _enter(self, state: State, detail: str = "") -> None:
        with self._lock:
            self.life.enter(state, detail)
        self.get_logger().info(f"state {state.value}: {detail}")
        self._publish_status()

    def _fail(self, message: str, state: State = State.IDLE) -> None:
        with self._lock:
            self.last_error = message
        self.get_logger().error(message)
        self._enter(state, f"error: {message}")

    def _call(self, client, request, what: str, timeout: Optional[float] = None):
        """Call a service and wait (never from an exclusive callback); raise RuntimeError with a clear message."""
        timeout = self.p["service_timeout"] if timeout is None else timeout
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"{what}: service {client.srv_name} not available within {timeout:g} s")
        done = threading.Event()
        fut = client.call_async(request)
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            fut.cancel()
            raise RuntimeError(f"{what}: service {client.srv_name} did not answer within {timeout:g} s")
        return fut.result()

    def current_command(self) -> Optional[np.ndarray]:
        """The commander's last command (fresh), else the measured position as a command; None if unknown."""
        with self._lock:
            if self._last_command is not None and time.monotonic() - self._last_command_t < 0.5:
                return self._last_command.copy()
            return self.measured()

    def measured(self) -> Optional[np.ndarray]:
        """(14,) measured joints with grippers as normalised commands (comparable to commands), or None."""
        with self._lock:
            if any(s not in self._measured or self._js_error.get(s) for s in SIDES):
                return None  # never plan or judge a pose from a joint state older than a refused one
            return np.concatenate([self._measured["left"], self._measured["right"]])

    def _publish_chunk(self, actions: np.ndarray) -> float:
        with self._lock:
            stamp = max(self._now(), self._own_stamp + 1e-6)
            self._own_stamp = stamp
            self._own_id += 1
            cid = OWN_CHUNK_ID_BASE + self._own_id
            self._own_final = np.asarray(actions[-1], dtype=np.float32).astype(np.float64)  # as the wire has it
        self.chunk_pub.publish(chunk_to_msg(actions, stamp, cid, self.cfg.period, POLICY_ID))
        return stamp

    def _hold_now(self) -> None:
        cmd = self.current_command()
        if cmd is not None:
            self._publish_chunk(hold_actions(cmd, int(self.p["hold_ticks"])))
            self._hold_t = time.monotonic()

    def _start_command(self) -> Optional[np.ndarray]:
        """The command a move starts from: the one the commander holds once our last chunk is in effect.

        After a hold (or a move) the commander converges to that chunk's last action (a busy commander may
        still send a policy action or two first); a move planned from an older command would start where the
        robot no longer is. So wait (at most ``settle_timeout``) until the commander reports our chunk's final
        action, then start from exactly what it reports. If it never does (an e-stop or fault interrupted our
        chunk), start from the latest command received after the wait began.
        """
        t0 = time.monotonic()
        ready_at = max(t0, self._hold_t + 3 * self.cfg.period)
        deadline = ready_at + self.cfg.settle_timeout
        with self._lock:
            target = self._own_final
        while time.monotonic() < deadline:
            self._check_abort()
            with self._lock:
                cmd, t_cmd = self._last_command, self._last_command_t
            if cmd is not None and t_cmd >= ready_at:
                if target is None or float(np.max(np.abs(cmd - target))) < 1e-4:
                    return cmd.copy()
            time.sleep(0.005)
        self.get_logger().warning("the commander did not reach the last planned command; moving from its current one")
        return self.current_command()

    # ------------------------------------------------------------------ subscriptions
    def _touch(self, key: str) -> None:
        self._seen[key] = time.monotonic()

    def _on_js(self, side: str, key: str, msg: JointState) -> None:
        try:  # by name: any order, extra joints ignored; a missing / non-finite joint refuses the message
            pos = self.joints.canonical(msg.name, msg.position, side=side)
        except JointStateError as exc:
            with self._lock:
                first = self._js_error.get(side) != str(exc)
                self._js_error[side] = str(exc)
            if first:  # not fresh: a start is refused with this reason (the commander holds on it too)
                self.get_logger().error(f"refusing joint state: {exc}")
            return
        q = np.empty(7)
        q[:6] = pos[JS_ARM]
        q[6] = float(self.gripper.joint_to_command(pos[JS_GRIPPER]))
        with self._lock:
            self._measured[side] = q
            self._js_error[side] = ""
        self._touch(key)

    def _on_command(self, msg: JointState) -> None:
        cmd = np.asarray(msg.position, dtype=np.float64)
        if cmd.shape == (14,) and np.all(np.isfinite(cmd)):
            with self._lock:
                self._last_command = cmd
                self._last_command_t = time.monotonic()

    def _on_trace(self, msg: Float64MultiArray) -> None:
        if len(msg.data) > TRACE_FIELDS.index("hold_code") and int(msg.data[TRACE_FIELDS.index("hold_code")]) == HOLD_ESTOP:
            if self.life.state != State.ESTOPPED and not self._estop_seen and time.monotonic() > self._trace_quiet_until:
                self._estop_seen = True
                self._abort.set()
                self._enter(State.ESTOPPED, "commander e-stop latched (engaged elsewhere); reset_estop to continue")

    def _on_policy_status(self, msg: DiagnosticStatus) -> None:
        self._policy_ok = dg.status_level(msg) != dg.ERROR
        self._policy_msg = msg.message
        self._policy_t = time.monotonic()

    def _on_policy_chunk(self, msg: ActionChunk) -> None:
        with self._lock:  # publish under the lock: a stop cannot slip between the check and the publish
            if self.life.state == State.RUNNING and stamp_to_sec(msg.header.stamp) > self._own_stamp:
                self.chunk_pub.publish(msg)
                self.forwarded += 1
                self._own_final = None  # the policy moves the robot now
            else:
                self.dropped += 1

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.STOP and msg.reason == "estop" and self.life.state == State.RUNNING:
            self._abort.set()
            self._enter(State.ESTOPPED, "commander e-stop stopped the episode; reset_estop to continue")

    def _on_sim_status(self, msg) -> None:
        with self._lock:
            self._sim_status = (int(msg.episode), bool(msg.ever_success))
            base = self._success_baseline
            if self.life.state == State.RUNNING and base is not None and msg.ever_success and \
                    (int(msg.episode) != base[0] or not base[1]):
                self._success = True

    # ------------------------------------------------------------------ checks
    def input_problems(self) -> list:
        """Why an episode may not start now (stale / missing inputs, policy fault); empty when fine."""
        now = time.monotonic()
        problems = stale_inputs(dict(self._seen), now, self.p["max_input_age"])
        with self._lock:
            problems += [f"{side} joint states refused: {err}" for side, err in self._js_error.items() if err]
        if self.p["require_policy_ok"]:
            if self._policy_t is None:
                problems.append(f"policy status ({self.p['policy_status_topic']}): nothing received")
            elif now - self._policy_t > max(1.0, 2 * self.p["max_input_age"]):
                problems.append(f"policy status ({self.p['policy_status_topic']}): silent for {now - self._policy_t:.1f} s")
            elif not self._policy_ok:
                problems.append(f"policy reports ERROR: {self._policy_msg}")
        return problems

    # ------------------------------------------------------------------ worker (sequential procedures)
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - a bug must leave the robot holding, not kill the node
                self._abort.set()
                self._hold_now()
                self._fail(f"internal error: {exc!r}\n{traceback.format_exc()}")

    def _check_abort(self) -> None:
        if self._abort.is_set():
            raise Aborted()

    def _move(self, goal, what: str) -> None:
        """Move to ``goal`` through the commander; returns when reached; Aborted / RuntimeError otherwise."""
        start = self._start_command()
        if start is None:
            raise RuntimeError(f"cannot move to the {what}: no joint states / commands received")
        actions = plan_move(start, goal, self.cfg)
        arm_step, grip_step = max_steps(actions)
        self._check_abort()
        stamp = self._publish_chunk(actions)
        self.moves += 1
        self.last_move = {"what": what, "ticks": int(actions.shape[0]), "max_step_arm": arm_step,
                          "max_step_gripper": grip_step}
        self.get_logger().info(f"moving to the {what}: {actions.shape[0]} ticks ({actions.shape[0] * self.cfg.period:.2f} s), "
                               f"largest step {arm_step:.4f} rad / gripper {grip_step:.4f}")
        end = time.monotonic() + actions.shape[0] * self.cfg.period
        while time.monotonic() < end:
            self._check_abort()
            time.sleep(0.02)
        deadline = time.monotonic() + self.cfg.settle_timeout
        while True:
            self._check_abort()
            m = self.measured()
            errs = pose_errors(m, goal, self.cfg) if m is not None else ["no joint states"]
            if not errs:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not reached within {self.cfg.settle_timeout:g} s after the move: "
                                   + "; ".join(errs[:4]))
            time.sleep(0.02)
        del stamp

    def _job_reset(self, go: bool) -> None:
        try:
            if self.prep_cfg.enabled:
                self._enter(State.RESETTING, "preparing the robot (driver services)")
                self.driver.prepare(self._abort, log=lambda line: self.get_logger().info(f"driver: {line}"))
            self._enter(State.RESETTING, "moving to the start pose")
            self._move(self.cfg.start_pose, "start pose")
        except Aborted:
            if not self._estop_seen:
                self._enter(State.IDLE, "reset aborted (stop); holding")
            return
        except DriverError as exc:  # before any motion: nothing to hold
            if self._abort.is_set():
                if not self._estop_seen:
                    self._enter(State.IDLE, f"reset aborted (stop): {exc}")
                return
            self._fail(f"reset failed: {exc}")
            return
        except RuntimeError as exc:
            self._hold_now()
            self._fail(f"reset failed: {exc}")
            return
        self._enter(State.READY, "at the start pose; waiting for go")
        if go:
            problems = self.input_problems()
            if problems:
                self._fail("go refused, inputs not ready: " + "; ".join(problems), State.READY)
                return
            try:
                self._go()
            except RuntimeError as exc:
                self._fail(f"go failed: {exc}", State.READY)

    def _job_rest(self) -> None:
        try:
            self._enter(State.RESTING, "moving to the rest pose")
            self._move(self.cfg.rest_pose, "rest pose")
        except Aborted:
            if not self._estop_seen:
                self._enter(State.IDLE, "rest move aborted (stop); holding")
            return
        except RuntimeError as exc:
            self._hold_now()
            self._fail(f"rest failed: {exc}")
            return
        self._enter(State.IDLE, "at the rest pose")

    def _go(self) -> str:
        """READY -> RUNNING: the commander starts the episode (EpisodeEvent START reaches the recorder)."""
        with self._lock:  # one go at a time (two terminals, or auto_go and a go)
            if self._going or self.life.state != State.READY:
                raise RuntimeError(f"go refused: {'a go is in progress' if self._going else 'not READY'}")
            self._going = True
        try:
            res = self._call(self.cl["start_episode"], Trigger.Request(), "start episode")
        finally:
            with self._lock:
                self._going = False
        if not res.success:
            raise RuntimeError(f"commander refused start_episode: {res.message}")
        with self._lock:
            left = self.life.state != State.READY  # stopped / e-stopped while the commander answered
            if not left:
                self.episode_id = res.message
                self.last_episode_id = res.message
                self.stop_reason = ""
                self.started_at = time.monotonic()
                self._success = False
                self._success_baseline = self._sim_status if self._sim_status is not None else (-1, False)
                # forward only chunks planned from observations taken from now on
                self._own_stamp = max(self._own_stamp, self._now())
                self.life.enter(State.RUNNING, f"episode {res.message} running")
        if left:
            try:  # do not leave a recording running that nobody drives
                self._call(self.cl["stop_episode"], Trigger.Request(), "stop episode")
            except RuntimeError as exc:
                self.get_logger().error(f"episode {res.message}: {exc}")
            raise RuntimeError(f"episode {res.message} stopped at once: the manager left READY "
                               f"({self.life.state.value}) while it started")
        self.get_logger().info(f"state RUNNING: episode {res.message}")
        self._publish_status()
        return res.message

    def _stop_episode(self, cause: str) -> str:
        """RUNNING -> STOPPED: hold at once, then STOP through the commander."""
        with self._lock:
            if self.life.state != State.RUNNING:
                return "not running"
            self.life.enter(State.STOPPED, f"episode {self.episode_id} stopped ({cause}); label it")
            self.stop_reason = cause
            ep = self.episode_id
            self.episode_id = ""
        self._hold_now()  # the rest of the policy's chunk is not executed
        self.get_logger().info(f"state STOPPED: episode {ep} ({cause})")
        self._publish_status()
        try:
            res = self._call(self.cl["stop_episode"], Trigger.Request(), "stop episode")
            if not res.success:
                self.get_logger().warning(f"commander stop_episode: {res.message}")
        except RuntimeError as exc:
            self._fail(f"episode {ep} stopped and holding, but {exc}", State.STOPPED)
        return ep

    def _monitor(self) -> None:
        if self.life.state != State.RUNNING:
            return
        cause = stop_cause(time.monotonic(), self.started_at, self.cfg.max_duration, self._success)
        if cause:
            self._stop_episode(cause)

    # ------------------------------------------------------------------ services
    def _refuse(self, response, message: str):
        self.get_logger().warning(message)
        response.success, response.message = False, message
        return response

    def _srv_start(self, request, response):
        with self._lock:
            try:
                self.life.request("start")
            except LifecycleError as exc:
                return self._refuse(response, str(exc))
            problems = self.input_problems()
            if problems:
                return self._refuse(response, "start refused, inputs not ready: " + "; ".join(problems))
            self._abort.clear()
            self._estop_seen = False
            self.last_error = ""
            self.life.enter(State.RESETTING, "starting")
        self._publish_status()
        self._jobs.put(lambda: self._job_reset(bool(self.p["auto_go"])))
        response.success = True
        response.message = "resetting to the start pose" + (" then running" if self.p["auto_go"] else "; then call go")
        return response

    def _srv_go(self, request, response):
        with self._lock:
            try:
                self.life.request("go")
            except LifecycleError as exc:
                return self._refuse(response, str(exc))
            problems = self.input_problems()
            if problems:
                return self._refuse(response, "go refused, inputs not ready: " + "; ".join(problems))
        try:
            ep = self._go()
        except RuntimeError as exc:
            return self._refuse(response, str(exc))
        response.success, response.message = True, ep
        return response

    def _srv_stop(self, request, response):
        state = self.life.state
        try:
            self.life.request("stop")
        except LifecycleError as exc:
            return self._refuse(response, str(exc))
        if state == State.RUNNING:
            ep = self._stop_episode("operator")
            response.success, response.message = True, f"episode {ep} stopped; holding"
            return response
        self._abort.set()
        self._hold_now()
        if state == State.READY:
            self._enter(State.IDLE, "stopped at the start pose")
        response.success, response.message = True, f"{state.value.lower()} aborted; holding"
        return response

    def _srv_rest(self, request, response):
        with self._lock:
            try:
                self.life.request("rest")
            except LifecycleError as exc:
                return self._refuse(response, str(exc))
            self._abort.clear()
            self.life.enter(State.RESTING, "moving to the rest pose")
        self._publish_status()
        self._jobs.put(self._job_rest)
        response.success, response.message = True, "moving to the rest pose"
        return response

    def _srv_estop(self, request, response):
        self._estop_seen = True  # before the abort: the worker must not report a plain stop
        self._abort.set()
        msg = "e-stop engaged; holding"
        try:
            res = self._call(self.cl["estop"], Trigger.Request(), "e-stop", timeout=min(1.0, self.p["service_timeout"]))
            ok = bool(res.success)
            if not ok:
                msg = f"commander refused the e-stop: {res.message}"
        except RuntimeError as exc:
            ok = False
            msg = f"E-STOP NOT CONFIRMED by the commander ({exc}); published a hold chunk instead"
            self._hold_now()
        with self._lock:
            if self.life.state == State.RUNNING:
                self.stop_reason = "estop"
                self.episode_id = ""
        self._enter(State.ESTOPPED, msg + "; reset_estop to continue")
        if not ok:
            self.get_logger().error(msg)
        response.success, response.message = ok, msg
        return response

    def _srv_reset_estop(self, request, response):
        try:
            self.life.request("reset_estop")
        except LifecycleError as exc:
            return self._refuse(response, str(exc))
        try:
            res = self._call(self.cl["reset_estop"], Trigger.Request(), "reset e-stop")
        except RuntimeError as exc:
            return self._refuse(response, str(exc))
        self._estop_seen = False
        with self._lock:
            self._own_final = None  # the e-stop interrupted our last chunk: the commander holds elsewhere
        self._trace_quiet_until = time.monotonic() + 0.5  # trace rows already in flight still show the latch
        self._enter(State.IDLE, "e-stop released; holding")
        response.success, response.message = True, res.message
        return response

    def _srv_label(self, request, response):
        if self.life.state in (State.RUNNING, State.RESETTING, State.RESTING):
            response.ok, response.message = False, f"label refused while {self.life.state.value}: stop the episode first"
            return response
        req = LabelEpisode.Request()
        req.episode_id = request.episode_id or self.last_episode_id
        req.outcome = request.outcome
        req.success_score = request.success_score
        note = request.note
        if self.stop_reason and req.episode_id == self.last_episode_id:
            note = (note + " " if note else "") + f"[stopped: {self.stop_reason}]"
        req.note = note
        if not req.episode_id:
            response.ok, response.message = False, "no episode to label"
            return response
        try:
            res = self._call(self.label_client, req, "label episode")
        except RuntimeError as exc:
            response.ok, response.message = False, str(exc)
            return response
        response.ok, response.message, response.bag_path = res.ok, res.message, res.bag_path
        if res.ok and self.life.state == State.STOPPED:
            if self.p["rest_after_label"]:
                with self._lock:
                    self._abort.clear()
                    self.life.enter(State.RESTING, "moving to the rest pose")
                self._publish_status()
                self._jobs.put(self._job_rest)
            else:
                self._enter(State.IDLE, f"episode {req.episode_id} labelled {req.outcome}")
        return response

    # ------------------------------------------------------------------ status
    def status_values(self) -> dict:
        with self._lock:
            values = {"state": self.life.state.value, "detail": self.life.detail, "episode_id": self.episode_id or "",
                      "last_episode_id": self.last_episode_id, "stop_reason": self.stop_reason,
                      "last_error": self.last_error, "moves": self.moves, "forwarded_chunks": self.forwarded,
                      "dropped_chunks": self.dropped,
                      "running_s": round(time.monotonic() - self.started_at, 2) if self.life.state == State.RUNNING else 0.0}
            for k, v in self.last_move.items():
                values[f"last_move_{k}"] = v
        return values

    def _publish_status(self) -> None:
        values = self.status_values()
        state = values["state"]
        level = dg.ERROR if state == State.ESTOPPED.value else (dg.WARN if values["last_error"] else dg.OK)
        st = dg.make_status("cosmos_policy_ros: episode_manager", level, f"{state}: {values['detail']}", values,
                            "aloha")
        self.status_pub.publish(st)
        self.diag_pub.publish(dg.make_array(self.get_clock().now().to_msg(), [st]))  # rqt / diagnostics tools

    def destroy_node(self):
        self._abort.set()
        self._jobs.put(None)
        self._worker.join(timeout=2.0)
        return super().destroy_node()


def main(args=None) -> int:
    """Run the episode manager until SIGINT."""
    return run_node(EpisodeManagerNode, "episode_manager", args, executor_factory=lambda: MultiThreadedExecutor(num_threads=4))


if __name__ == "__main__":
    sys.exit(main())
