"""Commander node: the 25 Hz loop that sends the planned action of each tick to both ALOHA followers.

Runs in its own process so a slow or crashed policy (GPU) process can never stall or corrupt the command
stream. All decisions live in :class:`~cosmos_policy_ros.ros.commander_logic.CommanderLogic`; this node only
converts messages, publishes exactly the commands the logic's gate returned (and nothing else) and serves the
e-stop / episode services. See docs/runtime.md ("Faults and bad inputs").
"""
from __future__ import annotations

import array
import os
import sys
import threading
import time
import traceback
import uuid
from typing import Dict, Optional, Tuple

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import Trigger
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from cosmos_policy_ros.msg import ActionChunk, EpisodeEvent

from ..core.chunking import ReplanSchedule, SpliceConfig
from ..core.robot import DEFAULT_ARM_LIMITS, JOINT_NAMES, JS_NAMES, SIDES, gripper_convention, joint_name_map
from ..core.safety import SafetyConfig
from . import diagnostics as dg
from .commander_logic import CommanderConfig, CommanderLogic, TickResult, joint_commands
from .conversions import arm_command_msgs, msg_to_chunk, sec_to_stamp, stamp_to_sec
from .params import Param, declare
from .node_main import run_node

PARAMS = (
    Param("period", 0.04, "tick period in seconds (25 Hz); chunks must use the same period"),
    Param("execution", "stream", "the policy node's execution mode; 'pause': when a chunk has run to its end, ask "
          "the policy (~/replan_request) to plan from an observation taken after it, so every chunk starts at its "
          "first action (set both nodes alike; the graph's execution argument does)"),
    Param("blend_ticks", 0, "cross-fade from the old chunk to a new one over this many ticks (0 = switch at once)"),
    Param("generation", "aloha2", "ALOHA generation selecting the gripper command conversion (aloha1 or aloha2)"),
    Param("arms", ["follower_left", "follower_right"], "follower namespaces, left then right"),
    Param("chunk_topic", "/policy/action_chunk", "ActionChunk topic from the policy node"),
    Param("episode_manager", "", "the episode manager node that runs this commander's episodes ('' = none; the "
          "graph's episode_manager argument sets it): `cosmos-policy episode` then always goes through that manager "
          "and never falls back to this node's services because the manager was discovered late"),
    Param("policy_status_topic", "/policy/status", "policy node health (diagnostic_msgs/DiagnosticStatus); "
          "level ERROR makes the commander hold"),
    Param("policy_timeout", 1.0, "hold when the policy status has been silent this long (s); 0 disables"),
    Param("joint_state_max_age", 0.25, "hold when a follower's joint states are older than this (s), or stamped "
          "further than this in the future"),
    Param("joint_names", list(JS_NAMES), "published JointState name of each Interbotix joint (waist, shoulder, "
          "elbow, forearm_roll, wrist_angle, wrist_rotate, gripper, left_finger, right_finger), both followers; "
          "joint states are read by name, in any order, extra joints ignored"),
    Param("allow_unnamed_joint_states", False, "accept JointState messages with an empty name list in the index "
          "layout of joint_names (otherwise they are a fault: the order cannot be checked)"),
    Param("chunk_future_tolerance", 0.2, "reject a chunk stamped further than this in the future (s)"),
    Param("arm_lower_limits", [float(lo) for lo, _ in DEFAULT_ARM_LIMITS], "arm joint lower limits (rad), 6 values"),
    Param("arm_upper_limits", [float(hi) for _, hi in DEFAULT_ARM_LIMITS], "arm joint upper limits (rad), 6 values"),
    Param("gripper_min", 0.0, "lowest normalised gripper command (0 = closed)"),
    Param("gripper_max", 1.0, "highest normalised gripper command (1 = open)"),
    Param("max_step_arm", 0.1, "largest arm joint change per tick, both directions (rad)"),
    Param("max_step_gripper", 0.2, "largest normalised gripper change per tick, both directions"),
    Param("max_deviation", 0.0, "largest |command - measured| per arm joint (rad), applied to chunk actions before "
          "the limit and step clamps; 0 disables"),
    Param("fresh_chunks_on_episode_start", True, "~/start_episode stops the running chunk and holds until a chunk "
          "observed after the start arrives (every action of an episode is planned inside it; a reset scene is not "
          "driven by a chunk planned for the old one)"),
    Param("hold_at_measured_on_episode_start", True, "with fresh_chunks_on_episode_start: hold where the robot "
          "is (joint states newer than the start) rather than at the last command, so a robot moved between "
          "episodes (simulator reset, operator) is not pulled back"),
    Param("task", "", "task instruction recorded in episode events"),
    Param("policy_id", "", "policy identifier recorded in episode events (default: from the chunks)"),
    Param("diagnostics_period", 1.0, "seconds between /diagnostics messages"),
    Param("publish_trace", True, "publish the per-tick trace on ~/trace (Float64MultiArray, see TRACE_FIELDS)"),
    Param("nice", 0, "process niceness to request at start (e.g. -10 so a loaded computer does not delay ticks; "
          "negative values need CAP_SYS_NICE; 0 leaves it unchanged)"),
)


class CommanderNode(Node):
    """Subscribes to joint states, chunks and policy status; publishes Interbotix commands at each tick."""

    def __init__(self, **kwargs):
        super().__init__("commander", **kwargs)
        p = declare(self, PARAMS)
        self.p = p
        if len(p["arms"]) != 2:
            raise ValueError(f"arms: expected 2 follower namespaces (left, right), got {p['arms']}")
        if p["nice"]:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, int(p["nice"]))
            except OSError as exc:
                self.get_logger().warning(f"could not set niceness {p['nice']}: {exc} (ticks may be late under load)")
        self.gripper = gripper_convention(p["generation"])
        safety = SafetyConfig(arm_limits=list(zip(p["arm_lower_limits"], p["arm_upper_limits"])),
                              gripper_min=p["gripper_min"], gripper_max=p["gripper_max"],
                              max_step_arm=p["max_step_arm"], max_step_gripper=p["max_step_gripper"],
                              max_deviation=p["max_deviation"])
        if p["execution"] not in ReplanSchedule.EXECUTIONS:
            raise ValueError(f"execution: expected one of {ReplanSchedule.EXECUTIONS}, got {p['execution']!r}")
        self.logic = CommanderLogic(SpliceConfig(period=p["period"], blend_ticks=p["blend_ticks"]), safety,
                                    self.gripper, CommanderConfig(
                                        p["joint_state_max_age"], p["policy_timeout"],
                                        replan_on_chunk_end=p["execution"] == "pause",
                                        joints=joint_name_map(p["joint_names"], p["allow_unnamed_joint_states"]),
                                        chunk_future_tolerance=p["chunk_future_tolerance"]))
        self._lock = threading.Lock()  # callbacks and timer share the logic (single-threaded executor anyway)
        from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand

        self.group_pubs: Dict[str, object] = {}
        self.single_pubs: Dict[str, object] = {}
        self.js_rates = {s: dg.RateMeter() for s in SIDES}
        for side, ns in zip(SIDES, p["arms"]):
            ns = "/" + ns.strip("/")
            self.group_pubs[side] = self.create_publisher(JointGroupCommand, f"{ns}/commands/joint_group", 10)
            self.single_pubs[side] = self.create_publisher(JointSingleCommand, f"{ns}/commands/joint_single", 10)
            self.create_subscription(JointState, f"{ns}/joint_states", lambda m, s=side: self._on_js(s, m),
                                     qos_profile_sensor_data)  # best effort: matches reliable and best-effort drivers
        self.create_subscription(ActionChunk, p["chunk_topic"], self._on_chunk, 10)
        self.create_subscription(DiagnosticStatus, p["policy_status_topic"], self._on_status, 10)
        self.trace_pub = self.create_publisher(Float64MultiArray, "~/trace", 50) if p["publish_trace"] else None
        self.action_pub = self.create_publisher(JointState, "~/action", 10)
        # "plan from an observation newer than header.stamp, now" (episode start, e-stop reset, fault cleared)
        self.replan_pub = self.create_publisher(Header, "~/replan_request", 10)
        self.episode_pub = self.create_publisher(EpisodeEvent, "/episode", QoSProfile(depth=10))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/estop", self._srv_estop)
        self.create_service(Trigger, "~/reset_estop", self._srv_reset)
        self.create_service(Trigger, "~/start_episode", self._srv_start)
        self.create_service(Trigger, "~/episode_status", self._srv_episode_status)
        self.create_service(Trigger, "~/stop_episode", self._srv_stop)
        self.episode_id = ""
        self.chunk_policy_id = ""
        self.tick_periods = dg.Stats(1000)
        self._last_tick_mono: Optional[float] = None
        self._last_logged_reason: Optional[str] = None
        self._last_safety_log = 0.0
        self._last_refusal = ""
        self.timer = self.create_timer(p["period"], self._on_tick)
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        self.get_logger().info(
            f"commander: {1.0 / p['period']:.1f} Hz, generation {p['generation']}, arms {p['arms']}, "
            f"blend_ticks {p['blend_ticks']}, max_step_arm {p['max_step_arm']} rad, execution {p['execution']}")

    # -- helpers ---------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- callbacks ------------------------------------------------------------------------------------
    def _on_js(self, side: str, msg: JointState) -> None:
        self.js_rates[side].tick(time.monotonic())
        with self._lock:
            err = self.logic.on_joint_state(side, stamp_to_sec(msg.header.stamp), msg.name, msg.position)
        if err:
            self.get_logger().error(f"bad joint state: {err}", throttle_duration_sec=1.0)

    def _on_status(self, msg: DiagnosticStatus) -> None:
        ok = dg.status_level(msg) != dg.ERROR
        with self._lock:
            line = self.logic.on_policy_status(ok, msg.message, self._now())
        if line and ok:
            self.get_logger().info(line)
        elif line:
            self.get_logger().error(line)

    def _on_chunk(self, msg: ActionChunk) -> None:
        stamp = stamp_to_sec(msg.header.stamp)
        try:
            chunk = msg_to_chunk(msg)
        except ValueError as exc:
            with self._lock:
                self.logic.reject_chunk(msg.chunk_id, stamp, "malformed", str(exc))
                line = self.logic.last_rejection
            self.get_logger().error(f"rejected {line}", throttle_duration_sec=1.0)
            return
        if list(msg.joint_names) and list(msg.joint_names) != list(JOINT_NAMES):
            with self._lock:
                self.logic.reject_chunk(msg.chunk_id, stamp, "joint_names", f"{list(msg.joint_names)} are not the "
                                        f"ALOHA layout {list(JOINT_NAMES)}")
                line = self.logic.last_rejection
            self.get_logger().error(f"rejected {line}", throttle_duration_sec=5.0)
            return
        self.chunk_policy_id = chunk.policy_id
        with self._lock:
            acc = self.logic.on_chunk(chunk, self._now())
            line = self.logic.last_rejection
        if acc.accepted:
            self.get_logger().debug(f"chunk {acc.chunk_id} from tick {acc.first_tick} at index {acc.start_index} "
                                    f"({acc.reason}, margin {acc.margin_ticks} ticks)")
        elif acc.reason != "pending_fault":
            log = self.get_logger().error if acc.reason in ("nonfinite", "future_stamp") else \
                self.get_logger().warning
            log(f"rejected {line}", throttle_duration_sec=1.0)

    def _on_tick(self) -> None:
        mono = time.monotonic()
        if self._last_tick_mono is not None:
            self.tick_periods.add(mono - self._last_tick_mono)
        self._last_tick_mono = mono
        now = self._now()
        try:
            with self._lock:
                res = self.logic.tick(now)
                missed_total = self.logic.clock.missed_total
                refusal = self.logic.refusal
                replan = self._take_replan()
        except Exception:  # noqa: BLE001 - a bug must not kill the loop; publishing nothing keeps the motors still
            self.get_logger().error("tick failed, nothing published:\n" + traceback.format_exc(),
                                    throttle_duration_sec=1.0)
            return
        if res is not None:  # None: no joint states yet, or the gate refuses to start: publish nothing
            self._publish(res, now, missed_total)
            self._log_transitions(res)
        if refusal and refusal != self._last_refusal:
            self.get_logger().error(f"publishing nothing: {refusal}")
        self._last_refusal = refusal
        self._request_replan(replan)  # fault cleared, or a chunk ran out with execution:=pause

    def _take_replan(self) -> Optional[Tuple[float, str]]:
        """The logic's pending re-plan request and its reason, or None (call with ``self._lock`` held)."""
        after = self.logic.take_replan_request()
        return None if after is None else (after, self.logic.replan_reason)

    def _request_replan(self, request: Optional[Tuple[float, str]]) -> None:
        """Publish a re-plan request taken with :meth:`_take_replan`; None (nothing new to ask) publishes nothing."""
        if request is None:
            return
        after, why = request
        msg = Header()
        msg.stamp = sec_to_stamp(after)
        msg.frame_id = why
        self.replan_pub.publish(msg)

    def _publish(self, res: TickResult, now: float, missed_total: int) -> np.ndarray:
        """Publish one tick's command, which the logic's gate returned; returns what was sent (14,)."""
        for side, (joints, grip) in joint_commands(res.command, self.gripper).items():
            group, single = arm_command_msgs(joints, grip)
            self.group_pubs[side].publish(group)
            self.single_pubs[side].publish(single)
        act = JointState()
        act.header.stamp = sec_to_stamp(self.logic.clock.time_of(res.tick))
        act.name = list(JOINT_NAMES)
        act.position = array.array("d", np.asarray(res.command, dtype=np.float64).tobytes())
        self.action_pub.publish(act)
        if self.trace_pub is not None:
            tr = Float64MultiArray()
            tr.data = array.array("d", res.trace(missed_total, self.logic.clock.time_of(res.tick)))
            self.trace_pub.publish(tr)
        return res.command

    def _log_transitions(self, res: TickResult) -> None:
        log = self.get_logger()
        if res.missed:
            log.warning(f"missed {res.missed} tick(s) before tick {res.tick} (timer late)")
        # one line per change of state (not per change of the numbers inside a reason)
        key = (res.hold_code, res.reason.split(":")[0]) if res.held else "running"
        if key != self._last_logged_reason:
            if res.held:
                log.warning(f"holding at tick {res.tick}: {res.reason}")
            else:
                log.info(f"running chunk {res.chunk_id} from index {res.index} at tick {res.tick}")
            self._last_logged_reason = key
        if res.safety_kinds and time.monotonic() - self._last_safety_log > 1.0:
            self._last_safety_log = time.monotonic()
            log.warning(f"safety filter changed the command at tick {res.tick}: {'; '.join(res.safety_reasons)}")

    # -- services ----------------------------------------------------------------------------------------
    def _srv_estop(self, request, response):
        with self._lock:
            self.logic.estop("service")
        self.get_logger().error("E-STOP engaged: holding until ~/reset_estop")
        if self.episode_id:
            self._episode_event(EpisodeEvent.STOP, reason="estop")
            self.episode_id = ""
        response.success, response.message = True, "e-stop engaged; holding"
        return response

    def _srv_reset(self, request, response):
        with self._lock:
            was = self.logic.estopped
            msg = self.logic.reset_estop(self._now())
            replan = self._take_replan()
        self._request_replan(replan)
        self.get_logger().warning(msg)
        response.success, response.message = was, msg
        return response

    def _episode_event(self, event: int, reason: str = "", stamp: Optional[float] = None) -> EpisodeEvent:
        ev = EpisodeEvent()
        ev.header.stamp = self.get_clock().now().to_msg() if stamp is None else sec_to_stamp(stamp)
        ev.event = event
        ev.episode_id = self.episode_id
        ev.task = self.p["task"]
        ev.policy_id = self.p["policy_id"] or self.chunk_policy_id
        ev.reason = reason
        ev.outcome = ""
        ev.success_score = float("nan")
        self.episode_pub.publish(ev)
        return ev

    def _srv_episode_status(self, request, response):
        """success: an episode runs (message: its id); else message "e-stop latched" or "no episode running"."""
        with self._lock:
            estopped = self.logic.estopped
        response.success = bool(self.episode_id)
        response.message = self.episode_id or ("e-stop latched" if estopped else "no episode running")
        return response

    def _srv_start(self, request, response):
        with self._lock:
            estopped = self.logic.estopped
        if estopped:  # the robot stays latched: no START event, so no bag of a robot that cannot move
            response.success = False
            response.message = "e-stop latched, no episode started; release it first: cosmos-policy episode reset"
            self.get_logger().warning(f"start_episode refused: {response.message}")
            return response
        if self.episode_id:
            self._episode_event(EpisodeEvent.STOP, reason="restarted")
        # one instant for both: the START stamp is the time after which chunks are accepted (a chunk observed
        # between two separate clock reads would count for the commander yet precede the episode in the bag)
        t_start = self._now()
        if self.p["fresh_chunks_on_episode_start"]:
            with self._lock:
                self.logic.begin_episode(t_start, self.p["hold_at_measured_on_episode_start"])
                replan = self._take_replan()
            self._request_replan(replan)
        self.episode_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._episode_event(EpisodeEvent.START, stamp=t_start)
        self.get_logger().info(f"episode {self.episode_id} started")
        response.success, response.message = True, self.episode_id
        return response

    def _srv_stop(self, request, response):
        if not self.episode_id:
            response.success, response.message = False, "no episode running"
            return response
        self._episode_event(EpisodeEvent.STOP, reason="operator")
        self.get_logger().info(f"episode {self.episode_id} stopped")
        response.success, response.message = True, self.episode_id
        self.episode_id = ""
        return response

    # -- diagnostics ---------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        mono = time.monotonic()
        now = self._now()
        with self._lock:
            lg = self.logic
            ticks = lg.clock.tick
            margins = list(lg.margins)
            values = {
                "ticks": lg.ticks, "missed_ticks": lg.clock.missed_total, "ticks_held": lg.held_ticks,
                "hold_reason": lg.hold_reason or "none", "estop": lg.estopped,
                "hold_reasons": dict(lg.hold_reasons) or "none",
                "safety_interventions": lg.safety_interventions, "safety_faults": lg.safety_faults,
                "safety_kinds": dict(lg.safety_kinds) or "none",
                "last_safety_reasons": "; ".join(lg.last_safety_reasons) or "none",
                "chunks_accepted": lg.chunks_accepted, "chunks_rejected": dict(lg.chunks_rejected) or "none",
                "last_chunk_rejected": lg.last_rejection or "none", "refusal": lg.refusal or "none",
                "chunk_margin_last_ticks": margins[-1] if margins else "n/a",
                "chunk_margin_min_ticks": min(margins) if margins else "n/a",
                "active_chunk": lg.splicer.active_chunk_id, "episode": self.episode_id or "none",
            }
            for side in SIDES:
                st = lg._arms.get(side)
                values[f"{side}_joint_states_age_s"] = (now - st.stamp) if st else float("nan")
                values[f"{side}_joint_states_rate_hz"] = self.js_rates[side].rate(mono)
        tp = self.tick_periods.summary()
        values.update({"tick_period_p50_s": tp["p50"], "tick_period_p99_s": tp["p99"], "tick_period_max_s": tp["max"]})
        if lg.refusal:
            level, message = dg.ERROR, f"publishing nothing: {lg.refusal}"
        elif ticks is None or values["ticks"] == 0:
            level, message = dg.WARN, "waiting for joint states (publishing nothing)"
        elif lg.estopped:
            level, message = dg.ERROR, "e-stop latched"
        elif lg.hold_reason:
            level, message = dg.WARN, f"holding: {lg.hold_reason}"
        else:
            level, message = dg.OK, "running"
        st = dg.make_status("cosmos_policy_ros: commander", level, message, values, "aloha")
        self.diag_pub.publish(dg.make_array(self.get_clock().now().to_msg(), [st]))


def main(args=None) -> int:
    """Run the commander until SIGINT."""
    return run_node(CommanderNode, "commander", args)


if __name__ == "__main__":
    sys.exit(main())
