"""The sim transfer-cube recipe's `cosmos-policy train` arguments, through the real CLI and trainer (sim
preset, two tiny synthetic episodes, one step): a fresh run and a run continued with ``--init``."""
from __future__ import annotations

import argparse

import torch
from safetensors.torch import load_file

from cosmos_policy_training import cli
from cosmos_policy_training.recipes import sim_transfer_cube as recipe


def _build(argv, files):
    p = argparse.ArgumentParser()
    recipe.add_arguments(p)
    args = p.parse_args(argv)
    targv = recipe.train_argv(args, files)
    tp = argparse.ArgumentParser()
    cli.add_arguments(tp)
    trainer, dataset = cli.build_from_args(tp.parse_args(targv))
    return targv, trainer, dataset


def test_recipe_init_continues_a_recipe_checkpoint_with_its_weights_and_statistics(tiny_episodes, tmp_path):
    common = ["--steps", "1", "--batch", "2", "--warmup", "1", "--stride", "20", "--threads", "1", "--no-progress",
              "--cache-dir", str(tmp_path / "cache")]
    argv0, first, _ = _build(["--out", str(tmp_path / "o0"), "--run-dir", str(tmp_path / "r0"), *common], tiny_episodes)
    assert argv0[argv0.index("--network") + 1] == "sim" and "--init" not in argv0
    first.train()
    ckpt = tmp_path / "r0" / "final"

    argv1, cont, _ = _build(["--out", str(tmp_path / "o1"), "--run-dir", str(tmp_path / "r1"), "--init", str(ckpt),
                             "--decay-factor", "1.0", *common], tiny_episodes)
    assert "--network" not in argv1 and "--keep-checkpoint-stats" in argv1
    assert argv1[argv1.index("--decay-factor") + 1] == "1.0"
    assert cont.step == 0  # a new run (fresh optimiser and schedule), not a resume
    saved = load_file(str(ckpt / "model.safetensors"))
    state = cont.model_state()
    assert saved.keys() == state.keys()
    for k in saved:
        assert torch.equal(saved[k], state[k].cpu()), k
    cont.prepare_cache()
    cont.prepare_latent_norm()  # kept from the checkpoint, not re-measured
    assert torch.equal(cont.net.latent_norm_std, first.net.latent_norm_std)
    assert cont.dataset.stats.to_dict() == first.dataset.stats.to_dict()


def test_relabelled_episodes_are_policy_samples_with_their_own_outcome_and_the_chain_is_recorded(tiny_episodes, tmp_path):
    """DAgger files (``rollouts --expert-labels``) given as ``--extra-demos``: their futures follow the executed
    actions, not the labels, so they must never be world-model or value samples, and their value targets are
    the rollout's real outcome, not a demo's success. The checkpoint's recipe.json records the extra data and
    the recipe of the ``--init`` checkpoint."""
    import json

    from cosmos_policy_training.episodes import read_episode, write_episode

    dag = tmp_path / "dagger"
    src = read_episode(tiny_episodes[1])
    write_episode(dag / "episode_100.hdf5", src.qpos, src.action, src.images, task=src.task, success=False,
                  success_score=0.5, fps=25.0, sim=True, extra_attrs={"action_labels": "expert"})
    demos = tmp_path / "demos"
    demos.mkdir()
    for p in tiny_episodes:
        (demos / p.name).symlink_to(p)
    common = ["--demos-dir", str(demos), "--episodes", "2", "--extra-demos", str(dag), "--steps", "2", "--batch", "8",
              "--warmup", "1", "--stride", "5", "--threads", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    _, trainer, dataset = _build(["--out", str(tmp_path / "unused"), "--run-dir", str(tmp_path / "r"), *common],
                                 [*tiny_episodes, dag / "episode_100.hdf5"])
    flags = [ep.policy_only for ep in dataset.episodes]
    assert flags == [False, False, True]
    assert dataset.episodes[2].score == 0.5 and dataset.episodes[0].score == 1.0  # own outcome vs demo success
    trainer.prepare_cache()
    trainer.prepare_latent_norm()
    seen = {True: set(), False: set()}
    for step in range(12):
        idx, _ = trainer.batch_plan(step)
        *_, objectives = trainer.make_batch(step, list(range(len(idx))))
        for i, o in zip(idx, objectives):
            seen[dataset.episodes[dataset.index[i][0]].policy_only].add(o)
    assert seen[True] == {"policy"}
    assert seen[False] == {"policy", "world_model", "value"}

    assert recipe.main(["--out", str(tmp_path / "c0"), "--run-dir", str(tmp_path / "r0"), *common]) == 0
    first = json.loads((tmp_path / "c0" / "recipe.json").read_text())
    assert first["demos"]["count"] == 2 and first["extra_demos"] == {str(dag): 1} and "init_recipe" not in first
    # the recipe's default output transform (chunk smoothing over 7 actions) is in the checkpoint and in the record
    assert first["output_transforms"] == {"smoothing_window": 7, "gripper_snap_below": None}
    from cosmos_policy_ros.core.policy import load_policy

    assert load_policy(tmp_path / "c0").stats.smoothing_windows.tolist() == [7] * 14
    assert recipe.main(["--out", str(tmp_path / "c1"), "--run-dir", str(tmp_path / "r1"), "--init",
                        str(tmp_path / "c0"), *common]) == 0
    second = json.loads((tmp_path / "c1" / "recipe.json").read_text())
    assert second["init_recipe"]["command"] == first["command"]
