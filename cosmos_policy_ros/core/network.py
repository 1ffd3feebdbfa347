"""The Cosmos-Predict2 DiT + Wan 2.1 VAE, built from diffusers classes with the exactness settings.

diffusers 0.42.1 ships the exact network (``CosmosTransformer3DModel``) and VAE (``AutoencoderKLWan``).
Two settings make its output identical to the reference network (facts sheet section 4; checked by
reading ``transformer_cosmos.py``: ``CosmosRotaryPosEmbed.forward`` scales the temporal positions by
``base_fps / fps`` only when fps is given, and ``Attention(qk_norm="rms_norm")`` builds ``RMSNorm`` with
eps 1e-5 whose ``forward`` reads ``self.eps`` at call time):

- ``fps=None`` on every call (the 2B model has no fps modulation of RoPE);
- per-head q/k RMSNorm eps = 1e-6, set on the modules after construction (:func:`set_qk_norm_eps`).

The reference's 17 input channels + padding mask (``concat_padding_mask=True``) would call torchvision;
instead the model is built with ``in_channels=18, concat_padding_mask=False`` and we feed
``cat([latent (16), condition_mask (1), padding_mask (1, zeros)])``: the patch embedding then has the
same (72 -> hidden) weight with the same column order, so NVIDIA weights load unchanged.

Backbones (:mod:`cosmos_policy_ros.core.backbone`): ``NetworkConfig.backbone`` names it; Predict2.5 adds
diffusers' cross-attention projection (``use_crossattn_projection``: Linear(``text_input_dim`` = 100,352 ->
``text_embed_dim`` = 1024) + GELU on the Reason1 embeddings), everything else is the same DiT.
"""
from __future__ import annotations

import os

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .backbone import DEFAULT_BACKBONE, get_backbone

#: Wan 2.1 latent normalisation (16 per-channel means / stds; the reference hard-codes the same values).
WAN_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

LATENT_CHANNELS = 16
SPATIAL_COMPRESSION = 8

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class VAEConfig:
    """AutoencoderKLWan architecture. z_dim must stay 16 (the latent layout and the DiT expect it)."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: Tuple[float, ...] = ()
    temperal_downsample: Tuple[bool, ...] = (False, True, True)

    def __post_init__(self):
        if self.z_dim != LATENT_CHANNELS:
            raise ValueError(f"vae z_dim: expected {LATENT_CHANNELS}, got {self.z_dim}")
        self.dim_mult = tuple(int(v) for v in self.dim_mult)
        self.attn_scales = tuple(float(v) for v in self.attn_scales)
        self.temperal_downsample = tuple(bool(v) for v in self.temperal_downsample)
        if len(self.dim_mult) != 4 or list(self.temperal_downsample) != [False, True, True]:
            raise ValueError("vae: expected dim_mult of 4 levels and temperal_downsample (False, True, True) "
                             f"(8x spatial, 4x temporal), got {self.dim_mult}, {self.temperal_downsample}")
        if self.base_dim < 1 or self.num_res_blocks < 1:
            raise ValueError(f"vae: expected base_dim, num_res_blocks >= 1, got {self.base_dim}, {self.num_res_blocks}")


@dataclass
class NetworkConfig:
    """Transformer + VAE + input sizes. ``image_size`` (px) sets the latent size (image_size / 8)."""

    name: str = "cosmos-predict2-2b"
    num_layers: int = 28
    num_attention_heads: int = 16
    attention_head_dim: int = 128
    mlp_ratio: float = 4.0
    text_embed_dim: int = 1024
    text_len: int = 512
    adaln_lora_dim: int = 256
    max_size: Tuple[int, int, int] = (128, 240, 240)
    patch_size: Tuple[int, int, int] = (1, 2, 2)
    rope_scale: Tuple[float, float, float] = (1.0, 3.0, 3.0)
    qk_norm_eps: float = 1e-6
    image_size: int = 224
    vae: VAEConfig = field(default_factory=VAEConfig)
    #: diffusers' ``extra_pos_embed_type``: None (the released 2B network: 3D RoPE only) or "learnable" (an
    #: absolute position embedding per latent frame / row / column, added before every block). RoPE only
    #: shapes attention scores, so without it no token's value says *where* in the image it is. Measured on the
    #: small sim network: it did not make the first chunk follow the cube (docs/sim_checkpoint_results.md).
    extra_pos_embed: Optional[str] = None
    #: which published backbone this network is (:data:`cosmos_policy_ros.core.backbone.BACKBONES`); it picks
    #: the text path here and the sampler / training objective elsewhere
    backbone: str = DEFAULT_BACKBONE
    #: width of the instruction embeddings fed in, when the backbone projects them to ``text_embed_dim``
    #: (Predict2.5: 100,352 Reason1 features -> 1024); None for backbones without a projection
    text_input_dim: Optional[int] = None

    def __post_init__(self):
        bb = get_backbone(self.backbone)  # raises "backbone: expected one of ..., got ..."
        if bb.crossattn_projection:
            self.text_input_dim = int(self.text_input_dim) if self.text_input_dim is not None else bb.text_dim
            if self.text_input_dim < 1:
                raise ValueError(f"network text_input_dim: expected >= 1, got {self.text_input_dim}")
        elif self.text_input_dim is not None and int(self.text_input_dim) != int(self.text_embed_dim):
            raise ValueError(f"network text_input_dim: backbone {self.backbone!r} has no text projection, expected "
                             f"None or text_embed_dim ({self.text_embed_dim}), got {self.text_input_dim}")
        else:
            self.text_input_dim = None
        if isinstance(self.vae, dict):
            self.vae = VAEConfig(**self.vae)
        self.max_size = tuple(int(v) for v in self.max_size)
        self.patch_size = tuple(int(v) for v in self.patch_size)
        self.rope_scale = tuple(float(v) for v in self.rope_scale)
        if self.extra_pos_embed not in (None, "learnable"):
            raise ValueError(f"extra_pos_embed: expected None or 'learnable', got {self.extra_pos_embed!r}")
        if self.patch_size[0] != 1:
            raise ValueError(f"patch_size: expected temporal patch 1 (per-frame noise levels need it), got {self.patch_size}")
        if self.image_size % (SPATIAL_COMPRESSION * self.patch_size[1]) or self.image_size % (SPATIAL_COMPRESSION * self.patch_size[2]):
            raise ValueError(f"image_size: expected a multiple of {SPATIAL_COMPRESSION * self.patch_size[1]}, got {self.image_size}")
        for name in ("num_layers", "num_attention_heads", "attention_head_dim", "text_embed_dim", "text_len", "adaln_lora_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"network {name}: expected >= 1, got {getattr(self, name)}")

    @property
    def latent_size(self) -> int:
        """Latent height = width (28 for 224 px)."""
        return self.image_size // SPATIAL_COMPRESSION

    @property
    def latent_frame_shape(self) -> Tuple[int, int, int]:
        """(C, H', W') of one latent frame: (16, 28, 28) for the 2B ALOHA model."""
        return (LATENT_CHANNELS, self.latent_size, self.latent_size)

    @property
    def embedding_dim(self) -> int:
        """Width of one instruction embedding as the policy stores and feeds it: (1, text_len, embedding_dim)."""
        return self.text_input_dim if self.text_input_dim is not None else self.text_embed_dim

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def to_dict(self) -> dict:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        d = dict(d)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"network config: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**d)


#: The released 2B Video2World network (1,956,413,440 transformer parameters) at 224 px.
NETWORK_2B = NetworkConfig()
#: The Predict2.5 2B network: the same DiT plus the 100,352 -> 1024 text projection (102.8 M more parameters).
NETWORK_2B_PREDICT2_5 = NetworkConfig(name="cosmos-predict2.5-2b", backbone="predict2.5")


def network_2b(backbone: str = DEFAULT_BACKBONE) -> NetworkConfig:
    """The released 2B network of a backbone."""
    bb = get_backbone(backbone)
    return NetworkConfig(name=f"cosmos-{bb.name}-2b", backbone=bb.name)


def tiny_network_config(image_size: int = 64, text_embed_dim: int = 32, text_len: int = 8,
                        backbone: str = DEFAULT_BACKBONE, text_input_dim: int = 96) -> NetworkConfig:
    """A CPU-sized config of the same classes: 2 layers, hidden 64, VAE base_dim 8, 64 px -> 8x8 latents.
    For a backbone with a text projection, embeddings are ``text_input_dim`` wide (a tiny stand-in for 100,352)."""
    bb = get_backbone(backbone)
    return NetworkConfig(name="tiny" if bb.name == DEFAULT_BACKBONE else f"tiny-{bb.name}", num_layers=2,
                         num_attention_heads=2, attention_head_dim=32, mlp_ratio=4.0,
                         text_embed_dim=text_embed_dim, text_len=text_len, adaln_lora_dim=16,
                         image_size=image_size, vae=VAEConfig(base_dim=8), backbone=bb.name,
                         text_input_dim=text_input_dim if bb.crossattn_projection else None)


def get_dtype(name) -> torch.dtype:
    """'float32' / 'bfloat16' / 'float16' (or a torch.dtype) -> torch.dtype."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[str(name)]
    except KeyError:
        raise ValueError(f"dtype: expected one of {sorted(_DTYPES)}, got {name!r}") from None


def set_qk_norm_eps(transformer: nn.Module, eps: float = 1e-6) -> int:
    """Set eps of every attention q/k RMSNorm (diffusers builds them with 1e-5); returns how many."""
    n = 0
    for module in transformer.modules():
        for attr in ("norm_q", "norm_k"):
            norm = getattr(module, attr, None)
            if norm is not None and hasattr(norm, "eps"):
                norm.eps = eps
                n += 1
    return n


def build_transformer(cfg: NetworkConfig):
    """CosmosTransformer3DModel with 18 input channels, no padding-mask concat, the config's extra
    position embedding (none for the released 2B network) and the backbone's text path."""
    from diffusers import CosmosTransformer3DModel

    model = CosmosTransformer3DModel(
        in_channels=LATENT_CHANNELS + 2, out_channels=LATENT_CHANNELS,
        num_attention_heads=cfg.num_attention_heads, attention_head_dim=cfg.attention_head_dim,
        num_layers=cfg.num_layers, mlp_ratio=cfg.mlp_ratio, text_embed_dim=cfg.text_embed_dim,
        adaln_lora_dim=cfg.adaln_lora_dim, max_size=cfg.max_size, patch_size=cfg.patch_size,
        rope_scale=cfg.rope_scale, concat_padding_mask=False, extra_pos_embed_type=cfg.extra_pos_embed,
        **get_backbone(cfg.backbone).transformer_kwargs(cfg.text_embed_dim, cfg.text_input_dim))
    if model.learnable_pos_embed is not None:
        # diffusers starts the tables at zero, where the embedding's own normalisation (emb / |emb|) has a
        # gradient of 1/eps: one step would blow up the global gradient norm and clipping would then
        # freeze every other weight. Random tables give unit-RMS embeddings and ordinary gradients.
        with torch.no_grad():
            for table in (model.learnable_pos_embed.pos_emb_t, model.learnable_pos_embed.pos_emb_h,
                          model.learnable_pos_embed.pos_emb_w):
                table.normal_()
    set_qk_norm_eps(model, cfg.qk_norm_eps)
    return model


def build_vae(cfg: NetworkConfig):
    """AutoencoderKLWan with the Wan 2.1 latent statistics."""
    from diffusers import AutoencoderKLWan

    v = cfg.vae
    return AutoencoderKLWan(base_dim=v.base_dim, z_dim=v.z_dim, dim_mult=list(v.dim_mult),
                            num_res_blocks=v.num_res_blocks, attn_scales=list(v.attn_scales),
                            temperal_downsample=list(v.temperal_downsample),
                            latents_mean=list(WAN_LATENTS_MEAN), latents_std=list(WAN_LATENTS_STD))


class CosmosNetwork(nn.Module):
    """The transformer and the VAE, with the input assembly and the latent normalisation.

    ``forward`` is the raw network ``F`` used by the sampler; ``encode`` / ``decode`` map between
    videos in [-1, 1] (B, 3, F, H, W) and normalised latents (B, 16, T, H/8, W/8).
    """

    def __init__(self, cfg: NetworkConfig, transformer=None, vae=None):
        super().__init__()
        self.cfg = cfg
        self.transformer = transformer if transformer is not None else build_transformer(cfg)
        self.vae = vae if vae is not None else build_vae(cfg)
        set_qk_norm_eps(self.transformer, cfg.qk_norm_eps)  # also for weights loaded into a given model
        self.register_buffer("latents_mean", torch.tensor(WAN_LATENTS_MEAN).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(WAN_LATENTS_STD).view(1, -1, 1, 1, 1), persistent=False)
        # optional per-element standardisation after the Wan statistics (see set_latent_norm)
        self.latent_norm_mean: Optional[torch.Tensor] = None  # (1, 16, T, h, w)
        self.latent_norm_std: Optional[torch.Tensor] = None

    def set_latent_norm(self, mean: Optional[torch.Tensor], std: Optional[torch.Tensor]) -> None:
        """Standardise every latent element (frame, channel, position) with measured statistics, applied after
        the Wan statistics: ``z = (wan_z - mean) / std``; None, None turns it off.

        Why: a randomly initialised VAE (the small sim network's) passes the image with a gain of about 0.007,
        so its latents are a near-constant the DiT cannot read; the pretrained Wan VAE does not need this.
        mean, std: (16, T, h, w) or (1, 16, T, h, w), finite, std > 0. They travel with the checkpoint.
        """
        if mean is None and std is None:
            self.latent_norm_mean = self.latent_norm_std = None
            return
        if mean is None or std is None:
            raise ValueError("latent norm: expected both mean and std, or neither")
        mean, std = mean.detach().float(), std.detach().float()
        mean = mean[None] if mean.dim() == 4 else mean
        std = std[None] if std.dim() == 4 else std
        fs = self.cfg.latent_frame_shape
        if mean.shape != std.shape or mean.dim() != 5 or mean.shape[0] != 1 or \
                (mean.shape[1], mean.shape[3], mean.shape[4]) != fs:
            raise ValueError(f"latent norm: expected mean and std of shape (16, T, {fs[1]}, {fs[2]}), "
                             f"got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("latent norm: expected finite mean and finite std > 0")
        dev = self.latents_mean.device
        self.latent_norm_mean, self.latent_norm_std = mean.to(dev), std.to(dev)

    def latent_norm_state(self) -> Optional[Dict[str, torch.Tensor]]:
        """{"mean", "std"}: (16, T, h, w) CPU tensors for the checkpoint, or None without a latent norm."""
        if self.latent_norm_mean is None:
            return None
        return {"mean": self.latent_norm_mean[0].cpu(), "std": self.latent_norm_std[0].cpu()}

    def _norm_slice(self, frames: int):
        if frames > self.latent_norm_mean.shape[2]:
            raise ValueError(f"latent norm: statistics cover {self.latent_norm_mean.shape[2]} latent frames, got {frames}")
        return self.latent_norm_mean[:, :, :frames], self.latent_norm_std[:, :, :frames]

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Wan-normalised latents (B, 16, F, h, w) -> model latents (identity without a latent norm; the
        first F frames of the statistics, as encodes may stop at a prefix)."""
        if self.latent_norm_mean is None:
            return z
        m, s = self._norm_slice(z.shape[2])
        return (z - m.to(z.device)) / s.to(z.device)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_latents`."""
        if self.latent_norm_mean is None:
            return z
        m, s = self._norm_slice(z.shape[2])
        return z * s.to(z.device) + m.to(z.device)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Raw network output F.

        x_in: (B, 16, T, H, W) scaled noisy latents (any float dtype); c_noise: (B, T) per-frame noise
        level (the backbone's time input: Predict2 ``sigma / (sigma + 1)``, Predict2.5 sigma); cond: (B, T) bool
        conditioning frames; text: (B, L, D) instruction embeddings (D = ``cfg.embedding_dim``).
        Returns (B, 16, T, H, W) in the model dtype.
        """
        b, c, t, h, w = x_in.shape
        dt = self.dtype
        mask = cond.to(dt)[:, None, :, None, None].expand(b, 1, t, h, w)  # (B, 1, T, H, W), 1 = condition
        pad = torch.zeros((b, 1, t, h, w), dtype=dt, device=x_in.device)  # padding mask: no padding
        hidden = torch.cat([x_in.to(dt), mask, pad], dim=1)  # (B, 18, T, H, W)
        # timestep (B, 1, T, 1, 1): one noise level per latent frame, kept float32 for the sinusoids
        timestep = c_noise.to(torch.float32)[:, None, :, None, None]
        return self.transformer(hidden, timestep, text.to(dt), fps=None, return_dict=False)[0]

    def net_fn(self, text: torch.Tensor):
        """Bind the text embeddings: -> ``f(x_in, c_noise, cond)`` as the sampler expects."""
        return lambda x_in, c_noise, cond: self.forward(x_in, c_noise, cond, text)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B, 16, 1 + (F-1)/4, H/8, W/8) normalised latents (encoder mean),
        the whole sequence in one VAE call (the VAE is causal)."""
        return self.normalize_latents(self.encode_wan(video))

    @torch.no_grad()
    def encode_wan(self, video: torch.Tensor) -> torch.Tensor:
        """Like :meth:`encode` but normalised with the Wan statistics only (what latent caches store)."""
        vdt = next(self.vae.parameters()).dtype
        mu = self.vae.encode(video.to(vdt)).latent_dist.mean
        return (mu.float() - self.latents_mean) / self.latents_std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 16, T, h, w) normalised latents -> (B, 3, 1 + 4(T-1), 8h, 8w) video in [-1, 1]."""
        vdt = next(self.vae.parameters()).dtype
        z = self.denormalize_latents(latents.float()) * self.latents_std + self.latents_mean
        return self.vae.decode(z.to(vdt)).sample.float()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def configure_torch_threads(requested: int) -> int:
    """Set torch's CPU thread count (0 = all cores but one, at least 1); returns the count in effect.

    The robot computer also runs the camera drivers, the commander and the recorder: leaving a core free
    keeps inference from fighting them (measured on 2 cores: 1 thread ~1 s per chunk, 2 threads ~40 s).
    """
    n = int(requested) if requested and requested > 0 else max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(n)
    return n
