"""How well a policy's value estimate separates successful from failed episodes (ROC AUC).

For every episode file and every ``stride``-th step, the recorded observation is fed to the policy and
its value output (V(s') from the same parallel sample as the action, in [0, 1]) is collected. Each
(observation, episode outcome) pair is one point; the AUC is the probability that a random observation
from a successful episode gets a higher value than a random one from a failed episode (0.5 = no
separation, 1.0 = perfect). The per-episode mean value gives a second, episode-level AUC.

    python -m cosmos_policy_training.value_eval --policy runs/refined/final --episodes data/rollouts_test
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Mann-Whitney AUC with ties counted half; NaN when one class is missing."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def episode_values(policy, path, stride: int = 25, seed: int = 195) -> Dict[str, object]:
    """Value estimates of ``policy`` at every ``stride``-th step of one episode file."""
    from cosmos_policy_ros.core.types import Observation

    from .episodes import read_episode

    ep = read_episode(path, cameras=policy.layout.cameras)
    vals = []
    for t in range(0, ep.num_steps, stride):
        obs = Observation(images={c: ep.images[c][t] for c in policy.layout.cameras},
                          proprio=ep.qpos[t].astype(np.float32), instruction=ep.task)
        vals.append(float(policy.infer(obs, seed=seed, decode_images=False).value))
    return {"path": str(path), "success": bool(ep.success), "values": vals}


def evaluate_values(policy, paths: Sequence, stride: int = 25, progress: bool = False) -> Dict[str, object]:
    """AUCs (per observation and per episode mean) and mean values of successes / failures."""
    rows = []
    for p in paths:
        rows.append(episode_values(policy, p, stride))
        if progress:
            r = rows[-1]
            print(f"  {Path(p).name}: {'success' if r['success'] else 'failure'} values "
                  f"{[round(v, 3) for v in r['values']]}", flush=True)
    obs_scores = [v for r in rows for v in r["values"]]
    obs_labels = [r["success"] for r in rows for _ in r["values"]]
    ep_scores = [float(np.mean(r["values"])) for r in rows]
    ep_labels = [r["success"] for r in rows]
    succ = [v for v, l in zip(obs_scores, obs_labels) if l]
    fail = [v for v, l in zip(obs_scores, obs_labels) if not l]
    return {"auc_observation": roc_auc(obs_scores, obs_labels), "auc_episode": roc_auc(ep_scores, ep_labels),
            "mean_value_success": float(np.mean(succ)) if succ else float("nan"),
            "mean_value_failure": float(np.mean(fail)) if fail else float("nan"),
            "episodes": len(rows), "successes": int(sum(ep_labels)), "observations": len(obs_scores)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from cosmos_policy_ros.core.policy import load_policy

    from .cli import episode_files

    p = argparse.ArgumentParser(prog="python -m cosmos_policy_training.value_eval", description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, nargs="+", help="one or more checkpoints to compare")
    p.add_argument("--episodes", required=True, nargs="+", help="labelled episode files or folders")
    p.add_argument("--stride", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    files = episode_files(args.episodes)
    out = {}
    for src in args.policy:
        out[src] = evaluate_values(load_policy(src, decode_future_images=False), files, args.stride)
        print(json.dumps({src: out[src]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
