"""The core, the simulator and the training module must import on a machine without ROS."""
import json
import subprocess
import sys

# Runs in a fresh interpreter with rclpy (and every rclpy-dependent ROS module) made unimportable.
_PROBE = r"""
import importlib, json, pkgutil, sys
BLOCKED = ("rclpy", "rosidl_runtime_py", "launch", "launch_ros", "rcl_interfaces", "sensor_msgs", "std_msgs")
for name in BLOCKED:
    sys.modules[name] = None  # import raises ImportError
failures, imported = {}, []
for root in ("cosmos_policy_ros.core", "cosmos_policy_ros.sim", "cosmos_policy_training"):
    pkg = importlib.import_module(root)
    names = [root] + [m.name for m in pkgutil.walk_packages(pkg.__path__, root + ".")]
    for name in names:
        try:
            importlib.import_module(name)
            imported.append(name)
        except Exception as exc:  # report every offender, not just the first
            failures[name] = f"{type(exc).__name__}: {exc}"
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None)
print(json.dumps({"failures": failures, "imported": imported, "leaked": leaked}))
"""


def test_core_sim_training_import_without_ros():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["failures"] == {}, "modules that need ROS (or are broken): " + json.dumps(report["failures"], indent=1)
    assert report["leaked"] == []
    assert "cosmos_policy_ros.core.robot" in report["imported"]
    assert "cosmos_policy_training" in report["imported"]


def test_probe_detects_a_module_that_imports_rclpy(tmp_path):
    """The boundary check really fails when a module reaches for rclpy (guards against a vacuous test)."""
    bad = tmp_path / "bad_core_module.py"
    bad.write_text("import rclpy\n")
    code = ("import sys; sys.modules['rclpy'] = None; sys.path.insert(0, %r)\n"
            "try:\n    import bad_core_module\nexcept ImportError:\n    print('blocked')\n") % str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "blocked"
