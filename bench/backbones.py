"""Benchmark: the two sim policies side by side, one per backbone (Cosmos-Predict2 and Cosmos-Predict2.5
formulations of the same small network, trained by scripts/quick_sim_checkpoint.sh on the same kind of data).

Loop: the ROS-free sim loop of ``bench/policy_success.py`` (AlohaSim + CosmosPolicy in one process, 25 Hz
policy on 50 Hz physics, 50-action chunks open-loop, the robot settled before each re-plan), the same held-out
scene seeds for both. Latency: median chunk latency (actions, future state and value; future images not decoded)
on the first scene's observation after a warm-up, both policies measured in turn on the same machine, one thread.

Writes ``bench/results/backbones.json``:

    {"rows": [{"backbone": str, "episodes": int, "successes": int, "latency_s": float,
               "checkpoint": str, "sampler": str, "max_reward_counts": [int x 5], "training_data": str,
               "training_time": str}],
     "seed_start": int, "threads": int}

    python bench/backbones.py [--episodes 50] [--policies checkpoints/sim_transfer_cube ...] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict

os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POLICIES = [ROOT / "checkpoints" / "sim_transfer_cube", ROOT / "checkpoints" / "sim_transfer_cube_predict2.5"]


def sampler_text(policy) -> str:
    """The chunk's sampler as the checkpoint configures it (family, schedule, network calls)."""
    cfg = policy.sampler
    steps = getattr(cfg, "action_steps", "?")
    if hasattr(cfg, "shift"):
        return f"rectified flow, UniPC order {getattr(cfg, 'order', '?')}, shift {cfg.shift:g}, {steps} calls"
    return f"EDM, {steps} calls (sigma {cfg.sigma_max:g} -> {cfg.sigma_min:g})"


def render(d: Dict[str, Any]) -> str:
    rows = d.get("rows") or []
    if not rows:
        return "No figures."
    n = max(r["episodes"] for r in rows)
    s0 = d.get("seed_start", 1000)
    lines = [f"The small `sim` network on each backbone's formulation, trained by `scripts/quick_sim_checkpoint.sh` "
             f"(`BACKBONE=predict2.5 ACTION_WEIGHT=16` for the second; the training columns say how far each went, "
             f"docs/sim_checkpoint_results.md the stages), ROS-free sim loop (section *Small sim policy success rate*), "
             f"held-out seeds {s0}..{s0 + n - 1} for both. Latency: median chunk latency on CPU, {d.get('threads', 1)} "
             f"thread, both measured in the same run.", "",
             "| backbone | checkpoint | sampler | episodes | success | max reward 0/1/2/3/4 | chunk latency | "
             "training data | training time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        hist = r.get("max_reward_counts")
        lines.append(f"| {r['backbone']} | `{r.get('checkpoint', '?')}` | {r.get('sampler', '?')} | {r['episodes']} | "
                     f"{r['successes']}/{r['episodes']} ({100 * r['successes'] / max(r['episodes'], 1):.0f}%) | "
                     f"{'/'.join(map(str, hist)) if hist else '-'} | {1000 * r['latency_s']:.0f} ms | "
                     f"{r.get('training_data', '?')} | {r.get('training_time', '?')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policies", nargs="+", default=[str(x) for x in DEFAULT_POLICIES],
                   help="checkpoint folders, one per backbone")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed-start", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the figures here (schema: this file's docstring)")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes: expected >= 1, got {args.episodes}")
    missing = [x for x in args.policies if not Path(x).is_dir()]
    if missing:
        p.error(f"checkpoint folder(s) not found: {', '.join(missing)}")

    import torch

    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim
    from cosmos_policy_training.rollouts import DEFAULT_IMAGE_SIZE, run_episode

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # PYTHONSAFEPATH=1 leaves the script's folder out
    from denoising_steps import measure_latency
    from policy_success import training_summary

    torch.set_num_threads(args.threads)
    policies = [load_policy(x, decode_future_images=False) for x in args.policies]
    sim = AlohaSim("transfer_cube", seed=args.seed_start, image_size=DEFAULT_IMAGE_SIZE,
                   cameras=policies[0].layout.cameras, max_steps=400, render=False)
    rows = []
    try:
        sim.reset(args.seed_start, render=False)
        obs = sim.policy_observation(size=tuple(DEFAULT_IMAGE_SIZE))
        latencies = [measure_latency(pol, obs, n=5) for pol in policies]
        for path, pol, lat in zip(args.policies, policies, latencies):
            rewards, ok = [], 0
            for i in range(args.episodes):
                seed = args.seed_start + i
                r = run_episode(pol, sim, seed)
                rewards.append(r.max_reward)
                ok += r.success
                print(f"{Path(path).name} seed {seed}: success={r.success} max_reward={r.max_reward}",
                      file=sys.stderr, flush=True)
            rp = Path(path) / "recipe.json"
            data, took = training_summary(json.loads(rp.read_text()) if rp.is_file() else {}).split(" | ")
            rows.append({"backbone": pol.backbone.name, "episodes": args.episodes,
                         "successes": int(ok), "latency_s": lat, "checkpoint": Path(path).name,
                         "sampler": sampler_text(pol), "max_reward_counts": [rewards.count(k) for k in range(5)],
                         "training_data": data, "training_time": took})
    finally:
        sim.close()
    result = {"rows": rows, "seed_start": args.seed_start, "threads": args.threads}
    import render as bench_render

    if args.json:
        bench_render.write_json(Path(args.json), result)
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
