"""Observation assembly and validation from the latest camera frames and joint states (ROS-free).

The policy node stores the latest stamped input of each kind here; :meth:`ObservationAssembler.assemble`
returns an :class:`~cosmos_policy_ros.core.types.Observation` only when every input is present, fresh
(age <= ``max_age``), well-formed, and all stamps agree within ``stamp_tolerance``. Otherwise it returns
the list of problems (each one a clear, loggable sentence) and the robot holds. Joint states are read by name
(:class:`~cosmos_policy_ros.core.robot.JointNameMap`, the same minimum joints as the commander): any order,
extra joints ignored, a missing / duplicate / non-finite joint a problem naming it.

Image decoding works on plain buffers (bytes / memoryview / array) with the fields of sensor_msgs/Image, so
it is tested without ROS. Decoding is zero-copy wherever the layout allows (rgb8: a strided view; bgr8: a
channel-reversed view; mono8: a broadcast view).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .robot import (REQUIRED_FOR_COMMAND_AND_OBS, SIDES, GripperConvention, JointNameMap, JointStateError,
                    qpos_from_joint_states)
from .types import ALOHA_CAMERAS, Observation

SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "mono8")


class ImageError(ValueError):
    """An image message that cannot be used (encoding, size, step, buffer length)."""


def decode_image(data, height: int, width: int, encoding: str, step: int, is_bigendian: int = 0,
                 expected_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """sensor_msgs/Image fields -> (H, W, 3) uint8 RGB array, without copying the pixels.

    data: the message buffer (bytes, array('B'), memoryview, numpy); step: bytes per row (may include
    padding). expected_size: (height, width) to enforce, or None for any size. The result may be a
    read-only, non-contiguous view; the model's preprocessing makes its own resized copy anyway.
    """
    enc = (encoding or "").lower()
    if enc not in SUPPORTED_ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; expected one of {SUPPORTED_ENCODINGS}")
    # is_bigendian only matters for multi-byte channels; all supported encodings are 8-bit.
    del is_bigendian
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image {height}x{width}")
    if expected_size is not None and (height, width) != tuple(expected_size):
        raise ImageError(f"image size {height}x{width}, expected {expected_size[0]}x{expected_size[1]}")
    channels = 1 if enc == "mono8" else 3
    if step < width * channels:
        raise ImageError(f"step {step} < width {width} * {channels} channels")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < height * step:
        raise ImageError(f"buffer holds {buf.size} bytes, expected {height} rows x step {step} = {height * step}")
    rows = buf[:height * step].reshape(height, step)  # view
    pixels = rows[:, :width * channels].reshape(height, width, channels) if step == width * channels else \
        np.lib.stride_tricks.as_strided(rows, shape=(height, width, channels), strides=(step, channels, 1))
    if enc == "rgb8":
        return pixels
    if enc == "bgr8":
        return pixels[:, :, ::-1]
    return np.broadcast_to(pixels, (height, width, 3))


def encode_image(rgb: np.ndarray) -> Tuple[bytes, int, int, str, int]:
    """(H, W, 3) uint8 RGB array -> (data bytes, height, width, "rgb8", step) for a sensor_msgs/Image."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {a.dtype}")
    h, w, _ = a.shape
    return np.ascontiguousarray(a).tobytes(), h, w, "rgb8", w * 3


@dataclass
class ObservationConfig:
    """Which inputs make an observation and when they are usable.

    cameras: model camera slots in order (ALOHA: cam_high, cam_left_wrist, cam_right_wrist).
    max_age: largest allowed age (s) of every input at assembly time.
    stamp_tolerance: largest allowed spread (s) between the oldest and newest input stamps.
    expected_size: (height, width) every camera must have, or None for any size.
    """

    cameras: Sequence[str] = ALOHA_CAMERAS
    max_age: float = 0.2
    stamp_tolerance: float = 0.1
    expected_size: Optional[Tuple[int, int]] = (480, 640)

    def __post_init__(self):
        self.cameras = tuple(self.cameras)
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras: expected distinct camera slot names, got {self.cameras}")
        if not (self.max_age > 0 and math.isfinite(self.max_age)):
            raise ValueError(f"max_age: expected a positive number of seconds, got {self.max_age}")
        if not (self.stamp_tolerance >= 0 and math.isfinite(self.stamp_tolerance)):
            raise ValueError(f"stamp_tolerance: expected >= 0 seconds, got {self.stamp_tolerance}")
        if self.expected_size is not None:
            size = tuple(int(v) for v in self.expected_size)
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"expected_size: expected (height, width) > 0 or None, got {self.expected_size}")
            self.expected_size = size


@dataclass
class _Input:
    stamp: float
    value: object  # image array or joint positions
    error: Optional[str] = None  # set when the latest message was unusable


class ObservationAssembler:
    """Latest stamped input per camera slot and per arm; thread-safe (callbacks write, a worker reads)."""

    def __init__(self, config: ObservationConfig, gripper: GripperConvention, joints: Optional[JointNameMap] = None):
        self.config = config
        self.gripper = gripper
        self.joints = joints or JointNameMap()
        self._lock = threading.Lock()
        self._cams: Dict[str, _Input] = {}
        self._arms: Dict[str, _Input] = {}

    # -- inputs --------------------------------------------------------------------------------------
    def set_image(self, slot: str, stamp: float, image: Optional[np.ndarray], error: Optional[str] = None) -> None:
        """Store the latest frame of camera ``slot`` (or the reason its latest message was unusable)."""
        if slot not in self.config.cameras:
            raise KeyError(f"unknown camera slot {slot!r}; expected one of {self.config.cameras}")
        with self._lock:
            self._cams[slot] = _Input(float(stamp), image, error)

    def set_image_fields(self, slot: str, stamp: float, data, height: int, width: int, encoding: str, step: int,
                         is_bigendian: int = 0) -> Optional[str]:
        """Decode and store one image message's fields; returns the problem (also stored) or None."""
        try:
            img = decode_image(data, height, width, encoding, step, is_bigendian, self.config.expected_size)
        except ImageError as exc:
            self.set_image(slot, stamp, None, f"{slot}: {exc}")
            return f"{slot}: {exc}"
        self.set_image(slot, stamp, img)
        return None

    def set_joint_state(self, side: str, stamp: float, names: Sequence[str], position: Sequence[float]) -> Optional[str]:
        """Store one follower's JointState (names and positions, mapped by name onto the Interbotix layout);
        returns the problem (also stored) or None."""
        if side not in SIDES:
            raise KeyError(f"unknown arm {side!r}; expected one of {SIDES}")
        error = None
        pos = None
        try:
            pos = self.joints.canonical(names, position, REQUIRED_FOR_COMMAND_AND_OBS, side)
        except JointStateError as exc:
            error = str(exc)
        except (TypeError, ValueError) as exc:  # positions that are not numbers
            error = f"{side} follower joint state unusable: {exc}"
        with self._lock:
            self._arms[side] = _Input(float(stamp), None if error else pos, error)
        return error

    # -- validation / assembly ---------------------------------------------------------------------
    def problems(self, now: float) -> List[str]:
        """Everything that currently prevents an observation (empty list: ready)."""
        with self._lock:
            cams = dict(self._cams)
            arms = dict(self._arms)
        return self._problems(now, cams, arms)

    def _problems(self, now: float, cams: Mapping[str, _Input], arms: Mapping[str, _Input]) -> List[str]:
        cfg = self.config
        out: List[str] = []
        stamps: List[Tuple[str, float]] = []
        for name, table, label in ([(c, cams, c) for c in cfg.cameras] +
                                   [(s, arms, f"{s} arm joint states") for s in SIDES]):
            inp = table.get(name)
            if inp is None:
                out.append(f"{label}: no message received yet")
                continue
            if inp.error:
                out.append(inp.error)
                continue
            age = now - inp.stamp
            if age > cfg.max_age:
                out.append(f"{label}: stale, age {age:.3f} s > max_age {cfg.max_age:.3f} s")
            elif age < -cfg.max_age:
                out.append(f"{label}: stamped {-age:.3f} s in the future (clock skew?)")
            stamps.append((label, inp.stamp))
        if len(stamps) >= 2 and not out:
            lo = min(stamps, key=lambda kv: kv[1])
            hi = max(stamps, key=lambda kv: kv[1])
            spread = hi[1] - lo[1]
            if spread > cfg.stamp_tolerance:
                out.append(f"stamps disagree: {lo[0]} is {spread:.3f} s older than {hi[0]} "
                           f"(stamp_tolerance {cfg.stamp_tolerance:.3f} s)")
        return out

    def ages(self, now: float) -> Dict[str, float]:
        """Input name -> age (s) of its latest message (missing inputs are absent)."""
        with self._lock:
            out = {c: now - v.stamp for c, v in self._cams.items()}
            out.update({f"{s}_joint_states": now - v.stamp for s, v in self._arms.items()})
        return out

    def assemble(self, now: float, instruction: str) -> Tuple[Optional[Observation], List[str]]:
        """Return (observation, []) when every input is valid at ``now``, else (None, problems).

        The observation's stamp is the newest input stamp, ``oldest_stamp`` the oldest; its images are the
        stored views (no copy).
        """
        with self._lock:
            cams = dict(self._cams)
            arms = dict(self._arms)
        problems = self._problems(now, cams, arms)
        if problems:
            return None, problems
        proprio = qpos_from_joint_states(arms["left"].value, arms["right"].value, self.gripper)
        stamps = [cams[c].stamp for c in self.config.cameras] + [arms[s].stamp for s in SIDES]
        images = {c: cams[c].value for c in self.config.cameras}
        return Observation(images=images, proprio=proprio, instruction=instruction, stamp=max(stamps),
                           oldest_stamp=min(stamps)), []
