"""Diagnosis of best-of-N planning: does the planning model rank candidates by what they really lead to?

For each scene, the base policy runs (the released deploy's open-loop chunks) up to the decision at tick
``--decision``; there the policy samples N candidates (one batch, seeds 195..), the planning model scores them,
and then every candidate is executed from the very same simulator state (MuJoCo data copied and restored), followed
by the base policy to the end of the episode. The outcome of each candidate is the ground truth its score should
predict. Scenes: the base policy's failures in a ``planning_success.json`` first, then as many of its successes.

    python bench/planning_truth.py [--decision 50] [--candidates 8] [--successes 8] [--json out.json]

`make bench` section planning_truth (after planning_success, whose base row it reads): ``--decision 50``. Schema of
``--json``: {"summary": {the summary line's fields, "planner": {PlannerConfig}}, "rows": [the per-scene lines]}.

Which part of the planning model is at fault is measured too: each candidate's real future (the frames and
proprio after its 50 actions) goes through the planning model's value stage in place of the world model's
prediction (``v_real``: what the planner would score with a perfect world model), and the world model's predicted
future proprio is compared with the real one (its error, and how far the candidates' futures spread apart,
predicted against real). Whether the world model follows an action at all is probed with a far larger change than
the candidates': a chunk that holds the arms at the base chunk's first action, executed and predicted like them
(how far its future lies from the base chunk's, real and predicted).

Prints one JSON line per scene ({"seed", "base_ok", "ok": [per candidate], "scores", "chosen", "own_value",
"spread_rad", "v_real", "wm_proprio_mae_rad", "real_future_spread_rad", "predicted_future_spread_rad",
"hold_real_shift_rad", "hold_predicted_shift_rad"}) and a
summary: scenes whose candidates all fail / all succeed / differ, and among the latter how often the planner's
choice (and the best ``v_real``) succeeded against a random candidate's rate, and the within-scene ROC AUC of the
scores and of ``v_real`` against the outcomes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from cosmos_policy_ros.demo import EMBEDDED_CHECKPOINT  # noqa: E402 - the demo's default policy

ROOT = Path(__file__).resolve().parents[1]
SIM_FIELDS = ("step_count", "reward", "max_reward", "success", "ever_success")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / EMBEDDED_CHECKPOINT))
    p.add_argument("--planning-model", default=str(ROOT / "checkpoints" / "sim_transfer_cube_predict2.5_planning"))
    p.add_argument("--results", default=str(ROOT / "bench" / "results" / "planning_success.json"),
                   help="planning_success.json whose base row names the scenes (its per_seed outcomes)")
    p.add_argument("--decision", type=int, default=50, help="tick of the decision (a multiple of the chunk length)")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--successes", type=int, default=8, help="base-policy successes to add to its failures")
    p.add_argument("--max-scenes", type=int, default=0, help="at most this many scenes (0: all)")
    p.add_argument("--score", default="value_v", choices=("value_v", "value_q"),
                   help="the planner's value: V(s') (reference) or Q(s,a) (the value stage also sees state and action)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import mujoco
    import numpy as np
    import torch

    from cosmos_policy_ros.core import codec
    from cosmos_policy_ros.core.planner import Planner, PlannerConfig, aggregate, model_input_images, select_candidate
    from cosmos_policy_ros.core.robot import ARM_INDICES
    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim
    from cosmos_policy_training.dataset import build_video
    from cosmos_policy_training.rollouts import DEFAULT_IMAGE_SIZE

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, decode_future_images=False)
    planner = Planner(load_policy(args.planning_model, decode_future_images=False),
                      PlannerConfig(score=args.score, decode_future_images="none"))
    data = json.loads(Path(args.results).read_text())
    base_row = next(r for r in data["rows"] if r["candidates"] == 1)
    s0, base = int(data["seed_start"]), base_row["per_seed"]
    seeds = [s0 + i for i, ok in enumerate(base) if not ok] + \
        [s0 + i for i, ok in enumerate(base) if ok][: args.successes]
    if args.max_scenes > 0:
        seeds = seeds[: args.max_scenes]
    H, T = policy.horizon, 200
    if args.decision % H or not 0 <= args.decision < T:
        raise SystemExit(f"--decision: expected a multiple of {H} below {T}, got {args.decision}")
    sim = AlohaSim("transfer_cube", seed=s0, image_size=DEFAULT_IMAGE_SIZE, cameras=policy.layout.cameras,
                   max_steps=2 * T, render=False)

    def observe():
        return sim.policy_observation(size=DEFAULT_IMAGE_SIZE)

    def execute(actions):
        for a in actions:
            for _ in range(2):  # 25 Hz actions on 50 Hz physics
                sim.step(a, render=False)

    def snapshot():
        d = mujoco.MjData(sim.model)
        mujoco.mj_copyData(d, sim.model, sim.data)
        return d, {k: getattr(sim, k) for k in SIM_FIELDS}, sim.last_action.copy()

    def restore(snap):
        mujoco.mj_copyData(sim.data, sim.model, snap[0])
        for k, v in snap[1].items():
            setattr(sim, k, v)
        sim.last_action = snap[2].copy()

    model, cfg = planner.model, planner.config
    lay = model.layout
    arm = list(ARM_INDICES)

    def by_camera(images):  # camera -> (S, S, 3) uint8 -> (1, ncam, 3, S, S)
        return torch.stack([torch.from_numpy(images[c]).permute(2, 0, 1) for c in lay.cameras])[None]

    def real_future_latents(prep, now, obs_next, actions):
        """The planning model's clean latents of a candidate's real outcome: current images and proprio, its
        actions, and the frames and proprio 50 ticks later in the future slots (what a perfect world model gives)."""
        nxt = model_input_images(obs_next.images, model.image, lay.cameras)
        video = build_video(by_camera(now), by_camera(nxt), lay)  # the layout video the trainer encodes
        with torch.inference_mode():
            lat = model.network.encode(video)
        x = model._inject(prep, 1, actions, latents=lat)
        p_next = codec.normalize_proprio(np.asarray(obs_next.proprio, np.float64), model.stats)
        x[:, :, lay.future_proprio_index] = codec.inject(torch.from_numpy(p_next).float()[None],
                                                         model.network.cfg.latent_frame_shape)
        return x

    rows = []
    seeds_n = [195 + i for i in range(args.candidates)]
    try:
        for seed in seeds:
            sim.reset(seed, render=False)
            for _ in range(args.decision // H):
                execute(policy.infer(observe(), seed=195).actions)
            obs = observe()
            snap = snapshot()
            outs = policy.infer_batch(obs, seeds_n)
            acts = np.stack([o.actions for o in outs])
            prep = planner.prepare(obs)
            res = planner.score(obs, acts, seeds_n, prepared=prep)
            now = model_input_images(obs.images, model.image, lay.cameras)
            ok, futures, real_p = [], [], []
            for i in range(args.candidates):
                restore(snap)
                execute(acts[i])
                obs_next = observe()
                futures.append(real_future_latents(prep, now, obs_next, acts[i]))
                real_p.append(np.asarray(obs_next.proprio, np.float64))
                for _ in range(args.decision // H + 1, T // H):
                    execute(policy.infer(observe(), seed=195).actions)
                ok.append(bool(sim.ever_success))
            v_real = aggregate(planner.values_of(prep, torch.cat(futures)), cfg.aggregation, cfg.majority_threshold,
                               cfg.lcb_beta)
            # action gain: a chunk that freezes the arms at the base chunk's first action, a far larger change than
            # the candidates' spread; does the predicted future follow it?
            hold = np.repeat(acts[:1, :1], H, axis=1)
            restore(snap)
            execute(hold[0])
            hold_real = np.asarray(observe().proprio, np.float64)[arm]
            hold_pred = planner.score(obs, hold, seeds_n[:1], prepared=prep).future_proprio[0][:, arm].mean(0)
            real_p = np.stack(real_p)[:, arm]  # (N, 12) arm joints 50 ticks later
            pred_p = res.future_proprio[:, :, arm].astype(np.float64)  # (N, K, 12) the world model's
            row = {"seed": seed, "base_ok": bool(base[seed - s0]), "ok": ok,
                   "scores": [round(float(x), 4) for x in res.scores], "chosen": int(res.chosen),
                   "own_value": [round(float(o.value), 4) for o in outs],
                   "spread_rad": round(float(np.abs(acts - acts.mean(0)).max()), 4),
                   "v_real": [round(float(x), 4) for x in v_real],
                   "wm_proprio_mae_rad": round(float(np.abs(pred_p - real_p[:, None]).mean()), 4),
                   "real_future_spread_rad": round(float(np.abs(real_p - real_p.mean(0)).mean()), 5),
                   "predicted_future_spread_rad": round(float(np.abs(pred_p.mean(1) - pred_p.mean(1).mean(0)).mean()), 5),
                   "hold_real_shift_rad": round(float(np.abs(hold_real - real_p[0]).mean()), 5),
                   "hold_predicted_shift_rad": round(float(np.abs(hold_pred - pred_p[0].mean(0)).mean()), 5)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        sim.close()
    mixed = [r for r in rows if 0 < sum(r["ok"]) < len(r["ok"])]

    def auc(scores, ok):  # P(a succeeding candidate scores above a failing one), ties half
        pos = [x for x, o in zip(scores, ok) if o]
        neg = [x for x, o in zip(scores, ok) if not o]
        return float(np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg]))

    def mean(xs):
        return round(float(np.mean(xs)), 5) if xs else None

    summary = {"decision_tick": args.decision, "candidates": args.candidates, "scenes": len(rows),
               "all_fail": sum(not any(r["ok"]) for r in rows), "all_succeed": sum(all(r["ok"]) for r in rows),
               "mixed": len(mixed), "chosen_succeeded_in_mixed": sum(r["ok"][r["chosen"]] for r in mixed),
               "random_candidate_rate_in_mixed": (sum(sum(r["ok"]) / len(r["ok"]) for r in mixed) / len(mixed))
               if mixed else None,
               "lowest_scored_candidate_per_scene": [int(np.argmin(r["scores"])) for r in rows],
               "scores_within_scene_auc": mean([auc(r["scores"], r["ok"]) for r in mixed]),
               "v_real_within_scene_auc": mean([auc(r["v_real"], r["ok"]) for r in mixed]),
               "best_v_real_succeeded_in_mixed": sum(r["ok"][int(np.argmax(r["v_real"]))] for r in mixed),
               "wm_proprio_mae_rad": mean([r["wm_proprio_mae_rad"] for r in rows]),
               "real_future_spread_rad": mean([r["real_future_spread_rad"] for r in rows]),
               "predicted_future_spread_rad": mean([r["predicted_future_spread_rad"] for r in rows]),
               "hold_real_shift_rad": mean([r["hold_real_shift_rad"] for r in rows]),
               "hold_predicted_shift_rad": mean([r["hold_predicted_shift_rad"] for r in rows]),
               "margin_sweep": margin_sweep(rows, select_candidate),
               "planner": cfg.to_dict()}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    print(render({"summary": summary, "rows": rows}), file=sys.stderr)
    return 0


MARGINS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


def margin_sweep(rows, select) -> list:
    """For each switch margin, what the planner's choice at this decision would do against candidate 0 (the base
    policy's own chunk): scenes it turns into successes (``won``), into failures (``lost``), and how often it
    keeps another candidate (``changed``)."""
    out = []
    for m in MARGINS:
        picks = [(r, select(r["scores"], margin=m)) for r in rows]
        out.append({"margin": m, "changed": sum(c != 0 for _, c in picks),
                    "won": sum((not r["ok"][0]) and r["ok"][c] for r, c in picks),
                    "lost": sum(r["ok"][0] and not r["ok"][c] for r, c in picks)})
    return out


def render(data: dict) -> str:
    """The markdown section of a planning_truth.json."""
    s = data["summary"]

    def f(x, fmt="{:.2f}"):
        return "-" if x is None else fmt.format(x)

    pl = s.get("planner", {})
    mixed = s["mixed"]
    return "\n".join([
        f"At the tick-{s['decision_tick']} decision of {s['scenes']} held-out scenes (the base policy's failures in "
        f"planning_success.json's base row, then as many of its successes), {s['candidates']} candidates of the policy "
        f"are each executed from the same restored simulator state, then the base policy to the end; the planning "
        f"model ({pl.get('aggregation', '?')}, {pl.get('score', '?')}, {pl.get('noise', '?')} noise) scores them from "
        f"its world model's prediction, and its value stage also scores each candidate's real future (frames and "
        f"proprio 50 ticks later). Scenes where all candidates fail / all succeed / outcomes differ: "
        f"{s['all_fail']} / {s['all_succeed']} / {mixed}.\n",
        f"| who picks the candidate | its chunk succeeds (scenes where outcomes differ) | score vs outcome within a scene (ROC AUC) |",
        "| --- | --- | --- |",
        f"| a random candidate | {f(None if s['random_candidate_rate_in_mixed'] is None else s['random_candidate_rate_in_mixed'] * mixed, '{:.1f}')} of {mixed} | 0.5 |",
        f"| the planner (world model, then value) | {s['chosen_succeeded_in_mixed']} of {mixed} | {f(s.get('scores_within_scene_auc'))} |",
        f"| the value on the candidate's real future | {s.get('best_v_real_succeeded_in_mixed', '-')} of {mixed} | {f(s.get('v_real_within_scene_auc'))} |",
        "",
        f"World model, arm joints 50 ticks ahead: error {f(s.get('wm_proprio_mae_rad'), '{:.4f}')} rad (MAE); the "
        f"candidates' futures lie {f(s.get('real_future_spread_rad'), '{:.5f}')} rad from their mean in reality and "
        f"{f(s.get('predicted_future_spread_rad'), '{:.5f}')} rad in the prediction. A chunk that holds the arms at "
        f"the base chunk's first action ends {f(s.get('hold_real_shift_rad'), '{:.4f}')} rad from the base chunk's "
        f"real future; its predicted future lies {f(s.get('hold_predicted_shift_rad'), '{:.4f}')} rad from the base "
        f"chunk's predicted one. Rerun: "
        f"`python bench/planning_truth.py --decision {s['decision_tick']}`; per-scene rows in the JSON.",
    ] + ([
        "",
        f"Switch margin (candidate 0 kept unless another scores higher by more than it), over the {s['scenes']} scenes: "
        + "; ".join(f"{m['margin']:g}: changed {m['changed']}, +{m['won']} / -{m['lost']}" for m in s["margin_sweep"])
        + " (scenes turned into successes / failures against candidate 0).",
    ] if s.get("margin_sweep") else []))


if __name__ == "__main__":
    sys.exit(main())
