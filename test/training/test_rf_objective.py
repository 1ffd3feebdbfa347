"""The Predict2.5 training objective (rectified flow): velocity target, shift-5 logit-normal times, action
frame x16, conditioning frames adding no loss; and `cosmos-policy train --backbone predict2.5` end to end."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core.layout import ALOHA
from cosmos_policy_training.objectives import (ObjectiveConfig, condition_masks, denoising_loss, frame_weights,
                                               objectives_for_batch, sample_sigma)


def test_rf_training_times_are_shift5_logit_normal_on_a_1000_grid():
    cfg = ObjectiveConfig.for_backbone("predict2.5")
    assert (cfg.formulation, cfg.shift, cfg.action_weight, cfg.loss_scale) == ("rf", 5.0, 16.0, 1.0)
    g = torch.Generator().manual_seed(0)
    sig = np.array([sample_sigma(g, cfg, 11) for _ in range(4000)])
    s = sig / (5.0 - 4.0 * sig)  # the unshifted time: sigma = 5 s / (1 + 4 s)  <=>  s = sigma / (5 - 4 sigma)
    assert np.allclose(s * 1000, np.round(s * 1000), atol=1e-6)  # on the 1000 grid, in (0, 1]
    assert s.min() > 0 and s.max() <= 1.0
    # s = 1 - floor(1000 u) / 1000 with u = sigmoid(N(0, 1)): median 0.5 (sigma 0.833), P(s <= 0.2) = P(N >= logit 0.8)
    assert np.median(s) == pytest.approx(0.5, abs=0.03)
    p = 1.0 - 0.5 * (1 + math.erf(math.log(0.8 / 0.2) / math.sqrt(2)))
    assert np.mean(s <= 0.2) == pytest.approx(p, abs=0.02)
    # Predict2's distribution is untouched
    assert ObjectiveConfig.for_backbone("predict2").formulation == "edm"


def test_rf_loss_on_a_tiny_batch_is_the_velocity_mse_with_the_action_frame_x16():
    cfg = ObjectiveConfig.for_backbone("predict2.5")
    lay = ALOHA
    g = torch.Generator().manual_seed(1)
    b = 4
    x0 = torch.randn(b, 16, lay.num_frames, 2, 2, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    objs = objectives_for_batch(b, cfg)
    cond = condition_masks(objs, lay, cfg)
    sigma = torch.tensor([0.9, 0.5, 0.2, 0.99])
    seen = {}

    def net(x_in, t, c):  # a fixed linear 'network' so the expected loss can be written down independently
        seen["x"], seen["t"] = x_in.clone(), t.clone()
        return 0.5 * x_in

    w = frame_weights(lay, cfg)
    out = denoising_loss(net, x0, cond, sigma, eps, cfg, w)
    # independent computation, frame by frame
    expected = torch.zeros(b)
    for i in range(b):
        tot = 0.0
        for f in range(lay.num_frames):
            if cond[i, f]:
                continue  # conditioning frames: output replaced by the target, zero loss
            x = sigma[i] * eps[i, :, f] + (1 - sigma[i]) * x0[i, :, f]
            err = ((eps[i, :, f] - x0[i, :, f]) - 0.5 * x) ** 2
            tot += float(err.sum()) * (16.0 if f == lay.action_index else 1.0)
        expected[i] = tot / x0[i].numel()
    assert torch.allclose(out.per_sample, expected, rtol=1e-5)
    assert out.loss.item() == pytest.approx(float(expected.mean()), rel=1e-5)
    # the network saw clean conditioning frames at time 0 and the noised ones at their sigma
    c5 = cond[:, None, :, None, None]
    assert torch.equal(torch.where(c5, seen["x"], 0), torch.where(c5, x0, 0))
    assert torch.equal(seen["t"], torch.where(cond, 0.0, sigma[:, None].expand(-1, lay.num_frames)))
    # x0_hat = x - sigma v_hat: exact for a perfect velocity, clean on conditioning frames
    perfect = denoising_loss(lambda x, t, c: (eps - x0), x0, cond, sigma, eps, cfg, w)
    assert perfect.loss.item() == pytest.approx(0.0, abs=1e-10)
    assert torch.allclose(perfect.x0_hat, x0, atol=1e-5)
    assert torch.equal(out.x0_hat[c5.expand_as(x0)], x0[c5.expand_as(x0)])


def test_train_cli_with_backbone_predict25_trains_saves_and_infers(tiny_episodes, tmp_path):
    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_ros.core.rf_sampler import RFSamplerConfig
    from cosmos_policy_training import cli

    from ..core.conftest import make_observation

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--demos", *map(str, tiny_episodes), "--network", "tiny", "--backbone", "predict2.5",
            "--out", str(tmp_path / "run"), "--steps", "2", "--batch", "2", "--stride", "20", "--cache-latents",
            "--no-progress", "--save-every", "1"]
    trainer, _ = cli.build_from_args(parser.parse_args(argv))
    assert trainer.policy.network.cfg.backbone == "predict2.5"
    assert trainer.cfg.objective.formulation == "rf" and trainer.cfg.objective.action_weight == 16.0
    o = trainer.cfg.optim  # the Predict2.5 recipe's optimiser unless flags say otherwise
    assert (o.lr, o.betas, o.warmup_steps, o.decay_steps, o.decay_factor) == (2e-4, (0.9, 0.999), 1000, 42800, 0.06)
    before = trainer.evaluate("policy", max_samples=4)
    history = trainer.train()
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert math.isfinite(before["action"])
    final = tmp_path / "run" / "final"
    assert json.loads((final / "config.json").read_text())["network"]["backbone"] == "predict2.5"
    policy = load_policy(final)
    assert isinstance(policy.sampler, RFSamplerConfig)
    out = policy.infer(make_observation(policy), decode_images=False)
    assert out.actions.shape == (50, 14) and np.all(np.isfinite(out.actions))
    # continuing from it keeps its backbone; asking for another is a clear error
    cont, _ = cli.build_from_args(parser.parse_args(argv[:3] + ["--init", str(final), "--keep-checkpoint-stats",
                                                                "--out", str(tmp_path / "run2"), "--steps", "1",
                                                                "--batch", "2", "--stride", "20", "--no-progress"]))
    assert cont.cfg.objective.formulation == "rf"
    with pytest.raises(SystemExit, match="is a predict2.5 network"):
        cli.build_from_args(parser.parse_args(argv[:3] + ["--init", str(final), "--backbone", "predict2",
                                                          "--out", str(tmp_path / "run3"), "--steps", "1"]))


def test_trainer_refuses_an_objective_of_the_other_backbone(tiny_episodes, tmp_path):
    from cosmos_policy_ros.core.network import tiny_network_config
    from cosmos_policy_training.configs import build_policy, image_config_for
    from cosmos_policy_training.dataset import DatasetConfig, EpisodeDataset
    from cosmos_policy_training.trainer import TrainConfig, Trainer

    net = tiny_network_config(backbone="predict2.5")
    ds = EpisodeDataset.from_paths(tiny_episodes, ALOHA, image_config_for(net), DatasetConfig(stride=30))
    policy = build_policy(ds.stats, ds.tasks, network=net)
    with pytest.raises(ValueError, match="does not match the network's backbone 'predict2.5'"):
        Trainer(policy, ds, TrainConfig(steps=1, global_batch=1), tmp_path)  # default objective: Predict2's
