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
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

CHANNEL_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class ImageConfig:
    """Preprocessing sizes. ``input_size`` (H, W), when set, is the only accepted raw frame size.

    ``rois``: camera -> (top, left, height, width) as fractions of the raw frame, cut out before anything
    else (so the same box holds at any camera resolution). It lets a small model look at the part of a
    fixed camera's view where the task happens (the sim's cam_high: the table area the cube is drawn
    from); cameras not named are used whole. It travels with the checkpoint, so training and inference
    cut the same box.
    """

    squash_size: int = 256
    size: int = 224
    crop_area: float = 0.9
    input_size: Optional[Tuple[int, int]] = None
    min_input_size: int = 16
    rois: Optional[Mapping[str, Sequence[float]]] = None

    def __post_init__(self):
        if self.rois:
            rois: Dict[str, Tuple[float, float, float, float]] = {}
            for cam, box in dict(self.rois).items():
                box = tuple(float(v) for v in box)
                if len(box) != 4:
                    raise ValueError(f"image roi {cam!r}: expected (top, left, height, width), got {box}")
                top, left, h, w = box
                if not (0.0 <= top < 1.0 and 0.0 <= left < 1.0 and 0.0 < h <= 1.0 - top + 1e-9
                        and 0.0 < w <= 1.0 - left + 1e-9):
                    raise ValueError(f"image roi {cam!r}: expected fractions of the frame with top + height <= 1 "
                                     f"and left + width <= 1, got {box}")
                rois[str(cam)] = box
            object.__setattr__(self, "rois", rois)
        else:
            object.__setattr__(self, "rois", None)
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
        out = {"squash_size": self.squash_size, "size": self.size, "crop_area": self.crop_area,
               "input_size": list(self.input_size) if self.input_size else None,
               "min_input_size": self.min_input_size}
        if self.rois:
            out["rois"] = {cam: list(box) for cam, box in self.rois.items()}
        return out

    def roi_pixels(self, camera: Optional[str], height: int, width: int) -> Optional[Tuple[int, int, int, int]]:
        """The ROI of ``camera`` in pixels of an ``height`` x ``width`` frame: (top, left, h, w), or None."""
        if not self.rois or camera not in self.rois:
            return None
        top, left, h, w = self.rois[camera]
        y0, x0 = int(round(top * height)), int(round(left * width))
        y1, x1 = min(height, int(round((top + h) * height))), min(width, int(round((left + w) * width)))
        if y1 - y0 < 1 or x1 - x0 < 1:
            raise ValueError(f"camera {camera!r}: its roi is empty on a {height}x{width} frame")
        return y0, x0, y1 - y0, x1 - x0


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


def preprocess_batch(images: torch.Tensor, cfg: ImageConfig, camera: Optional[str] = None) -> torch.Tensor:
    """(N, 3, H, W) uint8 RGB tensor of one camera -> (N, 3, size, size) uint8 RGB model input (the camera's
    ROI if the config names one, then squash, resize, crop)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    roi = cfg.roi_pixels(camera, int(images.shape[2]), int(images.shape[3]))
    if roi is not None:
        y0, x0, h, w = roi
        images = images[:, :, y0:y0 + h, x0:x0 + w]  # a view: the float copy below is the only copy
    x = images.to(torch.float32)
    x = _resize_u8(x, cfg.squash_size, "bicubic")  # squash, aspect not kept
    x = _resize_u8(x, cfg.size, "bicubic")
    c = cfg.crop_size
    if c < cfg.size:
        top = int(round((cfg.size - c) / 2.0))
        x = x[:, :, top:top + c, top:top + c]
        x = _resize_u8(x, cfg.size, "bilinear")
    return x.to(torch.uint8)


def preprocess_images(images: Sequence[np.ndarray], cfg: ImageConfig, channel_order: str = "rgb",
                      cameras: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
    """List of (H, W, 3) uint8 frames (sizes may differ) -> (N, size, size, 3) uint8 RGB.

    ``channel_order`` says what the input holds ("rgb" or "bgr"); the output is always RGB. ``cameras``
    names the camera of each frame (for the config's ROIs); None: no ROI applies.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order: expected one of {CHANNEL_ORDERS}, got {channel_order!r}")
    if cameras is not None and len(cameras) != len(images):
        raise ValueError(f"cameras: expected one name per image ({len(images)}), got {len(cameras)}")
    out = []
    for i, img in enumerate(images):
        check_image(img, cfg, f"image {i}")
        t = torch.from_numpy(np.array(img)).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W); copy: input may be read-only
        if channel_order == "bgr":
            t = t.flip(1)
        out.append(preprocess_batch(t, cfg, None if cameras is None else cameras[i]))
    return torch.cat(out).permute(0, 2, 3, 1).contiguous().numpy()


def to_model_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the VAE's input range)."""
    return images_u8.to(torch.float32) / 127.5 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (rounded, clamped)."""
    return ((x.to(torch.float32).clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
