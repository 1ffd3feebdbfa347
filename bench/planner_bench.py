"""Best-of-N planning: decision latency versus the number of candidates N (3 x 5 ensembles by default).

CPU (default; tiny config of the real classes, the `make bench` entry)::

    python bench/planner_bench.py                       # N = 1, 2, 4, 8; 3 future states x 5 values

GPU (the real cost; random 2B weights in bf16, ALOHA layout, 224 px, 512 text tokens; one GPU holds the
policy and the planning model)::

    python bench/planner_bench.py --full-2b --device cuda --n 8 --repeats 3

The reference runs N = 8 with one GPU per candidate (8 GPUs, ~5 s per decision, 15 s timeout); here all
N*K world-model samples share one batch and all N*K*M value samples another, on one device.
``--layers`` / ``--image-size`` shrink the 2B config for a quick check of the full-size code path on CPU.
Prints a markdown section (stdout); progress on stderr; ``--json`` also writes the figures (`make bench`
sections planner and planner_2b_gpu) in this schema (seconds throughout):

    {"device": str, "gpu": str (CUDA only), "full_2b": bool, "dtype": str, "threads": int, "policy_network": str,
     "config": {PlannerConfig fields: "future_state_steps", "value_steps", "aggregation", "score",
                "decode_future_images", ...}, "peak_memory_gib": float (CUDA only),
     "rows": [{"n": int (candidates), "wm_rows": int, "value_rows": int, "calls": int, "candidates": float,
               "prepare": float (encode), "world_model": float, "value": float, "decode": float,
               "decision": float, "decision_cpu": float, "median_decision": float,
               "batch": int (= n), "seconds": float (candidates + decision), "peak_gib": float | null,
               "variant": str}]}
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import numpy as np
import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def build_models(full: bool, device: str, dtype: str, layers: int, image_size: int):
    """(policy, planning model): two CosmosPolicy objects of the same architecture (different weights)."""
    from cosmos_policy_ros.core.policy import make_tiny_policy

    if not full:
        return (make_tiny_policy(seed=0, decode_future_images=False),
                make_tiny_policy(seed=1, decode_future_images=False))
    from cosmos_policy_ros.core.images import ImageConfig
    from cosmos_policy_ros.core.layout import ALOHA
    from cosmos_policy_ros.core.network import NETWORK_2B, CosmosNetwork, build_transformer, build_vae, get_dtype
    from cosmos_policy_ros.core.policy import CosmosPolicy, aloha_like_stats

    cfg = NETWORK_2B
    if layers or image_size:
        cfg = dataclasses.replace(cfg, num_layers=layers or cfg.num_layers, image_size=image_size or cfg.image_size,
                                  name="2b-reduced")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        with torch.device(device):  # initialise on the device (CPU init of 2B parameters is slow)
            transformer = build_transformer(cfg).to(get_dtype(dtype))
            vae = build_vae(cfg)
        net = CosmosNetwork(cfg, transformer, vae).to(device)
        g = torch.Generator().manual_seed(seed)
        emb = {"bench": torch.randn(1, cfg.text_len, cfg.text_embed_dim, generator=g).to(get_dtype(dtype))}
        models.append(CosmosPolicy(net, ALOHA, aloha_like_stats(), emb, image=ImageConfig(size=cfg.image_size),
                                   policy_id=f"2b-random-{seed}", decode_future_images=False))
    return models[0], models[1]


def observation(policy, seed: int = 0):
    from cosmos_policy_ros.core.types import Observation
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for c in policy.layout.cameras}
    st = policy.stats
    proprio = st.proprio_min + (st.proprio_max - st.proprio_min) * rng.uniform(0.2, 0.8, st.proprio_dim)
    return Observation(images=images, proprio=proprio, instruction=policy.instructions[0])


def run(args) -> dict:
    from cosmos_policy_ros.core.planner import Planner, PlannerConfig, candidate_seeds

    device = args.device
    policy, model = build_models(args.full_2b, device, args.dtype, args.layers, args.image_size)
    cfg = PlannerConfig(future_state_steps=tuple(args.future_steps), value_steps=tuple(args.value_steps),
                        decode_future_images=args.decode, max_batch=args.max_batch)
    planner = Planner(model, cfg)
    obs = observation(policy)
    rows = []
    print(f"[planner_bench] warm-up on {device}", file=sys.stderr, flush=True)
    outs = policy.infer_batch(obs, [0])
    planner.score(obs, np.stack([o.actions for o in outs]), [0])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for n in args.n:
        seeds = candidate_seeds(195, n)
        samples = []
        for r in range(args.repeats):
            _sync(device)
            t0 = time.perf_counter()
            outs = policy.infer_batch(obs, seeds)
            _sync(device)
            t1 = time.perf_counter()
            c1 = time.process_time()
            res = planner.score(obs, np.stack([o.actions for o in outs]), seeds)
            _sync(device)
            t2 = time.perf_counter()
            # process CPU time: on a shared CPU box it tracks the work done better than wall time
            samples.append({"candidates": t1 - t0, "decision": t2 - t1, "decision_cpu": time.process_time() - c1,
                            **{k: v for k, v in res.timings.items()}})
            print(f"[planner_bench] N={n} repeat {r}: candidates {t1 - t0:.3f} s, decision {t2 - t1:.3f} s",
                  file=sys.stderr, flush=True)
        # the repeat with the shortest decision: the one least disturbed by other load on a shared machine
        # (on a dedicated GPU min and median agree closely); the median is kept in the JSON
        best = min(samples, key=lambda s: s["decision"])
        med = dict(best, median_decision=statistics.median(s["decision"] for s in samples))
        k_, m_ = len(cfg.future_state_steps), len(cfg.value_steps)
        rows.append({"n": n, "wm_rows": n * k_, "value_rows": n * k_ * m_, "calls": res.calls, **med,
                     "batch": n, "seconds": med["candidates"] + med["decision"],
                     "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device.startswith("cuda") else None,
                     "variant": f"{'2B ' + args.dtype if args.full_2b else 'tiny float32'}, decode {args.decode}"})
    out = {"device": device, "full_2b": args.full_2b, "config": cfg.to_dict(), "rows": rows,
           "policy_network": policy.network.cfg.name, "dtype": args.dtype if args.full_2b else "float32",
           "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return out


def markdown(res: dict) -> str:
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # PYTHONSAFEPATH=1 leaves the script's folder out
    from render import planner_body

    return planner_body(res) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full-2b", action="store_true", help="the 2B network with random weights (GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16", help="transformer dtype for --full-2b")
    ap.add_argument("--n", type=int, nargs="+", default=None, help="candidate counts (default 1 2 4 8; 8 with --full-2b)")
    ap.add_argument("--future-steps", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--value-steps", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--decode", default="first", choices=("none", "first", "all"))
    ap.add_argument("--max-batch", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--layers", type=int, default=0, help="--full-2b: fewer transformer blocks (quick checks)")
    ap.add_argument("--image-size", type=int, default=0, help="--full-2b: smaller images (quick checks)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    if args.n is None:
        args.n = [8] if args.full_2b else [1, 2, 4, 8]
    if args.full_2b and args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--full-2b needs a CUDA device (none available)", file=sys.stderr)
        return 2
    res = run(args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
