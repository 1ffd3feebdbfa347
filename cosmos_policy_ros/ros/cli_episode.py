"""`cosmos-policy episode start|stop|estop|reset|status`: operate the commander's services from a shell.

start / stop publish EpisodeEvent START / STOP through the commander (the recorder bounds its bags by them);
estop latches a hold, reset releases it; status prints the commander's latest /diagnostics entry.
Label outcomes with `cosmos-policy outcome` (recorder).

start refuses (exit 1, nothing published, no bag) while the e-stop is latched (run `cosmos-policy episode reset`
first) and while an episode runs: `--restart` stops the running episode and starts a new one.

When the episode manager runs (its ~/start service answers, or the commander names it in its `episode_manager`
parameter, as the graph's `episode_manager:=true` does), start / stop / label / estop / reset go through it
instead (cosmos_policy_ros/ros/cli_lifecycle.py): start = reset to the start pose, then run; stop = hold, then
STOP; label = recorder label, then the rest pose. `--no-manager` talks to the commander directly.
"""
from __future__ import annotations

import argparse
import time
from typing import Optional

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


def _route(manager: str, commander: str, timeout: float = 10.0, grace: float = 3.0) -> str | None:
    """The episode manager to go through ("/name"), or None to talk to the commander directly.

    Discovery can take seconds on a loaded computer, and a wrong "no manager" would start an episode behind the
    manager's back (no input checks, no start-pose move). So: wait (up to ``timeout``) until the manager or the
    commander is discovered. A commander that names its manager (parameter ``episode_manager``, set by the
    graph's ``episode_manager:=true``) settles it: that manager is used, waited for up to ``timeout``, and a
    ConnectionError says so when it does not answer. A commander that names none gives a manager started by
    hand ``grace`` seconds more before the CLI concludes that none runs.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from std_srvs.srv import Trigger

    manager = "/" + manager.strip("/")
    commander = "/" + commander.strip("/")
    ctx = Context()
    rclpy.init(context=ctx)
    node = None
    try:
        node = Node("cosmos_policy_episode_probe", context=ctx)
        mgr = node.create_client(Trigger, manager + "/start")
        cmd = node.create_client(Trigger, commander + "/start_episode")
        deadline = time.monotonic() + timeout
        found = mgr.service_is_ready()
        while not found and not cmd.service_is_ready() and time.monotonic() < deadline:
            found = mgr.wait_for_service(timeout_sec=0.1)
        if found:
            return manager
        named = _commander_parameter(node, commander, "episode_manager", timeout) if cmd.service_is_ready() else ""
        if named is None:  # the commander is up but did not say: guessing "none" could bypass its manager
            raise ConnectionError(f"{commander} did not answer which episode manager runs it (parameter "
                                  f"episode_manager) within {timeout:g} s: retry with a longer --timeout, or "
                                  "--no-manager to talk to the commander directly")
        if named:
            named = "/" + named.strip("/")
            if named != manager:
                mgr = node.create_client(Trigger, named + "/start")
            if not mgr.wait_for_service(timeout_sec=timeout):
                raise ConnectionError(f"{commander} is run by the episode manager {named}, whose {named}/start "
                                      f"does not answer within {timeout:g} s: is it running? (--no-manager talks "
                                      "to the commander directly)")
            return named
        return manager if mgr.wait_for_service(timeout_sec=grace) else None
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=ctx)


def _commander_parameter(node, commander: str, name: str, timeout: float) -> Optional[str]:
    """The commander's string parameter ``name`` ("" when it has none or it is not a string; None when the
    commander does not answer within ``timeout``: a loaded computer can take seconds to discover its parameter
    service, and that must not read as "no manager")."""
    import rclpy
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters
    from rclpy.executors import SingleThreadedExecutor

    client = node.create_client(GetParameters, commander + "/get_parameters")
    if not client.wait_for_service(timeout_sec=timeout):
        return None
    fut = client.call_async(GetParameters.Request(names=[name]))
    executor = SingleThreadedExecutor(context=node.context)  # the probe's own context, not the global one
    try:
        rclpy.spin_until_future_complete(node, fut, executor=executor, timeout_sec=timeout)
    finally:
        executor.shutdown()
    if not fut.done() or fut.result() is None:
        return None
    if not fut.result().values:
        return ""
    value = fut.result().values[0]
    return value.string_value if value.type == ParameterType.PARAMETER_STRING else ""


def run(args: argparse.Namespace) -> int:
    if args.action in ("start", "stop", "estop", "reset", "label") and not args.no_manager:
        try:
            manager = _route(args.manager, args.commander, args.timeout)
        except ConnectionError as e:
            print(f"{args.action}: {e}")
            return 2
        if manager:
            from . import cli_lifecycle

            args.manager = manager
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
