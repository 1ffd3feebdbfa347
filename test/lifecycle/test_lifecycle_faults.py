"""Lifecycle faults over DDS with the sim bridge and the real commander: a stale camera refuses a start with a
message naming it; an e-stop during the start move holds at once; a driver service that never answers ends the
reset with a clear error and no motion."""
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cosmos_policy_ros.ros.commander_logic import HOLD_ESTOP, HOLD_RUNNING
from cosmos_policy_ros.ros.episode_manager import OWN_CHUNK_ID_BASE
from cosmos_policy_ros.ros.harness import Collector, RosSession, launch, wait_for

from .conftest import F, NF, lifecycle_specs

pytestmark = pytest.mark.ros
TEST_CAM = "/test_cam/image"
FAR_START = [0.6, -0.96, 1.16, 0.0, -0.3, 0.0, 1.0, -0.6, -0.96, 1.16, 0.0, -0.3, 0.0, 1.0]


def _publish_images(node, stop: threading.Event):
    from sensor_msgs.msg import Image

    pub = node.create_publisher(Image, TEST_CAM, 10)
    msg = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))
    while not stop.is_set():
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        time.sleep(0.05)


@pytest.mark.timing  # e-stop response counted in ticks: starved by a second suite on 2 cores
def test_stale_camera_refused_then_estop_during_the_start_move_holds(ros_session, node_log_dir, manager_client_cls):
    from cosmos_policy_ros.msg import ActionChunk

    mp = {"camera_topics": ["/cam_high/camera/color/image_rect_raw", TEST_CAM], "start_pose": FAR_START,
          "max_joint_speed": 0.3}
    client = manager_client_cls(ros_session)
    own = Collector(client.node, ActionChunk, "/episode_manager/action_chunk", 100)
    with launch(lifecycle_specs(mp, policy=False), node_log_dir) as procs:
        client.wait_state("IDLE", 60, procs)
        client.js["left"].wait(1, 30)
        client.trace.wait(1, 30)  # the commander's trace reaches this process (late discovery on a loaded machine)
        # 1. a camera that never published; from a second terminal: `cosmos-policy episode start` goes through
        # the manager (it runs) and prints the refusal
        out = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", "episode", "start"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"start: refused: start refused, inputs not ready: camera {TEST_CAM}: nothing received" in out.stdout, out.stdout
        out = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", "lifecycle", "status"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith("IDLE"), out.stdout + out.stderr
        # 2. a camera that stopped publishing
        stop = threading.Event()
        th = threading.Thread(target=_publish_images, args=(client.node, stop), daemon=True)
        th.start()
        time.sleep(1.0)
        stop.set()
        th.join()
        time.sleep(1.3)  # max_input_age 1.0
        res = client.call("start")
        assert not res.success
        assert f"camera {TEST_CAM}: stale, last message" in res.message, res.message
        assert client.state()["state"] == "IDLE" and len(own) == 0  # refused: nothing moved
        # 3. fresh again: the start is accepted; the robot is prepared through the (simulated) driver services
        stop.clear()
        th = threading.Thread(target=_publish_images, args=(client.node, stop), daemon=True)
        th.start()
        try:
            time.sleep(0.5)
            res = client.call("start")
            assert res.success, res.message
            i0 = len(client.trace)
            deadline = time.monotonic() + 20
            while sum(r[F["hold_code"]] == HOLD_RUNNING and r[F["chunk_id"]] >= OWN_CHUNK_ID_BASE
                      for r in client.rows(i0)) < 10:
                assert time.monotonic() < deadline, "the start move did not run:\n" + procs[-1].output()[-3000:]
                time.sleep(0.02)
            assert client.state()["state"] == "RESETTING"
            # 4. e-stop in the middle of the move
            n_before = len(client.trace)
            res = client.call("estop")
            assert res.success, res.message
            n_after = len(client.trace)
            client.wait_state("ESTOPPED", 5, procs)
            time.sleep(1.5)
            rows = client.rows(n_before)
            first_hold = next(i for i, r in enumerate(rows) if r[F["hold_code"]] == HOLD_ESTOP)
            # held from the tick after the commander got the e-stop (at most two ticks were already in flight)
            assert first_hold <= (n_after - n_before) + 2, (first_hold, n_after - n_before)
            print(f"e-stop: {n_after - n_before} tick(s) published during the call, first latched hold at row "
                  f"{first_hold} after the call began")
            after = np.array([r[NF:NF + 14] for r in rows[first_hold:]])
            assert all(r[F["hold_code"]] == HOLD_ESTOP for r in rows[first_hold:])
            assert np.ptp(after, axis=0).max() == 0.0  # the held command never changes
            # the move was not finished (it was aborted, not completed)
            assert abs(after[-1][0] - FAR_START[0]) > 0.05
            m1 = client.measured()
            time.sleep(1.0)
            assert np.abs(client.measured() - m1)[:6].max() < 0.01  # the arm stands still
            assert client.state()["state"] == "ESTOPPED"
            # 5. release: back to IDLE, still holding (no move resumes)
            res = client.call("reset_estop")
            assert res.success, res.message
            client.wait_state("IDLE", 5, procs)
            n = len(client.trace)
            time.sleep(1.0)
            assert not any(r[F["hold_code"]] == HOLD_RUNNING for r in client.rows(n))
        finally:
            stop.set()
            th.join()
        log = procs[0].output()
        assert "operating mode current_based_position (single gripper)" in log
        assert "rebooted (single gripper)" in log


def test_driver_service_that_never_answers_fails_the_reset_without_motion(ros_session, node_log_dir,
                                                                          manager_client_cls):
    from interbotix_xs_msgs.srv import Reboot

    from cosmos_policy_ros.msg import ActionChunk

    calls = []

    def hang(request, response):  # a driver that hangs: never answers within the manager's timeout
        calls.append(request.name)
        time.sleep(3.0)
        return response

    client = manager_client_cls(ros_session)
    own = Collector(client.node, ActionChunk, "/episode_manager/action_chunk", 100)
    driver = RosSession()
    try:
        node = driver.make_node("hanging_driver")
        node.create_service(Reboot, "/follower_left/reboot_motors", hang)
        specs = lifecycle_specs({"driver_timeout": 0.5}, sim_params={"driver_services": False}, policy=False)
        with launch(specs, node_log_dir) as procs:
            client.wait_state("IDLE", 60, procs)
            client.js["left"].wait(1, 30)
            client.trace.wait(1, 30)  # the commander's trace reaches this process (late discovery on a loaded machine)
            deadline = time.monotonic() + 20
            while True:  # until the manager has discovered the hanging service (first: "not available")
                res = client.call("start")
                if not res.success:  # inputs not fresh yet
                    assert time.monotonic() < deadline, res.message
                    time.sleep(0.5)
                    continue
                i0 = len(client.trace)
                t0 = time.monotonic()
                time.sleep(0.1)
                st = client.wait_state("IDLE", 10, procs)
                elapsed = time.monotonic() - t0
                if "not available within 0.5 s" in st["last_error"] and time.monotonic() < deadline:
                    assert "is the xs_sdk driver for /follower_left running?" in st["last_error"]
                    continue
                break
            assert "driver service /follower_left/reboot_motors did not answer within 0.5 s" in st["last_error"], st
            assert "nothing was moved" in st["last_error"]
            assert elapsed < 3.0
            wait_for(lambda: calls == ["gripper"], 5.0, what="the request at the hanging service")
            time.sleep(0.5)
            rows = client.rows(i0)
            assert rows, f"no commander trace rows reached the test after the start request ({len(client.trace)} in all)"
            assert not any(r[F["hold_code"]] == HOLD_RUNNING for r in rows)  # the commander held throughout
            assert np.ptp(np.array([r[NF:NF + 14] for r in rows]), axis=0).max() == 0.0
            assert all(m.chunk_id < OWN_CHUNK_ID_BASE or np.ptp(np.asarray(m.positions).reshape(m.horizon, 14),
                                                                axis=0).max() == 0.0 for m in own.snapshot())
            assert "did not answer within 0.5 s" in procs[-1].output()
    finally:
        driver.close()
