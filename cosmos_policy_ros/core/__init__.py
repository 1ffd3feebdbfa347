"""ROS-free core of cosmos_policy_ros: importing it never imports rclpy (a test enforces this)."""
