"""Training samples (s, a, s', V(s')) from episode files (demonstrations and recorded rollouts).

A sample at step t of an episode of T steps (obs[t] precedes action[t], 25 Hz):

- s  = current proprio ``qpos[t]`` and the current images of every camera of the layout;
- a  = the chunk ``action[t : t+H]`` (H = 50), padded past the episode end by repeating the last action;
- s' = proprio and images at ``t' = min(t + H, T - 1)``;
- V(s') = the discounted terminal score at t': ``G_t' = gamma^(T-1-t') * R`` (gamma 0.998, R the
  episode's success score in [0, 1]; failures give 0), rescaled to [-1, 1] (``2G - 1``).

Proprio and actions are min-max normalised with the dataset statistics (NVIDIA's JSON keys), computed
from the episodes (:func:`compute_stats`) and saved with the checkpoint. Images are preprocessed as at
inference (squash, resize) except that the 90%-area crop is random (augmentation, one draw per sample
for all its frames) instead of central; with augmentation off the inference centre crop is used, which
makes a sample's latents a pure function of (episode, t): they can then be cached (:class:`LatentCache`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np
import torch

from cosmos_policy_ros.core import codec
from cosmos_policy_ros.core.codec import DatasetStats
from cosmos_policy_ros.core.images import ImageConfig, preprocess_batch, to_model_range
from cosmos_policy_ros.core.layout import LatentLayout

from .augment import AugmentConfig, apply_augment, draw_params
from .episodes import Episode, read_episode

KINDS = ("demo", "rollout")


@dataclass
class DatasetConfig:
    """Sample construction. ``stride``: use every stride-th step as a sample start (1 = all).
    ``unlabelled_score``: success score of episodes without a label (demos count as successes).
    ``demo_score``: force this score on demo episodes (None = their own label / unlabelled_score)."""

    gamma: float = 0.998
    stride: int = 1
    unlabelled_score: float = 1.0
    demo_score: Optional[float] = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: share of the draws that go to the episodes' first samples (t = 0), uniformly; 0: no special weight. Every
    #: episode starts from the same pose, so only the cameras tell the first chunk where the object is; with
    #: one such sample per episode among hundreds, that readout gets too little of the gradient to be learnt.
    first_step_fraction: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.first_step_fraction < 1.0:
            raise ValueError(f"dataset first_step_fraction: expected in [0, 1), got {self.first_step_fraction}")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"dataset gamma: expected in (0, 1], got {self.gamma}")
        if int(self.stride) < 1:
            raise ValueError(f"dataset stride: expected >= 1, got {self.stride}")
        for name in ("unlabelled_score", "demo_score"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"dataset {name}: expected in [0, 1], got {v}")


def value_targets(num_steps: int, score: float, horizon: int, gamma: float = 0.998) -> np.ndarray:
    """(T,) value targets in [-1, 1]: ``2 * gamma^(T-1-t') * score - 1`` with ``t' = min(t+horizon, T-1)``."""
    if num_steps < 1:
        raise ValueError(f"expected at least one step, got {num_steps}")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"expected a success score in [0, 1], got {score}")
    t_next = np.minimum(np.arange(num_steps) + horizon, num_steps - 1)
    returns = gamma ** (num_steps - 1 - t_next) * score  # G at t'
    return 2.0 * returns - 1.0


def action_chunk(actions: np.ndarray, t: int, horizon: int) -> np.ndarray:
    """(T, A) -> (horizon, A) = actions[t : t+horizon], padded by repeating the last action."""
    T = actions.shape[0]
    idx = np.minimum(np.arange(t, t + horizon), T - 1)
    return actions[idx]


def compute_stats(episodes: Iterable[Episode], relative_actions: Sequence[int] = ()) -> DatasetStats:
    """Per-dimension min / max / mean / std / median of actions and proprio over all steps;
    ``relative_actions``: action dimensions the model predicts relative to the current proprio (flagged in
    the stats so that inference mirrors it, see :mod:`cosmos_policy_ros.core.codec`)."""
    acts, props = [], []
    for ep in episodes:
        acts.append(np.asarray(ep.action, np.float64))
        props.append(np.asarray(ep.qpos, np.float64))
    if not acts:
        raise ValueError("compute_stats: expected at least one episode")
    out = {}
    for name, arr in (("actions", np.concatenate(acts)), ("proprio", np.concatenate(props))):
        out.update({f"{name}_min": arr.min(0), f"{name}_max": arr.max(0), f"{name}_mean": arr.mean(0),
                    f"{name}_std": arr.std(0), f"{name}_median": np.median(arr, 0)})
    return DatasetStats.from_dict(out).with_relative_actions(relative_actions)


@dataclass
class EpisodeData:
    """One episode ready for sampling: images (T, ncam, 3, S, S) uint8 preprocessed (no crop when
    augmenting), normalised proprio / actions (float32) and value targets (T,) in [-1, 1]."""

    path: str
    kind: str
    task: str
    score: float
    proprio: torch.Tensor  # (T, P) normalised
    actions: torch.Tensor  # (T, A) normalised (absolute)
    values: torch.Tensor  # (T,) in [-1, 1]
    images: torch.Tensor  # (T, ncam, 3, S, S) uint8; (len(frame_steps), ...) when frame_steps is set
    action_ref: Optional[torch.Tensor] = None  # (T, A) codec.action_reference of qpos[t]; None: all absolute
    #: the actions are labels (DAgger: the expert's), not what was executed; the recorded futures follow the
    #: executed actions, so such an episode is a policy sample only (never world-model or value)
    policy_only: bool = False
    #: only steps t < sample_until start samples (scene-start files: 1); None: every step
    sample_until: Optional[int] = None
    #: the steps ``images`` holds, in order, when it holds only the frames samples read; None: all T steps
    frame_steps: Optional[List[int]] = None
    #: the only steps that start samples, whatever the stride (grasp-phase files); None: every stride-th step
    fixed_steps: Optional[List[int]] = None

    def frames(self, steps: Sequence[int]) -> torch.Tensor:
        """(len(steps), ncam, 3, S, S) model-size images of these steps."""
        if self.frame_steps is None:
            return self.images[list(steps)]
        pos = {t: i for i, t in enumerate(self.frame_steps)}
        missing = [t for t in steps if t not in pos]
        if missing:
            raise KeyError(f"{self.path}: steps {missing} were not loaded (only {self.frame_steps})")
        return self.images[[pos[t] for t in steps]]

    @property
    def num_steps(self) -> int:
        return int(self.proprio.shape[0])

    def sample_steps(self, stride: int) -> List[int]:
        """The steps that start samples at ``stride`` (the dataset index and the latent cache agree on them)."""
        if self.fixed_steps is not None:
            return [t for t in self.fixed_steps if t < self.num_steps]
        end = self.num_steps if self.sample_until is None else min(self.num_steps, self.sample_until)
        return list(range(0, end, stride))


def relabelled(ep: Episode) -> bool:
    """Whether the episode's actions are labels recorded beside another policy's execution (``rollouts
    --expert-labels``: attribute ``action_labels="expert"``)."""
    return str(ep.attrs.get("action_labels", "executed")) == "expert"


def episode_score(ep: Episode, kind: str, cfg: DatasetConfig) -> float:
    """The terminal success score R of an episode (see :class:`DatasetConfig`). A relabelled episode keeps its
    own outcome even as a demo: its futures are those of the executed actions, not of the labels."""
    if kind == "demo" and cfg.demo_score is not None and not relabelled(ep):
        return float(cfg.demo_score)
    s = ep.success_score
    if s is None or not math.isfinite(s):
        return float(cfg.unlabelled_score) if not ep.success else 1.0
    return float(min(max(s, 0.0), 1.0))


def sample_until(attrs, path="episode") -> Optional[int]:
    """An episode file's ``sample_until`` attribute (only steps before it start samples), None when absent."""
    until = attrs.get("sample_until")
    if until is None:
        return None
    if int(until) < 1:
        raise ValueError(f"{path}: expected sample_until >= 1, got {until}")
    return int(until)


def fixed_sample_steps(attrs, path="episode") -> Optional[List[int]]:
    """An episode file's ``sample_steps`` attribute (the only steps that start samples, whatever the stride),
    None when absent."""
    steps = attrs.get("sample_steps")
    if steps is None:
        return None
    out = sorted({int(t) for t in np.atleast_1d(np.asarray(steps))})
    if not out or out[0] < 0:
        raise ValueError(f"{path}: expected sample_steps >= 0, got {list(np.atleast_1d(steps))}")
    return out


def sample_frames(until: Optional[int], num_steps: int, horizon: int,
                  steps: Optional[Sequence[int]] = None) -> Optional[List[int]]:
    """The frames the samples of a ``sample_until`` / ``sample_steps`` file read (each start and its future);
    None: all of them. Scene-start and grasp-phase files render only these."""
    if steps is not None:
        starts = [int(s) for s in steps if int(s) < num_steps]
    elif until is not None:
        starts = list(range(min(until, num_steps)))
    else:
        return None
    return sorted({t for s in starts for t in (s, min(s + horizon, num_steps - 1))})


def file_sample_frames(attrs, num_steps: int, horizon: int, path="episode") -> Optional[List[int]]:
    """:func:`sample_frames` of an episode file's attributes."""
    return sample_frames(sample_until(attrs, path), num_steps, horizon, fixed_sample_steps(attrs, path))


def preprocess_episode_images(ep: Episode, cameras: Sequence[str], image_cfg: ImageConfig, augment: bool,
                              chunk: int = 64, steps: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Episode frames -> (T, ncam, 3, S, S) uint8 model-size images. With ``augment`` the centre crop is
    left out (the random crop replaces it); without, the exact inference preprocessing is applied.
    ``steps``: preprocess only these frames -> (len(set(steps)), ncam, 3, S, S) in increasing step order
    (scene-start files; :meth:`EpisodeData.frames` maps steps to them)."""
    cfg = dataclasses.replace(image_cfg, crop_area=1.0) if augment else image_cfg
    missing = [c for c in cameras if c not in ep.images]
    if missing:
        raise ValueError(f"episode is missing cameras {missing}; it has {sorted(ep.images)}")
    T = ep.num_steps
    if steps is not None:
        idx = sorted(set(int(t) for t in steps))
        out = torch.empty((len(idx), len(cameras), 3, cfg.size, cfg.size), dtype=torch.uint8)
        for ci, cam in enumerate(cameras):
            raw = torch.from_numpy(np.ascontiguousarray(ep.images[cam][idx])).permute(0, 3, 1, 2)  # (n, 3, H, W)
            out[:, ci] = preprocess_batch(raw, cfg, cam)
        return out
    out = torch.empty((T, len(cameras), 3, cfg.size, cfg.size), dtype=torch.uint8)
    for ci, cam in enumerate(cameras):
        frames = ep.images[cam]
        for s in range(0, T, chunk):  # chunks bound the float32 working memory of the resize
            raw = torch.from_numpy(np.ascontiguousarray(frames[s:s + chunk])).permute(0, 3, 1, 2)  # (n, 3, H, W)
            out[s:s + chunk, ci] = preprocess_batch(raw, cfg, cam)
    return out


def load_episode_data(path: Union[str, Path], kind: str, layout: LatentLayout, stats: DatasetStats,
                      image_cfg: ImageConfig, cfg: DatasetConfig, episode: Optional[Episode] = None) -> EpisodeData:
    """Read (unless given) and prepare one episode file."""
    if kind not in KINDS:
        raise ValueError(f"episode kind: expected one of {KINDS}, got {kind!r}")
    ep = episode if episode is not None else read_episode(path, cameras=layout.cameras)
    if ep.qpos.shape[1] != layout.proprio_dim or ep.action.shape[1] != layout.action_dim:
        raise ValueError(f"{path}: expected proprio/action dims {layout.proprio_dim}/{layout.action_dim}, "
                         f"got {ep.qpos.shape[1]}/{ep.action.shape[1]}")
    score = episode_score(ep, kind, cfg)
    until = sample_until(ep.attrs, path)
    fixed = fixed_sample_steps(ep.attrs, path)
    needed = sample_frames(until, ep.num_steps, layout.horizon, fixed)
    return EpisodeData(
        path=str(path), kind=kind, task=ep.task, score=score,
        proprio=torch.from_numpy(codec.normalize_proprio(ep.qpos, stats)).float(),
        actions=torch.from_numpy(codec.normalize_actions(ep.action, stats.with_relative_actions(()))).float(),
        action_ref=(torch.from_numpy(codec.action_reference(ep.qpos, stats)).float()
                    if stats.relative_actions.any() else None),
        values=torch.from_numpy(value_targets(ep.num_steps, score, layout.horizon, cfg.gamma)).float(),
        images=preprocess_episode_images(ep, layout.cameras, image_cfg, cfg.augment.enabled, steps=needed),
        policy_only=relabelled(ep), sample_until=until, frame_steps=needed, fixed_steps=fixed)


@dataclass
class Sample:
    """One training sample before the VAE. Images (ncam, 3, S, S) uint8 after augmentation."""

    images_now: torch.Tensor
    images_next: torch.Tensor
    proprio: torch.Tensor  # (P,)
    actions: torch.Tensor  # (H * A,) row-major chunk, normalised
    proprio_next: torch.Tensor  # (P,)
    value: torch.Tensor  # () in [-1, 1]
    task: str
    key: Tuple[int, int]  # (episode index, t)
    policy_only: bool = False  # see EpisodeData.policy_only


class EpisodeDataset:
    """All samples of a list of episodes. ``index[i] = (episode, t)``; ``weights`` (per sample) give the
    sampling probability: episodes of each kind share ``kind_fractions`` of the draws (e.g. the planning
    recipe's 10% demos / 90% rollouts), uniformly within a kind."""

    def __init__(self, episodes: Sequence[EpisodeData], layout: LatentLayout, stats: DatasetStats,
                 cfg: Optional[DatasetConfig] = None, kind_fractions: Optional[Dict[str, float]] = None):
        if not episodes:
            raise ValueError("dataset: expected at least one episode")
        self.episodes = list(episodes)
        self.layout = layout
        self.stats = stats
        self.cfg = cfg or DatasetConfig()
        self.index: List[Tuple[int, int]] = [(e, t) for e, ep in enumerate(self.episodes)
                                             for t in ep.sample_steps(self.cfg.stride)]
        kinds = [self.episodes[e].kind for e, _ in self.index]
        w = np.ones(len(self.index), dtype=np.float64)
        if kind_fractions:
            present = {k for k in kinds}
            unknown = set(kind_fractions) - set(KINDS)
            if unknown:
                raise ValueError(f"kind_fractions: expected keys from {KINDS}, got {sorted(unknown)}")
            total = sum(kind_fractions.get(k, 0.0) for k in present)
            if total <= 0:
                raise ValueError(f"kind_fractions {kind_fractions} give no weight to the kinds present {sorted(present)}")
            for k in present:
                sel = np.array([x == k for x in kinds])
                w[sel] = kind_fractions.get(k, 0.0) / total / sel.sum()
        f = self.cfg.first_step_fraction
        first = np.zeros(len(self.index), dtype=bool)
        first[self.first_sample_indices()] = True
        if f > 0 and first.any() and not first.all():
            w[first] = f / first.sum()  # episodes weigh alike here: each starts one scene
            w[~first] *= (1.0 - f) / w[~first].sum()
        self.weights = torch.from_numpy(w / w.sum())

    def first_sample_indices(self) -> List[int]:
        """Dataset indices of each episode's first sample (t = 0: the index starts every episode there), in
        episode order."""
        return [i for i, (_, t) in enumerate(self.index) if t == 0]

    @classmethod
    def from_paths(cls, demos: Sequence[Union[str, Path]], layout: LatentLayout, image_cfg: ImageConfig,
                   cfg: Optional[DatasetConfig] = None, rollouts: Sequence[Union[str, Path]] = (),
                   stats: Optional[DatasetStats] = None, kind_fractions: Optional[Dict[str, float]] = None,
                   progress: bool = False, relative_actions: Sequence[int] = ()) -> "EpisodeDataset":
        """Read episode files (``demos`` and ``rollouts``); stats are computed from all of them unless given
        (``relative_actions`` then flags the action dimensions predicted relative to the current proprio;
        given stats keep their own flags)."""
        cfg = cfg or DatasetConfig()
        items = [(p, "demo") for p in demos] + [(p, "rollout") for p in rollouts]
        if not items:
            raise ValueError("dataset: expected at least one episode file")
        if stats is None:  # from the low-dimensional data only: raw frames are read one episode at a time below
            stats = compute_stats([read_episode(p, load_images=False) for p, _ in items], relative_actions)
        data = []
        for p, kind in items:
            with h5py.File(p, "r") as f:  # scene-start files: read only the frames their samples use
                frames = file_sample_frames(f.attrs, int(f["action"].shape[0]), layout.horizon, p)
            ep = read_episode(p, cameras=layout.cameras, steps=frames)
            data.append(load_episode_data(p, kind, layout, stats, image_cfg, cfg, episode=ep))
            del ep  # raw frames (138 MB for a 200-step 240x320 sim demo) are not kept, only model-size images
            if progress:
                print(f"  loaded {p} ({ep.num_steps} steps, {kind}, score {data[-1].score:.2f})", flush=True)
        return cls(data, layout, stats, cfg, kind_fractions)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def tasks(self) -> List[str]:
        return sorted({ep.task for ep in self.episodes})

    def sample(self, i: int, gen: Optional[torch.Generator] = None) -> Sample:
        """Sample ``i``; ``gen`` drives the augmentation (None or augmentation disabled: no augmentation)."""
        e, t = self.index[i]
        ep = self.episodes[e]
        lay = self.layout
        T = ep.num_steps
        tn = min(t + lay.horizon, T - 1)
        chunk_idx = torch.clamp(torch.arange(t, t + lay.horizon), max=T - 1)
        now, nxt = ep.frames([t, tn])  # (ncam, 3, S, S) each
        if gen is not None and self.cfg.augment.enabled:
            params = draw_params(self.cfg.augment, gen)
            both = apply_augment(torch.cat([now, nxt]), params, self.cfg.augment)  # same draw for all frames
            now, nxt = both[: now.shape[0]], both[now.shape[0]:]
        chunk = ep.actions[chunk_idx]  # (H, A)
        if ep.action_ref is not None:  # relative dimensions: from where the arm is at t
            chunk = chunk - ep.action_ref[t]
        return Sample(images_now=now, images_next=nxt, proprio=ep.proprio[t],
                      actions=chunk.reshape(-1), proprio_next=ep.proprio[tn],
                      value=ep.values[t], task=ep.task, key=(e, t), policy_only=ep.policy_only)


def build_video(images_now: torch.Tensor, images_next: torch.Tensor, layout: LatentLayout) -> torch.Tensor:
    """(B, ncam, 3, S, S) uint8 current and future images -> (B, 3, F, S, S) float32 in [-1, 1].

    The raw video follows the layout: blank frame 0, then 4 copies per latent slot; image slots hold their
    camera's current / future image, vector slots hold black frames (as the policy's inference video).
    """
    b, ncam, _, s, _ = images_now.shape
    cams = {c: i for i, c in enumerate(layout.cameras)}
    frames = torch.zeros((b, layout.num_raw_frames, 3, s, s), dtype=torch.uint8, device=images_now.device)
    for k, slot in enumerate(layout.slots):
        if slot.kind == "image":
            src = images_now if slot.role == "current" else images_next
            for f in layout.raw_frames(k):
                frames[:, f] = src[:, cams[slot.camera]]
    return to_model_range(frames).permute(0, 2, 1, 3, 4)  # (B, 3, F, S, S)


def inject_vectors(latents: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor,
                   proprio_next: torch.Tensor, value: torch.Tensor, layout: LatentLayout) -> torch.Tensor:
    """Overwrite the vector frames of (B, 16, T, h, w) VAE latents with the tiled normalised vectors."""
    x = latents.clone()
    fs = tuple(x.shape[1:2]) + tuple(x.shape[3:])
    dt = x.dtype
    x[:, :, layout.current_proprio_index] = codec.inject(proprio.to(dt), fs)
    x[:, :, layout.action_index] = codec.inject(actions.to(dt), fs)
    x[:, :, layout.future_proprio_index] = codec.inject(proprio_next.to(dt), fs)
    x[:, :, layout.value_index] = codec.inject_value(value.to(dt), fs)
    return x


def latent_cache_key(vae: torch.nn.Module, layout: LatentLayout, image_cfg: ImageConfig, path: str, stride: int) -> str:
    """Identifies cached latents: VAE weights, layout, image preprocessing, episode file (+ size, mtime), stride."""
    h = hashlib.sha1()
    for k, v in sorted(vae.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    p = Path(path)
    st = p.stat() if p.exists() else None
    h.update(json.dumps([layout.to_dict(), image_cfg.to_dict(), str(p.resolve()),
                         st.st_size if st else 0, st.st_mtime_ns if st else 0, stride]).encode())
    return h.hexdigest()[:16]


LATENT_STD_FLOOR = 1e-4  # elements that never vary (e.g. image borders) keep a finite gain
#: ``latent_norm="scene"``: the current-image std is floored at this fraction of the all-sample std, so an element
#: that never varies between starting scenes does not amplify later changes (an arm passing) without bound
SCENE_STD_FLOOR = 0.1


def latent_element_stats(latents: torch.Tensor, layout: LatentLayout,
                         scene: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-element mean and std over samples of Wan-normalised latents (N, 16, T, h, w) -> two (16, T, h, w)
    tensors for :meth:`CosmosNetwork.set_latent_norm`. Only image frames are standardised (std floored at
    ``LATENT_STD_FLOOR``); the blank and vector frames get mean 0 / std 1, as injection overwrites them.

    ``scene`` (M, 16, T, h, w): latents of the episodes' first steps (``latent_norm="scene"``). The *current*
    image frames then take their mean and std from these, std floored at ``SCENE_STD_FLOOR`` x the all-sample
    std: the unit becomes what tells starting scenes apart (where the object is), not the arms' motion later in
    the episode. Future image frames keep the all-sample statistics (they are prediction targets)."""
    if latents.dim() != 5 or latents.shape[2] != layout.num_frames:
        raise ValueError(f"latent stats: expected (N, 16, {layout.num_frames}, h, w) latents, got {tuple(latents.shape)}")
    if latents.shape[0] < 2:
        raise ValueError(f"latent stats: expected at least 2 samples, got {latents.shape[0]}")
    x = latents.double()
    mean = x.mean(0)
    std = x.std(0).clamp_min(LATENT_STD_FLOOR)
    image = torch.zeros(layout.num_frames, dtype=torch.bool)
    image[[i for i, sl in enumerate(layout.slots) if sl.kind == "image"]] = True
    if scene is not None:
        if scene.dim() != 5 or tuple(scene.shape[1:]) != tuple(latents.shape[1:]) or scene.shape[0] < 2:
            raise ValueError(f"latent stats: expected at least 2 scene latents of shape {tuple(latents.shape[1:])}, "
                             f"got {tuple(scene.shape)}")
        cur = [i for i, sl in enumerate(layout.slots) if sl.kind == "image" and sl.role == "current"]
        s = scene.double()[:, :, cur]
        mean[:, cur] = s.mean(0)
        std[:, cur] = torch.maximum(s.std(0), SCENE_STD_FLOOR * std[:, cur]).clamp_min(LATENT_STD_FLOOR)
    mean[:, ~image] = 0.0
    std[:, ~image] = 1.0
    return mean.float(), std.float()


class LatentCache:
    """VAE latents (un-injected) of every sample of an un-augmented dataset, computed once.

    Valid only with augmentation disabled (then a sample's video depends on (episode, t) alone) and a
    frozen VAE. ``cache_dir`` keeps them across runs (one safetensors file per episode, keyed by
    :func:`latent_cache_key`).
    """

    def __init__(self, dataset: EpisodeDataset, network, image_cfg: ImageConfig, batch_size: int = 8,
                 cache_dir: Optional[Union[str, Path]] = None, progress: bool = False, device=None):
        if dataset.cfg.augment.enabled:
            raise ValueError("LatentCache: expected a dataset with augmentation disabled (augmented latents differ per draw)")
        from safetensors.torch import load_file, save_file

        self.dataset = dataset
        device = device or network.device
        self.latents: Dict[Tuple[int, int], torch.Tensor] = {}
        lay = dataset.layout
        for e, ep in enumerate(dataset.episodes):
            ts = ep.sample_steps(dataset.cfg.stride)
            file = None
            if cache_dir is not None:
                key = latent_cache_key(network.vae, lay, image_cfg, ep.path, dataset.cfg.stride)
                file = Path(cache_dir) / f"{Path(ep.path).stem}-{key}.safetensors"
                if file.is_file():
                    try:
                        lat = load_file(str(file))["latents"]
                    except Exception:  # unreadable cache file: recompute it
                        lat = None
                    if lat is not None and lat.shape[0] == len(ts):
                        for j, t in enumerate(ts):
                            self.latents[(e, t)] = lat[j]
                        continue
            out = []
            for s in range(0, len(ts), batch_size):
                tb = ts[s:s + batch_size]
                tn = [min(t + lay.horizon, ep.num_steps - 1) for t in tb]
                video = build_video(ep.frames(tb), ep.frames(tn), lay)
                out.append(network.encode_wan(video.to(device)).to("cpu", torch.float32))  # before any latent norm
            lat = torch.cat(out)  # (n_t, 16, T, h, w)
            for j, t in enumerate(ts):
                self.latents[(e, t)] = lat[j]
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_suffix(".tmp")
                save_file({"latents": lat.contiguous()}, str(tmp))
                tmp.replace(file)  # atomic: an interrupted run never leaves a partial cache file
            if progress:
                print(f"  encoded {ep.path}: {len(ts)} samples", flush=True)

    def get(self, keys: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """(B, 16, T, h, w) latents of the given (episode, t) keys."""
        return torch.stack([self.latents[k] for k in keys])
