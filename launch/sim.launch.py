"""Launch Cosmos Policy on the simulated ALOHA (gym-aloha / MuJoCo sim bridge with the real robot's topics).

    ros2 launch cosmos_policy_ros sim.launch.py checkpoint:=<path|hf id> task:='<instruction>' [generation:=aloha2]
        [planning:=true] [episode_manager:=true] [blend_ticks:=0] [device:=cuda] [record:=true] [bag_dir:=...]

The nodes, their parameter files (config/*.yaml) and every argument with its description come from the one
graph definition, config/graph.yaml, through cosmos_policy_ros.ros.graph; the Python runner used by the tests
and `make demo` (`python -m cosmos_policy_ros.ros.graph sim ...`) builds the same graph.
`ros2 launch cosmos_policy_ros sim.launch.py --show-args` lists the arguments.
"""
from cosmos_policy_ros.ros.graph import launch_description

GRAPH = "sim"


def generate_launch_description():
    return launch_description(GRAPH)
