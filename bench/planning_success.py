"""Benchmark: best-of-N planning (world model x value ensembles) against the base policy, same held-out seeds.

Loop (``--execution pause``, `make bench`): the ROS-free sim loop (``cosmos_policy_training.rollouts.run_episode``,
the released deploy's open-loop execution: each 50-action chunk runs to its end, then the next observation).
Row ``candidates: 1`` is the base policy alone; ``candidates: N`` samples N chunks in one batch (seeds s, s+1, ...: candidate 0 is the base
policy's own chunk) and keeps the one the planning model scores best (``core.planner``: K = 3 world-model samples
x M = 5 value samples per candidate, majority mean, ``--noise`` common by default; candidate 0 kept on ties and,
with ``--margin``, unless another candidate scores higher by more than the margin), as
the policy node does with ``planning_checkpoint`` or the planner node. Every row sees the same scenes (seeds ``seed_start``..).
Controls: ``--choice random`` picks a uniformly random candidate at every decision instead (no planning model: is
the planner's choice better than chance among the same candidates?), ``--policy-seed S`` samples the base chunk
(candidate 0) with seed S instead of the policy's default 195, ``--plan-queries Q ..`` plans only at those queries
of an episode (the base policy's chunk at the others: which decisions planning wins or loses in the closed loop).
Rows ``--windowed N``: best-of-N only for the observations inside ``--plan-window`` (seconds after the episode
start; default 1..3 s, the grasp decision at tick 50 in this loop), the base policy's chunk elsewhere: the
deployable form of planning at chosen decisions (``core.plan_window.PlanWindow``, the policy node's
``planning_window``). ``--execution stream-rtc``: the graph's default execution instead (``run_stream_episode``:
re-plan while the robot moves, real-time chunking as the launch files set it), every chunk arriving
``--delay-ticks`` after its observation, planned or not (a planner as fast as the policy: a GPU's case, not this
CPU's).

``--loop graph``: the same comparison through the real ROS 2 graph (``make demo``: sim bridge in real time, policy
node, planner node, commander, recorder), ``--graph-episodes`` seeds, the released deploy's ``execution: pause`` (the
robot holds while a decision is computed, so a slow planner costs time, not success), planning only inside the
window (default 1..5 s: the grasp decision, the episode's second observation, which the graph takes 2 s plus the
first chunk's latency after the start), every row with the same simulated time limit (``--graph-sim-s``). Its rows
(``loop: "graph"``) and its settings (``graph``) join the file's ROS-free ones, which are kept (and the other way
round: a ROS-free run keeps the graph rows of ``--carry``).

Writes (``--json``; `make bench` section planning_success):

    {"rows": [{"loop": "ros-free", "candidates": int, "episodes": int, "successes": int, "decision_s": float,
               "changed_choice_fraction": float, "max_reward_counts": [int x 5], "decisions": int,
               "per_seed": [bool, ...], "plan_window": [start_s, end_s] | null}],
     "seed_start": int, "policy": str, "planning_model": str | null, "planner": {PlannerConfig},
     "choice": "planner" | "random", "policy_seed": int | null, "plan_queries": [int, ...] | null,
     "execution": "pause" | "stream-rtc" (absent: pause), "delay_ticks": int | null,
     "machine": str, "date": str, "wall_s": float,
     "graph": {"date": str, "machine": str, "execution": "pause", "sim_s": float, "planning_deadline_s": float,
               "seed_start": int, "wall_s": float, "note": str (optional)} (with graph rows; their rows also carry
               "planning_s": the planner
               node's median seconds per decision, "fallbacks": decisions without a usable answer, and
               "chunk_latency_s": the median latency of every chunk)}

decision_s: median seconds per decision (the N candidates and their scoring; the base row: one chunk);
changed_choice_fraction: decisions where the planner kept a candidate other than 0 (the base policy's chunk);
decisions: planned decisions (a windowed row counts only those inside its window). In the graph, decision_s is the
median time from a planned decision's observation to its chunk's arrival at the commander's side (candidates,
planner round trip, transport; the base row: every chunk's).

    python bench/planning_success.py [--episodes 100] [--candidates 1,4,8] [--planning-model DIR] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from cosmos_policy_ros.core.types import DEFAULT_SEED  # noqa: E402
from cosmos_policy_ros.demo import EMBEDDED_CHECKPOINT  # noqa: E402 - the demo's default policy

ROOT = Path(__file__).resolve().parents[1]
#: the planning model `make bench` uses: the embedded policy refined on its own rollouts (docs/planning.md)
DEFAULT_PLANNING_MODEL = "checkpoints/sim_transfer_cube_predict2.5_planning"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / EMBEDDED_CHECKPOINT))
    p.add_argument("--planning-model", default=str(ROOT / DEFAULT_PLANNING_MODEL),
                   help="world model + value checkpoint scoring the candidates ('policy': the policy itself)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed-start", type=int, default=1000)
    p.add_argument("--candidates", default=None,
                   help="comma-separated N per row (1: the base policy; default 1,4,8, --loop graph: 1)")
    p.add_argument("--windowed", default=None,
                   help="comma-separated N of extra rows that plan only inside --plan-window ('' = none; default 8 "
                        "with --choice planner and no --plan-queries, else none)")
    p.add_argument("--plan-window", type=float, nargs=2, default=None, metavar=("START", "END"),
                   help="the windowed rows' planning window: observations START..END s after the episode start "
                        "(default 1 3, the grasp decision at tick 50 of the ROS-free pause loop; --loop graph: 1 5)")
    p.add_argument("--loop", default="ros-free", choices=("ros-free", "graph"),
                   help="ros-free (make bench) or graph: the rows through the real ROS 2 graph (make demo with the "
                        "planner node), kept in the same file next to the ROS-free ones")
    p.add_argument("--graph-episodes", type=int, default=50, help="--loop graph: seeds per row")
    p.add_argument("--graph-sim-s", type=float, default=32.0,
                   help="--loop graph: simulated seconds per episode, every row (the simulator runs on while the "
                        "robot holds for a decision: 12 s of motion plus a CPU planner's hold)")
    p.add_argument("--graph-deadline", type=float, default=120.0,
                   help="--loop graph: the policy node's planning_deadline (s)")
    p.add_argument("--carry", default=str(ROOT / "bench" / "results" / "planning_success.json"),
                   help="results file whose rows of the other loop are kept in the output (none if missing)")
    p.add_argument("--aggregation", default="majority_mean", choices=("majority_mean", "mean", "lcb"))
    p.add_argument("--score", default="value_v", choices=("value_v", "value_q"))
    p.add_argument("--noise", default="common", choices=("common", "per_candidate"),
                   help="planning noise: the same draws for every candidate, or one set per candidate seed")
    p.add_argument("--planner-seed", type=int, default=0,
                   help="the planning noise seed (world-model and value draws; the planner node's `seed`)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="switch margin: another candidate replaces candidate 0 only when it scores higher by more "
                        "than this (0: the reference)")
    p.add_argument("--choice", default="planner", choices=("planner", "random"),
                   help="rows with N > 1: the planning model's choice, or a uniformly random candidate (a control: "
                        "what picking among the same candidates without a planning model does)")
    p.add_argument("--plan-queries", type=int, nargs="+", default=None, metavar="Q",
                   help="rows with N > 1: plan only at these queries of each episode (0: tick 0, 1: tick 50, ...) "
                        "and take the base policy's chunk at the others (a control: which decisions planning wins "
                        "or loses in the closed loop; default: every query)")
    p.add_argument("--policy-seed", type=int, default=None,
                   help="the base policy's sampling seed (candidate 0; default: the policy's, 195)")
    p.add_argument("--execution", default="pause", choices=("pause", "stream-rtc"),
                   help="pause: the released deploy's open-loop chunks (make bench); stream-rtc: the graph's default "
                        "streaming with real-time chunking (replace, ones, an observation every 35 ticks), every "
                        "chunk, planned or not, arriving --delay-ticks after its observation")
    p.add_argument("--delay-ticks", type=int, default=6, help="stream-rtc: inference delay in 25 Hz ticks")
    p.add_argument("--pause-ticks", type=int, default=0,
                   help="pause: hold the last action this many 25 Hz ticks at every re-plan, as the graph's robot "
                        "holds while a chunk is computed (0: the next observation as the chunk ends); observed after "
                        "the hold, or before it with --observe-before-pause (the graph's order)")
    p.add_argument("--observe-before-pause", action="store_true",
                   help="with --pause-ticks: observe as the chunk runs out, then hold, then execute (the graph's order)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the figures here (schema: this file's docstring)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.candidates is None:
        args.candidates = "1" if args.loop == "graph" else "1,4,8"
    if args.plan_window is None:
        args.plan_window = (1.0, 5.0) if args.loop == "graph" else (1.0, 3.0)
    if args.loop == "graph":
        return run_graph(args)

    import numpy as np
    import torch

    from cosmos_policy_ros.core.planner import LocalPlanningBackend, Planner, PlannerConfig, PlanWindow
    from cosmos_policy_ros.core.policy import load_policy
    from cosmos_policy_ros.sim.aloha_sim import AlohaSim
    from cosmos_policy_ros.core.chunking import STREAM_RTC_DEFAULTS
    from cosmos_policy_ros.core.rtc import RtcConfig
    from cosmos_policy_training.rollouts import DEFAULT_IMAGE_SIZE, run_episode, run_stream_episode

    torch.set_num_threads(args.threads)
    counts = [int(c) for c in args.candidates.split(",") if c.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit(f"--candidates: expected positive integers, got {args.candidates!r}")
    if args.windowed is None:
        args.windowed = "8" if args.choice == "planner" and args.plan_queries is None else ""
    windowed = [int(c) for c in args.windowed.split(",") if c.strip()]
    if windowed and min(windowed) < 2:
        raise SystemExit(f"--windowed: expected integers >= 2, got {args.windowed!r}")
    try:
        window = PlanWindow.parse(args.plan_window) if windowed else None
    except ValueError as exc:
        raise SystemExit(f"--plan-window: {exc}")
    if windowed and (args.choice != "planner" or args.plan_queries is not None):
        raise SystemExit("--windowed: with --choice planner and without --plan-queries only (pass --windowed '')")
    rows_spec = [(n, None) for n in counts] + [(n, window) for n in windowed]
    if args.plan_queries is not None and min(args.plan_queries) < 0:
        raise SystemExit(f"--plan-queries: expected query numbers >= 0, got {args.plan_queries}")
    if args.plan_queries is not None and args.choice != "planner":
        raise SystemExit("--plan-queries: with --choice planner only")
    policy = load_policy(args.policy, decode_future_images=False)
    model_path = args.policy if args.planning_model == "policy" else args.planning_model
    if max(n for n, _ in rows_spec) > 1 and args.choice == "planner" and not Path(model_path).is_dir():
        raise SystemExit(f"planning model {model_path!r} not found: build it with scripts/planning_model.sh "
                         f"(docs/planning.md) or pass --planning-model")
    cfg = PlannerConfig(aggregation=args.aggregation, score=args.score, noise=args.noise, decode_future_images="none",
                        switch_margin=args.margin, seed=args.planner_seed)
    use_planner = max(n for n, _ in rows_spec) > 1 and args.choice == "planner"
    planner = Planner(load_policy(model_path, decode_future_images=False), cfg) if use_planner else None
    sim = AlohaSim("transfer_cube", seed=args.seed_start, image_size=DEFAULT_IMAGE_SIZE,
                   cameras=policy.layout.cameras, max_steps=400, render=False)
    seeds = list(range(args.seed_start, args.seed_start + args.episodes))

    class RecordingBackend(LocalPlanningBackend):
        """Best-of-N that also records each decision's time and whether it kept a chunk other than candidate 0."""

        def __init__(self, *a, plan_queries=None, window=None):
            super().__init__(*a, window=window)
            self.decisions: list = []
            self.changed = 0
            self.plan_queries = None if plan_queries is None else set(plan_queries)
            self.query = 0  # the episode's query number (reset by the loop below)

        def infer(self, obs, seed=None, prefix=None):
            q, self.query = self.query, self.query + 1
            if self.plan_queries is not None and q not in self.plan_queries:
                # the base policy's chunk (candidate 0, not a decision), inpainted like every chunk when streaming
                return self.base.infer(obs, seed=seed, **({"prefix": prefix} if prefix is not None else {}))
            t0 = time.perf_counter()
            out = super().infer(obs, seed=seed, prefix=prefix)
            if self.last_result is None:
                return out  # outside the planning window: the base policy's chunk, not a decision
            self.decisions.append(time.perf_counter() - t0)
            self.changed += int(self.last_result.chosen != 0)
            return out

    class RandomChoiceBackend:
        """The control: a uniformly random one of the N candidates (seeds s..s+N-1) at every decision, no scoring."""

        def __init__(self, base, n):
            self.base, self.n, self.rng = base, n, np.random.default_rng(0)
            self.horizon, self.action_dim, self.period = base.horizon, base.action_dim, base.period
            self.layout, self.policy_id = base.layout, f"{base.policy_id}+random-of-{n}"
            self.decisions: list = []
            self.changed = 0

        def infer(self, obs, seed=None, prefix=None):
            t0 = time.perf_counter()
            pick = int(self.rng.integers(self.n))
            first = getattr(self.base, "default_seed", DEFAULT_SEED) if seed is None else int(seed)
            out = self.base.infer(obs, seed=first + pick)
            self.decisions.append(time.perf_counter() - t0)
            self.changed += int(pick != 0)
            return out

    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    rows, t_start = [], time.monotonic()
    try:
        for n, win in rows_spec:
            backend = policy if n == 1 else (RecordingBackend(policy, planner, n, plan_queries=args.plan_queries,
                                                              window=win)
                                             if planner is not None else RandomChoiceBackend(policy, n))
            decisions = [] if n == 1 else backend.decisions
            results = []
            for i, seed in enumerate(seeds):
                if isinstance(backend, RecordingBackend):
                    backend.query = 0
                if args.execution == "pause":
                    r = run_episode(backend, sim, seed, policy_seed=args.policy_seed, pause_ticks=args.pause_ticks,
                                    observe_before_pause=args.observe_before_pause)
                else:
                    r = run_stream_episode(backend, sim, seed, args.delay_ticks,
                                           rtc=RtcConfig(STREAM_RTC_DEFAULTS[0], STREAM_RTC_DEFAULTS[1]),
                                           execution_horizon=STREAM_RTC_DEFAULTS[2], policy_seed=args.policy_seed)
                results.append(r)
                if n == 1:
                    decisions.append(r.infer_seconds / max(r.queries, 1))
                where = "" if win is None else f" window {win.start:g}-{win.end:g} s"
                say(f"N={n}{where} seed {seed}: success={r.success} max_reward={r.max_reward} "
                    f"({sum(x.success for x in results)}/{i + 1})")
            n_dec = len(decisions) if n > 1 else sum(r.queries for r in results)
            rows.append({"loop": "ros-free", "candidates": n, "episodes": len(results),
                         "successes": int(sum(r.success for r in results)),
                         "decision_s": float(statistics.median(decisions)) if decisions else None,
                         "changed_choice_fraction": (backend.changed / max(n_dec, 1)) if n > 1 else 0.0,
                         "max_reward_counts": [int(sum(r.max_reward == k for r in results)) for k in range(5)],
                         "decisions": int(n_dec), "per_seed": [bool(r.success) for r in results],
                         "plan_window": None if win is None else win.to_list()})
    finally:
        sim.close()
    out = {"rows": rows, "seed_start": args.seed_start, "policy": Path(args.policy).name,
           "planning_model": Path(model_path).name if planner is not None else None, "planner": cfg.to_dict(),
           "choice": args.choice, "policy_seed": args.policy_seed, "plan_queries": args.plan_queries,
           "execution": args.execution, "delay_ticks": args.delay_ticks if args.execution == "stream-rtc" else None,
           "pause_ticks": args.pause_ticks if args.execution == "pause" else None,
           "observe_before_pause": bool(args.observe_before_pause),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
                      f"{args.threads}",
           "date": time.strftime("%Y-%m-%d", time.gmtime()), "wall_s": round(time.monotonic() - t_start, 1)}
    return finish(carry_other_loop(out, args.carry, "ros-free"), args.json)


def finish(out: dict, path) -> int:
    """Write the figures (``--json``) and print the markdown section; the exit code."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=1) + "\n")
    print(render(out))
    return 0


def carry_other_loop(out: dict, path, loop: str) -> dict:
    """``out`` (this run's rows, all of ``loop``) with the other loop's rows and settings from the results file at
    ``path`` (nothing when it is missing or unreadable): a graph run keeps the ROS-free figures and vice versa."""
    try:
        old = json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError):
        old = {}
    kept = [r for r in old.get("rows", []) if r.get("loop") != loop]
    if loop == "graph":  # the ROS-free run's settings (and make bench's record of it) stay the file's top level;
        # this run's go under "graph"
        top = {k: v for k, v in old.items() if k not in ("rows", "graph")}
        return {**top, "rows": kept + out["rows"], "graph": out["graph"]}
    merged = {**out, "rows": out["rows"] + kept}
    if kept and "graph" in old:
        merged["graph"] = old["graph"]
    return merged


def graph_row(n: int, window, episodes: list) -> dict:
    """One graph row from ``make demo --json`` episode records (their chunk latencies and planner decisions)."""
    decisions = [d for e in episodes for d in e.get("plan_decisions", [])]
    planned_stamps = {round(d["stamp"], 6) for d in decisions}
    # make demo records each chunk's latency; a chunk's stamp is its observation's, as the decision's
    latencies = [lat for e in episodes for lat in e.get("chunk_latency_s", [])]
    planned_latencies = [lat for e in episodes for stamp, lat in zip(e.get("chunk_stamps", []),
                                                                     e.get("chunk_latency_s", []))
                         if round(stamp, 6) in planned_stamps]
    usable = [d for d in decisions if d["ok"]]
    med = lambda xs: float(statistics.median(xs)) if xs else None  # noqa: E731
    return {"loop": "graph", "candidates": n, "episodes": len(episodes),
            "successes": int(sum(bool(e["success"]) for e in episodes)),
            "decision_s": med(planned_latencies) if n > 1 else med(latencies),
            "changed_choice_fraction": (sum(d["chosen"] != 0 for d in usable) / len(usable)) if usable else 0.0,
            "max_reward_counts": [int(sum(e["max_reward"] == k for e in episodes)) for k in range(5)],
            "decisions": len(decisions) if n > 1 else len(latencies),
            "per_seed": [bool(e["success"]) for e in episodes],
            "plan_window": None if window is None else [float(window[0]), float(window[1])],
            "planning_s": med([d["planning_s"] for d in usable]), "fallbacks": len(decisions) - len(usable),
            "chunk_latency_s": med(latencies)}


def run_graph(args) -> int:
    """The rows through the real ROS 2 graph: ``make demo`` per row (base, then best-of-N in the window)."""
    import subprocess
    import tempfile

    counts = [int(c) for c in args.candidates.split(",") if c.strip()]
    windowed = [int(c) for c in (args.windowed if args.windowed is not None else "4,8").split(",") if c.strip()]
    if 1 not in counts or any(c > 1 for c in counts):
        raise SystemExit(f"--loop graph: --candidates is the base row only (1); the planned rows are --windowed "
                         f"(a CPU planner at every decision outlasts the episode), got --candidates {args.candidates!r}")
    if not windowed or min(windowed) < 2:
        raise SystemExit(f"--loop graph: --windowed expected integers >= 2, got {args.windowed!r}")
    if not Path(args.planning_model).is_dir():
        raise SystemExit(f"planning model {args.planning_model!r} not found: build it with scripts/planning_model.sh")
    if not args.graph_sim_s > 0 or args.graph_episodes < 1:
        raise SystemExit("--graph-sim-s and --graph-episodes: expected positive numbers")
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    steps = int(round(args.graph_sim_s * 50))  # the simulator's 50 Hz physics steps
    rows, t_start = [], time.monotonic()
    for n in [1] + windowed:
        with tempfile.TemporaryDirectory(prefix="planning_success_graph_") as tmp:
            cmd = [sys.executable, "-m", "cosmos_policy_ros.demo", "--checkpoint", args.policy,
                   "--episodes", str(args.graph_episodes), "--seed", str(args.seed_start), "--out", tmp,
                   "--json", f"{tmp}/results.json", "--execution", "pause", "--rtc", "off",
                   "--sim-steps", str(steps), "--duration", str(args.graph_sim_s + 10)]
            if n > 1:
                cmd += ["--planning-model", args.planning_model, "--planning-candidates", str(n), "--planning-window",
                        *(str(v) for v in args.plan_window), "--planning-deadline", str(args.graph_deadline)]
            say(f"[graph] N={n}: {' '.join(cmd[1:])}")
            t0 = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            results = Path(tmp) / "results.json"
            if proc.returncode != 0 or not results.is_file():
                print(f"The graph run N={n} failed (exit {proc.returncode}):\n\n```\n"
                      f"{(proc.stdout + proc.stderr)[-3000:]}\n```")
                return 1
            episodes = json.loads(results.read_text())
        row = graph_row(n, args.plan_window if n > 1 else None, episodes)
        row["wall_s"] = round(time.monotonic() - t0, 1)
        say(f"[graph] N={n}: {row['successes']}/{row['episodes']}, decision {row['decision_s']}, changed "
            f"{row['changed_choice_fraction']:.2f}, fallbacks {row['fallbacks']}")
        rows.append(row)
    graph = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "execution": "pause", "sim_s": args.graph_sim_s,
             "planning_deadline_s": args.graph_deadline, "seed_start": args.seed_start,
             "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
             "wall_s": round(time.monotonic() - t_start, 1)}
    return finish(carry_other_loop({"rows": rows, "graph": graph}, args.carry, "graph"), args.json)


#: the window that holds the grasp decision in each loop: tick 50 of the ROS-free pause loop; the graph's second
#: observation, taken 2 s plus the first chunk's latency (0.3 to 1.5 s on 2 CPU cores) after the episode start
GRASP_WINDOWS = {"ros-free": (1.0, 3.0), "graph": (1.0, 5.0)}


def windowed_note(rows) -> str:
    """The table's words for rows that plan only inside a window (empty when there are none)."""
    windowed = [r for r in rows if r.get("plan_window")]
    if not windowed:
        return ""
    spans = ", ".join(f"{a:g}-{b:g} s" for a, b in sorted({tuple(r["plan_window"]) for r in windowed}))
    loops = sorted({r["loop"] for r in windowed}, reverse=True)  # ros-free first
    grasp = ""
    if all(tuple(r["plan_window"]) == GRASP_WINDOWS.get(r["loop"]) for r in windowed):
        where = {"ros-free": " in the ROS-free pause loop", "graph": " in the graph"}
        grasp = ("; " + " and ".join(f"{GRASP_WINDOWS[lp][0]:g}-{GRASP_WINDOWS[lp][1]:g} s{where[lp]}" for lp in loops)
                 + (" hold" if len(loops) > 1 else " holds") + " the grasp decision")
    return (f" (of the planned decisions); a row marked {spans} only plans for observations taken that long after "
            f"the episode start (`planning_window`{grasp}) and runs the base policy's chunk at the others")


def render(data: dict) -> str:
    """The markdown section of a planning_success.json."""
    rows = data["rows"]
    pl = data.get("planner", {})
    if data.get("choice") == "random":
        head = (f"Base policy `{data.get('policy', '?')}` against a uniformly random one of N candidates at every "
                f"decision (the control: no planning model)")
    else:
        head = (f"Base policy `{data.get('policy', '?')}` against best-of-N with the planning model "
                f"`{data.get('planning_model', '?')}` (K = {len(pl.get('future_state_steps', [])) or '?'} world-model x "
                f"M = {len(pl.get('value_steps', [])) or '?'} value samples per candidate, {pl.get('aggregation', '?')}, "
                f"{pl.get('score', '?')}, {pl.get('noise', 'per_candidate')} noise, switch margin "
                f"{pl.get('switch_margin', 0.0):g})")
    seed = data.get("policy_seed")
    if data.get("execution") == "stream-rtc":
        head += (f"; streaming with real-time chunking, every chunk (planned or not) arriving "
                 f"{data.get('delay_ticks')} ticks after its observation")
    lines = [f"{head}, the same held-out seeds {data.get('seed_start', '?')}.. in every row"
             f"{'' if seed is None else f', policy seed {seed}'}, {data.get('machine', '?')}, {data.get('date', '?')}. "
             f"Changed choice: decisions where planning kept a chunk other than the base policy's"
             f"{windowed_note(rows)}. Rerun: "
             f"`python bench/planning_success.py`.\n",
             "| loop | candidates | success | max reward 0/1/2/3/4 | decision (median) | changed choice |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        n = max(1, r["episodes"])
        dec = r.get("decision_s")
        win = r.get("plan_window")
        where = "" if not win else f", {win[0]:g}-{win[1]:g} s only"
        lines.append(f"| {r['loop']} | {r['candidates']}{' (base)' if r['candidates'] == 1 else where} | "
                     f"{r['successes']}/{r['episodes']} ({100 * r['successes'] / n:.0f}%) | "
                     f"{'/'.join(map(str, r.get('max_reward_counts', []))) or '-'} | "
                     f"{'-' if dec is None else f'{dec:.2f} s'} | {100 * r['changed_choice_fraction']:.0f}% |")
    base = {r["loop"]: r.get("per_seed") for r in rows if r["candidates"] == 1}
    flips = []
    for r in rows:
        b, ps = base.get(r["loop"]), r.get("per_seed")
        if r["candidates"] > 1 and b and ps and len(b) == len(ps):
            won = sum((not x) and y for x, y in zip(b, ps))
            lost = sum(x and not y for x, y in zip(b, ps))
            win = r.get("plan_window")
            where = "" if not win else f" planning {win[0]:g}-{win[1]:g} s into the episode only"
            flips.append(f"best-of-{r['candidates']}{where} ({r['loop']}) succeeds on {won} scenes the base policy fails and "
                         f"fails on {lost} it succeeds")
    if flips:
        lines.append("\nScene by scene against the base: " + "; ".join(flips) + ".")
    g = data.get("graph")
    graph_rows = [r for r in rows if r["loop"] == "graph"]
    if g and graph_rows:
        planned = [r for r in graph_rows if r["candidates"] > 1]
        times = "; ".join(f"best-of-{r['candidates']}: the planner node's own time {r['planning_s']:.1f} s, "
                          f"{r['decisions']} decisions, {r['fallbacks']} without a usable answer"
                          for r in planned if r.get("planning_s") is not None)
        base = next((r for r in graph_rows if r["candidates"] == 1), None)
        base_dec = "" if base is None or base.get("decision_s") is None else f", {base['decision_s']:.2f} s"
        lines.append(
            f"\nGraph rows: the real ROS 2 graph (`make demo`: sim bridge in real time, policy node, planner node "
            f"with the planning model, commander, recorder), seeds {g.get('seed_start', '?')}.., "
            f"`execution: {g.get('execution', 'pause')}` (the robot holds while a chunk is computed), "
            f"{g.get('sim_s', 0):g} s of simulated time per episode in every row (the simulator runs on while the robot "
            f"holds), `planning_deadline` {g.get('planning_deadline_s', 0):g} s, {g.get('machine', '?')}, "
            f"{g.get('date', '?')}; planning only in the window (the grasp decision: the episode's second "
            f"observation, taken 2 s plus the first chunk's latency after the start). Decision: from the "
            f"observation to the planned chunk's arrival (the base row: every chunk's latency{base_dec})"
            f"{'; ' + times if times else ''}.{' ' + g['note'] if g.get('note') else ''} Rerun: "
            f"`python bench/planning_success.py --loop graph` ({g.get('wall_s', 0) / 60:.0f} min).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
