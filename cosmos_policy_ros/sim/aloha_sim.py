"""Simulated ALOHA on gym-aloha's MuJoCo models, driven directly (no gym / dm_control wrapper per step).

Why not ``gym.make``: ``env.step()`` renders three cameras at full quality (~200 ms per step). Here the
physics is the same MJCF, the same 50 Hz control step (10 x 2 ms MuJoCo steps), the same action mapping
(14-d absolute joint targets, grippers normalised 0 closed .. 1 open, mapped to finger positions with the
ALOHA 1 puppet constants) and the same contact-based reward (4 = success) as gym-aloha's
``TransferCubeTask`` / ``InsertionTask``; images come from a :class:`FastRenderer` only when asked.

Layouts (model order, left arm first), as in gym-aloha:
- ``qpos14``: per arm 6 joint angles (rad) + gripper normalised from the left finger position (0..1).
- ``action14``: per arm 6 joint targets (rad) + gripper command normalised (0 closed, 1 open).
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import mujoco
import numpy as np

from cosmos_policy_ros.core import robot
from cosmos_policy_ros.core.types import ALOHA_CAMERAS, Observation

#: Physics: 50 Hz control (gym-aloha's DT), MuJoCo's default 2 ms step.
CONTROL_DT = 0.02
CONTROL_HZ = 50
#: The policy (and the demos) act at 25 Hz: each action is held for two physics steps.
POLICY_HZ = 25
STEPS_PER_ACTION = CONTROL_HZ // POLICY_HZ
#: gym-aloha's start pose (16 = per arm 6 joints + 2 finger slides).
START_ARM_POSE = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.02239, -0.02239,
                  0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.02239, -0.02239)
#: The simulator's own gripper scale: gym-aloha uses the ALOHA 1 puppet finger constants.
SIM_GRIPPER = robot.GRIPPER_CONVENTIONS["aloha1"]


def _joints16_to_14(q: np.ndarray) -> np.ndarray:
    """The robot's first 16 joint values (per arm 6 joints + 2 finger slides) -> (14,) per arm 6 joints + the
    gripper normalised from its left finger: the layout of proprio and actions."""
    return np.concatenate([q[0:6], [SIM_GRIPPER.normalize_finger(q[6])],
                           q[8:14], [SIM_GRIPPER.normalize_finger(q[14])]])
#: ALOHA camera name -> MuJoCo camera in gym-aloha's scene ("cam_high" is the top camera).
DEFAULT_CAMERA_MAP: Dict[str, str] = {"cam_high": "top", "cam_left_wrist": "left_wrist",
                                      "cam_right_wrist": "right_wrist", "cam_low": "angle"}
SUCCESS_REWARD = 4

TASKS = ("transfer_cube", "insertion")
#: Task text used in demo files and by the policy's instruction lookup.
TASK_DESCRIPTIONS = {
    "transfer_cube": "pick up the red cube with the right arm and hand it over to the left arm",
    "insertion": "pick up the peg and the socket and insert the peg into the socket",
}


def assets_dir() -> Path:
    """gym-aloha's MJCF asset folder (found without importing gym-aloha's gymnasium registration)."""
    spec = importlib.util.find_spec("gym_aloha")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("gym-aloha is not installed (pip install gym-aloha==0.1.5; see requirements/sim.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "assets"


def sample_object_poses(task: str, seed: Optional[int]) -> np.ndarray:
    """Initial object qpos for ``task`` and ``seed``: (7,) cube, or (14,) peg + socket.

    Same draws as gym-aloha's ``sample_box_pose`` / ``sample_insertion_pose`` (a legacy RandomState per
    seed), so a seed names the same scene here and in ``gym.make``.
    """
    rng = np.random.RandomState(seed)
    quat = np.array([1.0, 0.0, 0.0, 0.0])
    if task == "transfer_cube":
        pos = rng.uniform([0.0, 0.4, 0.05], [0.2, 0.6, 0.05])
        return np.concatenate([pos, quat])
    if task == "insertion":
        peg = rng.uniform([0.1, 0.4, 0.05], [0.2, 0.6, 0.05])
        socket = rng.uniform([-0.2, 0.4, 0.05], [-0.1, 0.6, 0.05])
        return np.concatenate([peg, quat, socket, quat])
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


#: 50 Hz steps (0.5 s) of physics in reset(): gym-aloha's objects, placed 5 cm up, rest on the table after ~15.
DEFAULT_SETTLE_STEPS = 25


class FastRenderer:
    """Offscreen MuJoCo rendering with cheap settings: no multisampling, shadows, reflections, skybox, fog.

    About 5-7 ms per 480x640 camera on a CPU (EGL / Mesa) versus ~40 ms with the model's own visual
    settings. One GL context per image size. Set MUJOCO_GL (egl or osmesa) before importing mujoco.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int):
        if height <= 0 or width <= 0:
            raise ValueError(f"expected a positive image size, got {height}x{width}")
        # The offscreen buffer must hold the image; offsamples must be set before the context exists.
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.quality.offsamples = 0
        self.height, self.width = height, width
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        flags = self._renderer.scene.flags
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG, mujoco.mjtRndFlag.mjRND_HAZE):
            flags[flag] = 0

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        """One RGB image (H, W, 3) uint8 from ``camera`` (a fresh array the caller owns)."""
        self._renderer.update_scene(data, camera=camera)  # keeps the scene flags set above
        return self._renderer.render()

    @staticmethod
    def release_context() -> None:
        """Detach the GL context from the calling thread, so another thread may render next.

        An EGL context can be current in one thread only (EGL_BAD_ACCESS otherwise), and mujoco's
        renderer makes it current on every render without releasing it. Needed when rendering moves
        between threads (e.g. a node built in the main thread, spun by an executor thread). No-op for
        other GL backends.
        """
        if os.environ.get("MUJOCO_GL", "").lower() != "egl":
            return
        import mujoco.egl as mj_egl

        if mj_egl.EGL_DISPLAY is not None:
            mj_egl.EGL.eglMakeCurrent(mj_egl.EGL_DISPLAY, mj_egl.EGL.EGL_NO_SURFACE, mj_egl.EGL.EGL_NO_SURFACE,
                                      mj_egl.EGL.EGL_NO_CONTEXT)

    def close(self) -> None:
        """Free the GL context."""
        self._renderer.close()


@dataclass
class SimConfig:
    """AlohaSim settings.

    task: "transfer_cube" or "insertion". image_size: (H, W) of rendered images. cameras: ALOHA camera
    names to render (keys of camera_map). max_steps: 50 Hz control steps per episode (done after that).
    terminate_on_success: done as soon as the task succeeds (gym-aloha's behaviour) instead of at
    max_steps. render: include images in reset()/step() observations. settle_steps: 50 Hz steps of
    physics run inside reset() with the arms held at the start pose, so that step 0 shows the objects
    resting on the table as a real scene does (gym-aloha places them 5 cm up and its first observation shows
    them in mid-air; 0 keeps that behaviour).
    """

    task: str = "transfer_cube"
    image_size: Tuple[int, int] = (480, 640)
    cameras: Tuple[str, ...] = ALOHA_CAMERAS
    max_steps: int = 400
    terminate_on_success: bool = False
    render: bool = True
    camera_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CAMERA_MAP))
    settle_steps: int = DEFAULT_SETTLE_STEPS

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"expected task in {TASKS}, got {self.task!r}")
        if int(self.settle_steps) != self.settle_steps or self.settle_steps < 0:
            raise ValueError(f"expected settle_steps >= 0 (an integer), got {self.settle_steps!r}")
        self.settle_steps = int(self.settle_steps)
        size = tuple(int(v) for v in self.image_size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"expected image_size (H, W) with positive values, got {self.image_size!r}")
        self.image_size = size
        self.cameras = tuple(self.cameras)
        unknown = [c for c in self.cameras if c not in self.camera_map]
        if unknown:
            raise ValueError(f"expected cameras among {sorted(self.camera_map)}, got unknown {unknown}")
        if self.max_steps <= 0:
            raise ValueError(f"expected max_steps > 0, got {self.max_steps}")


class AlohaSim:
    """The simulated bimanual ALOHA: reset, 50 Hz step, render, state conversions.

    >>> sim = AlohaSim("transfer_cube", seed=0, image_size=(96, 96))
    >>> obs = sim.reset(seed=3)          # {"qpos": (14,), "qvel": (14,), "images": {cam: (H, W, 3)}}
    >>> obs, reward, success, done = sim.step(obs["qpos"])   # hold the current pose for 20 ms

    Not thread-safe: one thread steps and renders (the ROS bridge serialises with a lock).
    """

    def __init__(self, task: str = "transfer_cube", seed: Optional[int] = 0,
                 image_size: Sequence[int] = (480, 640), cameras: Sequence[str] = ALOHA_CAMERAS,
                 max_steps: int = 400, terminate_on_success: bool = False, render: bool = True,
                 camera_map: Optional[Mapping[str, str]] = None, settle_steps: Optional[int] = None):
        self.config = SimConfig(task=task, image_size=tuple(image_size), cameras=tuple(cameras),
                                max_steps=max_steps, terminate_on_success=terminate_on_success, render=render,
                                camera_map=dict(camera_map or DEFAULT_CAMERA_MAP),
                                settle_steps=DEFAULT_SETTLE_STEPS if settle_steps is None else settle_steps)
        xml = assets_dir() / f"bimanual_viperx_{task}.xml"
        self.model = mujoco.MjModel.from_xml_path(str(xml))
        self.data = mujoco.MjData(self.model)
        self.n_substeps = int(round(CONTROL_DT / self.model.opt.timestep))  # 10 with the 2 ms default
        self._renderers: Dict[Tuple[int, int], FastRenderer] = _RendererCache()
        self._init_reward_geoms()
        self.n_objects_qpos = 7 if task == "transfer_cube" else 14
        self.seed: Optional[int] = seed
        self.step_count = 0
        self.reward = 0
        self.max_reward = 0
        self.success = False
        self.ever_success = False
        self.last_action = np.zeros(robot.ACTION_DIM)
        self.reset(seed, render=False)  # no GL context until something is rendered

    # ------------------------------------------------------------------ episode
    @property
    def task(self) -> str:
        return self.config.task

    @property
    def time(self) -> float:
        """Simulated seconds since reset."""
        return self.step_count * CONTROL_DT

    @property
    def done(self) -> bool:
        """Episode over: max_steps reached (or success with terminate_on_success)."""
        return self.step_count >= self.config.max_steps or (self.config.terminate_on_success and self.ever_success)

    def reset(self, seed: Optional[int] = None, render: Optional[bool] = None) -> Dict[str, object]:
        """Start an episode: arms at gym-aloha's start pose, objects placed from ``seed``; returns the obs.

        seed None keeps the current seed's scene (same as the last reset).
        """
        if seed is not None:
            self.seed = int(seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:16] = START_ARM_POSE
        self.data.ctrl[:] = START_ARM_POSE
        self.data.qpos[-self.n_objects_qpos:] = sample_object_poses(self.task, self.seed)
        mujoco.mj_forward(self.model, self.data)
        if self.config.settle_steps:  # let the objects drop onto the table (arms held); the episode starts after
            mujoco.mj_step(self.model, self.data, nstep=self.config.settle_steps * self.n_substeps)
            self.data.time = 0.0
        self.step_count = 0
        self.reward = self.max_reward = 0
        self.success = self.ever_success = False
        self.last_action = self.qpos14()
        self.initial_object_qpos = self.data.qpos[-self.n_objects_qpos:].copy()
        return self.observation(render)

    def step(self, action: Sequence[float], render: Optional[bool] = None
             ) -> Tuple[Dict[str, object], int, bool, bool]:
        """Apply one 14-d action for one 50 Hz control step (20 ms of physics).

        Returns (obs, reward 0..4, success (reward == 4 now), done). Raises ValueError on a wrong shape
        or non-finite values (nothing is applied then).
        """
        ctrl = self.action_to_ctrl(action)
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.last_action = np.asarray(action, dtype=np.float64).copy()
        self.step_count += 1
        self.reward = self.compute_reward()
        self.max_reward = max(self.max_reward, self.reward)
        self.success = self.reward == SUCCESS_REWARD
        self.ever_success = self.ever_success or self.success
        return self.observation(render), self.reward, self.success, self.done

    @staticmethod
    def start_action() -> np.ndarray:
        """(14,) action whose actuator targets are the start pose's (what :meth:`reset` holds while settling).

        Holding it keeps a freshly reset scene exactly still. Holding :meth:`qpos14` instead does not: the
        position-controlled arms rest a few mrad below their targets under gravity, so a target set to the
        measured pose lets them sag further (the wrist angle by 9 mrad), which visibly shifts the wrist cameras.
        """
        return _joints16_to_14(np.asarray(START_ARM_POSE, dtype=np.float64))

    @staticmethod
    def action_to_ctrl(action: Sequence[float]) -> np.ndarray:
        """14-d action -> 16 actuator targets (gripper 0..1 -> finger slides, right finger mirrored)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (robot.ACTION_DIM,):
            raise ValueError(f"expected an action of shape ({robot.ACTION_DIM},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"expected finite action values, got {a.tolist()}")
        fl = float(SIM_GRIPPER.unnormalize_finger(a[6]))
        fr = float(SIM_GRIPPER.unnormalize_finger(a[13]))
        return np.concatenate([a[0:6], [fl, -fl], a[7:13], [fr, -fr]])

    # ------------------------------------------------------------------ state
    def qpos14(self) -> np.ndarray:
        """(14,) proprio: per arm 6 joints (rad) + gripper normalised from the left finger (0..1)."""
        return _joints16_to_14(self.data.qpos)

    def qvel14(self) -> np.ndarray:
        """(14,) velocities: joints rad/s, grippers in normalised units per second."""
        v = self.data.qvel
        scale = 1.0 / (SIM_GRIPPER.finger_open - SIM_GRIPPER.finger_close)
        return np.concatenate([v[0:6], [v[6] * scale], v[8:14], [v[14] * scale]])

    def finger_positions(self) -> Tuple[Tuple[float, float], Tuple[float, float]]:
        """((left arm: left, right finger m), (right arm: left, right finger m)) as simulated."""
        q = self.data.qpos
        return (float(q[6]), float(q[7])), (float(q[14]), float(q[15]))

    def object_qpos(self) -> np.ndarray:
        """Current object free-joint qpos: (7,) cube or (14,) peg + socket (pos xyz, quat wxyz)."""
        return self.data.qpos[-self.n_objects_qpos:].copy()

    def observation(self, render: Optional[bool] = None) -> Dict[str, object]:
        """{"qpos": (14,), "qvel": (14,), "images": {cam: (H, W, 3) uint8}} (images empty when not rendering)."""
        do_render = self.config.render if render is None else render
        return {"qpos": self.qpos14(), "qvel": self.qvel14(),
                "images": self.render() if do_render else {}}

    def policy_observation(self, instruction: Optional[str] = None, size: Optional[Sequence[int]] = None
                           ) -> Observation:
        """The current state as the policy's :class:`Observation` (RGB images of the configured cameras,
        proprio = qpos14, stamp = simulated seconds); instruction defaults to the task's description."""
        return Observation(images=self.render(size=size), proprio=self.qpos14(),
                           instruction=TASK_DESCRIPTIONS[self.task] if instruction is None else instruction,
                           stamp=self.time)

    # ------------------------------------------------------------------ rendering
    def renderer(self, size: Optional[Sequence[int]] = None) -> FastRenderer:
        """The cheap renderer for ``size`` (H, W), created on first use."""
        h, w = (int(v) for v in (size or self.config.image_size))
        key = (h, w)
        if key not in self._renderers:
            self._renderers[key] = FastRenderer(self.model, h, w)
            # Free GL contexts before mujoco's EGL exit hook (registered with the first context, so
            # registering after it runs first): otherwise every context raises in __del__ at exit.
            cache_ref = weakref.ref(self._renderers)
            atexit.register(lambda: _close_renderers(cache_ref()))
        return self._renderers[key]

    def render(self, cameras: Optional[Iterable[str]] = None, size: Optional[Sequence[int]] = None,
               release: bool = False) -> Dict[str, np.ndarray]:
        """Render ALOHA cameras (default: the configured ones) -> {name: (H, W, 3) uint8 RGB}.

        ``release``: detach the GL context from this thread afterwards (see FastRenderer.release_context);
        set it when the next render may come from another thread.
        """
        cams = list(self.config.cameras if cameras is None else cameras)
        unknown = [c for c in cams if c not in self.config.camera_map]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; expected among {sorted(self.config.camera_map)}")
        r = self.renderer(size)
        try:
            return {cam: r.render(self.data, self.config.camera_map[cam]) for cam in cams}
        finally:
            if release:
                r.release_context()

    def close(self) -> None:
        """Free rendering contexts (the sim stays usable; renderers are re-created on demand)."""
        _close_renderers(self._renderers)

    # ------------------------------------------------------------------ reward
    def _init_reward_geoms(self) -> None:
        gid = lambda name: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)  # noqa: E731
        self._gid = {n: gid(n) for n in ("table", "vx300s_left/10_left_gripper_finger",
                                          "vx300s_right/10_right_gripper_finger")}
        if self.task == "transfer_cube":
            self._gid["red_box"] = gid("red_box")
        else:
            for n in ("red_peg", "pin", "socket-1", "socket-2", "socket-3", "socket-4"):
                self._gid[n] = gid(n)

    def contact_pairs(self) -> set:
        """Set of unordered geom-id pairs in contact now."""
        n = self.data.ncon
        if n == 0:
            return set()
        geoms = self.data.contact.geom[:n]
        return {(int(min(a, b)), int(max(a, b))) for a, b in geoms}

    def compute_reward(self) -> int:
        """gym-aloha's staged reward (0..4) from contacts; 4 = success. Contact pairs are unordered."""
        pairs = self.contact_pairs()
        g = self._gid

        def touch(a: str, b: str) -> bool:
            x, y = g[a], g[b]
            return (min(x, y), max(x, y)) in pairs

        if self.task == "transfer_cube":
            right = touch("red_box", "vx300s_right/10_right_gripper_finger")
            left = touch("red_box", "vx300s_left/10_left_gripper_finger")
            table = touch("red_box", "table")
            reward = 0
            if right:
                reward = 1
            if right and not table:
                reward = 2
            if left:
                reward = 3
            if left and not table:
                reward = 4
            return reward
        sockets = ("socket-1", "socket-2", "socket-3", "socket-4")
        right = touch("red_peg", "vx300s_right/10_right_gripper_finger")
        left = any(touch(s, "vx300s_left/10_left_gripper_finger") for s in sockets)
        peg_table = touch("red_peg", "table")
        socket_table = any(touch(s, "table") for s in sockets)
        peg_socket = any(touch("red_peg", s) for s in sockets)
        reward = 0
        if left and right:
            reward = 1
        if left and right and not peg_table and not socket_table:
            reward = 2
        if peg_socket and not peg_table and not socket_table:
            reward = 3
        if touch("red_peg", "pin"):
            reward = 4
        return reward


class _RendererCache(dict):
    """(H, W) -> FastRenderer; a dict subclass so an exit hook can hold it weakly."""


def _close_renderers(renderers: Optional[Dict[Tuple[int, int], FastRenderer]]) -> None:
    if not renderers:
        return
    for r in renderers.values():
        try:
            r.close()
        except Exception:  # noqa: BLE001 - GL teardown at exit must not raise
            pass
    renderers.clear()


# ---------------------------------------------------------------------- Interbotix conversions
def follower_joint_positions(sim: AlohaSim, convention: robot.GripperConvention) -> Tuple[np.ndarray, np.ndarray]:
    """Both followers' JointState.position (9 values each, Interbotix layout) for the robot ``convention``.

    Normalised gripper quantities are preserved across generations: the finger values are the sim's
    normalised gripper opening re-expressed in ``convention``'s finger range (so
    ``robot.qpos_from_joint_states(left, right, convention)`` returns ``sim.qpos14()`` up to float
    rounding), and the gripper joint [6] is that opening mapped through the convention's joint range.
    """
    q14 = sim.qpos14()
    out = []
    for arm in (q14[0:7], q14[7:14]):
        g = arm[6]
        finger = float(convention.unnormalize_finger(g))
        pos = np.empty(9, dtype=np.float64)
        pos[robot.JS_ARM] = arm[0:6]
        pos[robot.JS_GRIPPER] = float(convention.command_to_joint(g))
        pos[robot.JS_LEFT_FINGER] = finger
        pos[robot.JS_RIGHT_FINGER] = -finger  # the xs_sdk reports the right finger mirrored (negative)
        out.append(pos)
    return out[0], out[1]


def follower_joint_velocities(sim: AlohaSim, convention: robot.GripperConvention) -> Tuple[np.ndarray, np.ndarray]:
    """Both followers' JointState.velocity (9 values each), same conventions as :func:`follower_joint_positions`."""
    v14 = sim.qvel14()
    out = []
    for arm in (v14[0:7], v14[7:14]):
        gv = arm[6]
        vel = np.empty(9, dtype=np.float64)
        vel[robot.JS_ARM] = arm[0:6]
        vel[robot.JS_GRIPPER] = gv * (convention.joint_open - convention.joint_close)
        vel[robot.JS_LEFT_FINGER] = gv * (convention.finger_open - convention.finger_close)
        vel[robot.JS_RIGHT_FINGER] = -vel[robot.JS_LEFT_FINGER]
        out.append(vel)
    return out[0], out[1]


def gripper_command_from_joint(rad: float, convention: robot.GripperConvention) -> float:
    """A follower gripper joint command (rad, as the commander sends it) -> the sim's normalised gripper."""
    return float(convention.joint_to_command(rad))
