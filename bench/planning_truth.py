"""Diagnosis of best-of-N planning: does the planning model rank candidates by what they really lead to?

For each scene, the base policy runs (the released deploy's open-loop chunks) up to the decision at tick
``--decision``; there the policy samples N candidates (one batch, seeds 195..), the planning model scores them,
and then every candidate is executed from the very same simulator state (MuJoCo data copied and restored), followed
by the base policy to the end of the episode. The outcome of each candidate is the ground truth its score should
predict. Scenes: the base policy's failures in a ``planning_success.json`` first, then as many of its successes.

    python bench/planning_truth.py [--decision 100] [--candidates 8] [--successes 8] [--json out.json]

Prints one JSON line per scene ({"seed", "base_ok", "ok": [per candidate], "scores", "chosen", "own_value",
"spread_rad"}) and a summary: scenes whose candidates all fail / all succeed / differ, and among the latter how
often the planner's choice succeeded against a random candidate's rate.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from cosmos_policy_ros.demo import EMBEDDED_CHECKPOINT  # noqa: E402 - the demo's default policy

ROOT = Path(__file__).resolve().parents[1]
SIM_FIELDS = ("step_count", "reward", "max_reward", "success", "ever_success")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / EMBEDDED_CHECKPOINT))
    p.add_argument("--planning-model", default=str(ROOT / "checkpoints" / "sim_transfer_cube_predict2.5_planning"))
    p.add_argument("--results", default=str(ROOT / "bench" / "results" / "planning_success.json"),
                   help="planning_success.json whose base row names the scenes (its per_seed outcomes)")
    p.add_argument("--decision", type=int, default=100, help="tick of the decision (a multiple of the chunk length)")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--successes", type=int, default=8, help="base-policy successes to add to its failures")
    p.add_argument("--max-scenes", type=int, default=0, help="at most this many scenes (0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import mujoco
    import numpy as np
    import torch

    from cosmos_policy_ros.core.planner import Planner, PlannerConfig
    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim
    from cosmos_policy_training.rollouts import DEFAULT_IMAGE_SIZE

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, decode_future_images=False)
    planner = Planner(load_policy(args.planning_model, decode_future_images=False),
                      PlannerConfig(decode_future_images="none"))
    data = json.loads(Path(args.results).read_text())
    base_row = next(r for r in data["rows"] if r["candidates"] == 1)
    s0, base = int(data["seed_start"]), base_row["per_seed"]
    seeds = [s0 + i for i, ok in enumerate(base) if not ok] + \
        [s0 + i for i, ok in enumerate(base) if ok][: args.successes]
    if args.max_scenes > 0:
        seeds = seeds[: args.max_scenes]
    H, T = policy.horizon, 200
    if args.decision % H or not 0 <= args.decision < T:
        raise SystemExit(f"--decision: expected a multiple of {H} below {T}, got {args.decision}")
    sim = AlohaSim("transfer_cube", seed=s0, image_size=DEFAULT_IMAGE_SIZE, cameras=policy.layout.cameras,
                   max_steps=2 * T, render=False)

    def observe():
        return sim.policy_observation(size=DEFAULT_IMAGE_SIZE)

    def execute(actions):
        for a in actions:
            for _ in range(2):  # 25 Hz actions on 50 Hz physics
                sim.step(a, render=False)

    def snapshot():
        d = mujoco.MjData(sim.model)
        mujoco.mj_copyData(d, sim.model, sim.data)
        return d, {k: getattr(sim, k) for k in SIM_FIELDS}, sim.last_action.copy()

    def restore(snap):
        mujoco.mj_copyData(sim.data, sim.model, snap[0])
        for k, v in snap[1].items():
            setattr(sim, k, v)
        sim.last_action = snap[2].copy()

    rows = []
    seeds_n = [195 + i for i in range(args.candidates)]
    try:
        for seed in seeds:
            sim.reset(seed, render=False)
            for _ in range(args.decision // H):
                execute(policy.infer(observe(), seed=195).actions)
            obs = observe()
            snap = snapshot()
            outs = policy.infer_batch(obs, seeds_n)
            acts = np.stack([o.actions for o in outs])
            res = planner.score(obs, acts, seeds_n)
            ok = []
            for i in range(args.candidates):
                restore(snap)
                execute(acts[i])
                for _ in range(args.decision // H + 1, T // H):
                    execute(policy.infer(observe(), seed=195).actions)
                ok.append(bool(sim.ever_success))
            row = {"seed": seed, "base_ok": bool(base[seed - s0]), "ok": ok,
                   "scores": [round(float(x), 4) for x in res.scores], "chosen": int(res.chosen),
                   "own_value": [round(float(o.value), 4) for o in outs],
                   "spread_rad": round(float(np.abs(acts - acts.mean(0)).max()), 4)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        sim.close()
    mixed = [r for r in rows if 0 < sum(r["ok"]) < len(r["ok"])]
    summary = {"decision_tick": args.decision, "candidates": args.candidates, "scenes": len(rows),
               "all_fail": sum(not any(r["ok"]) for r in rows), "all_succeed": sum(all(r["ok"]) for r in rows),
               "mixed": len(mixed), "chosen_succeeded_in_mixed": sum(r["ok"][r["chosen"]] for r in mixed),
               "random_candidate_rate_in_mixed": (sum(sum(r["ok"]) / len(r["ok"]) for r in mixed) / len(mixed))
               if mixed else None,
               "lowest_scored_candidate_per_scene": [int(np.argmin(r["scores"])) for r in rows]}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
