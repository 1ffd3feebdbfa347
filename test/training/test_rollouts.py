"""ROS-free sim rollouts recorded as training episodes, including DAgger data: the policy's observations and
outcome with the scripted expert's actions as labels (real MuJoCo sim, a tiny untrained policy)."""
from __future__ import annotations

import numpy as np
import pytest

from cosmos_policy_ros.core.policy import make_tiny_policy
from cosmos_policy_ros.sim.aloha_sim import TASK_DESCRIPTIONS, AlohaSim
from cosmos_policy_training.episodes import read_episode
from cosmos_policy_training.rollouts import expert_actions, rollout_many, run_episode

SIZE = (48, 64)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread, as the rollouts CLI uses by default: on a busy 2-core machine two threads made each
    query of the tiny policy 50x slower (0.4 s -> 21 s)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup():
    policy = make_tiny_policy(seed=0, instructions=[TASK_DESCRIPTIONS["transfer_cube"]])
    sim = AlohaSim("transfer_cube", seed=0, image_size=SIZE, cameras=policy.layout.cameras, max_steps=80,
                   render=False)
    yield policy, sim
    sim.close()


def test_expert_labels_replace_the_recorded_actions_not_the_observations(setup, tmp_path):
    policy, sim = setup
    labels = expert_actions(sim, 4)
    assert labels.shape == (40, 14)
    np.testing.assert_array_equal(labels, expert_actions(sim, 4))  # deterministic per scene
    assert np.abs(labels - expert_actions(sim, 5)).max() > 1e-3  # and the scene matters
    plain = run_episode(policy, sim, 4, image_size=SIZE, record=tmp_path / "plain.hdf5")
    dagger = run_episode(policy, sim, 4, image_size=SIZE, record=tmp_path / "dagger.hdf5", labels=labels)
    a, b = read_episode(plain.path), read_episode(dagger.path)
    np.testing.assert_array_equal(b.action, labels)
    np.testing.assert_array_equal(b.qpos, a.qpos)  # the policy's own states (same policy, same scene)
    for cam in policy.layout.cameras:
        np.testing.assert_array_equal(b.images[cam], a.images[cam])
    assert np.abs(a.action - labels).max() > 0.05  # the untrained policy is not the expert
    assert b.success == dagger.success and b.attrs["action_labels"] == "expert"
    assert a.attrs["action_labels"] == "executed"
    with pytest.raises(ValueError, match="labels: expected"):
        run_episode(policy, sim, 4, image_size=SIZE, labels=labels[:10])


@pytest.mark.parametrize("execution", ["pause", "stream"])
def test_policy_seed_is_the_sampling_seed_of_every_query(setup, tmp_path, execution):
    """``--policy-seed`` (rollout_many's policy_seed): the whole episode samples with that seed; none is the
    policy's default (the released 195)."""
    policy, _ = setup
    kw = {"execution": "stream", "delay_ticks": 2} if execution == "stream" else {}
    actions = {}
    for name, seed in (("default", None), ("195", 195), ("7", 7)):
        r = rollout_many(policy, [4], out=tmp_path / name, image_size=SIZE, max_steps=80, progress=False,
                         policy_seed=seed, **kw)[0]
        actions[name] = read_episode(r.path).action
    np.testing.assert_array_equal(actions["default"], actions["195"])
    assert np.abs(actions["7"] - actions["195"]).max() > 1e-3


def test_sample_steps_store_only_the_replanning_frames_and_change_nothing_else(setup, tmp_path):
    """DAgger files for the states the policy re-plans from: only the chosen steps (and their futures) are
    rendered and stored, the dataset samples only them, and the episode itself is the same as a full record."""
    from cosmos_policy_training.dataset import file_sample_frames

    policy, sim = setup
    full = run_episode(policy, sim, 6, image_size=SIZE, record=tmp_path / "full.hdf5")
    sparse = run_episode(policy, sim, 6, image_size=SIZE, record=tmp_path / "sparse.hdf5", sample_steps=[0, 5])
    a, b = read_episode(full.path), read_episode(sparse.path)
    assert (sparse.success, sparse.max_reward, sparse.queries) == (full.success, full.max_reward, full.queries)
    np.testing.assert_array_equal(b.qpos, a.qpos)
    np.testing.assert_array_equal(b.action, a.action)
    assert list(b.attrs["sample_steps"]) == [0, 5]
    kept = file_sample_frames(b.attrs, b.num_steps, policy.horizon)
    assert kept == sorted({0, 5, min(policy.horizon, b.num_steps - 1), min(5 + policy.horizon, b.num_steps - 1)})
    for cam in policy.layout.cameras:
        for t in range(b.num_steps):
            if t in kept:
                np.testing.assert_array_equal(b.images[cam][t], a.images[cam][t])
            else:
                assert not b.images[cam][t].any(), f"{cam} frame {t} should be black"
    assert (tmp_path / "sparse.hdf5").stat().st_size < (tmp_path / "full.hdf5").stat().st_size / 3
    # an untrained policy fails: failure_sample_steps decide what its file trains on
    assert not sparse.success
    short = run_episode(policy, sim, 6, image_size=SIZE, record=tmp_path / "short.hdf5", sample_steps=[0, 5],
                        failure_sample_steps=[0])
    trimmed = read_episode(short.path)
    assert list(trimmed.attrs["sample_steps"]) == [0]
    for cam in policy.layout.cameras:  # the dropped sample's frame is not kept either
        assert [t for t in range(trimmed.num_steps) if trimmed.images[cam][t].any()] == [0, trimmed.num_steps - 1]
    with pytest.raises(ValueError, match="subset"):
        run_episode(policy, sim, 6, image_size=SIZE, sample_steps=[0, 5], failure_sample_steps=[7])


def test_pause_ticks_hold_the_last_action_before_each_replan_outside_the_recorded_timeline(setup, tmp_path):
    """Rollouts like the ROS graph's execution:=pause: the arms hold (and settle) before every re-plan after
    the first; the held ticks are simulated but the episode's timeline and recorded steps stay the same."""
    policy, sim = setup
    plain = run_episode(policy, sim, 7, execute=20, image_size=SIZE, record=tmp_path / "plain.hdf5")
    steps_plain = sim.step_count
    paused = run_episode(policy, sim, 7, execute=20, image_size=SIZE, record=tmp_path / "paused.hdf5",
                         pause_ticks=10)
    a, b = read_episode(plain.path), read_episode(paused.path)
    assert a.num_steps == b.num_steps == 40 and paused.queries == plain.queries == 2
    assert sim.step_count == steps_plain + 2 * 10
    h = 20  # the first chunk's executed actions
    np.testing.assert_array_equal(b.qpos[:h], a.qpos[:h])  # the first chunk runs the same
    np.testing.assert_array_equal(b.action[:h], a.action[:h])
    assert np.abs(b.qpos[h] - a.qpos[h]).max() > 1e-4  # the arms moved on while holding before the re-plan
    with pytest.raises(ValueError, match="pause_ticks"):
        run_episode(policy, sim, 7, image_size=SIZE, pause_ticks=-1)


def test_observe_before_pause_plans_from_the_moving_robot_and_executes_after_the_hold(setup, tmp_path):
    """The graph's order (observe when a chunk runs out, hold while the policy thinks, then execute): the re-plan
    sees what a pause-free run sees, so it plans the same chunk, but the robot starts it from a settled pose."""
    policy, sim = setup
    plain = run_episode(policy, sim, 7, execute=20, image_size=SIZE, record=tmp_path / "plain.hdf5")
    steps_plain = sim.step_count
    graph = run_episode(policy, sim, 7, execute=20, image_size=SIZE, record=tmp_path / "graph.hdf5",
                        pause_ticks=10, observe_before_pause=True)
    a, b = read_episode(plain.path), read_episode(graph.path)
    assert sim.step_count == steps_plain + 2 * 10 and graph.queries == plain.queries == 2
    h = 20
    np.testing.assert_array_equal(b.qpos[:h + 1], a.qpos[:h + 1])  # observed before the hold: the same state
    for cam in policy.layout.cameras:
        np.testing.assert_array_equal(b.images[cam][h], a.images[cam][h])
    np.testing.assert_allclose(b.action[h:], a.action[h:])  # the same observation, the same chunk
    assert np.abs(b.qpos[h + 1] - a.qpos[h + 1]).max() > 1e-4  # but executed from where the hold left the arms


def test_streaming_with_rtc_keeps_the_executed_actions_and_removes_the_switch_jump(setup):
    """The ROS-free streaming loop (the graph's splice by observation time, simulated with an inference delay):
    with RTC every new chunk starts with exactly the actions the robot executed meanwhile."""
    from cosmos_policy_ros.core.rtc import RtcConfig
    from cosmos_policy_training.rollouts import run_stream_episode

    policy, sim = setup
    calls = []

    class Recording:  # the tiny policy, recording each query's prefix and chunk
        horizon, period, layout = policy.horizon, policy.period, policy.layout

        def infer(self, obs, seed=None, prefix=None):
            out = policy.infer(obs, seed=seed, **({"prefix": prefix} if prefix is not None else {}))
            calls.append((prefix, np.asarray(out.actions, dtype=np.float64)))
            return out

    executed = {}
    on_step = lambda t, a: executed.__setitem__(t, np.array(a))  # noqa: E731
    rtc = run_stream_episode(Recording(), sim, 3, delay_ticks=4, rtc=RtcConfig("replace", delay_margin=1),
                             execution_horizon=10, image_size=SIZE, on_step=on_step)
    assert rtc.queries == 4 and rtc.held_ticks == 4  # held only while the first chunk was computed
    assert calls[0][0] is None  # nothing ran before the first chunk
    for k, (prefix, actions) in enumerate(calls[1:], start=1):
        obs_t = 10 * k
        previous = calls[k - 1][1]
        assert prefix.frozen == 5  # 4 delay ticks + 1 margin
        # the target is the running chunk from the observation's tick on
        np.testing.assert_allclose(prefix.target, previous[10:], rtol=0, atol=0)
        for j in range(4):  # the delay ticks ran the previous chunk: the new one starts with exactly those
            np.testing.assert_allclose(actions[j], executed[obs_t + j], rtol=0, atol=1e-6)
        # the switch tick sends the new chunk's action 4, still frozen: the running chunk's own plan for that tick
        np.testing.assert_allclose(executed[obs_t + 4], previous[10 + 4], rtol=0, atol=1e-6)


# --- streaming DAgger: recorded episodes whose samples are the streaming observation ticks ---------------------

@pytest.fixture(scope="module")
def stream_policy():
    """The tiny policy without future-image decoding (the rollouts CLI loads policies so)."""
    return make_tiny_policy(seed=0, instructions=[TASK_DESCRIPTIONS["transfer_cube"]], decode_future_images=False)


class _Observing:
    """Wraps a policy, keeping every observation it was given (the inputs the recorded samples must hold)."""

    def __init__(self, policy):
        self.policy, self.seen = policy, []
        self.horizon, self.period, self.layout, self.policy_id = policy.horizon, policy.period, policy.layout, "obs"

    def infer(self, obs, seed=None, prefix=None):
        self.seen.append(obs)
        return self.policy.infer(obs, seed=seed, **({"prefix": prefix} if prefix is not None else {}))


def _real_frames(ep, cam):
    return [t for t in range(ep.num_steps) if ep.images[cam][t].any()]


def test_stream_recording_samples_the_observation_ticks_with_the_expert_labels(setup, stream_policy, tmp_path):
    """A streaming DAgger file: its samples are exactly the ticks the policy observed, each holding that
    observation (joint positions and frames), its actions the expert's plan on the episode's timeline, frames
    stored only where a sample or its future reads them; the dataset trains on those ticks only; and recording
    changes nothing in the episode."""
    from cosmos_policy_ros.core.images import ImageConfig
    from cosmos_policy_ros.core.rtc import RtcConfig
    from cosmos_policy_training.augment import AugmentConfig
    from cosmos_policy_training.dataset import DatasetConfig, EpisodeDataset, sample_frames
    from cosmos_policy_training.rollouts import run_stream_episode

    _, sim = setup
    labels = expert_actions(sim, 3)
    pol = _Observing(stream_policy)
    executed = []
    kw = dict(delay_ticks=4, rtc=RtcConfig("replace", delay_margin=1), execution_horizon=10, image_size=SIZE)
    r = run_stream_episode(pol, sim, 3, record=tmp_path / "s.hdf5", labels=labels,
                           on_step=lambda t, a: executed.append((t, np.array(a), sim.qpos14())), **kw)
    ep = read_episode(r.path)
    assert r.obs_ticks == [0, 10, 20, 30] and len(pol.seen) == 4
    assert list(ep.attrs["sample_steps"]) == r.obs_ticks
    assert (ep.attrs["execution"], int(ep.attrs["delay_ticks"]), ep.attrs["rtc"], ep.attrs["action_labels"]) == \
        ("stream", 4, "replace", "expert")
    assert ep.num_steps == 40 and [t for t, *_ in executed] == list(range(40))
    np.testing.assert_array_equal(ep.action, labels)  # the labels, not the executed actions
    assert np.abs(np.stack([a for _, a, _ in executed]) - labels).max() > 0.05
    np.testing.assert_array_equal(ep.qpos, np.stack([q for *_, q in executed]))  # the state at each tick
    for t, obs in zip(r.obs_ticks, pol.seen):
        np.testing.assert_array_equal(ep.qpos[t], obs.proprio)
        for cam in stream_policy.layout.cameras:
            np.testing.assert_array_equal(ep.images[cam][t], obs.images[cam])
    read = sample_frames(None, 40, stream_policy.horizon, r.obs_ticks)
    assert read == [0, 10, 20, 30, 39]
    for cam in stream_policy.layout.cameras:
        assert _real_frames(ep, cam) == read  # each sample's frame and its future (t + horizon, clipped) only
    cfg = DatasetConfig(stride=1, augment=AugmentConfig(enabled=False))
    ds = EpisodeDataset.from_paths([r.path], stream_policy.layout, ImageConfig(squash_size=64, size=64), cfg)
    assert [t for _, t in ds.index] == r.obs_ticks and ds.episodes[0].policy_only
    assert ds.sample(1).key == (0, 10)
    # the recording renders extra frames but moves nothing: the same episode unrecorded
    plain = []
    q = run_stream_episode(stream_policy, sim, 3, on_step=lambda t, a: plain.append(np.array(a)), **kw)
    np.testing.assert_array_equal(np.stack(plain), np.stack([a for _, a, _ in executed]))
    assert (q.success, q.max_reward, q.held_ticks, q.obs_ticks) == (r.success, r.max_reward, r.held_ticks, r.obs_ticks)
    with pytest.raises(ValueError, match="labels: expected"):
        run_stream_episode(stream_policy, sim, 3, 4, labels=labels[:10], image_size=SIZE)


def test_stream_recording_keeps_the_observed_state_across_holds_and_trims_failures(stream_policy, tmp_path):
    """A chunk that runs out before the next observation: the robot observes, then holds while the policy
    thinks; the held ticks are simulated but not on the timeline, and the row of the observation tick holds what
    the policy saw (before the hold). ``failure_sample_until`` keeps a failure's earlier observations only,
    and the frames only they read."""
    from cosmos_policy_training.rollouts import run_stream_episode

    policy = _Observing(stream_policy)
    sim = AlohaSim("transfer_cube", seed=0, image_size=SIZE, cameras=stream_policy.layout.cameras, max_steps=120,
                   render=False)
    try:
        executed = {}
        r = run_stream_episode(policy, sim, 8, delay_ticks=4, execution_horizon=55, image_size=SIZE,
                               record=tmp_path / "h.hdf5", failure_sample_until=50,
                               on_step=lambda t, a: executed.__setitem__(t, sim.qpos14()))
        with pytest.raises(ValueError, match="failure_sample_until"):
            run_stream_episode(stream_policy, sim, 8, delay_ticks=4, failure_sample_until=0)
    finally:
        sim.close()
    assert r.obs_ticks == [0, 50]  # the chunk (50 actions) ran out at tick 50: observed there, not at 55
    assert r.held_ticks == 4 + 4  # the first chunk's delay, then the delay after tick 50
    ep = read_episode(r.path)
    assert ep.num_steps == 60 and sorted(executed) == list(range(60))
    np.testing.assert_array_equal(ep.qpos[50], policy.seen[1].proprio)  # observed before the hold
    assert np.abs(executed[50] - ep.qpos[50]).max() > 1e-4  # the arms moved on while holding
    np.testing.assert_array_equal(ep.qpos[51:], np.stack([executed[t] for t in range(51, 60)]))
    assert not r.success and list(ep.attrs["sample_steps"]) == [0]  # the failure keeps ticks before 50
    for cam in stream_policy.layout.cameras:
        assert _real_frames(ep, cam) == [0, 50]  # sample 0 and its future; tick 50's own future (59) is black


def test_rollouts_cli_records_stream_dagger_episodes_and_leaves_pause_files_as_they_were(setup, stream_policy,
                                                                                         tmp_path, capsys):
    """`rollouts --execution stream --delay-ticks LO HI --expert-labels`: one file per seed, each with its own
    delay drawn from the seed (the same on a rerun), the stream-rtc row's RTC settings by default; the default
    execution (pause) writes the attributes it always wrote and no streaming ones."""
    import h5py

    from cosmos_policy_ros.core.policy import save_policy
    from cosmos_policy_training.rollouts import STREAM_RTC_DEFAULTS, episode_delay, main

    ckpt = tmp_path / "tiny"
    save_policy(stream_policy, ckpt)
    common = ["--policy", str(ckpt), "--seed-start", "20", "--max-steps", "80", "--expert-labels"]
    assert main(common + ["--episodes", "2", "--out", str(tmp_path / "s"), "--execution", "stream", "--delay-ticks", "3", "9",
                          "--execution-horizon", "20"]) == 0
    assert '"observations_per_episode": 2.0' in capsys.readouterr().out
    for seed in (20, 21):
        ep = read_episode(tmp_path / "s" / f"episode_{seed}.hdf5", load_images=False)
        d = int(ep.attrs["delay_ticks"])
        assert 3 <= d <= 9 and d == episode_delay(seed, (3, 9))
        assert list(ep.attrs["sample_steps"]) == [0, 20]
        assert (ep.attrs["rtc"], ep.attrs["rtc_schedule"]) == STREAM_RTC_DEFAULTS[:2]
        np.testing.assert_array_equal(ep.action, expert_actions(setup[1], seed))
    delays = {episode_delay(s, (3, 9)) for s in range(200)}
    assert delays == set(range(3, 10))  # every delay of the range occurs, none outside
    assert main(common + ["--episodes", "1", "--out", str(tmp_path / "p"), "--sample-steps", "0", "20"]) == 0
    with h5py.File(tmp_path / "p" / "episode_20.hdf5", "r") as f:  # every attribute, the writer's own too
        assert sorted(f.attrs) == ["action_labels", "action_noise", "compress", "execute", "fps", "policy_name",
                                   "sample_steps", "seed", "sim", "success", "success_score", "task_description"]
        assert int(f.attrs["execute"]) == stream_policy.horizon and f["action"].shape == (40, 14)
    for bad in (["--execution", "stream"], ["--delay-ticks", "4"], ["--execution", "stream", "--delay-ticks", "4",
                                                                    "--sample-steps", "0"],
                ["--execution", "stream", "--delay-ticks", "9", "3"]):
        with pytest.raises(SystemExit):
            main(common + ["--out", str(tmp_path / "x")] + bad)
    assert not (tmp_path / "x").exists()


def test_stream_defaults_are_the_graph_benchmarks_stream_rtc_row():
    """The streaming CLI's RTC defaults are those of the stream-rtc row the ROS graph benchmark runs, so
    streaming DAgger data is recorded the way the graph runs the policy."""
    import importlib.util
    from pathlib import Path

    from cosmos_policy_training.rollouts import STREAM_RTC_DEFAULTS

    path = Path(__file__).resolve().parents[2] / "bench" / "policy_success_ros.py"
    spec = importlib.util.spec_from_file_location("_policy_success_ros", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert tuple(STREAM_RTC_DEFAULTS) == tuple(mod.RTC_BEST)


def test_launch_files_policy_node_and_demo_stream_with_the_benchmarked_stream_rtc_row():
    """Streaming without further arguments (`ros2 launch`, the policy node alone, `make demo`) is the stream-rtc
    row of the graph benchmark, the mode that wins it with the embedded policy, and its other rows ask for their
    modes explicitly."""
    import importlib.util
    from pathlib import Path

    import yaml

    from cosmos_policy_ros import demo
    from cosmos_policy_ros.ros.policy_node import PARAMS
    from cosmos_policy_training.rollouts import STREAM_RTC_DEFAULTS

    root = Path(__file__).resolve().parents[2]
    args = yaml.safe_load((root / "config" / "graph.yaml").read_text())["arguments"]
    graph = tuple(args[k]["default"] for k in ("rtc", "rtc_schedule", "rtc_execution_horizon"))
    assert args["execution"]["default"] == "stream" and graph == tuple(STREAM_RTC_DEFAULTS)
    node = {p.name: p.default for p in PARAMS}
    assert node["execution"] == "stream"
    assert (node["rtc"], node["rtc_schedule"], node["rtc_execution_horizon"]) == tuple(STREAM_RTC_DEFAULTS)
    d = vars(demo.build_parser().parse_args([]))
    assert (d["execution"], d["rtc"], d["rtc_schedule"], d["rtc_execution_horizon"]) == ("stream", *STREAM_RTC_DEFAULTS)
    assert d["checkpoint"] is None  # the embedded checkpoint
    path = root / "bench" / "policy_success_ros.py"
    spec = importlib.util.spec_from_file_location("_policy_success_ros", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.demo_arguments("stream")[:4] == ["--execution", "stream", "--rtc", "off"]
    assert mod.demo_arguments("pause")[:4] == ["--execution", "pause", "--rtc", "off"]
    assert mod.demo_arguments("stream-rtc")[:8] == ["--execution", "stream", "--rtc", STREAM_RTC_DEFAULTS[0],
                                                    "--rtc-schedule", STREAM_RTC_DEFAULTS[1],
                                                    "--rtc-execution-horizon", str(STREAM_RTC_DEFAULTS[2])]


def test_branch_rollouts_share_the_scene_up_to_the_branching_query_then_run_each_candidate(tmp_path):
    """Best-of-N's candidates executed from one state: every branch of a scene records the same states and
    actions up to the branching step, then its own candidate (the chunk the policy's batch holds for it),
    and the branching step is the file's only training sample, with its future stored."""
    import h5py

    from cosmos_policy_training.rollouts import BranchPolicy, branch_rollouts

    policy = make_tiny_policy(seed=0, instructions=[TASK_DESCRIPTIONS["transfer_cube"]])
    res = branch_rollouts(policy, [4], tmp_path, query=1, num_candidates=3, image_size=SIZE, max_steps=240,
                          progress=False)
    assert len(res) == 3 and res[0].queries == 3  # steps 0, 50, 100 of a 120-tick episode
    eps = [read_episode(tmp_path / f"episode_4_c{i}.hdf5") for i in range(3)]
    for ep in eps[1:]:
        np.testing.assert_array_equal(ep.qpos[:51], eps[0].qpos[:51])  # the same scene up to the branch
        np.testing.assert_array_equal(ep.action[:50], eps[0].action[:50])
        assert np.abs(ep.action[50:100] - eps[0].action[50:100]).max() > 1e-4  # then another candidate
    # the branch executes exactly the candidate of the batch sampled at the branching observation
    sim = AlohaSim("transfer_cube", seed=4, image_size=SIZE, cameras=policy.layout.cameras, max_steps=240, render=False)
    try:
        sim.reset(4, render=False)
        obs = sim.policy_observation(size=SIZE)
        for a in policy.infer(obs).actions:
            for _ in range(2):
                sim.step(a, render=False)
        batch = policy.infer_batch(sim.policy_observation(size=SIZE), [195, 196, 197])
    finally:
        sim.close()
    for i, ep in enumerate(eps):
        np.testing.assert_allclose(ep.action[50:100], batch[i].actions, atol=1e-5)
        with h5py.File(tmp_path / f"episode_4_c{i}.hdf5", "r") as f:
            assert list(f.attrs["sample_steps"]) == [50] and f.attrs["branch_candidate"] == i
            assert f.attrs["branch_step"] == 50 and f.attrs["action_labels"] == "executed"
        assert ep.images["cam_high"][50].any() and ep.images["cam_high"][100].any()  # the sample and its future
        assert not ep.images["cam_high"][75].any()
    with pytest.raises(ValueError, match="num_candidates"):
        BranchPolicy(policy, 1, 3, 3)
    with pytest.raises(ValueError, match="query"):
        branch_rollouts(policy, [4], tmp_path, query=3, num_candidates=2, image_size=SIZE, max_steps=240)


def test_a_planning_window_counts_from_each_episodes_reset(setup):
    """The ROS-free loops tell a planning backend when each episode starts, so its window means the same in every
    episode: queries at ticks 0, 10, 20, 30 (0.0 / 0.4 / 0.8 / 1.2 s); the window 0.3..0.9 s plans two of them."""
    from cosmos_policy_ros.core.planner import LocalPlanningBackend, Planner, PlannerConfig, PlanWindow

    policy, sim = setup
    planner = Planner(policy, PlannerConfig(future_state_steps=(1,), value_steps=(1,), decode_future_images="none"))
    backend = LocalPlanningBackend(policy, planner, num_candidates=2, window=PlanWindow(0.3, 0.9))
    res = run_episode(backend, sim, 4, execute=10, image_size=SIZE)
    assert res.queries == 4 and backend.gate.skipped == 2
    run_episode(backend, sim, 5, execute=10, image_size=SIZE)
    assert backend.gate.skipped == 4 and backend.gate.episode_start == 0.0
