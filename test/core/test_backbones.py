"""The second backbone (Cosmos-Predict2.5-2B) and the LIBERO / RoboCasa layouts.

- the rectified-flow sampler: the N = 5 shift-5 schedule of the facts sheet; a toy network run through our
  sampler (diffusers' UniPC inside) against an independent float64 UniPC written here from its formulas;
  clean-frame replacement; batched candidates equal one-by-one runs;
- the network: diffusers' CosmosTransformer3DModel with the cross-attention projection;
- NVIDIA Predict2.5 checkpoints: strict load of a synthetic one with the real key names at tiny size (the
  released folder layout, statistics and Reason1 pickle in a separate dataset folder), DCP folders refused,
  a malicious Reason1 pickle refused;
- layouts: the reference slot order of LIBERO, RoboCasa and ALOHA; ``cosmos-policy infer`` on tiny
  checkpoints of both backbones for all three layouts.
"""
from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos_policy_ros.cli import main as cli_main
from cosmos_policy_ros.core import checkpoint as ck
from cosmos_policy_ros.core import layout as L
from cosmos_policy_ros.core.backbone import BACKBONES, get_backbone, run_sampler
from cosmos_policy_ros.core.network import NetworkConfig, build_transformer, network_2b, tiny_network_config
from cosmos_policy_ros.core.policy import load_policy, make_tiny_policy, save_policy
from cosmos_policy_ros.core.rf_sampler import (RFDenoiser, RFSamplerConfig, make_scheduler, rf_sample, rf_sigmas,
                                               run_rf_stages)
from cosmos_policy_ros.core.sampler import SamplerConfig, Stage

from .conftest import make_observation


# ---- schedule -------------------------------------------------------------------------------------
def test_shift5_schedule_for_5_steps_matches_the_facts_sheet():
    # facts sheet (predict2.5, section 4): 0.9998, 0.9522, 0.8821, 0.7689, 0.5552 -> 0; orders 1, 2, 2, 2, 1
    expected = [0.9998, 0.9522, 0.8821, 0.7689, 0.5552, 0.0]
    assert np.round(rf_sigmas(5), 4).tolist() == expected
    sched = make_scheduler(5, RFSamplerConfig())
    assert np.round(sched.sigmas.double().numpy(), 4).tolist() == expected  # diffusers' own table
    assert sched.timesteps.tolist() == [999, 952, 882, 768, 555]  # int(1000 sigma)
    orders, x = [], torch.zeros(1, 1, 1, 1, 1, dtype=torch.float64)
    for t in sched.timesteps:
        x = sched.step(x, t, x, return_dict=False)[0]
        orders.append(sched.this_order)
    assert orders == [1, 2, 2, 2, 1]


# ---- an independent float64 UniPC (bh2, x0 form, UniC corrector), from the formulas ----------------
def _lam(s):
    """log-SNR of the rectified-flow path at sigma s: log((1 - s) / s) (inf at s = 0)."""
    return math.inf if s == 0 else math.log(1.0 - s) - math.log(s)


def _reference_unipc(D, eps, n):
    """x0 of an n-call sample: predictor x_t = (t / s) x - a_t (e^-h - 1) m0 - a_t (e^-h - 1) * 0.5 D1 (order 2),
    UniC corrector with the new x0 before each predictor; orders min(2, calls so far, calls left)."""
    s = np.linspace(0.999, 0.0, n + 1)[:-1]
    sig = [float(v) for v in 5 * s / (1 + 4 * s)] + [0.0]
    x, ms, prev_x, prev_order, m = eps.clone(), [], None, 0, None
    for i in range(n):
        m = D(x, sig[i], math.floor(1000 * sig[i]) / 1000)
        if i > 0:  # UniC: redo the last step (sig[i-1] -> sig[i]) from prev_x with the new x0 m
            s0, t = sig[i - 1], sig[i]
            h = _lam(t) - _lam(s0)
            phi = math.expm1(-h)
            base = (t / s0) * prev_x - (1 - t) * phi * ms[-1]
            if prev_order == 1:
                x = base - (1 - t) * phi * 0.5 * (m - ms[-1])
            else:
                r1 = (_lam(sig[i - 2]) - _lam(s0)) / h
                d1 = (ms[-2] - ms[-1]) / r1
                hk1 = phi / (-h) - 1  # h phi_2 terms of the B(h) = e^-h - 1 variant
                hk2 = hk1 / (-h) - 0.5
                b = np.array([hk1 / phi, 2 * hk2 / phi])
                rho = np.linalg.solve(np.array([[1.0, 1.0], [r1, 1.0]]), b)
                x = base - (1 - t) * phi * (rho[0] * d1 + rho[1] * (m - ms[-1]))
        ms.append(m)
        order = min(2, len(ms), n - i)
        prev_x, prev_order = x, order
        s0, t = sig[i], sig[i + 1]
        h = _lam(t) - _lam(s0)
        phi = math.expm1(-h)
        x_new = (t / s0) * x - (1 - t) * phi * ms[-1]
        if order == 2:
            r1 = (_lam(sig[i - 1]) - _lam(s0)) / h
            x_new = x_new - (1 - t) * phi * 0.5 * (ms[-2] - ms[-1]) / r1
        x = x_new
    return m


def _toy_net(x_in, t, cond):
    """A nonlinear per-sample 'velocity' that depends on the state, the per-frame time and the neighbours."""
    t5 = t[:, None, :, None, None]
    return torch.tanh(x_in) * (1.0 + t5) - 0.3 * x_in.roll(1, dims=-1) + 0.1 * t5 ** 2


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_rf_sampler_matches_an_independent_float64_unipc(n):
    g = torch.Generator().manual_seed(n)
    clean = torch.randn(2, 3, 4, 2, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(clean.shape, generator=g, dtype=torch.float64)
    cond = torch.tensor([True, False, False, True])
    seen = []

    def net(x_in, t, c):
        seen.append(t.clone())
        return _toy_net(x_in, t, c)

    den = RFDenoiser(net, clean, cond)
    ours = rf_sample(den, eps, n, RFSamplerConfig())

    c5 = cond[None, None, :, None, None]

    def ref_D(x, sigma, timestep):  # clean-frame replacement, written again
        x_in = torch.where(c5, clean, x)
        t = torch.where(cond, torch.tensor(0.0, dtype=torch.float64), torch.tensor(timestep, dtype=torch.float64))
        t = t[None].expand(2, -1)
        return torch.where(c5, clean, x_in - sigma * _toy_net(x_in, t, None))

    ref = _reference_unipc(ref_D, eps, n)
    assert den.calls == n
    # diffusers keeps its sigma table in float32 (as the reference scheduler): agreement to float32 rounding
    assert torch.allclose(ours, ref, rtol=0, atol=2e-5), float((ours - ref).abs().max())
    assert torch.equal(ours[:, :, cond], clean[:, :, cond])  # conditioning frames come out bit-identical
    assert all(torch.all(t[:, cond] == 0) for t in seen)  # and are fed as clean (timestep 0)
    assert seen[0][0, 1].item() == pytest.approx(0.999)  # first call at int(1000 * 0.9998) / 1000


def test_rf_batched_candidates_equal_one_by_one_runs_and_use_numpy_noise():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(1, 2, 5, 2, 2, generator=g, dtype=torch.float64).expand(3, -1, -1, -1, -1).contiguous()
    stages = [Stage("action", (0, 1), 3), Stage("value", (0, 1, 2, 3), 2)]
    cfg = RFSamplerConfig(mode="autoregressive")
    seeds = [195, 196, 197]
    batched = run_rf_stages(_toy_net, clean, stages, seeds, cfg)
    for i, s in enumerate(seeds):
        one = run_rf_stages(_toy_net, clean[i:i + 1], stages, [s], cfg)
        assert torch.equal(batched.x0[i:i + 1], one.x0)
    assert batched.calls == {"action": 3, "value": 2}
    # the initial state is numpy RandomState(seed).standard_normal as float32 (the reference's noise)
    first = []
    run_rf_stages(lambda x, t, c: (first.append(x.clone()), torch.zeros_like(x))[1], clean[:1], stages[:1], [195], cfg)
    want = np.random.RandomState(195).standard_normal(tuple(clean.shape[1:])).astype(np.float32)
    assert np.array_equal(first[0][0, :, 2:].numpy(), want[:, 2:].astype(np.float64))


# ---- backbone table, network ----------------------------------------------------------------------
def test_backbone_table_and_network_with_crossattn_projection():
    assert sorted(BACKBONES) == ["predict2", "predict2.5"]
    assert get_backbone(None).name == "predict2"  # a config without the field
    with pytest.raises(ValueError, match="backbone: expected one of"):
        get_backbone("predict3")
    # the released 2B network of each backbone: only the text projection differs
    p2, p25 = network_2b("predict2"), network_2b("predict2.5")
    assert (p25.text_input_dim, p25.text_embed_dim, p25.embedding_dim) == (100352, 1024, 100352)
    assert p2.text_input_dim is None and p2.embedding_dim == 1024
    # old configs (no "backbone" key) are Predict2
    d = p2.to_dict()
    d.pop("backbone"), d.pop("text_input_dim")
    assert NetworkConfig.from_dict(d).backbone == "predict2"
    cfg = tiny_network_config(backbone="predict2.5", text_input_dim=40)
    t = build_transformer(cfg)
    assert t.config.use_crossattn_projection and t.config.crossattn_proj_in_channels == 40
    assert tuple(t.crossattn_proj[0].weight.shape) == (cfg.text_embed_dim, 40)
    assert isinstance(t.crossattn_proj[1], torch.nn.GELU)
    with pytest.raises(ValueError, match="has no text projection"):
        NetworkConfig(backbone="predict2", text_embed_dim=1024, text_input_dim=2048)


def test_policy_samples_with_its_backbones_sampler():
    p25 = make_tiny_policy(0, layout="libero", backbone="predict2.5")
    assert isinstance(p25.sampler, RFSamplerConfig)
    obs = make_observation(p25)
    outs = p25.infer_batch(obs, [1, 2, 3], decode_images=False)
    assert outs[0].timings["network_calls"] == 5.0 and outs[0].actions.shape == (16, 7)
    one = p25.infer_batch(obs, [2], decode_images=False)[0]
    assert np.allclose(one.actions, outs[1].actions, atol=1e-5)  # batched = one by one (network up to ~1e-6)
    with pytest.raises(ValueError, match="samples with RFSamplerConfig, got SamplerConfig"):
        p25.infer_batch(obs, [1], sampler=SamplerConfig(), decode_images=False)
    with pytest.raises(ValueError, match="expected one of"):
        run_sampler(None, torch.zeros(1, 1, 1, 1, 1), [], [0], object())


# ---- NVIDIA Predict2.5 checkpoints -----------------------------------------------------------------
def _write_predict25_release(policy, root: Path, spelling="policy"):
    """The released layout at tiny size: <repo>/robot/<spelling>/libero/model.pt (net.* keys, bf16, the crossattn
    projection included) + the VAE; statistics and the Reason1 pickle in a dataset folder (success_only/)."""
    d = root / "robot" / spelling / "libero"
    d.mkdir(parents=True)
    net = ck.export_nvidia_transformer(policy.network.transformer.state_dict())
    net["net.accum_iteration"] = torch.tensor(1000)
    net = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in net.items()}
    torch.save(net, d / "model.pt")
    torch.save({ck.diffusers_vae_key_to_wan(k): v for k, v in policy.network.vae.state_dict().items()},
               d / "tokenizer.pth")
    data = root / "LIBERO-Cosmos-Policy"
    (data / "success_only").mkdir(parents=True)
    policy.stats.save(data / "libero_dataset_statistics.json")
    with open(data / "success_only" / "reason1_embeddings.pkl", "wb") as f:
        pickle.dump({k: v.to(torch.bfloat16) for k, v in policy.embeddings.items()}, f)
    return d, data


@pytest.fixture(scope="module")
def tiny25():
    return make_tiny_policy(3, layout="libero", backbone="predict2.5")


def test_synthetic_predict25_checkpoint_loads_strictly_and_is_cached(tiny25, tmp_path):
    d, data = _write_predict25_release(tiny25, tmp_path / "Cosmos-Predict2.5-2B", spelling="cosmos-policy")
    raw = torch.load(d / "model.pt", weights_only=True)
    assert {"net.crossattn_proj.0.weight", "net.crossattn_proj.0.bias"} <= set(raw)
    assert ck.nvidia_key_to_diffusers("net.crossattn_proj.0.weight") == "crossattn_proj.0.weight"
    cache = tmp_path / "cache"
    # the model repo root: the layout's released subfolder is found (either spelling)
    loaded = ck.load_checkpoint(tmp_path / "Cosmos-Predict2.5-2B", layout="libero", image_size=64,
                                cache_dir=cache, assets=[data])
    rep = loaded.reports[0]
    assert rep.ok and rep.missing == [] and rep.unexpected == [] and rep.mismatched == []
    assert "net.accum_iteration" in rep.dropped
    assert loaded.network.backbone == "predict2.5" and loaded.network.text_input_dim == 96
    assert isinstance(loaded.sampler, RFSamplerConfig)
    # strict check against the built network: 0 missing / 0 unexpected, crossattn projection included
    full = ck.check_state_dict(build_transformer(loaded.network), loaded.transformer_state, "transformer")
    assert full.ok and "crossattn_proj.0.weight" in loaded.transformer_state
    cached = next((cache / "converted").iterdir())
    cfg = json.loads((cached / "config.json").read_text())
    assert cfg["network"]["backbone"] == "predict2.5" and (cached / "reason1_embeddings.safetensors").is_file()
    pol = load_policy(d, layout="libero", image_size=64, cache_dir=cache, assets=[data])
    assert pol.backbone.name == "predict2.5" and pol.instructions == tiny25.instructions
    ref = tiny25.network.transformer.state_dict()
    got = pol.network.transformer.state_dict()
    assert all(torch.equal(got[k], ref[k].to(torch.bfloat16).float()) for k in ref)
    out = pol.infer_batch(make_observation(pol), [195], decode_images=False)[0]
    assert out.actions.shape == (16, 7) and np.all(np.isfinite(out.actions))


def test_predict25_checkpoint_without_assets_and_dcp_folders_fail_clearly(tiny25, tmp_path):
    d, _ = _write_predict25_release(tiny25, tmp_path / "repo")
    with pytest.raises(ck.CheckpointError, match=r"no dataset statistics .* pass the folder that holds it as assets"):
        ck.load_checkpoint(d, layout="libero", image_size=64, cache_dir=tmp_path / "c")
    dcp = tmp_path / "dcp"
    (dcp / "model").mkdir(parents=True)
    (dcp / "model" / "__0_0.distcp").write_bytes(b"\0")
    with pytest.raises(ck.CheckpointError, match=r"distributed \(DCP\) checkpoint folder is not supported"):
        ck.load_checkpoint(dcp, layout="libero", cache_dir=tmp_path / "c")


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_restricted_unpickler_refuses_a_malicious_reason1_pickle(tiny25, tmp_path):
    d, data = _write_predict25_release(tiny25, tmp_path / "repo")
    marker = tmp_path / "pwned"
    emb = {k: v for k, v in tiny25.embeddings.items()}
    emb["open the drawer"] = _Evil(marker)
    with open(data / "success_only" / "reason1_embeddings.pkl", "wb") as f:
        pickle.dump(emb, f)
    with pytest.raises(ck.CheckpointError, match=r"refused to load the text embeddings pickle: global 'posix.system' "
                                                 r"is not allowed|global 'os.system' is not allowed"):
        ck.load_checkpoint(d, layout="libero", image_size=64, cache_dir=tmp_path / "c", assets=[data])
    assert not marker.exists()


# ---- layouts ----------------------------------------------------------------------------------------
def _slots(lay):
    return [s.kind if s.kind != "image" else f"{s.role} {s.camera}" for s in lay.slots]


def test_layout_slot_order_is_the_reference_order():
    assert _slots(L.LIBERO) == ["blank", "proprio", "current wrist", "current primary", "action", "proprio",
                                "future wrist", "future primary", "value"]
    # RoboCasa: wrist first, then primary (left) and secondary (right)
    assert _slots(L.ROBOCASA) == ["blank", "proprio", "current wrist", "current left", "current right", "action",
                                  "proprio", "future wrist", "future left", "future right", "value"]
    assert _slots(L.ALOHA) == ["blank", "proprio", "current cam_left_wrist", "current cam_right_wrist",
                               "current cam_high", "action", "proprio", "future cam_left_wrist",
                               "future cam_right_wrist", "future cam_high", "value"]
    roles = [[s.role for s in lay.slots if s.kind == "proprio"] for lay in (L.LIBERO, L.ROBOCASA, L.ALOHA)]
    assert roles == [["current", "future"]] * 3
    sizes = [(lay.num_frames, lay.horizon, lay.action_dim, lay.proprio_dim) for lay in (L.LIBERO, L.ROBOCASA, L.ALOHA)]
    assert sizes == [(9, 16, 7, 9), (11, 32, 7, 9), (11, 50, 14, 14)]


@pytest.mark.parametrize("backbone", ["predict2", "predict2.5"])
@pytest.mark.parametrize("layout", ["aloha", "libero", "robocasa"])
def test_infer_cli_on_tiny_checkpoints_of_both_backbones(layout, backbone, tmp_path, capsys):
    from PIL import Image
    policy = make_tiny_policy(1, layout=layout, backbone=backbone)
    ckpt = save_policy(policy, tmp_path / "ckpt")
    args = []
    rng = np.random.default_rng(0)
    for cam in policy.layout.cameras:
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"{cam}.png")
        args += ["--image", f"{cam}={tmp_path / f'{cam}.png'}"]
    st = policy.stats
    (tmp_path / "p.json").write_text(json.dumps(((st.proprio_min + st.proprio_max) / 2).tolist()))
    out = tmp_path / "out"
    rc = cli_main(["infer", "--checkpoint", str(ckpt), *args, "--proprio", str(tmp_path / "p.json"),
                   "--out", str(out), "--steps", "2"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    lay = policy.layout
    assert np.asarray(result["actions"]).shape == (lay.horizon, lay.action_dim)
    assert result["timings"]["network_calls"] == 2.0 and 0.0 <= result["value"] <= 1.0
    assert sorted(result["future_images"]) == sorted(f"future_{c}.png" for c in lay.cameras)
    assert json.loads((ckpt / "config.json").read_text())["network"]["backbone"] == backbone
    # `make demo --checkpoint` picks its task from the instructions the checkpoint knows, for either text encoder
    from cosmos_policy_ros.demo import checkpoint_instructions
    assert sorted(checkpoint_instructions(str(ckpt))) == policy.instructions


# ---- real-time-chunking inpainting through the RF sampler --------------------------------------------
def _inp(method, frame=2, shape=(1, 3, 2, 3)):
    from cosmos_policy_ros.core.sampler import Inpainting
    g = torch.Generator().manual_seed(7)
    target = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.zeros(shape, dtype=torch.float64)
    w[:, :, 0] = 1.0  # first latent row frozen
    w[:, :, 1] = 0.5  # second pulled half-way
    return Inpainting(frame, target, w, method), target


@pytest.mark.parametrize("method", ["replace", "guided"])
def test_rf_inpainting_freezes_the_prefix_exactly_and_keeps_batches_equal(method):
    g = torch.Generator().manual_seed(3)
    clean = torch.randn(1, 3, 4, 2, 3, generator=g, dtype=torch.float64).expand(3, -1, -1, -1, -1).clone()
    stages = [Stage("policy", (0, 1), 5)]
    cfg = RFSamplerConfig()
    inp, target = _inp(method)
    free = run_rf_stages(_toy_net, clean, stages, [1, 2, 3], cfg).x0
    with torch.no_grad():  # guided enables gradients for its vector-Jacobian product only
        out = run_rf_stages(_toy_net, clean, stages, [1, 2, 3], cfg, inpaint=inp).x0
    assert torch.equal(out[:, :, 2, 0], target[:, :, 0].expand(3, -1, -1))  # frozen values: the target exactly
    assert (out[:, :, 2, 1] - free[:, :, 2, 1]).abs().max() > 1e-3  # the ramp pulls the rest
    assert torch.equal(out[:, :, :2], clean[:, :, :2])  # conditioning frames stay clean
    with torch.no_grad():
        one = run_rf_stages(_toy_net, clean[1:2], stages, [2], cfg, inpaint=inp).x0
    torch.testing.assert_close(out[1:2], one, rtol=0, atol=1e-12)
    off, _ = _inp("off")
    assert torch.equal(run_rf_stages(_toy_net, clean, stages, [1, 2, 3], cfg, inpaint=off).x0, free)


def test_predict25_policy_chunk_keeps_the_frozen_prefix_for_every_candidate(tiny25):
    from cosmos_policy_ros.core.rtc import ChunkPrefix
    obs = make_observation(tiny25)
    target = tiny25.infer(obs, seed=1, decode_images=False).actions.astype(np.float64)[::-1].copy()
    for method in ("replace", "guided"):
        outs = tiny25.infer_batch(obs, [1, 2, 3], prefix=ChunkPrefix(target, frozen=5, method=method),
                                  decode_images=False)
        for o in outs:
            np.testing.assert_array_equal(o.actions[:5], target[:5].astype(np.float32))
            assert np.all(np.isfinite(o.actions))


def test_released_predict25_policy_resolves_from_the_model_repo_by_layout(tmp_path):
    """`nvidia/Cosmos-Predict2.5-2B` + a layout -> its released subfolder (either spelling), offline from the
    huggingface_hub cache; the owner/name/sub/folder form too."""
    assert ck.released_subfolders("nvidia/Cosmos-Predict2.5-2B", "robocasa") == (
        "robot/policy/robocasa", "robot/cosmos-policy/robocasa")
    assert ck.released_subfolders("nvidia/Cosmos-Policy-ALOHA-Predict2-2B", "aloha") == ()
    hf = tmp_path / "hf"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf / "models--nvidia--Cosmos-Predict2.5-2B"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    for sub in ("robot/cosmos-policy/libero", "robot/policy/robocasa"):
        (snap / sub).mkdir(parents=True)
        (snap / sub / "model.pt").write_bytes(b"")
    kw = dict(local_files_only=True, hf_cache_dir=str(hf))
    assert ck.resolve_policy_source("nvidia/Cosmos-Predict2.5-2B", "libero", **kw) == snap / "robot/cosmos-policy/libero"
    assert ck.resolve_policy_source("nvidia/Cosmos-Predict2.5-2B", "robocasa", **kw) == snap / "robot/policy/robocasa"
    assert ck.resolve_policy_source("nvidia/Cosmos-Predict2.5-2B/robot/policy/robocasa", "aloha", **kw) == \
        snap / "robot/policy/robocasa"
    with pytest.raises(ck.CheckpointError,
                       match=r"released policies for layouts \['libero', 'robocasa'\] only, got layout 'aloha'"):
        ck.resolve_policy_source("nvidia/Cosmos-Predict2.5-2B", "aloha", **kw)
