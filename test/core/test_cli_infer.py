"""`cosmos-policy infer` from files: PNG / NPY images, JSON / NPY proprio, future images saved as PNGs."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from cosmos_policy_ros.cli import main as cli_main
from cosmos_policy_ros.core.policy import save_policy


def _inputs(tmp_path, policy):
    rng = np.random.default_rng(0)
    args = []
    for i, cam in enumerate(policy.layout.cameras):
        img = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        if i == 0:
            path = tmp_path / f"{cam}.npy"
            np.save(path, img)
        else:
            path = tmp_path / f"{cam}.png"
            Image.fromarray(img).save(path)
        args += ["--image", f"{cam}={path}"]
    st = policy.stats
    (tmp_path / "qpos.json").write_text(json.dumps(((st.proprio_min + st.proprio_max) / 2).tolist()))
    return args + ["--proprio", str(tmp_path / "qpos.json")]


def test_infer_cli_with_our_checkpoint(tiny_policy, tmp_path, capsys):
    ckpt = save_policy(tiny_policy, tmp_path / "ckpt")
    out = tmp_path / "out"
    rc = cli_main(["infer", "--checkpoint", str(ckpt), *_inputs(tmp_path, tiny_policy), "--instruction",
                   tiny_policy.instructions[1], "--seed", "4", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    assert result["seed"] == 4 and np.asarray(result["actions"]).shape == (50, 14)
    assert 0.0 <= result["value"] <= 1.0 and isinstance(result["clipped"], bool)
    assert np.load(out / "actions.npy").shape == (50, 14)
    for cam in tiny_policy.layout.cameras:
        with Image.open(out / f"future_{cam}.png") as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    assert "50x14 actions" in capsys.readouterr().out


def test_infer_cli_reports_bad_input(tiny_policy, tmp_path, capsys):
    rc = cli_main(["infer", "--tiny", "0", *_inputs(tmp_path, tiny_policy), "--instruction", "juggle",
                   "--out", str(tmp_path / "o"), "--no-images", "--steps", "2"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "unknown instruction 'juggle'; known instructions" in err
