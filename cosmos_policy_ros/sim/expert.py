"""Scripted experts for the simulated ALOHA: Cartesian waypoints -> inverse kinematics -> joint targets.

The expert acts in the same 14-d joint action space as any policy (no mocap, no replay): at every
query it interpolates a gripper pose along its waypoint schedule and solves damped-least-squares IK for
that arm's six joints (warm-started from its previous solution, so one query costs ~0.1-0.3 ms).

Waypoints are expressed as "grip point" poses: the point ~0.135 m in front of ``gripper_link`` between
the fingertips, with the orientation gym-aloha's end-effector task gives its mocap bodies (same
relative pose as its weld constraints). The transfer-cube schedule follows the one that worked in the
end-effector environment (facts sheet section 8); ``time_scale`` stretches or compresses it.
Object poses are privileged information read from the simulator at reset, like ACT's scripted demos.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mujoco
import numpy as np

from cosmos_policy_ros.sim.aloha_sim import AlohaSim

#: Pose of gripper_link relative to the grip point (mocap frame) in gym-aloha's EE models:
#: (position offset in the grip-point frame, quaternion wxyz).
_GRIP_TO_LINK = {
    "left": (np.array([-0.134706, 0.0, 0.00205]), np.array([1.0, 0.0, 0.0, 0.0])),
    "right": (np.array([0.134706, 0.0, 0.00205]), np.array([0.0, 0.0, 0.0, 1.0])),
}
#: joint qpos / dof addresses of each arm's 6 joints in the joint-space model.
_ARM_DOFS = {"left": np.arange(0, 6), "right": np.arange(8, 14)}


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(4)
    mujoco.mju_mulQuat(out, a, b)
    return out


def _quat_slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Shortest-path spherical interpolation between unit quaternions (wxyz)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    dot = float(np.dot(a, b))
    if dot < 0.0:
        b, dot = -b, -dot
    if dot > 0.9995:
        q = a + t * (b - a)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta)


@dataclass(frozen=True)
class Waypoint:
    """Arm target at 50 Hz control step ``step``: grip point xyz (m), orientation wxyz, gripper 0..1."""

    step: float
    xyz: Tuple[float, float, float]
    quat: Tuple[float, float, float, float]
    gripper: float


#: weight of the pull of forearm roll and wrist rotate towards 0 in the expert's IK (one IK branch; see ArmIK)
TWIST_WEIGHT = 0.03


class ArmIK:
    """Damped least-squares IK for one ViperX arm on a private MjData of the sim's model."""

    def __init__(self, model: mujoco.MjModel, side: str, damping: float = 1e-3, max_iters: int = 30,
                 tol: float = 1e-4, twist_weight: float = TWIST_WEIGHT):
        self.model = model
        self.data = mujoco.MjData(model)
        self.side = side
        self.body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"vx300s_{side}/gripper_link")
        self.dofs = _ARM_DOFS[side]
        self.lo = model.jnt_range[self.dofs, 0].copy()
        self.hi = model.jnt_range[self.dofs, 1].copy()
        self.damping, self.max_iters, self.tol = damping, max_iters, tol
        # Forearm roll (3) and wrist rotate (5) of the ViperX: near the wrist singularity a turn of one is undone by
        # the other, and plain DLS drifts into the flipped branch (roll -pi, rotate +pi) in some scenes and not in
        # others: one gripper pose, two joint-space answers, which a policy learning from the demos averages. A
        # small pull of both towards 0 (a secondary objective, ~zero cost on the unflipped branch) keeps one branch.
        self._twist = np.zeros(6)
        self._twist[[3, 5]] = float(twist_weight)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def link_pose(self, q6: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Forward kinematics: gripper_link (pos, quat wxyz) for joint angles ``q6``."""
        self.data.qpos[self.dofs] = q6
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.xpos[self.body].copy(), self.data.xquat[self.body].copy()

    def solve(self, pos: np.ndarray, quat: np.ndarray, q_init: np.ndarray) -> np.ndarray:
        """Joint angles (6,) putting gripper_link at ``pos``/``quat`` (wxyz), starting from ``q_init``."""
        q = np.clip(np.asarray(q_init, dtype=np.float64).copy(), self.lo, self.hi)
        err = np.zeros(6)
        neg = np.empty(4)
        dq_rot = np.empty(3)
        for _ in range(self.max_iters):
            self.data.qpos[self.dofs] = q
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_comPos(self.model, self.data)
            err[:3] = pos - self.data.xpos[self.body]
            mujoco.mju_negQuat(neg, self.data.xquat[self.body])
            mujoco.mju_mulQuat(neg, quat, neg)  # rotation from current to target (world frame)
            mujoco.mju_quat2Vel(dq_rot, neg, 1.0)
            err[3:] = dq_rot
            if np.linalg.norm(err[:3]) < self.tol and np.linalg.norm(err[3:]) < 10 * self.tol:
                break
            mujoco.mj_jacBody(self.model, self.data, self._jacp, self._jacr, self.body)
            jac = np.vstack([self._jacp[:, self.dofs], self._jacr[:, self.dofs]])  # (6, 6)
            # dq = argmin |J dq - err|^2 + lambda |dq|^2 + |W (q + dq)|^2  (W: the twist weights)
            w2 = self._twist ** 2
            dq = np.linalg.solve(jac.T @ jac + np.diag(self.damping + w2), jac.T @ err - w2 * q)
            q = np.clip(q + dq, self.lo, self.hi)
        return q


class WaypointExpert:
    """Time-indexed bimanual waypoint follower. ``action(step)`` -> (14,) joint action for 50 Hz ``step``."""

    def __init__(self, sim: AlohaSim, left: Sequence[Waypoint], right: Sequence[Waypoint],
                 end_step: int, checkpoints: Sequence[Tuple[float, Callable[["WaypointExpert"], None]]] = ()):
        self.sim = sim
        self.model = sim.model
        self.end_step = int(end_step)
        #: (step, callback): called once, before the first query at or after ``step``, to re-plan from the
        #: simulator's current state (e.g. correct for how an object sits in the gripper)
        self.checkpoints = sorted(checkpoints, key=lambda c: c[0])
        self.ik = {"left": ArmIK(sim.model, "left"), "right": ArmIK(sim.model, "right")}
        self.waypoints = {"left": sorted(left, key=lambda w: w.step), "right": sorted(right, key=lambda w: w.step)}
        q14 = sim.qpos14()
        self._q = {"left": q14[0:6].copy(), "right": q14[7:13].copy()}

    @staticmethod
    def grip_to_link(side: str, xyz: np.ndarray, quat: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Grip-point pose -> gripper_link pose."""
        off, rel = _GRIP_TO_LINK[side]
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, quat)
        return xyz + rot.reshape(3, 3) @ off, _quat_mul(quat, rel)

    @staticmethod
    def link_to_grip(side: str, pos: np.ndarray, quat: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """gripper_link pose -> grip-point pose (inverse of :meth:`grip_to_link`)."""
        off, rel = _GRIP_TO_LINK[side]
        inv_rel = rel * np.array([1.0, -1.0, -1.0, -1.0])
        q = _quat_mul(quat, inv_rel)
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, q)
        return pos - rot.reshape(3, 3) @ off, q

    def shift_after(self, side: str, step: float, offset: Sequence[float]) -> None:
        """Move every waypoint of ``side`` later than ``step`` by ``offset`` (m, world frame)."""
        off = np.asarray(offset, dtype=np.float64)
        self.waypoints[side] = [Waypoint(w.step, tuple(np.asarray(w.xyz) + off), w.quat, w.gripper) if w.step > step else w
                                for w in self.waypoints[side]]

    def target(self, side: str, step: float) -> Tuple[np.ndarray, np.ndarray, float]:
        """Interpolated grip-point (xyz, quat, gripper) for ``side`` at ``step``."""
        wps = self.waypoints[side]
        if step <= wps[0].step:
            w = wps[0]
            return np.array(w.xyz), np.array(w.quat), w.gripper
        for a, b in zip(wps[:-1], wps[1:]):
            if step <= b.step:
                t = (step - a.step) / max(b.step - a.step, 1e-9)
                xyz = (1 - t) * np.array(a.xyz) + t * np.array(b.xyz)
                return xyz, _quat_slerp(np.array(a.quat), np.array(b.quat), t), (1 - t) * a.gripper + t * b.gripper
        w = wps[-1]
        return np.array(w.xyz), np.array(w.quat), w.gripper

    def action(self, step: float) -> np.ndarray:
        """The (14,) joint action (left arm 6 + gripper, right arm 6 + gripper) for control step ``step``."""
        while self.checkpoints and self.checkpoints[0][0] <= step:
            self.checkpoints.pop(0)[1](self)
        out = np.empty(14)
        for side, sl in (("left", slice(0, 7)), ("right", slice(7, 14))):
            xyz, quat, grip = self.target(side, step)
            pos, lquat = self.grip_to_link(side, xyz, quat)
            self._q[side] = self.ik[side].solve(pos, lquat, self._q[side])
            out[sl] = np.concatenate([self._q[side], [grip]])
        return out


# ---------------------------------------------------------------------- task schedules
RIGHT_QUAT = (0.866, 0.0, -0.5, 0.0)  # right gripper pitched down 60 deg
LEFT_QUAT = (0.7071, 0.7071, 0.0, 0.0)  # left gripper rolled 90 deg: fingers close across the right's grasp
OPEN, CLOSED = 1.0, 0.0


def _start_grip_pose(expert_sim: AlohaSim, side: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    ik = ArmIK(expert_sim.model, side)
    q14 = expert_sim.qpos14()
    q6 = q14[0:6] if side == "left" else q14[7:13]
    pos, quat = ik.link_pose(q6)
    xyz, gq = WaypointExpert.link_to_grip(side, pos, quat)
    return tuple(xyz), tuple(gq)


def transfer_cube_expert(sim: AlohaSim, rng: Optional[np.random.Generator] = None,
                         time_scale: float = 1.0, meeting_jitter: float = 0.0) -> WaypointExpert:
    """Right arm grasps the cube and lifts it to a meeting point; the left arm takes it over.

    ``meeting_jitter`` (m) moves the meeting point once per episode (uniform in a cube of that
    half-size, drawn from ``rng``) for more varied demonstrations; per-step noise would break grasps.
    """
    cube = sim.initial_object_qpos[:3].copy()
    cube_z = 0.02  # resting centre of the 4 cm cube on the table
    meet = np.array([0.0, 0.5, 0.25])
    if meeting_jitter > 0:
        rng = rng or np.random.default_rng(sim.seed)
        meet = meet + rng.uniform(-meeting_jitter, meeting_jitter, size=3)
    s = float(time_scale)
    l0, lq0 = _start_grip_pose(sim, "left")
    r0, rq0 = _start_grip_pose(sim, "right")
    cx, cy = cube[0], cube[1]
    right = [
        Waypoint(0, r0, rq0, OPEN),
        Waypoint(90 * s, (cx, cy, cube_z + 0.07), RIGHT_QUAT, OPEN),
        Waypoint(130 * s, (cx, cy, cube_z - 0.01), RIGHT_QUAT, OPEN),
        Waypoint(145 * s, (cx, cy, cube_z - 0.01), RIGHT_QUAT, OPEN),
        Waypoint(175 * s, (cx, cy, cube_z - 0.01), RIGHT_QUAT, CLOSED),
        Waypoint(215 * s, (cx, cy, cube_z + 0.09), RIGHT_QUAT, CLOSED),
        Waypoint(250 * s, tuple(meet), RIGHT_QUAT, CLOSED),
        Waypoint(330 * s, tuple(meet), RIGHT_QUAT, CLOSED),
        Waypoint(350 * s, tuple(meet), RIGHT_QUAT, OPEN),
        Waypoint(380 * s, tuple(meet + [0.1, 0, 0]), RIGHT_QUAT, OPEN),
    ]
    left = [
        Waypoint(0, l0, lq0, OPEN),
        Waypoint(100 * s, tuple(meet + [-0.1, 0, 0]), LEFT_QUAT, OPEN),
        Waypoint(250 * s, tuple(meet + [-0.1, 0, 0]), LEFT_QUAT, OPEN),
        Waypoint(280 * s, tuple(meet), LEFT_QUAT, OPEN),
        Waypoint(310 * s, tuple(meet), LEFT_QUAT, CLOSED),
        Waypoint(350 * s, tuple(meet), LEFT_QUAT, CLOSED),
        Waypoint(380 * s, tuple(meet + [-0.1, 0, 0]), LEFT_QUAT, CLOSED),
    ]
    return WaypointExpert(sim, left, right, end_step=int(round(380 * s)))


LEFT_DOWN_QUAT = (0.866, 0.0, 0.5, 0.0)  # left gripper pitched down 60 deg (mirror of RIGHT_QUAT)
PEG_Z, SOCKET_Z = 0.01, 0.022  # resting centres on the table (2 cm peg; socket bottom plate 2.2 cm below centre)


def insertion_expert(sim: AlohaSim, rng: Optional[np.random.Generator] = None, time_scale: float = 1.0,
                     meeting_jitter: float = 0.0, grip_z: float = 0.005, peg_grip_dx: float = 0.02,
                     meet_z: float = 0.15, final_gap: float = 0.09, peg_lift: float = 0.009,
                     align_before_insert: bool = True) -> WaypointExpert:
    """Right arm picks the peg, left arm the socket; both lift, line up along x and push the peg in.

    The right gripper holds the peg ``peg_grip_dx`` m right of its centre, the left one the socket at
    its centre; both grip points sit ``grip_z`` above the table. At the meeting height the object
    centres are aligned in y and z; the arms then close the gap until the peg centre is ``final_gap``
    m from the socket centre (the pin is touched at 0.10). ``peg_lift`` raises the right grip relative
    to the left one: the peg hangs ~1 cm lower in its grasp than the socket does in its (measured).
    With ``align_before_insert`` the expert re-plans once, while both objects are held still in front of
    each other: the peg's grip moves so the peg centre lines up with the socket centre in y and z
    (object poses read from the simulator, like the initial ones).
    """
    objs = sim.initial_object_qpos
    peg, socket = objs[0:3].copy(), objs[7:10].copy()
    s = float(time_scale)
    meet = np.array([0.0, 0.5, meet_z])
    if meeting_jitter > 0:
        # x and y only: the meeting height changes how much each arm sags, which breaks the z alignment
        rng = rng or np.random.default_rng(sim.seed)
        meet[:2] += rng.uniform(-meeting_jitter, meeting_jitter, size=2)
    l0, lq0 = _start_grip_pose(sim, "left")
    r0, rq0 = _start_grip_pose(sim, "right")
    # object centre relative to the grip point once grasped (assumed rigid after the grasp)
    peg_rel = np.array([-peg_grip_dx, 0.0, PEG_Z - grip_z])
    sock_rel = np.array([0.0, 0.0, SOCKET_Z - grip_z])
    # grip points that put both object centres on the meeting line, socket left of the peg
    def grips(gap: float):
        sock_c = meet + np.array([-gap / 2, 0.0, 0.0])
        peg_c = meet + np.array([gap / 2, 0.0, 0.0])
        return tuple(sock_c - sock_rel), tuple(peg_c - peg_rel + np.array([0.0, 0.0, peg_lift]))

    l_pre, r_pre = grips(0.24)
    l_in, r_in = grips(final_gap)
    px, py = peg[0] + peg_grip_dx, peg[1]
    sx, sy = socket[0], socket[1]
    right = [
        Waypoint(0, r0, rq0, OPEN),
        Waypoint(90 * s, (px, py, grip_z + 0.08), RIGHT_QUAT, OPEN),
        Waypoint(130 * s, (px, py, grip_z), RIGHT_QUAT, OPEN),
        Waypoint(145 * s, (px, py, grip_z), RIGHT_QUAT, OPEN),
        Waypoint(175 * s, (px, py, grip_z), RIGHT_QUAT, CLOSED),
        Waypoint(215 * s, (px, py, grip_z + 0.1), RIGHT_QUAT, CLOSED),
        Waypoint(260 * s, r_pre, RIGHT_QUAT, CLOSED),
        Waypoint(300 * s, r_pre, RIGHT_QUAT, CLOSED),
        Waypoint(370 * s, r_in, RIGHT_QUAT, CLOSED),
    ]
    left = [
        Waypoint(0, l0, lq0, OPEN),
        Waypoint(90 * s, (sx, sy, grip_z + 0.08), LEFT_DOWN_QUAT, OPEN),
        Waypoint(130 * s, (sx, sy, grip_z), LEFT_DOWN_QUAT, OPEN),
        Waypoint(145 * s, (sx, sy, grip_z), LEFT_DOWN_QUAT, OPEN),
        Waypoint(175 * s, (sx, sy, grip_z), LEFT_DOWN_QUAT, CLOSED),
        Waypoint(215 * s, (sx, sy, grip_z + 0.1), LEFT_DOWN_QUAT, CLOSED),
        Waypoint(260 * s, l_pre, LEFT_DOWN_QUAT, CLOSED),
        Waypoint(300 * s, l_pre, LEFT_DOWN_QUAT, CLOSED),
        Waypoint(370 * s, l_in, LEFT_DOWN_QUAT, CLOSED),
    ]

    align_step = 296 * s  # the arms reached the pre-insertion poses at 260 and have settled

    def align(expert: WaypointExpert) -> None:
        # Both objects are held still at the pre-insertion poses: line the peg up with the socket in y and z
        # (how each object sits in its grasp varies by a few mm, the tube leaves +-8 mm).
        if not align_before_insert:
            return
        q = expert.sim.data.qpos
        peg_c, sock_c = q[-14:-11], q[-7:-4]
        expert.shift_after("right", align_step, [0.0, sock_c[1] - peg_c[1], sock_c[2] - peg_c[2]])

    return WaypointExpert(sim, left, right, end_step=int(round(370 * s)), checkpoints=[(align_step, align)])


EXPERTS: Dict[str, Callable[..., WaypointExpert]] = {"transfer_cube": transfer_cube_expert,
                                                     "insertion": insertion_expert}


def make_expert(sim: AlohaSim, **kwargs) -> WaypointExpert:
    """The scripted expert for ``sim.task``, planned from the scene ``sim`` was just reset to."""
    try:
        factory = EXPERTS[sim.task]
    except KeyError:
        raise ValueError(f"no scripted expert for task {sim.task!r}; available: {sorted(EXPERTS)}") from None
    return factory(sim, **kwargs)
