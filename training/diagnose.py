"""Why does a sim policy fail? Closed-loop success on training vs held-out scenes, and open-loop chunk error.

    python -m cosmos_policy_training.diagnose --policy checkpoints/sim_transfer_cube \
        --train-demos data/sim_demos --train-seeds 0..29 --heldout-seeds 1000..1019

Three measurements, each separating one family of causes:

1. **Closed-loop success on the training scenes vs held-out scenes** (ROS-free sim loop). High on training
   scenes and low on held-out ones is overfitting (memorised episodes); low on both is underfitting or a
   train/inference mismatch.
2. **Open-loop chunk error on demo frames**: the policy's sampled chunk for a demo observation against the
   demo's next ``horizon`` actions (mean absolute error in robot units: arm joints in rad, grippers 0..1),
   on training demos and on held-out demos (fresh expert episodes of the held-out seeds). Compared against a
   *blind* baseline: the per-step mean of the training demos' chunks, which knows the time step but not
   the scene. A policy no better than the blind chunk does not use what its cameras see.
3. **Error by phase** (the step ``t`` of the observation): where in the task the chunk goes wrong.
4. ``--trace SEED``: one closed-loop episode against the scripted expert of the same scene, every 10 steps:
   per arm the joint furthest from the expert's action (policy command, expert action, arm state) and the
   joints whose command sits on the statistics' bound (clipped), the gripper commands, and the reward so far.
   Where a rollout leaves the demonstrated path, and whether clipping holds it there.
5. ``--grasp SEEDS``: where the right gripper is relative to the cube (cm, policy minus expert) at the steps
   of the descent onto it, and the first step a right finger touches the cube (the expert's first touch is the
   grasp itself; a policy's much earlier touch is its descent landing on the cube and pushing it away).

Nothing here changes the policy; the JSON written with ``--out`` holds every number.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from cosmos_policy_ros.core.robot import ARM_INDICES, GRIPPER_INDICES

ARM = np.array(ARM_INDICES)
GRIP = np.array(GRIPPER_INDICES)


def parse_seeds(text: str) -> List[int]:
    """"0..29" -> [0, ..., 29]; "3,5,9" -> [3, 5, 9]."""
    if ".." in text:
        a, b = text.split("..")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",") if s.strip()]


def chunk_errors(pred: np.ndarray, target: np.ndarray) -> Dict[str, float]:
    """Mean absolute error of a (H, 14) chunk against the demonstrated one: arm joints (rad) and grippers."""
    err = np.abs(np.asarray(pred, np.float64) - np.asarray(target, np.float64))
    return {"arm_rad": float(err[:, ARM].mean()), "gripper": float(err[:, GRIP].mean()),
            "arm_rad_first10": float(err[:10, ARM].mean())}


def demo_observation(policy, ep, t: int):
    """The policy's observation at step ``t`` of a recorded episode (its cameras, proprio and task; 25 Hz)."""
    from cosmos_policy_ros.core.types import Observation

    return Observation(images={c: ep.images[c][t] for c in policy.layout.cameras}, proprio=ep.qpos[t],
                       instruction=ep.task, stamp=t / 25.0)


def open_loop(policy, episodes, times: Sequence[int], blind: Dict[int, np.ndarray], seed: int = 195) -> Dict:
    """Per observation step t: mean chunk error of the policy and of the blind chunk over ``episodes``."""
    from .dataset import action_chunk

    rows = {}
    H = policy.horizon
    for t in times:
        pol, bl = [], []
        for ep in episodes:
            if t >= ep.num_steps:
                continue
            obs = demo_observation(policy, ep, t)
            target = action_chunk(ep.action, t, H)
            out = policy.infer(obs, seed=seed)
            pol.append(chunk_errors(out.actions, target))
            bl.append(chunk_errors(blind[t], target))
        rows[t] = {"policy": {k: float(np.mean([r[k] for r in pol])) for k in pol[0]},
                   "blind": {k: float(np.mean([r[k] for r in bl])) for k in bl[0]}, "n": len(pol)}
    return rows


def t0_readout(policy, episodes, step: int = 49, seed: int = 195) -> Dict:
    """Does the first chunk depend on where the cube is? Every demo starts from the same pose, so at t = 0
    only the cameras tell the scenes apart. For each episode: the policy's chunk for its t = 0 observation,
    action ``step`` of it against the demo's ``action[step]``, right-arm joints (rad). Returns per joint the
    across-episode std of the prediction and of the demos, their correlation, and the mean absolute error of
    the policy and of the demos' mean (a policy that ignores the images has std ~0 and the mean's error).
    """
    from cosmos_policy_ros.core.robot import RIGHT_GRIPPER

    joints = np.arange(RIGHT_GRIPPER - 6, RIGHT_GRIPPER)  # right arm: the arm that reaches for the cube
    pred, target = [], []
    for ep in episodes:
        pred.append(np.asarray(policy.infer(demo_observation(policy, ep, 0), seed=seed).actions, np.float64)[step, joints])
        target.append(np.asarray(ep.action, np.float64)[min(step, ep.num_steps - 1), joints])
    pred, target = np.stack(pred), np.stack(target)  # (E, 6)
    corr = [float(np.corrcoef(pred[:, j], target[:, j])[0, 1]) if pred[:, j].std() > 0 and target[:, j].std() > 0
            else 0.0 for j in range(len(joints))]
    return {"episodes": len(episodes), "step": step,
            "pred_std": pred.std(0).round(4).tolist(), "demo_std": target.std(0).round(4).tolist(),
            "corr": np.round(corr, 3).tolist(), "policy_mae": float(np.abs(pred - target).mean()),
            "mean_mae": float(np.abs(target.mean(0) - target).mean())}


def closed_loop(policy, seeds: Sequence[int], execute: Optional[int] = None) -> Dict:
    """Success and max-reward histogram of ``policy`` over scene ``seeds`` (ROS-free sim loop)."""
    from .rollouts import rollout_many

    res = rollout_many(policy, list(seeds), execute=execute, progress=False)
    hist = [sum(1 for r in res if r.max_reward == k) for k in range(5)]
    return {"episodes": len(res), "success": int(sum(r.success for r in res)), "max_reward_hist": hist,
            "touched": int(sum(1 for r in res if r.max_reward >= 1))}


def trace_against_expert(policy, sim, seed: int, execute: Optional[int] = None, every: int = 10,
                         image_size: Optional[Sequence[int]] = None) -> Dict:
    """One closed-loop episode of ``policy`` in ``sim`` (scene ``seed``) beside the scripted expert's actions
    for the same scene (the expert's own rollout). Rows every ``every`` 25 Hz steps; each arm: ``joint`` (index
    in 0..13 of the arm joint furthest from the expert's action), ``policy`` / ``expert`` / ``state`` of that
    joint (rad), ``err`` and ``at_bound`` (the arm joints whose command lies within 1e-6 rad, the float32
    output's resolution, of the policy's actions_min or actions_max: clipped). The policy's episode is
    ``rollouts.run_episode``'s."""
    from .rollouts import DEFAULT_IMAGE_SIZE, expert_actions, run_episode

    ref = expert_actions(sim, seed)
    expert_success = bool(sim.ever_success)
    lo, hi = np.asarray(policy.stats.actions_min), np.asarray(policy.stats.actions_max)
    rows: List[Dict] = []

    def on_step(t: int, a: np.ndarray) -> None:
        if t % every:
            return
        q = sim.qpos14()
        row: Dict[str, object] = {"t": t, "reward": int(sim.max_reward),
                                  "gripper": [float(a[6]), float(ref[t][6]), float(a[13]), float(ref[t][13])]}
        for side, dims in (("left", ARM[ARM < 7]), ("right", ARM[ARM >= 7])):
            err = np.abs(a[dims] - ref[t][dims])
            j = int(dims[int(np.argmax(err))])
            bound = [int(d) for d in dims if np.isclose(a[d], lo[d], rtol=0, atol=1e-6)
                     or np.isclose(a[d], hi[d], rtol=0, atol=1e-6)]
            row[side] = {"joint": j, "policy": float(a[j]), "expert": float(ref[t][j]), "state": float(q[j]),
                         "err": float(err.max()), "at_bound": bound}
        rows.append(row)

    res = run_episode(policy, sim, seed, execute=execute, image_size=image_size or DEFAULT_IMAGE_SIZE, on_step=on_step)
    return {"seed": int(seed), "success": res.success, "max_reward": res.max_reward,
            "expert_success": expert_success, "execute": int(execute or policy.horizon), "rows": rows}


GRASP_TIMES = (45, 55, 65)  # the expert hovers 7 cm above the cube at t = 45 and is down at t = 65


def grasp_against_expert(policy, sim, seed: int, times: Sequence[int] = GRASP_TIMES, execute: Optional[int] = None,
                         image_size: Optional[Sequence[int]] = None) -> Dict:
    """The grasp of one closed-loop episode of ``policy`` against the scripted expert's (scene ``seed``).

    ``offset_cm[t]``: (right gripper_link - cube) of the policy minus the same for the expert, xyz in cm, at each
    of ``times`` (world frame; the cube's own displacement by an early touch counts in it). ``first_touch``:
    the first 25 Hz step at which a right finger touches the cube (None: never), for both; ``cube_pushed_cm``:
    how far the policy moved the cube in the table plane before the expert's first touch."""
    import mujoco

    from .rollouts import DEFAULT_IMAGE_SIZE, expert_actions, run_episode

    body = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, "vx300s_right/gripper_link")
    box = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_GEOM, "red_box")
    fingers = {mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_GEOM, f"vx300s_right/10_{f}_gripper_finger")
               for f in ("left", "right")}
    if min(body, box, *fingers) < 0:
        raise ValueError("grasp check: expected the transfer-cube scene (red_box, right gripper fingers)")
    want = {int(t) for t in times}

    def watcher(rel: Dict[int, np.ndarray], first: List[Optional[int]], cube: Optional[Dict[int, np.ndarray]] = None):
        def on_step(t: int, a: np.ndarray) -> None:
            pos = sim.object_qpos()[:3]
            if cube is not None:
                cube[t] = pos.copy()
            if t in want:
                rel[t] = sim.data.xpos[body] - pos
            if first[0] is None and any(box in pair and (pair[0] in fingers or pair[1] in fingers)
                                        for pair in sim.contact_pairs()):
                first[0] = t
        return on_step

    rel_e: Dict[int, np.ndarray] = {}
    first_e: List[Optional[int]] = [None]
    expert_actions(sim, seed, on_step=watcher(rel_e, first_e))
    rel_p: Dict[int, np.ndarray] = {}
    first_p: List[Optional[int]] = [None]
    cube_p: Dict[int, np.ndarray] = {}
    res = run_episode(policy, sim, seed, execute=execute, image_size=image_size or DEFAULT_IMAGE_SIZE,
                      on_step=watcher(rel_p, first_p, cube_p))
    t_ref = first_e[0] if first_e[0] is not None else max(want)
    pushed = float(np.linalg.norm((cube_p[t_ref] - cube_p[0])[:2]) * 100)
    return {"seed": int(seed), "success": res.success, "max_reward": res.max_reward,
            "offset_cm": {int(t): [round(float(v) * 100, 2) for v in rel_p[t] - rel_e[t]] for t in sorted(want)},
            "first_touch": {"policy": first_p[0], "expert": first_e[0]}, "cube_pushed_cm": round(pushed, 2)}


def format_grasps(grasps: Sequence[Dict]) -> str:
    """Grasp checks (:func:`grasp_against_expert`) as a markdown table plus the mean |offset| per axis."""
    times = sorted(grasps[0]["offset_cm"]) if grasps else []
    lines = ["| seed | max reward | " + " | ".join(f"t = {t}: dx, dy, dz (cm)" for t in times)
             + " | first touch policy / expert | cube pushed (cm) |", "| --- " * (len(times) + 4) + "|"]
    for g in grasps:
        cells = [", ".join(f"{v:+.1f}" for v in g["offset_cm"][t]) for t in times]
        ft = g["first_touch"]
        lines.append(f"| {g['seed']} | {g['max_reward']} | " + " | ".join(cells)
                     + f" | {ft['policy']} / {ft['expert']} | {g['cube_pushed_cm']:.1f} |")
    if grasps:
        mean = {t: np.mean([np.abs(g["offset_cm"][t]) for g in grasps], axis=0) for t in times}
        lines.append("| mean abs | | " + " | ".join(", ".join(f"{v:.1f}" for v in mean[t]) for t in times) + " | | |")
    return "\n".join(lines)


def format_trace(tr: Dict) -> str:
    """A trace (:func:`trace_against_expert`) as a markdown table."""
    lines = [f"Scene {tr['seed']}: policy success {tr['success']} (max reward {tr['max_reward']}), expert success "
             f"{tr['expert_success']}; {tr['execute']}-action chunks.", "",
             "| t | reward | left: joint policy/expert/state (err) | left clipped | right: joint policy/expert/state (err) "
             "| right clipped | grippers L policy/expert, R policy/expert |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in tr["rows"]:
        cells = []
        for side in ("left", "right"):
            s = r[side]
            cells += [f"{s['joint']}: {s['policy']:.3f}/{s['expert']:.3f}/{s['state']:.3f} ({s['err']:.3f})",
                      ",".join(map(str, s["at_bound"])) or "-"]
        g = r["gripper"]
        lines.append(f"| {r['t']} | {r['reward']} | " + " | ".join(cells) + f" | {g[0]:.2f}/{g[1]:.2f}, {g[2]:.2f}/{g[3]:.2f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cosmos_policy_training.diagnose", description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True)
    p.add_argument("--train-demos", type=Path, required=True, help="folder of the training demos (episode_<i>.hdf5)")
    p.add_argument("--train-seeds", default="0..29", help="scene seeds of those demos, e.g. 0..29")
    p.add_argument("--heldout-seeds", default="1000..1019")
    p.add_argument("--heldout-demos", type=Path, default=Path("data/heldout_demos"),
                   help="expert demos of the held-out seeds (generated here if missing)")
    p.add_argument("--open-loop-episodes", type=int, default=10, help="demos per set for the open-loop error")
    p.add_argument("--times", default="0,25,50,75,100,125,150,175", help="observation steps t for the open-loop error")
    p.add_argument("--execute", type=int, default=None, help="actions executed per chunk in the closed loop")
    p.add_argument("--skip-closed-loop", action="store_true")
    p.add_argument("--t0-only", action="store_true",
                   help="only the t = 0 readout check (does the first chunk follow the cube?) on the training demos")
    p.add_argument("--t0-episodes", type=int, default=20, help="training demos for the t = 0 readout check")
    p.add_argument("--trace", default=None,
                   help="only trace closed-loop episodes of these scene seeds against the expert, e.g. 1004,1007")
    p.add_argument("--grasp", default=None,
                   help="only check the grasp of closed-loop episodes of these scene seeds against the expert, "
                        "e.g. 1000..1009")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    import torch

    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_ros.sim.generate_demos import generate

    from .dataset import action_chunk
    from .rollouts import DEFAULT_IMAGE_SIZE
    from .episodes import read_episode

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, decode_future_images=False)
    train_seeds, held_seeds = parse_seeds(args.train_seeds), parse_seeds(args.heldout_seeds)
    times = [int(t) for t in args.times.split(",")]
    t0 = time.monotonic()
    if args.grasp:
        from cosmos_policy_ros.sim.aloha_sim import AlohaSim
        sim = AlohaSim("transfer_cube", seed=0, image_size=DEFAULT_IMAGE_SIZE, cameras=policy.layout.cameras,
                       max_steps=400, render=False)
        report = {"policy": str(args.policy), "policy_id": policy.policy_id,
                  "grasps": [grasp_against_expert(policy, sim, s, execute=args.execute) for s in parse_seeds(args.grasp)]}
        sim.close()
        print(format_grasps(report["grasps"]))
        _write_report(report, args.out)
        return 0
    if args.trace:
        from cosmos_policy_ros.sim.aloha_sim import AlohaSim
        sim = AlohaSim("transfer_cube", seed=0, image_size=DEFAULT_IMAGE_SIZE, cameras=policy.layout.cameras,
                       max_steps=400, render=False)
        report = {"policy": str(args.policy), "policy_id": policy.policy_id,
                  "traces": [trace_against_expert(policy, sim, s, args.execute) for s in parse_seeds(args.trace)]}
        sim.close()
        print("\n\n".join(format_trace(tr) for tr in report["traces"]))
        _write_report(report, args.out)
        return 0
    train_files = sorted(args.train_demos.glob("episode_*.hdf5"), key=lambda q: int(q.stem.split("_")[1]))
    if not train_files:
        raise SystemExit(f"no episode_*.hdf5 in {args.train_demos}")
    if args.t0_only:  # the blind chunk and the open loop need every demo; this check only its episodes
        train_files = train_files[:args.t0_episodes]
    train_eps = [read_episode(f, cameras=policy.layout.cameras) for f in train_files]
    report: Dict[str, object] = {"policy": str(args.policy), "policy_id": policy.policy_id}
    report["t0_readout_train"] = t0_readout(policy, train_eps[:args.t0_episodes])
    if args.t0_only:
        print(json.dumps(report["t0_readout_train"]))
        _write_report(report, args.out)
        return 0
    n_ol = args.open_loop_episodes
    held_files = sorted(args.heldout_demos.glob("episode_*.hdf5"), key=lambda q: int(q.stem.split("_")[1]))
    if len(held_files) < n_ol:
        print(f"generating {n_ol} held-out expert demos (seeds {held_seeds[0]}..) into {args.heldout_demos}",
              file=sys.stderr, flush=True)
        held_files = generate("transfer_cube", n_ol, args.heldout_demos, image_size=DEFAULT_IMAGE_SIZE,
                              seed_start=held_seeds[0], progress=False)
    held_eps = [read_episode(f, cameras=policy.layout.cameras) for f in held_files[:n_ol]]
    # the blind chunk: what the demos do at step t on average, whatever the scene
    blind = {t: np.mean([action_chunk(ep.action, t, policy.horizon) for ep in train_eps], axis=0) for t in times}
    print("open-loop chunk error (training demos) ...", file=sys.stderr, flush=True)
    report["open_loop_train"] = open_loop(policy, train_eps[:n_ol], times, blind)
    print("open-loop chunk error (held-out demos) ...", file=sys.stderr, flush=True)
    report["open_loop_heldout"] = open_loop(policy, held_eps, times, blind)
    if not args.skip_closed_loop:
        print(f"closed loop on {len(train_seeds)} training scenes ...", file=sys.stderr, flush=True)
        report["closed_loop_train"] = closed_loop(policy, train_seeds, args.execute)
        print(f"closed loop on {len(held_seeds)} held-out scenes ...", file=sys.stderr, flush=True)
        report["closed_loop_heldout"] = closed_loop(policy, held_seeds, args.execute)
    report["seconds"] = round(time.monotonic() - t0, 1)
    print(format_report(report))
    _write_report(report, args.out)
    return 0


def _write_report(report: Dict, out: Optional[Path]) -> None:
    """The report as JSON at ``out`` (nothing without one)."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1), encoding="utf-8")


def format_report(report: Dict) -> str:
    """The measurements as markdown tables."""
    lines = [f"Policy `{report['policy']}`.", ""]
    for key in ("closed_loop_train", "closed_loop_heldout"):
        if key in report:
            r = report[key]
            lines.append(f"- {key}: success {r['success']}/{r['episodes']}, touched {r['touched']}, "
                         f"max reward 0/1/2/3/4 {'/'.join(map(str, r['max_reward_hist']))}")
    lines += ["", "| t | policy arm err train (rad) | policy arm err held-out | blind arm err held-out | "
              "policy gripper err train | held-out | blind |", "| --- | --- | --- | --- | --- | --- | --- |"]
    tr, ho = report["open_loop_train"], report["open_loop_heldout"]
    for t in tr:
        lines.append(f"| {t} | {tr[t]['policy']['arm_rad']:.3f} | {ho[t]['policy']['arm_rad']:.3f} | "
                     f"{ho[t]['blind']['arm_rad']:.3f} | {tr[t]['policy']['gripper']:.3f} | "
                     f"{ho[t]['policy']['gripper']:.3f} | {ho[t]['blind']['gripper']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
