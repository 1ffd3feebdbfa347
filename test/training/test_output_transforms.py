"""`python -m cosmos_policy_training.output_transforms`: set a checkpoint's smoothing and gripper snap, which
every inference path then applies (real checkpoint loader and policy, tiny real network)."""
from __future__ import annotations

import numpy as np
import pytest

from cosmos_policy_ros.core.codec import DatasetStats
from cosmos_policy_training.output_transforms import main, set_output_transforms


def _write_stats(d):
    lo = np.r_[np.full(6, -1.0), 0.0, np.full(6, -1.0), 0.0]
    hi = np.r_[np.full(6, 1.0), 1.0, np.full(6, 1.0), 1.0]
    DatasetStats.from_dict({"actions_min": lo, "actions_max": hi, "proprio_min": lo, "proprio_max": hi}).save(
        d / "dataset_statistics.json")


def test_output_transforms_are_written_into_the_checkpoint_statistics_and_can_be_removed(tmp_path, capsys):
    _write_stats(tmp_path)
    assert main([str(tmp_path), "--smoothing-window", "7", "--gripper-snap", "0.25"]) == 0
    st = DatasetStats.load(tmp_path / "dataset_statistics.json")
    assert st.smoothing_windows.tolist() == [7] * 14
    assert st.snap_thresholds[[6, 13]].tolist() == [0.25, 0.25]
    assert st.snap_thresholds[0] == -1.0  # arms: the minimum, never snapped
    assert "smoothing windows [7" in capsys.readouterr().out
    st = set_output_transforms(tmp_path, smoothing_window=1)  # snap kept, smoothing removed
    assert st.smoothing_windows is None and st.snap_thresholds is not None
    st = set_output_transforms(tmp_path, gripper_snap=-1)
    assert st.snap_thresholds is None
    with pytest.raises(ValueError, match="odd length"):
        set_output_transforms(tmp_path, smoothing_window=6)
    with pytest.raises(FileNotFoundError, match="checkpoint folder"):
        set_output_transforms(tmp_path / "missing", smoothing_window=7)
