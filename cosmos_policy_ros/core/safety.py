"""Safety filter for 14-d ALOHA joint commands: the last check before anything reaches the motors.

The Interbotix driver does not check joint limits and runs the motors without profile smoothing, so every
command passes through :func:`filter_action` first. Checks, in order:

1. shape (exactly ``action_dim`` values) and finiteness: a bad action is a *fault*; the filter returns the
   reference (hold) and the caller keeps holding;
2. arm joint position limits (clamp) and gripper range (clamp);
3. per-tick change limit relative to the reference (last command sent), in both directions (clamp);
4. optional maximum deviation of arm joints from the measured position (clamp), 0 disables.

The result carries what is actually sent and every reason it differs from what was asked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .robot import ACTION_DIM, ARM_INDICES, DEFAULT_ARM_LIMITS, GRIPPER_INDICES, JOINT_NAMES


@dataclass
class SafetyConfig:
    """Limits, in robot units (rad for arm joints, normalised 0..1 command for grippers).

    arm_limits: 6 (lower, upper) pairs per arm joint, applied to both arms.
    max_step_arm / max_step_gripper: largest change per tick relative to the last command (both signs).
    max_deviation: largest |command - measured| for arm joints (rad); 0 disables.
    """

    arm_limits: Sequence[Tuple[float, float]] = DEFAULT_ARM_LIMITS
    gripper_min: float = 0.0
    gripper_max: float = 1.0
    max_step_arm: float = 0.1
    max_step_gripper: float = 0.2
    max_deviation: float = 0.0
    action_dim: int = ACTION_DIM

    def __post_init__(self):
        limits = np.asarray(self.arm_limits, dtype=np.float64)
        if limits.shape != (6, 2):
            raise ValueError(f"arm_limits: expected 6 (lower, upper) pairs, got shape {limits.shape}")
        if not np.all(np.isfinite(limits)) or np.any(limits[:, 0] >= limits[:, 1]):
            raise ValueError(f"arm_limits: expected finite lower < upper for every joint, got {limits.tolist()}")
        if not (math.isfinite(self.gripper_min) and math.isfinite(self.gripper_max) and self.gripper_min < self.gripper_max):
            raise ValueError(f"gripper range: expected finite min < max, got [{self.gripper_min}, {self.gripper_max}]")
        for name in ("max_step_arm", "max_step_gripper"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name}: expected a positive finite number, got {v}")
        if not (self.max_deviation >= 0 and math.isfinite(self.max_deviation)):
            raise ValueError(f"max_deviation: expected >= 0 (0 disables), got {self.max_deviation}")
        if self.action_dim != ACTION_DIM:
            raise ValueError(f"action_dim: expected {ACTION_DIM} (ALOHA), got {self.action_dim}")
        self.arm_limits = tuple((float(lo), float(hi)) for lo, hi in limits)
        lower = np.empty(ACTION_DIM)
        upper = np.empty(ACTION_DIM)
        step = np.empty(ACTION_DIM)
        for side in range(2):
            lower[side * 7:side * 7 + 6] = limits[:, 0]
            upper[side * 7:side * 7 + 6] = limits[:, 1]
            step[side * 7:side * 7 + 6] = self.max_step_arm
        for g in GRIPPER_INDICES:
            lower[g], upper[g], step[g] = self.gripper_min, self.gripper_max, self.max_step_gripper
        # Per-dimension vectors, (14,) each.
        self._lower, self._upper, self._step = lower, upper, step

    @property
    def lower(self) -> np.ndarray:
        return self._lower

    @property
    def upper(self) -> np.ndarray:
        return self._upper

    @property
    def step(self) -> np.ndarray:
        return self._step


@dataclass
class SafetyResult:
    """What the filter decided for one action.

    command: (14,) what to send. fault: the action was unusable (NaN / wrong length) and ``command`` is the
    reference (hold). reasons: human-readable reasons, one per kind of change ("joint_limit: left_elbow ...").
    kinds: the machine-readable kinds ("shape", "nonfinite", "joint_limit", "gripper_range", "step",
    "deviation").
    """

    command: np.ndarray
    fault: bool = False
    reasons: List[str] = field(default_factory=list)
    kinds: List[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when the command differs from the requested action (or the action was refused)."""
        return bool(self.kinds)


def _names(mask: np.ndarray) -> str:
    return ",".join(JOINT_NAMES[i] for i in np.flatnonzero(mask))


def filter_action(action, reference: np.ndarray, config: SafetyConfig,
                  measured: Optional[np.ndarray] = None) -> SafetyResult:
    """Check and limit one action.

    action: requested (14,) command; anything else (wrong length, NaN, inf, not numeric) is a fault.
    reference: (14,) finite last command actually sent (or the measured position before the first one).
    measured: (14,) current measured position for the deviation check (optional).
    """
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != (config.action_dim,) or not np.all(np.isfinite(ref)):
        raise ValueError(f"reference: expected {config.action_dim} finite values, got {ref!r}")
    try:
        a = np.asarray(action, dtype=np.float64).reshape(-1) if action is not None else None
    except (TypeError, ValueError):
        a = None
    if a is None or a.shape != (config.action_dim,):
        got = "nothing" if a is None else f"{a.shape[0]} values"
        return SafetyResult(ref.copy(), True, [f"shape: expected {config.action_dim} values, got {got}"], ["shape"])
    bad = ~np.isfinite(a)
    if bad.any():
        return SafetyResult(ref.copy(), True, [f"nonfinite: {_names(bad)}"], ["nonfinite"])

    reasons: List[str] = []
    kinds: List[str] = []
    out = a.copy()
    arm = np.zeros(config.action_dim, dtype=bool)
    arm[list(ARM_INDICES)] = True

    clipped = np.clip(out, config.lower, config.upper)
    hit = clipped != out
    if (hit & arm).any():
        kinds.append("joint_limit")
        reasons.append(f"joint_limit: {_names(hit & arm)}")
    if (hit & ~arm).any():
        kinds.append("gripper_range")
        reasons.append(f"gripper_range: {_names(hit & ~arm)}")
    out = clipped

    lo, hi = ref - config.step, ref + config.step
    stepped = np.clip(out, lo, hi)
    hit = stepped != out
    if hit.any():
        kinds.append("step")
        up, down = hit & (out > hi), hit & (out < lo)
        parts = []
        if up.any():
            parts.append(f"+{_names(up)}")
        if down.any():
            parts.append(f"-{_names(down)}")
        reasons.append("step: " + " ".join(parts))
    out = stepped

    if measured is not None and config.max_deviation > 0:
        m = np.asarray(measured, dtype=np.float64)
        if m.shape == (config.action_dim,) and np.all(np.isfinite(m)):
            dev_lo = np.where(arm, m - config.max_deviation, -np.inf)
            dev_hi = np.where(arm, m + config.max_deviation, np.inf)
            limited = np.clip(out, dev_lo, dev_hi)
            hit = limited != out
            if hit.any():
                kinds.append("deviation")
                reasons.append(f"deviation: {_names(hit)}")
            out = limited
    return SafetyResult(out, False, reasons, kinds)


def check_hold_position(position, action_dim: int = ACTION_DIM) -> Optional[str]:
    """Validate a position used as the hold reference; returns a problem string or None when usable."""
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    if p.shape != (action_dim,):
        return f"expected {action_dim} values, got {p.shape[0]}"
    bad = ~np.isfinite(p)
    if bad.any():
        return f"nonfinite: {_names(bad)}"
    return None
