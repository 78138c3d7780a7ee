"""Tests of the Stable Video Diffusion image-to-video backend (fmrivid.generate.svd).

One module-scoped tiny ``StableVideoDiffusionPipeline`` (the real diffusers/transformers classes with random
weights: UNetSpatioTemporalConditionModel, AutoencoderKLTemporalDecoder, CLIPVisionModelWithProjection, the
released models' Euler scheduler) serves the tests: 4 frames of 32x32, 3 steps. The backbone: the wrapper is the
pipeline's own ``__call__`` with per-clip generators, a clip never depends on its batch-mates, the keyframe drives
the video, keyframes are decoded by the features' VAE exactly, loading is offline, and nothing deprecated speaks.
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
from fmrivid.generate import svd
from fmrivid.utils import clip_seed

T, S = 4, 32  # frames, frame side
IDS = ["seg1_0", "seg1_1", "seg2_7"]
CFG = {"num_frames": T, "height": S, "width": S, "steps": 3, "batch_size": 3, "decode_chunk_size": 0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: two workers, two cores


@pytest.fixture(scope="module")
def pipe():
    return svd.load("tiny", seed=0)


@pytest.fixture(scope="module")
def keyframes():
    """Three distinct keyframes: smooth colour ramps with a bright square at different places."""
    y, x = np.mgrid[0:S, 0:S] / (S - 1)
    out = []
    for k in range(3):
        img = np.stack([255 * x, 255 * y, 255 * (1 - x) * (k / 2)], -1)
        img[4 + 8 * k:12 + 8 * k, 4:12] = 255
        out.append(img)
    return np.round(np.array(out)).astype(np.uint8)


def _gen(pipe, frames, ids, cfg=None, seed=5):
    return svd.generate(pipe, {"keyframe": frames}, ids, dict(CFG, **(cfg or {})), seed=seed, log=lambda _: None)


# --------------------------------------------------------------------------- the model


def test_tiny_is_the_real_svd_architecture_and_deterministic(pipe):
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    assert isinstance(pipe, StableVideoDiffusionPipeline)
    assert isinstance(pipe.unet, UNetSpatioTemporalConditionModel)
    assert isinstance(pipe.vae, AutoencoderKLTemporalDecoder)
    assert isinstance(pipe.image_encoder, CLIPVisionModelWithProjection)
    assert isinstance(pipe.feature_extractor, CLIPImageProcessor)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.scheduler.config.use_karras_sigmas
    # the UNet sees the noisy latents + the keyframe's latents; its cross-attention the CLIP image embedding
    assert pipe.unet.config.in_channels == 2 * pipe.vae.config.latent_channels
    assert pipe.unet.config.cross_attention_dim == pipe.image_encoder.config.projection_dim
    again, other = svd.load("tiny", seed=0), svd.load("tiny", seed=1)
    ref = pipe.unet.state_dict()
    assert all(torch.equal(v, again.unet.state_dict()[k]) for k, v in ref.items())
    assert not all(torch.equal(v, other.unet.state_dict()[k]) for k, v in ref.items())
    with pytest.raises(ConfigError, match="tiny_config"):
        svd.load("tiny", tiny_config={"hidden": 3})


def test_saved_pipeline_loads_back_and_generates_the_same(pipe, keyframes, tmp_path):
    pipe.save_pretrained(str(tmp_path / "svd"))
    loaded = svd.load(str(tmp_path / "svd"))
    assert np.array_equal(_gen(loaded, keyframes[:1], IDS[:1]), _gen(pipe, keyframes[:1], IDS[:1]))
    (tmp_path / "other").mkdir()
    (tmp_path / "other/model_index.json").write_text(json.dumps({"_class_name": "AnimateDiffPipeline"}))
    with pytest.raises(ConfigError, match="expected a StableVideoDiffusionPipeline"):
        svd.load(str(tmp_path / "other"))
    with pytest.raises(InputError, match="no such directory"):
        svd.load(str(tmp_path / "missing/dir"))


def test_uncached_hub_model_fails_with_the_download_command(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for repo in svd.REAL_MODELS:
        with pytest.raises(ModelNotAvailableError) as err:
            svd.load(repo)
        message = str(err.value)
        assert repr(repo) in message and f"hf download {repo} --revision main" in message
        assert str(tmp_path / "empty-cache") in message
    with pytest.raises(ModelNotAvailableError, match="revision v9"):
        svd.load("stabilityai/stable-video-diffusion-img2vid-xt@v9")


# --------------------------------------------------------------------------- generation


def test_shapes_dtype_log_and_frames_differ_over_time(pipe, keyframes):
    lines = []
    video = svd.generate(pipe, {"keyframe": keyframes}, IDS, dict(CFG, batch_size=2), seed=5, log=lines.append)
    assert video.dtype == np.uint8 and video.shape == (3, T, S, S, 3)
    assert video.std() > 0
    steps = np.abs(np.diff(video.astype(np.int16), axis=1)).mean(axis=(2, 3, 4))  # (clips, T-1)
    assert (steps > 0.5).all()  # a video, not a still
    assert len(lines) == 2 and all(line.startswith("generate[image_to_video]: batch ") for line in lines)
    assert "clips 3-3 of 3" in lines[1] and "float32 on cpu" in lines[1]


def test_the_wrapper_is_the_pipeline_call_with_the_clip_generator(pipe, keyframes):
    """One clip: our output equals StableVideoDiffusionPipeline.__call__ on the same PIL keyframe, settings and
    generator (seeded with clip_seed), rounded to uint8."""
    import PIL.Image

    cfg = dict(CFG, fps=5, motion_bucket_id=60, noise_aug_strength=0.1, min_guidance_scale=1.5,
               max_guidance_scale=2.5, decode_chunk_size=2)
    ours = _gen(pipe, keyframes[1:2], IDS[1:2], cfg, seed=9)
    with svd._quiet_numpy_interop():  # numpy 2's notice inside EulerDiscreteScheduler.set_timesteps
        ref = pipe(image=[PIL.Image.fromarray(keyframes[1])], height=S, width=S, num_frames=T,
                   num_inference_steps=3, min_guidance_scale=1.5, max_guidance_scale=2.5, fps=5, motion_bucket_id=60,
                   noise_aug_strength=0.1, decode_chunk_size=2,
                   generator=torch.Generator().manual_seed(clip_seed(9, IDS[1])), output_type="np").frames
    assert np.array_equal(ours, np.clip(np.round(np.asarray(ref) * 255), 0, 255).astype(np.uint8))
    # and the micro-conditions reach the model: another motion bucket gives another video
    assert not np.array_equal(ours, _gen(pipe, keyframes[1:2], IDS[1:2], dict(cfg, motion_bucket_id=200), seed=9))


def test_a_clip_does_not_depend_on_its_batch(pipe, keyframes):
    together = _gen(pipe, keyframes, IDS)
    alone = _gen(pipe, keyframes[1:2], IDS[1:2])
    assert np.array_equal(together[1], alone[0])
    # another batch size and order: every clip the same
    reordered = _gen(pipe, keyframes[::-1], IDS[::-1], {"batch_size": 1})
    assert np.array_equal(reordered[::-1], together)
    # the seed is the clip id's: another seed changes the videos
    assert not np.array_equal(_gen(pipe, keyframes[1:2], IDS[1:2], seed=6), alone)


def test_permuted_keyframes_give_different_videos(pipe, keyframes):
    """The shuffled control: same clip ids (same noise), each clip fed another clip's keyframe."""
    video = _gen(pipe, keyframes, IDS)
    shuffled = _gen(pipe, keyframes[[1, 2, 0]], IDS)
    for i in range(3):
        assert np.abs(video[i].astype(float) - shuffled[i].astype(float)).mean() > 1.0


def test_float_keyframes_in_pixel_units_are_rounded(pipe, keyframes):
    as_float = keyframes[:1].astype(np.float64) + 0.3
    assert np.array_equal(_gen(pipe, as_float, IDS[:1]), _gen(pipe, keyframes[:1], IDS[:1]))


def test_bad_settings_inputs_and_generators_are_refused(pipe, keyframes):
    for key, value in (("steps", 0), ("num_frames", 1.5), ("height", 36), ("fps", 0), ("motion_bucket_id", -1),
                       ("noise_aug_strength", -0.1), ("max_guidance_scale", float("nan")), ("exact_cpu", "yes"),
                       ("dtype", "float64"), ("decode_chunk_size", -2)):
        with pytest.raises(ConfigError, match=rf"generate\.pipeline\.{key}"):
            svd.settings({key: value})
    with pytest.raises(ConfigError, match=r"generate\.pipeline\.min_guidance_scale"):
        svd.settings({"min_guidance_scale": 4.0, "max_guidance_scale": 3.0})
    with pytest.raises(ConfigError, match="unknown key"):
        svd.settings({"guidance_scale": 3.0})
    with pytest.raises(InputError, match="keyframe"):
        svd.generate(pipe, {"first_frame": keyframes}, IDS, CFG, seed=0, log=lambda _: None)
    with pytest.raises(InputError, match=r"\(3, H, W, 3\)"):
        _gen(pipe, keyframes[:2], IDS)
    with pytest.raises(InputError, match=r"\[0, 255\]"):
        _gen(pipe, keyframes / 255.0 * 300.0, IDS)
    with pytest.raises(InputError, match="unique"):
        _gen(pipe, keyframes, [IDS[0]] * 3)
    from fmrivid.generate import animatediff

    with pytest.raises(ConfigError, match="expected a StableVideoDiffusionPipeline"):
        _gen(animatediff.load("tiny", seed=0), keyframes, IDS)


# --------------------------------------------------------------------------- keyframe decoding


def test_decode_keyframes_is_the_features_vae_decoder(keyframes):
    """The decoded keyframe: the tiny features VAE ('tiny#vae', seed 0 as the features) decodes latents/scale,
    mapped to [0, 255]; checked against a direct decode, and latents of vae_latents come back near the image's
    decoding."""
    from fmrivid import models
    from fmrivid.features.embed import vae_latents

    vae = models.load("tiny#vae", "vae", seed=0).model
    lat = vae_latents(vae, keyframes)
    frames = svd.decode_keyframes(lat, "tiny#vae", batch_size=2)
    assert frames.dtype == np.uint8 and frames.shape[0] == 3 and frames.shape[-1] == 3
    with torch.inference_mode():
        ref = vae.decode(torch.from_numpy(lat) / vae.config.scaling_factor).sample.clamp(-1, 1)
    ref = ((ref + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(frames, ref)
    assert frames.shape[1:3] == keyframes.shape[1:3]
    # different latents, different keyframes (the decoder is not constant)
    assert np.abs(frames[0].astype(float) - frames[2].astype(float)).mean() > 0.5
    with pytest.raises(InputError, match="latents of features.vae_model"):
        svd.decode_keyframes(lat[:, :2], "tiny#vae")
    # flat decoder rows: square latents of the VAE's channels, or the recorded latent_shape
    flat = lat.reshape(len(lat), -1)
    assert np.array_equal(svd.decode_keyframes(flat, "tiny#vae"), frames)
    assert np.array_equal(svd.decode_keyframes(flat, "tiny#vae", latent_shape=lat.shape[1:]), frames)
    with pytest.raises(InputError, match="rows of"):
        svd.decode_keyframes(flat[:, :-4], "tiny#vae")


def test_generation_inputs_of_image_to_video_are_the_first_frame_latents_only():
    from fmrivid.generate import pipelines

    lat = np.random.default_rng(2).standard_normal((3, 4, 4, 4)).astype(np.float32)
    out = pipelines.generation_inputs("image_to_video", {"first_frame": lat.reshape(3, -1)}, latent_shape=(4, 4, 4))
    assert list(out) == ["first_frame"] and np.array_equal(out["first_frame"], lat)
    with pytest.raises(InputError, match="first_frame"):
        pipelines.generation_inputs("image_to_video", {"text_tokens": lat})


def test_the_generation_stage_decodes_the_keyframe_with_the_features_vae(pipe, tmp_path):
    """generate_chunk with image_to_video: flat decoded first-frame rows -> keyframes by features.vae_model ->
    SVD; equals decode_keyframes + svd.generate on the clip's own latents (no tokens, no negative); the shuffled
    control feeds another clip's keyframe; the VAE is recorded."""
    from fmrivid.generate import stages
    from fmrivid.io.h5 import read_features, write_features

    ids = ["test_a", "test_b", "test_c"]
    lat = np.random.default_rng(1).standard_normal((3, 4, 4, 4)).astype(np.float32)  # tiny#vae latents of 32x32
    pred = tmp_path / "sub-01_vae.h5"
    write_features(pred, ids, lat.reshape(3, -1), {"feature_shape": json.dumps([64])})  # flat, as ridge writes
    cfg = {"method": "image_to_video", "device": "cpu", "chunk_size": 2,
           "pipeline": {"model": "tiny", "steps": 3, "num_frames": T, "height": S, "width": S, "batch_size": 2,
                        "decode_slice": 0}}
    lines = []
    for shuffle in (False, True):
        stages.generate_chunk(cfg, 5, tmp_path / f"chunk-{shuffle}.h5", chunk=1, n_total=3, shuffle=shuffle,
                              vae_model="tiny#vae", first_frame=str(pred), log=lines.append)
    got_ids, video, attrs = read_features(tmp_path / "chunk-False.h5")
    _, shuffled, _ = read_features(tmp_path / "chunk-True.h5")
    want = _gen(pipe, svd.decode_keyframes(lat[2:], "tiny#vae"), ids[2:])
    assert got_ids == ids[2:] and np.array_equal(video, want)
    assert np.abs(video.astype(float) - shuffled.astype(float)).mean() > 1.0
    assert attrs["condition"] == "keyframe" and attrs["keyframe_vae"] == "tiny#vae"
    assert json.loads(attrs["inputs"]) == {"first_frame": f"{pred}[features]"}
    log = "\n".join(lines)
    assert "features.vae_model 'tiny#vae'" in log and "negative" not in log and "deprecat" not in log.lower()


_WARNINGS_SCRIPT = r"""
import sys, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np
    from fmrivid.generate import svd
    pipe = svd.load("tiny", seed=3)
    frames = svd.decode_keyframes(np.random.default_rng(0).standard_normal((2, 4, 4, 4)), "tiny#vae")
    svd.generate(pipe, {"keyframe": frames}, ["a", "b"], {"num_frames": 2, "height": 16, "width": 16, "steps": 2},
                 seed=0, log=lambda _: None)
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
    assert [line for line in run.stdout.splitlines() if line.startswith("WARNING")] == [], run.stdout[-3000:]
    assert "deprecat" not in run.stderr.lower(), run.stderr[-3000:]
