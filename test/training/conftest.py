"""Fixtures: small synthetic ALOHA episodes written with the real episode writer."""
from __future__ import annotations

import numpy as np
import pytest

from cosmos_policy_training.episodes import write_episode

CAMS = ("cam_left_wrist", "cam_right_wrist", "cam_high")
TASK = "transfer the cube"


def make_episode(path, T: int, seed: int, size=(48, 64), success: bool = True, score: float = 1.0, kind="demo"):
    """A smooth joint trajectory whose images show a bright square that moves with the arm, so images,
    proprio and actions are consistent (the next qpos is the current action)."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 14)
    t = np.arange(T + 1)[:, None]
    traj = 0.6 * np.sin(0.05 * t + phase) + rng.normal(0, 0.01, (T + 1, 14))
    traj[:, 6] = traj[:, 13] = 0.5 + 0.4 * np.sin(0.03 * t[:, 0] + seed)
    qpos, action = traj[:-1], traj[1:]
    h, w = size
    images = {}
    for ci, cam in enumerate(CAMS):
        fr = np.full((T, h, w, 3), 40 + 30 * ci, np.uint8)
        for k in range(T):
            y = int((0.5 + 0.4 * qpos[k, ci]) * (h - 12))
            x = int((0.5 + 0.4 * qpos[k, ci + 7]) * (w - 12))
            fr[k, y:y + 12, x:x + 12] = (230, 60 + 50 * ci, 20)
        images[cam] = fr
    return write_episode(path, qpos, action, images, task=TASK, success=success, success_score=score,
                         fps=25.0, sim=True, extra_attrs={"policy_name": kind})


@pytest.fixture(scope="session")
def tiny_episodes(tmp_path_factory):
    """Two 60-step demo episodes."""
    d = tmp_path_factory.mktemp("episodes")
    return [make_episode(d / f"episode_{i}.hdf5", 60, seed=i) for i in range(2)]
