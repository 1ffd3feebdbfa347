"""`cosmos-policy episode start|stop|estop|reset|status`: operate the commander's services from a shell.

start / stop publish EpisodeEvent START / STOP through the commander (the recorder bounds its bags by them);
estop latches a hold, reset releases it; status prints the commander's latest /diagnostics entry.
Label outcomes with `cosmos-policy outcome` (recorder).
"""
from __future__ import annotations

import argparse
import time

ACTIONS = {"start": "start_episode", "stop": "stop_episode", "estop": "estop", "reset": "reset_estop"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=sorted(ACTIONS) + ["status"], help="what to do")
    parser.add_argument("--commander", default="/commander", help="commander node name (default /commander)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the commander")


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.node import Node

    rclpy.init()
    node = Node("cosmos_policy_episode_cli")
    try:
        if args.action == "status":
            return _status(node, args)
        from std_srvs.srv import Trigger

        name = f"{args.commander.rstrip('/')}/{ACTIONS[args.action]}"
        client = node.create_client(Trigger, name)
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f"no service {name}: is the commander running (same ROS_DOMAIN_ID)?")
            return 2
        fut = client.call_async(Trigger.Request())
        rclpy.spin_until_future_complete(node, fut, timeout_sec=args.timeout)
        if not fut.done():
            print(f"{name}: no answer within {args.timeout} s")
            return 2
        res = fut.result()
        print(f"{args.action}: {'ok' if res.success else 'refused'}: {res.message}")
        return 0 if res.success else 1
    finally:
        node.destroy_node()
        rclpy.shutdown()


def _status(node, args) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    found = []

    def on_diag(msg):
        for st in msg.status:
            if "commander" in st.name:
                found.append(st)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    deadline = time.monotonic() + args.timeout
    while not found and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not found:
        print("no commander diagnostics received")
        return 2
    st = found[-1]
    print(f"{st.name}: {st.message}")
    for kv in st.values:
        print(f"  {kv.key}: {kv.value}")
    return 0
