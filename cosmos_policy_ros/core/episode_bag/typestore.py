"""Message definitions for episode bags: registering types for writing, decoding with a bag's own types.

The writer registers every recorded type from its installed ``.msg`` text (the ament index or extra search
paths), so each bag is self-describing; the reader decodes with the definitions stored in the bag and
tolerates the trailing alignment bytes rclpy leaves after empty sequences, which ``rosbags`` rejects.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from .format import RecorderSetupError

#: rclpy/Fast CDR size the buffer for the alignment padding of empty sequences without writing it: accept up
#: to this many unused trailing bytes after a complete message.
MAX_TRAILING_BYTES = 64


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


class BagTypestore:
    """A rosbags typestore holding the types defined in a bag (falls back to the built-in ROS 2 types).

    ``topics`` are objects with ``name``, ``msgtype``, ``msgdef`` and ``msgdef_format`` (the reader's
    ``TopicInfo``); ``error`` is the exception raised for a definition that does not parse.
    """

    def __init__(self, topics: Iterable[Any], error: type = ValueError):
        from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

        self.store = get_typestore(Stores.ROS2_JAZZY)
        types: Dict[str, Any] = {}
        for topic in topics:
            if not topic.msgdef:
                continue
            try:
                if topic.msgdef_format == "ros2idl":
                    sep = "=" * 80 + "\n"
                    for part in topic.msgdef.split(sep)[1:] if topic.msgdef.startswith(sep) else [topic.msgdef]:
                        idl = part.split("\n", 1)[1] if part.startswith("IDL: ") else part
                        types.update(get_types_from_idl(idl))
                else:
                    types.update(get_types_from_msg(topic.msgdef, topic.msgtype))
            except Exception as exc:  # a broken definition only matters if someone decodes that topic
                raise error(f"cannot parse the stored definition of {topic.msgtype} ({topic.name}): {exc}") from exc
        # The bag's own definitions win over the built-in ones (they are what was on the wire).
        for name in list(types):
            self.store.fielddefs.pop(name, None)
        self.store.register(types)
        self._cache: Dict[str, Any] = {}

    def deserialize(self, raw: Union[bytes, memoryview], msgtype: str) -> Any:
        """CDR bytes (with encapsulation header) -> a rosbags message object; ValueError when malformed."""
        if len(raw) < 4 or bytes(raw[:2]) not in (b"\x00\x00", b"\x00\x01"):
            raise ValueError(f"{msgtype}: invalid or unsupported CDR encapsulation header")
        md = self._cache.get(msgtype)
        if md is None:
            md = self._cache[msgtype] = self.store.get_msgdef(msgtype)
        func = md.deserialize_cdr_le if raw[1] == 1 else md.deserialize_cdr_be
        msg, pos = func(memoryview(raw)[4:], 0, md.cls, self.store)
        trailing = len(raw) - 4 - pos
        if trailing < 0 or trailing > MAX_TRAILING_BYTES:
            raise ValueError(f"{msgtype}: CDR size mismatch ({trailing} bytes left after a complete message)")
        return msg

