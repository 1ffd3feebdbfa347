"""The refinement loop on the simulated ALOHA: record rollouts, refine, compare the value function.

    python -m cosmos_policy_training.recipes.refine_value --policy checkpoints/sim_transfer_cube \
        --demos-dir data/sim_demos --work-dir runs/refine_value

1. records labelled rollouts in the ROS-free sim loop (episode files, the converter's output layout):
   the policy itself (scene seeds 2000..) and the scripted expert with noise on its targets (seeds
   2100.., noise levels cycling through ``--noise``; noise breaks some grasps, giving failures), a
   training set and a held-out test set (seeds 5000.. / 5100..: scenes no phase of the embedded checkpoint
   trained on; ``--train-seed`` / ``--test-seed``);
2. measures the base policy's value AUC (successful vs failed test episodes, :mod:`..value_eval`);
3. refines the policy (``cosmos-policy train --init <policy> --demos ... --rollouts ...``, same
   objectives, demos a ``--demo-fraction`` of the draws, cached latents);
4. measures the refined value AUC on the same test set and writes ``results.json`` + a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--demos-dir", type=Path, default=Path("data/sim_demos"))
    parser.add_argument("--demos", type=int, default=10, help="demo episodes mixed into the refinement")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/refine_value"))
    parser.add_argument("--train-policy-episodes", type=int, default=6)
    parser.add_argument("--train-expert-episodes", type=int, default=16)
    parser.add_argument("--test-policy-episodes", type=int, default=4)
    parser.add_argument("--test-expert-episodes", type=int, default=12)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.04, 0.08, 0.12])
    parser.add_argument("--train-seed", type=int, default=2000,
                        help="first scene seed of the training rollouts (policy; the expert's start 100 later)")
    parser.add_argument("--test-seed", type=int, default=5000,
                        help="first scene seed of the test rollouts (policy; the expert's start 100 later); keep it "
                             "off the scenes the policy was trained on (the embedded checkpoint's DAgger rounds used "
                             "6000..6799; the chain of scripts/reproduce_sim_checkpoint.sh used 3000..4399)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--demo-fraction", type=float, default=0.3)
    parser.add_argument("--stride", type=int, default=4, help="every N-th step a sample (4: reuses the sim recipe's latent cache of the demos)")
    parser.add_argument("--eval-stride", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=Path("data/latent_cache"),
                        help="latent cache of the training episodes (shared with the sim recipe's by default)")
    parser.add_argument("--policy-id", default="sim-transfer-cube-refined", help="policy id of the refined checkpoint")


def record_set(policy, out: Path, policy_seeds: Sequence[int], expert_seeds: Sequence[int],
               noise: Sequence[float]) -> List[dict]:
    """Policy rollouts + noisy-expert rollouts into ``out`` (skipped when the file exists)."""
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim

    from ..episodes import read_episode
    from ..rollouts import DEFAULT_IMAGE_SIZE, run_episode, run_noisy_expert_episode

    out.mkdir(parents=True, exist_ok=True)
    sim = AlohaSim("transfer_cube", seed=0, image_size=DEFAULT_IMAGE_SIZE, cameras=policy.layout.cameras, max_steps=400,
                   render=False)
    rows = []
    try:
        for s in policy_seeds:
            f = out / f"policy_{s}.hdf5"
            if not f.exists():
                run_episode(policy, sim, s, record=f)
            ep = read_episode(f, load_images=False)
            rows.append({"file": f.name, "source": "policy", "success": ep.success})
            print(f"  {f.name}: {'success' if ep.success else 'failure'}", flush=True)
        for i, s in enumerate(expert_seeds):
            nz = noise[i % len(noise)]
            f = out / f"expert_{s}_noise{nz:g}.hdf5"
            if not f.exists():
                run_noisy_expert_episode(sim, s, nz, policy.layout.cameras, record=f)
            ep = read_episode(f, load_images=False)
            rows.append({"file": f.name, "source": f"expert noise {nz:g}", "success": ep.success})
            print(f"  {f.name}: {'success' if ep.success else 'failure'}", flush=True)
    finally:
        sim.close()
    return rows


def run(args: argparse.Namespace) -> int:
    import torch

    from cosmos_policy_ros.core.policy import load_policy

    from .. import cli as train_cli
    from ..cli import episode_files
    from ..value_eval import evaluate_values

    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    wd = args.work_dir
    base = load_policy(args.policy, decode_future_images=False)
    print("recording training rollouts", flush=True)
    a, b = args.train_seed, args.test_seed
    train_rows = record_set(base, wd / "rollouts_train", range(a, a + args.train_policy_episodes),
                            range(a + 100, a + 100 + args.train_expert_episodes), args.noise)
    print("recording test rollouts", flush=True)
    test_rows = record_set(base, wd / "rollouts_test", range(b, b + args.test_policy_episodes),
                           range(b + 100, b + 100 + args.test_expert_episodes), args.noise)
    t_record = time.monotonic() - t0
    test_files = episode_files([str(wd / "rollouts_test")])
    print("value AUC of the base policy", flush=True)
    before = evaluate_values(base, test_files, args.eval_stride, progress=True)
    print(json.dumps(before), flush=True)
    demos = sorted(args.demos_dir.glob("episode_*.hdf5"), key=lambda p: int(p.stem.split("_")[1]))[: args.demos]
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    targv = ["--init", str(args.policy), "--demos", *map(str, demos), "--rollouts", str(wd / "rollouts_train"),
             "--demo-fraction", str(args.demo_fraction), "--out", str(wd / "run"), "--steps", str(args.steps),
             "--batch", str(args.batch), "--lr", str(args.lr), "--warmup", "20", "--decay-steps", str(args.steps),
             "--stride", str(args.stride), "--cache-latents", "--cache-dir", str(args.cache_dir),
             "--keep-checkpoint-stats", "--save-every", str(args.steps), "--threads", str(args.threads),
             "--no-progress", "--policy-id", args.policy_id]
    t1 = time.monotonic()
    trainer, dataset = train_cli.build_from_args(parser.parse_args(targv))
    trainer.train()
    t_train = time.monotonic() - t1
    refined = load_policy(wd / "run" / "final", decode_future_images=False)
    print("value AUC of the refined policy", flush=True)
    after = evaluate_values(refined, test_files, args.eval_stride, progress=True)
    results = {"base": before, "refined": after, "train_rollouts": train_rows, "test_rollouts": test_rows,
               "refine_args": targv, "seconds": {"record": round(t_record, 1), "refine_train": round(t_train, 1),
                                                 "total": round(time.monotonic() - t0, 1)}}
    (wd / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    ntr = sum(r["success"] for r in train_rows)
    nte = sum(r["success"] for r in test_rows)
    print(f"\ntraining rollouts: {len(train_rows)} ({ntr} successful); test rollouts: {len(test_rows)} ({nte} successful)\n")
    print("| value function | AUC (observations) | AUC (episode mean) | mean V success | mean V failure |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in (("base (the --policy checkpoint)", before), ("refined (+ rollouts)", after)):
        print(f"| {name} | {r['auc_observation']:.3f} | {r['auc_episode']:.3f} | {r['mean_value_success']:.3f} | "
              f"{r['mean_value_failure']:.3f} |")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosmos_policy_training.recipes.refine_value",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
