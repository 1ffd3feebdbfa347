"""The trained sim VAE (`python -m cosmos_policy_training.vae`) and its use by the trainer: training on real MuJoCo
frames lowers the held-out reconstruction error, the saved VAE reloads strictly and reconstructs the same, latent
caches never mix two VAEs, and `cosmos-policy train --vae` builds the network with exactly those weights."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core.layout import ALOHA
from cosmos_policy_ros.core.network import VAEConfig, build_vae
from cosmos_policy_training import vae as vae_mod
from cosmos_policy_training.dataset import latent_cache_key


@pytest.fixture(scope="module")
def sim_episodes(tmp_path_factory):
    """Two scripted transfer-cube demos rendered by the real MuJoCo sim (48x64, all three cameras)."""
    from cosmos_policy_ros.sim.generate_demos import generate

    d = tmp_path_factory.mktemp("sim_demos")
    generate("transfer_cube", 2, d, image_size=(48, 64), seed_start=3, progress=False)
    return d


@pytest.fixture(scope="module")
def trained(sim_episodes, tmp_path_factory):
    """A tiny VAE trained for a few hundred steps on the first episode's frames, the second held out."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("vae")
    vae_mod.main(["--episodes", str(sim_episodes), "--out", str(out), "--heldout", "1", "--image-size", "16",
                  "--whole-frames", "--base-dim", "2", "--steps", "200", "--batch", "2", "--lr", "5e-3",
                  "--frame-stride", "10", "--eval-stride", "40", "--eval-every", "200", "--threads", "1",
                  "--no-progress"])
    return out


def _heldout_psnr(vae, sim_episodes):
    img = vae_mod.image_config_from_args(argparse.Namespace(image_size=16, like=None, whole_frames=True, roi=[],
                                                            image_size_given=True), ALOHA)
    now, nxt, _ = vae_mod.heldout_samples([sim_episodes / "episode_1.hdf5"], ALOHA, img, 40)
    return vae_mod.psnr_table(vae_mod.layout_reconstructions(vae, now, nxt, ALOHA), ALOHA)


def test_training_lowers_the_heldout_error_and_the_saved_vae_reloads_strictly_and_reconstructs_the_same(
        trained, sim_episodes):
    report = json.loads((trained / "vae_report.json").read_text())
    cfg, state, _ = vae_mod.load_trained_vae(trained)
    assert cfg == VAEConfig(base_dim=2, num_res_blocks=1) and report["steps"] == 200
    # the untrained VAE of the same seed and configuration, on the same held-out frames
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = build_vae(vae_mod.vae_network_config(cfg, 16)).eval()
    before = _heldout_psnr(untrained, sim_episodes)
    reloaded = build_vae(vae_mod.vae_network_config(cfg, 16)).eval()
    vae_mod.load_vae_into(reloaded, state)  # strict: every key, every shape
    after = _heldout_psnr(reloaded, sim_episodes)
    assert after == report["psnr"]["heldout"]  # the reloaded weights reconstruct exactly as the trained ones did
    assert after["psnr_db"] > before["psnr_db"] + 4.0, (before, after)
    for cam in ALOHA.cameras:  # every camera, current and future slots of the layout video
        assert after["per_camera"][cam]["all"] > before["per_camera"][cam]["all"] + 2.0, (cam, before, after)
        # the future slots, where a world-model prediction is decoded, are trained too (--clips full, the default)
        assert after["per_camera"][cam]["future"] > before["per_camera"][cam]["future"] + 2.0, (cam, before, after)
    assert report["clips"] == "full" and report["clip_frames"] == 41
    assert set(report["psnr"]["heldout"]["per_camera"]) == set(ALOHA.cameras)
    assert report["data"]["heldout_files"] == ["episode_1.hdf5"] and report["command"].startswith("python -m")
    assert (trained / "loss.png").is_file() and (trained / "reconstructions.png").is_file()
    # a strict load refuses a VAE of another configuration, naming the mismatch
    from cosmos_policy_ros.core.checkpoint import CheckpointError
    other = build_vae(vae_mod.vae_network_config(VAEConfig(base_dim=4), 16))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        vae_mod.load_vae_into(other, state)


def test_a_stopped_run_keeps_its_progress_and_init_continues_from_it(trained, sim_episodes, tmp_path):
    """A long CPU run writes its weights every --save-every steps (the fixture: 100 of 200); --init starts a run
    from them, with their configuration, and records where it came from."""
    ckpt = trained / "checkpoint"
    cfg, state, rep = vae_mod.load_trained_vae(ckpt)
    assert cfg == VAEConfig(base_dim=2, num_res_blocks=1) and rep["steps"] == 100
    _, final, _ = vae_mod.load_trained_vae(trained)
    assert any(not torch.equal(state[k], final[k]) for k in state)  # the step-100 weights, not the final ones
    out = tmp_path / "continued"
    vae_mod.main(["--episodes", str(sim_episodes), "--out", str(out), "--heldout", "1", "--image-size", "16",
                  "--whole-frames", "--base-dim", "8", "--init", str(ckpt), "--steps", "1", "--batch", "1",
                  "--lr", "0", "--frame-stride", "40", "--eval-stride", "80", "--threads", "1", "--no-progress"])
    cfg2, state2, rep2 = vae_mod.load_trained_vae(out)
    assert cfg2 == cfg  # the checkpoint's configuration, not --base-dim 8
    assert all(torch.equal(state2[k], state[k]) for k in state)  # lr 0: exactly the weights it started from
    assert rep2["init"]["dir"] == str(ckpt) and rep2["init"]["steps"] == 100
    with pytest.raises(SystemExit, match="--init .*no such folder"):
        vae_mod.main(["--episodes", str(sim_episodes), "--out", str(tmp_path / "x"), "--init", str(tmp_path / "nope"), "--heldout", "1",
                      "--image-size", "16", "--whole-frames", "--no-progress"])


def test_clear_errors_for_no_frames_and_a_wrong_image_size(tmp_path, sim_episodes):
    with pytest.raises(SystemExit, match="no \\*.hdf5 episode files"):
        vae_mod.main(["--episodes", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"])
    with pytest.raises(SystemExit, match="--image-size: expected a multiple of 16"):
        vae_mod.main(["--episodes", str(sim_episodes), "--out", str(tmp_path / "o"), "--image-size", "40",
                      "--no-progress"])
    with pytest.raises(SystemExit, match="at least one training file"):
        vae_mod.main(["--episodes", str(sim_episodes), "--out", str(tmp_path / "o"), "--heldout", "2",
                      "--no-progress"])


def test_latent_cache_keys_differ_for_two_vaes_and_a_cache_dir_never_serves_another_vaes_latents(
        trained, tiny_episodes, tmp_path):
    from cosmos_policy_ros.core.images import ImageConfig
    from cosmos_policy_training.configs import build_policy
    from cosmos_policy_training.dataset import DatasetConfig, EpisodeDataset, LatentCache
    from cosmos_policy_training.augment import AugmentConfig

    cfg, state, _ = vae_mod.load_trained_vae(trained)
    net_cfg = vae_mod.vae_network_config(cfg, 64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        a = build_vae(net_cfg)
    b = build_vae(net_cfg)
    vae_mod.load_vae_into(b, state)
    img = ImageConfig(squash_size=64, size=64)
    path = str(tiny_episodes[0])
    key = lambda v: latent_cache_key(v, ALOHA, img, path, 8)  # noqa: E731
    assert key(a) == key(a) and key(b) == key(b)
    assert key(a) != key(b)  # same architecture, other weights: another key
    # end to end: a cache folder filled with VAE a's latents gives VAE b its own latents
    import dataclasses
    from cosmos_policy_training.configs import network_preset
    ds = EpisodeDataset.from_paths([tiny_episodes[0]], ALOHA, img,
                                   DatasetConfig(stride=20, augment=AugmentConfig(enabled=False)))
    net = dataclasses.replace(network_preset("tiny"), vae=cfg)
    pol = build_policy(ds.stats, ds.tasks, network=net, layout=ALOHA)
    pol.network.vae.load_state_dict(a.state_dict())
    cache_a = LatentCache(ds, pol.network, img, cache_dir=tmp_path)
    pol.network.vae.load_state_dict(b.state_dict())
    cache_b = LatentCache(ds, pol.network, img, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    k = ds.index[0]
    assert not torch.allclose(cache_a.latents[k], cache_b.latents[k])
    video = __import__("cosmos_policy_training.dataset", fromlist=["build_video"]).build_video(
        ds.episodes[0].frames([k[1]]), ds.episodes[0].frames([min(k[1] + 50, ds.episodes[0].num_steps - 1)]), ALOHA)
    assert torch.allclose(cache_b.latents[k], pol.network.encode_wan(video)[0], atol=1e-5)


def _train_args(extra):
    from cosmos_policy_training.cli import add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(extra)


def test_train_with_vae_builds_the_network_with_those_weights_frozen_and_checks_init_and_image_size(
        tiny_episodes, tmp_path):
    from cosmos_policy_training.cli import build_from_args

    vae_cfg = VAEConfig(base_dim=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        v = build_vae(vae_mod.vae_network_config(vae_cfg, 64))
    vae_mod.save_vae_files(v, vae_cfg, tmp_path / "vae")
    base = ["--demos", *map(str, tiny_episodes), "--network", "tiny", "--steps", "1", "--batch", "2",
            "--threads", "1", "--no-progress", "--save-every", "1"]
    trainer, _ = build_from_args(_train_args(base + ["--out", str(tmp_path / "run"), "--vae", str(tmp_path / "vae")]))
    net = trainer.policy.network
    assert net.cfg.vae == vae_cfg
    own = net.vae.state_dict()
    assert set(own) == set(v.state_dict()) and all(torch.equal(own[k], t) for k, t in v.state_dict().items())
    assert not any(p.requires_grad for p in net.vae.parameters())  # frozen
    trainer.train()
    final = trainer.out / "final"
    from safetensors.torch import load_file
    saved = load_file(str(final / "vae.safetensors"))
    assert all(torch.equal(saved[k], t) for k, t in v.state_dict().items())  # unchanged by training, in the checkpoint
    # without --vae the preset's own (random) VAE, as before
    plain, _ = build_from_args(_train_args(base + ["--out", str(tmp_path / "run2")]))
    assert plain.policy.network.cfg.vae == VAEConfig(base_dim=8)
    # continuing a checkpoint: the same VAE is accepted, another is refused
    build_from_args(_train_args(base + ["--out", str(tmp_path / "run3"), "--init", str(final),
                                        "--vae", str(tmp_path / "vae")]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        vae_mod.save_vae_files(build_vae(vae_mod.vae_network_config(vae_cfg, 64)), vae_cfg, tmp_path / "vae2")
    with pytest.raises(SystemExit, match="different one"):
        build_from_args(_train_args(base + ["--out", str(tmp_path / "run4"), "--init", str(final),
                                            "--vae", str(tmp_path / "vae2")]))
    # a VAE trained at another image size is refused before anything is built
    (tmp_path / "vae2" / "vae_report.json").write_text(json.dumps({"image": {"size": 32, "rois": None}}))
    with pytest.raises(SystemExit, match="trained on 32 px images"):
        build_from_args(_train_args(base + ["--out", str(tmp_path / "run5"), "--vae", str(tmp_path / "vae2")]))
    with pytest.raises(SystemExit, match="no such folder"):
        build_from_args(_train_args(base + ["--out", str(tmp_path / "run6"), "--vae", str(tmp_path / "nope")]))


def test_recipe_records_the_trained_vae_and_the_demo_stops_calling_it_random(trained, tmp_path):
    """recipe.json says which VAE a checkpoint's chain was trained with; `make demo`'s note follows it."""
    from cosmos_policy_ros.demo import trained_vae, vae_note
    from cosmos_policy_training.recipes.sim_transfer_cube import vae_record

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert trained_vae(str(ckpt)) is None and "random, frozen VAE" in vae_note(str(ckpt))  # no recipe.json
    rec = vae_record(argparse.Namespace(vae=trained), None)
    assert rec["trained"] and rec["sha256"] == vae_mod.file_sha256(trained / "vae.safetensors")
    assert rec["heldout_psnr_db"] == json.loads((trained / "vae_report.json").read_text())["psnr"]["heldout"]["psnr_db"]
    # a phase continued with --init (no --vae) carries the VAE of the phase it started from
    first = {"command": "phase A", "vae": rec}
    assert vae_record(argparse.Namespace(vae=None), {"command": "phase B", "init_recipe": first}) == rec
    (ckpt / "recipe.json").write_text(json.dumps({"command": "phase C", "init_recipe": {"init_recipe": first}}))
    assert trained_vae(str(ckpt)) == rec
    note = vae_note(str(ckpt))
    assert "random" not in note and "trained VAE" in note and f"{rec['heldout_psnr_db']:.1f} dB" in note
    # the preset's random VAE: nothing recorded, and the demo says so
    (ckpt / "recipe.json").write_text(json.dumps({"command": "phase A"}))
    assert vae_record(argparse.Namespace(vae=None), {"command": "phase A"}) is None
    assert "random, frozen VAE" in vae_note(str(ckpt))


def test_training_clips_pair_each_step_with_its_future_in_the_same_file(sim_episodes):
    """--clips full trains on whole layout videos: every pair is a strided step t of one file and the step
    min(t + 50, T - 1) of the same file, as a training sample of the DiT encodes them."""
    img = vae_mod.image_config_from_args(argparse.Namespace(image_size=16, like=None, whole_frames=True, roi=[],
                                                            image_size_given=True), ALOHA)
    files = [sim_episodes / "episode_0.hdf5", sim_episodes / "episode_1.hdf5"]
    frames, pairs = vae_mod.training_frames(files, ALOHA, img, 30)
    k = 0
    for f in files:
        T = vae_mod.episode_length(f)
        for t in range(0, T, 30):
            t_next = min(t + ALOHA.horizon, T - 1)
            ref = vae_mod.load_frames(f, [t, t_next], ALOHA, img)
            assert torch.equal(frames[pairs[k, 0]], ref[t]) and torch.equal(frames[pairs[k, 1]], ref[t_next]), (f, t)
            k += 1
    assert k == pairs.shape[0]


def test_hard_pixel_term_is_the_mean_of_each_frames_worst_pixels_and_bad_settings_are_refused(tmp_path, sim_episodes):
    """--hard-weight adds the mean error over each frame's worst pixels: a missed 2x2 object in an 8x8 frame
    weighs fully there while the plain L1 dilutes it 16 times."""
    video = torch.zeros(1, 3, 2, 8, 8)
    rec = video.clone()
    rec[:, :, 0, 2:4, 5:7] = 1.0  # a 2x2 "cube" painted wrong in frame 0; frame 1 exact
    frac = 4 / 64
    assert vae_mod.hard_pixel_l1((rec - video).abs(), frac).item() == pytest.approx(0.5)  # frame 0's worst 4: 1; frame 1's: 0
    assert (rec - video).abs().mean().item() == pytest.approx(4 / 128)
    assert vae_mod.hard_pixel_l1((rec - video).abs(), 1.0).item() == pytest.approx(4 / 128)
    for bad in (["--hard-weight", "-1"], ["--hard-fraction", "0"], ["--hard-fraction", "1.5"]):
        with pytest.raises(SystemExit, match="--hard-weight / --hard-fraction: expected"):
            vae_mod.main(["--episodes", str(sim_episodes), "--out", str(tmp_path / "o"), "--image-size", "16",
                          "--whole-frames", "--no-progress", *bad])


def test_demo_png_shows_the_real_frame_in_the_networks_view_beside_the_prediction(tmp_path):
    """The predicted cam_high frames are the network's view (the ROI cut to the table, 64 px): the demo's PNG shows
    the real frame in that view too, so a user compares like with like."""
    from pathlib import Path

    from PIL import Image

    from cosmos_policy_ros.demo import EMBEDDED_CHECKPOINT, model_view, write_comparison_png

    ckpt = Path(__file__).resolve().parents[2] / EMBEDDED_CHECKPOINT
    view = model_view(str(ckpt))
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[130:150, 170:190] = (255, 0, 0)  # a red square inside cam_high's ROI (rows 100-180, columns 140-220)
    seen = view(frame)
    assert seen.shape == (64, 64, 3) and seen.dtype == np.uint8
    red = (seen[..., 0] > 200) & (seen[..., 1] < 50)
    assert 60 < red.sum() < 600  # the 20 px square fills about a quarter of the ROI's width
    assert model_view(str(tmp_path)) is None  # no checkpoint config: two columns, as before
    pred = np.full((64, 64, 3), 90, np.uint8)
    three = write_comparison_png([(1.0, pred, frame)], tmp_path / "a.png", 0.0, view=view)
    two = write_comparison_png([(1.0, pred, frame)], tmp_path / "b.png", 0.0)
    assert Image.open(three).size[0] > Image.open(two).size[0] * 1.4
