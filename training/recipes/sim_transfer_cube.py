"""The small simulated-ALOHA transfer-cube policy (the embedded default checkpoint of ``make demo``).

    python -m cosmos_policy_training.recipes.sim_transfer_cube --out checkpoints/sim_transfer_cube

1. generates scripted demos with the sim expert (``cosmos_policy_ros.sim.generate_demos``; 25 Hz policy
   rate, each action held for 2 physics steps at 50 Hz; 240x320 renders of the three ALOHA cameras) unless
   ``--demos-dir`` already holds them;
2. trains the ``sim`` network preset (4-layer DiT, hidden 128, 64 px, a frozen small Wan VAE: randomly initialised,
   or trained by ``python -m cosmos_policy_training.vae`` with ``--vae DIR``; cam_high cut to the table area,
   ``CAM_HIGH_ROI``)
   with the reference's objective split, noise distribution and loss, on cached latents (no augmentation:
   the VAE is frozen, so every sample is encoded once), on the CPU;
3. writes the final weights in our checkpoint format to ``--out`` with ``recipe.json`` (the exact command,
   the data, the steps, the measured time and the final losses).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

# "scene" latent statistics and half the draws at t = 0 make the first chunk follow the cube (held-out t = 0
# error 0.069 rad against 0.187 for the mean reach, measured 2026-12-04; docs/sim_checkpoint_results.md)
DEFAULTS = dict(episodes=100, steps=6000, batch=16, lr=4e-3, warmup=200, stride=4, seed=0, threads=2,
                relative_actions="arms", latent_norm="scene", weight_decay=0.1, action_weight=1.0,
                proprio_dropout=0.0, first_step_fraction=0.5, smoothing_window=7)
# cam_high: the table area the cube is drawn from (x 0..0.2 m, y 0.4..0.6 m; rows 232-328, columns 312-408 of
# a 480x640 frame) with ~30 px of margin, as (top, left, height, width) fractions: 160x160 px of 480x640.
# At 64 px the cube then covers ~7x7 px instead of ~2x1.5 px of the whole squashed frame.
CAM_HIGH_ROI = (200 / 480, 280 / 640, 160 / 480, 160 / 640)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write (our format)")
    parser.add_argument("--demos-dir", type=Path, default=Path("data/sim_demos"))
    parser.add_argument("--run-dir", type=Path, default=Path("runs/sim_transfer_cube"))
    parser.add_argument("--cache-dir", type=Path, default=Path("data/latent_cache"))
    parser.add_argument("--episodes", type=int, default=DEFAULTS["episodes"])
    parser.add_argument("--extra-demos", type=Path, nargs="*", default=[],
                        help="folders of further episode files trained on as demos beside the first --episodes "
                             "scripted ones (DAgger rounds: `rollouts --expert-labels` output)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    parser.add_argument("--action-weight", type=float, default=DEFAULTS["action_weight"],
                        help="loss weight of the action latent frame (train --action-weight)")
    parser.add_argument("--proprio-dropout", type=float, default=DEFAULTS["proprio_dropout"],
                        help="share of policy samples whose current proprio is generated, not given (train --proprio-dropout)")
    parser.add_argument("--first-step-fraction", type=float, default=DEFAULTS["first_step_fraction"],
                        help="share of draws from the demos' first samples (train --first-step-fraction)")
    parser.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    parser.add_argument("--stride", type=int, default=DEFAULTS["stride"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--policy-id", default="sim-transfer-cube",
                        help="the checkpoint's policy id (in every ActionChunk and recorded episode)")
    parser.add_argument("--threads", type=int, default=DEFAULTS["threads"],
                        help="torch CPU threads (2 on a free 2-core machine; 1 is faster on a busy one)")
    parser.add_argument("--relative-actions", default=DEFAULTS["relative_actions"],
                        help="arm joints predicted relative to the current proprio (arms) or absolute (none)")
    parser.add_argument("--latent-norm", choices=("wan", "data", "scene"), default=DEFAULTS["latent_norm"],
                        help="scene (default): as data, but the current images in units of the starting scenes' "
                             "spread; data: standardise image latents with training statistics, as the random frozen "
                             "sim VAE passes the image with a gain of ~0.007 without it; wan: the pretrained VAE's "
                             "statistics only")
    parser.add_argument("--backbone", choices=("predict2", "predict2.5"), default=None,
                        help="train the sim network on this backbone's formulation (default predict2; --init keeps "
                             "the checkpoint's); the recipe's explicit lr / action weight flags still apply")
    parser.add_argument("--extra-pos-embed", choices=("none", "learnable"), default=None,
                        help="absolute position embedding of the DiT (default: the sim preset's, none)")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA if available, else CPU)")
    parser.add_argument("--whole-frames", action="store_true",
                        help="no cam_high ROI: the whole frame squashed to the network's size")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--init", type=Path, default=None,
                        help="continue training a checkpoint of this recipe (its weights and normalisation "
                             "statistics; a new run, unlike --resume: fresh optimiser and schedule)")
    parser.add_argument("--decay-factor", type=float, default=0.3,
                        help="lr factor reached at 80%% of the steps (linear decay from 1; then 0.06x)")
    parser.add_argument("--gripper-snap", type=float, default=None, metavar="BELOW",
                        help="output transform saved in the checkpoint: gripper targets below BELOW (0..1) become "
                             "fully closed (a regressed 'closed' lands near 0.1, which does not squeeze the cube)")
    parser.add_argument("--smoothing-window", type=int, default=DEFAULTS["smoothing_window"],
                        help="output transform saved in the checkpoint: each chunk's centred moving average over this "
                             "many actions (odd; 1 = off; see docs/sim_checkpoint_results.md)")
    parser.add_argument("--vae", type=Path, default=None, metavar="DIR",
                        help="a VAE trained by `python -m cosmos_policy_training.vae` (train --vae) instead of the "
                             "preset's randomly initialised one; recorded in recipe.json (a checkpoint continued with "
                             "--init carries it on, and --vae there must name the same VAE)")
    parser.add_argument("--no-progress", action="store_true")


def vae_record(args: argparse.Namespace, init_recipe: Optional[dict]) -> Optional[dict]:
    """recipe.json's ``vae``: the trained VAE this run used (--vae), else the one its --init chain recorded,
    else None (the preset's randomly initialised, frozen VAE)."""
    if getattr(args, "vae", None) is not None:
        from ..vae import vae_summary

        return vae_summary(args.vae)
    r = init_recipe
    while r:
        if r.get("vae"):
            return r["vae"]
        r = r.get("init_recipe")
    return None


def train_argv(args: argparse.Namespace, demo_files: Sequence[Path]) -> list:
    """The `cosmos-policy train` arguments of this recipe."""
    start = ["--init", str(args.init), "--keep-checkpoint-stats"] if args.init is not None else ["--network", "sim"]
    argv = ["--demos", *[str(p) for p in demo_files], *start, "--out", str(args.run_dir),
            "--steps", str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr),
            "--warmup", str(args.warmup), "--decay-steps", str(int(args.steps * 0.8)),
            "--decay-factor", str(args.decay_factor),
            "--stride", str(args.stride), "--seed", str(args.seed), "--cache-latents",
            "--cache-dir", str(args.cache_dir), "--save-every", str(max(100, args.steps // 8)),
            "--log-every", "10", "--threads", str(args.threads), "--policy-id", args.policy_id,
            "--relative-actions", args.relative_actions, "--latent-norm", args.latent_norm,
            "--weight-decay", str(args.weight_decay), "--action-weight", str(args.action_weight),
            "--proprio-dropout", str(args.proprio_dropout), "--first-step-fraction", str(args.first_step_fraction)]
    if args.extra_pos_embed is not None:
        argv += ["--extra-pos-embed", args.extra_pos_embed]
    if getattr(args, "backbone", None) is not None:
        argv += ["--backbone", args.backbone]
    if args.device is not None:
        argv += ["--device", args.device, "--precision", "float32"]
    if not args.whole_frames:
        argv += ["--roi", "cam_high=" + ",".join(f"{v:.6f}" for v in CAM_HIGH_ROI)]
    if args.resume:
        argv += ["--resume", str(args.run_dir)]
    if getattr(args, "vae", None) is not None:
        argv += ["--vae", str(args.vae)]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def run(args: argparse.Namespace) -> int:
    import shutil

    from cosmos_policy_ros.sim.generate_demos import generate

    from .. import cli as train_cli
    from ..rollouts import DEFAULT_IMAGE_SIZE

    t0 = time.monotonic()
    init_recipe = None
    if args.init is not None and (args.init / "recipe.json").is_file():
        init_recipe = json.loads((args.init / "recipe.json").read_text(encoding="utf-8"))
    files = sorted(args.demos_dir.glob("episode_*.hdf5"), key=lambda p: int(p.stem.split("_")[1]))
    if len(files) < args.episodes:
        print(f"generating {args.episodes} scripted demos into {args.demos_dir}", flush=True)
        files = generate("transfer_cube", args.episodes, args.demos_dir, image_size=DEFAULT_IMAGE_SIZE, seed_start=0,
                         progress=not args.no_progress, workers=max(1, args.threads))
    files = files[: args.episodes]
    extra = {str(d): train_cli.episode_files([d]) for d in args.extra_demos}  # raises on an empty folder
    scripted = len(files)
    files = files + [f for found in extra.values() for f in found]
    t_data = time.monotonic() - t0
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    targs = parser.parse_args(train_argv(args, files))
    t_load = time.monotonic()
    trainer, dataset = train_cli.build_from_args(targs)
    t_load = time.monotonic() - t_load
    print(f"training on {len(dataset)} samples from {len(files)} demos", flush=True)
    t1 = time.monotonic()
    history = trainer.train()
    t_train = time.monotonic() - t1
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.run_dir / "final", args.out)
    shutil.copy(args.run_dir / "loss.png", args.out / "loss.png")
    from ..output_transforms import set_output_transforms

    set_output_transforms(args.out, smoothing_window=args.smoothing_window, gripper_snap=args.gripper_snap)
    last = history[-1] if history else {}
    recipe = {
        "command": "python -m cosmos_policy_training.recipes.sim_transfer_cube " + " ".join(
            shlex.quote(a) for a in sys.argv[1:]),
        "train_args": train_argv(args, [Path(args.demos_dir) / "episode_<i>.hdf5"])[2:],
        "demos": {"count": scripted, "generator": "cosmos_policy_ros.sim.generate_demos (scripted IK expert)",
                  "seeds": f"0..{scripted - 1}", "image_size": list(DEFAULT_IMAGE_SIZE), "rate_hz": 25},
        "extra_demos": {d: len(found) for d, found in extra.items()},
        "output_transforms": {"smoothing_window": args.smoothing_window, "gripper_snap_below": args.gripper_snap},
        "samples": len(dataset), "steps": trainer.step, "global_batch": args.batch,
        "seconds": {"data": round(t_data, 1), "load_episodes": round(t_load, 1),
                    "train_incl_latent_cache": round(t_train, 1)},
        "final": {k: last[k] for k in ("loss", "policy/action", "policy/future_proprio", "policy/future_image",
                                       "policy/value", "value/value") if k in last},
    }
    vae = vae_record(args, init_recipe)
    if vae is not None:
        recipe["vae"] = vae
    if init_recipe is not None:  # the chain of runs that made this checkpoint, newest first
        recipe["init_recipe"] = init_recipe
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=1), encoding="utf-8")
    print(json.dumps(recipe, indent=1), flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosmos_policy_training.recipes.sim_transfer_cube",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
