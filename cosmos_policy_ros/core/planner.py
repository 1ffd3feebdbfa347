"""Best-of-N planning (facts sheet section 6): score candidate action chunks with a planning model.

For N candidate chunks (sampled by the policy with different seeds, one batched forward per denoising step),
the planning model (a :class:`~cosmos_policy_ros.core.policy.CosmosPolicy` of the same architecture, e.g.
``nvidia/Cosmos-Policy-ALOHA-Planning-Model-Predict2-2B``) predicts for each candidate

1. K future states (world-model conditioning: current frames + the candidate's action frame clean), one per
   entry of ``future_state_steps`` (reference: 1, 3, 5 network calls), then
2. M values per future state, one per entry of ``value_steps`` (reference: 1..5 calls), conditioned on
   the predicted future (``value_v`` = V(s'): blank + future proprio + future images clean, current state
   and action generated) or on everything (``value_q`` = Q(s,a)),

aggregates the K x M values (in [0, 1]) into one score per candidate and picks the best one, keeping the
base candidate (index 0) unless another scores *strictly* higher, by more than ``switch_margin`` (default 0).
A margin makes the planner replace the policy's own chunk only when the planning model is confident that
another one is better: a planning model whose ranking is right where scores differ a lot, and noise where they
differ a little, then helps without giving away the scenes the base chunk would have won.

Batching: all N*K world-model samples run as one batch and all N*K*M value samples as another, although
their step counts differ: every row runs its own schedule and, at call index j, only the rows that still need a
call go through the network (one forward per call index, the batch shrinking as short schedules finish). The
planning model's backbone (:mod:`cosmos_policy_ros.core.backbone`) names its sampler configuration type, and
:data:`MIXED_STEP_SAMPLERS` maps that type to the batched form of the same sampler: Predict2 ->
:func:`sample_mixed_steps` (Karras grid, 2nd-order exponential multistep), Predict2.5 ->
:func:`sample_mixed_steps_rf` (rectified flow, UniPC on the shift schedule, one scheduler per step count).

Noise: each row's noise comes from a seed derived from (planning seed, stage, k, m) and, with ``noise="per_candidate"``,
the candidate's seed, so a candidate gets the same samples whether it is scored alone or in a batch (the tests
check scores agree to 1e-5). The default, ``noise="common"``, scores every candidate under the same K x M noise
draws (common random numbers): two candidates' scores then differ only through their actions. With a noise draw
per candidate, the draw moves a score far more than the action does: measured 2026-12-07 on the sim planning
model at the grasp (8 candidates 0.04 rad apart), scores spread by about 0.01 with per-candidate noise and by about
1e-4 with common noise, so the per-candidate choice followed the candidate's noise seed, the same one in every scene
(docs/planning.md).

Aggregation (``values`` = the K*M values of one candidate, n = K*M):

- ``majority_mean`` (reference): let A = {v > threshold} (threshold 0.05); if 2*|A| >= n ("at least half"),
  the score is mean(A), else 0.
- ``mean``: mean(values).
- ``lcb`` (lower confidence bound): mean(values) - beta * std(values), std with ddof = 0 (population
  standard deviation over the K*M samples), beta = ``lcb_beta`` (default 1). Penalises candidates the
  ensemble disagrees on.

Candidates are injected into the planning model's action frame from their robot-unit actions (normalised
with the planning model's stats and tiled, as in training), so any backend's chunks can be scored and the
planner may sit in another process or on another device. This module never imports rclpy.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from . import codec
from .backbone import Backbone, get_backbone
from .images import ImageConfig, preprocess_batch
from .rf_sampler import RFSamplerConfig, make_scheduler, rf_initial_noise
from .sampler import SamplerConfig, check_mixed_rows, condition_rows, initial_noise, karras_sigmas, rf_scalings
from .plan_window import PlanGate, PlanWindow
from .types import DEFAULT_SEED, Observation, PolicyOutput, PolicyWrapper

AGGREGATIONS = ("majority_mean", "mean", "lcb")
SCORE_MODES = ("value_v", "value_q")
IMAGE_DECODE = ("none", "first", "all")
NOISE_MODES = ("common", "per_candidate")

NetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ================================================================================================
# configuration
# ================================================================================================
@dataclass
class PlannerConfig:
    """Best-of-N settings (defaults: the released ALOHA planning setup).

    future_state_steps: network calls of each of the K world-model samples per candidate.
    value_steps: network calls of each of the M value samples per future state.
    aggregation: ``majority_mean`` | ``mean`` | ``lcb`` (module docstring has the formulas).
    score: ``value_v`` (V(s'), released) or ``value_q`` (Q(s,a): the value stage also sees state + action).
    seed: planning noise seed.
    noise: ``common`` (every candidate scored under the same K x M noise draws: scores differ through the
        actions alone) or ``per_candidate`` (the draws also depend on each candidate's seed).
    decode_future_images: ``first`` (one predicted future per candidate, the k = 0 sample), ``all`` (K per
        candidate) or ``none``.
    max_batch: largest number of rows per network call (0 = no limit); bounds GPU memory on small cards.
    switch_margin: another candidate replaces the base one (index 0) only when its score exceeds the base's by
        more than this (scores are in [0, 1]; 0 = the reference: any strictly higher score wins).
    """

    future_state_steps: Tuple[int, ...] = (1, 3, 5)
    value_steps: Tuple[int, ...] = (1, 2, 3, 4, 5)
    aggregation: str = "majority_mean"
    majority_threshold: float = 0.05
    lcb_beta: float = 1.0
    score: str = "value_v"
    seed: int = 0
    noise: str = "common"
    decode_future_images: str = "first"
    max_batch: int = 0
    switch_margin: float = 0.0

    def __post_init__(self):
        for name in ("future_state_steps", "value_steps"):
            steps = tuple(getattr(self, name))
            if not steps or any(int(s) != s or s < 1 for s in steps):
                raise ValueError(f"planner {name}: expected a non-empty list of integers >= 1, got {list(steps)}")
            setattr(self, name, tuple(int(s) for s in steps))
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"planner aggregation: expected one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.score not in SCORE_MODES:
            raise ValueError(f"planner score: expected one of {SCORE_MODES}, got {self.score!r}")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"planner noise: expected one of {NOISE_MODES}, got {self.noise!r}")
        if self.decode_future_images not in IMAGE_DECODE:
            raise ValueError(f"planner decode_future_images: expected one of {IMAGE_DECODE}, got {self.decode_future_images!r}")
        if not math.isfinite(self.majority_threshold) or not math.isfinite(self.lcb_beta) or self.lcb_beta < 0:
            raise ValueError(f"planner: expected a finite majority_threshold and lcb_beta >= 0, got "
                             f"{self.majority_threshold}, {self.lcb_beta}")
        if int(self.max_batch) != self.max_batch or self.max_batch < 0:
            raise ValueError(f"planner max_batch: expected an integer >= 0, got {self.max_batch!r}")
        if not math.isfinite(self.switch_margin) or not 0.0 <= self.switch_margin < 1.0:
            raise ValueError(f"planner switch_margin: expected a number in [0, 1), got {self.switch_margin!r}")
        self.seed = int(self.seed)
        self.max_batch = int(self.max_batch)
        self.switch_margin = float(self.switch_margin)

    @property
    def num_future_samples(self) -> int:
        """K."""
        return len(self.future_state_steps)

    @property
    def num_value_samples(self) -> int:
        """M (per future state)."""
        return len(self.value_steps)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["future_state_steps"] = list(self.future_state_steps)
        d["value_steps"] = list(self.value_steps)
        return d


# ================================================================================================
# aggregation and selection (pure numpy)
# ================================================================================================
def aggregate(values: np.ndarray, method: str = "majority_mean", threshold: float = 0.05, beta: float = 1.0) -> np.ndarray:
    """(..., S) value samples in [0, 1] -> (...) scores, over the last axis (see module docstring).

    Non-finite samples count as 0 (a broken sample never raises a candidate's score).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim < 1 or v.shape[-1] < 1:
        raise ValueError(f"aggregate: expected (..., S) with S >= 1 samples, got shape {v.shape}")
    v = np.where(np.isfinite(v), v, 0.0)
    n = v.shape[-1]
    if method == "majority_mean":
        above = v > threshold
        count = above.sum(axis=-1)
        total = np.where(above, v, 0.0).sum(axis=-1)
        return np.where(2 * count >= n, total / np.maximum(count, 1), 0.0)
    if method == "mean":
        return v.mean(axis=-1)
    if method == "lcb":
        return v.mean(axis=-1) - float(beta) * v.std(axis=-1)
    raise ValueError(f"aggregation: expected one of {AGGREGATIONS}, got {method!r}")


def select_candidate(scores: Sequence[float], base: int = 0, margin: float = 0.0) -> int:
    """Index of the best score; ``base`` is kept unless another candidate scores more than ``margin`` above it
    (margin 0: strictly better).

    Ties between non-base candidates go to the lowest index; NaN scores never win (a NaN base loses to any
    finite score).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"select_candidate: expected a non-empty 1-D score list, got shape {s.shape}")
    if not 0 <= base < s.size:
        raise ValueError(f"select_candidate: base index {base} outside 0..{s.size - 1}")
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"select_candidate: expected a margin >= 0, got {margin}")
    s = np.where(np.isnan(s), -np.inf, s)
    others = s.copy()
    others[base] = -np.inf
    best = int(np.argmax(others)) if s.size > 1 else base  # argmax: the lowest index among tied maxima
    if s.size > 1 and others[best] > s[base] + margin:
        return best
    return int(base)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (planning seed, candidate seed, stage, k, m): independent streams that
    do not depend on a row's position in a batch."""
    ent = [int(p) % (1 << 63) for p in parts]
    state = np.random.SeedSequence(ent).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


# ================================================================================================
# sampling with a different number of network calls per batch row
# ================================================================================================
def _denoise(net_fn: NetFn, clean: torch.Tensor, cond: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor,
             condition_sigma: float, max_batch: int) -> torch.Tensor:
    """x0 prediction with one noise level per row (same math as :class:`sampler.Denoiser`).

    clean, x: (B, C, T, H, W) float64; cond: (B, T) bool; sigma: (B,) float64. Rows are sent through the
    network in micro-batches of at most ``max_batch`` (0 = all at once).
    """
    b = x.shape[0]
    step = b if max_batch <= 0 else max_batch
    outs = []
    for s in range(0, b, step):
        sl = slice(s, min(b, s + step))
        cnd = cond[sl]
        sig = torch.where(cnd, torch.full_like(cnd, condition_sigma, dtype=torch.float64),
                          sigma[sl, None].expand_as(cnd))  # (b, T)
        c_skip, c_out, c_in, c_noise = rf_scalings(sig)
        c5 = lambda c: c[:, None, :, None, None]  # noqa: E731  (b, T) -> (b, 1, T, 1, 1)
        cond5 = c5(cnd)
        x_in = torch.where(cond5, clean[sl], x[sl])  # conditioning frames fed clean
        out = net_fn(c5(c_in) * x_in, c_noise, cnd)
        x0 = c5(c_skip) * x_in + c5(c_out) * out.to(torch.float64)
        outs.append(torch.where(cond5, clean[sl], x0))  # and replaced by the clean latent after the call
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def sample_mixed_steps(net_fn: NetFn, clean: torch.Tensor, cond: torch.Tensor, x_T: torch.Tensor,
                       steps: Sequence[int], sigma_max: float = 80.0, sigma_min: float = 4.0, rho: float = 7.0,
                       condition_sigma: float = 0.0, max_batch: int = 0) -> Tuple[torch.Tensor, int]:
    """The exact sampler of :func:`sampler.sample`, with ``steps[r]`` network calls for row r, batched.

    clean, x_T: (R, C, T, H, W); cond: (T,) or (R, T) bool; steps: R call counts. At call index j every
    row with ``steps[r] > j`` is evaluated in one network batch (its own sigma ``karras(steps[r])[j]``);
    rows whose schedule ends at j take that call's x0 as their answer. Per-row updates use the same
    float64 formulas as the single-schedule sampler, so a row's result equals a run of that row alone
    up to the network's batch-size noise. Returns (x0 float64 (R, C, T, H, W), batched network calls).
    """
    r_count = x_T.shape[0]
    steps = check_mixed_rows(clean, x_T, steps)
    dev = x_T.device
    cond = condition_rows(clean, cond)
    clean = clean.to(torch.float64)
    x = x_T.to(torch.float64).clone()
    x0_prev = torch.zeros_like(x)
    result = torch.empty_like(x)
    grids = [karras_sigmas(s, sigma_max, sigma_min, rho) for s in steps]
    calls = 0
    for j in range(max(steps)):
        rows = [r for r in range(r_count) if steps[r] > j]
        idx = torch.tensor(rows, device=dev)
        sig = torch.tensor([float(grids[r][j]) for r in rows], dtype=torch.float64, device=dev)
        x0 = _denoise(net_fn, clean[idx], cond[idx], x[idx], sig, condition_sigma, max_batch)
        calls += 1
        done = [p for p, r in enumerate(rows) if steps[r] == j + 1]  # schedules ending with this call
        if done:
            result[idx[done]] = x0[done]
        go = [p for p, r in enumerate(rows) if steps[r] > j + 1]
        if not go:
            continue
        # per-row coefficients of x = a * x + h * (b1 * x0 + b2 * x0_prev), computed with the scalar
        # formulas of sampler.sample (Euler at j = 0 is a = s1/s0, h = 1, b1 = 1 - a, b2 = 0: same bits)
        coef = []
        for p in go:
            g = grids[rows[p]]
            s, s_next = float(g[j]), float(g[j + 1])
            if j == 0:  # Euler step in x0 form
                ratio = s_next / s
                coef.append((ratio, 1.0, 1.0 - ratio, 0.0))
            else:  # 2nd-order exponential multistep in lambda = -log(sigma)
                h = math.log(s / s_next)
                c2 = math.log(s / float(g[j - 1])) / h
                phi1 = math.expm1(-h) / (-h)
                phi2 = (phi1 - 1.0) / (-h)
                b2 = phi2 / c2
                coef.append((math.exp(-h), h, phi1 - b2, b2))
        ca, ch, cb1, cb2 = (torch.tensor(c, dtype=torch.float64, device=dev).view(-1, 1, 1, 1, 1) for c in zip(*coef))
        rg = idx[go]
        x[rg] = ca * x[rg] + ch * (cb1 * x0[go] + cb2 * x0_prev[rg])
        x0_prev[rg] = x0[go]
    return result, calls


def _denoise_rf(net_fn: NetFn, clean: torch.Tensor, cond: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor,
                timestep: torch.Tensor, max_batch: int) -> torch.Tensor:
    """Rectified-flow x0 prediction with one noise level and network timestep per row (same math as
    :class:`rf_sampler.RFDenoiser`: conditioning frames at timestep 0, fed clean and replaced by the clean latent).

    clean, x: (B, C, T, H, W) float64; cond: (B, T) bool; sigma, timestep: (B,) float64.
    """
    b = x.shape[0]
    step = b if max_batch <= 0 else max_batch
    outs = []
    for s in range(0, b, step):
        sl = slice(s, min(b, s + step))
        cnd = cond[sl]
        t_in = torch.where(cnd, torch.zeros((), dtype=torch.float64, device=x.device),
                           timestep[sl, None].expand_as(cnd))  # (b, T)
        cond5 = cnd[:, None, :, None, None]
        x_in = torch.where(cond5, clean[sl], x[sl])
        v = net_fn(x_in, t_in, cnd)
        x0 = x_in - sigma[sl].view(-1, 1, 1, 1, 1) * v.to(torch.float64)
        outs.append(torch.where(cond5, clean[sl], x0))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def sample_mixed_steps_rf(net_fn: NetFn, clean: torch.Tensor, cond: torch.Tensor, x_T: torch.Tensor,
                          steps: Sequence[int], cfg: Optional[RFSamplerConfig] = None,
                          max_batch: int = 0) -> Tuple[torch.Tensor, int]:
    """The Predict2.5 sampler (:func:`rf_sampler.rf_sample`) with ``steps[r]`` network calls for row r, batched.

    clean, x_T: (R, C, T, H, W) (``x_T`` pure noise); cond: (T,) or (R, T) bool. Rows with the same call count
    share one UniPC scheduler (stateful, element-wise over its rows); at call index j every row with
    ``steps[r] > j`` is evaluated in one network batch at its own schedule's sigma and timestep, then each
    scheduler steps its own rows. A row's result is its last call's x0 prediction, as in ``rf_sample``, so it
    equals a run of that row alone up to the network's batch-size noise. Returns (x0 float64, batched calls).
    """
    cfg = cfg or RFSamplerConfig()
    r_count = x_T.shape[0]
    steps = check_mixed_rows(clean, x_T, steps)
    dev = x_T.device
    cond = condition_rows(clean, cond)
    clean = clean.to(torch.float64)
    x = x_T.to(torch.float64).clone()
    result = torch.empty_like(x)
    scheds = {n: make_scheduler(n, cfg) for n in sorted(set(steps))}
    members = {n: [r for r in range(r_count) if steps[r] == n] for n in scheds}
    calls = 0
    for j in range(max(steps)):
        rows = [r for r in range(r_count) if steps[r] > j]
        idx = torch.tensor(rows, device=dev)
        sig = torch.tensor([float(scheds[steps[r]].sigmas[j]) for r in rows], dtype=torch.float64, device=dev)
        ts = torch.tensor([float(scheds[steps[r]].timesteps[j]) / cfg.num_train_timesteps for r in rows],
                          dtype=torch.float64, device=dev)
        x0 = _denoise_rf(net_fn, clean[idx], cond[idx], x[idx], sig, ts, max_batch)
        calls += 1
        pos = {r: p for p, r in enumerate(rows)}
        for n, group in members.items():
            if n <= j:
                continue
            g = torch.tensor(group, device=dev)
            x0_g = x0[torch.tensor([pos[r] for r in group], device=dev)]
            if n == j + 1:  # this call was the group's last: its x0 prediction is the answer
                result[g] = x0_g
            else:
                sched = scheds[n]
                x[g] = sched.step(x0_g, sched.timesteps[j], x[g], return_dict=False)[0].to(torch.float64)
    return result, calls


def rf_row_state(seed: int) -> np.random.RandomState:
    """A numpy RandomState for a 63-bit derived seed (RandomState takes 32-bit words: both halves are used)."""
    s = int(seed) % (1 << 63)
    return np.random.RandomState([s & 0xFFFFFFFF, s >> 32])


@dataclass(frozen=True)
class MixedStepSampler:
    """The planner's batched form of one sampler: ``noise(seeds, shape, cfg)`` -> (R, *shape) float64 initial
    states, one row per seed; ``sample(net_fn, clean, cond, x_T, steps, cfg, max_batch)`` -> (x0, batched calls)."""

    noise: Callable[[Sequence[int], Sequence[int], Any], torch.Tensor]
    sample: Callable[..., Tuple[torch.Tensor, int]]


#: sampler configuration type (what :class:`~cosmos_policy_ros.core.backbone.Backbone` names) -> batched sampler
MIXED_STEP_SAMPLERS: Dict[type, MixedStepSampler] = {
    SamplerConfig: MixedStepSampler(
        noise=lambda seeds, shape, cfg: initial_noise(seeds, shape, cfg.sigma_max),
        sample=lambda net_fn, clean, cond, x_T, steps, cfg, max_batch: sample_mixed_steps(
            net_fn, clean, cond, x_T, steps, cfg.sigma_max, cfg.sigma_min, cfg.rho, cfg.condition_sigma, max_batch)),
    RFSamplerConfig: MixedStepSampler(
        noise=lambda seeds, shape, cfg: rf_initial_noise([rf_row_state(s) for s in seeds], shape),
        sample=sample_mixed_steps_rf),
}


def mixed_step_sampler(backbone: Backbone) -> MixedStepSampler:
    """The planner's batched sampler for ``backbone`` (clear error for a backbone the planner cannot batch)."""
    try:
        return MIXED_STEP_SAMPLERS[backbone.sampler_config]
    except KeyError:
        raise ValueError(f"planner: backbone {backbone.name!r} samples with {backbone.sampler_config.__name__}, "
                         f"expected one of {[t.__name__ for t in MIXED_STEP_SAMPLERS]}") from None


# ================================================================================================
# the planner
# ================================================================================================
@dataclass
class PlanResult:
    """Every candidate's evaluation.

    chosen: index of the selected candidate; scores: (N,) aggregated scores; values: (N, K, M) value
    samples in [0, 1]; future_proprio: (N, K, P) predicted proprio (robot units) per world-model sample;
    future_images: per candidate a list of predicted future frames (camera -> (S, S, 3) uint8), one per
    decoded world-model sample (``decode_future_images``: first -> 1, all -> K, none -> 0);
    candidate_seeds: the seeds identifying the candidates; calls: batched network calls per stage;
    timings: seconds per stage ("prepare", "world_model", "value", "decode", "total").
    """

    chosen: int
    scores: np.ndarray
    values: np.ndarray
    future_proprio: np.ndarray
    future_images: List[List[Dict[str, np.ndarray]]]
    candidate_seeds: List[int]
    config: PlannerConfig
    calls: Dict[str, int] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def num_candidates(self) -> int:
        return int(self.scores.shape[0])


def model_input_images(images: Mapping[str, np.ndarray], cfg: ImageConfig, cameras: Sequence[str]) -> Dict[str, np.ndarray]:
    """Raw camera frames -> camera -> (S, S, 3) uint8 model-input frames (squash, resize, 90% crop): what a
    planner in another process needs (a sixth of a 480x640 frame's bytes at S = 224)."""
    out = {}
    for cam in cameras:
        img = np.asarray(images[cam])
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"camera {cam!r}: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
        t = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]  # (1, 3, H, W); copy: ROS buffers are read-only
        out[cam] = preprocess_batch(t, cfg, cam)[0].permute(1, 2, 0).contiguous().numpy()
    return out


class Planner:
    """Scores candidate chunks with a planning model (a CosmosPolicy; same 2B architecture or a tiny one).

    ``model`` supplies the network, the VAE, the stats, the text embeddings, the layout and the sampler's
    settings (noise levels / schedule); its own step counts are not used (``PlannerConfig`` has them). Its
    backbone (Predict2 or Predict2.5) picks the batched sampler (:data:`MIXED_STEP_SAMPLERS`).
    """

    def __init__(self, model, config: Optional[PlannerConfig] = None):
        self.model = model
        self.config = config or PlannerConfig()
        self.layout = model.layout
        self.backbone = getattr(model, "backbone", None) or get_backbone(getattr(model.network.cfg, "backbone", None))
        self.backbone.check_sampler(model.sampler)  # the schedule settings must be the backbone's own kind
        self.sampling = mixed_step_sampler(self.backbone)
        for mode in ("world_model", self.config.score):
            if not self.layout.generated_indices(mode):
                raise ValueError(f"layout {self.layout.name!r} generates nothing in mode {mode!r}")

    @property
    def image_size(self) -> int:
        """Model-input image side (224 for the 2B model)."""
        return int(self.model.image.size)

    @property
    def cameras(self) -> Tuple[str, ...]:
        return tuple(self.layout.cameras)

    # ---- inputs ------------------------------------------------------------------------------------
    def prepare(self, obs: Observation, preprocessed: bool = False):
        """Observation -> the model's ``Prepared`` (clean latents, normalised proprio, text).

        preprocessed: ``obs.images`` already hold model-input frames (S x S, see
        :func:`model_input_images`), so the squash / crop is not applied twice.
        """
        m = self.model
        if not preprocessed:
            return m.prepare(obs)
        t0 = time.perf_counter()
        # the model's own check would apply its raw-frame rules (e.g. a required 480x640 input size)
        if obs.instruction not in m.embeddings:
            raise ValueError(f"unknown instruction {obs.instruction!r}; known instructions: {m.instructions}")
        p = np.asarray(obs.proprio, dtype=np.float64)
        if p.shape != (self.layout.proprio_dim,) or not np.all(np.isfinite(p)):
            raise ValueError(f"proprio: expected {self.layout.proprio_dim} finite values, got {p.tolist()}")
        s = self.image_size
        by_cam = {}
        for cam in self.cameras:
            img = obs.images.get(cam)
            if img is None:
                raise ValueError(f"missing camera image {cam!r}; expected {list(self.cameras)}")
            if tuple(img.shape) != (s, s, 3) or img.dtype != np.uint8:
                raise ValueError(f"camera {cam!r}: expected a preprocessed {s}x{s} uint8 frame, got {img.shape} {img.dtype}")
            by_cam[cam] = torch.from_numpy(np.array(img)).permute(2, 0, 1)  # (3, S, S) uint8
        video = m._raw_video(by_cam)  # (1, 3, F, S, S) in [-1, 1]
        t1 = time.perf_counter()
        with torch.inference_mode():
            clean = m.network.encode(video.to(m.device))  # (1, 16, T, h, w) float32
        _sync(clean.device)
        from .policy import Prepared  # local: keeps this module light for importers that only aggregate

        return Prepared(clean=clean, proprio_norm=codec.normalize_proprio(np.asarray(obs.proprio, np.float64), m.stats),
                        text=m.embeddings[obs.instruction], images={c: obs.images[c] for c in self.cameras},
                        timings={"preprocess": t1 - t0, "encode": time.perf_counter() - t1})

    def _net_fn(self, text: torch.Tensor) -> NetFn:
        """Network function whose text batch follows the row count of each call (rows shrink per call)."""
        net = self.model.network
        text = text.to(self.model.device)

        def fn(x_in, c_noise, cond):
            return net(x_in, c_noise, cond, text.expand(x_in.shape[0], -1, -1))
        return fn

    def _value_stage(self, net_fn: NetFn, futures: torch.Tensor, noise_keys: Sequence[Tuple[int, int]]):
        """M value samples of each row of ``futures`` (R, 16, T, h, w: current state, action and future filled in),
        in the score mode's conditioning; row r draws its noise from ``noise_keys[r]`` = (noise id, k).
        Returns ((R, M) values in [0, 1], batched network calls)."""
        cfg, lay, m = self.config, self.layout, self.model
        mm = len(cfg.value_steps)
        rows = futures.double().repeat_interleave(mm, dim=0)  # (R*M, ...)
        seeds = [derive_seed(cfg.seed, s, 2, i, j) for s, i in noise_keys for j in range(mm)]
        x_T = self.sampling.noise(seeds, rows.shape[1:], m.sampler).to(rows.device)
        x_v, calls = self.sampling.sample(net_fn, rows, torch.tensor(lay.condition_mask(cfg.score)), x_T,
                                          list(cfg.value_steps) * futures.shape[0], m.sampler, cfg.max_batch)
        raw = codec.extract_value(x_v[:, :, lay.value_index])  # (R*M,) in [-1, 1]
        _sync(x_v.device)
        return codec.value_to_unit(raw).cpu().numpy().reshape(futures.shape[0], mm), calls

    def values_of(self, prepared, futures: torch.Tensor) -> np.ndarray:
        """The value stage alone on given futures (R, 16, T, h, w) of one observation (``prepared``): (R, M) value
        samples in [0, 1], every row under the common noise draws of world-model sample k = 0. Scores futures that
        did not come from the world model, e.g. the real outcome of each candidate (bench/planning_truth.py)."""
        with torch.inference_mode():
            values, _ = self._value_stage(self._net_fn(prepared.text), futures, [(0, 0)] * futures.shape[0])
        return values

    # ---- scoring -----------------------------------------------------------------------------------
    def score(self, obs: Observation, actions: np.ndarray, candidate_seeds: Optional[Sequence[int]] = None,
              preprocessed: bool = False, prepared=None) -> PlanResult:
        """Evaluate N candidate chunks for ``obs``.

        actions: (N, H, A) robot-unit chunks (candidate 0 = the base candidate kept on ties).
        candidate_seeds: N integers identifying the candidates (their sampling seeds); with
        ``noise="per_candidate"`` they seed the planning noise (a candidate scores the same alone or in any
        batch either way). Default: 0..N-1.
        """
        cfg, lay, m = self.config, self.layout, self.model
        t_start = time.perf_counter()
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 3 or a.shape[1:] != (lay.horizon, lay.action_dim) or a.shape[0] < 1:
            raise ValueError(f"actions: expected (N, {lay.horizon}, {lay.action_dim}) with N >= 1, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("actions: expected finite values")
        n = a.shape[0]
        seeds = list(range(n)) if candidate_seeds is None else [int(s) for s in candidate_seeds]
        if len(seeds) != n:
            raise ValueError(f"candidate_seeds: expected {n}, got {len(seeds)}")
        k_steps, v_steps = cfg.future_state_steps, cfg.value_steps
        k, mm = len(k_steps), len(v_steps)
        noise_ids = seeds if cfg.noise == "per_candidate" else [0] * n  # common: one set of draws for all
        prep = prepared if prepared is not None else self.prepare(obs, preprocessed)
        t_prep = time.perf_counter()
        sc, smp = m.sampler, self.sampling
        net_fn = self._net_fn(prep.text)
        with torch.inference_mode():
            # ---- world model: N*K rows, row (n, k) -> candidate n, k-th step count
            clean = m._inject(prep, n, a)  # (N, 16, T, h, w) float32: proprio + candidate action injected
            clean_wm = clean.repeat_interleave(k, dim=0)  # (N*K, ...)
            wm_seeds = [derive_seed(cfg.seed, s, 1, i) for s in noise_ids for i in range(k)]
            x_T = smp.noise(wm_seeds, clean_wm.shape[1:], sc).to(clean_wm.device)
            x_wm, wm_calls = smp.sample(net_fn, clean_wm, torch.tensor(lay.condition_mask("world_model")), x_T,
                                        list(k_steps) * n, sc, cfg.max_batch)
            _sync(x_wm.device)
            t_wm = time.perf_counter()
            # ---- value: N*K*M rows, row (n, k, j) -> world-model row (n, k), j-th step count
            values, v_calls = self._value_stage(net_fn, x_wm, [(s, i) for s in noise_ids for i in range(k)])
            values = values.reshape(n, k, mm)
            p_norm = codec.extract(x_wm[:, :, lay.future_proprio_index], lay.proprio_dim).cpu().numpy()
        t_v = time.perf_counter()  # _value_stage synchronised the device
        future_proprio = codec.unnormalize_proprio(p_norm, m.stats).reshape(n, k, lay.proprio_dim).astype(np.float32)
        images: List[List[Dict[str, np.ndarray]]] = [[] for _ in range(n)]
        if cfg.decode_future_images != "none":
            rows = x_wm if cfg.decode_future_images == "all" else x_wm[::k]
            per_cand = k if cfg.decode_future_images == "all" else 1
            decoded = m._decode_future(rows, prep.clean)
            for i in range(n):
                images[i] = decoded[i * per_cand:(i + 1) * per_cand]
        t_dec = time.perf_counter()
        scores = aggregate(values.reshape(n, k * mm), cfg.aggregation, cfg.majority_threshold, cfg.lcb_beta)
        return PlanResult(
            chosen=select_candidate(scores, margin=cfg.switch_margin), scores=scores, values=values,
            future_proprio=future_proprio,
            future_images=images, candidate_seeds=seeds, config=cfg,
            calls={"world_model": wm_calls, "value": v_calls},
            timings={"prepare": t_prep - t_start, "world_model": t_wm - t_prep, "value": t_v - t_wm,
                     "decode": t_dec - t_v, "total": t_dec - t_start})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def candidate_seeds(base_seed: int, n: int) -> List[int]:
    """Seeds of N candidates: the base seed first (its chunk is kept on ties), then base+1, ..."""
    if n < 1:
        raise ValueError(f"expected at least one candidate, got {n}")
    return [int(base_seed) + i for i in range(n)]


def plan(policy, planner: Planner, obs: Observation, num_candidates: int = 8,
         base_seed: Optional[int] = None, prefix=None) -> Tuple[PolicyOutput, PlanResult, List[PolicyOutput]]:
    """Sample N candidates with ``policy`` (one batch), score them with ``planner``; returns
    (chosen output, plan result, all candidate outputs). prefix: real-time chunking
    (:class:`cosmos_policy_ros.core.rtc.ChunkPrefix`), the same for every candidate."""
    seed = getattr(policy, "default_seed", DEFAULT_SEED) if base_seed is None else int(base_seed)
    seeds = candidate_seeds(seed, num_candidates)
    outs = policy.infer_batch(obs, seeds, **({"prefix": prefix} if prefix is not None else {}))
    result = planner.score(obs, np.stack([o.actions for o in outs]), seeds)
    return outs[result.chosen], result, outs


class LocalPlanningBackend(PolicyWrapper):
    """PolicyBackend running best-of-N in one process (policy and planning model on one or two devices).

    ``infer`` samples ``num_candidates`` chunks with the base backend and returns the chosen one; the
    last :class:`PlanResult` stays in ``last_result`` (None after a decision the window skipped). The ROS split
    (planner in its own node, deadline, fallback) is :class:`cosmos_policy_ros.ros.planning_client.PlanningBackend`.

    window: a :class:`PlanWindow` (None: plan every decision); :meth:`start_episode` tells the backend when the
    episode began (the ROS-free rollouts call it at each reset, the policy node on each episode START event).
    """

    def __init__(self, base, planner: Planner, num_candidates: int = 8, window: Optional[PlanWindow] = None):
        if num_candidates < 1:
            raise ValueError(f"num_candidates: expected >= 1, got {num_candidates}")
        self.base = base
        self.planner = planner
        self.num_candidates = int(num_candidates)
        self.gate = PlanGate(window)  # the episode start and the decisions the window skipped
        self.horizon, self.action_dim, self.period = base.horizon, base.action_dim, base.period
        self.policy_id = f"{base.policy_id}+best-of-{num_candidates}"
        self.last_result: Optional[PlanResult] = None

    def start_episode(self, stamp: float) -> None:
        """An episode began at ``stamp`` (the observations' clock): the planning window counts from here."""
        self.gate.start_episode(stamp)

    @property
    def instructions(self) -> List[str]:
        return list(self.base.instructions)

    @property
    def layout(self):
        """The base policy's latent layout (ROS-free rollouts read the action dimension from it)."""
        return self.base.layout

    def infer(self, obs: Observation, seed: Optional[int] = None, prefix=None) -> PolicyOutput:
        if self.gate.skips(obs.stamp):  # the base policy's own chunk, exactly as without planning
            self.last_result = None
            return self.base.infer(obs, seed=seed, **({"prefix": prefix} if prefix is not None else {}))
        out, result, _ = plan(self.base, self.planner, obs, self.num_candidates, seed, prefix=prefix)
        self.last_result = result
        out.timings = dict(out.timings)
        out.timings["planning"] = result.timings["total"]
        return out

    def infer_batch(self, obs: Observation, seeds: Sequence[int], prefix=None) -> List[PolicyOutput]:
        return self.base.infer_batch(obs, seeds, **({"prefix": prefix} if prefix is not None else {}))
