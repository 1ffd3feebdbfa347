"""What an episode bag holds besides messages: topic specs, the episode's custom_data, offered QoS profiles.

An episode bag is a rosbag2 directory (MCAP or sqlite3, ``metadata.yaml`` version 9). The episode's facts
(task, policy, outcome label, ...) are strings in ``metadata.yaml`` ``custom_data`` (layout
``METADATA_FORMAT``); a bag cut short (crash, full disk) has no ``metadata.yaml``, so its label is kept in
``episode_label.yaml`` beside the storage file and merged by :func:`read_custom_data`. Each channel carries
the publishers' offered QoS profiles in rosbag2's YAML form (``offered_qos_profiles``), so ``ros2 bag play``
can replay with the original QoS.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import yaml

IMAGE_TYPE = "sensor_msgs/msg/Image"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
GROUP_COMMAND_TYPE = "interbotix_xs_msgs/msg/JointGroupCommand"
SINGLE_COMMAND_TYPE = "interbotix_xs_msgs/msg/JointSingleCommand"
ACTION_CHUNK_TYPE = "cosmos_policy_ros/msg/ActionChunk"
EPISODE_EVENT_TYPE = "cosmos_policy_ros/msg/EpisodeEvent"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"

#: Version of the custom_data layout written into each bag.
METADATA_FORMAT = "cosmos_policy_ros.episode.v1"
#: Label of a bag without metadata.yaml (cut by a crash or a full disk), beside its storage file.
LABEL_FILE = "episode_label.yaml"
#: Suffix of the closed copy ``bags reindex`` writes beside a cut bag.
REINDEXED_SUFFIX = ".reindexed"


class RecorderSetupError(RuntimeError):
    """The recorder cannot record safely (output directory, disk space, unknown types); raised at start."""


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


def safe_episode_id(episode_id: str) -> str:
    """The episode id as it appears in a bag directory name (``<stamp>_<id>``)."""
    return "".join(c if (c.isalnum() or c in "-_.") else "_" for c in episode_id)


# ----------------------------------------------------------------------------------------------------------
# Episode facts (custom_data)


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
        data = {
            "format": METADATA_FORMAT,
            "episode_id": self.episode_id,
            "task": self.task,
            "policy_id": self.policy_id,
            "start_time_ns": str(self.start_time_ns),
            "start_time": _iso(self.start_time_ns),
            "stop_time_ns": str(self.stop_time_ns),
            "stop_time": _iso(self.stop_time_ns),
            "duration_s": f"{max(0, self.stop_time_ns - self.start_time_ns) / 1e9:.3f}" if self.stop_time_ns else "",
            "stop_reason": self.stop_reason,
            "outcome": self.outcome,
            "success": "" if not self.outcome else ("true" if self.outcome == "success" else "false"),
            "success_score": "" if math.isnan(self.success_score) else f"{self.success_score:.6g}",
            "note": self.note,
            "labelled_time": _iso(self.labelled_time_ns),
        }
        data.update(extra)
        return data

    def label_data(self) -> Dict[str, str]:
        """The label's custom_data keys only (what a relabel changes)."""
        data = self.custom_data({})
        out = {k: data[k] for k in ("episode_id", "outcome", "success", "success_score", "labelled_time")}
        if self.note:
            out["note"] = self.note
        return out


def _iso(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).isoformat() if ns else ""


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


def read_custom_data(bag_dir: os.PathLike) -> Dict[str, str]:
    """``custom_data`` of a bag's metadata.yaml, updated by its ``episode_label.yaml`` ({} when neither)."""
    bag_dir = Path(bag_dir)
    out: Dict[str, str] = {}
    meta = bag_dir / "metadata.yaml"
    if meta.exists():
        doc = yaml.safe_load(meta.read_text()) or {}
        out.update((doc.get("rosbag2_bagfile_information") or {}).get("custom_data") or {})
    label = bag_dir / LABEL_FILE
    if label.exists():
        out.update({str(k): str(v) for k, v in (yaml.safe_load(label.read_text()) or {}).items()})
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def update_bag_custom_data(bag_dir: Path, updates: Mapping[str, str]) -> None:
    """Rewrite ``custom_data`` in a closed bag's metadata.yaml atomically (tmp file + rename)."""
    meta = Path(bag_dir) / "metadata.yaml"
    doc = yaml.safe_load(meta.read_text())
    info = doc["rosbag2_bagfile_information"]
    custom = dict(info.get("custom_data") or {})
    custom.update({k: str(v) for k, v in updates.items()})
    info["custom_data"] = custom
    _atomic_write(meta, yaml.safe_dump(doc, default_flow_style=False, sort_keys=False))


def write_label_file(bag_dir: Path, updates: Mapping[str, str]) -> Path:
    """Store a label beside a cut bag (no metadata.yaml); keys already there are kept unless updated."""
    path = Path(bag_dir) / LABEL_FILE
    data: Dict[str, str] = {}
    if path.exists():
        data.update(yaml.safe_load(path.read_text()) or {})
    data.update({k: str(v) for k, v in updates.items()})
    _atomic_write(path, yaml.safe_dump(data, default_flow_style=False, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------------------
# Offered QoS profiles (rosbag2's channel metadata)

_INFINITE_NS = 2**63 - 1


@dataclass(frozen=True)
class OfferedQos:
    """One publisher's offered QoS, in the words rosbag2 stores (lower-case policy names, durations in ns).

    The ROS side builds these from ``Node.get_publishers_info_by_topic``; this module stays ROS-free.
    """

    history: str = "keep_last"  # keep_last | keep_all | system_default | unknown
    depth: int = 0
    reliability: str = "reliable"  # reliable | best_effort | system_default | best_available | unknown
    durability: str = "volatile"  # volatile | transient_local | system_default | best_available | unknown
    deadline_ns: int = _INFINITE_NS
    lifespan_ns: int = _INFINITE_NS
    liveliness: str = "automatic"  # automatic | manual_by_topic | system_default | best_available | unknown
    liveliness_lease_duration_ns: int = _INFINITE_NS
    avoid_ros_namespace_conventions: bool = False

    def to_rosbags(self) -> Any:
        """The ``rosbags.interfaces.Qos`` the bag writer serialises."""
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

        def enum(cls: Any, name: str) -> Any:
            return cls.__members__.get(name.upper(), cls.__members__["UNKNOWN"])

        def dur(ns: int) -> Any:
            ns = min(int(ns), _INFINITE_NS)
            return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)

        return Qos(enum(QosHistory, self.history), int(self.depth), enum(QosReliability, self.reliability),
                   enum(QosDurability, self.durability), dur(self.deadline_ns), dur(self.lifespan_ns),
                   enum(QosLiveliness, self.liveliness), dur(self.liveliness_lease_duration_ns),
                   bool(self.avoid_ros_namespace_conventions))


def parse_offered_qos(text: str) -> List[Dict[str, Any]]:
    """A channel's ``offered_qos_profiles`` YAML -> one dict per publisher ([] when empty)."""
    if not text:
        return []
    data = yaml.safe_load(text)
    return list(data) if isinstance(data, list) else []


def adapt_to_offers(offers: Sequence[OfferedQos]) -> Tuple[str, str]:
    """(reliability, durability) a recorder requests so it receives from every publisher, as rosbag2 does:
    best-effort if any publisher offers best-effort, transient-local only if every publisher offers it."""
    if not offers:
        return "reliable", "volatile"
    reliability = "best_effort" if any(o.reliability == "best_effort" for o in offers) else "reliable"
    durability = "transient_local" if all(o.durability == "transient_local" for o in offers) else "volatile"
    return reliability, durability


def incompatible_offers(offers: Sequence[OfferedQos], reliability: str, durability: str) -> List[str]:
    """Why a subscription with this reliability / durability misses some publishers ([] = receives all)."""
    why = []
    n_be = sum(o.reliability == "best_effort" for o in offers)
    if reliability == "reliable" and n_be:
        why.append(f"{n_be} best-effort publisher(s), subscription reliable")
    n_vol = sum(o.durability == "volatile" for o in offers)
    if durability == "transient_local" and n_vol:
        why.append(f"{n_vol} volatile publisher(s), subscription transient_local")
    return why
