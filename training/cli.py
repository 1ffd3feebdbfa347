"""`cosmos-policy train`: train or refine a Cosmos Policy checkpoint from episode files.

Single process:   cosmos-policy train --demos data/demos --network sim --out runs/x
One GPU node:     python -m torch.distributed.run --nproc_per_node 8 -m cosmos_policy_training.cli ARGS
Several nodes:    python -m torch.distributed.run --nnodes 4 --nproc_per_node 8 --node_rank $NODE_RANK
                      --rdzv_backend c10d --rdzv_endpoint $HEAD:29500 -m cosmos_policy_training.cli ARGS
(see docs/training.md). Under torchrun the global batch (--batch) is split over all ranks.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from cosmos_policy_ros.core.layout import get_layout
from cosmos_policy_ros.core.robot import ARM_INDICES


def episode_files(items: Sequence[str]) -> List[Path]:
    """Files and directories (their ``*.hdf5``, in natural order) -> episode file paths."""
    out: List[Path] = []
    key = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]  # noqa: E731
    for it in items:
        p = Path(it)
        if p.is_dir():
            files = sorted(p.glob("*.hdf5"), key=key)
            if not files:
                raise FileNotFoundError(f"{p}: no *.hdf5 episode files")
            out += files
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI arguments (see module docstring)."""
    d = parser.add_argument_group("data")
    d.add_argument("--demos", nargs="*", default=[], help="demonstration episode files or folders")
    d.add_argument("--rollouts", nargs="*", default=[], help="recorded rollout episode files or folders (labelled)")
    d.add_argument("--demo-fraction", type=float, default=None,
                   help="share of draws from demos when rollouts are given (planning recipe: 0.1); default: "
                        "proportional to the number of samples")
    d.add_argument("--stride", type=int, default=1, help="use every N-th step as a sample start")
    d.add_argument("--gamma", type=float, default=0.998)
    d.add_argument("--first-step-fraction", type=float, default=0.0,
                   help="share of draws from the episodes' first samples (t = 0), where only the cameras say where "
                        "the object is (default 0: uniform over samples)")
    d.add_argument("--no-augment", action="store_true", help="no image augmentation (inference centre crop)")
    d.add_argument("--cache-latents", action="store_true", help="encode every sample once (implies --no-augment)")
    d.add_argument("--cache-dir", default=None, help="keep cached latents here across runs")
    d.add_argument("--latent-norm", choices=("wan", "data", "scene"), default="wan",
                   help="wan: Wan 2.1 latent statistics only (pretrained VAE); data: also standardise every image "
                        "latent element with statistics of the training samples (a randomly initialised VAE "
                        "needs it); scene: as data, but the current images in units of what tells the episodes' "
                        "starting scenes apart; the statistics travel with the checkpoint")
    m = parser.add_argument_group("model")
    m.add_argument("--init", default=None, help="start from a checkpoint (our folder, NVIDIA folder or HF id)")
    m.add_argument("--network", default="sim", help="preset when not --init: tiny, sim, 2b")
    m.add_argument("--backbone", choices=("predict2", "predict2.5"), default=None,
                   help="backbone of a network trained from a preset (default predict2; --init keeps the checkpoint's). "
                        "It picks the training objective (predict2: EDM-style x0 loss; predict2.5: rectified flow, "
                        "velocity target, shift-5 logit-normal times, action frame x16) and the optimiser defaults")
    m.add_argument("--extra-pos-embed", choices=("none", "learnable"), default=None,
                   help="override the preset's absolute position embedding (not with --init)")
    m.add_argument("--layout", default="aloha")
    m.add_argument("--embeddings", default=None, help="safetensors instruction -> (1, L, D) text embeddings")
    m.add_argument("--relative-actions", default=None,
                   help="action dimensions predicted relative to the current proprio: none (the reference), arms "
                        "(ALOHA's 12 arm joints; grippers stay absolute) or comma-separated indices; stored in the "
                        "checkpoint's statistics, so inference mirrors it. Default: as --init's checkpoint, else none")
    m.add_argument("--roi", action="append", default=[], metavar="CAMERA=TOP,LEFT,HEIGHT,WIDTH",
                   help="cut this box (fractions of the frame) out of the camera's frames before resizing, in "
                        "training and, as it is stored in the checkpoint, at inference; repeat per camera. "
                        "Default: as --init's checkpoint, else whole frames")
    m.add_argument("--keep-checkpoint-stats", action="store_true", help="keep --init's normalisation statistics")
    m.add_argument("--train-vae", action="store_true", help="also train the VAE (default: frozen)")
    m.add_argument("--vae", default=None, metavar="DIR",
                   help="a VAE trained by `python -m cosmos_policy_training.vae` (its --out folder): the preset network "
                        "is built with its config and loads its weights strictly (frozen unless --train-vae); with "
                        "--init the checkpoint's VAE must be this one. Latent caches are keyed by the VAE's weights")
    m.add_argument("--policy-id", default=None)
    t = parser.add_argument_group("training")
    t.add_argument("--out", required=True, help="run folder (checkpoints/, final/, history.jsonl, loss.png)")
    t.add_argument("--steps", type=int, default=50000)
    t.add_argument("--batch", type=int, default=200, help="global batch (all ranks together)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lr", type=float, default=None, help="default: the backbone's recipe (1e-4 / 2e-4 for predict2.5)")
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--warmup", type=int, default=None, help="default: the backbone's recipe (2000 / 1000)")
    t.add_argument("--decay-steps", type=int, default=None, help="default: the backbone's recipe (20000 / 42800)")
    t.add_argument("--decay-factor", type=float, default=None, help="default: the backbone's recipe (0.3 / 0.06)")
    t.add_argument("--final-factor", type=float, default=None, help="default: the backbone's recipe (0.06)")
    t.add_argument("--split", type=float, nargs=3, default=(0.5, 0.25, 0.25), metavar=("POLICY", "WORLD", "VALUE"))
    t.add_argument("--proprio-dropout", type=float, default=0.0,
                   help="probability that a policy sample's current proprio is generated instead of given "
                        "(forces the policy to read the cameras; reference: 0)")
    t.add_argument("--action-weight", type=float, default=None,
                   help="loss weight of the action latent frame relative to the other frames (reference: 1)")
    t.add_argument("--value-mode", choices=("value_q", "value_v"), default="value_q",
                   help="value_v: current state and action masked (planning model, V(s'))")
    t.add_argument("--save-every", type=int, default=1000)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--resume", default=None, help="checkpoint folder or run folder to continue from")
    t.add_argument("--distributed", choices=("auto", "none", "ddp", "fsdp"), default="auto")
    t.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto")
    t.add_argument("--grad-checkpointing", action="store_true")
    t.add_argument("--device", default=None)
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--no-progress", action="store_true")


def relative_dims(spec: str, action_dim: int) -> list:
    """``--relative-actions`` -> action indices: "none", "arms" (14-d ALOHA: all but the grippers 6, 13) or "0,1,2"."""
    spec = (spec or "none").strip().lower()
    if spec == "none":
        return []
    if spec == "arms":
        if action_dim != 14:
            raise SystemExit(f"--relative-actions arms: expected ALOHA's 14-d actions, got {action_dim}; give indices")
        return list(ARM_INDICES)
    try:
        dims = sorted({int(v) for v in spec.split(",") if v.strip()})
    except ValueError:
        raise SystemExit(f"--relative-actions: expected none, arms or comma-separated indices, got {spec!r}")
    if not dims or dims[0] < 0 or dims[-1] >= action_dim:
        raise SystemExit(f"--relative-actions: expected indices in [0, {action_dim}), got {spec!r}")
    return dims


def parse_rois(items: Sequence[str]) -> dict:
    """``--roi`` values ("cam_high=0.4,0.4,0.3,0.25") -> camera -> (top, left, height, width)."""
    out = {}
    for it in items:
        cam, sep, box = it.partition("=")
        try:
            vals = tuple(float(v) for v in box.split(","))
        except ValueError:
            vals = ()
        if not sep or not cam.strip() or len(vals) != 4:
            raise SystemExit(f"--roi: expected CAMERA=TOP,LEFT,HEIGHT,WIDTH (fractions), got {it!r}")
        out[cam.strip()] = vals
    return out


def trained_vae_for(directory: str, network, image_cfg):
    """(VAEConfig, state dict) of a trained VAE folder, checked against the run's image preprocessing."""
    from .vae import load_trained_vae

    try:
        vae_cfg, state, report = load_trained_vae(directory)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e))
    img = (report or {}).get("image") or {}
    if img.get("size") is not None and int(img["size"]) != image_cfg.size:
        raise SystemExit(f"--vae {directory}: trained on {img['size']} px images, this run's network takes "
                         f"{image_cfg.size} px")
    rois = {k: [round(float(v), 6) for v in b] for k, b in (img.get("rois") or {}).items()}
    mine = {k: [round(float(v), 6) for v in b] for k, b in (image_cfg.rois or {}).items()}
    if img and rois != mine:
        print(f"warning: --vae {directory} was trained with image ROIs {rois or 'none'}, this run uses "
              f"{mine or 'none'}", file=sys.stderr, flush=True)
    return vae_cfg, state


def use_trained_vae(policy, vae_cfg, state, directory: str, from_init: bool) -> None:
    """Load the trained VAE's weights into a preset network (strict), or check that an --init checkpoint's VAE is
    that VAE (a DiT is trained on one VAE's latents: swapping it would silently change every latent)."""
    import torch

    from .vae import load_vae_into

    vae = policy.network.vae
    if from_init:
        own = vae.state_dict()
        same = policy.network.cfg.vae == vae_cfg and set(own) == set(state) and all(
            own[k].shape == state[k].shape and torch.equal(own[k].float(), state[k].float()) for k in state)
        if not same:
            raise SystemExit(f"--vae {directory}: the --init checkpoint's VAE is a different one; a network keeps the "
                             "VAE its DiT was trained on (start from a preset to use a new VAE)")
        return
    from cosmos_policy_ros.core.checkpoint import CheckpointError
    try:
        load_vae_into(vae, state, f"--vae {directory} weights")
    except CheckpointError as e:
        raise SystemExit(str(e))


def build_from_args(args: argparse.Namespace):
    """(trainer, dataset) for parsed arguments (used by the CLI and the recipes)."""
    import torch

    from .configs import build_policy, load_embeddings_file, network_preset
    from .dataset import DatasetConfig, EpisodeDataset
    from .augment import AugmentConfig
    from .objectives import ObjectiveConfig
    from .trainer import OptimConfig, TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(int(args.threads))
    layout = get_layout(args.layout)
    demos, rollouts = episode_files(args.demos), episode_files(args.rollouts)
    if not demos and not rollouts:
        raise SystemExit("cosmos-policy train: expected --demos and/or --rollouts episode files")
    network = None if args.init else network_preset(args.network, backbone=args.backbone or "predict2")
    if getattr(args, "extra_pos_embed", None) is not None:
        if network is None:
            raise SystemExit("--extra-pos-embed: a network from --init keeps its own architecture")
        import dataclasses
        network = dataclasses.replace(network, extra_pos_embed=None if args.extra_pos_embed == "none" else "learnable")
    augment = not (args.no_augment or args.cache_latents)
    dcfg = DatasetConfig(gamma=args.gamma, stride=args.stride, augment=AugmentConfig(enabled=augment),
                         first_step_fraction=args.first_step_fraction)
    fractions = None
    if args.demo_fraction is not None and rollouts:
        fractions = {"demo": args.demo_fraction, "rollout": 1.0 - args.demo_fraction}
    # image preprocessing follows the starting network; from a checkpoint, read it (and maybe its stats) first
    from .configs import image_config_for
    stats = None
    relative = relative_dims(args.relative_actions or "none", layout.action_dim)
    if args.init:
        from cosmos_policy_ros.core.checkpoint import load_checkpoint
        init_data = load_checkpoint(args.init, layout=layout)
        backbone = init_data.network.backbone
        if args.backbone is not None and args.backbone != backbone:
            raise SystemExit(f"--backbone {args.backbone}: the --init checkpoint is a {backbone} network")
        image_cfg = init_data.image
        init_relative = [int(i) for i in np.flatnonzero(init_data.stats.relative_actions)]
        if args.relative_actions is None:
            relative = init_relative  # the network was trained for this action representation: keep it
        if args.keep_checkpoint_stats:
            stats = init_data.stats
            if relative != init_relative:
                raise SystemExit(f"--relative-actions {args.relative_actions} contradicts --keep-checkpoint-stats "
                                 f"(the checkpoint's relative dimensions are {init_relative})")
        del init_data
    else:
        backbone = network.backbone
        image_cfg = image_config_for(network)
    rois = parse_rois(getattr(args, "roi", []) or [])
    if rois:
        import dataclasses
        unknown = sorted(set(rois) - set(layout.cameras))
        if unknown:
            raise SystemExit(f"--roi: expected cameras of the layout {list(layout.cameras)}, got {unknown}")
        try:
            image_cfg = dataclasses.replace(image_cfg, rois=rois)
        except ValueError as e:
            raise SystemExit(f"--roi: {e}")
    vae_state = None
    if getattr(args, "vae", None):
        vae_cfg, vae_state = trained_vae_for(args.vae, network, image_cfg)
        if network is not None:
            import dataclasses
            network = dataclasses.replace(network, vae=vae_cfg)
    dataset = EpisodeDataset.from_paths(demos, layout, image_cfg, dcfg, rollouts=rollouts, stats=stats,
                                        kind_fractions=fractions,
                                        relative_actions=relative)
    emb = load_embeddings_file(args.embeddings) if args.embeddings else None
    policy = build_policy(dataset.stats, dataset.tasks, init=args.init, network=network, layout=layout, seed=args.seed,
                          embeddings=emb, keep_checkpoint_stats=args.keep_checkpoint_stats, policy_id=args.policy_id,
                          image=image_cfg)
    if vae_state is not None:
        use_trained_vae(policy, vae_cfg, vae_state, args.vae, from_init=bool(args.init))
    from cosmos_policy_ros.core.backbone import get_backbone
    optim = dict(get_backbone(backbone).optim)  # the backbone's recipe, then explicit flags
    optim.update({k: v for k, v in (("lr", args.lr), ("warmup_steps", args.warmup), ("decay_steps", args.decay_steps),
                                    ("decay_factor", args.decay_factor), ("final_factor", args.final_factor))
                  if v is not None})
    optim["decay_steps"] = max(optim.get("decay_steps", OptimConfig.decay_steps),
                               optim.get("warmup_steps", OptimConfig.warmup_steps))
    tcfg = TrainConfig(
        steps=args.steps, global_batch=args.batch, seed=args.seed,
        optim=OptimConfig(weight_decay=args.weight_decay, grad_clip=args.grad_clip, **optim),
        objective=ObjectiveConfig.for_backbone(backbone, policy=args.split[0], world_model=args.split[1],
                                               value=args.split[2], value_mode=args.value_mode,
                                               action_weight=args.action_weight, proprio_dropout=args.proprio_dropout),
        log_every=args.log_every, save_every=args.save_every, precision=args.precision,
        grad_checkpointing=args.grad_checkpointing, distributed=args.distributed, train_vae=args.train_vae,
        cache_latents=args.cache_latents, cache_dir=args.cache_dir, latent_norm=args.latent_norm,
        progress=not args.no_progress)
    trainer = Trainer(policy, dataset, tcfg, args.out, device=args.device)
    if args.resume:
        trainer.resume(args.resume)
    return trainer, dataset


def run(args: argparse.Namespace) -> int:
    """Train; print where the final checkpoint is."""
    trainer, dataset = build_from_args(args)
    if trainer.info.is_main:
        print(f"training on {len(dataset)} samples from {len(dataset.episodes)} episodes, "
              f"{trainer.info.world} rank(s) ({trainer.info.mode}), device {trainer.info.device}, "
              f"from step {trainer.step} to {trainer.cfg.steps}", flush=True)
    history = trainer.train()
    if trainer.info.is_main:
        last = history[-1] if history else {}
        print(json.dumps({"final": str(Path(args.out) / "final"), "step": trainer.step,
                          **{k: v for k, v in last.items() if k in ("loss", "policy/action", "value/value")}}), flush=True)
    import torch.distributed as dist
    if dist.is_initialized():
        # Rank 0 is still writing the final checkpoint when the others return from train(). A rank that tears
        # down its gloo connections while a peer still holds them can abort the whole job ("terminate called
        # without an active exception"), so every rank waits here until all are done.
        dist.barrier()
        dist.destroy_process_group()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosmos_policy_training.cli", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
