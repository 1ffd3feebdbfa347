"""ALOHA robot conventions: joint order, Interbotix JointState layout, gripper normalisation.

Everything here is plain numpy so the ROS layer, the simulator bridge and the bag converter share one
definition. Joint states are read by name (``JointNameMap``): a ``sensor_msgs/JointState`` may list its joints
in any order and with extra joints, so every reader maps it onto the Interbotix layout first. Gripper conventions differ between ALOHA generations and the one the released checkpoint's
data used is not documented, so the generation is a configuration value (see config/*.yaml).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
SIDES = ("left", "right")
#: 14-d proprio / action layout: left arm 6 joints + gripper, then right arm.
JOINT_NAMES = tuple(f"{side}_{j}" for side in SIDES for j in ARM_JOINTS + ("gripper",))
ACTION_DIM = len(JOINT_NAMES)  # 14
LEFT_GRIPPER, RIGHT_GRIPPER = 6, 13
GRIPPER_INDICES = (LEFT_GRIPPER, RIGHT_GRIPPER)
ARM_INDICES = tuple(i for i in range(ACTION_DIM) if i not in GRIPPER_INDICES)

#: Interbotix xs_sdk JointState.position layout for one follower arm.
JS_ARM = slice(0, 6)  # arm joints (rad)
JS_GRIPPER = 6  # gripper motor joint (rad)
JS_LEFT_FINGER = 7  # left finger (m)
JS_RIGHT_FINGER = 8  # right finger (m)
JS_NAMES = ARM_JOINTS + ("gripper", "left_finger", "right_finger")
#: The joints both the commander (arm + gripper motor) and the observation (arm + finger) need: one minimum.
REQUIRED_FOR_COMMAND_AND_OBS = ARM_JOINTS + ("gripper", "left_finger")

#: ViperX 300 s joint position limits (rad), from the public vx300s description; override in config.
DEFAULT_ARM_LIMITS = (
    (-3.14158, 3.14158),  # waist
    (-1.85005, 1.25664),  # shoulder
    (-1.76278, 1.60570),  # elbow
    (-3.14158, 3.14158),  # forearm_roll
    (-1.86750, 2.23402),  # wrist_angle
    (-3.14158, 3.14158),  # wrist_rotate
)


class JointStateError(ValueError):
    """A follower's JointState cannot be mapped onto the Interbotix layout (the message names the joint)."""


@dataclass(frozen=True)
class JointNameMap:
    """How one follower's ``sensor_msgs/JointState`` names map onto the Interbotix layout (``JS_NAMES`` order:
    waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate, gripper, left_finger, right_finger).

    ``names[i]`` is the published name of canonical joint ``JS_NAMES[i]``. ``allow_unnamed`` lets a message
    with an empty ``name`` list fall back to the index layout; it is opt-in because an unnamed message in
    another order would silently command the wrong joints.
    """

    names: Tuple[str, ...] = JS_NAMES
    allow_unnamed: bool = False

    def __post_init__(self):
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        if len(names) != len(JS_NAMES):
            raise ValueError(f"joint_names: expected {len(JS_NAMES)} names (published name of each of "
                             f"{list(JS_NAMES)}), got {len(names)}: {list(names)}")
        for i, n in enumerate(names):
            if not isinstance(n, str) or not n:
                raise ValueError(f"joint_names: expected a non-empty string for {JS_NAMES[i]!r}, got {n!r}")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"joint_names: expected distinct names, got {dup} more than once")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    def canonical(self, names: Sequence[str], positions: Sequence[float],
                  required: Sequence[str] = REQUIRED_FOR_COMMAND_AND_OBS, side: str = "") -> np.ndarray:
        """One JointState's names and positions -> (9,) float64 positions in the ``JS_NAMES`` order.

        Order-independent, extra joints ignored. Canonical joints not in ``required`` and absent are NaN.
        ``required`` holds canonical names (``JS_NAMES`` entries). Raises ``JointStateError`` for: names and
        positions of different lengths, a required joint missing, a required joint not finite, duplicate
        names, empty names unless ``allow_unnamed``.
        """
        who = f"{side} follower joint state" if side else "joint state"
        req = []
        for r in required:
            if r not in JS_NAMES:
                raise ValueError(f"required joint {r!r} is not one of {list(JS_NAMES)}")
            req.append(JS_NAMES.index(r))
        pos = np.asarray(positions, dtype=np.float64).reshape(-1)
        names = list(names)
        out = np.full(len(JS_NAMES), np.nan, dtype=np.float64)
        if not names:
            if not self.allow_unnamed:
                raise JointStateError(
                    f"{who} has no joint names ({pos.size} positions); set allow_unnamed_joint_states to read "
                    f"unnamed messages in the index layout {list(JS_NAMES)}")
            n = min(pos.size, len(JS_NAMES))
            out[:n] = pos[:n]
            missing = [JS_NAMES[i] for i in req if i >= n]
            if missing:
                raise JointStateError(f"{who} (unnamed, index layout) has {pos.size} positions; missing required "
                                      f"joint(s) {missing}")
        else:
            if len(names) != pos.size:
                raise JointStateError(f"{who} has {len(names)} names but {pos.size} positions")
            seen = {}
            for k, n in enumerate(names):
                if not n:
                    raise JointStateError(f"{who} has an empty name at index {k} (names {names})")
                if n in seen:
                    raise JointStateError(f"{who} names joint {n!r} twice (indices {seen[n]} and {k})")
                seen[n] = k
                i = self._index.get(n)
                if i is not None:
                    out[i] = pos[k]
            missing = [self.names[i] for i in req if self.names[i] not in seen]
            if missing:
                raise JointStateError(f"{who} is missing required joint(s) {missing}; received {names}")
        bad = [self.names[i] for i in req if not math.isfinite(out[i])]
        if bad:
            raise JointStateError(f"{who}: joint(s) {bad} not finite "
                                  f"({', '.join(f'{self.names[i]}={out[i]}' for i in req if not math.isfinite(out[i]))})")
        return out


def joint_name_map(names: Sequence[str] = JS_NAMES, allow_unnamed: bool = False) -> JointNameMap:
    """A ``JointNameMap`` from the ROS parameters ``joint_names`` / ``allow_unnamed_joint_states`` (an empty
    list means the Interbotix defaults)."""
    names = tuple(names) if len(names) else JS_NAMES
    return JointNameMap(tuple(str(n) for n in names), bool(allow_unnamed))


@dataclass(frozen=True)
class GripperConvention:
    """How one ALOHA generation maps gripper observations and commands to the normalised 0..1 range.

    Observation: follower finger position (m) -> 0 (closed) .. 1 (open).
    Command: normalised 0..1 -> follower gripper motor joint position (rad).
    """

    name: str
    finger_close: float  # m
    finger_open: float  # m
    joint_close: float  # rad
    joint_open: float  # rad

    def __post_init__(self):
        if self.finger_open == self.finger_close:
            raise ValueError(f"gripper convention {self.name!r}: finger_open equals finger_close")
        if self.joint_open == self.joint_close:
            raise ValueError(f"gripper convention {self.name!r}: joint_open equals joint_close")

    def normalize_finger(self, finger_m):
        """Finger position (m) -> normalised gripper observation (0 closed, 1 open); not clipped."""
        return (np.asarray(finger_m, dtype=np.float64) - self.finger_close) / (self.finger_open - self.finger_close)

    def unnormalize_finger(self, g):
        """Normalised gripper observation -> finger position (m) (used by the simulator bridge)."""
        return np.asarray(g, dtype=np.float64) * (self.finger_open - self.finger_close) + self.finger_close

    def command_to_joint(self, g):
        """Normalised gripper command (0 closed, 1 open) -> gripper motor joint target (rad)."""
        return np.asarray(g, dtype=np.float64) * (self.joint_open - self.joint_close) + self.joint_close

    def joint_to_command(self, rad):
        """Gripper motor joint target (rad) -> normalised command (used by the simulator bridge)."""
        return (np.asarray(rad, dtype=np.float64) - self.joint_close) / (self.joint_open - self.joint_close)


GRIPPER_CONVENTIONS: Dict[str, GripperConvention] = {
    # ROS 1 ALOHA (ACT / aloha 1 constants).
    "aloha1": GripperConvention("aloha1", finger_close=0.01844, finger_open=0.05800, joint_close=-0.6213, joint_open=1.4910),
    # Interbotix ROS 2 ALOHA kit (aloha 2 constants).
    "aloha2": GripperConvention("aloha2", finger_close=0.0440, finger_open=0.0579, joint_close=0.6197, joint_open=1.6214),
}


def gripper_convention(name: str) -> GripperConvention:
    """Look up a gripper convention by generation name, with a clear error for unknown names."""
    try:
        return GRIPPER_CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"unknown ALOHA generation {name!r}; expected one of {sorted(GRIPPER_CONVENTIONS)}") from None


def arm_qpos_from_joint_state(position: Sequence[float], convention: GripperConvention) -> np.ndarray:
    """One follower's JointState.position (Interbotix layout, >= 8 values) -> (7,) arm joints + normalised gripper."""
    pos = np.asarray(position, dtype=np.float64)
    if pos.ndim != 1 or pos.shape[0] <= JS_LEFT_FINGER:
        raise ValueError(f"expected an Interbotix joint state with at least {JS_LEFT_FINGER + 1} positions, got shape {pos.shape}")
    out = np.empty(7, dtype=np.float64)
    out[:6] = pos[JS_ARM]
    out[6] = convention.normalize_finger(pos[JS_LEFT_FINGER])
    return out


def qpos_from_joint_states(left_position: Sequence[float], right_position: Sequence[float],
                           convention: GripperConvention) -> np.ndarray:
    """Both followers' JointState.position -> (14,) proprio in the model's layout (left first)."""
    return np.concatenate([arm_qpos_from_joint_state(left_position, convention),
                           arm_qpos_from_joint_state(right_position, convention)])


def split_action(action: Sequence[float]) -> Tuple[np.ndarray, float, np.ndarray, float]:
    """(14,) action -> (left arm (6,), left gripper, right arm (6,), right gripper)."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"expected an action of shape ({ACTION_DIM},), got {a.shape}")
    return a[0:6], float(a[6]), a[7:13], float(a[13])
