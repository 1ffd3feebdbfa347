"""`cosmos-policy infer`: run one observation from files through a policy and save what comes out.

Example::

    cosmos-policy infer --checkpoint nvidia/Cosmos-Policy-ALOHA-Predict2-2B --device cuda \\
        --image cam_high=high.png --image cam_left_wrist=left.png --image cam_right_wrist=right.png \\
        --proprio qpos.json --instruction "put the candy in the bowl" --out result/

Writes ``result.json`` (actions in robot units, future proprio, value, clipped, timings, seed),
``actions.npy`` and one ``future_<camera>.png`` per predicted image. ``--tiny`` runs a small random policy
instead of a checkpoint (a smoke test of the whole path).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="our checkpoint directory, an NVIDIA one, or a Hugging Face repo id")
    src.add_argument("--tiny", type=int, metavar="SEED", help="use a small randomly initialised policy (smoke test)")
    parser.add_argument("--image", action="append", default=[], metavar="CAMERA=PATH",
                        help="camera image, PNG/JPEG or .npy (H, W, 3) uint8; repeat per camera")
    parser.add_argument("--channel-order", choices=("rgb", "bgr"), default="rgb",
                        help="channel order of .npy images (image files are read as RGB)")
    parser.add_argument("--proprio", required=True, help="proprio as a JSON list or a .npy array, robot units")
    parser.add_argument("--instruction", help="task text (default: the policy's first known instruction)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: the policy's, 195)")
    parser.add_argument("--steps", type=int, default=None, help="override the number of network calls")
    parser.add_argument("--out", default="infer_out", help="output directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--vae-source", default=None, help="VAE for NVIDIA checkpoints (dir or HF id)")
    parser.add_argument("--image-size", type=int, default=224, help="model image size for NVIDIA checkpoints")
    parser.add_argument("--layout", default="aloha", choices=("aloha", "libero", "robocasa"),
                        help="latent layout of an NVIDIA checkpoint (ours records its own); with --tiny, the tiny policy's")
    parser.add_argument("--assets", action="append", default=[], metavar="DIR",
                        help="folder with the dataset statistics / text embeddings an NVIDIA checkpoint folder lacks "
                             "(Predict2.5 policies: the LIBERO / RoboCasa dataset snapshot); repeatable")
    parser.add_argument("--backbone", default="predict2", choices=("predict2", "predict2.5"),
                        help="backbone of the --tiny policy (checkpoints record their own)")
    parser.add_argument("--no-images", action="store_true", help="skip decoding the future images")


def read_image(path: str, channel_order: str = "rgb") -> np.ndarray:
    """PNG/JPEG (read as RGB) or .npy (H, W, 3) uint8 in ``channel_order`` -> (H, W, 3) uint8 RGB."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        arr = np.load(p, allow_pickle=False)
        if channel_order == "bgr" and arr.ndim == 3:
            arr = arr[..., ::-1]
        return np.ascontiguousarray(arr)
    from PIL import Image
    with Image.open(p) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_proprio(path: str) -> np.ndarray:
    """JSON list (or {"proprio": [...]}) or .npy -> float64 vector."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        return np.asarray(np.load(p, allow_pickle=False), dtype=np.float64)
    data = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("proprio", data.get("qpos"))
    return np.asarray(data, dtype=np.float64)


def run(args: argparse.Namespace) -> int:
    from .policy import ObservationError, load_policy, make_tiny_policy
    from .checkpoint import CheckpointError
    from .types import Observation

    try:
        if args.tiny is not None:
            policy = make_tiny_policy(args.tiny, layout=args.layout, backbone=args.backbone)
        else:
            policy = load_policy(args.checkpoint, device=args.device, dtype=args.dtype, vae_source=args.vae_source,
                                 image_size=args.image_size, layout=args.layout, assets=args.assets)
        images: Dict[str, np.ndarray] = {}
        for item in args.image:
            cam, sep, path = item.partition("=")
            if not sep:
                print(f"cosmos-policy infer: --image expects CAMERA=PATH, got {item!r}", file=sys.stderr)
                return 2
            images[cam] = read_image(path, args.channel_order)
        obs = Observation(images=images, proprio=read_proprio(args.proprio),
                          instruction=args.instruction if args.instruction is not None else policy.instructions[0])
        sampler = None
        if args.steps is not None:
            sampler = type(policy.sampler)(**{**policy.sampler.to_dict(), "action_steps": args.steps})
        seed = policy.default_seed if args.seed is None else args.seed
        out = policy.infer_batch(obs, [seed], sampler=sampler, decode_images=not args.no_images)[0]
    except (ObservationError, CheckpointError, ValueError, OSError) as e:
        print(f"cosmos-policy infer: {e}", file=sys.stderr)
        return 1
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "actions.npy", out.actions)
    from PIL import Image
    written = []
    for cam, img in out.future_images.items():
        Image.fromarray(img).save(d / f"future_{cam}.png")
        written.append(f"future_{cam}.png")
    result = {
        "policy_id": policy.policy_id, "instruction": obs.instruction, "seed": out.seed,
        "actions": out.actions.tolist(), "clipped": out.clipped,
        "future_proprio": None if out.future_proprio is None else out.future_proprio.tolist(),
        "value": out.value, "timings": out.timings, "future_images": written,
    }
    (d / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"policy {policy.policy_id}: {out.actions.shape[0]}x{out.actions.shape[1]} actions, value {out.value:.3f}, "
          f"clipped {out.clipped}, total {out.timings.get('total', float('nan')):.3f} s -> {d}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos-policy infer", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
