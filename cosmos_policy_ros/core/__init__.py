"""ROS-free core of cosmos_policy_ros: importing it never imports rclpy (a test enforces this).

Importing the package itself is light (no torch / diffusers): the model API below is resolved lazily,
so ``from cosmos_policy_ros.core import types`` stays cheap for the ROS layer.

Public model API (see docs/model_core.md):
    load_policy(source, ...)   -> CosmosPolicy   (our checkpoint format or NVIDIA's; local dir or HF id)
    make_tiny_policy(seed=0)   -> CosmosPolicy   (random tiny weights, same classes)
    save_policy(policy, dir)   -> Path           (our checkpoint format)
    CosmosPolicy.infer(obs, seed=None) / infer_batch(obs, seeds, ...)
"""
from __future__ import annotations

import importlib

_LAZY = {
    "CosmosPolicy": "policy", "load_policy": "policy", "save_policy": "policy", "make_tiny_policy": "policy",
    "ObservationError": "policy", "CheckpointError": "checkpoint", "LatentLayout": "layout",
    "get_layout": "layout", "SamplerConfig": "sampler", "NetworkConfig": "network", "DatasetStats": "codec",
    "ImageConfig": "images", "InferenceCancelled": "types",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
