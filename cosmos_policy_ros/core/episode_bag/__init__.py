"""The episode bag format: one rosbag2 bag (MCAP or sqlite3) per episode, written and read without ROS.

The recorder node (``cosmos_policy_ros.ros.recorder``) only wires ROS to this package: it subscribes raw and
hands the CDR bytes to :class:`EpisodeBagWriter`. The training converter reads the same bags with
:func:`open_bag`. One room per concern:

- :mod:`.format`: topic specs, the episode's ``custom_data`` (and a cut bag's ``episode_label.yaml``), the
  offered QoS profiles each channel carries, and rosbag2's QoS adaptation rule;
- :mod:`.typestore`: message definitions (registered from ``.msg`` text when writing, taken from the bag when
  reading);
- :mod:`.writer`: the queue + writer thread, one bag per episode, flushed for crash safety;
- :mod:`.lean_mcap`: the MCAP storage that copies each message once;
- :mod:`.reader`: the reader, including bags cut by a crash or a full disk, and ``reindex_bag``.
"""
from .format import (ACTION_CHUNK_TYPE, DIAGNOSTICS_TYPE, EPISODE_EVENT_TYPE, GROUP_COMMAND_TYPE, IMAGE_TYPE,
                     JOINT_STATE_TYPE, LABEL_FILE, METADATA_FORMAT, REINDEXED_SUFFIX, SINGLE_COMMAND_TYPE,
                     EpisodeMeta, OfferedQos, RecorderSetupError, TopicSpec, adapt_to_offers, incompatible_offers,
                     normalise_outcome, parse_extra_topic, parse_offered_qos, read_custom_data, safe_episode_id,
                     update_bag_custom_data, write_label_file)
from .reader import Bag, BagError, BagInfo, TopicInfo, header_stamp_ns, open_bag, reindex_bag, reindexed_original
from .typestore import BagTypestore, build_typestore, find_msg_file
from .writer import EpisodeBagWriter, RecorderConfig, WriterStats, check_output_dir

__all__ = [
    "ACTION_CHUNK_TYPE", "DIAGNOSTICS_TYPE", "EPISODE_EVENT_TYPE", "GROUP_COMMAND_TYPE", "IMAGE_TYPE",
    "JOINT_STATE_TYPE", "LABEL_FILE", "METADATA_FORMAT", "REINDEXED_SUFFIX", "SINGLE_COMMAND_TYPE",
    "Bag", "BagError", "BagInfo", "BagTypestore", "EpisodeBagWriter", "EpisodeMeta", "OfferedQos",
    "RecorderConfig", "RecorderSetupError", "TopicInfo", "TopicSpec", "WriterStats", "adapt_to_offers",
    "build_typestore", "check_output_dir", "find_msg_file", "header_stamp_ns", "incompatible_offers",
    "normalise_outcome", "open_bag", "parse_extra_topic", "parse_offered_qos", "read_custom_data",
    "reindex_bag", "reindexed_original", "safe_episode_id", "update_bag_custom_data", "write_label_file",
]
