"""Tests of fine-tuning the Wan 2.1 generator (fmrivid.generate.finetune on a WanTransformer3DModel; issue 19).

The tiny ``WanPipeline`` of :func:`fmrivid.generate.wan.load` (real diffusers classes, random weights) is trained by
flow matching for a few steps on planted latents: LoRA changes exactly the attention projections it names (every
other weight bit-unchanged), the velocity loss on the training clips drops, the saved folder loads back with
``wan.load`` and the generation dispatch and generates; the training latents are the pipeline's own normalised 3-D
VAE latents, per clip; the stage encodes the TRAINING clips' frames only, pads their tokens as generation pads
decoded ones, and the DAG plans rule finetune_generator on ``features/frames.h5`` for ``generate.method wan``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, quiet, write_split_table

from fmrivid.errors import ConfigError, InputError
from fmrivid.generate import wan
from fmrivid.generate.finetune import (
    TRAINABLE_DEFAULTS,
    finetune,
    trainable_parameter_names,
)
from fmrivid.io.h5 import write_features

N, T, C, H, L = 4, 2, 16, 4, 6  # clips, latent frames (5 video frames), latent channels, latent side, tokens
GEN = {"num_frames": 5, "height": 8 * H, "width": 8 * H, "steps": 2, "batch_size": 1, "guidance_scale": 1.0,
       "max_sequence_length": 16}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: two workers, two cores


def _train_data(pipe, n=N, seed=3):
    """Planted normalised latents: a smooth per-clip pattern drifting over the latent frames, and their tokens."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1, 1, H, dtype=np.float32)
    base = rng.standard_normal((n, 1, C, 1, 1)).astype(np.float32) * grid[None, None, None, :, None]
    drift = np.linspace(0, 1, T, dtype=np.float32)[None, :, None, None, None] * grid[None, None, None, None]
    lat = base + drift + 0.05 * rng.standard_normal((n, T, C, H, H)).astype(np.float32)
    return lat.astype(np.float32), rng.standard_normal((n, L, wan.text_dim(pipe))).astype(np.float32)


def _eval_loss(pipe, lat, tok, seed=11):
    """The rectified-flow velocity loss at fixed noise and noise levels (independent of finetune's loop)."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(lat).permute(0, 2, 1, 3, 4)
    losses = []
    for sigma in (0.25, 0.5, 0.75):
        noise = torch.randn(x0.shape, generator=gen)
        xt = (1 - sigma) * x0 + sigma * noise
        ts = torch.full((len(x0),), sigma * 1000.0)
        with torch.no_grad():
            pred = pipe.transformer(xt, ts, encoder_hidden_states=torch.from_numpy(tok), return_dict=False)[0]
        losses.append(torch.mean((pred - (noise - x0)) ** 2).item())
    return float(np.mean(losses))


def test_lora_lowers_the_flow_loss_and_changes_only_the_adapted_projections(tmp_path):
    pipe = wan.load("tiny", seed=0, text_encoder=False)
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    lat, tok = _train_data(pipe)
    loss0 = _eval_loss(pipe, lat, tok)
    cfg = {"mode": "lora", "lora_rank": 4, "lora_alpha": 4, "lora_targets": ["to_q", "to_v"], "steps": 30,
           "batch_size": 4, "lr": 3e-2, "cond_dropout": 0.0, "checkpoint_every": 30}
    history = finetune(pipe, lat, tok, cfg, tmp_path / "lora", seed=0, log=quiet)
    assert len(history) >= 1 and all(np.isfinite(h["loss"]) for h in history)
    tuned = wan.load(str(tmp_path / "lora"), text_encoder=False)
    after = tuned.transformer.state_dict()
    assert set(after) == set(before)  # merged: a plain WanTransformer3DModel again, no lora_ tensors
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("to_q.weight", "to_v.weight")) for k in changed), sorted(changed)[:5]
    assert any(".attn1." in k for k in changed) and any(".attn2." in k for k in changed)
    loss1 = _eval_loss(tuned, lat, tok)
    assert loss1 < 0.9 * loss0, (loss0, loss1)  # the planted clips are learnt (2.50 -> 2.07 here)
    info = json.loads((tmp_path / "lora" / "finetune.json").read_text())
    assert info["backend"] == "wan" and info["mode"] == "lora" and info["n_train_clips"] == N
    assert all(".lora_" in n for n in info["trained_tensors"])
    assert not (tmp_path / "lora" / "text_encoder").exists()  # saved without the (unused) text tower
    # the generation dispatch loads the folder as a Wan pipeline and generates from it, on padded tokens
    from fmrivid.generate import pipelines

    loaded = pipelines.load_pipeline(str(tmp_path / "lora"), pipelines.settings(dict(GEN), method="wan"))
    first = min(changed)
    assert torch.equal(loaded.transformer.state_dict()[first], after[first])
    video = wan.generate(loaded, {"text_tokens": tok[:1]}, ["c0"], GEN, seed=0, log=quiet)
    base = wan.generate(wan.load("tiny", seed=0, text_encoder=False), {"text_tokens": tok[:1]}, ["c0"], GEN,
                        seed=0, log=quiet)
    assert video.shape == (1, 5, 8 * H, 8 * H, 3) and video.dtype == np.uint8
    assert not np.array_equal(video, base)  # the tuned transformer, not the base one, generated


def test_attention_defaults_train_self_and_cross_attention_only(tmp_path):
    pipe = wan.load("tiny", seed=0, text_encoder=False)
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    trainable = set(trainable_parameter_names(pipe.transformer, TRAINABLE_DEFAULTS["wan"]))
    lat, tok = _train_data(pipe)
    finetune(pipe, lat, tok, {"steps": 2, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 2}, tmp_path / "at",
             seed=0, log=quiet)
    after = wan.load(str(tmp_path / "at"), text_encoder=False).transformer.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not (changed - trainable), sorted(changed - trainable)[:5]  # frozen weights bit-unchanged
    assert len(changed) > 0.9 * len(trainable)
    assert any(".attn1." in k for k in changed) and any(".attn2." in k for k in changed)
    assert not any(".ffn." in k for k in trainable)


def test_training_latents_are_the_pipelines_normalised_vae_latents_per_clip():
    pipe = wan.load("tiny", seed=0, text_encoder=False)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 5, 32, 32, 3), dtype=np.uint8)
    lat = wan.training_latents(pipe, frames, batch_size=3, log=quiet)
    assert lat.shape == (3, 2, 16, 4, 4) and lat.dtype == np.float32
    # by hand: the VAE's mode on [-1, 1] frames, normalised with the config's latent statistics
    x = torch.from_numpy(frames[1:2]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mode()
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1)
    want = ((z - mean) / std).permute(0, 2, 1, 3, 4).numpy()[0]
    assert np.allclose(lat[1], want, atol=1e-5)
    alone = wan.training_latents(pipe, frames[1:2], batch_size=1, log=quiet)
    assert np.allclose(alone[0], lat[1], atol=1e-5)  # a clip's latents do not depend on its batch-mates
    with pytest.raises(InputError, match="4k\\+1 frames"):
        wan.training_latents(pipe, frames[:, :4], log=quiet)
    with pytest.raises(InputError, match="uint8 clips"):
        wan.training_latents(pipe, frames.astype(np.float32), log=quiet)
    with pytest.raises(InputError, match="max_sequence_length=4"):
        wan.training_tokens(np.zeros((2, 6, 8), np.float32), 4)
    padded = wan.training_tokens(np.ones((2, 3, 8), np.float32), 5)
    assert padded.shape == (2, 5, 8) and np.all(padded[:, 3:] == 0) and np.all(padded[:, :3] == 1)


def test_stage_encodes_the_training_frames_only_and_pads_their_tokens(tmp_path, monkeypatch):
    from fmrivid.generate import finetune as ft
    from fmrivid.generate import stages

    stages.check_finetune({"method": "wan", "finetune": {"enabled": True}})
    rng = np.random.default_rng(1)
    ids = [f"clip{i}" for i in range(6)]
    split = ["train", "test", "train", "train", "test", "train"]
    frames = rng.integers(0, 256, (6, 5, 32, 32, 3), dtype=np.uint8)
    width = wan.text_dim(wan.load("tiny", text_encoder=False))
    tok = rng.standard_normal((6, 6, width)).astype(np.float32)
    tok[[1, 4]] = np.nan  # test rows: training would refuse them (non-finite)
    write_features(tmp_path / "frames.h5", ids, frames)
    write_features(tmp_path / "text_tokens.h5", ids, tok)
    write_split_table(tmp_path / "splits.tsv", ids, split)
    seen = {}
    real = ft.finetune

    def spy(pipe, train_latents, train_cond, cfg, out_dir, **kw):
        seen.update(net=type(pipe.transformer).__name__, lat=train_latents.shape, cond=train_cond.copy())
        return real(pipe, train_latents, train_cond, cfg, out_dir, **kw)

    monkeypatch.setattr(ft, "finetune", spy)
    cfg = {"method": "wan", "device": "cpu",
           "pipeline": {"model": "tiny", "num_frames": 5, "height": 32, "width": 32, "max_sequence_length": 16},
           "finetune": {"enabled": True, "mode": "lora", "lora_rank": 2, "steps": 2, "batch_size": 2,
                        "checkpoint_every": 2}}
    stages.finetune_generator(tmp_path / "text_tokens.h5", tmp_path / "splits.tsv", cfg, seed=0,
                              out_dir=tmp_path / "finetuned", frames_path=tmp_path / "frames.h5", log=quiet)
    assert seen["net"] == "WanTransformer3DModel" and seen["lat"] == (4, 2, 16, 4, 4)
    assert seen["cond"].shape == (4, 16, width) and np.all(seen["cond"][:, 6:] == 0)
    assert np.array_equal(seen["cond"][:, :6], tok[[0, 2, 3, 5]])
    info = json.loads((tmp_path / "finetuned" / "finetune.json").read_text())
    assert info["backend"] == "wan" and info["n_train_clips"] == 4
    with pytest.raises(ConfigError, match="features/frames.h5"):
        stages.finetune_generator(tmp_path / "text_tokens.h5", tmp_path / "splits.tsv", cfg, seed=0,
                                  out_dir=tmp_path / "w", vae_frames_path=tmp_path / "frames.h5", log=quiet)
    assert not (tmp_path / "w").exists()


def test_dry_run_plans_finetune_generator_for_wan_on_the_frames(tmp_path):
    override = {"generate": {"method": "wan", "finetune": {"enabled": True, "mode": "lora"},
                             "pipeline": {"model": "tiny", "num_frames": 5, "height": 32, "width": 32}},
                "features": {"n_frames": 5, "tokens": {"enabled": True, "model": "tiny#text_encoder",
                                                       "max_length": 12}},
                "decode": {"targets": ["text", "image", "vae", "text_tokens"]}}
    (tmp_path / "wan.yaml").write_text(yaml.safe_dump(override))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "-p",
           "--configfile", str(REPO / "config" / "test.yaml"), str(tmp_path / "wan.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    job = out.split("rule finetune_generator:")[1].split("\n\n")[0]
    assert "features/frames.h5" in job and "vae_frames" not in job
    chunk = out.split("rule generate_chunk:")[1].split("\n\n")[0]
    assert "models/generator/finetuned" in chunk
