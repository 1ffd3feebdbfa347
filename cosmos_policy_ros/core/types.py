"""Plain data types shared by the core, the ROS layer, the planner and training.

These are the public contract between layers: the ROS nodes build an :class:`Observation` from
messages, hand it to anything implementing :class:`PolicyBackend`, and publish what comes back in
:class:`PolicyOutput`. No torch types cross this boundary.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

#: Camera names of the ALOHA, in the reference's naming.
ALOHA_CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")

#: The released deploy's fixed sampling seed (every query samples its initial noise from it).
DEFAULT_SEED = 195


class InferenceCancelled(RuntimeError):
    """An inference stopped early because its ``cancel()`` callable returned True (its chunk would be refused)."""


@dataclass
class Observation:
    """One synchronised observation of the robot.

    images: camera name -> (H, W, 3) uint8 array, RGB channel order (the ROS layer converts bgr8/mono8).
    proprio: (14,) float array in robot units: per arm 6 joint angles (rad) + normalised gripper (0..1),
        left arm first.
    instruction: task text; must be one of the policy's known instructions.
    stamp: observation time in seconds (the latest input stamp); carried through to the chunk.
    oldest_stamp: the earliest input stamp (None: same as ``stamp``). "Observed after T" needs every input
        after T: a camera frame older than an episode start may show the scene before its reset.
    """

    images: Mapping[str, np.ndarray]
    proprio: np.ndarray
    instruction: str
    stamp: float = 0.0
    oldest_stamp: Optional[float] = None

    @property
    def observed_since(self) -> float:
        """The earliest input stamp: every input of this observation was taken at or after it."""
        return self.stamp if self.oldest_stamp is None else float(self.oldest_stamp)


@dataclass
class PolicyOutput:
    """What one policy query returns.

    actions: (horizon, action_dim) float32 absolute joint targets in robot units (same layout as proprio).
    future_images: camera name -> (h, w, 3) uint8 RGB predicted future frame (may be empty).
    future_proprio: (action_dim,) predicted proprio at the end of the chunk, robot units, or None.
    value: predicted value of the future state in [0, 1], or NaN when the backend does not predict one.
    timings: stage name -> seconds (e.g. "preprocess", "encode", "denoise", "decode", "total").
    seed: the seed the sample was drawn with.
    clipped: True when some action fell outside the dataset statistics' range and was clipped to it.

    A backend may leave the future images to be decoded later (``CosmosPolicy(decode_future_images="deferred")``):
    the chunk can then be sent before the costliest CPU stage. :meth:`decode_future` returns them either way.
    """

    actions: np.ndarray
    future_images: Dict[str, np.ndarray] = field(default_factory=dict)
    future_proprio: Optional[np.ndarray] = None
    value: float = float("nan")
    timings: Dict[str, float] = field(default_factory=dict)
    seed: int = 0
    clipped: bool = False
    pending_decode: Optional[Callable[[], Dict[str, np.ndarray]]] = field(default=None, repr=False, compare=False)

    @property
    def future_images_pending(self) -> bool:
        """True while the future images are still to be decoded (:meth:`decode_future`)."""
        return self.pending_decode is not None

    def decode_future(self) -> Dict[str, np.ndarray]:
        """The predicted future frames, decoding them now if the backend deferred it (once; then cached)."""
        if self.pending_decode is not None:
            pending, self.pending_decode = self.pending_decode, None  # a failed decode is not retried
            t0 = time.perf_counter()
            self.future_images = pending()
            self.timings["decode"] = time.perf_counter() - t0
        return self.future_images


@runtime_checkable
class PolicyBackend(Protocol):
    """Anything the policy node can run: the real Cosmos Policy or a named test double."""

    horizon: int  # actions per chunk (50 on ALOHA)
    action_dim: int  # 14 on ALOHA
    period: float  # seconds between actions (0.04 at 25 Hz)
    policy_id: str

    @property
    def instructions(self) -> List[str]:
        """Task instructions this policy has text embeddings for."""
        ...

    def infer(self, obs: Observation, seed: Optional[int] = None) -> PolicyOutput:
        """Sample one action chunk (and future state / value) for ``obs``."""
        ...

    def infer_batch(self, obs: Observation, seeds: Sequence[int]) -> List[PolicyOutput]:
        """Sample one chunk per seed for the same observation in one batched forward per step."""
        ...


class PolicyWrapper:
    """Base of the planning backends, which wrap a policy (``self.base``): settings meant for the policy reach it."""

    @property
    def decode_future_images(self):
        """The base policy's future-image decoding (``"deferred"``: after the chunk is out). Setting it here sets the
        base's: a caller that configures the backend it holds must reach the policy inside the wrapper."""
        return self.base.decode_future_images  # AttributeError when the base has none: hasattr() is False

    @decode_future_images.setter
    def decode_future_images(self, mode) -> None:
        self.base.decode_future_images = mode
