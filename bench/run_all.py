"""`make bench`: run every benchmark and rewrite BENCHMARKS.md with their markdown output.

Each benchmark is a script printing a markdown section on stdout (and progress on stderr). A failing or
missing benchmark is written down as such, never silently dropped. Run one with
`make bench BENCH_ARGS="--only commander"`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("COSMOS_POLICY_ROS_SOURCE", Path(__file__).resolve().parents[1]))

# key -> (title, script, args, timeout s)
BENCHES = {
    "commander": ("Commander tick timing and observation preprocessing", "bench/commander_bench.py", [], 600),
    "recorder": ("Recorder: drops and write headroom at full rate", "bench/recorder_bench.py", [], 900),
    "sim_expert": ("Scripted transfer-cube expert", "bench/sim_expert.py", [], 1200),
    "model_cpu": ("Model core latency (tiny config, CPU)", "bench/gpu_latency.py", ["--tiny", "--repeats", "2"], 600),
    "model_2b_gpu": ("Model core latency, full 2B config (random weights, bf16, GPU)", "bench/gpu_latency.py",
                     ["--device", "cuda", "--batch", "1", "8"], 1200),
    "planner_2b_gpu": ("Planner decision latency, full 2B config, N = 8 with 3 x 5 ensembles (GPU)",
                       "bench/planner_bench.py", ["--full-2b"], 1800),
    "planner": ("Planner decision latency", "bench/planner_bench.py", [], 900),
    "policy_success": ("Small sim policy success rate (ROS-free loop, 50 seeds)", "bench/policy_success.py", [], 3600),
    "policy_success_ros": ("Small sim policy through the real ROS 2 graph", "bench/policy_success_ros.py", [], 3600),
}


def machine() -> str:
    """One line describing the machine the numbers came from."""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        tv = torch.__version__
    except Exception:  # torch missing must not stop the report
        gpu, tv = "unknown", "n/a"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = "load average at start %.1f / %.1f / %.1f" % os.getloadavg()
    except OSError:
        load = "load average unknown"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, Python {platform.python_version()}, torch {tv}; {load}"


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch: no GPU benchmark either
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these benchmarks")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    keys = args.only or list(BENCHES)
    out_path = Path(args.out)
    previous = out_path.read_text() if out_path.exists() else ""
    sections = {}
    for key in keys:
        title, script, extra, timeout = BENCHES[key]
        path = ROOT / script
        if not path.exists():
            sections[key] = f"## {title}\n\nNot run: `{script}` does not exist yet.\n"
            continue
        if key.endswith("_gpu") and not _has_cuda():
            sections[key] = (f"## {title}\n\nNot run: no GPU on the machine that ran `make bench` "
                             f"({dt.date.today().isoformat()}). On a GPU machine: "
                             f"`python {script} {' '.join(extra)}` (or `make bench BENCH_ARGS=\"--only {key}\"`).\n")
            continue
        print(f"[bench] {key}: {script} {' '.join(extra)}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, str(path), *extra], cwd=ROOT, capture_output=True, text=True,
                                  timeout=timeout)
            body = proc.stdout.strip()
            if proc.returncode != 0:
                body += f"\n\n**FAILED** (exit {proc.returncode}):\n\n```\n{proc.stderr.strip()[-3000:]}\n```"
        except subprocess.TimeoutExpired:
            body = f"**TIMED OUT** after {timeout} s."
        elapsed = time.monotonic() - t0
        when = dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
        sections[key] = (f"## {title}\n\nRerun: `make bench BENCH_ARGS=\"--only {key}\"` "
                         f"(`{script}`, took {elapsed:.0f} s, finished {when}, load average "
                         f"{_load()})\n\n{body}\n")
    header = (
        "# Benchmarks\n\nProduced by `make bench` (bench/run_all.py); every number below was measured, "
        "including the ones that disappoint.\n\n"
        f"- Last run: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
        f"({'all sections' if not args.only else 'only ' + ', '.join(keys)}; every section says when it was measured)\n"
        f"- Machine: {machine()}\n\n")
    keep = _sections_of(previous)
    for key in BENCHES:
        if key not in sections and key in keep:
            sections[key] = keep[key]
    text = header + "\n".join(f"<!-- bench:{k} -->\n{sections[k]}" for k in BENCHES if k in sections)
    out_path.write_text(text)
    print(f"[bench] wrote {out_path}", file=sys.stderr)
    return 0


def _sections_of(text: str):
    """Previously written sections, so `--only x` keeps the others (each carries its own rerun line)."""
    parts = {}
    chunks = text.split("<!-- bench:")
    for chunk in chunks[1:]:
        key, _, body = chunk.partition(" -->\n")
        parts[key.strip()] = body.rstrip("\n") + "\n"  # the join adds the separating blank line
    return parts


def _load() -> str:
    """1/5/15-minute load average, as text."""
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
