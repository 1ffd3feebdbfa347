"""Benchmark: the world model's predicted future (images and proprio) against what happened, on held-out episodes.

At sample steps t of held-out episode files (25 Hz; default: scripted expert demos of scene seeds 1000.., which no
phase of the embedded checkpoint trained on), the policy runs its full inference (``CosmosPolicy.infer``: action
chunk, future proprio, future images decoded by its VAE, the released deploy's seed 195). Its future is the state at
``t' = min(t + H, T - 1)`` (H = the chunk horizon, 50 ticks = 2 s: the future slots of the latent layout hold the
state after the chunk; the same moment ``make demo``'s predicted_vs_real.png pairs). Compared against:

- images: the real frame at t' after the same preprocessing as the policy's input (squash, ROI, resize, centre
  crop), PSNR (dB, uint8 [0, 255]) and SSIM (``skimage.metrics.structural_similarity``, RGB, data range 255) per
  camera, means over samples;
- proprio: MAE over the 12 arm joints in radians (robot units, un-normalised); the grippers (normalised 0..1) apart;
- baseline "copy current": the current frame / proprio at t as the prediction (nothing moves).
``vae_recon_psnr``: the policy's VAE alone on the same samples (the whole layout video encoded and decoded, every
image slot against its input; `cosmos_policy_training.vae`): the ceiling the decoded predictions can reach.

Schema of ``--json`` (`make bench` section world_model):

    {"episodes": int, "cameras": [{"camera": str, "psnr_model": float, "psnr_copy_current": float,
     "ssim_model": float, "ssim_copy_current": float}], "proprio_mae_model": float,
     "proprio_mae_copy_current": float, "vae_recon_psnr": float,
     "gripper_mae_model": float, "gripper_mae_copy_current": float, "samples": int, "sample_steps": [int],
     "horizon_ticks": int, "seed": int, "episode_source": str, "checkpoint": str, "policy_id": str,
     "vae": str (trained VAE or random frozen, from the checkpoint's recipe.json), "wall_s": float}

    python bench/world_model.py [--policy checkpoints/sim_transfer_cube] [--episodes-dir DIR | --episodes 4
        --seed-start 1000] [--steps 0 50 100] [--json F]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from cosmos_policy_ros.demo import EMBEDDED_CHECKPOINT  # noqa: E402 - the demo's default policy

ROOT = Path(__file__).resolve().parents[1]


def ssim_u8(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W, 3) uint8 RGB images (scikit-image, channels separately then averaged)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def vae_description(checkpoint: Path) -> str:
    """'trained (PSNR ...)' or 'random frozen' from the checkpoint's recipe.json chain (the demo's reading of it)."""
    from cosmos_policy_ros.demo import trained_vae

    if not (checkpoint / "recipe.json").is_file():
        return "unknown (no recipe.json)"
    v = trained_vae(str(checkpoint))
    if v is None:
        return "randomly initialised, frozen"
    psnr = v.get("heldout_psnr_db")
    return "trained" + (f" (held-out reconstruction {psnr:.1f} dB)" if isinstance(psnr, (int, float)) else "")


def evaluate(policy, files: Sequence[Path], steps: Sequence[int], seed: Optional[int] = None,
             progress: bool = True) -> dict:
    """The figures of the schema (without the run metadata) for ``policy`` on episode ``files``."""
    import torch

    from cosmos_policy_ros.core.images import preprocess_batch
    from cosmos_policy_ros.core.robot import ARM_INDICES
    from cosmos_policy_ros.core.types import Observation
    from cosmos_policy_training.episodes import read_episode
    from cosmos_policy_training.vae import layout_reconstructions, psnr_table, psnr_u8

    lay = policy.layout
    cams = list(lay.cameras)
    arms = list(ARM_INDICES)
    grips = [i for i in range(lay.proprio_dim) if i not in arms]
    seed = policy.default_seed if seed is None else int(seed)
    per_cam = {c: {"psnr_model": [], "psnr_copy_current": [], "ssim_model": [], "ssim_copy_current": []} for c in cams}
    mae = {"model": [], "copy": [], "g_model": [], "g_copy": []}
    now_all, next_all, used = [], [], []

    def prep(frame: np.ndarray, cam: str) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
        return preprocess_batch(x, policy.image, cam)[0].permute(1, 2, 0).numpy()

    for f in files:
        with __import__("h5py").File(f, "r") as h:
            T = int(h["action"].shape[0])
        ts = [t for t in steps if t < T]
        if not ts:
            continue
        fut = {t: min(t + lay.horizon, T - 1) for t in ts}
        ep = read_episode(f, cameras=cams, steps=sorted(set(ts) | set(fut.values())))
        task = ep.task if ep.task in policy.embeddings else policy.instructions[0]
        for t in ts:
            tn = fut[t]
            obs = Observation(images={c: ep.images[c][t] for c in cams}, proprio=np.asarray(ep.qpos[t], np.float32),
                              instruction=task)
            out = policy.infer(obs, seed=seed, decode_images=True)
            cur = {c: prep(ep.images[c][t], c) for c in cams}
            real = {c: prep(ep.images[c][tn], c) for c in cams}
            for c in cams:
                pred = out.future_images[c]
                per_cam[c]["psnr_model"].append(psnr_u8(pred, real[c]))
                per_cam[c]["psnr_copy_current"].append(psnr_u8(cur[c], real[c]))
                per_cam[c]["ssim_model"].append(ssim_u8(pred, real[c]))
                per_cam[c]["ssim_copy_current"].append(ssim_u8(cur[c], real[c]))
            q_now, q_next = np.asarray(ep.qpos[t], np.float64), np.asarray(ep.qpos[tn], np.float64)
            fp = np.asarray(out.future_proprio, np.float64)
            mae["model"].append(np.abs(fp[arms] - q_next[arms]).mean())
            mae["copy"].append(np.abs(q_now[arms] - q_next[arms]).mean())
            mae["g_model"].append(np.abs(fp[grips] - q_next[grips]).mean())
            mae["g_copy"].append(np.abs(q_now[grips] - q_next[grips]).mean())
            now_all.append(torch.stack([torch.from_numpy(cur[c]).permute(2, 0, 1) for c in cams]))
            next_all.append(torch.stack([torch.from_numpy(real[c]).permute(2, 0, 1) for c in cams]))
            used.append((f.name, t))
            if progress:
                print(f"{f.name} t={t}->{tn}: " + ", ".join(
                    f"{c} {per_cam[c]['psnr_model'][-1]:.1f}/{per_cam[c]['psnr_copy_current'][-1]:.1f} dB" for c in cams)
                    + f"; arms {mae['model'][-1]:.3f}/{mae['copy'][-1]:.3f} rad (model/copy)", file=sys.stderr, flush=True)
        del ep
    if not used:
        raise SystemExit(f"world_model: no sample steps {list(steps)} inside the episodes {[str(f) for f in files]}")
    recs = layout_reconstructions(policy.network.vae.float(), torch.stack(now_all), torch.stack(next_all), lay)
    mean = lambda v: round(float(np.mean(v)), 4)  # noqa: E731
    return {"episodes": len({k for k, _ in used}),
            "cameras": [{"camera": c, **{k: mean(v) for k, v in per_cam[c].items()}} for c in cams],
            "proprio_mae_model": mean(mae["model"]), "proprio_mae_copy_current": mean(mae["copy"]),
            "vae_recon_psnr": psnr_table(recs, lay)["psnr_db"],
            "gripper_mae_model": mean(mae["g_model"]), "gripper_mae_copy_current": mean(mae["g_copy"]),
            "samples": len(used), "sample_steps": sorted({t for _, t in used}), "horizon_ticks": lay.horizon,
            "seed": seed}


def render(d: Dict) -> str:
    """The BENCHMARKS.md table of a result (bench/render.py calls it)."""
    lines = [f"Checkpoint `{d.get('checkpoint', '?')}` ({d.get('policy_id', '?')}; VAE: {d.get('vae', '?')}), "
             f"{d['episodes']} held-out episodes ({d.get('episode_source', '?')}), sample steps "
             f"{d.get('sample_steps', '?')}, {d.get('samples', '?')} samples: the predicted state "
             f"{d.get('horizon_ticks', 50)} ticks ahead (full inference, seed {d.get('seed', '?')}) against the real "
             "one, beside *copy current* (the current frame / proprio as the prediction). PSNR in dB on uint8 "
             "images, SSIM from scikit-image, both after the policy's preprocessing; higher is better.", "",
             "| camera | PSNR model | PSNR copy current | SSIM model | SSIM copy current |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for c in d["cameras"]:
        lines.append(f"| {c['camera']} | {c['psnr_model']:.2f} | {c['psnr_copy_current']:.2f} | "
                     f"{c['ssim_model']:.3f} | {c['ssim_copy_current']:.3f} |")
    lines += ["", "| proprio | model | copy current |", "| --- | ---: | ---: |",
              f"| arm joints MAE (rad) | {d['proprio_mae_model']:.4f} | {d['proprio_mae_copy_current']:.4f} |"]
    if d.get("gripper_mae_model") is not None:
        lines.append(f"| grippers MAE (normalised 0..1) | {d['gripper_mae_model']:.4f} | "
                     f"{d['gripper_mae_copy_current']:.4f} |")
    lines += ["", f"The policy's VAE alone on the same frames (encode + decode, the ceiling of the decoded "
                  f"predictions): {d['vae_recon_psnr']:.2f} dB."]
    if d.get("wall_s") is not None:
        lines[-1] += f" Wall time of this benchmark: {d['wall_s']:.0f} s."
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / EMBEDDED_CHECKPOINT))
    p.add_argument("--episodes-dir", default=None,
                   help="held-out episode files (*.hdf5) to evaluate on; default: generate --episodes scripted demos "
                        "of scenes --seed-start.. (240x320 renders, cube at rest after 25 settle steps)")
    p.add_argument("--episodes", type=int, default=4, help="episodes to generate / take from --episodes-dir")
    p.add_argument("--seed-start", type=int, default=1000, help="scene seeds of generated episodes (1000..: held out)")
    p.add_argument("--steps", type=int, nargs="+", default=[0, 50, 100], help="sample steps t of every episode")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the policy's, 195)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the figures here (schema: this file's docstring)")
    args = p.parse_args(argv)

    import torch

    from cosmos_policy_ros.core.policy import load_policy

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    policy = load_policy(args.policy)
    with tempfile.TemporaryDirectory() as tmp:
        if args.episodes_dir:
            src = Path(args.episodes_dir)
            files = sorted(src.glob("*.hdf5"), key=lambda q: [int(s) if s.isdigit() else s for s in
                                                              __import__("re").split(r"(\d+)", q.name)])
            if not files:
                raise SystemExit(f"--episodes-dir {src}: no *.hdf5 episode files")
            files = files[: args.episodes]
            source = f"{src} ({', '.join(f.name for f in files)})"
        else:
            from cosmos_policy_ros.sim.generate_demos import generate
            from cosmos_policy_training.rollouts import DEFAULT_IMAGE_SIZE

            print(f"generating {args.episodes} expert demos (seeds {args.seed_start}..) into {tmp}", file=sys.stderr,
                  flush=True)
            files = generate("transfer_cube", args.episodes, Path(tmp), image_size=DEFAULT_IMAGE_SIZE,
                             seed_start=args.seed_start, progress=False, settle_steps=25)
            source = (f"scripted expert demos, scene seeds {args.seed_start}..{args.seed_start + args.episodes - 1}, "
                      f"{DEFAULT_IMAGE_SIZE[0]}x{DEFAULT_IMAGE_SIZE[1]} renders")
        result = evaluate(policy, files, args.steps, seed=args.seed)
    result.update({"episode_source": source, "checkpoint": Path(args.policy).name, "policy_id": policy.policy_id,
                   "vae": vae_description(Path(args.policy)), "wall_s": round(time.perf_counter() - t0, 1)})
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # PYTHONSAFEPATH=1 leaves the script's folder out
    import render as render_mod

    if args.json:
        render_mod.write_json(Path(args.json), result)
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
