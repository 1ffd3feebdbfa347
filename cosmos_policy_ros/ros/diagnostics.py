"""Diagnostics helpers: rate / age / latency statistics (pure) and diagnostic_msgs conversion.

Both nodes publish diagnostic_msgs/DiagnosticArray on /diagnostics (the standard topic rqt_robot_monitor
and Foxglove read); statistics are plain Python so they are tested without ROS.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Deque, Dict, Iterable, Mapping

import numpy as np

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}


class RateMeter:
    """Message rate over a sliding window of receive times (seconds, any monotonic clock)."""

    def __init__(self, window: float = 2.0):
        self.window = float(window)
        self._times: Deque[float] = deque()
        self.count = 0

    def tick(self, t: float) -> None:
        """Register one message at time ``t``."""
        self._times.append(t)
        self.count += 1
        self._trim(t)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()

    def rate(self, now: float) -> float:
        """Messages per second over the last window (0 when fewer than two)."""
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0


class Stats:
    """Rolling sample statistics (last ``size`` samples): p50 / p99 / max / mean."""

    def __init__(self, size: int = 500):
        self._v: Deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, v: float) -> None:
        self._v.append(float(v))
        self.count += 1

    def __len__(self) -> int:
        return len(self._v)

    @property
    def last(self) -> float:
        return self._v[-1] if self._v else float("nan")

    def summary(self) -> Dict[str, float]:
        if not self._v:
            return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
        a = np.fromiter(self._v, dtype=np.float64)
        return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
                "mean": float(a.mean())}


def fmt(v) -> str:
    """Diagnostic value formatting: floats with 4 significant decimals, NaN as 'n/a'."""
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def make_status(name: str, level: int, message: str, values: Mapping[str, object], hardware_id: str = ""):
    """-> diagnostic_msgs/DiagnosticStatus."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    st = DiagnosticStatus()
    st.level = bytes([level]) if isinstance(DiagnosticStatus().level, bytes) else level
    st.name = name
    st.message = message
    st.hardware_id = hardware_id
    st.values = [KeyValue(key=str(k), value=fmt(v)) for k, v in values.items()]
    return st


def status_level(status) -> int:
    """DiagnosticStatus.level as an int (it is a byte in rclpy)."""
    lv = status.level
    return lv[0] if isinstance(lv, (bytes, bytearray)) else int(lv)


def make_array(stamp, statuses: Iterable):
    """-> diagnostic_msgs/DiagnosticArray stamped ``stamp`` (builtin_interfaces/Time)."""
    from diagnostic_msgs.msg import DiagnosticArray

    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = list(statuses)
    return arr


def status_values(status) -> Dict[str, str]:
    """DiagnosticStatus key/values as a dict (for tests and tools)."""
    return {kv.key: kv.value for kv in status.values}
