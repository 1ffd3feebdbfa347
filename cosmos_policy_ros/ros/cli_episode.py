"""`cosmos-policy episode start|stop|estop|reset|status`: operate the commander's services from a shell.

start / stop publish EpisodeEvent START / STOP through the commander (the recorder bounds its bags by them);
estop latches a hold, reset releases it; status prints the commander's latest /diagnostics entry.
Label outcomes with `cosmos-policy outcome` (recorder).

start refuses (exit 1, nothing published, no bag) while the e-stop is latched (run `cosmos-policy episode reset`
first) and while an episode runs: `--restart` stops the running episode and starts a new one.

When the episode manager runs (its ~/start service answers), start / stop / label / estop / reset go through it
instead (cosmos_policy_ros/ros/cli_lifecycle.py): start = reset to the start pose, then run; stop = hold, then
STOP; label = recorder label, then the rest pose. `--no-manager` talks to the commander directly.
"""
from __future__ import annotations

import argparse
import time

ACTIONS = {"start": "start_episode", "stop": "stop_episode", "estop": "estop", "reset": "reset_estop"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=sorted(ACTIONS) + ["status", "label"], help="what to do")
    parser.add_argument("--commander", default="/commander", help="commander node name (default /commander)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the commander")
    parser.add_argument("--manager", default="/episode_manager", help="episode manager node, used when it runs")
    parser.add_argument("--no-manager", action="store_true", help="use the commander's services even if a manager runs")
    parser.add_argument("--restart", action="store_true",
                        help="start: stop the running episode and start a new one (without it, start refuses while "
                             "an episode runs)")
    parser.add_argument("--outcome", choices=["success", "failure", "partial"], help="label: the episode's outcome")
    parser.add_argument("--score", type=float, default=float("nan"), help="label: success score 0..1")
    parser.add_argument("--note", default="", help="label: free-form note")
    parser.add_argument("--episode-id", default="", help="label: episode (default: the last one)")


def _manager_running(name: str, commander: str, timeout: float = 10.0, grace: float = 3.0) -> bool:
    """True when the episode manager's ~/start service answers discovery (own short-lived context).

    Discovery can take seconds on a loaded computer, and a wrong "no manager" would skip the manager's
    start-pose move. So: wait (up to ``timeout``) until the manager or the commander is discovered; when only
    the commander is, give the manager ``grace`` seconds more before concluding that none runs.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from std_srvs.srv import Trigger

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        node = Node("cosmos_policy_episode_probe", context=ctx)
        manager = node.create_client(Trigger, "/" + name.strip("/") + "/start")
        cmd = node.create_client(Trigger, "/" + commander.strip("/") + "/start_episode")
        deadline = time.monotonic() + timeout
        found = manager.service_is_ready()
        while not found and not cmd.service_is_ready() and time.monotonic() < deadline:
            found = manager.wait_for_service(timeout_sec=0.1)
        if not found:
            found = manager.wait_for_service(timeout_sec=grace)
        node.destroy_node()
        return found
    finally:
        rclpy.shutdown(context=ctx)


def run(args: argparse.Namespace) -> int:
    if args.action in ("start", "stop", "estop", "reset", "label") and not args.no_manager \
            and _manager_running(args.manager, args.commander, args.timeout):
        from . import cli_lifecycle

        args.go = args.action == "start"
        args.no_wait = False
        args.move_timeout = 60.0
        return cli_lifecycle.run(args)
    if args.action == "label":
        print("label: no episode manager running; use `cosmos-policy outcome` to label through the recorder")
        return 2
    import rclpy
    from rclpy.node import Node

    rclpy.init()
    node = Node("cosmos_policy_episode_cli")
    try:
        if args.action == "status":
            return _status(node, args)
        if args.action == "start":
            state = _call(node, args, "episode_status")
            if state is None:
                return 2
            refusal = start_refusal(state.success, state.message, args.restart)
            if refusal:
                print(f"start: refused: {refusal}")
                return 1
        res = _call(node, args, ACTIONS[args.action])
        if res is None:
            return 2
        print(f"{args.action}: {'ok' if res.success else 'refused'}: {res.message}")
        return 0 if res.success else 1
    finally:
        node.destroy_node()
        rclpy.shutdown()


def start_refusal(running: bool, message: str, restart: bool) -> str:
    """Why ``episode start`` must not call the commander's start_episode ("" = go ahead).

    ``running`` / ``message``: the commander's ~/episode_status answer (an episode id, "e-stop latched" or
    "no episode running").
    """
    if message == "e-stop latched":
        return "the e-stop is latched (the robot holds); release it first: cosmos-policy episode reset"
    if running and not restart:
        return (f"episode {message} is running; stop it first (cosmos-policy episode stop) or replace it: "
                "cosmos-policy episode start --restart")
    return ""


def _call(node, args, service: str):
    """Call the commander's Trigger ``service``; its response, or None after printing why there is none."""
    import rclpy
    from std_srvs.srv import Trigger

    name = f"{args.commander.rstrip('/')}/{service}"
    client = node.create_client(Trigger, name)
    if not client.wait_for_service(timeout_sec=args.timeout):
        print(f"no service {name}: is the commander running (same ROS_DOMAIN_ID)?")
        return None
    fut = client.call_async(Trigger.Request())
    rclpy.spin_until_future_complete(node, fut, timeout_sec=args.timeout)
    if not fut.done():
        print(f"{name}: no answer within {args.timeout} s")
        return None
    return fut.result()


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
