"""Train the small Wan VAE of a simulated-ALOHA policy on the frames its DiT sees.

    python -m cosmos_policy_training.vae --episodes data/sim_demos --out runs/vae

The small sim network's VAE is diffusers' ``AutoencoderKLWan`` in a small configuration (``VAEConfig``: z_dim 16,
causal video layout, 8x spatial and 4x temporal compression, so the latent layout stays the reference's). A
randomly initialised one locates the cube well enough for the policy but decodes predicted latents to coloured
noise; this module trains one so the world model's future frames are pictures.

What it learns is exactly what the DiT sees: every camera frame goes through the policy's image preprocessing
(squash, ROI cut, resize to the network's size: ``--image-size``, ``--roi`` or ``--like CKPT``), and frames are
encoded the way the policy encodes them, inside the layout's video: a black first frame, the vector slot's black
frames, then each camera's image as 4 copies (the VAE is causal: an image's latent depends on the frames before
it, so an image encoded alone gives a different latent). Training clips are, by default, the whole layout video of
a training sample (``--clips full``: current images at t, future images at min(t + 50, T - 1) of the same file, so
the future slots a world-model prediction decodes from are trained too), or the policy's encoding prefix only
(``--clips prefix``: raw frames 0..16, blank, proprio slot, the three current images); held-out evaluation encodes
and decodes the whole 41-frame video of a sample (current images at t, future images at min(t + 50, T - 1)),
as a perfectly predicted world-model sample would be decoded, and compares the first raw frame of every image
slot with its input.

Loss: L1 + MSE on the clip in [-1, 1] (all raw frames), plus ``--kl-weight`` x the KL divergence of the
posterior, measured after the Wan latent normalisation the network applies (so the DiT's latents stay near unit
scale), to N(0, I). Training decodes the posterior mean, the latent the network encodes with
(``--sample-posterior`` decodes a reparameterised sample instead: a fresh posterior's std of ~1 drowns its mean for
hundreds of steps, too many for a CPU budget); the KL term then keeps the latents' scale in check. AdamW, linear
warm-up then linear decay to 0.1x, seeded.

Held-out episodes are whole files (the last ``--heldout`` in natural order unless ``--heldout-files``); PSNR is
on uint8 [0, 255] images (the mean of per-image PSNRs), per camera and image role (current / future).

Outputs in ``--out``: ``vae.safetensors`` (``AutoencoderKLWan`` state dict, loads strictly into
``build_vae(NetworkConfig(vae=VAEConfig(**vae_config.json)))``), ``vae_config.json``, ``vae_report.json``
(PSNR, steps, wall time, data, command), ``history.jsonl``, ``loss.png`` and ``reconstructions.png``
(held-out frames, real beside reconstructed). ``cosmos-policy train --vae DIR`` and the sim recipe's ``--vae``
build the network with it.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cosmos_policy_ros.core.images import ImageConfig, from_model_range
from cosmos_policy_ros.core.layout import LatentLayout, get_layout
from cosmos_policy_ros.core.network import (SPATIAL_COMPRESSION, WAN_LATENTS_MEAN, WAN_LATENTS_STD,
                                            NetworkConfig, VAEConfig, build_vae)

#: Sized for a shared 2-core CPU (measured 2026-12-06 at load ~12: about 2.9 s per step of 4 clips at base 8, one
#: thread): 400 steps stay within ~20 minutes. Base 8 (0.67 M parameters) instead of the sim preset's 4 (0.18 M):
#: 1.2x the time per step for 4x the width. This budget does not yet give recognisable reconstructions (the decoder
#: first settles on the mean image; docs/training.md); 1,316 steps (100 min on one idle core, 2026-12-07) do:
#: 28.1 dB held out, the decoder using its latent from about step 600.
DEFAULTS = dict(base_dim=8, num_res_blocks=1, steps=400, batch=4, lr=2e-3, warmup=20, final_factor=0.1,
                kl_weight=1e-4, weight_decay=0.0, frame_stride=5, heldout=4, eval_stride=25, eval_every=100,
                seed=0, threads=2, image_size=64, max_minutes=25.0, clips="full", save_every=100,
                hard_weight=0.0, hard_fraction=0.02)
FILES = ("vae.safetensors", "vae_config.json", "vae_report.json")


class VAEDataError(ValueError):
    """The episode files cannot give the frames asked for (the message says which and why)."""


# ------------------------------------------------------------------------------------------------------------
# frames
# ------------------------------------------------------------------------------------------------------------
def natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def find_episode_files(items: Sequence[Union[str, Path]]) -> List[Path]:
    """Episode files and folders (their ``*.hdf5`` in natural order) -> paths; a clear error when none."""
    out: List[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(p.glob("*.hdf5"), key=natural_key)
        elif p.is_file():
            out.append(p)
        else:
            raise VAEDataError(f"{p}: no such file or directory")
    if not out:
        raise VAEDataError(f"no *.hdf5 episode files found in {[str(i) for i in items]}")
    return out


def split_heldout(files: Sequence[Path], heldout: int = DEFAULTS["heldout"],
                  heldout_names: Sequence[str] = ()) -> Tuple[List[Path], List[Path]]:
    """(train, held-out) by file: the files named in ``heldout_names`` (file names), else the last ``heldout``."""
    files = list(files)
    if heldout_names:
        names = set(heldout_names)
        held = [f for f in files if f.name in names or str(f) in names]
        unknown = names - {f.name for f in held} - {str(f) for f in held}
        if unknown:
            raise VAEDataError(f"--heldout-files: {sorted(unknown)} are not among the episode files")
    else:
        if heldout < 1:
            raise VAEDataError(f"--heldout: expected at least 1 held-out file, got {heldout}")
        held = files[-heldout:]
    train = [f for f in files if f not in held]
    if not train:
        raise VAEDataError(f"expected at least one training file beside {len(held)} held-out ones, got {len(files)} files")
    return train, held


def episode_length(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        if "action" not in f:
            raise VAEDataError(f"{path}: not an episode file (no /action)")
        return int(f["action"].shape[0])


def load_frames(path: Path, steps: Sequence[int], layout: LatentLayout, image_cfg: ImageConfig) -> Dict[int, torch.Tensor]:
    """step -> (ncam, 3, S, S) uint8: the episode's frames at these steps through the policy's preprocessing
    (the training data's: :func:`cosmos_policy_training.dataset.preprocess_episode_images` without augmentation)."""
    from .dataset import preprocess_episode_images
    from .episodes import read_episode

    idx = sorted({int(t) for t in steps})
    try:
        ep = read_episode(path, cameras=layout.cameras, steps=idx)
    except KeyError as e:
        raise VAEDataError(f"{path}: {e.args[0]}") from None
    for cam in layout.cameras:
        frames = ep.images.get(cam)
        if frames is None or frames.ndim != 4 or frames.shape[-1] != 3:
            raise VAEDataError(f"{path}: expected (T, H, W, 3) uint8 frames of {cam}, got "
                               f"{None if frames is None else tuple(frames.shape)}")
        if min(frames.shape[1:3]) < image_cfg.min_input_size:
            raise VAEDataError(f"{path}: {cam} frames are {frames.shape[1]}x{frames.shape[2]}, smaller than "
                               f"{image_cfg.min_input_size} px")
        if not np.asarray(frames[idx[-1]]).any() and not np.asarray(frames[idx[0]]).any():
            raise VAEDataError(f"{path}: {cam} frames at steps {idx[0]} and {idx[-1]} are all black (not rendered?)")
    imgs = preprocess_episode_images(ep, layout.cameras, image_cfg, augment=False, steps=idx)
    return {t: imgs[i] for i, t in enumerate(idx)}


def training_frames(files: Sequence[Path], layout: LatentLayout, image_cfg: ImageConfig, stride: int,
                    progress: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(frames, pairs): frames (N, ncam, 3, S, S) uint8, every ``stride``-th step of every file (all cameras of a
    step together) and the steps their futures need; pairs (P, 2) long, the frame index of each strided step t and
    of its future min(t + horizon, T - 1) in the same file (a whole layout video's current and future images)."""
    out, pairs, n = [], [], 0
    for f in _bar(files, progress, "frames"):
        T = episode_length(f)
        ts = list(range(0, T, stride))
        fr = load_frames(f, ts + [min(t + layout.horizon, T - 1) for t in ts], layout, image_cfg)
        order = sorted(fr)
        where = {t: n + i for i, t in enumerate(order)}
        pairs += [(where[t], where[min(t + layout.horizon, T - 1)]) for t in ts]
        out.append(torch.stack([fr[t] for t in order]))
        n += len(order)
    if not out:
        raise VAEDataError("no training frames")
    return torch.cat(out), torch.tensor(pairs, dtype=torch.long)


def heldout_samples(files: Sequence[Path], layout: LatentLayout, image_cfg: ImageConfig, stride: int,
                    progress: bool = False) -> Tuple[torch.Tensor, torch.Tensor, List[Tuple[str, int]]]:
    """Held-out (now, next, keys): images at t and at min(t + horizon, T - 1) for t = 0, stride, ... (the video a
    training sample of the DiT encodes); (n, ncam, 3, S, S) uint8 each, keys (file name, t)."""
    now, nxt, keys = [], [], []
    for f in _bar(files, progress, "held-out"):
        T = episode_length(f)
        ts = list(range(0, T, stride))
        tn = [min(t + layout.horizon, T - 1) for t in ts]
        fr = load_frames(f, ts + tn, layout, image_cfg)
        now += [fr[t] for t in ts]
        nxt += [fr[t] for t in tn]
        keys += [(f.name, t) for t in ts]
    return torch.stack(now), torch.stack(nxt), keys


def _bar(items, progress: bool, desc: str):
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------------------
# encoding as the network does, and the metric
# ------------------------------------------------------------------------------------------------------------
def prefix_frames(layout: LatentLayout) -> int:
    """Raw frames the policy encodes for its current images (ALOHA: 17 = blank, proprio slot, 3 images)."""
    return layout.raw_frames(max(layout.image_indices("current").values()))[-1] + 1


def layout_video(now: torch.Tensor, nxt: torch.Tensor, layout: LatentLayout, frames: Optional[int] = None) -> torch.Tensor:
    """(B, ncam, 3, S, S) uint8 current / future images -> (B, 3, F, S, S) in [-1, 1]: the layout's video, as the
    training data and the policy build it (first ``frames`` raw frames when given)."""
    from .dataset import build_video

    video = build_video(now, nxt, layout)
    return video if frames is None else video[:, :, :frames]


def _wan_stats(device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(WAN_LATENTS_MEAN, device=device).view(1, -1, 1, 1, 1)
    s = torch.tensor(WAN_LATENTS_STD, device=device).view(1, -1, 1, 1, 1)
    return m, s


@torch.no_grad()
def reconstruct(vae, video: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, S, S) in [-1, 1] -> the VAE's reconstruction through the posterior mean, the way
    ``CosmosNetwork.encode`` / ``decode`` map a video to latents and back (their Wan normalisation cancels)."""
    mu = vae.encode(video).latent_dist.mean
    return vae.decode(mu).sample.float()


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images on [0, 255] (100 dB for identical images)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else 10.0 * math.log10(255.0 ** 2 / mse)


@torch.no_grad()
def layout_reconstructions(vae, now: torch.Tensor, nxt: torch.Tensor, layout: LatentLayout,
                           batch: int = 4) -> Dict[Tuple[str, str], Tuple[np.ndarray, np.ndarray]]:
    """Encode and decode whole layout videos; -> (camera, "current" | "future") -> (real, reconstructed), each
    (n, S, S, 3) uint8: the input image of the slot and the first raw frame the decoder gives for it (what the
    policy shows as a future image)."""
    out: Dict[Tuple[str, str], Tuple[list, list]] = {}
    for s in range(0, now.shape[0], batch):
        n, x = now[s:s + batch], nxt[s:s + batch]
        rec = from_model_range(reconstruct(vae, layout_video(n, x, layout)))  # (b, 3, F, S, S)
        for role, src in (("current", n), ("future", x)):
            for ci, cam in enumerate(layout.cameras):
                k = layout.image_indices(role)[cam]
                real, got = out.setdefault((cam, role), ([], []))
                real.append(src[:, ci].permute(0, 2, 3, 1).numpy())
                got.append(rec[:, :, layout.raw_frame(k)].permute(0, 2, 3, 1).numpy())
    return {k: (np.concatenate(r), np.concatenate(g)) for k, (r, g) in out.items()}


def psnr_table(recs: Dict[Tuple[str, str], Tuple[np.ndarray, np.ndarray]], layout: LatentLayout) -> dict:
    """{"psnr_db": mean over every image, "per_camera": {cam: {"current", "future", "all"}}} (mean of per-image
    PSNRs, uint8 [0, 255])."""
    per_cam, every = {}, []
    for cam in layout.cameras:
        row, both = {}, []
        for role in ("current", "future"):
            if (cam, role) not in recs:
                continue
            real, got = recs[(cam, role)]
            vals = [psnr_u8(a, b) for a, b in zip(real, got)]
            row[role] = round(float(np.mean(vals)), 3)
            both += vals
        row["all"] = round(float(np.mean(both)), 3)
        every += both
        per_cam[cam] = row
    return {"psnr_db": round(float(np.mean(every)), 3), "per_camera": per_cam}


def hard_pixel_l1(err: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of ``err`` (|x - x_rec|, (B, C, T, H, W)) over the worst ``fraction`` of each frame's pixels. A small
    object (the sim's cube is 7x7 of cam_high's 64x64 pixels) barely moves the mean loss when the decoder paints it as
    table, so a decoder that has settled on the large shapes keeps missing it; among a frame's largest errors it
    weighs as much as the rest."""
    err = err.mean(dim=1).flatten(2)  # (B, T, H*W)
    k = max(1, int(round(fraction * err.shape[-1])))
    return err.topk(k, dim=-1).values.mean()


def kl_to_unit(posterior) -> torch.Tensor:
    """Mean KL(q(z) || N(0, I)) per latent element, with q measured after the Wan latent normalisation."""
    m, s = _wan_stats(posterior.mean.device)
    mu = (posterior.mean - m) / s
    logvar = posterior.logvar - 2.0 * torch.log(s)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


# ------------------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------------------
def vae_network_config(vae_cfg: VAEConfig, image_size: int) -> NetworkConfig:
    """A network config carrying this VAE (``build_vae`` reads only ``cfg.vae``)."""
    return NetworkConfig(name="vae-only", num_layers=1, num_attention_heads=1, attention_head_dim=8,
                         text_embed_dim=8, text_len=1, adaln_lora_dim=1, image_size=image_size, vae=vae_cfg)


def file_sha256(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_vae_files(vae, vae_cfg: VAEConfig, out: Union[str, Path]) -> None:
    """``vae.safetensors`` (state dict) and ``vae_config.json`` (the VAEConfig fields) into ``out``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in vae.state_dict().items()}, str(out / "vae.safetensors"))
    (out / "vae_config.json").write_text(json.dumps(dataclasses.asdict(vae_cfg), indent=1), encoding="utf-8")


def load_trained_vae(directory: Union[str, Path], option: str = "--vae"):
    """(VAEConfig, state dict, report or None) of a folder written by this module; clear errors otherwise."""
    from safetensors.torch import load_file

    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{option} {d}: no such folder (expected the --out folder of "
                                f"`python -m cosmos_policy_training.vae`)")
    missing = [f for f in FILES[:2] if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{option} {d}: missing {missing} (expected {list(FILES[:2])})")
    raw = json.loads((d / "vae_config.json").read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(VAEConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{option} {d}/vae_config.json: unknown keys {unknown}; expected a subset of {sorted(known)}")
    cfg = VAEConfig(**raw)
    state = load_file(str(d / "vae.safetensors"))
    report = None
    if (d / "vae_report.json").is_file():
        report = json.loads((d / "vae_report.json").read_text(encoding="utf-8"))
    return cfg, state, report


def load_vae_into(vae, state: Dict[str, torch.Tensor], what: str = "VAE weights") -> None:
    """Strict load with the checkpoint module's readable report on any missing / unexpected / mis-shaped key."""
    from cosmos_policy_ros.core.checkpoint import load_strict

    load_strict(vae, state, what)


def vae_summary(directory: Union[str, Path]) -> dict:
    """What a recipe records about a trained VAE: folder, weights hash, config, held-out PSNR."""
    cfg, _, report = load_trained_vae(directory)
    out = {"trained": True, "dir": str(directory), "sha256": file_sha256(Path(directory) / "vae.safetensors"),
           "config": json.loads(json.dumps(dataclasses.asdict(cfg)))}  # as recipe.json reads back (lists)
    if report:
        out["heldout_psnr_db"] = report.get("psnr", {}).get("heldout", {}).get("psnr_db")
        out["measured"] = report.get("measured")
    return out


# ------------------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------------------
def image_config_from_args(args: argparse.Namespace, layout: LatentLayout) -> ImageConfig:
    """The policy's image preprocessing: ``--like CKPT``'s, else the sim network's at ``--image-size`` with the
    sim recipe's cam_high ROI (unless ``--whole-frames``) and any ``--roi``."""
    from cosmos_policy_ros.core.checkpoint import image_config_of

    from .cli import parse_rois
    from .configs import image_config_for

    size = int(args.image_size)
    if size < 16 or size % (2 * SPATIAL_COMPRESSION):
        raise SystemExit(f"--image-size: expected a multiple of {2 * SPATIAL_COMPRESSION} (8x latents, 1x2x2 "
                         f"patches), at least 16, got {size}")
    if args.like is not None:
        cfg_file = Path(args.like) / "config.json"
        if not cfg_file.is_file():
            raise SystemExit(f"--like {args.like}: no config.json (expected a checkpoint in our format)")
        conf = json.loads(cfg_file.read_text(encoding="utf-8"))
        img = image_config_of(conf)
        net_size = int(conf["network"]["image_size"])
        if net_size != size and args.image_size_given:
            raise SystemExit(f"--image-size {size}: the --like checkpoint's network takes {net_size} px images")
        return img
    from .recipes.sim_transfer_cube import CAM_HIGH_ROI

    net = vae_network_config(VAEConfig(), size)
    rois = {} if args.whole_frames else {"cam_high": CAM_HIGH_ROI}
    rois.update(parse_rois(args.roi or []))
    unknown = sorted(set(rois) - set(layout.cameras))
    if unknown:
        raise SystemExit(f"--roi: expected cameras of the layout {list(layout.cameras)}, got {unknown}")
    return dataclasses.replace(image_config_for(net), rois=rois or None)


def lr_factor(step: int, steps: int, warmup: int, final: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, steps - warmup)
    return 1.0 - (1.0 - final) * min(1.0, (step - warmup) / span)


def train(args: argparse.Namespace) -> dict:
    """Train and write the outputs; returns the report."""
    t_start = time.monotonic()
    if args.threads:
        torch.set_num_threads(int(args.threads))
    layout = get_layout(args.layout)
    image_cfg = image_config_from_args(args, layout)
    vae_cfg = VAEConfig(base_dim=args.base_dim, num_res_blocks=args.num_res_blocks)
    if args.steps < 1 or args.batch < 1:
        raise SystemExit(f"--steps and --batch: expected >= 1, got {args.steps}, {args.batch}")
    if args.hard_weight < 0 or not 0 < args.hard_fraction <= 1:
        raise SystemExit(f"--hard-weight / --hard-fraction: expected >= 0 / in (0, 1], got {args.hard_weight}, "
                         f"{args.hard_fraction}")
    try:
        files = find_episode_files(args.episodes)
        train_files, held_files = split_heldout(files, args.heldout, args.heldout_files or ())
        progress = not args.no_progress
        print(f"[vae] {len(train_files)} training files, {len(held_files)} held out "
              f"({', '.join(f.name for f in held_files)}); images {image_cfg.size} px, rois {image_cfg.rois}",
              file=sys.stderr, flush=True)
        frames, pairs = training_frames(train_files, layout, image_cfg, args.frame_stride, progress)
        h_now, h_next, h_keys = heldout_samples(held_files, layout, image_cfg, args.eval_stride, progress)
    except VAEDataError as e:
        raise SystemExit(f"python -m cosmos_policy_training.vae: {e}")
    t_data = time.monotonic() - t_start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    init = None
    if args.init:
        # continue from a folder of this module (its final output or its periodic checkpoint/): the weights and
        # their config (which override --base-dim / --num-res-blocks); the optimiser starts afresh with its warm-up
        try:
            init_cfg, init_state, init_report = load_trained_vae(args.init, "--init")
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"python -m cosmos_policy_training.vae: {e}")
        vae_cfg = init_cfg
        init = {"dir": str(args.init), "sha256": file_sha256(Path(args.init) / "vae.safetensors"),
                "steps": (init_report or {}).get("steps")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        vae = build_vae(vae_network_config(vae_cfg, image_cfg.size))
    if args.init:
        load_vae_into(vae, init_state, f"--init {args.init}")
    n_params = sum(p.numel() for p in vae.parameters())
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=args.weight_decay)
    n_prefix = prefix_frames(layout)
    clip_frames = None if args.clips == "full" else n_prefix
    # a fixed slice of the held-out samples is evaluated during training (the curve); all of them at the end
    probe = torch.linspace(0, h_now.shape[0] - 1, min(8, h_now.shape[0])).round().long()
    hist_file = out / "history.jsonl"
    hist_file.write_text("")
    history: List[dict] = []
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, desc="vae", unit="step", dynamic_ncols=True)
    t_train = time.monotonic()
    deadline = t_train + 60.0 * args.max_minutes if args.max_minutes and args.max_minutes > 0 else None
    step, stopped = 0, "steps"
    run_l1 = run_mse = run_kl = 0.0
    n_run = 0
    vae.train()
    while step < args.steps:
        if deadline is not None and time.monotonic() > deadline:
            stopped = f"time limit (--max-minutes {args.max_minutes})"
            break
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_factor(step, args.steps, args.warmup, args.final_factor)
        pick = pairs[torch.randint(pairs.shape[0], (args.batch,), generator=gen)]
        # full: the whole layout video of a training sample (B, 3, 41, S, S), so the future slots, decoded after the
        # vector frames and the current images, are trained too; prefix: the policy's encoding prefix (17 frames)
        video = layout_video(frames[pick[:, 0]], frames[pick[:, 1]], layout, clip_frames)
        post = vae.encode(video).latent_dist
        z = post.mean
        if args.sample_posterior:
            z = z + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        err = (rec - video).abs()
        l1 = err.mean()
        mse = (rec - video).pow(2).mean()
        kl = kl_to_unit(post)
        loss = l1 + mse + args.kl_weight * kl
        if args.hard_weight > 0:
            loss = loss + args.hard_weight * hard_pixel_l1(err, args.hard_fraction)
        if not torch.isfinite(loss):
            raise SystemExit(f"python -m cosmos_policy_training.vae: the loss is {loss.item()} at step {step}; "
                             f"lower --lr ({args.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        run_l1, run_mse, run_kl, n_run = run_l1 + l1.item(), run_mse + mse.item(), run_kl + kl.item(), n_run + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(l1=f"{l1.item():.4f}")
        if step % args.log_every == 0 or step == args.steps or step % args.eval_every == 0:
            rec_ = {"step": step, "l1": run_l1 / n_run, "mse": run_mse / n_run, "kl": run_kl / n_run,
                    "lr": opt.param_groups[0]["lr"], "seconds": round(time.monotonic() - t_train, 1)}
            run_l1 = run_mse = run_kl = 0.0
            n_run = 0
            if step % args.eval_every == 0 or step == args.steps:
                vae.eval()
                rec_["heldout_psnr_db"] = psnr_table(layout_reconstructions(vae, h_now[probe], h_next[probe], layout),
                                                     layout)["psnr_db"]
                vae.train()
            history.append(rec_)
            with open(hist_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec_) + "\n")
            if bar is None:
                print(f"[vae] {json.dumps(rec_)}", file=sys.stderr, flush=True)
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            save_checkpoint(vae, vae_cfg, out / "checkpoint", step, history[-1] if history else {})
    if bar is not None:
        bar.close()
    t_train = time.monotonic() - t_train
    vae.eval()
    t_eval = time.monotonic()
    recs = layout_reconstructions(vae, h_now, h_next, layout)
    held = psnr_table(recs, layout)
    tr_idx = torch.linspace(0, frames.shape[0] - 1, min(16, frames.shape[0])).round().long()
    train_psnr = psnr_table(layout_reconstructions(vae, frames[tr_idx], frames[tr_idx], layout), layout)
    with torch.no_grad():  # latent scale after the Wan normalisation (what the DiT sees before any latent norm)
        m, s = _wan_stats()
        mu = (vae.encode(layout_video(h_now[probe], h_next[probe], layout)).latent_dist.mean - m) / s
        img_frames = [k for k, sl in enumerate(layout.slots) if sl.kind == "image"]
        mu = mu[:, :, img_frames]
    t_eval = time.monotonic() - t_eval
    # outputs (weights first; the report last, so a report always describes weights on disk)
    save_vae_files(vae, vae_cfg, out)
    plot_history(history, out / "loss.png")
    png = save_reconstruction_png(recs, layout, out / "reconstructions.png", h_keys)
    report = {
        "what": "AutoencoderKLWan trained on the policy's preprocessed sim frames (cosmos_policy_training.vae)",
        "measured": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPU cores, {'GPU' if torch.cuda.is_available() else 'no GPU'}, "
                   f"{platform.python_version()}, torch {torch.__version__}, {args.threads} torch threads",
        "command": "python -m cosmos_policy_training.vae " + " ".join(shlex.quote(a) for a in args.argv),
        "vae": dataclasses.asdict(vae_cfg), "parameters": n_params,
        "image": image_cfg.to_dict(), "layout": layout.name,
        "psnr": {"range": "uint8 [0, 255], mean of per-image PSNR",
                 "how": "whole 41-frame layout video (current images at t, future at min(t + 50, T - 1)) encoded "
                        "(posterior mean) and decoded; each image slot's first raw frame against its input",
                 "heldout": held, "train_frames": train_psnr},
        "latents_after_wan_norm": {"mean": round(float(mu.mean()), 4), "std": round(float(mu.std()), 4)},
        "steps": step, "stopped_by": stopped, "init": init, "batch": args.batch, "clips": args.clips,
        "clip_frames": int(layout_video(frames[:1], frames[:1], layout, clip_frames).shape[2]),
        "sample_posterior": bool(args.sample_posterior),
        "loss": {"l1": "mean |x - x_rec| on [-1, 1]", "mse": "mean (x - x_rec)^2", "kl_weight": args.kl_weight,
                 "hard_pixels": {"weight": args.hard_weight, "fraction": args.hard_fraction,
                                 "what": "mean |x - x_rec| over the worst fraction of each frame's pixels"},
                 "final": {k: history[-1][k] for k in ("l1", "mse", "kl") if history and k in history[-1]}},
        "optim": {"lr": args.lr, "warmup": args.warmup, "final_factor": args.final_factor,
                  "weight_decay": args.weight_decay, "betas": [0.9, 0.99], "grad_clip": 1.0, "seed": args.seed},
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1), "eval": round(t_eval, 1),
                    "total": round(time.monotonic() - t_start, 1)},
        "data": {"episodes": [str(a) for a in args.episodes], "train_files": len(train_files),
                 "heldout_files": [f.name for f in held_files], "frame_stride": args.frame_stride,
                 "train_steps_frames": int(frames.shape[0]), "train_images": int(frames.shape[0] * frames.shape[1]),
                 "train_clips": int(pairs.shape[0]),
                 "heldout_samples": int(h_now.shape[0]), "heldout_stride": args.eval_stride},
        "outputs": [*FILES, "history.jsonl", "loss.png"] + (["reconstructions.png"] if png else []),
    }
    (out / "vae_report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def save_checkpoint(vae, vae_cfg: VAEConfig, folder: Path, step: int, last: dict) -> None:
    """The weights so far (a long CPU run that is stopped keeps its progress): ``folder`` holds a VAE folder of
    this module (``vae.safetensors``, ``vae_config.json`` and a short ``vae_report.json``), ``--init`` continues
    from it. Written to a temporary folder first, then swapped in, so a kill mid-write leaves the previous one."""
    import shutil

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_vae_files(vae, vae_cfg, tmp)
    (tmp / "vae_report.json").write_text(json.dumps({"what": "periodic checkpoint of a training run", "steps": step,
                                                     "last_log": last}, indent=1), encoding="utf-8")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def plot_history(history: Sequence[dict], path: Path) -> Optional[Path]:
    """Training L1 / MSE and held-out PSNR against steps -> PNG (None without matplotlib or history)."""
    if not history:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [h["step"] for h in history]
    for k in ("l1", "mse"):
        a1.plot(steps, [h[k] for h in history], label=k)
    a1.set_yscale("log")
    a1.set_xlabel("step")
    a1.set_title("training reconstruction loss ([-1, 1])")
    a1.legend()
    ev = [h for h in history if "heldout_psnr_db" in h]
    a2.plot([h["step"] for h in ev], [h["heldout_psnr_db"] for h in ev], "o-")
    a2.set_xlabel("step")
    a2.set_title("held-out PSNR (dB, uint8), probe samples")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_reconstruction_png(recs, layout: LatentLayout, path: Path, keys: Sequence[Tuple[str, int]],
                            rows: int = 4) -> Optional[Path]:
    """Held-out frames: per row one sample, per camera its real current image beside the reconstruction."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = recs[(layout.cameras[0], "current")][0].shape[0]
    pick = np.linspace(0, n - 1, min(rows, n)).round().astype(int)
    cols = 2 * len(layout.cameras)
    fig, axes = plt.subplots(len(pick), cols, figsize=(1.7 * cols, 1.8 * len(pick)), squeeze=False)
    for r, i in enumerate(pick):
        for c, cam in enumerate(layout.cameras):
            real, got = recs[(cam, "current")]
            for j, (img, label) in enumerate(((real[i], "real"), (got[i], "VAE"))):
                ax = axes[r, 2 * c + j]
                ax.imshow(img, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{cam}\n{label}", fontsize=7)
                if c == 0 and j == 0:
                    ax.set_ylabel(f"{keys[i][0]}\nt={keys[i][1]}", fontsize=6)
    fig.suptitle("held-out frames: real | VAE reconstruction (in the layout video)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    parser.add_argument("--episodes", nargs="+", required=True, help="episode files or folders (*.hdf5)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--heldout", type=int, default=d["heldout"], help="hold out the last N files for evaluation")
    parser.add_argument("--heldout-files", nargs="*", default=None, help="hold out these files (names) instead")
    parser.add_argument("--layout", default="aloha")
    parser.add_argument("--image-size", type=int, default=None, help=f"network image size (default {d['image_size']})")
    parser.add_argument("--roi", action="append", default=[], metavar="CAMERA=TOP,LEFT,HEIGHT,WIDTH",
                        help="as `cosmos-policy train --roi` (default: the sim recipe's cam_high ROI)")
    parser.add_argument("--whole-frames", action="store_true", help="no default cam_high ROI")
    parser.add_argument("--like", default=None, help="take the image preprocessing from this checkpoint (our format)")
    parser.add_argument("--base-dim", type=int, default=d["base_dim"])
    parser.add_argument("--num-res-blocks", type=int, default=d["num_res_blocks"])
    parser.add_argument("--steps", type=int, default=d["steps"])
    parser.add_argument("--init", default=None,
                        help="start from the weights of a folder this module wrote (its --out, or --out/checkpoint of "
                             "a stopped run); their config replaces --base-dim / --num-res-blocks")
    parser.add_argument("--save-every", type=int, default=d["save_every"],
                        help="write the weights so far to --out/checkpoint every N steps (0: never)")
    parser.add_argument("--batch", type=int, default=d["batch"], help="clips per step (3 images each for ALOHA)")
    parser.add_argument("--lr", type=float, default=d["lr"])
    parser.add_argument("--warmup", type=int, default=d["warmup"])
    parser.add_argument("--final-factor", type=float, default=d["final_factor"], help="lr factor at the last step")
    parser.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    parser.add_argument("--kl-weight", type=float, default=d["kl_weight"])
    parser.add_argument("--hard-weight", type=float, default=d["hard_weight"],
                        help="weight of an extra L1 term over the worst --hard-fraction of each frame's pixels (small "
                             "objects the decoder paints as background; 0: off)")
    parser.add_argument("--hard-fraction", type=float, default=d["hard_fraction"],
                        help="fraction of a frame's pixels the --hard-weight term averages (default 0.02: a 7x7 cube "
                             "in a 64x64 frame is 1.2%%)")
    parser.add_argument("--sample-posterior", action="store_true",
                        help="decode a posterior sample instead of its mean in training (the freshly initialised "
                             "posterior has std ~1 against a mean ~0.01: the noise drowned the picture for hundreds "
                             "of steps, measured 2026-12-06: 16 dB held-out after 300 steps)")
    parser.add_argument("--clips", choices=("full", "prefix"), default=d["clips"],
                        help="training clips: full, the whole 41-frame layout video of a sample (current images at t, "
                             "future at t + 50; the future slots the world model's predictions decode from are "
                             "trained too), or prefix, the policy's 17-frame encoding prefix only (2.4x cheaper; the "
                             "future slots stay untrained: 15.7 / 11.5 / 14.6 dB there against 31.1 / 19.1 / 20.6 in "
                             "the current slots after 924 steps at 16 px, measured 2026-12-06)")
    parser.add_argument("--frame-stride", type=int, default=d["frame_stride"], help="every N-th step of a training file")
    parser.add_argument("--eval-stride", type=int, default=d["eval_stride"], help="every N-th step of a held-out file")
    parser.add_argument("--eval-every", type=int, default=d["eval_every"])
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--threads", type=int, default=d["threads"], help="torch CPU threads (1 on a busy machine)")
    parser.add_argument("--max-minutes", type=float, default=d["max_minutes"],
                        help="stop training after this many minutes (0: no limit); the report says which ended it")
    parser.add_argument("--no-progress", action="store_true")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosmos_policy_training.vae", description=__doc__.splitlines()[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    args.image_size_given = args.image_size is not None
    if args.image_size is None:
        args.image_size = DEFAULTS["image_size"]
    for name in ("frame_stride", "eval_stride", "eval_every", "log_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    report = train(args)
    print(json.dumps({"out": str(args.out), "steps": report["steps"], "stopped_by": report["stopped_by"],
                      "heldout_psnr_db": report["psnr"]["heldout"], "seconds": report["seconds"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
