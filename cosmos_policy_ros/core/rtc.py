"""Real-time chunking (RTC) at run time: which actions of the next chunk are frozen, and toward what.

While the policy computes the next chunk the robot keeps executing the running one. The commander splices by
observation time: a chunk observed at tick ``b`` that arrives at tick ``b + k`` starts at its action ``k``, and
the ticks ``b .. b + k - 1`` have executed the running chunk's actions. RTC makes the new chunk agree with
that: its first ``d`` actions (d >= k: the ticks spent in inference) are the running chunk's actions for the
same ticks (frozen), and the rest of the overlap is pulled softly toward the running chunk
(:func:`~cosmos_policy_ros.core.sampler.prefix_weights`). The splice then lands inside the frozen prefix, and
the command at the switch is the one the running chunk would have sent: no jump, no change of plan mid-motion.

Nothing here reads a clock or imports ROS: the policy node and the ROS-free rollouts call these functions with
times they measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .sampler import INPAINT_METHODS, WEIGHT_SCHEDULES, prefix_weights


@dataclass
class RtcConfig:
    """RTC settings (launch ``rtc:=off|replace|guided``; docs/runtime.md).

    method: ``off`` (no inpainting), ``replace`` (x0-space soft replacement, no extra network cost) or ``guided``
    (exact guidance through the network: one backward pass per network call).
    schedule: soft weights past the frozen prefix (``exp`` as the RTC paper, ``linear``, ``ones``, ``zeros``).
    beta: guidance cap (the paper's 5).
    delay_margin: ticks added to the measured delay (the frozen prefix must cover the real inference delay;
    freezing longer is safe, freezing shorter lets the switch land in the soft part).
    execution_horizon: ticks from one observation to the next in streaming with RTC, at most (the policy node observes
    earlier when inference is too slow for this pace, ``ReplanSchedule.max_period``; 0: the node's just-in-time schedule).
    """

    method: str = "off"
    schedule: str = "exp"
    beta: float = 5.0
    delay_margin: int = 2
    execution_horizon: int = 0

    def __post_init__(self):
        if self.method not in INPAINT_METHODS:
            raise ValueError(f"rtc: expected one of {INPAINT_METHODS}, got {self.method!r}")
        if self.schedule not in WEIGHT_SCHEDULES:
            raise ValueError(f"rtc_schedule: expected one of {WEIGHT_SCHEDULES}, got {self.schedule!r}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"rtc_beta: expected a positive number, got {self.beta}")
        for name in ("delay_margin", "execution_horizon"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise ValueError(f"rtc_{name}: expected an integer >= 0, got {v!r}")
            setattr(self, name, int(v))

    @property
    def enabled(self) -> bool:
        return self.method != "off"


@dataclass
class ChunkPrefix:
    """What a new chunk must agree with: the running chunk aligned to the new observation's tick.

    target: (n, A) robot-unit actions, ``target[i]`` = the running chunk's action for tick ``obs + i``.
    frozen: the first ``frozen`` actions are the target exactly (they execute during inference).
    """

    target: np.ndarray
    frozen: int
    method: str = "replace"
    schedule: str = "exp"
    beta: float = 5.0

    def __post_init__(self):
        t = np.asarray(self.target, dtype=np.float64)
        if t.ndim != 2 or t.shape[0] < 1 or not np.all(np.isfinite(t)):
            raise ValueError(f"chunk prefix: expected a finite (n >= 1, action_dim) target, got shape {t.shape}")
        if int(self.frozen) != self.frozen or not 0 <= self.frozen <= t.shape[0]:
            raise ValueError(f"chunk prefix: expected 0 <= frozen <= {t.shape[0]}, got {self.frozen}")
        if self.method not in INPAINT_METHODS[1:]:
            raise ValueError(f"chunk prefix method: expected one of {INPAINT_METHODS[1:]}, got {self.method!r}")
        self.target = t
        self.frozen = int(self.frozen)

    def step_weights(self, horizon: int) -> np.ndarray:
        """(horizon,) per-step weights: 1 on the frozen prefix, the ramp over the rest of the target, 0 past it."""
        n = min(self.target.shape[0], int(horizon))
        return prefix_weights(horizon, min(self.frozen, n), n, self.schedule)

    def padded_target(self, horizon: int) -> np.ndarray:
        """(horizon, A) target; steps past the running chunk repeat its last action (with weight 0: never zeros,
        which would decode to the dataset's mean)."""
        t = self.target[:horizon]
        if t.shape[0] < horizon:
            t = np.concatenate([t, np.repeat(t[-1:], horizon - t.shape[0], axis=0)])
        return t


def build_prefix(running: np.ndarray, running_stamp: float, obs_stamp: float, period: float, delay_ticks: int,
                 cfg: RtcConfig) -> Optional[ChunkPrefix]:
    """The prefix of a chunk observed at ``obs_stamp`` while ``running`` (observed at ``running_stamp``, every
    action the commander runs) executes; None when RTC is off or nothing of the running chunk is left.

    delay_ticks: ticks the new chunk is expected to take to arrive (measured); the frozen prefix is
    ``delay_ticks + cfg.delay_margin``, clamped to what the running chunk really has left to execute (past its
    end the robot holds: nothing is frozen there).
    """
    if not cfg.enabled:
        return None
    running = np.asarray(running, dtype=np.float64)
    offset = int(math.floor((obs_stamp - running_stamp) / period + 0.5))
    if offset < 0 or offset >= running.shape[0]:
        return None
    target = running[offset:]
    frozen = min(max(0, int(delay_ticks)) + cfg.delay_margin, target.shape[0])
    return ChunkPrefix(target, frozen, cfg.method, cfg.schedule, cfg.beta)


def blend_prefix(actions: np.ndarray, prefix: Optional[ChunkPrefix]) -> np.ndarray:
    """(H, A) robot-unit actions with the prefix applied in action space: frozen steps are the target exactly,
    the ramp blends ``W * target + (1 - W) * actions``. The policy enforces the frozen steps with it after
    decoding (smoothing or clipping of the decoded chunk must not move an action that executes anyway); the
    latency test double uses it as its whole inpainting."""
    a = np.array(actions, dtype=np.float64)
    if prefix is None:
        return a
    h = a.shape[0]
    w = prefix.step_weights(h)[:, None]
    t = prefix.padded_target(h)
    return w * t + (1.0 - w) * a


class DelayEstimator:
    """Inference delay in ticks for the frozen prefix: the largest of the last ``window`` measured delays
    (observation to publication), the first (warm-up) measurement excluded, so one cold start does not freeze
    long prefixes for the rest of the run. Until a second measurement the warm-up stands in (or ``guess`` ticks
    when larger): freezing too long only keeps more of the running chunk (:func:`build_prefix` clamps it to what
    that chunk still executes), freezing too short would let the switch land past the frozen actions."""

    def __init__(self, period: float, window: int = 3, guess: int = 0):
        if not period > 0 or window < 1 or guess < 0:
            raise ValueError(f"expected period > 0, window >= 1, guess >= 0, got {period}, {window}, {guess}")
        self.period = float(period)
        self.window = int(window)
        self.guess = int(guess)
        self._warmup: Optional[float] = None
        self._recent: list = []

    def record(self, latency_s: float) -> None:
        if self._warmup is None:
            self._warmup = float(latency_s)
            return
        self._recent.append(float(latency_s))
        del self._recent[:-self.window]

    @property
    def ticks(self) -> int:
        if not self._recent:
            warm = 0 if self._warmup is None else int(math.ceil(self._warmup / self.period - 1e-9))
            return max(self.guess, warm)
        return int(math.ceil(max(self._recent) / self.period - 1e-9))


@dataclass
class _Sent:
    stamp: float
    actions: np.ndarray
    published: float
    base: Optional[float] = None  # time of action 0 as the commander really runs it (from its trace)


class RunningChunk:
    """Which chunk the commander is executing, and on which ticks: the policy node's own published chunks plus
    the commander's per-tick trace (chunk id, index, tick time, held).

    The commander splices by observation time, so a chunk normally runs action ``i`` at ``stamp + i * period``;
    after a hold (cold start) it re-bases it, and its trace then tells the real timing (``tick_time - index *
    period``). A chunk the commander never took (refused, or still in flight while it runs an older one of
    ours) is recognised from the trace, and while it holds nothing runs: no prefix (the robot stands still).
    Without any trace (``publish_trace`` off) the last published chunk is assumed to run as stamped.
    Thread-safe: the ROS callbacks write, the inference worker reads.
    """

    def __init__(self, period: float, keep: int = 4, refusal_grace: float = 0.2):
        import threading

        self.period = float(period)
        self.keep = int(keep)
        self.refusal_grace = float(refusal_grace)
        self._sent: "dict[int, _Sent]" = {}
        self._last_id: Optional[int] = None
        self._trace: Optional[tuple] = None  # (chunk_id, index, tick_time, held)
        self._lock = threading.Lock()

    def published(self, chunk_id: int, stamp: float, actions: np.ndarray, now: float) -> None:
        """Our chunk ``chunk_id`` (observed at ``stamp``; ``actions`` exactly as sent) went out at ``now``."""
        with self._lock:
            self._sent[int(chunk_id)] = _Sent(float(stamp), np.array(actions, dtype=np.float64), float(now))
            self._last_id = int(chunk_id)
            for k in sorted(self._sent)[:-self.keep]:
                del self._sent[k]

    def on_trace(self, chunk_id: int, index: int, tick_time: float, held: bool) -> None:
        """One commander trace row."""
        with self._lock:
            self._trace = (int(chunk_id), int(index), float(tick_time), bool(held))
            s = self._sent.get(int(chunk_id))
            if s is not None and not held and index >= 0:
                s.base = float(tick_time) - index * self.period

    def chunk_end(self, chunk_id: int) -> Optional[float]:
        """Commander-clock time at which our chunk ``chunk_id`` runs out, once its trace showed it running."""
        with self._lock:
            s = self._sent.get(int(chunk_id))
            if s is None or s.base is None:
                return None
            return s.base + len(s.actions) * self.period

    def started(self, chunk_id: int) -> Optional[float]:
        """Commander-clock time at which our chunk ``chunk_id`` runs (or ran) action 0, once its trace showed it."""
        with self._lock:
            s = self._sent.get(int(chunk_id))
            return None if s is None else s.base

    @property
    def latest_tick_time(self) -> Optional[float]:
        """Nominal time of the newest commander tick heard from its trace (commander clock), or None."""
        with self._lock:
            return None if self._trace is None else self._trace[2]

    def reset(self) -> None:
        """Forget every chunk (episode start: the commander refuses older chunks and holds)."""
        with self._lock:
            self._sent.clear()
            self._last_id = None
            self._trace = None

    def running(self, now: float) -> Optional[Tuple[np.ndarray, float]]:
        """(actions, time of action 0) of the chunk whose actions execute from now on, or None."""
        with self._lock:
            if self._last_id is None:
                return None
            last = self._sent[self._last_id]
            if self._trace is None:
                return last.actions, last.stamp
            cid, _, _, held = self._trace
            if held:
                return None
            if cid == self._last_id:
                return last.actions, (last.base if last.base is not None else last.stamp)
            old = self._sent.get(cid)
            if old is None:
                return None  # not one of ours (another publisher's chunk)
            if now - last.published > self.refusal_grace:  # the commander kept the older one: ours was refused
                return old.actions, (old.base if old.base is not None else old.stamp)
            return last.actions, last.stamp  # in flight: the commander splices it in by its observation time
