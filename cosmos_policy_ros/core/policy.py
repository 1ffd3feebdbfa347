"""Cosmos Policy: observation -> action chunk, future images / proprio and value (PolicyBackend).

One query (facts sheet sections 1-3):

1. check the observation (cameras, uint8 RGB, proprio length, finite values, known instruction);
2. preprocess each camera (squash 256, resize, 90% centre crop) and build the raw video: blank frame,
   then 4 copies per latent slot (current images in their slots, future-image placeholders hold copies
   of the current images, vector slots hold blank images);
3. encode it with the VAE in one call -> clean latents; inject the normalised proprio (and, for world-model
   queries, the given action chunk) by tiling;
4. sample (parallel: one pass with ``action_steps`` calls gives action, future state and value;
   autoregressive: separate passes) for every seed in one batch;
5. extract action (mean over complete copies, un-normalised, **clipped** to the stats range), future
   proprio and value ((v+1)/2 in [0, 1]); put the clean pre-injection latents back into the vector frames
   and decode the future images.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from . import codec
from .checkpoint import (CheckpointData, CheckpointError, load_checkpoint, load_strict, save_checkpoint)
from .codec import DatasetStats
from .images import ImageConfig, check_image, from_model_range, preprocess_batch, to_model_range
from .layout import ALOHA, LatentLayout, get_layout
from .network import CosmosNetwork, NetworkConfig, build_transformer, build_vae, get_dtype, tiny_network_config
from .rtc import ChunkPrefix
from .backbone import get_backbone, run_sampler
from .sampler import Inpainting, SamplerConfig, lift_chunk, plan_stages
from .types import DEFAULT_SEED, InferenceCancelled, Observation, PolicyOutput

DecodeMode = Union[bool, str]  # True, False or "deferred" (see CosmosPolicy.infer_batch)


def _check_decode(mode: DecodeMode) -> DecodeMode:
    if mode is True or mode is False or mode == "deferred":
        return mode
    raise ValueError(f"decode_future_images: expected True, False or 'deferred', got {mode!r}")


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work so stage timings are real (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cancellable(net: Callable, cancel: Callable[[], bool]) -> Callable:
    """``net`` that raises InferenceCancelled instead of running once ``cancel()`` is True."""
    def call(*args, **kwargs):
        if cancel():
            raise InferenceCancelled("inference cancelled: its chunk would be refused")
        return net(*args, **kwargs)
    return call


class ObservationError(ValueError):
    """The observation cannot be fed to the model (the message says which part and why)."""


@dataclass
class Prepared:
    """An observation turned into model inputs (shared by every candidate of a batch).

    clean: (1, 16, T, h, w) float32 latents of the raw video *before* injection (decode needs them);
    proprio_norm: (proprio_dim,) float64 normalised proprio; text: (1, L, D) embedding;
    images: camera -> (S, S, 3) uint8 model-input image; timings: seconds per stage so far.
    """

    clean: torch.Tensor
    proprio_norm: np.ndarray
    text: torch.Tensor
    images: Dict[str, np.ndarray]
    timings: Dict[str, float] = field(default_factory=dict)


class CosmosPolicy:
    """The policy backend (implements :class:`cosmos_policy_ros.core.types.PolicyBackend`)."""

    period: float = 0.04

    def __init__(self, network: CosmosNetwork, layout: LatentLayout, stats: DatasetStats,
                 embeddings: Mapping[str, torch.Tensor], sampler: Optional[SamplerConfig] = None,
                 image: Optional[ImageConfig] = None, policy_id: str = "cosmos-policy", period: float = 0.04,
                 default_seed: int = DEFAULT_SEED, decode_future_images: DecodeMode = True, clip_actions: bool = True,
                 encode_prefix_only: bool = True):
        if stats.action_dim != layout.action_dim or stats.proprio_dim != layout.proprio_dim:
            raise ValueError(f"stats dims (actions {stats.action_dim}, proprio {stats.proprio_dim}) do not match "
                             f"layout {layout.name!r} (actions {layout.action_dim}, proprio {layout.proprio_dim})")
        if not embeddings:
            raise ValueError("expected at least one instruction embedding")
        d = network.cfg.embedding_dim
        for k, e in embeddings.items():
            if e.ndim != 3 or e.shape[0] != 1 or e.shape[2] != d:
                raise ValueError(f"embedding of {k!r}: expected shape (1, L, {d}), got {tuple(e.shape)}")
        if period <= 0:
            raise ValueError(f"period: expected > 0, got {period}")
        frame = int(np.prod(network.cfg.latent_frame_shape))
        if layout.horizon * layout.action_dim > frame or layout.proprio_dim > frame:
            raise ValueError(f"layout {layout.name!r} vectors do not fit a latent frame of {frame} values")
        self.network = network.eval()
        self.layout = layout
        self.stats = stats
        self.embeddings = {k: v.detach().to("cpu") for k, v in embeddings.items()}
        self.backbone = get_backbone(network.cfg.backbone)  # the network config's backbone picks the sampler
        self.sampler = sampler or self.backbone.default_sampler()
        self.backbone.check_sampler(self.sampler)
        self.image = image or ImageConfig(size=network.cfg.image_size)
        if self.image.size != network.cfg.image_size:
            raise ValueError(f"image size {self.image.size} does not match the network's {network.cfg.image_size}")
        self.policy_id = policy_id
        self.period = float(period)
        self.default_seed = int(default_seed)
        self.decode_future_images = _check_decode(decode_future_images)
        self.clip_actions = clip_actions
        self.encode_prefix_only = encode_prefix_only
        self.horizon = layout.horizon
        self.action_dim = layout.action_dim

    # ---- PolicyBackend -------------------------------------------------------------------------
    @property
    def instructions(self) -> List[str]:
        return sorted(self.embeddings)

    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def dtype(self) -> str:
        """Transformer dtype name ("float32", "bfloat16", ...), recorded in saved checkpoints."""
        return str(self.network.dtype).replace("torch.", "")

    supports_cancel = True  # infer/infer_batch/sample take ``cancel`` (see :meth:`sample`)

    def infer(self, obs: Observation, seed: Optional[int] = None, **kwargs) -> PolicyOutput:
        """One chunk for ``obs`` (seed defaults to ``default_seed``, the released deploy's 195)."""
        return self.infer_batch(obs, [self.default_seed if seed is None else int(seed)], **kwargs)[0]

    def infer_batch(self, obs: Observation, seeds: Sequence[int], actions: Optional[np.ndarray] = None,
                    start: str = "policy", sampler: Optional[SamplerConfig] = None,
                    decode_images: Optional[DecodeMode] = None,
                    cancel: Optional[Callable[[], bool]] = None,
                    prefix: Optional[ChunkPrefix] = None) -> List[PolicyOutput]:
        """One sample per seed, all in one batch per network call.

        actions: for ``start="world_model"`` (planning), the given chunk(s) in robot units, (H, A) for all
        seeds or (N, H, A) one per seed; injected into the action frame as a condition.
        sampler: override the checkpoint's sampler settings (e.g. autoregressive with 1..5 steps).
        decode_images: override ``decode_future_images`` (decoding is the costliest stage on CPU): True, False, or
        ``"deferred"`` (each output decodes its own images on :meth:`PolicyOutput.decode_future`, e.g. after its
        chunk has been sent).
        cancel, prefix: see :meth:`sample`.
        """
        t_total = time.perf_counter()
        cfg = sampler or self.sampler
        decode = _check_decode(decode_images if decode_images is not None else self.decode_future_images)
        stages = plan_stages(self.layout, cfg, start)
        self._check_start(start, actions, None)
        prep = self.prepare(obs, upto=self._frames_needed(stages[0].condition, decode))
        outs, _ = self.sample(prep, seeds, actions=actions, start=start, sampler=cfg, decode_images=decode,
                              cancel=cancel, prefix=prefix)
        total = time.perf_counter() - t_total
        for o in outs:
            o.timings["total"] = total
        return outs

    def _check_start(self, start: str, actions, latents) -> None:
        if start in ("world_model", "value_q") and actions is None and latents is None:
            raise ValueError(f"start={start!r} needs the action chunk (actions=...) or latents from an earlier sample")
        if start == "value_v" and latents is None:
            raise ValueError("start='value_v' needs latents holding the future state (latents=...)")

    def sample(self, prep: Prepared, seeds: Sequence[int], actions: Optional[np.ndarray] = None,
               start: str = "policy", sampler: Optional[SamplerConfig] = None,
               decode_images: Optional[DecodeMode] = None, latents: Optional[torch.Tensor] = None,
               cancel: Optional[Callable[[], bool]] = None, prefix: Optional[ChunkPrefix] = None):
        """Lower-level entry for planners: sample from an already prepared (encoded) observation.

        latents: (B, 16, T, h, w) latents of an earlier sample (returned as the second value) whose frames
        serve as the clean conditioning frames, e.g. a world-model sample's future state for a
        ``start="value_q"`` / ``"value_v"`` value query; the current proprio (and ``actions`` if given)
        are injected on top. Returns (outputs, x0 latents (B, 16, T, h, w) float32).
        Prepare with ``upto=None`` when latents of later frames are read from ``prep``.
        cancel: called before every network call (and before decoding); when it returns True the sample stops with
        :class:`InferenceCancelled` (the policy node's way to drop a chunk the commander would refuse, e.g.
        planned from an observation older than an episode start, within one network call instead of a whole
        inference).
        prefix: real-time chunking (:mod:`cosmos_policy_ros.core.rtc`): every sample's action chunk is inpainted
        toward ``prefix.target`` (robot units, the running chunk aligned to this observation) with the prefix's
        method; its first ``prefix.frozen`` actions are the target exactly. Every candidate of a batch gets the
        same prefix. ``guided`` runs the network with gradients (one backward pass per call).
        """
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("expected at least one seed")
        self._check_start(start, actions, latents)
        cfg = sampler or self.sampler
        self.backbone.check_sampler(cfg)
        decode = _check_decode(decode_images if decode_images is not None else self.decode_future_images)
        stages = plan_stages(self.layout, cfg, start)
        clean = self._inject(prep, len(seeds), actions, latents)  # (B, 16, T, h, w) float32
        text = prep.text.to(self.device).expand(len(seeds), -1, -1)
        inp = self._inpainting(prep, prefix, len(seeds), clean.device)
        t0 = time.perf_counter()
        # guided inpainting needs gradients through the network: no inference mode (inference tensors cannot be
        # saved for backward); gradients are enabled only inside its vector-Jacobian product
        grad_ctx = torch.no_grad() if inp is not None and inp.method == "guided" else torch.inference_mode()
        with grad_ctx:
            dev = clean.device
            net = self.network.net_fn(text)
            if cancel is not None:
                net = _cancellable(net, cancel)
            res = run_sampler(net, clean, stages, seeds, cfg,
                             timer=lambda: (_sync(dev), time.perf_counter())[1], inpaint=inp)
        _sync(res.x0.device)
        t_denoise = time.perf_counter() - t0
        if cancel is not None and decode is True and cancel():  # decoding the future images is the costliest stage on CPU
            raise InferenceCancelled("inference cancelled before decoding: its chunk would be refused")
        outs = self._extract(res.x0, prep, seeds, decode)
        if prefix is not None and prefix.frozen > 0:
            for o in outs:  # frozen actions execute anyway: exactly the target, whatever decoding did to them
                o.actions[: prefix.frozen] = prefix.target[: prefix.frozen].astype(o.actions.dtype)
        for o in outs:
            o.timings.update(prep.timings)
            o.timings["denoise"] = t_denoise
            for name, sec in res.seconds.items():
                o.timings[f"denoise_{name}"] = sec
            o.timings["network_calls"] = float(sum(res.calls.values()))
            o.timings["total"] = sum(prep.timings.values()) + t_denoise + o.timings.get("decode", 0.0)
        return outs, res.x0.to(torch.float32)

    def _inpainting(self, prep: Prepared, prefix: Optional[ChunkPrefix], batch: int,
                    device: torch.device) -> Optional[Inpainting]:
        """The latent-level inpainting of the action frame for ``prefix`` (None: off)."""
        if prefix is None:
            return None
        lay = self.layout
        if prefix.target.shape[1] != lay.action_dim:
            raise ValueError(f"prefix: expected targets of {lay.action_dim} action values, got {prefix.target.shape[1]}")
        target = prefix.padded_target(lay.horizon)  # (H, A) robot units
        tn = codec.normalize_actions(target, self.stats, proprio=self._raw_proprio(prep))  # model units
        w = prefix.step_weights(lay.horizon)
        t_lat, w_lat = lift_chunk(torch.from_numpy(np.ascontiguousarray(tn))[None], torch.from_numpy(w)[None],
                                  self.network.cfg.latent_frame_shape)
        return Inpainting(lay.action_index, t_lat.to(device), w_lat.to(device), prefix.method, prefix.beta)

    # ---- stages --------------------------------------------------------------------------------
    def check_observation(self, obs: Observation) -> None:
        """Raise ObservationError unless ``obs`` can be fed to this policy."""
        if obs.instruction not in self.embeddings:
            raise ObservationError(f"unknown instruction {obs.instruction!r}; known instructions: {self.instructions}")
        missing = [c for c in self.layout.cameras if c not in obs.images]
        if missing:
            raise ObservationError(f"missing camera images {missing}; expected {list(self.layout.cameras)}")
        for cam in self.layout.cameras:
            try:
                check_image(obs.images[cam], self.image, f"camera {cam!r}")
            except ValueError as e:
                raise ObservationError(str(e)) from None
        p = np.asarray(obs.proprio)
        if p.shape != (self.layout.proprio_dim,):
            raise ObservationError(f"proprio: expected shape ({self.layout.proprio_dim},), got {p.shape}")
        if not np.issubdtype(p.dtype, np.number) or not np.all(np.isfinite(p.astype(np.float64))):
            raise ObservationError(f"proprio: expected finite numbers, got {p.tolist()}")

    def _frames_needed(self, condition: Sequence[int], decode: bool) -> Optional[int]:
        """Last latent frame whose clean latent is used: the first pass's conditioning frames, and for
        decoding the vector frames before the last future image. None = all (prefix shortcut off)."""
        if not self.encode_prefix_only:
            return None
        need = set(condition)
        fut = self.layout.image_indices("future")
        if decode and fut:
            need |= {i for i in self.layout.injected_indices() if i < max(fut.values())}
        return max(need)

    def prepare(self, obs: Observation, upto: Optional[int] = None) -> Prepared:
        """Check, preprocess, build the raw video and VAE-encode it (one call) -> :class:`Prepared`.

        upto: encode only the raw frames of latent frames 0..upto (the VAE is causal, so those latents are
        bit-identical to a full encode: test_policy checks it); later frames are left zero, as the sampler
        starts generated frames from pure noise. None encodes the whole sequence like the reference.
        """
        t0 = time.perf_counter()
        self.check_observation(obs)
        cams = self.layout.cameras
        # np.stack / np.array copy once: camera frames from ROS are read-only views of message buffers
        if len({obs.images[c].shape for c in cams}) == 1 and not self.image.rois:
            raw = torch.from_numpy(np.stack([obs.images[c] for c in cams])).permute(0, 3, 1, 2)  # (ncam, 3, H, W)
            imgs = preprocess_batch(raw, self.image)  # (ncam, 3, S, S) uint8
        else:  # cameras of different sizes, or a camera with its own ROI: one by one
            imgs = torch.cat([preprocess_batch(torch.from_numpy(np.array(obs.images[c])).permute(2, 0, 1)[None],
                                               self.image, c) for c in cams])
        by_cam = {c: imgs[i] for i, c in enumerate(cams)}
        n_raw = self.layout.num_raw_frames if upto is None else self.layout.raw_frames(upto)[-1] + 1
        video = self._raw_video(by_cam, n_raw)  # (1, 3, n_raw, S, S) in [-1, 1]
        t1 = time.perf_counter()
        with torch.inference_mode():
            clean = self.network.encode(video.to(self.device))  # (1, 16, T, h, w) float32
        _sync(clean.device)
        t2 = time.perf_counter()
        n_lat = self.layout.num_frames if upto is None else upto + 1
        if clean.shape[2] != n_lat:
            raise RuntimeError(f"VAE gave {clean.shape[2]} latent frames, expected {n_lat}")
        if n_lat < self.layout.num_frames:  # frames never read as clean latents
            pad = clean.new_zeros(clean.shape[:2] + (self.layout.num_frames - n_lat,) + clean.shape[3:])
            clean = torch.cat([clean, pad], dim=2)
        return Prepared(clean=clean, proprio_norm=codec.normalize_proprio(np.asarray(obs.proprio, np.float64), self.stats),
                        text=self.embeddings[obs.instruction],
                        images={c: by_cam[c].permute(1, 2, 0).numpy() for c in cams},
                        timings={"preprocess": t1 - t0, "encode": t2 - t1})

    def _raw_video(self, by_cam: Mapping[str, torch.Tensor], n_raw: Optional[int] = None) -> torch.Tensor:
        """camera -> (3, S, S) uint8 -> (1, 3, F, S, S) float32 in [-1, 1] following the layout.
        Blank frames (frame 0 and the vector slots) are black images (UNVERIFIED: the reference's blank)."""
        s = self.image.size
        lay = self.layout
        frames = torch.zeros((lay.num_raw_frames, 3, s, s), dtype=torch.uint8)
        for k, slot in enumerate(lay.slots):
            if slot.kind == "image":  # current image, and its copy as the future placeholder
                for f in lay.raw_frames(k):
                    frames[f] = by_cam[slot.camera]
        return to_model_range(frames[:n_raw]).permute(1, 0, 2, 3).unsqueeze(0)

    def _inject(self, prep: Prepared, batch: int, actions: Optional[np.ndarray],
                latents: Optional[torch.Tensor] = None) -> torch.Tensor:
        lay, fs = self.layout, self.network.cfg.latent_frame_shape
        if latents is not None:
            if tuple(latents.shape) != (batch,) + tuple(prep.clean.shape[1:]):
                raise ValueError(f"latents: expected shape {(batch,) + tuple(prep.clean.shape[1:])}, got {tuple(latents.shape)}")
            x = latents.to(prep.clean.device, torch.float32).clone()
        else:
            x = prep.clean.expand(batch, -1, -1, -1, -1).clone()  # (B, 16, T, h, w)
        p = torch.from_numpy(prep.proprio_norm).to(x.device, torch.float32)[None].expand(batch, -1)
        x[:, :, lay.current_proprio_index] = codec.inject(p, fs)
        if actions is not None:
            a = np.asarray(actions, dtype=np.float64)
            if a.shape == (lay.horizon, lay.action_dim):
                a = np.broadcast_to(a, (batch,) + a.shape)
            if a.shape != (batch, lay.horizon, lay.action_dim) or not np.all(np.isfinite(a)):
                raise ValueError(f"actions: expected finite ({lay.horizon}, {lay.action_dim}) or "
                                 f"({batch}, {lay.horizon}, {lay.action_dim}), got {a.shape}")
            an = codec.normalize_actions(a, self.stats, proprio=self._raw_proprio(prep))  # (B, H, A) model units
            an = torch.from_numpy(an.reshape(batch, -1)).to(x.device, torch.float32)
            x[:, :, lay.action_index] = codec.inject(an, fs)
        return x

    def _raw_proprio(self, prep: Prepared) -> np.ndarray:
        """The observation's proprio in robot units (relative actions are measured from it), recovered from the
        normalised one: the min-max map is linear, so this is exact to rounding."""
        return codec.unnormalize_proprio(prep.proprio_norm, self.stats)

    def _extract(self, x0: torch.Tensor, prep: Prepared, seeds: Sequence[int], decode: DecodeMode) -> List[PolicyOutput]:
        lay = self.layout
        b = x0.shape[0]
        a_norm = codec.extract(x0[:, :, lay.action_index], lay.horizon * lay.action_dim).cpu().numpy()
        p_norm = codec.extract(x0[:, :, lay.future_proprio_index], lay.proprio_dim).cpu().numpy()
        v_raw = codec.extract_value(x0[:, :, lay.value_index]).cpu().numpy()
        images: List[Dict[str, np.ndarray]] = [{} for _ in range(b)]
        t_dec = 0.0
        if decode is True:
            t0 = time.perf_counter()
            images = self._decode_future(x0, prep.clean)
            t_dec = time.perf_counter() - t0
        outs = []
        for i in range(b):
            acts, clipped = codec.unnormalize_actions(a_norm[i].reshape(lay.horizon, lay.action_dim), self.stats,
                                                      clip=self.clip_actions, proprio=self._raw_proprio(prep))
            outs.append(PolicyOutput(
                actions=acts.astype(np.float32), future_images=images[i],
                future_proprio=codec.unnormalize_proprio(p_norm[i], self.stats).astype(np.float32),
                value=float(codec.value_to_unit(v_raw[i])), timings={"decode": t_dec}, seed=int(seeds[i]),
                clipped=clipped))
            if decode == "deferred":  # only this sample's row: a planner decodes the candidate it picks, not all
                outs[-1].pending_decode = lambda row=x0[i:i + 1], clean=prep.clean: self._decode_future(row, clean)[0]
        return outs

    def _decode_future(self, x0: torch.Tensor, clean: torch.Tensor) -> List[Dict[str, np.ndarray]]:
        """Vector frames back to their clean latents, decode up to the last future image (the decoder is
        causal), take each future image slot's first raw frame."""
        lay = self.layout
        fut = lay.image_indices("future")
        if not fut:
            return [{} for _ in range(x0.shape[0])]
        lat = x0.to(torch.float32).clone()
        # latents decoded only up to the last future image frame; vector frames get the clean ones back
        injected = list(lay.injected_indices())
        last = max(fut.values())
        lat[:, :, injected] = clean[:, :, injected].to(lat.device).expand(lat.shape[0], -1, -1, -1, -1)
        with torch.inference_mode():
            video = self.network.decode(lat[:, :, : last + 1])  # (B, 3, F', S, S)
        u8 = from_model_range(video)  # (B, 3, F', S, S) uint8
        out = []
        for b in range(lat.shape[0]):
            out.append({cam: u8[b, :, lay.raw_frame(k)].permute(1, 2, 0).cpu().numpy() for cam, k in fut.items()})
        return out

    # ---- conversion helpers --------------------------------------------------------------------
    def to_checkpoint_data(self) -> CheckpointData:
        """The policy as plain tensors + configs (for :func:`save_policy`)."""
        return CheckpointData(network=self.network.cfg, layout=self.layout, sampler=self.sampler, image=self.image,
                              stats=self.stats, embeddings=dict(self.embeddings),
                              transformer_state=self.network.transformer.state_dict(),
                              vae_state=self.network.vae.state_dict(), policy_id=self.policy_id, dtype=self.dtype,
                              latent_norm=self.network.latent_norm_state())


# ================================================================================================
# building, loading, saving
# ================================================================================================
def _to(module: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
    """Move, and cast only when needed (diffusers warns on every dtype cast through ``to``)."""
    module = module.to(device)
    if any(p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype=dtype)
    return module


def policy_from_data(data: CheckpointData, device: Union[str, torch.device] = "cpu",
                     dtype: Optional[str] = None, **kwargs) -> CosmosPolicy:
    """Build the modules on the meta device, strict-load the weights, cast and move them."""
    dt = get_dtype(dtype or ("float32" if torch.device(device).type == "cpu" else data.dtype))
    with torch.device("meta"):
        transformer = build_transformer(data.network)
        vae = build_vae(data.network)
    reports = {r.what.split(" ")[0]: r for r in data.reports}
    load_strict(transformer, data.transformer_state, "transformer weights", reports.get("transformer"), assign=True)
    load_strict(vae, data.vae_state, "VAE weights", reports.get("VAE"), assign=True)
    # the VAE stays float32 unless bf16 is asked for on a GPU (it is small; float32 keeps images exact)
    net = CosmosNetwork(data.network, _to(transformer, device, dt), _to(vae, device, torch.float32))
    net.latents_mean = net.latents_mean.to(device)  # buffers were created on the default device
    net.latents_std = net.latents_std.to(device)
    if data.latent_norm is not None:
        try:
            net.set_latent_norm(data.latent_norm["mean"], data.latent_norm["std"])
        except ValueError as e:
            raise CheckpointError(f"{data.source or 'checkpoint'}: {e}") from None
        if net.latent_norm_mean.shape[2] != data.layout.num_frames:
            raise CheckpointError(f"{data.source or 'checkpoint'}: latent norm covers {net.latent_norm_mean.shape[2]} "
                                  f"frames, the layout has {data.layout.num_frames}")
    policy = CosmosPolicy(net, data.layout, data.stats, data.embeddings, data.sampler, data.image,
                          policy_id=data.policy_id, **kwargs)
    return policy


def load_policy(source: Union[str, Path], device: Union[str, torch.device] = "cpu", dtype: Optional[str] = None,
                vae_source: Optional[Union[str, Path]] = None, layout: Union[str, LatentLayout] = "aloha",
                image_size: int = 224, cache_dir: Optional[Union[str, Path]] = None, write_cache: bool = True,
                local_files_only: bool = False, assets: Sequence[Union[str, Path]] = (), **kwargs) -> CosmosPolicy:
    """Load a policy from a local directory or a Hugging Face repo id, in our format or NVIDIA's (either
    backbone; ``assets``: folders with the statistics / text embeddings the weights' folder lacks).

    NVIDIA checkpoints are converted once (strict key / shape check, readable report on failure) and
    cached in our format (see :func:`cosmos_policy_ros.core.checkpoint.load_checkpoint`). ``dtype``
    defaults to float32 on CPU and to the checkpoint's dtype (bfloat16 for NVIDIA) elsewhere. Extra
    keyword arguments go to :class:`CosmosPolicy` (period, default_seed, decode_future_images, ...).
    """
    data = load_checkpoint(source, vae_source=vae_source, layout=layout, image_size=image_size,
                           cache_dir=cache_dir, write_cache=write_cache, local_files_only=local_files_only,
                           assets=assets)
    return policy_from_data(data, device=device, dtype=dtype, **kwargs)


def save_policy(policy: CosmosPolicy, directory: Union[str, Path]) -> Path:
    """Write ``policy`` in our checkpoint format (config.json, model/vae/t5 safetensors, stats JSON)."""
    return save_checkpoint(policy.to_checkpoint_data(), directory)


def aloha_like_stats(action_dim: int = 14, proprio_dim: int = 14) -> DatasetStats:
    """Plausible ALOHA ranges (arm joints about +-1.5 rad, grippers 0..1) for tiny random policies."""
    def ranges(n):
        lo, hi = np.full(n, -1.5), np.full(n, 1.5)
        for g in (6, 13):  # ALOHA gripper slots
            if g < n:
                lo[g], hi[g] = 0.0, 1.0
        return lo, hi
    lo, hi = ranges(action_dim)
    plo, phi = ranges(proprio_dim)
    return DatasetStats.from_dict({
        "actions_min": lo, "actions_max": hi, "actions_mean": (lo + hi) / 2, "actions_std": (hi - lo) / 4,
        "actions_median": (lo + hi) / 2, "proprio_min": plo, "proprio_max": phi, "proprio_mean": (plo + phi) / 2,
        "proprio_std": (phi - plo) / 4, "proprio_median": (plo + phi) / 2})


DEFAULT_TINY_INSTRUCTIONS = ("put the candy in the bowl", "transfer the cube", "fold the shirt")


def make_tiny_policy(seed: int = 0, image_size: int = 64, layout: Union[str, LatentLayout] = ALOHA,
                     instructions: Sequence[str] = DEFAULT_TINY_INSTRUCTIONS, stats: Optional[DatasetStats] = None,
                     sampler: Optional[SamplerConfig] = None, network: Optional[NetworkConfig] = None,
                     policy_id: Optional[str] = None, backbone: str = "predict2", **kwargs) -> CosmosPolicy:
    """A small randomly initialised policy (same classes as the 2B one) for tests, the demo and training.

    Deterministic for a given seed; the global torch RNG is left untouched. ``backbone`` picks the tiny
    network's backbone (``network``, when given, names its own).
    """
    lay = layout if isinstance(layout, LatentLayout) else get_layout(layout)
    cfg = network or tiny_network_config(image_size=image_size, backbone=backbone)
    st = stats or aloha_like_stats(lay.action_dim, lay.proprio_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = build_transformer(cfg)
        vae = build_vae(cfg)
        g = torch.Generator().manual_seed(seed + 1)
        emb = {ins: torch.randn(1, cfg.text_len, cfg.embedding_dim, generator=g) for ins in instructions}
    net = CosmosNetwork(cfg, transformer, vae)
    return CosmosPolicy(net, lay, st, emb, sampler, ImageConfig(size=cfg.image_size),
                        policy_id=policy_id or f"tiny-{lay.name}-seed{seed}", **kwargs)
