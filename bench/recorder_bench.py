"""Recorder benchmark: a full-rate episode through the real recorder node; drops, CPU, write headroom.

Publishes 3 x 480x640 rgb8 at 30 Hz + both follower joint states at 100 Hz + arm/gripper commands at 25 Hz
(+ value, action chunks, diagnostics) for ``--duration`` seconds (default 60) to a recorder subprocess, then
compares the bag with what was published. Also measures the bag writer alone (how fast the writer thread can
drain its queue) and the raw sequential write speed of the output disk, and reports the headroom of each
against the stream's byte rate. Prints markdown (and writes it to ``--markdown`` if given); ``--json`` writes
the figures (`make bench` section recorder) in this schema:

    {"setup": {"duration_s": float, "recorder_parameters": {name: value}, "publishers": str, "cores": int,
               "load_average": [1, 5, 15 min]},
     "topics": [{"topic": str, "published": int, "recorded": int}], "queue_drops_in_bag": int | null,
     "bag_mb": float, "stream_mb_s": float, "recorder_cpu_percent": float, "writer_mb_s": float (writer thread
     alone), "disk_mb_s": float (sequential write with fsync), "recorder_log": str (the recorder's summary line)}

    python bench/recorder_bench.py [--duration 60] [--output-dir /tmp/x] [--json recorder.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _traffic_module():
    spec = importlib.util.spec_from_file_location("robot_traffic", ROOT / "test" / "recording" / "robot_traffic.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("robot_traffic", mod)
    spec.loader.exec_module(mod)
    return mod


def _private_domain() -> int:
    """Hold a DDS domain nobody else on this machine uses (same lock files as the test suite's conftest)."""
    import fcntl
    import random

    lock_dir = Path(tempfile.gettempdir()) / "cosmos_policy_ros_domains"
    lock_dir.mkdir(parents=True, exist_ok=True)
    domains = list(range(1, 201))
    random.shuffle(domains)
    for d in domains:
        fd = os.open(lock_dir / f"{d}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _private_domain.fd = fd  # keep the lock for the life of the process
        return d
    raise RuntimeError(f"no free ROS domain id (lock files in {lock_dir})")


def disk_write_speed(directory: Path, total_mb: int = 1024, block_mb: int = 8) -> float:
    """Sequential write throughput (MB/s) of ``directory``'s disk, fsync included."""
    block = os.urandom(block_mb * 2**20)
    path = directory / ".disk_speed_probe"
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(total_mb // block_mb):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    dt = time.perf_counter() - t0
    path.unlink()
    return total_mb * 2**20 / dt / 1e6


def writer_throughput(directory: Path, seconds: float = 5.0) -> float:
    """How fast (MB/s) the recorder's writer thread stores 480x640 frames + joint states, queue to disk."""
    from cosmos_policy_ros.ros.recorder import (
        EpisodeBagWriter, EpisodeMeta, RecorderConfig, TopicSpec, build_typestore)
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image, JointState

    topics = [TopicSpec(f"/cam{i}", "sensor_msgs/msg/Image", 30) for i in range(3)] + \
        [TopicSpec("/js", "sensor_msgs/msg/JointState")]
    cfg = RecorderConfig(output_dir=str(directory / "writer_only"), topics=topics, min_free_space_mb=100,
                         max_queue_mb=8192)
    w = EpisodeBagWriter(cfg, build_typestore([t.msgtype for t in topics] + ["cosmos_policy_ros/msg/EpisodeEvent"]))
    img = serialize_message(Image(height=480, width=640, encoding="rgb8", step=1920, data=os.urandom(480 * 640 * 3)))
    js = serialize_message(JointState(position=[0.0] * 9))
    w.start_episode(EpisodeMeta("writer_only"))
    n = int(seconds * 30)
    t0 = time.perf_counter()
    nbytes = 0
    for k in range(n):
        t = time.time_ns()
        for i in range(3):
            w.enqueue(f"/cam{i}", t, img)
            nbytes += len(img)
        for _ in range(3):
            w.enqueue("/js", t, js)
            nbytes += len(js)
    w.stop_episode("bench")
    w.close()
    dt = time.perf_counter() - t0
    shutil.rmtree(directory / "writer_only", ignore_errors=True)
    return nbytes / dt / 1e6


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_node_episode(out_dir: Path, duration: float, log_dir: Path, params: dict, publisher_depth: int = 50,
                     keep_all_publishers: bool = False) -> dict:
    """One recorded full-rate episode; returns published/recorded counts, CPU and recorder stats."""
    from rclpy.qos import QoSProfile

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.ros.harness import NodeProcess, NodeSpec, RosSession, wait_for, wait_for_subscribers
    from cosmos_policy_training.bags import open_bag, read_custom_data

    rt = _traffic_module()
    parameters = {"output_dir": str(out_dir), "min_free_space_mb": 1000.0, "publish_diagnostics": False}
    parameters.update(params)
    proc = NodeProcess(NodeSpec("cosmos_policy_ros.ros.recorder", parameters=parameters), str(log_dir))
    session = RosSession()
    try:
        node = session.make_node("bench_robot")
        traffic = rt.RobotTraffic(node, depth=publisher_depth, keep_all=keep_all_publishers)
        events = node.create_publisher(EpisodeEvent, "/episode", QoSProfile(depth=10))
        for topic in ["/episode"] + traffic.topics():
            wait_for_subscribers(node, topic, 1, timeout=60.0)
        events.publish(EpisodeEvent(event=EpisodeEvent.START, episode_id="bench", task="benchmark"))
        wait_for(lambda: "episode 'bench' ->" in proc.output(), 20.0, what="episode start")
        cpu0 = _cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        traffic.start(duration)
        traffic.join(duration + 60)
        time.sleep(0.5)
        events.publish(EpisodeEvent(event=EpisodeEvent.STOP, episode_id="bench", reason="bench"))
        wait_for(lambda: "recorder: closed" in proc.output(), 120.0, what="bag closed")
        wall = time.perf_counter() - t0
        cpu = (_cpu_seconds(proc.pid) - cpu0) / wall
    finally:
        proc.stop()
        session.close()
    bag = next(out_dir.glob("*_bench"))
    with open_bag(bag) as b:
        recorded = {t: i.count for t, i in b.info.topics.items()}
    size = sum(p.stat().st_size for p in bag.iterdir())
    published = {t: traffic.log.count(t) for t in traffic.topics()}
    stats_line = [ln for ln in proc.log_path.read_text().splitlines() if "recorder stopped" in ln]
    return {"published": published, "recorded": recorded, "cpu": cpu, "wall": wall, "bytes": size,
            "duration": duration, "custom": read_custom_data(bag), "stats": stats_line[-1] if stats_line else "",
            "bag": bag}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--output-dir", default=None, help="where bags go (default: a temporary directory)")
    parser.add_argument("--markdown", default=None, help="also write the markdown report here")
    parser.add_argument("--json", default=None, help="write the figures here (schema: this file's docstring)")
    parser.add_argument("--keep", action="store_true", help="keep the recorded bag")
    parser.add_argument("--publisher-depth", type=int, default=50, help="publishers' keep-last depth (default 50)")
    parser.add_argument("--keep-all-publishers", action="store_true", help="publishers with keep-all history")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="extra recorder parameter (e.g. executor=single_threaded)")
    args = parser.parse_args(argv)
    # A private DDS domain, confined to this machine: other graphs publishing the same topic names would be
    # recorded too (seen on a shared machine: more messages recorded than published).
    os.environ["ROS_DOMAIN_ID"] = str(_private_domain())
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="recorder_bench_"))
    out.mkdir(parents=True, exist_ok=True)
    params = {}
    for item in args.param:
        k, _, v = item.partition("=")
        params[k] = float(v) if v.replace(".", "", 1).isdigit() else v
    disk = disk_write_speed(out)
    writer = writer_throughput(out)
    r = run_node_episode(out, args.duration, out, params, args.publisher_depth, args.keep_all_publishers)
    load = os.getloadavg()
    need = r["bytes"] / r["duration"] / 1e6
    custom_drops = r["custom"].get("dropped_messages")
    result = {
        "setup": {"duration_s": args.duration, "recorder_parameters": params,
                  "publishers": "keep-all" if args.keep_all_publishers else f"keep-last depth {args.publisher_depth}",
                  "cores": os.cpu_count(), "load_average": [round(v, 1) for v in load]},
        "topics": [{"topic": t, "published": n, "recorded": r["recorded"].get(t, 0)} for t, n in r["published"].items()],
        "queue_drops_in_bag": int(custom_drops) if str(custom_drops).isdigit() else None,
        "bag_mb": round(r["bytes"] / 1e6), "stream_mb_s": round(need, 1), "recorder_cpu_percent": round(100 * r["cpu"]),
        "writer_mb_s": round(writer), "disk_mb_s": round(disk), "recorder_log": r["stats"],
    }
    total_drops = sum(t["published"] - t["recorded"] for t in result["topics"])
    sys.path.insert(0, str(HERE))  # PYTHONSAFEPATH=1 leaves the script's folder out
    import render

    text = render.recorder_body(result) + "\n"
    print(text)
    if args.json:
        render.write_json(Path(args.json), result)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text + "\n")
    if not args.keep:
        shutil.rmtree(r["bag"], ignore_errors=True)
    return 0 if total_drops == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
