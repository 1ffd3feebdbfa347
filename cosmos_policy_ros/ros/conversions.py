"""Message <-> plain value conversions (no node, no rclpy.init needed; message classes only).

Performance notes (measured, environment.md): images are read with ``np.frombuffer`` (zero copy) and
written with ``arr.tobytes()``; float32[] fields are assigned ``array.array('f', ...)``.
"""
from __future__ import annotations

import array
from typing import Optional, Sequence, Tuple

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from ..core.chunking import Chunk
from ..core.observation import decode_image, encode_image
from ..core.robot import ACTION_DIM, JOINT_NAMES, REQUIRED_FOR_COMMAND_AND_OBS, JointNameMap


def stamp_to_sec(stamp) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float) -> Time:
    """float seconds -> builtin_interfaces/Time (nanoseconds rounded, carried into seconds)."""
    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_msg_to_rgb(msg: Image, expected_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8 / bgr8 / mono8) -> (H, W, 3) RGB uint8 view of the message buffer."""
    return decode_image(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, expected_size)


def rgb_to_image_msg(rgb: np.ndarray, stamp: float, frame_id: str = "") -> Image:
    """(H, W, 3) RGB uint8 -> sensor_msgs/Image rgb8."""
    data, h, w, enc, step = encode_image(rgb)
    msg = Image()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian = h, w, enc, step, 0
    msg.data = data
    return msg


def chunk_to_msg(actions: np.ndarray, stamp: float, chunk_id: int, period: float, policy_id: str,
                 value: float = float("nan"), joint_names: Sequence[str] = JOINT_NAMES):
    """(horizon, action_dim) actions -> cosmos_policy_ros/ActionChunk stamped with the observation time."""
    from cosmos_policy_ros.msg import ActionChunk

    a = np.asarray(actions, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected actions of shape (horizon, action_dim), got {a.shape}")
    msg = ActionChunk()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.chunk_id = int(chunk_id)
    msg.period = float(period)
    msg.horizon, msg.action_dim = int(a.shape[0]), int(a.shape[1])
    msg.joint_names = list(joint_names)
    msg.positions = array.array("f", np.ascontiguousarray(a).tobytes())
    msg.value = float(value)
    msg.policy_id = policy_id
    return msg


def msg_to_chunk(msg) -> Chunk:
    """cosmos_policy_ros/ActionChunk -> :class:`~cosmos_policy_ros.core.chunking.Chunk` (ValueError if malformed)."""
    n = int(msg.horizon) * int(msg.action_dim)
    pos = np.frombuffer(msg.positions, dtype=np.float32) if isinstance(msg.positions, array.array) else \
        np.asarray(msg.positions, dtype=np.float32)
    if msg.horizon < 1 or msg.action_dim < 1 or pos.size != n:
        raise ValueError(f"chunk {msg.chunk_id}: {pos.size} positions for horizon {msg.horizon} x action_dim "
                         f"{msg.action_dim} = {n}")
    return Chunk(int(msg.chunk_id), stamp_to_sec(msg.header.stamp), float(msg.period),
                 pos.reshape(int(msg.horizon), int(msg.action_dim)), msg.policy_id)


def arm_command_msgs(joints: Sequence[float], gripper_rad: float):
    """6 arm targets + gripper motor target -> (JointGroupCommand "arm", JointSingleCommand "gripper")."""
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand

    group = JointGroupCommand()
    group.name = "arm"
    group.cmd = array.array("f", np.asarray(joints, dtype=np.float32).tobytes())
    single = JointSingleCommand()
    single.name = "gripper"
    single.cmd = float(gripper_rad)
    return group, single


def joint_state_positions(msg, joints: Optional[JointNameMap] = None,
                          required: Sequence[str] = REQUIRED_FOR_COMMAND_AND_OBS, side: str = "") -> np.ndarray:
    """sensor_msgs/JointState -> (9,) float64 positions in the Interbotix layout (``JS_NAMES`` order), mapped by
    name (any order, extra joints ignored); JointStateError for a missing / duplicate / non-finite required
    joint, or an unnamed message unless ``joints.allow_unnamed``."""
    return (joints or JointNameMap()).canonical(msg.name, msg.position, required, side)


__all__ = ["stamp_to_sec", "sec_to_stamp", "image_msg_to_rgb", "rgb_to_image_msg", "chunk_to_msg", "msg_to_chunk",
           "arm_command_msgs", "joint_state_positions", "ACTION_DIM"]
