"""Set a checkpoint's action output transforms (kept in its statistics file, so every inference path applies
them): chunk smoothing and gripper snap-to-closed. No retraining; the weights are untouched.

    python -m cosmos_policy_training.output_transforms CKPT --smoothing-window 7 [--gripper-snap 0.25]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence, Union

from cosmos_policy_ros.core.checkpoint import STATS_FILE
from cosmos_policy_ros.core.codec import DatasetStats
from cosmos_policy_ros.core.robot import GRIPPER_INDICES


def set_output_transforms(ckpt: Union[str, Path], smoothing_window: Optional[int] = None,
                          gripper_snap: Optional[float] = None) -> DatasetStats:
    """Rewrite ``ckpt``'s statistics with these transforms (None: leave that one as it is; window 1 or a
    negative snap: remove it); returns the new statistics."""
    path = Path(ckpt) / STATS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt}: expected a checkpoint folder with {STATS_FILE}")
    stats = DatasetStats.load(path)
    if smoothing_window is not None:
        if int(smoothing_window) < 1 or int(smoothing_window) % 2 != 1:
            raise ValueError(f"smoothing window: expected an odd length >= 1, got {smoothing_window}")
        stats = stats.with_smoothing(int(smoothing_window))
    if gripper_snap is not None:
        if gripper_snap >= 1.0:
            raise ValueError(f"gripper snap: expected a threshold below 1 (fully open), got {gripper_snap}")
        stats = stats.with_snap(GRIPPER_INDICES if gripper_snap >= 0 else (), gripper_snap)
    stats.save(path)
    return stats


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cosmos_policy_training.output_transforms",
                                description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--smoothing-window", type=int, default=None,
                   help="centred moving average over this many actions of each chunk (odd; 1 = off)")
    p.add_argument("--gripper-snap", type=float, default=None,
                   help="gripper targets below this (0..1) become fully closed (negative = off)")
    args = p.parse_args(argv)
    st = set_output_transforms(args.checkpoint, args.smoothing_window, args.gripper_snap)
    win, thr = st.smoothing_windows, st.snap_thresholds
    print(f"{args.checkpoint}: smoothing windows {None if win is None else win.tolist()}, "
          f"snap thresholds {None if thr is None else thr.tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
