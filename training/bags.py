"""``python -m cosmos_policy_training.bags info|reindex BAG``: look into an episode bag, or close a cut one.

The bag format itself (writer and reader, ROS-free) is :mod:`cosmos_policy_ros.core.episode_bag`; its reader
names are re-exported here for training code. ``reindex`` writes ``BAG.reindexed`` beside the cut bag and
leaves the original as it is; ``cosmos-policy convert`` then converts the reindexed copy only.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from cosmos_policy_ros.core.episode_bag import (  # noqa: F401  (re-exported for training code)
    Bag, BagError, BagInfo, TopicInfo, header_stamp_ns, open_bag, read_custom_data, reindex_bag, reindexed_original)


def _main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosmos_policy_training.bags", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_info = sub.add_parser("info", help="print topics, counts, custom data and problems")
    p_info.add_argument("bag")
    p_re = sub.add_parser("reindex", help="rewrite a crashed recorder's bag as a closed bag")
    p_re.add_argument("bag")
    p_re.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "info":
        with open_bag(args.bag) as bag:
            i = bag.info
            print(f"bag: {i.path}\nstorage: {i.storage}{' (recovered)' if i.recovered else ''}\n"
                  f"messages: {i.message_count}\nduration: {i.duration_s:.3f} s")
            for t in i.topics.values():
                qos = ", ".join(f"{q.get('reliability')}/{q.get('durability')}" for q in t.offered_qos_profiles)
                print(f"  {t.name:<50} {t.msgtype:<40} {t.count:>7}  offered QoS: {qos or '-'}")
            for k, v in i.custom_data.items():
                print(f"  custom_data {k}: {v}")
            for p in i.problems:
                print(f"  problem: {p}")
        return 0
    out = reindex_bag(args.bag, args.output)
    print(f"wrote {out} (the original is kept; cosmos-policy convert prefers the reindexed copy)")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
