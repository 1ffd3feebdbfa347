"""Every node's main(): a stop requested while a callback runs ends the process cleanly, a real error does not.

Under load SIGINT can shut the context down while a timer callback is between its work and its publish; the
publish then raises on the closed context. That is the stop the user asked for (exit 0, one line), while the
same exception on a live context is a fault and must still end the process with its traceback.
"""
import os
import subprocess
import sys
import textwrap

import pytest

NODE = textwrap.dedent("""
    import sys
    import rclpy
    from rclpy.node import Node
    from std_msgs.msg import Float32
    from cosmos_policy_ros.ros.node_main import run_node

    SHUT_DOWN_FIRST = sys.argv[1] == "shutdown"

    class Ticker(Node):
        def __init__(self):
            super().__init__("ticker")
            self.pub = self.create_publisher(Float32, "/ticker", 1)
            self.create_timer(0.01, self.tick)

        def tick(self):
            if SHUT_DOWN_FIRST:
                rclpy.shutdown()  # what the SIGINT handler does while this callback runs
                self.pub.publish(Float32(data=1.0))
            else:
                raise RuntimeError("sensor driver fault")

    sys.exit(run_node(Ticker, "ticker"))
""")


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NODE, mode], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


@pytest.mark.ros
def test_a_publish_on_the_context_shut_down_under_the_callback_is_a_clean_stop():
    proc = _run("shutdown")
    assert proc.returncode == 0, proc.stderr
    assert "ticker: stopped while a callback ran" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.ros
def test_an_error_in_a_callback_on_a_live_context_still_fails_the_node():
    proc = _run("error")
    assert proc.returncode != 0
    assert "RuntimeError: sensor driver fault" in proc.stderr
