"""Benchmark: success rate of the small sim policy (checkpoints/sim_transfer_cube) on transfer cube.

Loop used: the ROS-free sim loop (``cosmos_policy_training.rollouts``: AlohaSim + CosmosPolicy in one
process, policy at 25 Hz on 50 Hz physics, each action held 2 physics steps, 50-action chunks executed
open-loop as the released deploy), not the ROS graph. Scene seeds 1000.. are held out (demos use 0..49).
Prints a markdown section on stdout, progress on stderr; ``--json`` writes the figures (`make bench` section
policy_success) in this schema:

    {"checkpoint": str, "policy_id": str, "actions_per_chunk": int, "seed_start": int, "episodes": int,
     "settle_steps": int, "successes": int, "max_reward_counts": [episodes ending with max reward 0..4],
     "training_data": str, "training_time": str (from the checkpoint's recipe.json),
     "inference_ms_per_chunk": float (CPU), "wall_s": float,
     "references": [{"policy": str, "success": str, "training_data": str}] (published figures, not measured here)}

    python bench/policy_success.py [--episodes 50] [--policy checkpoints/sim_transfer_cube] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from cosmos_policy_ros.demo import EMBEDDED_CHECKPOINT  # noqa: E402 - the demo's default policy

ROOT = Path(__file__).resolve().parents[1]


def training_summary(recipe: dict) -> str:
    """'training data | training time' cells from a checkpoint's recipe.json, summed over its chain of runs
    (``init_recipe``: each --init continuation nests the recipe of the checkpoint it started from)."""
    chain = []
    r = recipe
    while r:
        chain.append(r)
        r = r.get("init_recipe")
    if not chain:
        return "? | ?"
    demos = int(chain[0].get("demos", {}).get("count", 0))  # the newest run's (older ones may count DAgger files)
    extra = {}
    for r in chain:
        extra.update(r.get("extra_demos", {}))  # folders only grow along a chain: the newest count wins
    steps = sum(int(r.get("steps", 0)) for r in chain)
    batch = chain[0].get("global_batch", "?")
    secs = sum(float(r.get("seconds", {}).get(k) or 0) for r in chain
               for k in ("data", "load_episodes", "train_incl_latent_cache"))
    data = f"{demos} scripted demos" + (f" + {sum(extra.values())} extra episodes" if extra else "")
    earlier = "--init" in chain[-1].get("command", "")  # the oldest recorded run continued an unrecorded one
    runs = f" ({len(chain)} runs{' + earlier, not recorded' if earlier else ''})" if len(chain) > 1 or earlier else ""
    time_s = f"{secs / 60:.0f} min (CPU, 2 cores){runs}" if secs else "?"  # recorded runs only
    rep = recipe.get("reproduce") or {}
    if rep.get("minutes"):  # the whole recipe: data, latent encoding, rollouts and training
        time_s += f"; whole recipe {rep['minutes']} min (`{rep.get('command', '?')}`)"
    return f"{data}, {steps} steps x batch {batch}{runs} | {time_s}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / EMBEDDED_CHECKPOINT))
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed-start", type=int, default=1000)
    p.add_argument("--execute", type=int, default=None, help="actions executed per chunk (default: all 50)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the figures here (schema: this file's docstring)")
    args = p.parse_args(argv)

    import torch

    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_training.rollouts import DEFAULT_IMAGE_SIZE, run_episode
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, decode_future_images=False)
    sim = AlohaSim("transfer_cube", seed=args.seed_start, image_size=DEFAULT_IMAGE_SIZE, cameras=policy.layout.cameras,
                   max_steps=400, render=False)
    ok = 0
    rewards = []
    t0 = time.perf_counter()
    infer = 0.0
    queries = 0
    for i in range(args.episodes):
        seed = args.seed_start + i
        r = run_episode(policy, sim, seed, execute=args.execute)
        ok += r.success
        rewards.append(r.max_reward)
        infer += r.infer_seconds
        queries += r.queries
        print(f"seed {seed}: success={r.success} max_reward={r.max_reward}", file=sys.stderr, flush=True)
    sim.close()
    wall = time.perf_counter() - t0
    recipe = {}
    rp = Path(args.policy) / "recipe.json"
    if rp.is_file():
        recipe = json.loads(rp.read_text())
    n = args.episodes
    data, took = training_summary(recipe).split(" | ")
    result = {"checkpoint": Path(args.policy).name, "policy_id": policy.policy_id,
              "actions_per_chunk": args.execute or policy.horizon, "seed_start": args.seed_start, "episodes": n,
              "settle_steps": sim.config.settle_steps, "successes": int(ok),
              "max_reward_counts": [rewards.count(k) for k in range(5)], "training_data": data, "training_time": took,
              "inference_ms_per_chunk": 1000 * infer / max(queries, 1), "wall_s": wall,
              "references": [{"policy": "ACT (published, 50 scripted demos)", "success": "~90%",
                              "training_data": "50 scripted demos"}]}
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # PYTHONSAFEPATH=1 leaves the script's folder out
    import render

    if args.json:
        render.write_json(Path(args.json), result)
    print(render.policy_success_body(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
