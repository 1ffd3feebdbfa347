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
