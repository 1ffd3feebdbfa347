"""Launch Cosmos Policy on the real ALOHA (Interbotix xs_sdk followers and RealSense cameras are started by the robot's own bringup).

    ros2 launch cosmos_policy_ros aloha.launch.py checkpoint:=<path|hf id> task:='<instruction>' [generation:=aloha2]
        [planning:=0] [blend_ticks:=0] [device:=cuda] [record:=true] [bag_dir:=~/cosmos_policy_bags]

The nodes, their parameter files (config/*.yaml) and every argument with its description come from the one
graph definition, config/graph.yaml, through cosmos_policy_ros.ros.graph; the Python runner used by the tests
and `make demo` (`python -m cosmos_policy_ros.ros.graph aloha ...`) builds the same graph.
`ros2 launch cosmos_policy_ros aloha.launch.py --show-args` lists the arguments.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from cosmos_policy_ros.ros import graph

GRAPH = "aloha"


def _nodes(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph.launch_arguments()}
    return [
        Node(package=graph.PACKAGE, executable=node.executable, name=node.spec.name,
             namespace=node.spec.namespace or "", parameters=[*node.spec.params_files, node.spec.parameters],
             remappings=list(node.spec.remaps.items()), output="screen", emulate_tty=True)
        for node in graph.graph_nodes(GRAPH, values)
    ]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(a.name, default_value=str(a.default).lower() if isinstance(a.default, bool)
                                       else str(a.default), description=a.description)
                 for a in graph.launch_arguments()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_nodes)])
