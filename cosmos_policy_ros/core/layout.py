"""The latent sequence layout of Cosmos Policy, as data.

A layout lists the latent frames of one sample in order. Each frame (a :class:`Slot`) holds either an
image (one camera, current or future), an injected vector (proprio, action chunk, value) or the leading
blank frame. The VAE compresses time by 4 and keeps its first frame alone, so the raw video has
``1 + 4 * (n_frames - 1)`` frames and latent frame ``k >= 1`` comes from raw frames ``4k-3 .. 4k``.

Which frames are *conditioning* (given clean) depends on the task the model is asked to do (``MODES``):

- ``policy``: blank + current proprio + current images; generates action, future state, value.
- ``world_model``: as ``policy`` plus the action chunk; generates future state and value.
- ``value_v`` (V(s')): blank + future proprio + future images; current state and action are masked
  (un-conditioned), value generated.
- ``value_q`` (Q(s,a)): everything but the value frame is given.

Layouts for LIBERO (2 cameras) and RoboCasa (3 cameras) use the same classes; their slot orders follow the
reference dataset code (the same for both backbones, Predict2 and Predict2.5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

#: Frame kinds. "blank": leading blank image; "image": a camera image; the rest are injected vectors.
KINDS = ("blank", "image", "proprio", "action", "value")
#: Time roles: "current" = the observation, "future" = the state after the action chunk.
ROLES = ("current", "future", "none")
#: Conditioning modes (see module docstring).
MODES = ("policy", "world_model", "value_v", "value_q")


@dataclass(frozen=True)
class Slot:
    """One latent frame: what it holds and whether it is current or future."""

    kind: str
    role: str = "none"
    camera: Optional[str] = None  # image slots only

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"slot kind: expected one of {KINDS}, got {self.kind!r}")
        if self.role not in ROLES:
            raise ValueError(f"slot role: expected one of {ROLES}, got {self.role!r}")
        if (self.kind == "image") != (self.camera is not None):
            raise ValueError(f"slot {self.kind!r}: a camera name is expected exactly for image slots, got {self.camera!r}")

    @property
    def injected(self) -> bool:
        """True for frames that carry a tiled vector rather than an encoded image."""
        return self.kind in ("proprio", "action", "value")


@dataclass(frozen=True)
class LatentLayout:
    """Ordered latent frames of one sample plus the vector sizes injected into them.

    horizon x action_dim actions fill the action frame; proprio_dim values the proprio frames.
    ``cameras`` is the camera order of the *current* image slots (the order images are fed in).
    """

    name: str
    slots: Tuple[Slot, ...]
    horizon: int
    action_dim: int
    proprio_dim: int
    temporal_compression: int = 4

    def __post_init__(self):
        if not self.slots or self.slots[0].kind != "blank":
            raise ValueError(f"layout {self.name!r}: expected the first slot to be the blank frame, got {self.slots[:1]}")
        for attr in ("horizon", "action_dim", "proprio_dim", "temporal_compression"):
            if int(getattr(self, attr)) <= 0:
                raise ValueError(f"layout {self.name!r}: expected {attr} > 0, got {getattr(self, attr)}")
        counts: Dict[Tuple[str, str, Optional[str]], int] = {}
        for s in self.slots:
            key = (s.kind, s.role, s.camera)
            counts[key] = counts.get(key, 0) + 1
        dup = [k for k, n in counts.items() if n > 1]
        if dup:
            raise ValueError(f"layout {self.name!r}: expected unique slots, got duplicates {dup}")
        for kind in ("action", "value"):
            if sum(s.kind == kind for s in self.slots) != 1:
                raise ValueError(f"layout {self.name!r}: expected exactly one {kind} slot")
        cur = {s.camera for s in self.slots if s.kind == "image" and s.role == "current"}
        fut = {s.camera for s in self.slots if s.kind == "image" and s.role == "future"}
        if cur != fut:
            raise ValueError(f"layout {self.name!r}: expected the same cameras now and in the future, got {cur} vs {fut}")

    # ---- lookups -------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        """Number of latent frames (11 on ALOHA)."""
        return len(self.slots)

    @property
    def num_raw_frames(self) -> int:
        """Raw video length the VAE encodes (41 on ALOHA)."""
        return 1 + self.temporal_compression * (self.num_frames - 1)

    @property
    def cameras(self) -> Tuple[str, ...]:
        """Cameras in the order of the current image slots."""
        return tuple(s.camera for s in self.slots if s.kind == "image" and s.role == "current")

    def index(self, kind: str, role: str = "none", camera: Optional[str] = None) -> int:
        """Latent frame index of a slot; raises ValueError listing the slots when absent."""
        want = Slot(kind, role, camera)
        for i, s in enumerate(self.slots):
            if s == want:
                return i
        raise ValueError(f"layout {self.name!r} has no slot {want}; slots: {list(self.slots)}")

    @property
    def action_index(self) -> int:
        return self.index("action")

    @property
    def value_index(self) -> int:
        return self.index("value")

    @property
    def current_proprio_index(self) -> int:
        return self.index("proprio", "current")

    @property
    def future_proprio_index(self) -> int:
        return self.index("proprio", "future")

    def image_indices(self, role: str) -> Dict[str, int]:
        """camera -> latent frame index of its image slot with the given role."""
        return {s.camera: i for i, s in enumerate(self.slots) if s.kind == "image" and s.role == role}

    def injected_indices(self) -> Tuple[int, ...]:
        """Frames holding vectors (their clean VAE latent is a blank image's)."""
        return tuple(i for i, s in enumerate(self.slots) if s.injected)

    def raw_frame(self, k: int) -> int:
        """First raw video frame of latent frame k (the blank frame is raw frame 0)."""
        if not 0 <= k < self.num_frames:
            raise ValueError(f"expected a latent frame index in [0, {self.num_frames}), got {k}")
        return 0 if k == 0 else (k - 1) * self.temporal_compression + 1

    def raw_frames(self, k: int) -> range:
        """All raw video frames that latent frame k covers."""
        start = self.raw_frame(k)
        return range(0, 1) if k == 0 else range(start, start + self.temporal_compression)

    def condition_indices(self, mode: str) -> Tuple[int, ...]:
        """Latent frames given clean in ``mode`` (one of MODES)."""
        if mode not in MODES:
            raise ValueError(f"conditioning mode: expected one of {MODES}, got {mode!r}")
        out = []
        for i, s in enumerate(self.slots):
            if s.kind == "blank":
                cond = True
            elif mode == "policy":
                cond = s.role == "current"
            elif mode == "world_model":
                cond = s.role == "current" or s.kind == "action"
            elif mode == "value_v":
                cond = s.role == "future" and s.kind != "value"
            else:  # value_q
                cond = s.kind != "value"
            if cond:
                out.append(i)
        return tuple(out)

    def condition_mask(self, mode: str) -> List[bool]:
        """Per-frame booleans, True = conditioning frame, for ``mode``."""
        idx = set(self.condition_indices(mode))
        return [i in idx for i in range(self.num_frames)]

    def generated_indices(self, mode: str) -> Tuple[int, ...]:
        """Latent frames the sampler generates in ``mode``."""
        idx = set(self.condition_indices(mode))
        return tuple(i for i in range(self.num_frames) if i not in idx)

    def to_dict(self) -> dict:
        """JSON-able description (written into our checkpoint's config.json)."""
        return {
            "name": self.name,
            "slots": [{"kind": s.kind, "role": s.role, "camera": s.camera} for s in self.slots],
            "horizon": self.horizon,
            "action_dim": self.action_dim,
            "proprio_dim": self.proprio_dim,
            "temporal_compression": self.temporal_compression,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LatentLayout":
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(d["name"]),
            slots=tuple(Slot(s["kind"], s.get("role", "none"), s.get("camera")) for s in d["slots"]),
            horizon=int(d["horizon"]),
            action_dim=int(d["action_dim"]),
            proprio_dim=int(d["proprio_dim"]),
            temporal_compression=int(d.get("temporal_compression", 4)),
        )


def make_layout(name: str, cameras: Sequence[str], horizon: int, action_dim: int, proprio_dim: int) -> LatentLayout:
    """The Cosmos Policy pattern for any camera list: blank, proprio, current images, action, future proprio,
    future images, value (cameras in the given order)."""
    slots: List[Slot] = [Slot("blank"), Slot("proprio", "current")]
    slots += [Slot("image", "current", c) for c in cameras]
    slots += [Slot("action"), Slot("proprio", "future")]
    slots += [Slot("image", "future", c) for c in cameras]
    slots += [Slot("value")]
    return LatentLayout(name, tuple(slots), horizon, action_dim, proprio_dim)


#: ALOHA (facts sheet section 2): 11 frames, wrist cameras before cam_high.
ALOHA = make_layout("aloha", ("cam_left_wrist", "cam_right_wrist", "cam_high"), horizon=50, action_dim=14, proprio_dim=14)
#: LIBERO (reference dataset order): 9 frames, blank, proprio, wrist, primary, action, future proprio, future
#: wrist, future primary, value; chunk 16, action 7, proprio 9.
LIBERO = make_layout("libero", ("wrist", "primary"), horizon=16, action_dim=7, proprio_dim=9)
#: RoboCasa (reference dataset order): 11 frames, the wrist image FIRST, then primary (left) and secondary
#: (right): blank, proprio, wrist, left, right, action, future proprio, future wrist, future left, future right,
#: value; chunk 32 (16 executed), action 7, proprio 9. A released RoboCasa checkpoint reads its cameras by slot,
#: so this order is part of the checkpoint's contract.
ROBOCASA = make_layout("robocasa", ("wrist", "left", "right"), horizon=32, action_dim=7, proprio_dim=9)

LAYOUTS: Dict[str, LatentLayout] = {l.name: l for l in (ALOHA, LIBERO, ROBOCASA)}


def get_layout(name: str) -> LatentLayout:
    """Named layout lookup with a clear error."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown latent layout {name!r}; expected one of {sorted(LAYOUTS)}") from None
