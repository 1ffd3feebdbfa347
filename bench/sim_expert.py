"""Benchmark: scripted expert success rate in the simulated ALOHA, and sim / render costs.

Prints a markdown section on stdout (progress on stderr). The expert acts at 25 Hz exactly as the demo
generator runs it (each action held for two 50 Hz physics steps), over consecutive seeds from 0.

    python bench/sim_expert.py [--seeds 50] [--tasks transfer_cube]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from cosmos_policy_ros.sim.aloha_sim import AlohaSim  # noqa: E402
from cosmos_policy_ros.sim.expert import EXPERTS  # noqa: E402
from cosmos_policy_ros.sim.generate_demos import rollout_expert  # noqa: E402


def bench_expert(task: str, seeds: int, time_scale: float, jitter: float) -> str:
    """One markdown table row for ``task`` over ``seeds`` seeds."""
    sim = AlohaSim(task, seed=0, render=False, max_steps=400)
    ok = held = 0
    firsts = []
    t0 = time.perf_counter()
    for seed in range(seeds):
        ep = rollout_expert(sim, seed, render=False, time_scale=time_scale, meeting_jitter=jitter)
        ok += ep.success
        held += ep.success_at_end
        if ep.first_success_step is not None:
            firsts.append(ep.first_success_step)
        print(f"{task} seed {seed}: success={ep.success} held={ep.success_at_end} max_reward={ep.max_reward}",
              file=sys.stderr)
    per_ep = (time.perf_counter() - t0) / seeds
    first = f"{np.mean(firsts):.0f} ({min(firsts)}-{max(firsts)})" if firsts else "-"
    return (f"| {task} | {time_scale:g} | {jitter:g} | {seeds} | {ok}/{seeds} ({100 * ok / seeds:.0f}%) | "
            f"{held}/{seeds} | {first} | {per_ep * 1000:.0f} |")


def bench_render(repeats: int = 20) -> str:
    """Markdown lines with the cost of rendering the three ALOHA cameras at two sizes."""
    sim = AlohaSim("transfer_cube", seed=0, render=False)
    lines = []
    for size in ((480, 640), (96, 96)):
        sim.render(size=size)  # create the context
        t0 = time.perf_counter()
        for _ in range(repeats):
            sim.render(size=size)
        ms = (time.perf_counter() - t0) / repeats * 1000
        lines.append(f"| 3 cameras {size[0]}x{size[1]} (cheap settings) | {ms:.1f} ms |")
    a = sim.qpos14()
    t0 = time.perf_counter()
    for _ in range(200):
        sim.step(a, render=False)
    lines.append(f"| physics step (20 ms sim, 10 substeps) + reward | {(time.perf_counter() - t0) / 200 * 1000:.2f} ms |")
    sim.close()
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--tasks", nargs="+", default=sorted(EXPERTS))
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--meeting-jitter", type=float, nargs="+", default=[0.0, 0.02])
    args = parser.parse_args()
    print("Expert at 25 Hz (action held for two 50 Hz physics steps), 400 physics steps (8 s) per episode, "
          "seeds 0..N-1. success = reward 4 reached; held = reward 4 at the last step; first = 50 Hz step of "
          "the first success.\n")
    print("| task | time scale | meeting jitter (m) | seeds | success | held at end | first success step | ms / episode (no images) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for task in args.tasks:
        for jitter in args.meeting_jitter:
            print(bench_expert(task, args.seeds, args.time_scale, jitter), flush=True)
    print("\n| sim cost | time |\n| --- | --- |")
    print(bench_render())
    load = os.getloadavg()
    print(f"\nCPU load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"on {os.cpu_count()} cores (timings scale with contention; success rates do not).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
