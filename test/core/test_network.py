"""The diffusers network as we build it: sizes of the 2B config, the exactness settings, the 18-channel
input being the reference's 17 + padding-mask path, per-frame timesteps and batch consistency."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from cosmos_policy_ros.core import network


def test_2b_config_has_the_released_sizes():
    with torch.device("meta"):
        t = network.build_transformer(network.NETWORK_2B)
        v = network.build_vae(network.NETWORK_2B)
    assert network.count_parameters(t) == 1_956_413_440
    assert round(network.count_parameters(v) / 1e6, 1) == 126.9
    assert tuple(t.patch_embed.proj.weight.shape) == (2048, 72)
    assert network.NETWORK_2B.latent_frame_shape == (16, 28, 28)
    eps = [m.eps for m in t.modules() if type(m).__name__ == "RMSNorm" and m.weight.shape == (128,)]
    assert len(eps) == 28 * 2 * 2 and set(eps) == {1e-6}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = network.tiny_network_config()
    return network.CosmosNetwork(cfg).eval()


def _inputs(cfg, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = 11
    x = torch.randn(b, 16, t, cfg.latent_size, cfg.latent_size, generator=g)
    c_noise = torch.rand(b, t, generator=g)
    cond = torch.zeros(b, t, dtype=torch.bool)
    cond[:, :5] = True
    text = torch.randn(b, cfg.text_len, cfg.text_embed_dim, generator=g)
    return x, c_noise, cond, text


def test_forward_assembles_the_18_channel_input_with_fps_none(tiny):
    cfg = tiny.cfg
    x, c_noise, cond, text = _inputs(cfg)
    with torch.no_grad():
        out = tiny(x, c_noise, cond, text)
        mask = cond.float()[:, None, :, None, None].expand(1, 1, 11, cfg.latent_size, cfg.latent_size)
        manual = torch.cat([x, mask, torch.zeros_like(mask)], 1)
        ref = tiny.transformer(manual, c_noise[:, None, :, None, None], text, fps=None, return_dict=False)[0]
        with_fps = tiny.transformer(manual, c_noise[:, None, :, None, None], text, fps=16, return_dict=False)[0]
    assert out.shape == x.shape
    assert torch.equal(out, ref)
    assert (with_fps - ref).abs().max() > 1e-4  # fps modulation would change the answer: we never pass it


class TorchvisionTestDouble:
    """Stands in for the torchvision module diffusers imports for concat_padding_mask=True (torchvision
    cannot be installed here): nearest resize of the padding mask, the only function that path calls."""

    class InterpolationMode:
        NEAREST = "nearest"

    class functional:  # noqa: N801 (mirrors torchvision.transforms.functional)
        @staticmethod
        def resize(img, size, interpolation=None):
            return torch.nn.functional.interpolate(img[None], size=size, mode="nearest")[0] if img.ndim == 3 else \
                torch.nn.functional.interpolate(img, size=size, mode="nearest")


def test_18_channel_build_equals_reference_17_plus_padding_mask(tiny, monkeypatch):
    """Same weights in the reference configuration (in_channels 17 + concat_padding_mask) give the same
    output as our 18-channel input with a zero padding-mask channel."""
    from diffusers import CosmosTransformer3DModel
    import diffusers.models.transformers.transformer_cosmos as tc
    monkeypatch.setattr(tc, "transforms", TorchvisionTestDouble, raising=False)
    cfg = tiny.cfg
    ref = CosmosTransformer3DModel(in_channels=17, out_channels=16, num_attention_heads=cfg.num_attention_heads,
                                   attention_head_dim=cfg.attention_head_dim, num_layers=cfg.num_layers,
                                   mlp_ratio=cfg.mlp_ratio, text_embed_dim=cfg.text_embed_dim,
                                   adaln_lora_dim=cfg.adaln_lora_dim, max_size=cfg.max_size, patch_size=cfg.patch_size,
                                   rope_scale=cfg.rope_scale, concat_padding_mask=True, extra_pos_embed_type=None).eval()
    network.set_qk_norm_eps(ref, 1e-6)
    ref.load_state_dict(tiny.transformer.state_dict(), strict=True)
    x, c_noise, cond, text = _inputs(cfg)
    with torch.no_grad():
        ours = tiny(x, c_noise, cond, text)
        mask = cond.float()[:, None, :, None, None].expand(1, 1, 11, cfg.latent_size, cfg.latent_size)
        theirs = ref(x, c_noise[:, None, :, None, None], text, fps=None, condition_mask=mask,
                     padding_mask=torch.zeros(1, 1, cfg.image_size, cfg.image_size), return_dict=False)[0]
    assert torch.equal(ours, theirs)


def test_qk_eps_is_what_the_network_uses(tiny):
    cfg = tiny.cfg
    x, c_noise, cond, text = _inputs(cfg)
    with torch.no_grad():
        a = tiny(x * 1e-3, c_noise, cond, text)  # tiny activations make eps visible
        network.set_qk_norm_eps(tiny.transformer, 1e-5)
        b = tiny(x * 1e-3, c_noise, cond, text)
        network.set_qk_norm_eps(tiny.transformer, 1e-6)
    assert not torch.equal(a, b)


def test_batch_matches_single_rows(tiny):
    cfg = tiny.cfg
    x, c_noise, cond, text = _inputs(cfg, b=3, seed=1)
    with torch.no_grad():
        batched = tiny(x, c_noise, cond, text)
        singles = torch.cat([tiny(x[i:i + 1], c_noise[i:i + 1], cond[i:i + 1], text[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, singles, atol=1e-5)


def test_vae_round_trip_shapes_and_normalisation(tiny):
    video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    lat = tiny.encode(video)
    assert lat.shape == (1, 16, 3, 8, 8)
    raw_mu = tiny.vae.encode(video).latent_dist.mean
    assert torch.allclose(lat * tiny.latents_std + tiny.latents_mean, raw_mu, atol=1e-5)
    assert tiny.decode(lat[:, :, :2]).shape == (1, 3, 5, 64, 64)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="vae z_dim: expected 16, got 8"):
        network.VAEConfig(z_dim=8)
    with pytest.raises(ValueError, match="image_size: expected a multiple of 16"):
        network.tiny_network_config(image_size=72)
    with pytest.raises(ValueError, match="unknown keys"):
        network.NetworkConfig.from_dict({"bogus": 1})
    cfg = network.tiny_network_config()
    assert network.NetworkConfig.from_dict(cfg.to_dict()) == cfg


def test_latent_norm_standardises_encodes_and_inverts_on_decode(tiny):
    """A data latent norm (the sim VAE's fix) applies after the Wan statistics to every frame an encode
    returns (prefix encodes included), decode undoes it exactly, and bad statistics are refused."""
    video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    wan = tiny.encode(video)  # (1, 16, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(16, 5, 8, 8, generator=g)
    std = torch.rand(16, 5, 8, 8, generator=g) + 0.1
    try:
        tiny.set_latent_norm(mean, std)
        lat = tiny.encode(video)
        assert torch.allclose(lat, (wan - mean[None, :, :3]) / std[None, :, :3], atol=1e-5)
        assert torch.allclose(tiny.encode_wan(video), wan)
        assert torch.allclose(tiny.denormalize_latents(lat), wan, atol=1e-5)
        state = tiny.latent_norm_state()
        assert torch.equal(state["mean"], mean) and torch.equal(state["std"], std)
        with pytest.raises(ValueError, match="statistics cover 5 latent frames, got 6"):
            tiny.normalize_latents(torch.zeros(1, 16, 6, 8, 8))
        for m, s, msg in ((mean, None, "both mean and std"), (mean[:, :, :4], std[:, :, :4], "expected mean and std of shape"),
                          (mean, std * 0, "std > 0"), (mean * float("nan"), std, "finite")):
            with pytest.raises(ValueError, match=msg):
                tiny.set_latent_norm(m, s)
    finally:
        tiny.set_latent_norm(None, None)
    assert torch.equal(tiny.encode(video), wan)
    with torch.no_grad():  # decode without a norm is the plain Wan inverse
        ref = tiny.vae.decode(wan[:, :, :2] * tiny.latents_std + tiny.latents_mean).sample
    tiny.set_latent_norm(mean, std)
    try:
        assert torch.allclose(tiny.decode(tiny.normalize_latents(wan[:, :, :2])), ref, atol=1e-4)
    finally:
        tiny.set_latent_norm(None, None)


def test_learnable_position_embedding_is_built_trained_from_random_and_survives_a_checkpoint(tiny_policy, observation, tmp_path):
    """The optional learnable absolute position embedding (diffusers' extra_pos_embed_type; RoPE alone gives
    no token its position): the tables start random (zero tables would give the embedding's normalisation a 1/eps
    gradient), every token gets a unit-RMS, position-specific vector, and a checkpoint carries the setting
    and the tables so inference sees what training learnt. The released 2B config has none."""
    from cosmos_policy_ros.core.policy import load_policy, save_policy
    from cosmos_policy_training.configs import build_policy

    assert network.NETWORK_2B.extra_pos_embed is None and network.tiny_network_config().extra_pos_embed is None
    with pytest.raises(ValueError, match="extra_pos_embed: expected None or 'learnable', got 'sinusoidal'"):
        network.NetworkConfig(extra_pos_embed="sinusoidal")
    cfg = network.tiny_network_config()
    cfg.extra_pos_embed = "learnable"
    torch.manual_seed(0)
    t = network.build_transformer(cfg)
    pe = t.learnable_pos_embed
    assert all(float(tab.detach().abs().mean()) > 0.5 for tab in (pe.pos_emb_t, pe.pos_emb_h, pe.pos_emb_w))
    emb = pe(torch.zeros(1, 18, 11, cfg.latent_size, cfg.latent_size))  # (1, 11 * 4 * 4, hidden)
    assert emb.shape == (1, 11 * (cfg.latent_size // 2) ** 2, cfg.hidden_size)
    assert torch.allclose(emb.pow(2).mean(-1), torch.ones(emb.shape[1]), atol=1e-4)
    assert torch.unique(emb[0], dim=0).shape[0] == emb.shape[1]  # no two tokens share a position vector

    policy = build_policy(tiny_policy.stats, [observation.instruction], network=cfg, seed=0)
    with torch.no_grad():
        policy.network.transformer.learnable_pos_embed.pos_emb_h.mul_(3.0)  # as if trained: not the init
    d = save_policy(policy, tmp_path / "pe")
    loaded = load_policy(d)
    assert loaded.network.cfg.extra_pos_embed == "learnable"
    assert torch.equal(loaded.network.transformer.learnable_pos_embed.pos_emb_h,
                       policy.network.transformer.learnable_pos_embed.pos_emb_h)
    a, b = (q.infer_batch(observation, [3], decode_images=False)[0] for q in (policy, loaded))
    assert np.array_equal(a.actions, b.actions)
