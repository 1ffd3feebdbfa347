"""The episode bag reader: rosbag2 bags (MCAP or sqlite3) without ROS, including bags cut by a crash.

- :func:`open_bag` opens a bag directory, a bare ``.mcap`` / ``.db3`` file, or a directory whose recorder was
  killed or ran out of disk (no ``metadata.yaml``, MCAP without summary/footer): the latter is read by a
  tolerant record scanner that returns every complete message up to the first damaged byte and says so in
  ``BagInfo.problems``.
- :meth:`Bag.decode` deserialises with the message definitions stored in the bag itself.
- :func:`reindex_bag` rewrites a cut bag as a normal, closed bag (indexed MCAP + metadata.yaml) beside it.
- :func:`header_stamp_ns` reads ``header.stamp`` straight from CDR bytes (no full deserialisation).
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from .format import REINDEXED_SUFFIX, parse_offered_qos, read_custom_data
from .typestore import BagTypestore

PathLike = Union[str, os.PathLike]

MCAP_MAGIC = b"\x89MCAP0\r\n"

_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06
_OP_FOOTER, _OP_DATA_END = 0x02, 0x0F


class BagError(RuntimeError):
    """A bag that cannot be read at all (missing, not a bag, unsupported)."""


@dataclass
class TopicInfo:
    """One recorded topic: name, type (``pkg/msg/Name``), its stored definition, message count, and the QoS
    profiles its publishers offered (one dict per publisher, rosbag2's ``offered_qos_profiles`` keys)."""

    name: str
    msgtype: str
    msgdef: str = ""
    msgdef_format: str = "ros2msg"
    count: int = 0
    offered_qos_profiles: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class BagInfo:
    """What a bag holds. ``recovered`` = read by the tolerant scanner (no footer or no metadata.yaml)."""

    path: Path
    storage: str
    topics: Dict[str, TopicInfo]
    custom_data: Dict[str, str] = field(default_factory=dict)
    message_count: int = 0
    start_ns: int = 0
    end_ns: int = 0
    recovered: bool = False
    problems: List[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """Time between the first and last message (s)."""
        return max(0, self.end_ns - self.start_ns) / 1e9


# ----------------------------------------------------------------------------------------------------------
# CDR helpers


def header_stamp_ns(raw: Union[bytes, memoryview]) -> int:
    """``header.stamp`` (ns) of a CDR message whose first field is a std_msgs/Header."""
    if len(raw) < 12:
        raise ValueError(f"expected at least 12 bytes of CDR for a header stamp, got {len(raw)}")
    little = raw[1] == 1
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec

# ----------------------------------------------------------------------------------------------------------
# Tolerant MCAP scanner (for bags without summary / footer)


def _read_exact(f: IO[bytes], n: int) -> Optional[bytes]:
    data = f.read(n)
    return data if len(data) == n else None


def _parse_string(buf: bytes, off: int) -> Tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, off)
    return buf[off + 4:off + 4 + n].decode("utf-8"), off + 4 + n


def _parse_map(buf: bytes, off: int) -> Dict[str, str]:
    """An MCAP ``Map<string, string>`` (uint32 byte length, then key/value strings)."""
    (n,) = struct.unpack_from("<I", buf, off)
    end, off, out = off + 4 + n, off + 4, {}
    while off < end:
        key, off = _parse_string(buf, off)
        out[key], off = _parse_string(buf, off)
    return out


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        return zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise BagError(f"unsupported MCAP chunk compression {compression!r}")


class _McapScan:
    """Sequential MCAP record reader that stops cleanly at the first incomplete or damaged record."""

    def __init__(self, path: Path):
        self.path = path
        self.schemas: Dict[int, Tuple[str, str, str]] = {}  # id -> (name, encoding, text)
        self.channels: Dict[int, Tuple[str, int, str]] = {}  # id -> (topic, schema id, encoding)
        self.channel_metadata: Dict[int, Dict[str, str]] = {}  # id -> user metadata (offered_qos_profiles, ...)
        self.problems: List[str] = []
        self.footer_seen = False

    def _records(self, buf: bytes, base: int) -> Iterator[Tuple[int, bytes, int]]:
        off = 0
        while off < len(buf):
            if off + 9 > len(buf):
                raise ValueError(f"record header cut off at byte {base + off}")
            op = buf[off]
            (n,) = struct.unpack_from("<Q", buf, off + 1)
            if off + 9 + n > len(buf):
                raise ValueError(f"record cut off at byte {base + off}")
            yield op, buf[off + 9:off + 9 + n], base + off
            off += 9 + n

    def _handle(self, op: int, body: bytes, where: int, want: Optional[set]) -> Iterator[Tuple[int, int, bytes]]:
        if op == _OP_SCHEMA:
            (sid,) = struct.unpack_from("<H", body, 0)
            name, off = _parse_string(body, 2)
            enc, off = _parse_string(body, off)
            (n,) = struct.unpack_from("<I", body, off)
            self.schemas[sid] = (name, enc, body[off + 4:off + 4 + n].decode("utf-8"))
        elif op == _OP_CHANNEL:
            cid, sid = struct.unpack_from("<HH", body, 0)
            topic, off = _parse_string(body, 4)
            enc, off = _parse_string(body, off)
            self.channels[cid] = (topic, sid, enc)
            self.channel_metadata[cid] = _parse_map(body, off)
        elif op == _OP_MESSAGE:
            cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", body, 0)
            if want is None or cid in want:
                yield cid, log_time, body[22:]
        elif op == _OP_CHUNK:
            _start, _end, usize, crc = struct.unpack_from("<QQQI", body, 0)
            comp, off = _parse_string(body, 28)
            (csize,) = struct.unpack_from("<Q", body, off)
            inner = _decompress(body[off + 8:off + 8 + csize], comp, usize)
            if crc and zlib.crc32(inner) != crc:
                raise ValueError(f"chunk at byte {where} fails its CRC check")
            for iop, ibody, iwhere in self._records(inner, where):
                yield from self._handle(iop, ibody, iwhere, want)
        elif op == _OP_FOOTER:
            self.footer_seen = True

    def _partial_chunk(self, body: bytes, where: int, want: Optional[set]) -> Iterator[Tuple[int, int, bytes]]:
        """Messages of a truncated chunk, up to the cut (only possible without compression)."""
        try:
            comp, off = _parse_string(body, 28)
            if comp != "":
                return
            off += 8  # records length
            inner = body[off:]
            good = 0
            while good + 9 <= len(inner):
                (n,) = struct.unpack_from("<Q", inner, good + 1)
                if good + 9 + n > len(inner):
                    break
                good += 9 + n
            for iop, ibody, iwhere in self._records(inner[:good], where):
                yield from self._handle(iop, ibody, iwhere, want)
        except (ValueError, struct.error, UnicodeDecodeError):
            return

    def scan(self, want: Optional[set] = None) -> Iterator[Tuple[int, int, bytes]]:
        """Yield (channel id, log time ns, CDR bytes) of every complete message, in file order."""
        with open(self.path, "rb") as f:
            if f.read(8) != MCAP_MAGIC:
                raise BagError(f"{self.path}: not an MCAP file (bad magic)")
            while True:
                pos = f.tell()
                head = f.read(9)
                if len(head) == 0:
                    break
                if len(head) < 9:
                    self.problems.append(f"file ends inside a record header at byte {pos}")
                    break
                op = head[0]
                (n,) = struct.unpack_from("<Q", head, 1)
                if op == 0x89:  # trailing magic of a closed file
                    break
                if op in (_OP_FOOTER,):
                    self.footer_seen = True
                    break
                if op not in (_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK):
                    f.seek(n, 1)
                    continue
                body = _read_exact(f, n)
                if body is None:
                    self.problems.append(f"file ends inside a record at byte {pos} (record of {n} bytes)")
                    if op == _OP_CHUNK:  # an uncompressed chunk cut short still holds whole messages
                        f.seek(pos + 9)
                        yield from self._partial_chunk(f.read(), pos, want)
                    break
                try:
                    yield from self._handle(op, body, pos, want)
                except (ValueError, struct.error, BagError) as exc:
                    self.problems.append(f"damaged record at byte {pos}: {exc}")
                    break


# ----------------------------------------------------------------------------------------------------------
# Bag


def _qos_dicts(profiles: List[Any]) -> List[Dict[str, Any]]:
    """rosbags ``Qos`` tuples (as its Reader parses them) -> the dicts rosbag2's YAML holds."""
    from rosbags.rosbag2.metadata import dump_qos_v9

    return [dict(d) for d in dump_qos_v9(list(profiles))]


def _find_storage(path: Path) -> Tuple[Path, Optional[Path]]:
    """-> (storage file, metadata.yaml or None)."""
    if path.is_file():
        meta = path.parent / "metadata.yaml"
        return path, (meta if meta.exists() else None)
    if not path.is_dir():
        raise BagError(f"{path}: no such bag (expected a bag directory, .mcap or .db3 file)")
    files = sorted(list(path.glob("*.mcap")) + list(path.glob("*.db3")))
    if not files:
        raise BagError(f"{path}: no .mcap or .db3 file in this directory")
    if len(files) > 1:
        raise BagError(f"{path}: split bags are not supported, found {[p.name for p in files]}")
    meta = path / "metadata.yaml"
    return files[0], (meta if meta.exists() else None)


class Bag:
    """An open bag. Use :func:`open_bag`; iterate :meth:`messages`; decode with :meth:`decode`."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.storage_path, self.metadata_path = _find_storage(self.path)
        self._reader: Any = None
        self._scan: Optional[_McapScan] = None
        problems: List[str] = []
        try:
            from rosbags.rosbag2 import Reader

            target = self.path if (self.path.is_dir() and self.metadata_path is not None) else self.storage_path
            reader = Reader(target)
            reader.open()
            self._reader = reader
        except Exception as exc:  # no metadata.yaml or no MCAP footer: recover by scanning
            if self.storage_path.suffix != ".mcap":
                raise BagError(f"{self.path}: cannot open ({exc})") from exc
            problems.append(f"not closed properly ({exc}); read by scanning")
        if self._reader is not None:
            self.info = self._info_from_reader(self._reader)
        else:
            self._scan = _McapScan(self.storage_path)
            self.info = self._info_from_scan(problems)
        self._types: Optional[BagTypestore] = None

    def _info_from_reader(self, reader: Any) -> BagInfo:
        topics: Dict[str, TopicInfo] = {}
        for c in reader.connections:
            fmt = "ros2idl" if getattr(c.msgdef.format, "name", "") == "IDL" else "ros2msg"
            t = topics.get(c.topic)
            if t is None:
                t = topics[c.topic] = TopicInfo(c.topic, c.msgtype, c.msgdef.data or "", fmt, 0)
            t.count += c.msgcount
            t.offered_qos_profiles += _qos_dicts(getattr(c.ext, "offered_qos_profiles", None) or [])
        custom = read_custom_data(self.storage_path.parent)
        count = sum(t.count for t in topics.values())
        return BagInfo(self.path, "sqlite3" if self.storage_path.suffix == ".db3" else "mcap", topics, custom,
                       count, reader.start_time if count else 0, reader.end_time if count else 0)

    def _info_from_scan(self, problems: List[str]) -> BagInfo:
        counts: Dict[int, int] = {}
        start, end = None, 0
        for cid, t, _ in self._scan.scan():
            counts[cid] = counts.get(cid, 0) + 1
            start = t if start is None else min(start, t)
            end = max(end, t)
        topics: Dict[str, TopicInfo] = {}
        for cid, (topic, sid, _enc) in self._scan.channels.items():
            name, enc, text = self._scan.schemas.get(sid, ("", "ros2msg", ""))
            t = topics.setdefault(topic, TopicInfo(topic, name, text, enc or "ros2msg", 0))
            t.count += counts.get(cid, 0)
            meta = self._scan.channel_metadata.get(cid, {})
            try:
                t.offered_qos_profiles += parse_offered_qos(meta.get("offered_qos_profiles", ""))
            except Exception as exc:  # a damaged QoS string must not hide the messages
                problems.append(f"{topic}: unreadable offered_qos_profiles ({exc})")
        problems = problems + self._scan.problems
        if not self._scan.problems and not self._scan.footer_seen:
            problems.append("MCAP file has no summary/footer (writer did not close it)")
        custom = read_custom_data(self.storage_path.parent)
        return BagInfo(self.path, "mcap", topics, custom, sum(counts.values()), start or 0, end, True, problems)

    def messages(self, topics: Optional[Iterable[str]] = None) -> Iterator[Tuple[str, int, bytes]]:
        """Yield (topic, log time ns, CDR bytes). Indexed bags: time order; recovered bags: file order."""
        wanted = None if topics is None else set(topics)
        if self._reader is not None:
            conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
            if not conns:
                return
            for conn, t, raw in self._reader.messages(connections=conns):
                yield conn.topic, t, raw
            return
        ids = None
        if wanted is not None:
            ids = {cid for cid, (topic, _, _) in self._scan.channels.items() if topic in wanted}
        names = {}
        for cid, t, raw in self._scan.scan(ids):
            topic = names.get(cid)
            if topic is None:
                topic = names[cid] = self._scan.channels[cid][0]
            if wanted is None or topic in wanted:
                yield topic, t, raw

    def decode(self, topic: str, raw: Union[bytes, memoryview]) -> Any:
        """Deserialise one message of ``topic`` with the bag's own type definitions (tolerant of padding)."""
        return self.typestore().deserialize(raw, self.info.topics[topic].msgtype)

    def typestore(self) -> BagTypestore:
        """The typestore built from the bag's stored definitions (made on first use)."""
        if self._types is None:
            self._types = BagTypestore(self.info.topics.values(), BagError)
        return self._types

    def close(self) -> None:
        """Release the file handles."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_bag(path: PathLike) -> Bag:
    """Open a bag directory or storage file; a crashed recorder's bag is recovered by scanning (see module doc)."""
    return Bag(path)


def reindex_bag(src: PathLike, dst: Optional[PathLike] = None) -> Path:
    """Rewrite a (recovered) bag as a closed, indexed MCAP bag with metadata.yaml; returns the new bag dir.

    ``dst`` defaults to ``<src>.reindexed`` (the source is left as it is); custom_data (with a label stored
    beside a cut bag) and each topic's offered QoS profiles are carried over.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.metadata import parse_qos

    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_name(src.name.rstrip("/") + REINDEXED_SUFFIX)
    with open_bag(src) as bag:
        writer = Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        try:
            store = bag.typestore().store
            conns = {}
            for t in bag.info.topics.values():
                conns[t.name] = writer.add_connection(t.name, t.msgtype, typestore=store,
                                                      offered_qos_profiles=parse_qos(t.offered_qos_profiles))
            for topic, ts, raw in bag.messages():
                writer.write(conns[topic], ts, raw)
            for k, v in bag.info.custom_data.items():
                writer.set_custom_data(k, str(v))
            if bag.info.problems:
                writer.set_custom_data("reindexed_from", str(src))
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return dst



def reindexed_original(path: Path) -> Optional[Path]:
    """For ``X.reindexed`` (what :func:`reindex_bag` writes) the cut bag ``X`` it was made from, else None."""
    path = Path(path)
    if path.name.endswith(REINDEXED_SUFFIX) and len(path.name) > len(REINDEXED_SUFFIX):
        return path.with_name(path.name[:-len(REINDEXED_SUFFIX)])
    return None
