"""When to plan: :class:`PlanWindow`, best-of-N only for decisions observed in a span of the episode.

Kept apart from :mod:`cosmos_policy_ros.core.planner` (which imports torch) so the policy node can check its
``planning_window`` parameter at start-up, before any model module is imported. No rclpy, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence


@dataclass(frozen=True)
class PlanWindow:
    """When to plan: only decisions observed ``start`` <= t < ``end`` seconds after the episode start.

    Every other decision runs the base policy's own chunk (candidate 0, the one it sends without planning) at
    the base policy's cost. Why: a planner is only as good as its value's ranking at that moment. Measured
    2026-12-07 on the sim transfer cube (docs/planning.md): at the grasp (the decision observed 2 s in) the
    planning model's pick beats the base chunk, at the start its value cannot tell the outcome yet and planning
    there loses scenes; best-of-8 at the grasp only: 89/100 against the base's 85/100.
    """

    start: float
    end: float

    def __post_init__(self):
        if not (math.isfinite(self.start) and math.isfinite(self.end) and 0 <= self.start < self.end):
            raise ValueError(f"planning window: expected [start, end] seconds with 0 <= start < end, "
                             f"got [{self.start}, {self.end}]")

    @classmethod
    def parse(cls, values: Optional[Sequence[float]]) -> Optional["PlanWindow"]:
        """``[]`` / None -> None (plan every decision); ``[start, end]`` -> a window."""
        vals = [float(v) for v in (values or ())]
        if not vals:
            return None
        if len(vals) != 2:
            raise ValueError(f"planning window: expected [start, end] seconds or [] (every decision), got {vals}")
        return cls(vals[0], vals[1])

    def skip_reason(self, stamp: float, episode_start: Optional[float]) -> Optional[str]:
        """None when a decision observed at ``stamp`` is planned; else why not (no episode start known, or the
        observation lies outside the window)."""
        if episode_start is None:
            return "no episode start known"
        t = float(stamp) - float(episode_start)
        if self.start <= t < self.end:
            return None
        return f"observed {t:.2f} s into the episode, outside the planning window [{self.start:g}, {self.end:g}) s"

    def to_list(self) -> List[float]:
        return [float(self.start), float(self.end)]


class PlanGate:
    """A planning backend's side of a :class:`PlanWindow`: when the episode began, and which decisions it left to
    the base policy. Shared by the in-process planner and the planner node's client, so both count the same way.

    window None: every decision is planned (the gate never skips, and never needs an episode start).
    """

    def __init__(self, window: Optional[PlanWindow] = None):
        self.window = window
        self.episode_start: Optional[float] = None
        self.skipped = 0  # decisions the window left to the base policy
        self.last_skip_reason = ""

    def start_episode(self, stamp: float) -> None:
        """An episode began at ``stamp`` (the observations' clock): the window counts from here."""
        self.episode_start = float(stamp)

    def skips(self, stamp: float) -> bool:
        """Whether the decision observed at ``stamp`` runs the base policy's chunk instead (counted, with why)."""
        if self.window is None:
            return False
        why = self.window.skip_reason(stamp, self.episode_start)
        if why is None:
            return False
        self.skipped += 1
        self.last_skip_reason = why
        return True
