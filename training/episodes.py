"""Training episodes on disk: one HDF5 file per episode in the reference (ALOHA / Cosmos Policy) layout.

Layout written by :func:`write_episode` (and read by :func:`read_episode`)::

    /observations/qpos              (T, 14) float64   proprio BEFORE action t (rad + normalised grippers)
    /observations/qvel              (T, 14) float64   optional
    /observations/effort            (T, 14) float64   optional
    /observations/images/<cam>      (T, H, W, 3) uint8 RGB            (raw frames), or
                                    (T, L) uint8 zero-padded JPEG bytes (compressed, root attr compress=True,
                                    lengths in /compress_len (n_cams, T), camera order in attr compress_cams)
    /observations/timestamps        (T,) float64      optional: seconds since the first step
    /action                         (T, 14) float64   executed absolute joint targets, normalised grippers
    attrs: sim (bool), task_description (str), success (bool), success_score (float, NaN = unlabelled),
           fps (float), compress (bool), plus any extra attrs (policy_name, episode_id, date_time, ...)

obs[t] (qpos, images) was taken before action[t] was executed. The reader also accepts the ALOHA recorder's
demo files (raw or JPEG-compressed images, no fps attr) and the simulated demo generator's files
(/observations/qpos, /observations/qvel, /action, /observations/images/<cam>, attrs sim, task_description,
success, success_score). ROS-free: numpy, h5py and Pillow only.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

PathLike = Union[str, os.PathLike]

#: Attributes with a fixed meaning; everything else in a file's root attrs lands in Episode.attrs.
_KNOWN_ATTRS = ("sim", "task_description", "success", "success_score", "fps", "compress", "compress_cams")


@dataclass
class Episode:
    """One episode in memory.

    qpos: (T, D) proprio before each action; action: (T, D) executed actions; images: camera -> (T, H, W, 3)
    uint8 RGB (empty when read with ``load_images=False``); fps: steps per second, or None when the file does
    not say (ALOHA demo files); success_score: NaN when unlabelled.
    """

    qpos: np.ndarray
    action: np.ndarray
    images: Dict[str, np.ndarray] = field(default_factory=dict)
    task: str = ""
    success: bool = False
    success_score: float = float("nan")
    fps: Optional[float] = None
    qvel: Optional[np.ndarray] = None
    effort: Optional[np.ndarray] = None
    timestamps: Optional[np.ndarray] = None
    sim: bool = False
    attrs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.qpos = np.asarray(self.qpos)
        self.action = np.asarray(self.action)
        if self.qpos.ndim != 2 or self.action.ndim != 2:
            raise ValueError(f"expected 2-d qpos and action, got shapes {self.qpos.shape} and {self.action.shape}")
        if self.qpos.shape[0] != self.action.shape[0]:
            raise ValueError(f"expected as many qpos rows as actions, got {self.qpos.shape[0]} and {self.action.shape[0]}")
        for cam, frames in self.images.items():
            if frames.shape[0] != self.num_steps:
                raise ValueError(f"camera {cam!r}: expected {self.num_steps} frames, got {frames.shape[0]}")

    @property
    def num_steps(self) -> int:
        """Number of (observation, action) steps T."""
        return int(self.qpos.shape[0])

    def downsample(self, stride: int) -> "Episode":
        """Every ``stride``-th step (e.g. 2 for 50 Hz -> 25 Hz); obs[t] still precedes action[t]."""
        if stride < 1:
            raise ValueError(f"expected a stride >= 1, got {stride}")
        if stride == 1:
            return self
        sl = slice(None, None, stride)
        return Episode(
            qpos=self.qpos[sl], action=self.action[sl], images={k: v[sl] for k, v in self.images.items()},
            task=self.task, success=self.success, success_score=self.success_score,
            fps=None if self.fps is None else self.fps / stride,
            qvel=None if self.qvel is None else self.qvel[sl], effort=None if self.effort is None else self.effort[sl],
            timestamps=None if self.timestamps is None else self.timestamps[sl], sim=self.sim, attrs=dict(self.attrs))


def success_from_outcome(outcome: str, score: Optional[float] = None) -> Tuple[bool, float]:
    """Operator outcome ("success" / "failure" / "partial" / "") -> (success flag, success score).

    success -> (True, 1.0); failure -> (False, 0.0); partial -> (False, score, default 0.5); "" -> (False, NaN).
    An explicit finite ``score`` in [0, 1] wins over the default for the outcome.
    """
    outcome = (outcome or "").strip().lower()
    given = score is not None and not (isinstance(score, float) and math.isnan(score))
    if given and not 0.0 <= float(score) <= 1.0:
        raise ValueError(f"expected a success score in [0, 1], got {score}")
    if outcome in ("success", "succeeded", "yes", "y"):
        return True, float(score) if given else 1.0
    if outcome in ("failure", "failed", "fail", "no", "n"):
        return False, float(score) if given else 0.0
    if outcome in ("partial", "p"):
        return False, float(score) if given else 0.5
    if outcome == "":
        return False, float(score) if given else float("nan")
    raise ValueError(f"expected outcome success, failure, partial or empty, got {outcome!r}")


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_jpeg(data: Union[bytes, np.ndarray]) -> np.ndarray:
    """JPEG (or PNG) bytes -> (H, W, 3) uint8 RGB."""
    from PIL import Image

    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("RGB"))


def resize_frames(frames: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8, bicubic (aspect ratio not kept, like the reference's squash)."""
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    if frames.shape[1:3] == (h, w):
        return frames
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), dtype=np.uint8)
    for i, f in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC))
    return out


class EpisodeWriter:
    """Write an episode step by step (frames go to disk as they come, so long full-resolution episodes never
    sit in memory); :func:`write_episode` is the all-at-once form. Same layout either way.

    Usage: ``w = EpisodeWriter(path, cameras)``; ``w.append(qpos, action, {cam: frame})`` per step;
    ``w.close(task, success, success_score)``. Written to ``<path>.tmp`` and renamed on close, so a reader
    never sees a half-written episode; :meth:`abort` removes the temporary file.
    """

    def __init__(self, path: PathLike, cameras: Sequence[str], *, fps: Optional[float] = 25.0,
                 jpeg_quality: Optional[int] = None, sim: bool = False, image_compression: Optional[str] = None):
        if image_compression not in (None, "lzf", "gzip"):
            raise ValueError(f"image_compression: expected None, 'lzf' or 'gzip', got {image_compression!r}")
        self.image_compression = image_compression
        self.path = Path(path)
        self.cameras = list(cameras)
        self.fps = fps
        self.jpeg_quality = jpeg_quality
        self.sim = sim
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._f: Optional[h5py.File] = h5py.File(self._tmp, "w")
        self._obs = self._f.create_group("observations")
        self._img = self._obs.create_group("images")
        self._ds: Dict[str, h5py.Dataset] = {}
        self._lens: List[List[int]] = [[] for _ in self.cameras]
        self._rows: Dict[str, List[np.ndarray]] = {"qpos": [], "action": [], "qvel": [], "effort": [], "timestamps": []}
        self.num_steps = 0

    def append(self, qpos: np.ndarray, action: np.ndarray, images: Mapping[str, np.ndarray], *,
               timestamp: Optional[float] = None, qvel: Optional[np.ndarray] = None,
               effort: Optional[np.ndarray] = None) -> None:
        """Add one step: proprio before the action, the executed action, one (H, W, 3) uint8 frame per camera."""
        if self._f is None:
            raise RuntimeError(f"{self.path}: writer already closed")
        if sorted(images) != sorted(self.cameras):
            raise ValueError(f"expected frames for cameras {self.cameras}, got {sorted(images)}")
        for ci, cam in enumerate(self.cameras):
            frame = images[cam]
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"camera {cam!r}: expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
            ds = self._ds.get(cam)
            if self.jpeg_quality is None:
                if ds is None:
                    # One chunk per frame: training reads random single steps.
                    ds = self._ds[cam] = self._img.create_dataset(
                        cam, shape=(0,) + frame.shape, maxshape=(None,) + frame.shape, dtype=np.uint8,
                        chunks=(1,) + frame.shape, compression=self.image_compression)
                elif ds.shape[1:] != frame.shape:
                    raise ValueError(f"camera {cam!r}: frame shape changed from {ds.shape[1:]} to {frame.shape}")
                ds.resize(self.num_steps + 1, axis=0)
                ds[self.num_steps] = frame
            else:
                data = np.frombuffer(encode_jpeg(frame, self.jpeg_quality), dtype=np.uint8)
                if ds is None:
                    ds = self._ds[cam] = self._img.create_dataset(
                        cam, shape=(0, len(data)), maxshape=(None, None), dtype=np.uint8, chunks=(1, 65536))
                if len(data) > ds.shape[1]:
                    ds.resize(len(data), axis=1)
                ds.resize(self.num_steps + 1, axis=0)
                row = np.zeros(ds.shape[1], dtype=np.uint8)
                row[:len(data)] = data
                ds[self.num_steps] = row
                self._lens[ci].append(len(data))
        self._rows["qpos"].append(np.asarray(qpos, dtype=np.float64))
        self._rows["action"].append(np.asarray(action, dtype=np.float64))
        for key, val in (("qvel", qvel), ("effort", effort), ("timestamps", timestamp)):
            if val is not None:
                self._rows[key].append(np.asarray(val, dtype=np.float64))
        self.num_steps += 1

    def close(self, task: str, success: bool, success_score: float,
              extra_attrs: Optional[Mapping[str, Any]] = None) -> Path:
        """Write proprio/actions and attributes, then move the file into place; returns the path."""
        f = self._f
        if f is None:
            raise RuntimeError(f"{self.path}: writer already closed")
        try:
            T = self.num_steps
            if T == 0:
                raise ValueError(f"{self.path}: no steps to write")
            self._obs.create_dataset("qpos", data=np.stack(self._rows["qpos"]))
            f.create_dataset("action", data=np.stack(self._rows["action"]))
            for key in ("qvel", "effort", "timestamps"):
                rows = self._rows[key]
                if rows:
                    if len(rows) != T:
                        raise ValueError(f"{key} given for {len(rows)} of {T} steps")
                    self._obs.create_dataset(key, data=np.stack(rows))
            compress = self.jpeg_quality is not None
            f.attrs["sim"] = bool(self.sim)
            f.attrs["task_description"] = str(task)
            f.attrs["success"] = bool(success)
            f.attrs["success_score"] = float(success_score)
            f.attrs["compress"] = compress
            if self.fps is not None:
                f.attrs["fps"] = float(self.fps)
            if compress:
                f.create_dataset("compress_len", data=np.asarray(self._lens, dtype=np.int64))
                f.attrs["compress_cams"] = np.array(self.cameras, dtype=h5py.string_dtype())
            for key, value in (extra_attrs or {}).items():
                if key in _KNOWN_ATTRS:
                    raise ValueError(f"extra attr {key!r} clashes with a standard attribute")
                f.attrs[key] = value
            f.close()
            self._f = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        if self._f is not None:
            try:
                self._f.close()
            except Exception:
                pass
            self._f = None
        if self._tmp.exists():
            self._tmp.unlink()


def write_episode(path: PathLike, qpos: np.ndarray, action: np.ndarray, images: Mapping[str, np.ndarray],
                  task: str, success: bool, success_score: float, *, fps: Optional[float] = 25.0,
                  jpeg_quality: Optional[int] = None, qvel: Optional[np.ndarray] = None,
                  effort: Optional[np.ndarray] = None, timestamps: Optional[np.ndarray] = None,
                  sim: bool = False, extra_attrs: Optional[Mapping[str, Any]] = None,
                  image_compression: Optional[str] = None) -> Path:
    """Write one episode as HDF5 in the layout described in the module docstring; returns the path.

    images: camera -> (T, H, W, 3) uint8 RGB. ``jpeg_quality`` set -> frames stored JPEG-compressed (ALOHA's
    padded-bytes format) instead of raw arrays; ``image_compression`` ("lzf" / "gzip") stores raw frames with a
    lossless HDF5 filter (readers need nothing special). Written to ``<path>.tmp`` and renamed (atomic).
    """
    qpos = np.asarray(qpos, dtype=np.float64)
    action = np.asarray(action, dtype=np.float64)
    if qpos.ndim != 2 or action.shape != qpos.shape:
        raise ValueError(f"expected qpos and action of the same (T, D) shape, got {qpos.shape} and {action.shape}")
    T = qpos.shape[0]
    for cam, frames in images.items():
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != T or frames.shape[3] != 3:
            raise ValueError(f"camera {cam!r}: expected ({T}, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    w = EpisodeWriter(path, list(images), fps=fps, jpeg_quality=jpeg_quality, sim=sim,
                      image_compression=image_compression)
    try:
        for t in range(T):
            w.append(qpos[t], action[t], {cam: fr[t] for cam, fr in images.items()},
                     timestamp=None if timestamps is None else timestamps[t],
                     qvel=None if qvel is None else qvel[t], effort=None if effort is None else effort[t])
        return w.close(task, success, success_score, extra_attrs)
    except BaseException:
        w.abort()
        raise


def _attr_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _attr_str(value.item())
    return str(value)


def _decode_compressed(ds: h5py.Dataset, lengths: Optional[np.ndarray]) -> np.ndarray:
    frames = []
    for t in range(ds.shape[0]):
        row = ds[t]
        n = int(lengths[t]) if lengths is not None else len(row)
        frames.append(decode_jpeg(row[:n]))
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def read_episode(path: PathLike, *, load_images: bool = True, cameras: Optional[Iterable[str]] = None,
                 swap_jpeg_rb: bool = False, steps: Optional[Iterable[int]] = None) -> Episode:
    """Read an episode file (ours, an ALOHA demo, or a simulated demo) -> :class:`Episode`.

    ``swap_jpeg_rb``: ALOHA's recorder JPEG-encodes RGB frames with OpenCV (which assumes BGR), so a standard
    decoder returns them with red and blue swapped; set it for such files (our own JPEG files need no swap).
    JPEG-compressed frames are decoded to (T, H, W, 3) uint8 RGB. ``cameras`` limits which cameras are read;
    ``steps`` limits which raw frames are read (the others are left black; for files that render only a few).
    Missing task / success attrs read as "" / False / NaN; a missing fps attr reads as None.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        if "observations/qpos" not in f or "action" not in f:
            raise ValueError(f"{path}: expected /observations/qpos and /action, found {sorted(f.keys())}")
        qpos = f["observations/qpos"][()]
        action = f["action"][()]
        attrs = dict(f.attrs)
        images: Dict[str, np.ndarray] = {}
        if load_images and "observations/images" in f:
            grp = f["observations/images"]
            wanted = list(grp.keys()) if cameras is None else list(cameras)
            compressed = bool(attrs.get("compress", False))
            # compress_len rows follow compress_cams when we wrote the file; ALOHA's own files order them by
            # its camera config, which the file does not record, so decode the zero-padded row whole instead
            # (JPEG decoders stop at the end-of-image marker).
            comp_cams = [_attr_str(c) for c in attrs.get("compress_cams", [])]
            lens = f["compress_len"][()] if ("compress_len" in f and comp_cams) else None
            for cam in wanted:
                if cam not in grp:
                    raise KeyError(f"{path}: camera {cam!r} not in {sorted(grp.keys())}")
                ds = grp[cam]
                if ds.ndim == 4 and steps is not None:
                    idx = sorted({int(t) for t in steps})
                    images[cam] = np.zeros(ds.shape, dtype=np.uint8)  # calloc: untouched pages cost nothing
                    for t in idx:  # one read per frame: h5py's list indexing was ~20x slower (80 vs 4 ms, 4 frames)
                        images[cam][t] = ds[t]
                elif ds.ndim == 4:
                    images[cam] = ds[()]
                elif ds.ndim == 2 or compressed:
                    cam_lens = None
                    if lens is not None and cam in comp_cams and comp_cams.index(cam) < lens.shape[0]:
                        cam_lens = lens[comp_cams.index(cam)]
                    images[cam] = _decode_compressed(ds, cam_lens)
                    if swap_jpeg_rb:
                        images[cam] = np.ascontiguousarray(images[cam][..., ::-1])
                else:
                    raise ValueError(f"{path}: camera {cam!r} has unexpected shape {ds.shape}")
        obs = f["observations"]
        qvel = obs["qvel"][()] if "qvel" in obs else None
        effort = obs["effort"][()] if "effort" in obs else None
        timestamps = obs["timestamps"][()] if "timestamps" in obs else None
    score = float(attrs["success_score"]) if "success_score" in attrs else float("nan")
    fps = float(attrs["fps"]) if "fps" in attrs else None
    extra = {k: (_attr_str(v) if isinstance(v, (bytes, str)) else v) for k, v in attrs.items() if k not in _KNOWN_ATTRS}
    return Episode(qpos=qpos, action=action, images=images, task=_attr_str(attrs.get("task_description", "")),
                   success=bool(attrs.get("success", False)), success_score=score, fps=fps, qvel=qvel,
                   effort=effort, timestamps=timestamps, sim=bool(attrs.get("sim", False)), attrs=extra)
