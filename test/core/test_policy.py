"""CosmosPolicy end to end on a tiny random model of the real classes (CPU)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core import images as img_mod
from cosmos_policy_ros.core.policy import ObservationError
from cosmos_policy_ros.core.sampler import SamplerConfig
from cosmos_policy_ros.core.types import PolicyBackend, PolicyOutput


def test_infer_returns_a_checked_chunk(tiny_policy, observation):
    p = tiny_policy
    assert isinstance(p, PolicyBackend)
    assert (p.horizon, p.action_dim, p.period) == (50, 14, 0.04)
    out = p.infer(observation)
    assert isinstance(out, PolicyOutput) and out.seed == 195
    assert out.actions.shape == (50, 14) and out.actions.dtype == np.float32
    assert np.all(np.isfinite(out.actions))
    st = p.stats
    assert np.all(out.actions >= st.actions_min.astype(np.float32)) and np.all(out.actions <= st.actions_max.astype(np.float32))
    assert isinstance(out.clipped, bool)
    assert out.future_proprio.shape == (14,) and np.all(np.isfinite(out.future_proprio))
    assert 0.0 <= out.value <= 1.0
    assert set(out.future_images) == set(p.layout.cameras)
    for im in out.future_images.values():
        assert im.shape == (64, 64, 3) and im.dtype == np.uint8
    for key in ("preprocess", "encode", "denoise", "decode", "total"):
        assert out.timings[key] >= 0
    assert out.timings["network_calls"] == 10


def test_seeds_determinism_and_batched_equals_single(tiny_policy, observation):
    p = tiny_policy
    a = p.infer(observation, seed=7)
    b = p.infer(observation, seed=7)
    c = p.infer_batch(observation, [8], decode_images=False)[0]
    assert np.array_equal(a.actions, b.actions) and a.value == b.value
    for cam in a.future_images:
        assert np.array_equal(a.future_images[cam], b.future_images[cam])
    assert not np.array_equal(a.actions, c.actions)
    batch = p.infer_batch(observation, [7, 8])
    assert [o.seed for o in batch] == [7, 8]
    for single, batched in ((a, batch[0]), (c, batch[1])):
        np.testing.assert_allclose(batched.actions, single.actions, atol=1e-5)
        np.testing.assert_allclose(batched.future_proprio, single.future_proprio, atol=1e-5)
        assert abs(batched.value - single.value) < 1e-5
        for cam in single.future_images:  # uint8 after decoding: allow one level of rounding
            assert np.abs(batched.future_images[cam].astype(int) - single.future_images[cam].astype(int)).max() <= 1


def test_cancel_stops_an_inference_between_network_calls(tiny_policy, observation):
    """cancel() is polled before every network call: True stops the sample with InferenceCancelled (the
    policy node's way to drop a chunk the commander would refuse); False changes nothing."""
    from cosmos_policy_ros.core import InferenceCancelled

    p = tiny_policy
    polls = []

    def after(n):
        def cancel():
            polls.append(len(polls))
            return len(polls) > n
        return cancel
    plain = p.infer(observation, seed=7, decode_images=False)
    kept = p.infer(observation, seed=7, decode_images=False, cancel=lambda: False)
    np.testing.assert_array_equal(kept.actions, plain.actions)
    calls = int(plain.timings["network_calls"])
    assert calls >= 2
    with pytest.raises(InferenceCancelled):
        p.infer(observation, seed=7, cancel=after(1))
    assert len(polls) == 2  # stopped at the second call, not after the whole sample
    polls.clear()
    with pytest.raises(InferenceCancelled):  # the last poll comes before decoding the future images
        p.infer(observation, seed=7, decode_images=True, cancel=after(calls))
    assert len(polls) == calls + 1
    assert getattr(p, "supports_cancel", False)


def test_deferred_decode_gives_the_same_images_once_asked(tiny_policy, observation):
    """decode_images="deferred": the chunk, value and future proprio come out without the future images (the
    policy node sends the chunk first); decode_future() then gives the images an eager decode gives, per sample."""
    p = tiny_policy
    eager = p.infer_batch(observation, [7, 8])
    later = p.infer_batch(observation, [7, 8], decode_images="deferred")
    for e, d in zip(eager, later):
        assert d.future_images == {} and d.future_images_pending
        np.testing.assert_array_equal(d.actions, e.actions)
        assert d.value == e.value
    second = later[1].decode_future()  # only its own row: the first stays pending
    assert later[0].future_images_pending and not later[1].future_images_pending
    assert set(second) == set(eager[1].future_images)
    for cam, im in second.items():  # decoded alone, not in a batch of 2: allow one level of rounding
        assert np.abs(im.astype(int) - eager[1].future_images[cam].astype(int)).max() <= 1
    assert later[1].timings["decode"] > 0 and later[1].decode_future() is second  # decoded once, then kept
    for cam, im in later[0].decode_future().items():
        assert np.abs(im.astype(int) - eager[0].future_images[cam].astype(int)).max() <= 1
    assert PolicyOutput(actions=eager[0].actions, future_images={"x": im}).decode_future() == {"x": im}
    with pytest.raises(ValueError, match="expected True, False or 'deferred'"):
        p.infer(observation, decode_images="later")


def test_world_model_query_keeps_the_given_actions(tiny_policy, observation):
    """The action frame is a condition: it comes out bit-identical, so the extracted chunk is the input."""
    p = tiny_policy
    st = p.stats
    rng = np.random.default_rng(3)
    given = (st.actions_min + (st.actions_max - st.actions_min) * rng.uniform(0.1, 0.9, (50, 14))).astype(np.float32)
    outs = p.infer_batch(observation, [1, 2], actions=given, start="world_model", decode_images=False)
    for o in outs:
        np.testing.assert_allclose(o.actions, given, atol=1e-5)
        assert not o.clipped and o.future_images == {}
    with pytest.raises(ValueError, match="needs the action chunk"):
        p.infer_batch(observation, [1], start="world_model")


def test_autoregressive_mode_runs_each_stage(tiny_policy, observation):
    cfg = SamplerConfig(action_steps=2, future_state_steps=3, value_steps=1, mode="autoregressive")
    out = tiny_policy.infer_batch(observation, [0], sampler=cfg, decode_images=False)[0]
    assert out.timings["network_calls"] == 6
    assert {"denoise_action", "denoise_future_state", "denoise_value"} <= set(out.timings)
    assert 0.0 <= out.value <= 1.0 and np.all(np.isfinite(out.actions))


@pytest.mark.parametrize("mutate, message", [
    (lambda o: dataclasses.replace(o, instruction="dance"), "unknown instruction 'dance'; known instructions: \\["),
    (lambda o: dataclasses.replace(o, proprio=np.zeros(13)), "proprio: expected shape \\(14,\\)"),
    (lambda o: dataclasses.replace(o, proprio=np.r_[np.zeros(13), np.nan]), "finite"),
    (lambda o: dataclasses.replace(o, images={**o.images, "cam_high": o.images["cam_high"].astype(np.float32)}),
     "camera 'cam_high': expected dtype uint8"),
    (lambda o: dataclasses.replace(o, images={**o.images, "cam_high": o.images["cam_high"][..., 0]}),
     "expected shape \\(H, W, 3\\)"),
    (lambda o: dataclasses.replace(o, images={**o.images, "cam_high": o.images["cam_high"][:8, :8]}),
     "at least 16 px"),
    (lambda o: dataclasses.replace(o, images={k: v for k, v in o.images.items() if k != "cam_left_wrist"}),
     "missing camera images \\['cam_left_wrist'\\]"),
])
def test_bad_observations_are_refused_clearly(tiny_policy, observation, mutate, message):
    with pytest.raises(ObservationError, match=message):
        tiny_policy.infer(mutate(observation))


def test_configured_input_size_is_enforced(tiny_policy, make_obs):
    p = tiny_policy
    saved = p.image
    try:
        p.image = img_mod.ImageConfig(size=64, input_size=(480, 640))
        with pytest.raises(ObservationError, match="expected size 480x640, got 120x160"):
            p.check_observation(make_obs(p))
        p.check_observation(make_obs(p, size=(480, 640)))
    finally:
        p.image = saved


def test_image_preprocessing_sizes_and_channel_order():
    cfg = img_mod.ImageConfig()
    assert cfg.crop_size == 212
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rgb = img_mod.preprocess_images([frame], cfg)
    assert rgb.shape == (1, 224, 224, 3) and rgb.dtype == np.uint8
    bgr = img_mod.preprocess_images([np.ascontiguousarray(frame[..., ::-1])], cfg, channel_order="bgr")
    assert np.array_equal(rgb, bgr)
    flat = img_mod.preprocess_images([np.full((480, 640, 3), (10, 128, 250), np.uint8)], cfg)
    assert np.all(flat[0] == np.array([10, 128, 250], np.uint8))
    # a vertical gradient keeps its direction through squash + crop (no flip, no transpose)
    grad = np.repeat(np.linspace(0, 255, 480).astype(np.uint8)[:, None, None], 640, axis=1).repeat(3, axis=2)
    out = img_mod.preprocess_images([grad], cfg)[0, :, 112, 0].astype(int)
    assert np.all(np.diff(out) >= 0) and out[0] > 5 and out[-1] < 250  # the 90% crop cut the extremes


def test_causal_prefix_encode_is_exact(tiny_policy, observation):
    """Encoding only the raw frames the sampler / decoder read gives the same latents as the reference's
    full 41-frame encode (the VAE is causal), hence identical outputs."""
    p = tiny_policy
    full = p.prepare(observation, upto=None).clean
    for upto in (4, 6):
        part = p.prepare(observation, upto=upto).clean
        assert torch.equal(part[:, :, : upto + 1], full[:, :, : upto + 1])
    # what infer encodes: the policy pass reads frames 0..4, decoding the vector frames 1, 5, 6
    assert p.encode_prefix_only
    assert p._frames_needed(p.layout.condition_indices("policy"), decode=False) == 4
    assert p._frames_needed(p.layout.condition_indices("policy"), decode=True) == 6


def test_planner_path_world_model_then_value_from_its_latents(tiny_policy, observation):
    """Planning building blocks: encode once, a world-model sample for a given chunk, then value samples
    conditioned on that sample's future state (10 conditioning frames), all batched."""
    p = tiny_policy
    prep = p.prepare(observation)
    chunk = np.tile((p.stats.actions_min + p.stats.actions_max) / 2, (50, 1))
    wm_cfg = SamplerConfig(mode="autoregressive", future_state_steps=2, value_steps=1)
    outs, lat = p.sample(prep, [0, 1], actions=chunk, start="world_model", sampler=wm_cfg, decode_images=False)
    assert lat.shape == (2, 16, 11, 8, 8) and outs[0].timings["network_calls"] == 3
    v_outs, v_lat = p.sample(prep, [5, 6], start="value_q", sampler=SamplerConfig(action_steps=2),
                             decode_images=False, latents=lat)
    assert torch.equal(v_lat[:, :, :10], lat[:, :, :10])  # everything but the value frame was a condition
    assert all(0.0 <= o.value <= 1.0 for o in v_outs)
    with pytest.raises(ValueError, match="needs latents"):
        p.sample(prep, [0], start="value_v")


def test_relative_action_policy_returns_absolute_targets(observation):
    """A checkpoint whose stats flag relative arm actions: the world-model query injects the given absolute
    chunk relative to the observation's proprio and reads it back as the same absolute chunk, and the
    relative setting survives save / load."""
    from cosmos_policy_ros.core.policy import load_policy, make_tiny_policy, save_policy

    p = make_tiny_policy(seed=0)
    p.stats = p.stats.with_relative_actions([i for i in range(14) if i not in (6, 13)])
    st = p.stats
    rng = np.random.default_rng(4)
    given = (st.actions_min + (st.actions_max - st.actions_min) * rng.uniform(0.1, 0.9, (50, 14))).astype(np.float32)
    out = p.infer_batch(observation, [1], actions=given, start="world_model", decode_images=False)[0]
    np.testing.assert_allclose(out.actions, given, atol=1e-5)
    # the action frame holds n(a) - n(q): shifting the proprio shifts what the network sees, not the output
    prep = p.prepare(observation)
    x = p._inject(prep, 1, given, None)
    from cosmos_policy_ros.core import codec
    seen = codec.extract(x[:, :, p.layout.action_index], 700)[0].numpy().reshape(50, 14)
    np.testing.assert_allclose(seen, codec.normalize_actions(given, st, proprio=observation.proprio), atol=1e-6)
    assert not np.allclose(seen, codec.normalize_actions(given, st.with_relative_actions([])), atol=1e-3)
    policy_out = p.infer(observation, seed=3)
    assert policy_out.actions.shape == (50, 14) and np.all(np.isfinite(policy_out.actions))
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        save_policy(p, d)
        q = load_policy(d, decode_future_images=False)
    assert q.stats.relative_actions.tolist() == st.relative_actions.tolist()
    np.testing.assert_allclose(q.infer(observation, seed=3).actions, policy_out.actions, atol=1e-5)


def test_camera_roi_cuts_the_same_box_at_any_resolution():
    """A camera's ROI (fractions of the frame) is cut before the resize, for that camera only, and names the
    same part of the scene on a 240x320 demo frame and a 480x640 wire frame."""
    cfg = img_mod.ImageConfig(squash_size=64, size=64, crop_area=1.0, rois={"cam_high": (0.25, 0.5, 0.5, 0.25)})
    assert cfg.roi_pixels("cam_high", 480, 640) == (120, 320, 240, 160)
    assert cfg.roi_pixels("cam_high", 240, 320) == (60, 160, 120, 80)
    assert cfg.roi_pixels("cam_left_wrist", 480, 640) is None
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[120:360, 320:480] = (200, 10, 10)  # exactly the ROI is red
    half = np.ascontiguousarray(frame[::2, ::2])
    for f in (frame, half):
        high, wrist = img_mod.preprocess_images([f, f], cfg, cameras=["cam_high", "cam_left_wrist"])
        assert np.all(high == np.array([200, 10, 10], np.uint8))  # only the box, scaled to the model size
        assert 0 < wrist[..., 0].mean() < 200  # the wrist camera sees the whole frame
    with pytest.raises(ValueError, match="top \\+ height <= 1"):
        img_mod.ImageConfig(rois={"cam_high": (0.6, 0.0, 0.5, 1.0)})
    with pytest.raises(ValueError, match="expected \\(top, left, height, width\\)"):
        img_mod.ImageConfig(rois={"cam_high": (0.1, 0.1, 0.5)})


def test_policy_applies_and_saves_its_camera_roi(tiny_policy, make_obs, tmp_path):
    """The ROI travels with the checkpoint and the policy cuts it from the named camera's frame only."""
    from cosmos_policy_ros.core.policy import load_policy, save_policy

    p = tiny_policy
    saved = p.image
    try:
        p.image = dataclasses.replace(saved, rois={"cam_high": (0.5, 0.5, 0.5, 0.5)})
        obs = make_obs(p, size=(120, 160))
        # changing pixels outside cam_high's ROI must not change the model input; inside it must
        outside, inside = (make_obs(p, size=(120, 160)) for _ in range(2))
        outside.images["cam_high"][:60] = 0
        inside.images["cam_high"][60:, 80:] = 0
        base = p.prepare(obs).clean
        assert torch.equal(p.prepare(outside).clean, base)
        assert not torch.equal(p.prepare(inside).clean, base)
        d = save_policy(p, tmp_path / "roi")
        loaded = load_policy(d)
        assert loaded.image.rois == {"cam_high": (0.5, 0.5, 0.5, 0.5)}
        assert torch.equal(loaded.prepare(outside).clean, base)
    finally:
        p.image = saved
