"""Message conversions (no rclpy.init), diagnostics statistics, the single graph definition and the launch files."""
import ast
import sys
from pathlib import Path

import numpy as np
import pytest


def test_image_and_chunk_round_trip():
    from sensor_msgs.msg import Image

    from cosmos_policy_ros.ros.conversions import (chunk_to_msg, image_msg_to_rgb, msg_to_chunk, rgb_to_image_msg,
                                                   sec_to_stamp, stamp_to_sec)

    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    msg = rgb_to_image_msg(rgb, 12.5, "cam_high")
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("rgb8", 24, "cam_high")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    bgr = Image(height=6, width=8, encoding="bgr8", step=24)
    bgr.data = rgb[:, :, ::-1].tobytes()
    np.testing.assert_array_equal(image_msg_to_rgb(bgr, (6, 8)), rgb)
    assert stamp_to_sec(sec_to_stamp(1795240000.123456789)) == pytest.approx(1795240000.123456789, abs=1e-6)
    actions = np.arange(50 * 14, dtype=np.float32).reshape(50, 14)
    cm = chunk_to_msg(actions, 100.04, 7, 0.04, "pid", 0.25)
    assert (cm.horizon, cm.action_dim, cm.chunk_id, len(cm.joint_names)) == (50, 14, 7, 14)
    ch = msg_to_chunk(cm)
    np.testing.assert_array_equal(ch.actions, actions)
    assert ch.stamp == pytest.approx(100.04) and ch.policy_id == "pid"
    cm.horizon = 49
    with pytest.raises(ValueError, match="positions for horizon"):
        msg_to_chunk(cm)


def test_arm_command_msgs():
    from cosmos_policy_ros.ros.conversions import arm_command_msgs

    g, s = arm_command_msgs([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1.2)
    assert g.name == "arm" and np.allclose(g.cmd, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert s.name == "gripper" and s.cmd == pytest.approx(1.2)


def test_rate_meter_and_stats():
    from cosmos_policy_ros.ros.diagnostics import RateMeter, Stats

    m = RateMeter(window=1.0)
    for i in range(26):
        m.tick(i * 0.04)
    assert m.rate(1.0) == pytest.approx(25.0, rel=0.05)
    assert m.rate(10.0) == 0.0
    s = Stats()
    for v in range(1, 101):
        s.add(v)
    assert s.summary()["max"] == 100 and s.summary()["p50"] == pytest.approx(50.5)


def test_graph_definition_builds_both_graphs_with_arguments(repo_root):
    from cosmos_policy_ros.ros import graph

    d = graph.load_definition(repo_root / "config" / "graph.yaml")
    assert set(graph.graph_names(d)) >= {"aloha", "sim"}
    args = {a.name: a for a in graph.launch_arguments(d)}
    assert {"checkpoint", "task", "generation", "planning", "blend_ticks", "record"} <= set(args)
    assert all(a.description for a in args.values())
    nodes = graph.graph_nodes("sim", {"checkpoint": "test-double:latency=0.1", "task": "x y", "generation": "aloha1",
                                      "blend_ticks": "2", "record": "false"}, definition=d)
    names = [n.name for n in nodes]
    assert names == ["sim_bridge", "policy", "commander"]
    mods = {n.name: n.spec.module for n in nodes}
    assert mods["sim_bridge"] == "cosmos_policy_ros.ros.sim_bridge"
    pol = next(n for n in nodes if n.name == "policy").spec
    assert pol.parameters["checkpoint"] == "test-double:latency=0.1" and pol.parameters["generation"] == "aloha1"
    com = next(n for n in nodes if n.name == "commander").spec
    assert com.parameters["blend_ticks"] == 2 and com.parameters["task"] == "x y"
    assert any(f.endswith("commander_node.yaml") for f in com.params_files)
    full = graph.graph_nodes("aloha", {}, definition=d)
    rec = next(n for n in full if n.name == "recorder").spec
    assert rec.module == "cosmos_policy_ros.ros.recorder" and rec.parameters["action_chunk_topic"] == "/policy/action_chunk"
    with pytest.raises(ValueError, match="unknown launch argument"):
        graph.graph_nodes("aloha", {"chekpoint": "x"}, definition=d)


@pytest.mark.parametrize("given", ["[1.0, 3.0]", "1 3", "1,3", [1, 3.0]])
def test_planning_window_launch_argument_reaches_the_policy_node_as_numbers(repo_root, given):
    """`ros2 launch ... planning_window:=[1.0,3.0]` (a string, as launch passes it) sets the policy node's list
    parameter; left empty, the node keeps its own default (no planning window) instead of receiving ""."""
    from cosmos_policy_ros.ros import graph

    d = graph.load_definition(repo_root / "config" / "graph.yaml")
    for name in ("sim", "aloha"):
        pol = next(n.spec for n in graph.graph_nodes(name, {"planning_window": given}, definition=d)
                   if n.name == "policy")
        assert pol.parameters["planning_window"] == [1.0, 3.0]
        unset = next(n.spec for n in graph.graph_nodes(name, {}, definition=d) if n.name == "policy")
        assert "planning_window" not in unset.parameters
    assert "planning_window" not in next(n.spec for n in graph.graph_nodes("sim", {"planning_window": ""}, definition=d)
                                         if n.name == "policy").parameters
    with pytest.raises(ValueError, match=r"launch argument planning_window: expected numbers like \[1.0, 3.0\]"):
        graph.graph_nodes("sim", {"planning_window": "early"}, definition=d)


def test_node_params_files_declare_only_known_parameters(repo_root):
    import yaml

    from cosmos_policy_ros.ros.commander_node import PARAMS as CP
    from cosmos_policy_ros.ros.policy_node import PARAMS as PP

    from cosmos_policy_ros.ros.sim_bridge import _PARAMS as SP

    known = {"policy": {p.name for p in PP}, "commander": {p.name for p in CP}, "sim_bridge": {p[0] for p in SP}}
    for f in ("policy_node.yaml", "commander_node.yaml", "aloha.yaml", "sim.yaml"):
        data = yaml.safe_load((repo_root / "config" / f).read_text())
        for node, body in data.items():
            unknown = set(body["ros__parameters"]) - known[node]
            assert not unknown, f"{f}: {node} has unknown parameters {unknown}"
    assert all(p.description for p in PP + CP)


def test_sim_graph_policy_accepts_the_sim_cameras_and_robot_stays_full_size():
    """The policy node checks the camera size; in the sim graph it must expect what the sim bridge renders
    (240x320, the embedded policy's demo size), or every frame is rejected and no chunk is ever produced."""
    import yaml

    from cosmos_policy_ros.ros import graph

    def resolved(graph_name, node):  # the node's parameters from its params files, in the launcher's order
        spec = next(n.spec for n in graph.graph_nodes(graph_name, {}) if n.name == node)
        out = {}
        for f in spec.params_files:
            out.update(yaml.safe_load(Path(f).read_text()).get(node, {}).get("ros__parameters", {}))
        return out

    bridge, policy = resolved("sim", "sim_bridge"), resolved("sim", "policy")
    assert (bridge["image_height"], bridge["image_width"]) == (240, 320)
    assert (policy["image_height"], policy["image_width"]) == (bridge["image_height"], bridge["image_width"])
    real = resolved("aloha", "policy")
    assert (real["image_height"], real["image_width"]) == (480, 640)


@pytest.mark.parametrize("name", ["aloha", "sim"])
def test_launch_files_compile_and_use_the_shared_graph(repo_root, name):
    path = repo_root / "launch" / f"{name}.launch.py"
    tree = ast.parse(path.read_text(), str(path))
    compile(tree, str(path), "exec")
    src = path.read_text()
    assert "from cosmos_policy_ros.ros.graph import launch_description" in src
    assert f'GRAPH = "{name}"' in src
    assert "return launch_description(GRAPH)" in src
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def test_node_scripts_are_executable_and_tiny(repo_root):
    for n in ("policy_node", "commander_node"):
        p = repo_root / "scripts" / "nodes" / n
        assert p.stat().st_mode & 0o111
        assert f"from cosmos_policy_ros.ros.{n} import main" in p.read_text()


def test_runtime_core_modules_do_not_import_rclpy():
    import subprocess

    code = ("import sys; sys.modules['rclpy'] = None\n"
            "import cosmos_policy_ros.core.chunking, cosmos_policy_ros.core.safety, "
            "cosmos_policy_ros.core.observation, cosmos_policy_ros.core.test_doubles\n")
    subprocess.run([sys.executable, "-c", code], check=True)


class _LaunchTestDouble:
    """Minimal stand-ins for the `launch` / `launch_ros` API the launch files use (not installable here):
    they record what the launch file builds so the test can check it against the graph definition."""

    class LaunchDescription(list):
        pass

    class DeclareLaunchArgument:
        def __init__(self, name, default_value=None, description=""):
            self.name, self.default_value, self.description = name, default_value, description

    class OpaqueFunction:
        def __init__(self, function):
            self.function = function

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    class Node:
        def __init__(self, **kwargs):
            self.kwargs = kwargs


@pytest.mark.parametrize("name", ["aloha", "sim"])
def test_launch_files_build_the_graph_nodes(repo_root, name, monkeypatch):
    import types

    from cosmos_policy_ros.ros import graph

    fake = _LaunchTestDouble
    mods = {"launch": types.ModuleType("launch"), "launch.actions": types.ModuleType("launch.actions"),
            "launch.substitutions": types.ModuleType("launch.substitutions"),
            "launch_ros": types.ModuleType("launch_ros"), "launch_ros.actions": types.ModuleType("launch_ros.actions")}
    mods["launch"].LaunchDescription = fake.LaunchDescription
    mods["launch.actions"].DeclareLaunchArgument = fake.DeclareLaunchArgument
    mods["launch.actions"].OpaqueFunction = fake.OpaqueFunction
    mods["launch.substitutions"].LaunchConfiguration = fake.LaunchConfiguration
    mods["launch_ros.actions"].Node = fake.Node
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    path = repo_root / "launch" / f"{name}.launch.py"
    ns = {"__name__": f"{name}_launch", "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    desc = ns["generate_launch_description"]()
    declared = {a.name: a for a in desc if isinstance(a, fake.DeclareLaunchArgument)}
    assert set(declared) == {a.name for a in graph.launch_arguments()}
    assert all(a.description for a in declared.values())
    context = {k: a.default_value for k, a in declared.items()}
    context.update(checkpoint="/ckpt", task="fold the shirt", record="false")
    opaque = [a for a in desc if isinstance(a, fake.OpaqueFunction)]
    nodes = opaque[0].function(context)
    expected = graph.graph_nodes(name, context)
    assert [n.kwargs["executable"] for n in nodes] == [e.executable for e in expected]
    assert [n.kwargs["name"] for n in nodes] == [e.name for e in expected]
    for n, e in zip(nodes, expected):
        assert n.kwargs["package"] == "cosmos_policy_ros"
        assert n.kwargs["parameters"][:-1] == e.spec.params_files and n.kwargs["parameters"][-1] == e.spec.parameters
        assert (repo_root / "scripts" / "nodes" / n.kwargs["executable"]).exists()
    pol = next(n for n in nodes if n.kwargs["name"] == "policy")
    assert pol.kwargs["parameters"][-1]["checkpoint"] == "/ckpt"
