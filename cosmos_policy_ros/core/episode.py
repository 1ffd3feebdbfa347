"""Episode lifecycle on the robot, free of ROS: states, allowed transitions, safe pose moves, checks.

The episode manager node (cosmos_policy_ros/ros/episode_manager.py) drives the robot through::

    IDLE --start--> RESETTING --(start pose reached)--> READY --go--> RUNNING --stop--> STOPPED
      ^                                                                                   |
      +------------------------- RESTING <--(label / rest)--------------------------------+
    any state --estop--> ESTOPPED --reset_estop--> IDLE

Everything here is plain numpy and time is always an argument, so each rule is tested without rclpy:

* :class:`EpisodeConfig`: start / rest poses, joint speeds for the moves, tolerances, timeouts (validated);
* :class:`Lifecycle`: the state machine; :meth:`Lifecycle.request` refuses a command the current state does
  not allow with a message saying why and what is allowed;
* :func:`plan_move`: an interpolated joint trajectory (one ActionChunk) from the current command to a pose,
  whose per-tick change never exceeds the configured joint speed x period;
* :func:`hold_actions`, :func:`pose_errors`, :func:`stale_inputs`, :func:`stop_cause`.

Poses and trajectories use the 14-d action layout (per arm 6 joints in rad, then the gripper as the
normalised command 0 closed .. 1 open), the same values the commander's safety filter checks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .robot import ACTION_DIM, ARM_INDICES, DEFAULT_ARM_LIMITS, GRIPPER_INDICES, JOINT_NAMES

#: ALOHA's start pose (ACT / aloha START_ARM_POSE arm joints), grippers open: where evaluation episodes begin.
DEFAULT_START_POSE = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 1.0) * 2
#: ALOHA's sleep pose (arms folded onto their base), grippers closed: where the robot rests between sessions.
DEFAULT_REST_POSE = (0.0, -1.7, 1.55, 0.12, 0.65, 0.0, 0.0) * 2


class State(str, Enum):
    """Lifecycle states (the value is what ~/status and the CLI print)."""

    IDLE = "IDLE"  # holding; no episode; ready to reset
    RESETTING = "RESETTING"  # robot preparation, then moving to the start pose
    READY = "READY"  # at the start pose, holding, waiting for "go"
    RUNNING = "RUNNING"  # episode recording, policy chunks forwarded to the commander
    STOPPED = "STOPPED"  # episode over, holding, waiting for a label (or a new start / rest)
    RESTING = "RESTING"  # moving to the rest pose
    ESTOPPED = "ESTOPPED"  # commander e-stop latched; nothing moves until reset_estop


#: command -> states it is allowed in.
ALLOWED: Dict[str, Tuple[State, ...]] = {
    "start": (State.IDLE, State.READY, State.STOPPED),
    "go": (State.READY,),
    "stop": (State.RUNNING, State.RESETTING, State.RESTING, State.READY),
    "label": (State.IDLE, State.STOPPED),
    "rest": (State.IDLE, State.READY, State.STOPPED),
    "estop": tuple(State),
    "reset_estop": (State.ESTOPPED,),
}


class LifecycleError(RuntimeError):
    """A command refused in the current state (the message says why)."""


class Lifecycle:
    """The lifecycle state with guarded transitions. Not thread-safe: the node serialises calls.

    ``request(cmd)`` checks a command against the current state (raises :class:`LifecycleError`);
    ``enter(state, detail)`` records a transition made by the node's procedures.
    """

    def __init__(self) -> None:
        self.state = State.IDLE
        self.detail = "idle"
        self.history: List[Tuple[State, str]] = [(self.state, self.detail)]

    def request(self, command: str) -> None:
        """Raise LifecycleError unless ``command`` is allowed now."""
        if command not in ALLOWED:
            raise LifecycleError(f"unknown command {command!r}; expected one of {sorted(ALLOWED)}")
        if self.state not in ALLOWED[command]:
            allowed = [c for c, states in ALLOWED.items() if self.state in states]
            hint = ""
            if self.state == State.ESTOPPED:
                hint = "; release the e-stop first: cosmos-policy episode reset"
            elif command == "start" and self.state == State.RUNNING:
                hint = ("; stop the episode first (cosmos-policy episode stop) or replace it: "
                        "cosmos-policy episode start --restart")
            raise LifecycleError(f"{command} refused in state {self.state.value} ({self.detail}); "
                                 f"allowed now: {', '.join(allowed)}{hint}")

    def enter(self, state: State, detail: str = "") -> None:
        """Move to ``state`` (the node's procedures call this); ``detail`` says why, for status and logs."""
        self.state = State(state)
        self.detail = detail or state.value.lower()
        self.history.append((self.state, self.detail))


@dataclass
class EpisodeConfig:
    """Lifecycle settings (node parameters of the same names; see config/episode_manager.yaml).

    start_pose / rest_pose: 14 values (per arm 6 joints rad + normalised gripper command).
    max_joint_speed (rad/s) / max_gripper_speed (normalised per s): peak speeds of the start / rest moves;
        the largest per-tick change of a move is speed x period (must stay under the commander's
        max_step_arm / max_step_gripper so the safety filter never has to clamp a move).
    pose_tolerance (rad) / gripper_tolerance (normalised, 0 disables): a pose counts as reached when every
        measured arm joint (gripper) is this close to the goal.
    settle_timeout: seconds after a move's last planned tick to reach the pose, else the move fails.
    max_duration: seconds an episode may run (0 = no limit).
    lead_in_ticks: copies of the start command in front of a move, so a move spliced one or two ticks late
        still starts without a jump.
    """

    start_pose: Sequence[float] = DEFAULT_START_POSE
    rest_pose: Sequence[float] = DEFAULT_REST_POSE
    period: float = 0.04
    max_joint_speed: float = 0.8
    max_gripper_speed: float = 1.5
    pose_tolerance: float = 0.05
    gripper_tolerance: float = 0.15
    settle_timeout: float = 3.0
    max_duration: float = 60.0
    lead_in_ticks: int = 3
    arm_limits: Sequence[Tuple[float, float]] = DEFAULT_ARM_LIMITS

    def __post_init__(self):
        for name in ("start_pose", "rest_pose"):
            pose = np.asarray(getattr(self, name), dtype=np.float64)
            if pose.shape != (ACTION_DIM,) or not np.all(np.isfinite(pose)):
                raise ValueError(f"{name}: expected {ACTION_DIM} finite values (per arm 6 joints + gripper), "
                                 f"got {list(np.ravel(pose))}")
            problems = pose_limit_problems(pose, self.arm_limits)
            if problems:
                raise ValueError(f"{name}: expected a pose inside the joint limits, got {'; '.join(problems)}")
            setattr(self, name, tuple(float(v) for v in pose))
        for name in ("period", "max_joint_speed", "max_gripper_speed", "pose_tolerance", "settle_timeout"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
        if not (self.gripper_tolerance >= 0 and math.isfinite(self.gripper_tolerance)):
            raise ValueError(f"gripper_tolerance: expected >= 0 (0 disables), got {self.gripper_tolerance!r}")
        if not (self.max_duration >= 0 and math.isfinite(self.max_duration)):
            raise ValueError(f"max_duration: expected >= 0 seconds (0 = no limit), got {self.max_duration!r}")
        if not (isinstance(self.lead_in_ticks, int) and 0 <= self.lead_in_ticks <= 50):
            raise ValueError(f"lead_in_ticks: expected an integer in 0..50, got {self.lead_in_ticks!r}")

    @property
    def max_step_arm(self) -> float:
        """Largest arm joint change per tick of a planned move (rad)."""
        return self.max_joint_speed * self.period

    @property
    def max_step_gripper(self) -> float:
        """Largest normalised gripper change per tick of a planned move."""
        return self.max_gripper_speed * self.period


def pose_limit_problems(pose: Sequence[float], arm_limits=DEFAULT_ARM_LIMITS) -> List[str]:
    """Joints of a 14-d pose outside the arm joint limits or the gripper range 0..1 (empty when fine)."""
    p = np.asarray(pose, dtype=np.float64)
    out = []
    for s in range(2):
        for j, (lo, hi) in enumerate(arm_limits):
            i = s * 7 + j
            if not lo <= p[i] <= hi:
                out.append(f"{JOINT_NAMES[i]} {p[i]:.4f} outside [{lo}, {hi}]")
    for i in GRIPPER_INDICES:
        if not 0.0 <= p[i] <= 1.0:
            out.append(f"{JOINT_NAMES[i]} {p[i]:.4f} outside [0, 1]")
    return out


def _smoothstep(s: np.ndarray) -> np.ndarray:
    # 3s^2 - 2s^3: zero speed at both ends, peak slope 1.5 (the move's speed bound uses it)
    return s * s * (3.0 - 2.0 * s)


_PEAK_SLOPE = 1.5


def plan_move(start: Sequence[float], goal: Sequence[float], config: EpisodeConfig,
              hold_ticks: int = 5) -> np.ndarray:
    """(N, 14) actions moving from ``start`` to ``goal`` at no more than the configured speeds.

    Layout: ``lead_in_ticks`` copies of ``start``, a smoothstep interpolation whose largest per-tick change is
    at most ``max_joint_speed * period`` (arm) / ``max_gripper_speed * period`` (grippers), then ``hold_ticks``
    copies of ``goal``. Every action is ``goal`` or between start and goal, so nothing leaves the joint limits
    when both ends are inside them.
    """
    a = np.asarray(start, dtype=np.float64).reshape(-1)
    b = np.asarray(goal, dtype=np.float64).reshape(-1)
    if a.shape != (ACTION_DIM,) or b.shape != (ACTION_DIM,):
        raise ValueError(f"expected start and goal of shape ({ACTION_DIM},), got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("plan_move: start and goal must be finite")
    d = np.abs(b - a)
    arm_ticks = _PEAK_SLOPE * float(d[list(ARM_INDICES)].max()) / config.max_step_arm
    grip_ticks = _PEAK_SLOPE * float(d[list(GRIPPER_INDICES)].max()) / config.max_step_gripper
    n = max(1, int(math.ceil(max(arm_ticks, grip_ticks) - 1e-9)))
    s = _smoothstep(np.arange(1, n + 1, dtype=np.float64) / n)  # (n,) progress 0 -> 1
    path = a[None, :] + s[:, None] * (b - a)[None, :]  # (n, 14)
    path[-1] = b
    lead = np.repeat(a[None, :], config.lead_in_ticks, axis=0)
    tail = np.repeat(b[None, :], max(0, int(hold_ticks)), axis=0)
    return np.concatenate([lead, path, tail], axis=0)


def max_steps(actions: np.ndarray, previous: Optional[Sequence[float]] = None) -> Tuple[float, float]:
    """Largest per-tick (arm, gripper) change along ``actions`` (N, 14), starting from ``previous`` if given."""
    a = np.asarray(actions, dtype=np.float64)
    if previous is not None:
        a = np.concatenate([np.asarray(previous, dtype=np.float64)[None, :], a], axis=0)
    if a.shape[0] < 2:
        return 0.0, 0.0
    d = np.abs(np.diff(a, axis=0))
    return float(d[:, list(ARM_INDICES)].max()), float(d[:, list(GRIPPER_INDICES)].max())


def hold_actions(command: Sequence[float], ticks: int) -> np.ndarray:
    """(ticks, 14) copies of ``command``: a chunk that replaces the rest of a running plan with "stay here"."""
    c = np.asarray(command, dtype=np.float64).reshape(-1)
    if c.shape != (ACTION_DIM,) or not np.all(np.isfinite(c)):
        raise ValueError(f"hold_actions: expected {ACTION_DIM} finite values, got {c.tolist()}")
    if ticks < 1:
        raise ValueError(f"hold_actions: expected ticks >= 1, got {ticks}")
    return np.repeat(c[None, :], int(ticks), axis=0)


def pose_errors(measured: Sequence[float], goal: Sequence[float], config: EpisodeConfig) -> List[str]:
    """Joints of ``measured`` (14-d, grippers as normalised commands) not within tolerance of ``goal``."""
    m = np.asarray(measured, dtype=np.float64)
    g = np.asarray(goal, dtype=np.float64)
    out = []
    for i in ARM_INDICES:
        err = abs(m[i] - g[i])
        if not err <= config.pose_tolerance:
            out.append(f"{JOINT_NAMES[i]} off by {err:.3f} rad (tolerance {config.pose_tolerance:g})")
    if config.gripper_tolerance > 0:
        for i in GRIPPER_INDICES:
            err = abs(m[i] - g[i])
            if not err <= config.gripper_tolerance:
                out.append(f"{JOINT_NAMES[i]} off by {err:.3f} (tolerance {config.gripper_tolerance:g})")
    return out


def stale_inputs(last_seen: Mapping[str, Optional[float]], now: float, max_age: float) -> List[str]:
    """Inputs (name -> last receive time, None = never) older than ``max_age``, as readable reasons."""
    out = []
    for name, t in last_seen.items():
        if t is None:
            out.append(f"{name}: nothing received")
        elif now - t > max_age:
            out.append(f"{name}: stale, last message {now - t:.2f} s ago (max_input_age {max_age:g} s)")
    return out


def stop_cause(now: float, started_at: float, max_duration: float, success: bool) -> Optional[str]:
    """Why a running episode must stop now ("success", "timeout") or None."""
    if success:
        return "success"
    if max_duration > 0 and now - started_at >= max_duration:
        return "timeout"
    return None


__all__ = ["State", "ALLOWED", "Lifecycle", "LifecycleError", "EpisodeConfig", "DEFAULT_START_POSE",
           "DEFAULT_REST_POSE", "plan_move", "max_steps", "hold_actions", "pose_errors", "pose_limit_problems",
           "stale_inputs", "stop_cause"]
