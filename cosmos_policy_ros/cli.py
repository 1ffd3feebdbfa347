"""`cosmos-policy` command line: one entry point, subcommands implemented next to the code they drive.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; modules are imported
only when their subcommand runs, so ``cosmos-policy convert`` on a training cluster never imports rclpy.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "infer": ("cosmos_policy_ros.core.cli_infer", "run one observation from files through a policy"),
    "episode": ("cosmos_policy_ros.ros.cli_episode", "start / stop / label / status of robot episodes"),
    "lifecycle": ("cosmos_policy_ros.ros.cli_lifecycle", "episode manager: start pose / go / stop / label / rest / e-stop / status"),
    "outcome": ("cosmos_policy_ros.ros.cli_outcome", "label recorded episodes' outcome (asks after each episode)"),
    "sim-demos": ("cosmos_policy_ros.sim.generate_demos", "generate scripted simulated ALOHA demonstrations"),
    "convert": ("cosmos_policy_training.convert", "convert rosbag2 rollouts / ALOHA HDF5 demos to training episodes"),
    "train": ("cosmos_policy_training.cli", "train or refine a Cosmos Policy checkpoint"),
    "report": ("cosmos_policy_training.report", "plot a recorded episode: commands vs joints, holds, value, safety"),
}


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the subcommand, import its module lazily and run it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="cosmos-policy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser.print_help()
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\ncosmos-policy: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    sub_parser = argparse.ArgumentParser(prog=f"cosmos-policy {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
    module.add_arguments(sub_parser)
    return int(module.run(sub_parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
