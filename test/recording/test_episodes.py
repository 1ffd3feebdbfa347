"""Episode HDF5 API: our layout round-trips; ALOHA demo files (raw / JPEG, 50 Hz) and simulated demos read."""
from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from cosmos_policy_training.convert import ConvertConfig, convert_all
from cosmos_policy_training.episodes import (
    EpisodeWriter, read_episode, success_from_outcome, write_episode)


def _smooth_frames(T, h=48, w=64, seed=0):
    """Frames JPEG can keep close (gradients + a per-step offset), unlike noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1)
    return np.stack([(base + 7 * t + seed) % 256 for t in range(T)]).astype(np.uint8)


def test_raw_round_trip_keeps_every_value_and_label(tmp_path):
    T = 6
    rng = np.random.default_rng(1)
    qpos, action = rng.normal(size=(T, 14)), rng.normal(size=(T, 14))
    images = {"cam_high": _smooth_frames(T), "cam_left_wrist": _smooth_frames(T, seed=3)}
    path = write_episode(tmp_path / "ep.hdf5", qpos, action, images, "fold the towel", True, 1.0,
                         timestamps=np.arange(T) / 25.0, extra_attrs={"policy_name": "ckpt-7", "episode_id": "e1"})
    ep = read_episode(path)
    assert ep.num_steps == T and ep.fps == 25.0
    np.testing.assert_array_equal(ep.qpos, qpos)
    np.testing.assert_array_equal(ep.action, action)
    for cam, frames in images.items():
        np.testing.assert_array_equal(ep.images[cam], frames)
    assert (ep.task, ep.success, ep.success_score) == ("fold the towel", True, 1.0)
    assert ep.attrs["policy_name"] == "ckpt-7" and ep.attrs["episode_id"] == "e1"
    np.testing.assert_allclose(ep.timestamps, np.arange(T) / 25.0)
    # the reference's layout, readable by plain h5py code
    with h5py.File(path) as f:
        assert f["observations/images/cam_high"].shape == (T, 48, 64, 3)
        assert f["observations/qpos"].shape == (T, 14) and f["action"].shape == (T, 14)
        assert f.attrs["task_description"] == "fold the towel" and bool(f.attrs["success"])


def test_jpeg_round_trip_and_incremental_writer(tmp_path):
    T = 4
    frames = _smooth_frames(T)
    w = EpisodeWriter(tmp_path / "j.hdf5", ["cam_high"], jpeg_quality=95)
    for t in range(T):
        w.append(np.full(14, t, float), np.full(14, -t, float), {"cam_high": frames[t]})
    assert not (tmp_path / "j.hdf5").exists(), "a half-written episode must not be visible"
    w.close("stack cups", False, 0.5)
    ep = read_episode(tmp_path / "j.hdf5")
    assert ep.images["cam_high"].shape == frames.shape
    assert np.abs(ep.images["cam_high"].astype(int) - frames).mean() < 6.0
    assert (ep.success, ep.success_score) == (False, 0.5)
    np.testing.assert_array_equal(ep.qpos[:, 0], np.arange(T))


def test_reads_aloha_compressed_demo_and_downsamples_50_to_25_hz(tmp_path):
    """ALOHA recorder format: padded JPEG rows, compress_len, no fps attr; 50 Hz -> 25 Hz keeps obs[t]/action[t]."""
    from PIL import Image

    T = 10
    frames = _smooth_frames(T)
    encoded = []
    for fr in frames:
        buf = io.BytesIO()
        Image.fromarray(fr).save(buf, format="JPEG", quality=95)
        encoded.append(np.frombuffer(buf.getvalue(), np.uint8))
    width = max(len(e) for e in encoded) + 17  # ALOHA pads to the longest frame (plus slack)
    path = tmp_path / "episode_0.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = False
        f.attrs["compress"] = True
        obs = f.create_group("observations")
        obs.create_dataset("qpos", data=np.arange(T * 14, dtype=float).reshape(T, 14))
        obs.create_dataset("qvel", data=np.zeros((T, 14)))
        obs.create_dataset("effort", data=np.zeros((T, 14)))
        f.create_dataset("action", data=np.arange(T * 14, dtype=float).reshape(T, 14) + 0.5)
        img = obs.create_group("images")
        for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist"):
            padded = np.zeros((T, width), np.uint8)
            for t, e in enumerate(encoded):
                padded[t, :len(e)] = e
            img.create_dataset(cam, data=padded)
        f.create_dataset("compress_len", data=np.array([[len(e) for e in encoded]] * 3, dtype=float))
    ep = read_episode(path)
    assert ep.fps is None and ep.images["cam_high"].shape == (T, 48, 64, 3)
    assert np.abs(ep.images["cam_high"].astype(int) - frames).mean() < 6.0

    results = convert_all([str(path)], ConvertConfig(output_dir=str(tmp_path / "out"), task="insert peg",
                                                     image_size=(24, 32)), progress=False)
    assert [r.status for r in results] == ["ok"], results
    out = read_episode(tmp_path / "out" / "episode_0.hdf5")
    assert out.num_steps == 5 and out.fps == 25.0
    np.testing.assert_array_equal(out.qpos, np.arange(T * 14, dtype=float).reshape(T, 14)[::2])
    np.testing.assert_array_equal(out.action, np.arange(T * 14, dtype=float).reshape(T, 14)[::2] + 0.5)
    assert out.images["cam_high"].shape == (5, 24, 32, 3)
    assert out.task == "insert peg" and out.success and out.success_score == 1.0  # demos count as successes


def test_reads_simulated_demo_layout(tmp_path):
    """The sim demo generator's layout: qpos, qvel, action, raw images, attrs sim/task/success/score."""
    T = 3
    path = tmp_path / "sim.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs.update({"sim": True, "task_description": "transfer cube", "success": True, "success_score": 1.0})
        f.create_dataset("observations/qpos", data=np.ones((T, 14)))
        f.create_dataset("observations/qvel", data=np.zeros((T, 14)))
        f.create_dataset("action", data=np.ones((T, 14)) * 2)
        f.create_dataset("observations/images/top", data=_smooth_frames(T))
    ep = read_episode(path)
    assert ep.sim and ep.task == "transfer cube" and ep.success and ep.qvel.shape == (T, 14)
    np.testing.assert_array_equal(ep.images["top"], _smooth_frames(T))


def test_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError, match="same"):
        write_episode(tmp_path / "x.hdf5", np.zeros((3, 14)), np.zeros((4, 14)), {}, "t", True, 1.0)
    with pytest.raises(ValueError, match="frames"):
        write_episode(tmp_path / "x.hdf5", np.zeros((3, 14)), np.zeros((3, 14)),
                      {"cam_high": np.zeros((2, 4, 4, 3), np.uint8)}, "t", True, 1.0)
    assert not (tmp_path / "x.hdf5").exists()


@pytest.mark.parametrize("outcome,score,expected", [
    ("success", None, (True, 1.0)), ("failure", None, (False, 0.0)), ("partial", 0.3, (False, 0.3)),
    ("partial", None, (False, 0.5))])
def test_outcome_to_success_score(outcome, score, expected):
    assert success_from_outcome(outcome, score) == expected
    success, s = success_from_outcome("", None)
    assert not success and np.isnan(s)
    with pytest.raises(ValueError):
        success_from_outcome("maybe")
