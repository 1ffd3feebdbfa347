"""Observation assembly / validation and image decoding from plain buffers (no ROS)."""
import array

import numpy as np
import pytest

from cosmos_policy_ros.core.observation import (ImageError, ObservationAssembler, ObservationConfig, decode_image,
                                                encode_image)
from cosmos_policy_ros.core.robot import JS_NAMES, gripper_convention
from cosmos_policy_ros.core.test_doubles import (LatencyPolicyTestDouble, decode_plan_step, encode_plan_steps,
                                                 plan_step_delta)
from cosmos_policy_ros.core.types import Observation, PolicyBackend


def rgb(h=4, w=5):
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


def test_decode_rgb_bgr_mono_and_padding_zero_copy():
    img = rgb()
    data = array.array("B", img.tobytes())
    out = decode_image(data, 4, 5, "rgb8", 15)
    np.testing.assert_array_equal(out, img)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))
    bgr = img[:, :, ::-1].copy()
    np.testing.assert_array_equal(decode_image(bgr.tobytes(), 4, 5, "bgr8", 15), img)
    padded = np.zeros((4, 20), np.uint8)
    padded[:, :15] = img.reshape(4, 15)
    np.testing.assert_array_equal(decode_image(padded.tobytes(), 4, 5, "rgb8", 20), img)
    mono = np.arange(20, dtype=np.uint8).reshape(4, 5)
    out = decode_image(mono.tobytes(), 4, 5, "MONO8", 5)
    assert out.shape == (4, 5, 3) and (out[..., 2] == mono).all()
    data, h, w, enc, step = encode_image(img)
    np.testing.assert_array_equal(decode_image(data, h, w, enc, step), img)


@pytest.mark.parametrize("kwargs, match", [
    (dict(encoding="16UC1"), "unsupported encoding"),
    (dict(expected_size=(480, 640)), "expected 480x640"),
    (dict(step=10), "step 10"),
    (dict(height=8, step=15), "buffer holds"),
])
def test_decode_errors(kwargs, match):
    args = dict(data=rgb().tobytes(), height=4, width=5, encoding="rgb8", step=15)
    args.update(kwargs)
    with pytest.raises(ImageError, match=match):
        decode_image(**args)


def js(gripper_open=True):
    conv = gripper_convention("aloha2")
    finger = conv.finger_open if gripper_open else conv.finger_close
    return [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0, finger, -finger]


def filled(cfg=None, t=10.0):
    asm = ObservationAssembler(cfg or ObservationConfig(expected_size=(4, 5)), gripper_convention("aloha2"))
    for i, cam in enumerate(asm.config.cameras):
        assert asm.set_image_fields(cam, t - 0.01 * i, rgb().tobytes(), 4, 5, "rgb8", 15) is None
    asm.set_joint_state("left", t, JS_NAMES, js(True))
    asm.set_joint_state("right", t - 0.005, JS_NAMES, js(False))
    return asm


def test_assemble_valid_observation():
    asm = filled()
    obs, problems = asm.assemble(10.05, "put the cube")
    assert problems == [] and isinstance(obs, Observation)
    assert obs.stamp == 10.0 and obs.instruction == "put the cube"
    # the oldest input (the third camera, 20 ms older): "observed after T" holds only once it is after T
    assert obs.oldest_stamp == pytest.approx(9.98) and obs.observed_since == pytest.approx(9.98)
    np.testing.assert_allclose(obs.proprio, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0])
    assert set(obs.images) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}


def test_stale_missing_one_arm_nan_wrong_size_and_stamp_spread():
    asm = ObservationAssembler(ObservationConfig(expected_size=(4, 5)), gripper_convention("aloha2"))
    obs, problems = asm.assemble(10.0, "x")
    assert obs is None and len(problems) == 5 and "no message" in problems[0]
    asm = filled()
    assert any("stale" in p for p in asm.assemble(10.5, "x")[1])
    asm = filled()
    asm.set_joint_state("right", 10.0, JS_NAMES, [float("nan")] * 9)
    (problem,) = asm.assemble(10.05, "x")[1]
    assert problem.startswith("right follower joint state: joint(s) ['waist'") and "not finite" in problem
    asm = filled()
    asm.set_image_fields("cam_high", 10.0, rgb(8, 8).tobytes(), 8, 8, "rgb8", 24)
    assert "expected 4x5" in asm.assemble(10.05, "x")[1][0]
    asm = filled()
    asm.set_image_fields("cam_left_wrist", 10.0, rgb().tobytes(), 4, 5, "yuv422", 10)
    assert "unsupported encoding" in asm.assemble(10.05, "x")[1][0]
    asm = filled(ObservationConfig(expected_size=(4, 5), stamp_tolerance=0.01))
    assert "stamps disagree" in asm.assemble(10.05, "x")[1][0]


def test_latency_double_is_a_policy_backend_and_encodes_plan_steps():
    double = LatencyPolicyTestDouble.from_spec("test-double:latency=0,horizon=10")
    assert isinstance(double, PolicyBackend)
    obs = filled().assemble(10.05, "x")[0]
    out = double.infer(obs)
    assert out.actions.shape == (10, 14) and out.actions.dtype == np.float32
    steps = [decode_plan_step(a) for a in out.actions]
    assert steps[0] == pytest.approx((10.0 / 0.04) % 1000, abs=1e-2)
    assert [round(plan_step_delta(a, b), 3) for a, b in zip(steps, steps[1:])] == [1.0] * 9
    a = encode_plan_steps(np.array([999.0, 1000.0]))
    assert plan_step_delta(decode_plan_step(a[0]), decode_plan_step(a[1])) == pytest.approx(1.0, abs=1e-3)
    double.set_fault("exception")
    with pytest.raises(RuntimeError, match="injected"):
        double.infer(obs)
    double.set_fault("nan")
    assert np.isnan(double.infer(obs).actions).any()
    with pytest.raises(ValueError, match="unknown key"):
        LatencyPolicyTestDouble.from_spec("test-double:speed=1")


def test_an_observation_counts_as_observed_after_a_time_only_when_every_input_is():
    """After an episode start (a scene reset) at T, fresh joint states with a camera frame from before T would
    pair the new arm pose with the old scene: the re-plan request must wait for frames after T."""
    from cosmos_policy_ros.core.chunking import ReplanRequests

    asm = filled(t=10.0)  # cameras at 10.0, 9.99, 9.98; arms at 10.0 and 9.995
    req = ReplanRequests()
    req.add(9.99, now=10.0)  # episode start at 9.99
    obs, _ = asm.assemble(10.01, "x")
    assert obs.stamp > 9.99 and not req.usable(obs.observed_since, 10.01)  # one camera frame predates the start
    for i, cam in enumerate(asm.config.cameras):
        asm.set_image_fields(cam, 10.02, rgb().tobytes(), 4, 5, "rgb8", 15)
    obs, _ = asm.assemble(10.03, "x")
    assert req.usable(obs.observed_since, 10.03)
    assert Observation(images={}, proprio=np.zeros(14), instruction="x", stamp=3.0).observed_since == 3.0


@pytest.mark.parametrize("order", [[1, 0, 2, 3, 4, 5, 6, 7, 8], list(reversed(range(9))), [4, 8, 0, 6, 2, 7, 1, 5, 3]])
def test_observation_reads_joint_states_by_name(order):
    """Reordered (and extra) joints give the same proprio as the Interbotix order; the policy needs the same
    minimum joints as the commander."""
    ref = filled().assemble(10.05, "x")[0].proprio
    asm = filled()
    for side, opened in (("left", True), ("right", False)):
        pos = js(opened)
        names = [JS_NAMES[i] for i in order] + ["camera_pan"]
        assert asm.set_joint_state(side, 10.0, names, [pos[i] for i in order] + [3.0]) is None
    obs, problems = asm.assemble(10.05, "x")
    assert problems == []
    np.testing.assert_array_equal(obs.proprio, ref)


def test_observation_missing_or_unnamed_joint_is_a_problem_naming_it():
    asm = filled()
    names = [n for n in JS_NAMES if n != "left_finger"]
    pos = [v for n, v in zip(JS_NAMES, js()) if n != "left_finger"]
    err = asm.set_joint_state("left", 10.0, names, pos)
    assert "missing required joint(s) ['left_finger']" in err
    assert asm.assemble(10.05, "x")[1] == [err]
    asm = filled()
    assert "allow_unnamed_joint_states" in asm.set_joint_state("right", 10.0, [], js())
    from cosmos_policy_ros.core.robot import JointNameMap
    asm = ObservationAssembler(ObservationConfig(expected_size=(4, 5)), gripper_convention("aloha2"),
                               JointNameMap(allow_unnamed=True))
    assert asm.set_joint_state("right", 10.0, [], js()) is None
