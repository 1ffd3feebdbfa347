"""Benchmark: the small sim policy through the real ROS 2 graph (sim bridge, policy node, 25 Hz commander,
recorder), episode after episode on one running graph, in real time.

Each episode: reset the scene to its seed, start a recorded episode, stop on success or after the time
limit, label the bag. Complements bench/policy_success.py (the same policy in a ROS-free loop, 50 seeds):
this one measures what a user of `make demo` gets, including the inference latency of a shared CPU.
Rows (``--execution``, comma-separated): ``pause``, ``stream``, ``stream-rtc`` (streaming with real-time chunking,
the settings of :data:`RTC_BEST`), ``stream-rtc-<method>`` (replace or guided), and ``MODE/N`` to execute only the
first N actions of each chunk (e.g. pause/25). Prints a markdown section on stdout; ``--json`` writes:

    {"seed_start": int, "episode_s": float, "cameras": str,
     "rows": [{"execution": str, "episodes": int, "successes": int, "median_time_to_success_s": float | null,
               "held_ticks_per_episode": float, "max_switch_jump_rad": float, "max_reward_counts": [int x 5],
               "chunks_per_episode": float, "wall_s": float}],
     "policy": {"checkpoint": str, "training_data": str, "training_time": str} (when the checkpoint has a recipe)}

held ticks: commander ticks held while an episode runs (all reasons); max switch jump: largest per-tick arm-joint
command change at the ticks where a new chunk took over (both from the commander's trace).

    python bench/policy_success_ros.py [--episodes 50] [--seed-start 1000] [--execution pause,stream,stream-rtc]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cosmos_policy_ros.demo import EMBEDDED_CHECKPOINT
from cosmos_policy_training.rollouts import STREAM_RTC_DEFAULTS

#: the stream-rtc row: (method, weight schedule, execution horizon in ticks; 0 = the just-in-time schedule), chosen
#: on 10 seeds in the ROS-free loop (docs/runtime.md, "Real-time chunking"); streaming DAgger rollouts use the same
RTC_BEST = STREAM_RTC_DEFAULTS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed-start", type=int, default=1000)
    p.add_argument("--checkpoint", default=None, help="default: the demo's embedded checkpoint")
    p.add_argument("--keep-bags", action="store_true", help="keep the recorded bags (deleted by default)")
    p.add_argument("--execution", default="pause,stream,stream-rtc",
                   help="comma-separated rows: pause, stream, stream-rtc, stream-rtc-replace, stream-rtc-guided, or "
                        "MODE/N to execute only the first N actions of each chunk (e.g. pause/25)")
    p.add_argument("--json", default=None, help="write the figures here (schema: this file's docstring)")
    args = p.parse_args(argv)
    rows = []
    for execution in [m.strip() for m in args.execution.split(",") if m.strip()]:
        row = run_mode(args, execution)
        if row is None:
            return 1
        rows.append(row)
    print(f"Embedded checkpoint through the real ROS 2 graph (config/graph.yaml `sim`: sim bridge in real time, "
          f"policy node, commander, recorder; one bag per episode), seeds {args.seed_start}..{args.seed_start + args.episodes - 1}, "
          f"12 s per episode, cameras 240x320 at 15 Hz (the demo's setting; config/sim.yaml). `stream-rtc` (the "
          f"launch files' and `make demo`'s default) re-plans while the robot moves, with real-time chunking "
          f"({RTC_BEST[0]}, {RTC_BEST[1]} weights, an observation every {RTC_BEST[2]} ticks at most); `stream` the "
          f"same without it; `pause` runs whole chunks and holds while the next is computed (the released "
          f"deploy).\n")
    print("| execution | episodes | success | max reward 0/1/2/3/4 | chunks per episode | median time to success | "
          "held ticks per episode | max switch jump (rad) | wall time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        n = max(1, r["episodes"])
        tts = r["median_time_to_success_s"]
        print(f"| {r['execution']} | {r['episodes']} | {r['successes']}/{r['episodes']} ({100 * r['successes'] / n:.0f}%) | "
              f"{'/'.join(map(str, r['max_reward_counts']))} | {r['chunks_per_episode']:.1f} | "
              f"{'-' if tts is None else f'{tts:.1f} s'} | {r['held_ticks_per_episode']:.1f} | "
              f"{r['max_switch_jump_rad']:.3f} | {r['wall_s']:.0f} s |")
    out = {"seed_start": args.seed_start, "episode_s": 12.0, "cameras": "240x320 at 15 Hz", "rows": rows}
    ckpt = Path(args.checkpoint) if args.checkpoint else Path(__file__).resolve().parents[1] / EMBEDDED_CHECKPOINT
    recipe = json.loads((ckpt / "recipe.json").read_text()) if (ckpt / "recipe.json").is_file() else {}
    if recipe:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from policy_success import training_summary  # the same summary of the whole chain of recorded runs

        data, took = training_summary(recipe).split(" | ")
        out["policy"] = {"checkpoint": ckpt.name, "training_data": data, "training_time": took}
        print(f"\nPolicy: `{ckpt.name}`, trained on {data}; {took}. For comparison: the same policy in the ROS-free "
              f"loop (section above) and ACT's published ~90% with 50 scripted demos.")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def demo_arguments(execution: str):
    """A row name -> the demo's execution arguments."""
    mode, _, n_exec = execution.partition("/")
    cmd = ["--execute-horizon", n_exec or "0"]
    if mode.startswith("stream-rtc"):
        method = mode[len("stream-rtc-"):] if mode.startswith("stream-rtc-") else RTC_BEST[0]
        if method not in ("replace", "guided"):
            raise SystemExit(f"unknown row {execution!r}: expected stream-rtc, stream-rtc-replace or stream-rtc-guided")
        return ["--execution", "stream", "--rtc", method, "--rtc-schedule", RTC_BEST[1],
                "--rtc-execution-horizon", str(RTC_BEST[2])] + cmd
    if mode not in ("stream", "pause"):
        raise SystemExit(f"unknown row {execution!r}: expected pause, stream or stream-rtc[-method] (optionally /N)")
    return ["--execution", mode, "--rtc", "off"] + cmd


def run_mode(args, execution: str):
    """Run the demo's episodes in one execution mode; returns the row (None on failure)."""
    out = Path(tempfile.mkdtemp(prefix="policy_success_ros_"))
    cmd = [sys.executable, "-m", "cosmos_policy_ros.demo", "--episodes", str(args.episodes), "--seed",
           str(args.seed_start), "--out", str(out), "--json", str(out / "results.json")] + demo_arguments(execution)
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    sys.stderr.write(proc.stdout[-4000:])
    if proc.returncode != 0 or not (out / "results.json").is_file():
        print(f"The {execution} run failed (exit {proc.returncode}):\n\n```\n{(proc.stdout + proc.stderr)[-3000:]}\n```")
        return None
    results = json.loads((out / "results.json").read_text())
    if not args.keep_bags:  # ~0.5 GB of camera frames per episode: 50 episodes would fill a small disk
        shutil.rmtree(out, ignore_errors=True)
    n, ok = len(results), [r for r in results if r["success"]]
    return {"execution": execution, "episodes": n, "successes": len(ok),
            "median_time_to_success_s": statistics.median(r["sim_time"] for r in ok) if ok else None,
            "held_ticks_per_episode": sum(r["held_ticks"] for r in results) / max(n, 1),
            "max_switch_jump_rad": max((r["max_switch_jump_rad"] for r in results), default=0.0),
            "max_reward_counts": [sum(r["max_reward"] == k for r in results) for k in range(5)],
            "chunks_per_episode": sum(r["chunks"] for r in results) / max(n, 1), "wall_s": round(wall)}


if __name__ == "__main__":
    sys.exit(main())
