"""The Predict2.5 sampler: rectified flow in sigma in [0, 1], UniPC order 2 on the shift-5 schedule.

Same contract as :mod:`cosmos_policy_ros.core.sampler` (the Predict2 one): the network is
``net_fn(x_in, c_noise, cond) -> F`` with ``x_in`` (B, C, T, H, W), ``c_noise`` (B, T) one network timestep per
latent frame and ``cond`` (B, T) bool; stages come from :func:`~cosmos_policy_ros.core.sampler.plan_stages`.
What differs (facts sheet predict2.5 sections 3-4):

- Path ``x_sigma = sigma * eps + (1 - sigma) * x0``; the network predicts the velocity ``v = eps - x0``, so
  ``x0_hat = x_sigma - sigma * v`` (no other scaling: the network sees ``x_sigma`` itself).
- Schedule for N network calls: ``s = linspace(0.999, 0, N + 1)[:-1]``, ``sigma = shift * s / (1 + (shift - 1) s)``,
  then 0 appended; the network timestep is ``int(1000 sigma) / 1000``. N = 5: 0.9998, 0.9522, 0.8821, 0.7689,
  0.5552 -> 0.
- The update is diffusers' ``UniPCMultistepScheduler`` (bh2, x0-predicting, UniC corrector, lower order on the
  last step, final sigma 0; solver orders 1, 2, 2, 2, 1 for N = 5) fed with our x0 predictions
  (``prediction_type="sample"``). Around it: per-frame timesteps (conditioning frames get 0) and clean-frame
  replacement (conditioning frames are fed clean and their x0 prediction is the clean latent, so they come out
  bit-identical).
- Initial state: pure noise ``eps`` from ``numpy.random.RandomState(seed).standard_normal`` (float32), one
  generator per seed continued between stages, so a batch of candidates gets exactly the noise of one-by-one
  runs. Every step is element-wise over the batch: batched candidates equal one-by-one runs.

Real-time-chunking inpainting (:class:`~cosmos_policy_ros.core.sampler.Inpainting`) works as in the Predict2
sampler: its hook is written for the EDM parameterisation (``x = x0 + sigma_edm * eps``), and the rectified-flow
state is that one scaled by ``1 - sigma`` (``sigma_edm = sigma / (1 - sigma)``), so each call is presented to it
in those units (:class:`EDMView`); gains and the guided vector-Jacobian product then mean the same thing on
both backbones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .sampler import (SAMPLE_MODES, Inpainting, InpaintingDenoiser, NetFn, SampleResult, Stage, condition_rows,
                      run_passes)


@dataclass
class RFSamplerConfig:
    """Predict2.5 sampler settings. ``future_state_steps`` / ``value_steps`` apply to the autoregressive mode
    only; in the parallel mode one sample of ``action_steps`` calls gives action, future state and value."""

    action_steps: int = 5
    future_state_steps: int = 5
    value_steps: int = 5
    mode: str = "parallel"
    shift: float = 5.0
    sigma_start: float = 0.999  # first point of the unshifted grid (the reference's 1 - 1/1000)
    order: int = 2
    num_train_timesteps: int = 1000  # network timestep = int(num_train_timesteps * sigma) / num_train_timesteps
    value_condition: str = "value_q"

    def __post_init__(self):
        for name in ("action_steps", "future_state_steps", "value_steps", "order", "num_train_timesteps"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"rf sampler {name}: expected an integer >= 1, got {v!r}")
            setattr(self, name, int(v))
        if self.mode not in SAMPLE_MODES:
            raise ValueError(f"rf sampler mode: expected one of {SAMPLE_MODES}, got {self.mode!r}")
        if not self.shift > 0:
            raise ValueError(f"rf sampler shift: expected > 0, got {self.shift}")
        if not 0 < self.sigma_start < 1:
            raise ValueError(f"rf sampler sigma_start: expected in (0, 1), got {self.sigma_start}")
        if self.order not in (1, 2, 3):
            raise ValueError(f"rf sampler order: expected 1, 2 or 3, got {self.order}")
        if self.value_condition not in ("value_q", "value_v"):
            raise ValueError(f"rf sampler value_condition: expected 'value_q' or 'value_v', got {self.value_condition!r}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def shift_sigma(s, shift: float = 5.0):
    """The time shift ``shift * s / (1 + (shift - 1) * s)`` (numpy or torch, element-wise)."""
    return shift * s / (1.0 + (shift - 1.0) * s)


def unshifted_grid(n_calls: int, sigma_start: float = 0.999) -> np.ndarray:
    """``linspace(sigma_start, 0, n + 1)[:-1]`` (float64): the grid before the shift."""
    if n_calls < 1:
        raise ValueError(f"expected at least 1 network call, got {n_calls}")
    return np.linspace(float(sigma_start), 0.0, n_calls + 1)[:-1]


def rf_sigmas(n_calls: int, shift: float = 5.0, sigma_start: float = 0.999) -> np.ndarray:
    """The n + 1 sigmas of an n-call sample (float64): n shifted grid points, then 0."""
    return np.concatenate([shift_sigma(unshifted_grid(n_calls, sigma_start), shift), [0.0]])


def make_scheduler(n_calls: int, cfg: RFSamplerConfig):
    """A fresh diffusers UniPC scheduler for one n-call sample on the shift schedule (it is stateful: one per
    stage). ``set_timesteps(sigmas=...)`` applies ``flow_shift`` to the unshifted grid itself, so the shifted
    sigmas, the int64 timesteps and the float32 sigma table are the scheduler's own."""
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(num_train_timesteps=cfg.num_train_timesteps, solver_order=cfg.order,
                                    prediction_type="sample", predict_x0=True, solver_type="bh2",
                                    lower_order_final=True, use_flow_sigmas=True, flow_shift=float(cfg.shift),
                                    final_sigmas_type="zero")
    sched.set_timesteps(sigmas=unshifted_grid(n_calls, cfg.sigma_start))
    sched.set_begin_index(0)  # timesteps may repeat for large n: never look the step up by value
    return sched


def rf_initial_noise(states: Sequence[np.random.RandomState], shape: Sequence[int]) -> torch.Tensor:
    """(len(states), *shape) float64 noise: ``state.standard_normal(shape)`` as float32 per row."""
    rows = [torch.from_numpy(st.standard_normal(tuple(shape)).astype(np.float32)) for st in states]
    return torch.stack(rows).to(torch.float64)


class RFDenoiser:
    """``D(x, sigma, timestep)``: the x0 prediction with per-frame timesteps and clean conditioning frames.

    clean: (B, C, T, H, W) latents whose conditioning frames are used; condition: (T,) or (B, T) bool.
    ``calls`` counts network calls.
    """

    def __init__(self, net_fn: NetFn, clean: torch.Tensor, condition: torch.Tensor):
        cond = condition_rows(clean, condition)
        self.net_fn = net_fn
        self.clean = clean.to(torch.float64)
        self.cond = cond
        self.cond5 = cond[:, None, :, None, None]
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: float, timestep: float) -> torch.Tensor:
        """x: (B, C, T, H, W) float64 state at ``sigma``; timestep: the network's time input for the generated
        frames -> (B, C, T, H, W) float64 x0 estimate."""
        t_in = torch.where(self.cond, torch.zeros((), dtype=torch.float64, device=x.device),
                           torch.full(self.cond.shape, float(timestep), dtype=torch.float64, device=x.device))
        x_in = torch.where(self.cond5, self.clean, x)  # conditioning frames fed clean
        v = self.net_fn(x_in, t_in, self.cond)
        self.calls += 1
        x0 = x_in - float(sigma) * v.to(torch.float64)
        return torch.where(self.cond5, self.clean, x0)  # and replaced by the clean latent after the call


class EDMView:
    """An :class:`RFDenoiser` seen as ``D(x_edm, sigma_edm)`` at the current call's ``(sigma, timestep)``:
    ``x_edm = x / (1 - sigma)``, ``sigma_edm = sigma / (1 - sigma)`` (the same x0 prediction). It lets the
    Predict2-parameterised inpainting hook run unchanged inside the rectified-flow loop."""

    def __init__(self, denoiser: RFDenoiser):
        self.denoiser = denoiser
        self.cond5 = denoiser.cond5
        self.sigma = 0.0
        self.timestep = 0.0

    def __call__(self, x_edm: torch.Tensor, sigma_edm: float) -> torch.Tensor:
        return self.denoiser(x_edm * (1.0 - self.sigma), self.sigma, self.timestep)


def rf_sample(denoiser: Callable[[torch.Tensor, float, float], torch.Tensor], x_T: torch.Tensor, n_calls: int,
              cfg: Optional[RFSamplerConfig] = None, inpaint: Optional[Inpainting] = None) -> torch.Tensor:
    """Run the n-call UniPC sampler from ``x_T`` (pure noise); returns the final x0 (float64).
    inpaint: real-time-chunking inpainting of one frame after every call (needs an :class:`RFDenoiser`)."""
    cfg = cfg or RFSamplerConfig()
    sched = make_scheduler(n_calls, cfg)
    x = x_T.to(torch.float64)
    x0 = x
    active = inpaint is not None and inpaint.method != "off"  # off: the plain loop, bit for bit
    view = EDMView(denoiser) if active else None
    inpainted = InpaintingDenoiser(view, inpaint) if active else None
    for i in range(n_calls):
        sigma = float(sched.sigmas[i])
        timestep = float(sched.timesteps[i]) / cfg.num_train_timesteps
        if inpainted is None:
            x0 = denoiser(x, sigma, timestep)
        else:
            view.sigma, view.timestep = sigma, timestep
            x0 = inpainted(x / (1.0 - sigma), sigma / (1.0 - sigma))
        x = sched.step(x0, sched.timesteps[i], x, return_dict=False)[0]
    # the last step is first order to sigma 0: its result is that call's x0 prediction; return the prediction
    # itself so that conditioning frames stay bit-identical
    return x0


def run_rf_stages(net_fn: NetFn, clean: torch.Tensor, stages: Sequence[Stage], seeds: Sequence[int],
                  cfg: RFSamplerConfig, timer: Optional[Callable[[], float]] = None,
                  inpaint: Optional[Inpainting] = None) -> SampleResult:
    """Run the passes one after the other (the pass loop of :func:`cosmos_policy_ros.core.sampler.run_passes`);
    noise from per-seed RandomStates continued between passes. inpaint: applied in every pass that generates its
    frame (not where that frame is a condition)."""
    states: List[np.random.RandomState] = [np.random.RandomState(int(s)) for s in seeds]

    def one_pass(st: Stage, current: torch.Tensor, cond: torch.Tensor) -> Tuple[torch.Tensor, int]:
        den = RFDenoiser(net_fn, current, cond)
        x_T = rf_initial_noise(states, clean.shape[1:]).to(clean.device)
        inp = None if inpaint is None or inpaint.frame in st.condition else inpaint
        return rf_sample(den, x_T, st.steps, cfg, inp), den.calls

    return run_passes(clean, stages, seeds, one_pass, timer)
