"""The policy node running the real (tiny, random) Cosmos Policy network over real DDS: a valid ActionChunk
stamped with the observation time, predicted future images and the value come out."""
import numpy as np
import pytest

from cosmos_policy_ros.ros.harness import Collector, launch, wait_for_publishers

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_policy_node_with_tiny_model_publishes_chunk_images_value(ros_session, node_log_dir, synthetic_robot_cls,
                                                                   runtime_graph_fn):
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32

    from cosmos_policy_ros.msg import ActionChunk
    from cosmos_policy_ros.ros.conversions import msg_to_chunk, stamp_to_sec

    robot = synthetic_robot_cls(ros_session)
    node = ros_session.make_node("tiny_model_watcher")
    chunks = Collector(node, ActionChunk, "/policy/action_chunk")
    images = Collector(node, Image, "/policy/future/cam_high")
    values = Collector(node, Float32, "/policy/value")
    specs = [s for s in runtime_graph_fn("tiny-random", {"task": "transfer the cube", "max_input_age": 1.0,
                                                         "stamp_tolerance": 0.5}) if s.name == "policy"]
    with launch(specs, node_log_dir) as procs:
        wait_for_publishers(node, "/policy/action_chunk", timeout=60)
        try:
            msg = chunks.wait(1, timeout=400)[0]
        except TimeoutError:
            raise AssertionError(procs[0].output()[-3000:])
        images.wait(1, timeout=30)
        values.wait(1, timeout=30)
    chunk = msg_to_chunk(msg)
    assert chunk.actions.shape == (50, 14) and np.all(np.isfinite(chunk.actions))
    assert msg.period == pytest.approx(0.04) and list(msg.joint_names)[0] == "left_waist"
    assert msg.policy_id.startswith("tiny")
    # stamped with the observation time: on the synthetic robot's 25 Hz stamp grid, not the publish time
    t = stamp_to_sec(msg.header.stamp)
    assert abs(t / 0.04 - round(t / 0.04)) < 1e-3
    img = images.snapshot()[0]
    assert img.encoding == "rgb8" and img.height > 0 and len(img.data) == img.height * img.step
    assert 0.0 <= values.snapshot()[0].data <= 1.0
