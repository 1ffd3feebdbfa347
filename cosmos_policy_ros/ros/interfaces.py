"""Resolve ROS interface type names ("pkg/msg/Name" or "pkg/Name") to their Python classes."""
from __future__ import annotations

import importlib
from typing import Any


def message_class(type_name: str) -> Any:
    """'sensor_msgs/msg/Image' or 'sensor_msgs/Image' -> the generated class, with a clear error."""
    parts = type_name.strip().split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"expected a message type like 'sensor_msgs/msg/Image', got {type_name!r}")
    pkg, kind, name = parts
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
    except ImportError as exc:
        raise ValueError(f"message package {pkg!r} is not installed (for {type_name!r}): {exc}") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise ValueError(f"{pkg}/{kind} has no type {name!r}") from None
