"""Robot preparation through the Interbotix xs_sdk driver's own services, every call with a timeout.

Before an episode the ALOHA stack reboots the follower grippers (a gripper that closed on something hard may be
in an overload error), puts the arm group in ``position`` mode and the gripper in ``current_based_position``
mode, and torques everything on. The xs_sdk driver serves this per follower namespace:

| service | type |
| --- | --- |
| ``/<arm>/torque_enable`` | interbotix_xs_msgs/srv/TorqueEnable (cmd_type, name, enable) |
| ``/<arm>/set_operating_modes`` | interbotix_xs_msgs/srv/OperatingModes (cmd_type, name, mode, profile_type, profile_velocity, profile_acceleration) |
| ``/<arm>/reboot_motors`` | interbotix_xs_msgs/srv/Reboot (cmd_type, name, enable, smart_reboot) |

``interbotix_xs_modules`` wraps the same services in a robot object that owns its own node and waits for each
answer without a deadline; here the calls are made directly from the episode manager's node so each one has a
timeout and a failure names the service (and the manager then moves nothing). When the module is installed
it is only reported (:func:`modules_available`).

:class:`DriverServices` is called from a worker thread while an executor spins the node elsewhere.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

#: Dynamixel operating modes the xs_sdk accepts.
OPERATING_MODES = ("position", "ext_position", "velocity", "pwm", "current", "current_based_position",
                   "linear_position")


class DriverError(RuntimeError):
    """A driver service was missing, did not answer in time, or failed (the message names it)."""


def modules_available() -> bool:
    """True when interbotix_xs_modules can be imported (the robot's Interbotix Python API)."""
    try:  # present on the robot (package.xml exec_depend), not installable on development machines
        import interbotix_xs_modules  # noqa: F401
    except Exception:  # noqa: BLE001 - any import problem means "not usable"
        return False
    return True


@dataclass
class PrepConfig:
    """What to do to each follower before an episode (node parameters prep_*).

    enabled: run the preparation at all (off: the driver is assumed ready).
    reboot_gripper: reboot the gripper motor (torque back on afterwards), as the ALOHA stack does.
    arm_mode / gripper_mode: operating modes for the 'arm' group and the 'gripper' joint ('' skips).
    profile_type, profile_velocity, profile_acceleration: passed with the mode (0 = unlimited, as ALOHA).
    timeout: seconds to wait for a service to appear and for each answer.
    """

    enabled: bool = True
    reboot_gripper: bool = True
    arm_mode: str = "position"
    gripper_mode: str = "current_based_position"
    profile_type: str = "velocity"
    profile_velocity: int = 0
    profile_acceleration: int = 0
    timeout: float = 2.0
    arms: Sequence[str] = field(default_factory=lambda: ("follower_left", "follower_right"))

    def __post_init__(self):
        for name in ("arm_mode", "gripper_mode"):
            mode = getattr(self, name)
            if mode and mode not in OPERATING_MODES:
                raise ValueError(f"prep_{name}: expected one of {OPERATING_MODES} or '' (skip), got {mode!r}")
        if self.profile_type not in ("velocity", "time"):
            raise ValueError(f"prep_profile_type: expected 'velocity' or 'time', got {self.profile_type!r}")
        if not self.timeout > 0:
            raise ValueError(f"driver_timeout: expected a positive number of seconds, got {self.timeout}")
        self.arms = tuple("/" + a.strip("/") for a in self.arms if a.strip("/"))
        if not self.arms:
            raise ValueError("arms: expected at least one follower namespace")


def prep_steps(config: PrepConfig) -> List[Tuple[str, str, dict]]:
    """The ordered (arm namespace, service suffix, request fields) calls of one preparation (plain data)."""
    steps: List[Tuple[str, str, dict]] = []
    if not config.enabled:
        return steps
    for arm in config.arms:
        if config.reboot_gripper:
            steps.append((arm, "reboot_motors", dict(cmd_type="single", name="gripper", enable=True,
                                                     smart_reboot=False)))
        for cmd_type, name, mode in (("group", "arm", config.arm_mode), ("single", "gripper", config.gripper_mode)):
            if mode:
                steps.append((arm, "set_operating_modes", dict(
                    cmd_type=cmd_type, name=name, mode=mode, profile_type=config.profile_type,
                    profile_velocity=int(config.profile_velocity), profile_acceleration=int(config.profile_acceleration))))
        steps.append((arm, "torque_enable", dict(cmd_type="group", name="arm", enable=True)))
        steps.append((arm, "torque_enable", dict(cmd_type="single", name="gripper", enable=True)))
    return steps


class DriverServices:
    """Clients for the xs_sdk services of each follower; :meth:`call` blocks the caller (never the executor)."""

    def __init__(self, node, config: PrepConfig, callback_group=None):
        from interbotix_xs_msgs.srv import OperatingModes, Reboot, TorqueEnable

        self.node = node
        self.config = config
        self._types = {"torque_enable": TorqueEnable, "set_operating_modes": OperatingModes, "reboot_motors": Reboot}
        self._clients = {}
        for arm in config.arms:
            for suffix, srv_type in self._types.items():
                self._clients[(arm, suffix)] = node.create_client(srv_type, f"{arm}/{suffix}",
                                                                  callback_group=callback_group)

    def call(self, arm: str, suffix: str, fields: dict, abort: Optional[threading.Event] = None) -> None:
        """Call ``<arm>/<suffix>`` with ``fields``; raise DriverError on a missing service or no answer in time."""
        name = f"{arm}/{suffix}"
        client = self._clients[(arm, suffix)]
        timeout = self.config.timeout
        if not client.wait_for_service(timeout_sec=timeout):
            raise DriverError(f"driver service {name} not available within {timeout:g} s "
                              f"(is the xs_sdk driver for {arm} running?)")
        req = self._types[suffix].Request()
        for k, v in fields.items():
            setattr(req, k, v)
        done = threading.Event()
        future = client.call_async(req)
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            future.cancel()
            client.remove_pending_request(future)
            raise DriverError(f"driver service {name} did not answer within {timeout:g} s "
                              f"(request {fields}); nothing was moved")
        if abort is not None and abort.is_set():
            raise DriverError(f"robot preparation aborted after {name}")
        exc = future.exception()
        if exc is not None:
            raise DriverError(f"driver service {name} failed: {exc!r}")

    def prepare(self, abort: Optional[threading.Event] = None,
                log: Optional[Callable[[str], None]] = None) -> List[str]:
        """Run :func:`prep_steps` in order; returns the calls made; the first failure raises DriverError."""
        made = []
        for arm, suffix, fields in prep_steps(self.config):
            if abort is not None and abort.is_set():
                raise DriverError("robot preparation aborted")
            self.call(arm, suffix, fields, abort)
            line = f"{arm}/{suffix} {fields}"
            made.append(line)
            if log:
                log(line)
        return made
