"""Recorder node: one rosbag2 (MCAP) bag per episode, raw CDR, written off the callback thread.

Subscriptions are ``raw=True`` (the CDR bytes go straight to the bag, nothing is deserialised); each callback
only appends ``(topic, receive time, bytes)`` to a queue, and a writer thread feeds the ``rosbags`` writer.
Episodes are bounded by :class:`EpisodeEvent` START / STOP messages on ``/episode``; the outcome label comes
as an OUTCOME event or through the ``~/label_episode`` service (``cosmos-policy outcome`` asks for it) and is
stored in the bag's ``metadata.yaml`` ``custom_data``. The episode events themselves are recorded on the
episode topic, so task and policy survive even a bag whose recorder was killed. Custom types
(cosmos_policy_ros/*, interbotix_xs_msgs/*) are registered from their installed ``.msg`` text, so each bag is
self-describing.

Crash safety: the writer closes the current MCAP chunk and flushes it to the OS every ``flush_interval_s``
(optionally fsync), so a SIGKILL loses at most that much; ``cosmos_policy_training.bags`` reads such a bag
without footer or metadata.yaml. SIGINT / SIGTERM drain the queue and close the bag properly.
Disk problems are caught at start (and at each episode start): the output directory must be writable and
have ``min_free_space_mb`` free.
"""
from __future__ import annotations

import datetime as _dt
import functools
from collections import defaultdict
import importlib
import json
import math
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

#: Default topics (the ALOHA graph) and their types; every one is a node parameter.
DEFAULT_CAMERA_TOPICS = (
    "/cam_high/camera/color/image_rect_raw",
    "/cam_left_wrist/camera/color/image_rect_raw",
    "/cam_right_wrist/camera/color/image_rect_raw",
)
DEFAULT_JOINT_STATE_TOPICS = ("/follower_left/joint_states", "/follower_right/joint_states")
DEFAULT_GROUP_COMMAND_TOPICS = ("/follower_left/commands/joint_group", "/follower_right/commands/joint_group")
DEFAULT_SINGLE_COMMAND_TOPICS = ("/follower_left/commands/joint_single", "/follower_right/commands/joint_single")

IMAGE_TYPE = "sensor_msgs/msg/Image"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
GROUP_COMMAND_TYPE = "interbotix_xs_msgs/msg/JointGroupCommand"
SINGLE_COMMAND_TYPE = "interbotix_xs_msgs/msg/JointSingleCommand"
ACTION_CHUNK_TYPE = "cosmos_policy_ros/msg/ActionChunk"
EPISODE_EVENT_TYPE = "cosmos_policy_ros/msg/EpisodeEvent"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"

#: Version of the custom_data layout written into each bag.
METADATA_FORMAT = "cosmos_policy_ros.episode.v1"


class RecorderSetupError(RuntimeError):
    """The recorder cannot record safely (output directory, disk space, unknown types); raised at start."""


# ----------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TopicSpec:
    """One recorded topic: name, ROS type ``pkg/msg/Name``, and the subscription queue depth."""

    topic: str
    msgtype: str
    depth: int = 100

    def __post_init__(self):
        if not self.topic.startswith("/"):
            raise ValueError(f"expected an absolute topic name, got {self.topic!r}")
        parts = self.msgtype.split("/")
        if len(parts) != 3 or parts[1] != "msg" or not all(parts):
            raise ValueError(f"expected a message type like pkg/msg/Name for {self.topic}, got {self.msgtype!r}")
        if self.depth < 1:
            raise ValueError(f"expected a queue depth >= 1 for {self.topic}, got {self.depth}")


def parse_extra_topic(text: str, depth: int) -> TopicSpec:
    """``"/topic:pkg/msg/Name"`` -> :class:`TopicSpec`."""
    topic, sep, msgtype = text.rpartition(":")
    if not sep:
        raise ValueError(f"expected an extra topic as '/topic:pkg/msg/Name', got {text!r}")
    return TopicSpec(topic.strip(), msgtype.strip(), depth)


@dataclass
class RecorderConfig:
    """Everything the recorder needs, validated (built from node parameters or directly in tests)."""

    output_dir: str
    topics: Sequence[TopicSpec]
    episode_topic: str = "/episode"
    storage: str = "mcap"
    min_free_space_mb: float = 2048.0
    flush_interval_s: float = 0.25
    fsync: bool = False
    max_queue_mb: float = 2048.0
    gripper_generation: str = "aloha2"
    msg_search_paths: Sequence[str] = ()

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("expected an output_dir, got an empty string")
        if self.storage not in ("mcap", "sqlite3"):
            raise ValueError(f"expected storage 'mcap' or 'sqlite3', got {self.storage!r}")
        if self.min_free_space_mb < 0:
            raise ValueError(f"expected min_free_space_mb >= 0, got {self.min_free_space_mb}")
        if not self.flush_interval_s > 0:
            raise ValueError(f"expected flush_interval_s > 0, got {self.flush_interval_s}")
        if not self.max_queue_mb > 0:
            raise ValueError(f"expected max_queue_mb > 0, got {self.max_queue_mb}")
        names = [t.topic for t in self.topics]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"expected each topic once, got duplicates {dup}")
        if self.episode_topic in names:
            raise ValueError(f"the episode topic {self.episode_topic} is recorded automatically; do not list it")


# ----------------------------------------------------------------------------------------------------------
# Start-up checks and type registration (ROS-free)


def check_output_dir(path: str, min_free_space_mb: float) -> Path:
    """Create ``path`` if needed and prove it is writable with enough free space; clear error otherwise."""
    p = Path(os.path.expanduser(path))
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecorderSetupError(f"recorder: cannot create output directory {p}: {exc.strerror or exc}") from exc
    if not p.is_dir():
        raise RecorderSetupError(f"recorder: output path {p} exists and is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".recorder_write_test_", dir=p)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise RecorderSetupError(f"recorder: output directory {p} is not writable: {exc.strerror or exc}") from exc
    free_mb = shutil.disk_usage(p).free / 2**20
    if free_mb < min_free_space_mb:
        raise RecorderSetupError(
            f"recorder: only {free_mb:.0f} MiB free in {p}, expected at least min_free_space_mb="
            f"{min_free_space_mb:.0f} MiB (3 cameras at 30 Hz need ~83 MB/s)")
    return p


def find_msg_file(msgtype: str, search_paths: Sequence[str] = ()) -> Optional[Path]:
    """Locate ``<share>/<pkg>/msg/<Name>.msg`` for ``pkg/msg/Name`` in ``search_paths`` or the ament index."""
    pkg, _, name = msgtype.split("/")
    for root in search_paths:
        for cand in (Path(root) / pkg / "msg" / f"{name}.msg", Path(root) / "share" / pkg / "msg" / f"{name}.msg"):
            if cand.is_file():
                return cand
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        share = Path(get_package_share_directory(pkg))
    except (ImportError, LookupError, KeyError, ValueError):
        return None
    except Exception:  # PackageNotFoundError and friends
        return None
    cand = share / "msg" / f"{name}.msg"
    return cand if cand.is_file() else None


def build_typestore(msgtypes: Sequence[str], search_paths: Sequence[str] = ()) -> Any:
    """A rosbags typestore knowing every type in ``msgtypes`` (and their dependencies).

    Types the built-in ROS 2 store lacks (our messages, interbotix_xs_msgs) are registered from their
    installed ``.msg`` text, recursively for nested custom types; unknown types raise RecorderSetupError.
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    pending = list(dict.fromkeys(msgtypes))
    registered: Dict[str, Any] = {}
    while pending:
        msgtype = pending.pop()
        if msgtype in store.fielddefs or msgtype in registered:
            continue
        path = find_msg_file(msgtype, search_paths)
        if path is None:
            raise RecorderSetupError(
                f"recorder: no definition for {msgtype}: not a standard type and no {msgtype.split('/')[-1]}.msg "
                f"found in the ament index or msg_search_paths {list(search_paths)}")
        types = get_types_from_msg(path.read_text(), msgtype)
        registered.update(types)
        for _, fields in types.values():
            for _fname, ftype in fields:
                pending.extend(_referenced_types(ftype))
        store.register(types)
    return store


def _referenced_types(ftype: Any) -> List[str]:
    """Message type names referenced by a rosbags field type description."""
    out: List[str] = []
    stack = [ftype]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            stack.extend(item)
        elif isinstance(item, str) and item.count("/") == 2:
            out.append(item)
    return out


def import_message_class(msgtype: str) -> Any:
    """``pkg/msg/Name`` -> the generated Python class (needed to subscribe, even raw)."""
    pkg, sub, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as exc:
        raise RecorderSetupError(f"recorder: message type {msgtype} is not installed ({exc})") from exc


# ----------------------------------------------------------------------------------------------------------
# A leaner MCAP storage for rosbags' Writer


@functools.lru_cache(maxsize=None)
def _lean_writer_class() -> Any:
    """rosbags' Writer whose MCAP storage copies each message once (into the file) instead of ~5 times.

    rosbags (pinned 0.11.9) builds every record in a BytesIO, copies it into the chunk's BytesIO, copies the
    chunk out again and then into the file. At 83 MB/s of images that is ~400 MB/s of memcpy holding the GIL.
    This subclass keeps a chunk as a list of byte pieces and hands them to the file with ``writelines``; the
    file layout (chunks, message indexes, summary) is byte-for-byte what rosbags writes. Compressed chunks
    fall back to rosbags' own code.
    """
    import struct as _struct
    from io import BytesIO

    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import StoragePlugin
    from rosbags.rosbag2.storage_mcap import McapWriter, PendingChunk, write_record, write_string, write_uint16, \
        write_uint32, write_uint64

    msg_header = _struct.Struct("<BQHIQQ")

    class LeanMcapWriter(McapWriter):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._parts: List[Any] = []
            self._size = 0

        def pending_bytes(self) -> int:
            """Bytes in the open chunk (0 = nothing to flush)."""
            return self._size + self.chunk.bio.tell()

        def _take_bio(self) -> None:
            # schema / channel records that rosbags wrote into the chunk's BytesIO keep their order
            n = self.chunk.bio.tell()
            if n:
                self._parts.append(self.chunk.bio.getvalue())
                self._size += n
                self.chunk.bio = BytesIO()

        def write(self, connection: Any, timestamp: int, data: Any) -> None:
            if self.compression:
                return super().write(connection, timestamp, data)
            self._take_bio()
            self.message_start_time = min(timestamp, self.message_start_time)
            self.message_end_time = max(timestamp, self.message_end_time)
            self.channel_stats[connection.id] += 1
            chunk = self.chunk
            chunk.message_start_time = min(timestamp, chunk.message_start_time)
            chunk.message_end_time = max(timestamp, chunk.message_end_time)
            chunk.msgs[connection.id].append((timestamp, self._size))
            head = msg_header.pack(0x05, 22 + len(data), connection.id, 0, timestamp, timestamp)
            self._parts.append(head)
            self._parts.append(data)
            self._size += len(head) + len(data)
            if self._size > 2**20:
                self.close_chunk()

        def close_chunk(self) -> None:
            if self.compression:
                return super().close_chunk()
            self._take_bio()
            size = self._size
            chunk = self.chunk
            head = BytesIO()
            write_uint64(head, chunk.message_start_time)
            write_uint64(head, chunk.message_end_time)
            write_uint64(head, size)
            write_uint32(head, 0)
            write_string(head, "")
            write_uint64(head, size)
            chunk_start = self.bio.tell()
            self.bio.write(_struct.pack("<BQ", 0x06, head.tell() + size))
            self.bio.write(head.getbuffer())
            self.bio.writelines(self._parts)
            chunk_end = self.bio.tell()
            offsets: List[Tuple[int, int]] = []
            for cid, msgs in chunk.msgs.items():
                offsets.append((cid, self.bio.tell()))
                rec = BytesIO()
                write_uint16(rec, cid)
                write_uint32(rec, len(msgs) * 16)
                for ts, offset in msgs:
                    write_uint64(rec, ts)
                    write_uint64(rec, offset)
                write_record(self.bio, 0x07, rec)
            rec = BytesIO()
            write_uint64(rec, chunk.message_start_time)
            write_uint64(rec, chunk.message_end_time)
            write_uint64(rec, chunk_start)
            write_uint64(rec, chunk_end - chunk_start)
            write_uint32(rec, len(offsets) * 10)
            for cid, offset in offsets:
                write_uint16(rec, cid)
                write_uint64(rec, offset)
            write_uint64(rec, self.bio.tell() - chunk_end)
            write_string(rec, "")
            write_uint64(rec, size)
            write_uint64(rec, size)
            self.chunks.append(rec)
            self._parts = []
            self._size = 0
            self.chunk = PendingChunk(2**63 - 1, 0, BytesIO(), defaultdict(list))

        def close(self, version: int, metadata: str) -> None:
            if not self.compression and self.pending_bytes():
                self.close_chunk()
            super().close(version, metadata)

    class LeanWriter(Writer):
        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: LeanMcapWriter}

    return LeanWriter


# ----------------------------------------------------------------------------------------------------------
# Episode bookkeeping and the bag writer (ROS-free)


@dataclass
class EpisodeMeta:
    """What the bag's custom_data says about one episode (all stored as strings)."""

    episode_id: str
    task: str = ""
    policy_id: str = ""
    start_time_ns: int = 0
    stop_time_ns: int = 0
    stop_reason: str = ""
    outcome: str = ""
    success_score: float = float("nan")
    note: str = ""
    labelled_time_ns: int = 0

    def label(self, outcome: str, success_score: float, note: str, now_ns: int) -> None:
        """Apply an operator label (validated: outcome in success/failure/partial, score in [0, 1])."""
        outcome, score = normalise_outcome(outcome, success_score)
        self.outcome, self.success_score, self.labelled_time_ns = outcome, score, now_ns
        if note:
            self.note = note

    def custom_data(self, extra: Mapping[str, str]) -> Dict[str, str]:
        """custom_data strings for metadata.yaml."""
        def iso(ns: int) -> str:
            return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).isoformat() if ns else ""

        data = {
            "format": METADATA_FORMAT,
            "episode_id": self.episode_id,
            "task": self.task,
            "policy_id": self.policy_id,
            "start_time_ns": str(self.start_time_ns),
            "start_time": iso(self.start_time_ns),
            "stop_time_ns": str(self.stop_time_ns),
            "stop_time": iso(self.stop_time_ns),
            "duration_s": f"{max(0, self.stop_time_ns - self.start_time_ns) / 1e9:.3f}" if self.stop_time_ns else "",
            "stop_reason": self.stop_reason,
            "outcome": self.outcome,
            "success": "" if not self.outcome else ("true" if self.outcome == "success" else "false"),
            "success_score": "" if math.isnan(self.success_score) else f"{self.success_score:.6g}",
            "note": self.note,
            "labelled_time": iso(self.labelled_time_ns),
        }
        data.update(extra)
        return data


def normalise_outcome(outcome: str, score: float) -> Tuple[str, float]:
    """Validate an outcome label; derive the score when NaN (success 1, failure 0, partial 0.5)."""
    outcome = (outcome or "").strip().lower()
    aliases = {"s": "success", "y": "success", "yes": "success", "f": "failure", "n": "failure", "no": "failure",
               "fail": "failure", "p": "partial"}
    outcome = aliases.get(outcome, outcome)
    if outcome not in ("success", "failure", "partial"):
        raise ValueError(f"expected outcome success, failure or partial, got {outcome!r}")
    # NaN means "derive it"; so does 0.0 with success / partial: that is the message default of a sender that
    # did not set the field, never a meaningful score for those outcomes.
    if score is None or math.isnan(score) or (score == 0.0 and outcome != "failure"):
        score = {"success": 1.0, "failure": 0.0, "partial": 0.5}[outcome]
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"expected a success score in [0, 1], got {score}")
    return outcome, float(score)


def update_bag_custom_data(bag_dir: Path, updates: Mapping[str, str]) -> None:
    """Rewrite ``custom_data`` in a closed bag's metadata.yaml atomically (tmp file + rename)."""
    meta = bag_dir / "metadata.yaml"
    doc = yaml.safe_load(meta.read_text())
    info = doc["rosbag2_bagfile_information"]
    custom = dict(info.get("custom_data") or {})
    custom.update({k: str(v) for k, v in updates.items()})
    info["custom_data"] = custom
    tmp = meta.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(doc, default_flow_style=False, sort_keys=False))
    os.replace(tmp, meta)


@dataclass
class _EpisodeRecord:
    meta: EpisodeMeta
    path: Path
    state: str = "open"  # open -> closing -> closed (or failed)
    label_version: int = 0
    written_label_version: int = -1


@dataclass
class WriterStats:
    """Counters of the writer (read from other threads; ints are updated atomically under the GIL)."""

    enqueued: int = 0
    written: int = 0
    dropped_queue_full: int = 0
    ignored_outside_episode: int = 0
    bytes_written: int = 0
    queue_bytes: int = 0
    max_queue_bytes: int = 0
    max_queue_len: int = 0
    episodes: int = 0
    errors: List[str] = field(default_factory=list)
    per_topic: Dict[str, int] = field(default_factory=dict)


class EpisodeBagWriter:
    """Queue + writer thread around a rosbags Writer; one bag per episode. ROS-free.

    ``enqueue`` never blocks (callback thread); ``start_episode`` / ``stop_episode`` are queued in the same
    stream as messages, so a bag holds exactly what was enqueued between them.
    """

    def __init__(self, config: RecorderConfig, typestore: Any, clock_ns: Callable[[], int] = time.time_ns,
                 log: Callable[[str], None] = lambda m: None):
        self.config = config
        self.typestore = typestore
        self.clock_ns = clock_ns
        self.log = log
        self.output_dir = check_output_dir(config.output_dir, config.min_free_space_mb)
        self.stats = WriterStats()
        self._queue: "queue.SimpleQueue[Tuple]" = queue.SimpleQueue()
        self._max_queue_bytes = int(config.max_queue_mb * 2**20)
        self._lock = threading.Lock()
        self._qlock = threading.Lock()
        self._records: Dict[str, _EpisodeRecord] = {}
        self._latest: Optional[_EpisodeRecord] = None
        self._recording = False  # what the callback thread sees; the writer thread follows the queue
        self._stop_pending: Optional[_EpisodeRecord] = None
        self._reserved: set = set()
        self._topics = list(config.topics) + [TopicSpec(config.episode_topic, EPISODE_EVENT_TYPE, 100)]
        # msgdef + hash per type, computed once (generate_msgdef walks the dependency tree).
        self._typeinfo = {}
        for spec in self._topics:
            if spec.msgtype not in self._typeinfo:
                msgdef, _ = typestore.generate_msgdef(spec.msgtype, ros_version=2)
                self._typeinfo[spec.msgtype] = (msgdef, typestore.hash_rihs01(spec.msgtype))
        self._thread = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
        self._thread.start()

    # ---- called from the ROS callback thread -------------------------------------------------------------

    @property
    def recording(self) -> bool:
        """True between a start and a stop (as seen by the callback thread)."""
        return self._recording

    def enqueue(self, topic: str, t_ns: int, data: bytes) -> bool:
        """Queue one message for the current bag; False if not recording or dropped (queue over max_queue_mb)."""
        if not self._recording:
            self.stats.ignored_outside_episode += 1
            return False
        n = len(data)
        st = self.stats
        with self._qlock:
            if st.queue_bytes + n > self._max_queue_bytes:
                st.dropped_queue_full += 1
                return False
            st.queue_bytes += n
            st.enqueued += 1
            if st.queue_bytes > st.max_queue_bytes:
                st.max_queue_bytes = st.queue_bytes
            qlen = st.enqueued - st.written
            if qlen > st.max_queue_len:
                st.max_queue_len = qlen
        self._queue.put(("msg", topic, t_ns, data))
        return True

    def start_episode(self, meta: EpisodeMeta) -> Path:
        """Begin a new bag (closing one still open, reason 'superseded'); returns the bag directory."""
        if self._recording and self.finish_stop() is None:
            self.stop_episode("superseded by a new episode")
        free_mb = shutil.disk_usage(self.output_dir).free / 2**20
        if free_mb < self.config.min_free_space_mb:
            raise RecorderSetupError(
                f"recorder: refusing to start episode {meta.episode_id!r}: only {free_mb:.0f} MiB free in "
                f"{self.output_dir}, min_free_space_mb={self.config.min_free_space_mb:.0f}")
        meta.start_time_ns = meta.start_time_ns or self.clock_ns()
        stamp = _dt.datetime.fromtimestamp(meta.start_time_ns / 1e9).strftime("%Y%m%d-%H%M%S")
        safe_id = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in meta.episode_id) or "episode"
        path = self.output_dir / f"{stamp}_{safe_id}"
        n = 1
        while path.exists() or path in self._reserved:  # the writer thread creates it a little later
            n += 1
            path = self.output_dir / f"{stamp}_{safe_id}_{n}"
        self._reserved.add(path)
        rec = _EpisodeRecord(meta, path)
        with self._lock:
            self._records[meta.episode_id] = rec
            self._latest = rec
        self._recording = True
        self._queue.put(("open", rec))
        return path

    def request_stop(self, reason: str = "", stop_ns: Optional[int] = None) -> Optional[Path]:
        """Note the episode's stop (time, reason) but keep recording until :meth:`finish_stop`: messages that
        were sent before the STOP but arrive after it (other topics, a busy machine) still belong to it."""
        with self._lock:
            rec = self._latest
        if not self._recording or rec is None:
            return None
        rec.meta.stop_time_ns = stop_ns or self.clock_ns()
        rec.meta.stop_reason = reason
        self._stop_pending = rec
        return rec.path

    def finish_stop(self) -> Optional[Path]:
        """Close the episode whose stop was requested (no-op if none is pending)."""
        rec, self._stop_pending = self._stop_pending, None
        if rec is None or rec is not self._latest or not self._recording:
            return None
        return self.stop_episode(rec.meta.stop_reason, rec.meta.stop_time_ns)

    def stop_episode(self, reason: str = "", stop_ns: Optional[int] = None) -> Optional[Path]:
        """End the current bag (written and closed by the writer thread); returns its directory or None."""
        with self._lock:
            rec = self._latest
        if not self._recording or rec is None:
            return None
        self._recording = False
        self._stop_pending = None
        rec.meta.stop_time_ns = stop_ns or self.clock_ns()
        rec.meta.stop_reason = reason
        self._queue.put(("close", rec))
        return rec.path

    def label(self, episode_id: str, outcome: str, success_score: float, note: str = "") -> Tuple[bool, str, str]:
        """Label an episode (``""`` = latest): stored now if its bag is closed, else when it closes.

        Returns (ok, message, bag path). Episodes from earlier runs are found by their directory name.
        """
        now = self.clock_ns()
        with self._lock:
            rec = self._latest if not episode_id else self._records.get(episode_id)
            if rec is None:
                return self._label_on_disk(episode_id, outcome, success_score, note, now)
            try:
                rec.meta.label(outcome, success_score, note, now)
            except ValueError as exc:
                return False, str(exc), str(rec.path)
            rec.label_version += 1
            if rec.state == "closed":
                try:
                    update_bag_custom_data(rec.path, rec.meta.custom_data(self._extra_custom_data()))
                    rec.written_label_version = rec.label_version
                except OSError as exc:
                    return False, f"could not update {rec.path}/metadata.yaml: {exc}", str(rec.path)
                return True, f"labelled {rec.meta.episode_id!r} {rec.meta.outcome} ({rec.meta.success_score:g})", str(rec.path)
            if rec.state == "failed":
                return False, f"episode {rec.meta.episode_id!r} failed to record; label not stored", str(rec.path)
            return True, (f"labelled {rec.meta.episode_id!r} {rec.meta.outcome} ({rec.meta.success_score:g}); "
                          f"stored when its bag closes"), str(rec.path)

    def _label_on_disk(self, episode_id: str, outcome: str, score: float, note: str, now: int) -> Tuple[bool, str, str]:
        if not episode_id:
            return False, "no episode recorded yet", ""
        safe_id = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in episode_id)
        matches = sorted(p for p in self.output_dir.glob(f"*_{safe_id}") if (p / "metadata.yaml").exists())
        if not matches:
            return False, f"unknown episode {episode_id!r} (no closed bag named *_{safe_id} in {self.output_dir})", ""
        try:
            outcome, score = normalise_outcome(outcome, score)
        except ValueError as exc:
            return False, str(exc), str(matches[-1])
        meta = EpisodeMeta(episode_id)
        meta.label(outcome, score, note, now)
        data = meta.custom_data({})
        update_bag_custom_data(matches[-1], {k: data[k] for k in ("outcome", "success", "success_score", "labelled_time")}
                               | ({"note": note} if note else {}))
        return True, f"labelled {episode_id!r} {outcome} ({score:g})", str(matches[-1])

    def close(self, timeout: float = 60.0) -> None:
        """Stop (closing an open episode, reason 'recorder shutdown'), drain the queue, join the thread."""
        if self._recording and self.finish_stop() is None:
            self.stop_episode("recorder shutdown")
        self._queue.put(("quit",))
        self._thread.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, benchmarks)."""
        done = threading.Event()
        self._queue.put(("sync", done))
        return done.wait(timeout)

    # ---- writer thread -----------------------------------------------------------------------------------

    def _extra_custom_data(self) -> Dict[str, str]:
        return {"gripper_generation": self.config.gripper_generation, "recorder": "cosmos_policy_ros.ros.recorder"}

    def _run(self) -> None:
        writer = None
        conns: Dict[str, Any] = {}
        rec: Optional[_EpisodeRecord] = None
        last_flush = time.monotonic()
        dirty = False
        flush_every = self.config.flush_interval_s
        while True:
            try:
                item = self._queue.get(timeout=flush_every)
            except queue.Empty:
                item = None
            kind = item[0] if item else None
            try:
                if kind == "msg":
                    _, topic, t_ns, data = item
                    with self._qlock:
                        self.stats.queue_bytes -= len(data)
                    if writer is not None:
                        writer.write(conns[topic], t_ns, data)
                        self.stats.written += 1
                        self.stats.bytes_written += len(data)
                        self.stats.per_topic[topic] = self.stats.per_topic.get(topic, 0) + 1
                        dirty = True
                elif kind == "open":
                    if writer is not None:  # never happens: stop is queued before open
                        self._close(writer, rec)
                    rec = item[1]
                    writer, conns = self._open(rec)
                    dirty = True
                elif kind == "close":
                    if writer is not None and item[1] is rec:
                        self._close(writer, rec)
                    writer, conns, rec = None, {}, None
                elif kind == "sync":
                    if writer is not None:
                        self._flush(writer)
                    item[1].set()
                elif kind == "quit":
                    if writer is not None:
                        self._close(writer, rec)
                    return
            except Exception as exc:  # disk full, permission lost, ...: keep the data written so far
                msg = f"recorder: writing {rec.path if rec else '?'} failed: {exc!r}"
                self.stats.errors.append(msg)
                self.log(msg)
                if rec is not None:
                    rec.state = "failed"
                if writer is not None:
                    try:
                        self._flush(writer)
                    except Exception:
                        pass
                    try:
                        writer.abort()
                    except Exception:
                        pass
                writer, conns = None, {}
            now = time.monotonic()
            if writer is not None and dirty and now - last_flush >= flush_every:
                try:
                    self._flush(writer)
                except Exception as exc:
                    self.stats.errors.append(f"recorder: flush failed: {exc!r}")
                dirty = False
                last_flush = now

    def _open(self, rec: _EpisodeRecord) -> Tuple[Any, Dict[str, Any]]:
        from rosbags.rosbag2 import StoragePlugin

        plugin = StoragePlugin.MCAP if self.config.storage == "mcap" else StoragePlugin.SQLITE3
        writer = _lean_writer_class()(rec.path, version=9, storage_plugin=plugin)
        writer.open()
        conns = {}
        for spec in self._topics:
            msgdef, rihs = self._typeinfo[spec.msgtype]
            conns[spec.topic] = writer.add_connection(spec.topic, spec.msgtype, msgdef=msgdef, rihs01=rihs)
        self.stats.episodes += 1
        self.log(f"recorder: episode {rec.meta.episode_id!r} -> {rec.path}")
        return writer, conns

    def _flush(self, writer: Any) -> None:
        """Make everything written so far survive a killed process (and with fsync, a power cut)."""
        storage = writer.storage
        if storage is None:
            return
        if hasattr(storage, "close_chunk"):  # MCAP: finish the open chunk, then push it to the OS
            pending = storage.pending_bytes() if hasattr(storage, "pending_bytes") else storage.chunk.bio.tell()
            if pending:
                storage.close_chunk()
            storage.bio.flush()
            if self.config.fsync:
                os.fsync(storage.bio.fileno())
        elif hasattr(storage, "conn"):  # sqlite3: commit the transaction
            storage.conn.commit()

    def _close(self, writer: Any, rec: _EpisodeRecord) -> None:
        with self._lock:
            rec.state = "closing"
            version = rec.label_version
            data = rec.meta.custom_data(self._extra_custom_data())
        data["dropped_messages"] = str(self.stats.dropped_queue_full)
        for k, v in data.items():
            writer.set_custom_data(k, v)
        writer.close()
        with self._lock:
            rec.state = "closed"
            rec.written_label_version = version
            if rec.label_version != version:  # labelled while closing
                update_bag_custom_data(rec.path, rec.meta.custom_data(self._extra_custom_data()))
                rec.written_label_version = rec.label_version
        self.log(f"recorder: closed {rec.path} ({rec.meta.stop_reason or 'stopped'})")


# ----------------------------------------------------------------------------------------------------------
# The node


def _declare(node: Any, name: str, default: Any, description: str) -> Any:
    from rcl_interfaces.msg import ParameterDescriptor

    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value


def config_from_parameters(node: Any) -> RecorderConfig:
    """Declare the recorder's parameters on ``node`` and build a validated :class:`RecorderConfig`."""
    p = lambda n, d, desc: _declare(node, n, d, desc)  # noqa: E731
    image_depth = int(p("image_queue_depth", 30, "subscription queue depth for image topics"))
    depth = int(p("queue_depth", 200, "subscription queue depth for all other topics"))
    topics: List[TopicSpec] = []
    for t in p("camera_topics", list(DEFAULT_CAMERA_TOPICS), "sensor_msgs/Image topics to record"):
        topics.append(TopicSpec(t, IMAGE_TYPE, image_depth))
    for t in p("joint_state_topics", list(DEFAULT_JOINT_STATE_TOPICS), "sensor_msgs/JointState topics (followers)"):
        topics.append(TopicSpec(t, JOINT_STATE_TYPE, depth))
    for t in p("joint_group_command_topics", list(DEFAULT_GROUP_COMMAND_TOPICS),
               "interbotix_xs_msgs/JointGroupCommand topics (arm commands)"):
        topics.append(TopicSpec(t, GROUP_COMMAND_TYPE, depth))
    for t in p("joint_single_command_topics", list(DEFAULT_SINGLE_COMMAND_TOPICS),
               "interbotix_xs_msgs/JointSingleCommand topics (gripper commands)"):
        topics.append(TopicSpec(t, SINGLE_COMMAND_TYPE, depth))
    for name, default, mtype_default, desc in (
            ("action_chunk_topic", "/action_chunk", ACTION_CHUNK_TYPE, "ActionChunk topic ('' = none)"),
            ("value_topic", "/policy/value", "std_msgs/msg/Float32", "predicted value topic ('' = none)"),
            ("diagnostics_topic", "/diagnostics", DIAGNOSTICS_TYPE, "diagnostics topic ('' = none)")):
        topic = p(name, default, desc)
        mtype = p(name.replace("_topic", "_type"), mtype_default, f"message type of {name}")
        if topic:
            topics.append(TopicSpec(topic, mtype, depth))
    for extra in p("extra_topics", [""], "more topics to record, each '/topic:pkg/msg/Name'"):
        if extra.strip():
            topics.append(parse_extra_topic(extra, depth))
    return RecorderConfig(
        output_dir=p("output_dir", "~/cosmos_policy_bags", "directory that receives one bag per episode"),
        topics=topics,
        episode_topic=p("episode_topic", "/episode", "EpisodeEvent topic (START/STOP/OUTCOME); always recorded"),
        storage=p("storage", "mcap", "rosbag2 storage: mcap (crash-recoverable) or sqlite3"),
        min_free_space_mb=float(p("min_free_space_mb", 2048.0, "refuse to start (or start an episode) below this")),
        flush_interval_s=float(p("flush_interval_s", 0.25, "close the MCAP chunk and flush at least this often")),
        fsync=bool(p("fsync", False, "fsync on every flush (survives power loss, costs throughput)")),
        max_queue_mb=float(p("max_queue_mb", 2048.0, "writer queue limit; beyond it messages are dropped and counted")),
        gripper_generation=p("gripper_generation", "aloha2", "ALOHA generation, stored in the bag for the converter"),
        msg_search_paths=[s for s in p("msg_search_paths", [""], "extra roots holding <pkg>/msg/<Name>.msg") if s],
    )


def make_node_class():
    """Build the Node subclass lazily so this module imports without initialising rclpy."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.srv import LabelEpisode

    class RecorderNode(Node):
        """Subscribes raw to the configured topics and records one bag per episode."""

        def __init__(self, **kwargs: Any):
            super().__init__("recorder", **kwargs)
            self.config = config_from_parameters(self)
            reliability = _declare(self, "reliability", "reliable", "subscription reliability: reliable or best_effort")
            if reliability not in ("reliable", "best_effort"):
                raise RecorderSetupError(f"recorder: expected reliability reliable or best_effort, got {reliability!r}")
            history = _declare(self, "history", "keep_all",
                               "subscription history: keep_all (DDS keeps every unread sample; no reader-side "
                               "loss while the node catches up) or keep_last (queue_depth / image_queue_depth)")
            if history not in ("keep_last", "keep_all"):
                raise RecorderSetupError(f"recorder: expected history keep_last or keep_all, got {history!r}")
            self.executor_kind = _declare(self, "executor", "events",
                                          "events (rclpy EventsExecutor, lowest overhead; falls back when "
                                          "missing) or single_threaded")
            if self.executor_kind not in ("events", "single_threaded"):
                raise RecorderSetupError(
                    f"recorder: expected executor events or single_threaded, got {self.executor_kind!r}")
            self.stop_grace_s = float(_declare(self, "stop_grace_s", 0.5,
                                               "after STOP keep recording this long (late messages of the episode)"))
            self._stop_timer = None
            _declare(self, "shutdown_drain_s", 0.3, "on SIGINT/SIGTERM keep receiving this long before closing")
            publish_diag = bool(_declare(self, "publish_diagnostics", True, "publish recorder status at 1 Hz"))
            # Fail early and clearly: output directory, free space, message definitions.
            typestore = build_typestore([t.msgtype for t in self.config.topics] + [EPISODE_EVENT_TYPE],
                                        self.config.msg_search_paths)
            self.writer = EpisodeBagWriter(self.config, typestore, clock_ns=self._now_ns,
                                           log=lambda m: self.get_logger().info(m))
            rel = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
            hist = HistoryPolicy.KEEP_ALL if history == "keep_all" else HistoryPolicy.KEEP_LAST
            self._subs = []
            for spec in self.config.topics:
                cls = import_message_class(spec.msgtype)
                self._subs.append(self.create_subscription(
                    cls, spec.topic, self._make_callback(spec.topic),
                    QoSProfile(depth=spec.depth, reliability=rel, history=hist), raw=True))
            self._episode_sub = self.create_subscription(EpisodeEvent, self.config.episode_topic, self._on_episode,
                                                         QoSProfile(depth=100))
            self._serialize = serialize_message
            self._label_srv = self.create_service(LabelEpisode, "~/label_episode", self._on_label)
            self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10) if publish_diag else None
            self._diag_types = (DiagnosticArray, DiagnosticStatus, KeyValue)
            if publish_diag:
                self.create_timer(1.0, self._publish_diagnostics)
            self.get_logger().info(
                f"recorder ready: {len(self.config.topics)} topics -> {self.writer.output_dir} "
                f"({self.config.storage}); episodes from {self.config.episode_topic}; "
                f"label service {self._label_srv.srv_name}")

        def _now_ns(self) -> int:
            return self.get_clock().now().nanoseconds

        def _make_callback(self, topic: str) -> Callable[[bytes], None]:
            enqueue = self.writer.enqueue
            now = self._now_ns

            def on_message(data: bytes) -> None:
                enqueue(topic, now(), data)

            return on_message

        def _on_episode(self, msg: Any) -> None:
            t = self._now_ns()
            raw = self._serialize(msg)
            topic = self.config.episode_topic
            if msg.event == EpisodeEvent.START:
                meta = EpisodeMeta(msg.episode_id or f"episode_{t}", msg.task, msg.policy_id, start_time_ns=t)
                try:
                    self.writer.start_episode(meta)
                except RecorderSetupError as exc:
                    self.get_logger().error(str(exc))
                    return
                self.writer.enqueue(topic, t, raw)
            elif msg.event == EpisodeEvent.STOP:
                self.writer.enqueue(topic, t, raw)
                if self.writer.request_stop(msg.reason, t) is None:
                    self.get_logger().warning(f"STOP for {msg.episode_id!r} but no episode is recording")
                elif self.stop_grace_s <= 0:
                    self.writer.finish_stop()
                else:
                    self._arm_stop_timer()
            elif msg.event == EpisodeEvent.OUTCOME:
                self.writer.enqueue(topic, t, raw)
                ok, text, _ = self.writer.label(msg.episode_id, msg.outcome, float(msg.success_score), msg.note)
                (self.get_logger().info if ok else self.get_logger().error)(f"OUTCOME event: {text}")
            else:
                self.get_logger().warning(f"ignoring EpisodeEvent with unknown event {msg.event}")

        def _arm_stop_timer(self) -> None:
            if self._stop_timer is not None:
                self._stop_timer.cancel()
                self.destroy_timer(self._stop_timer)

            def fire() -> None:
                timer, self._stop_timer = self._stop_timer, None
                if timer is not None:
                    timer.cancel()
                    self.destroy_timer(timer)
                self.writer.finish_stop()

            self._stop_timer = self.create_timer(self.stop_grace_s, fire)

        def _on_label(self, request: Any, response: Any) -> Any:
            ok, text, path = self.writer.label(request.episode_id, request.outcome, float(request.success_score),
                                               request.note)
            response.ok, response.message, response.bag_path = ok, text, path
            (self.get_logger().info if ok else self.get_logger().error)(f"label: {text}")
            return response

        def _publish_diagnostics(self) -> None:
            DiagnosticArray_, DiagnosticStatus_, KeyValue_ = self._diag_types
            st = self.writer.stats
            status = DiagnosticStatus_()
            status.name = f"{self.get_name()}: recorder"
            status.hardware_id = "recorder"
            bad = st.dropped_queue_full or st.errors
            status.level = DiagnosticStatus_.ERROR if bad else DiagnosticStatus_.OK
            status.message = (st.errors[-1] if st.errors else
                              f"dropped {st.dropped_queue_full}" if st.dropped_queue_full else
                              "recording" if self.writer.recording else "idle")
            status.values = [KeyValue_(key=k, value=str(v)) for k, v in (
                ("recording", self.writer.recording), ("written", st.written), ("bytes_written", st.bytes_written),
                ("dropped_queue_full", st.dropped_queue_full), ("queue_bytes", st.queue_bytes),
                ("max_queue_bytes", st.max_queue_bytes), ("episodes", st.episodes))]
            status.values += [KeyValue_(key=f"written {topic}", value=str(n)) for topic, n in list(st.per_topic.items())]
            arr = DiagnosticArray_()
            arr.header.stamp = self.get_clock().now().to_msg()
            arr.status = [status]
            self._diag_pub.publish(arr)

        def shutdown(self) -> None:
            """Close the open bag properly and stop the writer thread."""
            self.writer.close()
            st = self.writer.stats
            self.get_logger().info(
                f"recorder stopped: {st.written} messages, {st.bytes_written / 2**20:.1f} MiB in {st.episodes} "
                f"episode(s); dropped {st.dropped_queue_full}; max queue {st.max_queue_bytes / 2**20:.1f} MiB")

    return RecorderNode


def main(args: Optional[List[str]] = None) -> int:
    """Run the recorder until SIGINT/SIGTERM; the open bag is closed properly on either."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def _on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        node = make_node_class()()
    except (RecorderSetupError, ValueError) as exc:
        print(f"[recorder] ERROR: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    executor = None
    if node.executor_kind == "events":
        try:
            from rclpy.experimental import EventsExecutor

            executor = EventsExecutor()
        except ImportError:  # Humble has no EventsExecutor
            node.get_logger().warning("EventsExecutor not available; using SingleThreadedExecutor")
    if executor is None:
        executor = SingleThreadedExecutor()
    executor.add_node(node)
    drain_s = float(node.get_parameter("shutdown_drain_s").value)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        # Take in what DDS already delivered before closing the bag (bounded: publishers may still be going).
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.01)
    finally:
        node.shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
