"""`make bench`: run the benchmarks, write their figures to bench/results/<section>.json, render BENCHMARKS.md.

Each benchmark script takes ``--json PATH`` and writes its figures there (its schema is documented at the top
of the script; progress goes to stderr). This runner adds a ``run`` object (when, machine, how long, load,
the rerun command, ok / failed) and renders BENCHMARKS.md from all result files (bench/render.py), so sections
not run this time keep their recorded figures. A failing benchmark is written down as such, never silently
dropped; a GPU section on a machine without one keeps its figures, or says it is not measured. Run one with
`make bench BENCH_ARGS="--only commander"`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(os.environ.get("COSMOS_POLICY_ROS_SOURCE", Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # PYTHONSAFEPATH=1 leaves the script's folder out
import render  # noqa: E402

#: key -> (title, script, args, timeout s)
BENCHES = render.SECTIONS


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
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, Python {platform.python_version()}, torch {tv}"


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch: no GPU benchmark either
        return False


def run_section(key: str, results: Path) -> dict:
    """Run one benchmark; returns the figures it wrote plus the ``run`` object (also written to results)."""
    title, script, extra, timeout = BENCHES[key]
    path, out = ROOT / script, results / f"{key}.json"
    now = lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: E731
    rerun = render.rerun_command(key)
    if not path.exists():
        data = {"run": {"status": "not run", "note": f"`{script}` does not exist", "rerun": rerun}}
    elif key.endswith("_gpu") and not _has_cuda():
        previous = json.loads(out.read_text()) if out.is_file() else {}
        if render.has_figures(previous):  # measured on a GPU machine earlier: keep those figures
            return previous
        data = {"run": {"status": "not measured", "note": "needs a GPU", "rerun": rerun,
                        "checked": f"no GPU on the machine that ran `make bench` ({dt.date.today().isoformat()})"},
                "device": None, "rows": []}
    else:
        print(f"[bench] {key}: {script} {' '.join(extra)}", file=sys.stderr, flush=True)
        load_start = _load()
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            tmp_json = Path(tmp) / f"{key}.json"
            status, note = "ok", ""
            try:
                proc = subprocess.run([sys.executable, str(path), *extra, "--json", str(tmp_json)], cwd=ROOT,
                                      capture_output=True, text=True, timeout=timeout)
                if proc.returncode != 0:
                    status, note = "failed", f"exit {proc.returncode}:\n{proc.stderr.strip()[-3000:]}"
            except subprocess.TimeoutExpired:
                status, note = "timed out", f"after {timeout} s"
            data = json.loads(tmp_json.read_text()) if tmp_json.is_file() else {}
        data.pop("run", None)
        run = {"status": status, "measured": now(), "machine": machine(), "took_s": round(time.monotonic() - t0),
               "load_average": f"{load_start} at start, {_load()} at end", "rerun": rerun}
        if note:
            run["note"] = note
        data = {"run": run, **data}
    render.write_json(out, data)
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these benchmarks")
    parser.add_argument("--results", default=str(render.RESULTS), help="folder of the <section>.json files")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    results = Path(args.results)
    for key in args.only or list(BENCHES):
        run_section(key, results)
    Path(args.out).write_text(render.render(results))
    print(f"[bench] wrote {results}/*.json and {args.out}", file=sys.stderr)
    return 0


def _load() -> str:
    """1/5/15-minute load average, as text."""
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
