"""bench/planning_success.py's graph loop: the rows it derives from `make demo --json` episode records (which
chunk a planner decision produced, the decision's latency, kept choices, fallbacks) and the results file that
keeps both loops' figures when only one of them is rerun."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

SOURCE = Path(os.environ.get("COSMOS_POLICY_ROS_SOURCE", Path(__file__).resolve().parents[2]))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_planning_success", SOURCE / "bench" / "planning_success.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _decision(stamp, chosen, ok=True, planning_s=9.0):
    return {"stamp": stamp, "ok": ok, "chosen": chosen, "candidates": 8, "planning_s": planning_s, "queue_s": 0.0,
            "error": "" if ok else "model error"}


def test_graph_row_times_the_planned_chunks_and_counts_choices_and_fallbacks(bench):
    episodes = [
        # three chunks; the second answered a planner decision that kept candidate 3
        {"success": True, "max_reward": 4, "chunk_stamps": [100.0, 103.2, 120.9],
         "chunk_latency_s": [0.5, 14.0, 0.6], "plan_decisions": [_decision(103.2, 3)]},
        # the decision kept the base chunk
        {"success": False, "max_reward": 2, "chunk_stamps": [200.0, 203.1, 219.0, 221.5],
         "chunk_latency_s": [0.4, 12.0, 0.5, 0.7], "plan_decisions": [_decision(203.1, 0, planning_s=8.0)]},
        # no usable answer: the node fell back to candidate 0 (its chunk is still timed as a planned one)
        {"success": True, "max_reward": 4, "chunk_stamps": [300.0, 303.0], "chunk_latency_s": [0.6, 16.0],
         "plan_decisions": [_decision(303.0, -1, ok=False)]},
    ]
    row = bench.graph_row(8, (1.0, 5.0), episodes)
    assert row["loop"] == "graph" and row["candidates"] == 8 and row["episodes"] == 3 and row["successes"] == 2
    assert row["decision_s"] == 14.0  # median of the three planned chunks' latencies, not of every chunk
    assert row["changed_choice_fraction"] == pytest.approx(0.5)  # of the usable decisions
    assert row["fallbacks"] == 1 and row["decisions"] == 3 and row["planning_s"] == pytest.approx(8.5)
    assert row["max_reward_counts"] == [0, 0, 1, 0, 2] and row["per_seed"] == [True, False, True]
    assert row["plan_window"] == [1.0, 5.0] and row["chunk_latency_s"] == pytest.approx(0.6)
    base = bench.graph_row(1, None, [dict(e, plan_decisions=[]) for e in episodes])
    assert base["decision_s"] == pytest.approx(0.6) and base["decisions"] == 9 and base["changed_choice_fraction"] == 0
    assert base["plan_window"] is None and base["fallbacks"] == 0


def test_each_loop_keeps_the_other_loops_rows_in_the_results_file(bench, tmp_path):
    path = tmp_path / "planning_success.json"
    free = {"rows": [{"loop": "ros-free", "candidates": 1}, {"loop": "ros-free", "candidates": 8}],
            "seed_start": 1000, "policy": "p", "date": "2026-12-07", "run": {"status": "ok"}}
    path.write_text(json.dumps(free))
    graph = bench.carry_other_loop({"rows": [{"loop": "graph", "candidates": 1}], "graph": {"date": "2026-12-08"}},
                                   path, "graph")
    assert [r["loop"] for r in graph["rows"]] == ["ros-free", "ros-free", "graph"]
    assert graph["date"] == "2026-12-07" and graph["graph"] == {"date": "2026-12-08"}
    assert graph["run"] == {"status": "ok"}  # make bench's record of the ROS-free run it measured
    path.write_text(json.dumps(graph))
    again = bench.carry_other_loop({"rows": [{"loop": "ros-free", "candidates": 4}], "date": "2026-12-09"}, path,
                                   "ros-free")
    assert [(r["loop"], r["candidates"]) for r in again["rows"]] == [("ros-free", 4), ("graph", 1)]
    assert again["date"] == "2026-12-09" and again["graph"] == {"date": "2026-12-08"}
    # no file (a fresh results folder): this run's rows alone
    alone = bench.carry_other_loop({"rows": [{"loop": "ros-free", "candidates": 1}]}, tmp_path / "none.json",
                                   "ros-free")
    assert alone == {"rows": [{"loop": "ros-free", "candidates": 1}]}


def test_render_describes_the_graph_rows_with_their_own_settings(bench):
    rows = [{"loop": "graph", "candidates": 1, "episodes": 2, "successes": 1, "decision_s": 0.5,
             "changed_choice_fraction": 0.0, "max_reward_counts": [0, 0, 1, 0, 1], "per_seed": [True, False],
             "plan_window": None},
            {"loop": "graph", "candidates": 8, "episodes": 2, "successes": 2, "decision_s": 13.5,
             "changed_choice_fraction": 1.0, "max_reward_counts": [0, 0, 0, 0, 2], "per_seed": [True, True],
             "plan_window": [1.0, 5.0], "planning_s": 9.3, "decisions": 2, "fallbacks": 0}]
    md = bench.render({"rows": rows, "planner": {}, "graph": {"date": "2026-12-08", "execution": "pause",
                                                               "sim_s": 32.0, "planning_deadline_s": 120.0,
                                                               "seed_start": 1000, "machine": "x", "wall_s": 120}})
    assert "| graph | 8, 1-5 s only | 2/2 (100%) |" in md and "13.50 s" in md
    assert "best-of-8 planning 1-5 s into the episode only (graph) succeeds on 1 scenes the base policy fails" in md
    assert "32 s of simulated time per episode" in md and "planner node's own time 9.3 s" in md


@pytest.mark.parametrize("argv, message", [
    (["--planning-deadline", "30"], "--planning-deadline: only with --planning-model"),
    (["--planning-model", "m", "--planning-deadline", "0"], "expected a finite number of seconds > 0, got 0.0"),
    (["--sim-steps", "0"], "--sim-steps: expected a positive number of physics steps, got 0"),
])
def test_demo_refuses_planning_deadline_and_sim_steps_it_cannot_use(argv, message, capsys):
    from cosmos_policy_ros.demo import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
