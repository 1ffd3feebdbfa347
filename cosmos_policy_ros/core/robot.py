"""ALOHA robot conventions: joint order, Interbotix JointState layout, gripper normalisation.

Everything here is plain numpy so the ROS layer, the simulator bridge and the bag converter share one
definition. Gripper conventions differ between ALOHA generations and the one the released checkpoint's
data used is not documented, so the generation is a configuration value (see config/*.yaml).
"""
from __future__ import annotations

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

#: ViperX 300 s joint position limits (rad), from the public vx300s description; override in config.
DEFAULT_ARM_LIMITS = (
    (-3.14158, 3.14158),  # waist
    (-1.85005, 1.25664),  # shoulder
    (-1.76278, 1.60570),  # elbow
    (-3.14158, 3.14158),  # forearm_roll
    (-1.86750, 2.23402),  # wrist_angle
    (-3.14158, 3.14158),  # wrist_rotate
)


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
