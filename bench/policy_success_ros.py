"""Benchmark: the small sim policy through the real ROS 2 graph (sim bridge, policy node, 25 Hz commander,
recorder), episode after episode on one running graph, in real time.

Each episode: reset the scene to its seed, start a recorded episode, stop on success or after the time
limit, label the bag. Complements bench/policy_success.py (the same policy in a ROS-free loop, 50 seeds):
this one measures what a user of `make demo` gets, including the inference latency of a shared CPU.
Prints a markdown section on stdout; ``--json`` writes the figures (`make bench` section policy_success_ros)
in this schema (a figure not measured: null):

    {"seed_start": int, "episode_s": float, "cameras": str,
     "rows": [{"execution": str, "episodes": int, "successes": int, "median_time_to_success_s": float,
               "held_ticks_per_episode": float, "max_switch_jump_rad": float,
               "max_reward_counts": [episodes ending with max reward 0..4], "chunks_per_episode": float,
               "wall_s": float}],
     "policy": {"checkpoint": str, "training_data": str, "training_time": str}}

held ticks: commander ticks held while an episode runs (all reasons); max switch jump: largest per-tick
commanded change at the ticks where a new chunk took over; time to success: simulated seconds until the
episode stopped on success.

    python bench/policy_success_ros.py [--episodes 50] [--seed-start 1000] [--execution stream,pause] [--json F]
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed-start", type=int, default=1000)
    p.add_argument("--checkpoint", default=None, help="default: the demo's embedded checkpoint")
    p.add_argument("--keep-bags", action="store_true", help="keep the recorded bags (deleted by default)")
    p.add_argument("--execution", default="stream,pause",
                   help="comma-separated policy node execution modes to run, one row each: stream, pause, or "
                        "MODE/N to execute only the first N actions of each chunk (e.g. pause/25)")
    p.add_argument("--json", default=None, help="write the figures here (schema: this file's docstring)")
    args = p.parse_args(argv)
    rows = []
    for execution in [m.strip() for m in args.execution.split(",") if m.strip()]:
        row = run_mode(args, execution)
        if row is None:
            return 1
        rows.append(row)
    result = {"seed_start": args.seed_start, "episode_s": 12.0, "cameras": "240x320 at 15 Hz", "rows": rows}
    ckpt = Path(args.checkpoint) if args.checkpoint else Path(__file__).resolve().parents[1] / "checkpoints" / "sim_transfer_cube"
    recipe = json.loads((ckpt / "recipe.json").read_text()) if (ckpt / "recipe.json").is_file() else {}
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # PYTHONSAFEPATH=1 leaves the script's folder out
    import render

    if recipe:
        from policy_success import training_summary  # the same summary of the whole chain of recorded runs

        data, took = training_summary(recipe).split(" | ")
        result["policy"] = {"checkpoint": ckpt.name, "training_data": data, "training_time": took}
    if args.json:
        render.write_json(Path(args.json), result)
    print(render.policy_success_ros_body(result))
    return 0


def run_mode(args, execution: str):
    """Run the demo's episodes in one execution mode; returns its row of figures (None on failure)."""
    out = Path(tempfile.mkdtemp(prefix="policy_success_ros_"))
    mode, _, n_exec = execution.partition("/")
    cmd = [sys.executable, "-m", "cosmos_policy_ros.demo", "--episodes", str(args.episodes), "--seed",
           str(args.seed_start), "--out", str(out), "--json", str(out / "results.json"), "--execution", mode,
           "--execute-horizon", n_exec or "0"]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    sys.stderr.write(proc.stdout[-4000:])
    if proc.returncode != 0 or not (out / "results.json").is_file():
        print(f"The {execution} run failed (exit {proc.returncode}):\n\n```\n{(proc.stdout + proc.stderr)[-3000:]}\n```", file=sys.stderr)
        return None
    results = json.loads((out / "results.json").read_text())
    if not args.keep_bags:  # ~0.5 GB of camera frames per episode: 50 episodes would fill a small disk
        shutil.rmtree(out, ignore_errors=True)
    n, ok = len(results), sum(r["success"] for r in results)
    hist = [sum(r["max_reward"] == k for r in results) for k in range(5)]
    chunks = sum(r["chunks"] for r in results) / max(n, 1)
    to_success = sorted(float(r["sim_time"]) for r in results if r["success"] and r.get("sim_time") is not None)
    return {"execution": execution, "episodes": n, "successes": int(ok),
            "median_time_to_success_s": statistics.median(to_success) if to_success else None,
            "held_ticks_per_episode": None, "max_switch_jump_rad": None,  # not measured by this loop yet
            "max_reward_counts": hist, "chunks_per_episode": chunks, "wall_s": wall}


if __name__ == "__main__":
    sys.exit(main())
