"""The commander's per-tick decision logic, free of rclpy (tested without ``rclpy.init``).

:class:`CommanderLogic` owns the tick clock, the chunk splicer, the command gate, the e-stop latch and the
hold rules. The node only feeds it messages (as plain values) and publishes what :meth:`CommanderLogic.tick`
returns, nothing else. Time is always an argument.

Order of one tick: pick what to ask for (a hold, or the running chunk's action for this tick), then pass it
through the one final gate (:class:`~cosmos_policy_ros.core.safety.CommandGate`: max_deviation pre-stage for
chunk actions, joint limits, per-tick step from the last command sent). Every command of every kind -- chunk
actions, holds, e-stop holds, the first command -- is the gate's output; nothing runs after it. Before the
first command the gate steps from the measured pose; a measured pose beyond a joint limit by more than one
step is refused (nothing published, :attr:`CommanderLogic.refusal` says why).

Joint states are read by name (:class:`~cosmos_policy_ros.core.robot.JointNameMap`): any order, extra joints
ignored; a missing, duplicate or non-finite joint (or an unnamed message without ``allow_unnamed``) is a
fault with a message naming it.

Chunks are validated whole on arrival (:func:`~cosmos_policy_ros.core.chunking.validate_chunk`: action_dim,
finite everywhere, period, stamp not in the future beyond ``chunk_future_tolerance``; then the splicer: not older
than its own horizon, counted from the tick the robot stopped moving); a rejected chunk never runs an action, is counted and reported with its reason and stamp
(:attr:`CommanderLogic.last_rejection`), and leaves no ordering state behind.

Hold rules (the robot holds the last command sent; before the first command, its measured position):
* nothing is published until both arms' joint states have arrived;
* e-stop latched (until reset; then a *new* chunk is needed);
* a follower's joint states missing, stale or stamped in the future (``joint_state_max_age``) or invalid;
* the policy node reports a fault (status level ERROR) or has been silent for ``policy_timeout`` (silence is
  reported as such, also after a fault: a crashed policy node sends nothing more);
* no chunk yet, or the running chunk ran out (chunks are never padded or extrapolated);
* the gate refuses the planned action (NaN / wrong length).
After a fault hold, only a chunk observed after the fault began is accepted. An episode start and an e-stop
reset restart the chunk ordering at their own time.
"""
from __future__ import annotations

import math
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Sequence

import numpy as np

from ..core.chunking import Acceptance, Chunk, ChunkSplicer, SpliceConfig, TickClock, validate_chunk
from ..core.robot import (ACTION_DIM, JS_ARM, JS_GRIPPER, REQUIRED_FOR_COMMAND_AND_OBS, SIDES, GripperConvention,
                          JointNameMap, JointStateError)
from ..core.safety import CommandGate, SafetyConfig

#: Layout of the commander's per-tick trace (std_msgs/Float64MultiArray on ~/trace): these fields, then the
#: 14 command values actually sent.
TRACE_FIELDS = ("tick", "tick_time", "held", "hold_code", "chunk_id", "index", "missed_total", "safety_changed",
                "blended")
#: hold_code values: why a tick held.
HOLD_RUNNING, HOLD_IDLE, HOLD_FAULT, HOLD_ESTOP, HOLD_SAFETY = 0, 1, 2, 3, 4


def _reason_key(reason: str) -> str:
    """A hold reason without its numbers and details, for counting ("... stale (0.31 s > 0.25 s)" -> "... stale")."""
    return re.split(r"[:(]| -?\d", reason, maxsplit=1)[0].strip()


@dataclass
class CommanderConfig:
    """Commander settings besides splicing and safety.

    joint_state_max_age: hold when a follower's latest joint state is older, or stamped further in the future (s).
    policy_timeout: hold when the policy node's status has not been heard for this long (s); 0 disables.
    replan_on_chunk_end: when a chunk has run to its last action, ask the policy to plan from an observation
        taken after it (execution:=pause). The policy's own clock cannot know when the commander started the
        chunk (delivery and tick jitter under load), so without the ask its next observation may be taken a few
        ticks before the robot holds and the new chunk would start a few actions in.
    joints: how the followers' JointState names map onto the Interbotix layout (same for both followers).
    chunk_future_tolerance: a chunk stamped further in the future than this (s) is rejected (clock skew, or a
        bad stamp that would otherwise run at once and then block every correctly stamped chunk).
    """

    joint_state_max_age: float = 0.25
    policy_timeout: float = 1.0
    replan_on_chunk_end: bool = False
    joints: JointNameMap = field(default_factory=JointNameMap)
    chunk_future_tolerance: float = 0.2

    def __post_init__(self):
        if not (self.joint_state_max_age > 0 and math.isfinite(self.joint_state_max_age)):
            raise ValueError(f"joint_state_max_age: expected a positive number of seconds, got {self.joint_state_max_age}")
        if not (self.policy_timeout >= 0 and math.isfinite(self.policy_timeout)):
            raise ValueError(f"policy_timeout: expected >= 0 seconds (0 disables), got {self.policy_timeout}")
        if not (self.chunk_future_tolerance >= 0 and math.isfinite(self.chunk_future_tolerance)):
            raise ValueError(f"chunk_future_tolerance: expected >= 0 seconds, got {self.chunk_future_tolerance}")
        if not isinstance(self.joints, JointNameMap):
            raise ValueError(f"joints: expected a JointNameMap, got {type(self.joints).__name__}")


@dataclass
class TickResult:
    """What to publish at one tick."""

    tick: int
    missed: int
    command: np.ndarray  # (14,) arm joints (rad) + normalised gripper commands
    held: bool
    reason: str  # "chunk", "blend" or the hold reason
    chunk_id: int = -1
    index: int = -1
    safety_kinds: List[str] = field(default_factory=list)
    safety_reasons: List[str] = field(default_factory=list)
    blended: bool = False
    hold_code: int = HOLD_RUNNING

    def trace(self, missed_total: int, tick_time: float) -> List[float]:
        """Values for the trace message (see :data:`TRACE_FIELDS`); tick_time: nominal time of the tick (s)."""
        return [float(self.tick), float(tick_time), float(self.held), float(self.hold_code), float(self.chunk_id), float(self.index), float(missed_total),
                float(bool(self.safety_kinds)), float(self.blended)] + [float(v) for v in self.command]


@dataclass
class _ArmState:
    stamp: float
    reference: Optional[np.ndarray]  # (7,) arm joints + gripper as normalised command, None if invalid
    error: Optional[str] = None


class CommanderLogic:
    """Per-tick command selection: splice, check, hold. See the module docstring for the rules."""

    def __init__(self, splice: SpliceConfig, safety: SafetyConfig, gripper: GripperConvention,
                 config: Optional[CommanderConfig] = None):
        self.splice_config = splice
        self.safety = safety
        self.gripper = gripper
        self.config = config or CommanderConfig()
        self.clock = TickClock(splice.period)
        self.splicer = ChunkSplicer(splice)
        self.gate = CommandGate(safety)
        self._arms: Dict[str, _ArmState] = {}
        self.estopped = False
        self.estop_reason = ""
        self._policy_fault: Optional[str] = None
        self._policy_heard: Optional[float] = None
        self._pending: Optional[Chunk] = None  # newest chunk received while a fault was active
        self._fault_since: Optional[float] = None
        self._anchor_after: Optional[float] = None  # hold at the measured pose once joint states are newer
        self._replan_after: Optional[float] = None  # ask the policy for a chunk observed after this, now
        self._replan_asked = -math.inf  # newest time asked for (a request covers every older one)
        self.replan_reason = ""  # why the newest request was made (episode start, ...)
        #: why nothing is published although joint states arrived (the gate refused the measured pose), or ""
        self.refusal = ""
        #: the last rejected chunk: "chunk 7 (stamp 12.345): future_stamp: ..." (for logs and diagnostics)
        self.last_rejection = ""
        # statistics for diagnostics
        self.ticks = 0
        self.held_ticks = 0
        self.safety_interventions = 0
        self.safety_faults = 0
        self.safety_kinds: Counter = Counter()
        self.last_safety_reasons: List[str] = []
        self.chunks_accepted = 0
        self.chunks_rejected: Counter = Counter()
        self.margins: Deque[int] = deque(maxlen=100)
        self.hold_reason = "waiting for joint states"
        self._idle_reason = "no chunk received yet"
        self.hold_reasons: Counter = Counter()

    @property
    def last_command(self) -> Optional[np.ndarray]:
        """The last command the gate passed (and the node published), or None before the first one."""
        return self.gate.last_sent

    # -- inputs -------------------------------------------------------------------------------------
    def on_joint_state(self, side: str, stamp: float, names: Sequence[str], position: Sequence[float]) -> Optional[str]:
        """Store one follower's JointState (names and positions, mapped by name); returns the problem or None."""
        if side not in SIDES:
            raise KeyError(f"unknown arm {side!r}")
        error = None
        ref = None
        try:
            pos = self.config.joints.canonical(names, position, REQUIRED_FOR_COMMAND_AND_OBS, side)
        except JointStateError as exc:
            error = str(exc)
        except (TypeError, ValueError) as exc:  # positions that are not numbers
            error = f"{side} follower joint state unusable: {exc}"
        else:
            ref = np.empty(7)
            ref[:6] = pos[JS_ARM]
            ref[6] = float(self.gripper.joint_to_command(pos[JS_GRIPPER]))
        prev = self._arms.get(side)
        if error and prev is not None and prev.reference is not None:
            # keep the last good reference (for holding), but remember the error
            self._arms[side] = _ArmState(stamp, prev.reference, error)
        else:
            self._arms[side] = _ArmState(stamp, ref, error)
        return error

    def on_policy_status(self, ok: bool, message: str, now: float) -> Optional[str]:
        """The policy node's health; returns a log line on a state change, else None."""
        self._policy_heard = now
        if not ok:
            if self._policy_fault is None:
                self._policy_fault = message or "policy fault"
                self._begin_fault(now)
                return f"policy fault: {self._policy_fault}"
            self._policy_fault = message or self._policy_fault
            return None
        if self._policy_fault is not None:
            was = self._policy_fault
            self._policy_fault = None
            return f"policy recovered (was: {was})"
        return None

    def reject_chunk(self, chunk_id: int, stamp: float, reason: str, detail: str = "") -> Acceptance:
        """Count and remember a rejected chunk (also for rejections decided by the node, e.g. malformed)."""
        self.chunks_rejected[reason] += 1
        stamp_text = f"{stamp:.3f}" if math.isfinite(stamp) else str(stamp)
        self.last_rejection = f"chunk {chunk_id} (stamp {stamp_text}): {reason}" + (f": {detail}" if detail else "")
        return Acceptance(False, reason, chunk_id, detail=detail)

    def on_chunk(self, chunk: Chunk, now: float) -> Acceptance:
        """Validate a received chunk whole, then splice it in from the next tick (or keep it until the current
        fault clears). A rejected chunk runs no action and changes no ordering state."""
        bad = validate_chunk(chunk, self.splice_config, now, self.config.chunk_future_tolerance)
        if bad is not None:
            return self.reject_chunk(chunk.chunk_id, chunk.stamp, *bad)
        if self.clock.tick is None:
            return self.reject_chunk(chunk.chunk_id, chunk.stamp, "not_started", "the commander has not ticked yet")
        if self._fault_active(now):
            if self._fault_since is not None and chunk.stamp <= self._fault_since:
                return self.reject_chunk(chunk.chunk_id, chunk.stamp, "before_fault",
                                         f"observed before the fault that began at {self._fault_since:.3f}")
            self._pending = chunk
            return Acceptance(False, "pending_fault", chunk.chunk_id)
        return self._splice(chunk, self.clock.tick + 1)

    def _splice(self, chunk: Chunk, next_tick: int) -> Acceptance:
        acc = self.splicer.add_chunk(chunk, next_tick, self.clock)
        if acc.accepted:
            self.chunks_accepted += 1
            if acc.margin_ticks is not None:
                self.margins.append(acc.margin_ticks)
        else:
            self.reject_chunk(chunk.chunk_id, chunk.stamp, acc.reason, acc.detail)
        return acc

    def estop(self, reason: str = "operator") -> None:
        """Latch a hold until :meth:`reset_estop`."""
        self.estopped = True
        self.estop_reason = reason
        tick = (self.clock.tick + 1) if self.clock.tick is not None else 0
        self.splicer.hold(tick)

    def begin_episode(self, now: float, hold_at_measured: bool = True) -> None:
        """An episode starts: stop the running chunk (planned before the episode, possibly for another scene)
        and hold until a chunk observed after ``now`` arrives, so every action of the episode was planned from
        one of its own observations. The chunk ordering restarts at ``now`` (a chunk accepted earlier with a
        later stamp cannot block the episode's chunks).

        hold_at_measured: hold where the robot is (joint states newer than ``now``), as at start-up, instead of
        at the last command: the gate then steps from the measured pose (:meth:`CommandGate.anchor`). Matters
        when the robot was put somewhere else between episodes (a simulator reset, an operator moving the
        arms); on a robot at rest the two differ by the tracking error.
        """
        if self.clock.tick is not None:
            self.splicer.hold(self.clock.tick + 1)
        self.splicer.restart_order(now)
        self._pending = None
        self._anchor_after = float(now) if hold_at_measured else None
        self._idle_reason = "waiting for a chunk observed after the episode start"
        self._ask_replan(now, "episode start")

    def _ask_replan(self, after: float, why: str) -> None:
        if after > self._replan_asked:  # e.g. an e-stop reset already asked past the e-stop's own fault hold
            self._replan_asked = float(after)
            self._replan_after = float(after)
            self.replan_reason = why

    def take_replan_request(self) -> Optional[float]:
        """Time after which the commander needs an observation to plan from, once per event, else None.

        Set when the commander starts refusing older chunks and none is waiting: episode start, e-stop reset,
        a fault that cleared with no chunk received meanwhile; with ``replan_on_chunk_end``, also when a chunk
        has run out (:attr:`replan_reason` says which). The node forwards it to the policy node, which then plans
        at once instead of at its next scheduled observation.
        """
        after, self._replan_after = self._replan_after, None
        return after

    def reset_estop(self, now: float) -> str:
        """Release the e-stop latch; the robot keeps holding until a chunk observed after now arrives."""
        if not self.estopped:
            return "e-stop was not engaged"
        self.estopped = False
        self.estop_reason = ""
        self.splicer.restart_order(now)
        self._pending = None
        self._idle_reason = "waiting for a chunk observed after the e-stop reset"
        self._ask_replan(now, "e-stop reset")
        return "e-stop released; waiting for a new chunk"

    # -- per tick -------------------------------------------------------------------------------------
    def _joint_problems(self, now: float) -> List[str]:
        out = []
        max_age = self.config.joint_state_max_age
        for side in SIDES:
            st = self._arms.get(side)
            if st is None:
                out.append(f"no joint states from the {side} arm")
            elif st.error:
                out.append(st.error)
            elif now - st.stamp > max_age:
                out.append(f"{side} arm joint states stale ({now - st.stamp:.3f} s > {max_age:.3f} s)")
            elif st.stamp - now > max_age:
                out.append(f"{side} arm joint states stamped {st.stamp - now:.3f} s in the future "
                           f"(> {max_age:.3f} s; clock skew?)")
        return out

    def _policy_problem(self, now: float) -> Optional[str]:
        timeout = self.config.policy_timeout
        if timeout > 0 and self._policy_heard is not None and now - self._policy_heard > timeout:
            # checked first: a faulted policy node that then exits sends nothing more, and its last fault
            # text would otherwise stand for a process that is gone
            last = f" (its last status: {self._policy_fault})" if self._policy_fault else ""
            return f"policy node silent for {now - self._policy_heard:.2f} s{last}"
        if self._policy_fault is not None:
            return f"policy fault: {self._policy_fault}"
        return None

    def _fault_active(self, now: float) -> bool:
        return self.estopped or self._policy_problem(now) is not None or bool(self._joint_problems(now))

    def _begin_fault(self, now: float) -> None:
        if self._fault_since is None:
            self._fault_since = now
            self.splicer.reject_before(now)
        tick = (self.clock.tick + 1) if self.clock.tick is not None else 0
        self.splicer.hold(tick)

    def measured_reference(self) -> Optional[np.ndarray]:
        """(14,) measured position as a command (grippers as normalised commands), or None if unknown."""
        if any(self._arms.get(s) is None or self._arms[s].reference is None for s in SIDES):
            return None
        return np.concatenate([self._arms["left"].reference, self._arms["right"].reference])

    def tick(self, now: float) -> Optional[TickResult]:
        """Decide the command for the timer callback at ``now``; None means publish nothing (no state yet, or
        the gate refuses to step from the measured pose: :attr:`refusal`). Every returned command is the
        gate's output and is recorded as sent."""
        k, missed = self.clock.advance(now)
        measured = self.measured_reference()
        if self.gate.last_sent is None and measured is None:
            return None  # never commanded and never saw both arms: nothing safe to send
        if self._anchor_after is not None:
            if not self.splicer.holding:
                # a chunk already runs, step-checked against the commands sent: moving the reference to the
                # (lagging) measured pose now could make the next command jump on the wire
                self._anchor_after = None
            elif measured is not None and min(self._arms[s].stamp for s in SIDES) >= self._anchor_after:
                problem = self.gate.anchor(measured)  # the holds below step from where the robot is
                if problem:
                    self.hold_reasons["anchor refused"] += 1
                    self.last_safety_reasons = [f"episode start: holding the last command, not the measured pose: "
                                                f"{problem}"]
                self._anchor_after = None
        self.ticks += 1

        problems: List[str] = []
        if self.estopped:
            problems.append(f"e-stop ({self.estop_reason})")
        problems += self._joint_problems(now)
        policy = self._policy_problem(now)
        if policy:
            problems.append(policy)
        if problems:
            self.splicer.hold(k)  # first: the hold begins at this tick
            self._begin_fault(now)
            code = HOLD_ESTOP if self.estopped else HOLD_FAULT
            return self._hold(k, missed, measured, "; ".join(problems), code)
        if self._fault_since is not None:
            # fault cleared: a chunk received meanwhile (observed after the fault began) may start now
            since, self._fault_since = self._fault_since, None
            self._idle_reason = "waiting for a chunk observed after the fault cleared"
            pending, self._pending = self._pending, None
            if pending is None or not self._splice(pending, k).accepted:
                self._ask_replan(since, "fault cleared")

        planned = self.splicer.action_at(k)
        if planned.action is None:
            if planned.reason == "chunk_ended":
                self._idle_reason = ("chunk ran out before the next one arrived "
                                     "(by design with execution:=pause, else inference too slow)")
                if self.config.replan_on_chunk_end:
                    # the hold starts at this tick: an observation stamped after it sees the robot holding
                    self._ask_replan(now, "chunk ended")
            return self._hold(k, missed, measured, self._idle_reason, HOLD_IDLE)
        result = self.gate.send(planned.action, measured, deviation=True)
        if result.command is None:
            return self._refused(result.reasons)
        self.refusal = ""
        if result.kinds:
            self.safety_interventions += 1
            self.safety_kinds.update(result.kinds)
            self.last_safety_reasons = result.reasons
        if result.fault:
            self.safety_faults += 1
            self.splicer.hold(k)
            return self._held(k, missed, result.command, "safety fault: " + "; ".join(result.reasons), HOLD_SAFETY,
                              result.kinds, result.reasons)
        self.hold_reason = ""
        return TickResult(k, missed, result.command, False, planned.reason, planned.chunk_id, planned.index,
                          result.kinds, result.reasons, planned.blended)

    def _refused(self, reasons: List[str]) -> None:
        self.refusal = "; ".join(reasons)
        self.hold_reason = self.refusal
        return None

    def _hold(self, k: int, missed: int, measured: Optional[np.ndarray], reason: str, code: int
              ) -> Optional[TickResult]:
        result = self.gate.hold(measured)
        if result.command is None:
            return self._refused(result.reasons)
        self.refusal = ""
        if result.kinds:  # only when the reference was beyond a limit (first command): say so
            self.safety_interventions += 1
            self.safety_kinds.update(result.kinds)
            self.last_safety_reasons = result.reasons
        return self._held(k, missed, result.command, reason, code, result.kinds, result.reasons)

    def _held(self, k: int, missed: int, command: np.ndarray, reason: str, code: int,
              kinds: List[str], reasons: List[str]) -> TickResult:
        self.held_ticks += 1
        self.hold_reason = reason
        self.hold_reasons[_reason_key(reason)] += 1
        return TickResult(k, missed, command, True, reason, hold_code=code, safety_kinds=list(kinds),
                          safety_reasons=list(reasons))


def joint_commands(command: np.ndarray, gripper: GripperConvention):
    """(14,) command -> {side: (6 arm joint targets as float list, gripper motor target in rad)}."""
    c = np.asarray(command, dtype=np.float64)
    if c.shape != (ACTION_DIM,):
        raise ValueError(f"expected a ({ACTION_DIM},) command, got {c.shape}")
    out = {}
    for s, side in enumerate(SIDES):
        out[side] = (c[s * 7:s * 7 + 6], float(gripper.command_to_joint(c[s * 7 + 6])))
    return out
