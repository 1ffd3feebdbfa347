"""Planner node: scores the policy node's candidate chunks with the planning model and answers in time.

Subscribes to ``PlanCandidates`` (``candidates_topic``), runs :class:`cosmos_policy_ros.core.planner.Planner`
(N*K world-model samples in one batch, N*K*M value samples in another) on a worker thread, and publishes a
``PlanDecision`` (``decision_topic``) with every candidate's score and value samples, plus the chosen
candidate's predicted future frames on ``~/future/<camera>``. Only the newest request is kept: an older
one still queued is dropped (counted) because its client has moved on. A request whose deadline passed
before planning started is answered at once with ``ok: false`` so the client stops waiting.

The planning model is a separate process and may sit on its own GPU (``device``: e.g. ``cuda:1``) or share
the policy's (then both models fit: ~6 GB + ~10 GB). ``checkpoint``: a local path / Hugging Face id of a
Cosmos Policy checkpoint (the planning model, e.g. ``nvidia/Cosmos-Policy-ALOHA-Planning-Model-Predict2-2B``)
or ``tiny-random`` (random tiny network, CPU tests). Health on ``/diagnostics``.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Optional

import numpy as np
import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from cosmos_policy_ros.msg import PlanCandidates, PlanDecision

from . import diagnostics as dg
from .conversions import rgb_to_image_msg
from .params import Param, declare
from .node_main import run_node
from .planning_client import (DEFAULT_CANDIDATES_TOPIC, DEFAULT_DECISION_TOPIC, PlanRequest, decision_from_result,
                              decision_to_msg, error_decision, msg_to_request)

PARAMS = (
    Param("checkpoint", "tiny-random", "planning model: local path or Hugging Face id of a Cosmos Policy checkpoint "
          "(e.g. nvidia/Cosmos-Policy-ALOHA-Planning-Model-Predict2-2B) or 'tiny-random' (random tiny network)"),
    Param("torch_threads", 0, "CPU threads for torch (0 = auto: all but one core, at least 1; see the policy node)"),
    Param("device", "", "torch device of the planning model, e.g. 'cuda:1' for its own GPU (empty: cuda when "
          "available, else cpu)"),
    Param("dtype", "", "model dtype (empty: float32 on CPU, the checkpoint's dtype (bfloat16) on GPU)"),
    Param("future_state_steps", [1, 3, 5], "network calls of each of the K world-model samples per candidate"),
    Param("value_steps", [1, 2, 3, 4, 5], "network calls of each of the M value samples per future state"),
    Param("aggregation", "majority_mean", "majority_mean (reference) | mean | lcb (mean - lcb_beta * std)"),
    Param("majority_threshold", 0.05, "majority_mean: a sample counts when its value exceeds this"),
    Param("lcb_beta", 1.0, "lcb: standard deviations subtracted from the mean"),
    Param("score_mode", "value_v", "value_v (V(s'), released) | value_q (Q(s,a), needs a Q-trained model)"),
    Param("seed", 0, "planning noise seed"),
    Param("noise", "common", "common (every candidate scored under the same noise draws: scores differ through the "
                             "actions alone) | per_candidate (the draws also follow each candidate's seed)"),
    Param("max_batch", 0, "largest network batch (rows) per call; 0 = all N*K*M rows at once"),
    Param("switch_margin", 0.0, "another candidate replaces candidate 0 only when its score is higher by more than "
          "this (0 = the reference: any strictly higher score)"),
    Param("publish_future_images", True, "publish the chosen candidate's predicted future frames on ~/future/<camera>"),
    Param("skip_expired", True, "answer ok=false without planning when a request's deadline already passed "
          "(needs synchronised clocks across machines)"),
    Param("candidates_topic", DEFAULT_CANDIDATES_TOPIC, "PlanCandidates input topic"),
    Param("decision_topic", DEFAULT_DECISION_TOPIC, "PlanDecision output topic"),
    Param("diagnostics_period", 1.0, "seconds between /diagnostics messages"),
    Param("inject_fault", "", "tests only: '' | 'delay=<s>' (sleep before answering) | 'exception' (fail every "
          "request)", dynamic=True),
)


def load_planning_model(checkpoint: str, device: str = "", dtype: str = ""):
    """Resolve ``checkpoint`` to a CosmosPolicy used as the planning model (model modules imported lazily)."""
    spec = checkpoint.strip()
    if spec in ("tiny-random", "tiny"):
        from ..core.policy import make_tiny_policy

        model = make_tiny_policy(decode_future_images=False)
        if device:
            model.network.to(device)
        return model
    if not spec:
        raise ValueError("checkpoint: expected a path, a Hugging Face id or 'tiny-random', got ''")
    import torch

    from ..core.policy import load_policy

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_policy(spec, device=dev, dtype=dtype or None, decode_future_images=False)


def parse_fault(spec: str):
    """'' | 'delay=<s>' | 'exception' -> (delay seconds, raise?) (ValueError otherwise)."""
    spec = (spec or "").strip()
    if not spec:
        return 0.0, False
    if spec == "exception":
        return 0.0, True
    if spec.startswith("delay="):
        d = float(spec.split("=", 1)[1])
        if d < 0:
            raise ValueError(f"inject_fault delay: expected >= 0 s, got {d}")
        return d, False
    raise ValueError(f"inject_fault: expected '', 'delay=<s>' or 'exception', got {spec!r}")


class PlannerNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs):
        super().__init__("planner", **kwargs)
        p = declare(self, PARAMS)
        self.p = p
        from ..core.planner import PlannerConfig

        self.config = PlannerConfig(
            future_state_steps=tuple(p["future_state_steps"]), value_steps=tuple(p["value_steps"]),
            aggregation=p["aggregation"], majority_threshold=p["majority_threshold"], lcb_beta=p["lcb_beta"],
            score=p["score_mode"], seed=p["seed"], noise=p["noise"], max_batch=p["max_batch"],
            switch_margin=p["switch_margin"],
            decode_future_images="first" if p["publish_future_images"] else "none")
        self._fault = parse_fault(p["inject_fault"])
        self.planner = None
        self.planner_id = ""
        self._load_error: Optional[str] = None
        self._cv = threading.Condition()
        self._queued: Optional[tuple] = None  # (msg, receive monotonic time)
        self.requests = 0
        self.decisions = 0
        self.errors = 0
        self.expired = 0
        self.dropped = 0
        self.last_error = ""
        self.latency = dg.Stats(200)
        self.decision_pub = self.create_publisher(PlanDecision, p["decision_topic"], QoSProfile(depth=10))
        self.future_pubs = {}
        self.create_subscription(PlanCandidates, p["candidates_topic"], self._on_candidates, QoSProfile(depth=2))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_params)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="planner-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"planner node: checkpoint {p['checkpoint']!r} on {p['device'] or 'default device'}, "
                               f"{len(self.config.future_state_steps)} x {len(self.config.value_steps)} ensemble, "
                               f"{self.config.aggregation}, {self.config.score}; {p['candidates_topic']} -> "
                               f"{p['decision_topic']}")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_set_params(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "inject_fault":
                try:
                    self._fault = parse_fault(prm.value)
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                self.get_logger().warning(f"fault injection set to {prm.value!r}")
        return SetParametersResult(successful=True)

    def _on_candidates(self, msg) -> None:
        with self._cv:
            if self._queued is not None:
                self.dropped += 1
            self._queued = (msg, time.monotonic())
            self._cv.notify()

    # -- worker --------------------------------------------------------------------------------------
    def _load(self) -> bool:
        try:
            from ..core.network import configure_torch_threads
            from ..core.planner import Planner

            configure_torch_threads(self.p["torch_threads"])
            model = load_planning_model(self.p["checkpoint"], self.p["device"], self.p["dtype"])
            self.planner = Planner(model, self.config)
            self.planner_id = getattr(model, "policy_id", self.p["checkpoint"])
        except Exception as exc:  # noqa: BLE001 - report any loader failure; answer every request with it
            self._load_error = f"cannot load planning model {self.p['checkpoint']!r}: {exc}"
            self.get_logger().error(self._load_error + "\n" + traceback.format_exc())
            return False
        self.get_logger().info(f"planning model {self.planner_id!r} loaded (image size {self.planner.image_size})")
        return True

    def _run(self) -> None:
        self._load()
        while not self._stop.is_set() and rclpy.ok(context=self.context):
            with self._cv:
                if self._queued is None:
                    self._cv.wait(0.1)
                if self._queued is None:
                    continue
                msg, t_recv = self._queued
                self._queued = None
            try:
                self._handle(msg, t_recv)
            except Exception:  # noqa: BLE001 - the worker must survive anything
                self.get_logger().error("planner worker error:\n" + traceback.format_exc())

    def _answer_error(self, msg, error: str, queue_time: float) -> None:
        self.errors += 1
        self.last_error = error
        from .conversions import stamp_to_sec

        d = error_decision(msg.client_id, msg.request_id, stamp_to_sec(msg.header.stamp), error, self.planner_id, queue_time)
        self.decision_pub.publish(decision_to_msg(d))
        self.get_logger().warning(f"request {msg.request_id} from {msg.client_id}: {error}", throttle_duration_sec=2.0)

    def _handle(self, msg, t_recv: float) -> None:
        self.requests += 1
        t_start = time.monotonic()
        queue_time = t_start - t_recv
        if self.planner is None:
            self._answer_error(msg, self._load_error or "planning model not loaded", queue_time)
            return
        if self.p["skip_expired"] and self._now() > msg.deadline:
            self.expired += 1
            self._answer_error(msg, "deadline passed before planning started", queue_time)
            return
        delay, fail = self._fault
        if delay > 0:
            time.sleep(delay)
        try:
            if fail:
                raise RuntimeError("injected planner failure (inject_fault=exception)")
            req: PlanRequest = msg_to_request(msg)
            result = self.planner.score(req.observation(), req.actions, req.seeds, preprocessed=req.images_preprocessed)
        except Exception as exc:  # noqa: BLE001 - the client must hear about it now, not at its deadline
            self._answer_error(msg, f"{type(exc).__name__}: {exc}", queue_time)
            return
        planning_time = time.monotonic() - t_recv
        d = decision_from_result(req, result, self.planner_id, planning_time, queue_time)
        self.decision_pub.publish(decision_to_msg(d))
        self.decisions += 1
        self.latency.add(planning_time)
        if self.p["publish_future_images"] and result.future_images[result.chosen]:
            future_stamp = req.stamp + req.actions.shape[1] * 0.04
            for cam, img in result.future_images[result.chosen][0].items():
                pub = self.future_pubs.get(cam)
                if pub is None:
                    pub = self.future_pubs[cam] = self.create_publisher(Image, f"~/future/{cam}", 2)
                pub.publish(rgb_to_image_msg(np.ascontiguousarray(img), future_stamp, cam))
        self.get_logger().info(f"request {req.request_id}: chose {result.chosen} of {req.num_candidates} "
                               f"(scores {np.round(result.scores, 3).tolist()}) in {planning_time:.2f} s",
                               throttle_duration_sec=1.0)

    # -- diagnostics ----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        lat = self.latency.summary()
        values = {"requests": self.requests, "decisions": self.decisions, "errors": self.errors,
                  "expired": self.expired, "dropped_superseded": self.dropped,
                  "decision_latency_last_s": self.latency.last, "decision_latency_p50_s": lat["p50"],
                  "decision_latency_max_s": lat["max"], "last_error": self.last_error or "none",
                  "checkpoint": self.p["checkpoint"], "device": self.p["device"] or "default"}
        if self._load_error:
            level, message = dg.ERROR, self._load_error
        elif self.planner is None:
            level, message = dg.WARN, "loading planning model"
        else:
            level, message = dg.OK, "ready"
        st = dg.make_status("cosmos_policy_ros: planner", level, message, values, "planner")
        self.diag_pub.publish(dg.make_array(self.get_clock().now().to_msg(), [st]))

    def destroy_node(self):
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> int:
    """Run the planner node until SIGINT."""
    return run_node(PlannerNode, "planner", args)


if __name__ == "__main__":
    sys.exit(main())
