"""Tests of the AnimateDiff generation backend (fmrivid.generate.animatediff).

One module-scoped tiny ``AnimateDiffPipeline`` (real diffusers/transformers classes: UNet2D + MotionAdapter ->
UNetMotionModel, random weights) serves the tests: 4 frames of 32x32, 3 steps. The backbone: our sampler
reproduces ``AnimateDiffPipeline.__call__`` and ``AnimateDiffVideoToVideoPipeline.__call__``, a clip never
depends on its batch, the decoded conditions (tokens, mean-train negative, init video, keyframe) are where they
belong, loading is offline, and nothing deprecated speaks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fmrivid.errors import ConfigError, InputError, ModelNotAvailableError
from fmrivid.generate import animatediff as ad
from fmrivid.utils import clip_seed

L, D, C, T, S = 16, 32, 4, 4, 32  # tokens, token width, latent channels, frames, frame side
H = S // 8  # latent side
IDS = ["seg1_0", "seg1_1", "seg2_7"]
CFG = {"num_frames": T, "height": S, "width": S, "steps": 3, "batch_size": 3, "guidance_scale": 5.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: two workers, two cores


@pytest.fixture(scope="module")
def pipe():
    return ad.load("tiny", seed=0)


@pytest.fixture(scope="module")
def cond():
    rng = np.random.default_rng(0)
    return {"text_tokens": rng.standard_normal((3, L, D)).astype(np.float32),
            "negative": rng.standard_normal((L, D)).astype(np.float32)}


def _rows(cond, sl):
    """The conditions of clips ``sl`` (the negative is shared)."""
    return {k: (v if k == "negative" else v[sl]) for k, v in cond.items()}


def _gen(cond, ids, cfg=None, seed=5, pipe_=None, **kw):
    return ad.generate(pipe_, cond, ids, dict(CFG, **(cfg or {})), seed=seed, log=lambda _: None, **kw)


def _as_frames(x):
    """Pipeline 'np' output (N, T, H, W, 3) in [0, 1] -> int16 levels, as ours are rounded."""
    return np.round(np.asarray(x) * 255).astype(np.int16)


# --------------------------------------------------------------------------- the model


def test_tiny_is_the_real_animatediff_architecture_sharing_the_tiny_sd_parts(pipe):
    from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter
    from diffusers.models import UNetMotionModel
    from transformers import CLIPTextModel

    from fmrivid import models

    assert isinstance(pipe, AnimateDiffPipeline) and isinstance(pipe.unet, UNetMotionModel)
    assert isinstance(pipe.motion_adapter, MotionAdapter) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.unet.config.cross_attention_dim == D and pipe.vae_scale_factor == 8
    assert pipe.scheduler.config.beta_schedule == "linear"
    # The temporal modules are in the UNet: each down block carries the adapter's motion modules.
    assert all(len(b.motion_modules) == 1 for b in pipe.unet.down_blocks)
    # Text encoder, VAE and the spatial UNet weights are the tiny Stable Diffusion generator's (same seed).
    sd = models.load("tiny", "text_to_image", seed=0).model
    for part in ("vae", "text_encoder"):
        ref = getattr(sd, part).state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in getattr(pipe, part).state_dict().items())
    assert torch.equal(pipe.unet.conv_in.weight, sd.unet.conv_in.weight)
    assert torch.equal(pipe.unet.down_blocks[0].attentions[0].proj_in.weight,
                       sd.unet.down_blocks[0].attentions[0].proj_in.weight)
    again, other = ad.load("tiny", seed=0), ad.load("tiny", seed=1)
    key = "down_blocks.0.motion_modules.0.proj_out.weight"
    assert torch.equal(again.unet.state_dict()[key], pipe.unet.state_dict()[key])
    assert not torch.equal(other.unet.state_dict()[key], pipe.unet.state_dict()[key])


def test_saved_animatediff_and_sd_plus_adapter_directories_load_back(pipe, cond, tmp_path):
    from fmrivid import models

    pipe.save_pretrained(str(tmp_path / "ad"), safe_serialization=True)
    assert json.loads((tmp_path / "ad" / "model_index.json").read_text())["_class_name"] == "AnimateDiffPipeline"
    reloaded = ad.load(str(tmp_path / "ad"))
    # The hub route: a plain Stable Diffusion pipeline + a motion adapter (here both saved folders).
    models.load("tiny", "text_to_image", seed=0).model.save_pretrained(str(tmp_path / "sd"))
    pipe.motion_adapter.save_pretrained(str(tmp_path / "adapter"))
    combined = ad.load(str(tmp_path / "sd"), motion_adapter=str(tmp_path / "adapter"))
    rows = _rows(cond, slice(0, 1))
    a = _gen(rows, IDS[:1], pipe_=pipe)
    np.testing.assert_array_equal(a, _gen(rows, IDS[:1], pipe_=reloaded))
    # Its scheduler is SD's (DDPM here), but ad.scheduler() rebuilds DDIM with linear betas from its config.
    np.testing.assert_array_equal(a, _gen(rows, IDS[:1], pipe_=combined))
    with pytest.raises(InputError, match="model_index.json"):
        ad.load(str(tmp_path / "adapter"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDMPipeline"}))
    with pytest.raises(ConfigError, match="AnimateDiff or Stable Diffusion"):
        ad.load(str(tmp_path / "other"))


def test_uncached_hub_models_fail_with_the_download_command(monkeypatch, tmp_path, pipe):
    from fmrivid import models

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailableError) as err:
        ad.load("stable-diffusion-v1-5/stable-diffusion-v1-5")
    message = str(err.value)
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --revision main" in message
    assert str(tmp_path / "empty-cache") in message
    # The base is here (a folder), the motion adapter is a hub id that is not cached.
    models.load("tiny", "text_to_image", seed=0).model.save_pretrained(str(tmp_path / "sd"))
    with pytest.raises(ModelNotAvailableError, match="hf download guoyww/animatediff-motion-adapter-v1-5-2"):
        ad.load(str(tmp_path / "sd"))
    with pytest.raises(ModelNotAvailableError, match="@v9|revision v9"):
        ad.load(str(tmp_path / "sd"), motion_adapter="guoyww/animatediff-motion-adapter-v1-5-3@v9")


def test_real_size_config_names_only_known_tiny_keys():
    from fmrivid import models

    allowed = set(models.KINDS["text_to_image"].tiny_keys()) | set(ad.TINY)
    assert set(ad.SD15_REAL_SIZE_CONFIG) <= allowed
    with pytest.raises(ConfigError, match="motion_headz"):
        ad.load("tiny", tiny_config={"motion_headz": 4})


# --------------------------------------------------------------------------- sampling


def test_shapes_dtype_log_and_frames_of_a_clip_differ(pipe, cond):
    lines = []
    video = ad.generate(pipe, cond, IDS, dict(CFG, batch_size=2), seed=5, log=lines.append)
    assert video.shape == (3, T, S, S, 3) and video.dtype == np.uint8
    for clip in video:  # a video, not one image repeated
        assert all(not np.array_equal(clip[0], clip[f]) for f in range(1, T))
    assert len(lines) == 2 and lines[0].startswith("generate[animatediff]: batch 1/2, clips 1-2 of 3")
    assert lines[1].startswith("generate[animatediff]: batch 2/2, clips 3-3 of 3")


def test_a_clip_does_not_depend_on_its_batch_or_chunk(pipe, cond):
    three = _gen(cond, IDS, pipe_=pipe)
    ones = _gen(cond, IDS, {"batch_size": 1}, pipe_=pipe)
    alone = _gen(_rows(cond, slice(1, 2)), IDS[1:2], pipe_=pipe)
    np.testing.assert_array_equal(three, ones)
    np.testing.assert_array_equal(alone[0], three[1])
    assert not np.array_equal(three[0], three[1])  # each clip its own noise
    assert not np.array_equal(_gen(cond, IDS, seed=6, pipe_=pipe), three)
    # exact_cpu off: 3 clips share each UNet call; CPU kernels may round differently with the batch size.
    shared = _gen(cond, IDS, {"exact_cpu": False}, pipe_=pipe)
    single = _gen(cond, IDS, {"exact_cpu": False, "batch_size": 1}, pipe_=pipe)
    assert np.abs(shared.astype(np.int16) - single).max() <= 1
    assert np.abs(shared.astype(np.int16) - three).max() <= 1
    # In latent space (observed: ~1e-5 absolute on latents of magnitude ~15, and identical uint8 frames).
    scfg = ad.settings(dict(CFG, exact_cpu=False))
    proto = ad.scheduler(pipe, scfg)
    gens = [torch.Generator().manual_seed(clip_seed(5, c)) for c in IDS]
    noise = torch.cat([torch.randn((1, C, T, H, H), generator=g) for g in gens])
    toks = torch.from_numpy(cond["text_tokens"])
    neg = torch.from_numpy(cond["negative"])[None].expand(3, -1, -1)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        batch = ad.sample_latents(pipe, proto, noise, None, toks, neg, gens, scfg, cpu, torch.float32)
        each = torch.cat([ad.sample_latents(pipe, proto, noise[i:i + 1], None, toks[i:i + 1], neg[i:i + 1],
                                            gens[i:i + 1], scfg, cpu, torch.float32) for i in range(3)])
    torch.testing.assert_close(batch, each, rtol=1e-5, atol=1e-4)


def test_shuffled_conditioning_gives_different_videos(pipe, cond):
    base = _gen(cond, IDS, pipe_=pipe)
    perm = [1, 2, 0]
    shuffled = _gen(dict(cond, text_tokens=cond["text_tokens"][perm]), IDS, pipe_=pipe)
    for i in range(3):  # same clip id (same noise), another clip's tokens: another video
        assert np.abs(base[i].astype(np.int16) - shuffled[i]).mean() > 0.5


def test_pure_noise_reproduces_the_animatediff_pipeline_call(pipe, cond):
    for sched_cfg in ({"scheduler": "ddim"}, {"scheduler": "ddpm"}):
        cfg = dict(CFG, **sched_cfg)
        ours = _gen(cond, IDS, sched_cfg, pipe_=pipe)
        saved = pipe.scheduler
        pipe.scheduler = ad.scheduler(pipe, cfg)
        try:
            gens = [torch.Generator().manual_seed(clip_seed(5, c)) for c in IDS]
            neg = torch.from_numpy(cond["negative"])[None].expand(3, -1, -1).contiguous()
            frames = pipe(prompt_embeds=torch.from_numpy(cond["text_tokens"]), negative_prompt_embeds=neg,
                          num_frames=T, height=S, width=S, num_inference_steps=3, guidance_scale=5.0,
                          generator=gens, output_type="np").frames
        finally:
            pipe.scheduler = saved
        reference = _as_frames(frames)
        assert reference.shape == ours.shape
        assert np.abs(reference - ours).max() <= 1  # float rounding of a batch of 3 vs clip by clip


def test_init_video_reproduces_the_video_to_video_pipeline(pipe, cond):
    from diffusers import AnimateDiffVideoToVideoPipeline

    rng = np.random.default_rng(1)
    init = (2.0 * rng.standard_normal((3, T, C, H, H))).astype(np.float32)
    cfg = dict(CFG, steps=5, strength=0.6)
    ours = _gen(dict(cond, init_latents=init), IDS, {"steps": 5, "strength": 0.6}, pipe_=pipe)
    v2v = AnimateDiffVideoToVideoPipeline(**pipe.components)
    v2v.scheduler = ad.scheduler(pipe, cfg)
    v2v.set_progress_bar_config(disable=True)
    # Independently: the clip's first draw is its img2img noise, added at the first of the last 3 of 5 steps.
    noise = torch.cat([torch.randn((1, C, T, H, H), generator=torch.Generator().manual_seed(clip_seed(5, c)))
                       for c in IDS])
    sched = ad.scheduler(pipe, cfg)
    sched.set_timesteps(5)
    t0 = sched.timesteps[5 - int(5 * 0.6)]
    noised = sched.add_noise(torch.from_numpy(init).permute(0, 2, 1, 3, 4), noise, t0.repeat(3))
    neg = torch.from_numpy(cond["negative"])[None].expand(3, -1, -1).contiguous()
    frames = v2v(latents=noised, prompt_embeds=torch.from_numpy(cond["text_tokens"]), negative_prompt_embeds=neg,
                 strength=0.6, num_inference_steps=5, guidance_scale=5.0, height=S, width=S,
                 output_type="np").frames
    assert np.abs(_as_frames(frames) - ours).max() <= 1


def test_guidance_uses_the_mean_train_negative_and_ignores_it_when_off(pipe, cond):
    rows = _rows(cond, slice(0, 1))
    other = dict(rows, negative=rows["negative"] + 1.0)
    assert not np.array_equal(_gen(rows, IDS[:1], pipe_=pipe), _gen(other, IDS[:1], pipe_=pipe))
    off = {"guidance_scale": 1.0}
    a = _gen(rows, IDS[:1], off, pipe_=pipe)
    np.testing.assert_array_equal(a, _gen(other, IDS[:1], off, pipe_=pipe))
    np.testing.assert_array_equal(a, _gen({"text_tokens": rows["text_tokens"]}, IDS[:1], off, pipe_=pipe))
    with pytest.raises(InputError, match="negative"):
        _gen({"text_tokens": rows["text_tokens"]}, IDS[:1], pipe_=pipe)
    empty = _gen({"text_tokens": rows["text_tokens"]}, IDS[:1], {"negative": "empty_prompt"}, pipe_=pipe)
    assert empty.shape == a.shape and not np.array_equal(empty, _gen(rows, IDS[:1], pipe_=pipe))


def test_motion_modules_couple_the_frames_of_a_clip(pipe, cond):
    scfg = ad.settings(CFG)
    proto = ad.scheduler(pipe, scfg)
    noise = torch.randn((1, C, T, H, H), generator=torch.Generator().manual_seed(0))
    moved = noise.clone()
    moved[:, :, -1] += 1.0  # only the last frame's noise changes
    toks = torch.from_numpy(cond["text_tokens"][:1])
    with torch.inference_mode():
        a = ad.sample_latents(pipe, proto, noise, None, toks, None, None, scfg, torch.device("cpu"), torch.float32)
        b = ad.sample_latents(pipe, proto, moved, None, toks, None, None, scfg, torch.device("cpu"), torch.float32)
    assert (a[:, :, 0] - b[:, :, 0]).abs().max() > 1e-4  # frame 0 sees the last frame (temporal attention)


def test_init_video_and_keyframe_are_where_they_belong(pipe, cond):
    rng = np.random.default_rng(2)
    init = (3.0 * rng.standard_normal((3, T, C, H, H))).astype(np.float32)
    first = (3.0 * rng.standard_normal((3, C, H, H))).astype(np.float32)
    video = ad.initial_video({"init_latents": init, "first_frame": first}, num_frames=99)
    assert video.shape == (3, C, T, H, H)
    np.testing.assert_array_equal(video[:, :, 0], first)
    np.testing.assert_array_equal(video[:, :, 1:], init[:, 1:].transpose(0, 2, 1, 3, 4))
    still = ad.initial_video({"first_frame": first}, num_frames=3)
    assert still.shape == (3, C, 3, H, H) and np.array_equal(still[:, :, 2], first)
    assert ad.initial_video({"text_tokens": 0}, 3) is None
    # Planted: at low strength each clip's frames come from its own init video (frame 0 from its keyframe).
    low = {"steps": 10, "strength": 0.2}
    out = _gen(dict(cond, init_latents=init, first_frame=first), IDS, low, pipe_=pipe).astype(np.float32)
    with torch.inference_mode():
        dec = lambda z: pipe.vae.decode(torch.from_numpy(z) / pipe.vae.config.scaling_factor).sample
        planted = dec(video.transpose(0, 2, 1, 3, 4).reshape(-1, C, H, H)).clamp(-1, 1).numpy()
    planted = ((planted + 1) * 127.5).transpose(0, 2, 3, 1).reshape(3, T, S, S, 3)

    def corr(x, y):
        return np.corrcoef(x.ravel(), y.ravel())[0, 1]

    for i in range(3):
        for f in range(T):
            own = corr(out[i, f], planted[i, f])
            assert own > 0.9 and own > 0.2 + max(corr(out[i, f], planted[j, f]) for j in range(3) if j != i)
    assert out.shape == (3, T, S, S, 3)


def test_bad_settings_inputs_and_generators_are_refused(pipe, cond):
    with pytest.raises(ConfigError, match=r"generate\.pipeline\.scheduler: expected one of"):
        ad.settings({"scheduler": "euler"})
    with pytest.raises(ConfigError, match=r"generate\.pipeline\.strength: expected a number in \(0, 1\]"):
        ad.settings({"strength": 0})
    with pytest.raises(ConfigError, match=r"generate\.pipeline\.num_frames: expected a positive integer"):
        ad.settings({"num_frames": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        ad.settings({"stepz": 3})
    with pytest.raises(ConfigError, match="exact_cpu"):
        ad.settings({"exact_cpu": "yes"})
    with pytest.raises(InputError, match=r"\(3, L, 32\)"):
        _gen(dict(cond, text_tokens=cond["text_tokens"][..., :8]), IDS, pipe_=pipe)
    with pytest.raises(InputError, match="init_latents"):
        _gen(dict(cond, init_latents=np.zeros((3, T, 3, H, H), np.float32)), IDS, pipe_=pipe)
    with pytest.raises(InputError, match="first_frame"):
        _gen(dict(cond, init_latents=np.zeros((3, T, C, H, H), np.float32),
                  first_frame=np.zeros((3, C, H + 1, H), np.float32)), IDS, pipe_=pipe)
    with pytest.raises(InputError, match="motion_max_seq_length"):
        _gen(cond, IDS, {"num_frames": 33}, pipe_=pipe)
    with pytest.raises(InputError, match="unique"):
        _gen(cond, ["a", "a", "b"], pipe_=pipe)
    with pytest.raises(ConfigError, match="at least one step"):
        _gen(dict(cond, init_latents=np.zeros((3, T, C, H, H), np.float32)), IDS, {"strength": 0.2}, pipe_=pipe)
    with pytest.raises(ConfigError, match="VAE factor"):
        _gen(cond, IDS, {"height": 36}, pipe_=pipe)
    from fmrivid import models

    with pytest.raises(ConfigError, match="expected an AnimateDiff pipeline"):
        _gen(cond, IDS, pipe_=models.load("tiny", "text_to_image", seed=0).model)


_WARNINGS_SCRIPT = r"""
import logging, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np
    from fmrivid.generate import animatediff as ad
    pipe = ad.load("tiny", seed=3)
    rng = np.random.default_rng(0)
    cond = {"text_tokens": rng.standard_normal((2, 16, 32)).astype(np.float32),
            "negative": rng.standard_normal((16, 32)).astype(np.float32),
            "init_latents": rng.standard_normal((2, 2, 4, 2, 2)).astype(np.float32)}
    ad.generate(pipe, cond, ["a", "b"], {"num_frames": 2, "height": 16, "width": 16, "steps": 2,
                                         "strength": 1.0, "scheduler": "ddpm"}, seed=0, log=lambda _: None)
    del cond["init_latents"]
    ad.generate(pipe, cond, ["a", "b"], {"num_frames": 2, "height": 16, "width": 16, "steps": 2}, seed=0,
                log=lambda _: None)
for w in caught:
    if issubclass(w.category, (DeprecationWarning, FutureWarning)):
        print("WARNING", w.category.__name__, w.filename, str(w.message)[:300])
print("DONE")
"""


def test_no_deprecation_warning_when_loading_and_generating():
    """In a fresh interpreter (import-time warnings count too): no Deprecation/FutureWarning, nothing printed."""
    run = subprocess.run([sys.executable, "-c", _WARNINGS_SCRIPT], check=False, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("DONE")
    diffusers_warnings = [line for line in run.stdout.splitlines()
                          if line.startswith("WARNING") and "diffusers" in line]
    assert diffusers_warnings == []
    assert "deprecat" not in run.stderr.lower(), run.stderr[-3000:]
    assert "should be kept in float32" not in run.stderr
