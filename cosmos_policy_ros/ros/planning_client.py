"""Policy-node side of best-of-N planning: a PolicyBackend wrapper that asks the planner node to choose.

:class:`PlanningBackend` wraps any :class:`~cosmos_policy_ros.core.types.PolicyBackend`. Its ``infer``

1. samples N candidate chunks with the base backend (``infer_batch``: one batched forward per step),
2. publishes them with the observation (model-input images + proprio) as ``PlanCandidates``,
3. waits for the matching ``PlanDecision`` until the deadline, and
4. returns the chosen candidate's output, or **candidate 0** (the base seed's chunk, the one a policy
   without planning would have sent) when the planner is absent, late, or reports an error, recording why.

Counters and the last fallback reason go to ``/diagnostics`` (status "cosmos_policy_ros: planning client"),
and :meth:`PlanningBackend.diagnostic_values` returns them for the policy node's own diagnostics. The wait
runs on the caller's thread (the policy node's inference worker); the decision arrives through a
subscription served by the node's executor, so the executor must not be the thread that calls ``infer``.

The message <-> plain value functions here (:func:`request_to_msg`, :func:`msg_to_request`,
:func:`decision_to_msg`, :func:`msg_to_decision`, :func:`decision_from_result`) are shared with the planner
node and need no ``rclpy.init``.
"""
from __future__ import annotations

import array
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..core.plan_window import PlanGate
from ..core.types import DEFAULT_SEED, Observation, PolicyOutput, PolicyWrapper
from .params import Param, declare

DEFAULT_CANDIDATES_TOPIC = "/planner/candidates"
DEFAULT_DECISION_TOPIC = "/planner/decision"

#: Parameters the client declares on the node that hosts it (the policy node).
CLIENT_PARAMS = (
    Param("planning", False, "best-of-N planning through the planner node (policy node: wrap the backend in "
          "PlanningBackend; planning_candidates must then be 0)"),
    Param("planning_num_candidates", 8, "N candidate chunks per query (seeds seed, seed+1, ...; candidate 0 is kept "
          "unless another scores strictly higher)"),
    Param("planning_deadline", 15.0, "seconds to wait for the planner's decision after publishing the candidates; "
          "then candidate 0 is used (the released setup allows 15 s, ~5 s per decision on 8 GPUs)"),
    Param("planning_candidates_topic", DEFAULT_CANDIDATES_TOPIC, "PlanCandidates topic (to the planner)"),
    Param("planning_decision_topic", DEFAULT_DECISION_TOPIC, "PlanDecision topic (from the planner)"),
    Param("planning_image_size", 0, "side of the model-input images sent to the planner (0 = the policy model's "
          "own input size; raw camera frames are sent when the backend has none)"),
    Param("planning_require_subscriber", True, "fall back at once (no waiting) while no planner subscribes to the "
          "candidates topic"),
)


# ================================================================================================
# plain values <-> messages (no node needed)
# ================================================================================================
@dataclass
class PlanRequest:
    """Plain form of ``PlanCandidates``. images: camera -> (H, W, 3) uint8 RGB; actions: (N, H, A) float32."""

    client_id: str
    request_id: int
    stamp: float
    deadline: float
    instruction: str
    images: Dict[str, np.ndarray]
    images_preprocessed: bool
    proprio: np.ndarray
    actions: np.ndarray
    seeds: List[int]
    policy_values: np.ndarray
    policy_id: str = ""

    @property
    def num_candidates(self) -> int:
        return int(self.actions.shape[0])

    def observation(self) -> Observation:
        """The observation the planning model scores the candidates for."""
        return Observation(images=self.images, proprio=self.proprio, instruction=self.instruction, stamp=self.stamp)


@dataclass
class Decision:
    """Plain form of ``PlanDecision``. values: (N, K, M); future_proprio: (N, K, P)."""

    client_id: str
    request_id: int
    stamp: float
    ok: bool
    chosen: int
    error: str = ""
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    future_proprio: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    future_state_steps: List[int] = field(default_factory=list)
    value_steps: List[int] = field(default_factory=list)
    aggregation: str = ""
    score_mode: str = ""
    planning_time: float = 0.0
    queue_time: float = 0.0
    planner_id: str = ""


def _f32(values) -> array.array:
    """numpy / sequence -> array('f') (fast assignment to float32[] fields)."""
    return array.array("f", np.ascontiguousarray(np.asarray(values, dtype=np.float32).ravel()).tobytes())


def _np(field_value, dtype) -> np.ndarray:
    if isinstance(field_value, array.array):
        return np.frombuffer(field_value, dtype=dtype)
    return np.asarray(field_value, dtype=dtype)


def request_to_msg(req: PlanRequest):
    """PlanRequest -> cosmos_policy_ros/PlanCandidates (ValueError on inconsistent sizes)."""
    from cosmos_policy_ros.msg import PlanCandidates

    from .conversions import sec_to_stamp

    a = np.asarray(req.actions, dtype=np.float32)
    if a.ndim != 3 or a.shape[0] < 1:
        raise ValueError(f"actions: expected (N, horizon, action_dim), got {a.shape}")
    n = a.shape[0]
    if len(req.seeds) != n or np.asarray(req.policy_values).size != n:
        raise ValueError(f"expected {n} seeds and policy values, got {len(req.seeds)}, {np.asarray(req.policy_values).size}")
    cams = list(req.images)
    shapes = {tuple(np.asarray(req.images[c]).shape) for c in cams}
    if len(shapes) != 1:
        raise ValueError(f"expected all camera images of one size, got {sorted(shapes)}")
    h, w, ch = shapes.pop()
    if ch != 3:
        raise ValueError(f"expected RGB images (H, W, 3), got {(h, w, ch)}")
    msg = PlanCandidates()
    msg.header.stamp = sec_to_stamp(req.stamp)
    msg.client_id = req.client_id
    msg.request_id = int(req.request_id)
    msg.deadline = float(req.deadline)
    msg.instruction = req.instruction
    msg.camera_names = cams
    msg.image_height, msg.image_width = int(h), int(w)
    msg.image_data = np.stack([np.asarray(req.images[c], dtype=np.uint8) for c in cams]).tobytes()
    msg.images_preprocessed = bool(req.images_preprocessed)
    msg.proprio = _f32(req.proprio)
    msg.num_candidates, msg.horizon, msg.action_dim = n, int(a.shape[1]), int(a.shape[2])
    msg.actions = _f32(a)
    msg.seeds = [int(s) for s in req.seeds]
    msg.policy_values = _f32(req.policy_values)
    msg.policy_id = req.policy_id
    return msg


def msg_to_request(msg) -> PlanRequest:
    """cosmos_policy_ros/PlanCandidates -> PlanRequest (ValueError naming the inconsistent field)."""
    from .conversions import stamp_to_sec

    n, hz, ad = int(msg.num_candidates), int(msg.horizon), int(msg.action_dim)
    acts = _np(msg.actions, np.float32)
    if n < 1 or hz < 1 or ad < 1 or acts.size != n * hz * ad:
        raise ValueError(f"candidates: {acts.size} action values for {n} x {hz} x {ad}")
    if len(msg.seeds) != n:
        raise ValueError(f"candidates: expected {n} seeds, got {len(msg.seeds)}")
    pv = _np(msg.policy_values, np.float32)
    if pv.size not in (0, n):
        raise ValueError(f"candidates: expected {n} policy values, got {pv.size}")
    cams = list(msg.camera_names)
    h, w = int(msg.image_height), int(msg.image_width)
    data = msg.image_data
    buf = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview, array.array)) else data,
                        dtype=np.uint8)
    if not cams or buf.size != len(cams) * h * w * 3:
        raise ValueError(f"candidates: {buf.size} image bytes for {len(cams)} cameras of {h}x{w}x3")
    frames = buf.reshape(len(cams), h, w, 3)
    return PlanRequest(
        client_id=msg.client_id, request_id=int(msg.request_id), stamp=stamp_to_sec(msg.header.stamp),
        deadline=float(msg.deadline), instruction=msg.instruction, images={c: frames[i] for i, c in enumerate(cams)},
        images_preprocessed=bool(msg.images_preprocessed), proprio=_np(msg.proprio, np.float32).astype(np.float64),
        actions=acts.reshape(n, hz, ad), seeds=[int(s) for s in msg.seeds],
        policy_values=pv if pv.size else np.full(n, np.nan, np.float32), policy_id=msg.policy_id)


def decision_to_msg(d: Decision):
    """Decision -> cosmos_policy_ros/PlanDecision."""
    from cosmos_policy_ros.msg import PlanDecision

    from .conversions import sec_to_stamp

    msg = PlanDecision()
    msg.header.stamp = sec_to_stamp(d.stamp)
    msg.client_id, msg.request_id = d.client_id, int(d.request_id)
    msg.ok, msg.error, msg.chosen = bool(d.ok), d.error, int(d.chosen)
    vals = np.asarray(d.values, dtype=np.float32)
    n = int(np.asarray(d.scores).size)
    msg.num_candidates = n
    msg.num_future_samples = int(vals.shape[1]) if vals.ndim == 3 else 0
    msg.num_value_samples = int(vals.shape[2]) if vals.ndim == 3 else 0
    msg.future_state_steps = [int(s) for s in d.future_state_steps]
    msg.value_steps = [int(s) for s in d.value_steps]
    msg.aggregation, msg.score_mode = d.aggregation, d.score_mode
    msg.scores = _f32(d.scores)
    msg.values = _f32(vals)
    msg.future_proprio = _f32(d.future_proprio)
    msg.planning_time, msg.queue_time = float(d.planning_time), float(d.queue_time)
    msg.planner_id = d.planner_id
    return msg


def msg_to_decision(msg) -> Decision:
    """cosmos_policy_ros/PlanDecision -> Decision (ValueError when the arrays do not match their sizes)."""
    from .conversions import stamp_to_sec

    n, k, m = int(msg.num_candidates), int(msg.num_future_samples), int(msg.num_value_samples)
    scores = _np(msg.scores, np.float32)
    values = _np(msg.values, np.float32)
    if scores.size != n or values.size != n * k * m:
        raise ValueError(f"decision: {scores.size} scores / {values.size} values for N={n}, K={k}, M={m}")
    fp = _np(msg.future_proprio, np.float32)
    fp = fp.reshape(n, k, -1) if n and k and fp.size and fp.size % (n * k) == 0 else np.zeros((n, k, 0), np.float32)
    return Decision(client_id=msg.client_id, request_id=int(msg.request_id), stamp=stamp_to_sec(msg.header.stamp),
                    ok=bool(msg.ok), chosen=int(msg.chosen), error=msg.error, scores=scores,
                    values=values.reshape(n, k, m), future_proprio=fp,
                    future_state_steps=list(msg.future_state_steps), value_steps=list(msg.value_steps),
                    aggregation=msg.aggregation, score_mode=msg.score_mode, planning_time=float(msg.planning_time),
                    queue_time=float(msg.queue_time), planner_id=msg.planner_id)


def decision_from_result(req: PlanRequest, result, planner_id: str = "", planning_time: float = 0.0,
                         queue_time: float = 0.0) -> Decision:
    """A core :class:`~cosmos_policy_ros.core.planner.PlanResult` answering ``req`` -> Decision."""
    cfg = result.config
    return Decision(client_id=req.client_id, request_id=req.request_id, stamp=req.stamp, ok=True,
                    chosen=int(result.chosen), scores=np.asarray(result.scores, np.float32),
                    values=np.asarray(result.values, np.float32), future_proprio=np.asarray(result.future_proprio, np.float32),
                    future_state_steps=list(cfg.future_state_steps), value_steps=list(cfg.value_steps),
                    aggregation=cfg.aggregation, score_mode=cfg.score, planning_time=planning_time,
                    queue_time=queue_time, planner_id=planner_id)


def error_decision(req_client: str, req_id: int, stamp: float, error: str, planner_id: str = "",
                   queue_time: float = 0.0) -> Decision:
    """A "no decision" answer (the client falls back to candidate 0 at once instead of waiting)."""
    return Decision(client_id=req_client, request_id=int(req_id), stamp=stamp, ok=False, chosen=-1, error=error,
                    planner_id=planner_id, queue_time=queue_time)


def check_decision(d: Optional[Decision], num_candidates: int) -> Optional[str]:
    """Why ``d`` cannot be used (None when it can): missing, planner error, or an index out of range."""
    if d is None:
        return "no decision"
    if not d.ok:
        return f"planner error: {d.error or 'unspecified'}"
    if not 0 <= d.chosen < num_candidates:
        return f"planner chose candidate {d.chosen}, expected 0..{num_candidates - 1}"
    return None


# ================================================================================================
# the backend wrapper
# ================================================================================================
@dataclass
class ClientConfig:
    """PlanningBackend settings (see CLIENT_PARAMS for their meaning)."""

    num_candidates: int = 8
    deadline: float = 15.0
    candidates_topic: str = DEFAULT_CANDIDATES_TOPIC
    decision_topic: str = DEFAULT_DECISION_TOPIC
    image_size: int = 0
    require_subscriber: bool = True
    diagnostics_period: float = 1.0

    def __post_init__(self):
        if int(self.num_candidates) != self.num_candidates or self.num_candidates < 1:
            raise ValueError(f"planning_num_candidates: expected an integer >= 1, got {self.num_candidates!r}")
        if not (self.deadline > 0 and math.isfinite(self.deadline)):
            raise ValueError(f"planning_deadline: expected a finite number of seconds > 0, got {self.deadline!r}")
        if self.image_size < 0:
            raise ValueError(f"planning_image_size: expected >= 0, got {self.image_size}")
        if not self.candidates_topic or not self.decision_topic:
            raise ValueError("planning topics: expected non-empty names")
        self.num_candidates = int(self.num_candidates)

    @classmethod
    def from_params(cls, p: Mapping[str, object]) -> "ClientConfig":
        """From the values of CLIENT_PARAMS (as :func:`declare` returns them)."""
        return cls(num_candidates=int(p["planning_num_candidates"]), deadline=float(p["planning_deadline"]),
                   candidates_topic=str(p["planning_candidates_topic"]), decision_topic=str(p["planning_decision_topic"]),
                   image_size=int(p["planning_image_size"]), require_subscriber=bool(p["planning_require_subscriber"]))


class PlanningBackend(PolicyWrapper):
    """PolicyBackend that sends N candidates to the planner node and returns its choice (see module docstring).

    base: the wrapped backend; node: the rclpy node to publish / subscribe on (the policy node);
    config: :class:`ClientConfig`; window: a :class:`~cosmos_policy_ros.core.plan_window.PlanWindow` (only the
    decisions it covers go to the planner; the others run the base policy's chunk, no request, no wait), counted
    from the episode start :meth:`start_episode` reports (the policy node: each episode START event).
    Candidate images are preprocessed to the model input size here (``image_size``, or the base backend's
    ``image`` config), so a request carries ~450 KB at 224 px.
    """

    def __init__(self, base, node, config: Optional[ClientConfig] = None, publish_diagnostics: bool = True,
                 window=None):
        from cosmos_policy_ros.msg import PlanCandidates, PlanDecision
        from rclpy.qos import QoSProfile

        self.base = base
        self.node = node
        self.config = config or ClientConfig()
        self.gate = PlanGate(window)  # the episode start and the decisions the window skipped
        self.horizon, self.action_dim, self.period = base.horizon, base.action_dim, base.period
        self.policy_id = base.policy_id
        self.client_id = f"{node.get_fully_qualified_name()}#{uuid.uuid4().hex[:8]}"
        self._image_cfg = self._image_config()
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._pending: Optional[int] = None
        self._decision: Optional[Decision] = None
        self._request_id = 0
        # counters (read by diagnostics; written by the inference thread and the decision callback)
        self.requests = 0
        self.decisions_used = 0
        self.fallbacks: Dict[str, int] = {"timeout": 0, "planner_error": 0, "no_planner": 0, "bad_candidates": 0}
        self.late_decisions = 0
        self.last_fallback_reason = ""
        self.last_chosen = -1
        self.last_wait = float("nan")
        self.last_decision: Optional[Decision] = None
        self.last_fell_back = False
        qos = QoSProfile(depth=2)
        self._pub = node.create_publisher(PlanCandidates, self.config.candidates_topic, qos)
        self._sub = node.create_subscription(PlanDecision, self.config.decision_topic, self._on_decision, QoSProfile(depth=10))
        self._diag_pub = None
        if publish_diagnostics:
            from diagnostic_msgs.msg import DiagnosticArray
            self._diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
            node.create_timer(self.config.diagnostics_period, self._publish_diagnostics)

    def _image_config(self):
        from ..core.images import ImageConfig

        if self.config.image_size > 0:
            return ImageConfig(size=self.config.image_size)
        return getattr(self.base, "image", None)  # None: send raw frames, the planner preprocesses them

    # its infer/infer_batch take no ``cancel``: the planner round trip has its own deadline (and __getattr__
    # below would otherwise report the wrapped policy's support)
    supports_cancel = False

    def __getattr__(self, name):
        # anything else (default_seed, image, set_fault of a test double, ...) is the base backend's
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    # ---- PolicyBackend ------------------------------------------------------------------------------
    @property
    def instructions(self) -> List[str]:
        return list(getattr(self.base, "instructions", []) or [])
    def infer_batch(self, obs: Observation, seeds: Sequence[int], prefix=None) -> List[PolicyOutput]:
        """Plain batched sampling (no planning), delegated to the base backend."""
        return self.base.infer_batch(obs, seeds, **({"prefix": prefix} if prefix is not None else {}))

    def infer(self, obs: Observation, seed: Optional[int] = None, prefix=None) -> PolicyOutput:
        """N candidates -> planner decision (or candidate 0 on timeout / error / no planner). prefix: real-time
        chunking (core.rtc.ChunkPrefix): every candidate is inpainted toward the same running chunk, so whichever
        the planner picks keeps the actions that execute during inference."""
        n = self.config.num_candidates
        base_seed = int(seed) if seed is not None else int(getattr(self.base, "default_seed", DEFAULT_SEED))
        if self.gate.skips(obs.stamp):  # the base policy's own chunk, exactly as without planning
            return self.base.infer(obs, seed=base_seed, **({"prefix": prefix} if prefix is not None else {}))
        seeds = [base_seed + i for i in range(n)]
        outs = self.infer_batch(obs, seeds, prefix=prefix)
        if n == 1:
            return outs[0]
        t0 = time.monotonic()
        actions = np.stack([np.asarray(o.actions, dtype=np.float32) for o in outs])  # (N, H, A)
        if not np.all(np.isfinite(actions)):
            return self._fallback(outs, "bad_candidates", "non-finite actions among the candidates", t0)
        if self.config.require_subscriber and self._pub.get_subscription_count() == 0:
            return self._fallback(outs, "no_planner", f"no planner subscribed to {self.config.candidates_topic}", t0)
        if self._image_cfg is not None:
            from ..core.planner import model_input_images
            images = model_input_images(obs.images, self._image_cfg, list(obs.images))
        else:
            images = dict(obs.images)
        with self._lock:
            self._request_id += 1
            rid = self._request_id
            self._pending = rid
            self._decision = None
            self._event.clear()
        now_ros = self.node.get_clock().now().nanoseconds * 1e-9
        req = PlanRequest(client_id=self.client_id, request_id=rid, stamp=obs.stamp,
                          deadline=now_ros + self.config.deadline, instruction=obs.instruction, images=images,
                          images_preprocessed=self._image_cfg is not None, proprio=np.asarray(obs.proprio),
                          actions=actions, seeds=seeds, policy_values=np.array([o.value for o in outs], np.float32),
                          policy_id=self.policy_id)
        self._pub.publish(request_to_msg(req))
        self.requests += 1
        remaining = self.config.deadline - (time.monotonic() - t0)
        got = self._event.wait(max(0.0, remaining))
        with self._lock:
            decision = self._decision if got else None
            self._pending = None
        if decision is None:
            return self._fallback(outs, "timeout", f"no decision within {self.config.deadline:.3g} s "
                                                   f"(request {rid})", t0)
        problem = check_decision(decision, n)
        self.last_decision = decision
        if problem:
            return self._fallback(outs, "planner_error", problem, t0)
        out = outs[decision.chosen]
        self.decisions_used += 1
        self.last_chosen = decision.chosen
        self.last_fell_back = False
        self.last_wait = time.monotonic() - t0
        out.timings = dict(out.timings)
        out.timings["planning_wait"] = self.last_wait
        out.timings["planning"] = decision.planning_time
        return out

    def start_episode(self, stamp: float) -> None:
        """An episode began at ``stamp`` (ROS time, the observations' clock): the planning window counts from here."""
        self.gate.start_episode(stamp)

    def _fallback(self, outs: List[PolicyOutput], kind: str, reason: str, t0: float) -> PolicyOutput:
        self.fallbacks[kind] += 1
        self.last_fallback_reason = reason
        self.last_chosen = 0
        self.last_fell_back = True
        self.last_wait = time.monotonic() - t0
        self.node.get_logger().warning(f"planning fallback to candidate 0: {reason}", throttle_duration_sec=5.0)
        out = outs[0]
        out.timings = dict(out.timings)
        out.timings["planning_wait"] = self.last_wait
        return out

    def _on_decision(self, msg) -> None:
        if msg.client_id != self.client_id:
            return  # another client's answer
        try:
            d = msg_to_decision(msg)
        except ValueError as exc:
            d = error_decision(msg.client_id, msg.request_id, 0.0, f"malformed decision: {exc}")
        with self._lock:
            if self._pending is not None and d.request_id == self._pending:
                self._decision = d
                self._event.set()
                return
        self.late_decisions += 1

    # ---- diagnostics --------------------------------------------------------------------------------
    def diagnostic_values(self) -> Dict[str, object]:
        """Counters for diagnostics: requests, decisions used, fallbacks per cause, last reason / wait."""
        values: Dict[str, object] = {
            "planning_candidates": self.config.num_candidates, "planning_deadline_s": self.config.deadline,
            "planning_requests": self.requests, "planning_decisions_used": self.decisions_used,
            "planning_late_decisions": self.late_decisions, "planning_last_chosen": self.last_chosen,
            "planning_last_wait_s": self.last_wait, "planning_last_fallback_reason": self.last_fallback_reason or "none"}
        for k, v in self.fallbacks.items():
            values[f"planning_fallbacks_{k}"] = v
        gate = self.gate
        if gate.window is not None:
            values["planning_window_s"] = f"[{gate.window.start:g}, {gate.window.end:g})"
            values["planning_skipped"] = gate.skipped
            values["planning_last_skip_reason"] = gate.last_skip_reason or "none"
        return values

    def diagnostic_level(self):
        """(level, message): WARN while the last query fell back to candidate 0."""
        from . import diagnostics as dg

        if self.last_fell_back:
            return dg.WARN, f"planning fell back to candidate 0: {self.last_fallback_reason}"
        if self.gate.window is not None and self.gate.episode_start is None and self.gate.skipped:
            return dg.WARN, "planning window set but no episode start heard: every decision runs the base chunk"
        if self.decisions_used == 0:
            return dg.OK, "no planning decision yet"
        return dg.OK, f"planner chose candidate {self.last_chosen}"

    def _publish_diagnostics(self) -> None:
        from . import diagnostics as dg

        level, message = self.diagnostic_level()
        st = dg.make_status("cosmos_policy_ros: planning client", level, message, self.diagnostic_values(), "policy")
        self._diag_pub.publish(dg.make_array(self.node.get_clock().now().to_msg(), [st]))


def declare_client_params(node) -> Dict[str, object]:
    """Declare CLIENT_PARAMS on ``node`` (call in its constructor); returns their values."""
    return declare(node, CLIENT_PARAMS)


def wrap_backend(backend, node, params: Mapping[str, object]):
    """The policy node's hook: ``backend`` wrapped in :class:`PlanningBackend` when ``planning`` is true."""
    if not params.get("planning"):
        return backend
    return PlanningBackend(backend, node, ClientConfig.from_params(params))
