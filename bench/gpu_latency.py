"""Per-chunk latency of Cosmos Policy: VAE encode, every network call, decode, total.

GPU (the real thing): the full 2B Video2World config with random weights in bf16 on CUDA, ALOHA layout,
224 px, 512 text tokens, 480x640 camera frames, 10 network calls::

    python bench/gpu_latency.py --device cuda --batch 1 8 --repeats 5 --json bench/gpu_latency.json --markdown bench/gpu_latency.md

CPU smoke check (tiny config of the same classes)::

    python bench/gpu_latency.py --tiny --repeats 1

``--backbone predict2.5`` times the Cosmos-Predict2.5-2B policy instead: the same DiT plus the 100,352 -> 1024 text
projection, Reason1-sized (1, 512, 100,352) embeddings and its UniPC sampler (5 network calls by default)::

    python bench/gpu_latency.py --device cuda --backbone predict2.5 --batch 1 8 --repeats 5

Random weights give the same cost as trained ones (same shapes, same kernels). Prints the markdown table;
``--json`` writes the figures (`make bench` sections model_cpu and model_2b_gpu) in this schema:

    {"config": str, "backbone": str, "device": str, "dtype": str, "torch": str, "diffusers": str, "steps": int (network calls),
     "repeats": int, "transformer_params": int, "compile": bool, "decode": bool, "build_s": float,
     "rows": [{"calls": int, "batch": int, "seconds": float (whole chunk, median), "peak_gib": float | null (CPU),
               "variant": str, "preprocess_s": float, "encode_s": float, "call_s": [float per network call],
               "denoise_s": float, "decode_s": float}]}
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def build_policy(tiny: bool, device: str, dtype: str, layers: int = 0, backbone: str = "predict2"):
    from cosmos_policy_ros.core.images import ImageConfig
    from cosmos_policy_ros.core.layout import ALOHA
    from cosmos_policy_ros.core.network import CosmosNetwork, build_transformer, build_vae, get_dtype, network_2b
    from cosmos_policy_ros.core.policy import CosmosPolicy, aloha_like_stats, make_tiny_policy

    if tiny:
        p = make_tiny_policy(0, backbone=backbone)
        return p.__class__(p.network.to(device), p.layout, p.stats, p.embeddings, p.sampler, p.image, p.policy_id)
    cfg = network_2b(backbone)
    if layers:  # fewer blocks, same widths: a quick sanity run of the full-size path
        import dataclasses
        cfg = dataclasses.replace(cfg, num_layers=layers, name=f"2b-{layers}-layers")
    torch.manual_seed(0)
    with torch.device(device):  # initialise directly on the device (2B params: CPU init is slow)
        transformer = build_transformer(cfg)
        if get_dtype(dtype) != torch.float32:
            transformer = transformer.to(get_dtype(dtype))
        vae = build_vae(cfg)
    net = CosmosNetwork(cfg, transformer, vae).to(device)
    emb = {"bench": torch.randn(1, cfg.text_len, cfg.embedding_dim, dtype=torch.bfloat16)}
    return CosmosPolicy(net, ALOHA, aloha_like_stats(), emb, image=ImageConfig(size=cfg.image_size),
                        policy_id="2b-random-bench")


class CallTimer:
    """Wraps the network forward to time every call (with CUDA syncs around it)."""

    def __init__(self, network, device):
        self.network, self.device, self.times = network, device, []
        self.orig = network.forward

    def __call__(self, *a, **k):
        _sync(self.device)
        t = time.perf_counter()
        out = self.orig(*a, **k)
        _sync(self.device)
        self.times.append(time.perf_counter() - t)
        return out


def run(args) -> dict:
    from cosmos_policy_ros.core.types import Observation

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.tiny and device == "cpu":
        print("the 2B config needs a GPU (about 20-55 s per network call on CPU); use --tiny on CPU", file=sys.stderr)
    t0 = time.perf_counter()
    policy = build_policy(args.tiny, device, args.dtype, args.layers, args.backbone)
    build_s = time.perf_counter() - t0
    if args.compile:
        policy.network.transformer = torch.compile(policy.network.transformer)
    timer = CallTimer(policy.network, device)
    policy.network.forward = timer  # net_fn calls self.forward: the instance attribute wins
    rng = np.random.default_rng(0)
    obs = Observation(images={c: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for c in policy.layout.cameras},
                      proprio=(policy.stats.proprio_min + policy.stats.proprio_max) / 2, instruction=policy.instructions[0])
    import dataclasses
    from cosmos_policy_ros.core.backbone import DEFAULT_BACKBONE
    steps = args.steps or policy.sampler.action_steps  # the backbone's own default: 10 (predict2) / 5 (predict2.5)
    cfg = dataclasses.replace(policy.sampler, action_steps=steps)
    variant = " ".join(["tiny" if args.tiny else "2B", "float32" if args.tiny else args.dtype]
                       + ([] if args.backbone == DEFAULT_BACKBONE else [args.backbone])
                       + (["compiled"] if args.compile else []) + ([] if not args.no_decode else ["no decode"]))
    results = []
    for batch in args.batch:
        seeds = list(range(batch))
        for _ in range(args.warmup):
            policy.infer_batch(obs, seeds, sampler=cfg, decode_images=not args.no_decode)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        runs = []
        for _ in range(args.repeats):
            timer.times.clear()
            out = policy.infer_batch(obs, seeds, sampler=cfg, decode_images=not args.no_decode)[0]
            runs.append({"preprocess": out.timings["preprocess"], "encode": out.timings["encode"],
                         "calls": list(timer.times), "denoise": out.timings["denoise"],
                         "decode": out.timings["decode"], "total": out.timings["total"]})
        med = lambda key: float(np.median([r[key] for r in runs]))  # noqa: E731
        calls = np.median(np.array([r["calls"] for r in runs]), axis=0).tolist()
        results.append({
            "calls": len(calls), "batch": batch, "seconds": med("total"),
            "peak_gib": (torch.cuda.max_memory_allocated() / 2**30) if device.startswith("cuda") else None,
            "variant": variant, "preprocess_s": med("preprocess"), "encode_s": med("encode"), "call_s": calls,
            "denoise_s": med("denoise"), "decode_s": med("decode"),
        })
    import diffusers
    from cosmos_policy_ros.core.network import count_parameters
    return {
        "backbone": args.backbone, "config": "tiny" if args.tiny else ("2B" if not args.layers else f"2B widths, {args.layers} layers"), "device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "dtype": "float32" if args.tiny else args.dtype, "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformer_params": count_parameters(policy.network.transformer), "steps": steps,
        "repeats": args.repeats, "compile": bool(args.compile), "decode": not args.no_decode, "build_s": build_s, "rows": results,
    }


def markdown(rep: dict) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # PYTHONSAFEPATH=1 leaves the script's folder out
    from render import model_body

    return model_body(rep) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny config (CPU smoke check)")
    ap.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--batch", type=int, nargs="+", default=[1], help="candidate batch sizes to time")
    ap.add_argument("--backbone", default="predict2", choices=("predict2", "predict2.5"),
                    help="Cosmos-Predict2-2B (EDM-style sampler) or Cosmos-Predict2.5-2B (UniPC, text projection)")
    ap.add_argument("--steps", type=int, default=None, help="network calls per chunk (default: the backbone's, 10 / 5)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--layers", type=int, default=0, help="override the 2B depth (sanity runs); 0 = 28")
    ap.add_argument("--no-decode", action="store_true", help="skip decoding the future images")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    ap.add_argument("--json", default=None, help="write the report here")
    ap.add_argument("--markdown", default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    rep = run(args)
    md = markdown(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
