"""The one final gate for 14-d ALOHA joint commands: the last stage before anything reaches the motors.

The Interbotix driver does not check joint limits and runs the motors without profile smoothing, so every
command the commander publishes on a motor topic -- chunk actions, holds, e-stop holds, the episode manager's
start / rest moves (they arrive as chunks), the very first command -- is returned by :class:`CommandGate`, and
nothing runs after it. Stages, in order:

1. shape (exactly ``action_dim`` values) and finiteness: a bad request is a *fault*; the gate holds (sends
   its reference) and the caller keeps holding;
2. chunk actions only: maximum deviation of arm joints from the measured position (clamp, ``max_deviation``;
   0 disables). It is a pre-stage so that the clamps after it cannot be undone: as the last stage it moved
   commands by more than ``max_step_arm`` in one tick and past joint limits when the measured pose was beyond
   one. A clamp rather than a fault, because a tracking error above it is normal for a few ticks of a fast
   move; the step clamp then walks the command there;
3. arm joint position limits and gripper range (clamp);
4. per-tick change limit relative to the reference (clamp, both directions).

The reference is the last command actually sent. Before anything was sent, and when the caller re-anchors at
an episode start (:meth:`CommandGate.anchor`), it is the measured pose: the motors are then asked to move at
most one step from where they are. A measured pose beyond a limit by more than one step is refused (nothing is
sent, with a message naming the joint): no command could be both within the limits and within one step of it.
So every command the gate returns lies within the joint limits (first priority) and within one step of its
reference (second); :func:`filter_action` checks both again before returning.
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
    """What the gate decided for one request.

    command: (14,) what to send, or None when the gate refuses to send anything (kind "refused": no usable
    reference). fault: the request was unusable (NaN / wrong length) and ``command`` holds the reference, or
    the gate refused. reasons: human-readable reasons, one per kind of change ("joint_limit: left_elbow ...").
    kinds: the machine-readable kinds ("shape", "nonfinite", "refused", "deviation", "joint_limit",
    "gripper_range", "step").
    """

    command: Optional[np.ndarray]
    fault: bool = False
    reasons: List[str] = field(default_factory=list)
    kinds: List[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when the command differs from the requested action (or the action was refused)."""
        return bool(self.kinds)


def _names(mask: np.ndarray) -> str:
    return ",".join(JOINT_NAMES[i] for i in np.flatnonzero(mask))


def _arm_mask(config: SafetyConfig) -> np.ndarray:
    arm = np.zeros(config.action_dim, dtype=bool)
    arm[list(ARM_INDICES)] = True
    return arm


def reference_problem(reference, config: SafetyConfig) -> Optional[str]:
    """Why ``reference`` cannot be stepped from (not finite, wrong length, or beyond a limit by more than one
    step, so that no command is both within the limits and within one step of it), or None when usable."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if ref.shape != (config.action_dim,):
        return f"expected {config.action_dim} values, got {ref.shape[0]}"
    bad = ~np.isfinite(ref)
    if bad.any():
        return f"nonfinite: {_names(bad)}"
    far = (ref < config.lower - config.step) | (ref > config.upper + config.step)
    if far.any():
        arm = _arm_mask(config)
        parts = []
        for i in np.flatnonzero(far):
            unit, step = ("rad", "max_step_arm") if arm[i] else ("(normalised)", "max_step_gripper")
            parts.append(f"{JOINT_NAMES[i]} at {ref[i]:.3f} {unit} is beyond its limits [{config.lower[i]:.3f}, "
                         f"{config.upper[i]:.3f}] by more than {step} ({config.step[i]:g})")
        return "; ".join(parts)
    return None


def filter_action(action, reference: np.ndarray, config: SafetyConfig,
                  measured: Optional[np.ndarray] = None) -> SafetyResult:
    """Check and limit one request (pure; :class:`CommandGate` adds the reference bookkeeping).

    action: requested (14,) command; anything else (wrong length, NaN, inf, not numeric) is a fault and the
        result holds the reference (brought within the limits, within one step).
    reference: (14,) the last command actually sent (or the measured position before the first one); it must
        be within one step of the limits (:func:`reference_problem`), else ValueError.
    measured: (14,) current measured position for the max_deviation pre-stage (None: no deviation stage;
        the caller passes it for chunk actions only).
    The returned command is within the limits and within one step of ``reference``, always.
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    problem = reference_problem(ref, config)
    if problem:
        raise ValueError(f"reference: {problem}")
    try:
        a = np.asarray(action, dtype=np.float64).reshape(-1) if action is not None else None
    except (TypeError, ValueError):
        a = None
    reasons: List[str] = []
    kinds: List[str] = []
    fault = False
    if a is None or a.shape != (config.action_dim,):
        got = "nothing" if a is None else f"{a.shape[0]} values"
        fault, kinds, reasons = True, ["shape"], [f"shape: expected {config.action_dim} values, got {got}"]
    elif not np.all(np.isfinite(a)):
        fault, kinds, reasons = True, ["nonfinite"], [f"nonfinite: {_names(~np.isfinite(a))}"]
    if fault:
        a = ref  # hold: the stages below only matter for a reference beyond a limit (before the first command)
        measured = None
    out = a.copy()
    arm = _arm_mask(config)

    if measured is not None and config.max_deviation > 0:
        m = np.asarray(measured, dtype=np.float64).reshape(-1)
        if m.shape == (config.action_dim,) and np.all(np.isfinite(m[arm])):
            dev_lo = np.where(arm, m - config.max_deviation, -np.inf)
            dev_hi = np.where(arm, m + config.max_deviation, np.inf)
            limited = np.clip(out, dev_lo, dev_hi)
            hit = limited != out
            if hit.any():
                kinds.append("deviation")
                reasons.append(f"deviation: {_names(hit)}")
            out = limited

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
    # The clamps above guarantee both; checked again because every motor command depends on it.
    if not (np.all(np.isfinite(out)) and np.all(out >= config.lower) and np.all(out <= config.upper)
            and np.all(np.abs(out - ref) <= config.step * (1 + 1e-12))):
        raise AssertionError(f"safety gate invariant violated: command {out.tolist()} from reference {ref.tolist()}")
    return SafetyResult(out, fault, reasons, kinds)


class CommandGate:
    """The one final gate: remembers the last command sent and returns the only commands that may be sent.

    Every command published to a motor topic is the ``command`` of a :meth:`send` or :meth:`hold` result
    (see the module docstring for the stages). The caller publishes exactly that and nothing else.
    """

    def __init__(self, config: SafetyConfig):
        self.config = config
        self.last_sent: Optional[np.ndarray] = None
        self._anchor: Optional[np.ndarray] = None  # measured pose to step from instead of last_sent
        self.sent = 0

    def reference(self, measured: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """What the next command is stepped from: the anchor, else the last command sent, else ``measured``."""
        if self._anchor is not None:
            return self._anchor
        if self.last_sent is not None:
            return self.last_sent
        return None if measured is None else np.asarray(measured, dtype=np.float64).reshape(-1)

    def anchor(self, measured) -> Optional[str]:
        """Step the next command from the measured pose (where the robot is) instead of the last command: an
        episode start that holds where the robot was put. Returns the problem and changes nothing when the pose
        cannot be stepped from (see :func:`reference_problem`)."""
        problem = reference_problem(measured, self.config)
        if problem is None:
            self._anchor = np.asarray(measured, dtype=np.float64).reshape(-1).copy()
        return problem

    def check(self, requested, measured: Optional[np.ndarray] = None, deviation: bool = False) -> SafetyResult:
        """What :meth:`send` would return, without recording it. ``requested`` None asks for a hold."""
        ref = self.reference(measured)
        if ref is None:
            return SafetyResult(None, True, ["refused: no command sent yet and no measured pose"], ["refused"])
        problem = reference_problem(ref, self.config)
        if problem:
            return SafetyResult(None, True, [f"refused: measured {problem}; move the joint within its limits"],
                                ["refused"])
        res = filter_action(ref if requested is None else requested, ref, self.config,
                            measured if deviation else None)
        return res

    def send(self, requested, measured: Optional[np.ndarray] = None, deviation: bool = False) -> SafetyResult:
        """Gate one request and record the result as the last command sent (unless refused).

        deviation: apply the max_deviation pre-stage against ``measured`` (chunk actions; holds stay put).
        """
        res = self.check(requested, measured, deviation)
        if res.command is not None:
            self.last_sent = res.command
            self._anchor = None
            self.sent += 1
        return res

    def hold(self, measured: Optional[np.ndarray] = None) -> SafetyResult:
        """Send the reference again (a hold): the last command, or the anchor / measured pose brought within
        the limits by at most one step."""
        return self.send(None, measured)


def check_hold_position(position, action_dim: int = ACTION_DIM) -> Optional[str]:
    """Validate a position used as the hold reference; returns a problem string or None when usable."""
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    if p.shape != (action_dim,):
        return f"expected {action_dim} values, got {p.shape[0]}"
    bad = ~np.isfinite(p)
    if bad.any():
        return f"nonfinite: {_names(bad)}"
    return None
