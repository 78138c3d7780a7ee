"""Tests of fine-tuning the AnimateDiff generator (fmrivid.generate.finetune on a UNetMotionModel; issue 19).

The tiny ``AnimateDiffPipeline`` of :func:`fmrivid.generate.animatediff.load` (real diffusers classes, random
weights) is trained for a few steps on planted latents of 4 frames of 4x4: LoRA and attention_temporal change
exactly the parts they name (frozen weights bit-unchanged), the loss on the training clips drops, the saved folder
loads back with ``animatediff.load`` (and the generation dispatch) and generates, a resumed run equals an
uninterrupted one, the stage dispatches on ``generate.method`` and reads training rows only, and the DAG plans
rule finetune_generator for an AnimateDiff config.
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
from fmrivid.generate import animatediff as ad
from fmrivid.generate.finetune import (
    TRAINABLE_DEFAULTS,
    finetune,
    trainable_parameter_names,
)
from fmrivid.io.h5 import write_features

N, T, C, H, L, D = 4, 4, 4, 4, 8, 32  # clips, frames, latent channels, latent side, tokens, token width
GEN = {"num_frames": T, "height": 8 * H, "width": 8 * H, "steps": 2, "batch_size": 1, "guidance_scale": 1.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: two workers, two cores


def _train_data(n=N, frames=T, seed=3):
    """Planted clips: a smooth per-clip pattern drifting over the frames (+ a little noise), and their tokens."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1, 1, H, dtype=np.float32)
    base = rng.standard_normal((n, 1, C, 1, 1)).astype(np.float32) * grid[None, None, None, :, None]
    drift = np.linspace(0, 1, frames, dtype=np.float32)[None, :, None, None, None] * grid[None, None, None, None]
    lat = base + drift + 0.05 * rng.standard_normal((n, frames, C, H, H)).astype(np.float32)
    return lat.astype(np.float32), rng.standard_normal((n, L, D)).astype(np.float32)


def _eval_loss(pipe, lat, tok, seed=11):
    """The epsilon loss on the clips at fixed noise and timesteps, with diffusers' own add_noise and the
    AnimateDiffPipeline convention of one prompt row per frame (independent of finetune's loop)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(ad.scheduler(pipe).config)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(lat).permute(0, 2, 1, 3, 4)
    losses = []
    for t in (100, 400, 700):
        noise = torch.randn(x0.shape, generator=gen)
        ts = torch.full((len(x0),), t, dtype=torch.long)
        xt = sched.add_noise(x0, noise, ts)
        cond = torch.from_numpy(tok).repeat_interleave(x0.shape[2], dim=0)
        with torch.no_grad():
            pred = pipe.unet(xt, ts, encoder_hidden_states=cond).sample
        losses.append(torch.mean((pred - noise) ** 2).item())
    return float(np.mean(losses))


def _motion_state(unet):
    return {k: v for k, v in unet.state_dict().items() if ".motion_modules." in f".{k}"}


def test_lora_lowers_the_loss_and_changes_only_the_adapted_projections(tmp_path):
    pipe = ad.load("tiny", seed=0)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    lat, tok = _train_data()
    loss0 = _eval_loss(pipe, lat, tok)
    cfg = {"mode": "lora", "lora_rank": 4, "lora_alpha": 4, "lora_targets": ["to_q", "to_v"], "steps": 24,
           "batch_size": 4, "lr": 5e-2, "cond_dropout": 0.0, "checkpoint_every": 24}
    history = finetune(pipe, lat, tok, cfg, tmp_path / "lora", seed=0, log=quiet)
    assert len(history) >= 1 and all(np.isfinite(h["loss"]) for h in history)
    tuned = ad.load(str(tmp_path / "lora"))
    after = tuned.unet.state_dict()
    assert set(after) == set(before)  # merged: a plain UNetMotionModel again, no lora_ tensors
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("to_q.weight", "to_v.weight")) for k in changed), sorted(changed)[:5]
    # adapters in the spatial self-/cross-attention AND in the motion modules' temporal attention
    assert any(".motion_modules." in k for k in changed)
    assert any(".attentions." in k and ".attn1." in k for k in changed)
    assert any(".attentions." in k and ".attn2." in k for k in changed)
    loss1 = _eval_loss(tuned, lat, tok)
    assert loss1 < 0.93 * loss0, (loss0, loss1)  # the planted clips are learnt (1.11 -> 0.97 here)
    info = json.loads((tmp_path / "lora" / "finetune.json").read_text())
    assert info["backend"] == "animatediff" and info["mode"] == "lora"
    assert all(".lora_" in n for n in info["trained_tensors"])
    # the saved motion_adapter holds the tuned motion modules; the untouched parts stay as they were
    from diffusers import MotionAdapter

    saved = MotionAdapter.from_pretrained(str(tmp_path / "lora" / "motion_adapter")).state_dict()
    tuned_motion = _motion_state(tuned.unet)
    assert set(saved) <= set(tuned_motion)
    for name, value in saved.items():
        assert torch.equal(value, tuned_motion[name]), name
    # the generation dispatch loads the folder as an AnimateDiff pipeline and generates from it
    from fmrivid.generate import pipelines

    loaded = pipelines.load_pipeline(str(tmp_path / "lora"), {"method": "animatediff"})
    first = min(changed)
    assert torch.equal(loaded.unet.state_dict()[first], after[first])
    video = ad.generate(loaded, {"text_tokens": tok[:1]}, ["c0"], GEN, seed=0, log=quiet)
    assert video.shape == (1, T, 8 * H, 8 * H, 3) and video.dtype == np.uint8


def test_attention_temporal_trains_the_motion_modules_and_cross_attention_only(tmp_path):
    pipe = ad.load("tiny", seed=0)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    trainable = set(trainable_parameter_names(pipe.unet, TRAINABLE_DEFAULTS["animatediff"]))
    lat, tok = _train_data()
    finetune(pipe, lat, tok, {"steps": 3, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 3}, tmp_path / "at",
             seed=0, log=quiet)
    tuned = ad.load(str(tmp_path / "at"))
    after = tuned.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = set(before) - trainable
    assert not (changed & frozen), sorted(changed & frozen)[:5]  # frozen weights bit-unchanged
    assert len(changed) > 0.9 * len(trainable)
    # the default parts: every motion-module tensor and the spatial cross-attention; SD's self-attention frozen
    assert {k for k, _ in pipe.unet.named_parameters() if ".motion_modules." in f".{k}"} <= trainable
    assert any(".attentions." in k and ".attn2." in k for k in changed)
    assert not any(".attentions." in k and ".attn1." in k for k in trainable)
    info = json.loads((tmp_path / "at" / "finetune.json").read_text())
    assert info["backend"] == "animatediff" and set(info["trained_tensors"]) == trainable
    assert info["config"]["trainable"] == TRAINABLE_DEFAULTS["animatediff"]
    video = ad.generate(tuned, {"text_tokens": tok[:1]}, ["c0"], GEN, seed=0, log=quiet)
    assert video.shape == (1, T, 8 * H, 8 * H, 3)


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    lat, tok = _train_data()
    cfg = {"mode": "lora", "lora_rank": 2, "steps": 4, "batch_size": 2, "lr": 1e-2, "checkpoint_every": 2}

    def killer(message):
        if message.startswith("step 3/4"):
            raise KeyboardInterrupt("killed after step 3 (last checkpoint: step 2)")

    with pytest.raises(KeyboardInterrupt):
        finetune(ad.load("tiny", seed=0), lat, tok, cfg, tmp_path / "a", seed=0, log=killer)
    assert not (tmp_path / "a").exists() and (tmp_path / "a.ckpt" / "checkpoint.safetensors").exists()
    lines = []
    finetune(ad.load("tiny", seed=0), lat, tok, cfg, tmp_path / "a", seed=0, log=lines.append)
    assert any("resuming from the checkpoint at step 2" in line for line in lines)
    finetune(ad.load("tiny", seed=0), lat, tok, cfg, tmp_path / "b", seed=0, log=quiet)
    resumed = ad.load(str(tmp_path / "a")).unet.state_dict()
    straight = ad.load(str(tmp_path / "b")).unet.state_dict()
    base = ad.load("tiny", seed=0).unet.state_dict()
    assert any(not torch.equal(base[k], straight[k]) for k in straight)  # it trained at all
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name


def test_bad_settings_and_data_are_named(tmp_path):
    pipe = ad.load("tiny", seed=0)
    lat, tok = _train_data()
    with pytest.raises(ConfigError, match=r"trainable.*\['temp_convs'\], which match none"):
        finetune(pipe, lat, tok, {"trainable": ["attn2", "temp_convs"], "steps": 1}, tmp_path / "x", log=quiet)
    with pytest.raises(ConfigError, match="trainable: expected 'auto' or a list"):
        finetune(pipe, lat, tok, {"trainable": "motion_modules", "steps": 1}, tmp_path / "x", log=quiet)
    longest = int(pipe.unet.config.motion_max_seq_length)
    long_lat, long_tok = _train_data(n=2, frames=longest + 1)
    with pytest.raises(InputError, match="motion_max_seq_length"):
        finetune(pipe, long_lat, long_tok, {"steps": 1}, tmp_path / "x", log=quiet)
    assert not (tmp_path / "x").exists()


def test_check_finetune_admits_animatediff_and_refuses_what_cannot_be_tuned():
    from fmrivid.generate.stages import check_finetune

    for method in ("animatediff", "neuroclips", "text_to_video"):
        check_finetune({"method": method, "finetune": {"enabled": True}})
    with pytest.raises(ConfigError, match="generate.finetune.cotrain: expected a text-to-video generator"):
        check_finetune({"method": "animatediff", "finetune": {"enabled": True, "cotrain": True}}, ["align"])
    check_finetune({"method": "wan", "finetune": {"enabled": True}})  # tests/unit/test_generate_finetune_wan.py
    with pytest.raises(ConfigError, match="generate.finetune.cotrain: expected a text-to-video generator"):
        check_finetune({"method": "wan", "finetune": {"enabled": True, "cotrain": True}}, ["align"])
    with pytest.raises(ConfigError, match="generate.finetune.enabled: expected false with generate.method "
                                          "'image_to_video'"):
        check_finetune({"method": "image_to_video", "finetune": {"enabled": True}})
    check_finetune({"method": "wan", "finetune": {"enabled": False}})


def test_stage_dispatches_on_the_method_and_reads_training_rows_only(tmp_path, monkeypatch):
    from fmrivid.generate import finetune as ft
    from fmrivid.generate import stages

    lat, tok = _train_data(n=6)
    ids = [f"clip{i}" for i in range(6)]
    split = ["train", "test", "train", "train", "test", "train"]
    lat[[1, 4]], tok[[1, 4]] = np.nan, np.nan  # test rows: training would refuse them (non-finite)
    write_features(tmp_path / "vae_frames.h5", ids, lat)
    write_features(tmp_path / "text_tokens.h5", ids, tok)
    write_split_table(tmp_path / "splits.tsv", ids, split)
    seen = {}
    real = ft.finetune

    def spy(pipe, train_latents, train_cond, cfg, out_dir, **kw):
        seen.update(unet=type(pipe.unet).__name__, n=len(train_latents), betas=kw["noise_scheduler"].betas.clone())
        return real(pipe, train_latents, train_cond, cfg, out_dir, **kw)

    monkeypatch.setattr(ft, "finetune", spy)
    cfg = {"method": "neuroclips", "device": "cpu", "pipeline": {"model": "tiny", "beta_schedule": "scaled_linear"},
           "finetune": {"enabled": True, "mode": "lora", "lora_rank": 2, "steps": 2, "batch_size": 2,
                        "checkpoint_every": 2}}
    stages.finetune_generator(tmp_path / "text_tokens.h5", tmp_path / "splits.tsv", cfg, seed=0,
                              out_dir=tmp_path / "finetuned", vae_frames_path=tmp_path / "vae_frames.h5", log=quiet)
    assert seen["unet"] == "UNetMotionModel" and seen["n"] == 4
    # the training noise uses the sampler's betas (here SD's scaled_linear, not AnimateDiff's default linear)
    want = ad.scheduler(ad.load("tiny"), {"beta_schedule": "scaled_linear"}).betas
    assert torch.allclose(seen["betas"], want) and not torch.allclose(want, ad.scheduler(ad.load("tiny")).betas)
    info = json.loads((tmp_path / "finetuned" / "finetune.json").read_text())
    assert info["backend"] == "animatediff" and info["n_train_clips"] == 4
    assert isinstance(ad.load(str(tmp_path / "finetuned")).unet, type(ad.load("tiny").unet))
    with pytest.raises(ConfigError, match="expected false with generate.method 'image_to_video'"):
        stages.finetune_generator(tmp_path / "text_tokens.h5", tmp_path / "splits.tsv",
                                  dict(cfg, method="image_to_video"), seed=0, out_dir=tmp_path / "w",
                                  vae_frames_path=tmp_path / "vae_frames.h5", log=quiet)


def test_dry_run_plans_finetune_generator_for_animatediff(tmp_path):
    override = {"generate": {"method": "animatediff", "finetune": {"enabled": True, "mode": "lora"},
                             "pipeline": {"model": "tiny", "num_frames": 4, "height": 32, "width": 32}},
                "features": {"vae_model": "tiny#vae", "tokens": {"enabled": True, "model": "tiny"}},
                "decode": {"targets": ["text", "image", "vae", "text_tokens"]}}
    (tmp_path / "ad.yaml").write_text(yaml.safe_dump(override))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n",
           "--configfile", str(REPO / "config" / "test.yaml"), str(tmp_path / "ad.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "rule finetune_generator:" in out
    # generation reads the fine-tuned folder
    chunk = out.split("rule generate_chunk:")[1].split("\n\n")[0]
    assert "models/generator/finetuned" in chunk
