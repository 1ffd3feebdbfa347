"""A tiny model overfits two episodes: the action L1 (latent space, fixed noise) drops by 10x, and the
trained checkpoint loads with load_policy and returns chunks close to the demonstrated ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core.images import ImageConfig
from cosmos_policy_ros.core.layout import ALOHA
from cosmos_policy_ros.core.network import VAEConfig, tiny_network_config
from cosmos_policy_ros.core.policy import load_policy
from cosmos_policy_ros.core.types import Observation
from cosmos_policy_training.augment import AugmentConfig
from cosmos_policy_training.configs import build_policy
from cosmos_policy_training.dataset import DatasetConfig, EpisodeDataset, action_chunk
from cosmos_policy_training.episodes import read_episode
from cosmos_policy_training.objectives import ObjectiveConfig
from cosmos_policy_training.trainer import OptimConfig, TrainConfig, Trainer


@pytest.mark.timeout(1800)  # ~1-2 min on 2 free cores; much longer on a busy shared machine
def test_tiny_model_overfits_two_episodes(tiny_episodes, tmp_path):
    # 2 layers, hidden 128 (hidden 64 is too narrow to pass the 64 noise values of a patch through and
    # learns far slower), the small VAE of the sim preset; 12 samples (stride 10)
    net = tiny_network_config(image_size=64)
    net.num_attention_heads = 4
    net.vae = VAEConfig(base_dim=4, num_res_blocks=1)
    ds = EpisodeDataset.from_paths(tiny_episodes, ALOHA, ImageConfig(squash_size=64, size=64),
                                   DatasetConfig(stride=10, augment=AugmentConfig(enabled=False)))
    policy = build_policy(ds.stats, ds.tasks, network=net, seed=0)
    cfg = TrainConfig(steps=600, global_batch=12, seed=0, cache_latents=True, progress=False, plot=False,
                      save_every=10**6, log_every=50,
                      optim=OptimConfig(lr=3e-3, warmup_steps=10, decay_steps=600, weight_decay=0.0),
                      objective=ObjectiveConfig(policy=1.0, world_model=0.0, value=0.0))
    trainer = Trainer(policy, ds, cfg, tmp_path / "run")
    trainer.prepare_cache()
    sigma = 2.0  # a fixed mid noise level; draws are fixed too
    before = trainer.evaluate("policy", sigma=sigma)["action"]
    trainer.train()
    after = trainer.evaluate("policy", sigma=sigma)["action"]
    print(f"action latent L1 at sigma {sigma}: {before:.4f} -> {after:.4f}")
    assert after < before / 10, (before, after)

    # the exported checkpoint is a policy: its chunk for a training observation is near the demo's
    pol = load_policy(tmp_path / "run" / "final")
    ep = read_episode(tiny_episodes[0])
    t = 10  # a training sample start (stride 10)
    obs = Observation(images={c: ep.images[c][t] for c in ALOHA.cameras}, proprio=ep.qpos[t].astype(np.float32),
                      instruction=ds.tasks[0])
    out = pol.infer(obs)
    want = action_chunk(ep.action, t, 50)  # the training target: padded with the last action
    err = np.abs(out.actions - want).mean()
    spread = np.abs(want - want.mean(0)).mean()
    assert err < spread / 3, (err, spread)
