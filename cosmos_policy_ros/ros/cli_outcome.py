"""``cosmos-policy outcome``: ask the operator for each episode's outcome and store it in the episode's bag.

Modes:
* one-shot (scripts): ``cosmos-policy outcome --outcome success [--episode-id ID] [--score 0.8] [--note TEXT]``
  labels one episode (default: the most recent) through the recorder's ``label_episode`` service.
* ask (default): ``cosmos-policy outcome`` asks once, for the most recent episode.
* watch: ``cosmos-policy outcome --watch`` waits for every episode STOP on ``/episode`` and asks after each,
  like the reference evaluation client. Answers are read from stdin, one line each, so a script can pipe
  them: ``s`` / ``success`` / ``y``, ``f`` / ``failure`` / ``n``, ``p 0.6`` / ``partial 0.6``, a bare score
  ``0.6`` (= partial, 0 = failure, 1 = success), or an empty line to leave the episode unlabelled. A second
  line is the optional note (skipped with ``--no-note``).
"""
from __future__ import annotations

import argparse
import math
import queue
import sys
from typing import Optional, TextIO, Tuple


def parse_outcome_answer(text: str) -> Optional[Tuple[str, float]]:
    """Operator answer -> (outcome, score) or None for "no label". Raises ValueError on nonsense."""
    words = text.strip().lower().split()
    if not words:
        return None
    head, rest = words[0], words[1:]
    aliases = {"s": "success", "y": "success", "yes": "success", "success": "success",
               "f": "failure", "n": "failure", "no": "failure", "fail": "failure", "failure": "failure",
               "p": "partial", "partial": "partial"}
    if head in aliases:
        outcome = aliases[head]
        score = float("nan")
        if rest:
            score = float(rest[0])
        elif outcome == "partial":
            raise ValueError("partial needs a score, e.g. 'p 0.5'")
    else:
        try:
            score = float(head)
        except ValueError:
            raise ValueError(f"expected s/f/p <score> or a score in [0, 1], got {text.strip()!r}") from None
        outcome = "success" if score >= 1.0 else "failure" if score <= 0.0 else "partial"
    if not math.isnan(score) and not 0.0 <= score <= 1.0:
        raise ValueError(f"expected a score in [0, 1], got {score}")
    return outcome, score


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cosmos-policy outcome``."""
    parser.add_argument("--episode-id", default="", help="episode to label (default: the most recent)")
    parser.add_argument("--outcome", choices=("success", "failure", "partial"), default=None,
                        help="label without asking (one-shot)")
    parser.add_argument("--score", type=float, default=float("nan"), help="success score 0..1 (default from outcome)")
    parser.add_argument("--note", default="", help="operator note")
    parser.add_argument("--watch", action="store_true", help="ask after every episode STOP until Ctrl-C / end of input")
    parser.add_argument("--no-note", action="store_true", help="do not ask for a note")
    parser.add_argument("--service", default="/recorder/label_episode", help="recorder label service")
    parser.add_argument("--episode-topic", default="/episode", help="EpisodeEvent topic (watch mode)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the service")


def _ask(prompt: str, stdin: TextIO) -> Optional[str]:
    print(prompt, end="", flush=True)
    line = stdin.readline()
    return None if line == "" else line.rstrip("\n")


def run(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> int:
    """Label one episode (one-shot / ask) or every episode (watch); 0 on success, 1 if a label failed."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.srv import LabelEpisode

    rclpy.init()
    node = Node("outcome_cli")
    client = node.create_client(LabelEpisode, args.service)
    failures = 0

    def label(episode_id: str, outcome: str, score: float, note: str) -> bool:
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f"error: recorder service {args.service} not available after {args.timeout:.0f} s", file=sys.stderr)
            return False
        future = client.call_async(LabelEpisode.Request(episode_id=episode_id, outcome=outcome,
                                                        success_score=float(score), note=note))
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done() or future.result() is None:
            print(f"error: no answer from {args.service}", file=sys.stderr)
            return False
        res = future.result()
        print(("ok: " if res.ok else "error: ") + res.message + (f" [{res.bag_path}]" if res.bag_path else ""),
              file=sys.stdout if res.ok else sys.stderr, flush=True)
        return bool(res.ok)

    def ask_and_label(episode_id: str, title: str) -> Optional[bool]:
        while True:
            answer = _ask(f"{title} outcome? [s]uccess / [f]ailure / [p]artial <score> / 0..1 / enter = skip: ", stdin)
            if answer is None:
                return None  # end of input
            try:
                parsed = parse_outcome_answer(answer)
                break
            except ValueError as exc:
                print(f"  {exc}", flush=True)
        if parsed is None:
            print("  left unlabelled", flush=True)
            return True
        note = "" if args.no_note else (_ask("  note (enter = none): ", stdin) or "")
        return label(episode_id, parsed[0], parsed[1], note)

    try:
        if args.outcome is not None:
            return 0 if label(args.episode_id, args.outcome, args.score, args.note) else 1
        if not args.watch:
            result = ask_and_label(args.episode_id, f"episode {args.episode_id or '(most recent)'}")
            return 0 if result is not False else 1
        stops: "queue.Queue" = queue.Queue()
        node.create_subscription(EpisodeEvent, args.episode_topic,
                                 lambda m: stops.put(m) if m.event == EpisodeEvent.STOP else None, QoSProfile(depth=50))
        print(f"waiting for episodes on {args.episode_topic} (Ctrl-C to end)", flush=True)
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.1)
            try:
                ev = stops.get_nowait()
            except queue.Empty:
                continue
            title = f"episode {ev.episode_id!r} ({ev.task or 'no task'}; stopped: {ev.reason or '-'})"
            result = ask_and_label(ev.episode_id, title)
            if result is None:
                break
            failures += 0 if result else 1
        return 1 if failures else 0
    except KeyboardInterrupt:
        return 1 if failures else 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos-policy outcome", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
