"""ROS-free policy rollouts in the simulated ALOHA, optionally recorded as training episodes.

The loop is the deployment's timing without the ROS graph: the policy runs at 25 Hz on 50 Hz physics
(each action held for 2 physics steps); a chunk of ``execute`` actions (default: all 50, as the released
deploy) is executed open-loop, then the policy is queried again with a fresh observation. Recorded files
use the episode layout (:mod:`cosmos_policy_training.episodes`): obs[t] before action[t], success, success
score (max reward / 4), policy name; they are training input for the refinement loop.

    python -m cosmos_policy_training.rollouts --policy checkpoints/sim_transfer_cube --episodes 20 \
        --seed-start 1000 --out data/rollouts
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

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


def _hold(sim, action: np.ndarray, ticks: int) -> None:
    """Simulate ``ticks`` 25 Hz ticks of the robot holding ``action`` (2 physics steps each, not rendered)."""
    for _ in range(2 * ticks):
        sim.step(action, render=False)


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
    of successes.
    pause_ticks: before every re-plan after the first, hold the last executed action for this many 25 Hz ticks,
    as the ROS graph's ``execution: pause`` does while the policy thinks (about 10 ticks on a 2-core CPU now
    that the chunk is published before the future images are decoded; 28 before). The held ticks are simulated,
    so the arms settle on their targets as they do on the robot, but they are not part of the episode's timeline
    (not recorded, not counted in its steps).
    observe_before_pause: the graph's order: observe when the chunk runs out, hold ``pause_ticks`` while the
    policy thinks, then execute (the arms settle between the observation and the first action; the recorded
    joint positions are the observed ones). Default: hold, then observe a settled robot and execute at once.
    """
    from cosmos_policy_ros.sim.aloha_sim import SUCCESS_REWARD, TASK_DESCRIPTIONS
    from .dataset import sample_frames

    execute = int(execute or policy.horizon)
    size = tuple(int(v) for v in image_size)
    sim.reset(seed, render=False)
    T = sim.config.max_steps // 2
    if labels is not None and np.shape(labels) != (T, policy.layout.action_dim):
        raise ValueError(f"labels: expected ({T}, {policy.layout.action_dim}) actions, got shape {np.shape(labels)}")
    if failure_sample_steps is not None and (sample_steps is None or not set(failure_sample_steps) <= set(sample_steps)):
        raise ValueError(f"failure_sample_steps: expected a subset of sample_steps {sample_steps}, got {failure_sample_steps}")
    rng = np.random.default_rng(seed + 7919)
    stored = None if record is None else set(range(T) if sample_steps is None
                                             else sample_frames(None, T, policy.horizon, sample_steps))
    qpos, actions, frames, values = [], [], {c: [] for c in policy.layout.cameras}, []
    black = None
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
        if record is not None:
            qpos.append(q_obs)
            actions.append(a if labels is None else np.asarray(labels[t], dtype=np.float64))
            for c in frames:
                if obs is not None:
                    frames[c].append(obs.images[c])
                else:
                    black = np.zeros((*size, 3), np.uint8) if black is None else black
                    frames[c].append(black)
        if on_step is not None:
            on_step(t, a)
        for _ in range(2):  # 25 Hz policy on 50 Hz physics
            sim.step(a, render=False)
    res = RolloutResult(seed=int(seed), success=bool(sim.ever_success), max_reward=int(sim.max_reward), steps=T,
                        queries=queries, values=values, infer_seconds=t_inf)
    if record is not None:
        from .episodes import write_episode
        kept = sample_steps if res.success or failure_sample_steps is None else failure_sample_steps
        extra = {} if kept is None else {"sample_steps": np.asarray(sorted(int(v) for v in kept), dtype=np.int64)}
        write_episode(record, np.stack(qpos), np.stack(actions), {c: np.stack(v) for c, v in frames.items()},
                      task=TASK_DESCRIPTIONS[sim.task], success=res.success,
                      success_score=res.max_reward / SUCCESS_REWARD,
                      fps=25.0, sim=True, extra_attrs={"policy_name": policy.policy_id, "seed": int(seed),
                                                      "action_noise": float(action_noise), "execute": execute,
                                                      "action_labels": "executed" if labels is None else "expert",
                                                      **extra},
                      image_compression=None if sample_steps is None else "lzf")
        res.path = str(record)
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
                       on_step: Optional[Callable[[int, np.ndarray], None]] = None) -> RolloutResult:
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
    """
    from cosmos_policy_ros.core.rtc import RtcConfig, build_prefix

    rtc = rtc or RtcConfig()
    H = int(policy.horizon)
    d = int(delay_ticks)
    if d < 0:
        raise ValueError(f"delay_ticks: expected >= 0, got {delay_ticks}")
    s = int(execution_horizon) or max(1, H - d - int(margin_ticks))
    size = tuple(int(v) for v in image_size)
    sim.reset(seed, render=False)
    T = sim.config.max_steps // 2
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
        if on_step is not None:
            on_step(t, a)
        tick(a)
        last = a
        t += 1
    return RolloutResult(seed=int(seed), success=bool(sim.ever_success), max_reward=int(sim.max_reward), steps=T,
                         queries=queries, values=values, infer_seconds=t_inf, held_ticks=held,
                         max_switch_jump=jump, success_tick=success_tick)


def rollout_many(policy, seeds: Sequence[int], out: Optional[Path] = None, execute: Optional[int] = None,
                 image_size: Sequence[int] = DEFAULT_IMAGE_SIZE, action_noise: float = 0.0,
                 progress: bool = True, max_steps: int = 400, expert_labels: bool = False,
                 settle_steps: Optional[int] = None, sample_steps: Optional[Sequence[int]] = None,
                 failure_sample_steps: Optional[Sequence[int]] = None, pause_ticks: int = 0,
                 observe_before_pause: bool = False) -> List[RolloutResult]:
    """Run one episode per scene seed (and record each to ``out/episode_<seed>.hdf5`` when ``out``);
    ``expert_labels``: record the scripted expert's actions for the visited states (DAgger data).
    ``settle_steps``: the sim's (None: objects at rest at step 0; 0: gym-aloha's mid-air first frame).
    ``sample_steps``, ``failure_sample_steps``, ``pause_ticks``, ``observe_before_pause``: see
    :func:`run_episode`."""
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim

    sim = AlohaSim("transfer_cube", seed=int(seeds[0]), image_size=tuple(image_size), cameras=policy.layout.cameras,
                   max_steps=max_steps, render=False, settle_steps=settle_steps)
    results = []
    try:
        for i, s in enumerate(seeds):
            rec = None if out is None else Path(out) / f"episode_{int(s)}.hdf5"
            if rec is not None:
                rec.parent.mkdir(parents=True, exist_ok=True)
            labels = expert_actions(sim, int(s)) if expert_labels else None
            r = run_episode(policy, sim, int(s), execute=execute, image_size=image_size, record=rec,
                            action_noise=action_noise, labels=labels, sample_steps=sample_steps,
                            failure_sample_steps=failure_sample_steps, pause_ticks=pause_ticks,
                            observe_before_pause=observe_before_pause)
            results.append(r)
            if progress:
                print(f"  seed {s}: {'success' if r.success else 'failure'} (max reward {r.max_reward}), "
                      f"values {[round(v, 3) for v in r.values]}", flush=True)
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
    args = p.parse_args(argv)
    if args.pause_ticks < 0:
        p.error(f"--pause-ticks: expected >= 0, got {args.pause_ticks}")
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
                       execute=args.execute, action_noise=args.action_noise, expert_labels=args.expert_labels,
                       settle_steps=args.settle_steps, sample_steps=args.sample_steps,
                       failure_sample_steps=args.failure_sample_steps, pause_ticks=args.pause_ticks,
                       observe_before_pause=args.observe_before_pause)
    print(json.dumps({"episodes": len(res), "successes": sum(r.success for r in res)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
