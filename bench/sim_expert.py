"""Benchmark: scripted expert success rate in the simulated ALOHA, and sim / render costs.

Prints a markdown section on stdout (progress on stderr). The expert acts at 25 Hz exactly as the demo
generator runs it (each action held for two 50 Hz physics steps), over consecutive seeds from 0. ``--json``
writes the figures (`make bench` section sim_expert) in this schema:

    {"setup": {"rate_hz": 25, "physics_steps": int, "cores": int},
     "rows": [{"task": str, "time_scale": float, "meeting_jitter_m": float, "seeds": int, "successes": int,
               "held_at_end": int, "first_success_step_mean": float | null, "first_success_step_min": int | null,
               "first_success_step_max": int | null, "ms_per_episode": float (no images)}],
     "costs": [{"what": str, "ms": float, "decimals": int (as reported)}], "load_average": [1, 5, 15 min]}

    python bench/sim_expert.py [--seeds 50] [--tasks transfer_cube] [--json F]
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
    """One row of figures for ``task`` over ``seeds`` seeds."""
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
    return {"task": task, "time_scale": time_scale, "meeting_jitter_m": jitter, "seeds": seeds, "successes": int(ok),
            "held_at_end": int(held), "first_success_step_mean": float(np.mean(firsts)) if firsts else None,
            "first_success_step_min": int(min(firsts)) if firsts else None,
            "first_success_step_max": int(max(firsts)) if firsts else None, "ms_per_episode": per_ep * 1000}


def bench_render(repeats: int = 20) -> list:
    """The cost of rendering the three ALOHA cameras at two sizes, and of a physics step."""
    sim = AlohaSim("transfer_cube", seed=0, render=False)
    lines = []
    for size in ((480, 640), (96, 96)):
        sim.render(size=size)  # create the context
        t0 = time.perf_counter()
        for _ in range(repeats):
            sim.render(size=size)
        ms = (time.perf_counter() - t0) / repeats * 1000
        lines.append({"what": f"3 cameras {size[0]}x{size[1]} (cheap settings)", "ms": ms, "decimals": 1})
    a = sim.qpos14()
    t0 = time.perf_counter()
    for _ in range(200):
        sim.step(a, render=False)
    lines.append({"what": "physics step (20 ms sim, 10 substeps) + reward",
                  "ms": (time.perf_counter() - t0) / 200 * 1000, "decimals": 2})
    sim.close()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--tasks", nargs="+", default=sorted(EXPERTS))
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--meeting-jitter", type=float, nargs="+", default=[0.0, 0.02])
    parser.add_argument("--json", default=None, help="write the figures here (schema: this file's docstring)")
    args = parser.parse_args()
    rows = [bench_expert(task, args.seeds, args.time_scale, jitter)
            for task in args.tasks for jitter in args.meeting_jitter]
    result = {"setup": {"rate_hz": 25, "physics_steps": 400, "cores": os.cpu_count()}, "rows": rows,
              "costs": bench_render(), "load_average": [round(v, 1) for v in os.getloadavg()]}
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # PYTHONSAFEPATH=1 leaves it out
    import render

    if args.json:
        from pathlib import Path

        render.write_json(Path(args.json), result)
    print(render.sim_expert_body(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
