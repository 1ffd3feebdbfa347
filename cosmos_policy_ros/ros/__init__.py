"""ROS 2 layer: nodes and message conversions. Imports only the public API of cosmos_policy_ros.core."""
