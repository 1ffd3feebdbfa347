"""Image augmentation in torch (no torchvision), one random draw shared by every frame of a sample.

The reference trains with (facts sheet section 5): random resized crop at 90% area, rotation +-5 deg,
brightness 0.7-1.3, contrast 0.6-1.4, saturation 0.5-1.5, hue +-0.05. The same draw is applied to the
current and the future images of a sample (and to all cameras), so the scene stays consistent between
the conditioning frames and the predicted ones. Inference takes the deterministic centre crop instead
(:mod:`cosmos_policy_ros.core.images`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Ranges of the random augmentation; ``enabled=False`` returns the images unchanged."""

    enabled: bool = True
    crop_area: float = 0.9
    rotation_deg: float = 5.0
    brightness: Tuple[float, float] = (0.7, 1.3)
    contrast: Tuple[float, float] = (0.6, 1.4)
    saturation: Tuple[float, float] = (0.5, 1.5)
    hue: float = 0.05

    def __post_init__(self):
        if not 0.0 < self.crop_area <= 1.0:
            raise ValueError(f"augment crop_area: expected in (0, 1], got {self.crop_area}")
        if self.rotation_deg < 0 or not 0 <= self.hue <= 0.5:
            raise ValueError(f"augment: expected rotation_deg >= 0 and hue in [0, 0.5], got {self.rotation_deg}, {self.hue}")
        for name in ("brightness", "contrast", "saturation"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not 0 <= lo <= hi:
                raise ValueError(f"augment {name}: expected 0 <= low <= high, got ({lo}, {hi})")
            setattr(self, name, (lo, hi))


def draw_params(cfg: AugmentConfig, gen: torch.Generator) -> Dict[str, float]:
    """One random draw (crop offsets as fractions of the free margin, angle, colour factors)."""
    u = torch.rand(7, generator=gen, dtype=torch.float64).tolist()
    lerp = lambda r, x: r[0] + (r[1] - r[0]) * x  # noqa: E731
    return {"crop_x": u[0], "crop_y": u[1], "angle": (2 * u[2] - 1) * cfg.rotation_deg,
            "brightness": lerp(cfg.brightness, u[3]), "contrast": lerp(cfg.contrast, u[4]),
            "saturation": lerp(cfg.saturation, u[5]), "hue": (2 * u[6] - 1) * cfg.hue}


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 1, H, W) luma (ITU-R 601, as common colour-jitter implementations)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _shift_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue of (N, 3, H, W) RGB in [0, 1] by ``shift`` turns (RGB -> HSV -> RGB)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dc = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + shift) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    sel = lambda a0, a1, a2, a3, a4, a5: torch.where(i == 0, a0, torch.where(i == 1, a1, torch.where(  # noqa: E731
        i == 2, a2, torch.where(i == 3, a3, torch.where(i == 4, a4, a5)))))
    return torch.stack([sel(v, q, p, p, t, v), sel(t, v, v, q, p, p), sel(p, p, t, v, v, q)], dim=1)


def apply_augment(images: torch.Tensor, params: Dict[str, float], cfg: AugmentConfig) -> torch.Tensor:
    """(N, 3, S, S) uint8 RGB frames of ONE sample -> (N, 3, S, S) uint8, all with the same ``params``.

    Crop (``crop_area`` of the area, square, at the drawn offset) resized back to S and rotated by the
    drawn angle in one bilinear resampling (borders filled by edge replication), then brightness,
    contrast, saturation and hue in that order.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"augment: expected (N, 3, S, S) uint8, got {tuple(images.shape)} {images.dtype}")
    if not cfg.enabled:
        return images
    n, _, hgt, wid = images.shape
    x = images.to(torch.float32) / 255.0
    # ---- geometry: one affine grid = crop window (scale s, offset) composed with a rotation ----
    s = math.sqrt(cfg.crop_area)
    cx = (2 * params["crop_x"] - 1) * (1 - s)  # crop centre in normalised coords, window stays inside
    cy = (2 * params["crop_y"] - 1) * (1 - s)
    a = math.radians(params["angle"])
    ca, sa = math.cos(a), math.sin(a)
    theta = torch.tensor([[s * ca, -s * sa, cx], [s * sa, s * ca, cy]], dtype=torch.float32)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, 3, hgt, wid], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # ---- colour ----
    x = (x * params["brightness"]).clamp(0, 1)
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (params["contrast"] * x + (1 - params["contrast"]) * mean).clamp(0, 1)
    x = (params["saturation"] * x + (1 - params["saturation"]) * _gray(x)).clamp(0, 1)
    if params["hue"] != 0.0:
        x = _shift_hue(x, params["hue"]).clamp(0, 1)
    return (x * 255.0).round().to(torch.uint8)
