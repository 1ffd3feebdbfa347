"""The node graph, defined once in config/graph.yaml, turned into runnable node descriptions.

Used by ``launch/aloha.launch.py`` and ``launch/sim.launch.py`` (through :func:`graph_nodes`, mapped to
``launch_ros`` Node actions) and by the Python runner (tests, ``make demo``, and
``python -m cosmos_policy_ros.ros.graph sim checkpoint:=tiny-random task:='...'``), which starts every node as a
subprocess with :mod:`cosmos_policy_ros.ros.harness`. ``ros2 launch`` is not installable from PyPI, so this
keeps both paths on the same definition.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from .harness import NodeSpec, launch

GRAPH_FILE = "graph.yaml"
PACKAGE = "cosmos_policy_ros"


@dataclass(frozen=True)
class LaunchArgument:
    """One launch argument: name, default value and description."""

    name: str
    default: Any
    description: str


@dataclass
class GraphNode:
    """One node of a graph: the executable name (for launch_ros) and the subprocess spec (for the runner)."""

    executable: str
    spec: NodeSpec

    @property
    def name(self) -> str:
        return self.spec.name or ""


def config_dir() -> Path:
    """Directory holding graph.yaml and the parameter files.

    Order: $COSMOS_POLICY_ROS_SOURCE/config (development checkout), the installed package share
    (share/cosmos_policy_ros/config via ament_index), then ../../config next to this file.
    """
    candidates: List[Path] = []
    src = os.environ.get("COSMOS_POLICY_ROS_SOURCE")
    if src:
        candidates.append(Path(src) / "config")
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "config")
    except Exception:  # noqa: BLE001 - not installed with ament (pip install) or no AMENT_PREFIX_PATH
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "config")
    for c in candidates:
        if (c / GRAPH_FILE).is_file():
            return c
    raise FileNotFoundError(f"{GRAPH_FILE} not found in any of {[str(c) for c in candidates]}")


def load_definition(path: Optional[Path] = None) -> Dict[str, Any]:
    """Parse and validate graph.yaml."""
    path = Path(path) if path else config_dir() / GRAPH_FILE
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "graphs" not in data or "arguments" not in data:
        raise ValueError(f"{path}: expected top-level 'arguments' and 'graphs'")
    for gname, g in data["graphs"].items():
        for node in g.get("nodes", []):
            for key in ("name", "module", "executable"):
                if key not in node:
                    raise ValueError(f"{path}: graph {gname!r}: node {node} lacks {key!r}")
            for param, arg in (node.get("arguments") or {}).items():
                if arg not in data["arguments"]:
                    raise ValueError(f"{path}: graph {gname!r} node {node['name']!r}: parameter {param!r} "
                                     f"uses unknown argument {arg!r}")
            if node.get("when") and node["when"] not in data["arguments"]:
                raise ValueError(f"{path}: node {node['name']!r}: 'when' names unknown argument {node['when']!r}")
    for name, spec in data["arguments"].items():
        if spec.get("type") not in (None, "numbers"):
            raise ValueError(f"{path}: argument {name!r}: unknown type {spec['type']!r}; expected 'numbers' or none")
    data["_path"] = str(path)
    return data


def graph_names(definition: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Names of the graphs defined (e.g. ['aloha', 'sim'])."""
    d = definition or load_definition()
    return list(d["graphs"])


def launch_arguments(definition: Optional[Mapping[str, Any]] = None) -> List[LaunchArgument]:
    """Every launch argument with its default and description."""
    d = definition or load_definition()
    return [LaunchArgument(name, spec.get("default", ""), spec.get("description", ""))
            for name, spec in d["arguments"].items()]


def _parse(value: Any) -> Any:
    """Launch argument strings are YAML ("true", "3", "0.5", "text"); non-strings pass through."""
    if not isinstance(value, str):
        return value
    if value == "":
        return ""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false"):
        return value  # YAML 1.1 reads off/on/yes/no as booleans: rtc:=off means the word
    return value if parsed is None or isinstance(parsed, (dict, list)) else parsed


def _numbers(name: str, value: Any) -> Optional[List[float]]:
    """A ``type: numbers`` argument: "" (or []) = not set, so the node keeps its own default; else a list of numbers
    written as YAML ("[1.0, 3.0]") or separated by commas or spaces ("1.0 3.0", as a shell passes it)."""
    raw = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = None
        else:
            value = text.replace(",", " ").split()
    items = value if isinstance(value, (list, tuple)) else None
    try:
        out = [float(v) for v in items] if items is not None else None
    except (TypeError, ValueError):
        out = None
    if out is None:
        raise ValueError(f"launch argument {name}: expected numbers like [1.0, 3.0] (or empty), got {raw!r}")
    return out or None


def graph_nodes(graph: str, arguments: Optional[Mapping[str, Any]] = None, *,
                definition: Optional[Mapping[str, Any]] = None, config: Optional[Path] = None,
                node_parameters: Optional[Mapping[str, Mapping[str, Any]]] = None,
                extra_params_files: Sequence[str] = (), env: Optional[Mapping[str, str]] = None) -> List[GraphNode]:
    """Build the nodes of ``graph`` for the given launch argument values.

    arguments: launch argument name -> value (strings are parsed as YAML; unknown names raise).
    node_parameters: node name -> {parameter: value}, applied last (tests and tools).
    extra_params_files: YAML files appended to every node's params files.
    """
    d = definition or load_definition(Path(config) / GRAPH_FILE if config else None)
    cfg = Path(config) if config else Path(d["_path"]).parent
    if graph not in d["graphs"]:
        raise ValueError(f"unknown graph {graph!r}; expected one of {list(d['graphs'])}")
    values = {a.name: _parse(a.default) for a in launch_arguments(d)}
    for k, v in (arguments or {}).items():
        if k not in values:
            raise ValueError(f"unknown launch argument {k!r}; expected one of {sorted(values)}")
        values[k] = _parse(v)
    for name, spec in d["arguments"].items():  # list-valued arguments: parsed here, unset when empty
        if spec.get("type") == "numbers":
            values[name] = _numbers(name, (arguments or {}).get(name, spec.get("default", "")))
    overrides = dict(node_parameters or {})
    out: List[GraphNode] = []
    for node in d["graphs"][graph]["nodes"]:
        when = node.get("when")
        if when and not values[when]:
            continue
        files = []
        for f in node.get("params_files", []):
            p = cfg / f
            if p.is_file():
                files.append(str(p))
            else:
                warnings.warn(f"graph {graph!r} node {node['name']!r}: params file {p} not found, skipped")
        files += [str(f) for f in extra_params_files]
        params: Dict[str, Any] = dict(node.get("parameters") or {})
        for param, arg in (node.get("arguments") or {}).items():
            if values[arg] is not None:  # None: an empty list-valued argument, the node's own default applies
                params[param] = values[arg]
        for arg, extra in (node.get("parameters_when") or {}).items():  # fixed parameters gated by an argument
            if arg not in values:
                raise ValueError(f"graph {graph!r} node {node['name']!r}: parameters_when names unknown argument {arg!r}")
            if values[arg]:
                params.update(extra)
        params.update(overrides.pop(node["name"], {}))
        spec = NodeSpec(module=node["module"], name=node["name"], namespace=node.get("namespace"),
                        parameters=params, params_files=files, remaps=dict(node.get("remaps") or {}),
                        env=dict(env or {}))
        out.append(GraphNode(node["executable"], spec))
    if overrides:
        raise ValueError(f"node_parameters for nodes not in graph {graph!r}: {sorted(overrides)}")
    return out


def node_specs(graph: str, arguments: Optional[Mapping[str, Any]] = None, **kwargs) -> List[NodeSpec]:
    """:func:`graph_nodes` as plain harness NodeSpecs (for :func:`cosmos_policy_ros.ros.harness.launch`)."""
    return [n.spec for n in graph_nodes(graph, arguments, **kwargs)]


def run(graph: str, arguments: Optional[Mapping[str, Any]] = None, log_dir: Optional[str] = None, **kwargs):
    """Context manager: start every node of ``graph`` as a subprocess; stop them on exit."""
    return launch(node_specs(graph, arguments, **kwargs), log_dir)


def launch_description(graph: str):
    """A ``launch.LaunchDescription`` for ``graph``: every launch argument declared with its default and
    description, and the graph's nodes built from the argument values at launch time.

    Used by launch/*.launch.py; ``launch`` / ``launch_ros`` are imported here, lazily, because they exist only
    in a full ROS install (not in the PyPI wheels the tests run on).
    """
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def nodes(context, *args, **kwargs):
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in launch_arguments()}
        return [
            Node(package=PACKAGE, executable=node.executable, name=node.spec.name,
                 namespace=node.spec.namespace or "", parameters=[*node.spec.params_files, node.spec.parameters],
                 remappings=list(node.spec.remaps.items()), output="screen", emulate_tty=True)
            for node in graph_nodes(graph, values)
        ]

    arguments = [DeclareLaunchArgument(a.name, default_value=str(a.default).lower() if isinstance(a.default, bool)
                                       else str(a.default), description=a.description)
                 for a in launch_arguments()]
    return LaunchDescription(arguments + [OpaqueFunction(function=nodes)])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m cosmos_policy_ros.ros.graph <graph> [name:=value ...]``: run a graph until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m cosmos_policy_ros.ros.graph", description=__doc__.splitlines()[0])
    parser.add_argument("graph", nargs="?", help="graph name (see --list)")
    parser.add_argument("assignments", nargs="*", metavar="name:=value", help="launch arguments")
    parser.add_argument("--list", action="store_true", help="list graphs and arguments, then exit")
    parser.add_argument("--print", action="store_true", help="print the node command lines, then exit")
    parser.add_argument("--log-dir", default=None, help="directory for node logs")
    args = parser.parse_intermixed_args(argv)
    d = load_definition()
    if args.list or not args.graph:
        for name, g in d["graphs"].items():
            print(f"{name}: {g.get('description', '')}")
        print("\narguments:")
        for a in launch_arguments(d):
            print(f"  {a.name} (default {a.default!r}): {a.description}")
        return 0
    values = {}
    for item in args.assignments:
        if ":=" not in item:
            parser.error(f"expected name:=value, got {item!r}")
        k, v = item.split(":=", 1)
        values[k] = v
    nodes = graph_nodes(args.graph, values, definition=d)
    if args.print:
        for n in nodes:
            print(" ".join(n.spec.command()))
        return 0
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    with launch([n.spec for n in nodes], args.log_dir) as procs:
        print(f"running graph {args.graph!r}: " + ", ".join(f"{n.name} (pid {p.pid}, log {p.log_path})"
                                                          for n, p in zip(nodes, procs)), flush=True)
        try:
            while not stop["flag"] and all(p.alive() for p in procs):
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        dead = [n.name for n, p in zip(nodes, procs) if not p.alive()]
        if dead:
            print(f"node(s) exited: {dead}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
