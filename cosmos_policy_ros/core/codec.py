"""Vectors <-> latent frames: min-max normalisation, injection by tiling, extraction by averaging.

- Proprio in: ``2 * (x - min) / (max - min) - 1`` per dimension (stats JSON ``proprio_{min,max}``).
- Actions out: ``0.5 * (a + 1) * (max - min) + min`` (``actions_{min,max}``), then clipped to [min, max]
  (the released code never clips; a robot must not get targets outside the data's range).
- A dimension with max == min normalises to 0 and un-normalises to min (no division by zero).
- Injection: flatten the normalised vector row-major, repeat it until it fills C*H*W values, truncate,
  reshape to (C, H, W). Extraction: mean over the complete copies (float64, so an injected vector comes
  back bit-identical). The value is one scalar in [-1, 1] over the whole frame, mapped to [0, 1].
- Relative actions (optional; stats key ``actions_relative_to_proprio``, a 0/1 flag per action dimension,
  absent in NVIDIA's files = all absolute): a flagged dimension's model value is the normalised target minus
  the *current* proprio normalised with the same action statistics, ``n(a) - n(q)``. The network then
  predicts where the arm goes from where it is instead of copying the state into every action; the output
  transform adds ``n(q)`` back before un-normalising, so every consumer still gets absolute targets.
- Snap to closed (optional; stats key ``actions_snap_to_min_below``, one threshold per action dimension in
  robot units, ``actions_min`` = never): after clipping, a target below its threshold becomes ``actions_min``.
  A regressed gripper command lands a little above the demos' fully-closed value (e.g. 0.1 of 0..1), which
  in a position-controlled gripper means no squeeze at all; the snap makes "nearly closed" mean closed.
- Chunk smoothing (optional; stats key ``actions_smoothing_window``, one odd window length per action
  dimension, 1 = none): before clipping, each flagged dimension of a chunk (..., horizon, action_dim) is
  replaced by its centred moving average over the horizon (edges padded with the first / last action). When
  a latent frame holds only one copy of the chunk, every action value is read from a single latent element
  and carries its own error; the demonstrations move smoothly, so averaging neighbours removes most of it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

STAT_KEYS = tuple(f"{p}_{s}" for p in ("actions", "proprio") for s in ("min", "max", "mean", "std", "median"))
#: stats key of the per-dimension relative-action flags (ours; NVIDIA's statistics never carry it)
RELATIVE_KEY = "actions_relative_to_proprio"
#: stats key of the per-dimension snap-to-min thresholds (ours; robot units; actions_min = no snap)
SNAP_KEY = "actions_snap_to_min_below"
#: stats key of the per-dimension chunk smoothing windows (ours; odd lengths, 1 = none)
SMOOTH_KEY = "actions_smoothing_window"


@dataclass
class DatasetStats:
    """Per-dimension dataset statistics (the NVIDIA ``*_dataset_statistics.json`` keys)."""

    actions_min: np.ndarray
    actions_max: np.ndarray
    proprio_min: np.ndarray
    proprio_max: np.ndarray
    extra: Dict[str, np.ndarray]  # mean / std / median etc., carried along unchanged

    def __post_init__(self):
        for name in ("actions_min", "actions_max", "proprio_min", "proprio_max"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.ndim != 1 or not np.all(np.isfinite(arr)):
                raise ValueError(f"stats {name}: expected a finite 1-D array, got shape {arr.shape}")
            setattr(self, name, arr)
        if self.actions_min.shape != self.actions_max.shape:
            raise ValueError(f"stats: expected actions_min/max of one shape, got {self.actions_min.shape} vs {self.actions_max.shape}")
        if self.proprio_min.shape != self.proprio_max.shape:
            raise ValueError(f"stats: expected proprio_min/max of one shape, got {self.proprio_min.shape} vs {self.proprio_max.shape}")
        if np.any(self.actions_max < self.actions_min) or np.any(self.proprio_max < self.proprio_min):
            raise ValueError("stats: expected max >= min in every dimension")
        if RELATIVE_KEY in self.extra:
            flags = np.asarray(self.extra[RELATIVE_KEY], dtype=np.float64)
            if flags.shape != self.actions_min.shape or not np.all(np.isin(flags, (0.0, 1.0))):
                raise ValueError(f"stats {RELATIVE_KEY}: expected {self.actions_min.shape[0]} flags of 0 or 1, "
                                 f"got {flags.tolist()}")
            if flags.any() and self.actions_min.shape != self.proprio_min.shape:
                raise ValueError(f"stats {RELATIVE_KEY}: relative actions need proprio of the action's layout, got "
                                 f"action dim {self.actions_min.shape[0]} and proprio dim {self.proprio_min.shape[0]}")
            self.extra[RELATIVE_KEY] = flags
        if SNAP_KEY in self.extra:
            thr = np.asarray(self.extra[SNAP_KEY], dtype=np.float64)
            if thr.shape != self.actions_min.shape or not np.all(np.isfinite(thr)):
                raise ValueError(f"stats {SNAP_KEY}: expected {self.actions_min.shape[0]} finite thresholds, "
                                 f"got {np.asarray(self.extra[SNAP_KEY]).tolist()}")
            self.extra[SNAP_KEY] = thr
        if SMOOTH_KEY in self.extra:
            win = np.asarray(self.extra[SMOOTH_KEY], dtype=np.float64)
            if (win.shape != self.actions_min.shape or not np.all(np.isfinite(win)) or np.any(win != np.round(win))
                    or np.any(win < 1) or np.any(win % 2 != 1)):
                raise ValueError(f"stats {SMOOTH_KEY}: expected {self.actions_min.shape[0]} odd window lengths >= 1, "
                                 f"got {np.asarray(self.extra[SMOOTH_KEY]).tolist()}")
            self.extra[SMOOTH_KEY] = win

    @property
    def smoothing_windows(self) -> Optional[np.ndarray]:
        """(action_dim,) int moving-average window per action dimension over a chunk (None: no smoothing)."""
        win = self.extra.get(SMOOTH_KEY)
        return None if win is None else np.asarray(win).astype(np.int64)

    def with_smoothing(self, window: int, dims: Optional[Sequence[int]] = None) -> "DatasetStats":
        """A copy whose action ``dims`` (default: all) are smoothed over a chunk with a centred moving average of
        ``window`` (odd) actions; window 1 removes the smoothing."""
        extra = {k: v for k, v in self.extra.items() if k != SMOOTH_KEY}
        if int(window) > 1:
            win = np.ones(self.action_dim)
            win[list(range(self.action_dim)) if dims is None else list(dims)] = int(window)
            extra[SMOOTH_KEY] = win
        return DatasetStats(self.actions_min.copy(), self.actions_max.copy(), self.proprio_min.copy(),
                            self.proprio_max.copy(), extra)

    @property
    def snap_thresholds(self) -> Optional[np.ndarray]:
        """(action_dim,) targets below these become ``actions_min`` (None: no snap)."""
        return self.extra.get(SNAP_KEY)

    def with_snap(self, dims: Sequence[int], below: float) -> "DatasetStats":
        """A copy whose action ``dims`` snap to their minimum when the target is below ``below`` (robot
        units; no dims: no snap)."""
        extra = {k: v for k, v in self.extra.items() if k != SNAP_KEY}
        if len(dims):
            thr = self.actions_min.copy()
            thr[list(dims)] = float(below)
            extra[SNAP_KEY] = thr
        return DatasetStats(self.actions_min.copy(), self.actions_max.copy(), self.proprio_min.copy(),
                            self.proprio_max.copy(), extra)

    @property
    def relative_actions(self) -> np.ndarray:
        """(action_dim,) bool: dimensions whose model value is relative to the current proprio."""
        flags = self.extra.get(RELATIVE_KEY)
        if flags is None:
            return np.zeros(self.action_dim, dtype=bool)
        return np.asarray(flags) > 0.5

    def with_relative_actions(self, dims: Sequence[int]) -> "DatasetStats":
        """A copy whose actions ``dims`` are relative to the current proprio (empty: all absolute)."""
        flags = np.zeros(self.action_dim)
        flags[list(dims)] = 1.0
        extra = {k: v for k, v in self.extra.items() if k != RELATIVE_KEY}
        if flags.any():
            extra[RELATIVE_KEY] = flags
        return DatasetStats(self.actions_min.copy(), self.actions_max.copy(), self.proprio_min.copy(),
                            self.proprio_max.copy(), extra)

    @property
    def action_dim(self) -> int:
        return int(self.actions_min.shape[0])

    @property
    def proprio_dim(self) -> int:
        return int(self.proprio_min.shape[0])

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> "DatasetStats":
        """From the parsed stats JSON; missing min/max keys raise naming the key."""
        missing = [k for k in ("actions_min", "actions_max", "proprio_min", "proprio_max") if k not in d]
        if missing:
            raise ValueError(f"dataset statistics: missing keys {missing}; got {sorted(d)}")
        extra = {k: np.asarray(v, dtype=np.float64) for k, v in d.items()
                 if k not in ("actions_min", "actions_max", "proprio_min", "proprio_max")}
        return cls(np.asarray(d["actions_min"]), np.asarray(d["actions_max"]),
                   np.asarray(d["proprio_min"]), np.asarray(d["proprio_max"]), extra)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "DatasetStats":
        """Read the stats JSON file."""
        with open(path, "r", encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> Dict[str, list]:
        """JSON-able dict with the NVIDIA key names."""
        out = {"actions_min": self.actions_min.tolist(), "actions_max": self.actions_max.tolist(),
               "proprio_min": self.proprio_min.tolist(), "proprio_max": self.proprio_max.tolist()}
        out.update({k: np.asarray(v).tolist() for k, v in self.extra.items()})
        return out

    def save(self, path: Union[str, Path]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)


def _minmax_normalize(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    rng = hi - lo
    safe = np.where(rng > 0, rng, 1.0)
    return np.where(rng > 0, 2.0 * (x - lo) / safe - 1.0, 0.0)


def normalize_proprio(proprio: np.ndarray, stats: DatasetStats) -> np.ndarray:
    """(..., proprio_dim) robot units -> [-1, 1] (values outside the data range go outside [-1, 1])."""
    x = np.asarray(proprio, dtype=np.float64)
    if x.shape[-1] != stats.proprio_dim:
        raise ValueError(f"proprio: expected {stats.proprio_dim} values, got shape {x.shape}")
    return _minmax_normalize(x, stats.proprio_min, stats.proprio_max)


def action_reference(proprio: Optional[np.ndarray], stats: DatasetStats) -> np.ndarray:
    """(..., action_dim) what relative action dimensions are measured from: ``n(q)`` (the current proprio
    normalised with the *action* statistics) on flagged dimensions, 0 elsewhere. All zeros (and ``proprio``
    not needed) when every dimension is absolute."""
    rel = stats.relative_actions
    if not rel.any():
        return np.zeros(stats.action_dim)
    if proprio is None:
        raise ValueError("relative actions (stats actions_relative_to_proprio): expected the current proprio")
    q = np.asarray(proprio, dtype=np.float64)
    if q.shape[-1] != stats.action_dim or not np.all(np.isfinite(q)):
        raise ValueError(f"relative actions: expected a finite proprio of {stats.action_dim} values, got shape {q.shape}")
    return np.where(rel, _minmax_normalize(q, stats.actions_min, stats.actions_max), 0.0)


def _reference_like(actions: np.ndarray, proprio: Optional[np.ndarray], stats: DatasetStats) -> np.ndarray:
    """:func:`action_reference` shaped to broadcast against ``actions``: one proprio per chunk, over its horizon."""
    ref = action_reference(proprio, stats)
    return ref[..., None, :] if actions.ndim > ref.ndim else ref


def normalize_actions(actions: np.ndarray, stats: DatasetStats, proprio: Optional[np.ndarray] = None) -> np.ndarray:
    """(..., H, action_dim) or (..., action_dim) robot units -> model units: [-1, 1], minus
    :func:`action_reference` of ``proprio`` (..., action_dim) on relative dimensions (proprio broadcasts over
    the horizon axis; needed only when the stats flag relative dimensions)."""
    x = np.asarray(actions, dtype=np.float64)
    if x.shape[-1] != stats.action_dim:
        raise ValueError(f"actions: expected {stats.action_dim} values per action, got shape {x.shape}")
    out = _minmax_normalize(x, stats.actions_min, stats.actions_max)
    if stats.relative_actions.any():
        out = out - _reference_like(out, proprio, stats)
    return out


def _minmax_unnormalize(a: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return 0.5 * (a + 1.0) * (hi - lo) + lo  # max == min gives lo: the guard is implicit


def smooth_chunk(actions: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """(..., horizon, action_dim) -> same shape: each dimension ``d`` replaced by its centred moving average
    over ``windows[d]`` (odd) actions along the horizon, edges padded with the first / last action."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"smooth_chunk: expected (..., horizon, action_dim), got shape {a.shape}")
    out = a.copy()
    for w in sorted({int(v) for v in windows if int(v) > 1}):
        dims = [d for d, v in enumerate(windows) if int(v) == w]
        half = w // 2
        x = a[..., dims]  # (..., H, k)
        padded = np.concatenate([np.repeat(x[..., :1, :], half, axis=-2), x,
                                 np.repeat(x[..., -1:, :], half, axis=-2)], axis=-2)  # (..., H + w - 1, k)
        c = np.cumsum(padded, axis=-2)
        c = np.concatenate([np.zeros_like(c[..., :1, :]), c], axis=-2)
        out[..., dims] = (c[..., w:, :] - c[..., :-w, :]) / w  # window sums, (..., H, k)
    return out


def unnormalize_actions(actions: np.ndarray, stats: DatasetStats, clip: bool = True,
                        proprio: Optional[np.ndarray] = None) -> Tuple[np.ndarray, bool]:
    """(..., action_dim) model units -> robot units (the mirror of :func:`normalize_actions`: relative
    dimensions get ``n(proprio)`` added back first); returns (actions, clipped?) where clipped tells whether
    any value fell outside [actions_min, actions_max] and was clipped (only when ``clip``). Dimensions with a
    snap threshold (stats ``actions_snap_to_min_below``) then snap to their minimum below it. A chunk
    (..., horizon, action_dim) is smoothed first where the stats give ``actions_smoothing_window``."""
    a = np.asarray(actions, dtype=np.float64)
    if a.shape[-1] != stats.action_dim:
        raise ValueError(f"actions: expected {stats.action_dim} values per action, got shape {a.shape}")
    if stats.relative_actions.any():
        a = a + _reference_like(a, proprio, stats)
    out = _minmax_unnormalize(a, stats.actions_min, stats.actions_max)
    windows = stats.smoothing_windows
    if windows is not None and out.ndim >= 2:
        out = smooth_chunk(out, windows)
    if not clip:
        return out, False
    clipped = np.clip(out, stats.actions_min, stats.actions_max)
    was_clipped = bool(np.any(clipped != out))
    thr = stats.snap_thresholds
    if thr is not None:
        clipped = np.where(clipped < thr, stats.actions_min, clipped)
    return clipped, was_clipped


def unnormalize_proprio(proprio: np.ndarray, stats: DatasetStats) -> np.ndarray:
    """(..., proprio_dim) in [-1, 1] -> robot units (not clipped: a prediction, not a command)."""
    p = np.asarray(proprio, dtype=np.float64)
    if p.shape[-1] != stats.proprio_dim:
        raise ValueError(f"proprio: expected {stats.proprio_dim} values, got shape {p.shape}")
    return _minmax_unnormalize(p, stats.proprio_min, stats.proprio_max)


# ---- latent injection / extraction (torch, batched) ---------------------------------------------
def inject(vector: torch.Tensor, frame_shape: Sequence[int]) -> torch.Tensor:
    """(B, n) normalised vectors -> (B, C, H, W) latent frames filled by row-major tiling.

    The vector is repeated ceil(C*H*W / n) times and truncated to C*H*W values.
    """
    if vector.ndim != 2:
        raise ValueError(f"inject: expected a (B, n) tensor, got shape {tuple(vector.shape)}")
    c, h, w = (int(v) for v in frame_shape)
    total = c * h * w
    n = vector.shape[1]
    if n > total:
        raise ValueError(f"inject: a vector of {n} values does not fit a latent frame of {total} values")
    reps = math.ceil(total / n)
    return vector.repeat(1, reps)[:, :total].reshape(vector.shape[0], c, h, w)


def extract(frame: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) latent frames -> (B, n) vectors: mean over the complete copies, computed in float64.

    With the float64 mean, ``extract(inject(v))`` returns v bit-identically (k * v is exact in float64).
    """
    if frame.ndim != 4:
        raise ValueError(f"extract: expected a (B, C, H, W) tensor, got shape {tuple(frame.shape)}")
    flat = frame.reshape(frame.shape[0], -1).to(torch.float64)
    copies = flat.shape[1] // n
    if copies < 1:
        raise ValueError(f"extract: a frame of {flat.shape[1]} values holds no complete copy of {n} values")
    return flat[:, : copies * n].reshape(frame.shape[0], copies, n).mean(dim=1)


def inject_value(value: torch.Tensor, frame_shape: Sequence[int]) -> torch.Tensor:
    """(B,) values in [-1, 1] -> (B, C, H, W) constant frames."""
    c, h, w = (int(v) for v in frame_shape)
    return value.reshape(-1, 1, 1, 1).expand(-1, c, h, w).clone()


def extract_value(frame: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) value frames -> (B,) float64 in [-1, 1] units (frame mean, not clamped)."""
    return frame.reshape(frame.shape[0], -1).to(torch.float64).mean(dim=1)


def value_to_unit(v):
    """Model value in [-1, 1] -> [0, 1]: ``(v + 1) / 2`` clamped."""
    if isinstance(v, torch.Tensor):
        return ((v + 1.0) / 2.0).clamp(0.0, 1.0)
    return np.clip((np.asarray(v, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)


def unit_to_value(u):
    """[0, 1] value target -> model units [-1, 1] (training)."""
    if isinstance(u, torch.Tensor):
        return u * 2.0 - 1.0
    return np.asarray(u, dtype=np.float64) * 2.0 - 1.0
