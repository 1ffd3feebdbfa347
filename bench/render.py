"""Render BENCHMARKS.md from the figures in bench/results/<section>.json.

The JSON files are the record (tools and regression checks read them); BENCHMARKS.md is generated from them,
so prose and data cannot disagree. `make bench` (bench/run_all.py) writes the JSON of each section it runs and
then calls this renderer; on its own it rewrites BENCHMARKS.md from the files already there:

    python bench/render.py [--results bench/results] [--out BENCHMARKS.md] [--check]

Every section's file holds the schema documented at the top of its bench script, plus one ``run`` object
written by run_all.py (all keys optional, so a file a bench script wrote alone still renders):

    {"run": {"status": "ok" | "failed" | "timed out" | "not measured" | "not run" | "stale" (figures of an
                       earlier checkpoint or code, kept until rerun; the note says which and why),
             "measured": "YYYY-MM-DD HH:MM UTC", "machine": str, "took_s": float, "load_average": str,
             "rerun": str (the command), "note": str (why not measured / the error)}}

Missing figures (null) render as "not measured".
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(os.environ.get("COSMOS_POLICY_ROS_SOURCE", Path(__file__).resolve().parents[1]))
RESULTS = ROOT / "bench" / "results"
NOT_MEASURED = "not measured"

#: section key -> (title, script, args, timeout s); BENCHMARKS.md lists the sections in this order.
SECTIONS = {
    "commander": ("Commander tick timing and observation preprocessing", "bench/commander_bench.py", [], 600),
    "recorder": ("Recorder: drops and write headroom at full rate", "bench/recorder_bench.py", [], 900),
    "sim_expert": ("Scripted transfer-cube expert", "bench/sim_expert.py", [], 1200),
    "model_cpu": ("Model core latency (tiny config, CPU)", "bench/gpu_latency.py", ["--tiny", "--repeats", "2"], 600),
    "model_2b_gpu": ("Model core latency, full 2B config (random weights, bf16, GPU)", "bench/gpu_latency.py",
                     ["--device", "cuda", "--batch", "1", "8"], 1200),
    "planner_2b_gpu": ("Planner decision latency, full 2B config, N = 8 with 3 x 5 ensembles (GPU)",
                       "bench/planner_bench.py", ["--full-2b", "--device", "cuda"], 1800),
    "planner": ("Planner decision latency", "bench/planner_bench.py", [], 900),
    "policy_success": ("Small sim policy success rate (ROS-free loop, 50 seeds)", "bench/policy_success.py", [], 3600),
    "backbones": ("Sim policies on the two backbones: Predict2 and Predict2.5 (ROS-free loop, 50 seeds)",
                  "bench/backbones.py", [], 3600),
    "policy_success_ros": ("Small sim policy through the real ROS 2 graph", "bench/policy_success_ros.py", [], 3600),
    "denoising_steps": ("Success and chunk latency against denoising calls: pause, stream, stream with RTC "
                        "(ROS-free loop)", "bench/denoising_steps.py", [], 14400),
    "world_model": ("World model: predicted future frames and proprio against copying the current state (held-out "
                    "scenes)", "bench/world_model.py", [], 1800),
    "planning_success": ("Best-of-N planning against the base policy (held-out seeds)", "bench/planning_success.py",
                         ["--threads", "2"], 7200),
    "planning_truth": ("Best-of-N planning: does the planning model rank each candidate by its real outcome?",
                       "bench/planning_truth.py", ["--decision", "50", "--threads", "2"], 3600),
}


def rerun_command(key: str) -> str:
    return f'make bench BENCH_ARGS="--only {key}"'


def _f(value: Any, fmt: str = "{}", unit: str = "") -> str:
    """A figure, or "not measured" when it is missing (null)."""
    if value is None:
        return NOT_MEASURED
    return fmt.format(value) + unit


def _pct(ok: int, n: int) -> str:
    return f"{ok}/{n} ({100 * ok / n:.0f}%)" if n else f"{ok}/{n}"


def _load(values: Any) -> str:
    if values is None:
        return "unknown"
    if isinstance(values, str):
        return values
    if isinstance(values, (int, float)):
        return f"{values:.1f}"
    return " / ".join(f"{v:.1f}" for v in values)


# -- section bodies (one per bench script's schema) ----------------------------------------------------------
def commander_body(d: Dict[str, Any]) -> str:
    s = d["setup"]
    lines: List[str] = []
    n = d.get("nodes")
    if n:
        h, w = s["image_size"]
        reasons = n.get("hold_reasons")
        if isinstance(reasons, dict):
            reasons = ", ".join(f"{k}: {v}" for k, v in reasons.items()) or "none"
        ms3 = lambda k: " / ".join(_f(n[k].get(q) if n.get(k) else None, "{:.2f}") for q in ("p50", "p99", "max"))  # noqa: E731
        lines += [
            f"Commander (25 Hz) with the policy node's inference taking {s['latency_s']:.2f} s "
            f"({s['latency_s'] / 2.0:.0%} of a 2 s chunk, {'burning CPU' if s['busy'] else 'sleeping'}), "
            f"3 x {h}x{w} rgb8 cameras at 30 Hz + 2 x joint states at 100 Hz, {s['duration_s']:.0f} s measured, "
            f"commander niceness {s['nice']}, {s['cores']} cores (load average at end {_load(s.get('load_at_end'))}):",
            "",
            "| metric | value |", "| --- | --- |",
            f"| ticks published / tick numbers spanned | {n['ticks']} / {n['tick_span']} |",
            f"| missed ticks (timer late by a whole period) | {n['missed']} |",
            f"| held ticks (no valid chunk) | {n['held']} (all run, by reason: {reasons or NOT_MEASURED}) |",
            f"| tick period p50 / p99 / max (commander's own clock, ms) | {ms3('tick_period_ms')} |",
            f"| trace receive interval p50 / p99 / max (subscriber, ms) | {ms3('receive_interval_ms')} |",
            f"| chunk margin at arrival, last / min (ticks) | {_f(n.get('chunk_margin_last_ticks'))} / "
            f"{_f(n.get('chunk_margin_min_ticks'))} |",
            f"| policy trigger point after observation (s) | {_f(n.get('trigger_after_observation_s'))} |",
            f"| safety interventions | {_f(n.get('safety_interventions'))} |",
            f"| nodes alive at the end | {n['alive']} |",
            "",
        ]
    lines += ["In-process timings:", "", "| step | p50 (ms) | p99 (ms) | max (ms) |", "| --- | --- | --- | --- |"]
    for r in d["in_process_ms"]:
        lines.append(f"| {r['step']} | {_f(r['p50'], '{:.2f}')} | {_f(r['p99'], '{:.2f}')} | {_f(r['max'], '{:.2f}')} |")
    return "\n".join(lines)


def recorder_body(d: Dict[str, Any]) -> str:
    s = d["setup"]
    params = s.get("recorder_parameters") or "defaults"
    lines = [
        "### Full-rate episode through the recorder node", "",
        f"Full-rate episode of {s['duration_s']:.0f} s through the recorder node (subprocess, Fast DDS shared "
        "memory): 3 x 480x640 rgb8 at 30 Hz, 2 x JointState at 100 Hz, 4 command topics at 25 Hz, value 25 Hz, "
        f"ActionChunk 0.5 Hz, diagnostics 1 Hz. Recorder parameters: {params}; publishers: {s['publishers']}. "
        f"Machine: {s['cores']} cores, load average {_load(s.get('load_average'))} (1/5/15 min).",
        "",
        "| topic | published | recorded | dropped |",
        "| --- | ---: | ---: | ---: |",
    ]
    for t in d["topics"]:
        lines.append(f"| {t['topic']} | {t['published']} | {t['recorded']} | {t['published'] - t['recorded']} |")
    need = d["stream_mb_s"]
    lines += [
        "",
        f"- **drops: {sum(t['published'] - t['recorded'] for t in d['topics'])}** "
        f"(recorder queue drops reported in the bag: {d.get('queue_drops_in_bag')})",
        f"- bag size {d['bag_mb']:.0f} MB -> stream rate {need:.1f} MB/s",
        f"- recorder process CPU: {d['recorder_cpu_percent']:.0f}% of one core",
        f"- writer thread alone (queue -> MCAP): {d['writer_mb_s']:.0f} MB/s = {d['writer_mb_s'] / need:.1f}x headroom",
        f"- disk sequential write (fsync): {d['disk_mb_s']:.0f} MB/s = {d['disk_mb_s'] / need:.1f}x headroom",
    ]
    if d.get("recorder_log"):
        lines.append(f"- {d['recorder_log']}")
    return "\n".join(lines)


def sim_expert_body(d: Dict[str, Any]) -> str:
    s = d["setup"]
    lines = [f"Expert at {s['rate_hz']} Hz (action held for two 50 Hz physics steps), {s['physics_steps']} physics "
             f"steps ({s['physics_steps'] / 50:.0f} s) per episode, seeds 0..N-1. success = reward 4 reached; held = "
             "reward 4 at the last step; first = 50 Hz step of the first success (mean, min-max).", "",
             "| task | time scale | meeting jitter (m) | seeds | success | held at end | first success step | "
             "ms / episode (no images) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in d["rows"]:
        first = "-" if r.get("first_success_step_mean") is None else (
            f"{r['first_success_step_mean']:.0f} ({r['first_success_step_min']}-{r['first_success_step_max']})")
        lines.append(f"| {r['task']} | {r['time_scale']:g} | {r['meeting_jitter_m']:g} | {r['seeds']} | "
                     f"{_pct(r['successes'], r['seeds'])} | {r['held_at_end']}/{r['seeds']} | {first} | "
                     f"{r['ms_per_episode']:.0f} |")
    lines += ["", "| sim cost | time |", "| --- | --- |"]
    for c in d["costs"]:
        lines.append(f"| {c['what']} | {c['ms']:.{c.get('decimals', 1)}f} ms |")
    lines += ["", f"CPU load average during the run: {_load(d.get('load_average'))} on {s['cores']} cores "
                  "(timings scale with contention; success rates do not)."]
    return "\n".join(lines)


def model_body(d: Dict[str, Any]) -> str:
    lines = [f"### Cosmos Policy latency: {d['config']} on {d['device']} ({d['dtype']}, torch {d['torch']}, "
             f"diffusers {d['diffusers']}, {d['steps']} calls, median of {d['repeats']})", "",
             "| variant | batch | preprocess ms | VAE encode ms | network call ms (each) | denoise ms | decode ms | "
             "total ms | peak GiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ms = lambda v: _f(None if v is None else v * 1e3, "{:.1f}")  # noqa: E731
    for r in d["rows"]:
        calls = ", ".join(f"{c * 1e3:.1f}" for c in r["call_s"]) if r.get("call_s") else NOT_MEASURED
        peak = "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.1f}"
        lines.append(f"| {r['variant']} | {r['batch']} | {ms(r.get('preprocess_s'))} | {ms(r.get('encode_s'))} | {calls} | "
                     f"{ms(r.get('denoise_s'))} | {ms(r.get('decode_s'))} | {ms(r['seconds'])} | {peak} |")
    return "\n".join(lines)


def planner_body(d: Dict[str, Any]) -> str:
    cfg = d["config"]
    what = ("random 2B weights, " + d["dtype"]) if d["full_2b"] else "tiny config of the real classes, float32"
    where = d.get("gpu") or d["device"]
    if not str(d["device"]).startswith("cuda"):
        where += f" ({d['threads']} threads)"
    lines = [f"Best-of-N decision latency on {where}, {what}; K = {len(cfg['future_state_steps'])} future states "
             f"(steps {cfg['future_state_steps']}) x M = {len(cfg['value_steps'])} values (steps {cfg['value_steps']}) "
             f"per candidate, {cfg['aggregation']}, {cfg['score']}, future images decoded: {cfg['decode_future_images']}. "
             "Seconds, the repeat with the shortest decision (least disturbed by other load). *candidates*: the "
             "policy's N chunks (one batch, 10 calls); *decision*: the planner (encode + world model + value + "
             "decode), i.e. what the policy node waits for; *decision CPU*: process CPU seconds of the decision "
             "(all threads; steadier than wall time on a shared machine).", "",
             "| N | WM rows (one batch) | value rows (one batch) | candidates | encode | world model | value | decode | "
             "decision | decision CPU | candidates + decision |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in d["rows"]:
        lines.append(f"| {r['n']} | {r['wm_rows']} | {r['value_rows']} | {r['candidates']:.3f} | {r['prepare']:.3f} | "
                     f"{r['world_model']:.3f} | {r['value']:.3f} | {r['decode']:.3f} | {r['decision']:.3f} | "
                     f"{r['decision_cpu']:.3f} | {r['candidates'] + r['decision']:.3f} |")
    if d.get("peak_memory_gib") is not None:
        lines += ["", f"Peak GPU memory (policy + planning model + activations): {d['peak_memory_gib']:.1f} GiB."]
    if d["full_2b"]:
        lines += ["", "Reference (released planning deploy): N = 8, 3 x 5, one GPU per candidate on 8 GPUs: "
                      "~5 s per decision."]
    return "\n".join(lines)


def policy_success_body(d: Dict[str, Any]) -> str:
    n, ok = d["episodes"], d["successes"]
    lines = [f"Checkpoint `{d['checkpoint']}` ({d['policy_id']}), ROS-free sim loop (AlohaSim + CosmosPolicy, 25 Hz "
             f"policy on 50 Hz physics, {d['actions_per_chunk']}-action chunks open-loop), scene seeds "
             f"{d['seed_start']}..{d['seed_start'] + n - 1} (held out), each starting with the cube at rest "
             f"({d['settle_steps']} settle steps).", "",
             "| policy | episodes | success | max reward 0/1/2/3/4 | training data | training time | inference per chunk |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| {d['policy_id']} | {n} | {_pct(ok, n)} | {'/'.join(map(str, d['max_reward_counts']))} | "
             f"{d['training_data']} | {d['training_time']} | {d['inference_ms_per_chunk']:.0f} ms (CPU) |"]
    for ref in d.get("references", []):
        lines.append(f"| {ref['policy']} | - | {ref['success']} | - | {ref['training_data']} | - | - |")
    lines += ["", f"Wall time of this benchmark: {d['wall_s']:.0f} s."]
    return "\n".join(lines)


def policy_success_ros_body(d: Dict[str, Any]) -> str:
    rows = d["rows"]
    n = max((r["episodes"] for r in rows), default=0)
    lines = [f"Embedded checkpoint through the real ROS 2 graph (config/graph.yaml `sim`: sim bridge in real time, "
             f"policy node, commander, recorder; one bag per episode), seeds {d['seed_start']}..{d['seed_start'] + n - 1}, "
             f"{_f(d.get('episode_s'), '{:g}')} s per episode, cameras {d.get('cameras') or NOT_MEASURED} (the demo's "
             "setting; config/sim.yaml). `stream` re-plans while the robot moves; `stream-rtc` (the default of the "
             "launch files and `make demo`) does so with real-time chunking (replace inpainting, whole-overlap "
             "weights, an observation every 35 ticks at most; docs/runtime.md); `pause` runs whole chunks and holds "
             "while the next is computed (the released deploy). *held ticks*: commander "
             "ticks held while an episode runs (all reasons); *max switch jump*: largest per-tick commanded change at "
             "the ticks where a new chunk took over.", "",
             "| execution | episodes | success | max reward 0/1/2/3/4 | chunks executed per episode | median time to "
             "success | held ticks per episode | max switch jump (rad) | wall time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        hist = r.get("max_reward_counts")
        lines.append(f"| {r['execution']} | {r['episodes']} | {_pct(r['successes'], r['episodes'])} | "
                     f"{'/'.join(map(str, hist)) if hist else NOT_MEASURED} | {_f(r.get('chunks_per_episode'), '{:.1f}')} | "
                     f"{_f(r.get('median_time_to_success_s'), '{:.1f}', ' s')} | "
                     f"{_f(r.get('held_ticks_per_episode'), '{:.1f}')} | {_f(r.get('max_switch_jump_rad'), '{:.3f}')} | "
                     f"{_f(r.get('wall_s'), '{:.0f}', ' s')} |")
    p = d.get("policy")
    if p:
        lines += ["", f"Policy: `{p['checkpoint']}`, trained on {p['training_data']}; {p['training_time']}. For "
                      "comparison: the same policy in the ROS-free loop (section above) and ACT's published ~90% "
                      "with 50 scripted demos."]
    return "\n".join(lines)


def _script_render(name: str) -> Callable[[Dict[str, Any]], str]:
    """A section whose table is its bench script's own render() (schema: the script's docstring)."""
    def body(d: Dict[str, Any]) -> str:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.render(d)
    return body


denoising_steps_body = _script_render("denoising_steps")


BODIES: Dict[str, Callable[[Dict[str, Any]], str]] = {
    "commander": commander_body, "recorder": recorder_body, "sim_expert": sim_expert_body,
    "model_cpu": model_body, "model_2b_gpu": model_body, "planner_2b_gpu": planner_body, "planner": planner_body,
    "policy_success": policy_success_body, "policy_success_ros": policy_success_ros_body,
    "denoising_steps": denoising_steps_body, "backbones": _script_render("backbones"),
    "world_model": _script_render("world_model"), "planning_success": _script_render("planning_success"),
    "planning_truth": _script_render("planning_truth"),
}


# -- whole file ---------------------------------------------------------------------------------------------
def has_figures(data: Dict[str, Any]) -> bool:
    """Whether a section's file holds figures (a GPU section on a CPU machine has none)."""
    return any(k != "run" and v not in (None, [], {}) for k, v in data.items() if k not in ("device",))


def render_section(key: str, data: Optional[Dict[str, Any]]) -> str:
    title, script, extra, _ = SECTIONS[key]
    head = f"<!-- bench:{key} -->\n## {title}\n\n"
    if data is None:
        return head + f"Not run: no `bench/results/{key}.json` yet. Run: `{rerun_command(key)}`.\n"
    run = data.get("run") or {}
    status = run.get("status", "ok")
    rerun = run.get("rerun") or rerun_command(key)
    if status in ("not measured", "not run"):
        note = run.get("note") or ("needs a GPU" if key.endswith("_gpu") else "not run yet")
        when = f": {run['checked']}" if run.get("checked") else ""
        where = "On a GPU machine" if key.endswith("_gpu") else "Run"
        cmd = " ".join(["python", script, *extra])
        return head + f"Not measured ({note}){when}. {where}: `{cmd}` (or `{rerun}`).\n"
    facts = [f"`{script}`"]
    if run.get("took_s") is not None:
        facts.append(f"took {run['took_s']:.0f} s")
    if run.get("measured"):
        facts.append(f"measured {run['measured']}")
    if run.get("load_average"):
        facts.append(f"load average {run['load_average']}")
    text = head + f"Rerun: `{rerun}` ({', '.join(facts)})"
    if run.get("machine"):
        text += f"\n\nMachine: {run['machine']}. Figures: `bench/results/{key}.json`."
    text += "\n\n"
    if has_figures(data):
        text += BODIES[key](data) + "\n"
    if status != "ok":
        text += f"\n**{status.upper()}**" + (f":\n\n```\n{run['note']}\n```\n" if run.get("note") else ".\n")
    return text


def load_results(results: Path = RESULTS) -> Dict[str, Dict[str, Any]]:
    out = {}
    for key in SECTIONS:
        path = results / f"{key}.json"
        if path.is_file():
            out[key] = json.loads(path.read_text())
    return out


def render(results: Path = RESULTS) -> str:
    """The whole BENCHMARKS.md text from the JSON files in ``results``."""
    data = load_results(results)
    dates = sorted(d["run"]["measured"] for d in data.values() if (d.get("run") or {}).get("measured"))
    header = ("# Benchmarks\n\nProduced by `make bench` (bench/run_all.py) from the figures in "
              "`bench/results/<section>.json` (`python bench/render.py` rewrites this file from them); every number "
              "below was measured, including the ones that disappoint. Each section says when, on what machine, "
              "and how to rerun it.\n\n"
              f"- Newest measurement: {dates[-1] if dates else 'none'}\n\n")
    return header + "\n".join(render_section(k, data.get(k)) for k in SECTIONS)


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """Write a result file (stable key order, one figure per line, trailing newline: readable diffs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(RESULTS), help="folder of <section>.json files")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--check", action="store_true", help="only compare: exit 1 when --out differs")
    args = ap.parse_args(argv)
    text = render(Path(args.results))
    out = Path(args.out)
    if args.check:
        same = out.is_file() and out.read_text() == text
        print(f"{out}: {'up to date' if same else 'differs from ' + args.results}", file=sys.stderr)
        return 0 if same else 1
    out.write_text(text)
    print(f"[render] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
