"""Dataset construction (chunks, value targets, stats, augmentation) and the training objectives."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core.codec import STAT_KEYS, extract, extract_value
from cosmos_policy_ros.core.images import ImageConfig
from cosmos_policy_ros.core.layout import ALOHA
from cosmos_policy_training.augment import AugmentConfig, apply_augment, draw_params
from cosmos_policy_training.dataset import (DatasetConfig, EpisodeDataset, action_chunk, build_video,
                                            inject_vectors, value_targets)
from cosmos_policy_training.objectives import (ObjectiveConfig, condition_masks, denoising_loss, frame_weights,
                                               objectives_for_batch, sample_sigma, split_counts)
from cosmos_policy_training.trainer import OptimConfig, lr_factor


def test_value_targets_follow_discounted_terminal_score_at_next_state():
    v = value_targets(120, 1.0, horizon=50, gamma=0.998)
    # target at t is 2 * 0.998^(T-1-min(t+50, T-1)) - 1
    assert v[0] == pytest.approx(2 * 0.998 ** (119 - 50) - 1)
    assert v[69] == pytest.approx(1.0) and v[119] == pytest.approx(1.0)  # t+50 >= T-1: terminal
    assert np.all(np.diff(v) >= 0)
    assert np.all(value_targets(80, 0.0, 50) == -1.0)  # failures: -1 everywhere
    assert value_targets(80, 0.5, 50)[-1] == pytest.approx(0.0)  # partial score 0.5 -> 0 in [-1, 1]
    with pytest.raises(ValueError, match="success score"):
        value_targets(10, 1.5, 50)


def test_action_chunk_repeats_last_action_past_the_end():
    a = np.arange(30, dtype=float).reshape(10, 3)
    c = action_chunk(a, 7, 5)
    assert c.shape == (5, 3)
    np.testing.assert_array_equal(c[:3], a[7:10])
    np.testing.assert_array_equal(c[3:], np.stack([a[9], a[9]]))


def test_samples_and_stats(tiny_episodes):
    ds = EpisodeDataset.from_paths(tiny_episodes, ALOHA, ImageConfig(squash_size=64, size=64),
                                   DatasetConfig(augment=AugmentConfig(enabled=False)))
    assert set(STAT_KEYS) <= set(ds.stats.to_dict())
    assert len(ds) == 120
    s = ds.sample(55)  # episode 0, t = 55: chunk runs past the end (T = 60)
    assert s.key == (0, 55)
    acts = s.actions.reshape(50, 14)
    assert torch.equal(acts[4], acts[-1]) and torch.equal(acts[4], ds.episodes[0].actions[59])
    assert torch.equal(s.proprio_next, ds.episodes[0].proprio[59])
    assert float(s.value) == pytest.approx(1.0)
    assert s.images_now.shape == (3, 3, 64, 64) and s.images_now.dtype == torch.uint8
    # the normalised vectors survive injection into latents and extraction (what the policy reads back)
    lat = torch.zeros(1, 16, 11, 8, 8)
    x0 = inject_vectors(lat, s.proprio[None], s.actions[None], s.proprio_next[None], s.value[None], ALOHA)
    np.testing.assert_allclose(extract(x0[:, :, 5], 700)[0].float(), s.actions, atol=1e-6)
    assert float(extract_value(x0[:, :, 10])[0]) == pytest.approx(1.0)


def test_video_layout_puts_current_and_future_images_in_their_slots():
    now = torch.zeros(1, 3, 3, 16, 16, dtype=torch.uint8)
    nxt = torch.full((1, 3, 3, 16, 16), 255, dtype=torch.uint8)
    v = build_video(now, nxt, ALOHA)
    assert v.shape == (1, 3, 41, 16, 16)
    per_frame = v[0].mean(dim=(0, 2, 3))
    for k in (7, 8, 9):  # future image slots: white
        for f in ALOHA.raw_frames(k):
            assert per_frame[f] == 1.0
    for k in (2, 3, 4, 0, 1, 5, 6, 10):  # current images (black here) and blank vector frames
        for f in ALOHA.raw_frames(k):
            assert per_frame[f] == -1.0


def test_augmentation_uses_one_draw_for_all_frames_and_varies_between_draws():
    cfg = AugmentConfig()
    img = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    frames = torch.cat([img, img, img])
    p = draw_params(cfg, torch.Generator().manual_seed(3))
    out = apply_augment(frames, p, cfg)
    assert out.shape == frames.shape and out.dtype == torch.uint8
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    p2 = draw_params(cfg, torch.Generator().manual_seed(4))
    assert not torch.equal(apply_augment(img, p2, cfg), out[:1])
    assert -5.0 <= p["angle"] <= 5.0 and 0.7 <= p["brightness"] <= 1.3 and abs(p["hue"]) <= 0.05
    # identity parameters (full crop, no rotation, neutral colours) leave the image unchanged
    ident = AugmentConfig(crop_area=1.0)
    same = apply_augment(img, {"crop_x": 0.5, "crop_y": 0.5, "angle": 0.0, "brightness": 1.0, "contrast": 1.0,
                               "saturation": 1.0, "hue": 0.0}, ident)
    assert (same.int() - img.int()).abs().max() <= 1
    # a hue shift of a full turn is the identity; a saturation of 0 gives grey pixels
    full = apply_augment(img, {"crop_x": 0.5, "crop_y": 0.5, "angle": 0.0, "brightness": 1.0, "contrast": 1.0,
                               "saturation": 0.0, "hue": 0.0}, ident)
    assert (full.int().amax(1) - full.int().amin(1)).max() <= 1


def test_objective_split_is_exact_per_batch():
    cfg = ObjectiveConfig()
    assert split_counts(200, cfg) == {"policy": 100, "world_model": 50, "value": 50}
    assert split_counts(8, cfg) == {"policy": 4, "world_model": 2, "value": 2}
    objs = objectives_for_batch(8, cfg)
    m = condition_masks(objs, ALOHA, cfg)
    assert m[0].tolist() == [True, True, True, True, True] + [False] * 6  # policy: frames 0..4
    assert m[4].tolist() == [True] * 6 + [False] * 5  # world model: + action
    assert m[7].tolist() == [True] * 10 + [False]  # value (base run): all but the value frame
    plan = ObjectiveConfig(policy=0, world_model=0, value=1, value_mode="value_v")
    mv = condition_masks(objectives_for_batch(2, plan), ALOHA, plan)
    assert mv[0].tolist() == [True, False, False, False, False, False, True, True, True, True, False]
    with pytest.raises(ValueError, match="value_mode"):
        ObjectiveConfig(value_mode="q")


def test_hybrid_noise_distribution():
    g = torch.Generator().manual_seed(0)
    draw = lambda cfg, n=3000: np.array([sample_sigma(g, cfg, 11) for _ in range(n)]) / math.sqrt(11)  # noqa: E731
    logn = np.log(draw(ObjectiveConfig(p_lognormal=1.0)))
    assert np.mean(logn) == pytest.approx(math.log(4), abs=0.1) and np.std(logn) == pytest.approx(1.2, abs=0.1)
    uni = draw(ObjectiveConfig(p_lognormal=0.0))
    assert uni.min() >= 1 and uni.max() <= 85 and np.mean(uni) == pytest.approx(43, abs=3)
    mix = draw(ObjectiveConfig())
    # P(sigma > 40) = 0.7 * P(lognormal > 40) (0.027) + 0.3 * 45/84 = 0.18
    assert 0.14 < (mix > 40).mean() < 0.22
    assert sample_sigma(torch.Generator().manual_seed(1), ObjectiveConfig(p_lognormal=0.0, uniform_low=2,
                                                                          uniform_high=2), 11) == pytest.approx(2 * math.sqrt(11))


def test_loss_weighting_and_conditioning_frames():
    cfg = ObjectiveConfig()
    x0 = torch.randn(2, 16, 11, 4, 4)
    eps = torch.randn_like(x0)
    sigma = torch.tensor([2.0, 30.0])
    cond = condition_masks(["policy", "world_model"], ALOHA, cfg)
    calls = {}

    def zero_net_TestDouble(x_in, c_noise, c):  # F = 0 -> x0_hat = c_skip * x
        calls["c_noise"] = c_noise
        return torch.zeros_like(x_in)

    out = denoising_loss(zero_net_TestDouble, x0, cond, sigma, eps, cfg)
    # conditioning frames: clean, c_noise 0, replaced -> zero error
    assert torch.equal(out.x0_hat[:, :, :5][0], x0[0, :, :5])
    assert torch.all(calls["c_noise"][cond] == 0)
    t = sigma / (sigma + 1)
    expected = []
    for b in range(2):
        x = x0[b] + sigma[b] * eps[b]
        hat = torch.where(cond[b][None, :, None, None], x0[b], (1 - t[b]) * x)
        expected.append(10 * (((x0[b] - hat) ** 2) * (1 + sigma[b]) ** 2 / sigma[b] ** 2).mean())
    torch.testing.assert_close(out.per_sample, torch.stack(expected))


def test_action_weight_scales_only_the_action_frames_error():
    """--action-weight k: the action frame's squared error counts k times, every other frame as before;
    k = 1 (the reference) changes nothing."""
    assert frame_weights(ALOHA, ObjectiveConfig()) is None
    w = frame_weights(ALOHA, ObjectiveConfig(action_weight=5.0))
    assert w.shape == (11,) and w[ALOHA.action_index] == 5.0 and float(w.sum()) == 15.0
    with pytest.raises(ValueError, match="action_weight"):
        ObjectiveConfig(action_weight=0.0)
    cfg = ObjectiveConfig()
    x0 = torch.randn(3, 16, 11, 4, 4)
    eps = torch.randn_like(x0)
    sigma = torch.tensor([1.0, 4.0, 40.0])
    cond = condition_masks(["policy"] * 3, ALOHA, cfg)

    def zero_net_TestDouble(x_in, c_noise, c):
        return torch.zeros_like(x_in)

    base = denoising_loss(zero_net_TestDouble, x0, cond, sigma, eps, cfg)
    only_action = x0.clone()
    keep = torch.zeros(11, dtype=torch.bool)
    keep[ALOHA.action_index] = True
    only_action[:, :, ~keep] = 0  # x0 = 0 and eps = 0 elsewhere -> zero error off the action frame
    eps_a = torch.where(keep[None, None, :, None, None], eps, torch.zeros_like(eps))
    a1 = denoising_loss(zero_net_TestDouble, only_action, cond, sigma, eps_a, cfg).per_sample
    a5 = denoising_loss(zero_net_TestDouble, x0, cond, sigma, eps, cfg, w).per_sample
    torch.testing.assert_close(a5, base.per_sample + 4 * a1)
    with pytest.raises(ValueError, match="frame_weights"):
        denoising_loss(zero_net_TestDouble, x0, cond, sigma, eps, cfg, torch.ones(10))


def test_lr_schedule():
    o = OptimConfig(warmup_steps=10, decay_steps=100)
    assert lr_factor(0, o) == pytest.approx(0.1) and lr_factor(9, o) == pytest.approx(1.0)
    assert lr_factor(55, o) == pytest.approx(1 - 0.7 * 45 / 90)
    assert lr_factor(100, o) == pytest.approx(0.06) and lr_factor(10**6, o) == pytest.approx(0.06)


def test_relative_action_samples_are_measured_from_the_proprio_at_t(tiny_episodes):
    """--relative-actions arms: a sample's arm actions are n(a[t+k]) - n(q[t]); grippers stay absolute; the
    dataset's stats carry the flags so the exported checkpoint mirrors them at inference."""
    from cosmos_policy_ros.core import codec
    from cosmos_policy_training.episodes import read_episode

    arms = [i for i in range(14) if i not in (6, 13)]
    cfg = DatasetConfig(augment=AugmentConfig(enabled=False))
    img = ImageConfig(squash_size=64, size=64)
    ab = EpisodeDataset.from_paths(tiny_episodes, ALOHA, img, cfg)
    rel = EpisodeDataset.from_paths(tiny_episodes, ALOHA, img, cfg, relative_actions=arms)
    assert rel.stats.relative_actions.tolist() == [i in arms for i in range(14)]
    ep = read_episode(tiny_episodes[0])
    s_ab, s_rel = ab.sample(20), rel.sample(20)
    want = codec.normalize_actions(action_chunk(ep.action, 20, 50), rel.stats, proprio=ep.qpos[20])
    np.testing.assert_allclose(s_rel.actions.reshape(50, 14).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(s_rel.actions.reshape(50, 14)[:, [6, 13]], s_ab.actions.reshape(50, 14)[:, [6, 13]])
    back, _ = codec.unnormalize_actions(s_rel.actions.reshape(50, 14).double().numpy(), rel.stats, proprio=ep.qpos[20])
    np.testing.assert_allclose(back, action_chunk(ep.action, 20, 50), atol=1e-5)


def test_roi_option_reaches_the_samples_and_the_checkpoint(tiny_episodes, tmp_path):
    """`train --roi cam_high=...`: the dataset's cam_high images are the box's pixels only, and the exported
    checkpoint carries the box, so inference cuts the same one."""
    import argparse
    import dataclasses
    import json

    import torch

    from cosmos_policy_ros.core.images import preprocess_batch
    from cosmos_policy_training import cli
    from cosmos_policy_training.episodes import read_episode

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--demos", *map(str, tiny_episodes), "--network", "tiny", "--out", str(tmp_path / "run"), "--steps", "1",
            "--batch", "2", "--warmup", "1", "--stride", "20", "--cache-latents", "--no-progress",
            "--roi", "cam_high=0.25,0.5,0.5,0.5"]
    trainer, dataset = cli.build_from_args(parser.parse_args(argv))
    assert trainer.policy.image.rois == {"cam_high": (0.25, 0.5, 0.5, 0.5)}
    ep = read_episode(tiny_episodes[0])
    ci = list(ALOHA.cameras).index("cam_high")
    raw = torch.from_numpy(np.ascontiguousarray(ep.images["cam_high"][:, 12:36, 32:64])).permute(0, 3, 1, 2)
    whole = dataclasses.replace(trainer.policy.image, rois=None)
    assert torch.equal(dataset.episodes[0].images[:, ci], preprocess_batch(raw, whole))
    trainer.train()
    cfg = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert cfg["image"]["rois"] == {"cam_high": [0.25, 0.5, 0.5, 0.5]}
    for bad, msg in (("cam_top=0,0,1,1", "expected cameras of the layout"), ("cam_high=0,0,1", "CAMERA=TOP"),
                     ("cam_high=0.8,0,0.5,1", "top \\+ height")):
        with pytest.raises(SystemExit, match=msg):
            cli.build_from_args(parser.parse_args(argv[:-1] + [bad]))


def test_data_latent_norm_gives_unit_spread_image_latents_and_travels_with_the_checkpoint(tiny_episodes, tmp_path):
    """`train --latent-norm data`: the random frozen VAE's image latents (a near-constant otherwise) reach the
    DiT standardised per element, vector frames untouched; the statistics are saved with the checkpoint, the
    loaded policy encodes exactly what training saw, and a resumed run keeps them."""
    import argparse

    from cosmos_policy_ros.core.checkpoint import LATENT_NORM_FILE
    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_training import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--demos", *map(str, tiny_episodes), "--network", "tiny", "--out", str(tmp_path / "run"), "--steps", "1",
            "--batch", "2", "--warmup", "1", "--stride", "5", "--cache-latents", "--no-progress", "--save-every", "1"]
    trainer, dataset = cli.build_from_args(parser.parse_args(argv + ["--latent-norm", "data"]))
    trainer.train()
    net = trainer.net
    raw = torch.stack(list(trainer.cache.latents.values()))  # (N, 16, T, h, w) Wan-normalised, as cached
    lat = net.normalize_latents(raw)
    img = [i for i, s in enumerate(ALOHA.slots) if s.kind == "image"]
    vec = [i for i, s in enumerate(ALOHA.slots) if s.kind != "image"]
    spread_before = raw[:, :, img].std(0).mean()
    spread = lat[:, :, img].std(0)
    varies = raw[:, :, img].std(0) > 1e-4
    assert spread_before < 0.2  # the random VAE's image signal is small...
    assert torch.allclose(spread[varies], torch.ones(()), atol=1e-3)  # ...and standardised to unit spread
    assert lat[:, :, img].mean(0).abs().max() < 1e-3
    assert torch.equal(lat[:, :, vec], raw[:, :, vec])
    final = tmp_path / "run" / "final"
    assert (final / LATENT_NORM_FILE).is_file()
    policy = load_policy(final)
    sample = dataset.sample(0, None)
    video = build_video(sample.images_now[None], sample.images_next[None], ALOHA)
    assert torch.equal(policy.network.latent_norm_mean, net.latent_norm_mean)
    assert torch.equal(policy.network.latent_norm_std, net.latent_norm_std)
    enc = policy.network.encode(video)  # what inference feeds the DiT; compared in Wan units, since 1/std
    assert torch.allclose(policy.network.denormalize_latents(enc), raw[:1], atol=1e-5)  # amplifies float noise
    assert torch.allclose(enc[:, :, img], lat[:1, :, img], atol=5e-3)
    # resuming restores the saved statistics instead of measuring new ones
    resumed, _ = cli.build_from_args(parser.parse_args(argv + ["--latent-norm", "data", "--steps", "2",
                                                                "--resume", str(tmp_path / "run")]))
    assert torch.equal(resumed.net.latent_norm_mean, net.latent_norm_mean)
    # the default (Wan statistics only) writes no latent norm
    plain, _ = cli.build_from_args(parser.parse_args([a if a != str(tmp_path / "run") else str(tmp_path / "plain")
                                                      for a in argv]))
    plain.train()
    assert not (tmp_path / "plain" / "final" / LATENT_NORM_FILE).exists()
    assert torch.equal(plain.net.normalize_latents(raw), raw)


def test_scene_latent_norm_measures_current_images_on_each_episodes_first_step(tiny_episodes, tmp_path):
    """`train --latent-norm scene`: the current image frames are standardised with the statistics of the
    episodes' first samples (what tells the starting scenes apart), floored at a fraction of the all-sample
    std; future image frames keep the all-sample statistics; the statistics travel with the checkpoint."""
    import argparse

    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_training import cli
    from cosmos_policy_training.dataset import SCENE_STD_FLOOR

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--demos", *map(str, tiny_episodes), "--network", "tiny", "--out", str(tmp_path / "run"), "--steps", "1",
            "--batch", "2", "--warmup", "1", "--stride", "5", "--cache-latents", "--no-progress", "--save-every", "1",
            "--latent-norm", "scene"]
    trainer, dataset = cli.build_from_args(parser.parse_args(argv))
    trainer.train()
    raw = torch.stack(list(trainer.cache.latents.values())).double()  # (N, 16, T, h, w)
    first = torch.stack([trainer.cache.latents[(e, 0)] for e in range(len(dataset.episodes))]).double()
    cur = [i for i, s in enumerate(ALOHA.slots) if s.kind == "image" and s.role == "current"]
    fut = [i for i, s in enumerate(ALOHA.slots) if s.kind == "image" and s.role == "future"]
    net = trainer.net
    mean, std = net.latent_norm_mean[0].double(), net.latent_norm_std[0].double()
    assert torch.allclose(mean[:, cur], first[:, :, cur].mean(0), atol=1e-6)
    want = torch.maximum(first[:, :, cur].std(0), SCENE_STD_FLOOR * raw[:, :, cur].std(0)).clamp_min(1e-4)
    assert torch.allclose(std[:, cur], want, rtol=1e-4, atol=1e-7)
    assert torch.allclose(std[:, fut], raw[:, :, fut].std(0).clamp_min(1e-4), rtol=1e-4, atol=1e-7)
    # the unit of the current frames is the scenes' spread, not the whole episodes' (which is larger here)
    assert (std[:, cur] < raw[:, :, cur].std(0).clamp_min(1e-4)).float().mean() > 0.5
    policy = load_policy(tmp_path / "run" / "final")
    assert torch.equal(policy.network.latent_norm_std, net.latent_norm_std)


def test_proprio_dropout_generates_the_current_proprio_of_some_policy_samples_only(tiny_episodes, tmp_path):
    """`train --proprio-dropout p`: about p of the policy samples get their current proprio frame noised and
    predicted (not given); no other objective and no other frame changes; the draw is reproducible."""
    import argparse

    from cosmos_policy_training import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--demos", *map(str, tiny_episodes), "--network", "tiny", "--out", str(tmp_path / "run"), "--steps", "1",
            "--batch", "64", "--warmup", "1", "--stride", "5", "--cache-latents", "--cache-dir", str(tmp_path / "cache"),
            "--no-progress"]
    base, _ = cli.build_from_args(parser.parse_args(argv))
    drop, _ = cli.build_from_args(parser.parse_args(argv + ["--proprio-dropout", "0.5"]))
    base.prepare_cache()
    drop.prepare_cache()  # the same files: encoded once
    k = ALOHA.current_proprio_index
    n_policy = n_dropped = 0
    for step in range(3):
        _, c0, *_, objs = base.make_batch(step, range(64))
        _, c1, *_, objs1 = drop.make_batch(step, range(64))
        assert objs == objs1
        assert c0[:, k].all()  # the reference: the current proprio is always given
        changed = (c0 != c1)
        assert not changed[:, [i for i in range(ALOHA.num_frames) if i != k]].any()
        for i, o in enumerate(objs):
            if o != "policy":
                assert not changed[i].any()
            else:
                n_policy += 1
                n_dropped += int(changed[i, k])
        _, c2, *_ = drop.make_batch(step, range(64))
        assert torch.equal(c1, c2)
    assert 0.3 < n_dropped / n_policy < 0.7
    with pytest.raises(ValueError, match="proprio_dropout"):
        ObjectiveConfig(proprio_dropout=1.0)


def test_device_cuda_without_an_index_means_this_ranks_gpu(monkeypatch):
    """`--device cuda` names this rank's GPU (torch.cuda.set_device rejects a bare 'cuda')."""
    from cosmos_policy_training import trainer as tr

    seen = []
    monkeypatch.setattr(tr.torch.cuda, "set_device", lambda d: seen.append(d))  # no GPU here: record the call
    monkeypatch.setenv("LOCAL_RANK", "0")
    info = tr.init_distributed("none", "cuda")
    assert info.device == torch.device("cuda:0") and seen == [torch.device("cuda:0")]


def test_first_step_fraction_gives_the_episodes_first_samples_that_share_of_the_draws(tiny_episodes):
    """`train --first-step-fraction f`: the episodes' t = 0 samples (where only the cameras say where the
    object is) get f of the sampling weight, shared equally; the rest keep their relative weights."""
    cfg = lambda f: DatasetConfig(stride=5, augment=AugmentConfig(enabled=False), first_step_fraction=f)  # noqa: E731
    plain = EpisodeDataset.from_paths(tiny_episodes, ALOHA, ImageConfig(squash_size=64, size=64), cfg(0.0))
    ds = EpisodeDataset(plain.episodes, ALOHA, plain.stats, cfg(0.25))
    first = torch.tensor([t == 0 for _, t in ds.index])
    assert int(first.sum()) == len(ds.episodes) and len(ds) > 4 * len(ds.episodes)
    assert float(ds.weights[first].sum()) == pytest.approx(0.25)
    assert torch.allclose(ds.weights[first], ds.weights[first][0].expand(int(first.sum())))
    assert torch.allclose(ds.weights[~first] / ds.weights[~first].sum(), plain.weights[~first] / plain.weights[~first].sum())
    assert float(plain.weights[first].sum()) == pytest.approx(float(first.sum()) / len(plain))  # default: uniform
    draws = torch.multinomial(ds.weights, 4000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert 0.2 < float(first[draws].float().mean()) < 0.3
    with pytest.raises(ValueError, match="first_step_fraction"):
        DatasetConfig(first_step_fraction=1.0)
