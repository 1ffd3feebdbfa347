"""package.xml and requirements/ must declare exactly what the installed code imports.

Scans every Python file that ships (cosmos_policy_ros/, training/, launch/, scripts/) with ast. A ROS
package imported but not declared breaks `colcon build` users at run time; a declared ROS package that
nothing imports is dead weight for rosdep. Third-party Python imports must be known here, declared in
package.xml (rosdep key) and installed by requirements/*.txt (pip name).
"""
import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# import name -> (package.xml key, pip requirement name that brings it in)
PYTHON_DEPS = {
    "numpy": ("python3-numpy", "numpy"),
    "yaml": ("python3-yaml", "pyyaml"),
    "torch": ("python3-torch", "torch"),
    "diffusers": ("python3-diffusers-pip", "diffusers"),
    "huggingface_hub": ("python3-huggingface-hub-pip", "huggingface_hub"),
    "safetensors": ("python3-safetensors-pip", "safetensors"),
    "rosbags": ("python3-rosbags-pip", "rosbags"),
    "h5py": ("python3-h5py", "h5py"),
    "tqdm": ("python3-tqdm", "tqdm"),
    "PIL": ("python3-pil", "pillow"),
    "matplotlib": ("python3-matplotlib", "matplotlib"),
    "mujoco": ("python3-mujoco-pip", "gym-aloha"),
    "gym_aloha": ("python3-gym-aloha-pip", "gym-aloha"),
    "gymnasium": ("python3-gymnasium-pip", "gym-aloha"),
    "dm_control": ("python3-dm-control-pip", "gym-aloha"),
    "imageio": ("python3-imageio", "imageio"),
}
# ROS packages that are dependencies without being imported by name.
ROS_IMPLICIT = {
    "rosidl_default_runtime": "generated message code needs it at run time",
    "builtin_interfaces": "msg/*.msg use builtin_interfaces types",
    "std_msgs": "msg/*.msg use std_msgs/Header",
}
# Python packages needed without an import statement naming them.
PYTHON_IMPLICIT = {
    "python3-gym-aloha-pip": "the simulator loads gym-aloha's MJCF assets (found with importlib.util.find_spec)",
}
# Imports satisfied by a declared dependency's own requirements (import name -> why).
TRANSITIVE = {
    "backports": "backports.zstd, installed by rosbags (zstd-compressed MCAP chunks)",
    "lz4": "installed by rosbags (lz4-compressed MCAP chunks)",
    "compression": "standard library from Python 3.14 (compression.zstd)",
}
OWN = {"cosmos_policy_ros", "cosmos_policy_training"}
SHIPPED = ("cosmos_policy_ros", "training", "launch", "scripts")


def _ros_packages():
    """Names of ROS packages known to this install (ament index) plus robot-only ones."""
    from ament_index_python.packages import get_packages_with_prefixes

    return set(get_packages_with_prefixes()) | {"launch", "launch_ros", "interbotix_xs_modules", "interbotix_xs_msgs"}


def _shipped_files(root: Path):
    for top in SHIPPED:
        base = root / top
        if not base.exists():
            continue
        for path in base.rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix == ".py" or (top == "scripts" and path.read_bytes()[:40].startswith(b"#!/usr/bin/env python")):
                yield path


def _top_level_imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.args[0].value.split(".")[0]


def _package_xml_deps(root: Path):
    tree = ET.parse(root / "package.xml")
    tags = ("depend", "exec_depend", "build_depend", "build_export_depend")
    return {el.text.strip() for tag in tags for el in tree.getroot().iter(tag)}


def _requirement_names(root: Path):
    names = set()
    for req in (root / "requirements").glob("*.txt"):
        if req.name == "lock.txt":
            continue
        for line in req.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                names.add(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


@pytest.fixture(scope="module")
def imports(repo_root):
    found = {}
    for path in _shipped_files(repo_root):
        for name in _top_level_imports(path):
            found.setdefault(name, set()).add(str(path.relative_to(repo_root)))
    return found


def test_every_import_is_declared(imports, repo_root):
    ros = _ros_packages()
    declared = _package_xml_deps(repo_root)
    reqs = _requirement_names(repo_root)
    problems = []
    for name, where in sorted(imports.items()):
        if name in OWN or name in TRANSITIVE or name in sys.stdlib_module_names or name == "__future__":
            continue
        example = sorted(where)[0]
        if name in ros:
            if name not in declared:
                problems.append(f"ROS package {name!r} imported ({example}) but not in package.xml")
        elif name in PYTHON_DEPS:
            key, pip_name = PYTHON_DEPS[name]
            if key not in declared:
                problems.append(f"{name!r} imported ({example}) but rosdep key {key!r} not in package.xml")
            if pip_name.lower().replace("_", "-") not in reqs:
                problems.append(f"{name!r} imported ({example}) but {pip_name!r} not in requirements/*.txt")
        else:
            problems.append(f"unknown third-party import {name!r} ({example}): declare it in package.xml, "
                            f"requirements/ and PYTHON_DEPS in this test")
    assert not problems, "\n".join(problems)


def test_every_declared_dependency_is_used(imports, repo_root):
    declared = _package_xml_deps(repo_root) - {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"}
    python_keys = {key: name for name, (key, _) in PYTHON_DEPS.items()}
    unused = []
    for dep in sorted(declared):
        if dep in ROS_IMPLICIT or dep in PYTHON_IMPLICIT:
            continue
        if dep in python_keys:
            if not any(n in imports for n, (k, _) in PYTHON_DEPS.items() if k == dep):
                unused.append(dep)
        elif dep not in imports:
            unused.append(dep)
    assert not unused, f"declared in package.xml but imported nowhere: {unused}"


def test_scanner_sees_imports(imports):
    """Guard against a vacuous scan: modules we know exist are found."""
    assert "rclpy" in imports and "numpy" in imports
