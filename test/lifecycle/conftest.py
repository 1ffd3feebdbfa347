"""Helpers for the lifecycle tests: the sim graph with the episode manager between policy and commander."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cosmos_policy_ros.core.robot import JS_NAMES
from cosmos_policy_ros.ros.commander_logic import TRACE_FIELDS

F = {name: i for i, name in enumerate(TRACE_FIELDS)}
NF = len(TRACE_FIELDS)
H, W = 96, 128  # small frames keep rendering cheap on a 2-core machine
MANAGER_CHUNKS = "/episode_manager/action_chunk"


def lifecycle_specs(manager_params=None, sim_params=None, commander_params=None, policy=True, record=False,
                    bag_dir=None):
    """Node specs of the shared sim graph with ``episode_manager:=true`` (the commander fed by the manager)."""
    from cosmos_policy_ros.ros.graph import graph_nodes

    args = {"checkpoint": "test-double:latency=0.3", "task": "transfer the cube", "record": record,
            "episode_manager": True}
    if bag_dir:
        args["bag_dir"] = str(bag_dir)
    mp = dict(manager_params or {})
    if not policy:
        mp.setdefault("require_policy_ok", False)
    node_params = {"sim_bridge": {"image_height": H, "image_width": W, "max_steps": 100000, **(sim_params or {})},
                   "commander": dict(commander_params or {}),
                   "policy": {"image_height": H, "image_width": W},
                   "episode_manager": mp}
    if record:
        node_params["recorder"] = {"min_free_space_mb": 100.0, "publish_diagnostics": False}
    nodes = graph_nodes("sim", args, node_parameters=node_params)
    by_name = {n.name: n.spec for n in nodes}
    assert by_name["commander"].parameters["chunk_topic"] == MANAGER_CHUNKS
    return [n.spec for n in nodes if policy or n.name != "policy"]


class ManagerClient:
    """Calls the manager's services and watches its status and the commander's trace."""

    def __init__(self, session):
        from diagnostic_msgs.msg import DiagnosticStatus
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        from cosmos_policy_ros.ros.harness import Collector

        self.node = session.make_node("lifecycle_test_client")
        self.status = Collector(self.node, DiagnosticStatus, "/episode_manager/status",
                                QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.trace = Collector(self.node, Float64MultiArray, "/commander/trace", 500)
        self.js = {s: Collector(self.node, JointState, f"/follower_{s}/joint_states", 200) for s in ("left", "right")}
        self._clients = {}

    def call(self, name, request=None, timeout=10.0):
        from std_srvs.srv import Trigger

        from cosmos_policy_ros.srv import LabelEpisode

        srv_type = LabelEpisode if name == "label" else Trigger
        if name not in self._clients:
            self._clients[name] = self.node.create_client(srv_type, f"/episode_manager/{name}")
        cl = self._clients[name]
        assert cl.wait_for_service(timeout_sec=30.0), f"/episode_manager/{name} not available"
        fut = cl.call_async(request or srv_type.Request())
        deadline = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fut.done(), f"/episode_manager/{name}: no answer within {timeout} s"
        return fut.result()

    def state(self):
        from cosmos_policy_ros.ros.diagnostics import status_values

        msgs = self.status.snapshot()
        return status_values(msgs[-1]) if msgs else {}

    def wait_state(self, state, timeout=30.0, procs=()):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.state()
            if st.get("state") == state:
                return st
            time.sleep(0.02)
        logs = "\n".join(p.output()[-3000:] for p in procs)
        raise AssertionError(f"state {state} not reached within {timeout} s; last status {self.state()}\n{logs}")

    def rows(self, start=0):
        return [np.asarray(m.data) for m in self.trace.snapshot()[start:]]

    def measured(self):
        """(14,) latest measured joints, grippers as normalised commands (aloha2)."""
        from cosmos_policy_ros.core.robot import gripper_convention

        conv = gripper_convention("aloha2")
        out = []
        for s in ("left", "right"):
            pos = np.asarray(self.js[s].wait(1, 10.0)[-1].position)
            out += list(pos[:6]) + [float(conv.joint_to_command(pos[6]))]
        return np.array(out)


class FakeFollower:
    """Publishes both followers' joint states at 50 Hz: ``positions`` in the Interbotix order and names until
    :meth:`set` changes them (names and positions as published)."""

    def __init__(self, node, positions):
        from sensor_msgs.msg import JointState

        self.node = node
        self.pubs = {s: node.create_publisher(JointState, f"/follower_{s}/joint_states", 10) for s in ("left", "right")}
        self.names = list(JS_NAMES)
        self.positions = [float(v) for v in positions]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def set(self, names, positions):
        self.names, self.positions = list(names), [float(v) for v in positions]

    def _run(self):
        from sensor_msgs.msg import JointState

        while not self._stop.is_set():
            for pub in self.pubs.values():
                msg = JointState(name=self.names, position=self.positions)
                msg.header.stamp = self.node.get_clock().now().to_msg()
                pub.publish(msg)
            time.sleep(0.02)

    def close(self):
        self._stop.set()
        self._thread.join()


@pytest.fixture
def manager_client_cls():
    return ManagerClient
