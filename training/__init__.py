"""cosmos_policy_training: ROS-free companion training module (installed under this name).

Turns demonstrations and recorded rollouts into Cosmos Policy checkpoints that
``cosmos_policy_ros.core`` loads. Never imports rclpy (a test enforces this).
"""
