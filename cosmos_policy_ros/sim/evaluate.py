"""Closed-loop policy episodes in the simulated ALOHA, without ROS (demo, benchmarks, training evaluation).

A policy is queried with an :class:`~cosmos_policy_ros.core.types.Observation` (images of the configured
cameras at the sim's image size, qpos14 proprio, instruction, stamp = simulated seconds) and returns a chunk
of 25 Hz actions; the first ``execute_horizon`` of them are executed open-loop (each held for two 50 Hz
physics steps, as on the robot), then the policy is queried again, until the episode ends.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from cosmos_policy_ros.core.types import Observation
from cosmos_policy_ros.sim.aloha_sim import STEPS_PER_ACTION, AlohaSim

#: Observation -> (horizon, 14) actions, or any object with ``infer(obs) -> PolicyOutput``.
PolicyLike = Union[Callable[[Observation], np.ndarray], object]


@dataclass
class EpisodeResult:
    """Outcome of one closed-loop episode."""

    seed: int
    success: bool  # reward 4 reached at some step
    success_at_end: bool  # reward 4 at the last step
    max_reward: int
    physics_steps: int
    queries: int  # policy calls
    first_success_step: Optional[int]  # 50 Hz physics step of the first success
    frames: Dict[str, List[np.ndarray]] = field(default_factory=dict)  # cam -> 25 Hz frames (if recorded)
    values: List[float] = field(default_factory=list)  # predicted values per query (NaN when none)


def _query(policy: PolicyLike, obs: Observation):
    if hasattr(policy, "infer"):
        out = policy.infer(obs)
        return np.asarray(out.actions, dtype=np.float64), float(getattr(out, "value", float("nan")))
    return np.asarray(policy(obs), dtype=np.float64), float("nan")


def run_policy_episode(sim: AlohaSim, policy: PolicyLike, seed: int, instruction: Optional[str] = None,
                       execute_horizon: Optional[int] = None, record_cameras: Sequence[str] = (),
                       record_size: Optional[Sequence[int]] = None, stop_on_success: bool = False) -> EpisodeResult:
    """Reset ``sim`` to ``seed`` and run ``policy`` until ``sim.done`` (or the first success if asked).

    Raises ValueError when the policy returns something other than a non-empty (N, 14) finite chunk.
    ``record_cameras``: cameras rendered at every 25 Hz step (at ``record_size``, default the sim's image
    size) for videos.
    """
    sim.reset(seed, render=False)
    frames: Dict[str, List[np.ndarray]] = {c: [] for c in record_cameras}
    values: List[float] = []
    queries = 0
    first = None
    while not sim.done and not (stop_on_success and sim.ever_success):
        obs = sim.policy_observation(instruction)
        actions, value = _query(policy, obs)
        queries += 1
        values.append(value)
        if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] != 14 or not np.all(np.isfinite(actions)):
            raise ValueError(f"expected a finite (N, 14) action chunk from the policy, got shape {actions.shape}")
        n = actions.shape[0] if execute_horizon is None else min(int(execute_horizon), actions.shape[0])
        for a in actions[:n]:
            if record_cameras:
                for cam, img in sim.render(record_cameras, size=record_size).items():
                    frames[cam].append(img)
            for _ in range(STEPS_PER_ACTION):
                _, _, success, _ = sim.step(a, render=False)
                if success and first is None:
                    first = sim.step_count
            if sim.done or (stop_on_success and sim.ever_success):
                break
    return EpisodeResult(seed=int(seed), success=sim.ever_success, success_at_end=sim.success,
                         max_reward=int(sim.max_reward), physics_steps=sim.step_count, queries=queries,
                         first_success_step=first, frames=frames, values=values)


class ScriptedExpertPolicy:
    """The scripted expert behind the policy interface: ``infer(obs)`` -> the next ``horizon`` 25 Hz actions.

    Useful to check an evaluation loop end to end (chunking, 25 Hz holds) with a policy that succeeds. The
    expert is planned again at every query made at physics step 0 (the first query after a reset).
    """

    def __init__(self, sim: AlohaSim, horizon: int = 50, **expert_kwargs):
        from cosmos_policy_ros.sim.expert import make_expert

        self._make = lambda: make_expert(sim, **expert_kwargs)
        self.sim, self.horizon = sim, int(horizon)
        self._expert = None

    def __call__(self, obs: Observation) -> np.ndarray:
        if self._expert is None or self.sim.step_count == 0:  # first query of an episode: plan the scene
            self._expert = self._make()
        k0 = self.sim.step_count
        # (horizon, 14): action i is held over physics steps k0 + 2i, k0 + 2i + 1 -> target at k0 + 2(i + 1)
        return np.stack([self._expert.action(k0 + STEPS_PER_ACTION * (i + 1)) for i in range(self.horizon)])
