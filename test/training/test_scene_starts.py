"""Scene-start files (``generate_demos --scene-starts``): extra scenes for the policy's first chunk, rendered
only where their single sample reads, from the real sim expert into the real dataset and latent cache."""
from __future__ import annotations

import numpy as np
import torch

from cosmos_policy_ros.core.images import ImageConfig
from cosmos_policy_ros.core.layout import ALOHA
from cosmos_policy_ros.sim.generate_demos import generate
from cosmos_policy_training.dataset import DatasetConfig, EpisodeDataset, value_targets
from cosmos_policy_training.episodes import read_episode


def test_scene_start_files_hold_the_whole_expert_episode_but_train_only_its_first_chunk(tmp_path):
    full = generate("transfer_cube", 1, tmp_path / "full", image_size=(32, 40), seed_start=7, progress=False)[0]
    start = generate("transfer_cube", 1, tmp_path / "start", image_size=(32, 40), seed_start=7, progress=False,
                     scene_starts=True)[0]
    a, b = read_episode(full), read_episode(start)
    # the same expert episode (proprio, actions, outcome); only steps 0 and 50 are rendered, losslessly
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_array_equal(a.qpos, b.qpos)
    assert b.success and int(b.attrs["sample_until"]) == 1
    for cam in a.images:
        np.testing.assert_array_equal(b.images[cam][[0, 50]], a.images[cam][[0, 50]])
        assert not b.images[cam][1:50].any() and not b.images[cam][51:].any()
    assert start.stat().st_size < full.stat().st_size / 5

    # reading only the rendered frames gives the same sample as reading all of them
    part = read_episode(start, steps=[0, 50])
    for cam in a.images:
        np.testing.assert_array_equal(part.images[cam], b.images[cam])

    image_cfg = ImageConfig(squash_size=16, size=16, crop_area=1.0)
    ds = EpisodeDataset.from_paths([full, start], ALOHA, image_cfg, DatasetConfig(stride=4))
    assert [t for e, t in ds.index if e == 1] == [0]  # the scene-start file: its first step only
    assert ds.episodes[1].images.shape[0] == 2  # and only the two frames it reads are kept in memory
    assert len([1 for e, _ in ds.index if e == 0]) == 50
    s0, s1 = ds.sample(0), ds.sample(ds.index.index((1, 0)))
    # same sample as the full demo's first one: chunk, current and future proprio and images, value target
    torch.testing.assert_close(s1.actions, s0.actions)
    torch.testing.assert_close(s1.proprio_next, s0.proprio_next)
    assert torch.equal(s1.images_now, s0.images_now) and torch.equal(s1.images_next, s0.images_next)
    assert float(s1.value) == float(s0.value)
    assert abs(float(s1.value) - value_targets(200, 1.0, 50)[0]) < 1e-6
    assert ds.first_sample_indices() == [0, ds.index.index((1, 0))]


def test_grasp_phase_files_reach_their_sample_steps_off_the_path_and_train_there_only(tmp_path):
    clean = generate("transfer_cube", 1, tmp_path / "clean", image_size=(32, 40), seed_start=9, progress=False,
                     sample_steps=(0, 50, 100))[0]
    noisy = generate("transfer_cube", 1, tmp_path / "noisy", image_size=(32, 40), seed_start=9, progress=False,
                     sample_steps=(0, 50, 100), execution_noise=0.03, noise_hold=25, noise_until=50)[0]
    a, b = read_episode(clean), read_episode(noisy)
    assert list(b.attrs["sample_steps"]) == [0, 50, 100]
    rendered = [0, 50, 100, 150]  # each sample step and its future, nothing else
    for cam in b.images:
        assert all(b.images[cam][t].any() for t in rendered)
        assert not np.delete(b.images[cam], rendered, axis=0).any()
    # the noise moved the arms before step 50 (the state the grasp chunk starts from) ...
    assert np.abs(b.qpos[50, :6] - a.qpos[50, :6]).max() > 0.01
    assert np.abs(b.qpos[1:50] - a.qpos[1:50]).max() > 0.01
    # ... and the recorded actions are still the expert's, which lead back to the nominal path after it
    np.testing.assert_allclose(b.action[:50], a.action[:50], atol=1e-6)
    assert np.abs(b.qpos[-1] - a.qpos[-1])[:6].max() < np.abs(b.qpos[50] - a.qpos[50])[:6].max()
    assert b.success

    image_cfg = ImageConfig(squash_size=16, size=16, crop_area=1.0)
    ds = EpisodeDataset.from_paths([noisy], ALOHA, image_cfg, DatasetConfig(stride=4))
    assert [t for _, t in ds.index] == [0, 50, 100]  # whatever the stride: 50 is no multiple of 4
    assert ds.episodes[0].images.shape[0] == 4
    s = ds.sample(1)
    ep = ds.episodes[0]
    torch.testing.assert_close(s.actions, ep.actions[50:100].reshape(-1))  # the chunk from step 50
    assert torch.equal(s.images_now, ep.frames([50])[0]) and torch.equal(s.images_next, ep.frames([100])[0])
