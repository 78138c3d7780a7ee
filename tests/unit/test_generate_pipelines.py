"""Tests of the diffusers text-to-video generator (fmrivid.generate.pipelines / finetune).

One module-scoped tiny ``TextToVideoSDPipeline`` (real diffusers/transformers
classes, random weights) serves every test: 2 frames of 32x32, 2-4 steps.
The backbone: the img2img methods put the decoded latents' structure into the
video (planted latents come back out), batch size never changes a clip, our
sampler reproduces the diffusers pipeline call, the negative condition is
used, fine-tuning freezes what it must, and generation inputs do not depend on
test stimuli.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fmrivid import models
from fmrivid.errors import ConfigError, InputError, ModelNotAvailableError
from fmrivid.generate import pipelines as gp
from fmrivid.generate.finetune import finetune, trainable_parameter_names
from fmrivid.utils import clip_seed

L, D, C, T, S = 16, 32, 4, 2, 32  # tokens, token width, latent channels, frames, frame side
IDS = ["seg1_0", "seg1_1", "seg2_7"]
CFG = {"num_frames": T, "height": S, "width": S, "steps": 2, "batch_size": 3, "guidance_scale": 3.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: two workers, two cores


@pytest.fixture(scope="module")
def pipe():
    return models.load("tiny", "text_to_video", seed=0)


@pytest.fixture(scope="module")
def cond():
    rng = np.random.default_rng(0)
    return {"text_tokens": rng.standard_normal((3, L, D)).astype(np.float32),
            "negative": rng.standard_normal((L, D)).astype(np.float32)}


def _rows(cond, sl):
    """The conditions of clips ``sl`` (the negative is shared)."""
    return {k: (v if k == "negative" else v[sl]) for k, v in cond.items()}


def _latents(seed, shape):
    return (3.0 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _decode_plain(pipe, lat):
    """Scaled latents (N, C, h, w) -> float frames (N, H, W, 3) in [0, 255] through the pipeline's VAE."""
    with torch.inference_mode():
        x = pipe.model.vae.decode(torch.from_numpy(lat) / pipe.model.vae.config.scaling_factor).sample
    return ((x.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------- the model kind


def test_tiny_pipeline_is_the_real_modelscope_architecture(pipe):
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextModel

    p = pipe.model
    assert isinstance(p, TextToVideoSDPipeline)
    assert isinstance(p.unet, UNet3DConditionModel) and isinstance(p.vae, AutoencoderKL)
    assert isinstance(p.text_encoder, CLIPTextModel) and isinstance(p.scheduler, DDIMScheduler)
    assert p.vae_scale_factor == 8 and p.unet.config.cross_attention_dim == D
    assert pipe.info["kind"] == "text_to_video" and pipe.info["tiny"] is True
    again = models.load("tiny", "text_to_video", seed=0).model.unet.state_dict()
    other = models.load("tiny", "text_to_video", seed=1).model.unet.state_dict()
    for name, value in p.unet.state_dict().items():
        assert torch.equal(value, again[name])
    assert any(not torch.equal(v, other[k]) for k, v in p.unet.state_dict().items())


def test_saved_pipeline_directory_reloads_and_generates_the_same(pipe, cond, tmp_path):
    pipe.model.save_pretrained(str(tmp_path / "gen"), safe_serialization=True)
    loaded = gp.load_pipeline(str(tmp_path / "gen"), CFG)
    assert loaded.info["resolved"] == str((tmp_path / "gen").resolve())
    a = gp.generate(pipe, "text_to_video", _rows(cond, slice(0, 1)), IDS[:1], CFG, seed=3)
    b = gp.generate(loaded, "text_to_video", _rows(cond, slice(0, 1)), IDS[:1], CFG, seed=3)
    np.testing.assert_array_equal(a, b)


def test_uncached_hub_generator_fails_with_the_download_command(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailableError) as err:
        gp.load_pipeline("ali-vilab/text-to-video-ms-1.7b", CFG)
    message = str(err.value)
    assert "hf download ali-vilab/text-to-video-ms-1.7b --revision main" in message
    assert str(tmp_path / "empty-cache") in message


# --------------------------------------------------------------------------- sampling


def test_batch_size_and_batch_company_do_not_change_a_clip(pipe, cond):
    three = gp.generate(pipe, "text_to_video", cond, IDS, CFG, seed=5)
    ones = gp.generate(pipe, "text_to_video", cond, IDS, dict(CFG, batch_size=1), seed=5)
    assert three.shape == (3, T, S, S, 3) and three.dtype == np.uint8
    np.testing.assert_array_equal(three, ones)
    alone = gp.generate(pipe, "text_to_video", _rows(cond, slice(2, 3)), IDS[2:], CFG, seed=5)
    np.testing.assert_array_equal(alone[0], three[2])
    assert not np.array_equal(three[0], three[1])  # each clip its own noise
    reseeded = gp.generate(pipe, "text_to_video", cond, IDS, CFG, seed=6)
    assert not np.array_equal(reseeded, three)


def test_text_to_video_reproduces_the_diffusers_pipeline_call(pipe, cond):
    ours = gp.generate(pipe, "text_to_video", cond, IDS, CFG, seed=5)
    noise = torch.cat([torch.randn((1, C, T, S // 8, S // 8), generator=torch.Generator().manual_seed(clip_seed(5, c)))
                       for c in IDS])
    neg = torch.from_numpy(cond["negative"])[None].expand(3, -1, -1).contiguous()
    frames = pipe.model(prompt_embeds=torch.from_numpy(cond["text_tokens"]), negative_prompt_embeds=neg,
                        latents=noise, num_frames=T, height=S, width=S, num_inference_steps=2,
                        guidance_scale=3.0, output_type="np").frames
    reference = np.round(frames * 255).astype(np.int16)
    assert reference.shape == ours.shape
    assert np.abs(reference - ours.astype(np.int16)).max() <= 1  # float rounding of batch vs clip-by-clip


def test_the_mean_training_negative_drives_guidance(pipe, cond):
    cond = _rows(cond, slice(0, 1))
    base = gp.generate(pipe, "text_to_video", cond, IDS[:1], CFG, seed=1)
    other = dict(cond, negative=cond["negative"] + 1.0)
    assert not np.array_equal(base, gp.generate(pipe, "text_to_video", other, IDS[:1], CFG, seed=1))
    tokens = dict(cond, text_tokens=cond["text_tokens"] + 1.0)
    assert not np.array_equal(base, gp.generate(pipe, "text_to_video", tokens, IDS[:1], CFG, seed=1))
    with pytest.raises(InputError, match="negative"):
        gp.generate(pipe, "text_to_video", {"text_tokens": cond["text_tokens"]}, IDS, CFG, seed=1)
    unguided = dict(CFG, guidance_scale=1.0)  # no guidance: the negative is neither needed nor used
    a = gp.generate(pipe, "text_to_video", {"text_tokens": cond["text_tokens"]}, IDS[:1], unguided, seed=1)
    b = gp.generate(pipe, "text_to_video", other, IDS[:1], unguided, seed=1)
    np.testing.assert_array_equal(a, b)
    empty = gp.generate(pipe, "text_to_video", {"text_tokens": cond["text_tokens"]}, IDS[:1],
                        dict(CFG, negative="empty_prompt"), seed=1)
    assert empty.shape == base.shape and not np.array_equal(empty, base)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_two_stage_keeps_the_planted_low_level_latents(pipe, cond, scheduler):
    """Decoded VAE latents planted per clip: the refined video stays nearest its own latents' image."""
    init = _latents(1, (3, C, S // 8, S // 8))
    target = _decode_plain(pipe, init)  # (3, H, W, 3)
    cfg = dict(CFG, scheduler=scheduler, steps=4, strength=0.5)
    video = gp.generate(pipe, "two_stage", dict(cond, vae=init), IDS, cfg, seed=2).astype(np.float64)
    dist = np.array([[np.mean((video[i].mean(0) - target[j]) ** 2) for j in range(3)] for i in range(3)])
    assert np.all(np.argmin(dist, axis=1) == np.arange(3)), dist
    strong = gp.generate(pipe, "two_stage", dict(cond, vae=init), IDS, dict(cfg, strength=1.0), seed=2)
    d_strong = np.mean([(strong[i].astype(np.float64).mean(0) - target[i]) ** 2 for i in range(3)])
    assert np.trace(dist) / 3 < d_strong  # more noise, less of the planted structure
    again = gp.generate(pipe, "two_stage", dict(cond, vae=init), IDS, dict(cfg, batch_size=1), seed=2)
    np.testing.assert_array_equal(again, video.astype(np.uint8))


def test_ddpm_and_ddim_are_different_samplers(pipe, cond):
    init = _latents(1, (1, C, S // 8, S // 8))
    inputs = {"text_tokens": cond["text_tokens"][:1], "negative": cond["negative"], "vae": init}
    cfg = dict(CFG, steps=4, strength=0.75)
    ddim = gp.generate(pipe, "two_stage", inputs, IDS[:1], dict(cfg, scheduler="ddim"), seed=0)
    ddpm = gp.generate(pipe, "two_stage", inputs, IDS[:1], dict(cfg, scheduler="ddpm"), seed=0)
    assert not np.array_equal(ddim, ddpm)
    np.testing.assert_array_equal(ddpm, gp.generate(pipe, "two_stage", inputs, IDS[:1],
                                                    dict(cfg, scheduler="ddpm"), seed=0))


def test_structure_motion_puts_first_frame_and_motion_where_they_belong(pipe, cond):
    first = _latents(10, (3, C, S // 8, S // 8))
    motion = _latents(11, (3, T, C, S // 8, S // 8))
    cfg = dict(CFG, steps=4, strength=0.5)
    video = gp.generate(pipe, "structure_motion", dict(cond, first_frame=first, motion=motion), IDS, cfg,
                        seed=4).astype(np.float64)
    frame0, frame1 = _decode_plain(pipe, first), _decode_plain(pipe, motion[:, 1])
    for i in range(3):
        candidates = [frame0[i], frame1[i], frame0[(i + 1) % 3], frame1[(i + 1) % 3]]
        d0 = [np.mean((video[i, 0] - c) ** 2) for c in candidates]
        d1 = [np.mean((video[i, 1] - c) ** 2) for c in candidates]
        assert np.argmin(d0) == 0 and np.argmin(d1) == 1, (i, d0, d1)
    residual = gp.generate(pipe, "structure_motion", dict(cond, first_frame=first, motion=motion - first[:, None]),
                           IDS, dict(cfg, motion_mode="residual"), seed=4)
    assert np.abs(residual.astype(np.int16) - video.astype(np.int16)).max() <= 1


def test_bad_inputs_and_settings_name_what_is_wrong(pipe, cond):
    with pytest.raises(InputError, match="cross_attention_dim"):
        gp.generate(pipe, "text_to_video", dict(cond, text_tokens=cond["text_tokens"][..., :8]), IDS, CFG, seed=0)
    bad = cond["text_tokens"].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="finite"):
        gp.generate(pipe, "text_to_video", dict(cond, text_tokens=bad), IDS, CFG, seed=0)
    with pytest.raises(InputError, match="clip ids"):
        gp.generate(pipe, "text_to_video", cond, ["a", "a", "b"], CFG, seed=0)
    with pytest.raises(InputError, match="motion"):
        gp.generate(pipe, "structure_motion", dict(cond, first_frame=_latents(0, (3, C, 4, 4))), IDS, CFG, seed=0)
    with pytest.raises(ConfigError, match="unknown"):
        gp.generate(pipe, "text_to_video", cond, IDS, dict(CFG, stepz=3), seed=0)
    with pytest.raises(ConfigError, match="method"):
        gp.generate(pipe, "video_magic", cond, IDS, CFG, seed=0)
    with pytest.raises(ConfigError, match="strength"):
        gp.generate(pipe, "two_stage", dict(cond, vae=_latents(0, (3, C, 4, 4))), IDS,
                    dict(CFG, steps=2, strength=0.2), seed=0)


# --------------------------------------------------------------------------- inputs and leakage


def test_generation_inputs_shape_flat_decoder_rows():
    rng = np.random.default_rng(0)
    decoded = {"text_tokens": rng.standard_normal((5, L * D)), "first_frame": rng.standard_normal((5, C * 16)),
               "motion": rng.standard_normal((5, T * C * 16)), "vae": rng.standard_normal((5, C * 16))}
    out = gp.generation_inputs("structure_motion", decoded, negative=rng.standard_normal(L * D),
                               token_shape=(L, D), latent_shape=(C, 4, 4), num_frames=T)
    assert set(out) == {"text_tokens", "first_frame", "motion", "negative"}
    assert out["text_tokens"].shape == (5, L, D) and out["negative"].shape == (L, D)
    assert out["first_frame"].shape == (5, C, 4, 4) and out["motion"].shape == (5, T, C, 4, 4)
    np.testing.assert_array_equal(out["motion"][2, 1].ravel(), decoded["motion"][2, C * 16:].astype(np.float32))
    two = gp.generation_inputs("two_stage", decoded, token_shape=(L, D), latent_shape=(C, 4, 4))
    assert set(two) == {"text_tokens", "vae"} and two["vae"].shape == (5, C, 4, 4)
    with pytest.raises(InputError, match="missing"):
        gp.generation_inputs("two_stage", {"text_tokens": decoded["text_tokens"]}, token_shape=(L, D))
    with pytest.raises(InputError, match="latent"):
        gp.generation_inputs("two_stage", decoded, token_shape=(L, D), latent_shape=(C, 3, 3))


def _dataset(test_variant):
    """Frames, captions, audio of 10 clips (6 train, 4 test); ``test_variant`` changes only the test clips."""
    rng = np.random.default_rng(100)
    frames = rng.integers(0, 256, (10, T, S, S, 3), dtype=np.uint8)
    captions = [f"a {c} shape moves {m}" for c, m in zip(["red", "blue"] * 5, ["left", "up", "right", "down", "left"] * 2)]
    audio = rng.standard_normal((10, 1600)).astype(np.float32)
    if test_variant:
        alt = np.random.default_rng(200 + test_variant)
        frames[6:] = alt.integers(0, 256, (4, T, S, S, 3), dtype=np.uint8)
        captions[6:] = ["an orange star spins", "nothing at all", "a green cross jumps", "rain on glass"]
        audio[6:] = alt.standard_normal((4, 1600)).astype(np.float32)
    return frames, captions, audio


def _inputs_through_the_workflow_path(pipe, text_model, frames, captions, audio, X, leaky=False):
    """Features of ALL clips (as the feature rules do) -> decoders fitted on train rows -> generation inputs."""
    from fmrivid.decoders.ridge import RidgeCV
    from fmrivid.features.embed import token_embeddings, vae_latents

    train, test = np.arange(6), np.arange(6, 10)
    tokens = token_embeddings(text_model, captions, batch_size=4)           # (10, L', D)
    lat = vae_latents(pipe.model.vae, frames.reshape((-1,) + frames.shape[2:]), batch_size=8)
    lat = lat.reshape((10, T) + lat.shape[1:])                              # (10, T, C, h, w)
    targets = {"text_tokens": tokens.reshape(10, -1), "vae": lat[:, 0].reshape(10, -1),
               "audio_rms": np.sqrt((audio ** 2).mean(1, keepdims=True))}  # audio feature, unused by this method
    decoded, negative = {}, None
    for name, Y in targets.items():
        model = RidgeCV(alphas=[1.0, 10.0], cv=3).fit(X[train], Y[train])
        decoded[name] = model.predict(X[test])
        if name == "text_tokens":
            negative = gp.mean_train_negative(model.predict, X[train])
            if leaky:  # a bug on purpose: the negative from every clip's features, test ones included
                negative = Y.mean(0)
    return gp.generation_inputs("two_stage", decoded, negative=negative, token_shape=tokens.shape[1:],
                                latent_shape=lat.shape[2:])


def test_generation_inputs_do_not_depend_on_test_frames_captions_or_audio(pipe):
    text_model = models.load("tiny", "text_tokens", seed=0)
    X = np.random.default_rng(7).standard_normal((10, 40)).astype(np.float32)  # the same brain data
    a = _dataset(0)
    b = _dataset(1)
    assert not np.array_equal(a[0][6:], b[0][6:]) and a[1][6:] != b[1][6:]
    inputs_a = _inputs_through_the_workflow_path(pipe, text_model, *a, X)
    inputs_b = _inputs_through_the_workflow_path(pipe, text_model, *b, X)
    assert set(inputs_a) == {"text_tokens", "vae", "negative"}
    for key in inputs_a:
        np.testing.assert_array_equal(inputs_a[key], inputs_b[key], err_msg=key)
    # the check can fail: a negative that sees test captions differs between the datasets
    leak_a = _inputs_through_the_workflow_path(pipe, text_model, *a, X, leaky=True)
    leak_b = _inputs_through_the_workflow_path(pipe, text_model, *b, X, leaky=True)
    assert not np.array_equal(leak_a["negative"], leak_b["negative"])


# --------------------------------------------------------------------------- fine-tuning


def _train_data():
    rng = np.random.default_rng(3)
    return (rng.standard_normal((4, T, C, 4, 4)).astype(np.float32),
            rng.standard_normal((4, L, D)).astype(np.float32))


def test_glfa_finetune_trains_attention_and_temporal_convs_only(tmp_path, cond):
    loaded = models.load("tiny", "text_to_video", seed=0)
    before = {k: v.clone() for k, v in loaded.model.unet.state_dict().items()}
    trainable = set(trainable_parameter_names(loaded.model.unet, ["attn1", "attn2", "temp_convs"]))
    lat, tok = _train_data()
    history = finetune(loaded, lat, tok, {"steps": 3, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 3},
                       tmp_path / "ft", seed=0, log=lambda m: None)
    assert len(history) >= 1 and np.isfinite(history[-1]["loss"])
    tuned = models.load(str(tmp_path / "ft"), "text_to_video")
    after = tuned.model.unet.state_dict()
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = set(before) - trainable
    assert any(".temp_convs." in k for k in trainable) and any(".attn2." in k for k in trainable)
    assert not (changed & frozen), sorted(changed & frozen)[:5]  # frozen weights bit-unchanged
    assert len(changed) > 0.9 * len(trainable)
    info = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert info["mode"] == "attention_temporal" and set(info["trained_tensors"]) == trainable
    video = gp.generate(tuned, "text_to_video", _rows(cond, slice(0, 1)), IDS[:1], CFG, seed=0)
    assert video.shape == (1, T, S, S, 3)


def test_lora_finetune_changes_only_the_adapted_projections(tmp_path):
    loaded = models.load("tiny", "text_to_video", seed=0)
    before = {k: v.clone() for k, v in loaded.model.unet.state_dict().items()}
    lat, tok = _train_data()
    finetune(loaded, lat, tok, {"mode": "lora", "lora_rank": 2, "steps": 3, "batch_size": 2, "lr": 1e-2,
                                "checkpoint_every": 3, "lora_targets": ["to_q", "to_v"]},
             tmp_path / "lora", seed=0, log=lambda m: None)
    after = models.load(str(tmp_path / "lora"), "text_to_video").model.unet.state_dict()
    assert set(after) == set(before)  # merged: a plain UNet again
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("to_q.weight", "to_v.weight")) for k in changed), sorted(changed)[:5]


def test_finetune_rejects_mismatched_training_data(tmp_path):
    loaded = models.load("tiny", "text_to_video", seed=0)
    lat, tok = _train_data()
    with pytest.raises(InputError, match="train_cond"):
        finetune(loaded, lat, tok[:3], {"steps": 1}, tmp_path / "x", log=lambda m: None)
    with pytest.raises(ConfigError, match="mode"):
        finetune(loaded, lat, tok, {"mode": "full"}, tmp_path / "x", log=lambda m: None)
    assert not (tmp_path / "x").exists()


def test_finetune_resumes_from_its_checkpoint_after_a_kill(tmp_path):
    lat, tok = _train_data()
    cfg = {"mode": "lora", "lora_rank": 2, "steps": 4, "batch_size": 2, "lr": 1e-2, "checkpoint_every": 2}

    def killer(message):
        if message.startswith("step 3/4"):
            raise KeyboardInterrupt("killed after step 3 (last checkpoint: step 2)")

    with pytest.raises(KeyboardInterrupt):
        finetune(models.load("tiny", "text_to_video", seed=0), lat, tok, cfg, tmp_path / "a", seed=0, log=killer)
    assert not (tmp_path / "a").exists() and (tmp_path / "a.ckpt" / "checkpoint.safetensors").exists()
    lines = []
    finetune(models.load("tiny", "text_to_video", seed=0), lat, tok, cfg, tmp_path / "a", seed=0, log=lines.append)
    assert any("resuming from the checkpoint at step 2" in line for line in lines)
    finetune(models.load("tiny", "text_to_video", seed=0), lat, tok, cfg, tmp_path / "b", seed=0, log=lambda m: None)
    resumed = models.load(str(tmp_path / "a"), "text_to_video").model.unet.state_dict()
    straight = models.load(str(tmp_path / "b"), "text_to_video").model.unet.state_dict()
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name


def test_reduced_precision_runs_with_a_float32_vae_when_asked(cond):
    loaded = models.load("tiny", "text_to_video", seed=0)
    cfg = dict(CFG, dtype="bfloat16", vae_upcast=True)
    video = gp.generate(loaded, "text_to_video", _rows(cond, slice(0, 1)), IDS[:1], cfg, seed=0)
    assert video.shape == (1, T, S, S, 3) and video.dtype == np.uint8
    assert loaded.model.unet.dtype == torch.bfloat16 and loaded.model.vae.dtype == torch.float32
    full = gp.generate(models.load("tiny", "text_to_video", seed=0), "text_to_video", _rows(cond, slice(0, 1)),
                       IDS[:1], CFG, seed=0)
    assert np.abs(video.astype(np.int16) - full.astype(np.int16)).mean() < 12  # same picture, rounded differently


@pytest.mark.parametrize("module", ["pipelines", "animatediff", "svd", "wan"])
def test_every_backend_refuses_bad_counts_numbers_and_switches_naming_the_pipeline_key(module):
    """The backends' settings share one set of checks (pipelines.check_int / check_number / check_bool): a count
    given as text, a negative guidance weight or a switch given as text is a ConfigError naming
    generate.pipeline.<key>, never a ValueError or a TypeError from deep inside."""
    import importlib

    mod = importlib.import_module(f"fmrivid.generate.{module}")
    with pytest.raises(ConfigError, match=r"^generate\.pipeline\.steps: expected a positive integer; found '4'"):
        mod.settings({"steps": "4"})
    with pytest.raises(ConfigError, match=r"^generate\.pipeline\.batch_size: expected a positive integer; found 0"):
        mod.settings({"batch_size": 0})
    key = "max_guidance_scale" if module == "svd" else "guidance_scale"
    with pytest.raises(ConfigError, match=rf"^generate\.pipeline\.{key}: expected a number >= 0; found -1"):
        mod.settings({key: -1.0})
    with pytest.raises(ConfigError, match=rf"^generate\.pipeline\.{key}: expected a number >= 0; found nan"):
        mod.settings({key: float("nan")})
    if module != "pipelines":
        with pytest.raises(ConfigError, match=r"^generate\.pipeline\.exact_cpu: expected true or false; found 'no'"):
            mod.settings({"exact_cpu": "no"})
