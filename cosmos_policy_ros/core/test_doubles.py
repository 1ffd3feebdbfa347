"""Named test doubles of the policy backend, for timing tests only (the real model needs a GPU for speed).

:class:`LatencyPolicyTestDouble` implements :class:`~cosmos_policy_ros.core.types.PolicyBackend`: it waits a
configurable latency and returns a deterministic chunk whose actions *encode the time they were planned
for*, so a test watching the commands on the wire can tell exactly which planned action was sent at
each tick (no replay, no skip). Faults (exceptions, NaN actions, slow inference) can be injected at run time.

Encoding: action ``i`` of a chunk observed at ``stamp`` is planned for "plan step"
``n = stamp / period + i``. Two arm joints carry a phase ``theta = 2 pi n / cycle`` with a small amplitude
(``left_waist = A sin theta``, ``left_forearm_roll = A cos theta``), so consecutive actions differ by a tiny,
safety-limit-friendly step and :func:`decode_plan_step` recovers ``n`` modulo ``cycle``. Every other joint
holds a constant neutral value and the grippers sit half open.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .robot import ACTION_DIM, JOINT_NAMES
from .types import InferenceCancelled, Observation, PolicyOutput

WAIST = JOINT_NAMES.index("left_waist")
ROLL = JOINT_NAMES.index("left_forearm_roll")
SHOULDER = JOINT_NAMES.index("left_shoulder")
DEFAULT_AMPLITUDE = 0.05  # rad
DEFAULT_CYCLE = 1000  # plan steps per phase turn (40 s at 25 Hz)
#: Offsets of the joints the phase leaves alone, per ``pose`` (both arms): "start" is ALOHA's start pose
#: (shoulder -0.96, elbow 1.16, wrist angle -0.3 rad); waist and forearm roll stay 0 so decoding still works.
POSES = {"zero": np.zeros(ACTION_DIM),
         "start": np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.0] * 2)}


def encode_plan_steps(steps: np.ndarray, amplitude: float = DEFAULT_AMPLITUDE, cycle: int = DEFAULT_CYCLE) -> np.ndarray:
    """(N,) plan steps -> (N, 14) actions carrying them (see module docstring)."""
    steps = np.asarray(steps, dtype=np.float64)
    theta = 2.0 * math.pi * np.mod(steps, cycle) / cycle
    out = np.zeros((steps.shape[0], ACTION_DIM), dtype=np.float64)
    out[:, WAIST] = amplitude * np.sin(theta)
    out[:, ROLL] = amplitude * np.cos(theta)
    out[:, 6] = 0.5
    out[:, 13] = 0.5
    return out


def decode_plan_step(action: Sequence[float], cycle: int = DEFAULT_CYCLE) -> float:
    """One action (or arm command starting with left_waist) -> its plan step modulo ``cycle`` (float)."""
    a = np.asarray(action, dtype=np.float64)
    theta = math.atan2(a[WAIST], a[ROLL])
    return (theta / (2.0 * math.pi) * cycle) % cycle


def plan_step_delta(a: float, b: float, cycle: int = DEFAULT_CYCLE) -> float:
    """Signed difference b - a of two decoded plan steps, unwrapped into (-cycle/2, cycle/2]."""
    d = (b - a) % cycle
    return d - cycle if d > cycle / 2 else d


class LatencyPolicyTestDouble:
    """PolicyBackend test double with a configurable inference latency and injectable faults.

    latency: seconds each :meth:`infer` call takes (sleeping, or with ``busy`` burning CPU like a real model).
    first_latency: latency of the first call (a warm-up), defaults to ``latency``.
    Faults (:meth:`set_fault`): "exception" (every call raises), "nan" (actions contain NaN),
    "latency=<s>" (change the latency), "" (clear).
    """

    def __init__(self, latency: float = 0.8, horizon: int = 50, period: float = 0.04, action_dim: int = ACTION_DIM,
                 first_latency: Optional[float] = None, policy_id: str = "latency-test-double",
                 instructions: Sequence[str] = (), future_image_size: int = 32,
                 amplitude: float = DEFAULT_AMPLITUDE, cycle: int = DEFAULT_CYCLE, busy: bool = False,
                 mode_shift: float = 0.0, pose: str = "zero"):
        if latency < 0 or (first_latency is not None and first_latency < 0):
            raise ValueError(f"latency: expected >= 0 seconds, got {latency} / {first_latency}")
        if horizon < 1 or period <= 0:
            raise ValueError(f"expected horizon >= 1 and period > 0, got {horizon}, {period}")
        if action_dim != ACTION_DIM:
            raise ValueError(f"action_dim: expected {ACTION_DIM}, got {action_dim}")
        self.latency = float(latency)
        self.first_latency = float(latency if first_latency is None else first_latency)
        self.horizon = int(horizon)
        self.period = float(period)
        self.action_dim = int(action_dim)
        self.policy_id = policy_id
        self._instructions = list(instructions)
        self.future_image_size = int(future_image_size)
        self.amplitude = float(amplitude)
        self.cycle = int(cycle)
        self.busy = bool(busy)  # burn CPU during the latency (like a CPU-bound model) instead of sleeping
        # each chunk picks "another mode": its shoulder joints sit mode_shift rad away from the previous chunk's
        # (a switch without real-time chunking jumps by that much; with it the frozen prefix hides it)
        self.mode_shift = float(mode_shift)
        # the joints the phase leaves alone: "zero" (arms stretched out: in the simulator the two grippers then
        # touch in the middle, and that contact makes the arms' response depend on timing) or "start" (ALOHA's
        # start pose: shoulder, elbow and wrist angle folded, arms apart)
        if pose not in POSES:
            raise ValueError(f"pose: expected one of {sorted(POSES)}, got {pose!r}")
        self.pose = pose
        self.fault = ""
        self.calls = 0
        self.cancelled = 0
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: str) -> "LatencyPolicyTestDouble":
        """Build from ``test-double:latency=0.8,horizon=50,first_latency=1.0`` (keys optional)."""
        body = spec.split(":", 1)[1] if ":" in spec else ""
        kwargs: Dict[str, object] = {}
        for part in filter(None, (p.strip() for p in body.split(","))):
            key, _, value = part.partition("=")
            key = key.strip()
            if key in ("latency", "first_latency", "period", "amplitude", "mode_shift"):
                kwargs[key] = float(value)
            elif key in ("horizon", "cycle", "future_image_size"):
                kwargs[key] = int(value)
            elif key == "busy":
                kwargs[key] = value.strip().lower() in ("1", "true", "yes")
            elif key == "policy_id":
                kwargs[key] = value
            elif key == "pose":
                kwargs[key] = value.strip()
            else:
                raise ValueError(f"test double spec {spec!r}: unknown key {key!r}; expected latency, first_latency, "
                                 "period, amplitude, horizon, cycle, future_image_size, policy_id, busy, mode_shift, pose")
        return cls(**kwargs)

    @property
    def instructions(self) -> List[str]:
        """Known instructions; empty means any instruction is accepted."""
        return list(self._instructions)

    def set_fault(self, fault: str) -> None:
        """Inject a fault for the next calls: "", "exception", "nan" or "latency=<seconds>"."""
        fault = (fault or "").strip()
        if fault.startswith("latency="):
            self.latency = float(fault.split("=", 1)[1])
            fault = ""
        elif fault not in ("", "exception", "nan"):
            raise ValueError(f"unknown fault {fault!r}; expected '', 'exception', 'nan' or 'latency=<s>'")
        with self._lock:
            self.fault = fault

    def chunk_for(self, stamp: float) -> np.ndarray:
        """(horizon, 14) actions the double plans for an observation taken at ``stamp``."""
        steps = stamp / self.period + np.arange(self.horizon)
        return encode_plan_steps(steps, self.amplitude, self.cycle) + POSES[self.pose]

    def _wait(self, seconds: float, cancel: Optional[Callable[[], bool]] = None) -> None:
        deadline = time.perf_counter() + seconds
        m = np.random.default_rng(0).standard_normal((192, 192)) if self.busy else None
        while time.perf_counter() < deadline:
            if cancel is not None and cancel():  # checked as often as a model's network calls would be
                self.cancelled += 1
                raise InferenceCancelled("LatencyPolicyTestDouble: inference cancelled")
            if m is None:
                time.sleep(min(0.01, max(0.0, deadline - time.perf_counter())))
            else:
                m = np.tanh(m @ m.T / 192.0)  # keeps the cores busy, as a CPU-bound model would

    supports_cancel = True

    def infer(self, obs: Observation, seed: Optional[int] = None,
              cancel: Optional[Callable[[], bool]] = None, prefix=None) -> PolicyOutput:
        """Sleep (or burn CPU) for the latency, then return the deterministic chunk for ``obs.stamp``;
        ``cancel``: polled while waiting, True -> :class:`InferenceCancelled` (as :class:`CosmosPolicy`).
        ``prefix`` (real-time chunking, :class:`~cosmos_policy_ros.core.rtc.ChunkPrefix`): applied in action space
        (:func:`~cosmos_policy_ros.core.rtc.blend_prefix`: frozen actions exact, the ramp blended), the double's
        stand-in for the sampler's inpainting."""
        t_start = time.perf_counter()
        with self._lock:
            first = self.calls == 0
            self.calls += 1
            fault = self.fault
        self._wait(self.first_latency if first else self.latency, cancel)
        if fault == "exception":
            raise RuntimeError("LatencyPolicyTestDouble: injected inference failure")
        actions = self.chunk_for(obs.stamp)
        if self.mode_shift:
            mode = 1 if (self.calls % 2) else -1  # alternate between two modes
            actions[:, SHOULDER] += mode * self.mode_shift / 2
            actions[:, SHOULDER + 7] += mode * self.mode_shift / 2
        if prefix is not None:
            from .rtc import blend_prefix

            actions = blend_prefix(actions, prefix)
        actions = actions.astype(np.float32)
        if fault == "nan":
            actions[:, 0] = np.nan
        s = self.future_image_size
        images = {}
        for k, (name, img) in enumerate(obs.images.items()):
            # A small deterministic "prediction": a flat frame whose colour encodes the camera index.
            images[name] = np.full((s, s, 3), (40 * (k + 1)) % 256, dtype=np.uint8)
        total = time.perf_counter() - t_start
        return PolicyOutput(actions=actions, future_images=images, future_proprio=actions[-1].copy(),
                            value=0.5, timings={"total": total}, seed=0 if seed is None else int(seed))

    def infer_batch(self, obs: Observation, seeds: Sequence[int],
                    cancel: Optional[Callable[[], bool]] = None, prefix=None) -> List[PolicyOutput]:
        """One :meth:`infer` per seed (same latency once, as a batched model would take)."""
        first = self.infer(obs, seeds[0] if seeds else None, cancel=cancel, prefix=prefix)
        return [first] + [PolicyOutput(actions=first.actions.copy(), future_images=dict(first.future_images),
                                       future_proprio=first.future_proprio, value=first.value,
                                       timings=dict(first.timings), seed=int(s)) for s in seeds[1:]]
