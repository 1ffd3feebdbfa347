"""Test isolation: every pytest process gets its own ROS_DOMAIN_ID, held by a lock file for its lifetime.

Two `make test` runs in parallel, each with several xdist workers, therefore never share a DDS domain
(no crosstalk), and traffic stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).
"""
import fcntl
import os
import random
import sys
import tempfile
from pathlib import Path

import pytest

_DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "cosmos_policy_ros_domains"
_held_lock = None  # keeps the lock file open (and locked) until this process exits


def _allocate_domain_id() -> int:
    """Pick a free DDS domain (1..200) by taking an exclusive lock on its lock file."""
    global _held_lock
    _DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    candidates = list(range(1, 201))
    random.Random(os.getpid()).shuffle(candidates)
    for domain in candidates:
        fd = os.open(_DOMAIN_LOCK_DIR / f"{domain}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held_lock = fd
        return domain
    raise RuntimeError(f"no free ROS domain id in 1..200 (lock files in {_DOMAIN_LOCK_DIR})")


def pytest_configure(config):
    # Runs in the controller and in each xdist worker before any test imports rclpy.
    os.environ["ROS_DOMAIN_ID"] = str(_allocate_domain_id())
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("MUJOCO_GL", "egl")
    src = os.environ.get("COSMOS_POLICY_ROS_SOURCE")
    if src and "AMENT_PREFIX_PATH" not in os.environ:
        os.environ["AMENT_PREFIX_PATH"] = str(Path(src) / ".venv")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The source checkout (tests read config/, msg/, package.xml from it)."""
    src = os.environ.get("COSMOS_POLICY_ROS_SOURCE")
    return Path(src) if src else Path(__file__).resolve().parents[1]


@pytest.fixture
def ros_session():
    """An isolated rclpy context with a spinning executor; closed after the test."""
    from cosmos_policy_ros.ros.harness import RosSession

    session = RosSession()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def node_log_dir(tmp_path):
    """Where subprocess nodes write their logs; printed on failure by pytest's tmp_path retention."""
    d = tmp_path / "node_logs"
    d.mkdir()
    return str(d)
