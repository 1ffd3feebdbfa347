"""Training objectives: the per-batch split into policy / world-model / value samples, the hybrid noise
distribution and the rectified-flow denoising loss (facts sheet section 5).

Every objective is the same denoising task over ONE latent sequence; they differ only in which frames are
conditioning (given clean, zero loss) and which are noised and predicted:

- ``policy``      (50%): condition on blank + current proprio + current images (layout mode ``policy``);
- ``world_model`` (25%): also the action chunk (layout mode ``world_model``);
- ``value``       (25%): base run: everything but the value frame (layout mode ``value_q``); planning
  recipe: the current state and the action are masked too, so the model learns V(s') (``value_v``).

Two formulations, one per backbone (``cosmos_policy_ros.core.backbone``: the network config's backbone picks
``ObjectiveConfig.formulation`` and its defaults):

- ``edm`` (Predict2): per sample one sigma for all its frames: with probability 0.7 log-normal (mean ln 4, std
  1.2), else uniform in [1, 85]; times sqrt(number of latent frames). Loss:
  ``10 * mean((x0 - x0_hat)^2 * (1 + sigma)^2 / sigma^2)`` over all elements, conditioning frames adding 0.
- ``rf`` (Predict2.5, facts sheet predict2.5 section 3): ``x = sigma * eps + (1 - sigma) * x0``, sigma in [0, 1]
  drawn as ``u = sigmoid(N(0, 1))``, ``s = (1000 - floor(1000 u)) / 1000``, ``sigma = 5 s / (1 + 4 s)``; the
  network predicts the velocity ``eps - x0``; loss ``mean((v - v_hat)^2)`` over all elements (conditioning
  frames: the output is replaced by the target, so they add 0) with the action frame weighted x16.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from cosmos_policy_ros.core.layout import LatentLayout
from cosmos_policy_ros.core.sampler import rf_scalings

OBJECTIVES = ("policy", "world_model", "value")
VALUE_MODES = ("value_q", "value_v")
FORMULATIONS = ("edm", "rf")


@dataclass
class ObjectiveConfig:
    """Objective split, formulation and noise distribution (defaults: the Predict2 reference's base run; a
    backbone's own defaults come from :meth:`for_backbone`)."""

    policy: float = 0.5
    world_model: float = 0.25
    value: float = 0.25
    value_mode: str = "value_q"
    p_lognormal: float = 0.7
    lognormal_mean: float = math.log(4.0)
    lognormal_std: float = 1.2
    uniform_low: float = 1.0
    uniform_high: float = 85.0
    sigma_scale: Optional[float] = None  # None: sqrt(number of latent frames)
    loss_scale: float = 10.0
    min_sigma: float = 1e-3
    # weight of the action latent frame's squared error relative to the other frames (reference: 1). The
    # action is one of 11 frames, so with unit-scale image latents (--latent-norm data) the future images
    # dominate the gradient; a larger weight spends the small sim network's capacity on the chunk.
    action_weight: float = 1.0
    # probability that a policy sample's current proprio frame is generated (noised, in the loss) instead of
    # given. Ours (reference: 0). A demo's arm pose already says where the object is after the first steps,
    # so a policy that always sees it can learn to ignore the cameras and then has nothing to go on at t = 0,
    # where every episode starts from the same pose; without the proprio it must read the images.
    proprio_dropout: float = 0.0
    #: "edm" (Predict2: sigma in [0, inf), x0 loss) or "rf" (Predict2.5: sigma in [0, 1], velocity loss)
    formulation: str = "edm"
    #: rf only: the time shift of the training sigmas (reference 5)
    shift: float = 5.0

    @classmethod
    def for_backbone(cls, backbone: str, **overrides) -> "ObjectiveConfig":
        """The backbone's objective defaults (its table entry), then ``overrides`` (None values ignored)."""
        from cosmos_policy_ros.core.backbone import get_backbone
        kw = dict(get_backbone(backbone).objective)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    @property
    def eval_sigma(self) -> float:
        """A fixed mid-range noise level for yardstick evaluations: EDM sigma 4, and the same noise-to-signal
        ratio for rf (4 / (1 + 4) = 0.8)."""
        return 0.8 if self.formulation == "rf" else 4.0

    def __post_init__(self):
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"objective formulation: expected one of {FORMULATIONS}, got {self.formulation!r}")
        if not self.shift > 0:
            raise ValueError(f"objective shift: expected > 0, got {self.shift}")
        fr = (self.policy, self.world_model, self.value)
        if min(fr) < 0 or sum(fr) <= 0:
            raise ValueError(f"objective split: expected non-negative fractions with a positive sum, got {fr}")
        if self.value_mode not in VALUE_MODES:
            raise ValueError(f"objective value_mode: expected one of {VALUE_MODES}, got {self.value_mode!r}")
        if not 0.0 <= self.p_lognormal <= 1.0:
            raise ValueError(f"objective p_lognormal: expected in [0, 1], got {self.p_lognormal}")
        if not 0 < self.uniform_low <= self.uniform_high:
            raise ValueError(f"objective uniform range: expected 0 < low <= high, got ({self.uniform_low}, {self.uniform_high})")
        if not self.action_weight > 0:
            raise ValueError(f"objective action_weight: expected > 0, got {self.action_weight}")
        if not 0.0 <= self.proprio_dropout < 1.0:
            raise ValueError(f"objective proprio_dropout: expected in [0, 1), got {self.proprio_dropout}")
        if self.lognormal_std < 0 or self.loss_scale <= 0:
            raise ValueError(f"objective: expected lognormal_std >= 0 and loss_scale > 0, got {self.lognormal_std}, {self.loss_scale}")

    @property
    def fractions(self) -> Dict[str, float]:
        total = self.policy + self.world_model + self.value
        return {"policy": self.policy / total, "world_model": self.world_model / total, "value": self.value / total}

    def layout_mode(self, objective: str) -> str:
        """Objective name -> layout conditioning mode."""
        if objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
        return self.value_mode if objective == "value" else objective


def split_counts(batch: int, cfg: ObjectiveConfig) -> Dict[str, int]:
    """Exact per-batch counts by largest remainder (e.g. 200 -> 100 / 50 / 50; 8 -> 4 / 2 / 2)."""
    fr = cfg.fractions
    raw = {k: fr[k] * batch for k in OBJECTIVES}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    rest = batch - sum(counts.values())
    for k in sorted(OBJECTIVES, key=lambda k: (-(raw[k] - counts[k]), OBJECTIVES.index(k)))[:rest]:
        counts[k] += 1
    return counts


def objectives_for_batch(batch: int, cfg: ObjectiveConfig) -> List[str]:
    """Objective of each position of a global batch: the first ``policy`` count positions are policy
    samples, then world-model, then value (positions hold randomly drawn samples, so this is unbiased)."""
    c = split_counts(batch, cfg)
    return ["policy"] * c["policy"] + ["world_model"] * c["world_model"] + ["value"] * c["value"]


def condition_masks(objectives: Sequence[str], layout: LatentLayout, cfg: ObjectiveConfig) -> torch.Tensor:
    """(B, T) bool conditioning masks, True = clean conditioning frame."""
    rows = [layout.condition_mask(cfg.layout_mode(o)) for o in objectives]
    return torch.tensor(rows, dtype=torch.bool)


def sample_sigma(gen: torch.Generator, cfg: ObjectiveConfig, num_frames: int) -> float:
    """One training noise level of ``cfg.formulation``."""
    return _SIGMA_SAMPLERS[cfg.formulation](gen, cfg, num_frames)


def sample_sigma_rf(gen: torch.Generator, cfg: ObjectiveConfig, num_frames: int) -> float:
    """rf: ``u = sigmoid(N(0, 1))`` on a 1000-point grid, ``s = (1000 - floor(1000 u)) / 1000`` in (0, 1],
    shifted: ``shift * s / (1 + (shift - 1) s)`` (``num_frames`` unused: no per-length scaling)."""
    n = float(torch.randn(1, generator=gen, dtype=torch.float64))
    k = math.floor(1000.0 / (1.0 + math.exp(-n)))
    s = (1000 - min(k, 999)) / 1000.0
    return cfg.shift * s / (1.0 + (cfg.shift - 1.0) * s)


def sample_sigma_edm(gen: torch.Generator, cfg: ObjectiveConfig, num_frames: int) -> float:
    """edm: 70% log-normal(ln 4, 1.2), 30% uniform [1, 85], times sqrt(num_frames)."""
    u, z, v = torch.rand(3, generator=gen, dtype=torch.float64).tolist()
    if u < cfg.p_lognormal:
        # Box-Muller from the same generator keeps the draw count fixed (3 uniforms + this pair)
        u1, u2 = torch.rand(2, generator=gen, dtype=torch.float64).tolist()
        n = math.sqrt(-2.0 * math.log(max(u1, 1e-300))) * math.cos(2 * math.pi * u2)
        s = math.exp(cfg.lognormal_mean + cfg.lognormal_std * n)
    else:
        torch.rand(2, generator=gen, dtype=torch.float64)
        s = cfg.uniform_low + (cfg.uniform_high - cfg.uniform_low) * v
    scale = math.sqrt(num_frames) if cfg.sigma_scale is None else float(cfg.sigma_scale)
    return max(s * scale, cfg.min_sigma)


@dataclass
class LossOutput:
    """loss: scalar (mean over the batch of per-sample losses); per_sample: (B,) detached;
    x0_hat: (B, C, T, h, w) detached prediction (conditioning frames = clean)."""

    loss: torch.Tensor
    per_sample: torch.Tensor
    x0_hat: torch.Tensor


def denoising_loss(net_fn, x0: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor,
                   cfg: ObjectiveConfig, frame_weights: Optional[torch.Tensor] = None) -> LossOutput:
    """The loss of one batch in ``cfg.formulation`` (arguments as :func:`denoising_loss_edm`)."""
    return _LOSSES[cfg.formulation](net_fn, x0, cond, sigma, eps, cfg, frame_weights)


def _check_frame_weights(frame_weights: Optional[torch.Tensor], t: int) -> None:
    if frame_weights is not None and frame_weights.shape != (t,):
        raise ValueError(f"frame_weights: expected shape ({t},), got {tuple(frame_weights.shape)}")


def velocity_loss(net_fn, x0: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor,
                  cfg: ObjectiveConfig, frame_weights: Optional[torch.Tensor] = None) -> LossOutput:
    """The Predict2.5 loss: ``x = sigma * eps + (1 - sigma) * x0`` (sigma (B,) in [0, 1]), the network (time input
    sigma per frame, 0 on conditioning frames, which are fed clean) predicts ``v = eps - x0``; conditioning frames'
    output is replaced by the target (zero loss). ``loss_scale * mean((v - v_hat)^2 * frame_weights)`` per sample;
    ``x0_hat = x - sigma * v_hat``."""
    b, _, t = x0.shape[:3]
    _check_frame_weights(frame_weights, t)
    cond = cond.to(x0.device)
    s = sigma.to(x0)
    sig = torch.where(cond, torch.zeros((), dtype=x0.dtype, device=x0.device), s[:, None])  # (B, T)
    cond5 = cond[:, None, :, None, None]
    s5 = s[:, None, None, None, None]
    x = torch.where(cond5, x0, s5 * eps + (1.0 - s5) * x0)
    target = eps - x0
    out = net_fn(x, sig, cond).to(x0.dtype)
    v_hat = torch.where(cond5, target, out)
    w = torch.ones((), dtype=x0.dtype, device=x0.device)
    if frame_weights is not None:
        w = frame_weights.to(x0)[None, None, :, None, None]
    per_sample = cfg.loss_scale * ((target - v_hat) ** 2 * w).flatten(1).mean(dim=1)  # (B,)
    x0_hat = torch.where(cond5, x0, x - s5 * v_hat)
    return LossOutput(loss=per_sample.mean(), per_sample=per_sample.detach(), x0_hat=x0_hat.detach())


def denoising_loss_edm(net_fn, x0: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor,
                       cfg: ObjectiveConfig, frame_weights: Optional[torch.Tensor] = None) -> LossOutput:
    """The Predict2 loss of one batch (rectified-flow scaling in sigma space).

    net_fn(x_in, c_noise, cond) -> F (the raw network, e.g. ``CosmosNetwork.net_fn(text)``);
    x0: (B, C, T, h, w) clean latents (vectors injected); cond: (B, T) bool; sigma: (B,); eps: like x0.
    Noised frames: ``x = x0 + sigma * eps``; conditioning frames are fed clean with c_noise 0 and their
    prediction is replaced by x0 (zero loss), as in the sampler. frame_weights: optional (T,) weight of
    each latent frame's squared error (:func:`frame_weights`).
    """
    b, _, t = x0.shape[:3]
    cond = cond.to(x0.device)
    sig = torch.where(cond, torch.zeros((), dtype=x0.dtype, device=x0.device), sigma.to(x0)[:, None])  # (B, T)
    c_skip, c_out, c_in, c_noise = rf_scalings(sig)
    c5 = lambda c: c[:, None, :, None, None]  # noqa: E731  (B, T) -> (B, 1, T, 1, 1)
    cond5 = cond[:, None, :, None, None]
    x = torch.where(cond5, x0, x0 + sigma.to(x0)[:, None, None, None, None] * eps)
    out = net_fn(c5(c_in) * x, c_noise, cond).to(x0.dtype)
    x0_hat = torch.where(cond5, x0, c5(c_skip) * x + c5(c_out) * out)
    w = ((1.0 + sigma.to(x0)) ** 2 / sigma.to(x0) ** 2)[:, None, None, None, None]
    if frame_weights is not None:
        _check_frame_weights(frame_weights, t)
        w = w * frame_weights.to(x0)[None, None, :, None, None]  # (B, 1, T, 1, 1)
    per_sample = cfg.loss_scale * ((x0 - x0_hat) ** 2 * w).flatten(1).mean(dim=1)  # (B,)
    return LossOutput(loss=per_sample.mean(), per_sample=per_sample.detach(), x0_hat=x0_hat.detach())


def frame_weights(layout: LatentLayout, cfg: ObjectiveConfig) -> Optional[torch.Tensor]:
    """(T,) per-frame loss weights (the action frame weighted ``cfg.action_weight``), or None when all are 1."""
    if cfg.action_weight == 1.0:
        return None
    w = torch.ones(layout.num_frames)
    w[layout.action_index] = cfg.action_weight
    return w


def modality_frames(layout: LatentLayout) -> Dict[str, Tuple[int, ...]]:
    """Reported modality -> latent frames: action, future proprio, future images, value (and current
    state, which only the V(s') objective generates)."""
    return {
        "action": (layout.action_index,),
        "future_proprio": (layout.future_proprio_index,),
        "future_image": tuple(layout.image_indices("future").values()),
        "value": (layout.value_index,),
        "current_proprio": (layout.current_proprio_index,),
        "current_image": tuple(layout.image_indices("current").values()),
    }


def modality_l1(x0: torch.Tensor, x0_hat: torch.Tensor, cond: torch.Tensor, layout: LatentLayout,
                objectives: Sequence[str]) -> Dict[str, Tuple[float, int]]:
    """Latent-space L1 per modality and objective over the frames each sample generated:
    ``"<objective>/<modality>" -> (sum of per-sample mean |x0 - x0_hat|, number of samples)``.
    Sums and counts (not means) so that ranks can add them before dividing."""
    err = (x0 - x0_hat).abs().mean(dim=(1, 3, 4))  # (B, T): per-frame mean abs error
    gen = ~cond.to(err.device)
    out: Dict[str, Tuple[float, int]] = {}
    for name, frames in modality_frames(layout).items():
        if not frames:
            continue
        idx = list(frames)
        e = err[:, idx].mean(dim=1)  # (B,)
        g = gen[:, idx].all(dim=1)  # (B,) generated in this sample
        for obj in OBJECTIVES:
            sel = g & torch.tensor([o == obj for o in objectives], dtype=torch.bool, device=err.device)
            n = int(sel.sum())
            if n:
                out[f"{obj}/{name}"] = (float(e[sel].sum()), n)
    return out


_SIGMA_SAMPLERS = {"edm": sample_sigma_edm, "rf": sample_sigma_rf}
_LOSSES = {"edm": denoising_loss_edm, "rf": velocity_loss}
