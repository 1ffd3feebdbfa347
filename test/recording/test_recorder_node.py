"""The real recorder node (subprocess) against real publishers over DDS: counts, round trip, signals, refusal."""
from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cosmos_policy_ros.core.robot import gripper_convention, qpos_from_joint_states
from cosmos_policy_ros.ros.harness import NodeProcess, NodeSpec, wait_for, wait_for_subscribers
from cosmos_policy_training.bags import header_stamp_ns, open_bag, read_custom_data
from cosmos_policy_training.convert import ConvertConfig, convert_all
from cosmos_policy_training.episodes import read_episode

_spec = importlib.util.spec_from_file_location("robot_traffic", Path(__file__).with_name("robot_traffic.py"))
rt = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("robot_traffic", rt)
_spec.loader.exec_module(rt)

pytestmark = pytest.mark.ros

RECORDER = "cosmos_policy_ros.ros.recorder"


def _start_recorder(out_dir, log_dir, **params):
    parameters = {"output_dir": str(out_dir), "min_free_space_mb": 100.0, "publish_diagnostics": False}
    parameters.update(params)
    return NodeProcess(NodeSpec(RECORDER, parameters=parameters), log_dir)


class _Episode:
    """Test-side episode control: an EpisodeEvent publisher plus the synthetic robot traffic."""

    def __init__(self, session, proc, keep_all=True):
        from rclpy.qos import QoSProfile

        from cosmos_policy_ros.msg import EpisodeEvent

        self.EpisodeEvent = EpisodeEvent
        self.proc = proc
        self.node = session.make_node(f"robot_{id(self)}")
        # keep_all publishers: on a loaded test machine a lagging recorder slows the publisher down instead of
        # DDS overwriting unacknowledged samples, so the test checks the recorder's own pipeline loses nothing.
        # The realistic keep-last full-rate run (drops measured) is bench/recorder_bench.py.
        self.traffic = rt.RobotTraffic(self.node, keep_all=keep_all)
        self.events = self.node.create_publisher(EpisodeEvent, "/episode", QoSProfile(depth=10))
        for topic in ["/episode"] + self.traffic.topics():
            wait_for_subscribers(self.node, topic, 1, timeout=30.0)

    def _wait_log(self, text, timeout=15.0):
        wait_for(lambda: text in self.proc.output() or not self.proc.alive(), timeout, what=f"recorder log {text!r}")
        assert text in self.proc.output(), self.proc.output()[-3000:]

    def start(self, episode_id, task="put the cube in the bowl", policy_id="ckpt-9"):
        self.events.publish(self.EpisodeEvent(event=self.EpisodeEvent.START, episode_id=episode_id, task=task,
                                              policy_id=policy_id))
        self._wait_log(f"episode '{episode_id}' ->")

    def stop(self, episode_id, reason="operator"):
        self.events.publish(self.EpisodeEvent(event=self.EpisodeEvent.STOP, episode_id=episode_id, reason=reason))
        self._wait_log("recorder: closed")

    def outcome(self, episode_id, outcome, score, note=""):
        self.events.publish(self.EpisodeEvent(event=self.EpisodeEvent.OUTCOME, episode_id=episode_id,
                                              outcome=outcome, success_score=score, note=note))


def _bag_dir(out_dir, episode_id):
    matches = sorted(Path(out_dir).glob(f"*_{episode_id}"))
    assert len(matches) == 1, list(Path(out_dir).iterdir())
    return matches[0]


def _recorder_status(msg):
    for st in msg.status:
        if st.hardware_id == "recorder":
            return {kv.key: kv.value for kv in st.values}
    return None


def test_full_rate_episode_is_recorded_completely_and_round_trips(ros_session, tmp_path, node_log_dir):
    from diagnostic_msgs.msg import DiagnosticArray

    from cosmos_policy_ros.ros.harness import Collector

    out = tmp_path / "bags"
    with _start_recorder(out, node_log_dir, publish_diagnostics=True) as proc:
        ep = _Episode(ros_session, proc)
        diag = Collector(ep.node, DiagnosticArray, "/diagnostics", qos=100)
        ep.start("ep1")
        ep.traffic.start(3.0)  # 3 x 480x640 rgb8 at 30 Hz + 2 x joint states at 100 Hz + commands at 25 Hz
        ep.traffic.join(60.0)
        assert not ep.traffic.publish_errors
        # STOP once the recorder reports everything written (its 1 Hz status): a busy test machine may delay
        # delivery well past the STOP grace period, which would cut the tail off and say nothing about drops.
        expected = {t: ep.traffic.log.count(t) for t in ep.traffic.topics() if t != "/diagnostics"}

        def caught_up():
            st = [s for s in (_recorder_status(m) for m in diag.snapshot()) if s]
            return bool(st) and all(int(st[-1].get(f"written {t}", 0)) >= n for t, n in expected.items())

        try:
            wait_for(caught_up, 30.0, what="the recorder to report every published message written")
        except TimeoutError:
            pass  # the counts below say what is missing
        ep.stop("ep1")
        # the operator answers the outcome prompt from a script
        cli = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", "outcome", "--outcome", "partial",
                              "--score", "0.6", "--note", "slipped at the end"],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        bag = _bag_dir(out, "ep1")
        assert read_custom_data(bag)["outcome"] == "partial"
        assert read_custom_data(bag)["note"] == "slipped at the end"

    log = ep.traffic.log
    with open_bag(bag) as b:
        assert not b.info.recovered
        counts = {t: info.count for t, info in b.info.topics.items()}
        for topic in ep.traffic.topics():
            if topic == "/diagnostics":  # the recorder's own status lands there too: count the test's (empty) ones
                n = sum(1 for tp, _, raw in b.messages([topic]) if not b.decode(tp, raw).status)
            else:
                n = counts[topic]
            assert n == log.count(topic), f"{topic}: bag {n} != published {log.count(topic)}"
        assert counts["/episode"] == 2  # START + STOP recorded in the bag
        # every joint state arrived in order (header stamps equal the publish log)
        stamps = [header_stamp_ns(raw) for _, _, raw in b.messages(["/follower_left/joint_states"])]
        assert stamps == [t for _, t in log.published["/follower_left/joint_states"]]
        times = {}
        for topic, t_ns, _ in b.messages():
            times.setdefault(topic, []).append((t_ns - b.info.start_ns) * 1e-9)
    meta = read_custom_data(bag)
    assert (meta["task"], meta["policy_id"], meta["stop_reason"], meta["dropped_messages"]) == \
        ("put the cube in the bowl", "ckpt-9", "operator", "0")

    # round trip: converted steps equal the published values at the resampled ticks
    results = convert_all([str(bag)], ConvertConfig(output_dir=str(tmp_path / "eps")), progress=False)
    assert results[0].status == "ok", results
    episode = read_episode(results[0].output)
    assert (episode.task, episode.success, episode.success_score) == ("put the cube in the bowl", False, pytest.approx(0.6))
    cmd_topics = [t for t in ep.traffic.topics() if "/commands/" in t]
    obs_topics = [rt.camera_topic(c) for c in rt.CAMERAS] + [f"/{a}/joint_states" for a in rt.ARMS]
    steps = rt.expected_steps({t: times[t] for t in cmd_topics}, {t: times[t] for t in obs_topics})
    assert episode.num_steps == len(steps)
    # the episode runs to the end of the recording: the traffic publishes its whole 3 s schedule (75 commands per
    # stream, late in bursts on a busy machine) and the last step holds every command stream's last command
    for t in cmd_topics:
        assert log.count(t) == 75, t
        assert steps[-1]["cmd"][t] == log.count(t) - 1, t
    conv = gripper_convention("aloha2")
    for k, st in enumerate(steps):
        o, c = st["obs"], st["cmd"]
        np.testing.assert_array_equal(episode.qpos[k], qpos_from_joint_states(
            rt.joint_positions(0, o["/follower_left/joint_states"]),
            rt.joint_positions(1, o["/follower_right/joint_states"]), conv))
        for side, arm in enumerate(rt.ARMS):
            np.testing.assert_array_equal(episode.action[k, 7 * side:7 * side + 6],
                                          rt.arm_command(side, c[f"/{arm}/commands/joint_group"]))
            assert episode.action[k, 7 * side + 6] == conv.joint_to_command(
                rt.gripper_command(side, c[f"/{arm}/commands/joint_single"]))
        for cam in rt.CAMERAS:
            assert rt.frame_index(episode.images[cam][k]) == o[rt.camera_topic(cam)]


def _prefix_length(bag, topic, arm_index):
    """Number of leading joint states in the bag that are exactly the published sequence 0, 1, 2, ..."""
    n = 0
    for _, _, raw in bag.messages([topic]):
        if list(bag.decode(topic, raw).position) != rt.joint_positions(arm_index, n):
            break
        n += 1
    return n


def _recorder_written(msg):
    """The recorder's 'written' counter from one of its DiagnosticArray messages, or None."""
    for st in msg.status:
        if st.hardware_id == "recorder":
            return int({kv.key: kv.value for kv in st.values}["written"])
    return None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_signal_mid_episode_leaves_a_readable_bag(ros_session, tmp_path, node_log_dir, sig):
    from diagnostic_msgs.msg import DiagnosticArray

    from cosmos_policy_ros.ros.harness import Collector

    out = tmp_path / "bags"
    proc = _start_recorder(out, node_log_dir, flush_interval_s=0.25, publish_diagnostics=True)
    try:
        ep = _Episode(ros_session, proc)
        diag = Collector(ep.node, DiagnosticArray, "/diagnostics", qos=100)
        ep.start("sig")
        ep.traffic.start(6.0)
        wait_for(lambda: any((_recorder_written(m) or 0) > 300 for m in diag.snapshot()), 30.0,
                 what="recorder to write 300 messages")
        time.sleep(0.6)
        t_signal = time.monotonic()
        proc.signal(sig)
        proc.process.wait(20.0)
    finally:
        ep.traffic.stop()
        proc.stop()
    output = proc.log_path.read_text()
    # What the recorder reported written at least 0.5 s (two flush intervals) before the signal must be in the bag.
    written_before = max(_recorder_written(m) or 0 for m, t in zip(diag.messages, diag.times) if t < t_signal - 0.5)
    assert written_before > 300
    bag = _bag_dir(out, "sig")
    topic = "/follower_left/joint_states"
    with open_bag(bag) as b:
        assert b.info.recovered == (sig == signal.SIGKILL), b.info.problems
        assert b.info.message_count >= written_before
        n = _prefix_length(b, topic, 0)
        assert n == b.info.topics[topic].count > 20, "the bag holds a gap-free prefix of what was published"
        assert b.info.topics["/episode"].count >= 1  # the START event (task, policy) survives any signal
        total = b.info.message_count
    if sig != signal.SIGKILL:
        assert proc.process.returncode == 0, output[-2000:]
        # a clean stop writes everything it received: the final count in the log is the bag's
        assert f"recorder stopped: {total} messages" in output, output[-2000:]
        meta = read_custom_data(bag)
        assert meta["stop_reason"] == "recorder shutdown" and meta["task"] == "put the cube in the bowl"
    else:
        res = convert_all([str(bag)], ConvertConfig(output_dir=str(tmp_path / "eps"), recover=True), progress=False)
        assert res[0].status == "ok" and res[0].task == "put the cube in the bowl" and res[0].steps > 5, res


def test_outcome_event_labels_the_episode(ros_session, tmp_path, node_log_dir, repo_root):
    out = tmp_path / "bags"
    # the shipped parameter file loads (command-line values override it)
    proc = NodeProcess(NodeSpec(RECORDER, params_files=[str(repo_root / "config" / "recorder.yaml")],
                                parameters={"output_dir": str(out), "min_free_space_mb": 100.0}), node_log_dir)
    with proc:
        ep = _Episode(ros_session, proc)
        ep.start("lab")
        ep.stop("lab", reason="success")
        ep.outcome("lab", "success", 0.0, "clean")  # 0.0 = a sender that left the score at its default
        bag = _bag_dir(out, "lab")
        wait_for(lambda: read_custom_data(bag).get("outcome") == "success", 10.0, what="label in metadata.yaml")
        assert read_custom_data(bag)["success_score"] == "1" and read_custom_data(bag)["note"] == "clean"

        # the interactive prompt, answered through a pipe: it asks after the STOP and labels that episode
        import threading

        cli = subprocess.Popen([sys.executable, "-m", "cosmos_policy_ros.cli", "outcome", "--watch"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(cli.stdout.readline, "")), daemon=True)
        reader.start()
        try:
            wait_for(lambda: any("waiting for episodes" in ln for ln in lines), 30.0, what="outcome prompt ready")
            wait_for_subscribers(ep.node, "/episode", 2, timeout=20.0)
            ep.start("asked")
            ep.stop("asked", reason="timeout")
            cli.stdin.write("p 0.4\nslipped off the gripper\n")
            cli.stdin.flush()
            asked = _bag_dir(out, "asked")
            wait_for(lambda: read_custom_data(asked).get("outcome") == "partial", 20.0, what="piped answer stored")
        finally:
            cli.send_signal(signal.SIGINT)
            try:
                cli.wait(10.0)
            except subprocess.TimeoutExpired:
                cli.kill()
        assert read_custom_data(asked)["success_score"] == "0.4"
        assert read_custom_data(asked)["note"] == "slipped off the gripper"


@pytest.mark.parametrize("case", ["unwritable", "disk_full"])
def test_recorder_refuses_to_start_without_a_usable_output_dir(tmp_path, node_log_dir, case):
    if case == "unwritable":
        blocker = tmp_path / "not_a_dir"
        blocker.write_text("x")
        params, expected = {"output_dir": str(blocker / "bags")}, "cannot create output directory"
    else:
        params, expected = {"output_dir": str(tmp_path / "bags"), "min_free_space_mb": 1e12}, "MiB free"
    proc = _start_recorder(tmp_path, node_log_dir, **params)
    try:
        rc = proc.process.wait(30.0)
    finally:
        proc.stop()
    assert rc == 2 and expected in proc.log_path.read_text(), proc.log_path.read_text()


def test_parameters_configure_topics_and_bad_values_fail_clearly(ros_session, tmp_path):
    from rclpy.parameter import Parameter

    from cosmos_policy_ros.ros.recorder import make_node_class

    Recorder = make_node_class()
    node = Recorder(context=ros_session.context, parameter_overrides=[
        Parameter("output_dir", value=str(tmp_path / "bags")),
        Parameter("min_free_space_mb", value=1.0),
        Parameter("camera_topics", value=["/cam_high/color/image_rect_raw"]),
        Parameter("action_chunk_topic", value=""),
        Parameter("extra_topics", value=["/pose:geometry_msgs/msg/PoseStamped", "/odom_like:std_msgs/msg/String"]),
    ])
    try:
        topics = {t.topic: t.msgtype for t in node.config.topics}
        assert topics["/cam_high/color/image_rect_raw"] == "sensor_msgs/msg/Image"
        assert "/action_chunk" not in topics and topics["/odom_like"] == "std_msgs/msg/String"
        assert topics["/pose"] == "geometry_msgs/msg/PoseStamped"
        assert topics["/follower_left/commands/joint_group"] == "interbotix_xs_msgs/msg/JointGroupCommand"
    finally:
        node.shutdown()
        node.destroy_node()
    with pytest.raises(ValueError, match="storage"):
        Recorder(context=ros_session.context, parameter_overrides=[
            Parameter("output_dir", value=str(tmp_path / "b2")), Parameter("storage", value="rosbag1")])
    from cosmos_policy_ros.ros.recorder import RecorderSetupError

    with pytest.raises(RecorderSetupError, match="no_such_pkg/msg/Thing"):
        Recorder(context=ros_session.context, parameter_overrides=[
            Parameter("output_dir", value=str(tmp_path / "b3")), Parameter("min_free_space_mb", value=1.0),
            Parameter("extra_topics", value=["/x:no_such_pkg/msg/Thing"])])


def _latest_recorder_status(diag):
    """(level, message, values) of the recorder's newest status on /diagnostics, or None."""
    for msg in reversed(diag.snapshot()):
        for st in msg.status:
            if st.hardware_id == "recorder":
                return st.level, st.message, {kv.key: kv.value for kv in st.values}
    return None


def _small_image(k):
    from sensor_msgs.msg import Image

    data = np.full((8, 8, 3), k % 256, np.uint8)
    return Image(height=8, width=8, encoding="rgb8", step=24, data=data.tobytes())


def test_best_effort_publishers_are_recorded_with_their_offered_qos(ros_session, tmp_path, node_log_dir):
    """A best-effort camera publisher that appears after the recorder started is recorded; each topic's offered
    QoS is in the bag's channel metadata; /diagnostics names the topic without a publisher."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.ros.harness import Collector

    cam, js, silent = "/qos_test/cam/image_raw", "/qos_test/left/joint_states", "/qos_test/right/joint_states"
    out = tmp_path / "bags"
    with _start_recorder(out, node_log_dir, publish_diagnostics=True, qos_check_period_s=0.2,
                         camera_topics=[cam], joint_state_topics=[js, silent]) as proc:
        node = ros_session.make_node("qos_publishers")
        diag = Collector(node, DiagnosticArray, "/diagnostics", qos=100)
        events = node.create_publisher(EpisodeEvent, "/episode", QoSProfile(depth=10))
        wait_for_subscribers(node, "/episode", 1, timeout=30.0)
        cam_pub = node.create_publisher(_small_image(0).__class__, cam,
                                        QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        js_pub = node.create_publisher(JointState, js, QoSProfile(
            depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        # the recorder notices the new publishers and re-subscribes to match them
        wait_for(lambda: f"{cam}: subscribing best_effort/volatile" in proc.output() or not proc.alive(), 30.0,
                 what="recorder to re-match the camera QoS")
        wait_for(lambda: f"{js}: subscribing reliable/transient_local" in proc.output() or not proc.alive(), 30.0,
                 what="recorder to re-match the joint state QoS")
        events.publish(EpisodeEvent(event=EpisodeEvent.START, episode_id="be", task="t"))
        wait_for(lambda: "episode 'be' ->" in proc.output(), 15.0, what="episode start")
        k = 0

        def written(topic):
            st = _latest_recorder_status(diag)
            return int(st[2].get(f"written {topic}", 0)) if st else 0

        deadline = time.monotonic() + 30.0
        while written(cam) == 0 and time.monotonic() < deadline:  # discovery of the new subscription
            cam_pub.publish(_small_image(k))
            js_pub.publish(JointState(name=["waist"], position=[0.01 * k]))
            k += 1
            time.sleep(0.05)
        for _ in range(20):
            cam_pub.publish(_small_image(k))
            js_pub.publish(JointState(name=["waist"], position=[0.01 * k]))
            k += 1
            time.sleep(0.03)
        wait_for(lambda: written(js) >= k - 5, 20.0, what="joint states written")
        level, message, values = _latest_recorder_status(diag)
        assert values["recording"] == "True" and silent in values["no publisher"], values
        assert level == DiagnosticStatus.WARN and silent in message, message
        assert cam not in values["no publisher"] and values["incompatible QoS"] == "", values
        events.publish(EpisodeEvent(event=EpisodeEvent.STOP, episode_id="be"))
        wait_for(lambda: "recorder: closed" in proc.output(), 15.0, what="bag closed")
    bag = _bag_dir(out, "be")
    with open_bag(bag) as b:
        assert b.info.topics[cam].count >= 15, "best-effort frames are in the bag"
        qos = {t: info.offered_qos_profiles for t, info in b.info.topics.items()}
    # (DDS discovery does not carry history / depth: rmw reports them unknown / 0, and so does rosbag2)
    assert [(q["reliability"], q["durability"]) for q in qos[cam]] == [("best_effort", "volatile")]
    assert [(q["reliability"], q["durability"]) for q in qos[js]] == [("reliable", "transient_local")]
    assert qos[silent] == []
    assert qos["/episode"] and qos["/episode"][0]["reliability"] == "reliable"


def test_forced_reliable_subscription_reports_best_effort_publishers_as_incompatible(ros_session, tmp_path,
                                                                                      node_log_dir):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from cosmos_policy_ros.ros.harness import Collector

    cam = "/qos_forced/cam/image_raw"
    with _start_recorder(tmp_path / "bags", node_log_dir, publish_diagnostics=True, qos_check_period_s=0.2,
                         reliability="reliable", camera_topics=[cam]):
        node = ros_session.make_node("qos_forced_publisher")
        diag = Collector(node, DiagnosticArray, "/diagnostics", qos=100)
        node.create_publisher(_small_image(0).__class__, cam,
                              QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))

        def reported():
            st = _latest_recorder_status(diag)
            return st is not None and cam in st[2]["incompatible QoS"]

        wait_for(reported, 30.0, what="diagnostics naming the incompatible topic")
        level, message, values = _latest_recorder_status(diag)
        assert level == DiagnosticStatus.WARN and cam in message
        assert "best-effort publisher" in values["incompatible QoS"]


def test_write_failure_is_an_error_until_the_next_healthy_episode(ros_session, tmp_path, node_log_dir):
    """A write failure (file-size limit, as a full disk) is logged at ERROR, /diagnostics stops saying
    recording and reports ERROR; the cut episode can still be labelled; the next episode records cleanly."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import QoSProfile

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.ros.harness import Collector

    cam = "/wf/cam/image_raw"
    out = tmp_path / "bags"
    with _start_recorder(out, node_log_dir, publish_diagnostics=True, flush_interval_s=0.05,
                         camera_topics=[cam]) as proc:
        node = ros_session.make_node("write_failure")
        diag = Collector(node, DiagnosticArray, "/diagnostics", qos=100)
        events = node.create_publisher(EpisodeEvent, "/episode", QoSProfile(depth=10))
        pub = node.create_publisher(_small_image(0).__class__, cam, QoSProfile(depth=100))
        wait_for_subscribers(node, cam, 1, timeout=30.0)
        wait_for_subscribers(node, "/episode", 1, timeout=30.0)

        def episode(eid):
            events.publish(EpisodeEvent(event=EpisodeEvent.START, episode_id=eid, task="t"))
            wait_for(lambda: f"episode '{eid}' ->" in proc.output(), 15.0, what=f"episode {eid} start")

        def status():
            return _latest_recorder_status(diag)

        episode("full")
        for k in range(5):
            pub.publish(_small_image(k))
        wait_for(lambda: status() is not None and int(status()[2].get(f"written {cam}", 0)) >= 5, 20.0,
                 what="first frames written")
        bag = _bag_dir(out, "full")
        size = next(bag.glob("*.mcap")).stat().st_size
        # the bag's file may not grow further: every write beyond fails (EFBIG), as on a full disk
        subprocess.run(["prlimit", f"--pid={proc.pid}", f"--fsize={size + 1024}:"], check=True)
        try:
            for k in range(5, 60):
                pub.publish(_small_image(k))
                time.sleep(0.01)
            wait_for(lambda: "failed" in proc.output(), 20.0, what="the write failure")
            assert "[ERROR]" in proc.output() and "writing" in proc.output(), proc.output()[-3000:]
            wait_for(lambda: status()[2]["recording"] == "False", 10.0, what="diagnostics to stop saying recording")
            level, message, values = status()
            assert level == DiagnosticStatus.ERROR and "failed" in message, message
        finally:
            subprocess.run(["prlimit", f"--pid={proc.pid}", "--fsize=unlimited:"], check=True)
        # the cut episode is labelled afterwards (the recorder is still up)
        events.publish(EpisodeEvent(event=EpisodeEvent.OUTCOME, episode_id="full", outcome="failure"))
        wait_for(lambda: read_custom_data(bag).get("outcome") == "failure", 10.0, what="label beside the cut bag")
        events.publish(EpisodeEvent(event=EpisodeEvent.STOP, episode_id="full"))
        before = int(status()[2]["written " + cam])
        episode("healthy")
        for k in range(5):
            pub.publish(_small_image(k))
        wait_for(lambda: status()[2]["recording"] == "True" and int(status()[2]["written " + cam]) >= before + 5,
                 20.0, what="the next episode recording")
        level, message, _ = status()
        assert level != DiagnosticStatus.ERROR and "failed" not in message, message
        events.publish(EpisodeEvent(event=EpisodeEvent.STOP, episode_id="healthy"))
        wait_for(lambda: "recorder: closed" in proc.output(), 15.0, what="healthy bag closed")
    with open_bag(bag) as b:
        assert b.info.recovered and b.info.topics[cam].count >= 5  # cut, readable up to the failure
        assert b.info.custom_data["outcome"] == "failure"  # the label is read with the cut bag
    with open_bag(_bag_dir(out, "healthy")) as b:
        assert not b.info.recovered and b.info.topics[cam].count == 5
