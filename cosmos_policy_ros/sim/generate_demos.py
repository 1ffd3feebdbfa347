"""Scripted demonstrations in the simulated ALOHA, written in the reference's episode HDF5 layout.

    python -m cosmos_policy_ros.sim.generate_demos --task transfer_cube --episodes 50 --out demos/ \
        --image-size 96 96

Timing: physics at 50 Hz, the expert acts at 25 Hz (each action is held for two physics steps, as the
policy does at deployment). Step t of a file: ``observations/*[t]`` is the state at physics step 2t,
before ``action[t]`` is applied for physics steps 2t and 2t+1. One file per episode,
``episode_<i>.hdf5`` (written atomically by ``cosmos_policy_training.episodes.write_episode``):
/observations/qpos, /observations/qvel (T, 14), /observations/images/<cam> (T, H, W, 3) uint8,
/observations/timestamps (T,), /action (T, 14); attrs sim=True, task_description, success (the task
reached reward 4 at some step), success_score (max reward / 4), fps=25, plus task, seed, expert settings.
Images are rendered directly at the requested size (no resize pass).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from cosmos_policy_ros.core.robot import GRIPPER_INDICES
from cosmos_policy_ros.core.types import ALOHA_CAMERAS
from cosmos_policy_ros.sim.aloha_sim import CONTROL_HZ, SUCCESS_REWARD, TASK_DESCRIPTIONS, TASKS, AlohaSim
from cosmos_policy_ros.sim.expert import make_expert

#: Policy / demo rate: every second 50 Hz physics step.
DEMO_HZ = 25


@dataclass
class ExpertEpisode:
    """One expert rollout at ``hz``: obs[t] (qpos, qvel, images) precedes action[t]."""

    qpos: np.ndarray  # (T, 14)
    qvel: np.ndarray  # (T, 14)
    action: np.ndarray  # (T, 14)
    images: Dict[str, np.ndarray]  # cam -> (T, H, W, 3) uint8
    seed: int
    success: bool  # reward 4 reached at some step
    success_at_end: bool  # reward 4 at the last step
    max_reward: int
    first_success_step: Optional[int]  # 50 Hz physics step of the first success, None if never
    hz: int = DEMO_HZ
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.qpos.shape[0])


def rollout_expert(sim: AlohaSim, seed: int, hz: int = DEMO_HZ, render: bool = True,
                   cameras: Optional[Sequence[str]] = None, image_size: Optional[Sequence[int]] = None,
                   execution_noise: float = 0.0, noise_hold: int = 10, render_steps: Optional[Sequence[int]] = None,
                   noise_until: Optional[int] = None, noise_from: int = 0, **expert_kwargs) -> ExpertEpisode:
    """Reset ``sim`` to ``seed``, run the scripted expert for ``sim.config.max_steps`` physics steps at ``hz``.

    The expert is queried once per ``50 // hz`` physics steps for the target at the end of that hold.
    Images (when ``render``) are rendered at ``image_size`` (default: the sim's) for ``cameras``.

    ``execution_noise`` (rad, std): the arm-joint targets *executed* are the expert's plus a Gaussian offset
    redrawn every ``noise_hold`` steps (grippers untouched), while the *recorded* action stays the expert's
    clean target. The episode then visits states beside the nominal trajectory, each labelled with the
    action that leads back to it: the corrections a learnt policy needs once its own errors move it off the
    demonstrations (noise injection during data collection, as in DART).

    ``noise_from`` / ``noise_until``: the noise is applied only at steps ``noise_from <= t < noise_until``
    (None: to the end); elsewhere the expert's own targets are executed.
    ``render_steps``: render only these steps (the other frames stay black); None: every step.
    """
    if CONTROL_HZ % hz:
        raise ValueError(f"expected a rate dividing {CONTROL_HZ} Hz, got {hz}")
    stride = CONTROL_HZ // hz
    cams = tuple(sim.config.cameras if cameras is None else cameras)
    size = tuple(int(v) for v in (image_size or sim.config.image_size))
    sim.reset(seed, render=False)
    expert = make_expert(sim, **expert_kwargs)
    T = sim.config.max_steps // stride
    qpos = np.empty((T, 14))
    qvel = np.empty((T, 14))
    action = np.empty((T, 14))
    images = {c: (np.empty if render_steps is None else np.zeros)((T,) + size + (3,), dtype=np.uint8)
              for c in cams} if render else {}
    first = None
    rng = np.random.default_rng(seed * 7 + 3)
    offset = np.zeros(14)
    for t in range(T):
        qpos[t] = sim.qpos14()
        qvel[t] = sim.qvel14()
        if render and (render_steps is None or t in render_steps):
            for cam, img in sim.render(cams, size=size).items():
                images[cam][t] = img
        a = expert.action(sim.step_count + stride)
        action[t] = a
        if execution_noise > 0 and (t - noise_from) % max(1, int(noise_hold)) == 0:
            offset = rng.normal(0.0, execution_noise, 14)
            offset[list(GRIPPER_INDICES)] = 0.0
        if t < noise_from or (noise_until is not None and t >= noise_until):
            offset = np.zeros(14)
        for _ in range(stride):
            _, _, success, _ = sim.step(a + offset, render=False)
            if success and first is None:
                first = sim.step_count
    return ExpertEpisode(qpos=qpos, qvel=qvel, action=action, images=images, seed=int(seed),
                         success=sim.ever_success, success_at_end=sim.success, max_reward=int(sim.max_reward),
                         first_success_step=first, hz=hz)


def write_demo(path: Path, ep: ExpertEpisode, task: str, expert_kwargs: Dict[str, object],
               scene_start: bool = False, sample_steps: Optional[Sequence[int]] = None,
               settle_steps: Optional[int] = None) -> Path:
    """Write one expert episode in the reference layout (see the module docstring). ``scene_start``: the
    episode's only training sample is its first step (attribute ``sample_until=1``; frames stored with lossless
    LZF compression, since all but the rendered ones are black). ``sample_steps``: these steps are the
    episode's only training samples (attribute ``sample_steps``; LZF as well)."""
    from cosmos_policy_training.episodes import write_episode  # one writer for every episode file

    T = ep.num_steps
    extra = {"sample_until": 1} if scene_start else {}
    if settle_steps is not None:  # physics steps before step 0 (0: gym-aloha's mid-air first frame)
        extra["settle_steps"] = int(settle_steps)
    if sample_steps is not None:
        extra["sample_steps"] = np.asarray(sorted(int(t) for t in sample_steps), dtype=np.int64)
    return write_episode(
        path, qpos=ep.qpos, action=ep.action, images=ep.images, task=TASK_DESCRIPTIONS[task],
        success=ep.success, success_score=ep.max_reward / SUCCESS_REWARD, fps=float(ep.hz), qvel=ep.qvel,
        timestamps=np.arange(T) / float(ep.hz), sim=True,
        extra_attrs={"task": task, "seed": ep.seed, "physics_hz": CONTROL_HZ, "policy_name": "scripted_expert",
                     "success_at_end": ep.success_at_end, "max_reward": ep.max_reward,
                     "first_success_step": -1 if ep.first_success_step is None else ep.first_success_step,
                     "expert_kwargs": json.dumps(expert_kwargs), **extra},
        image_compression="lzf" if scene_start or sample_steps is not None else None)


def generate(task: str, episodes: int, out: Path, image_size: Sequence[int] = (480, 640),
             seed_start: int = 0, cameras: Sequence[str] = ALOHA_CAMERAS, max_steps: int = 400,
             time_scale: float = 1.0, meeting_jitter: float = 0.0, skip_failures: bool = False,
             progress: bool = True, execution_noise: float = 0.0, noise_hold: int = 10, workers: int = 1,
             first_index: int = 0, scene_starts: bool = False, horizon: int = 50,
             sample_steps: Optional[Sequence[int]] = None, noise_until: Optional[int] = None,
             noise_from: int = 0, settle_steps: Optional[int] = None) -> List[Path]:
    """Generate ``episodes`` demos (seeds ``seed_start``...) into ``out``; returns the written paths.

    With ``skip_failures`` failed rollouts are not written and further seeds are tried until
    ``episodes`` files exist (at most 3x as many attempts). ``workers`` > 1 splits the seeds into
    contiguous blocks, one process each (same files as one process; not with ``skip_failures``, whose seeds
    depend on earlier failures). Files are named ``episode_<first_index + i>.hdf5``.

    ``scene_starts``: cheap extra scenes for the policy's first chunk, the only one that must find the object
    from the cameras alone (every episode starts from the same pose). The whole expert episode is simulated and
    its proprio and actions stored, but only steps 0 and ``horizon`` (the first sample's current and future
    frames) are rendered, and step 0 is the file's only training sample: about 10x cheaper per scene than a demo.

    ``sample_steps`` (e.g. 0 50 100, the policy's chunk boundaries): the same for these steps, e.g. the grasp.
    With ``execution_noise`` and ``noise_until`` (and ``noise_from``) the arms reach those steps off the nominal
    path while the recorded actions stay the expert's: samples of the correction back to it.

    ``settle_steps``: :class:`AlohaSim`'s (None: its default, objects resting at step 0; 0: gym-aloha's
    mid-air first frame, which no real robot shows).
    """
    from tqdm import tqdm

    if episodes <= 0:
        raise ValueError(f"expected episodes > 0, got {episodes}")
    if workers < 1:
        raise ValueError(f"expected workers >= 1, got {workers}")
    if scene_starts and sample_steps is not None:
        raise ValueError("generate: give scene_starts or sample_steps, not both")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(image_size=tuple(image_size), cameras=tuple(cameras), max_steps=max_steps, time_scale=time_scale,
              meeting_jitter=meeting_jitter, execution_noise=execution_noise, noise_hold=noise_hold,
              scene_starts=scene_starts, horizon=horizon, sample_steps=sample_steps, noise_until=noise_until,
              noise_from=noise_from, settle_steps=settle_steps)
    if workers > 1 and episodes > 1:
        if skip_failures:
            raise ValueError("generate: workers > 1 cannot be combined with skip_failures")
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        n = min(workers, episodes)
        bounds = [episodes * i // n for i in range(n + 1)]
        ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked GL / MuJoCo state
        with ProcessPoolExecutor(n, mp_context=ctx) as pool:
            futs = [pool.submit(generate, task, b1 - b0, out, seed_start=seed_start + b0, progress=False,
                                first_index=first_index + b0, **kw) for b0, b1 in zip(bounds, bounds[1:])]
            bar = tqdm(total=n, desc=f"{task} demos ({n} workers)", unit="block", disable=not progress)
            paths = []
            for f in futs:
                paths += f.result()
                bar.update(1)
            bar.close()
        return paths
    sim = AlohaSim(task, seed=seed_start, image_size=image_size, cameras=cameras, max_steps=max_steps, render=False,
                   settle_steps=settle_steps)
    kwargs = {"time_scale": time_scale, "meeting_jitter": meeting_jitter, "execution_noise": execution_noise,
              "noise_hold": noise_hold, "noise_until": noise_until, "noise_from": noise_from}
    if sample_steps is not None:
        from cosmos_policy_training.dataset import sample_frames

        render_steps = sample_frames(None, max_steps // (CONTROL_HZ // DEMO_HZ), horizon, sample_steps)
    else:
        render_steps = (0, horizon) if scene_starts else None
    paths: List[Path] = []
    seed = seed_start
    failures = 0
    bar = tqdm(total=episodes, desc=f"{task} demos", unit="ep", disable=not progress)
    try:
        while len(paths) < episodes and seed < seed_start + 3 * episodes:
            ep = rollout_expert(sim, seed, render_steps=render_steps, **kwargs)
            seed += 1
            if not ep.success:
                failures += 1
                if skip_failures:
                    continue
            paths.append(write_demo(out / f"episode_{first_index + len(paths)}.hdf5", ep, task, kwargs,
                                    scene_start=scene_starts, sample_steps=sample_steps,
                                    settle_steps=sim.config.settle_steps))
            bar.update(1)
            bar.set_postfix(failures=failures)
    finally:
        bar.close()
        sim.close()
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI arguments (also usable as a `cosmos-policy` subcommand)."""
    parser.add_argument("--task", choices=TASKS, default="transfer_cube")
    parser.add_argument("--episodes", type=int, required=True, help="number of episode files to write")
    parser.add_argument("--out", type=Path, required=True, help="output folder (episode_<i>.hdf5)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                        help="rendered image size (rendered directly at this size); default 480 640")
    parser.add_argument("--cameras", nargs="+", default=list(ALOHA_CAMERAS))
    parser.add_argument("--seed-start", type=int, default=0, help="first scene seed (seeds are consecutive)")
    parser.add_argument("--max-steps", type=int, default=400, help="50 Hz physics steps per episode (T = max/2)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="stretch (>1) or compress the expert's schedule")
    parser.add_argument("--meeting-jitter", type=float, default=0.0,
                        help="per-episode random offset (m) of the hand-over point, for more varied demos")
    parser.add_argument("--execution-noise", type=float, default=0.0,
                        help="std (rad) of an offset added to the executed arm targets (recorded actions stay clean)")
    parser.add_argument("--noise-hold", type=int, default=10, help="steps each execution-noise offset is held")
    parser.add_argument("--skip-failures", action="store_true", help="do not write failed rollouts")
    parser.add_argument("--workers", type=int, default=1, help="processes, each rendering a block of seeds")
    parser.add_argument("--scene-starts", action="store_true",
                        help="render only steps 0 and 50 and train on step 0 only (extra scenes for the first chunk)")
    parser.add_argument("--sample-steps", type=int, nargs="+", default=None, metavar="T",
                        help="render only these steps and their futures and train on them only (e.g. 0 50 100: "
                             "extra scenes for the grasp's chunks)")
    parser.add_argument("--noise-until", type=int, default=None,
                        help="execution noise only before this step (e.g. 50: reach the grasp chunk off the path)")
    parser.add_argument("--noise-from", type=int, default=0, help="execution noise only from this step on")
    parser.add_argument("--settle-steps", type=int, default=None,
                        help="50 Hz physics steps before step 0 so the objects rest on the table (default: the "
                             "sim's, 25; 0 = gym-aloha's first frame, the cube still in mid-air)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Generate the demos; print a one-line summary."""
    t0 = time.monotonic()
    paths = generate(args.task, args.episodes, args.out, image_size=tuple(args.image_size), seed_start=args.seed_start,
                     cameras=tuple(args.cameras), max_steps=args.max_steps, time_scale=args.time_scale,
                     meeting_jitter=args.meeting_jitter, skip_failures=args.skip_failures,
                     progress=not args.no_progress, execution_noise=args.execution_noise,
                     noise_hold=args.noise_hold, workers=args.workers, scene_starts=args.scene_starts,
                     sample_steps=args.sample_steps, noise_until=args.noise_until, noise_from=args.noise_from,
                     settle_steps=args.settle_steps)
    print(f"wrote {len(paths)} episodes to {args.out} in {time.monotonic() - t0:.1f} s")
    return 0 if len(paths) == args.episodes else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosmos_policy_ros.sim.generate_demos",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
