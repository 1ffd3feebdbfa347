"""Best-of-N planner core (ROS-free): aggregation, selection, the mixed-step batched sampler and batched
scoring of candidates with a tiny random planning model of the real classes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core import planner as P
from cosmos_policy_ros.core import sampler as S


# ---- aggregation on hand-made value sets --------------------------------------------------------
def test_majority_mean_reference_rule():
    # 15 samples (3 x 5); 8 exceed 0.05 -> "at least half" -> mean of those 8
    above = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    v = np.array(above + [0.05, 0.0, 0.01, 0.02, 0.03, 0.04, 0.0])
    assert P.aggregate(v, "majority_mean") == pytest.approx(np.mean(above))
    # only 7 of 15 exceed -> 0, however large they are
    v7 = np.array([1.0] * 7 + [0.0] * 8)
    assert P.aggregate(v7, "majority_mean") == 0.0
    # exactly half of an even count is enough; the threshold is strict (0.05 itself is not above)
    assert P.aggregate(np.array([0.5, 0.7, 0.05, 0.0]), "majority_mean") == pytest.approx(0.6)
    assert P.aggregate(np.array([0.05, 0.05, 0.05, 0.9]), "majority_mean") == 0.0
    # custom threshold
    assert P.aggregate(np.array([0.3, 0.4, 0.2]), "majority_mean", threshold=0.25) == pytest.approx(0.35)


def test_mean_and_lcb_formulas_and_batch_axes():
    v = np.array([[0.2, 0.4, 0.6, 0.8], [0.5, 0.5, 0.5, 0.5]])
    np.testing.assert_allclose(P.aggregate(v, "mean"), [0.5, 0.5])
    std = np.sqrt(np.mean((v[0] - 0.5) ** 2))  # population std (ddof 0)
    np.testing.assert_allclose(P.aggregate(v, "lcb"), [0.5 - std, 0.5])
    np.testing.assert_allclose(P.aggregate(v, "lcb", beta=2.0), [0.5 - 2 * std, 0.5])
    # same mean, the candidate the ensemble agrees on wins under LCB only
    assert P.select_candidate(P.aggregate(v, "mean")) == 0
    assert P.select_candidate(P.aggregate(v, "lcb")) == 1
    # (N, K, M)-shaped sets reduce over the flattened K*M samples the same way
    vals = np.random.default_rng(0).uniform(0, 1, (4, 3, 5))
    np.testing.assert_allclose(P.aggregate(vals.reshape(4, 15), "mean"), vals.mean(axis=(1, 2)))
    # non-finite samples count as 0 instead of poisoning the score
    assert P.aggregate(np.array([np.nan, 1.0]), "mean") == 0.5
    with pytest.raises(ValueError, match="aggregation: expected one of"):
        P.aggregate(v, "median")


def test_selection_keeps_the_base_unless_strictly_better():
    assert P.select_candidate([0.5, 0.5, 0.5]) == 0
    assert P.select_candidate([0.5, 0.5000001, 0.5000001]) == 1  # ties among others: lowest index
    assert P.select_candidate([0.0, 0.0, 0.3]) == 2
    assert P.select_candidate([float("nan"), 0.1]) == 1
    assert P.select_candidate([0.2, float("nan")]) == 0
    assert P.select_candidate([0.3, 0.3, 0.3], base=2) == 2


def test_switch_margin_keeps_the_base_unless_another_is_clearly_better():
    scores = [0.50, 0.54, 0.58, 0.56]
    assert P.select_candidate(scores) == 2
    assert P.select_candidate(scores, margin=0.05) == 2  # 0.58 beats 0.50 by 0.08
    assert P.select_candidate(scores, margin=0.08) == 0  # not by more than 0.08
    assert P.select_candidate(scores, margin=0.1) == 0
    assert P.select_candidate([0.2, 0.9, 0.9], margin=0.5) == 1  # ties among others: lowest index
    assert P.select_candidate([float("nan"), 0.1], margin=0.5) == 1  # a broken base never wins
    assert P.select_candidate([0.2, float("nan")], margin=0.0) == 0
    assert P.select_candidate([0.7], margin=0.2) == 0
    with pytest.raises(ValueError, match="expected a margin >= 0, got -0.1"):
        P.select_candidate(scores, margin=-0.1)
    with pytest.raises(ValueError, match="switch_margin: expected a number in \\[0, 1\\), got 1.5"):
        P.PlannerConfig(switch_margin=1.5)
    assert P.PlannerConfig().switch_margin == 0.0


def test_config_validation_messages():
    with pytest.raises(ValueError, match="future_state_steps: expected a non-empty list of integers >= 1, got \\[0\\]"):
        P.PlannerConfig(future_state_steps=(0,))
    with pytest.raises(ValueError, match="aggregation: expected one of"):
        P.PlannerConfig(aggregation="max")
    with pytest.raises(ValueError, match="score: expected one of"):
        P.PlannerConfig(score="value")
    cfg = P.PlannerConfig()
    assert (cfg.num_future_samples, cfg.num_value_samples) == (3, 5)
    assert cfg.future_state_steps == (1, 3, 5) and cfg.value_steps == (1, 2, 3, 4, 5)


def test_derived_seeds_depend_on_identity_not_position():
    a = P.derive_seed(0, 195, 1, 2)
    assert a == P.derive_seed(0, 195, 1, 2)
    assert len({a, P.derive_seed(0, 196, 1, 2), P.derive_seed(1, 195, 1, 2), P.derive_seed(0, 195, 2, 2)}) == 4


# ---- the mixed-step sampler ----------------------------------------------------------------------
def _linear_net():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 16, generator=g, dtype=torch.float64) * 0.1

    def net(x_in, c_noise, cond):  # row-independent, depends on the noise level: a stand-in for F
        return torch.einsum("bcthw,cd->bdthw", x_in, w) * (1.0 + c_noise[:, None, :, None, None])
    return net


def test_mixed_steps_match_the_single_schedule_sampler_row_by_row():
    net = _linear_net()
    steps = [1, 3, 5, 2, 5, 1, 4]
    clean = torch.randn(len(steps), 16, 11, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cond = torch.tensor([True] * 6 + [False] * 5)
    x_T = S.initial_noise(range(len(steps)), clean.shape[1:])
    calls_seen = []
    counting = lambda x, c, m: (calls_seen.append(x.shape[0]), net(x, c, m))[1]  # noqa: E731
    out, calls = P.sample_mixed_steps(counting, clean, cond, x_T, steps)
    assert calls == 5  # one batched forward per call index, not per row
    assert calls_seen == [7, 5, 4, 3, 2]  # the batch shrinks as short schedules finish
    for r, n in enumerate(steps):
        ref = S.sample(S.Denoiser(net, clean[r:r + 1], cond), x_T[r:r + 1], n)
        torch.testing.assert_close(out[r:r + 1], ref, rtol=0, atol=1e-12)
        assert torch.equal(out[r, :, :6], clean[r, :, :6])  # conditioning frames exact
    # micro-batching (max_batch) gives the same result
    out2, _ = P.sample_mixed_steps(net, clean, cond, x_T, steps, max_batch=2)
    torch.testing.assert_close(out2, out, rtol=0, atol=1e-12)


# ---- scoring with the tiny planning model ---------------------------------------------------------
def test_batched_planning_equals_per_candidate_planning(tiny_model, observation, prepared, candidates):
    cfg = P.PlannerConfig(future_state_steps=(1, 3), value_steps=(1, 2, 3), decode_future_images="none")
    planner = P.Planner(tiny_model, cfg)
    seeds = [195, 196, 197]
    prep = prepared
    batched = planner.score(observation, candidates, seeds, prepared=prep)
    assert batched.values.shape == (3, 2, 3) and batched.scores.shape == (3,)
    assert batched.calls == {"world_model": 3, "value": 3}
    for i in range(3):
        alone = planner.score(observation, candidates[i:i + 1], seeds[i:i + 1], prepared=prep)
        np.testing.assert_allclose(alone.values[0], batched.values[i], atol=1e-5)
        np.testing.assert_allclose(alone.scores[0], batched.scores[i], atol=1e-5)
        np.testing.assert_allclose(alone.future_proprio[0], batched.future_proprio[i], atol=1e-4)
    # the order of candidates does not change a candidate's score (seeds follow the candidate)
    rev = planner.score(observation, candidates[::-1], seeds[::-1], prepared=prep)
    np.testing.assert_allclose(rev.scores[::-1], batched.scores, atol=1e-5)
    # a different planning seed gives different samples
    other = P.Planner(tiny_model, P.PlannerConfig(future_state_steps=(1, 3), value_steps=(1, 2, 3),
                                                  decode_future_images="none", seed=1))
    assert not np.allclose(other.score(observation, candidates, seeds, prepared=prep).values, batched.values)


def test_common_noise_scores_candidates_by_their_actions_not_their_seeds(tiny_model, observation, prepared,
                                                                          candidates):
    """With common noise (the default) the same chunk scores the same under any candidate seed, so the choice
    is made by the actions; with per-candidate noise the seed alone moves the score (what made the choice follow
    the candidate index)."""
    kw = dict(future_state_steps=(1, 3), value_steps=(1, 2), decode_future_images="none")
    same = np.stack([candidates[0]] * 3)
    common = P.Planner(tiny_model, P.PlannerConfig(**kw))
    assert common.config.noise == "common"
    res = common.score(observation, same, [195, 196, 197], prepared=prepared)
    np.testing.assert_array_equal(res.values[1], res.values[0])
    np.testing.assert_array_equal(res.values[2], res.values[0])
    assert res.chosen == 0  # a tie keeps the base candidate
    # different actions still get different scores, and a candidate's score ignores its batch and seed
    mixed = common.score(observation, candidates, [195, 196, 197], prepared=prepared)
    assert not np.allclose(mixed.values[0], mixed.values[1])
    alone = common.score(observation, candidates[1:2], [7], prepared=prepared)
    np.testing.assert_allclose(alone.values[0], mixed.values[1], atol=1e-5)
    per = P.Planner(tiny_model, P.PlannerConfig(noise="per_candidate", **kw))
    res_p = per.score(observation, same, [195, 196, 197], prepared=prepared)
    assert not np.allclose(res_p.values[1], res_p.values[0])
    with pytest.raises(ValueError, match="noise: expected one of"):
        P.PlannerConfig(noise="fresh")


def test_value_stage_alone_scores_given_futures_row_by_row(tiny_model, prepared, candidates):
    """values_of: the planner's value stage on futures that did not come from its world model (the real outcome of
    each candidate, bench/planning_truth.py): one row's values do not depend on the batch around it, and the same
    future scores the same in every row (common noise)."""
    planner = P.Planner(tiny_model, P.PlannerConfig(value_steps=(1, 2), decode_future_images="none"))
    futures = tiny_model._inject(prepared, 3, candidates)  # current state + each candidate's action
    v = planner.values_of(prepared, futures)
    assert v.shape == (3, 2) and np.all((v >= 0) & (v <= 1))
    np.testing.assert_allclose(planner.values_of(prepared, futures[1:2])[0], v[1], atol=1e-5)
    same = planner.values_of(prepared, futures[:1].repeat(2, 1, 1, 1, 1))
    np.testing.assert_array_equal(same[0], same[1])
    # these rows differ only in the action: V(s') regenerates the action (only the future is given), Q(s, a) reads it
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)
    q = P.Planner(tiny_model, P.PlannerConfig(value_steps=(1, 2), score="value_q", decode_future_images="none"))
    vq = q.values_of(prepared, futures)
    assert not np.allclose(vq[0], vq[1])


def test_reference_ensemble_shapes_images_and_selection(tiny_model, observation, prepared, candidates):
    planner = P.Planner(tiny_model, P.PlannerConfig())  # 3 x 5, majority mean, V(s'), first image decoded
    res = planner.score(observation, candidates[:2], [195, 196], prepared=prepared)
    assert res.values.shape == (2, 3, 5)
    assert np.all((res.values >= 0) & (res.values <= 1))
    assert res.calls == {"world_model": 5, "value": 5}
    np.testing.assert_allclose(res.scores, P.aggregate(res.values.reshape(2, 15), "majority_mean"))
    assert res.chosen == P.select_candidate(res.scores)
    # a margin above the score gap keeps candidate 0 whatever the scores
    wide = P.Planner(tiny_model, P.PlannerConfig(switch_margin=0.999, decode_future_images="none"))
    assert wide.score(observation, candidates[:2], [195, 196], prepared=prepared).chosen == 0
    assert res.future_proprio.shape == (2, 3, 14) and np.all(np.isfinite(res.future_proprio))
    assert [len(f) for f in res.future_images] == [1, 1]
    for frames in res.future_images:
        assert set(frames[0]) == set(tiny_model.layout.cameras)
        assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in frames[0].values())
    for key in ("prepare", "world_model", "value", "decode", "total"):
        assert res.timings[key] >= 0


def test_q_mode_conditions_on_state_and_action(tiny_model, observation, prepared, candidates):
    """V(s') ignores the current state and the action (they are generated); Q(s,a) sees them."""
    lay = tiny_model.layout
    assert lay.action_index not in lay.condition_indices("value_v")
    assert lay.action_index in lay.condition_indices("value_q")
    kw = dict(future_state_steps=(2,), value_steps=(1, 2), decode_future_images="none")
    prep = prepared
    v = P.Planner(tiny_model, P.PlannerConfig(score="value_v", **kw)).score(observation, candidates[:2], prepared=prep)
    q = P.Planner(tiny_model, P.PlannerConfig(score="value_q", **kw)).score(observation, candidates[:2], prepared=prep)
    assert v.values.shape == q.values.shape == (2, 1, 2)
    assert not np.allclose(v.values, q.values)


def test_preprocessed_images_give_the_same_latents(tiny_model, observation, prepared):
    """A planner in another process receives model-input frames: encoding them equals the full path."""
    planner = P.Planner(tiny_model)
    small = P.model_input_images(observation.images, tiny_model.image, planner.cameras)
    assert all(im.shape == (64, 64, 3) for im in small.values())
    from dataclasses import replace
    a = prepared
    b = planner.prepare(replace(observation, images=small), preprocessed=True)
    torch.testing.assert_close(a.clean, b.clean)
    np.testing.assert_array_equal(a.proprio_norm, b.proprio_norm)
    with pytest.raises(ValueError, match="expected a preprocessed 64x64 uint8 frame"):
        planner.prepare(observation, preprocessed=True)


def test_bad_candidates_are_rejected(tiny_model, observation, prepared, candidates):
    planner = P.Planner(tiny_model, P.PlannerConfig(decode_future_images="none"))
    with pytest.raises(ValueError, match="actions: expected \\(N, 50, 14\\)"):
        planner.score(observation, candidates[0], prepared=prepared)
    bad = candidates.copy()
    bad[1, 3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        planner.score(observation, bad, prepared=prepared)


def test_local_planning_backend_returns_the_chosen_candidate(tiny_model, observation):
    from cosmos_policy_ros.core.types import PolicyBackend
    planner = P.Planner(tiny_model, P.PlannerConfig(future_state_steps=(1,), value_steps=(1, 2),
                                                    decode_future_images="none"))
    backend = P.LocalPlanningBackend(tiny_model, planner, num_candidates=3)
    assert isinstance(backend, PolicyBackend)
    out = backend.infer(observation, seed=10)
    res = backend.last_result
    assert res.candidate_seeds == [10, 11, 12]
    assert out.seed == 10 + res.chosen
    assert out.actions.shape == (50, 14) and "planning" in out.timings


def test_planning_window_validates_and_says_why_a_decision_is_not_planned():
    assert P.PlanWindow.parse([]) is None and P.PlanWindow.parse(None) is None
    w = P.PlanWindow.parse([1, 3])
    assert w.to_list() == [1.0, 3.0]
    for bad in ([3.0, 1.0], [-1.0, 1.0], [1.0, float("inf")], [1.0, 1.0]):
        with pytest.raises(ValueError, match="0 <= start < end"):
            P.PlanWindow.parse(bad)
    with pytest.raises(ValueError, match=r"expected \[start, end\] seconds or \[\]"):
        P.PlanWindow.parse([1.0, 2.0, 3.0])
    assert w.skip_reason(12.0, None) == "no episode start known"
    assert w.skip_reason(10.0 + 1.0, 10.0) is None and w.skip_reason(10.0 + 2.99, 10.0) is None
    assert "0.50 s into the episode, outside the planning window [1, 3) s" in w.skip_reason(10.5, 10.0)
    assert w.skip_reason(13.0, 10.0) is not None  # the end is not part of the window


def test_local_planning_backend_plans_only_inside_its_window(tiny_model, observation):
    from dataclasses import replace

    planner = P.Planner(tiny_model, P.PlannerConfig(future_state_steps=(1,), value_steps=(1,),
                                                    decode_future_images="none"))
    backend = P.LocalPlanningBackend(tiny_model, planner, num_candidates=3, window=P.PlanWindow(1.0, 3.0))
    at = lambda t: replace(observation, stamp=t)  # noqa: E731
    base = tiny_model.infer(at(100.5), seed=10)
    out = backend.infer(at(100.5), seed=10)  # no episode start yet: the base policy's own chunk
    assert backend.last_result is None and backend.gate.skipped == 1 and backend.gate.last_skip_reason == "no episode start known"
    np.testing.assert_array_equal(out.actions, base.actions)
    backend.start_episode(100.0)
    out = backend.infer(at(100.5), seed=10)  # 0.5 s in: before the window
    assert backend.last_result is None and backend.gate.skipped == 2
    np.testing.assert_array_equal(out.actions, base.actions)
    out = backend.infer(at(102.0), seed=10)  # 2 s in: planned
    assert backend.last_result is not None and backend.last_result.candidate_seeds == [10, 11, 12]
    assert out.seed == 10 + backend.last_result.chosen and backend.gate.skipped == 2
    backend.infer(at(103.5), seed=10)  # past the window
    assert backend.last_result is None and backend.gate.skipped == 3


def test_planning_backends_pass_future_image_decoding_to_the_policy_inside(tiny_model, observation):
    """The policy node asks the backend it holds to decode the future images only after the chunk is out
    ("deferred"); behind a planning backend the request must reach the policy, or every chunk (and every
    candidate) waits for a decode before the robot gets it."""
    planner = P.Planner(tiny_model, P.PlannerConfig(future_state_steps=(1,), value_steps=(1,),
                                                    decode_future_images="none"))
    backend = P.LocalPlanningBackend(tiny_model, planner, num_candidates=2)
    before = tiny_model.decode_future_images
    try:
        assert hasattr(backend, "decode_future_images")  # the node's check before it sets the mode
        backend.decode_future_images = "deferred"
        assert tiny_model.decode_future_images == "deferred" and backend.decode_future_images == "deferred"
        out = backend.infer(observation, seed=4)  # a planned decision: the kept candidate decodes on demand
        assert out.future_images == {} and out.future_images_pending
        assert set(out.decode_future()) == set(tiny_model.layout.cameras)
    finally:
        tiny_model.decode_future_images = before
