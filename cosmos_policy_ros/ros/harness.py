"""Run real ROS 2 nodes for tests, benchmarks and the demo: in-process executors and subprocess nodes.

Used by the test suite and by ``make demo`` / ``make bench`` (``ros2 launch`` is not installable from
PyPI, so the same node graph is started from here). Everything shuts down cleanly: executors are
stopped and joined, subprocess nodes get SIGINT, then SIGTERM, then SIGKILL, in their own process group.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.01, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; raise TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    if predicate():
        return
    raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")


class RosSession:
    """An isolated rclpy context with one executor spinning in a background thread.

    Nodes added with :meth:`add_node` (or created with :meth:`make_node`) are spun until :meth:`close`.
    """

    def __init__(self, args: Optional[List[str]] = None):
        self.context = Context()
        rclpy.init(args=args, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self._nodes: List[Node] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="ros-session-spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # executor torn down during shutdown
                if self._stop.is_set() or not self.context.ok():
                    return
                raise

    def make_node(self, name: str, **kwargs: Any) -> Node:
        """Create a plain node in this context and spin it."""
        node = Node(name, context=self.context, **kwargs)
        return self.add_node(node)

    def add_node(self, node: Node) -> Node:
        """Spin an existing node (created with ``context=session.context``) on this session's executor."""
        self.executor.add_node(node)
        self._nodes.append(node)
        return node

    def close(self) -> None:
        """Stop spinning, destroy every node and shut the context down."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        for node in self._nodes:
            with contextlib.suppress(Exception):
                self.executor.remove_node(node)
            with contextlib.suppress(Exception):
                node.destroy_node()
        self._nodes.clear()
        with contextlib.suppress(Exception):
            self.executor.shutdown(timeout_sec=1.0)
        if self.context.ok():
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> "RosSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Collector:
    """Subscribe to a topic and keep every message with its local receive time (monotonic seconds)."""

    def __init__(self, node: Node, msg_type: Any, topic: str, qos: Any = 10, raw: bool = False):
        self.messages: List[Any] = []
        self.times: List[float] = []
        self._lock = threading.Lock()
        self.subscription = node.create_subscription(msg_type, topic, self._on_msg, qos, raw=raw)

    def _on_msg(self, msg: Any) -> None:
        with self._lock:
            self.messages.append(msg)
            self.times.append(time.monotonic())

    def __len__(self) -> int:
        with self._lock:
            return len(self.messages)

    def snapshot(self) -> List[Any]:
        """A copy of the messages received so far."""
        with self._lock:
            return list(self.messages)

    def timed(self, start: int = 0) -> List[Tuple[Any, float]]:
        """(message, receive time) pairs from the ``start``-th message on."""
        with self._lock:
            return list(zip(self.messages[start:], self.times[start:]))

    def wait(self, count: int = 1, timeout: float = 10.0) -> List[Any]:
        """Wait until at least ``count`` messages arrived; return them."""
        wait_for(lambda: len(self) >= count, timeout, what=f"{count} message(s) on {self.subscription.topic_name}")
        return self.snapshot()


@dataclass
class NodeSpec:
    """How to start one node as a subprocess: ``python -m module --ros-args ...``.

    parameters: name -> value (``-p name:=value``); params_files: YAML files (``--params-file``);
    remaps: from -> to (``-r from:=to``); namespace and name override the node's own.
    """

    module: str
    name: Optional[str] = None
    namespace: Optional[str] = None
    parameters: Dict[str, Any] = field(default_factory=dict)
    params_files: List[str] = field(default_factory=list)
    remaps: Dict[str, str] = field(default_factory=dict)
    args: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)

    def command(self) -> List[str]:
        """The full command line, using the current interpreter."""
        cmd = [sys.executable, "-m", self.module, *self.args, "--ros-args"]
        if self.name:
            cmd += ["-r", f"__node:={self.name}"]
        if self.namespace:
            cmd += ["-r", f"__ns:={self.namespace}"]
        for src, dst in self.remaps.items():
            cmd += ["-r", f"{src}:={dst}"]
        for path in self.params_files:
            cmd += ["--params-file", str(path)]
        for key, value in self.parameters.items():
            cmd += ["-p", f"{key}:={_param_literal(value)}"]
        return cmd


def _param_literal(value: Any) -> str:
    """Render a parameter value the way ``-p name:=value`` parses it (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


class NodeProcess:
    """A node running in its own process group, with its output in a log file."""

    def __init__(self, spec: NodeSpec, log_dir: Optional[str] = None):
        self.spec = spec
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="cosmos_node_")) / f"{(spec.name or spec.module).replace('/', '_')}.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.update(spec.env)
        self.process = subprocess.Popen(spec.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def output(self) -> str:
        """Everything the process printed so far (also after :meth:`stop` closed the log)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the node's whole process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGTERM, then SIGKILL; returns the exit code."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if not self.alive():
                break
            self.signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait)
        # Reap any grandchildren left in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def launch(specs: Sequence[NodeSpec], log_dir: Optional[str] = None) -> Iterator[List[NodeProcess]]:
    """Start every node in ``specs`` as a subprocess; stop them all (reverse order) on exit."""
    procs: List[NodeProcess] = []
    try:
        for spec in specs:
            procs.append(NodeProcess(spec, log_dir))
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()


def wait_for_subscribers(node: Node, topic: str, count: int = 1, timeout: float = 20.0) -> None:
    """Wait until ``count`` subscribers are matched on ``topic`` (discovery done)."""
    wait_for(lambda: node.count_subscribers(topic) >= count, timeout, what=f"{count} subscriber(s) on {topic}")


def wait_for_publishers(node: Node, topic: str, count: int = 1, timeout: float = 20.0) -> None:
    """Wait until ``count`` publishers are matched on ``topic`` (discovery done)."""
    wait_for(lambda: node.count_publishers(topic) >= count, timeout, what=f"{count} publisher(s) on {topic}")


def reliable(depth: int = 10) -> QoSProfile:
    """Reliable, volatile QoS of the given depth."""
    return QoSProfile(depth=depth)
