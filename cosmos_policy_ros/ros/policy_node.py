"""Policy node: camera frames + follower joint states -> Cosmos Policy -> ActionChunk (+ future images, value).

Subscription callbacks only store the latest stamped input (a zero-copy view of each image). Inference runs
on a worker thread, never in a callback; the worker starts the next inference early enough that its chunk
arrives before the current one runs out (:class:`~cosmos_policy_ros.core.chunking.ReplanSchedule`; the trigger
point is reported in /diagnostics). Health goes out on ``~/status`` (diagnostic_msgs/DiagnosticStatus,
level ERROR = the commander must hold) at ``status_rate`` and immediately on every change.

The backend is chosen by the ``checkpoint`` parameter:
  ``test-double:latency=0.8[,horizon=50,...]`` -> :class:`~cosmos_policy_ros.core.test_doubles.LatencyPolicyTestDouble`
  ``tiny-random`` -> ``cosmos_policy_ros.core.policy.make_tiny_policy()`` (random tiny network, CPU)
  anything else (local path or Hugging Face id) -> ``cosmos_policy_ros.core.policy.load_policy(checkpoint, device)``
The model modules are imported lazily, in the worker thread.
"""
from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from typing import Dict, List, Optional

import numpy as np
import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float64MultiArray, Header

from cosmos_policy_ros.msg import ActionChunk, EpisodeEvent

from ..core.chunking import STREAM_RTC_DEFAULTS, ReplanRequests, ReplanSchedule, node_schedule
from ..core.observation import ObservationAssembler, ObservationConfig
from ..core.rtc import DelayEstimator, RtcConfig, RunningChunk, build_prefix
from ..core.robot import ACTION_DIM, JS_NAMES, SIDES, gripper_convention, joint_name_map
from ..core.types import ALOHA_CAMERAS, DEFAULT_SEED, InferenceCancelled, PolicyOutput
from . import diagnostics as dg
from .conversions import chunk_to_msg, rgb_to_image_msg, stamp_to_sec
from .params import Param, declare
from .node_main import run_node

DEFAULT_CAMERA_TOPICS = [f"/{c}/camera/color/image_rect_raw" for c in ALOHA_CAMERAS]

PARAMS = (
    Param("checkpoint", "tiny-random", "policy to run: local path or Hugging Face id (core.policy.load_policy), "
          "'tiny-random' (random tiny network) or 'test-double:latency=<s>' (timing tests only)"),
    Param("device", "", "torch device for the model (empty: the loader's default, cuda when available)"),
    Param("task", "", "task instruction (must be one the checkpoint has a text embedding for)"),
    Param("generation", "aloha2", "ALOHA generation selecting the gripper observation normalisation (aloha1 or aloha2)"),
    Param("camera_topics", DEFAULT_CAMERA_TOPICS, "sensor_msgs/Image topics, one per camera slot"),
    Param("camera_slots", list(ALOHA_CAMERAS), "model camera slot of each camera topic (same order)"),
    Param("arms", ["follower_left", "follower_right"], "follower namespaces (left, right); joint states on <ns>/joint_states"),
    Param("joint_names", list(JS_NAMES), "published JointState name of each Interbotix joint (waist, shoulder, "
          "elbow, forearm_roll, wrist_angle, wrist_rotate, gripper, left_finger, right_finger), both followers; "
          "joint states are read by name, in any order, extra joints ignored"),
    Param("allow_unnamed_joint_states", False, "accept JointState messages with an empty name list in the index "
          "layout of joint_names (otherwise they are a fault: the order cannot be checked)"),
    Param("image_height", 480, "required camera image height (0 = any)"),
    Param("image_width", 640, "required camera image width (0 = any)"),
    Param("max_input_age", 0.2, "an input older than this (s) makes the observation invalid"),
    Param("stamp_tolerance", 0.1, "largest allowed spread (s) between the input stamps of one observation"),
    Param("replan_period", 0.0, "seconds from one observation to the next inference start; 0 = auto (just in time "
          "for the chunk to arrive replan_margin before the current one runs out)"),
    Param("execution", "stream", "'stream': re-plan while the robot moves, each chunk arriving just before the "
          "current one ends (no idle robot); 'pause': the released deploy's way, run every chunk to its end and "
          "hold while the next is computed (idle ~latency per chunk, open-loop parity with offline evaluation); the "
          "commander's chunk-end request (its own execution:=pause) times the next observation"),
    Param("replan_request_topic", "/commander/replan_request", "std_msgs/Header from the commander: plan at once "
          "from an observation newer than its stamp (episode start, e-stop reset, fault cleared, chunk ended with "
          "execution:=pause) instead of at the next scheduled observation; empty disables"),
    Param("replan_request_timeout", 2.0, "drop a re-plan request no observation satisfies within this many seconds "
          "(clock skew between the commander and the sensors); the schedule takes over"),
    Param("replan_margin", 0.3, "auto mode: seconds the next chunk should arrive before the current one ends"),
    Param("latency_guess", 0.0, "auto mode: inference latency (s) assumed until measured"),
    Param("torch_threads", 0, "CPU threads for torch (0 = auto: all but one core, at least 1). On a small CPU two "
          "spinning OpenMP threads beside other busy processes made inference ~40x slower than one thread"),
    Param("execute_horizon", 0, "actions of each chunk sent to the commander (0 = the whole chunk): fewer means "
          "re-planning sooner from a fresh observation (closed loop) at the cost of more inferences"),
    Param("rtc", STREAM_RTC_DEFAULTS[0], "real-time chunking with execution 'stream': 'off', 'replace' (x0-space inpainting, no "
          "extra cost) or 'guided' (exact guidance, one backward pass per network call): each chunk keeps the actions "
          "the commander executes while it is computed (the running chunk's) and moves smoothly away from them; not "
          "used with execution 'pause' (nothing runs while the policy thinks)"),
    Param("rtc_schedule", STREAM_RTC_DEFAULTS[1], "rtc: weights of the running chunk past the frozen prefix (ones: the whole overlap; "
          "exp, linear, zeros)"),
    Param("rtc_beta", 5.0, "rtc: guidance cap beta"),
    Param("rtc_delay_margin", 2, "rtc: ticks frozen beyond the measured inference delay (freezing more is safe)"),
    Param("rtc_execution_horizon", STREAM_RTC_DEFAULTS[2], "rtc: ticks from one observation to the next while streaming, at most (the "
          "just-in-time start comes first when inference is too slow for this pace; 0: just in time); smaller "
          "re-plans more often from fresher observations"),
    Param("rtc_replan_margin", 0.1, "rtc: seconds the next chunk should arrive before the running one ends when "
          "inference is too slow for rtc_execution_horizon's pace (replaces replan_margin while rtc is on: the new chunk "
          "keeps the running one's actions, so it may take over late in it; a larger margin makes the robot re-plan "
          "sooner, which costs this policy success)"),
    Param("rtc_trace_topic", "/commander/trace", "the commander's per-tick trace: which chunk it runs, at which "
          "index, or whether it holds (rtc freezes only actions it really executes; execution:=pause waits for it)"),
    Param("commander_link_timeout", 10.0, "execution:=pause: before the first observation, wait up to this long (s) to "
          "hear the commander's trace, so its chunk-end requests can reach this node (DDS discovery takes seconds "
          "on a loaded machine); then start anyway with a warning; 0 = do not wait"),
    Param("seed", DEFAULT_SEED, "sampling seed (the released deploy uses 195 for every query)"),
    Param("planning_candidates", 0, "best-of-N: sample N chunks in one batch (0 or 1 = off); scored by the planning "
          "model when planning_checkpoint is set, else ranked by the policy's own predicted value"),
    Param("planning_checkpoint", "", "planning model (world model + value) for best-of-N: path, Hugging Face id or "
          "'tiny-random'; empty = rank by the policy's value head"),
    Param("planning_window", [], "best-of-N (planning_checkpoint or planning) only for observations taken between "
          "these [start, end) seconds after the episode start (the commander's START event on episode_topic); the "
          "base policy's own chunk elsewhere, at its usual cost. [] = plan every decision. The sim transfer cube "
          "gains only at the grasp: [1.0, 3.0] (docs/planning.md)", element=float),
    Param("episode_topic", "/episode", "EpisodeEvent topic whose START events start planning_window's clock"),
    Param("publish_future_images", True, "publish predicted future frames on ~/future/<slot>"),
    Param("status_rate", 25.0, "Hz at which ~/status is published"),
    Param("retry_delay", 0.5, "seconds to wait after a failed inference before retrying"),
    Param("diagnostics_period", 1.0, "seconds between /diagnostics messages"),
    Param("test_double_fault", "", "fault injection for the test double only: '', 'exception', 'nan', "
          "'latency=<s>'", dynamic=True),
)


def load_backend(checkpoint: str, device: str = ""):
    """Resolve the ``checkpoint`` parameter to a PolicyBackend (model modules imported lazily)."""
    spec = checkpoint.strip()
    if spec.startswith("test-double"):
        from ..core.test_doubles import LatencyPolicyTestDouble

        return LatencyPolicyTestDouble.from_spec(spec)
    if spec in ("tiny-random", "tiny"):
        from ..core.policy import make_tiny_policy

        return make_tiny_policy()
    if not spec:
        raise ValueError("checkpoint: expected a path, a Hugging Face id, 'tiny-random' or 'test-double:...', got ''")
    from ..core.policy import load_policy

    if not device:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_policy(spec, device=device)


def validate_output(out: PolicyOutput, horizon: int, action_dim: int) -> Optional[str]:
    """Problem with a policy output (shape, NaN), or None."""
    a = np.asarray(out.actions)
    if a.ndim != 2 or a.shape[1] != action_dim or a.shape[0] < 1:
        return f"policy returned actions of shape {a.shape}, expected ({horizon}, {action_dim})"
    if not np.all(np.isfinite(a)):
        return f"policy returned non-finite actions ({int((~np.isfinite(a)).sum())} values)"
    return None


def pick_candidate(outputs: List[PolicyOutput]) -> int:
    """Best-of-N by predicted value: the first candidate wins unless another scores strictly higher."""
    best = 0
    for i, o in enumerate(outputs):
        v = o.value if o.value == o.value else -math.inf
        b = outputs[best].value if outputs[best].value == outputs[best].value else -math.inf
        if v > b:
            best = i
    return best


class PolicyNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        p = declare(self, PARAMS)
        self.p = p
        from .planning_client import declare_client_params  # best-of-N through the planner node (docs/planning.md)

        self.planning_params = declare_client_params(self)
        if len(p["camera_topics"]) != len(p["camera_slots"]):
            raise ValueError(f"camera_topics ({len(p['camera_topics'])}) and camera_slots ({len(p['camera_slots'])}) "
                             "must have the same length")
        if len(p["arms"]) != 2:
            raise ValueError(f"arms: expected 2 follower namespaces (left, right), got {p['arms']}")
        from ..core.plan_window import PlanWindow

        self.planning_window = PlanWindow.parse(p["planning_window"])  # ValueError: "expected ..., got ..."
        self._planning_backend = None  # the planning wrapper, told about each episode START
        self._episode_start: Optional[float] = None
        if self.planning_window is not None:
            self.create_subscription(EpisodeEvent, p["episode_topic"], self._on_episode, 10)
        size = (p["image_height"], p["image_width"]) if p["image_height"] > 0 and p["image_width"] > 0 else None
        self.assembler = ObservationAssembler(
            ObservationConfig(cameras=p["camera_slots"], max_age=p["max_input_age"],
                              stamp_tolerance=p["stamp_tolerance"], expected_size=size),
            gripper_convention(p["generation"]), joint_name_map(p["joint_names"], p["allow_unnamed_joint_states"]))
        self.rates: Dict[str, dg.RateMeter] = {}
        for topic, slot in zip(p["camera_topics"], p["camera_slots"]):
            self.rates[slot] = dg.RateMeter()
            self.create_subscription(Image, topic, lambda m, s=slot: self._on_image(s, m), qos_profile_sensor_data)
        for side, ns in zip(SIDES, p["arms"]):
            self.rates[f"{side}_joint_states"] = dg.RateMeter()
            self.create_subscription(JointState, "/" + ns.strip("/") + "/joint_states",
                                     lambda m, s=side: self._on_js(s, m), qos_profile_sensor_data)
        self.chunk_pub = self.create_publisher(ActionChunk, "~/action_chunk", 10)
        self.status_pub = self.create_publisher(DiagnosticStatus, "~/status", 10)
        self.value_pub = self.create_publisher(Float32, "~/value", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.future_pubs = {s: self.create_publisher(Image, f"~/future/{s}", 2) for s in p["camera_slots"]} \
            if p["publish_future_images"] else {}

        self.backend = None
        self.schedule: Optional[ReplanSchedule] = None
        self.replan_requests = ReplanRequests(p["replan_request_timeout"])
        self.chunk_end_requests = 0
        self._warned_no_chunk_end = False
        self._link_wait_until: Optional[float] = None  # execution:=pause: first observation waits for the commander
        if p["replan_request_topic"]:
            self.create_subscription(Header, p["replan_request_topic"], self._on_replan_request, 10)
        self._state_lock = threading.Lock()
        self._input_problems: List[str] = ["waiting for inputs"]
        self._infer_fault: Optional[str] = None
        self._config_fault: Optional[str] = None
        self._warning: Optional[str] = None
        self._last_status: Optional[tuple] = None
        self.latency = dg.Stats(200)
        self.chunks_published = 0
        self.inference_failures = 0
        self.inferences_cancelled = 0
        self.invalid_observations = 0
        self._chunk_id = 0
        self._published_at = 0.0  # clock time of the last chunk publication
        self._last_obs_stamp: Optional[float] = None
        self._last_input_log = 0.0
        self.rtc: Optional[RtcConfig] = None
        self.running_chunk: Optional[RunningChunk] = None
        self.rtc_delay: Optional[DelayEstimator] = None
        self.rtc_frozen_last = 0
        self.rtc_chunks = 0
        if p["rtc_trace_topic"]:
            self.create_subscription(Float64MultiArray, p["rtc_trace_topic"], self._on_trace, 50)

        self.add_on_set_parameters_callback(self._on_set_params)
        self.create_timer(1.0 / p["status_rate"], self._on_status_timer)
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run_worker, name="policy-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(f"policy node: checkpoint {p['checkpoint']!r}, task {p['task']!r}, cameras "
                               f"{dict(zip(p['camera_slots'], p['camera_topics']))}, arms {p['arms']}")

    # -- inputs ----------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_replan_request(self, msg: Header) -> None:
        self.replan_requests.add(stamp_to_sec(msg.stamp), self._now())
        why = msg.frame_id or "no reason given"
        if why == "chunk ended":  # every chunk with execution:=pause: routine
            self.chunk_end_requests += 1
            self.get_logger().debug("re-plan requested by the commander (chunk ended)")
        else:
            self.get_logger().info(f"re-plan requested by the commander ({why})")

    def _on_trace(self, msg: Float64MultiArray) -> None:
        rc = self.running_chunk
        if rc is None or len(msg.data) < 9:
            return
        d = msg.data  # TRACE_FIELDS: tick, tick_time, held, hold_code, chunk_id, index, ...
        rc.on_trace(int(d[4]), int(d[5]), float(d[1]), d[2] > 0)

    def _on_image(self, slot: str, msg: Image) -> None:
        self.rates[slot].tick(time.monotonic())
        err = self.assembler.set_image_fields(slot, stamp_to_sec(msg.header.stamp), msg.data, msg.height, msg.width,
                                              msg.encoding, msg.step, msg.is_bigendian)
        if err:
            self.get_logger().error(f"unusable image: {err}", throttle_duration_sec=1.0)

    def _on_js(self, side: str, msg: JointState) -> None:
        self.rates[f"{side}_joint_states"].tick(time.monotonic())
        err = self.assembler.set_joint_state(side, stamp_to_sec(msg.header.stamp), msg.name, msg.position)
        if err:
            self.get_logger().error(f"unusable joint state: {err}", throttle_duration_sec=1.0)

    def _on_set_params(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "test_double_fault":
                if self.backend is None or not hasattr(self.backend, "set_fault"):
                    return SetParametersResult(successful=False,
                                               reason="test_double_fault only applies to the test double backend")
                try:
                    self.backend.set_fault(prm.value)
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                self.get_logger().warning(f"test double fault set to {prm.value!r}")
        return SetParametersResult(successful=True)

    # -- status ------------------------------------------------------------------------------------------
    def _status(self):
        with self._state_lock:
            faults = ([self._config_fault] if self._config_fault else []) + list(self._input_problems) + \
                ([self._infer_fault] if self._infer_fault else [])
            warning = self._warning
        if faults:
            return dg.ERROR, "; ".join(faults)
        if self.backend is None:
            return dg.WARN, "loading policy"
        if warning:
            return dg.WARN, warning
        return dg.OK, "ready"

    def _publish_status(self, force: bool = False) -> None:
        level, message = self._status()
        st = dg.make_status("policy", level, message, {}, "policy")
        self.status_pub.publish(st)
        key = (level, message.split(":")[0])
        if key != self._last_status:
            if self._last_status is not None or level != dg.OK:
                # rclpy forbids changing the severity at one call site: one call per level
                line = f"status {dg.LEVEL_NAMES[level]}: {message}"
                if level == dg.OK:
                    self.get_logger().info(line)
                elif level == dg.WARN:
                    self.get_logger().warning(line)
                else:
                    self.get_logger().error(line)
            self._last_status = key

    def _on_status_timer(self) -> None:
        problems = self.assembler.problems(self._now())
        with self._state_lock:
            self._input_problems = problems
        self._publish_status()

    def _set_input_problems(self, problems: List[str]) -> None:
        with self._state_lock:
            changed = problems != self._input_problems
            self._input_problems = problems
        if changed:
            self._publish_status()

    def _on_episode(self, msg) -> None:
        """An episode START: the planning window counts from its stamp (the commander's clock, as the inputs')."""
        if msg.event != EpisodeEvent.START:
            return
        self._episode_start = stamp_to_sec(msg.header.stamp)
        if self._planning_backend is not None:
            self._planning_backend.start_episode(self._episode_start)

    def _attach_planning(self, backend) -> None:
        self._planning_backend = backend
        if self._episode_start is not None:  # an episode that started while the model loaded
            backend.start_episode(self._episode_start)

    # -- worker ------------------------------------------------------------------------------------------
    def _load(self) -> bool:
        try:
            if not self.p["checkpoint"].strip().startswith("test-double"):
                from ..core.network import configure_torch_threads

                threads = configure_torch_threads(self.p["torch_threads"])
                self.get_logger().info(f"torch CPU threads: {threads}")
            backend = load_backend(self.p["checkpoint"], self.p["device"])
        except Exception as exc:  # noqa: BLE001 - report any loader failure and keep holding
            with self._state_lock:
                self._config_fault = f"cannot load policy {self.p['checkpoint']!r}: {exc}"
            self.get_logger().error(self._config_fault + "\n" + traceback.format_exc())
            self._publish_status()
            return False
        task = self.p["task"]
        known = list(getattr(backend, "instructions", []) or [])
        if known and task not in known:
            with self._state_lock:
                self._config_fault = f"task {task!r} is not one of the policy's instructions {known}"
            self.get_logger().error(self._config_fault)
        if backend.action_dim != ACTION_DIM:
            with self._state_lock:
                self._config_fault = f"policy action_dim {backend.action_dim}, expected {ACTION_DIM}"
            self.get_logger().error(self._config_fault)
        n = self.p["planning_candidates"]
        if n > 1 and self.p["planning_checkpoint"]:
            try:
                from ..core.planner import LocalPlanningBackend, Planner

                model = load_backend(self.p["planning_checkpoint"], self.p["device"])
                backend = LocalPlanningBackend(backend, Planner(model), n, window=self.planning_window)
                self._attach_planning(backend)
            except Exception as exc:  # noqa: BLE001 - a planning setup failure must not go unnoticed
                with self._state_lock:
                    self._config_fault = f"cannot set up planning with {self.p['planning_checkpoint']!r}: {exc}"
                self.get_logger().error(self._config_fault + "\n" + traceback.format_exc())
        if self.planning_params["planning"]:
            if self.p["planning_checkpoint"]:
                with self._state_lock:
                    self._config_fault = ("planning (planner node) and planning_checkpoint (in-process planner) are "
                                          "exclusive: set one")
                self.get_logger().error(self._config_fault)
            else:
                from .planning_client import ClientConfig, PlanningBackend

                params = dict(self.planning_params)
                if n > 1:  # the launch argument's candidate count
                    params["planning_num_candidates"] = n
                backend = PlanningBackend(backend, self, ClientConfig.from_params(params), window=self.planning_window)
                self._attach_planning(backend)
        if self.planning_window is not None and self._planning_backend is None:
            self.get_logger().warning("planning_window is set but no planning runs (it applies with planning:=true, or "
                                      "planning_candidates > 1 with planning_checkpoint): ignored")
        n_exec = int(self.p["execute_horizon"])
        if not 0 <= n_exec <= backend.horizon:
            with self._state_lock:
                self._config_fault = (f"execute_horizon: expected 0 (whole chunk) .. {backend.horizon} (the policy's "
                                      f"horizon), got {n_exec}")
            self.get_logger().error(self._config_fault)
            self._publish_status()
            return False
        self.execute_horizon = n_exec or backend.horizon
        replan_period = self.p["replan_period"]
        try:
            self.rtc = RtcConfig(self.p["rtc"], self.p["rtc_schedule"], self.p["rtc_beta"], self.p["rtc_delay_margin"],
                                 self.p["rtc_execution_horizon"])
            if self.rtc.enabled and self.p["execution"] != "stream":
                # nothing runs while the policy thinks, so there is nothing to freeze: pause ignores rtc
                self.get_logger().info(f"execution {self.p['execution']!r}: real-time chunking (rtc "
                                       f"{self.rtc.method!r}) is not used")
                self.rtc = RtcConfig("off")
        except ValueError as exc:
            with self._state_lock:
                self._config_fault = f"bad real-time chunking parameters: {exc}"
            self.get_logger().error(self._config_fault)
            self._publish_status()
            return False
        self.rtc_delay = DelayEstimator(backend.period, guess=int(math.ceil(self.p["latency_guess"] / backend.period)))
        self.running_chunk = RunningChunk(backend.period)
        try:
            # with rtc: paced by its execution horizon, and rtc_replan_margin instead of replan_margin
            self.schedule = node_schedule(self.execute_horizon, backend.period, replan_period,
                                          self.p["replan_margin"], self.p["rtc_replan_margin"],
                                          self.p["latency_guess"], self.p["execution"],
                                          self.rtc.enabled, self.rtc.execution_horizon)
        except ValueError as exc:  # a bad schedule setting: hold and say why, like any configuration fault
            with self._state_lock:
                self._config_fault = f"bad re-planning parameters: {exc}"
            self.get_logger().error(self._config_fault)
            self._publish_status()
            return False
        if hasattr(backend, "decode_future_images"):
            # Decoding the future images is about half of a CPU query: skip it when nobody looks at them, and
            # otherwise decode after the chunk is out (the arms move ~0.5 s sooner per chunk on 2 CPU cores).
            backend.decode_future_images = "deferred" if self.p["publish_future_images"] else False
        self.backend = backend
        self.get_logger().info(f"policy {backend.policy_id!r} loaded: horizon {backend.horizon}, period "
                               f"{backend.period} s")
        return True

    def _run_worker(self) -> None:
        try:
            if not self._load():
                return
            next_start: Optional[float] = None
            after_chunk = False
            if self.schedule.execution == "pause" and self.p["rtc_trace_topic"]:
                self._link_wait_until = self._now() + max(0.0, float(self.p["commander_link_timeout"]))
            while not self._stop.is_set() and rclpy.ok(context=self.context):
                if self._config_fault:
                    self._stop.wait(0.5)
                    continue
                now = self._now()
                if self._awaiting_commander(now):
                    self._stop.wait(0.02)
                    continue
                requested = self.replan_requests.pending(now) is not None
                due = next_start
                if next_start is not None and after_chunk:  # counted from the chunk's real start (cold starts)
                    due = self.schedule.rebased(next_start, self._last_obs_stamp,
                                                self.running_chunk.started(self._chunk_id))
                if due is not None and now < due and not requested:
                    self._stop.wait(min(0.01, due - now))
                    continue
                if after_chunk and not requested and self._chunk_end_request_due(now, next_start):
                    self._stop.wait(0.01)  # the commander has not reached this chunk's end yet: its request will come
                    continue
                if (after_chunk and not requested and self.schedule.execution == "pause"
                        and not self._warned_no_chunk_end):
                    self._warned_no_chunk_end = True
                    self.get_logger().warning(
                        f"execution 'pause': no chunk-end request from the commander; observing "
                        f"{self.schedule.pause_fallback:.2f} s after the chunk's expected end instead (set the "
                        f"commander's execution parameter to 'pause' too, and its ~/replan_request topic to "
                        f"{self.p['replan_request_topic']!r}; {self._chunk_end_evidence()})")
                obs, problems = self.assembler.assemble(now, self.p["task"])
                if obs is None:
                    self.invalid_observations += 1
                    self._set_input_problems(problems)
                    self._stop.wait(0.01)
                    continue
                self._set_input_problems([])
                # Every input must be newer than a requested time: after an episode start (a scene reset) the
                # joint states are soon new while the last camera frame may still show the scene before it.
                if not self.replan_requests.usable(obs.observed_since, now):
                    self._stop.wait(0.01)  # the commander would refuse a chunk planned from this observation
                    continue
                result = self._infer_once(obs)
                if result == "cancelled":
                    continue  # a newer observation is wanted now: plan from it without waiting
                after_chunk = False
                if result == "failed":
                    next_start = self._now() + self.p["retry_delay"]
                    continue
                self.replan_requests.served(obs.observed_since)
                next_start = self.schedule.next_start(obs.stamp, published=self._published_at)
                after_chunk = True  # the next observation waits for this chunk's end
        except Exception as e:  # noqa: BLE001 - never die silently
            if not rclpy.ok(context=self.context):  # shut down under an inference in flight: not a crash
                self.get_logger().info(f"policy worker stopped: ROS shut down during an inference ({e})")
                return
            self.get_logger().fatal("policy worker crashed:\n" + traceback.format_exc())
            with self._state_lock:
                self._config_fault = "policy worker crashed"
            self._publish_status()

    def _awaiting_commander(self, now: float) -> bool:
        """execution:=pause: hold back the first observation until the commander's trace is heard.

        Every chunk after the first is timed by the commander's chunk-end request, a single message: one sent
        before DDS has matched the commander's publisher with this node's subscription is lost, and the policy
        would fall back to its own clock. Hearing the trace shows the link stands.
        """
        if self._link_wait_until is None:
            return False
        if self.running_chunk is not None and self.running_chunk.latest_tick_time is not None:
            self._link_wait_until = None
            return False
        if now < self._link_wait_until:
            return True
        self._link_wait_until = None
        self.get_logger().warning(
            f"execution 'pause': no commander trace heard on {self.p['rtc_trace_topic']!r} within "
            f"{self.p['commander_link_timeout']:.1f} s; planning without it (chunk-end requests may be lost)")
        return False

    def _chunk_end_request_due(self, now: float, fallback_at: Optional[float]) -> bool:
        """With execution:=pause, whether the commander's chunk-end request may still come for the last chunk.

        The fallback time (``ReplanSchedule.next_start``) counts the chunk's motion from its publication, but on a
        loaded machine the commander may take the chunk, or tick past its end, later than that. Its trace tells
        when it really started the chunk and how far it has got, both on its own clock: while its newest tick is
        not ``pause_fallback`` past the chunk's real end, the request (sent at the end tick) is still to be
        expected, so the observation waits for it. Without a trace, or for a chunk the trace never showed running
        (refused), the fallback time alone decides; a chunk's duration past the fallback time it always does.
        """
        if self.schedule.execution != "pause" or self.running_chunk is None:
            return False
        if fallback_at is not None and now > fallback_at + self.schedule.chunk_duration:
            return False
        end = self.running_chunk.chunk_end(self._chunk_id)
        if end is None:
            return False
        latest = self.running_chunk.latest_tick_time
        return latest is None or latest < end + self.schedule.pause_fallback

    def _chunk_end_evidence(self) -> str:
        """What the policy knows of the commander's progress, for the fallback warning."""
        rc = self.running_chunk
        end = rc.chunk_end(self._chunk_id) if rc is not None else None
        latest = rc.latest_tick_time if rc is not None else None
        trace = ("no commander trace heard" if latest is None else
                 f"trace: chunk {self._chunk_id} " + ("never seen running" if end is None else
                                                      f"ends at {end:.3f}, newest tick {latest:.3f}"))
        return f"{trace}; re-plan requests received so far: {self.replan_requests.received}"

    def _infer_once(self, obs) -> str:
        """One inference and its chunk: "ok" (published), "failed" (fault reported) or "cancelled"."""
        t0 = time.perf_counter()
        n = self.p["planning_candidates"]
        # A commander request for a newer observation (episode start, e-stop reset, fault cleared) makes the
        # chunk being computed one it will refuse: backends that can, stop early instead of finishing it.
        kwargs = {}
        if getattr(self.backend, "supports_cancel", False):
            kwargs["cancel"] = lambda: not self.replan_requests.usable(obs.observed_since, self._now())
        prefix = self._rtc_prefix(obs)
        if prefix is not None:  # every candidate, local or through the planner, is inpainted the same way
            kwargs["prefix"] = prefix
        try:
            if n > 1 and not self.p["planning_checkpoint"] and not self.planning_params["planning"]:
                outs = self.backend.infer_batch(obs, [self.p["seed"] + i for i in range(n)], **kwargs)
                out = outs[pick_candidate(outs)]
            else:
                out = self.backend.infer(obs, seed=self.p["seed"], **kwargs)
            problem = validate_output(out, self.backend.horizon, ACTION_DIM)
        except InferenceCancelled:
            self.inferences_cancelled += 1
            self.get_logger().info(f"inference cancelled after {time.perf_counter() - t0:.2f} s: the commander "
                                   f"wants a chunk observed after {self.replan_requests.pending(self._now())}")
            return "cancelled"
        except Exception as exc:  # noqa: BLE001 - any model failure: hold, report, retry
            problem = f"inference failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(problem + "\n" + traceback.format_exc(), throttle_duration_sec=5.0)
        wall = time.perf_counter() - t0
        if problem:
            self.inference_failures += 1
            with self._state_lock:
                self._infer_fault = problem
            self._publish_status()
            return "failed"
        # Latency from the observation stamp to publication: what the commander experiences.
        latency = self._now() - obs.stamp
        self.schedule.record_latency(latency)
        self.rtc_delay.record(latency)
        self.latency.add(wall)
        warning = None
        if self.schedule.slower_than_chunk and self.schedule.execution == "stream":
            warning = (f"inference slower than the chunk ({self.schedule.latency_estimate:.2f} s >= "
                       f"{self.schedule.chunk_duration:.2f} s): the robot holds between chunks")
            self.get_logger().warning(warning, throttle_duration_sec=2.0)
        with self._state_lock:
            cleared = self._infer_fault is not None
            self._infer_fault = None
            self._warning = warning
        if cleared:
            self.get_logger().info("inference recovered")
        self._publish_status()  # status first: the commander accepts chunks only once the fault is cleared
        self._chunk_id += 1
        sent = out.actions[: self.execute_horizon]
        self.chunk_pub.publish(chunk_to_msg(sent, obs.stamp, self._chunk_id, self.backend.period,
                                            self.backend.policy_id, out.value))
        self._published_at = self._now()  # the pause schedule counts the chunk's motion from here
        self.running_chunk.published(self._chunk_id, obs.stamp, sent, self._published_at)
        self.rtc_frozen_last = 0 if prefix is None else prefix.frozen
        self.rtc_chunks += prefix is not None
        self.chunks_published += 1
        self._last_obs_stamp = obs.stamp
        self.value_pub.publish(Float32(data=float(out.value)))
        future_stamp = obs.stamp + self.backend.horizon * self.backend.period
        try:  # deferred decode (CosmosPolicy): runs while the robot already executes the chunk
            images = out.decode_future()
        except Exception as exc:  # noqa: BLE001 - the chunk is out; the images are for people, not the robot
            images = {}
            self.get_logger().error(f"decoding the predicted future images failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=5.0)
        for slot, img in (images or {}).items():
            pub = self.future_pubs.get(slot)
            if pub is not None:
                pub.publish(rgb_to_image_msg(img, future_stamp, slot))
        return "ok"

    def _rtc_prefix(self, obs):
        """The running chunk's actions this chunk must keep (real-time chunking), or None."""
        if self.rtc is None or not self.rtc.enabled:
            return None
        running = self.running_chunk.running(self._now())
        if running is None:  # nothing runs (start, hold): the commander starts the new chunk at its first action
            return None
        actions, base = running
        return build_prefix(actions, base, obs.stamp, self.backend.period, self.rtc_delay.ticks, self.rtc)

    # -- diagnostics ---------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = self._now()
        mono = time.monotonic()
        ages = self.assembler.ages(now)
        values: Dict[str, object] = {}
        for name, meter in self.rates.items():
            values[f"{name}_rate_hz"] = meter.rate(mono)
            values[f"{name}_age_s"] = ages.get(name, float("nan"))
        lat = self.latency.summary()
        values.update({"inference_latency_last_s": self.latency.last, "inference_latency_p50_s": lat["p50"],
                       "inference_latency_max_s": lat["max"], "chunks_published": self.chunks_published,
                       "inference_failures": self.inference_failures,
                       "inferences_cancelled": self.inferences_cancelled,
                       "invalid_observations": self.invalid_observations,
                       "replan_requests": self.replan_requests.received,
                       "replan_requests_expired": self.replan_requests.expired,
                       "chunk_end_requests": self.chunk_end_requests,
                       "rtc": self.p["rtc"], "rtc_chunks": self.rtc_chunks, "rtc_frozen_last": self.rtc_frozen_last,
                       "rtc_delay_ticks": self.rtc_delay.ticks if self.rtc_delay is not None else 0})
        if self.schedule is not None:
            values.update({"warmup_latency_s": self.schedule.warmup if self.schedule.warmup is not None else float("nan"),
                           "latency_estimate_s": self.schedule.latency_estimate,
                           "trigger_after_observation_s": self.schedule.trigger_offset(),
                           "expected_chunk_margin_s": self.schedule.expected_margin(),
                           "chunk_duration_s": self.schedule.chunk_duration})
        level, message = self._status()
        st = dg.make_status("cosmos_policy_ros: policy", level, message, values, "policy")
        self.diag_pub.publish(dg.make_array(self.get_clock().now().to_msg(), [st]))

    def destroy_node(self):
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> int:
    """Run the policy node until SIGINT."""
    return run_node(PolicyNode, "policy", args)


if __name__ == "__main__":
    sys.exit(main())
