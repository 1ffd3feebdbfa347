"""Launch Cosmos Policy on the real ALOHA (Interbotix xs_sdk followers and RealSense cameras are started by the robot's own bringup).

    ros2 launch cosmos_policy_ros aloha.launch.py checkpoint:=<path|hf id> task:='<instruction>' [generation:=aloha2]
        [planning:=true] [episode_manager:=true] [blend_ticks:=0] [device:=cuda] [record:=true] [bag_dir:=...]

The nodes, their parameter files (config/*.yaml) and every argument with its description come from the one
graph definition, config/graph.yaml, through cosmos_policy_ros.ros.graph; the Python runner used by the tests
and `make demo` (`python -m cosmos_policy_ros.ros.graph aloha ...`) builds the same graph.
`ros2 launch cosmos_policy_ros aloha.launch.py --show-args` lists the arguments.
"""
from cosmos_policy_ros.ros.graph import launch_description

GRAPH = "aloha"


def generate_launch_description():
    return launch_description(GRAPH)
