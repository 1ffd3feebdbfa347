"""Commander timing while inference runs, and observation -> model-input preprocessing time.

Starts the policy node (latency test double, by default burning CPU for 40 % of each 2 s chunk, like a
CPU-bound model on the same machine) and the commander as subprocesses from the shared graph definition,
feeds them three synthetic 480x640 rgb8 cameras (30 Hz) and both followers' joint states (100 Hz) from this
process, and reports the commander's own tick period statistics (from its /diagnostics), missed ticks,
held ticks, and the per-tick receive intervals seen by a subscriber. Then times, in process: image message ->
numpy view (3 frames) and numpy -> model input (three 480x640 frames through core.images), and the pure
per-tick commander logic. Prints markdown on stdout (progress on stderr); ``--json`` writes the figures
(`make bench` section commander) in this schema:

    {"setup": {"latency_s": float, "busy": bool, "image_size": [h, w], "duration_s": float, "nice": int,
               "cores": int, "load_at_end": float},
     "nodes": null (--skip-nodes) | {"ticks": int, "tick_span": int, "missed": int, "held": int,
               "hold_reasons": {reason: ticks} | str, "tick_period_ms": {"p50", "p99", "max"},
               "receive_interval_ms": {"p50", "p99", "max"}, "chunk_margin_last_ticks": int,
               "chunk_margin_min_ticks": int, "trigger_after_observation_s": float,
               "safety_interventions": int, "alive": bool},  (a figure the diagnostics lacked: null)
     "in_process_ms": [{"step": str, "p50": float, "p99": float, "max": float}]}

    python bench/commander_bench.py [--duration 30] [--latency 0.8] [--sleep] [--image-size 480x640] [--nice -10] [--json F]
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values, q):
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def run_nodes(duration: float, latency: float, busy: bool, h: int, w: int, nice: int = 0):
    import rclpy  # noqa: F401
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from cosmos_policy_ros.core.robot import JS_NAMES
    from cosmos_policy_ros.ros.commander_logic import TRACE_FIELDS
    from cosmos_policy_ros.ros.diagnostics import status_values
    from cosmos_policy_ros.ros.graph import graph_nodes
    from cosmos_policy_ros.ros.harness import Collector, RosSession, launch, wait_for_publishers

    F = {n: i for i, n in enumerate(TRACE_FIELDS)}
    session = RosSession()
    node = session.make_node("commander_bench")
    cams = ("cam_high", "cam_left_wrist", "cam_right_wrist")
    cam_pubs = [node.create_publisher(Image, f"/{c}/camera/color/image_rect_raw", qos_profile_sensor_data) for c in cams]
    js_pubs = [node.create_publisher(JointState, f"/follower_{s}/joint_states", 10) for s in ("left", "right")]
    frame = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8).tobytes()
    commanded = {"left": [0.0] * 6, "right": [0.0] * 6}

    def now_msg():
        ns = node.get_clock().now().nanoseconds
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def pub_cams():
        st = now_msg()
        for p in cam_pubs:
            m = Image(height=h, width=w, encoding="rgb8", step=w * 3)
            m.header.stamp = st
            m.data = frame
            p.publish(m)

    def pub_js():
        st = now_msg()
        for side, p in zip(("left", "right"), js_pubs):
            m = JointState()
            m.header.stamp = st
            m.name = list(JS_NAMES)  # as the Interbotix driver publishes them: the commander reads by name
            m.position = commanded[side] + [1.12, 0.05, -0.05]
            p.publish(m)

    node.create_timer(1 / 30, pub_cams)
    node.create_timer(1 / 100, pub_js)
    trace = Collector(node, Float64MultiArray, "/commander/trace", 1000)
    diags = Collector(node, DiagnosticArray, "/diagnostics", 200)
    spec = f"test-double:latency={latency}" + (",busy=1" if busy else "")
    specs = [n.spec for n in graph_nodes("aloha", {"checkpoint": spec, "record": False, "task": "bench"},
                                          node_parameters={"policy": {"image_height": h, "image_width": w},
                                                           "commander": {"nice": nice}})]
    result = {}
    with tempfile.TemporaryDirectory() as logs, launch(specs, logs) as procs:
        wait_for_publishers(node, "/commander/trace", timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(m.data[F["held"]] == 0 for m in trace.snapshot()):
            time.sleep(0.1)
        log(f"commander running; measuring {duration:.0f} s")
        n0, d0 = len(trace), len(diags)
        time.sleep(duration)
        rows = [np.asarray(m.data) for m in trace.snapshot()[n0:]]
        times = trace.times[n0:len(trace.times)]
        com = [status_values(s) for a in diags.snapshot()[d0:] for s in a.status if "commander" in s.name]
        pol = [status_values(s) for a in diags.snapshot()[d0:] for s in a.status if "policy" in s.name]
        alive = all(p.alive() for p in procs)
    session.close()
    if not rows:
        raise RuntimeError("no commander ticks observed")
    ticks = np.array([r[F["tick"]] for r in rows])
    result["ticks"] = len(rows)
    result["tick_span"] = int(ticks[-1] - ticks[0] + 1)
    result["missed"] = int(rows[-1][F["missed_total"]] - rows[0][F["missed_total"]])
    result["held"] = int(sum(r[F["held"]] for r in rows))
    result["recv_intervals"] = np.diff(times)
    result["commander_diag"] = com[-1] if com else {}
    result["policy_diag"] = pol[-1] if pol else {}
    result["alive"] = alive
    return result


def bench_preprocess(h: int, w: int, reps: int):
    from cosmos_policy_ros.core.observation import decode_image

    frames = [np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8).tobytes() for i in range(3)]
    t_decode = []
    for _ in range(reps):
        t = time.perf_counter()
        views = [decode_image(f, h, w, "bgr8", w * 3) for f in frames]
        t_decode.append(time.perf_counter() - t)
    out = {"decode": t_decode}
    try:
        from cosmos_policy_ros.core.images import ImageConfig, preprocess_images
    except ImportError:
        return out
    cfg = ImageConfig()
    preprocess_images(views, cfg)  # warm-up
    t_pre = []
    for _ in range(reps):
        t = time.perf_counter()
        views = [decode_image(f, h, w, "bgr8", w * 3) for f in frames]
        x = preprocess_images(views, cfg)
        t_pre.append(time.perf_counter() - t)
    assert x.shape == (3, cfg.size, cfg.size, 3)
    out["preprocess"] = t_pre
    return out


def bench_logic(reps: int):
    from cosmos_policy_ros.core.chunking import Chunk, SpliceConfig
    from cosmos_policy_ros.core.robot import JS_NAMES, gripper_convention
    from cosmos_policy_ros.core.safety import SafetyConfig
    from cosmos_policy_ros.ros.commander_logic import CommanderLogic

    conv = gripper_convention("aloha2")
    logic = CommanderLogic(SpliceConfig(), SafetyConfig(), conv)
    js = [0.0] * 6 + [1.12, 0.05, -0.05]
    acts = np.zeros((50, 14))
    acts[:, 6] = acts[:, 13] = 0.5
    out = []
    t = 0.0
    for k in range(reps):
        logic.on_joint_state("left", t, JS_NAMES, js)
        logic.on_joint_state("right", t, JS_NAMES, js)
        if k % 25 == 1:
            logic.on_chunk(Chunk(k, t, 0.04, acts), t)
        t0 = time.perf_counter()
        logic.tick(t)
        out.append(time.perf_counter() - t0)
        t += 0.04
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of measured running")
    ap.add_argument("--latency", type=float, default=0.8, help="inference latency (s); 0.8 = 40%% of a 2 s chunk")
    ap.add_argument("--sleep", action="store_true", help="the test double sleeps instead of burning CPU")
    ap.add_argument("--image-size", default="480x640", help="camera HxW")
    ap.add_argument("--reps", type=int, default=30, help="repetitions of the in-process timings")
    ap.add_argument("--skip-nodes", action="store_true", help="only the in-process timings")
    ap.add_argument("--nice", type=int, default=0, help="commander niceness (e.g. -10; needs CAP_SYS_NICE)")
    ap.add_argument("--json", default=None, help="write the figures here (schema: this file's docstring)")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.image_size.lower().split("x"))
    r3 = lambda v: round(float(v) * 1e3, 2)  # noqa: E731 - seconds -> ms as reported

    def diag(d, key, cast=float):
        try:
            return cast(d[key])
        except (KeyError, ValueError, TypeError):
            return None
    result = {"setup": {"latency_s": args.latency, "busy": not args.sleep, "image_size": [h, w],
                        "duration_s": args.duration, "nice": args.nice, "cores": os.cpu_count(), "load_at_end": None},
              "nodes": None}
    if not args.skip_nodes:
        log("starting policy node (test double) + commander ...")
        r = run_nodes(args.duration, args.latency, not args.sleep, h, w, args.nice)
        cd, pd = r["commander_diag"], r["policy_diag"]
        ri = r["recv_intervals"]
        reasons = cd.get("hold_reasons")
        try:
            reasons = ast.literal_eval(reasons) if reasons not in (None, "none") else {}
        except (ValueError, SyntaxError):
            pass  # keep the text
        period = {q: (None if diag(cd, f"tick_period_{q}_s") is None else r3(diag(cd, f"tick_period_{q}_s")))
                  for q in ("p50", "p99", "max")}
        result["setup"]["load_at_end"] = round(os.getloadavg()[0], 1)
        result["nodes"] = {
            "ticks": r["ticks"], "tick_span": r["tick_span"], "missed": r["missed"], "held": r["held"],
            "hold_reasons": reasons, "tick_period_ms": period,
            "receive_interval_ms": {"p50": r3(pct(ri, 50)), "p99": r3(pct(ri, 99)), "max": r3(np.max(ri))},
            "chunk_margin_last_ticks": diag(cd, "chunk_margin_last_ticks", int),
            "chunk_margin_min_ticks": diag(cd, "chunk_margin_min_ticks", int),
            "trigger_after_observation_s": diag(pd, "trigger_after_observation_s"),
            "safety_interventions": diag(cd, "safety_interventions", int), "alive": bool(r["alive"])}
    log("timing preprocessing ...")
    pre = bench_preprocess(h, w, args.reps)
    logic = bench_logic(max(args.reps * 20, 500))
    stats = lambda v: {"p50": r3(pct(v, 50)), "p99": r3(pct(v, 99)), "max": r3(max(v))}  # noqa: E731
    steps = [{"step": f"3 x {h}x{w} image message -> numpy view (zero copy)", **stats(pre["decode"])}]
    if "preprocess" in pre:
        steps.append({"step": f"3 x {h}x{w} frames -> model input 224x224 (core.images, incl. decode)",
                      **stats(pre["preprocess"])})
    steps.append({"step": "commander logic per tick (splice + safety, no ROS)", **stats(logic)})
    result["in_process_ms"] = steps
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # PYTHONSAFEPATH=1 leaves it out
    import render

    if args.json:
        render.write_json(Path(args.json), result)
    print(render.commander_body(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
