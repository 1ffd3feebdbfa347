# Source this from the repository root to get the environment `make test` uses:
#   source scripts/dev-env.sh && python -m pytest test/core -x
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_root/.venv"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export FASTRTPS_DEFAULT_PROFILES_FILE="$_root/config/fastdds_shm.xml"
export FASTDDS_DEFAULT_PROFILES_FILE="$_root/config/fastdds_shm.xml"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYTHONSAFEPATH=1
export COSMOS_POLICY_ROS_SOURCE="$_root"
unset _root
