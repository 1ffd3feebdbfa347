"""Bag writer + tolerant reader + converter, with exact control of message times (no DDS, no rclpy.init).

Bags are written by the recorder's own EpisodeBagWriter (cosmos_policy_ros.core.episode_bag) from real rclpy-serialised messages, so these tests
cover the real byte layout (including the JointState padding that rosbags rejects).
"""
from __future__ import annotations

import array
import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cosmos_policy_ros.core.robot import JS_NAMES, gripper_convention, qpos_from_joint_states
from cosmos_policy_ros.core.episode_bag import (
    EpisodeBagWriter, EpisodeMeta, RecorderConfig, RecorderSetupError, TopicSpec, build_typestore, check_output_dir)
from cosmos_policy_ros.ros.cli_outcome import parse_outcome_answer
from cosmos_policy_training.bags import open_bag, reindex_bag
from cosmos_policy_training.convert import ConvertConfig, convert_all
from cosmos_policy_training.episodes import read_episode

_spec = importlib.util.spec_from_file_location("robot_traffic", Path(__file__).with_name("robot_traffic.py"))
rt = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("robot_traffic", rt)
_spec.loader.exec_module(rt)

T0_NS = 1_700_000_000_000_000_000
H, W = 24, 32
CAMS = rt.CAMERAS
TOPICS = ([TopicSpec(rt.camera_topic(c), "sensor_msgs/msg/Image", 30) for c in CAMS]
          + [TopicSpec(f"/{a}/joint_states", "sensor_msgs/msg/JointState") for a in rt.ARMS]
          + [TopicSpec(f"/{a}/commands/joint_group", "interbotix_xs_msgs/msg/JointGroupCommand") for a in rt.ARMS]
          + [TopicSpec(f"/{a}/commands/joint_single", "interbotix_xs_msgs/msg/JointSingleCommand") for a in rt.ARMS])


@pytest.fixture(scope="module")
def typestore():
    return build_typestore([t.msgtype for t in TOPICS] + ["cosmos_policy_ros/msg/EpisodeEvent"])


def _joint_state(i, k, layout):
    """JointState of arm i at sample k: Interbotix names in order, names shuffled plus an extra joint, or none."""
    from sensor_msgs.msg import JointState

    pos = rt.joint_positions(i, k)
    if layout == "named":
        return JointState(name=list(JS_NAMES), position=pos)
    if layout == "unnamed":
        return JointState(position=pos)
    order = np.random.default_rng(100 * i + k).permutation(len(JS_NAMES))
    names = [JS_NAMES[j] for j in order] + ["camera_mount"]
    return JointState(name=names, position=[pos[j] for j in order] + [9.9])


def _events(duration_s=2.0, seed=0, cmd_jitter_s=0.008, js_layout="named"):
    """(t_ns, topic, CDR bytes) of a synthetic episode: cameras 30 Hz, joints 100 Hz, jittered 25 Hz commands."""
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(seed)
    ev = []
    for k in range(int(duration_s * 30)):
        t = T0_NS + int(0.013e9 + k * 1e9 / 30)
        for ci, cam in enumerate(CAMS):
            img = np.full((H, W, 3), 40 * ci, np.uint8)
            img[0, 0, 0], img[0, 1, 0], img[0, 2, 0] = k % 256, k // 256, 0
            msg = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=img.tobytes())
            ev.append((t + ci * 1000, rt.camera_topic(cam), serialize_message(msg)))
    for k in range(int(duration_s * 100)):
        for i, arm in enumerate(rt.ARMS):
            msg = _joint_state(i, k, js_layout)
            ev.append((T0_NS + int(0.002e9 + k * 0.01e9) + 500 * i, f"/{arm}/joint_states", serialize_message(msg)))
    for k in range(int(duration_s * 25) - 5):
        t = T0_NS + int(0.1e9 + k * 0.04e9 + rng.uniform(-cmd_jitter_s, cmd_jitter_s) * 1e9)
        for i, arm in enumerate(rt.ARMS):
            g = JointGroupCommand(name="arm", cmd=array.array("f", rt.arm_command(i, k)))
            ev.append((t + 2000 * i, f"/{arm}/commands/joint_group", serialize_message(g)))
            s = JointSingleCommand(name="gripper", cmd=rt.gripper_command(i, k))
            ev.append((t + 2000 * i + 700, f"/{arm}/commands/joint_single", serialize_message(s)))
    ev.sort(key=lambda e: e[0])
    return ev


def _writer(out_dir, typestore):
    cfg = RecorderConfig(output_dir=str(out_dir), topics=TOPICS, min_free_space_mb=1.0, gripper_generation="aloha2")
    return EpisodeBagWriter(cfg, typestore, clock_ns=lambda: T0_NS)


def _record(out_dir, typestore, episode_id="ep1", label=("success", float("nan"), "clean grasp"), **kw):
    w = _writer(out_dir, typestore)
    path = w.start_episode(EpisodeMeta(episode_id, task="put the cube in the bowl", policy_id="ckpt-3"))
    events = _events(**kw)
    for t, topic, raw in events:
        assert w.enqueue(topic, t, raw)
    w.stop_episode("operator", events[-1][0] + 1)
    if label:
        w.label(episode_id, *label)
    w.close()
    assert not w.stats.errors and w.stats.dropped_queue_full == 0
    return path, events


def test_converted_episode_follows_the_documented_sampling_rule(tmp_path, typestore):
    bag, events = _record(tmp_path / "bags", typestore)
    results = convert_all([str(bag)], ConvertConfig(output_dir=str(tmp_path / "eps")), progress=False)
    assert [r.status for r in results] == ["ok"], results
    ep = read_episode(Path(results[0].output))
    assert (ep.task, ep.success, ep.success_score, ep.fps) == ("put the cube in the bowl", True, 1.0, 25.0)
    assert ep.attrs["policy_name"] == "ckpt-3" and ep.attrs["note"] == "clean grasp"

    with open_bag(bag) as b:
        base = b.info.start_ns
    times = {}
    for t, topic, _ in events:
        times.setdefault(topic, []).append((t - base) * 1e-9)
    cmd_topics = [t.topic for t in TOPICS if "commands" in t.topic]
    obs_topics = [t.topic for t in TOPICS if "commands" not in t.topic]
    steps = rt.expected_steps({t: times[t] for t in cmd_topics}, {t: times[t] for t in obs_topics})
    assert ep.num_steps == len(steps) == 45  # one step per command tick, jitter notwithstanding
    conv = gripper_convention("aloha2")
    for k, st in enumerate(steps):
        o, c = st["obs"], st["cmd"]
        expect_q = qpos_from_joint_states(rt.joint_positions(0, o["/follower_left/joint_states"]),
                                          rt.joint_positions(1, o["/follower_right/joint_states"]), conv)
        np.testing.assert_array_equal(ep.qpos[k], expect_q)
        for side, arm in enumerate(rt.ARMS):
            ia, ig = c[f"/{arm}/commands/joint_group"], c[f"/{arm}/commands/joint_single"]
            assert ia == ig == k, "each step executes exactly the command of its tick"
            np.testing.assert_array_equal(ep.action[k, 7 * side:7 * side + 6], rt.arm_command(side, ia))
            assert ep.action[k, 7 * side + 6] == conv.joint_to_command(rt.gripper_command(side, ig))
        for cam in CAMS:
            assert rt.frame_index(ep.images[cam][k]) == o[rt.camera_topic(cam)]
        # obs[t] strictly before action[t]: the observation time precedes this step's first command
        cmd_time = min(times[t][c[t]] for t in cmd_topics)
        assert max(times[t][o[t]] for t in obs_topics) <= cmd_time


def test_rclpy_joint_state_padding_is_tolerated(tmp_path, typestore):
    from rclpy.serialization import serialize_message
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import JointState

    raw = serialize_message(JointState(position=[0.1, 0.2, 0.3]))  # empty velocity/effort
    with pytest.raises(Exception, match="size mismatch"):
        get_typestore(Stores.ROS2_JAZZY).deserialize_cdr(raw, "sensor_msgs/msg/JointState")
    bag, _ = _record(tmp_path / "bags", typestore, duration_s=0.5)
    with open_bag(bag) as b:
        topic, _, data = next(iter(b.messages(["/follower_left/joint_states"])))
        assert list(b.decode(topic, data).position) == rt.joint_positions(0, 0)


def test_crashed_truncated_and_corrupt_bags(tmp_path, typestore):
    good, _ = _record(tmp_path / "bags", typestore, episode_id="good")
    # A recorder killed mid-episode: bag never closed (no footer, no metadata.yaml) -> copy the open bag.
    w = _writer(tmp_path / "bags", typestore)
    live = w.start_episode(EpisodeMeta("crashed", task="wipe the table"))
    from rclpy.serialization import serialize_message

    from cosmos_policy_ros.msg import EpisodeEvent

    w.enqueue("/episode", T0_NS, serialize_message(EpisodeEvent(event=EpisodeEvent.START, episode_id="crashed",
                                                                task="wipe the table")))
    events = _events(duration_s=1.0)
    for t, topic, raw in events:
        w.enqueue(topic, t, raw)
    assert w.wait_idle(), "writer did not catch up"
    crashed = tmp_path / "bags" / "crashed_copy"
    shutil.copytree(live, crashed)
    w.close()
    mcap = next(crashed.glob("*.mcap"))
    assert not (crashed / "metadata.yaml").exists()
    with open_bag(crashed) as b:
        assert b.info.recovered and b.info.message_count == len(events) + 1  # + the START event
    # ... and cut inside a record, as a kill during a write leaves it
    with open(mcap, "r+b") as f:
        f.truncate(int(mcap.stat().st_size * 0.6))
    with open_bag(crashed) as b:
        n = b.info.message_count
        assert b.info.recovered and 0 < n < len(events) and any("ends inside" in p for p in b.info.problems)
        assert sum(1 for _ in b.messages()) == n
    corrupt = tmp_path / "bags" / "corrupt"
    corrupt.mkdir()
    (corrupt / "corrupt.mcap").write_bytes(b"\x89MCAP0\r\n" + os.urandom(5000))

    results = {Path(r.source).name: r for r in
               convert_all([str(tmp_path / "bags")], ConvertConfig(output_dir=str(tmp_path / "eps")), progress=False)}
    assert results[good.name].status == "ok"
    assert results["crashed_copy"].status == "skipped" and "truncated" in results["crashed_copy"].notes[0]
    assert results["corrupt"].status in ("error", "skipped")

    again = convert_all([str(crashed)], ConvertConfig(output_dir=str(tmp_path / "eps2"), recover=True), progress=False)
    assert again[0].status == "ok" and again[0].task == "wipe the table"  # task from the recorded START event
    assert 0 < again[0].steps < results[good.name].steps

    fixed = reindex_bag(crashed)
    with open_bag(fixed) as b:
        assert not b.info.recovered and b.info.message_count == n


def test_labels_before_and_after_close(tmp_path, typestore):
    from cosmos_policy_training.bags import read_custom_data

    w = _writer(tmp_path, typestore)
    path = w.start_episode(EpisodeMeta("a", task="t"))
    ok, msg, _ = w.label("a", "partial", 0.25, "slipped")
    assert ok and "when its bag closes" in msg
    w.stop_episode("done")
    w.close()
    data = read_custom_data(path)
    assert (data["outcome"], data["success_score"], data["note"], data["success"]) == ("partial", "0.25", "slipped", "false")
    # relabel after close, from a new recorder run (found on disk by episode id)
    w2 = _writer(tmp_path, typestore)
    ok, _, where = w2.label("a", "success", float("nan"), "")
    assert ok and where == str(path)
    assert read_custom_data(path)["outcome"] == "success" and read_custom_data(path)["success_score"] == "1"
    assert not w2.label("nope", "success", float("nan"))[0]
    assert not w2.label("a", "maybe", float("nan"))[0]
    w2.close()


def test_output_dir_checks_fail_clearly(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(RecorderSetupError, match="cannot create output directory"):
        check_output_dir(str(blocker / "bags"), 0)
    with pytest.raises(RecorderSetupError, match="MiB free"):
        check_output_dir(str(tmp_path), 1e12)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(RecorderSetupError, match="not writable"):
            check_output_dir(str(ro), 0)
    assert check_output_dir(str(tmp_path / "new" / "dir"), 0).is_dir()


def test_outcome_answers():
    assert parse_outcome_answer("s") == ("success", math.nan) or parse_outcome_answer("s")[0] == "success"
    assert parse_outcome_answer("f")[0] == "failure"
    assert parse_outcome_answer("p 0.4") == ("partial", 0.4)
    assert parse_outcome_answer("0.6") == ("partial", 0.6)
    assert parse_outcome_answer("1") == ("success", 1.0)
    assert parse_outcome_answer("") is None
    for bad in ("p", "x", "p 2"):
        with pytest.raises(ValueError):
            parse_outcome_answer(bad)


def test_training_modules_import_without_rclpy():
    code = ("import sys; sys.modules['rclpy'] = None\n"
            "import cosmos_policy_training.convert, cosmos_policy_training.bags, cosmos_policy_training.episodes\n"
            "assert 'rclpy' not in [m for m in sys.modules if sys.modules[m] is not None]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_sqlite3_storage_records_and_converts(tmp_path, typestore):
    cfg = RecorderConfig(output_dir=str(tmp_path / "bags"), topics=TOPICS, min_free_space_mb=1.0, storage="sqlite3")
    w = EpisodeBagWriter(cfg, typestore, clock_ns=lambda: T0_NS)
    path = w.start_episode(EpisodeMeta("sq", task="stack"))
    events = _events(duration_s=1.0)
    for t, topic, raw in events:
        w.enqueue(topic, t, raw)
    w.stop_episode("done", events[-1][0] + 1)
    w.label("sq", "failure", float("nan"))
    w.close()
    assert list(path.glob("*.db3"))
    with open_bag(path) as b:
        assert b.info.storage == "sqlite3" and b.info.message_count == len(events)
    res = convert_all([str(path)], ConvertConfig(output_dir=str(tmp_path / "eps")), progress=False)
    assert res[0].status == "ok" and res[0].success is False and res[0].success_score == 0.0 and res[0].steps == 20


def test_enqueue_never_waits_for_a_stalled_writer_and_counts_overflow(tmp_path, typestore):
    import threading

    from cosmos_policy_training.bags import read_custom_data

    cfg = RecorderConfig(output_dir=str(tmp_path), topics=TOPICS, min_free_space_mb=1.0, max_queue_mb=2.0)
    w = EpisodeBagWriter(cfg, typestore, clock_ns=lambda: T0_NS)
    release = threading.Event()
    real_open = w._open

    def stalled_open(rec):  # the disk hangs while the episode's bag is being created
        release.wait(30.0)
        return real_open(rec)

    w._open = stalled_open
    path = w.start_episode(EpisodeMeta("stall"))
    frame = bytes(900_000)
    accepted = [w.enqueue(rt.camera_topic("cam_high"), T0_NS + i, frame) for i in range(5)]
    assert accepted == [True, True, False, False, False]  # returns at once; beyond max_queue_mb: dropped, counted
    assert w.stats.dropped_queue_full == 3
    release.set()
    w.stop_episode("done")
    w.close()
    assert read_custom_data(path)["dropped_messages"] == "3"
    with open_bag(path) as b:
        assert b.info.topics[rt.camera_topic("cam_high")].count == 2


def _cut_bag(out_dir, typestore, episode_id="cut", duration_s=1.0):
    """A bag as a killed recorder leaves it (no footer, no metadata.yaml): a copy of an open bag after a flush."""
    from rclpy.serialization import serialize_message

    from cosmos_policy_ros.msg import EpisodeEvent

    w = _writer(out_dir / "live", typestore)
    live = w.start_episode(EpisodeMeta(episode_id, task="wipe the table"))
    w.enqueue("/episode", T0_NS, serialize_message(EpisodeEvent(event=EpisodeEvent.START, episode_id=episode_id,
                                                                task="wipe the table")))
    for t, topic, raw in _events(duration_s=duration_s):
        w.enqueue(topic, t, raw)
    assert w.wait_idle(), "writer did not catch up"
    cut = out_dir / live.name
    shutil.copytree(live, cut)
    w.close()
    shutil.rmtree(out_dir / "live")
    assert not (cut / "metadata.yaml").exists()
    return cut


def test_reindexed_cut_bag_converts_once_from_the_reindexed_copy(tmp_path, typestore):
    bags = tmp_path / "bags"
    good, _ = _record(bags, typestore, episode_id="good")
    cut = _cut_bag(bags, typestore)
    cli = subprocess.run([sys.executable, "-m", "cosmos_policy_training.bags", "reindex", str(cut)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    reindexed = cut.with_name(cut.name + ".reindexed")
    assert reindexed.is_dir() and cut.exists()  # the copy is written beside the original, which is kept
    results = convert_all([str(bags)], ConvertConfig(output_dir=str(tmp_path / "eps"), recover=True), progress=False)
    by_source = {Path(r.source).name: r for r in results}
    assert sorted(by_source) == sorted([good.name, reindexed.name]), "each episode converts once"
    r = by_source[reindexed.name]
    assert r.status == "ok" and Path(r.output).name == f"{cut.name}.hdf5" and r.task == "wipe the table"
    assert any("reindexed copy of " + cut.name in n for n in r.notes), r.notes
    assert sorted(p.name for p in (tmp_path / "eps").iterdir()) == sorted([f"{good.name}.hdf5", f"{cut.name}.hdf5"])


def test_cut_episode_can_be_labelled_afterwards(tmp_path, typestore):
    from cosmos_policy_training.bags import read_custom_data

    cut = _cut_bag(tmp_path, typestore, episode_id="cut_ep")
    w = _writer(tmp_path, typestore)  # a new recorder run after the crash
    ok, text, where = w.label("cut_ep", "partial", 0.3, "arm stalled")
    w.close()
    assert ok and where == str(cut), text
    assert "episode_label.yaml" in text
    assert not (cut / "metadata.yaml").exists()  # the recovered bag itself is left as it was
    data = read_custom_data(cut)
    assert (data["outcome"], data["success_score"], data["note"]) == ("partial", "0.3", "arm stalled")
    res = convert_all([str(cut)], ConvertConfig(output_dir=str(tmp_path / "eps"), recover=True), progress=False)
    assert res[0].status == "ok" and res[0].success is False and res[0].success_score == pytest.approx(0.3)
    assert read_episode(Path(res[0].output)).attrs["note"] == "arm stalled"
    # the label travels into the closed copy `bags reindex` writes; a later relabel reaches that copy too
    copy = reindex_bag(cut)
    with open_bag(copy) as b:
        assert b.info.custom_data["outcome"] == "partial"
    w = _writer(tmp_path, typestore)
    ok, text, _ = w.label("cut_ep", "success", float("nan"))
    w.close()
    assert ok and copy.name in text, text
    assert read_custom_data(copy)["outcome"] == read_custom_data(cut)["outcome"] == "success"


def test_joint_states_are_read_by_name(tmp_path, typestore):
    named, _ = _record(tmp_path / "named", typestore, episode_id="named", duration_s=1.0)
    shuffled, _ = _record(tmp_path / "shuffled", typestore, episode_id="shuffled", duration_s=1.0,
                          js_layout="shuffled")
    res = convert_all([str(named), str(shuffled)], ConvertConfig(output_dir=str(tmp_path / "eps")), progress=False)
    assert [r.status for r in res] == ["ok", "ok"], res
    a, b = (read_episode(Path(r.output)) for r in res)
    assert a.num_steps == b.num_steps > 0
    np.testing.assert_array_equal(b.qpos, a.qpos)  # names in any order, an extra joint ignored: same proprio

    # another robot's names (prefixed), mapped through --joint-names
    cfg = ConvertConfig(output_dir=str(tmp_path / "eps_prefixed"), joint_names=[f"left_{n}" for n in JS_NAMES])
    bad = convert_all([str(named)], cfg, progress=False)
    assert bad[0].status == "error" and "missing required joint" in bad[0].notes[0], bad[0].notes


def test_unnamed_joint_states_need_an_explicit_opt_in(tmp_path, typestore):
    bag, _ = _record(tmp_path / "bags", typestore, episode_id="old", duration_s=1.0, js_layout="unnamed")
    res = convert_all([str(bag)], ConvertConfig(output_dir=str(tmp_path / "eps")), progress=False)
    assert res[0].status == "error", res
    assert "no joint names" in res[0].notes[0] and "--allow-unnamed-joint-states" in res[0].notes[0]
    ok = convert_all([str(bag)], ConvertConfig(output_dir=str(tmp_path / "eps2"), allow_unnamed_joint_states=True),
                     progress=False)
    assert ok[0].status == "ok" and ok[0].steps > 0
    named, _ = _record(tmp_path / "named", typestore, episode_id="named", duration_s=1.0)
    ref = convert_all([str(named)], ConvertConfig(output_dir=str(tmp_path / "eps3")), progress=False)
    np.testing.assert_array_equal(read_episode(Path(ok[0].output)).qpos, read_episode(Path(ref[0].output)).qpos)


def test_offered_qos_profiles_are_stored_per_channel(tmp_path, typestore):
    """What the writer is told the publishers offer lands in each MCAP channel's metadata, in rosbag2's YAML."""
    from rosbags.rosbag2 import Reader

    from cosmos_policy_ros.core.episode_bag import OfferedQos

    w = _writer(tmp_path, typestore)
    cam = rt.camera_topic("cam_high")
    w.set_offered_qos(cam, [OfferedQos(depth=1, reliability="best_effort")])
    w.set_offered_qos("/follower_left/joint_states", [OfferedQos(depth=10), OfferedQos(depth=5, durability="transient_local")])
    path = w.start_episode(EpisodeMeta("qos"))
    for t, topic, raw in _events(duration_s=0.3):
        w.enqueue(topic, t, raw)
    w.stop_episode("done")
    w.close()
    with Reader(path) as r:  # rosbags' own reader parses the channel metadata back
        qos = {c.topic: c.ext.offered_qos_profiles for c in r.connections}
    assert [q.reliability.name for q in qos[cam]] == ["BEST_EFFORT"] and qos[cam][0].depth == 1
    assert [q.durability.name for q in qos["/follower_left/joint_states"]] == ["VOLATILE", "TRANSIENT_LOCAL"]
    assert qos["/follower_right/joint_states"] == []  # no publisher known
    mcap = next(path.glob("*.mcap")).read_bytes()
    assert b"offered_qos_profiles" in mcap and b"reliability: best_effort" in mcap
    with open_bag(path) as b:
        assert b.info.topics[cam].offered_qos_profiles[0]["reliability"] == "best_effort"
        assert b.info.topics[cam].offered_qos_profiles[0]["deadline"] == {"sec": 9223372036, "nsec": 854775807}


def test_qos_match_follows_rosbag2_rule():
    from cosmos_policy_ros.core.episode_bag import OfferedQos, adapt_to_offers, incompatible_offers

    rel, be, tl = OfferedQos(), OfferedQos(reliability="best_effort"), OfferedQos(durability="transient_local")
    assert adapt_to_offers([]) == ("reliable", "volatile")
    assert adapt_to_offers([rel, be]) == ("best_effort", "volatile")  # one best-effort publisher is enough
    assert adapt_to_offers([tl, tl]) == ("reliable", "transient_local")  # transient-local only if all offer it
    assert adapt_to_offers([tl, rel]) == ("reliable", "volatile")
    assert incompatible_offers([rel, be], *adapt_to_offers([rel, be])) == []
    assert incompatible_offers([rel, be], "reliable", "volatile") == ["1 best-effort publisher(s), subscription reliable"]
