"""Distributed training and resume, through the real CLI and torchrun (gloo, CPU, tiny model, 4 steps).

- 2 processes with DDP (and with FSDP) give the same loss trajectory as 1 process with the same global batch: every
  sample, objective and noise draw is a function of (seed, step, batch position), so only the floating-
  point reduction order differs (gradients averaged across ranks vs. one mean). Tolerance: relative
  1e-4 on every logged loss, 1e-4 absolute on the final weights.
- A run resumed from its step-2 checkpoint reproduces the uninterrupted run bit-exactly (weights and losses).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cosmos_policy_ros.core.policy import load_policy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(demos, out, steps, extra=()):
    return ["--demos", str(demos), "--network", "tiny", "--out", str(out), "--steps", str(steps), "--batch", "4",
            "--warmup", "2", "--decay-steps", "3", "--save-every", "2", "--log-every", "1", "--seed", "3",
            "--stride", "6", "--threads", "1", "--no-progress", "--lr", "1e-3", *extra]


def _run(argv, nproc=1, timeout=1500):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if nproc == 1:
        cmd = [sys.executable, "-m", "cosmos_policy_training.cli", *argv]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), "-m", "cosmos_policy_training.cli", *argv]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _losses(run_dir: Path):
    rows = [json.loads(l) for l in (run_dir / "history.jsonl").read_text().splitlines() if l.strip()]
    return {r["step"]: r for r in rows}


@pytest.fixture(scope="module")
def demo_dir(tiny_episodes):
    return Path(tiny_episodes[0]).parent


@pytest.fixture(scope="module")
def single_run(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    _run(_args(demo_dir, out, 4))
    return out


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_process_run_matches_single_process(demo_dir, single_run, tmp_path, mode):
    out = tmp_path / mode
    res = _run(_args(demo_dir, out, 4, ["--distributed", mode]), nproc=2)
    assert f"2 rank(s) ({mode})" in res.stdout
    a, b = _losses(single_run), _losses(out)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-4), step
        assert b[step]["policy/action"] == pytest.approx(a[step]["policy/action"], rel=1e-4), step
    wa = load_file(str(single_run / "final" / "model.safetensors"))
    wb = load_file(str(out / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    assert any(float((wa[k] - load_file(str(single_run / "checkpoints" / "step_0000002" / "model.safetensors"))[k])
                     .abs().max()) > 0 for k in wa)  # the weights did move


@pytest.mark.timeout(1800)
def test_resume_from_mid_run_checkpoint_is_bit_exact(demo_dir, single_run, tmp_path):
    out = tmp_path / "resumed"
    _run(_args(demo_dir, out, 2))
    res = _run(_args(demo_dir, out, 4, ["--resume", str(out)]))
    assert "from step 2 to 4" in res.stdout
    wa = load_file(str(single_run / "final" / "model.safetensors"))
    wb = load_file(str(out / "final" / "model.safetensors"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    a, b = _losses(single_run), _losses(out)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        assert a[step]["loss"] == b[step]["loss"]
    # the optimiser state file loads with weights_only=True and the checkpoint is a policy
    state = torch.load(out / "checkpoints" / "step_0000004" / "training_state.pt", weights_only=True)
    assert state["step"] == 4
    policy = load_policy(out / "final")
    assert policy.layout.name == "aloha" and (out / "loss.png").stat().st_size > 1000
