"""Layout, codec and sampler: the numbers of the facts sheet, exact round trips, determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core import codec, layout, sampler

FACTS_SIGMAS_10 = [80, 60.70, 45.53, 33.73, 24.66, 17.77, 12.60, 8.77, 5.99, 4.0]


# ---- layout ----------------------------------------------------------------------------------------
def test_aloha_layout_matches_facts_table():
    L = layout.ALOHA
    assert L.num_frames == 11 and L.num_raw_frames == 41
    kinds = [(s.kind, s.role, s.camera) for s in L.slots]
    assert kinds == [
        ("blank", "none", None), ("proprio", "current", None),
        ("image", "current", "cam_left_wrist"), ("image", "current", "cam_right_wrist"),
        ("image", "current", "cam_high"), ("action", "none", None), ("proprio", "future", None),
        ("image", "future", "cam_left_wrist"), ("image", "future", "cam_right_wrist"),
        ("image", "future", "cam_high"), ("value", "none", None)]
    assert [L.raw_frame(k) for k in range(11)] == [0] + [(k - 1) * 4 + 1 for k in range(1, 11)]
    assert L.condition_indices("policy") == (0, 1, 2, 3, 4)
    assert L.condition_indices("world_model") == (0, 1, 2, 3, 4, 5)
    assert L.condition_indices("value_v") == (0, 6, 7, 8, 9)
    assert L.condition_indices("value_q") == tuple(range(10))
    assert L.generated_indices("policy") == (5, 6, 7, 8, 9, 10)
    assert layout.LatentLayout.from_dict(L.to_dict()) == L


def test_other_layouts_and_errors():
    assert layout.LIBERO.num_frames == 9 and layout.LIBERO.cameras == ("wrist", "primary")
    assert layout.ROBOCASA.num_frames == 11
    with pytest.raises(ValueError, match="unknown latent layout 'nope'"):
        layout.get_layout("nope")
    with pytest.raises(ValueError, match="conditioning mode"):
        layout.ALOHA.condition_indices("bogus")
    with pytest.raises(ValueError, match="blank"):
        layout.LatentLayout("x", (layout.Slot("value"),), 1, 1, 1)


# ---- codec -----------------------------------------------------------------------------------------
def _stats(dim=14):
    lo = np.linspace(-1.0, 0.0, dim)
    hi = lo + np.linspace(0.5, 2.0, dim)
    hi[3] = lo[3]  # one degenerate dimension: the guard must hold
    return codec.DatasetStats.from_dict({"actions_min": lo, "actions_max": hi, "proprio_min": lo, "proprio_max": hi,
                                         "actions_mean": (lo + hi) / 2})


def test_normalisation_guards_zero_range_and_clips():
    st = _stats()
    x = (st.proprio_min + st.proprio_max) / 2
    n = codec.normalize_proprio(x, st)
    assert np.all(np.isfinite(n)) and n[3] == 0.0
    np.testing.assert_allclose(np.delete(n, 3), 0.0, atol=1e-12)
    a, clipped = codec.unnormalize_actions(np.zeros((50, 14)), st)
    assert not clipped and np.allclose(a[0], (st.actions_min + st.actions_max) / 2)
    a, clipped = codec.unnormalize_actions(np.full((50, 14), 1.5), st)
    assert clipped and np.array_equal(a[0], st.actions_max)
    with pytest.raises(ValueError, match="missing keys"):
        codec.DatasetStats.from_dict({"actions_min": [0.0]})


@pytest.mark.parametrize("n", [700, 14, 1])
def test_inject_extract_round_trip_exact(n):
    g = torch.Generator().manual_seed(n)
    v = torch.rand(3, n, generator=g) * 2 - 1
    frame = codec.inject(v, (16, 28, 28))
    assert frame.shape == (3, 16, 28, 28)
    # row-major tiling: the first n values are the vector, then it repeats
    assert torch.equal(frame.reshape(3, -1)[:, :n], v) and torch.equal(frame.reshape(3, -1)[:, n:2 * n], v)
    back = codec.extract(frame, n).to(torch.float32)
    assert torch.equal(back, v)


def test_value_round_trip_and_unit_mapping():
    v = torch.tensor([-1.0, -0.3, 0.0, 0.77, 1.0])
    back = codec.extract_value(codec.inject_value(v, (16, 8, 8))).to(torch.float32)
    assert torch.equal(back, v)
    assert torch.allclose(codec.value_to_unit(torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0], dtype=torch.float64)),
                          torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0], dtype=torch.float64))


# ---- sampler ---------------------------------------------------------------------------------------
def test_karras_sigmas_match_facts():
    s = sampler.karras_sigmas(10)
    assert len(s) == 10
    np.testing.assert_allclose(s, FACTS_SIGMAS_10, atol=1e-2)
    assert list(sampler.karras_sigmas(1)) == [80.0]


class CountingNetTestDouble:
    """A deterministic stand-in for the network (the real one is tested in test_network/test_policy):
    any fixed nonlinear function of (x_in, c_noise) suffices to check the sampler's bookkeeping."""

    def __init__(self):
        self.calls = 0
        self.c_noise_seen = []

    def __call__(self, x_in, c_noise, cond):
        self.calls += 1
        self.c_noise_seen.append(c_noise.clone())
        return torch.tanh(x_in * 0.1) + c_noise[:, None, :, None, None]


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_n_steps_make_n_calls_and_condition_frames_bit_identical(n):
    net = CountingNetTestDouble()
    clean = torch.randn(2, 16, 11, 4, 4, dtype=torch.float32)
    cond = torch.tensor(layout.ALOHA.condition_mask("policy"))
    den = sampler.Denoiser(net, clean, cond)
    x_T = sampler.initial_noise([1, 2], clean.shape[1:])
    out = sampler.sample(den, x_T, n)
    assert net.calls == n and den.calls == n
    assert torch.equal(out[:, :, :5].to(torch.float32), clean[:, :, :5])
    # per-frame noise levels: conditioning frames at c_noise 0, generated ones at t(sigma_max) on call 1
    first = net.c_noise_seen[0]
    assert torch.all(first[:, :5] == 0)
    assert torch.allclose(first[:, 5:], torch.tensor(80.0 / 81.0, dtype=torch.float64))
    assert torch.all(torch.isfinite(out))


def test_multistep_matches_handwritten_reference():
    """The 2nd-order update written out independently for a linear 'network' with known x0."""
    target = torch.full((1, 1, 2, 1, 1), 0.3, dtype=torch.float64)
    # D(x, sigma) = 0.5 * x / (1 + sigma) + target: a smooth denoiser whose trajectory we can replay
    den = lambda x, s: 0.5 * x / (1 + s) + target  # noqa: E731
    x_T = torch.full_like(target, 80.0)
    got = sampler.sample(den, x_T, 4)
    sig = [(80 ** (1 / 7) + i / 3 * (4 ** (1 / 7) - 80 ** (1 / 7))) ** 7 for i in range(4)]
    x = x_T.clone()
    d0 = den(x, sig[0])
    x = sig[1] / sig[0] * x + (1 - sig[1] / sig[0]) * d0
    prev = d0
    for i in (1, 2):
        d = den(x, sig[i])
        h = math.log(sig[i] / sig[i + 1])
        c2 = math.log(sig[i] / sig[i - 1]) / h
        p1 = (math.exp(-h) - 1) / (-h)
        p2 = (p1 - 1) / (-h)
        b2 = p2 / c2
        x = math.exp(-h) * x + h * ((p1 - b2) * d + b2 * prev)
        prev = d
    assert torch.allclose(got, den(x, sig[3]), atol=1e-12)


def test_seeded_noise_is_per_row():
    a = sampler.initial_noise([5, 6], (2, 3))
    b = sampler.initial_noise([6], (2, 3))
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])
    assert torch.equal(sampler.initial_noise([5], (2, 3)), sampler.initial_noise([5], (2, 3)))


def test_autoregressive_plan_and_stage_calls():
    cfg = sampler.SamplerConfig(action_steps=3, future_state_steps=2, value_steps=1, mode="autoregressive")
    stages = sampler.plan_stages(layout.ALOHA, cfg)
    assert [(s.name, len(s.condition), s.steps) for s in stages] == [("action", 5, 3), ("future_state", 6, 2), ("value", 10, 1)]
    net = CountingNetTestDouble()
    clean = torch.randn(1, 16, 11, 2, 2)
    res = sampler.run_stages(net, clean, stages, [0], cfg)
    assert res.calls == {"action": 3, "future_state": 2, "value": 1} and net.calls == 6
    assert torch.equal(res.x0[:, :, :5].float(), clean[:, :, :5])
    par = sampler.plan_stages(layout.ALOHA, sampler.SamplerConfig())
    assert [(s.name, s.steps) for s in par] == [("policy", 10)]
    with pytest.raises(ValueError, match="action_steps"):
        sampler.SamplerConfig(action_steps=0)


def test_relative_actions_round_trip_and_are_measured_from_the_current_proprio():
    """Flagged dimensions: model value n(a) - n(q); the output transform adds n(q) back (exactly), the flags
    travel in the stats JSON, and a relative policy refuses to run without the proprio."""
    st = _stats()
    arms = [i for i in range(14) if i not in (6, 13)]
    rel = codec.DatasetStats.from_dict(st.with_relative_actions(arms).to_dict())  # through the JSON form
    assert rel.relative_actions.tolist() == [i in arms for i in range(14)]
    assert not st.relative_actions.any()  # NVIDIA statistics: all absolute
    rng = np.random.default_rng(0)
    q = rng.uniform(rel.actions_min, rel.actions_max)
    chunk = np.repeat(q[None], 50, axis=0)  # holding still at q
    chunk[:, 6] = chunk[:, 13] = rel.actions_max[6]
    m = codec.normalize_actions(chunk, rel, proprio=q)
    np.testing.assert_allclose(m[:, arms], 0.0, atol=1e-12)  # "stay where you are" is zero on relative dims
    np.testing.assert_allclose(m[:, [6, 13]], codec.normalize_actions(chunk, st)[:, [6, 13]])  # grippers absolute
    back, clipped = codec.unnormalize_actions(m, rel, proprio=q)
    np.testing.assert_allclose(back, chunk, atol=1e-12)
    assert not clipped
    # batched: one proprio per row
    qs = np.stack([q, rng.uniform(rel.actions_min, rel.actions_max)])
    mb = codec.normalize_actions(np.stack([chunk, chunk]), rel, proprio=qs)
    np.testing.assert_allclose(mb[0], m, atol=1e-12)
    np.testing.assert_allclose(codec.unnormalize_actions(mb, rel, proprio=qs)[0][1], chunk, atol=1e-12)
    with pytest.raises(ValueError, match="expected the current proprio"):
        codec.unnormalize_actions(m, rel)
    with pytest.raises(ValueError, match="flags of 0 or 1"):
        codec.DatasetStats.from_dict({**st.to_dict(), codec.RELATIVE_KEY: [2.0] * 14})


def test_gripper_snap_makes_nearly_closed_fully_closed_and_travels_in_the_stats():
    """A regressed 'closed' gripper target just above the demos' minimum snaps to it; other values and
    dimensions pass unchanged; the thresholds survive the JSON form and are validated."""
    d = _stats().to_dict()
    grippers = (6, 13)
    for k in ("actions_min", "actions_max"):
        for g in grippers:
            d[k][g] = {"actions_min": 0.0, "actions_max": 1.0}[k]  # the sim's gripper units: 0 closed .. 1 open
    st = codec.DatasetStats.from_dict(d)
    snap = codec.DatasetStats.from_dict(st.with_snap(grippers, 0.25).to_dict())
    assert codec.DatasetStats.from_dict(st.to_dict()).snap_thresholds is None  # absent: no snap
    target = (st.actions_min + st.actions_max) / 2
    for g in grippers:
        target[g] = st.actions_min[g] + 0.1  # "nearly closed"
    m = codec.normalize_actions(target[None], snap)
    out, clipped = codec.unnormalize_actions(m, snap)
    assert not clipped
    assert out[0, 6] == snap.actions_min[6] and out[0, 13] == snap.actions_min[13]
    arms = [i for i in range(14) if i not in grippers]
    np.testing.assert_allclose(out[0, arms], target[arms], atol=1e-12)
    open_ = target.copy()
    open_[6] = st.actions_min[6] + 0.3  # above the threshold: unchanged
    np.testing.assert_allclose(codec.unnormalize_actions(codec.normalize_actions(open_[None], snap), snap)[0][0, 6],
                               open_[6], atol=1e-12)
    np.testing.assert_allclose(codec.unnormalize_actions(m, st)[0][0, 6], target[6], atol=1e-12)  # no snap key
    with pytest.raises(ValueError, match="finite thresholds"):
        codec.DatasetStats.from_dict({**st.to_dict(), codec.SNAP_KEY: [0.1] * 3})


def test_chunk_smoothing_removes_per_action_noise_keeps_smooth_motion_and_travels_in_the_stats():
    """A centred moving average over each chunk: a straight-line motion passes unchanged away from the edges,
    independent per-action errors shrink, unflagged dimensions and single actions pass untouched, and the
    windows survive the JSON form and are validated."""
    st = _stats()
    sm = codec.DatasetStats.from_dict(st.with_smoothing(7, dims=range(13)).to_dict())
    assert sm.smoothing_windows.tolist() == [7] * 13 + [1]
    assert st.smoothing_windows is None
    lo, hi = sm.actions_min, sm.actions_max
    ramp = lo + np.linspace(0.2, 0.8, 50)[:, None] * (hi - lo)  # (50, 14) inside the range
    out, _ = codec.unnormalize_actions(codec.normalize_actions(ramp, sm), sm)
    np.testing.assert_allclose(out[3:-3], ramp[3:-3], atol=1e-9)  # linear motion: the interior is exact
    rng = np.random.default_rng(0)
    noisy = ramp + rng.normal(0.0, 0.02, ramp.shape) * (hi - lo)
    out, _ = codec.unnormalize_actions(codec.normalize_actions(noisy, sm), sm)
    err_before = np.abs(noisy - ramp)[:, :13].mean()
    assert np.abs(out - ramp)[:, :13].mean() < 0.6 * err_before
    np.testing.assert_allclose(out[:, 13], noisy[:, 13], atol=1e-9)  # window 1: untouched
    one, _ = codec.unnormalize_actions(codec.normalize_actions(noisy[0], sm), sm)  # no horizon axis: as is
    np.testing.assert_allclose(one, noisy[0], atol=1e-9)
    batched, _ = codec.unnormalize_actions(codec.normalize_actions(np.stack([noisy, ramp]), sm), sm)
    np.testing.assert_allclose(batched[0], out, atol=1e-12)  # per chunk, never across the batch
    with pytest.raises(ValueError, match="odd window lengths"):
        codec.DatasetStats.from_dict({**st.to_dict(), codec.SMOOTH_KEY: [4.0] * 14})
