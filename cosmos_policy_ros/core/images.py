"""Camera frame -> model input image, in torch only (no torchvision: it cannot be installed here).

Facts sheet section 1: the raw frame (e.g. 480x640) is squashed, aspect not kept, to 256x256 (bicubic),
then resized to the model size (224); because training used 90%-area random crops, inference takes the
centre crop of 90% area (212x212 at 224) and resizes it back to 224 (bilinear, antialiased). Every stage
rounds back to uint8, as the reference works on uint8 images between stages. The channel order of the
input is an explicit argument: the model wants RGB.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

CHANNEL_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class ImageConfig:
    """Preprocessing sizes. ``input_size`` (H, W), when set, is the only accepted raw frame size."""

    squash_size: int = 256
    size: int = 224
    crop_area: float = 0.9
    input_size: Optional[Tuple[int, int]] = None
    min_input_size: int = 16

    def __post_init__(self):
        if self.squash_size < 1 or self.size < 1:
            raise ValueError(f"image sizes: expected positive, got squash_size={self.squash_size}, size={self.size}")
        if not (0.0 < self.crop_area <= 1.0):
            raise ValueError(f"image crop_area: expected in (0, 1], got {self.crop_area}")
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
            if len(self.input_size) != 2:
                raise ValueError(f"image input_size: expected (H, W), got {self.input_size}")

    @property
    def crop_size(self) -> int:
        """Side of the centre crop (212 for 224 at 90% area)."""
        return int(self.size * math.sqrt(self.crop_area))

    def to_dict(self) -> dict:
        return {"squash_size": self.squash_size, "size": self.size, "crop_area": self.crop_area,
                "input_size": list(self.input_size) if self.input_size else None,
                "min_input_size": self.min_input_size}


def check_image(img: np.ndarray, cfg: ImageConfig, name: str = "image") -> None:
    """Raise ValueError with a clear message unless ``img`` is an (H, W, 3) uint8 frame of an accepted size."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3), got {img.shape}")
    if cfg.input_size is not None and tuple(img.shape[:2]) != cfg.input_size:
        raise ValueError(f"{name}: expected size {cfg.input_size[0]}x{cfg.input_size[1]}, got {img.shape[0]}x{img.shape[1]}")
    if min(img.shape[:2]) < cfg.min_input_size:
        raise ValueError(f"{name}: expected at least {cfg.min_input_size} px per side, got {img.shape[0]}x{img.shape[1]}")


def _resize_u8(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(N, 3, H, W) float holding uint8 values -> (N, 3, size, size) float rounded to uint8 values."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    y = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255)


def preprocess_batch(images: torch.Tensor, cfg: ImageConfig) -> torch.Tensor:
    """(N, 3, H, W) uint8 RGB tensor -> (N, 3, size, size) uint8 RGB model input (squash, resize, crop)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    x = images.to(torch.float32)
    x = _resize_u8(x, cfg.squash_size, "bicubic")  # squash, aspect not kept
    x = _resize_u8(x, cfg.size, "bicubic")
    c = cfg.crop_size
    if c < cfg.size:
        top = int(round((cfg.size - c) / 2.0))
        x = x[:, :, top:top + c, top:top + c]
        x = _resize_u8(x, cfg.size, "bilinear")
    return x.to(torch.uint8)


def preprocess_images(images: Sequence[np.ndarray], cfg: ImageConfig, channel_order: str = "rgb") -> np.ndarray:
    """List of (H, W, 3) uint8 frames (sizes may differ) -> (N, size, size, 3) uint8 RGB.

    ``channel_order`` says what the input holds ("rgb" or "bgr"); the output is always RGB.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order: expected one of {CHANNEL_ORDERS}, got {channel_order!r}")
    out = []
    for i, img in enumerate(images):
        check_image(img, cfg, f"image {i}")
        t = torch.from_numpy(np.array(img)).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W); copy: input may be read-only
        if channel_order == "bgr":
            t = t.flip(1)
        out.append(preprocess_batch(t, cfg))
    return torch.cat(out).permute(0, 2, 3, 1).contiguous().numpy()


def to_model_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the VAE's input range)."""
    return images_u8.to(torch.float32) / 127.5 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (rounded, clamped)."""
    return ((x.to(torch.float32).clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
