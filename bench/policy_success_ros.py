"""Benchmark: the small sim policy through the real ROS 2 graph (sim bridge, policy node, 25 Hz commander,
recorder), episode after episode on one running graph, in real time.

Each episode: reset the scene to its seed, start a recorded episode, stop on success or after the time
limit, label the bag. Complements bench/policy_success.py (the same policy in a ROS-free loop, 50 seeds):
this one measures what a user of `make demo` gets, including the inference latency of a shared CPU.
Prints a markdown section on stdout.

    python bench/policy_success_ros.py [--episodes 10] [--seed-start 1000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed-start", type=int, default=1000)
    p.add_argument("--checkpoint", default=None, help="default: the demo's embedded checkpoint")
    args = p.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="policy_success_ros_"))
    cmd = [sys.executable, "-m", "cosmos_policy_ros.demo", "--episodes", str(args.episodes), "--seed",
           str(args.seed_start), "--out", str(out), "--json", str(out / "results.json")]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    sys.stderr.write(proc.stdout[-4000:])
    if proc.returncode != 0 or not (out / "results.json").is_file():
        print(f"The run failed (exit {proc.returncode}):\n\n```\n{(proc.stdout + proc.stderr)[-3000:]}\n```")
        return 1
    results = json.loads((out / "results.json").read_text())
    n, ok = len(results), sum(r["success"] for r in results)
    hist = [sum(r["max_reward"] == k for r in results) for k in range(5)]
    chunks = sum(r["chunks"] for r in results) / max(n, 1)
    print(f"Embedded checkpoint through the real ROS 2 graph (config/graph.yaml `sim`: sim bridge in real time, "
          f"policy node, commander, recorder; one bag per episode), seeds {args.seed_start}..{args.seed_start + n - 1}, "
          f"12 s per episode, cameras at 15 Hz (the demo's setting).\n")
    print("| episodes | success | max reward 0/1/2/3/4 | chunks executed per episode | wall time |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {n} | {ok}/{n} ({100 * ok / n:.0f}%) | {'/'.join(map(str, hist))} | {chunks:.1f} | {wall:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
