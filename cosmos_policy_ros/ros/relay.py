"""Relay node: forwards one topic to another without deserialising (raw CDR in, raw CDR out).

Useful on the robot to bridge camera topic names of older drivers (e.g. /cam_high/color/image_rect_raw)
to the names the policy expects, and used by the test suite as a real two-process round trip.

    python -m cosmos_policy_ros.ros.relay --ros-args -p message_type:=sensor_msgs/msg/Image \
        -r in:=/cam_high/color/image_rect_raw -r out:=/cam_high/camera/color/image_rect_raw
"""
from __future__ import annotations

import sys

from rclpy.node import Node
from rcl_interfaces.msg import ParameterDescriptor

from cosmos_policy_ros.ros.interfaces import message_class
from cosmos_policy_ros.ros.node_main import run_node


class RelayNode(Node):
    """Subscribes to ``in`` and republishes every message on ``out`` byte for byte."""

    def __init__(self, **kwargs):
        super().__init__("relay", **kwargs)
        type_name = self.declare_parameter(
            "message_type", "", ParameterDescriptor(description="type to relay, e.g. sensor_msgs/msg/Image")).value
        depth = self.declare_parameter(
            "queue_depth", 10, ParameterDescriptor(description="QoS history depth of both ends")).value
        if not type_name:
            raise ValueError("relay: parameter 'message_type' is required (e.g. sensor_msgs/msg/Image)")
        msg_type = message_class(type_name)
        self.relayed = 0
        self._pub = self.create_publisher(msg_type, "out", depth)
        self._sub = self.create_subscription(msg_type, "in", self._forward, depth, raw=True)
        self.get_logger().info(f"relaying {type_name}: {self._sub.topic_name} -> {self._pub.topic_name}")

    def _forward(self, data: bytes) -> None:
        self._pub.publish(data)
        self.relayed += 1


def main(args=None) -> None:
    """Run the relay until interrupted."""
    return run_node(RelayNode, "relay", args)


if __name__ == "__main__":
    sys.exit(main())
