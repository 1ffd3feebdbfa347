"""The model core never imports rclpy, and importing the core package stays light."""
from __future__ import annotations

import subprocess
import sys

CORE_MODULES = ["layout", "codec", "images", "sampler", "network", "checkpoint", "policy", "cli_infer", "types", "robot"]


def test_core_imports_without_rclpy():
    code = ("import sys; sys.modules['rclpy'] = None\n"
            "import cosmos_policy_ros.core as core\n"
            "assert 'torch' not in sys.modules, 'importing the core package must not pull torch'\n"
            + "".join(f"import cosmos_policy_ros.core.{m}\n" for m in CORE_MODULES)
            + "assert callable(core.load_policy) and callable(core.make_tiny_policy)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_tiny_policy_for_another_layout(make_obs):
    """LIBERO's 2-camera layout runs through the same code (vectors of other sizes, 9 frames)."""
    from cosmos_policy_ros.core.policy import make_tiny_policy
    p = make_tiny_policy(1, layout="libero", image_size=32)
    out = p.infer(make_obs(p), seed=0)
    assert out.actions.shape == (16, 7) and set(out.future_images) == {"wrist", "primary"}
    assert out.future_images["wrist"].shape == (32, 32, 3)
