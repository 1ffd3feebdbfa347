"""``cosmos-policy convert``: recorded rollout bags and ALOHA HDF5 demos -> training episodes (one path).

Rollout bags (from the recorder node) are resampled to ``--fps`` (25 Hz) on a grid anchored at the robot
commands, so that every step pairs an observation with the command that followed it:

* grid: ``t_k = c_0 - dt/2 + k*dt`` where ``c_0`` is the first arm command's receive time and ``dt = 1/fps``;
  step k covers the interval ``[t_k, t_k+1)`` (with a 25 Hz commander, exactly one command per interval as long
  as its jitter stays under dt/2);
* action[k]: per command stream (left arm group, left gripper single, right arm group, right gripper single)
  the latest command received before ``t_k+1``; grippers converted back to the normalised command with
  ``GripperConvention.joint_to_command``; a stream that has not spoken yet holds the observed position;
* observation time ``o_k = min(first command received in step k, t_k + dt/2)``; qpos[k] (14-d, fingers
  normalised with the configured ALOHA generation) and each camera frame are the latest received at or
  before ``o_k``, so obs[k] always precedes action[k]. Leading steps before every camera and both arms have
  reported are dropped (counted in the summary).

Times are the bag's log times (the recorder's receive time). The bag is streamed once; frames are written to
the episode as they are chosen, so memory stays small. Labels (task, success, score) come from the bag's
custom_data, else from the EpisodeEvent messages recorded in it.

ALOHA HDF5 demos (raw or JPEG frames, usually 50 Hz) are downsampled by an integer stride to ``--fps``.
A truncated (crash-left) or corrupt bag is reported and skipped unless ``--recover`` is given; the rest
still convert. When a folder holds both a cut bag ``X`` and its ``X.reindexed`` copy (``bags reindex``), only
the reindexed copy is converted (once, into ``X.hdf5``) and the summary says so.

Joint states are read by name through the follower's :class:`JointNameMap` (``--joint-names``), so the order
of names in a message does not matter; bags whose JointStates carry no names convert only with
``--allow-unnamed-joint-states`` (the index layout), never silently. ROS-free: reads bags with ``rosbags``.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from cosmos_policy_ros.core.robot import (
    ACTION_DIM, JS_NAMES, GripperConvention, JointNameMap, JointStateError, gripper_convention, qpos_from_joint_states)
from cosmos_policy_ros.core.types import ALOHA_CAMERAS

from cosmos_policy_ros.core.episode_bag import REINDEXED_SUFFIX

from .bags import BagError, open_bag, reindexed_original
from .episodes import EpisodeWriter, decode_jpeg, resize_frames, success_from_outcome

ARMS = ("follower_left", "follower_right")


@dataclass
class ConvertConfig:
    """Options of one conversion run (see ``add_arguments`` for the command-line form)."""

    output_dir: str
    fps: float = 25.0
    image_size: Optional[Tuple[int, int]] = None  # (H, W); None keeps the recorded size
    jpeg_quality: Optional[int] = None  # set -> frames JPEG-compressed in the HDF5
    cameras: Sequence[str] = ALOHA_CAMERAS
    camera_topic_patterns: Sequence[str] = ("/{cam}/camera/color/image_rect_raw", "/{cam}/color/image_rect_raw")
    arms: Sequence[str] = ARMS
    episode_topic: str = "/episode"
    generation: Optional[str] = None  # None -> the bag's gripper_generation, else aloha2
    demo_fps: float = 50.0  # source rate of HDF5 demos without an fps attr
    demo_jpeg_bgr: bool = False  # demo JPEGs written by OpenCV from RGB arrays (swap R/B after decoding)
    unlabelled: str = "keep"  # keep (success False, score NaN) | skip | failure
    recover: bool = False
    task: Optional[str] = None  # override / default task text
    overwrite: bool = False
    joint_names: Sequence[str] = JS_NAMES  # published name of each Interbotix joint (JS_NAMES order)
    allow_unnamed_joint_states: bool = False  # JointStates without names: index layout (opt-in only)

    def __post_init__(self):
        if not self.fps > 0:
            raise ValueError(f"expected fps > 0, got {self.fps}")
        if self.image_size is not None:
            h, w = self.image_size
            if int(h) < 1 or int(w) < 1:
                raise ValueError(f"expected a positive image size (H, W), got {self.image_size}")
            self.image_size = (int(h), int(w))
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"expected a JPEG quality in 1..100, got {self.jpeg_quality}")
        if self.unlabelled not in ("keep", "skip", "failure"):
            raise ValueError(f"expected unlabelled keep, skip or failure, got {self.unlabelled!r}")
        if len(self.arms) != 2:
            raise ValueError(f"expected two arms (left, right), got {list(self.arms)}")
        if self.generation is not None:
            gripper_convention(self.generation)
        self.joint_map = JointNameMap(tuple(self.joint_names), bool(self.allow_unnamed_joint_states))


@dataclass
class ConvertResult:
    """One source's outcome, one row of the summary table."""

    source: str
    status: str  # ok | skipped | error
    output: str = ""
    steps: int = 0
    duration_s: float = 0.0
    task: str = ""
    success: Optional[bool] = None
    success_score: float = float("nan")
    notes: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# Images


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rosbags object) -> (H, W, 3) uint8 RGB, honouring step and encoding."""
    h, w, step, enc = int(msg.height), int(msg.width), int(msg.step), str(msg.encoding).lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "8uc3": 3}.get(enc)
    if channels is None:
        raise ValueError(f"unsupported image encoding {msg.encoding!r} (expected rgb8, bgr8, rgba8, bgra8, mono8)")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if step < w * channels or len(buf) < h * step:
        raise ValueError(f"image {w}x{h} {enc}: step {step} / {len(buf)} bytes too small")
    arr = buf[:h * step].reshape(h, step)[:, :w * channels].reshape(h, w, channels)
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    if enc in ("bgr8", "bgra8"):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    return np.ascontiguousarray(arr[:, :, :3])


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage -> (H, W, 3) uint8 RGB."""
    return decode_jpeg(np.asarray(msg.data, dtype=np.uint8))


# ----------------------------------------------------------------------------------------------------------
# Bag -> episode


@dataclass
class _Meta:
    task: str = ""
    policy_id: str = ""
    outcome: str = ""
    success_score: float = float("nan")
    note: str = ""
    episode_id: str = ""
    generation: str = ""
    source: str = ""


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _meta_from_bag(bag: Any, episode_topic: str) -> _Meta:
    c = bag.info.custom_data
    meta = _Meta(c.get("task", ""), c.get("policy_id", ""), c.get("outcome", ""), _float(c.get("success_score", "")),
                 c.get("note", ""), c.get("episode_id", ""), c.get("gripper_generation", ""), "custom_data")
    if episode_topic in bag.info.topics and (not meta.task or not meta.outcome):
        for _topic, _t, raw in bag.messages([episode_topic]):
            ev = bag.decode(episode_topic, raw)
            if ev.event == 0:  # START
                meta.task = meta.task or ev.task
                meta.policy_id = meta.policy_id or ev.policy_id
                meta.episode_id = meta.episode_id or ev.episode_id
            elif ev.event == 2 and not meta.outcome:  # OUTCOME
                meta.outcome, meta.success_score = ev.outcome, float(ev.success_score)
                meta.note = meta.note or ev.note
        meta.source = "custom_data + episode events" if c else "episode events"
    return meta


class _Resampler:
    """Streams time-ordered messages and emits (obs, action) steps on the command-anchored grid.

    Finished steps wait in ``pending`` until a later command proves the episode was still being commanded;
    steps after the last command (the robot merely holding after the commander stopped) are dropped.
    """

    def __init__(self, dt: float, cameras: Sequence[str], conv: GripperConvention, emit):
        self.dt = dt
        self.cameras = list(cameras)
        self.conv = conv
        self.emit = emit  # emit(step index, obs time relative to the first command, qpos, action, frames)
        self.t0: Optional[float] = None
        self.k = 0  # current grid interval
        self.obs_taken = False
        self.snapshot: Optional[Tuple[float, np.ndarray, Dict[str, Any]]] = None
        self.js: List[Optional[np.ndarray]] = [None, None]
        self.frames: Dict[str, Any] = {}
        self.arm_cmd: List[Optional[np.ndarray]] = [None, None]
        self.grip_cmd: List[Optional[float]] = [None, None]
        self.pending: List[Tuple[int, Optional[Tuple[float, np.ndarray, np.ndarray, Dict[str, Any]]]]] = []
        self.last_cmd_interval = -1
        self.dropped_leading = 0
        self.trailing_dropped = 0
        self.held_streams: set = set()
        self.steps = 0

    def _obs_ready(self) -> bool:
        return self.js[0] is not None and self.js[1] is not None and all(c in self.frames for c in self.cameras)

    def _take_obs(self, t: float) -> None:
        self.obs_taken = True
        if self._obs_ready():
            qpos = qpos_from_joint_states(self.js[0], self.js[1], self.conv)
            self.snapshot = (t, qpos, dict(self.frames))
        else:
            self.snapshot = None

    def _finish_interval(self) -> None:
        row = None
        if self.snapshot is not None:
            t, qpos, frames = self.snapshot
            action = np.empty(ACTION_DIM, dtype=np.float64)
            for side in (0, 1):
                base = 7 * side
                name = "left" if side == 0 else "right"
                if self.arm_cmd[side] is not None:
                    action[base:base + 6] = self.arm_cmd[side]
                else:  # not commanded yet: the arm holds where it is
                    action[base:base + 6] = qpos[base:base + 6]
                    self.held_streams.add(f"{name} arm")
                if self.grip_cmd[side] is not None:
                    action[base + 6] = float(self.conv.joint_to_command(self.grip_cmd[side]))
                else:
                    action[base + 6] = qpos[base + 6]
                    self.held_streams.add(f"{name} gripper")
            row = (t, qpos, action, frames)
        self.pending.append((self.k, row))
        self.k += 1
        self.obs_taken = False
        self.snapshot = None

    def _flush(self, upto: int) -> None:
        keep = []
        for k, row in self.pending:
            if k > upto:
                keep.append((k, row))
            elif row is None:
                if self.steps == 0:
                    self.dropped_leading += 1
                else:  # cannot happen: once every input reported, the latest values are held
                    raise ValueError(f"interval {k}: observation missing mid-episode")
            else:
                t, qpos, action, frames = row
                self.emit(self.steps, t - self.t0 - self.dt / 2, qpos, action, frames)
                self.steps += 1
        self.pending = keep

    def advance(self, t: float) -> None:
        """Move time forward to ``t`` (s): close finished intervals, take nominal observations that are due."""
        if self.t0 is None:
            return
        while True:
            start = self.t0 + self.k * self.dt
            if not self.obs_taken and t > start + self.dt / 2:
                self._take_obs(start + self.dt / 2)
            if t >= start + self.dt:
                self._finish_interval()
            else:
                return

    def on_command(self, t: float) -> None:
        """A command arrives at ``t`` (before it is applied): anchor the grid, take the observation if due."""
        if self.t0 is None:
            self.t0 = t - self.dt / 2
        self.advance(t)
        if not self.obs_taken:
            self._take_obs(t)
        self.last_cmd_interval = self.k
        self._flush(self.k - 1)

    def finish(self) -> None:
        """End of the bag: close the interval holding the last command, drop the holding tail."""
        if self.t0 is None:
            return
        if self.k == self.last_cmd_interval:
            if not self.obs_taken:
                self._take_obs(self.t0 + self.k * self.dt + self.dt / 2)
            self._finish_interval()
        self._flush(self.last_cmd_interval)
        self.trailing_dropped = len(self.pending)
        self.pending = []


def _camera_topics(bag: Any, cfg: ConvertConfig) -> Dict[str, str]:
    out = {}
    for cam in cfg.cameras:
        for pattern in cfg.camera_topic_patterns:
            topic = pattern.format(cam=cam)
            if topic in bag.info.topics:
                out[cam] = topic
                break
        else:
            raise ValueError(f"no topic for camera {cam!r} (tried {[p.format(cam=cam) for p in cfg.camera_topic_patterns]})")
    return out


def convert_bag(path: Path, out_path: Path, cfg: ConvertConfig) -> ConvertResult:
    """Convert one recorded episode bag into an episode HDF5 (see the module docstring for the sampling rule)."""
    res = ConvertResult(str(path), "ok", str(out_path))
    with open_bag(path) as bag:
        info = bag.info
        if info.recovered:
            text = "; ".join(info.problems) or "not closed"
            if not cfg.recover:
                res.status = "skipped"
                res.notes.append(f"truncated bag ({text}); {info.message_count} messages readable, use --recover")
                return res
            res.notes.append(f"recovered: {text}")
        meta = _meta_from_bag(bag, cfg.episode_topic)
        task = meta.task or (cfg.task or "")
        if cfg.task is not None and not meta.task:
            res.notes.append("task from --task")
        outcome = meta.outcome
        if not outcome:
            if cfg.unlabelled == "skip":
                res.status, res.task = "skipped", task
                res.notes.append("no outcome label (--unlabelled skip)")
                return res
            if cfg.unlabelled == "failure":
                outcome = "failure"
            res.notes.append("unlabelled" + (" -> failure" if outcome else ""))
        success, score = success_from_outcome(outcome, meta.success_score if outcome == meta.outcome else None)
        generation = cfg.generation or meta.generation or "aloha2"
        conv = gripper_convention(generation)
        cams = _camera_topics(bag, cfg)
        js_topics = [f"/{a}/joint_states" for a in cfg.arms]
        grp_topics = [f"/{a}/commands/joint_group" for a in cfg.arms]
        sgl_topics = [f"/{a}/commands/joint_single" for a in cfg.arms]
        for t in js_topics + grp_topics:
            if t not in info.topics:
                raise ValueError(f"bag has no {t} topic")
        topic_role: Dict[str, Tuple[str, Any]] = {}
        for cam, t in cams.items():
            topic_role[t] = ("cam", cam)
        for i in (0, 1):
            topic_role[js_topics[i]] = ("js", i)
            topic_role[grp_topics[i]] = ("grp", i)
            if sgl_topics[i] in info.topics:
                topic_role[sgl_topics[i]] = ("sgl", i)

        writer = EpisodeWriter(out_path, list(cams), fps=cfg.fps, jpeg_quality=cfg.jpeg_quality)
        last_decoded: Dict[str, Tuple[Any, np.ndarray]] = {}  # cam -> (raw object, frame): steps share frames

        def frame_of(cam: str, raw_and_topic: Tuple[bytes, str]) -> np.ndarray:
            raw, topic = raw_and_topic
            hit = last_decoded.get(cam)
            if hit is not None and hit[0] is raw:
                return hit[1]
            msg = bag.decode(topic, raw)
            img = compressed_to_rgb(msg) if "Compressed" in info.topics[topic].msgtype else image_to_rgb(msg)
            if cfg.image_size is not None:
                img = resize_frames(img[None], cfg.image_size)[0]
            last_decoded[cam] = (raw, img)
            return img

        def emit(_k: int, t_rel: float, qpos: np.ndarray, action: np.ndarray, frames: Dict[str, Any]) -> None:
            writer.append(qpos, action, {cam: frame_of(cam, frames[cam]) for cam in cams}, timestamp=t_rel)

        rs = _Resampler(1.0 / cfg.fps, list(cams), conv, emit)
        last_t = None
        base_ns = info.start_ns  # relative times keep sub-microsecond precision in float seconds
        try:
            for topic, t_ns, raw in bag.messages(list(topic_role)):
                t = (t_ns - base_ns) * 1e-9
                if last_t is not None and t < last_t - 1e-3:
                    raise ValueError(f"messages not in time order at {topic} ({t:.6f} < {last_t:.6f})")
                last_t = t if last_t is None else max(last_t, t)
                role, idx = topic_role[topic]
                rs.advance(t)
                if role == "cam":
                    rs.frames[idx] = (raw, topic)
                elif role == "js":
                    msg = bag.decode(topic, raw)
                    try:
                        rs.js[idx] = cfg.joint_map.canonical(list(msg.name), msg.position, side=cfg.arms[idx])
                    except JointStateError as exc:
                        hint = (" (a bag recorded without joint names converts with --allow-unnamed-joint-states, "
                                "read in the index layout " + ", ".join(JS_NAMES) + ")") if not len(msg.name) else ""
                        raise ValueError(f"{topic} at {t:.3f} s: {exc}{hint}") from exc
                elif role == "grp":
                    msg = bag.decode(topic, raw)
                    if msg.name == "arm":
                        cmd = np.asarray(msg.cmd, dtype=np.float64)
                        if cmd.shape != (6,):
                            raise ValueError(f"{topic}: expected 6 arm joint values, got {cmd.shape}")
                        rs.on_command(t)
                        rs.arm_cmd[idx] = cmd
                elif role == "sgl":
                    msg = bag.decode(topic, raw)
                    if msg.name == "gripper":
                        rs.on_command(t)
                        rs.grip_cmd[idx] = float(msg.cmd)
            rs.finish()
            if rs.steps == 0:
                raise ValueError("no complete step (need arm commands, both joint states and every camera)")
            extra = {"policy_name": meta.policy_id, "episode_id": meta.episode_id, "source": str(path),
                     "gripper_generation": generation, "outcome": outcome, "note": meta.note,
                     "date_time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.start_ns / 1e9))}
            writer.close(task, success, score, extra)
        except BaseException:
            writer.abort()
            raise
        if rs.dropped_leading:
            res.notes.append(f"{rs.dropped_leading} leading step(s) before all inputs reported")
        if rs.held_streams:
            res.notes.append("no command yet at start for " + ", ".join(sorted(rs.held_streams)) + " (held observed)")
        res.steps, res.duration_s = rs.steps, rs.steps / cfg.fps
        res.task, res.success, res.success_score = task, success, score
        return res


# ----------------------------------------------------------------------------------------------------------
# ALOHA HDF5 demo -> episode


def convert_demo(path: Path, out_path: Path, cfg: ConvertConfig) -> ConvertResult:
    """Downsample an ALOHA / simulated HDF5 demo to ``cfg.fps`` and rewrite it in our layout."""
    res = ConvertResult(str(path), "ok", str(out_path))
    with h5py.File(path, "r") as f:
        if "observations/qpos" not in f or "action" not in f:
            raise ValueError(f"expected /observations/qpos and /action, found {sorted(f.keys())}")
        src_fps = float(f.attrs["fps"]) if "fps" in f.attrs else cfg.demo_fps
        ratio = src_fps / cfg.fps
        stride = int(round(ratio))
        if stride < 1 or abs(ratio - stride) > 1e-6:
            raise ValueError(f"source rate {src_fps:g} Hz is not an integer multiple of {cfg.fps:g} Hz")
        qpos = f["observations/qpos"][()][::stride]
        action = f["action"][()][::stride]
        qvel = f["observations/qvel"][()][::stride] if "observations/qvel" in f else None
        grp = f["observations/images"] if "observations/images" in f else {}
        cams = [c for c in cfg.cameras if c in grp]
        missing = [c for c in cfg.cameras if c not in grp]
        if missing:
            res.notes.append(f"no frames for {missing}")
        attrs = dict(f.attrs)
        task = attrs.get("task_description", b"")
        task = task.decode() if isinstance(task, bytes) else str(task)
        task = task or (cfg.task or "")
        success = bool(attrs.get("success", True))  # demos count as successful unless they say otherwise
        score = float(attrs.get("success_score", 1.0 if success else 0.0))
        writer = EpisodeWriter(out_path, cams, fps=cfg.fps, jpeg_quality=cfg.jpeg_quality,
                               sim=bool(attrs.get("sim", False)))
        try:
            for i, t in enumerate(range(0, f["action"].shape[0], stride)):
                frames = {}
                for cam in cams:
                    ds = grp[cam]
                    img = ds[t] if ds.ndim == 4 else decode_jpeg(ds[t])
                    if ds.ndim != 4 and cfg.demo_jpeg_bgr:
                        img = np.ascontiguousarray(img[..., ::-1])
                    if cfg.image_size is not None:
                        img = resize_frames(img[None], cfg.image_size)[0]
                    frames[cam] = img
                writer.append(qpos[i], action[i], frames, timestamp=i / cfg.fps,
                              qvel=None if qvel is None else qvel[i])
            writer.close(task, success, score, {"source": str(path), "source_fps": src_fps})
        except BaseException:
            writer.abort()
            raise
    res.steps, res.duration_s, res.task, res.success, res.success_score = len(qpos), len(qpos) / cfg.fps, task, success, score
    if stride > 1:
        res.notes.append(f"{src_fps:g} Hz -> {cfg.fps:g} Hz (every {stride})")
    return res


# ----------------------------------------------------------------------------------------------------------
# Discovery, driver, CLI


def discover_sources(inputs: Sequence[str]) -> List[Tuple[str, Path]]:
    """Expand inputs into (kind, path): kind 'bag' (bag dir / .mcap / .db3) or 'hdf5'. Directories recurse."""
    found: List[Tuple[str, Path]] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_file():
            if p.suffix in (".hdf5", ".h5"):
                found.append(("hdf5", p))
            elif p.suffix in (".mcap", ".db3"):
                found.append(("bag", p))
            else:
                raise ValueError(f"{p}: expected a bag (.mcap/.db3 or bag directory) or an .hdf5 episode")
        elif p.is_dir():
            if list(p.glob("*.mcap")) or list(p.glob("*.db3")) or (p / "metadata.yaml").exists():
                found.append(("bag", p))
                continue
            for sub in sorted(p.rglob("*")):
                if sub.is_dir() and (list(sub.glob("*.mcap")) or list(sub.glob("*.db3"))):
                    found.append(("bag", sub))
                elif sub.is_file() and sub.suffix in (".hdf5", ".h5"):
                    found.append(("hdf5", sub))
        else:
            raise ValueError(f"{p}: no such file or directory")
    return found


def prefer_reindexed(sources: Sequence[Tuple[str, Path]]) -> Tuple[List[Tuple[str, Path]], Dict[Path, List[str]]]:
    """Drop each cut bag ``X`` whose reindexed copy ``X.reindexed`` is also a source: one episode converts once,
    from the closed copy. Returns the kept sources and a note per kept reindexed copy."""
    bags = {p.resolve() for kind, p in sources if kind == "bag"}
    kept, notes = [], {}
    for kind, p in sources:
        if kind == "bag" and p.is_dir() and (p.parent / (p.name + REINDEXED_SUFFIX)).resolve() in bags:
            continue
        original = reindexed_original(p) if kind == "bag" else None
        if original is not None and original.resolve() in bags:
            notes[p] = [f"reindexed copy of {original.name} (converted instead of the cut original)"]
        kept.append((kind, p))
    return kept, notes


def convert_all(inputs: Sequence[str], cfg: ConvertConfig, progress: bool = True) -> List[ConvertResult]:
    """Convert every source; failures are recorded in the results and never stop the others."""
    from tqdm import tqdm

    sources, notes = prefer_reindexed(discover_sources(inputs))
    out_dir = Path(cfg.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    results: List[ConvertResult] = []
    used: set = set()
    for kind, src in tqdm(sources, desc="converting", unit="episode", disable=not progress, file=sys.stderr):
        stem = src.stem if src.is_file() else src.name
        original = reindexed_original(src) if kind == "bag" and src.is_dir() else None
        if original is not None:  # X.reindexed -> X.hdf5: the episode keeps its name
            stem = original.name
        name = stem
        n = 1
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        out_path = out_dir / f"{name}.hdf5"
        if out_path.exists() and not cfg.overwrite:
            results.append(ConvertResult(str(src), "skipped", str(out_path), notes=["output exists (--overwrite)"]))
            continue
        try:
            res = convert_bag(src, out_path, cfg) if kind == "bag" else convert_demo(src, out_path, cfg)
        except (BagError, ValueError, KeyError, OSError, RuntimeError) as exc:
            res = ConvertResult(str(src), "error", "", notes=[f"{type(exc).__name__}: {exc}"])
        except Exception as exc:  # a corrupt file can fail deep inside a decoder; report, keep going
            res = ConvertResult(str(src), "error", "", notes=[f"{type(exc).__name__}: {exc}"])
        res.notes = notes.get(src, []) + res.notes
        results.append(res)
    return results


def summary_table(results: Sequence[ConvertResult]) -> str:
    """Markdown table: one row per source, then totals."""
    rows = ["| source | status | steps | seconds | success | score | task | notes |",
            "| --- | --- | ---: | ---: | --- | ---: | --- | --- |"]
    for r in results:
        succ = "" if r.success is None else ("yes" if r.success else "no")
        score = "" if math.isnan(r.success_score) else f"{r.success_score:.2f}"
        rows.append(f"| {Path(r.source).name} | {r.status} | {r.steps} | {r.duration_s:.1f} | {succ} | {score} | "
                    f"{r.task[:40]} | {'; '.join(r.notes)[:160]} |")
    ok = [r for r in results if r.status == "ok"]
    rows.append(f"\n{len(ok)} converted, {sum(r.status == 'skipped' for r in results)} skipped, "
                f"{sum(r.status == 'error' for r in results)} failed; {sum(r.steps for r in ok)} steps")
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cosmos-policy convert``."""
    parser.add_argument("inputs", nargs="+", help="bag directories / .mcap / .db3 files, .hdf5 demos, or folders of them")
    parser.add_argument("-o", "--output", required=True, help="directory for the episode .hdf5 files")
    parser.add_argument("--fps", type=float, default=25.0, help="output rate (default 25)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="resize frames (bicubic, aspect not kept), e.g. 224 224; default: keep")
    parser.add_argument("--jpeg", type=int, nargs="?", const=90, default=None, metavar="QUALITY",
                        help="store frames JPEG-compressed in the HDF5 (default quality 90) instead of raw arrays")
    parser.add_argument("--cameras", nargs="+", default=list(ALOHA_CAMERAS), help="camera names to keep")
    parser.add_argument("--generation", default=None, help="ALOHA gripper convention (aloha1/aloha2); default: from the bag, else aloha2")
    parser.add_argument("--demo-fps", type=float, default=50.0, help="rate of HDF5 demos without an fps attr (default 50)")
    parser.add_argument("--demo-jpeg-bgr", action="store_true", help="demo JPEGs were OpenCV-encoded RGB: swap R/B")
    parser.add_argument("--unlabelled", choices=("keep", "skip", "failure"), default="keep",
                        help="episodes without outcome: keep (score NaN), skip, or count as failure")
    parser.add_argument("--recover", action="store_true", help="also convert truncated bags (crash-left) as far as readable")
    parser.add_argument("--task", default=None, help="task text for sources that carry none")
    parser.add_argument("--joint-names", nargs=len(JS_NAMES), default=list(JS_NAMES), metavar="NAME",
                        help="published JointState name of each joint, in the order " + " ".join(JS_NAMES)
                        + " (default: the Interbotix names)")
    parser.add_argument("--allow-unnamed-joint-states", action="store_true",
                        help="read JointStates that carry no names in the index layout (old bags); without it "
                             "such a bag fails with a clear error")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Convert, print the summary table; exit 1 if any source failed, 0 otherwise."""
    cfg = ConvertConfig(output_dir=args.output, fps=args.fps, image_size=tuple(args.image_size) if args.image_size else None,
                        jpeg_quality=args.jpeg, cameras=args.cameras, generation=args.generation,
                        demo_fps=args.demo_fps, demo_jpeg_bgr=args.demo_jpeg_bgr, unlabelled=args.unlabelled,
                        recover=args.recover, task=args.task, overwrite=args.overwrite, joint_names=args.joint_names,
                        allow_unnamed_joint_states=args.allow_unnamed_joint_states)
    results = convert_all(args.inputs, cfg, progress=not args.no_progress)
    print(summary_table(results))
    return 1 if any(r.status == "error" for r in results) else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos-policy convert", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
