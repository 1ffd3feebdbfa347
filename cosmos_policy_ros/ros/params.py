"""Parameter declarations with descriptions, shared by the nodes, the docs and the launch arguments.

Each node lists its parameters once as :class:`Param` entries; :func:`declare` declares them all (with a
description and an explicit type, so empty lists work and YAML files load) and returns their values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence

from rcl_interfaces.msg import ParameterDescriptor, ParameterType


@dataclass(frozen=True)
class Param:
    """One node parameter: name, default value (its type is the parameter's type) and description."""

    name: str
    default: Any
    description: str
    dynamic: bool = False  # may change at run time (otherwise read once at start)
    element: Any = None  # element type of a list parameter whose default is empty (else taken from the default)


_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
_ARRAY_TYPES = {bool: ParameterType.PARAMETER_BOOL_ARRAY, int: ParameterType.PARAMETER_INTEGER_ARRAY,
                float: ParameterType.PARAMETER_DOUBLE_ARRAY, str: ParameterType.PARAMETER_STRING_ARRAY}


def _param_type(p: Param) -> int:
    if isinstance(p.default, (list, tuple)):
        kind = p.element or (type(p.default[0]) if p.default else str)
        return _ARRAY_TYPES[kind]
    return _TYPES[type(p.default)]


def declare(node, params: Sequence[Param]) -> Dict[str, Any]:
    """Declare every parameter on ``node``; return name -> current value (YAML / -p overrides applied)."""
    out: Dict[str, Any] = {}
    for p in params:
        desc = ParameterDescriptor(name=p.name, type=_param_type(p), description=p.description,
                                   read_only=not p.dynamic)
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        # ints given where a double is expected (e.g. "period: 1" in YAML) are accepted
        desc.dynamic_typing = False
        if isinstance(default, list) and not default:
            # an empty default would make rclpy type the parameter from the value (a byte array); declare the
            # type without a value instead, so a YAML / -p list of the element type is accepted
            from rclpy.parameter import Parameter as RclpyParameter

            default = RclpyParameter.Type(desc.type)
        value = node.declare_parameter(p.name, default, desc).value
        if value is None and isinstance(p.default, (list, tuple)):
            value = []
        if isinstance(p.default, float) and isinstance(value, int):
            value = float(value)
        out[p.name] = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "array" else value
    return out


def describe(params: Sequence[Param]) -> str:
    """Markdown table of parameters (used to keep docs/runtime.md in sync)."""
    lines = ["| parameter | default | description |", "| --- | --- | --- |"]
    for p in params:
        desc = p.description.replace("|", "\\|")
        lines.append(f"| `{p.name}` | `{p.default!r}` | {desc}{' (dynamic)' if p.dynamic else ''} |")
    return "\n".join(lines)
