"""The Cosmos Policy sampler: rectified-flow scaling, Karras sigmas, second-order multistep in x0 form.

No weights and no I/O here: the network is a function ``net_fn(x_in, c_noise, cond) -> F`` with
``x_in`` (B, C, T, H, W) float64, ``c_noise`` (B, T) float64 (one noise level per latent frame) and
``cond`` (B, T) bool (True = conditioning frame; the network turns it into its mask channel). Everything follows
facts sheet section 3:

- RF scaling (sigma_data = 1): ``t = sigma / (sigma + 1)``, ``c_skip = 1 - t``, ``c_out = -t``,
  ``c_in = 1 - t``, ``c_noise = t``; ``x0_hat = c_skip * x + c_out * F(c_in * x, c_noise)``.
- Conditioning frames have their own noise level (``condition_sigma``, 0 = clean), are fed clean and
  their x0 prediction is replaced by the clean latent after every call (bit-identical in the output).
- n network calls: n = 1 -> ``D(x_T, sigma_max)``; n > 1 -> m = n - 1 steps on the Karras grid
  (rho 7, sigma_max -> sigma_min), Euler first, then the exponential 2nd-order multistep, then a final
  ``D(x, sigma_min)``. The state and the update are float64 (as the reference).
- ``x_T = sigma_max * N(0, I)`` drawn from a per-sample ``torch.Generator`` on the CPU, so a seed gives
  the same noise on any device and a batch of candidates gets exactly the noise of one-by-one runs.

Inpainting (real-time chunking, docs/runtime.md): an optional :class:`Inpainting` pulls one generated frame (the
action chunk) toward a target after every network call: :func:`inpaint_x0` is the hook, a function of the x0
prediction, the noise level, the target and per-value weights (1 = frozen, replaced outright; 0 = free), so
any sampler can call it. ``replace`` blends in x0 space (no extra network cost); ``guided`` adds the exact
guidance ``lambda(sigma) * J^T [W (Y - D)]`` with ``J = dD/dx`` (one vector-Jacobian product, i.e. a backward
pass through the network per call).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .layout import MODES, LatentLayout

NetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

SAMPLE_MODES = ("parallel", "autoregressive")
INPAINT_METHODS = ("off", "replace", "guided")
WEIGHT_SCHEDULES = ("exp", "linear", "ones", "zeros")


@dataclass
class SamplerConfig:
    """Sampler settings. ``future_state_steps`` / ``value_steps`` apply to the autoregressive mode only;
    in the parallel mode (released ALOHA deploy) one sample of ``action_steps`` calls gives everything."""

    action_steps: int = 10
    future_state_steps: int = 10
    value_steps: int = 10
    mode: str = "parallel"
    sigma_max: float = 80.0
    sigma_min: float = 4.0
    rho: float = 7.0
    condition_sigma: float = 0.0
    value_condition: str = "value_q"  # conditioning mode of the autoregressive value stage

    def __post_init__(self):
        for name in ("action_steps", "future_state_steps", "value_steps"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"sampler {name}: expected an integer >= 1, got {v!r}")
            setattr(self, name, int(v))
        if self.mode not in SAMPLE_MODES:
            raise ValueError(f"sampler mode: expected one of {SAMPLE_MODES}, got {self.mode!r}")
        if not (0 < self.sigma_min < self.sigma_max):
            raise ValueError(f"sampler sigmas: expected 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.rho <= 0:
            raise ValueError(f"sampler rho: expected > 0, got {self.rho}")
        if self.condition_sigma < 0:
            raise ValueError(f"sampler condition_sigma: expected >= 0, got {self.condition_sigma}")
        if self.value_condition not in ("value_q", "value_v"):
            raise ValueError(f"sampler value_condition: expected 'value_q' or 'value_v', got {self.value_condition!r}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def karras_sigmas(n_calls: int, sigma_max: float = 80.0, sigma_min: float = 4.0, rho: float = 7.0) -> np.ndarray:
    """The sigmas at which the network is called for ``n_calls`` calls (float64, length n_calls).

    n = 1 gives [sigma_max]; otherwise ``(smax^(1/rho) + i/m * (smin^(1/rho) - smax^(1/rho)))^rho``,
    i = 0..m with m = n - 1 (so the last call is at sigma_min).
    """
    if n_calls < 1:
        raise ValueError(f"expected at least 1 network call, got {n_calls}")
    if n_calls == 1:
        return np.array([float(sigma_max)], dtype=np.float64)
    m = n_calls - 1
    i = np.arange(m + 1, dtype=np.float64)
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (a + i / m * (b - a)) ** rho


def rf_scalings(sigma: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rectified-flow preconditioning (sigma_data = 1) -> (c_skip, c_out, c_in, c_noise)."""
    t = sigma / (sigma + 1.0)
    return 1.0 - t, -t, 1.0 - t, t


def initial_noise(seeds: Sequence[int], shape: Sequence[int], sigma_max: float = 80.0,
                  generators: Optional[List[torch.Generator]] = None) -> torch.Tensor:
    """(len(seeds), *shape) float64 ``sigma_max * N(0, I)``, one CPU generator per seed (or continue the
    given ``generators``), so each row only depends on its own seed."""
    gens = generators if generators is not None else [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    rows = [torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in gens]
    return torch.stack(rows).to(torch.float64) * float(sigma_max)



def condition_rows(clean: torch.Tensor, condition) -> torch.Tensor:
    """The conditioning mask as (B, T) bool on ``clean``'s device; ``condition`` is (T,) (every row) or (B, T).

    Shared by every sampler's denoiser so all of them refuse the same malformed inputs with the same words.
    """
    if clean.ndim != 5:
        raise ValueError(f"expected clean latents (B, C, T, H, W), got shape {tuple(clean.shape)}")
    b, _, t = clean.shape[:3]
    cond = torch.as_tensor(condition, dtype=torch.bool, device=clean.device)
    if cond.ndim == 1:
        cond = cond.unsqueeze(0).expand(b, -1)
    if tuple(cond.shape) != (b, t):
        raise ValueError(f"expected a condition mask of shape ({t},) or ({b}, {t}), got {tuple(cond.shape)}")
    return cond


def check_mixed_rows(clean: torch.Tensor, x_T: torch.Tensor, steps: Sequence[int]) -> List[int]:
    """Validate the rows of a mixed-step batch (one call count per row); returns the call counts as ints."""
    steps = [int(s) for s in steps]
    if len(steps) != x_T.shape[0] or any(s < 1 for s in steps):
        raise ValueError(f"expected {x_T.shape[0]} call counts >= 1, got {steps}")
    if clean.shape != x_T.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and x_T {tuple(x_T.shape)} must have the same shape")
    return steps

class Denoiser:
    """``D(x, sigma)``: the x0 prediction with per-frame noise levels and clean conditioning frames.

    clean: (B, C, T, H, W) latents whose conditioning frames are used (others ignored).
    condition: (T,) or (B, T) bool, True = conditioning frame.
    ``calls`` counts network calls (the tests assert it).
    """

    def __init__(self, net_fn: NetFn, clean: torch.Tensor, condition: torch.Tensor, condition_sigma: float = 0.0):
        cond = condition_rows(clean, condition)
        self.net_fn = net_fn
        self.clean = clean.to(torch.float64)
        self.cond = cond  # (B, T)
        self.cond5 = cond[:, None, :, None, None]  # (B, 1, T, 1, 1)
        self.condition_sigma = float(condition_sigma)
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """x: (B, C, T, H, W) float64 noisy state at ``sigma`` -> (B, C, T, H, W) float64 x0 estimate."""
        sig = torch.where(self.cond, torch.full_like(self.cond, self.condition_sigma, dtype=torch.float64),
                          torch.full_like(self.cond, float(sigma), dtype=torch.float64))  # (B, T)
        c_skip, c_out, c_in, c_noise = rf_scalings(sig)
        x_in = torch.where(self.cond5, self.clean, x)  # conditioning frames fed clean
        c5 = lambda c: c[:, None, :, None, None]  # noqa: E731  (B, T) -> (B, 1, T, 1, 1)
        out = self.net_fn(c5(c_in) * x_in, c_noise, self.cond)
        self.calls += 1
        x0 = c5(c_skip) * x_in + c5(c_out) * out.to(torch.float64)
        return torch.where(self.cond5, self.clean, x0)  # and replaced by the clean latent after the call


def sample(denoiser: Callable[[torch.Tensor, float], torch.Tensor], x_T: torch.Tensor, n_calls: int,
           sigma_max: float = 80.0, sigma_min: float = 4.0, rho: float = 7.0) -> torch.Tensor:
    """Run the exact n-call sampler from ``x_T`` (float64); returns the final x0 (float64)."""
    sigmas = karras_sigmas(n_calls, sigma_max, sigma_min, rho)
    x = x_T.to(torch.float64)
    if n_calls == 1:
        return denoiser(x, float(sigmas[0]))
    m = n_calls - 1
    x0_prev: Optional[torch.Tensor] = None
    for i in range(m):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoiser(x, s)
        if i == 0:  # Euler step in x0 form
            r = s_next / s
            x = r * x + (1.0 - r) * x0
        else:  # 2nd-order exponential multistep in lambda = -log(sigma)
            h = math.log(s / s_next)
            c2 = math.log(s / float(sigmas[i - 1])) / h
            phi1 = math.expm1(-h) / (-h)
            phi2 = (phi1 - 1.0) / (-h)
            b2 = phi2 / c2
            b1 = phi1 - b2
            x = math.exp(-h) * x + h * (b1 * x0 + b2 * x0_prev)
        x0_prev = x0
    return denoiser(x, float(sigmas[m]))


# ---- inpainting (real-time chunking) ---------------------------------------------------------------
def prefix_weights(horizon: int, frozen: int, n_target: int, schedule: str = "exp") -> np.ndarray:
    """(horizon,) float64 per-step weights of a target chunk: 1 for the ``frozen`` first steps (the actions
    that execute anyway), a decaying ramp over the rest of the target (``n_target`` steps exist), 0 after.

    ``exp`` is the real-time chunking paper's soft mask: ``W_i = c_i (e^{c_i} - 1) / (e - 1)`` with
    ``c_i = (n_target - i) / (n_target - frozen + 1)`` (``n_target = H - s`` for an execution horizon s);
    ``linear`` is ``c_i``; ``ones`` keeps the whole target (1), ``zeros`` only the frozen prefix.
    """
    horizon, frozen, n_target = int(horizon), int(frozen), int(n_target)
    if schedule not in WEIGHT_SCHEDULES:
        raise ValueError(f"weight schedule: expected one of {WEIGHT_SCHEDULES}, got {schedule!r}")
    if not 0 <= frozen <= n_target <= horizon:
        raise ValueError(f"prefix weights: expected 0 <= frozen <= n_target <= horizon, got {frozen}, {n_target}, "
                         f"{horizon}")
    w = np.zeros(horizon, dtype=np.float64)
    w[:frozen] = 1.0
    i = np.arange(frozen, n_target, dtype=np.float64)
    c = (n_target - i) / (n_target - frozen + 1)
    if schedule == "exp":
        w[frozen:n_target] = c * np.expm1(c) / math.expm1(1.0)
    elif schedule == "linear":
        w[frozen:n_target] = c
    elif schedule == "ones":
        w[frozen:n_target] = 1.0
    return w


def replace_gain(sigma: float, beta: float) -> float:
    """x0-space gain of ``replace`` at ``sigma``: ``min(1, beta * sigma / (1 + sigma^2))`` (the isotropic-Jacobian
    reading of the guidance; about 0.06 at sigma 80, 0.5 at 10, 1 below ~4.8 with beta 5)."""
    return min(1.0, beta * sigma / (1.0 + sigma * sigma))


def guidance_gain(sigma: float, beta: float) -> float:
    """Gain of the exact guidance term at ``sigma``: ``min(beta * sigma, 1 + sigma^2)`` (the paper's
    ``min(beta, (1-tau)/tau * (tau^2 + (1-tau)^2) / (1-tau)^2)`` with ``tau = 1 / (1 + sigma)``, in x0 form)."""
    return min(beta * sigma, 1.0 + sigma * sigma)


def inpaint_x0(x0: torch.Tensor, sigma: float, target: torch.Tensor, weights: torch.Tensor, method: str,
               beta: float = 5.0, guidance: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The inpainting hook: an x0 prediction of the chunk's values pulled toward ``target``.

    x0, target, weights: broadcastable tensors (any layout: latent frames here, (B, H, A) chunks elsewhere);
    weights in [0, 1], values with weight 1 are frozen (replaced by the target after every call, so the final
    sample holds the target exactly there). sigma: the noise level of the call (a rectified-flow sampler with
    time ``tau`` (1 = data) passes ``sigma = (1 - tau) / tau``).
    method ``replace``: ``x0 + replace_gain * W (Y - x0)``; ``guided``: ``x0 + guidance_gain * guidance`` where
    ``guidance = J^T [W (Y - x0)]`` was computed by the caller through the network (see :class:`Inpainting`).
    """
    if method == "off":
        return x0
    if method == "replace":
        out = x0 + replace_gain(sigma, beta) * weights * (target - x0)
    elif method == "guided":
        if guidance is None:
            raise ValueError("inpaint_x0: method 'guided' needs the guidance term J^T [W (Y - x0)]")
        out = x0 + guidance_gain(sigma, beta) * guidance
    else:
        raise ValueError(f"inpainting method: expected one of {INPAINT_METHODS}, got {method!r}")
    return torch.where(weights >= 1.0, target.to(out.dtype).expand_as(out), out)


@dataclass
class Inpainting:
    """Inpaint latent frame ``frame`` of a sample toward ``target``.

    target: (B or 1, C, H, W) the frame's target latent; weights: (B or 1, C, H, W) per-value weights in [0, 1]
    (a per-step chunk mask lifted to the latent by the frame's tiling: :func:`lift_chunk`).
    method: ``off`` | ``replace`` | ``guided``; beta: the guidance cap (the paper's 5).
    """

    frame: int
    target: torch.Tensor
    weights: torch.Tensor
    method: str = "replace"
    beta: float = 5.0

    def __post_init__(self):
        if self.method not in INPAINT_METHODS:
            raise ValueError(f"inpainting method: expected one of {INPAINT_METHODS}, got {self.method!r}")
        if not self.beta > 0:
            raise ValueError(f"inpainting beta: expected > 0, got {self.beta}")
        if self.target.ndim != 4 or self.weights.ndim != 4:
            raise ValueError(f"inpainting target / weights: expected (B, C, H, W) frames, got "
                             f"{tuple(self.target.shape)} / {tuple(self.weights.shape)}")
        w = self.weights
        if bool(((w < 0) | (w > 1) | ~torch.isfinite(w)).any()) or not bool(torch.isfinite(self.target).all()):
            raise ValueError("inpainting: expected finite targets and weights in [0, 1]")


def lift_chunk(chunk: torch.Tensor, step_weights: torch.Tensor, frame_shape: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, H, A) normalised target chunk and (B or 1, H) per-step weights -> latent (target, weights) frames of
    ``frame_shape``, tiled like the chunk itself (row-major, :func:`codec.inject`): latent value f holds chunk
    element ``f mod (H*A)``, so it gets that step's target and weight."""
    from .codec import inject

    b, h, a = chunk.shape
    w = step_weights.to(chunk.dtype).reshape(step_weights.shape[0], h, 1).expand(-1, h, a).reshape(-1, h * a)
    return inject(chunk.reshape(b, h * a), frame_shape), inject(w, frame_shape)


class InpaintingDenoiser:
    """A :class:`Denoiser` (any ``D(x, sigma)``) whose x0 prediction of ``inp.frame`` is inpainted after every call.

    ``guided`` runs the call with gradients and one vector-Jacobian product ``J^T e`` (e = W (Y - D) on the
    frame, 0 elsewhere): it needs the network outside ``torch.inference_mode`` and costs about one backward pass.
    The guidance reaches every generated frame (J couples them); conditioning frames stay clean.
    """

    def __init__(self, denoiser: Callable[[torch.Tensor, float], torch.Tensor], inp: Inpainting):
        self.denoiser = denoiser
        self.inp = inp
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        inp, f = self.inp, self.inp.frame
        self.calls += 1
        if inp.method == "off":
            return self.denoiser(x, sigma)
        tgt = inp.target.to(x.device, torch.float64)
        w = inp.weights.to(x.device, torch.float64)
        if inp.method == "replace":
            d = self.denoiser(x, sigma)
            d[:, :, f] = inpaint_x0(d[:, :, f], sigma, tgt, w, "replace", inp.beta)
            return d
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            d = self.denoiser(xg, sigma)
            e = torch.zeros_like(d)
            e[:, :, f] = w * (tgt - d[:, :, f].detach())
            (g,) = torch.autograd.grad(d, xg, grad_outputs=e)
        d = d.detach()
        out = d + guidance_gain(sigma, inp.beta) * g
        out[:, :, f] = torch.where(w >= 1.0, tgt.expand_as(d[:, :, f]), out[:, :, f])
        cond5 = getattr(self.denoiser, "cond5", None)
        if cond5 is not None:  # conditioning frames stay bit-identical to the clean latent
            out = torch.where(cond5, d, out)
        return out


@dataclass
class Stage:
    """One sampling pass: which frames are conditioning and how many network calls."""

    name: str
    condition: Tuple[int, ...]
    steps: int


def plan_stages(layout: LatentLayout, cfg: SamplerConfig, start: str = "policy") -> List[Stage]:
    """The passes for ``cfg.mode``.

    parallel: one pass conditioned for ``start`` (policy / world_model / value_v / value_q) with
    ``action_steps`` calls. autoregressive (planning): action (policy conditioning, ``action_steps``),
    then future state (world-model conditioning: the sampled action frame is clean,
    ``future_state_steps``), then value (``cfg.value_condition``, ``value_steps``). Starting from
    ``world_model`` skips the action pass (the action is given).
    """
    if start not in MODES:
        raise ValueError(f"start mode: expected one of {MODES}, got {start!r}")
    if cfg.mode == "parallel":
        return [Stage(start, layout.condition_indices(start), cfg.action_steps)]
    stages = []
    if start == "policy":
        stages.append(Stage("action", layout.condition_indices("policy"), cfg.action_steps))
    if start in ("policy", "world_model"):
        stages.append(Stage("future_state", layout.condition_indices("world_model"), cfg.future_state_steps))
    stages.append(Stage("value", layout.condition_indices(cfg.value_condition), cfg.value_steps))
    return stages


@dataclass
class SampleResult:
    """x0: (B, C, T, H, W) float64 final latents (conditioning frames bit-identical to the input);
    calls: network calls per stage; seconds: wall time per stage."""

    x0: torch.Tensor
    calls: Dict[str, int] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)


def run_passes(clean: torch.Tensor, stages: Sequence[Stage], seeds: Sequence[int],
               one_pass: Callable[[Stage, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, int]],
               timer: Optional[Callable[[], float]] = None) -> SampleResult:
    """The pass loop both backbones' samplers share: each pass's generated frames become the next pass's clean
    input. ``one_pass(stage, current, cond)`` samples one pass (``cond``: the per-frame condition mask of its
    stage) and returns its result and the number of network calls it made."""
    if clean.shape[0] != len(seeds):
        raise ValueError(f"expected one seed per batch row ({clean.shape[0]}), got {len(seeds)}")
    import time
    timer = timer or time.perf_counter
    current = clean.to(torch.float64)
    t_frames = clean.shape[2]
    result = SampleResult(current)
    for st in stages:
        t0 = timer()
        cond = torch.zeros(t_frames, dtype=torch.bool)
        cond[list(st.condition)] = True
        current, calls = one_pass(st, current, cond.to(clean.device))
        result.calls[st.name] = calls
        result.seconds[st.name] = timer() - t0
    result.x0 = current
    return result


def run_stages(net_fn: NetFn, clean: torch.Tensor, stages: Sequence[Stage], seeds: Sequence[int],
               cfg: SamplerConfig, timer: Optional[Callable[[], float]] = None,
               inpaint: Optional[Inpainting] = None) -> SampleResult:
    """Run the passes one after the other; each pass's generated frames become the next pass's clean
    input. Noise for every pass comes from the per-seed generators (continued between passes).
    inpaint: applied in every pass that generates its frame (not where that frame is a condition)."""
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    def one_pass(st: Stage, current: torch.Tensor, cond: torch.Tensor) -> Tuple[torch.Tensor, int]:
        den = Denoiser(net_fn, current, cond, cfg.condition_sigma)
        x_T = initial_noise(seeds, clean.shape[1:], cfg.sigma_max, generators=gens).to(clean.device)
        fn = den if inpaint is None or inpaint.frame in st.condition else InpaintingDenoiser(den, inpaint)
        x0 = sample(fn, x_T, st.steps, cfg.sigma_max, cfg.sigma_min, cfg.rho)
        return x0, den.calls

    return run_passes(clean, stages, seeds, one_pass, timer)
