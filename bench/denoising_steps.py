"""Benchmark: success and chunk latency against the number of denoising calls, for pause, stream and stream with
real-time chunking (RTC), in the ROS-free loop (no ROS graph).

For each number of network calls per chunk (1, 2, 3, 5, 10) the embedded sim policy's chunk latency is measured
on this machine (median of a few queries, after a warm-up; RTC rows with their own method, as ``guided`` adds a
backward pass per call); the inference delay in 25 Hz ticks follows from it (``ceil(latency / 0.04)``, or
``--delay-ticks``). Then every execution mode runs the same held-out seeds:

- ``pause``: run each chunk to its end, hold ``delay`` ticks while the next one is computed (the graph's
  execution:=pause order: observe when the chunk ends, hold, execute);
- ``stream``: re-plan while the robot moves, each chunk arriving ``--margin-ticks`` before the running one ends;
  the new chunk takes over at its action ``delay`` (the commander's splice by observation time);
- ``stream-rtc`` (and ``stream-rtc-<method>`` rows for ``--rtc-methods``): the same with the running chunk's
  actions frozen for the delay ticks and the overlap inpainted toward it (docs/runtime.md).

Writes ``bench/results/denoising_steps.json``: ``{"rows": [{"calls": int, "execution": str, "episodes": int,
"successes": int, "latency_s": float, ...}]}`` (extra keys: delay_ticks, held_ticks_per_episode,
max_switch_jump_rad, median_time_to_success_s, machine) and prints a markdown section.

    python bench/denoising_steps.py [--episodes 50] [--calls 1,2,3,5,10] [--rtc-methods replace]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from cosmos_policy_ros.demo import EMBEDDED_CHECKPOINT  # noqa: E402 - the demo's default policy
from cosmos_policy_training.rollouts import STREAM_RTC_DEFAULTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def measure_latency(policy, obs, n: int = 3, method: str = "off") -> float:
    """Median chunk latency (s) on ``obs``; with an RTC method, inpainting toward a running chunk (guided runs a
    backward pass per network call: its delay in ticks is its own)."""
    from cosmos_policy_ros.core.rtc import ChunkPrefix

    kwargs = {}
    if method != "off":
        running = np.asarray(policy.infer(obs).actions, dtype=np.float64)
        kwargs["prefix"] = ChunkPrefix(running[10:], 10, method)
    policy.infer(obs, **kwargs)  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        policy.infer(obs, **kwargs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_rows(policy, sim, seeds, calls: int, delays, executions, rtc_cfgs, margin_ticks: int,
             execution_horizon: int, progress=None):
    """One dict per execution mode: successes and the streaming figures over ``seeds``; delays: execution ->
    inference delay in ticks."""
    from cosmos_policy_training.rollouts import run_episode, run_stream_episode

    rows = []
    for ex in executions:
        delay = delays[ex]
        res = []
        for s in seeds:
            if ex == "pause":
                first = []  # the first executed tick at which the sim had already succeeded
                r = run_episode(policy, sim, int(s), pause_ticks=delay, observe_before_pause=True,
                                on_step=lambda t, a: first.append(t) if sim.ever_success and not first else None)
                r.held_ticks = delay * max(0, r.queries - 1) + delay  # the first chunk is waited for too
                if first:  # robot ticks: executed ones plus the holds of every chunk started so far
                    r.success_tick = first[0] + delay * (first[0] // policy.horizon + 1)
            else:
                r = run_stream_episode(policy, sim, int(s), delay, rtc=rtc_cfgs.get(ex),
                                       execution_horizon=execution_horizon if ex != "stream" else 0,
                                       margin_ticks=margin_ticks)
            res.append(r)
            if progress:
                progress(f"calls {calls} {ex} seed {s}: {'success' if r.success else 'failure'}")
        ok = [r for r in res if r.success]
        tts = [r.success_tick * policy.period for r in ok if r.success_tick is not None]
        rows.append({"calls": calls, "execution": ex, "episodes": len(res), "successes": len(ok),
                     "delay_ticks": delay,
                     "held_ticks_per_episode": sum(r.held_ticks for r in res) / max(1, len(res)),
                     "max_switch_jump_rad": max((r.max_switch_jump for r in res), default=0.0),
                     "median_time_to_success_s": statistics.median(tts) if tts else None})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / EMBEDDED_CHECKPOINT))
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed-start", type=int, default=1000)
    p.add_argument("--calls", default="1,2,3,5,10", help="network calls per chunk to sweep (comma-separated)")
    p.add_argument("--executions", default="pause,stream,stream-rtc")
    p.add_argument("--rtc-method", default=STREAM_RTC_DEFAULTS[0], choices=("replace", "guided"),
                   help="the method of the stream-rtc row (extra rows: --rtc-methods)")
    p.add_argument("--rtc-methods", default="", help="extra rows stream-rtc-<method> (e.g. guided)")
    p.add_argument("--rtc-schedule", default=STREAM_RTC_DEFAULTS[1], choices=("exp", "linear", "ones", "zeros"),
                   help="weights past the frozen prefix (default: rollouts.STREAM_RTC_DEFAULTS, the graph "
                        "benchmark's stream-rtc row, docs/runtime.md)")
    p.add_argument("--rtc-delay-margin", type=int, default=2)
    p.add_argument("--execution-horizon", type=int, default=STREAM_RTC_DEFAULTS[2],
                   help="stream-rtc: ticks from one observation to the next (0: the stream schedule's)")
    p.add_argument("--margin-ticks", type=int, default=8, help="stream: chunk arrives this many ticks before the end "
                   "of the running one (the policy node's replan_margin 0.3 s)")
    p.add_argument("--delay-ticks", type=int, default=None, help="inference delay in ticks (default: measured)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "denoising_steps.json"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    import torch

    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_ros.core.rtc import RtcConfig
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim
    from cosmos_policy_training.rollouts import DEFAULT_IMAGE_SIZE

    torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, decode_future_images=False)
    base_cfg = policy.sampler
    sim = AlohaSim("transfer_cube", seed=args.seed_start, image_size=DEFAULT_IMAGE_SIZE,
                   cameras=policy.layout.cameras, max_steps=400, render=False)
    seeds = list(range(args.seed_start, args.seed_start + args.episodes))
    executions = [e.strip() for e in args.executions.split(",") if e.strip()]
    rtc_cfgs = {"stream-rtc": RtcConfig(args.rtc_method, args.rtc_schedule, delay_margin=args.rtc_delay_margin)}
    for m in filter(None, (m.strip() for m in args.rtc_methods.split(","))):
        rtc_cfgs[f"stream-rtc-{m}"] = RtcConfig(m, args.rtc_schedule, delay_margin=args.rtc_delay_margin)
        executions.append(f"stream-rtc-{m}")
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    rows = []
    t_start = time.monotonic()
    try:
        for calls in [int(c) for c in args.calls.split(",")]:
            # the policy's own backbone's sampler settings (Predict2 or Predict2.5), only the call count changed
            policy.sampler = policy.backbone.sampler_from_dict({**base_cfg.to_dict(), "action_steps": calls})
            sim.reset(args.seed_start, render=False)
            obs = sim.policy_observation(size=DEFAULT_IMAGE_SIZE)
            latency = {"off": measure_latency(policy, obs)}
            for cfg in rtc_cfgs.values():
                if cfg.method not in latency:
                    latency[cfg.method] = measure_latency(policy, obs, method=cfg.method)
            lat = {ex: latency[rtc_cfgs[ex].method if ex in rtc_cfgs else "off"] for ex in executions}
            delays = {ex: args.delay_ticks if args.delay_ticks is not None else int(math.ceil(v / policy.period))
                      for ex, v in lat.items()}
            for row in run_rows(policy, sim, seeds, calls, delays, executions, rtc_cfgs, args.margin_ticks,
                                args.execution_horizon, progress):
                row["latency_s"] = lat[row["execution"]]
                rows.append(row)
    finally:
        sim.close()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch threads {args.threads}"
    out = {"rows": rows, "seed_start": args.seed_start, "machine": machine, "policy": Path(args.policy).name,
           "date": time.strftime("%Y-%m-%d", time.gmtime()), "wall_s": time.monotonic() - t_start,
           "rtc": {"method": args.rtc_method, "schedule": args.rtc_schedule, "delay_margin": args.rtc_delay_margin,
                   "execution_horizon": args.execution_horizon}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(render(out))
    return 0


def _seconds(v) -> str:
    return "-" if v is None or v != v else f"{v:.1f} s"


def render(data: dict) -> str:
    """The markdown section of a denoising_steps.json."""
    rows = data["rows"]
    rtc = data.get("rtc", {})
    lines = [f"Sim policy `{data.get('policy', '?')}` in the ROS-free loop, seeds {data.get('seed_start', '?')}.. "
             f"({rows[0]['episodes'] if rows else 0} per row), {data.get('machine', '?')}, {data.get('date', '?')}. "
             f"Chunk latency measured per number of network calls; the inference delay in ticks follows from it. "
             f"`stream` observes just in time (the chunk arrives 8 ticks before the running one ends); `stream-rtc`: "
             f"{rtc.get('method', '?')} inpainting, {rtc.get('schedule', '?')} weights, an observation every "
             f"{rtc.get('execution_horizon') or 'just-in-time'} ticks (docs/runtime.md, Real-time chunking). Time to "
             f"success counts held ticks. Rerun: `python bench/denoising_steps.py`.\n",
             "| calls | latency | delay (ticks) | execution | success | median time to success | held ticks / episode | "
             "max switch jump (rad) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        n = max(1, r["episodes"])
        lines.append(f"| {r['calls']} | {r['latency_s'] * 1000:.0f} ms | {r.get('delay_ticks', '?')} | {r['execution']} | "
                     f"{r['successes']}/{r['episodes']} ({100 * r['successes'] / n:.0f}%) | "
                     f"{_seconds(r.get('median_time_to_success_s'))} | "
                     f"{r.get('held_ticks_per_episode', float('nan')):.1f} | {r.get('max_switch_jump_rad', float('nan')):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
