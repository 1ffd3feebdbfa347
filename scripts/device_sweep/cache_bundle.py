"""Train the sim recipe on a lent GPU machine from a bundle of its latent cache (developer tool).

The device machine receives at most 64 MiB and has no MuJoCo demos, so the recipe cannot run there as is. This
script packs what the Trainer reads from the demos and the latent cache into one small bundle, then runs the
real recipe -> ``cosmos-policy train`` path on the device with the dataset and the cache read from the bundle:

    # here (after the recipe has filled data/latent_cache at stride 4 from data/sim_demos, 100 episodes):
    python scripts/device_sweep/cache_bundle.py export .devdata/exp8 8      # ~33 MB at stride 8
    # on the device (see sweep.sh; .devdata and .whl carried):
    python scripts/device_sweep/cache_bundle.py train .devdata/exp8 -- --out O --run-dir R --stride 8 --device cuda ...

The bundle holds the episodes' normalised proprio / actions / values and the cached Wan latents of the image
frames, stored as fp16 in per-element standardised units and restored to float32 before training (max
restore error ~1e-4 Wan units). Images are not carried: the cache replaces them. Checkpoints come out in our
format, so they are evaluated here with ``diagnose --t0-only`` and ``bench/policy_success.py``.
"""
import json, sys, time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cosmos_policy_ros.core.layout import ALOHA

IMG = [i for i, slot in enumerate(ALOHA.slots) if slot.kind == "image"]  # the frames the bundle stores


def build(recipe_argv, files):
    """(trainer, dataset) of the recipe's `cosmos-policy train` arguments, as the recipe itself builds them."""
    import argparse
    from cosmos_policy_training import cli as train_cli
    from cosmos_policy_training.recipes import sim_transfer_cube as R
    p = argparse.ArgumentParser(); R.add_arguments(p)
    tp = argparse.ArgumentParser(); train_cli.add_arguments(tp)
    return train_cli.build_from_args(tp.parse_args(R.train_argv(p.parse_args(recipe_argv), files)))


def patch_no_images():
    import cosmos_policy_training.dataset as D
    real = D.read_episode
    D.read_episode = lambda p, **kw: real(p, load_images=False)
    D.preprocess_episode_images = lambda ep, cams, cfg, aug, chunk=64: torch.zeros(
        (ep.num_steps, len(cams), 3, 1, 1), dtype=torch.uint8)


def export(out, stride):
    from cosmos_policy_training.dataset import latent_cache_key
    patch_no_images()
    files = [Path(f"data/sim_demos/episode_{i}.hdf5") for i in range(100)]
    trainer, ds = build(["--out", "/tmp/x", "--stride", str(stride)], files)
    # the stride-4 cache of the recipe (same VAE, layout, preprocessing): pick its t % stride == 0 rows
    c4 = {}
    for e, ep in enumerate(ds.episodes):
        key = latent_cache_key(trainer.net.vae, ds.layout, trainer.policy.image, ep.path, 4)
        lat = load_file(f"data/latent_cache/{Path(ep.path).stem}-{key}.safetensors")["latents"]
        ts4 = list(range(0, ep.num_steps, 4))
        for j, t in enumerate(ts4):
            if t % stride == 0:
                c4[(e, t)] = lat[j]
    keys = sorted(c4)
    z = torch.stack([c4[k] for k in keys])  # (N, 16, 11, 8, 8)
    mean, std = z.mean(0), z.std(0).clamp_min(1e-6)
    zn = ((z - mean) / std)[:, :, IMG].half()
    t = {"zn": zn, "mean": mean, "std": std, "template": z[0].clone(), "keys": torch.tensor(keys)}
    meta = {"stats": ds.stats.to_dict(), "episodes": []}
    for e, ep in enumerate(ds.episodes):
        for f in ("proprio", "actions", "values"):
            t[f"e{e}/{f}"] = getattr(ep, f).contiguous()
        if ep.action_ref is not None:
            t[f"e{e}/action_ref"] = ep.action_ref.contiguous()
        meta["episodes"].append({"path": ep.path, "kind": ep.kind, "task": ep.task, "score": ep.score})
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in t.items()}, str(out / "data.safetensors"))
    (out / "meta.json").write_text(json.dumps(meta))
    err = ((zn.float() * std[:, IMG] + mean[:, IMG]) - z[:, :, IMG]).abs().max().item()
    print("exported", len(keys), "samples; max restore error", err)


def train(exp, recipe_argv):
    import cosmos_policy_training.dataset as D
    from cosmos_policy_training import cli as train_cli
    from cosmos_policy_ros.core.codec import DatasetStats
    exp = Path(exp)
    t = load_file(str(exp / "data.safetensors"))
    meta = json.loads((exp / "meta.json").read_text())
    stats = DatasetStats.from_dict(meta["stats"])
    z = t["zn"].float() * t["std"][:, IMG] + t["mean"][:, IMG]  # (N, 16, 6, 8, 8)
    full = t["template"][None].repeat(z.shape[0], 1, 1, 1, 1)
    full[:, :, IMG] = z
    lat = {tuple(int(v) for v in k): full[i] for i, k in enumerate(t["keys"])}

    def from_paths(cls, demos, layout, image_cfg, cfg=None, rollouts=(), stats_=None, kind_fractions=None,
                   progress=False, relative_actions=(), **kw):
        eps = []
        for e, m in enumerate(meta["episodes"]):
            T = t[f"e{e}/proprio"].shape[0]
            eps.append(D.EpisodeData(path=m["path"], kind=m["kind"], task=m["task"], score=m["score"],
                                     proprio=t[f"e{e}/proprio"], actions=t[f"e{e}/actions"], values=t[f"e{e}/values"],
                                     images=torch.zeros((T, len(layout.cameras), 3, 1, 1), dtype=torch.uint8),
                                     action_ref=t.get(f"e{e}/action_ref")))
        return cls(eps, layout, stats, cfg, kind_fractions)

    D.EpisodeDataset.from_paths = classmethod(from_paths)

    def cache_init(self, dataset, network, image_cfg, **kw):
        self.dataset = dataset
        self.latents = {k: v for k, v in lat.items() if k[1] % dataset.cfg.stride == 0}
    D.LatentCache.__init__ = cache_init
    import cosmos_policy_training.trainer as TR
    TR.LatentCache = D.LatentCache
    train_cli.episode_files = lambda items: [Path(i) for i in items]
    trainer, ds = build(recipe_argv, [Path(m["path"]) for m in meta["episodes"]])
    run_dir = trainer.out
    print(f"{run_dir}: {len(ds)} samples", flush=True)
    t0 = time.time()
    hist = trainer.train()
    print(f"{run_dir}: trained {trainer.step} steps in {time.time() - t0:.0f}s; last {hist[-1] if hist else None}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "export":
        export(sys.argv[2], int(sys.argv[3]))
    else:
        train(sys.argv[2], sys.argv[sys.argv.index("--") + 1:])
