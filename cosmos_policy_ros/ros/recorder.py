"""Recorder node: wires ROS to the episode bag writer (:mod:`cosmos_policy_ros.core.episode_bag`).

The node subscribes ``raw=True`` to every configured topic (the CDR bytes go straight to the bag, nothing is
deserialised); a callback only hands ``(topic, receive time, bytes)`` to the writer's queue. Episodes are
bounded by :class:`EpisodeEvent` START / STOP messages on ``/episode``; the outcome label comes as an OUTCOME
event or through the ``~/label_episode`` service (``cosmos-policy outcome`` asks for it).

QoS is matched to the publishers as rosbag2 does: a topic is subscribed best-effort when any publisher
offers best-effort (many camera drivers do) and transient-local only when every publisher offers it; the
node re-checks the publishers every ``qos_check_period_s`` and at each episode START, re-subscribes when the
match changes, and writes the publishers' offered profiles into each bag's channel metadata.
``/diagnostics`` names topics without a publisher and topics whose publishers the subscription cannot hear.
SIGINT / SIGTERM drain the queue and close the bag properly.
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from cosmos_policy_ros.core.episode_bag import (  # noqa: F401  (names re-exported for scripts and benchmarks)
    ACTION_CHUNK_TYPE, DIAGNOSTICS_TYPE, EPISODE_EVENT_TYPE, GROUP_COMMAND_TYPE, IMAGE_TYPE, JOINT_STATE_TYPE,
    METADATA_FORMAT, SINGLE_COMMAND_TYPE, EpisodeBagWriter, EpisodeMeta, OfferedQos, RecorderConfig,
    RecorderSetupError, TopicSpec, adapt_to_offers, build_typestore, check_output_dir, incompatible_offers,
    parse_extra_topic)

#: Default topics (the ALOHA graph) and their types; every one is a node parameter.
DEFAULT_CAMERA_TOPICS = (
    "/cam_high/camera/color/image_rect_raw",
    "/cam_left_wrist/camera/color/image_rect_raw",
    "/cam_right_wrist/camera/color/image_rect_raw",
)
DEFAULT_JOINT_STATE_TOPICS = ("/follower_left/joint_states", "/follower_right/joint_states")
DEFAULT_GROUP_COMMAND_TOPICS = ("/follower_left/commands/joint_group", "/follower_right/commands/joint_group")
DEFAULT_SINGLE_COMMAND_TOPICS = ("/follower_left/commands/joint_single", "/follower_right/commands/joint_single")


def import_message_class(msgtype: str) -> Any:
    """``pkg/msg/Name`` -> the generated Python class (needed to subscribe, even raw)."""
    pkg, sub, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as exc:
        raise RecorderSetupError(f"recorder: message type {msgtype} is not installed ({exc})") from exc


# ----------------------------------------------------------------------------------------------------------
# The node


def _declare(node: Any, name: str, default: Any, description: str) -> Any:
    from rcl_interfaces.msg import ParameterDescriptor

    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value


def config_from_parameters(node: Any) -> RecorderConfig:
    """Declare the recorder's parameters on ``node`` and build a validated :class:`RecorderConfig`."""
    p = lambda n, d, desc: _declare(node, n, d, desc)  # noqa: E731
    image_depth = int(p("image_queue_depth", 30, "subscription queue depth for image topics"))
    depth = int(p("queue_depth", 200, "subscription queue depth for all other topics"))
    topics: List[TopicSpec] = []
    for t in p("camera_topics", list(DEFAULT_CAMERA_TOPICS), "sensor_msgs/Image topics to record"):
        topics.append(TopicSpec(t, IMAGE_TYPE, image_depth))
    for t in p("joint_state_topics", list(DEFAULT_JOINT_STATE_TOPICS), "sensor_msgs/JointState topics (followers)"):
        topics.append(TopicSpec(t, JOINT_STATE_TYPE, depth))
    for t in p("joint_group_command_topics", list(DEFAULT_GROUP_COMMAND_TOPICS),
               "interbotix_xs_msgs/JointGroupCommand topics (arm commands)"):
        topics.append(TopicSpec(t, GROUP_COMMAND_TYPE, depth))
    for t in p("joint_single_command_topics", list(DEFAULT_SINGLE_COMMAND_TOPICS),
               "interbotix_xs_msgs/JointSingleCommand topics (gripper commands)"):
        topics.append(TopicSpec(t, SINGLE_COMMAND_TYPE, depth))
    for name, default, mtype_default, desc in (
            ("action_chunk_topic", "/action_chunk", ACTION_CHUNK_TYPE, "ActionChunk topic ('' = none)"),
            ("value_topic", "/policy/value", "std_msgs/msg/Float32", "predicted value topic ('' = none)"),
            ("diagnostics_topic", "/diagnostics", DIAGNOSTICS_TYPE, "diagnostics topic ('' = none)")):
        topic = p(name, default, desc)
        mtype = p(name.replace("_topic", "_type"), mtype_default, f"message type of {name}")
        if topic:
            topics.append(TopicSpec(topic, mtype, depth))
    for extra in p("extra_topics", [""], "more topics to record, each '/topic:pkg/msg/Name'"):
        if extra.strip():
            topics.append(parse_extra_topic(extra, depth))
    return RecorderConfig(
        output_dir=p("output_dir", "~/cosmos_policy_bags", "directory that receives one bag per episode"),
        topics=topics,
        episode_topic=p("episode_topic", "/episode", "EpisodeEvent topic (START/STOP/OUTCOME); always recorded"),
        storage=p("storage", "mcap", "rosbag2 storage: mcap (crash-recoverable) or sqlite3"),
        min_free_space_mb=float(p("min_free_space_mb", 2048.0, "refuse to start (or start an episode) below this")),
        flush_interval_s=float(p("flush_interval_s", 0.25, "close the MCAP chunk and flush at least this often")),
        fsync=bool(p("fsync", False, "fsync on every flush (survives power loss, costs throughput)")),
        max_queue_mb=float(p("max_queue_mb", 2048.0, "writer queue limit; beyond it messages are dropped and counted")),
        gripper_generation=p("gripper_generation", "aloha2", "ALOHA generation, stored in the bag for the converter"),
        msg_search_paths=[s for s in p("msg_search_paths", [""], "extra roots holding <pkg>/msg/<Name>.msg") if s],
    )


def offered_qos_from_profile(profile: Any) -> OfferedQos:
    """An rclpy ``QoSProfile`` (as ``get_publishers_info_by_topic`` reports a publisher's) -> :class:`OfferedQos`."""
    def name(policy: Any) -> str:
        return str(getattr(policy, "name", policy)).lower()

    def ns(duration: Any) -> int:
        return int(getattr(duration, "nanoseconds", duration))

    return OfferedQos(name(profile.history), int(profile.depth), name(profile.reliability), name(profile.durability),
                      ns(profile.deadline), ns(profile.lifespan), name(profile.liveliness),
                      ns(profile.liveliness_lease_duration), bool(profile.avoid_ros_namespace_conventions))


def match_policies(offers: Sequence[OfferedQos], reliability: str, durability: str) -> Tuple[str, str]:
    """The (reliability, durability) to subscribe with: a parameter's fixed value, or ``auto`` = rosbag2's rule."""
    auto_rel, auto_dur = adapt_to_offers(offers)
    return (auto_rel if reliability == "auto" else reliability, auto_dur if durability == "auto" else durability)


def recorder_status(stats: Any, recording: bool, silent: Sequence[str],
                    incompatible: Dict[str, str]) -> Tuple[str, str, List[Tuple[str, str]]]:
    """(level ok/warn/error, message, key/values) of the recorder's diagnostics status.

    ERROR while the current episode's writing failed (until an episode opens cleanly) or dropped messages;
    WARN while recording with topics that have no publisher or publishers the subscription cannot hear.
    """
    if stats.current_error:
        level, message = "error", stats.current_error
    elif stats.episode_dropped:
        level, message = "error", f"dropped {stats.episode_dropped} message(s) this episode (writer queue full)"
    elif incompatible:
        level, message = "warn", "incompatible QoS on " + ", ".join(sorted(incompatible))
    elif recording and silent:
        level, message = "warn", "recording; no publisher on " + ", ".join(silent)
    else:
        level, message = "ok", "recording" if recording else "idle"
    values = [("recording", str(recording)), ("written", str(stats.written)), ("bytes_written", str(stats.bytes_written)),
              ("dropped_queue_full", str(stats.dropped_queue_full)),
              ("dropped_write_failed", str(stats.dropped_write_failed)), ("queue_bytes", str(stats.queue_bytes)),
              ("max_queue_bytes", str(stats.max_queue_bytes)), ("episodes", str(stats.episodes)),
              ("no publisher", ", ".join(silent)),
              ("incompatible QoS", "; ".join(f"{t}: {why}" for t, why in sorted(incompatible.items())))]
    values += [(f"written {topic}", str(n)) for topic, n in list(stats.per_topic.items())]
    return level, message, values


def make_node_class():
    """Build the Node subclass lazily so this module imports without initialising rclpy."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.srv import LabelEpisode

    class RecorderNode(Node):
        """Subscribes raw to the configured topics and records one bag per episode."""

        def __init__(self, **kwargs: Any):
            super().__init__("recorder", **kwargs)
            self.config = config_from_parameters(self)
            self.reliability = _declare(self, "reliability", "auto",
                                        "subscription reliability: auto (best_effort when any publisher offers "
                                        "best_effort, else reliable, as rosbag2 does), reliable or best_effort")
            if self.reliability not in ("auto", "reliable", "best_effort"):
                raise RecorderSetupError(
                    f"recorder: expected reliability auto, reliable or best_effort, got {self.reliability!r}")
            self.durability = _declare(self, "durability", "auto",
                                       "subscription durability: auto (transient_local when every publisher "
                                       "offers it, else volatile, as rosbag2 does), volatile or transient_local")
            if self.durability not in ("auto", "volatile", "transient_local"):
                raise RecorderSetupError(
                    f"recorder: expected durability auto, volatile or transient_local, got {self.durability!r}")
            qos_period = float(_declare(self, "qos_check_period_s", 1.0,
                                        "look for new publishers (and re-match the QoS) this often"))
            history = _declare(self, "history", "keep_all",
                               "subscription history: keep_all (DDS keeps every unread sample; no reader-side "
                               "loss while the node catches up) or keep_last (queue_depth / image_queue_depth)")
            if history not in ("keep_last", "keep_all"):
                raise RecorderSetupError(f"recorder: expected history keep_last or keep_all, got {history!r}")
            self.executor_kind = _declare(self, "executor", "events",
                                          "events (rclpy EventsExecutor, lowest overhead; falls back when "
                                          "missing) or single_threaded")
            if self.executor_kind not in ("events", "single_threaded"):
                raise RecorderSetupError(
                    f"recorder: expected executor events or single_threaded, got {self.executor_kind!r}")
            self.stop_grace_s = float(_declare(self, "stop_grace_s", 0.5,
                                               "after STOP keep recording this long (late messages of the episode)"))
            self._stop_timer = None
            _declare(self, "shutdown_drain_s", 0.3, "on SIGINT/SIGTERM keep receiving this long before closing")
            publish_diag = bool(_declare(self, "publish_diagnostics", True, "publish recorder status at 1 Hz"))
            # Fail early and clearly: output directory, free space, message definitions.
            typestore = build_typestore([t.msgtype for t in self.config.topics] + [EPISODE_EVENT_TYPE],
                                        self.config.msg_search_paths)
            self.writer = EpisodeBagWriter(self.config, typestore, clock_ns=self._now_ns,
                                           log=lambda m: self.get_logger().info(m),
                                           log_error=lambda m: self.get_logger().error(m))
            self._history = HistoryPolicy.KEEP_ALL if history == "keep_all" else HistoryPolicy.KEEP_LAST
            self._classes = {spec.topic: import_message_class(spec.msgtype) for spec in self.config.topics}
            self._subs: Dict[str, Any] = {}  # topic -> subscription
            self._sub_policies: Dict[str, Tuple[str, str]] = {}  # topic -> (reliability, durability) subscribed
            self._offers: Dict[str, List[OfferedQos]] = {}
            self._incompatible_events: Dict[str, str] = {}  # topic -> what rmw reported
            self._check_qos()
            self.create_timer(qos_period, self._check_qos)
            self._episode_sub = self.create_subscription(EpisodeEvent, self.config.episode_topic, self._on_episode,
                                                         QoSProfile(depth=100))
            self._serialize = serialize_message
            self._label_srv = self.create_service(LabelEpisode, "~/label_episode", self._on_label)
            self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10) if publish_diag else None
            self._diag_types = (DiagnosticArray, DiagnosticStatus, KeyValue)
            if publish_diag:
                self.create_timer(1.0, self._publish_diagnostics)
            self.get_logger().info(
                f"recorder ready: {len(self.config.topics)} topics -> {self.writer.output_dir} "
                f"({self.config.storage}); episodes from {self.config.episode_topic}; "
                f"label service {self._label_srv.srv_name}")

        def _subscribe(self, spec: TopicSpec, reliability: str, durability: str) -> None:
            old = self._subs.pop(spec.topic, None)
            if old is not None:
                self.destroy_subscription(old)
            qos = QoSProfile(depth=spec.depth, history=self._history,
                             reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                             else ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if durability == "transient_local"
                             else DurabilityPolicy.VOLATILE)
            events = SubscriptionEventCallbacks(incompatible_qos=lambda ev, t=spec.topic: self._on_incompatible(t, ev))
            self._subs[spec.topic] = self.create_subscription(
                self._classes[spec.topic], spec.topic, self._make_callback(spec.topic), qos, raw=True,
                event_callbacks=events)
            self._sub_policies[spec.topic] = (reliability, durability)
            self._incompatible_events.pop(spec.topic, None)

        def _on_incompatible(self, topic: str, event: Any) -> None:
            kind = getattr(getattr(event, "last_policy_kind", None), "name", str(getattr(event, "last_policy_kind", "")))
            self._incompatible_events[topic] = f"rmw reports an incompatible publisher ({kind.lower()})"

        def _check_qos(self) -> None:
            """Match each subscription to its publishers' offered QoS (re-subscribing when that changes) and hand
            the offers to the writer for the channel metadata."""
            for spec in self.config.topics:
                try:
                    infos = self.get_publishers_info_by_topic(spec.topic)
                except Exception:  # the graph is being torn down
                    return
                offers = [offered_qos_from_profile(i.qos_profile) for i in infos]
                if offers != self._offers.get(spec.topic):  # publishers changed: an old rmw report is stale
                    self._incompatible_events.pop(spec.topic, None)
                self._offers[spec.topic] = offers
                self.writer.set_offered_qos(spec.topic, offers)
                if not offers and spec.topic in self._sub_policies:
                    continue  # nobody to match: keep the subscription a returning publisher last matched
                wanted = match_policies(offers, self.reliability, self.durability)
                if self._sub_policies.get(spec.topic) != wanted:
                    if spec.topic in self._sub_policies:
                        self.get_logger().info(
                            f"recorder: {spec.topic}: subscribing {wanted[0]}/{wanted[1]} to match "
                            f"{len(offers)} publisher(s)")
                    self._subscribe(spec, *wanted)
            try:  # the episode topic's own subscription is fixed (reliable); its offers still go in the bag
                infos = self.get_publishers_info_by_topic(self.config.episode_topic)
            except Exception:
                return
            self.writer.set_offered_qos(self.config.episode_topic,
                                        [offered_qos_from_profile(i.qos_profile) for i in infos])

        def topic_health(self) -> Tuple[List[str], Dict[str, str]]:
            """(topics without a publisher, {topic: why some publishers cannot be heard})."""
            silent, incompatible = [], {}
            for spec in self.config.topics:
                offers = self._offers.get(spec.topic, [])
                if not offers:
                    silent.append(spec.topic)
                    continue
                why = incompatible_offers(offers, *self._sub_policies.get(spec.topic, ("reliable", "volatile")))
                if spec.topic in self._incompatible_events:
                    why.append(self._incompatible_events[spec.topic])
                if why:
                    incompatible[spec.topic] = "; ".join(why)
            return silent, incompatible

        def _now_ns(self) -> int:
            return self.get_clock().now().nanoseconds

        def _make_callback(self, topic: str) -> Callable[[bytes], None]:
            enqueue = self.writer.enqueue
            now = self._now_ns

            def on_message(data: bytes) -> None:
                enqueue(topic, now(), data)

            return on_message

        def _on_episode(self, msg: Any) -> None:
            t = self._now_ns()
            raw = self._serialize(msg)
            topic = self.config.episode_topic
            if msg.event == EpisodeEvent.START:
                meta = EpisodeMeta(msg.episode_id or f"episode_{t}", msg.task, msg.policy_id, start_time_ns=t)
                self._check_qos()  # the bag's channels carry the QoS offered now
                try:
                    self.writer.start_episode(meta)
                except RecorderSetupError as exc:
                    self.get_logger().error(str(exc))
                    return
                self.writer.enqueue(topic, t, raw)
            elif msg.event == EpisodeEvent.STOP:
                self.writer.enqueue(topic, t, raw)
                if self.writer.request_stop(msg.reason, t) is None:
                    self.get_logger().warning(f"STOP for {msg.episode_id!r} but no episode is recording")
                elif self.stop_grace_s <= 0:
                    self.writer.finish_stop()
                else:
                    self._arm_stop_timer()
            elif msg.event == EpisodeEvent.OUTCOME:
                self.writer.enqueue(topic, t, raw)
                ok, text, _ = self.writer.label(msg.episode_id, msg.outcome, float(msg.success_score), msg.note)
                (self.get_logger().info if ok else self.get_logger().error)(f"OUTCOME event: {text}")
            else:
                self.get_logger().warning(f"ignoring EpisodeEvent with unknown event {msg.event}")

        def _arm_stop_timer(self) -> None:
            if self._stop_timer is not None:
                self._stop_timer.cancel()
                self.destroy_timer(self._stop_timer)

            def fire() -> None:
                timer, self._stop_timer = self._stop_timer, None
                if timer is not None:
                    timer.cancel()
                    self.destroy_timer(timer)
                self.writer.finish_stop()

            self._stop_timer = self.create_timer(self.stop_grace_s, fire)

        def _on_label(self, request: Any, response: Any) -> Any:
            ok, text, path = self.writer.label(request.episode_id, request.outcome, float(request.success_score),
                                               request.note)
            response.ok, response.message, response.bag_path = ok, text, path
            (self.get_logger().info if ok else self.get_logger().error)(f"label: {text}")
            return response

        def _publish_diagnostics(self) -> None:
            DiagnosticArray_, DiagnosticStatus_, KeyValue_ = self._diag_types
            st = self.writer.stats
            status = DiagnosticStatus_()
            status.name = f"{self.get_name()}: recorder"
            status.hardware_id = "recorder"
            silent, incompatible = self.topic_health()
            level, status.message, values = recorder_status(st, self.writer.recording, silent, incompatible)
            status.level = {"ok": DiagnosticStatus_.OK, "warn": DiagnosticStatus_.WARN,
                            "error": DiagnosticStatus_.ERROR}[level]
            status.values = [KeyValue_(key=k, value=v) for k, v in values]
            arr = DiagnosticArray_()
            arr.header.stamp = self.get_clock().now().to_msg()
            arr.status = [status]
            self._diag_pub.publish(arr)

        def shutdown(self) -> None:
            """Close the open bag properly and stop the writer thread."""
            self.writer.close()
            st = self.writer.stats
            self.get_logger().info(
                f"recorder stopped: {st.written} messages, {st.bytes_written / 2**20:.1f} MiB in {st.episodes} "
                f"episode(s); dropped {st.dropped_queue_full}; max queue {st.max_queue_bytes / 2**20:.1f} MiB")

    return RecorderNode


def main(args: Optional[List[str]] = None) -> int:
    """Run the recorder until SIGINT/SIGTERM; the open bag is closed properly on either."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def _on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    # A file-size limit (ulimit -f) must fail the write (EFBIG, handled like a full disk), not kill the
    # process and every open bag with it.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        node = make_node_class()()
    except (RecorderSetupError, ValueError) as exc:
        print(f"[recorder] ERROR: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    executor = None
    if node.executor_kind == "events":
        try:
            from rclpy.experimental import EventsExecutor

            executor = EventsExecutor()
        except ImportError:  # Humble has no EventsExecutor
            node.get_logger().warning("EventsExecutor not available; using SingleThreadedExecutor")
    if executor is None:
        executor = SingleThreadedExecutor()
    executor.add_node(node)
    drain_s = float(node.get_parameter("shutdown_drain_s").value)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        # Take in what DDS already delivered before closing the bag (bounded: publishers may still be going).
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.01)
    finally:
        node.shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
