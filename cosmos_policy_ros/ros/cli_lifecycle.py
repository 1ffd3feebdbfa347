"""`cosmos-policy lifecycle ...`: drive the episode manager from a second terminal or a script.

    cosmos-policy lifecycle start [--go] [--no-wait] [--restart]   # reset to the start pose (waits for READY);
                                                    # --go: then run; --restart: stop a running episode first
    cosmos-policy lifecycle go | stop | rest | estop | reset
    cosmos-policy lifecycle label --outcome success|failure|partial [--score 0.6] [--note TEXT] [--episode-id ID]
    cosmos-policy lifecycle status

start is refused while the e-stop is latched (reset it first) and while an episode runs (--restart stops it
first). Exit codes: 0 done, 1 refused / failed (the manager's message is printed), 2 manager not reachable.
"""
from __future__ import annotations

import argparse
import math
import time

ACTIONS = {"start": "start", "go": "go", "stop": "stop", "rest": "rest", "estop": "estop", "reset": "reset_estop"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=sorted(ACTIONS) + ["label", "status"], help="what to do")
    parser.add_argument("--manager", default="/episode_manager", help="episode manager node (default /episode_manager)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the manager's services")
    parser.add_argument("--go", action="store_true", help="start: run the episode as soon as the start pose is reached")
    parser.add_argument("--no-wait", action="store_true", help="start / rest: return once the request is accepted")
    parser.add_argument("--restart", action="store_true",
                        help="start: stop the running episode first (without it, start refuses while one runs)")
    parser.add_argument("--move-timeout", type=float, default=60.0, help="start / rest: seconds to wait for the move")
    parser.add_argument("--outcome", choices=["success", "failure", "partial"], help="label: the episode's outcome")
    parser.add_argument("--score", type=float, default=float("nan"), help="label: success score 0..1 (default from outcome)")
    parser.add_argument("--note", default="", help="label: free-form note")
    parser.add_argument("--episode-id", default="", help="label: episode (default: the manager's last episode)")


class _Client:
    def __init__(self, manager: str, timeout: float):
        import rclpy
        from rclpy.node import Node

        self.rclpy = rclpy
        rclpy.init()
        self.node = Node("cosmos_policy_lifecycle_cli")
        self.manager = "/" + manager.strip("/")
        self.timeout = timeout
        self._status = None

    def call(self, name: str, srv_type, request):
        client = self.node.create_client(srv_type, f"{self.manager}/{name}")
        if not client.wait_for_service(timeout_sec=self.timeout):
            raise ConnectionError(f"no service {self.manager}/{name}: is the episode manager running (same ROS_DOMAIN_ID)?")
        fut = client.call_async(request)
        self.rclpy.spin_until_future_complete(self.node, fut, timeout_sec=self.timeout)
        if not fut.done():
            raise ConnectionError(f"{self.manager}/{name}: no answer within {self.timeout:g} s")
        return fut.result()

    def status(self, wait: float):
        """The manager's latest ~/status (latched), waiting up to ``wait`` seconds for a new one."""
        from diagnostic_msgs.msg import DiagnosticStatus
        from rclpy.qos import DurabilityPolicy, QoSProfile

        if self._status is None:
            self._status = []
            self.node.create_subscription(DiagnosticStatus, f"{self.manager}/status", self._status.append,
                                          QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        n = len(self._status)
        deadline = time.monotonic() + wait
        while len(self._status) <= n and time.monotonic() < deadline:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
        return self._status[-1] if self._status else None

    def close(self):
        self.node.destroy_node()
        self.rclpy.shutdown()


def _values(st) -> dict:
    return {kv.key: kv.value for kv in st.values}


def _int(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return -1


def _wait_move(cli: _Client, busy: str, targets, timeout: float, moves_before: int = -1) -> int:
    """Print state changes until a state in ``targets`` (0) or IDLE with an error / ESTOPPED (1).

    Only statuses from ``busy`` (the move's state) on count, or any once the manager counts a move more than
    ``moves_before``: an older status still in flight is not the result.
    """
    deadline = time.monotonic() + timeout
    last = None
    seen_busy = False
    while time.monotonic() < deadline:
        st = cli.status(0.5)
        if st is None:
            continue
        v = _values(st)
        seen_busy = seen_busy or v.get("state") == busy or _int(v.get("moves")) > moves_before >= 0
        if not seen_busy:
            continue
        if st.message != last:
            print(st.message)
            last = st.message
        if v.get("state") in targets:
            return 0
        if v.get("state") == "ESTOPPED" or (v.get("state") == "IDLE" and v.get("last_error")):
            return 1
    print(f"still {last!r} after {timeout:g} s")
    return 1


def run(args: argparse.Namespace) -> int:
    from std_srvs.srv import Trigger

    from cosmos_policy_ros.srv import LabelEpisode

    try:
        cli = _Client(args.manager, args.timeout)
    except Exception as exc:  # noqa: BLE001
        print(f"cannot start ROS: {exc}")
        return 2
    try:
        if args.action == "status":
            st = cli.status(args.timeout)
            if st is None:
                print(f"no status from {cli.manager}: is the episode manager running?")
                return 2
            print(st.message)
            for k, v in _values(st).items():
                print(f"  {k}: {v}")
            return 0
        if args.action == "label":
            if not args.outcome:
                print("label: --outcome success|failure|partial is required")
                return 1
            if not (math.isnan(args.score) or 0.0 <= args.score <= 1.0):
                print(f"label: --score expected 0..1, got {args.score}")
                return 1
            req = LabelEpisode.Request(episode_id=args.episode_id, outcome=args.outcome,
                                       success_score=float(args.score), note=args.note)
            res = cli.call("label", LabelEpisode, req)
            print(f"label: {'ok' if res.ok else 'refused'}: {res.message}" + (f" ({res.bag_path})" if res.bag_path else ""))
            return 0 if res.ok else 1
        before = cli.status(2.0)  # subscribe before the request (latched: the current status arrives at once)
        state = _values(before).get("state") if before is not None else None
        # --restart: stop first when an episode runs, and also when the status has not arrived yet (DDS discovery
        # on a loaded machine can take longer than the wait): a refused stop then only means nothing ran.
        if args.action == "start" and getattr(args, "restart", False) and state in ("RUNNING", None):
            res = cli.call("stop", Trigger, Trigger.Request())
            if res.success or state == "RUNNING":
                print(f"stop: {'ok' if res.success else 'refused'}: {res.message}")
                if not res.success:
                    return 1
            before = cli.status(2.0)
        moves_before = _int(_values(before).get("moves")) if before is not None else -1
        res = cli.call(ACTIONS[args.action], Trigger, Trigger.Request())
        print(f"{args.action}: {'ok' if res.success else 'refused'}: {res.message}")
        if not res.success:
            return 1
        if args.no_wait or args.action not in ("start", "rest"):
            return 0
        if args.action == "rest":
            return _wait_move(cli, "RESTING", ("IDLE",), args.move_timeout, moves_before)
        rc = _wait_move(cli, "RESETTING", ("READY", "RUNNING"), args.move_timeout, moves_before)
        if rc or not args.go:
            return rc
        st = _values(cli.status(0.5) or type("S", (), {"values": []})())
        if st.get("state") == "RUNNING":
            return 0
        res = cli.call("go", Trigger, Trigger.Request())
        print(f"go: {'ok' if res.success else 'refused'}: {res.message}")
        return 0 if res.success else 1
    except ConnectionError as exc:
        print(exc)
        return 2
    finally:
        cli.close()
