"""`cosmos-policy report` on a bag the sim graph recorded: one PNG per episode with the joints (commanded vs
measured), holds, the predicted value and the safety interventions.

The bag comes from `make demo`'s own code path (the sim graph: sim bridge, policy node with the embedded
checkpoint, 25 Hz commander, recorder), a short episode."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # At least 2 chunks run whatever the load: on a busy 2-core machine the first inference alone can take 4 s.
    proc = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.demo", "--duration", "4", "--min-chunks", "2",
                           "--out", str(out), "--json", str(out / "results.json")],
                          capture_output=True, text=True, timeout=400, env=dict(os.environ))
    bags = sorted(p for p in (out / "bags").iterdir() if p.is_dir()) if (out / "bags").is_dir() else []
    assert proc.returncode == 0 and len(bags) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    return bags[0]


def _png_size(path: Path):
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_report_writes_the_episode_png_with_every_panel(demo_bag, tmp_path):
    from cosmos_policy_ros.core.robot import JOINT_NAMES
    from cosmos_policy_training.bags import open_bag
    from cosmos_policy_training.report import report

    with open_bag(demo_bag) as bag:  # the recorder keeps the commander's trace by default
        assert "/commander/trace" in bag.info.topics
    png = tmp_path / "episode.png"
    summary = report(demo_bag, png)
    w, h = _png_size(png)
    assert w > 800 and h > 500
    titles = summary["axes"]
    assert len(titles) == 14 + 3  # one panel per joint, then holds, value, safety
    assert [t.split(" (")[0] for t in titles[:14]] == list(JOINT_NAMES)
    assert titles[14].startswith("holds: ") and "chunk switches" in titles[14]
    assert titles[15].startswith("predicted value")
    assert titles[16].startswith("safety interventions")
    # what the panels show comes from the recorded episode
    assert summary["ticks"] > 25  # > 1 s of 25 Hz commander ticks
    assert summary["chunk_switches"] >= 2  # the first running chunk counts, then each change
    assert summary["value_points"] >= 1
    assert summary["held_ticks"] is not None and summary["held_ticks"] < summary["ticks"]


def test_demo_json_times_every_chunk_from_its_observation(demo_bag):
    """`make demo --json`: each chunk's observation stamp and its latency to the demo's node (what the planning
    benchmark's graph rows are timed from); no planner, no decisions."""
    [episode] = json.loads((demo_bag.parent.parent / "results.json").read_text())
    stamps, latencies = episode["chunk_stamps"], episode["chunk_latency_s"]
    assert episode["chunks"] >= 2 and len(stamps) == len(latencies) == episode["chunks"]
    assert stamps == sorted(stamps) and all(0 < lat < 60 for lat in latencies)
    assert episode["plan_decisions"] == []


def test_cli_writes_one_png_per_episode_and_finds_an_episode_by_id(demo_bag, tmp_path):
    from cosmos_policy_ros.cli import main

    out_dir = tmp_path / "reports"
    assert main(["report", str(demo_bag.parent), "--out", str(out_dir)]) == 0  # a folder of bags
    assert [p.name for p in out_dir.iterdir()] == [f"{demo_bag.name}.png"]
    _png_size(out_dir / f"{demo_bag.name}.png")

    episode_id = demo_bag.name.split("_", 1)[1]  # bag folders are <time>_<episode id>
    png = tmp_path / "by_id.png"
    assert main(["report", episode_id, "--bags", str(demo_bag.parent.parent), "--out", str(png)]) == 0
    _png_size(png)


def test_report_of_the_converted_episode_plots_actions_against_proprio(demo_bag, tmp_path):
    from cosmos_policy_training.convert import ConvertConfig, convert_all
    from cosmos_policy_training.report import report

    [res] = convert_all([str(demo_bag)], ConvertConfig(output_dir=str(tmp_path / "eps")), progress=False)
    assert res.status == "ok", res
    png = tmp_path / "converted.png"
    summary = report(Path(res.output), png)
    _png_size(png)
    assert len(summary["axes"]) == 17
    assert summary["axes"][14] == "holds: not recorded (no commander trace)"  # a training episode keeps no trace


def test_cli_names_a_missing_bag_clearly(tmp_path, capsys):
    from cosmos_policy_ros.cli import main

    assert main(["report", "no-such-episode", "--bags", str(tmp_path)]) == 2
    assert "no such bag" in capsys.readouterr().err
