"""Action-chunk splicing for a fixed-rate commander: which planned action to send at each tick.

Time model (all times in seconds, passed in by the caller; nothing here reads a clock):

* The commander ticks on a grid ``t0 + k * period``; ``k`` is the integer *tick number* (:class:`TickClock`).
* A chunk planned from an observation taken at ``stamp`` holds ``horizon`` actions; action ``i`` is the one
  planned for time ``stamp + i * period``. On the tick grid that is tick ``base + i`` with
  ``base = round((stamp - t0) / period)`` (integer arithmetic from there on, so consecutive ticks use
  consecutive indices: no action is replayed or skipped).
* A new chunk replaces the running one from the next tick on (optionally cross-faded over ``blend_ticks``).
* Cold start / restart: when the commander is holding (no chunk running), the robot did not move while it
  waited, so the chunk is re-based to start at its first action on the next tick (skipping ahead by the
  latency there would command a jump). If the robot was still moving when the observation was taken and
  the hold began after it, the chunk starts at the action planned for the tick the hold began.
* When the running chunk ends before the next one arrives, the caller holds: chunks are never padded and
  never extrapolated. A chunk that arrives after its last planned tick is rejected.
* A chunk is checked whole on arrival (:func:`validate_chunk`) before any of its actions can run: action_dim,
  every value finite, period, stamp not in the future beyond a tolerance; then by :meth:`ChunkSplicer.add_chunk`:
  not older than its own horizon, counted from the tick the robot stopped moving (a robot that has held still
  since before the observation can still start it: inference slower than a chunk) and never from before the
  commander's first tick.
  Ordering (a chunk must be observed after the newest accepted one) restarts at an episode start or an
  e-stop reset (:meth:`ChunkSplicer.restart_order`), so no earlier stamp can keep blocking later chunks.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


_NEVER = -(10 ** 15)


@dataclass(frozen=True)
class Chunk:
    """One action chunk as received from the policy.

    actions: (horizon, action_dim) absolute targets in robot units; stamp: observation time (s).
    """

    chunk_id: int
    stamp: float
    period: float
    actions: np.ndarray
    policy_id: str = ""

    def __post_init__(self):
        a = np.asarray(self.actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"expected actions of shape (horizon>=1, action_dim>=1), got {a.shape}")
        if not (self.period > 0 and math.isfinite(self.period)):
            raise ValueError(f"expected a positive chunk period, got {self.period}")
        if not math.isfinite(self.stamp):
            raise ValueError(f"expected a finite chunk stamp, got {self.stamp}")
        object.__setattr__(self, "actions", a)

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])


@dataclass
class SpliceConfig:
    """Splicing settings.

    period: commander tick period (s); chunks must carry the same period (within ``period_tolerance``).
    blend_ticks: cross-fade from the old chunk to a new one over this many ticks (0 = switch at once).
    action_dim: expected values per action.
    """

    period: float = 0.04
    blend_ticks: int = 0
    action_dim: int = 14
    period_tolerance: float = 1e-4

    def __post_init__(self):
        if not (self.period > 0 and math.isfinite(self.period)):
            raise ValueError(f"period: expected a positive number of seconds, got {self.period}")
        if int(self.blend_ticks) != self.blend_ticks or self.blend_ticks < 0:
            raise ValueError(f"blend_ticks: expected an integer >= 0, got {self.blend_ticks}")
        if self.action_dim < 1:
            raise ValueError(f"action_dim: expected >= 1, got {self.action_dim}")
        self.blend_ticks = int(self.blend_ticks)


def validate_chunk(chunk: Chunk, config: SpliceConfig, now: float,
                   future_tolerance: float) -> Optional[Tuple[str, str]]:
    """Check a whole chunk on arrival; (reason, detail) when it must be rejected, else None.

    Reasons: "action_dim", "nonfinite" (any value of any action), "period", "future_stamp" (stamped more than
    ``future_tolerance`` s after ``now``). The detail names the values (first non-finite action and index, the
    offset of the stamp). The age check needs the hold state: :meth:`ChunkSplicer.add_chunk` ("expired").
    """
    if chunk.action_dim != config.action_dim:
        return "action_dim", f"{chunk.action_dim} values per action, expected {config.action_dim}"
    finite = np.isfinite(chunk.actions)
    if not finite.all():
        bad = np.argwhere(~finite)
        k, j = int(bad[0, 0]), int(bad[0, 1])
        return "nonfinite", (f"{len(bad)} non-finite value(s), the first at action {k} index {j} "
                             f"({chunk.actions[k, j]})")
    if abs(chunk.period - config.period) > config.period_tolerance:
        return "period", f"period {chunk.period:g} s, expected {config.period:g} s"
    ahead = chunk.stamp - now
    if ahead > future_tolerance:
        return "future_stamp", (f"stamped {ahead:.3f} s in the future (tolerance {future_tolerance:g} s; "
                                f"clock skew or a bad stamp)")
    return None


class TickClock:
    """Tick numbering for a periodic timer: tolerant to jitter, honest about missed ticks.

    The first call fixes ``t0``. Each later call is normally the next tick; a callback that comes so late
    that the wall clock already passed (most of) another period counts the skipped ticks as *missed*, so
    the tick number stays aligned with time (``t0 + k * period``).
    """

    def __init__(self, period: float, late_fraction: float = 0.95):
        if not period > 0:
            raise ValueError(f"period: expected > 0, got {period}")
        if not 0.5 <= late_fraction < 1.0:
            raise ValueError(f"late_fraction: expected in [0.5, 1), got {late_fraction}")
        self.period = float(period)
        self._slack = 1.0 - late_fraction
        self.t0: Optional[float] = None
        self.tick: Optional[int] = None
        self.missed_total = 0

    def advance(self, now: float) -> Tuple[int, int]:
        """Register a timer callback at time ``now``; return (tick number, ticks missed since the last call)."""
        if self.t0 is None:
            self.t0 = float(now)
            self.tick = 0
            return 0, 0
        k_wall = math.floor((now - self.t0) / self.period + self._slack)
        k = max(self.tick + 1, k_wall)
        missed = k - self.tick - 1
        self.tick = k
        self.missed_total += missed
        return k, missed

    def time_of(self, tick: int) -> float:
        """Nominal time of tick ``tick``."""
        if self.t0 is None:
            raise RuntimeError("TickClock not started")
        return self.t0 + tick * self.period

    def tick_of(self, t: float) -> int:
        """The tick whose nominal time is nearest to ``t`` (may be negative or in the future)."""
        if self.t0 is None:
            raise RuntimeError("TickClock not started")
        return int(math.floor((t - self.t0) / self.period + 0.5))


@dataclass
class Acceptance:
    """What happened to a chunk handed to :meth:`ChunkSplicer.add_chunk`.

    accepted: the chunk runs from ``first_tick`` at index ``start_index``.
    reason: "ok", "cold_start" or why it was rejected ("expired", "out_of_order", "period", "action_dim", and
        from :func:`validate_chunk` "nonfinite", "future_stamp").
    margin_ticks: ticks the previously running chunk still had left at ``next_tick`` (negative: it had
        already run out that many ticks ago; None when nothing was running).
    detail: for a rejection, the values behind the reason (a sentence for logs and diagnostics).
    """

    accepted: bool
    reason: str
    chunk_id: int
    first_tick: int = 0
    start_index: int = 0
    margin_ticks: Optional[int] = None
    detail: str = ""


@dataclass
class Planned:
    """The splicer's answer for one tick: the planned action, or None (caller holds) with a reason."""

    tick: int
    action: Optional[np.ndarray]
    chunk_id: int = -1
    index: int = -1
    blended: bool = False
    reason: str = "chunk"


@dataclass
class _Active:
    chunk: Chunk
    base: int  # tick at which action 0 is (or would have been) executed


class ChunkSplicer:
    """Keeps the running chunk and answers "which action at tick k" (see the module docstring).

    Pure: ticks are integers on the caller's :class:`TickClock`; chunk stamps are converted with the same
    clock's ``t0``. Thread-unsafe by design (the commander calls it from one timer).
    """

    def __init__(self, config: SpliceConfig):
        self.config = config
        self._active: Optional[_Active] = None
        self._previous: Optional[_Active] = None  # for blending
        self._switch_tick: Optional[int] = None
        # Tick the current hold began; "since forever" at start (the robot has not been commanded yet).
        self._hold_since: int = _NEVER
        self._last_stamp = -math.inf
        self.last_end_tick: Optional[int] = None

    @property
    def holding(self) -> bool:
        """True when no chunk is running (the caller holds its last safe command)."""
        return self._active is None

    @property
    def active_chunk_id(self) -> int:
        return self._active.chunk.chunk_id if self._active else -1

    def end_tick(self) -> Optional[int]:
        """First tick past the running chunk's last action, or None when holding."""
        if self._active is None:
            return None
        return self._active.base + self._active.chunk.horizon

    def add_chunk(self, chunk: Chunk, next_tick: int, clock: TickClock) -> Acceptance:
        """Splice ``chunk`` in, effective from tick ``next_tick`` (the next tick the caller will run)."""
        cfg = self.config
        if abs(chunk.period - cfg.period) > cfg.period_tolerance:
            return Acceptance(False, "period", chunk.chunk_id,
                              detail=f"period {chunk.period:g} s, expected {cfg.period:g} s")
        if chunk.action_dim != cfg.action_dim:
            return Acceptance(False, "action_dim", chunk.chunk_id,
                              detail=f"{chunk.action_dim} values per action, expected {cfg.action_dim}")
        if chunk.stamp <= self._last_stamp:
            return Acceptance(False, "out_of_order", chunk.chunk_id,
                              detail=f"not observed after {self._last_stamp:.3f} (the newest accepted chunk, "
                                     f"or the start of a fault / episode / e-stop reset)")
        base = clock.tick_of(chunk.stamp)
        end = self.end_tick()
        margin = None if end is None else end - next_tick
        expired = (f"its {chunk.horizon} actions were planned for ticks {base}..{base + chunk.horizon - 1}, "
                   f"before the robot stopped moving (tick {self._hold_since}) or the next tick ({next_tick})")
        if self._active is None:
            # The robot stood still since `_hold_since`: start where the plan meets a standing robot.
            start_index = max(0, self._hold_since - base)
            if start_index >= chunk.horizon:
                return Acceptance(False, "expired", chunk.chunk_id, margin_ticks=margin, detail=expired)
            if base + chunk.horizon <= 0:  # a stale plan: every action before the commander's first tick
                return Acceptance(False, "expired", chunk.chunk_id, margin_ticks=margin,
                                  detail=f"its {chunk.horizon} actions were planned for ticks {base}.."
                                         f"{base + chunk.horizon - 1}, before the commander's first tick (0)")
            self._active = _Active(chunk, next_tick - start_index)
            self._previous = None
            self._switch_tick = None
            reason = "cold_start"
        else:
            start_index = next_tick - base
            if start_index >= chunk.horizon:
                return Acceptance(False, "expired", chunk.chunk_id, margin_ticks=margin, detail=expired)
            if start_index < 0:
                # Observation stamped in the future relative to the tick grid (clock skew): start at 0.
                base = next_tick
                start_index = 0
            self._previous = self._active if cfg.blend_ticks > 0 else None
            self._active = _Active(chunk, base)
            self._switch_tick = next_tick
            reason = "ok"
        self._last_stamp = chunk.stamp
        return Acceptance(True, reason, chunk.chunk_id, first_tick=next_tick, start_index=start_index,
                          margin_ticks=margin)

    def hold(self, tick: int) -> None:
        """Stop the running chunk (fault, e-stop): the robot holds from ``tick`` on until a new chunk."""
        if self._active is not None:
            self._hold_since = tick
        self._active = None
        self._previous = None
        self._switch_tick = None

    def reject_before(self, stamp: float) -> None:
        """Refuse chunks observed at or before ``stamp`` (planned from an observation a fault invalidated)."""
        self._last_stamp = max(self._last_stamp, stamp)

    def restart_order(self, stamp: float) -> None:
        """Accept exactly the chunks observed after ``stamp`` from now on (episode start, e-stop reset): unlike
        :meth:`reject_before`, this also forgets a newer stamp accepted earlier, so a chunk with a bad future
        stamp that slipped through cannot keep refusing correctly stamped chunks."""
        self._last_stamp = float(stamp)

    def action_at(self, tick: int) -> Planned:
        """The planned action for ``tick`` (call once per tick, in increasing order)."""
        if self._active is None:
            return Planned(tick, None, reason="no_chunk")
        act = self._active
        i = tick - act.base
        if i >= act.chunk.horizon:
            self.last_end_tick = act.base + act.chunk.horizon
            self.hold(self.last_end_tick)
            return Planned(tick, None, chunk_id=act.chunk.chunk_id, index=i, reason="chunk_ended")
        if i < 0:  # cannot happen after add_chunk's re-basing; keep it explicit rather than index from the end
            return Planned(tick, None, chunk_id=act.chunk.chunk_id, index=i, reason="not_started")
        action = act.chunk.actions[i]
        blended = False
        prev = self._previous
        if prev is not None and self._switch_tick is not None:
            j = tick - self._switch_tick  # 0 .. blend_ticks-1 while blending
            pi = tick - prev.base
            if 0 <= j < self.config.blend_ticks and 0 <= pi < prev.chunk.horizon:
                w = (j + 1) / (self.config.blend_ticks + 1)
                action = (1.0 - w) * prev.chunk.actions[pi] + w * action
                blended = True
            elif j >= self.config.blend_ticks:
                self._previous = None
        return Planned(tick, np.array(action, dtype=np.float64), chunk_id=act.chunk.chunk_id, index=i,
                       blended=blended, reason="blend" if blended else "chunk")


#: the streaming defaults of the launch files, the policy node and `make demo` (the graph benchmark's stream-rtc
#: row; ROS-free streaming rollouts use the same): real-time chunking method, weight schedule, execution horizon in
#: ticks (at most: :class:`ReplanSchedule` ``max_period``; docs/runtime.md, "Real-time chunking")
STREAM_RTC_DEFAULTS = ("replace", "ones", 35)


class ReplanSchedule:
    """When the policy node starts its next inference (pure; times in seconds on the observation clock).

    Auto mode (``replan_period`` 0): the next observation is taken at
    ``stamp + horizon * period - latency_estimate - margin``, so the new chunk arrives ``margin`` seconds before
    the current one runs out; with ``max_period`` (real-time chunking's execution horizon) no later than
    ``stamp + max_period``: a fixed pace while inference is fast, just in time when it is too slow for that pace
    (the robot never runs out of chunk because of the pace). The latency estimate is the largest of the last ``window`` (3) measured latencies
    (conservative against one slow call, yet back to normal three calls after a slow spell),
    excluding the first (warm-up) call; until a second call has been measured the warm-up latency (or
    ``latency_guess`` when larger) stands in. Fixed mode: ``stamp + replan_period``. When inference is slower
    than a chunk, see :meth:`trigger_offset`.

    ``execution="pause"`` is the released deploy's behaviour instead of streaming: every chunk runs to its
    end, the robot holds while the next one is computed, and the next observation is taken once the robot
    holds (so the commander starts the new chunk at its first action). It costs about ``latency`` of idle
    robot per chunk, and gives a policy exactly the open-loop execution it was evaluated with offline.
    """

    EXECUTIONS = ("stream", "pause")

    def __init__(self, horizon: int, period: float, replan_period: float = 0.0, margin: float = 0.3,
                 latency_guess: float = 0.0, window: int = 3, execution: str = "stream",
                 pause_fallback: float = 0.3, max_period: float = 0.0):
        if horizon < 1 or not period > 0:
            raise ValueError(f"expected horizon >= 1 and period > 0, got {horizon}, {period}")
        if execution not in self.EXECUTIONS:
            raise ValueError(f"execution: expected one of {self.EXECUTIONS}, got {execution!r}")
        if execution == "pause" and replan_period > 0:
            raise ValueError(f"execution 'pause' times itself from the chunk's end; expected replan_period 0, "
                             f"got {replan_period}")
        if replan_period < 0 or margin < 0 or latency_guess < 0 or pause_fallback < 0 or max_period < 0:
            raise ValueError(f"replan_period, margin, latency_guess, pause_fallback, max_period: expected >= 0, got "
                             f"{replan_period}, {margin}, {latency_guess}, {pause_fallback}, {max_period}")
        if max_period > 0 and (execution != "stream" or replan_period > 0):
            raise ValueError(f"max_period paces streaming's automatic schedule; expected execution 'stream' and "
                             f"replan_period 0, got {execution!r} and {replan_period}")
        self.horizon = int(horizon)
        self.period = float(period)
        self.replan_period = float(replan_period)
        self.margin = float(margin)
        self.latency_guess = float(latency_guess)
        self.window = int(window)
        self.execution = execution
        self.pause_fallback = float(pause_fallback)
        self.max_period = float(max_period)
        self.warmup: Optional[float] = None
        self._recent: list = []

    @property
    def chunk_duration(self) -> float:
        return self.horizon * self.period

    def record_latency(self, latency: float) -> None:
        """Register one measured observation-to-chunk latency (s); the first is the warm-up call."""
        if self.warmup is None:
            self.warmup = float(latency)
            return
        self._recent.append(float(latency))
        del self._recent[:-self.window]

    @property
    def latency_estimate(self) -> float:
        """Latency used for planning the trigger point (s)."""
        if self._recent:
            return max(self._recent)
        return max(self.latency_guess, self.warmup or 0.0)

    def trigger_offset(self) -> float:
        """Seconds after an observation at which the next inference starts (>= 0).

        When inference is slower than a whole chunk, the chunk just published starts cold (the robot holds
        while waiting) about ``latency`` after its observation and runs ``chunk_duration``; an observation taken
        while it runs would plan only for time the robot has already covered (the commander would reject it as
        expired), so the next observation waits until that chunk has been executed: ``latency + duration``.
        """
        if self.replan_period > 0:
            return self.replan_period
        if self.execution == "pause":
            # the chunk lands ~latency after its observation, runs its whole duration, then one tick of hold
            return self.latency_estimate + self.chunk_duration + self.period
        if self.slower_than_chunk:
            return self.latency_estimate + self.chunk_duration
        just_in_time = max(0.0, self.chunk_duration - self.latency_estimate - self.margin)
        return min(self.max_period, just_in_time) if self.max_period > 0 else just_in_time

    def next_start(self, stamp: float, published: Optional[float] = None) -> float:
        """Time to take the next observation after one taken at ``stamp`` whose chunk was published at
        ``published`` (same clock).

        With ``execution="pause"`` and ``published`` known, the chunk's own timing decides instead of the
        latency estimate: it starts at the commander's first tick after arrival and runs ``chunk_duration``; the
        next observation is taken ``pause_fallback`` after that. Normally the commander's chunk-end re-plan
        request (commander ``execution:=pause``) comes first, at the very tick the robot starts holding; this time
        is the fallback, late enough that chunk delivery and tick jitter cannot put the observation before the
        hold (the new chunk would then start a few actions in). It is not timed from the latency estimate (the
        largest of the last three): one slow call would idle the robot for up to a second extra after each of the
        next three chunks, enough to run a 12 s episode out of time.
        """
        if self.execution == "pause" and published is not None:
            return max(stamp, float(published)) + self.chunk_duration + self.pause_fallback
        return stamp + self.trigger_offset()

    def rebased(self, next_start: float, stamp: float, started: Optional[float]) -> float:
        """:meth:`next_start`'s time once the chunk observed at ``stamp`` is known to run action 0 at ``started``.

        Streaming times the next observation from the observation stamp, which is when the commander runs the
        chunk's action 0 as long as chunks follow each other. A chunk that starts from a hold (the first one of
        an episode, or after a fault) begins only when it arrives, its whole inference later: counted from the
        stamp, the pace would observe that much too early in it (in the sim graph the second observation of an
        episode came 23 ticks into the first chunk instead of 35). Shifted by the late start, the pace and the
        just-in-time point are both counted from the chunk's real start. Pause mode, and a start no later than
        half a tick after the stamp (the splice's rounding to the tick grid), leave ``next_start`` as it is.
        """
        if self.execution != "stream" or self.replan_period > 0 or started is None:
            return next_start
        late = float(started) - float(stamp)
        return next_start + late if late > 0.5 * self.period else next_start

    def expected_margin(self) -> float:
        """Seconds the new chunk is expected to arrive before the current one runs out (negative: late)."""
        if self.execution == "pause":
            return -self.latency_estimate  # by design: the robot holds while the next chunk is computed
        return self.chunk_duration - self.trigger_offset() - self.latency_estimate

    @property
    def slower_than_chunk(self) -> bool:
        """True when inference takes longer than a whole chunk: the robot will hold between chunks."""
        return self.latency_estimate >= self.chunk_duration


def node_schedule(horizon: int, period: float, replan_period: float, replan_margin: float, rtc_replan_margin: float,
                  latency_guess: float, execution: str, rtc: bool = False,
                  rtc_execution_horizon: int = 0) -> ReplanSchedule:
    """The policy node's schedule from its parameters (``rtc``: real-time chunking is on).

    With real-time chunking the execution horizon (0: none) paces streaming's automatic schedule (capped by the
    just-in-time point) and ``rtc_replan_margin`` replaces ``replan_margin``: the new chunk only needs to arrive
    before the running one ends, since its frozen prefix covers the delay, and the larger margin moved the sim
    graph's observations from every 35 to every 30-32 ticks at 0.3-0.5 s of latency (docs/runtime.md).
    """
    pace = rtc_execution_horizon * period if rtc and not replan_period else 0.0
    return ReplanSchedule(horizon, period, replan_period, rtc_replan_margin if rtc else replan_margin, latency_guess,
                          execution=execution, max_period=pace)


class ReplanRequests:
    """The commander's "plan from an observation newer than T, now" requests, as the policy's worker sees them.

    The commander drops every chunk observed before an episode start, an e-stop reset or a fault; without a
    request the policy would keep to its schedule and the robot would hold for up to a chunk's duration before
    a usable chunk came (in the demo: about 2 s of every 12 s episode). A request makes the worker skip its
    wait and plan from the first observation newer than ``T``. Only the newest ``T`` matters. A request that
    no observation satisfies within ``timeout`` seconds (clock skew between the commander and the sensors) is
    dropped, and the schedule takes over again. Thread-safe: the ROS callback adds, the worker reads.
    """

    def __init__(self, timeout: float = 2.0):
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout: expected a positive number of seconds, got {timeout}")
        self.timeout = float(timeout)
        self._after: Optional[float] = None
        self._received: float = 0.0
        self._lock = threading.Lock()
        self.received = 0
        self.expired = 0

    def add(self, after: float, now: float) -> None:
        """The commander wants a chunk observed after ``after``; ``now``: receive time (same clock as ``pending``)."""
        with self._lock:
            self.received += 1
            if self._after is None or after > self._after:
                self._after = float(after)
            self._received = float(now)

    def pending(self, now: float) -> Optional[float]:
        """The ``T`` to plan past, or None (also None, and counted in ``expired``, once it timed out)."""
        with self._lock:
            if self._after is not None and now - self._received > self.timeout:
                self._after = None
                self.expired += 1
            return self._after

    def usable(self, stamp: float, now: float) -> bool:
        """Whether an observation stamped ``stamp`` may be planned from now (no request, or newer than ``T``)."""
        after = self.pending(now)
        return after is None or stamp > after

    def served(self, stamp: float) -> None:
        """A chunk observed at ``stamp`` was published: a request it satisfies is done."""
        with self._lock:
            if self._after is not None and stamp > self._after:
                self._after = None
