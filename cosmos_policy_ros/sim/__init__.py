"""ROS-free simulated ALOHA: gym-aloha / MuJoCo physics, fast rendering, scripted demonstrations.

Public API (see docs/sim.md):
- :class:`AlohaSim` (``aloha_sim``): reset(seed) -> obs, step(action14) -> (obs, reward, success, done),
  render(cameras, size), qpos14()/qvel14(), 50 Hz physics; :func:`follower_joint_positions` etc. convert to
  the Interbotix JointState layout.
- :func:`make_expert` (``expert``): scripted IK expert for the scene the sim was just reset to.
- :func:`run_policy_episode` (``evaluate``): closed-loop policy episode (chunks at 25 Hz) -> EpisodeResult;
  :class:`ScriptedExpertPolicy` puts the expert behind the same interface.
- ``generate_demos``: expert rollouts at 25 Hz -> episode HDF5 files (CLI ``python -m ...generate_demos``).

Set MUJOCO_GL (egl or osmesa) before importing: rendering is offscreen.
"""
from cosmos_policy_ros.sim.aloha_sim import (  # noqa: F401
    CONTROL_DT,
    CONTROL_HZ,
    DEFAULT_CAMERA_MAP,
    POLICY_HZ,
    STEPS_PER_ACTION,
    SIM_GRIPPER,
    SUCCESS_REWARD,
    TASK_DESCRIPTIONS,
    TASKS,
    AlohaSim,
    FastRenderer,
    SimConfig,
    follower_joint_positions,
    follower_joint_velocities,
    gripper_command_from_joint,
    sample_object_poses,
)
from cosmos_policy_ros.sim.evaluate import EpisodeResult, ScriptedExpertPolicy, run_policy_episode  # noqa: F401
from cosmos_policy_ros.sim.expert import WaypointExpert, make_expert  # noqa: F401
