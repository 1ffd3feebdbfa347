"""The episode bag writer: a queue and a writer thread around a rosbags Writer, one bag per episode. ROS-free.

``enqueue`` never blocks (it runs on the ROS callback thread); episode starts and stops travel in the same
queue as the messages, so a bag holds exactly what was enqueued between them. The writer thread closes the
open MCAP chunk and flushes it to the OS every ``flush_interval_s`` (optionally fsync), so a killed process
loses at most that much; the reader (:mod:`.reader`) reads such a cut bag. A write failure (full disk,
permission lost) ends the episode's recording at once: it is reported through ``log_error``, ``recording``
turns False, and the failure stays the current error until the next episode opens cleanly.
"""
from __future__ import annotations

import datetime as _dt
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .format import (EPISODE_EVENT_TYPE, REINDEXED_SUFFIX, EpisodeMeta, OfferedQos, RecorderSetupError, TopicSpec,
                     safe_episode_id, update_bag_custom_data, write_label_file)
from .lean_mcap import lean_writer_class


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


@dataclass
class _EpisodeRecord:
    meta: EpisodeMeta
    path: Path
    state: str = "open"  # open -> closing -> closed (or failed)
    label_version: int = 0
    written_label_version: int = -1
    dropped: int = 0  # messages of this episode dropped because the queue was full


@dataclass
class WriterStats:
    """Counters of the writer (read from other threads; ints are updated atomically under the GIL)."""

    enqueued: int = 0
    written: int = 0
    dropped_queue_full: int = 0
    dropped_write_failed: int = 0
    ignored_outside_episode: int = 0
    bytes_written: int = 0
    queue_bytes: int = 0
    max_queue_bytes: int = 0
    max_queue_len: int = 0
    episodes: int = 0
    errors: List[str] = field(default_factory=list)
    per_topic: Dict[str, int] = field(default_factory=dict)
    #: The failure of the current (or last) episode; "" once an episode opens cleanly after it.
    current_error: str = ""
    #: Messages dropped (queue full) since the current episode started.
    episode_dropped: int = 0


class EpisodeBagWriter:
    """Queue + writer thread around a rosbags Writer; one bag per episode. ROS-free.

    ``enqueue`` never blocks (callback thread); ``start_episode`` / ``stop_episode`` are queued in the same
    stream as messages, so a bag holds exactly what was enqueued between them.
    """

    def __init__(self, config: RecorderConfig, typestore: Any, clock_ns: Callable[[], int] = time.time_ns,
                 log: Callable[[str], None] = lambda m: None, log_error: Optional[Callable[[str], None]] = None):
        self.config = config
        self.typestore = typestore
        self.clock_ns = clock_ns
        self.log = log
        self.log_error = log_error or log
        self._offered_qos: Dict[str, List[OfferedQos]] = {}
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
        """True between a start and a stop (as seen by the callback thread) unless writing the episode failed."""
        if not self._recording:
            return False
        rec = self._latest
        return rec is None or rec.state != "failed"

    def set_offered_qos(self, topic: str, offers: Sequence[OfferedQos]) -> None:
        """The QoS profiles the publishers of ``topic`` offer; written into each bag's channel metadata
        (``offered_qos_profiles``) when the bag opens."""
        self._offered_qos[topic] = list(offers)

    def enqueue(self, topic: str, t_ns: int, data: bytes) -> bool:
        """Queue one message for the current bag; False if not recording or dropped (queue over max_queue_mb)."""
        if not self._recording:
            self.stats.ignored_outside_episode += 1
            return False
        rec = self._latest
        if rec is not None and rec.state == "failed":  # nothing more reaches this bag; say so in the counts
            self.stats.dropped_write_failed += 1
            return False
        n = len(data)
        st = self.stats
        with self._qlock:
            if st.queue_bytes + n > self._max_queue_bytes:
                st.dropped_queue_full += 1
                st.episode_dropped += 1
                if rec is not None:
                    rec.dropped += 1
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
        safe_id = safe_episode_id(meta.episode_id) or "episode"
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
        self.stats.episode_dropped = 0
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
            if rec.state == "failed":  # the bag was cut: the label goes beside it
                try:
                    write_label_file(rec.path, rec.meta.label_data())
                except OSError as exc:
                    return False, f"could not store the label beside the cut bag {rec.path}: {exc}", str(rec.path)
                rec.written_label_version = rec.label_version
                return True, (f"labelled {rec.meta.episode_id!r} {rec.meta.outcome} ({rec.meta.success_score:g}); "
                              f"its recording was cut, label stored in {rec.path.name}/episode_label.yaml"), str(rec.path)
            return True, (f"labelled {rec.meta.episode_id!r} {rec.meta.outcome} ({rec.meta.success_score:g}); "
                          f"stored when its bag closes"), str(rec.path)

    def _label_on_disk(self, episode_id: str, outcome: str, score: float, note: str, now: int) -> Tuple[bool, str, str]:
        if not episode_id:
            return False, "no episode recorded yet", ""
        safe_id = safe_episode_id(episode_id)
        matches = sorted(p for p in self.output_dir.glob(f"*_{safe_id}")
                         if p.is_dir() and ((p / "metadata.yaml").exists() or any(p.glob("*.mcap"))))
        if not matches:
            return False, f"unknown episode {episode_id!r} (no bag named *_{safe_id} in {self.output_dir})", ""
        bag = matches[-1]
        meta = EpisodeMeta(episode_id)
        try:
            meta.label(outcome, score, note, now)
        except ValueError as exc:
            return False, str(exc), str(bag)
        data = meta.label_data()
        data.pop("episode_id")
        try:
            if (bag / "metadata.yaml").exists():
                update_bag_custom_data(bag, data)
                where = ""
            else:  # cut by a crash or a full disk: no metadata.yaml to hold it
                write_label_file(bag, data)
                where = f"; its recording was cut, label stored in {bag.name}/episode_label.yaml"
                copy = bag.with_name(bag.name + REINDEXED_SUFFIX)
                if (copy / "metadata.yaml").exists():  # the closed copy is what convert reads
                    update_bag_custom_data(copy, data)
                    where += f" and in {copy.name}"
        except OSError as exc:
            return False, f"could not store the label for {episode_id!r} in {bag}: {exc}", str(bag)
        return True, f"labelled {episode_id!r} {meta.outcome} ({meta.success_score:g}){where}", str(bag)

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
                writer, conns = self._fail(exc, writer, rec), {}
            now = time.monotonic()
            if writer is not None and dirty and now - last_flush >= flush_every:
                try:
                    self._flush(writer)
                except Exception as exc:  # the periodic flush is where a full disk usually shows first
                    writer, conns = self._fail(exc, writer, rec), {}
                dirty = False
                last_flush = now

    def _fail(self, exc: BaseException, writer: Any, rec: Optional[_EpisodeRecord]) -> None:
        """A write failed: the episode stops recording (its bag stays cut but readable); report at ERROR."""
        msg = (f"recorder: writing {rec.path if rec else '?'} failed: {exc!r}; this episode is no longer "
               f"recorded (its bag is readable up to the last flush)")
        self.stats.errors.append(msg)
        self.stats.current_error = msg
        if rec is not None:
            with self._lock:
                rec.state = "failed"
        self.log_error(msg)
        if writer is not None:
            try:
                self._flush(writer)
            except Exception:
                pass
            try:
                writer.abort()
            except Exception:
                pass
        return None

    def _open(self, rec: _EpisodeRecord) -> Tuple[Any, Dict[str, Any]]:
        from rosbags.rosbag2 import StoragePlugin

        plugin = StoragePlugin.MCAP if self.config.storage == "mcap" else StoragePlugin.SQLITE3
        writer = lean_writer_class()(rec.path, version=9, storage_plugin=plugin)
        writer.open()
        try:
            conns = {}
            for spec in self._topics:
                msgdef, rihs = self._typeinfo[spec.msgtype]
                offers = [q.to_rosbags() for q in self._offered_qos.get(spec.topic, ())]
                conns[spec.topic] = writer.add_connection(spec.topic, spec.msgtype, msgdef=msgdef, rihs01=rihs,
                                                          offered_qos_profiles=offers)
        except BaseException:
            writer.abort()
            raise
        self.stats.episodes += 1
        self.stats.current_error = ""  # a new episode opened cleanly: an earlier failure is history
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
        data["dropped_messages"] = str(rec.dropped)
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


