"""Real-time chunking in the sampler: inpainting of the action frame with toy denoisers (any layout), the soft
prefix weights of the RTC paper, the run-time prefix (alignment, frozen length) and the policy's frozen actions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core import codec, sampler
from cosmos_policy_ros.core.rtc import ChunkPrefix, DelayEstimator, RtcConfig, blend_prefix, build_prefix

FRAME = (2, 8, 8)  # 128 latent values per frame: a chunk of 10 x 3 = 30 values tiles 4 4/15 times (layout-general)
H, A, T, ACT = 10, 3, 4, 2  # horizon, action dim, latent frames, action frame index
COND = torch.tensor([True, True, False, False])


def toy_net(x_in, c_noise, cond):
    """A smooth, frame-coupling toy network (differentiable: the guided method back-propagates through it)."""
    mix = x_in.mean(dim=2, keepdim=True)
    return torch.tanh(0.7 * x_in + 0.4 * mix) + 0.3 * c_noise[:, None, :, None, None]


def clean_latents(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, FRAME[0], T) + FRAME[1:], generator=g, dtype=torch.float64)


def chunk_of(x0):
    return codec.extract(x0[:, :, ACT], H * A).reshape(-1, H, A)


def inpainting(method, frozen=2, n_target=8, schedule="exp", batch=1, seed=3, target=None):
    g = torch.Generator().manual_seed(seed)
    if target is None:
        target = torch.rand((batch, H, A), generator=g, dtype=torch.float64) * 2 - 1
    w = torch.from_numpy(sampler.prefix_weights(H, frozen, n_target, schedule))[None]
    t_lat, w_lat = sampler.lift_chunk(target, w, FRAME)
    return sampler.Inpainting(ACT, t_lat, w_lat, method), target


def run(inp, seeds=(7,), steps=5, clean=None):
    cfg = sampler.SamplerConfig(action_steps=steps)
    st = [sampler.Stage("policy", (0, 1), steps)]
    clean = clean_latents(len(seeds)) if clean is None else clean
    return sampler.run_stages(toy_net, clean, st, list(seeds), cfg, inpaint=inp).x0


def test_prefix_weights_follow_the_papers_soft_mask():
    w = sampler.prefix_weights(10, 3, 7, "exp")  # H 10, d 3, execution horizon s 3 -> target steps 0..6
    c = lambda i: (7 - i) / (7 - 3 + 1)  # noqa: E731
    expect = [1, 1, 1] + [c(i) * math.expm1(c(i)) / math.expm1(1) for i in range(3, 7)] + [0, 0, 0]
    np.testing.assert_allclose(w, expect, rtol=0, atol=1e-15)
    assert np.all(np.diff(w) <= 0) and 0 < w[6] < w[3] < 1
    np.testing.assert_array_equal(sampler.prefix_weights(5, 2, 4, "zeros"), [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(sampler.prefix_weights(5, 2, 4, "ones"), [1, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="frozen <= n_target"):
        sampler.prefix_weights(5, 4, 3)


def test_lift_chunk_gives_each_latent_value_its_steps_weight():
    target = torch.arange(H * A, dtype=torch.float64).reshape(1, H, A)
    w = torch.linspace(1, 0, H, dtype=torch.float64)[None]
    t_lat, w_lat = sampler.lift_chunk(target, w, FRAME)
    f = torch.arange(int(np.prod(FRAME)))
    assert torch.equal(t_lat.flatten(), (f % (H * A)).to(torch.float64))
    assert torch.equal(w_lat.flatten(), w[0][(f % (H * A)) // A])


@pytest.mark.parametrize("method", ["replace", "guided"])
def test_frozen_prefix_is_the_target_exactly(method):
    inp, target = inpainting(method, frozen=2)
    chunk = chunk_of(run(inp))
    torch.testing.assert_close(chunk[:, :2], target[:, :2], rtol=0, atol=1e-12)
    free = chunk_of(run(None))
    assert (chunk[:, 2:] - free[:, 2:]).abs().max() > 1e-3  # the tail is the model's, pulled, not copied


@pytest.mark.parametrize("method", ["replace", "guided"])
def test_soft_ramp_makes_the_chunk_continuous_at_the_frozen_boundary(method):
    # the running chunk is the model's own plan shifted by 0.6 (another mode): a hard prefix alone jumps by about
    # the shift at step d, the soft ramp does not
    free = chunk_of(run(None))
    target = free + 0.6
    inp_exp, _ = inpainting(method, frozen=2, n_target=H, schedule="exp", target=target)
    inp_hard, _ = inpainting(method, frozen=2, n_target=H, schedule="zeros", target=target)
    jump = lambda c: float((c[:, 2] - c[:, 1] - (free[:, 2] - free[:, 1])).abs().max())  # noqa: E731
    soft, hard = chunk_of(run(inp_exp)), chunk_of(run(inp_hard))
    assert jump(soft) < 0.5 * jump(hard), (jump(soft), jump(hard))
    # and the overlap moves toward the running chunk
    err = lambda c: (c - target).abs().mean(dim=(0, 2))  # noqa: E731
    assert torch.all(err(soft)[2:8] < err(free)[2:8])


def test_off_is_bit_identical_to_the_plain_sampler():
    plain = run(None, seeds=(7, 8), clean=clean_latents(2))
    inp, _ = inpainting("off", batch=2)
    assert torch.equal(run(inp, seeds=(7, 8), clean=clean_latents(2)), plain)
    # and the plain path is the sampler's own n-call loop (no wrapper in between)
    den = sampler.Denoiser(toy_net, clean_latents(2), torch.tensor([True, True, False, False]))
    x_T = sampler.initial_noise([7, 8], clean_latents(2).shape[1:])
    assert torch.equal(sampler.sample(den, x_T, 5), plain)


@pytest.mark.parametrize("method", ["replace", "guided"])
def test_batched_candidates_equal_one_by_one_runs(method):
    inp, _ = inpainting(method, batch=1)
    clean = clean_latents(1).expand(3, -1, -1, -1, -1).clone()
    batched = run(inp, seeds=(11, 12, 13), clean=clean)
    for k, s in enumerate((11, 12, 13)):
        one = run(inp, seeds=(s,), clean=clean[k:k + 1])
        torch.testing.assert_close(batched[k:k + 1], one, rtol=0, atol=1e-12)


def test_conditioning_frames_stay_clean_under_guidance():
    inp, _ = inpainting("guided")
    clean = clean_latents(1)
    assert torch.equal(run(inp, clean=clean)[:, :, :2], clean[:, :, :2])


def test_guided_costs_one_backward_per_call_and_needs_gradients():
    inp, target = inpainting("guided")
    calls = []

    def counting(x_in, c_noise, cond):
        calls.append(torch.is_grad_enabled())
        return toy_net(x_in, c_noise, cond)

    cfg = sampler.SamplerConfig(action_steps=3)
    with torch.no_grad():
        sampler.run_stages(counting, clean_latents(1), [sampler.Stage("policy", (0, 1), 3)], [1], cfg, inpaint=inp)
    assert calls == [True, True, True]  # 3 network calls, each under autograd (its VJP is the extra cost)


def test_inpaint_x0_replace_gain_follows_sigma():
    x0, tgt = torch.zeros(3), torch.ones(3)
    w = torch.tensor([1.0, 0.5, 0.0])
    out = sampler.inpaint_x0(x0, 80.0, tgt, w, "replace", beta=5.0)
    a = 5 * 80 / (1 + 80 ** 2)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5 * a, 0.0], dtype=out.dtype))
    out = sampler.inpaint_x0(x0, 4.0, tgt, w, "replace", beta=5.0)  # gain 1 below sigma ~4.8
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5, 0.0]))


# ---- run-time prefix ----------------------------------------------------------------------------------
def test_build_prefix_aligns_the_running_chunk_to_the_new_observation_and_clamps_the_delay():
    running = np.arange(50, dtype=np.float64)[:, None].repeat(14, axis=1)
    cfg = RtcConfig(method="replace", delay_margin=2)
    p = build_prefix(running, running_stamp=10.0, obs_stamp=10.0 + 30 * 0.04, period=0.04, delay_ticks=8, cfg=cfg)
    assert p.target[0, 0] == 30 and p.target.shape == (20, 14) and p.frozen == 10
    # a delay longer than the running chunk's rest freezes only what the running chunk still executes
    p = build_prefix(running, 10.0, 10.0 + 45 * 0.04, 0.04, delay_ticks=30, cfg=cfg)
    assert p.frozen == 5 and p.target.shape[0] == 5
    assert build_prefix(running, 10.0, 10.0 + 50 * 0.04, 0.04, 8, cfg) is None  # nothing left of it
    assert build_prefix(running, 10.0, 11.0, 0.04, 8, RtcConfig(method="off")) is None
    w = p.step_weights(50)
    assert w[:5].tolist() == [1.0] * 5 and not w[5:].any()
    assert np.array_equal(p.padded_target(50)[5:], np.repeat(running[-1:], 45, axis=0))  # never zeros


def test_delay_estimator_excludes_the_warm_up_call():
    est = DelayEstimator(0.04, window=3, guess=4)
    assert est.ticks == 4
    est.record(2.0)  # warm-up: slow; stands in (freezing long is safe) until a real measurement
    assert est.ticks == 50
    est.record(0.41)
    assert est.ticks == 11
    for _ in range(3):
        est.record(0.2)
    assert est.ticks == 5  # back to normal after the window


def test_blend_prefix_freezes_and_ramps_in_action_space():
    actions = np.zeros((6, 2))
    p = ChunkPrefix(np.ones((4, 2)), frozen=2, schedule="linear")
    out = blend_prefix(actions, p)
    np.testing.assert_allclose(out[:, 0], [1, 1, 2 / 3, 1 / 3, 0, 0])


def test_policy_chunk_keeps_the_frozen_prefix_for_every_candidate(tiny_policy, observation):
    pol = tiny_policy
    base = pol.infer(observation, seed=1).actions.astype(np.float64)
    target = base[::-1].copy()  # a running chunk the model would not produce
    for method in ("replace", "guided"):
        p = ChunkPrefix(target, frozen=7, method=method)
        outs = pol.infer_batch(observation, [1, 2, 3], prefix=p)
        for o in outs:
            np.testing.assert_allclose(o.actions[:7], target[:7].astype(np.float32), rtol=0, atol=0)
            assert np.all(np.isfinite(o.actions))
        one = pol.infer(observation, seed=2, prefix=p)
        np.testing.assert_allclose(outs[1].actions, one.actions, rtol=0, atol=1e-5)


def test_running_chunk_follows_what_the_commander_really_executes():
    from cosmos_policy_ros.core.rtc import RunningChunk

    a1, a2 = np.full((50, 14), 1.0), np.full((50, 14), 2.0)
    rc = RunningChunk(0.04, refusal_grace=0.2)
    assert rc.running(now=0.0) is None  # nothing published yet
    rc.published(1, stamp=10.0, actions=a1, now=10.5)
    actions, base = rc.running(now=10.5)
    assert actions is not None and base == 10.0  # no trace yet: as stamped (the commander splices by stamp)
    # cold start: the commander re-based chunk 1 to start at its first action at t = 10.52
    rc.on_trace(1, 0, 10.52, held=False)
    rc.on_trace(1, 3, 10.64, held=False)
    assert rc.running(now=10.7)[1] == pytest.approx(10.52)
    # chunk 2 published; the trace still shows chunk 1 for a moment: chunk 2 is in flight and will be spliced in
    rc.published(2, stamp=11.0, actions=a2, now=11.4)
    actions, base = rc.running(now=11.45)
    assert actions[0, 0] == 2.0 and base == 11.0
    # much later the commander still runs chunk 1: chunk 2 was refused, chunk 1 is what runs
    rc.on_trace(1, 25, 11.52, held=False)
    actions, base = rc.running(now=11.7)
    assert actions[0, 0] == 1.0 and base == pytest.approx(10.52)
    # holding: nothing runs, nothing is frozen
    rc.on_trace(-1, -1, 11.56, held=True)
    assert rc.running(now=11.7) is None


def test_running_chunk_tells_when_the_commander_really_ends_a_chunk():
    """execution:=pause waits for the commander's chunk-end request while its trace shows the chunk still running
    (a chunk taken late on a loaded machine ends late): the end is on the commander's clock, from its trace."""
    from cosmos_policy_ros.core.rtc import RunningChunk

    rc = RunningChunk(0.04)
    rc.published(1, stamp=10.0, actions=np.zeros((50, 14)), now=10.4)
    assert rc.chunk_end(1) is None and rc.latest_tick_time is None  # not seen running yet
    rc.on_trace(-1, -1, 10.44, held=True)
    assert rc.chunk_end(1) is None and rc.latest_tick_time == pytest.approx(10.44)
    # taken 0.5 s after publication (cold start at its first action): it runs out 2 s later, not at 12.4
    rc.on_trace(1, 0, 10.9, held=False)
    assert rc.chunk_end(1) == pytest.approx(12.9)
    rc.on_trace(1, 49, 12.86, held=False)
    assert rc.chunk_end(1) == pytest.approx(12.9) and rc.latest_tick_time == pytest.approx(12.86)
    assert rc.chunk_end(2) is None
