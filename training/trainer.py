"""The trainer: AdamW + the reference's schedule, bf16 autocast on GPU, DDP / FSDP under torchrun,
bit-exact resume, checkpoints that :func:`cosmos_policy_ros.core.policy.load_policy` loads.

Determinism by construction: everything random in step k (which samples form the global batch, the
objective of each position, augmentation, sigma, noise) is a pure function of ``(seed, k, position)``.
So a resumed run needs only the weights, the optimiser state and k to continue bit-exactly, and N ranks
that each take 1/N of the global batch see exactly the samples one process would (the loss trajectories
then agree up to floating-point reduction order).

Run directory layout::

    <out>/checkpoints/step_<k>/   our checkpoint format (config.json, safetensors, stats JSON)
                                  + training_state.pt (optimiser state, step; torch.save of tensors and
                                  plain values, loaded with weights_only=True) + train_config.json
    <out>/final/                  the last weights in our format (what a robot loads)
    <out>/history.jsonl           one JSON line per logged step (loss, lr, per-modality latent L1)
    <out>/loss.png                loss curves (matplotlib, Agg)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist

from cosmos_policy_ros.core.backbone import get_backbone
from cosmos_policy_ros.core.checkpoint import CheckpointData, load_checkpoint, save_checkpoint
from cosmos_policy_ros.core.policy import CosmosPolicy

from .dataset import EpisodeDataset, LatentCache, build_video, inject_vectors, latent_element_stats
from .objectives import (OBJECTIVES, ObjectiveConfig, condition_masks, denoising_loss, frame_weights,
                         modality_frames, modality_l1, objectives_for_batch, sample_sigma)

DISTRIBUTED = ("auto", "none", "ddp", "fsdp")
PRECISIONS = ("auto", "float32", "bfloat16")
LATENT_NORMS = ("wan", "data", "scene")
STATE_FILE = "training_state.pt"
TRAIN_CONFIG_FILE = "train_config.json"


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule: linear warm-up to lr over ``warmup_steps``, linear decay to
    ``decay_factor`` x lr at ``decay_steps``, then ``final_factor`` x lr (reference: 2K, 20K, 0.3, 0.06)."""

    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: Tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    grad_clip: float = 1.0
    warmup_steps: int = 2000
    decay_steps: int = 20000
    decay_factor: float = 0.3
    final_factor: float = 0.06

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if self.lr <= 0 or self.weight_decay < 0 or self.eps <= 0:
            raise ValueError(f"optim: expected lr > 0, weight_decay >= 0, eps > 0, got {self.lr}, {self.weight_decay}, {self.eps}")
        if self.warmup_steps < 0 or self.decay_steps < self.warmup_steps:
            raise ValueError(f"optim: expected 0 <= warmup_steps <= decay_steps, got {self.warmup_steps}, {self.decay_steps}")
        if self.grad_clip < 0:
            raise ValueError(f"optim grad_clip: expected >= 0 (0 = off), got {self.grad_clip}")


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """Multiplier of ``cfg.lr`` for 0-based ``step``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if step < cfg.decay_steps:
        frac = (step - cfg.warmup_steps) / max(1, cfg.decay_steps - cfg.warmup_steps)
        return 1.0 + (cfg.decay_factor - 1.0) * frac
    return cfg.final_factor


@dataclass
class TrainConfig:
    """One training run. ``global_batch`` is split evenly over the ranks (it must divide)."""

    steps: int = 50000
    global_batch: int = 200
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2
    precision: str = "auto"  # auto: bf16 autocast on CUDA, float32 on CPU
    grad_checkpointing: bool = False
    distributed: str = "auto"  # auto: ddp when WORLD_SIZE > 1
    train_vae: bool = False  # the reference fine-tunes only the DiT
    cache_latents: bool = False  # needs augmentation off and a frozen VAE
    cache_dir: Optional[str] = None
    # "wan": latents normalised with the Wan 2.1 statistics only (right for the pretrained VAE); "data": then
    # standardise every image latent element with statistics measured on the training samples (needed by a
    # randomly initialised VAE, whose image signal is otherwise ~1% of the latent; see docs/training.md)
    # "scene": as "data", but the current image frames are standardised with the statistics of the episodes'
    # first steps (what tells starting scenes apart; see dataset.latent_element_stats)
    latent_norm: str = "wan"
    latent_norm_samples: int = 2048  # samples the "data" statistics are measured on without a latent cache
    encode_batch: int = 8
    progress: bool = True
    plot: bool = True

    def __post_init__(self):
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        if isinstance(self.objective, dict):
            self.objective = ObjectiveConfig(**self.objective)
        if self.steps < 1 or self.global_batch < 1:
            raise ValueError(f"train: expected steps >= 1 and global_batch >= 1, got {self.steps}, {self.global_batch}")
        if self.log_every < 1 or self.save_every < 1 or self.encode_batch < 1:
            raise ValueError("train: expected log_every, save_every, encode_batch >= 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.distributed not in DISTRIBUTED:
            raise ValueError(f"train distributed: expected one of {DISTRIBUTED}, got {self.distributed!r}")
        if self.train_vae and self.cache_latents:
            raise ValueError("train: cache_latents needs a frozen VAE (train_vae=False)")
        if self.latent_norm not in LATENT_NORMS:
            raise ValueError(f"train latent_norm: expected one of {LATENT_NORMS}, got {self.latent_norm!r}")
        if self.latent_norm != "wan" and self.train_vae:
            raise ValueError(f"train: latent_norm {self.latent_norm!r} needs a frozen VAE (statistics are measured once)")
        if self.latent_norm_samples < 1:
            raise ValueError(f"train latent_norm_samples: expected >= 1, got {self.latent_norm_samples}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---- distributed helpers -------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    mode: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(mode: str = "auto", device: Optional[Union[str, torch.device]] = None) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "--device cuda": this rank's GPU (set_device needs an index)
        device = torch.device(f"cuda:{local}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if mode == "auto":
        mode = "ddp" if world > 1 else "none"
    if mode != "none" and world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if mode == "none" and world > 1:
        raise ValueError(f"distributed='none' but WORLD_SIZE={world}: use ddp or fsdp under torchrun")
    return DistInfo(rank=rank, world=world if mode != "none" else 1, local_rank=local, device=device, mode=mode)


def _mix(*xs: int) -> int:
    """A 63-bit seed from integers (SeedSequence: well mixed, platform independent)."""
    return int(np.random.SeedSequence([int(x) & 0xFFFFFFFF for x in xs]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _wrap(module: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    if info.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(module, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if info.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for block in getattr(module, "transformer_blocks", []):
            fully_shard(block)
        fully_shard(module)
        return module
    return module


def _state_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


class Trainer:
    """Trains ``policy.network`` (its transformer; the VAE too with ``train_vae``) on ``dataset``.

    The policy carries layout, stats (must be the dataset's), text embeddings (one per task of the
    dataset), sampler and image settings; they are saved with every checkpoint.
    """

    def __init__(self, policy: CosmosPolicy, dataset: EpisodeDataset, cfg: TrainConfig, out_dir: Union[str, Path],
                 device: Optional[Union[str, torch.device]] = None):
        self.cfg = cfg
        self.policy = policy
        self.dataset = dataset
        self.layout = policy.layout
        self.out = Path(out_dir)
        missing = [t for t in dataset.tasks if t not in policy.embeddings]
        if missing:
            raise ValueError(f"no text embedding for tasks {missing}; known: {policy.instructions}")
        if not (np.allclose(dataset.stats.actions_min, policy.stats.actions_min)
                and np.allclose(dataset.stats.actions_max, policy.stats.actions_max)
                and np.allclose(dataset.stats.proprio_min, policy.stats.proprio_min)
                and np.allclose(dataset.stats.proprio_max, policy.stats.proprio_max)):
            raise ValueError("the dataset was normalised with other statistics than the policy's")
        backbone = get_backbone(policy.network.cfg.backbone)
        want = backbone.objective.get("formulation", "edm")
        if cfg.objective.formulation != want:
            raise ValueError(f"objective formulation {cfg.objective.formulation!r} does not match the network's backbone "
                             f"{backbone.name!r} ({want!r}); use ObjectiveConfig.for_backbone({backbone.name!r})")
        self.info = init_distributed(cfg.distributed, device)
        if cfg.global_batch % self.info.world:
            raise ValueError(f"global_batch {cfg.global_batch} is not divisible by the {self.info.world} ranks")
        self.local_batch = cfg.global_batch // self.info.world
        net = policy.network
        net.to(self.info.device)
        net.latents_mean = net.latents_mean.to(self.info.device)
        net.latents_std = net.latents_std.to(self.info.device)
        self.net = net
        self.raw_transformer = net.transformer
        net.vae.requires_grad_(cfg.train_vae)
        if cfg.grad_checkpointing:
            self.raw_transformer.enable_gradient_checkpointing()
        self.use_bf16 = cfg.precision == "bfloat16" or (cfg.precision == "auto" and self.info.device.type == "cuda")
        self.model = _wrap(self.raw_transformer, self.info)  # what the optimiser and forward see
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.train_vae:
            params += list(net.vae.parameters())
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.step = 0
        self.cache: Optional[LatentCache] = None
        self.text = {k: v.to(self.info.device) for k, v in policy.embeddings.items()}
        self._stat_keys = ["loss"] + [f"{o}/{m}" for o in OBJECTIVES for m in modality_frames(self.layout)]
        fw = frame_weights(self.layout, cfg.objective)  # constant over the run: None unless --action-weight
        self._frame_weights = None if fw is None else fw.to(self.info.device)

    # ---- data for one step ----------------------------------------------------------------------
    def batch_plan(self, step: int) -> Tuple[List[int], List[str]]:
        """Dataset indices and objectives of the whole global batch of ``step`` (same on every rank)."""
        g = torch.Generator().manual_seed(_mix(self.cfg.seed, step, 0x5EED))
        idx = torch.multinomial(self.dataset.weights, self.cfg.global_batch, replacement=True, generator=g).tolist()
        return idx, objectives_for_batch(self.cfg.global_batch, self.cfg.objective)

    def make_batch(self, step: int, positions: Sequence[int]):
        """x0 (B, 16, T, h, w), cond (B, T), sigma (B,), eps, text (B, L, D), objectives for the given
        global-batch positions of ``step``."""
        idx, objs = self.batch_plan(step)
        lay = self.layout
        fs = self.net.cfg.latent_frame_shape
        samples, sigmas, eps = [], [], []
        for p in positions:
            g = torch.Generator().manual_seed(_mix(self.cfg.seed, step, p))
            samples.append(self.dataset.sample(idx[p], g))
            sigmas.append(sample_sigma(g, self.cfg.objective, lay.num_frames))
            eps.append(torch.randn((fs[0], lay.num_frames, fs[1], fs[2]), generator=g))
        dev = self.info.device
        if self.cache is not None:
            lat = self.net.normalize_latents(self.cache.get([s.key for s in samples]).to(dev))
        else:
            chunks = []
            ctx = contextlib.nullcontext() if self.cfg.train_vae else torch.no_grad()
            with ctx:
                for s in range(0, len(samples), self.cfg.encode_batch):
                    chunks.append(self._encode(self._video(samples[s:s + self.cfg.encode_batch]).to(dev)))
            lat = torch.cat(chunks)
        stack = lambda name: torch.stack([getattr(s, name) for s in samples]).to(dev)  # noqa: E731
        x0 = inject_vectors(lat.float(), stack("proprio"), stack("actions"), stack("proprio_next"),
                            stack("value"), lay)
        # relabelled (DAgger) samples teach the policy only: their futures follow other actions than their labels
        objectives = ["policy" if s.policy_only else objs[p] for s, p in zip(samples, positions)]
        cond = condition_masks(objectives, lay, self.cfg.objective)
        drop = self.cfg.objective.proprio_dropout
        if drop > 0:  # drawn per global-batch position, so the batch does not depend on the rank layout
            for i, p in enumerate(positions):
                g = torch.Generator().manual_seed(_mix(self.cfg.seed, step, p, 0xD40F))
                if objectives[i] == "policy" and float(torch.rand((), generator=g)) < drop:
                    cond[i, lay.current_proprio_index] = False
        cond = cond.to(dev)
        text = torch.cat([self.text[s.task] for s in samples])
        return x0, cond, torch.tensor(sigmas, dtype=torch.float32, device=dev), torch.stack(eps).to(dev), text, objectives

    def _video(self, samples) -> torch.Tensor:
        """The raw (B, 3, F, S, S) video of un-injected samples (current and future images in their slots)."""
        return build_video(torch.stack([x.images_now for x in samples]),
                           torch.stack([x.images_next for x in samples]), self.layout)

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        if not self.cfg.train_vae:
            return self.net.encode(video)
        mu = self.net.vae.encode(video).latent_dist.mean  # differentiable path
        return self.net.normalize_latents((mu.float() - self.net.latents_mean) / self.net.latents_std)

    # ---- one optimisation step ------------------------------------------------------------------
    def train_step(self) -> Dict[str, float]:
        """Run step ``self.step`` and advance; returns the globally reduced statistics."""
        step = self.step
        r = self.info.rank
        positions = list(range(r * self.local_batch, (r + 1) * self.local_batch))
        x0, cond, sigma, eps, text, objectives = self.make_batch(step, positions)
        factor = lr_factor(step, self.cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.optim.lr * factor
        self.model.train()
        model = self.model

        def net_fn(x_in, c_noise, c):
            b, _, t, h, w = x_in.shape
            dt = next(self.raw_transformer.parameters()).dtype
            mask = c.to(dt)[:, None, :, None, None].expand(b, 1, t, h, w)
            pad = torch.zeros((b, 1, t, h, w), dtype=dt, device=x_in.device)
            hidden = torch.cat([x_in.to(dt), mask, pad], dim=1)  # (B, 18, T, h, w) as CosmosNetwork.forward
            ts = c_noise.to(torch.float32)[:, None, :, None, None]
            return model(hidden, ts, text.to(dt), fps=None, return_dict=False)[0]

        autocast = (torch.autocast(device_type=self.info.device.type, dtype=torch.bfloat16)
                    if self.use_bf16 else contextlib.nullcontext())
        with autocast:
            out = denoising_loss(net_fn, x0, cond, sigma, eps, self.cfg.objective, self._frame_weights)
        out.loss.backward()
        grad_norm = float("nan")
        if self.cfg.optim.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.optim.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # ---- statistics: sums and counts reduced over ranks ----
        l1 = modality_l1(x0, out.x0_hat, cond, self.layout, objectives)
        vec = torch.zeros(2 * len(self._stat_keys), dtype=torch.float64)
        vec[0], vec[1] = float(out.per_sample.sum()), len(positions)
        for i, k in enumerate(self._stat_keys[1:], start=1):
            if k in l1:
                vec[2 * i], vec[2 * i + 1] = l1[k]
        if self.info.world > 1:
            vec = vec.to(self.info.device)
            dist.all_reduce(vec)
            vec = vec.cpu()
        stats = {"step": step + 1, "lr": self.cfg.optim.lr * factor, "grad_norm": grad_norm}
        for i, k in enumerate(self._stat_keys):
            if vec[2 * i + 1] > 0:
                stats[k] = float(vec[2 * i] / vec[2 * i + 1])
        self.step += 1
        return stats

    @torch.no_grad()
    def evaluate(self, objective: str = "policy", sigma: Optional[float] = None, batch: int = 16, seed: int = 1234,
                 max_samples: Optional[int] = None) -> Dict[str, float]:
        """Mean latent L1 per modality over the dataset's samples (no augmentation) for one objective at a
        fixed noise level and fixed noise draws (a deterministic yardstick; main-rank only, no gradients).
        sigma: default the formulation's ``ObjectiveConfig.eval_sigma`` (EDM 4, rf 0.8)."""
        sigma = self.cfg.objective.eval_sigma if sigma is None else sigma
        self.prepare_latent_norm()
        lay = self.layout
        fs = self.net.cfg.latent_frame_shape
        n = len(self.dataset) if max_samples is None else min(max_samples, len(self.dataset))
        sums: Dict[str, float] = {}
        count = 0
        g = torch.Generator().manual_seed(seed)
        was_training = self.raw_transformer.training
        self.raw_transformer.eval()
        for s in range(0, n, batch):
            ids = list(range(s, min(n, s + batch)))
            samples = [self.dataset.sample(i, None) for i in ids]
            dev = self.info.device
            if self.cache is not None:
                lat = self.net.normalize_latents(self.cache.get([x.key for x in samples]).to(dev))
            else:
                lat = self.net.encode(self._video(samples).to(dev))
            stack = lambda name: torch.stack([getattr(x, name) for x in samples]).to(dev)  # noqa: E731
            x0 = inject_vectors(lat.float(), stack("proprio"), stack("actions"), stack("proprio_next"), stack("value"), lay)
            objs = [objective] * len(ids)
            cond = condition_masks(objs, lay, self.cfg.objective).to(dev)
            eps = torch.randn((len(ids), fs[0], lay.num_frames, fs[1], fs[2]), generator=g).to(dev)
            text = torch.cat([self.text[x.task] for x in samples])
            out = denoising_loss(self.net.net_fn(text), x0, cond, torch.full((len(ids),), float(sigma), device=dev),
                                 eps, self.cfg.objective)
            for k, (tot, cnt) in modality_l1(x0, out.x0_hat, cond, lay, objs).items():
                sums[k.split("/", 1)[1]] = sums.get(k.split("/", 1)[1], 0.0) + tot
            sums["loss"] = sums.get("loss", 0.0) + float(out.per_sample.sum())
            count += len(ids)
        self.raw_transformer.train(was_training)
        return {k: v / count for k, v in sums.items()}

    # ---- the loop -------------------------------------------------------------------------------
    def prepare_cache(self) -> None:
        """Encode every sample once (``cache_latents``); rank 0 writes the cache files first."""
        if not self.cfg.cache_latents or self.cache is not None:
            return
        if self.info.world > 1 and not self.info.is_main:
            dist.barrier()  # let rank 0 fill the on-disk cache, then read it
        self.cache = LatentCache(self.dataset, self.net, self.policy.image, batch_size=self.cfg.encode_batch,
                                 cache_dir=self.cfg.cache_dir, progress=self.cfg.progress and self.info.is_main,
                                 device=self.info.device)
        if self.info.world > 1 and self.info.is_main:
            dist.barrier()

    def prepare_latent_norm(self) -> None:
        """With ``latent_norm`` "data" or "scene", measure per-element latent statistics of the image frames on
        the training samples (the cache when there is one) and install them in the network; kept if the network
        already has some (a resumed run or an initial checkpoint: the statistics must not drift)."""
        if self.cfg.latent_norm == "wan" or self.net.latent_norm_mean is not None:
            return
        first = self.dataset.first_sample_indices() if self.cfg.latent_norm == "scene" else None
        scene = None
        if self.cache is not None:
            lat = torch.stack(list(self.cache.latents.values()))  # (N, 16, T, h, w) Wan-normalised
            if first is not None:
                scene = self.cache.get([self.dataset.index[i] for i in first])
        else:
            n = len(self.dataset)
            ids = sorted({int(i) for i in np.linspace(0, n - 1, min(n, self.cfg.latent_norm_samples))})
            lat = self._encode_ids(ids)
            if first is not None:
                scene = self._encode_ids(first)
        mean, std = latent_element_stats(lat, self.layout, scene)
        self.net.set_latent_norm(mean, std)

    def _encode_ids(self, ids: Sequence[int]) -> torch.Tensor:
        """(len(ids), 16, T, h, w) Wan-normalised latents of dataset samples (no augmentation draw)."""
        chunks = []
        for s in range(0, len(ids), self.cfg.encode_batch):
            samples = [self.dataset.sample(i, None) for i in ids[s:s + self.cfg.encode_batch]]
            chunks.append(self.net.encode_wan(self._video(samples).to(self.info.device)).cpu())
        return torch.cat(chunks)

    def train(self, steps: Optional[int] = None) -> List[Dict[str, float]]:
        """Train until ``steps`` (default ``cfg.steps``) total steps; checkpoints every ``save_every``
        and at the end; returns the statistics of every step run."""
        end = self.cfg.steps if steps is None else int(steps)
        self.prepare_cache()
        self.prepare_latent_norm()
        history: List[Dict[str, float]] = []
        bar = None
        if self.cfg.progress and self.info.is_main:
            from tqdm import tqdm
            bar = tqdm(total=end, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        hist_file = self.out / "history.jsonl"
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._truncate_history(hist_file, self.step)
        t0 = time.monotonic()
        while self.step < end:
            stats = self.train_step()
            stats["elapsed_s"] = time.monotonic() - t0
            history.append(stats)
            if self.info.is_main and (self.step % self.cfg.log_every == 0 or self.step == end):
                with open(hist_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps(stats) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", act=f"{stats.get('policy/action', float('nan')):.4f}")
            if self.step % self.cfg.save_every == 0 or self.step == end:
                self.save()
        if bar is not None:
            bar.close()
        final_state = self.model_state()  # collective under FSDP: every rank takes part
        if self.info.is_main:
            save_checkpoint(self.checkpoint_data(final_state), self.out / "final")
            if self.cfg.plot:
                plot_history(hist_file, self.out / "loss.png")
        return history

    @staticmethod
    def _truncate_history(path: Path, step: int) -> None:
        if not path.is_file():
            return
        keep = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip() and json.loads(l)["step"] <= step]
        path.write_text("".join(l + "\n" for l in keep), encoding="utf-8")

    # ---- checkpoints ----------------------------------------------------------------------------
    def model_state(self) -> Dict[str, torch.Tensor]:
        """Full (unsharded, CPU) transformer state dict with plain diffusers keys (every rank must call)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        return get_model_state_dict(self.model, options=_state_options())

    def checkpoint_data(self, transformer_state: Dict[str, torch.Tensor]) -> CheckpointData:
        p = self.policy
        return CheckpointData(network=self.net.cfg, layout=p.layout, sampler=p.sampler, image=p.image, stats=p.stats,
                              embeddings=dict(p.embeddings), transformer_state=transformer_state,
                              vae_state={k: v.detach().cpu() for k, v in self.net.vae.state_dict().items()},
                              policy_id=p.policy_id, dtype="float32", latent_norm=self.net.latent_norm_state())

    def export(self, directory: Union[str, Path]) -> Path:
        """Write the current weights as a policy checkpoint (no optimiser state); single process (or call
        :meth:`model_state` on every rank and write on one)."""
        return save_checkpoint(self.checkpoint_data(self.model_state()), directory)

    def save(self) -> Optional[Path]:
        """Checkpoint ``<out>/checkpoints/step_<k>`` with the optimiser state (collective call)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        msd = self.model_state()
        osd = get_optimizer_state_dict(self.model, self.optimizer, options=_state_options())
        if not self.info.is_main:
            return None
        d = self.out / "checkpoints" / f"step_{self.step:07d}"
        tmp = d.with_name(d.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        save_checkpoint(self.checkpoint_data(msd), tmp)
        torch.save({"step": self.step, "optimizer": osd, "seed": self.cfg.seed,
                    "world": self.info.world, "cpu_rng": torch.get_rng_state()}, tmp / STATE_FILE)
        (tmp / TRAIN_CONFIG_FILE).write_text(json.dumps(self.cfg.to_dict(), indent=1), encoding="utf-8")
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
        ckpts = sorted((self.out / "checkpoints").glob("step_???????"))
        for old in ckpts[:-self.cfg.keep_checkpoints] if self.cfg.keep_checkpoints > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return d

    def resume(self, path: Union[str, Path]) -> int:
        """Load weights, optimiser state and step from a checkpoint directory (or a run directory: its
        latest checkpoint). Returns the step to continue from."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
        d = find_resume_dir(path)
        data = load_checkpoint(d)
        state = torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
        set_model_state_dict(self.model, data.transformer_state, options=_state_options())
        if data.latent_norm is not None:  # the statistics the weights were trained with, not new ones
            self.net.set_latent_norm(data.latent_norm["mean"], data.latent_norm["std"])
        if self.cfg.train_vae:
            self.net.vae.load_state_dict(data.vae_state)
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=_state_options())
        self.step = int(state["step"])
        return self.step


def find_resume_dir(path: Union[str, Path]) -> Path:
    """A checkpoint directory with training state, or the latest one under ``<run>/checkpoints``."""
    p = Path(path)
    if (p / STATE_FILE).is_file():
        return p
    ckpts = sorted((p / "checkpoints").glob("step_???????"))
    ckpts = [c for c in ckpts if (c / STATE_FILE).is_file()]
    if not ckpts:
        raise FileNotFoundError(f"{p}: no {STATE_FILE} here nor under {p / 'checkpoints'}")
    return ckpts[-1]


def plot_history(history_file: Union[str, Path], png: Union[str, Path]) -> Optional[Path]:
    """Loss and per-modality latent L1 curves from ``history.jsonl`` -> PNG (None without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [json.loads(l) for l in Path(history_file).read_text(encoding="utf-8").splitlines() if l.strip()]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    axes[0].plot(steps, [r["loss"] for r in rows], label="loss")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("denoising loss (x10, weighted)")
    keys = ["policy/action", "policy/future_proprio", "policy/future_image", "policy/value", "world_model/future_proprio",
            "value/value"]
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if k in r]
        if pts:
            axes[1].plot([s for s, _ in pts], [v for _, v in pts], label=k)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step")
    axes[1].set_title("latent L1 per modality")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return Path(png)
