"""Checkpoints: resolve a source, load tensors safely, convert NVIDIA weights, read / write our format.

Two on-disk layouts are understood (docs/model_core.md has the full description):

**Ours** (``config.json`` with ``"format": "cosmos_policy_ros"``): written by :func:`save_checkpoint`
(training, :func:`cosmos_policy_ros.core.policy.save_policy`, the NVIDIA conversion cache)::

    config.json                 format, format_version, policy_id, layout, network (with its backbone:
                                "predict2" when absent), sampler (the backbone's kind), image, dtype
    model.safetensors           diffusers CosmosTransformer3DModel state dict (18 input channels)
    vae.safetensors             diffusers AutoencoderKLWan state dict
    dataset_statistics.json     NVIDIA key names (actions_/proprio_ min, max, mean, std, median)
    t5_embeddings.safetensors   {instruction: (1, text_len, text_dim)} (Predict2: T5-11B, 1024 wide;
    reason1_embeddings.safetensors  Predict2.5: Cosmos-Reason1, 100,352 wide)
    latent_norm.safetensors     optional {"mean", "std"}: (16, T, h, w) per-element latent statistics applied after
                                the Wan ones (``train --latent-norm data``; the small sim network's random VAE)

**NVIDIA's** (HF ``nvidia/Cosmos-Policy-ALOHA-Predict2-2B``): one ``*.pt`` (flat state dict, ``net.*``
keys), ``*dataset_statistics.json``, ``*t5_embeddings.pkl``; the VAE comes from ``tokenizer.pth``
(original Wan 2.1 keys) or a diffusers ``vae/`` folder, in the same directory or in ``vae_source``
(default HF ``nvidia/Cosmos-Predict2-2B-Video2World``). It is converted once (key renames below, strict
key/shape check) and written in our format into a cache directory, so the next start loads safetensors.
Predict2.5 policies (HF ``nvidia/Cosmos-Predict2.5-2B``, subfolders ``robot/policy/{libero,robocasa}`` or
``robot/cosmos-policy/...``) are the same ``.pt`` layout plus ``net.crossattn_proj.0.{weight,bias}``; their
dataset statistics and ``reason1_embeddings.pkl`` come from the dataset repos, given as ``assets``. A
distributed (DCP) checkpoint folder is refused with a clear error: it is not supported.

Only tensors are ever loaded: ``torch.load(weights_only=True)``, safetensors, and for the T5 / Reason1 pickles a
restricted unpickler that allows exactly what a pickled dict of tensors needs.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .codec import DatasetStats
from .images import ImageConfig
from .layout import LatentLayout, get_layout
from .network import NetworkConfig, VAEConfig
from .backbone import BACKBONES, get_backbone

FORMAT_NAME = "cosmos_policy_ros"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
VAE_FILE = "vae.safetensors"
STATS_FILE = "dataset_statistics.json"
EMBEDDINGS_FILE = "t5_embeddings.safetensors"
LATENT_NORM_FILE = "latent_norm.safetensors"  # optional: {"mean", "std"} (16, T, h, w), see CosmosNetwork.set_latent_norm
DEFAULT_VAE_REPO = "nvidia/Cosmos-Predict2-2B-Video2World"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, read safely, converted or matched to the model."""


# ================================================================================================
# safe tensor loading
# ================================================================================================
def load_torch_tensors(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` a state dict; unwrap one ``{"model"|"state_dict": {...}}`` level.

    Anything that is not tensors / containers / primitives is refused by torch's weights-only unpickler;
    the error says so (e.g. a checkpoint with ``_extra_state`` objects or a pickled module).
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: it holds non-tensor objects that "
                              f"torch.load(weights_only=True) does not allow ({str(e).splitlines()[0]})") from None
    except Exception as e:  # corrupted zip, truncated file, ...
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint: {type(e).__name__}: {e}") from None
    return _as_state_dict(obj, path)


def _as_state_dict(obj, path) -> Dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and len(obj) == 1 and next(iter(obj)) in ("model", "state_dict") \
            and isinstance(next(iter(obj.values())), Mapping):
        obj = next(iter(obj.values()))
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    out: Dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[str(k)] = v
        elif str(k).endswith("_extra_state"):
            continue  # non-tensor module state (e.g. TransformerEngine): carries no weights
        else:
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, expected a tensor")
    return out


def _safe_storage_from_bytes(b: bytes):
    """Stand-in for ``torch.storage._load_from_bytes`` (which calls torch.load(weights_only=False))."""
    if not isinstance(b, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"storage payload: expected bytes, got {type(b).__name__}")
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


class _TensorDictUnpickler(pickle.Unpickler):
    """Allows exactly what ``pickle.dump({str: tensor})`` produces; every other global is refused."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): None,  # tensor from storage + shape/stride: no code
        ("torch.storage", "_load_from_bytes"): _safe_storage_from_bytes,  # replaced by a weights-only load
        ("collections", "OrderedDict"): collections.OrderedDict,  # tensor backward-hooks slot
    }

    def find_class(self, module, name):
        key = (module, name)
        if key not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed (only tensors, dicts, strings)")
        if key == ("torch._utils", "_rebuild_tensor_v2"):
            import torch._utils
            return torch._utils._rebuild_tensor_v2
        return self._ALLOWED[key]


def load_embeddings_pickle(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """NVIDIA's ``{instruction: tensor}`` text-embedding pickle (T5 or Reason1) through the restricted unpickler."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _TensorDictUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: refused to load the text embeddings pickle: {e}") from None
    return _check_embeddings(obj, path)


def _check_embeddings(obj, path) -> Dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a non-empty dict {{instruction: tensor}}, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: expected str -> tensor entries, got {type(k).__name__} -> {type(v).__name__}")
        t = v if v.ndim == 3 else v.unsqueeze(0)
        if t.ndim != 3 or t.shape[0] != 1:
            raise CheckpointError(f"{path}: embedding of {k!r}: expected shape (1, L, D), got {tuple(v.shape)}")
        out[k] = t
    dims = {tuple(t.shape) for t in out.values()}
    if len(dims) != 1:
        raise CheckpointError(f"{path}: expected every embedding to have one shape, got {sorted(dims)}")
    return out


def load_safetensors(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a safetensors file to CPU tensors with a clear error."""
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as safetensors: {type(e).__name__}: {e}") from None


# ================================================================================================
# NVIDIA transformer keys <-> diffusers keys
# ================================================================================================
#: Per-block renames (NVIDIA name inside ``blocks.N.`` -> diffusers name inside ``transformer_blocks.N.``).
_BLOCK_RENAMES: Tuple[Tuple[str, str], ...] = tuple(
    [(f"{src}.{p}_proj", f"{dst}.to_{p}") for src, dst in (("self_attn", "attn1"), ("cross_attn", "attn2")) for p in "qkv"]
    + [(f"{src}.output_proj", f"{dst}.to_out.0") for src, dst in (("self_attn", "attn1"), ("cross_attn", "attn2"))]
    + [(f"{src}.{p}_norm", f"{dst}.norm_{p}") for src, dst in (("self_attn", "attn1"), ("cross_attn", "attn2")) for p in "qk"]
    + [("mlp.layer1", "ff.net.0.proj"), ("mlp.layer2", "ff.net.2")]
    + [(f"adaln_modulation_{src}.{i}", f"norm{n}.linear_{i}")
       for n, src in ((1, "self_attn"), (2, "cross_attn"), (3, "mlp")) for i in (1, 2)]
)
#: Top-level module renames.
_TOP_RENAMES: Tuple[Tuple[str, str], ...] = (
    ("x_embedder.proj.1", "patch_embed.proj"),
    ("t_embedder.1", "time_embed.t_embedder"),
    ("t_embedding_norm", "time_embed.norm"),
    ("final_layer.adaln_modulation.1", "norm_out.linear_1"),
    ("final_layer.adaln_modulation.2", "norm_out.linear_2"),
    ("final_layer.linear", "proj_out"),
    ("crossattn_proj", "crossattn_proj"),  # Predict2.5: Linear(100,352 -> 1024) + GELU, same names in diffusers
)
#: NVIDIA entries that carry no diffusers weight (training counters, RoPE tables, TE extra state).
_DROP_PATTERNS = (re.compile(r"^accum_"), re.compile(r"^pos_embedder\."), re.compile(r"(^|\.)_extra_state$"),
                  re.compile(r"^logvar\."))


def _split_param(name: str) -> Tuple[str, str]:
    module, _, param = name.rpartition(".")
    return module, param


def nvidia_key_to_diffusers(key: str) -> Optional[str]:
    """One NVIDIA ``net.*`` key -> diffusers key; None if it is to be dropped; raises KeyError if unknown."""
    if not key.startswith("net."):
        raise KeyError(key)
    k = key[len("net."):]
    if any(p.search(k) for p in _DROP_PATTERNS):
        return None
    module, param = _split_param(k)
    m = re.match(r"^blocks\.(\d+)\.(.+)$", module)
    if m:
        for src, dst in _BLOCK_RENAMES:
            if m.group(2) == src:
                return f"transformer_blocks.{m.group(1)}.{dst}.{param}"
        raise KeyError(key)
    for src, dst in _TOP_RENAMES:  # module prefixes: t_embedder.1.linear_1 -> time_embed.t_embedder.linear_1
        if module == src or module.startswith(src + "."):
            return f"{dst}{module[len(src):]}.{param}"
    raise KeyError(key)


def diffusers_key_to_nvidia(key: str) -> str:
    """Inverse of :func:`nvidia_key_to_diffusers` (used to export and by the tests)."""
    module, param = _split_param(key)
    m = re.match(r"^transformer_blocks\.(\d+)\.(.+)$", module)
    if m:
        for src, dst in _BLOCK_RENAMES:
            if m.group(2) == dst:
                return f"net.blocks.{m.group(1)}.{src}.{param}"
        raise KeyError(key)
    for src, dst in _TOP_RENAMES:
        if module == dst or module.startswith(dst + "."):
            return f"net.{src}{module[len(dst):]}.{param}"
    raise KeyError(key)


@dataclass
class ConversionReport:
    """What a conversion / strict load found. ``ok`` only when nothing is missing, unexpected or mis-shaped."""

    what: str
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, limit: int = 20) -> str:
        """Readable multi-line summary (first ``limit`` entries of each list)."""
        lines = [f"{self.what}: {'OK' if self.ok else 'does not match the model'}"]

        def add(title, items, fmt=str):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {fmt(i)}" for i in items[:limit])
                if len(items) > limit:
                    lines.append(f"    ... and {len(items) - limit} more")
        add("missing keys", self.missing)
        add("unexpected keys", self.unexpected)
        add("wrong shapes", self.mismatched, lambda t: f"{t[0]}: expected {tuple(t[1])}, got {tuple(t[2])}")
        if self.dropped:
            lines.append(f"  dropped (no weights): {len(self.dropped)} entries")
        return "\n".join(lines)


def convert_nvidia_transformer(sd: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """NVIDIA ``net.*`` state dict -> diffusers state dict + report (unknown keys listed as unexpected;
    ``net_ema.*`` copies are dropped: the released ALOHA checkpoint has none)."""
    out: Dict[str, torch.Tensor] = {}
    rep = ConversionReport("transformer (NVIDIA -> diffusers)")
    for k, v in sd.items():
        if k.startswith("net_ema."):
            rep.dropped.append(k)
            continue
        try:
            nk = nvidia_key_to_diffusers(k)
        except KeyError:
            rep.unexpected.append(k)
            continue
        if nk is None:
            rep.dropped.append(k)
        else:
            out[nk] = v
    return out, rep


def export_nvidia_transformer(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """diffusers transformer state dict -> NVIDIA ``net.*`` key names (inverse rename)."""
    return {diffusers_key_to_nvidia(k): v for k, v in sd.items()}


# ================================================================================================
# Wan 2.1 original VAE keys <-> diffusers AutoencoderKLWan keys
# ================================================================================================
# Original WanVAE: Sequential residual blocks (RMS_norm 0, SiLU 1, conv 2, RMS_norm 3, SiLU 4, Dropout 5,
# conv 6) + shortcut; encoder.downsamples / decoder.upsamples are flat lists; middle = [res, attn, res];
# head = [RMS_norm, SiLU, conv]; conv1 / conv2 at the top are the quant convs.
_RES_RENAMES = (("residual.0.", "norm1."), ("residual.2.", "conv1."), ("residual.3.", "norm2."),
                ("residual.6.", "conv2."), ("shortcut.", "conv_shortcut."))


def _res_rename(rest: str, inverse: bool = False) -> Optional[str]:
    for a, b in _RES_RENAMES:
        src, dst = (b, a) if inverse else (a, b)
        if rest.startswith(src):
            return dst + rest[len(src):]
    return None


def wan_vae_key_to_diffusers(key: str, num_res_blocks: int = 2) -> str:
    """One original Wan 2.1 VAE key -> AutoencoderKLWan key (raises KeyError when unknown)."""
    top = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
    for a, b in top.items():
        if key.startswith(a):
            return b + key[len(a):]
    m = re.match(r"^(encoder|decoder)\.(.+)$", key)
    if not m:
        raise KeyError(key)
    part, rest = m.groups()
    if rest.startswith("conv1."):
        return f"{part}.conv_in.{rest[len('conv1.'):]}"
    if rest.startswith("head.0."):
        return f"{part}.norm_out.{rest[len('head.0.'):]}"
    if rest.startswith("head.2."):
        return f"{part}.conv_out.{rest[len('head.2.'):]}"
    mm = re.match(r"^middle\.(\d)\.(.+)$", rest)
    if mm:
        i, r = int(mm.group(1)), mm.group(2)
        if i == 1:
            return f"{part}.mid_block.attentions.0.{r}"
        rr = _res_rename(r)
        if rr is None:
            raise KeyError(key)
        return f"{part}.mid_block.resnets.{i // 2}.{rr}"
    mm = re.match(r"^(downsamples|upsamples)\.(\d+)\.(.+)$", rest)
    if mm:
        kind, i, r = mm.group(1), int(mm.group(2)), mm.group(3)
        rr = _res_rename(r)
        if kind == "downsamples":  # diffusers keeps the flat list
            return f"encoder.down_blocks.{i}.{rr if rr is not None else r}"
        per = num_res_blocks + 2  # (num_res_blocks + 1) residual blocks + 1 upsampler per level
        level, j = divmod(i, per)
        if rr is not None and j <= num_res_blocks:
            return f"decoder.up_blocks.{level}.resnets.{j}.{rr}"
        if rr is None and j == num_res_blocks + 1:
            return f"decoder.up_blocks.{level}.upsamplers.0.{r}"
    raise KeyError(key)


def diffusers_vae_key_to_wan(key: str, num_res_blocks: int = 2) -> str:
    """Inverse of :func:`wan_vae_key_to_diffusers`."""
    for a, b in (("quant_conv.", "conv1."), ("post_quant_conv.", "conv2.")):
        if key.startswith(a):
            return b + key[len(a):]
    m = re.match(r"^(encoder|decoder)\.(.+)$", key)
    if not m:
        raise KeyError(key)
    part, rest = m.groups()
    for a, b in (("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2.")):
        if rest.startswith(a):
            return f"{part}.{b}{rest[len(a):]}"
    mm = re.match(r"^mid_block\.attentions\.0\.(.+)$", rest)
    if mm:
        return f"{part}.middle.1.{mm.group(1)}"
    mm = re.match(r"^mid_block\.resnets\.(\d)\.(.+)$", rest)
    if mm:
        return f"{part}.middle.{2 * int(mm.group(1))}.{_res_rename(mm.group(2), inverse=True)}"
    mm = re.match(r"^down_blocks\.(\d+)\.(.+)$", rest)
    if mm:
        r = mm.group(2)
        rr = _res_rename(r, inverse=True)
        return f"encoder.downsamples.{mm.group(1)}.{rr if rr is not None else r}"
    per = num_res_blocks + 2
    mm = re.match(r"^up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", rest)
    if mm:
        return f"decoder.upsamples.{int(mm.group(1)) * per + int(mm.group(2))}.{_res_rename(mm.group(3), inverse=True)}"
    mm = re.match(r"^up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", rest)
    if mm:
        return f"decoder.upsamples.{int(mm.group(1)) * per + num_res_blocks + 1}.{mm.group(2)}"
    raise KeyError(key)


def convert_wan_vae(sd: Mapping[str, torch.Tensor], num_res_blocks: int = 2) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """Original Wan 2.1 VAE state dict (``tokenizer.pth``) -> AutoencoderKLWan state dict + report.
    A diffusers-format dict (already converted) passes through unchanged."""
    rep = ConversionReport("VAE (Wan 2.1 -> diffusers)")
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.", "quant_conv.")) for k in sd):
        return dict(sd), rep
    out = {}
    for k, v in sd.items():
        try:
            out[wan_vae_key_to_diffusers(k, num_res_blocks)] = v
        except KeyError:
            rep.unexpected.append(k)
    return out, rep


def infer_wan_vae_config(sd: Mapping[str, torch.Tensor]) -> VAEConfig:
    """VAE architecture from a (diffusers-format) VAE state dict's shapes."""
    try:
        base = int(sd["encoder.conv_in.weight"].shape[0])
    except KeyError:
        raise CheckpointError("VAE weights: no encoder.conv_in.weight, cannot infer the VAE size") from None
    n_down = len({int(m.group(1)) for k in sd for m in [re.match(r"^encoder\.down_blocks\.(\d+)\.", k)] if m})
    nrb = (n_down - 3) // 4 if n_down >= 7 else 2
    return VAEConfig(base_dim=base, num_res_blocks=max(1, nrb))


def infer_transformer_config(sd: Mapping[str, torch.Tensor], image_size: int = 224, text_len: int = 512) -> NetworkConfig:
    """Transformer dims from a diffusers-format state dict's shapes (layers, heads, widths)."""
    try:
        hidden = int(sd["patch_embed.proj.weight"].shape[0])
        head_dim = int(sd["transformer_blocks.0.attn1.norm_q.weight"].shape[0])
        text_dim = int(sd["transformer_blocks.0.attn2.to_k.weight"].shape[1])
        lora = int(sd["transformer_blocks.0.norm1.linear_1.weight"].shape[0])
        mlp = int(sd["transformer_blocks.0.ff.net.0.proj.weight"].shape[0])
    except KeyError as e:
        raise CheckpointError(f"transformer weights: missing {e} needed to infer the network size") from None
    layers = 1 + max(int(m.group(1)) for k in sd for m in [re.match(r"^transformer_blocks\.(\d+)\.", k)] if m)
    backbone, text_in = backbone_of_state_dict(sd)
    return NetworkConfig(name=f"inferred-{layers}x{hidden}", num_layers=layers, num_attention_heads=hidden // head_dim,
                         attention_head_dim=head_dim, mlp_ratio=mlp / hidden, text_embed_dim=text_dim,
                         text_len=text_len, adaln_lora_dim=lora, image_size=image_size, backbone=backbone,
                         text_input_dim=text_in)


def backbone_of_state_dict(sd: Mapping[str, torch.Tensor]) -> Tuple[str, Optional[int]]:
    """(backbone name, text input width) of a diffusers-format transformer state dict: a cross-attention
    projection means Predict2.5 (its input width is the embedding width), none means Predict2."""
    w = sd.get("crossattn_proj.0.weight")
    if w is None:
        return "predict2", None
    projecting = [b for b in BACKBONES.values() if b.crossattn_projection]
    return projecting[0].name, int(w.shape[1])


# ================================================================================================
# strict loading into modules
# ================================================================================================
def check_state_dict(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str,
                     report: Optional[ConversionReport] = None) -> ConversionReport:
    """Compare ``sd`` with the module's own keys and shapes (no loading)."""
    rep = report or ConversionReport(what)
    rep.what = what
    own = module.state_dict()
    rep.missing += [k for k in own if k not in sd]
    rep.unexpected += [k for k in sd if k not in own]
    rep.mismatched += [(k, tuple(own[k].shape), tuple(sd[k].shape)) for k in sd
                       if k in own and tuple(own[k].shape) != tuple(sd[k].shape)]
    return rep


def load_strict(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str,
                report: Optional[ConversionReport] = None, assign: bool = False) -> ConversionReport:
    """Strict key + shape check, then load (``assign=True`` for modules built on the meta device);
    raises CheckpointError with the readable report."""
    rep = check_state_dict(module, sd, what, report)
    if not rep.ok:
        raise CheckpointError(rep.format())
    module.load_state_dict(dict(sd), strict=True, assign=assign)
    return rep


# ================================================================================================
# source resolution
# ================================================================================================
def is_repo_id(source: str) -> bool:
    """True for 'owner/name' strings that are not an existing local path."""
    return bool(_REPO_ID.match(source)) and not Path(source).exists()


def resolve_source(source: Union[str, Path], cache_dir: Optional[str] = None, local_files_only: bool = False,
                   allow_patterns: Optional[Sequence[str]] = None, revision: Optional[str] = None) -> Path:
    """A local directory, or a Hugging Face repo id downloaded into the huggingface_hub cache.

    Raises CheckpointError naming the source when it is neither, or the download / cache lookup fails.
    """
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    s = str(source)
    if p.exists():
        raise CheckpointError(f"checkpoint source {s!r} is a file; expected a directory or a Hugging Face repo id")
    if not is_repo_id(s):
        raise CheckpointError(f"checkpoint source {s!r}: no such directory, and not a Hugging Face repo id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id=s, cache_dir=cache_dir, local_files_only=local_files_only,
                                      allow_patterns=list(allow_patterns) if allow_patterns else None,
                                      revision=revision))
    except Exception as e:
        raise CheckpointError(f"checkpoint source {s!r}: Hugging Face download / cache lookup failed "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); gated NVIDIA repos "
                              "need `huggingface-cli login` and accepted terms") from None


# ================================================================================================
# our format
# ================================================================================================
@dataclass
class CheckpointData:
    """Everything a policy needs, as plain tensors and configs (no modules)."""

    network: NetworkConfig
    layout: LatentLayout
    sampler: object  # the backbone's sampler config (SamplerConfig or RFSamplerConfig)
    image: ImageConfig
    stats: DatasetStats
    embeddings: Dict[str, torch.Tensor]  # instruction -> (1, L, D)
    transformer_state: Dict[str, torch.Tensor]
    vae_state: Dict[str, torch.Tensor]
    policy_id: str = "cosmos-policy"
    dtype: str = "float32"
    source: str = ""
    reports: List[ConversionReport] = field(default_factory=list)
    latent_norm: Optional[Dict[str, torch.Tensor]] = None  # {"mean", "std"}: (16, T, h, w) per-element latent statistics


def is_our_format(path: Path) -> bool:
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        return False
    try:
        with open(cfg, "r", encoding="utf-8") as f:
            return json.load(f).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def save_checkpoint(data: CheckpointData, directory: Union[str, Path]) -> Path:
    """Write ``data`` in our format (see module docstring). Files are written to temporary names and
    renamed, config.json last, so a half-written directory is never taken for a checkpoint."""
    from safetensors.torch import save_file
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def contiguous(sd):
        return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}

    def write(name, fn):
        tmp = d / (name + ".tmp")
        fn(tmp)
        os.replace(tmp, d / name)

    write(MODEL_FILE, lambda p: save_file(contiguous(data.transformer_state), str(p)))
    write(VAE_FILE, lambda p: save_file(contiguous(data.vae_state), str(p)))
    emb_file = get_backbone(data.network.backbone).embeddings_file
    write(emb_file, lambda p: save_file(contiguous(data.embeddings), str(p)))
    write(STATS_FILE, lambda p: data.stats.save(p))
    if data.latent_norm is not None:
        write(LATENT_NORM_FILE, lambda p: save_file(contiguous(data.latent_norm), str(p)))
    elif (d / LATENT_NORM_FILE).exists():  # overwriting a checkpoint that had one: it must not leak into this one
        (d / LATENT_NORM_FILE).unlink()
    config = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "policy_id": data.policy_id,
        "dtype": data.dtype, "layout": data.layout.to_dict(), "network": data.network.to_dict(),
        "sampler": data.sampler.to_dict(), "image": data.image.to_dict(),
    }
    write(CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=1), encoding="utf-8"))
    return d


def image_config_of(config: Mapping) -> ImageConfig:
    """The image preprocessing a config.json in our format records (``image``), else the network's plain resize."""
    img = dict(config.get("image") or {})
    return ImageConfig(**img) if img else ImageConfig(size=int(config["network"]["image_size"]))


def load_our_checkpoint(path: Union[str, Path]) -> CheckpointData:
    """Read a directory in our format (safetensors + JSON only)."""
    d = Path(path)
    try:
        config = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{d / CONFIG_FILE}: cannot be read: {e}") from None
    if config.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{d}: config.json format is {config.get('format')!r}, expected {FORMAT_NAME!r}")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{d}: format_version {config.get('format_version')} is newer than this code ({FORMAT_VERSION})")
    try:
        network = NetworkConfig.from_dict(config["network"])  # no "backbone" field: Predict2
        backbone = get_backbone(network.backbone)
        layout_cfg = config["layout"]
        layout = LatentLayout.from_dict(layout_cfg) if isinstance(layout_cfg, dict) else get_layout(str(layout_cfg))
        sampler = backbone.sampler_from_dict(config.get("sampler", {}))
        image = image_config_of(config)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{d / CONFIG_FILE}: invalid config: {type(e).__name__}: {e}") from None
    for name in (MODEL_FILE, VAE_FILE, STATS_FILE, backbone.embeddings_file):
        if not (d / name).is_file():
            raise CheckpointError(f"{d}: missing {name}")
    emb = _check_embeddings(load_safetensors(d / backbone.embeddings_file), d / backbone.embeddings_file)
    latent_norm = None
    if (d / LATENT_NORM_FILE).is_file():
        latent_norm = load_safetensors(d / LATENT_NORM_FILE)
        if sorted(latent_norm) != ["mean", "std"]:
            raise CheckpointError(f"{d / LATENT_NORM_FILE}: expected tensors 'mean' and 'std', got {sorted(latent_norm)}")
    return CheckpointData(network=network, layout=layout, sampler=sampler, image=image, latent_norm=latent_norm,
                          stats=DatasetStats.load(d / STATS_FILE), embeddings=emb,
                          transformer_state=load_safetensors(d / MODEL_FILE),
                          vae_state=load_safetensors(d / VAE_FILE), policy_id=str(config.get("policy_id", d.name)),
                          dtype=str(config.get("dtype", "float32")), source=str(d))


# ================================================================================================
# NVIDIA format
# ================================================================================================
def _one(d: Path, patterns: Sequence[str], what: str, required: bool = True) -> Optional[Path]:
    for pat in patterns:
        hits = sorted(p for p in d.glob(pat) if p.is_file())
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise CheckpointError(f"{d}: several {what} files match {pat!r}: {[h.name for h in hits]}; pass one explicitly")
    if required:
        raise CheckpointError(f"{d}: no {what} found (looked for {list(patterns)})")
    return None


def find_vae_files(d: Path) -> Optional[Path]:
    """A VAE inside ``d``: tokenizer.pth (Wan original), vae/diffusion_pytorch_model.safetensors or
    vae.safetensors (diffusers keys); None when absent."""
    for rel in ("tokenizer.pth", "tokenizer/tokenizer.pth", "vae/diffusion_pytorch_model.safetensors", VAE_FILE):
        if (d / rel).is_file():
            return d / rel
    return None


def load_vae_file(path: Path) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """VAE weights in diffusers keys from a .pth (Wan original, converted) or a safetensors file."""
    if path.suffix == ".safetensors":
        return convert_wan_vae(load_safetensors(path))
    raw = load_torch_tensors(path)
    n_up = {int(m.group(1)) for k in raw for m in [re.match(r"^decoder\.upsamples\.(\d+)\.", k)] if m}
    nrb = (len(n_up) - 3) // 4 - 1 if n_up else 2  # 4 levels x (nrb + 1) blocks + 3 upsamplers
    return convert_wan_vae(raw, num_res_blocks=max(1, nrb))


def _cache_root() -> Path:
    env = os.environ.get("COSMOS_POLICY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cosmos_policy_ros"


def _fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _find(dirs: Sequence[Path], patterns: Sequence[str], what: str) -> Path:
    """The one file matching the first pattern that matches in the first directory that has it."""
    for d in dirs:
        hit = _one(d, patterns, what, required=False)
        if hit is not None:
            return hit
    raise CheckpointError(f"no {what} found in {[str(d) for d in dirs]} (looked for {list(patterns)}); "
                          "pass the folder that holds it as assets (--assets)")


def refuse_dcp(d: Path) -> None:
    """Raise CheckpointError for a distributed (DCP) checkpoint folder: not supported (only a single ``.pt``)."""
    dcp = None
    if (d / "model").is_dir():
        dcp = d / "model"
    elif (d / ".metadata").is_file() or any(d.glob("*.distcp")):
        dcp = d
    if dcp is not None and not any(d.glob("*.pt")):
        raise CheckpointError(
            f"{dcp}: a distributed (DCP) checkpoint folder is not supported; convert it once to a single .pt "
            "(torch.distributed.checkpoint.format_utils.dcp_to_torch_save) and pass the folder holding that .pt")


def convert_nvidia_checkpoint(d: Path, vae_path: Path, layout: LatentLayout, image_size: int = 224,
                              policy_id: Optional[str] = None, dtype: str = "bfloat16",
                              assets: Sequence[Path] = ()) -> CheckpointData:
    """Read an NVIDIA policy directory + a VAE file into :class:`CheckpointData` (renamed keys, reports).

    The backbone follows from the weights (a cross-attention projection = Predict2.5), and with it the text
    embeddings looked for (``*t5_embeddings.pkl`` / ``*reason1_embeddings.pkl``, pickles only through the
    restricted unpickler) and the sampler. Statistics and embeddings are looked for in ``d``, then in ``assets``
    (and their ``success_only/``), ``<layout>_dataset_statistics.json`` first.
    Key/shape problems are raised later by the strict load against the built modules."""
    refuse_dcp(d)
    pt = _one(d, ["*.pt"], "policy weights (*.pt)")
    dirs = [d] + [Path(a) for a in assets] + [Path(a) / "success_only" for a in assets if (Path(a) / "success_only").is_dir()]
    stats = _find(dirs, [f"{layout.name}_dataset_statistics.json", "*dataset_statistics.json"],
                  "dataset statistics (*dataset_statistics.json)")
    net_sd, rep_t = convert_nvidia_transformer(load_torch_tensors(pt))
    vae_sd, rep_v = load_vae_file(vae_path)
    if rep_t.unexpected:
        raise CheckpointError(rep_t.format())
    if rep_v.unexpected:
        raise CheckpointError(rep_v.format())
    backbone = get_backbone(backbone_of_state_dict(net_sd)[0])
    emb_path = _find(dirs, backbone.nvidia_embeddings, f"{backbone.text_encoder} embeddings ({backbone.nvidia_embeddings[-1]})")
    emb = (_check_embeddings(load_safetensors(emb_path), emb_path) if emb_path.suffix == ".safetensors"
           else load_embeddings_pickle(emb_path))
    text_len = int(next(iter(emb.values())).shape[1])
    network = infer_transformer_config(net_sd, image_size=image_size, text_len=text_len)
    network.vae = infer_wan_vae_config(vae_sd)
    return CheckpointData(network=network, layout=layout, sampler=backbone.default_sampler(),
                          image=ImageConfig(size=image_size), stats=DatasetStats.load(stats), embeddings=emb,
                          transformer_state=net_sd, vae_state=vae_sd, policy_id=policy_id or pt.stem, dtype=dtype,
                          source=str(d), reports=[rep_t, rep_v])


def released_subfolders(repo: str, layout: str) -> Tuple[str, ...]:
    """Subfolders of a released policy of ``layout`` inside the HF model repo ``repo`` (every spelling in the
    backbone table; empty when the repo holds no such policy, e.g. a Predict2 policy repo)."""
    for b in BACKBONES.values():
        if b.hf_repo is not None and b.hf_repo.lower() == repo.lower():
            return tuple(b.hf_subfolders.get(layout, ()))
    return ()


def _policy_dir(d: Path, layout: str) -> Path:
    """``d`` itself, or the released policy subfolder of ``layout`` inside it (a Predict2.5 model repo)."""
    if any(d.glob("*.pt")) or is_our_format(d):
        return d
    for b in BACKBONES.values():
        for sub in b.hf_subfolders.get(layout, ()):
            if (d / sub).is_dir():
                return d / sub
    return d


def resolve_policy_source(source: Union[str, Path], layout: str, local_files_only: bool = False,
                          hf_cache_dir: Optional[str] = None) -> Path:
    """A policy directory from a local path, a HF repo id, ``owner/name/sub/folder`` or a Predict2.5 model repo
    (``nvidia/Cosmos-Predict2.5-2B``: the layout's released policy subfolder, either spelling)."""
    s = str(source)
    p = Path(s).expanduser()
    if p.is_dir():
        return _policy_dir(p, layout)
    parts = s.split("/")
    if len(parts) > 2 and is_repo_id("/".join(parts[:2])) and not p.exists():
        repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
        root = resolve_source(repo, cache_dir=hf_cache_dir, local_files_only=local_files_only,
                              allow_patterns=[f"{sub}/*"])
        if not (root / sub).is_dir():
            raise CheckpointError(f"checkpoint source {s!r}: {repo} has no folder {sub!r}")
        return root / sub
    subs = released_subfolders(s, layout) if is_repo_id(s) else ()
    released = [b for b in BACKBONES.values() if b.hf_repo is not None and b.hf_repo.lower() == s.lower()]
    if released and not subs:
        raise CheckpointError(f"{s} holds released policies for layouts {sorted(released[0].hf_subfolders)} only, "
                              f"got layout {layout!r} (there is no {released[0].title} {layout} policy: train one "
                              "with `cosmos-policy train --backbone " + released[0].name + "`)")
    if subs:
        root = resolve_source(s, cache_dir=hf_cache_dir, local_files_only=local_files_only,
                              allow_patterns=[f"{sub}/*" for sub in subs])
        for sub in subs:
            if (root / sub).is_dir():
                return root / sub
        raise CheckpointError(f"checkpoint source {s!r}: none of {list(subs)} found for layout {layout!r}")
    return resolve_source(s, cache_dir=hf_cache_dir, local_files_only=local_files_only)


def load_checkpoint(source: Union[str, Path], vae_source: Optional[Union[str, Path]] = None,
                    layout: Union[str, LatentLayout] = "aloha", image_size: int = 224,
                    cache_dir: Optional[Union[str, Path]] = None, write_cache: bool = True,
                    local_files_only: bool = False, assets: Sequence[Union[str, Path]] = ()) -> CheckpointData:
    """Resolve ``source`` and read it as :class:`CheckpointData` (ours or NVIDIA's layout, either backbone).

    NVIDIA checkpoints are converted and, with ``write_cache``, written in our format under
    ``cache_dir`` (default ``$COSMOS_POLICY_CACHE`` or ``~/.cache/cosmos_policy_ros``)/converted/<name>-<hash>;
    a later call with the same files loads that copy. ``assets``: local folders (or HF dataset snapshots already
    downloaded) holding the dataset statistics and text embeddings when the weights' folder has none, as for
    the Predict2.5 policies (``nvidia/LIBERO-Cosmos-Policy``: ``libero_dataset_statistics.json``,
    ``success_only/reason1_embeddings.pkl``).
    """
    lay = layout if isinstance(layout, LatentLayout) else get_layout(layout)
    d = resolve_policy_source(source, lay.name, local_files_only=local_files_only)
    if is_our_format(d):
        return load_our_checkpoint(d)
    refuse_dcp(d)
    if not any(d.glob("*.pt")):
        raise CheckpointError(f"{d}: neither our format (config.json with \"format\": \"{FORMAT_NAME}\") "
                              "nor an NVIDIA policy directory (*.pt + *dataset_statistics.json + *t5_embeddings.pkl "
                              "or *reason1_embeddings.pkl)")
    asset_dirs = [Path(a).expanduser() for a in assets]
    for a in asset_dirs:
        if not a.is_dir():
            raise CheckpointError(f"assets {str(a)!r}: no such directory")
    vae_path = find_vae_files(d)
    if vae_path is None:
        vs = vae_source if vae_source is not None else DEFAULT_VAE_REPO
        vd = resolve_source(vs, local_files_only=local_files_only,
                            allow_patterns=None if Path(str(vs)).is_dir() else
                            ["tokenizer/tokenizer.pth", "vae/*"])
        vae_path = find_vae_files(vd)
        if vae_path is None:
            raise CheckpointError(f"VAE source {str(vs)!r} ({vd}) holds no tokenizer.pth, tokenizer/tokenizer.pth, "
                                  "vae/diffusion_pytorch_model.safetensors or vae.safetensors")
    inputs = sorted(p for p in d.iterdir() if p.is_file()) + [vae_path]
    inputs += sorted(p for a in asset_dirs for p in list(a.iterdir()) + list(a.glob("success_only/*")) if p.is_file())
    root = Path(cache_dir) if cache_dir is not None else _cache_root()
    cached = root / "converted" / f"{d.name}-{lay.name}-{image_size}-{_fingerprint(inputs)}"
    if is_our_format(cached):
        return load_our_checkpoint(cached)
    data = convert_nvidia_checkpoint(d, vae_path, lay, image_size=image_size, assets=asset_dirs)
    data.layout = lay
    if write_cache:
        # strict-check before caching: a bad conversion must not become a 'fast' checkpoint
        from .network import build_transformer, build_vae
        with torch.device("meta"):
            t, v = build_transformer(data.network), build_vae(data.network)
        for module, sd, rep in ((t, data.transformer_state, data.reports[0]), (v, data.vae_state, data.reports[1])):
            r = check_state_dict(module, sd, rep.what, rep)
            if not r.ok:
                raise CheckpointError(r.format())
        save_checkpoint(data, cached)
        data.source = str(cached)
    return data
