"""cosmos_policy_ros: NVIDIA Cosmos Policy on the ALOHA robot with ROS 2.

Subpackages:
  core  - ROS-free model, sampler, codec, chunking and safety logic (numpy / torch / diffusers only)
  sim   - ROS-free simulated ALOHA (MuJoCo via gym-aloha) and scripted demonstrations
  ros   - ROS 2 nodes (rclpy), thin wrappers over core
  msg   - generated message types (from msg/*.msg; present after `colcon build` or `make setup`)
"""
# The generated messages (cosmos_policy_ros.msg) are installed by rosidl into the install prefix, while
# the hand-written sources may be imported from a source checkout: merge both locations into one package.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
