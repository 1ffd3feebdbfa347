"""The installed `cosmos-policy` entry point works as a user runs it: `.venv/bin/cosmos-policy ...` from any
folder, in a shell that has sourced nothing (no activated venv, no AMENT_PREFIX_PATH, no PYTHONPATH)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _installed_entry_point() -> Path:
    exe = Path(sys.prefix) / "bin" / "cosmos-policy"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed (run `make build`)")
    return exe


def _bare_env(**extra) -> dict:
    """What a fresh terminal has: system PATH, HOME; plus the test's DDS isolation."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra)
    return env


def test_entry_point_help_runs_without_sourcing_anything(tmp_path):
    exe = _installed_entry_point()
    assert exe.read_text().startswith("#!") and "env python3" not in exe.read_text().splitlines()[0], \
        "the shebang must name the Python the package was built for, not whichever python3 is on PATH"
    out = subprocess.run([str(exe), "episode", "--help"], cwd=tmp_path, env=_bare_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: cosmos-policy episode" in out.stdout and "start" in out.stdout


def test_entry_point_talks_to_a_running_graph_without_sourcing_anything(tmp_path, ros_session):
    """`cosmos-policy episode status` over real DDS: rclpy, the message type support and discovery all work
    from the bare entry point (the status of a commander, published here on /diagnostics, comes back)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    exe = _installed_entry_point()
    node = ros_session.make_node("fake_commander_diagnostics")
    pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def publish():
        msg = DiagnosticArray()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.status = [DiagnosticStatus(name="commander: safety", message="holding (episode not started)",
                                       values=[KeyValue(key="ticks", value="42")])]
        pub.publish(msg)

    node.create_timer(0.1, publish)
    time.sleep(0.3)
    out = subprocess.run([str(exe), "episode", "status", "--timeout", "30"], cwd=tmp_path, env=_bare_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"stdout: {out.stdout}\nstderr: {out.stderr}"
    assert "commander: safety: holding (episode not started)" in out.stdout
    assert "ticks: 42" in out.stdout
