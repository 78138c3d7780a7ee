"""Image-to-video generation from the decoded keyframe with Stable Video Diffusion (issue 19).

"Structure + motion" without the deprecated ``TextToVideoSDPipeline``: the structure is the keyframe decoded from
fMRI, the motion is Stable Video Diffusion's. The generator is ``diffusers.StableVideoDiffusionPipeline`` (a
maintained pipeline): a ``UNetSpatioTemporalConditionModel`` denoising latent videos, the
``AutoencoderKLTemporalDecoder`` (per-frame encoder, temporally aware decoder), a ``CLIPVisionModelWithProjection``
image encoder with its ``CLIPImageProcessor``, and an ``EulerDiscreteScheduler`` (v-prediction, Karras sigmas).
:func:`load` takes

``"tiny"``
    The real classes with tiny random components (:data:`TINY`, overridable by ``tiny_config``), built under
    ``torch.manual_seed(seed)`` in a forked RNG: bit-identical for the same seed. The scheduler has the real
    models' configuration.
a ``save_pretrained`` directory
    Of a ``StableVideoDiffusionPipeline`` (e.g. a saved tiny one).
a hub id ``org/name[@revision]``
    From the local Hugging Face cache only (``local_files_only``); a missing one raises
    :class:`fmrivid.errors.ModelNotAvailableError` naming the id and the ``hf download`` command. On a cluster:
    ``stabilityai/stable-video-diffusion-img2vid-xt`` (25 frames at 576x1024, the default of
    :data:`DEFAULTS`) or ``stabilityai/stable-video-diffusion-img2vid`` (14 frames at 576x1024).

Conditioning comes from decoded fMRI only (nothing here reads a stimulus): ``cond["keyframe"]`` (N, H, W, 3), one
RGB image per clip, is the DECODED keyframe: the first-frame latent decoded from fMRI (the structure decoder's, or
ridge ``vae``), turned into pixels by the VAE whose latents the decoders were trained on (``features.vae_model``;
:func:`decode_keyframes`). That VAE need not be the generator's: SVD takes an image, which its own CLIP image
encoder (the cross-attention condition) and its own VAE (the latent concatenated to every frame's noise) encode
inside ``__call__``. No text tokens, no negative condition: SVD's classifier-free guidance is image-conditioned
(zero image embedding and latents as the unconditional branch), its weight rising linearly over the frames from
``min_guidance_scale`` to ``max_guidance_scale``.

Sampling is the pipeline's own ``__call__`` (no loop of ours; a unit test checks the wrapper equals a direct call).
All noise of a clip (the noise augmentation of its keyframe, then its initial latent video; the Euler sampler with
``s_churn`` 0 adds none) comes from one CPU ``torch.Generator`` seeded with
``fmrivid.utils.clip_seed(seed, clip_id)``; a batch passes the LIST of its clips' generators (diffusers draws sample
by sample from a list). On CPU clips run one at a time (``exact_cpu``: CPU kernels round differently for different
batch sizes), so a clip is bit-identical whatever its batch-mates or chunk; on CUDA ``batch_size`` clips share each
call, in ``dtype`` (float16 by default, as Stability's examples run it; the pipeline upcasts its VAE for encoding
when the VAE config says ``force_upcast``). ``decode_chunk_size`` frames are decoded per VAE call. One log line per
batch.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path

import numpy as np

from fmrivid.errors import ConfigError, InputError
from fmrivid.generate.pipelines import (
    _torch_dtype,
    check_bool,
    check_clip_ids,
    check_int,
    check_number,
    merge_settings,
)

__all__ = ["DEFAULTS", "REAL_MODELS", "TINY", "decode_keyframes", "generate", "keyframe_images", "load", "prepare",
           "settings"]

#: The released Stable Video Diffusion image-to-video models (hub id -> frames the UNet was trained for).
REAL_MODELS = {
    "stabilityai/stable-video-diffusion-img2vid-xt": 25,
    "stabilityai/stable-video-diffusion-img2vid": 14,
}

#: Settings of the SVD generator (config section ``generate.pipeline``: the DAG passes the keys named here,
#: :func:`fmrivid.generate.pipelines.svd_settings`).
DEFAULTS = {
    # generator: 'tiny', a save_pretrained StableVideoDiffusionPipeline folder, or a hub id (local cache only),
    # e.g. 'stabilityai/stable-video-diffusion-img2vid-xt'
    "model": "tiny",
    "steps": 25,                  # Euler sampler steps (num_inference_steps; SVD's default 25)
    "num_frames": 25,             # frames per clip (the -xt model was trained for 25, -img2vid for 14)
    "height": 576,                # frame height in pixels (multiple of 8; the released models: 576)
    "width": 1024,                # frame width in pixels (multiple of 8; the released models: 1024)
    "fps": 7,                     # frame-rate micro-condition (the UNet sees fps - 1; SVD's default 7)
    "motion_bucket_id": 127,      # motion micro-condition: higher = more motion (SVD's default 127)
    "noise_aug_strength": 0.02,   # Gaussian noise added to the keyframe before encoding (more: looser, more motion)
    "min_guidance_scale": 1.0,    # image guidance weight of the first frame (linear in frames up to the max)
    "max_guidance_scale": 3.0,    # image guidance weight of the last frame (<= 1: no guidance, half the UNet work)
    # frames per VAE decode call (more: temporally smoother, more memory); 0 = all. In the DAG it is
    # generate.pipeline.decode_slice (the same setting of the other backends)
    "decode_chunk_size": 8,
    "batch_size": 2,              # clips per pipeline call on CUDA
    "dtype": "auto",              # 'auto' (float16 on CUDA, float32 on CPU), 'float16', 'bfloat16' or 'float32'
    "exact_cpu": True,            # on CPU, clip by clip so a clip is bit-identical whatever the batch size
}

_CHOICES = {"dtype": ("auto", "float16", "bfloat16", "float32")}

#: The tiny generator's architecture (``tiny_config`` overrides these keys): UNet block widths, layers per block,
#: attention heads and trained frame count; the temporal VAE's widths, layers and latent channels; the CLIP vision
#: tower (224-pixel input: ``__call__`` resizes the keyframe to 224 for it, as for the real ViT-H/14).
TINY = {
    "unet_channels": [32, 64],
    "unet_layers_per_block": 1,
    "unet_heads": 4,
    "unet_num_frames": 4,
    "addition_time_embed_dim": 32,
    "vae_channels": [32, 64],
    "vae_layers_per_block": 1,
    "latent_channels": 4,
    "image_hidden_size": 32,
    "image_projection_dim": 32,
    "image_layers": 2,
    "image_heads": 4,
    "image_intermediate_size": 37,
    "image_size": 224,
    "image_patch_size": 32,
}

#: The Euler scheduler configuration of the released SVD models (v-prediction, continuous timesteps, Karras sigmas).
SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "use_karras_sigmas": True,
}

_KEY = "generate.pipeline"


# --------------------------------------------------------------------------- config


def settings(cfg=None, **overrides):
    """``cfg`` merged over :data:`DEFAULTS` (with :func:`fmrivid.generate.pipelines.merge_settings`), validated.

    Parameters
    ----------
    cfg : dict, optional
        Keys of :data:`DEFAULTS` (the ``generate.pipeline`` section); unknown keys raise.
    **overrides
        Applied after ``cfg``.

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        ``generate.pipeline.<key>: expected ...; found ...`` for an unknown key, a value outside its choices, a
        non-positive count, a size that is no multiple of 8, a negative strength or guidance weight, or a
        ``min_guidance_scale`` above ``max_guidance_scale``.
    """
    out = merge_settings(DEFAULTS, _CHOICES, cfg, overrides, _KEY)
    if not isinstance(out["model"], (str, Path)) or not str(out["model"]).strip():
        raise ConfigError(f"{_KEY}.model: expected a model spec (text); found {out['model']!r}")
    for key in ("steps", "num_frames", "height", "width", "fps", "batch_size"):
        check_int(key, out[key])
    for key in ("motion_bucket_id", "decode_chunk_size"):
        check_int(key, out[key], 0)
    for key in ("height", "width"):
        if out[key] % 8:
            raise ConfigError(f"{_KEY}.{key}: expected a multiple of 8 (StableVideoDiffusionPipeline); "
                              f"found {out[key]!r}")
    for key in ("noise_aug_strength", "min_guidance_scale", "max_guidance_scale"):
        check_number(key, out[key])
    if out["min_guidance_scale"] > out["max_guidance_scale"]:
        raise ConfigError(f"{_KEY}.min_guidance_scale: expected at most max_guidance_scale "
                          f"{out['max_guidance_scale']!r}; found {out['min_guidance_scale']!r}")
    check_bool("exact_cpu", out["exact_cpu"])
    return out


# --------------------------------------------------------------------------- loading


def _tiny_pipeline(seed, tiny_config):
    """A StableVideoDiffusionPipeline of the real classes with tiny random components (:data:`TINY`)."""
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    unknown = sorted(set(tiny_config or {}) - set(TINY))
    if unknown:
        raise ConfigError(f"tiny_config for the Stable Video Diffusion generator: expected keys among "
                          f"{sorted(TINY)}; found unknown key(s) {unknown}")
    s = {**TINY, **dict(tiny_config or {})}
    n_blocks = len(s["unet_channels"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet = UNetSpatioTemporalConditionModel(
            block_out_channels=tuple(s["unet_channels"]),
            layers_per_block=int(s["unet_layers_per_block"]),
            sample_size=32,
            in_channels=2 * int(s["latent_channels"]),  # the noisy latents + the keyframe's latents
            out_channels=int(s["latent_channels"]),
            down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (n_blocks - 1) + ("DownBlockSpatioTemporal",),
            up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (n_blocks - 1),
            cross_attention_dim=int(s["image_projection_dim"]),
            num_attention_heads=int(s["unet_heads"]),
            projection_class_embeddings_input_dim=3 * int(s["addition_time_embed_dim"]),  # fps, motion, noise
            addition_time_embed_dim=int(s["addition_time_embed_dim"]),
            num_frames=int(s["unet_num_frames"]),
        )
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=tuple(s["vae_channels"]),
            down_block_types=("DownEncoderBlock2D",) * len(s["vae_channels"]),
            layers_per_block=int(s["vae_layers_per_block"]),
            in_channels=3,
            out_channels=3,
            latent_channels=int(s["latent_channels"]),
        )
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=int(s["image_hidden_size"]),
            projection_dim=int(s["image_projection_dim"]),
            num_hidden_layers=int(s["image_layers"]),
            num_attention_heads=int(s["image_heads"]),
            intermediate_size=int(s["image_intermediate_size"]),
            image_size=int(s["image_size"]),
            patch_size=int(s["image_patch_size"]),
        ))
    size = int(s["image_size"])
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet,
                                        scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG),
                                        feature_extractor=processor)


def load(spec="tiny", seed=0, device="cpu", dtype=None, tiny_config=None):
    """Load the Stable Video Diffusion generator offline.

    Parameters
    ----------
    spec : str or Path
        ``"tiny"``; a ``save_pretrained`` directory of a ``StableVideoDiffusionPipeline``; or a hub id
        ``org/name[@revision]`` from the local cache only (:data:`REAL_MODELS`).
    seed : int
        Seed of the tiny model's random weights.
    device : str or torch.device
    dtype : torch.dtype or str, optional
        Cast the pipeline's modules (default: as stored, float32 for tiny); :func:`generate` casts to the
        configured ``dtype`` anyway.
    tiny_config : dict, optional
        Overrides of :data:`TINY`.

    Returns
    -------
    diffusers.StableVideoDiffusionPipeline
        In eval mode, progress bar off.

    Raises
    ------
    ModelNotAvailableError
        A hub model is not in the local cache (the message names it and gives the ``hf download`` command).
    InputError
        ``spec`` is a path that holds no saved pipeline.
    ConfigError
        Unknown spec form, a saved pipeline of another class, bad ``tiny_config``.
    """
    import torch
    from diffusers import StableVideoDiffusionPipeline

    # The folder / local-cache resolution and the "not cached" error are AnimateDiff's (one implementation).
    from fmrivid.generate.animatediff import _from_pretrained, _source
    from fmrivid.models import _as_dtype

    spec = str(spec).strip()
    if spec == "tiny":
        pipe = _tiny_pipeline(seed, tiny_config)
    else:
        source, kwargs, index = _source(spec, "model_index.json", "a diffusers StableVideoDiffusionPipeline")
        cls_name = json.loads(Path(index).read_text()).get("_class_name", "")
        if cls_name != "StableVideoDiffusionPipeline":
            raise ConfigError(f"{_KEY}.model: expected a StableVideoDiffusionPipeline (e.g. "
                              f"{next(iter(REAL_MODELS))}); found {spec!r} with class {cls_name or 'unknown'}")
        pipe = _from_pretrained(StableVideoDiffusionPipeline, source, kwargs)
    pipe.to(torch.device(device))
    if dtype is not None:
        pipe.to(dtype=_as_dtype(dtype))
    for part in pipe.components.values():
        if hasattr(part, "eval"):
            part.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipe(pipe):
    """The SVD pipeline of a LoadedModel (or the pipeline itself), checked."""
    from diffusers import StableVideoDiffusionPipeline

    pipe = getattr(pipe, "model", pipe)
    if not isinstance(pipe, StableVideoDiffusionPipeline):
        raise ConfigError(f"{_KEY}.model: expected a StableVideoDiffusionPipeline for generate.method "
                          f"image_to_video; found {type(pipe).__name__}")
    return pipe


def prepare(pipe, device, dtype):
    """Put the UNet, VAE and image encoder on ``device`` in ``dtype`` (idempotent); returns the pipeline."""
    import torch

    pipe = _pipe(pipe)
    device = torch.device(device)
    for name in ("unet", "vae", "image_encoder"):
        part = getattr(pipe, name)
        first = next(part.parameters())
        same = first.device.type == device.type and (device.index is None or first.device.index == device.index)
        if first.dtype != dtype or not same:
            part.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------- keyframes


def decode_keyframes(latents, vae_spec, device="cpu", batch_size=16, latent_shape=None):
    """Decoded first-frame latents -> RGB keyframes, with the VAE whose latents the decoders were trained on.

    The inverse of :func:`fmrivid.features.embed.vae_latents`: ``z = latents / scaling_factor (+ shift_factor)``,
    decoded, clamped to [-1, 1] and mapped to [0, 255]. Decoded in float32 (one frame per clip: cheap; half
    precision overflows in SD-family VAEs).

    Parameters
    ----------
    latents : ndarray (N, C, h, w) or (N, C*h*w)
        Scaled latents of ``vae_spec`` (decoded from fMRI). Flat rows (the ridge decoder's) are reshaped to
        ``latent_shape``, by default square ``(C, s, s)`` latents with C the VAE's latent channels (the clips'
        frames are ``features.size`` squares).
    vae_spec : str or Path
        ``features.vae_model`` (a :func:`fmrivid.models.load` spec of kind ``vae``, e.g. ``tiny#vae``, or the demo
        generator's VAE folder for ``features.vae_model: generator``). Weights seed 0, as the features'.
    device : str or torch.device
    batch_size : int
        Frames per decode call.
    latent_shape : (C, h, w), optional
        Of flat rows.

    Returns
    -------
    uint8 ndarray (N, H, W, 3)

    Raises
    ------
    InputError
        Latents of another shape or channel count than the VAE's, or non-finite values.
    """
    import torch

    from fmrivid import models
    from fmrivid.generate.animatediff import (
        _EMPTY_FP32_NOTICE,
        _T2V_CONTAINER_NOTICE,
        _quiet,
    )

    lat = np.asarray(latents, dtype=np.float32)
    # 'tiny#vae' is drawn from the tiny text-to-video generator (built, then dropped: its deprecation notice is not
    # about anything used here); an AutoencoderKL has no module to keep in float32 (the cast's notice lists none).
    with _quiet(f"{_T2V_CONTAINER_NOTICE}|{_EMPTY_FP32_NOTICE}"):
        vae = models.load(str(vae_spec), "vae", seed=0, device=device, dtype="float32").model
    channels = int(vae.config.latent_channels)
    if lat.ndim == 2:  # flat decoder rows
        side = round((lat.shape[1] / channels) ** 0.5)
        shape = tuple(int(v) for v in latent_shape) if latent_shape is not None else (channels, side, side)
        if int(np.prod(shape)) != lat.shape[1]:
            raise InputError("decoded first-frame latents", f"rows of {int(np.prod(shape))} values (latents {shape}"
                             f" of features.vae_model {str(vae_spec)!r})", f"shape {lat.shape}")
        lat = lat.reshape((len(lat),) + shape)
    if lat.ndim != 4 or lat.shape[1] != channels:
        raise InputError("decoded first-frame latents", f"(N, {channels}, h, w) latents of features.vae_model "
                         f"{str(vae_spec)!r}", f"shape {lat.shape}")
    if not np.all(np.isfinite(lat)):
        raise InputError("decoded first-frame latents", "finite values", "NaN or inf")
    scale = float(vae.config.scaling_factor)
    shift = getattr(vae.config, "shift_factor", None)
    out = []
    with torch.inference_mode():
        for start in range(0, len(lat), int(batch_size)):
            z = torch.from_numpy(lat[start:start + int(batch_size)]).to(vae.device) / scale
            if shift is not None:
                z = z + float(shift)
            x = vae.decode(z).sample.float().clamp(-1.0, 1.0)
            out.append(((x + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), dtype=np.uint8)


def keyframe_images(keyframes, n):
    """``cond["keyframe"]`` (N, H, W, 3), uint8 or float in [0, 255], checked -> a list of N RGB PIL images.

    ``__call__`` takes PIL images as the released models are used (it resizes them to 224 for the CLIP image
    encoder and to ``height`` x ``width`` for the VAE); float keyframes are rounded to uint8.
    """
    import PIL.Image

    arr = np.asarray(keyframes)
    if arr.ndim != 4 or arr.shape[0] != n or arr.shape[-1] != 3 or min(arr.shape[1:3]) < 1:
        raise InputError("cond['keyframe']", f"({n}, H, W, 3) RGB keyframes (one per clip id)", f"shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise InputError("cond['keyframe']", "uint8 or finite float images", f"dtype {arr.dtype} or NaN/inf")
        if arr.min() < -0.5 or arr.max() > 255.5:
            raise InputError("cond['keyframe']", "pixel values in [0, 255]",
                             f"range [{float(arr.min()):.3g}, {float(arr.max()):.3g}]")
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return [PIL.Image.fromarray(np.ascontiguousarray(a)) for a in arr]


# --------------------------------------------------------------------------- sampling


@contextlib.contextmanager
def _quiet_numpy_interop():
    """Silence the one DeprecationWarning numpy 2 raises inside ``EulerDiscreteScheduler.set_timesteps``
    (``np.array`` of a torch tensor whose ``__array__`` takes no ``copy`` keyword): a torch/numpy interop notice
    about code in diffusers, not about anything this backend calls. Every other warning passes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        yield


def _call(pipe, images, gens, scfg):
    """One ``StableVideoDiffusionPipeline.__call__`` on a list of keyframes: uint8 (B, T, H, W, 3)."""
    frames = pipe(
        image=images,
        height=int(scfg["height"]),
        width=int(scfg["width"]),
        num_frames=int(scfg["num_frames"]),
        num_inference_steps=int(scfg["steps"]),
        min_guidance_scale=float(scfg["min_guidance_scale"]),
        max_guidance_scale=float(scfg["max_guidance_scale"]),
        fps=int(scfg["fps"]),
        motion_bucket_id=int(scfg["motion_bucket_id"]),
        noise_aug_strength=float(scfg["noise_aug_strength"]),
        decode_chunk_size=int(scfg["decode_chunk_size"]) or int(scfg["num_frames"]),
        generator=gens,
        output_type="np",
    ).frames
    return np.clip(np.round(np.asarray(frames, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def generate(pipe, cond, clip_ids, cfg, seed, device="cpu", log=print):
    """Generate one video per clip id from its decoded keyframe with Stable Video Diffusion.

    Parameters
    ----------
    pipe : diffusers.StableVideoDiffusionPipeline (or an object whose ``model`` is one)
        From :func:`load`.
    cond : dict of str -> ndarray
        ``keyframe`` (N, H, W, 3) uint8 (or float in [0, 255]): the decoded keyframes (:func:`decode_keyframes`).
    clip_ids : sequence of N str
        Clip ``i`` draws all its noise from ``clip_seed(seed, clip_ids[i])``.
    cfg : dict
        The ``generate.pipeline`` settings (:data:`DEFAULTS`; ``model`` is :func:`load`'s).
    seed : int
        Master seed (config ``seed``).
    device : str or torch.device
    log : callable
        Receives one progress line per batch.

    Returns
    -------
    uint8 ndarray (N, T, H, W, 3)
        ``T = num_frames``, ``H x W = height x width``.

    Raises
    ------
    InputError
        A missing or mis-shaped keyframe array, empty or duplicate clip ids.
    ConfigError
        Bad settings, or a pipeline that is not Stable Video Diffusion.
    """
    import torch

    from fmrivid.utils import clip_seed

    scfg = settings(cfg)
    pipe = _pipe(pipe)
    clip_ids = check_clip_ids(clip_ids)
    n = len(clip_ids)
    if "keyframe" not in cond:
        raise InputError("cond", "key 'keyframe' (the decoded keyframes, (N, H, W, 3))", f"keys {sorted(cond)}")
    images = keyframe_images(cond["keyframe"], n)
    device = torch.device(device)
    dtype = _torch_dtype(scfg["dtype"], device)
    prepare(pipe, device, dtype)
    bs = int(scfg["batch_size"])
    lane = 1 if (device.type == "cpu" and scfg["exact_cpu"]) else bs
    guided = scfg["max_guidance_scale"] > 1.0
    out, t0, n_batches = [], time.perf_counter(), -(-n // bs)
    with torch.inference_mode(), _quiet_numpy_interop():
        for bi, start in enumerate(range(0, n, bs)):
            stop = min(n, start + bs)
            for j in range(start, stop, lane):
                k = min(stop, j + lane)
                gens = [torch.Generator().manual_seed(clip_seed(seed, c)) for c in clip_ids[j:k]]
                out.append(_call(pipe, images[j:k], gens, scfg))
            dt = time.perf_counter() - t0
            log(f"generate[image_to_video]: batch {bi + 1}/{n_batches}, clips {start + 1}-{stop} of {n}, "
                f"{dt:.1f} s ({dt / stop:.2f} s/clip, {scfg['num_frames']} frames of {scfg['height']}x"
                f"{scfg['width']}, euler {scfg['steps']} steps, image guidance "
                + (f"{scfg['min_guidance_scale']:g}-{scfg['max_guidance_scale']:g}" if guided else "off")
                + f", motion {scfg['motion_bucket_id']}, {str(dtype).replace('torch.', '')} on {device})")
    return np.concatenate(out)
