"""ROS-free policy rollouts in the simulated ALOHA, optionally recorded as training episodes.

The loop is the deployment's timing without the ROS graph: the policy runs at 25 Hz on 50 Hz physics
(each action held for 2 physics steps); a chunk of ``execute`` actions (default: all 50, as the released
deploy) is executed open-loop, then the policy is queried again with a fresh observation. Recorded files
use the episode layout (:mod:`cosmos_policy_training.episodes`): obs[t] before action[t], success, success
score (max reward / 4), policy name; they are training input for the refinement loop.

    python -m cosmos_policy_training.rollouts --policy checkpoints/sim_transfer_cube --episodes 20 \
        --seed-start 1000 --out data/rollouts

``--execution stream`` runs the graph's streaming execution instead (:func:`run_stream_episode`: re-plan while
the robot moves, an inference delay, real-time chunking); with ``--out --expert-labels`` it records DAgger
episodes whose samples are the streaming observation ticks (docs/training.md, "Streaming DAgger"):

    python -m cosmos_policy_training.rollouts --policy checkpoints/sim_transfer_cube --episodes 40 \
        --seed-start 6800 --out runs/stream_dagger --expert-labels --execution stream --delay-ticks 4 10

``--branch-candidates N`` records, per scene, the N candidates best-of-N chooses from at one query, each executed
from the same state (:func:`branch_rollouts`): what the planning model's world model needs to learn what an
action changes (docs/planning.md):

    python -m cosmos_policy_training.rollouts --policy checkpoints/sim_transfer_cube_predict2.5 --episodes 100 \
        --seed-start 8000 --out runs/branches --branch-candidates 8 --branch-query 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

# streaming defaults: the launch files' and the graph benchmark's stream-rtc row (bench/policy_success_ros.py
# RTC_BEST): RTC method, weight schedule, execution horizon (ticks from one observation to the next)
from cosmos_policy_ros.core.chunking import STREAM_RTC_DEFAULTS
from cosmos_policy_ros.core.types import DEFAULT_SEED

# camera frames of the ROS-free loops and of the sim recipe's demos: half the wire size (480x640), so the
# cam_high ROI of the embedded checkpoint keeps its detail; the ROS graph renders 480x640
DEFAULT_IMAGE_SIZE = (240, 320)


@dataclass
class RolloutResult:
    seed: int
    success: bool  # reward 4 reached at some step
    max_reward: int
    steps: int  # 25 Hz steps
    queries: int
    values: List[float] = field(default_factory=list)  # the policy's value estimate at each query
    infer_seconds: float = 0.0
    path: Optional[str] = None
    held_ticks: int = 0  # 25 Hz ticks the robot held waiting for a chunk (streaming loop)
    max_switch_jump: float = 0.0  # largest arm-joint command change (rad) at a tick where a new chunk took over
    success_tick: Optional[int] = None  # robot ticks (held ones included) until the first success
    obs_ticks: List[int] = field(default_factory=list)  # timeline ticks of the policy's observations (streaming loop)
    delay_ticks: Optional[int] = None  # the inference delay the episode ran with (streaming loop)


def expert_actions(sim, seed: int, on_step: Optional[Callable[[int, np.ndarray], None]] = None) -> np.ndarray:
    """(T, 14) the scripted expert's actions for scene ``seed`` at 25 Hz (its own episode in ``sim``, each action
    held for 2 physics steps). The transfer-cube schedule is clocked: its action at step t depends on the scene
    and t only, so these are also its labels for any state a policy reaches at t near the demonstrated path.
    ``on_step(t, action)``: as in :func:`run_episode`, before the sim steps each action."""
    from cosmos_policy_ros.sim.expert import make_expert

    sim.reset(seed, render=False)
    expert = make_expert(sim)
    out = []
    for t in range(sim.config.max_steps // 2):
        a = expert.action(sim.step_count + 2)
        out.append(a)
        if on_step is not None:
            on_step(t, a)
        for _ in range(2):
            sim.step(a, render=False)
    return np.stack(out)


class _TimelineRecorder:
    """One episode file under construction, shared by the pause and the streaming loop: for every tick of the
    episode's timeline (held ticks are not part of it) the joint positions the policy observed, the action
    recorded for the tick (the executed one, or ``labels[t]``: DAgger) and the camera frames (black where
    nothing was rendered)."""

    def __init__(self, cameras: Sequence[str], size: Sequence[int], labels: Optional[np.ndarray]):
        self.size = tuple(size)
        self.labels = labels
        self.qpos: List[np.ndarray] = []
        self.actions: List[np.ndarray] = []
        self.frames: Dict[str, List[np.ndarray]] = {c: [] for c in cameras}
        self._black: Optional[np.ndarray] = None

    def add(self, qpos: np.ndarray, action: np.ndarray, images: Optional[Dict[str, np.ndarray]]) -> None:
        """The next tick: ``qpos`` observed at it, the ``action`` executed at it, its frames (None: black)."""
        t = len(self.qpos)
        self.qpos.append(qpos)
        self.actions.append(action if self.labels is None else np.asarray(self.labels[t], dtype=np.float64))
        for c in self.frames:
            if images is not None:
                self.frames[c].append(images[c])
            else:
                self._black = np.zeros((*self.size, 3), np.uint8) if self._black is None else self._black
                self.frames[c].append(self._black)

    def write(self, path: Path, sim, policy, result: RolloutResult, samples: Optional[Sequence[int]],
              attrs: Dict[str, object]) -> None:
        """Write the episode file. ``samples``: its only training samples (attribute ``sample_steps``; frames
        stored LZF-compressed, black wherever no kept sample or its future reads them); None: every step."""
        from cosmos_policy_ros.sim.aloha_sim import SUCCESS_REWARD, TASK_DESCRIPTIONS
        from .dataset import sample_frames
        from .episodes import write_episode

        frames = {c: np.stack(v) for c, v in self.frames.items()}
        extra = {}
        if samples is not None:
            kept = sorted(int(v) for v in samples)
            extra["sample_steps"] = np.asarray(kept, dtype=np.int64)
            read = set(sample_frames(None, len(self.qpos), policy.horizon, kept))
            unread = [t for t in range(len(self.qpos)) if t not in read]
            for v in frames.values():
                v[unread] = 0
        write_episode(path, np.stack(self.qpos), np.stack(self.actions), frames,
                      task=TASK_DESCRIPTIONS[sim.task], success=result.success,
                      success_score=result.max_reward / SUCCESS_REWARD, fps=25.0, sim=True,
                      extra_attrs={**attrs, **extra}, image_compression=None if samples is None else "lzf")
        result.path = str(path)


def _check_labels(labels: Optional[np.ndarray], T: int, action_dim: int) -> None:
    if labels is not None and np.shape(labels) != (T, action_dim):
        raise ValueError(f"labels: expected ({T}, {action_dim}) actions, got shape {np.shape(labels)}")


def _hold(sim, action: np.ndarray, ticks: int) -> None:
    """Simulate ``ticks`` 25 Hz ticks of the robot holding ``action`` (2 physics steps each, not rendered)."""
    for _ in range(2 * ticks):
        sim.step(action, render=False)


def _reset(policy, sim, seed: int) -> None:
    """Reset ``sim`` to scene ``seed`` and tell a policy that keeps time per episode that one began (a planning
    backend's window counts from the episode start: core.plan_window.PlanGate)."""
    sim.reset(seed, render=False)
    start_episode = getattr(policy, "start_episode", None)
    if callable(start_episode):
        start_episode(sim.time)


def run_episode(policy, sim, seed: int, execute: Optional[int] = None, image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
                record: Optional[Path] = None, policy_seed: Optional[int] = None,
                action_noise: float = 0.0, labels: Optional[np.ndarray] = None,
                on_step: Optional[Callable[[int, np.ndarray], None]] = None,
                sample_steps: Optional[Sequence[int]] = None,
                failure_sample_steps: Optional[Sequence[int]] = None, pause_ticks: int = 0,
                observe_before_pause: bool = False) -> RolloutResult:
    """One episode of ``policy`` in ``sim`` (scene ``seed``); ``record`` -> write the episode file there.

    action_noise: std (rad) of Gaussian noise added to every executed arm-joint target (grippers untouched),
    drawn once per chunk from ``seed`` (a way to collect more varied rollouts for the value function).
    labels: (T, 14) actions to record instead of the executed ones (DAgger: the expert's, :func:`expert_actions`);
    the observations and the outcome stay the policy's. The file's ``action_labels`` attribute says which.
    on_step: called as ``on_step(t, action)`` with each executed action before the sim steps it (``sim`` still
    holds the state the action was chosen in).
    sample_steps: with ``record``, make these steps the file's only training samples (attribute
    ``sample_steps``, e.g. the chunk boundaries 0 50 100 150 where the policy re-plans): only they and their
    futures are rendered and stored, the other frames black (LZF-compressed), as in the grasp-phase files.
    Cameras are rendered only when the policy is queried or a stored frame needs them.
    failure_sample_steps: the sample steps to record instead when the episode fails (a subset of
    ``sample_steps``). DAgger labels are the expert's open-loop plan for the scene, so they stay right only
    while the scene still matches it: e.g. the approach and grasp (0 50) of every episode, the later steps only
    of successes. Frames only the dropped steps read are stored black.
    pause_ticks: before every re-plan after the first, hold the last executed action for this many 25 Hz ticks,
    as the ROS graph's ``execution: pause`` does while the policy thinks (about 10 ticks on a 2-core CPU now
    that the chunk is published before the future images are decoded; 28 before). The held ticks are simulated,
    so the arms settle on their targets as they do on the robot, but they are not part of the episode's timeline
    (not recorded, not counted in its steps).
    observe_before_pause: the graph's order: observe when the chunk runs out, hold ``pause_ticks`` while the
    policy thinks, then execute (the arms settle between the observation and the first action; the recorded
    joint positions are the observed ones). Default: hold, then observe a settled robot and execute at once.
    """
    from .dataset import sample_frames

    execute = int(execute or policy.horizon)
    size = tuple(int(v) for v in image_size)
    _reset(policy, sim, seed)
    T = sim.config.max_steps // 2
    _check_labels(labels, T, policy.layout.action_dim)
    if failure_sample_steps is not None and (sample_steps is None or not set(failure_sample_steps) <= set(sample_steps)):
        raise ValueError(f"failure_sample_steps: expected a subset of sample_steps {sample_steps}, got {failure_sample_steps}")
    rng = np.random.default_rng(seed + 7919)
    stored = None if record is None else set(range(T) if sample_steps is None
                                             else sample_frames(None, T, policy.horizon, sample_steps))
    rec = None if record is None else _TimelineRecorder(policy.layout.cameras, size, labels)
    values = []
    chunk: Optional[np.ndarray] = None
    k = 0
    queries = 0
    t_inf = 0.0
    if pause_ticks < 0:
        raise ValueError(f"pause_ticks: expected >= 0, got {pause_ticks}")
    for t in range(T):
        query = chunk is None or k >= execute
        pause = query and chunk is not None  # the robot holds its last command while the policy thinks
        if pause and not observe_before_pause:
            _hold(sim, chunk[k - 1], pause_ticks)
        obs = sim.policy_observation(size=size) if query or (stored is not None and t in stored) else None
        q_obs = sim.qpos14() if record is not None else None
        if pause and observe_before_pause:
            _hold(sim, chunk[k - 1], pause_ticks)
        if query:
            t0 = time.perf_counter()
            out = policy.infer(obs, seed=policy_seed)
            t_inf += time.perf_counter() - t0
            chunk = np.asarray(out.actions, dtype=np.float64)
            if action_noise > 0:
                noise = rng.normal(0.0, action_noise, chunk.shape)
                noise[:, [6, 13]] = 0.0
                chunk = chunk + noise
            values.append(float(out.value))
            k = 0
            queries += 1
        a = chunk[k]
        k += 1
        if rec is not None:
            rec.add(q_obs, a, None if obs is None else obs.images)
        if on_step is not None:
            on_step(t, a)
        for _ in range(2):  # 25 Hz policy on 50 Hz physics
            sim.step(a, render=False)
    res = RolloutResult(seed=int(seed), success=bool(sim.ever_success), max_reward=int(sim.max_reward), steps=T,
                        queries=queries, values=values, infer_seconds=t_inf)
    if rec is not None:
        kept = sample_steps if res.success or failure_sample_steps is None else failure_sample_steps
        rec.write(record, sim, policy, res, kept,
                  {"policy_name": policy.policy_id, "seed": int(seed), "action_noise": float(action_noise),
                   "execute": execute, "action_labels": "executed" if labels is None else "expert"})
    return res


def run_noisy_expert_episode(sim, seed: int, noise: float, cameras: Sequence[str], record: Optional[Path] = None,
                             image_size: Sequence[int] = DEFAULT_IMAGE_SIZE) -> RolloutResult:
    """The scripted expert at 25 Hz with Gaussian noise (std ``noise`` rad, redrawn every 25 steps, arm
    joints only) on its targets: a source of varied successes AND failures for the value function
    (noise on the waypoints breaks grasps). Recorded like a policy rollout (policy_name
    ``noisy_expert_<noise>``)."""
    from cosmos_policy_ros.sim.aloha_sim import SUCCESS_REWARD, TASK_DESCRIPTIONS
    from cosmos_policy_ros.sim.expert import make_expert

    size = tuple(int(v) for v in image_size)
    sim.reset(seed, render=False)
    expert = make_expert(sim)
    rng = np.random.default_rng(seed * 31 + 17)
    T = sim.config.max_steps // 2
    qpos, actions, frames = [], [], {c: [] for c in cameras}
    offset = np.zeros(14)
    for t in range(T):
        if t % 25 == 0:
            offset = rng.normal(0.0, noise, 14)
            offset[[6, 13]] = 0.0
        a = expert.action(sim.step_count + 2) + offset
        if record is not None:
            qpos.append(sim.qpos14())
            actions.append(a)
            for c, img in sim.render(cameras, size=size).items():
                frames[c].append(img)
        for _ in range(2):
            sim.step(a, render=False)
    res = RolloutResult(seed=int(seed), success=bool(sim.ever_success), max_reward=int(sim.max_reward), steps=T,
                        queries=0)
    if record is not None:
        from .episodes import write_episode
        write_episode(record, np.stack(qpos), np.stack(actions), {c: np.stack(v) for c, v in frames.items()},
                      task=TASK_DESCRIPTIONS[sim.task], success=res.success,
                      success_score=res.max_reward / SUCCESS_REWARD, fps=25.0, sim=True,
                      extra_attrs={"policy_name": f"noisy_expert_{noise:g}", "seed": int(seed)})
        res.path = str(record)
    return res


ARM_JOINTS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]


def run_stream_episode(policy, sim, seed: int, delay_ticks: int, rtc=None, execution_horizon: int = 0,
                       margin_ticks: int = 8, image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
                       policy_seed: Optional[int] = None,
                       on_step: Optional[Callable[[int, np.ndarray], None]] = None,
                       record: Optional[Path] = None, labels: Optional[np.ndarray] = None,
                       failure_sample_until: Optional[int] = None) -> RolloutResult:
    """One episode with the ROS graph's streaming execution, simulated tick by tick without ROS.

    The policy is queried while the robot moves; its chunk becomes available ``delay_ticks`` 25 Hz ticks after
    the observation (the inference delay), and the commander's splice by observation time applies: the new chunk
    takes over at its action ``delay_ticks`` while the running chunk executed the ticks in between. When the
    running chunk ends before the new one arrives the robot holds its last command (counted in ``held_ticks``)
    and the new chunk starts at the action for the tick the hold began. The first chunk starts at its first
    action (the robot stood still while it was computed; those ticks are held ticks too).
    Next observation: ``execution_horizon`` ticks after the last (0: as the policy node's stream schedule, so the
    chunk arrives ``margin_ticks`` before the running one ends: ``horizon - delay_ticks - margin_ticks``).
    rtc: a :class:`cosmos_policy_ros.core.rtc.RtcConfig`; with a method other than off each chunk is inpainted
    toward the running one (frozen prefix ``delay_ticks + rtc.delay_margin``).
    The episode's budget is its ``max_steps`` of executed ticks (held ticks come on top, as in the pause loop).
    on_step: called as ``on_step(t, action)`` with each executed (not held) action, ``t`` its executed-tick number.

    record: write the episode file there (the layout of :func:`run_episode`'s, plus the attributes ``execution``
    "stream", ``delay_ticks``, ``rtc``, ``rtc_schedule``). Its timeline is the executed ticks (held ones are
    simulated, not recorded); row ``t`` holds the joint positions the policy observed at tick ``t`` (at an
    observation tick where the robot then held: the observed ones, from before the hold), the action executed
    at ``t`` or ``labels[t]`` (DAgger: :func:`expert_actions`, the expert's open-loop plan on the same timeline).
    Its training samples (``sample_steps``) are the observation ticks, the inputs streaming gives the policy;
    only they and their futures (``t + horizon``, the frame the dataset reads) are rendered and stored, the other
    frames black (LZF-compressed).
    failure_sample_until: a failed episode keeps only its observation ticks before this tick. The labels are
    the expert's plan for the scene clocked by the tick, right only while the scene still matches it, and a
    failure's scene departs from it at some time; a tick cut-off keeps the same part of the task (e.g. 100: the
    approach and the grasp) whatever the delay and the observation schedule, where a count of observations
    would not. None: every observation tick (the pause recipe also keeps every re-planning step of failures).
    """
    from cosmos_policy_ros.core.rtc import RtcConfig, build_prefix

    rtc = rtc or RtcConfig()
    H = int(policy.horizon)
    d = int(delay_ticks)
    if d < 0:
        raise ValueError(f"delay_ticks: expected >= 0, got {delay_ticks}")
    if failure_sample_until is not None and int(failure_sample_until) < 1:
        raise ValueError(f"failure_sample_until: expected a tick >= 1, got {failure_sample_until}")
    s = int(execution_horizon) or max(1, H - d - int(margin_ticks))
    size = tuple(int(v) for v in image_size)
    _reset(policy, sim, seed)
    T = sim.config.max_steps // 2
    _check_labels(labels, T, policy.layout.action_dim)
    rec = None if record is None else _TimelineRecorder(policy.layout.cameras, size, labels)
    needed = set()  # timeline ticks whose frames a sample reads: each observation tick and its future
    observed = None  # (tick, joint positions, images) of the latest observation, while recording
    obs_ticks: List[int] = []
    chunk: Optional[np.ndarray] = None
    base = 0  # timeline tick of chunk[0]
    pending = None  # (actions, observation tick, arrival tick)
    next_obs = 0
    last: Optional[np.ndarray] = None
    queries, held, t_inf, robot_ticks = 0, 0, 0.0, 0
    jump, success_tick, values = 0.0, None, []

    def tick(a: np.ndarray) -> None:
        nonlocal robot_ticks, success_tick
        for _ in range(2):
            sim.step(a, render=False)
        robot_ticks += 1
        if success_tick is None and sim.ever_success:
            success_tick = robot_ticks

    t = 0
    while t < T:
        if t >= next_obs and pending is None:  # (a new observation waits for the chunk still being computed)
            obs = sim.policy_observation(size=size)
            obs_ticks.append(t)
            if rec is not None:
                observed = (t, np.array(obs.proprio, dtype=np.float64), obs.images)
                needed.update((t, min(t + H, T - 1)))
            prefix = None
            if chunk is not None and rtc.enabled:
                prefix = build_prefix(chunk, base * policy.period, t * policy.period, policy.period, d, rtc)
            t0 = time.perf_counter()
            out = policy.infer(obs, seed=policy_seed, **({"prefix": prefix} if prefix is not None else {}))
            t_inf += time.perf_counter() - t0
            values.append(float(out.value))
            queries += 1
            pending = (np.asarray(out.actions, dtype=np.float64), t, t + (d if chunk is not None else 0))
            next_obs = t + s
        if pending is not None and t >= pending[2]:
            new, obs_t, _ = pending
            pending = None
            base = obs_t
            if chunk is None:  # cold start: the robot stood still (scene at rest) while the first chunk was computed
                held += d
                robot_ticks += d
            if t - base < H:
                if chunk is not None and last is not None:
                    jump = max(jump, float(np.abs(new[t - base][ARM_JOINTS] - last[ARM_JOINTS]).max()))
                chunk = new
        i = t - base
        if chunk is None or i >= H:  # ran out before the next chunk arrived: hold until it does
            if pending is None:
                next_obs = t  # observe now (the policy node's schedule would have done so earlier)
                continue
            if last is not None:
                tick(last)
            else:
                robot_ticks += 1
            held += 1
            pending = (pending[0], pending[1], pending[2] - 1)  # the arrival comes one held tick closer
            continue
        a = chunk[i]
        if rec is not None:
            if observed is not None and observed[0] == t:
                rec.add(observed[1], a, observed[2])
            else:
                rec.add(sim.qpos14(), a, sim.render(size=size) if t in needed else None)
        if on_step is not None:
            on_step(t, a)
        tick(a)
        last = a
        t += 1
    res = RolloutResult(seed=int(seed), success=bool(sim.ever_success), max_reward=int(sim.max_reward), steps=T,
                        queries=queries, values=values, infer_seconds=t_inf, held_ticks=held,
                        max_switch_jump=jump, success_tick=success_tick, obs_ticks=obs_ticks, delay_ticks=d)
    if rec is not None:
        kept = obs_ticks if res.success or failure_sample_until is None else \
            [v for v in obs_ticks if v < int(failure_sample_until)]
        rec.write(record, sim, policy, res, kept,
                  {"policy_name": policy.policy_id, "seed": int(seed), "action_noise": 0.0, "execute": s,
                   "action_labels": "executed" if labels is None else "expert", "execution": "stream",
                   "delay_ticks": d, "rtc": rtc.method, "rtc_schedule": rtc.schedule})
    return res




def episode_delay(seed: int, delay_ticks: Union[int, Sequence[int]]) -> int:
    """The inference delay (25 Hz ticks) of scene ``seed``'s streaming episode: ``delay_ticks`` itself, or for a
    range ``(lo, hi)`` an integer drawn uniformly in ``lo..hi`` (inclusive) from the seed alone, so a rerun, or a
    split of the seeds over several processes, gives every episode the same delay."""
    v = [int(x) for x in np.atleast_1d(delay_ticks)]
    if len(v) not in (1, 2) or min(v) < 0 or v[0] > v[-1]:
        raise ValueError(f"delay_ticks: expected N or a range LO HI with 0 <= LO <= HI, got {list(v)}")
    if v[0] == v[-1]:
        return v[0]
    return int(np.random.default_rng([int(seed), 0xDE1A]).integers(v[0], v[1] + 1))


class BranchPolicy:
    """The base policy, except at its ``query``-th query of an episode (0-based), where it samples the
    ``num_candidates`` chunks best-of-N chooses from (one batch, seeds s, s+1, ...; s = the query's seed or the
    policy's default) and returns candidate ``candidate``.

    Run once per candidate on the same scene, the episodes share everything up to that query (the sim and the
    policy are deterministic) and then branch: each candidate's real future and outcome from one state. Planning
    needs exactly that to learn what an action changes (docs/planning.md, "Does planning pay?")."""

    def __init__(self, policy, query: int, candidate: int, num_candidates: int):
        if query < 0 or not 0 <= candidate < num_candidates:
            raise ValueError(f"branch: expected query >= 0 and 0 <= candidate < num_candidates, got query {query}, "
                             f"candidate {candidate}, num_candidates {num_candidates}")
        self.policy, self.query, self.candidate, self.num_candidates = policy, int(query), int(candidate), int(num_candidates)
        self.calls = 0
        self.policy_id = f"{policy.policy_id}+branch-q{self.query}-c{self.candidate}-of-{self.num_candidates}"

    def __getattr__(self, name):  # horizon, layout, period, ... of the base policy
        return getattr(self.policy, name)

    def infer(self, obs, seed: Optional[int] = None, **kwargs):
        k, self.calls = self.calls, self.calls + 1
        if k != self.query:
            return self.policy.infer(obs, seed=seed, **kwargs)
        s = int(getattr(self.policy, "default_seed", DEFAULT_SEED) if seed is None else seed)
        return self.policy.infer_batch(obs, [s + i for i in range(self.num_candidates)], **kwargs)[self.candidate]


def branch_rollouts(policy, seeds: Sequence[int], out: Path, query: int, num_candidates: int,
                    image_size: Sequence[int] = DEFAULT_IMAGE_SIZE, max_steps: int = 400,
                    progress: bool = True) -> List[RolloutResult]:
    """For every scene seed, ``num_candidates`` episodes that branch at the policy's ``query``-th query
    (:class:`BranchPolicy`; the released deploy's open-loop chunks), recorded as ``out/episode_<seed>_c<i>.hdf5``
    with that query's step as their only training sample (its frames and its future 50 ticks later stored);
    the file's ``branch`` attributes name the scene, the query and the candidate."""
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim

    if num_candidates < 2:
        raise ValueError(f"num_candidates: expected at least 2 branches, got {num_candidates}")
    step = int(query) * int(policy.horizon)
    if query < 0 or step >= max_steps // 2:
        raise ValueError(f"query: expected a query of the episode (0..{(max_steps // 2 - 1) // policy.horizon}), "
                         f"got {query}")
    sim = AlohaSim("transfer_cube", seed=int(seeds[0]), image_size=tuple(image_size), cameras=policy.layout.cameras,
                   max_steps=max_steps, render=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for s in seeds:
            outcomes = []
            for i in range(num_candidates):
                branch = BranchPolicy(policy, query, i, num_candidates)
                path = out / f"episode_{int(s)}_c{i}.hdf5"
                r = run_episode(branch, sim, int(s), image_size=image_size, record=path, sample_steps=[step])
                _set_attrs(path, {"branch_seed": int(s), "branch_query": int(query), "branch_step": step,
                                  "branch_candidate": i, "branch_candidates": int(num_candidates)})
                results.append(r)
                outcomes.append(r.success)
            if progress:
                print(f"  seed {s}: branches at step {step}: {sum(outcomes)}/{num_candidates} succeed "
                      f"{''.join('+' if o else '-' for o in outcomes)}", flush=True)
    finally:
        sim.close()
    return results


def _set_attrs(path: Path, attrs: Dict[str, object]) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        for k, v in attrs.items():
            f.attrs[k] = v


def rollout_many(policy, seeds: Sequence[int], out: Optional[Path] = None, execute: Optional[int] = None,
                 image_size: Sequence[int] = DEFAULT_IMAGE_SIZE, action_noise: float = 0.0,
                 progress: bool = True, max_steps: int = 400, expert_labels: bool = False,
                 settle_steps: Optional[int] = None, sample_steps: Optional[Sequence[int]] = None,
                 failure_sample_steps: Optional[Sequence[int]] = None, pause_ticks: int = 0,
                 observe_before_pause: bool = False, execution: str = "pause",
                 delay_ticks: Union[int, Sequence[int]] = 0, rtc=None, execution_horizon: int = 0,
                 margin_ticks: int = 8, failure_sample_until: Optional[int] = None,
                 policy_seed: Optional[int] = None) -> List[RolloutResult]:
    """Run one episode per scene seed (and record each to ``out/episode_<seed>.hdf5`` when ``out``);
    ``expert_labels``: record the scripted expert's actions for the visited states (DAgger data).
    ``settle_steps``: the sim's (None: objects at rest at step 0; 0: gym-aloha's mid-air first frame).
    ``sample_steps``, ``failure_sample_steps``, ``pause_ticks``, ``observe_before_pause``: see
    :func:`run_episode` (``execution="pause"``, the default).
    ``execution="stream"``: :func:`run_stream_episode` with ``rtc``, ``execution_horizon``, ``margin_ticks`` and
    ``failure_sample_until``; ``delay_ticks``: N, or a range (LO, HI) drawn per episode (:func:`episode_delay`).
    ``policy_seed``: the sampling seed of every query (None: the policy's ``default_seed``, the released 195)."""
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim

    if execution not in ("pause", "stream"):
        raise ValueError(f"execution: expected 'pause' or 'stream', got {execution!r}")
    if execution == "stream":
        pause_only = {"execute": execute, "action_noise": action_noise or None, "sample_steps": sample_steps,
                      "failure_sample_steps": failure_sample_steps, "pause_ticks": pause_ticks or None,
                      "observe_before_pause": observe_before_pause or None}
        given = [k for k, v in pause_only.items() if v is not None]
        if given:
            raise ValueError(f"execution 'stream': {given} apply to execution 'pause' only (streaming samples are "
                             f"its observation ticks)")
        episode_delay(0, delay_ticks)  # validated before the first episode
    elif failure_sample_until is not None:
        raise ValueError("failure_sample_until applies to execution 'stream' (pause: failure_sample_steps)")

    sim = AlohaSim("transfer_cube", seed=int(seeds[0]), image_size=tuple(image_size), cameras=policy.layout.cameras,
                   max_steps=max_steps, render=False, settle_steps=settle_steps)
    results = []
    try:
        for i, s in enumerate(seeds):
            rec = None if out is None else Path(out) / f"episode_{int(s)}.hdf5"
            if rec is not None:
                rec.parent.mkdir(parents=True, exist_ok=True)
            labels = expert_actions(sim, int(s)) if expert_labels else None
            if execution == "stream":
                r = run_stream_episode(policy, sim, int(s), episode_delay(int(s), delay_ticks), rtc=rtc,
                                       execution_horizon=execution_horizon, margin_ticks=margin_ticks,
                                       image_size=image_size, record=rec, labels=labels,
                                       failure_sample_until=failure_sample_until, policy_seed=policy_seed)
            else:
                r = run_episode(policy, sim, int(s), execute=execute, image_size=image_size, record=rec,
                                action_noise=action_noise, labels=labels, sample_steps=sample_steps,
                                failure_sample_steps=failure_sample_steps, pause_ticks=pause_ticks,
                                observe_before_pause=observe_before_pause, policy_seed=policy_seed)
            results.append(r)
            if progress:
                extra = "" if execution != "stream" else \
                    f", delay {r.delay_ticks} ticks, observed at {r.obs_ticks}, held {r.held_ticks} ticks"
                print(f"  seed {s}: {'success' if r.success else 'failure'} (max reward {r.max_reward}), "
                      f"values {[round(v, 3) for v in r.values]}{extra}", flush=True)
    finally:
        sim.close()
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    from cosmos_policy_ros.core.policy import load_policy

    p = argparse.ArgumentParser(prog="python -m cosmos_policy_training.rollouts", description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed-start", type=int, default=1000)
    p.add_argument("--out", type=Path, default=None, help="record episodes here")
    p.add_argument("--execute", type=int, default=None, help="actions executed per chunk (default: all)")
    p.add_argument("--action-noise", type=float, default=0.0)
    p.add_argument("--expert-labels", action="store_true",
                   help="record the scripted expert's actions for the states the policy visits (DAgger data; "
                        "train on the files as --demos)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--policy-seed", type=int, default=None,
                   help="sampling seed of every query (default: the policy's, the released deploy's 195)")
    p.add_argument("--max-steps", type=int, default=400,
                   help="physics steps per episode (50 Hz; default 400: 8 s, 200 policy ticks)")
    p.add_argument("--settle-steps", type=int, default=None,
                   help="physics steps before step 0 (default: the sim's, objects at rest; 0 = gym-aloha's mid-air start)")
    p.add_argument("--sample-steps", type=int, nargs="+", default=None,
                   help="record only these steps as training samples (e.g. 0 50 100 150, where the policy "
                        "re-plans): only they and their futures are rendered and stored")
    p.add_argument("--failure-sample-steps", type=int, nargs="+", default=None,
                   help="with --sample-steps: the steps kept when an episode fails (e.g. 0 50: with --expert-labels "
                        "the expert's plan no longer fits a scene the policy got wrong later on)")
    p.add_argument("--pause-ticks", type=int, default=0,
                   help="hold the last action this many 25 Hz ticks before each re-plan, as the ROS graph's "
                        "execution:=pause does while the policy thinks (about 10 on a 2-core CPU; default 0)")
    p.add_argument("--observe-before-pause", action="store_true",
                   help="with --pause-ticks, the graph's order: observe when a chunk runs out, then hold while the "
                        "policy thinks (default: hold, then observe the settled robot)")
    g = p.add_argument_group("streaming (--execution stream: re-plan while the robot moves, as the graph's "
                             "execution:=stream; recorded samples are the observation ticks)")
    g.add_argument("--execution", choices=("pause", "stream"), default="pause",
                   help="pause (default): run each chunk to its end, then re-plan; stream: the graph's streaming "
                        "splice with an inference delay (docs/runtime.md)")
    g.add_argument("--delay-ticks", type=int, nargs="+", default=None, metavar="TICKS",
                   help="stream: the inference delay in 25 Hz ticks, or LO HI for a delay drawn per episode from "
                        "its seed (e.g. 4 10: the real delay varies)")
    g.add_argument("--rtc", choices=("off", "replace", "guided"), default=None,
                   help=f"stream: real-time chunking method (default {STREAM_RTC_DEFAULTS[0]}, the graph "
                        "benchmark's stream-rtc row)")
    g.add_argument("--rtc-schedule", choices=("exp", "linear", "ones", "zeros"), default=None,
                   help=f"stream: RTC weights past the frozen prefix (default {STREAM_RTC_DEFAULTS[1]})")
    g.add_argument("--rtc-delay-margin", type=int, default=None, help="stream: ticks frozen beyond the delay (default 2)")
    g.add_argument("--rtc-beta", type=float, default=None, help="stream: guidance cap (default 5)")
    g.add_argument("--execution-horizon", type=int, default=None,
                   help=f"stream: ticks from one observation to the next (default {STREAM_RTC_DEFAULTS[2]} with RTC, "
                        "0 without: the just-in-time schedule, horizon - delay - --margin-ticks)")
    g.add_argument("--margin-ticks", type=int, default=None,
                   help="stream, execution horizon 0: the chunk arrives this many ticks before the running one "
                        "ends (default 8, the policy node's replan_margin 0.3 s)")
    g.add_argument("--failure-sample-until", type=int, default=None, metavar="TICK",
                   help="stream, recorded: a failed episode keeps only its observation ticks before TICK (with "
                        "--expert-labels the expert's plan fits a failed scene only up to some time; default: all)")
    g = p.add_argument_group("branches (best-of-N's candidates executed from one state: planning-model data)")
    g.add_argument("--branch-candidates", type=int, default=None, metavar="N",
                   help="per scene, N episodes that branch at the --branch-query-th query into the N candidates the "
                        "policy samples there (seeds s, s+1, ...), each then run by the base policy to the end; "
                        "recorded as episode_<seed>_c<i>.hdf5 with that step as the only sample")
    g.add_argument("--branch-query", type=int, default=1, help="the query that branches (0: the first; default 1, "
                                                               "step 50: the grasp)")
    args = p.parse_args(argv)
    if args.branch_candidates is not None:
        other = {"--execute": args.execute is not None, "--action-noise": args.action_noise != 0,
                 "--expert-labels": args.expert_labels, "--sample-steps": args.sample_steps is not None,
                 "--failure-sample-steps": args.failure_sample_steps is not None, "--pause-ticks": args.pause_ticks != 0,
                 "--execution stream": args.execution != "pause", "--settle-steps": args.settle_steps is not None,
                 "--policy-seed": args.policy_seed is not None}
        given = [k for k, v in other.items() if v]
        if given:
            p.error(f"--branch-candidates: not with {', '.join(given)} (branches run the open-loop chunks and record "
                    f"the branching step)")
        if args.out is None:
            p.error("--branch-candidates records episodes: give --out")
        import torch
        torch.set_num_threads(args.threads)
        policy = load_policy(args.policy, decode_future_images=False)
        try:
            res = branch_rollouts(policy, list(range(args.seed_start, args.seed_start + args.episodes)), args.out,
                                  args.branch_query, args.branch_candidates, max_steps=args.max_steps)
        except ValueError as e:
            p.error(str(e))
        print(json.dumps({"scenes": args.episodes, "episodes": len(res), "successes": sum(r.success for r in res)}))
        return 0
    stream_opts = {"--delay-ticks": args.delay_ticks, "--rtc": args.rtc, "--rtc-schedule": args.rtc_schedule,
                   "--rtc-delay-margin": args.rtc_delay_margin, "--rtc-beta": args.rtc_beta,
                   "--execution-horizon": args.execution_horizon, "--margin-ticks": args.margin_ticks,
                   "--failure-sample-until": args.failure_sample_until}
    stream = {}
    if args.execution == "pause":
        given = [k for k, v in stream_opts.items() if v is not None]
        if given:
            p.error(f"{', '.join(given)}: give --execution stream")
    else:
        pause_opts = {"--execute": args.execute is not None, "--action-noise": args.action_noise != 0,
                      "--sample-steps": args.sample_steps is not None,
                      "--failure-sample-steps": args.failure_sample_steps is not None,
                      "--pause-ticks": args.pause_ticks != 0, "--observe-before-pause": args.observe_before_pause}
        given = [k for k, v in pause_opts.items() if v]
        if given:
            p.error(f"{', '.join(given)}: not with --execution stream (its samples are the observation ticks)")
        if args.delay_ticks is None:
            p.error("--execution stream needs --delay-ticks (the inference delay in 25 Hz ticks, or a range LO HI)")
        try:
            episode_delay(0, args.delay_ticks)
        except ValueError as e:
            p.error(f"--delay-ticks: {e}")
        if args.failure_sample_until is not None and (args.out is None or args.failure_sample_until < 1):
            p.error("--failure-sample-until: expected a tick >= 1, with --out")
        from cosmos_policy_ros.core.rtc import RtcConfig
        try:
            rtc = RtcConfig(args.rtc or STREAM_RTC_DEFAULTS[0], args.rtc_schedule or STREAM_RTC_DEFAULTS[1],
                            beta=5.0 if args.rtc_beta is None else args.rtc_beta,
                            delay_margin=2 if args.rtc_delay_margin is None else args.rtc_delay_margin)
        except ValueError as e:
            p.error(str(e))
        horizon = args.execution_horizon
        if horizon is None:
            horizon = STREAM_RTC_DEFAULTS[2] if rtc.enabled else 0
        if horizon < 0 or (args.margin_ticks is not None and args.margin_ticks < 0):
            p.error("--execution-horizon and --margin-ticks: expected >= 0")
        stream = {"execution": "stream", "delay_ticks": args.delay_ticks, "rtc": rtc, "execution_horizon": horizon,
                  "margin_ticks": 8 if args.margin_ticks is None else args.margin_ticks,
                  "failure_sample_until": args.failure_sample_until}
    if args.pause_ticks < 0:
        p.error(f"--pause-ticks: expected >= 0, got {args.pause_ticks}")
    if args.policy_seed is not None and args.policy_seed < 0:
        p.error(f"--policy-seed: expected >= 0, got {args.policy_seed}")
    if args.max_steps < 2:
        p.error(f"--max-steps: expected >= 2 physics steps, got {args.max_steps}")
    if args.failure_sample_steps is not None and args.sample_steps is None:
        p.error("--failure-sample-steps needs --sample-steps")
    if args.sample_steps is not None and args.out is None:
        p.error("--sample-steps chooses what is recorded: give --out")
    if args.expert_labels and args.out is None:
        p.error("--expert-labels records episodes: give --out")
    import torch
    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, decode_future_images=False)
    res = rollout_many(policy, list(range(args.seed_start, args.seed_start + args.episodes)), out=args.out,
                       max_steps=args.max_steps, execute=args.execute, action_noise=args.action_noise, expert_labels=args.expert_labels,
                       settle_steps=args.settle_steps, sample_steps=args.sample_steps,
                       failure_sample_steps=args.failure_sample_steps, pause_ticks=args.pause_ticks,
                       observe_before_pause=args.observe_before_pause, policy_seed=args.policy_seed, **stream)
    summary = {"episodes": len(res), "successes": sum(r.success for r in res)}
    if stream:
        summary["observations_per_episode"] = sum(len(r.obs_ticks) for r in res) / max(1, len(res))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
