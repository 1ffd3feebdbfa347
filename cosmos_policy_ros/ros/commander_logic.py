"""The commander's per-tick decision logic, free of rclpy (tested without ``rclpy.init``).

:class:`CommanderLogic` owns the tick clock, the chunk splicer, the safety filter, the e-stop latch and the
hold rules. The node only feeds it messages (as plain values) and publishes what :meth:`CommanderLogic.tick`
returns. Time is always an argument.

Hold rules (the robot holds the last safe command; before the first command, its measured position):
* nothing is published until both arms' joint states have arrived;
* e-stop latched (until reset; then a *new* chunk is needed);
* a follower's joint states missing, stale (``joint_state_max_age``) or invalid (NaN, too short);
* the policy node reports a fault (status level ERROR) or has been silent for ``policy_timeout``;
* no chunk yet, or the running chunk ran out (chunks are never padded or extrapolated);
* the safety filter refuses the planned action (NaN / wrong length).
After a fault hold, only a chunk observed after the fault began is accepted.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Sequence

import numpy as np

from ..core.chunking import Acceptance, Chunk, ChunkSplicer, SpliceConfig, TickClock
from ..core.robot import (ACTION_DIM, JS_ARM, JS_GRIPPER, SIDES, GripperConvention)
from ..core.safety import SafetyConfig, filter_action

#: Layout of the commander's per-tick trace (std_msgs/Float64MultiArray on ~/trace): these fields, then the
#: 14 command values actually sent.
TRACE_FIELDS = ("tick", "tick_time", "held", "hold_code", "chunk_id", "index", "missed_total", "safety_changed",
                "blended")
#: hold_code values: why a tick held.
HOLD_RUNNING, HOLD_IDLE, HOLD_FAULT, HOLD_ESTOP, HOLD_SAFETY = 0, 1, 2, 3, 4


@dataclass
class CommanderConfig:
    """Commander settings besides splicing and safety.

    joint_state_max_age: hold when a follower's latest joint state is older (s).
    policy_timeout: hold when the policy node's status has not been heard for this long (s); 0 disables.
    replan_on_chunk_end: when a chunk has run to its last action, ask the policy to plan from an observation
        taken after it (execution:=pause). The policy's own clock cannot know when the commander started the
        chunk (delivery and tick jitter under load), so without the ask its next observation may be taken a few
        ticks before the robot holds and the new chunk would start a few actions in.
    """

    joint_state_max_age: float = 0.25
    policy_timeout: float = 1.0
    replan_on_chunk_end: bool = False

    def __post_init__(self):
        if not (self.joint_state_max_age > 0 and math.isfinite(self.joint_state_max_age)):
            raise ValueError(f"joint_state_max_age: expected a positive number of seconds, got {self.joint_state_max_age}")
        if not (self.policy_timeout >= 0 and math.isfinite(self.policy_timeout)):
            raise ValueError(f"policy_timeout: expected >= 0 seconds (0 disables), got {self.policy_timeout}")


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
        self._arms: Dict[str, _ArmState] = {}
        self.last_command: Optional[np.ndarray] = None
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

    # -- inputs -------------------------------------------------------------------------------------
    def on_joint_state(self, side: str, stamp: float, position: Sequence[float]) -> Optional[str]:
        """Store one follower's JointState.position (Interbotix layout); returns the problem or None."""
        if side not in SIDES:
            raise KeyError(f"unknown arm {side!r}")
        pos = np.asarray(position, dtype=np.float64).reshape(-1)
        error = None
        ref = None
        if pos.shape[0] <= JS_GRIPPER:
            error = f"{side} arm joint state has {pos.shape[0]} positions, expected at least {JS_GRIPPER + 1}"
        elif not np.all(np.isfinite(pos[:JS_GRIPPER + 1])):
            error = f"{side} arm joint state contains NaN/inf"
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

    def on_chunk(self, chunk: Chunk, now: float) -> Acceptance:
        """Splice a received chunk in from the next tick (or keep it until the current fault clears)."""
        if self.clock.tick is None:
            self.chunks_rejected["not_started"] += 1
            return Acceptance(False, "not_started", chunk.chunk_id)
        if self._fault_active(now):
            if self._fault_since is not None and chunk.stamp <= self._fault_since:
                self.chunks_rejected["before_fault"] += 1
                return Acceptance(False, "before_fault", chunk.chunk_id)
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
            self.chunks_rejected[acc.reason] += 1
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
        one of its own observations.

        hold_at_measured: hold where the robot is (joint states newer than ``now``), as at start-up, instead of
        at the last command. Matters when the robot was put somewhere else between episodes (a simulator
        reset, an operator moving the arms); on a robot at rest the two differ by the tracking error.
        """
        if self.clock.tick is not None:
            self.splicer.hold(self.clock.tick + 1)
        self.splicer.reject_before(now)
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
        self.splicer.reject_before(now)
        self._pending = None
        self._idle_reason = "waiting for a chunk observed after the e-stop reset"
        self._ask_replan(now, "e-stop reset")
        return "e-stop released; waiting for a new chunk"

    # -- per tick -------------------------------------------------------------------------------------
    def _joint_problems(self, now: float) -> List[str]:
        out = []
        for side in SIDES:
            st = self._arms.get(side)
            if st is None:
                out.append(f"no joint states from the {side} arm")
            elif st.error:
                out.append(st.error)
            elif now - st.stamp > self.config.joint_state_max_age:
                out.append(f"{side} arm joint states stale ({now - st.stamp:.3f} s > {self.config.joint_state_max_age:.3f} s)")
        return out

    def _policy_problem(self, now: float) -> Optional[str]:
        if self._policy_fault is not None:
            return f"policy fault: {self._policy_fault}"
        timeout = self.config.policy_timeout
        if timeout > 0 and self._policy_heard is not None and now - self._policy_heard > timeout:
            return f"policy node silent for {now - self._policy_heard:.2f} s"
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
        """Decide the command for the timer callback at ``now``; None means publish nothing (no state yet)."""
        k, missed = self.clock.advance(now)
        measured = self.measured_reference()
        if self.last_command is None and measured is None:
            return None  # never commanded and never saw both arms: nothing safe to send
        if self._anchor_after is not None:
            if not self.splicer.holding:
                # a chunk already runs, step-checked against the commands sent: moving the reference to the
                # (lagging) measured pose now could make the next command jump on the wire
                self._anchor_after = None
            elif measured is not None and min(self._arms[s].stamp for s in SIDES) >= self._anchor_after:
                self.last_command = measured  # re-anchored once; chunks are checked against it from now on
                self._anchor_after = None
        hold_cmd = self.last_command if self.last_command is not None else measured
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
            return self._hold(k, missed, hold_cmd, "; ".join(problems), code)
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
            return self._hold(k, missed, hold_cmd, self._idle_reason, HOLD_IDLE)
        result = filter_action(planned.action, hold_cmd, self.safety, measured)
        if result.kinds:
            self.safety_interventions += 1
            self.safety_kinds.update(result.kinds)
            self.last_safety_reasons = result.reasons
        if result.fault:
            self.safety_faults += 1
            self.splicer.hold(k)
            out = self._hold(k, missed, hold_cmd, "safety fault: " + "; ".join(result.reasons), HOLD_SAFETY)
            out.safety_kinds, out.safety_reasons = result.kinds, result.reasons
            return out
        self.last_command = result.command
        self.hold_reason = ""
        return TickResult(k, missed, result.command, False, planned.reason, planned.chunk_id, planned.index,
                          result.kinds, result.reasons, planned.blended)

    def _hold(self, k: int, missed: int, command: np.ndarray, reason: str, code: int) -> TickResult:
        self.held_ticks += 1
        self.hold_reason = reason
        self.hold_reasons[reason.split(":")[0].split(" (")[0]] += 1
        self.last_command = np.array(command, dtype=np.float64)
        return TickResult(k, missed, self.last_command, True, reason, hold_code=code)


def joint_commands(command: np.ndarray, gripper: GripperConvention):
    """(14,) command -> {side: (6 arm joint targets as float list, gripper motor target in rad)}."""
    c = np.asarray(command, dtype=np.float64)
    if c.shape != (ACTION_DIM,):
        raise ValueError(f"expected a ({ACTION_DIM},) command, got {c.shape}")
    out = {}
    for s, side in enumerate(SIDES):
        out[side] = (c[s * 7:s * 7 + 6], float(gripper.command_to_joint(c[s * 7 + 6])))
    return out
