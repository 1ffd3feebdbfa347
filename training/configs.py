"""Network presets and building the policy a run starts from (a released / our checkpoint, or a config).

Presets: ``2b`` (the released Cosmos-Predict2-2B network at 224 px, for GPUs), ``tiny`` (tests: 2 layers,
hidden 64, 64 px) and ``sim`` (the small simulated-ALOHA model: 4 layers, hidden 128, 64 px, VAE base 4).
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

import torch

from cosmos_policy_ros.core.codec import DatasetStats
from cosmos_policy_ros.core.images import ImageConfig
from cosmos_policy_ros.core.layout import LatentLayout, get_layout
from cosmos_policy_ros.core.network import NETWORK_2B, CosmosNetwork, NetworkConfig, VAEConfig, tiny_network_config
from cosmos_policy_ros.core.policy import CosmosPolicy, load_policy
from cosmos_policy_ros.core.sampler import SamplerConfig


def sim_network_config() -> NetworkConfig:
    """The small simulated-ALOHA DiT (4 layers, hidden 128, about 1.2 M parameters) with a small Wan VAE
    (base 4 channels, 1 residual block per level) at 64 px (8x8 latents, 176 tokens). Sized for a shared
    2-core CPU: about 0.1 CPU-s to encode a sample, about 0.5 CPU-s per training step at batch 16.
    Hidden 128, not 64: a 1x2x2 patch carries 64 latent values (+2 mask channels), and the network must
    pass the noise through to predict the velocity; hidden 64 left no room beside it and learned far
    slower (measured on the overfitting setup).
    No extra position embedding: ``extra_pos_embed="learnable"`` (``NetworkConfig``) was measured
    (8,000 steps) and did not make the first chunk follow the cube (docs/sim_checkpoint_results.md)."""
    return NetworkConfig(name="sim-small", num_layers=4, num_attention_heads=4, attention_head_dim=32, mlp_ratio=4.0,
                         text_embed_dim=32, text_len=8, adaln_lora_dim=32, image_size=64,
                         vae=VAEConfig(base_dim=4, num_res_blocks=1))


PRESETS = {"2b": lambda: NetworkConfig(), "tiny": lambda: tiny_network_config(), "sim": sim_network_config}


def network_preset(name: str, backbone: str = "predict2") -> NetworkConfig:
    """A preset on ``backbone``. ``2b`` is the released network (Predict2.5: 100,352-wide Reason1 embeddings);
    the small presets on a backbone with a text projection take stand-in embeddings 4x ``text_embed_dim`` wide
    (random per task, so the width only has to be small)."""
    try:
        cfg = PRESETS[name]()
    except KeyError:
        raise ValueError(f"network preset: expected one of {sorted(PRESETS)}, got {name!r}") from None
    from cosmos_policy_ros.core.backbone import get_backbone
    from cosmos_policy_ros.core.network import network_2b
    bb = get_backbone(backbone)
    if name == "2b":
        return network_2b(bb.name)
    wide = 4 * cfg.text_embed_dim if bb.crossattn_projection else None
    return dataclasses.replace(cfg, backbone=bb.name, text_input_dim=wide)


def image_config_for(network: NetworkConfig) -> ImageConfig:
    """Inference preprocessing for a network: the reference's 256 -> 224 at 224 px; small networks squash
    straight to their size."""
    if network.image_size == 224:
        return ImageConfig()
    return ImageConfig(squash_size=network.image_size, size=network.image_size)


def stand_in_embeddings(tasks: Sequence[str], network: NetworkConfig) -> Dict[str, torch.Tensor]:
    """Fixed random (1, L, D) embeddings per task, seeded by the task text: a stand-in for T5 embeddings
    for small models trained from scratch (the T5-11B encoder does not run here). Each instruction gets a
    distinct, reproducible vector; the model only has to tell the tasks apart."""
    out = {}
    for t in tasks:
        seed = int.from_bytes(hashlib.sha1(t.encode("utf-8")).digest()[:8], "little") >> 1
        g = torch.Generator().manual_seed(seed)
        out[t] = torch.randn(1, network.text_len, network.embedding_dim, generator=g)
    return out


def load_embeddings_file(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Instruction -> (1, L, D) embeddings from a safetensors file (keys are the instructions)."""
    from safetensors.torch import load_file
    return {k: v.float() for k, v in load_file(str(path)).items()}


def build_policy(stats: DatasetStats, tasks: Sequence[str], init: Optional[str] = None,
                 network: Optional[NetworkConfig] = None, layout: Union[str, LatentLayout] = "aloha",
                 seed: int = 0, embeddings: Optional[Mapping[str, torch.Tensor]] = None,
                 keep_checkpoint_stats: bool = False, sampler: Optional[SamplerConfig] = None,
                 policy_id: Optional[str] = None, image: Optional[ImageConfig] = None) -> CosmosPolicy:
    """The starting policy of a run (float32, CPU; the trainer moves it).

    init: a checkpoint (our directory, a local NVIDIA checkpoint or a Hugging Face id, via load_policy);
    otherwise a randomly initialised network from ``network`` (seeded). The dataset ``stats`` replace the
    checkpoint's unless ``keep_checkpoint_stats``. Text embeddings: the checkpoint's, updated with
    ``embeddings``; from scratch, ``embeddings`` or :func:`stand_in_embeddings` for ``tasks``. ``image``
    replaces the image preprocessing (the training data must have been prepared with the same config).
    """
    lay = layout if isinstance(layout, LatentLayout) else get_layout(layout)
    if init is not None:
        policy = load_policy(init, device="cpu", dtype="float32", layout=lay)
        if not keep_checkpoint_stats:
            policy.stats = stats
        if embeddings:
            policy.embeddings.update({k: v.detach().cpu() for k, v in embeddings.items()})
        missing = [t for t in tasks if t not in policy.embeddings]
        if missing:
            raise ValueError(f"tasks {missing} have no text embedding in {init}; pass --embeddings FILE "
                             "(safetensors, instruction -> (1, L, D) T5 embedding)")
        if policy_id:
            policy.policy_id = policy_id
        if image is not None:
            policy.image = image
        return policy
    cfg = network or tiny_network_config()
    from cosmos_policy_ros.core.network import build_transformer, build_vae
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = build_transformer(cfg)
        torch.manual_seed(seed + 1)  # the VAE's init does not depend on the transformer's size (latent caches stay valid)
        vae = build_vae(cfg)
    net = CosmosNetwork(cfg, transformer, vae)
    emb = dict(embeddings) if embeddings else stand_in_embeddings(tasks, cfg)
    return CosmosPolicy(net, lay, stats, emb, sampler, image or image_config_for(cfg),
                        policy_id=policy_id or f"{cfg.name}-{lay.name}")
