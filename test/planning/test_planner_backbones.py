"""Best-of-N planning on the Predict2.5 backbone: the batched rectified-flow planner passes against the
one-by-one sampler, best-of-N with a tiny Predict2.5 checkpoint saved and loaded as the planner node loads one,
and real-time-chunking prefixes kept in every candidate. Real classes at tiny size (diffusers transformer with
the text projection, the VAE, diffusers' UniPC scheduler)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core import planner as P
from cosmos_policy_ros.core.rf_sampler import RFDenoiser, RFSamplerConfig, rf_initial_noise, rf_sample

from .conftest import TINY_IMAGE, make_observation


@pytest.fixture(scope="module")
def tiny25(tmp_path_factory):
    """A tiny Predict2.5 ALOHA policy written as a checkpoint (what a lab's own fine-tune is) and loaded back by
    the planner node's loader."""
    from cosmos_policy_ros.core.policy import make_tiny_policy, save_policy
    from cosmos_policy_ros.ros.planner_node import load_planning_model
    src = make_tiny_policy(4, image_size=TINY_IMAGE, backbone="predict2.5", decode_future_images=False)
    ckpt = save_policy(src, tmp_path_factory.mktemp("tiny25") / "ckpt")
    pol = load_planning_model(str(ckpt), device="cpu")
    assert pol.backbone.name == "predict2.5" and isinstance(pol.sampler, RFSamplerConfig)
    return pol


@pytest.fixture(scope="module")
def obs25(tiny25):
    return make_observation(tiny25)


@pytest.fixture(scope="module")
def prep25(tiny25, obs25):
    return P.Planner(tiny25).prepare(obs25)


def _linear_net():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 16, generator=g, dtype=torch.float64) * 0.1

    def net(x_in, t, cond):  # row-independent velocity that depends on the timestep: a stand-in for v
        return torch.einsum("bcthw,cd->bdthw", x_in, w) * (1.0 + t[:, None, :, None, None]) + 0.3 * x_in
    return net


def test_rf_mixed_steps_match_the_one_by_one_rf_sampler_row_by_row():
    net = _linear_net()
    steps = [1, 3, 5, 2, 5, 1, 4]
    cfg = RFSamplerConfig()
    clean = torch.randn(len(steps), 16, 11, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cond = torch.tensor([True] * 6 + [False] * 5)
    x_T = rf_initial_noise([np.random.RandomState(s) for s in range(len(steps))], clean.shape[1:])
    calls_seen = []
    counting = lambda x, t, m: (calls_seen.append(x.shape[0]), net(x, t, m))[1]  # noqa: E731
    out, calls = P.sample_mixed_steps_rf(counting, clean, cond, x_T, steps, cfg)
    assert calls == 5  # one batched forward per call index, not per row
    assert calls_seen == [7, 5, 4, 3, 2]  # the batch shrinks as short schedules finish
    for r, n in enumerate(steps):
        ref = rf_sample(RFDenoiser(net, clean[r:r + 1], cond), x_T[r:r + 1], n, cfg)
        torch.testing.assert_close(out[r:r + 1], ref, rtol=0, atol=1e-12)
        assert torch.equal(out[r, :, :6], clean[r, :, :6])  # conditioning frames exact
    out2, _ = P.sample_mixed_steps_rf(net, clean, cond, x_T, steps, cfg, max_batch=2)
    torch.testing.assert_close(out2, out, rtol=0, atol=1e-12)
    # the EDM grid gives other samples from the same rows: the planner must not mix the two up
    edm, _ = P.sample_mixed_steps(net, clean, cond, x_T, steps)
    assert (edm - out).abs().max() > 1e-3


def test_the_backbone_picks_the_planners_sampler(tiny25):
    from cosmos_policy_ros.core.policy import make_tiny_policy
    from cosmos_policy_ros.core.sampler import SamplerConfig
    assert P.Planner(tiny25).sampling is P.MIXED_STEP_SAMPLERS[RFSamplerConfig]
    p2 = make_tiny_policy(0, image_size=TINY_IMAGE, decode_future_images=False)
    assert P.Planner(p2).sampling is P.MIXED_STEP_SAMPLERS[SamplerConfig]
    # a planning model carrying the other backbone's sampler settings is refused, not scored at wrong noise levels
    p2.sampler = RFSamplerConfig()
    with pytest.raises(ValueError, match="backbone 'predict2' samples with SamplerConfig, got RFSamplerConfig"):
        P.Planner(p2)


def test_predict25_best_of_n_scores_every_candidate(tiny25, obs25):
    planner = P.Planner(tiny25, P.PlannerConfig(future_state_steps=(1, 3), value_steps=(1, 2, 3),
                                                decode_future_images="none"))
    chosen, res, outs = P.plan(tiny25, planner, obs25, num_candidates=4, base_seed=195)
    assert res.candidate_seeds == [195, 196, 197, 198] and [o.seed for o in outs] == res.candidate_seeds
    assert res.scores.shape == (4,) and res.values.shape == (4, 2, 3)
    assert np.all((res.values >= 0) & (res.values <= 1)) and np.all(np.isfinite(res.scores))
    np.testing.assert_allclose(res.scores, P.aggregate(res.values.reshape(4, 6), "majority_mean"))
    assert res.chosen == P.select_candidate(res.scores) and chosen is outs[res.chosen]
    assert res.calls == {"world_model": 3, "value": 3}
    assert res.future_proprio.shape == (4, 2, 14) and np.all(np.isfinite(res.future_proprio))
    # the candidates differ, and so do their samples (the value head sees each candidate's own action)
    assert not np.allclose(outs[0].actions, outs[1].actions)
    assert not np.allclose(res.values[0], res.values[1])


def test_predict25_batched_planning_equals_per_candidate_planning(tiny25, obs25, prep25):
    cfg = P.PlannerConfig(future_state_steps=(1, 3), value_steps=(1, 2), decode_future_images="none",
                          score="value_q")
    planner = P.Planner(tiny25, cfg)
    st = tiny25.stats
    rng = np.random.default_rng(5)
    cands = st.actions_min + (st.actions_max - st.actions_min) * rng.uniform(0.05, 0.95, (3, 50, 14))
    seeds = [195, 196, 197]
    batched = planner.score(obs25, cands, seeds, prepared=prep25)
    assert batched.values.shape == (3, 2, 2) and batched.calls == {"world_model": 3, "value": 2}
    for i in range(3):
        alone = planner.score(obs25, cands[i:i + 1], seeds[i:i + 1], prepared=prep25)
        np.testing.assert_allclose(alone.values[0], batched.values[i], atol=1e-5)
        np.testing.assert_allclose(alone.scores[0], batched.scores[i], atol=1e-5)
        np.testing.assert_allclose(alone.future_proprio[0], batched.future_proprio[i], atol=1e-4)
    # micro-batched network calls (max_batch) give the same scores
    small = P.Planner(tiny25, P.PlannerConfig(**{**cfg.to_dict(), "max_batch": 2}))
    np.testing.assert_allclose(small.score(obs25, cands, seeds, prepared=prep25).values, batched.values, atol=1e-5)


def test_predict25_rtc_prefix_is_kept_exactly_in_every_candidate(tiny25, obs25):
    from cosmos_policy_ros.core.rtc import ChunkPrefix
    planner = P.Planner(tiny25, P.PlannerConfig(future_state_steps=(1,), value_steps=(1, 2),
                                                decode_future_images="none"))
    target = tiny25.infer(obs25, seed=1, decode_images=False).actions.astype(np.float64)[::-1].copy()
    for method in ("replace", "guided"):
        chosen, res, outs = P.plan(tiny25, planner, obs25, num_candidates=3, base_seed=10,
                                   prefix=ChunkPrefix(target, frozen=6, method=method))
        assert len(outs) == 3 and res.scores.shape == (3,)
        for o in outs:
            np.testing.assert_array_equal(o.actions[:6], target[:6].astype(np.float32))
            assert np.all(np.isfinite(o.actions))
        np.testing.assert_array_equal(chosen.actions[:6], target[:6].astype(np.float32))
        assert not np.allclose(outs[0].actions[6:], outs[1].actions[6:])  # the rest is still each seed's own
    # the local best-of-N backend passes the prefix on to every candidate as well
    backend = P.LocalPlanningBackend(tiny25, planner, num_candidates=2)
    out = backend.infer(obs25, seed=20, prefix=ChunkPrefix(target, frozen=6))
    np.testing.assert_array_equal(out.actions[:6], target[:6].astype(np.float32))
    assert backend.last_result.scores.shape == (2,)
