"""BENCHMARKS.md is generated from bench/results/<section>.json: the committed file equals what the renderer
makes of the committed figures, every section has its file, the files tools read keep their schemas, and
`make bench`'s runner writes a section's JSON and the rendered file end to end."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(os.environ.get("COSMOS_POLICY_ROS_SOURCE", Path(__file__).resolve().parents[2]))
BENCH = SOURCE / "bench"
RESULTS = BENCH / "results"


def _render_module():
    spec = importlib.util.spec_from_file_location("bench_render", BENCH / "render.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmarks_md_is_rendered_from_the_committed_json():
    render = _render_module()
    committed = (SOURCE / "BENCHMARKS.md").read_text()
    assert render.render(RESULTS) == committed, (
        "BENCHMARKS.md differs from what bench/results/*.json render to: run `python bench/render.py`")


def test_every_section_has_its_json_and_nothing_else_is_in_the_file():
    render = _render_module()
    committed = (SOURCE / "BENCHMARKS.md").read_text()
    in_md = re.findall(r"<!-- bench:(\w+) -->", committed)
    assert in_md == list(render.SECTIONS)
    for key in render.SECTIONS:
        data = json.loads((RESULTS / f"{key}.json").read_text())
        assert data["run"]["rerun"] == f'make bench BENCH_ARGS="--only {key}"'
        if data["run"]["status"] == "ok":  # measured: when and where
            assert data["run"]["measured"] and data["run"]["machine"], key
    assert sorted(p.stem for p in RESULTS.glob("*.json")) == sorted(render.SECTIONS)
    # the project speaks of itself: dated measurements, no session talk
    assert not re.search(r"sessions? [0-9]+", committed, re.IGNORECASE)


def test_schemas_that_tools_read():
    ros = json.loads((RESULTS / "policy_success_ros.json").read_text())
    assert isinstance(ros["seed_start"], int)
    required = {"execution": str, "episodes": int, "successes": int, "median_time_to_success_s": float,
                "held_ticks_per_episode": float, "max_switch_jump_rad": float}
    assert ros["rows"]
    for row in ros["rows"]:
        for field, kind in required.items():
            assert row[field] is None or isinstance(row[field], (kind, int) if kind is float else kind), (field, row)
    gpu = json.loads((RESULTS / "model_2b_gpu.json").read_text())
    assert "device" in gpu and isinstance(gpu["rows"], list)
    for row in gpu["rows"]:
        assert {"calls", "batch", "seconds", "peak_gib", "variant"} <= set(row)
    cpu = json.loads((RESULTS / "model_cpu.json").read_text())  # the same schema, measured on CPU
    assert {"calls", "batch", "seconds", "peak_gib", "variant"} <= set(cpu["rows"][0])
    plan = json.loads((RESULTS / "planning_success.json").read_text())
    required = {"loop": str, "candidates": int, "episodes": int, "successes": int, "decision_s": float,
                "changed_choice_fraction": float}
    assert plan["rows"]
    for row in plan["rows"]:
        for field, kind in required.items():
            assert isinstance(row[field], (kind, int) if kind is float else kind), (field, row)
        assert row["loop"] in ("ros-free", "graph")
    # the base policy and best-of-N on the same seeds, in each loop measured
    for loop in {r["loop"] for r in plan["rows"]}:
        assert 1 in {r["candidates"] for r in plan["rows"] if r["loop"] == loop}


def test_a_missing_figure_renders_as_not_measured_and_a_gpu_section_without_figures_says_so():
    render = _render_module()
    md = render.render(RESULTS)
    ros = json.loads((RESULTS / "policy_success_ros.json").read_text())
    if any(r["held_ticks_per_episode"] is None for r in ros["rows"]):
        assert "not measured" in md.split("<!-- bench:policy_success_ros -->")[1]
    text = render.render_section("model_2b_gpu", {"run": {"status": "not measured", "note": "needs a GPU"},
                                                  "device": None, "rows": []})
    assert "Not measured (needs a GPU)" in text and "--only model_2b_gpu" in text


def test_runner_writes_the_section_json_and_renders_the_file(tmp_path):
    """`make bench`'s write path without running an expensive benchmark: a GPU section on a machine without
    a GPU is written as not measured, and the other sections keep their recorded figures."""
    try:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU: the section would run the 2B benchmark")
    except ImportError:
        pass
    results = tmp_path / "results"
    results.mkdir()
    for p in RESULTS.glob("*.json"):
        if p.stem != "model_2b_gpu":
            (results / p.name).write_text(p.read_text())
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--only", "model_2b_gpu", "--results",
                           str(results), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((results / "model_2b_gpu.json").read_text())
    assert data["run"]["status"] == "not measured" and data["rows"] == []
    md = out.read_text()
    section = md.split("<!-- bench:model_2b_gpu -->")[1].split("<!-- bench:")[0]
    assert "Not measured (needs a GPU)" in section
    # the other sections come from their files unchanged
    assert md.split("<!-- bench:planner -->")[1] == (SOURCE / "BENCHMARKS.md").read_text().split(
        "<!-- bench:planner -->")[1]
