"""ROS-free simulated ALOHA: gym-aloha / MuJoCo physics, fast rendering, scripted demonstrations."""
