"""Checkpoints: NVIDIA conversion (synthetic checkpoint with the real key names, made by inverting our
rename tables), strict checks with readable reports, safe loading, our own format, source resolution."""
from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core import checkpoint as ck
from cosmos_policy_ros.core.policy import load_policy, save_policy

INSTR = "put the candy in the bowl"


def _write_nvidia_dir(policy, d: Path, vae_format="wan", mutate_net=None, t5_payload=None) -> Path:
    """An NVIDIA-style policy directory from a tiny policy: net.* .pt, Wan tokenizer.pth, stats, T5 pickle."""
    d.mkdir(parents=True, exist_ok=True)
    net = ck.export_nvidia_transformer(policy.network.transformer.state_dict())
    # training leftovers the released files carry and the converter must drop
    net["net.accum_iteration"] = torch.tensor(5000)
    net["net.pos_embedder.seq"] = torch.arange(8.0)
    net = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in net.items()}
    if mutate_net:
        mutate_net(net)
    torch.save(net, d / "Cosmos-Policy-ALOHA-Predict2-2B.pt")
    vae_sd = policy.network.vae.state_dict()
    if vae_format == "wan":
        torch.save({ck.diffusers_vae_key_to_wan(k): v for k, v in vae_sd.items()}, d / "tokenizer.pth")
    policy.stats.save(d / "aloha_dataset_statistics.json")
    with open(d / "aloha_t5_embeddings.pkl", "wb") as f:
        pickle.dump(t5_payload if t5_payload is not None else
                    {k: v.to(torch.bfloat16) for k, v in policy.embeddings.items()}, f)
    (d / "config.json").write_text(json.dumps({"note": "NVIDIA's own config, not ours"}))
    return d


def test_rename_tables_cover_every_key_and_match_the_facts(tiny_policy):
    sd = tiny_policy.network.transformer.state_dict()
    for k in sd:
        assert ck.nvidia_key_to_diffusers(ck.diffusers_key_to_nvidia(k)) == k
    known = {
        "net.blocks.0.self_attn.q_proj.weight": "transformer_blocks.0.attn1.to_q.weight",
        "net.blocks.1.cross_attn.output_proj.weight": "transformer_blocks.1.attn2.to_out.0.weight",
        "net.blocks.0.self_attn.k_norm.weight": "transformer_blocks.0.attn1.norm_k.weight",
        "net.blocks.0.mlp.layer1.weight": "transformer_blocks.0.ff.net.0.proj.weight",
        "net.blocks.0.mlp.layer2.weight": "transformer_blocks.0.ff.net.2.weight",
        "net.blocks.0.adaln_modulation_cross_attn.2.weight": "transformer_blocks.0.norm2.linear_2.weight",
        "net.x_embedder.proj.1.weight": "patch_embed.proj.weight",
        "net.t_embedder.1.linear_1.weight": "time_embed.t_embedder.linear_1.weight",
        "net.t_embedding_norm.weight": "time_embed.norm.weight",
        "net.final_layer.adaln_modulation.1.weight": "norm_out.linear_1.weight",
        "net.final_layer.linear.weight": "proj_out.weight",
    }
    for src, dst in known.items():
        assert ck.nvidia_key_to_diffusers(src) == dst
    for dropped in ("net.accum_video_sample_counter", "net.pos_embedder.seq", "net.blocks.0.self_attn.q_proj._extra_state"):
        assert ck.nvidia_key_to_diffusers(dropped) is None


def test_our_converters_agree_with_diffusers_own(tiny_policy):
    """Independent check of the key names: diffusers' single-file converters give the same result."""
    from diffusers.loaders.single_file_utils import (convert_cosmos_transformer_checkpoint_to_diffusers,
                                                     convert_wan_vae_to_diffusers)
    net = ck.export_nvidia_transformer(tiny_policy.network.transformer.state_dict())
    ours, rep = ck.convert_nvidia_transformer(net)
    assert rep.ok
    theirs = convert_cosmos_transformer_checkpoint_to_diffusers(dict(net))
    assert sorted(ours) == sorted(theirs)
    vae = tiny_policy.network.vae.state_dict()
    wan = {ck.diffusers_vae_key_to_wan(k): v for k, v in vae.items()}
    assert len(wan) == len(vae)
    ours_v, rep_v = ck.convert_wan_vae(wan)
    assert rep_v.ok and sorted(ours_v) == sorted(vae)
    assert sorted(convert_wan_vae_to_diffusers(dict(wan))) == sorted(vae)


def test_nvidia_checkpoint_converts_loads_strictly_and_is_cached(tiny_policy, observation, tmp_path):
    d = _write_nvidia_dir(tiny_policy, tmp_path / "nv")
    cache = tmp_path / "cache"
    pol = load_policy(d, image_size=64, cache_dir=cache, default_seed=195)
    assert pol.instructions == tiny_policy.instructions
    assert np.array_equal(pol.stats.actions_max, tiny_policy.stats.actions_max)
    # bf16 in the file -> float32 on CPU: same network as the original up to bf16 rounding of the weights
    ref = tiny_policy.network.transformer.state_dict()
    got = pol.network.transformer.state_dict()
    assert all(torch.equal(got[k], ref[k].to(torch.bfloat16).float()) for k in ref)
    out = pol.infer_batch(observation, [0], decode_images=False)[0]
    assert out.actions.shape == (50, 14) and np.all(np.isfinite(out.actions))
    cached = list((cache / "converted").iterdir())
    assert len(cached) == 1 and ck.is_our_format(cached[0])
    data = ck.load_checkpoint(d, image_size=64, cache_dir=cache)
    assert data.source == str(cached[0])  # second start: the converted safetensors copy


@pytest.mark.parametrize("mutate, message", [
    (lambda sd: sd.pop("net.blocks.1.mlp.layer2.weight"), "missing keys \\(1\\):\n    transformer_blocks.1.ff.net.2.weight"),
    (lambda sd: sd.__setitem__("net.final_layer.linear.weight", torch.zeros(3, 3)),
     "wrong shapes \\(1\\):\n    proj_out.weight: expected \\(64, 64\\), got \\(3, 3\\)"),
    (lambda sd: sd.__setitem__("net.blocks.0.extra_gate.weight", torch.zeros(2)),
     "unexpected keys \\(1\\):\n    net.blocks.0.extra_gate.weight"),
])
def test_corrupted_nvidia_checkpoint_is_refused_with_a_report(tiny_policy, tmp_path, mutate, message):
    d = _write_nvidia_dir(tiny_policy, tmp_path / "nv", mutate_net=mutate)
    with pytest.raises(ck.CheckpointError, match=message):
        load_policy(d, image_size=64, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "converted").exists() or not any((tmp_path / "cache" / "converted").iterdir())


class _RunsShell:
    """A pickle payload whose reduce would run a shell command (it must never run)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pt_with_code_is_not_executed(tiny_policy, tmp_path):
    marker = tmp_path / "pwned_pt"
    d = _write_nvidia_dir(tiny_policy, tmp_path / "nv",
                          mutate_net=lambda sd: sd.__setitem__("net.evil", _RunsShell(marker)))
    with pytest.raises(ck.CheckpointError, match="refused to load.*non-tensor"):
        load_policy(d, image_size=64, cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_t5_pickle_with_code_is_not_executed(tiny_policy, tmp_path):
    marker = tmp_path / "pwned_pkl"
    d = _write_nvidia_dir(tiny_policy, tmp_path / "nv", t5_payload={INSTR: _RunsShell(marker)})
    with pytest.raises(ck.CheckpointError, match="global 'posix.system' is not allowed"):
        load_policy(d, image_size=64, cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_t5_pickle_allows_tensors_only(tmp_path):
    p = tmp_path / "t5.pkl"
    emb = {INSTR: torch.randn(1, 4, 8, dtype=torch.bfloat16), "fold it": torch.randn(1, 4, 8, dtype=torch.bfloat16)}
    p.write_bytes(pickle.dumps(emb))
    got = ck.load_embeddings_pickle(p)
    assert set(got) == set(emb) and all(torch.equal(got[k], emb[k]) for k in emb)
    p.write_bytes(pickle.dumps({INSTR: np.zeros((1, 4, 8))}))
    with pytest.raises(ck.CheckpointError, match="not allowed"):
        ck.load_embeddings_pickle(p)
    p.write_bytes(pickle.dumps({INSTR: "text"}))
    with pytest.raises(ck.CheckpointError, match="expected str -> tensor"):
        ck.load_embeddings_pickle(p)


def test_our_format_round_trip(tiny_policy, observation, tmp_path):
    d = save_policy(tiny_policy, tmp_path / "ours")
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["config.json", "model.safetensors", "vae.safetensors", "dataset_statistics.json", "t5_embeddings.safetensors"])
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["format"] == "cosmos_policy_ros" and cfg["layout"]["name"] == "aloha"
    assert cfg["network"]["num_layers"] == 2 and cfg["sampler"]["action_steps"] == 10
    assert set(json.loads((d / "dataset_statistics.json").read_text())) >= {"actions_min", "proprio_max", "actions_mean"}
    loaded = load_policy(d)
    a, b = (q.infer_batch(observation, [3], decode_images=False)[0] for q in (tiny_policy, loaded))
    assert np.array_equal(a.actions, b.actions) and a.value == b.value
    assert loaded.instructions == tiny_policy.instructions and loaded.policy_id == tiny_policy.policy_id
    (d / "vae.safetensors").unlink()
    with pytest.raises(ck.CheckpointError, match="missing vae.safetensors"):
        load_policy(d)


def test_source_resolution(tmp_path):
    with pytest.raises(ck.CheckpointError, match="no such directory, and not a Hugging Face repo id"):
        ck.resolve_source(str(tmp_path / "nope" / "deeper" / "x"))
    with pytest.raises(ck.CheckpointError, match="Hugging Face download / cache lookup failed"):
        ck.resolve_source("someone/not-cached", cache_dir=str(tmp_path / "hf"), local_files_only=True)
    # a repo in the huggingface_hub cache layout resolves offline to its snapshot folder
    repo = tmp_path / "hf" / "models--someone--cached"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert ck.resolve_source("someone/cached", cache_dir=str(tmp_path / "hf"), local_files_only=True) == snap
    assert ck.resolve_source(str(tmp_path)) == tmp_path
    assert ck.is_repo_id("nvidia/Cosmos-Policy-ALOHA-Predict2-2B") and not ck.is_repo_id("a/b/c")
    with pytest.raises(ck.CheckpointError, match="neither our format"):
        ck.load_checkpoint(tmp_path / "hf")
