"""Diagnosis: which difference between the ROS graph and the ROS-free loop costs the small sim policy.

Runs the ROS-free sim loop (AlohaSim + CosmosPolicy in one process, 25 Hz policy on 50 Hz physics) with
the ROS graph's behaviours switched on one at a time, on the same held-out scene seeds:

- ``render``: camera frames rendered at the sim bridge's wire size (default 480x640) and resized by the
  policy's own preprocessing, instead of rendered at the demo size (96x128);
- ``latency``: the world keeps moving while the policy thinks; a chunk observed at tick t is used from tick
  t + L at index L (as the commander splices it), the next query starts when the previous one lands
  (re-planning back to back, as the policy node does);
- ``clamp``: the commander's per-tick step limit (0.1 rad arm, 0.2 gripper) on every executed action;
- ``measured_hold``: before the first observation, 0.3 s (15 physics steps) with the arms' targets set to
  their measured pose (what a bridge without ``still_tolerance`` does after a reset): MuJoCo's arms sag a few
  mrad further and the wrist cameras see it.

Prints a markdown table on stdout, progress on stderr. Not part of ``make bench`` (it is a one-off
investigation; its rerun commands are in docs/sim_checkpoint_results.md).

    python bench/policy_gap.py [--episodes 10] [--variants base,render,latency,clamp,all] [--latency-ticks 25]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from cosmos_policy_ros.demo import EMBEDDED_CHECKPOINT  # noqa: E402 - the demo's default policy

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "base": dict(render=False, latency=False, clamp=False),
    "render": dict(render=True, latency=False, clamp=False),
    "latency": dict(render=False, latency=True, clamp=False),
    "clamp": dict(render=False, latency=False, clamp=True),
    "all": dict(render=True, latency=True, clamp=True),
    "measured_hold": dict(render=False, latency=False, clamp=False, pre_hold=15),
    # remedies, with latency on: switch chunks only every `execute` ticks (the next query timed to land then),
    # or pause like the released deploy (hold the last command while the policy thinks, then run from index 0)
    "execute": dict(render=False, latency=True, clamp=False, execute=True),
    "pause": dict(render=False, latency=True, clamp=False, pause=True),
    "all+execute": dict(render=True, latency=True, clamp=True, execute=True),
    "all+pause": dict(render=True, latency=True, clamp=True, pause=True),
}


def run_variant_episode(policy, sim, seed: int, render: bool, latency: bool, clamp: bool, latency_ticks: int,
                        wire_size: Sequence[int], demo_size: Sequence[int], max_step_arm: float = 0.1,
                        max_step_gripper: float = 0.2, execute: bool = False, pause: bool = False,
                        execute_ticks: int = 50, pre_hold: int = 0, ticks: int = 0) -> tuple:
    """One episode of ``ticks`` 25 Hz ticks (0: the sim's max_steps / 2); returns (success, max_reward, queries)."""
    size = tuple(wire_size if render else demo_size)
    sim.reset(seed, render=False)
    if pre_hold:
        measured = sim.qpos14()
        for _ in range(pre_hold):
            sim.step(measured, render=False)
        sim.step_count = 0  # the episode's clock starts at the first observation
    horizon = policy.horizon
    steps = ticks or sim.config.max_steps // 2
    limit = np.full(14, max_step_arm)
    limit[[6, 13]] = max_step_gripper
    command: Optional[np.ndarray] = None
    chunk, chunk_t = None, 0  # the chunk in use and the tick its observation was taken
    pending = None  # (obs tick, chunk) computed but not landed yet
    next_query = 0
    queries = 0
    for t in range(steps):
        if t >= next_query and pending is None:
            obs = sim.policy_observation(size=size)
            out = policy.infer(obs)
            queries += 1
            pending = (t, np.asarray(out.actions, dtype=np.float64))
            lag = latency_ticks if latency else 0
            land_at = t + lag
        if pending is not None and t >= land_at:
            obs_t, chunk = pending
            pending = None
            if pause:  # indexed from its arrival: the world waited
                chunk_t, next_query = t, t + execute_ticks
            elif execute:  # the next one lands when this one has run execute_ticks from its observation
                chunk_t, next_query = obs_t, max(t, obs_t + execute_ticks - latency_ticks)
            else:  # latency: back to back; open-loop: after the whole chunk
                chunk_t, next_query = obs_t, (t if latency else t + horizon)
        idx = min(t - chunk_t, horizon - 1)
        # before the first chunk the sim bridge holds the start pose (its still rule, docs/sim.md)
        target = chunk[idx] if chunk is not None else sim.start_action()
        if clamp and command is not None:
            target = command + np.clip(target - command, -limit, limit)
        command = target
        for _ in range(2):  # 25 Hz commands on 50 Hz physics
            sim.step(command, render=False)
    return bool(sim.ever_success), int(sim.max_reward), queries


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / EMBEDDED_CHECKPOINT))
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed-start", type=int, default=1000)
    p.add_argument("--variants", default="base,render,latency,clamp,all")
    p.add_argument("--latency-ticks", type=int, default=25, help="inference latency in 25 Hz ticks (ROS graph: ~25)")
    p.add_argument("--wire-size", type=int, nargs=2, default=(480, 640))
    p.add_argument("--max-step-arm", type=float, default=0.1, help="commander step limit, rad per tick (aloha.yaml: 0.1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ticks", type=int, default=0,
                   help="episode length in 25 Hz ticks (default: 200, 8 s; the graph's 12 s episodes with pauses "
                        "of --latency-ticks are 300)")
    args = p.parse_args(argv)

    import torch

    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim
    from cosmos_policy_training.rollouts import DEFAULT_IMAGE_SIZE

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, decode_future_images=False)
    sim = AlohaSim("transfer_cube", seed=args.seed_start, image_size=DEFAULT_IMAGE_SIZE,
                   cameras=policy.layout.cameras, max_steps=400, render=False)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")
    rows = []
    for name in names:
        t0 = time.perf_counter()
        results = []
        for i in range(args.episodes):
            seed = args.seed_start + i
            r = run_variant_episode(policy, sim, seed, latency_ticks=args.latency_ticks,
                                    wire_size=args.wire_size, demo_size=DEFAULT_IMAGE_SIZE,
                                    max_step_arm=args.max_step_arm, ticks=args.ticks, **VARIANTS[name])
            results.append(r)
            print(f"{name} seed {seed}: success={r[0]} max_reward={r[1]} queries={r[2]}", file=sys.stderr, flush=True)
        rewards = [r[1] for r in results]
        hist = "/".join(str(rewards.count(k)) for k in range(5))
        touched = sum(r >= 1 for r in rewards)
        rows.append(f"| {name} | {', '.join(k for k, on in VARIANTS[name].items() if on) or '-'} | "
                    f"{sum(r[0] for r in results)}/{len(results)} | {touched}/{len(results)} | {hist} | "
                    f"{np.mean([r[2] for r in results]):.1f} | {time.perf_counter() - t0:.0f} s |")
    sim.close()
    print(f"Policy `{Path(args.policy).name}` ({policy.policy_id}), seeds {args.seed_start}.."
          f"{args.seed_start + args.episodes - 1}, latency {args.latency_ticks} ticks, wire size "
          f"{args.wire_size[0]}x{args.wire_size[1]}, arm step limit {args.max_step_arm:g} rad/tick.\n")
    print("| variant | ROS behaviours on | success | touched (reward >= 1) | max reward 0/1/2/3/4 | queries per episode | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
