"""Planning over real DDS: the planner node (subprocess, tiny random planning model) answering the
PlanningBackend client, and the client's fallback to candidate 0 on a planner timeout, error and crash."""
from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from cosmos_policy_ros.core.test_doubles import LatencyPolicyTestDouble
from cosmos_policy_ros.core.types import Observation, PolicyOutput

# Small ensembles keep the CPU planner quick; the reference 3 x 5 is covered by test_planner_core.
FAST_PLANNER = {"future_state_steps": [1, 2], "value_steps": [1, 2], "publish_future_images": False}


# ---- messages <-> plain values, no rclpy.init -------------------------------------------------------
def _request(n=3, size=(8, 8)):
    from cosmos_policy_ros.ros.planning_client import PlanRequest
    rng = np.random.default_rng(0)
    return PlanRequest(client_id="/policy#ab", request_id=7, stamp=12.5, deadline=20.0, instruction="fold",
                       images={c: rng.integers(0, 256, size + (3,), dtype=np.uint8) for c in ("cam_high", "cam_left_wrist")},
                       images_preprocessed=True, proprio=rng.uniform(-1, 1, 14), actions=rng.uniform(-1, 1, (n, 50, 14)).astype(np.float32),
                       seeds=[195, 196, 197][:n], policy_values=np.array([0.1, np.nan, 0.3][:n], np.float32), policy_id="p")


def test_request_round_trip_and_validation():
    from cosmos_policy_ros.ros import planning_client as pc
    req = _request()
    back = pc.msg_to_request(pc.request_to_msg(req))
    assert (back.client_id, back.request_id, back.deadline, back.instruction, back.policy_id) == ("/policy#ab", 7, 20.0, "fold", "p")
    assert back.stamp == pytest.approx(12.5) and back.images_preprocessed and back.seeds == [195, 196, 197]
    np.testing.assert_array_equal(back.actions, req.actions)
    np.testing.assert_allclose(back.proprio, req.proprio, atol=1e-6)
    np.testing.assert_array_equal(back.policy_values, req.policy_values)
    for cam, img in req.images.items():
        np.testing.assert_array_equal(back.images[cam], img)
    obs = back.observation()
    assert isinstance(obs, Observation) and obs.stamp == back.stamp
    msg = pc.request_to_msg(req)
    msg.seeds = [1]
    with pytest.raises(ValueError, match="expected 3 seeds"):
        pc.msg_to_request(msg)
    msg = pc.request_to_msg(req)
    msg.image_height = 9
    with pytest.raises(ValueError, match="image bytes for 2 cameras of 9x8x3"):
        pc.msg_to_request(msg)
    bad = _request()
    bad.images["cam_high"] = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="one size"):
        pc.request_to_msg(bad)


def test_decision_round_trip_and_checks():
    from cosmos_policy_ros.ros import planning_client as pc
    values = np.random.default_rng(1).uniform(0, 1, (3, 2, 4)).astype(np.float32)
    d = pc.Decision(client_id="c", request_id=4, stamp=1.0, ok=True, chosen=2, scores=np.array([0.1, 0.2, 0.3], np.float32),
                    values=values, future_proprio=np.zeros((3, 2, 14), np.float32), future_state_steps=[1, 3],
                    value_steps=[1, 2, 3, 4], aggregation="mean", score_mode="value_v", planning_time=0.5, planner_id="tiny")
    back = pc.msg_to_decision(pc.decision_to_msg(d))
    np.testing.assert_array_equal(back.values, values)
    assert (back.chosen, back.ok, back.aggregation, back.future_state_steps, back.value_steps) == (2, True, "mean", [1, 3], [1, 2, 3, 4])
    assert back.future_proprio.shape == (3, 2, 14)
    assert pc.check_decision(back, 3) is None
    assert pc.check_decision(back, 2) == "planner chose candidate 2, expected 0..1"
    assert pc.check_decision(None, 3) == "no decision"
    err = pc.error_decision("c", 4, 1.0, "CUDA out of memory")
    assert pc.check_decision(pc.msg_to_decision(pc.decision_to_msg(err)), 3) == "planner error: CUDA out of memory"
    msg = pc.decision_to_msg(d)
    msg.num_value_samples = 5
    with pytest.raises(ValueError, match="for N=3, K=2, M=5"):
        pc.msg_to_decision(msg)


def test_client_config_validation():
    from cosmos_policy_ros.ros.planning_client import ClientConfig
    with pytest.raises(ValueError, match="planning_deadline: expected a finite number of seconds > 0, got 0"):
        ClientConfig(deadline=0)
    with pytest.raises(ValueError, match="planning_num_candidates: expected an integer >= 1"):
        ClientConfig(num_candidates=0)


# ---- over DDS -----------------------------------------------------------------------------------------
def _planner_spec(**params):
    from cosmos_policy_ros.ros.harness import NodeSpec
    return NodeSpec(module="cosmos_policy_ros.ros.planner_node", name="planner",
                    parameters={"checkpoint": "tiny-random", **FAST_PLANNER, **params})


def _wait_planner_ready(session, node_log, proc, timeout=240.0):
    """The planner subscribes at once but loads its model in a worker: wait for its 'ready' diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray

    from cosmos_policy_ros.ros import diagnostics as dg
    from cosmos_policy_ros.ros.harness import Collector, wait_for
    node = session.make_node(f"diag_watch_{node_log}")
    col = Collector(node, DiagnosticArray, "/diagnostics")

    def ready():
        assert proc.alive(), proc.output()
        return any(s.name == "cosmos_policy_ros: planner" and s.message == "ready" and dg.status_level(s) == dg.OK
                   for m in col.snapshot() for s in m.status)
    wait_for(ready, timeout, interval=0.2, what="planner ready")
    return col


def test_planner_node_scores_candidates_and_the_client_uses_its_choice(ros_session, node_log_dir, tiny_model, observation):
    from cosmos_policy_ros.core.planner import Planner, PlannerConfig
    from cosmos_policy_ros.msg import PlanCandidates, PlanDecision
    from cosmos_policy_ros.ros.harness import Collector, NodeProcess, wait_for_publishers
    from cosmos_policy_ros.ros.planning_client import ClientConfig, PlanningBackend, msg_to_decision

    policy, obs = tiny_model, observation  # same weights as the planner node's tiny-random model
    with NodeProcess(_planner_spec(), node_log_dir) as planner:
        _wait_planner_ready(ros_session, "a", planner)
        node = ros_session.make_node("policy")
        decisions = Collector(node, PlanDecision, "/planner/decision")
        requests = Collector(node, PlanCandidates, "/planner/candidates")
        backend = PlanningBackend(policy, node, ClientConfig(num_candidates=3, deadline=120.0))
        before = policy.decode_future_images
        backend.decode_future_images = "deferred"  # as the policy node sets it: it must reach the policy inside
        assert policy.decode_future_images == "deferred"
        policy.decode_future_images = before
        wait_for_publishers(node, "/planner/decision")
        out = backend.infer(obs, seed=195)
        assert backend.fallbacks == {"timeout": 0, "planner_error": 0, "no_planner": 0, "bad_candidates": 0}, \
            backend.last_fallback_reason + planner.output()
        d = backend.last_decision
        assert d.ok and d.request_id == 1 and d.values.shape == (3, 2, 2) and d.aggregation == "majority_mean"
        assert out.seed == 195 + d.chosen and backend.last_chosen == d.chosen
        recorded = msg_to_decision(decisions.wait(1)[0])  # what the recorder sees: every candidate's values
        np.testing.assert_array_equal(recorded.values, d.values)
        req = requests.wait(1)[0]
        assert req.images_preprocessed and (req.image_height, req.image_width) == (64, 64)
        assert list(req.seeds) == [195, 196, 197]
        # the planner process scored exactly what the core planner scores locally for these candidates
        cands = np.frombuffer(req.actions, np.float32).reshape(3, 50, 14) if not isinstance(req.actions, np.ndarray) \
            else req.actions.reshape(3, 50, 14)  # the candidates as sent
        local = Planner(policy, PlannerConfig(future_state_steps=(1, 2), value_steps=(1, 2), decode_future_images="none"))
        ref = local.score(obs, cands, [195, 196, 197])
        np.testing.assert_allclose(d.scores, ref.scores, atol=1e-4)
        np.testing.assert_allclose(d.values, ref.values, atol=1e-4)
        assert d.chosen == ref.chosen


class _ObsSource:
    """A small observation for the test-double base backend (raw frames: the planner preprocesses them)."""

    @staticmethod
    def make():
        rng = np.random.default_rng(0)
        images = {c: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for c in ("cam_left_wrist", "cam_right_wrist", "cam_high")}
        return Observation(images=images, proprio=np.full(14, 0.2), instruction="put the candy in the bowl", stamp=3.0)


def _set_fault(node, value):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    from cosmos_policy_ros.ros.harness import wait_for
    client = AsyncParameterClient(node, "planner")
    assert client.wait_for_services(20.0)
    fut = client.set_parameters([Parameter("inject_fault", Parameter.Type.STRING, value)])
    wait_for(fut.done, 20.0, what="set inject_fault")
    assert fut.result().results[0].successful


def test_fallback_to_candidate_zero_on_planner_error_timeout_and_crash(ros_session, node_log_dir):
    """Every query returns a chunk by the deadline whatever the planner does; diagnostics say why."""
    from diagnostic_msgs.msg import DiagnosticArray

    from cosmos_policy_ros.ros import diagnostics as dg
    from cosmos_policy_ros.ros.harness import Collector, NodeProcess, wait_for
    from cosmos_policy_ros.ros.planning_client import ClientConfig, PlanningBackend

    deadline = 1.5
    base = LatencyPolicyTestDouble(latency=0.0)
    obs = _ObsSource.make()
    base0 = base.infer(obs, seed=195).actions
    with NodeProcess(_planner_spec(), node_log_dir) as planner:
        _wait_planner_ready(ros_session, "b", planner)
        node = ros_session.make_node("policy")
        diag = Collector(node, DiagnosticArray, "/diagnostics")
        backend = PlanningBackend(base, node, ClientConfig(num_candidates=4, deadline=deadline, diagnostics_period=0.2))
        wait_for(lambda: backend._pub.get_subscription_count() > 0, 20.0, what="planner subscription")

        # 1. planner error: an ok=false answer makes the client fall back at once (no waiting for the deadline)
        _set_fault(node, "exception")
        out = backend.infer(obs, seed=195)
        assert backend.fallbacks["planner_error"] == 1, backend.last_fallback_reason
        assert "injected planner failure" in backend.last_fallback_reason
        assert out.seed == 195 and np.array_equal(out.actions, base0)

        # 2. injected timeout: the planner answers 30 s late; the client returns candidate 0 at its deadline
        _set_fault(node, "delay=30")
        t0 = time.monotonic()
        out = backend.infer(obs, seed=195)
        waited = time.monotonic() - t0
        assert backend.fallbacks["timeout"] == 1, backend.last_fallback_reason
        assert out.seed == 195 and deadline <= backend.last_wait < deadline + 10.0 and waited < 30.0
        assert "no decision within 1.5 s" in backend.last_fallback_reason

        # 3. crash: kill the planner; every later query still delivers candidate 0 by the deadline
        planner.signal(signal.SIGKILL)
        planner.process.wait(10)
        outs = []
        for _ in range(3):
            t0 = time.monotonic()
            outs.append(backend.infer(obs, seed=195))
            assert time.monotonic() - t0 < deadline + 10.0
        assert all(o.seed == 195 and np.array_equal(o.actions, base0) for o in outs)
        assert backend.fallbacks["timeout"] + backend.fallbacks["no_planner"] == 4
        assert backend.decisions_used == 0

        # diagnostics report the fallbacks (WARN, counts, reason)
        def warned():
            for m in diag.snapshot():
                for s in m.status:
                    if s.name == "cosmos_policy_ros: planning client" and dg.status_level(s) == dg.WARN:
                        v = dg.status_values(s)
                        if int(v["planning_fallbacks_timeout"]) + int(v["planning_fallbacks_no_planner"]) == 4:
                            return "fell back to candidate 0" in s.message and v["planning_fallbacks_planner_error"] == "1"
            return False
        wait_for(warned, 10.0, what="planning client WARN diagnostics with the fallback counts")


def test_client_without_planner_does_not_wait(ros_session):
    from cosmos_policy_ros.ros.planning_client import ClientConfig, PlanningBackend
    node = ros_session.make_node("policy")
    backend = PlanningBackend(LatencyPolicyTestDouble(latency=0.0), node, ClientConfig(num_candidates=2, deadline=30.0),
                              publish_diagnostics=False)
    out = backend.infer(_ObsSource.make(), seed=5)
    assert out.seed == 5 and backend.fallbacks["no_planner"] == 1 and backend.last_wait < 30.0
    assert not hasattr(backend, "decode_future_images")  # its base decodes nothing: the node leaves it alone
    assert backend.last_fallback_reason == "no planner subscribed to /planner/candidates"


def test_planner_config_file_and_executable(repo_root):
    """config/planner_node.yaml sets exactly the node's declared parameters, with valid planner settings."""
    import os

    import yaml

    from cosmos_policy_ros.core.planner import PlannerConfig
    from cosmos_policy_ros.ros.planner_node import PARAMS, parse_fault
    body = yaml.safe_load((repo_root / "config" / "planner_node.yaml").read_text())["planner"]["ros__parameters"]
    assert set(body) == {p.name for p in PARAMS}
    assert all(p.description for p in PARAMS)
    cfg = PlannerConfig(future_state_steps=tuple(body["future_state_steps"]), value_steps=tuple(body["value_steps"]),
                        aggregation=body["aggregation"], score=body["score_mode"])
    assert (cfg.future_state_steps, cfg.value_steps, cfg.aggregation) == ((1, 3, 5), (1, 2, 3, 4, 5), "majority_mean")
    script = repo_root / "scripts" / "nodes" / "planner_node"
    assert os.access(script, os.X_OK) and "cosmos_policy_ros.ros.planner_node import main" in script.read_text()
    assert parse_fault("delay=2.5") == (2.5, False) and parse_fault("exception") == (0.0, True)
    with pytest.raises(ValueError, match="inject_fault: expected"):
        parse_fault("crash")
