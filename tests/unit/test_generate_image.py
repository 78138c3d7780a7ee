"""Generation method image_img2img (fmrivid.generate.image): Brain-Diffuser's Stable Diffusion img2img per frame.

One module-scoped tiny ``StableDiffusionImg2ImgPipeline`` (real diffusers/transformers classes, random weights;
its text encoder and VAE are the tiny text-to-video generator's): 2 frames of 32x32 per clip, a few steps. The
backbone: the decoded frame latents really are the img2img init (a one-step run gives back their VAE decoding,
another clip's latents do not), a clip never depends on its batch-mates or chunk, the sampler is the diffusers
pipeline's own call with the decoded tokens as ``prompt_embeds``, DDPM is the default, and generate_chunk runs the
method end to end from prediction files, shuffled control included.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import quiet as _quiet

from fmrivid import models
from fmrivid.errors import ConfigError, InputError, ModelNotAvailableError
from fmrivid.generate import image as gi
from fmrivid.generate import pipelines as gp
from fmrivid.io.h5 import read_features, write_features
from fmrivid.utils import clip_seed

L, D, C, T, S, h = 16, 32, 4, 2, 32, 4  # tokens, token width, latent channels, frames, frame side, latent side
IDS = ["seg1_0", "seg1_1", "seg2_7"]
CFG = {"num_frames": T, "steps": 4, "batch_size": 3, "guidance_scale": 3.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: two workers, two cores


@pytest.fixture(scope="module")
def pipe():
    return gp.load_pipeline("tiny", {"method": "image_img2img"})


@pytest.fixture(scope="module")
def cond():
    rng = np.random.default_rng(0)
    return {"text_tokens": rng.standard_normal((3, L, D)).astype(np.float32),
            "negative": rng.standard_normal((L, D)).astype(np.float32),
            "vae": (3.0 * rng.standard_normal((3, T, C, h, h))).astype(np.float32)}


def _rows(cond, sl):
    return {k: (v if k == "negative" else v[sl]) for k, v in cond.items()}


def _gen(pipe, cond, ids=IDS, **cfg):
    return gp.generate(pipe, "image_img2img", cond, ids, dict(CFG, **cfg), seed=0, log=_quiet)


def _decode_plain(pipe, lat):
    """Scaled latents (N, T, C, h, w) -> float frames (N, T, H, W, 3) in [0, 255] through the pipeline's VAE."""
    vae = pipe.model.vae
    with torch.inference_mode():
        x = vae.decode(torch.from_numpy(lat.reshape((-1,) + lat.shape[2:])) / vae.config.scaling_factor).sample
    x = ((x.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    return x.reshape(lat.shape[:2] + x.shape[1:])


# --------------------------------------------------------------------------- the model kind


def test_tiny_text_to_image_is_stable_diffusion_sharing_the_video_generators_vae_and_text_encoder(pipe, tmp_path):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    p = pipe.model
    assert isinstance(p, StableDiffusionImg2ImgPipeline) and p.safety_checker is None
    assert isinstance(p.unet, UNet2DConditionModel) and isinstance(p.vae, AutoencoderKL)
    assert isinstance(p.text_encoder, CLIPTextModel) and isinstance(p.scheduler, DDPMScheduler)
    assert p.unet.config.cross_attention_dim == p.text_encoder.config.hidden_size == D and p.vae_scale_factor == 8
    assert pipe.info["kind"] == "text_to_image" and pipe.info["tiny"] is True
    video = models.load("tiny", "text_to_video").model
    for part in ("vae", "text_encoder"):
        ours, theirs = getattr(p, part), getattr(video, part)
        assert ours.config == theirs.config
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert p.tokenizer.get_vocab() == video.tokenizer.get_vocab()
    assert p.tokenizer.model_max_length == video.tokenizer.model_max_length == L
    # "tiny#vae" (features.vae_model) is this generator's VAE; "tiny#text_encoder" its text encoder.
    vae = models.load("tiny#vae", "vae").model.state_dict()
    assert all(torch.equal(v, vae[k]) for k, v in p.vae.state_dict().items())
    enc = models.load("tiny#text_encoder", "text_tokens").model.state_dict()
    assert all(torch.equal(v, enc[k]) for k, v in p.text_encoder.state_dict().items())
    other = models.load("tiny", "text_to_image", seed=1).model.unet.state_dict()
    assert any(not torch.equal(v, other[k]) for k, v in p.unet.state_dict().items())
    # A save_pretrained folder reloads as the kind, and "<dir>#vae" / "<dir>#text_encoder" are its components.
    p.save_pretrained(str(tmp_path / "sd"), safe_serialization=True)
    again = models.load(str(tmp_path / "sd"), "text_to_image").model
    assert isinstance(again, StableDiffusionImg2ImgPipeline) and again.safety_checker is None
    assert all(torch.equal(v, again.unet.state_dict()[k]) for k, v in p.unet.state_dict().items())
    vae_dir = models.load(f"{tmp_path / 'sd'}#vae", "vae").model.state_dict()
    assert all(torch.equal(v, vae_dir[k]) for k, v in p.vae.state_dict().items())
    tokens = models.load(f"{tmp_path / 'sd'}#text_encoder", "text_tokens")
    assert tokens.tokenizer is not None and tokens.model.config.hidden_size == D


def test_uncached_stable_diffusion_fails_with_the_download_command(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailableError) as err:
        gp.load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5", {"method": "image_img2img"})
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --revision main" in str(err.value)


# --------------------------------------------------------------------------- sampling


def test_shape_and_a_clip_does_not_depend_on_its_batch_or_chunk(pipe, cond):
    three = _gen(pipe, cond)
    assert three.shape == (3, T, S, S, 3) and three.dtype == np.uint8
    np.testing.assert_array_equal(three, _gen(pipe, cond, batch_size=1))
    # another chunk: the last clip alone, and in a different company and position
    np.testing.assert_array_equal(_gen(pipe, _rows(cond, slice(2, 3)), IDS[2:])[0], three[2])
    swapped = _gen(pipe, _rows(cond, [2, 0]), [IDS[2], IDS[0]], batch_size=2)
    np.testing.assert_array_equal(swapped, three[[2, 0]])
    assert not np.array_equal(three[0, 0], three[0, 1])  # frames are their own images


def test_the_decoded_latents_are_the_img2img_init(pipe, cond):
    """One denoising step at the lowest timestep returns (nearly) the VAE decoding of the decoded latents;
    the full schedule does not; other latents give another video."""
    ref = _decode_plain(pipe, cond["vae"])
    light = _gen(pipe, cond, steps=10, strength=0.1).astype(np.float64)  # 1 of 10 steps
    full = _gen(pipe, cond, strength=1.0).astype(np.float64)
    err_light, err_full = np.abs(light - ref).mean(), np.abs(full - ref).mean()
    other_clip = np.abs(light - ref[[1, 2, 0]]).mean()
    assert err_light < 0.1 * other_clip and err_light < 0.2 * err_full, (err_light, err_full, other_clip)
    moved = dict(cond, vae=cond["vae"][[1, 2, 0]])
    default = _gen(pipe, cond)
    assert not np.array_equal(_gen(pipe, moved)[0], default[0])
    # one latent per clip (N, C, h, w) is repeated over num_frames
    first = dict(cond, vae=cond["vae"][:, 0])
    np.testing.assert_array_equal(_gen(pipe, first),
                                  _gen(pipe, dict(cond, vae=np.repeat(cond["vae"][:, :1], T, axis=1))))


def test_ddpm_is_the_default_and_the_sampler_is_the_pipeline_call(pipe, cond, monkeypatch):
    from diffusers import DDIMScheduler, DDPMScheduler

    seen = []
    build = gi.img2img_pipeline
    monkeypatch.setattr(gi, "img2img_pipeline", lambda p, s: seen.append(type(s)) or build(p, s))
    auto = _gen(pipe, _rows(cond, slice(0, 1)), IDS[:1])
    assert set(seen) == {DDPMScheduler}
    np.testing.assert_array_equal(auto, _gen(pipe, _rows(cond, slice(0, 1)), IDS[:1], scheduler="ddpm"))
    seen.clear()
    ddim = _gen(pipe, _rows(cond, slice(0, 1)), IDS[:1], scheduler="ddim")
    assert set(seen) == {DDIMScheduler} and not np.array_equal(auto, ddim)
    # Reference: diffusers' own StableDiffusionImg2ImgPipeline call on the clip's frames, decoded by the pipeline.
    sampler = build(pipe.model, DDPMScheduler.from_config(pipe.model.scheduler.config))
    g = torch.Generator().manual_seed(clip_seed(0, IDS[0]))
    tok = torch.from_numpy(cond["text_tokens"][:1]).repeat(T, 1, 1)
    neg = torch.from_numpy(cond["negative"])[None].repeat(T, 1, 1)
    with torch.inference_mode():
        ref = sampler(prompt_embeds=tok, negative_prompt_embeds=neg, image=torch.from_numpy(cond["vae"][0]),
                      strength=0.75, num_inference_steps=4, guidance_scale=3.0, generator=[g] * T,
                      output_type="np").images
    assert np.abs(auto[0].astype(np.float64) - ref * 255).max() <= 1.0  # rounding only


def test_guidance_uses_the_mean_train_negative(pipe, cond):
    base = _gen(pipe, _rows(cond, slice(0, 1)), IDS[:1])
    other = _gen(pipe, dict(_rows(cond, slice(0, 1)), negative=cond["text_tokens"][2]), IDS[:1])
    empty = _gen(pipe, _rows(cond, slice(0, 1)), IDS[:1], negative="empty_prompt")
    assert not np.array_equal(base, other) and not np.array_equal(base, empty)


def test_bad_settings_and_generators_are_refused(pipe, cond):
    with pytest.raises(ConfigError, match="at least one step"):
        _gen(pipe, cond, steps=4, strength=0.2)
    with pytest.raises(InputError, match="cond\\['vae'\\]"):
        _gen(pipe, dict(cond, vae=cond["vae"][:, :, :3]))
    with pytest.raises(InputError, match="unique clip ids"):
        _gen(pipe, cond, ["a", "a", "b"])
    video = models.load("tiny", "text_to_video")
    with pytest.raises(ConfigError, match="text-to-image Stable Diffusion"):
        _gen(video, cond)


# --------------------------------------------------------------------------- generate_chunk end to end

N_TRAIN, N_TEST, VOX = 24, 3, 40


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """fMRI, ridge-decoded tokens (prediction + model) and flat per-frame latent predictions (T x C x h x w)."""
    from fmrivid.decoders import stages as decoders_stages
    from fmrivid.preprocess.pipeline import SubjectData, write_subject

    d = tmp_path_factory.mktemp("image_img2img")
    rng = np.random.default_rng(1)
    train_ids = [f"train{i:02d}" for i in range(N_TRAIN)]
    test_ids = [f"test{i}" for i in range(N_TEST)]
    Z = rng.normal(size=(N_TRAIN + N_TEST, 3)).astype(np.float32)
    tokens = (Z @ rng.normal(size=(3, L * D)).astype(np.float32)).reshape(-1, L, D)
    X = Z @ rng.normal(size=(3, VOX)).astype(np.float32) + 0.05 * rng.normal(size=(len(Z), VOX)).astype(np.float32)
    ijk = np.stack(np.unravel_index(np.arange(VOX), (4, 5, 2)), 1)
    write_subject(d / "sub-01.h5", SubjectData("01", X[:N_TRAIN], train_ids, X[N_TRAIN:], test_ids, ijk,
                                               np.eye(4), (4, 5, 2), np.ones(VOX)))
    write_features(d / "text_tokens.h5", train_ids + test_ids, tokens, {"kind": "text_tokens"})
    decoders_stages.decode(d / "sub-01.h5", d / "text_tokens.h5", {"alphas": [0.1, 1.0, 10.0], "cv": 3,
                                                                   "device": "cpu"},
                           d / "model.safetensors", d / "pred_tokens.h5", log=_quiet)
    frames = (3.0 * rng.standard_normal((N_TEST, T * C * h * h))).astype(np.float32)
    write_features(d / "pred_vae_frames.h5", test_ids, frames, {"feature_shape": json.dumps([T, C, h, h])})
    return d


def _chunk(d, out, chunk=0, shuffle=False, chunk_size=2, **pipe):
    from fmrivid.generate import stages as generate_stages

    cfg = {"method": "image_img2img", "device": "cpu", "chunk_size": chunk_size, "shuffled_inputs": [],
           "pipeline": {"steps": 4, "num_frames": T, "height": S, "width": S, "guidance_scale": 3.0,
                        "batch_size": 2, **pipe}}
    generate_stages.generate_chunk(cfg, 0, out, chunk=chunk, n_total=N_TEST, shuffle=shuffle, log=_quiet,
                                   text_tokens=d / "pred_tokens.h5", vae=d / "pred_vae_frames.h5",
                                   token_model=d / "model.safetensors", fmri_path=d / "sub-01.h5")
    return read_features(out)


def test_generate_chunk_runs_image_img2img_with_its_shuffled_control(decoded, tmp_path):
    d = decoded
    ids0, v0, a0 = _chunk(d, tmp_path / "c0.h5", chunk=0)
    ids1, v1, _ = _chunk(d, tmp_path / "c1.h5", chunk=1)
    assert ids0 == ["test0", "test1"] and ids1 == ["test2"]
    assert v0.dtype == np.uint8 and v0.shape == (2, T, S, S, 3) and v1.shape == (1, T, S, S, 3)
    assert a0["method"] == "image_img2img" and a0["generator"] == "tiny" and not a0["shuffled_features"]
    assert json.loads(a0["seeds"]) == [clip_seed(0, c) for c in ids0]
    _, whole, _ = _chunk(d, tmp_path / "all.h5", chunk_size=3)  # one chunk: the same clips come out
    np.testing.assert_array_equal(whole, np.concatenate([v0, v1]))
    _, s0, as0 = _chunk(d, tmp_path / "s0.h5", chunk=0, shuffle=True)
    assert as0["method"] == "image_img2img_shuffled" and as0["shuffled_features"]
    assert s0.shape == v0.shape and not np.array_equal(s0, v0)
    # the latents drive the frames: the shuffled clip is closer to the clip whose latents it got
    from fmrivid.metrics.stats import derangement

    perm = derangement(N_TEST, 0)
    _, s1, _ = _chunk(d, tmp_path / "s1.h5", chunk=1, shuffle=True)
    shuffled, own = np.concatenate([s0, s1]).astype(float), whole.astype(float)
    assert np.abs(shuffled - own[perm]).mean() < np.abs(shuffled - own).mean()


def test_finetuning_is_refused_for_the_pretrained_image_generator():
    from fmrivid.generate.stages import check_finetune

    with pytest.raises(ConfigError, match="generate.finetune.enabled: expected false with generate.method "
                                          "'image_img2img'"):
        check_finetune({"method": "image_img2img", "finetune": {"enabled": True}})
    check_finetune({"method": "image_img2img", "finetune": {"enabled": False}})
    check_finetune({"method": "two_stage", "finetune": {"enabled": True}})
