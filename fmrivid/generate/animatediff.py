"""fMRI-conditioned video generation with AnimateDiff: a maintained diffusers backend (issue 19).

The generator is a ``diffusers.AnimateDiffPipeline``: a Stable Diffusion 1.5 ``UNet2DConditionModel`` whose
blocks are interleaved with the temporal attention modules of a ``MotionAdapter`` (diffusers composes the two
into a ``UNetMotionModel``), the SD1.5 ``AutoencoderKL`` and ``CLIPTextModel``. NeuroClips generates with
AnimateDiff v3 on SD1.5. :func:`load` takes

``"tiny"``
    The real classes with tiny random weights: the tiny Stable Diffusion generator of
    :func:`fmrivid.models.load` (kind ``text_to_image``: its UNet2D, and the text encoder, tokenizer and VAE it
    shares with the tiny ``text_to_video`` generator, so ``tiny#vae`` latents and ``tiny#text_encoder`` tokens
    are in this generator's spaces) plus a tiny ``MotionAdapter`` matched to that UNet (:data:`TINY`), built
    under ``torch.manual_seed(seed)``: bit-identical for the same seed.
a ``save_pretrained`` directory
    Of an ``AnimateDiffPipeline`` (e.g. a tiny one), or of a Stable Diffusion 1.x pipeline, which is combined
    with the ``motion_adapter`` (a ``MotionAdapter`` directory or hub id).
a hub id ``org/name[@revision]``
    From the local Hugging Face cache only (``local_files_only``); a missing model or motion adapter raises
    :class:`fmrivid.errors.ModelNotAvailableError` with the ``hf download`` command. On a cluster:
    ``model: stable-diffusion-v1-5/stable-diffusion-v1-5`` (the former ``runwayml/stable-diffusion-v1-5``)
    with ``motion_adapter: guoyww/animatediff-motion-adapter-v1-5-2`` (the default), or AnimateDiff v3 as
    NeuroClips (``guoyww/animatediff-motion-adapter-v1-5-3``, the ``v3_sd15_mm`` motion module in diffusers
    format). The SD1.5 text encoder is CLIP ViT-L/14: decoded tokens are (77, 768).

Conditioning comes from decoded fMRI only (nothing here reads a stimulus):

* ``cond["text_tokens"]`` (N, L, D): token embeddings of the pipeline's own text encoder decoded from fMRI,
  the ``prompt_embeds`` (D = the UNet's ``cross_attention_dim``);
* ``cond["negative"]`` (L, D): the embedding decoded from the MEAN TRAINING fMRI, the
  ``negative_prompt_embeds`` of classifier-free guidance (``negative: mean_train``; ``empty_prompt`` uses the
  text encoder's empty prompt instead); unused when ``guidance_scale`` <= 1;
* optional ``cond["init_latents"]`` (N, T, C, h, w): decoded *scaled* VAE latents of a low-resolution "blurry
  video" (``latent_dist.mean * scaling_factor`` of the generator's VAE, as
  :mod:`fmrivid.generate.pipelines` documents), the init video: noised to ``strength`` and denoised from that
  timestep (img2img on the latent video). T is then the video's, not ``num_frames``;
* optional ``cond["first_frame"]`` (N, C, h, w): a decoded keyframe latent that replaces frame 0 of the init
  video (NeuroClips injects its keyframe as the first frame). Without ``init_latents`` the keyframe is
  repeated over ``num_frames`` to form a still init video that the motion modules animate;
* neither: generation from pure noise (text-to-video).

The sampling loop is ours (one loop for both cases, on the pipeline's UNetMotionModel and VAE): it reproduces
``AnimateDiffPipeline.__call__`` (pure noise) and ``AnimateDiffVideoToVideoPipeline.__call__`` (from the
noised init latents) with the same scheduler (unit tests check both). The scheduler is built from the
pipeline's scheduler config (same betas; ``clip_sample`` off) as DDIM or DDPM, with AnimateDiff's linear beta
schedule by default (its motion modules were trained with it).

Reproducibility and speed. All noise of a clip (its initial / img2img noise, then every DDPM or DDIM-eta
variance draw) comes from one CPU ``torch.Generator`` seeded with ``fmrivid.utils.clip_seed(seed, clip_id)``
(a list of per-clip generators is passed to the scheduler, which draws sample by sample). On CPU each clip
runs and decodes alone (``exact_cpu``), so a clip is bit-identical whatever its batch-mates or chunk; on CUDA
``batch_size`` clips share each UNet call, in ``dtype`` (float16 by default), and the VAE decodes
``decode_slice`` frames per call (in float32 when ``vae_upcast`` says so: the SD1.5 VAE asks for it).
Everything runs under ``torch.inference_mode()`` and logs one line per batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from pathlib import Path

import numpy as np

from fmrivid.errors import ConfigError, InputError
from fmrivid.generate.pipelines import (
    _torch_dtype,
    check_bool,
    check_clip_ids,
    check_int,
    check_number,
    guidance_negative,
    merge_settings,
    sample_batches,
)

__all__ = ["DEFAULTS", "SD15_REAL_SIZE_CONFIG", "TINY", "generate", "initial_video", "load", "prepare",
           "sample_latents", "scheduler", "settings", "sync_motion_adapter"]

#: Settings of the AnimateDiff generator (config section ``generate.pipeline``).
DEFAULTS = {
    # generator: 'tiny', a save_pretrained AnimateDiff or Stable Diffusion 1.x pipeline folder, or a hub id
    # (local cache only), e.g. 'stable-diffusion-v1-5/stable-diffusion-v1-5'
    "model": "tiny",
    # MotionAdapter (hub id or folder) combined with a plain Stable Diffusion `model` (unused for 'tiny' and for
    # saved AnimateDiff pipelines); AnimateDiff v3 as NeuroClips: 'guoyww/animatediff-motion-adapter-v1-5-3'
    "motion_adapter": "guoyww/animatediff-motion-adapter-v1-5-2",
    "num_frames": 16,            # frames from pure noise (an init video brings its T); <= motion_max_seq_length
    "height": 512,               # frame height in pixels from pure noise (multiple of the VAE factor, 8 for SD1.5)
    "width": 512,                # frame width in pixels from pure noise
    "steps": 25,                 # sampler steps (from an init video: the last strength*steps of them)
    "guidance_scale": 7.5,       # classifier-free guidance weight (<= 1: off, the negative is unused)
    "negative": "mean_train",    # unconditional branch: 'mean_train' (decoded from mean training fMRI), 'empty_prompt'
    "scheduler": "ddim",         # 'ddim' or 'ddpm' (stochastic), built from the pipeline's scheduler config
    "beta_schedule": "linear",   # 'linear' (AnimateDiff's), 'scaled_linear' (SD's) or 'pipeline' (as stored)
    "eta": 0.0,                  # DDIM eta (0 = deterministic given the initial noise)
    "strength": 0.6,             # with an init video: fraction of the schedule re-noised (1 = almost pure noise)
    "batch_size": 4,             # clips per batch (per UNet call on CUDA)
    "dtype": "auto",             # 'auto' (float16 on CUDA, float32 on CPU), 'float16', 'bfloat16' or 'float32'
    "decode_slice": 16,          # frames per VAE decode call; 0 = all frames of a batch in one call
    "vae_upcast": "auto",        # decode in float32: 'auto' (VAE config force_upcast and float16), true or false
    "exact_cpu": True,           # on CPU, clip by clip so a clip is bit-identical whatever the batch size
}

_CHOICES = {
    "negative": ("mean_train", "empty_prompt"),
    "scheduler": ("ddim", "ddpm"),
    "beta_schedule": ("linear", "scaled_linear", "pipeline"),
    "dtype": ("auto", "float16", "bfloat16", "float32"),
}

#: The tiny MotionAdapter (the UNet2D, text encoder, tokenizer and VAE are the tiny ``text_to_image`` generator's;
#: ``tiny_config`` may also override that kind's keys): heads of each temporal attention, GroupNorm groups of the
#: temporal blocks, longest clip (frames), and whether the middle block gets a motion module (v1-5-2: yes, v3: no).
TINY = {
    "motion_heads": 2,
    "motion_norm_num_groups": 8,
    "motion_max_seq_length": 32,
    "motion_mid_block": True,
}

#: ``tiny_config`` that builds the real SD1.5 + AnimateDiff architecture with random weights (CLIP ViT-L/14 text
#: tower 768 wide, UNet 320/640/1280/1280 with 8 heads, the SD VAE, 8-head temporal modules): for timing only.
SD15_REAL_SIZE_CONFIG = {
    "text_hidden_size": 768,
    "text_layers": 12,
    "text_heads": 12,
    "text_intermediate_size": 3072,
    "max_text_length": 77,
    "unet_channels": [320, 640, 1280, 1280],
    "unet_cross_attn": [True, True, True, False],
    "unet_layers_per_block": 2,
    "unet_heads": 8,
    "unet_norm_num_groups": 32,
    "vae_channels": [128, 256, 512, 512],
    "vae_layers_per_block": 2,
    "vae_norm_num_groups": 32,
    "sample_size": 512,
    "motion_heads": 8,
    "motion_norm_num_groups": 32,
    "motion_max_seq_length": 32,
    "motion_mid_block": True,
}

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*)(?:@(?P<revision>[^@\s]+))?$")
_KEY = "generate.pipeline"


# --------------------------------------------------------------------------- config


def settings(cfg=None, **overrides):
    """``cfg`` merged over :data:`DEFAULTS`, validated.

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
        ``generate.pipeline.<key>: expected ...; found ...`` for an unknown key, a value outside its choices,
        a non-positive count, a strength outside (0, 1] or a negative guidance weight.
    """
    out = merge_settings(DEFAULTS, _CHOICES, cfg, overrides, _KEY)
    for key in ("model", "motion_adapter"):
        if not isinstance(out[key], (str, Path)) or not str(out[key]).strip():
            raise ConfigError(f"{_KEY}.{key}: expected a model spec (text); found {out[key]!r}")
    for key in ("num_frames", "height", "width", "steps", "batch_size"):
        check_int(key, out[key])
    check_int("decode_slice", out["decode_slice"], 0)
    check_number("strength", out["strength"], 0.0, 1.0, "a number in (0, 1]", open_low=True)
    check_number("guidance_scale", out["guidance_scale"])
    check_number("eta", out["eta"], 0.0, 1.0, "a number in [0, 1]")
    if out["vae_upcast"] not in ("auto", True, False):
        raise ConfigError(f"{_KEY}.vae_upcast: expected 'auto', true or false; found {out['vae_upcast']!r}")
    check_bool("exact_cpu", out["exact_cpu"])
    return out


# --------------------------------------------------------------------------- loading


class _DropLog(logging.Filter):
    """Drop diffusers log records matching a pattern (notices about things this backend does not use)."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record):
        return not self.pattern.search(record.getMessage())


@contextlib.contextmanager
def _quiet(pattern):
    """Silence diffusers log records matching ``pattern`` (and nothing else) inside the block."""
    names = ("diffusers.pipelines.pipeline_utils", "diffusers.models.modeling_utils")
    dropper = _DropLog(pattern)
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addFilter(dropper)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(dropper)


# ModelMixin.to(dtype) warns about "modules that should be kept in float32: []" for UNetMotionModel: an EMPTY
# list, i.e. nothing to keep; the notice is noise on every composition/cast of the motion UNet.
_EMPTY_FP32_NOTICE = r"should be kept in float32: \[\]"
# The tiny text_to_image builder of fmrivid.models builds (and drops) the deprecated TextToVideoSDPipeline as a
# container to draw the shared tiny text encoder / VAE; this backend uses no part of that pipeline class.
_T2V_CONTAINER_NOTICE = r"^The TextToVideoSDPipeline has been deprecated"


def _tiny_pipeline(seed, tiny_config):
    """Tiny AnimateDiffPipeline: the tiny SD generator (shared text encoder, tokenizer, VAE) + a tiny adapter."""
    import torch
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter

    from fmrivid import models

    overrides = dict(tiny_config or {})
    motion = {**TINY, **{k: overrides.pop(k) for k in list(overrides) if k in TINY}}
    allowed = set(models.KINDS["text_to_image"].tiny_keys()) | set(TINY)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(f"tiny_config for the AnimateDiff generator: expected keys among {sorted(allowed)}; "
                          f"found unknown key(s) {unknown}")
    with _quiet(_T2V_CONTAINER_NOTICE):
        sd = models.load("tiny", "text_to_image", seed=seed, tiny_config=overrides or None).model
    unet = sd.unet
    layers = unet.config.layers_per_block
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        adapter = MotionAdapter(
            block_out_channels=tuple(unet.config.block_out_channels),
            motion_layers_per_block=layers if isinstance(layers, int) else tuple(layers),
            motion_num_attention_heads=int(motion["motion_heads"]),
            motion_norm_num_groups=int(motion["motion_norm_num_groups"]),
            motion_max_seq_length=int(motion["motion_max_seq_length"]),
            use_motion_mid_block=bool(motion["motion_mid_block"]),
        )
    sched = DDIMScheduler.from_config(sd.scheduler.config, beta_schedule="linear", clip_sample=False,
                                      set_alpha_to_one=False, steps_offset=1)
    with _quiet(_EMPTY_FP32_NOTICE):
        return AnimateDiffPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet,
                                   motion_adapter=adapter, scheduler=sched)


def _not_cached(repo, revision, detail=""):
    from fmrivid import models

    return models._not_cached(repo, revision, None, models.hub_cache_dir(), detail)


def _cached_file(repo, revision, filename):
    """Path of ``filename`` of a hub repo in the local cache, or ModelNotAvailableError."""
    from huggingface_hub import try_to_load_from_cache

    from fmrivid import models

    cached = try_to_load_from_cache(repo, filename, cache_dir=str(models.hub_cache_dir()), revision=revision)
    if not isinstance(cached, str):
        raise _not_cached(repo, revision, f" (No local directory {repo!r} exists either.)")
    return cached


def _source(spec, filename, what):
    """(source, from_pretrained kwargs, path of ``filename``) of a directory or a cached hub id."""
    from fmrivid import models

    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / filename).is_file():
            raise InputError(path, f"{what} saved with save_pretrained ({filename})",
                             f"files {sorted(p.name for p in path.iterdir())[:10]}")
        return str(path.resolve()), {"local_files_only": True}, path / filename
    match = _HUB_ID.match(spec)
    if match and not spec.startswith("."):
        repo, revision = match["repo"], match["revision"]
        cached = _cached_file(repo, revision, filename)
        kwargs = {"local_files_only": True, "cache_dir": str(models.hub_cache_dir()), "revision": revision}
        return repo, kwargs, Path(cached)
    if spec.startswith(("/", ".", "~")) or "/" in spec:
        raise InputError(spec, f"{what} saved with save_pretrained", "no such directory")
    raise ConfigError(f"{_KEY}.model: expected 'tiny', an existing directory or a hub id 'org/name[@revision]'; "
                      f"found {spec!r}")


def _from_pretrained(cls, source, kwargs):
    try:
        return cls.from_pretrained(source, **kwargs)
    except OSError as exc:
        if "cache_dir" not in kwargs:
            raise
        detail = f" Its config is cached but loading failed: {str(exc).splitlines()[0]}."
        raise _not_cached(source, kwargs.get("revision"), detail) from exc


def load(spec="tiny", seed=0, device="cpu", dtype=None, motion_adapter=None, tiny_config=None):
    """Load the AnimateDiff generator offline.

    Parameters
    ----------
    spec : str or Path
        ``"tiny"``; a ``save_pretrained`` directory of an ``AnimateDiffPipeline`` or of a Stable Diffusion 1.x
        pipeline; or a hub id ``org/name[@revision]`` of either, from the local cache only.
    seed : int
        Seed of the tiny model's random weights.
    device : str or torch.device
    dtype : torch.dtype or str, optional
        Cast the pipeline's modules (default: as stored, float32 for tiny).
    motion_adapter : str or Path, optional
        ``MotionAdapter`` directory or hub id combined with a plain Stable Diffusion ``spec`` (default:
        ``DEFAULTS["motion_adapter"]``); ignored for ``tiny`` and saved AnimateDiff pipelines.
    tiny_config : dict, optional
        Overrides of :data:`TINY` and of the tiny ``text_to_image`` settings (e.g. :data:`SD15_REAL_SIZE_CONFIG`).

    Returns
    -------
    diffusers.AnimateDiffPipeline
        In eval mode, progress bar off, its UNet a ``UNetMotionModel``.

    Raises
    ------
    ModelNotAvailableError
        A hub model or motion adapter is not in the local cache (the message gives the ``hf download`` command).
    InputError
        ``spec`` is a path that holds no saved pipeline.
    ConfigError
        Unknown spec form, a pipeline that is neither AnimateDiff nor Stable Diffusion, bad ``tiny_config``.
    """
    from diffusers import AnimateDiffPipeline, MotionAdapter

    spec = str(spec).strip()
    if spec == "tiny":
        pipe = _tiny_pipeline(seed, tiny_config)
    else:
        source, kwargs, index = _source(spec, "model_index.json", "a diffusers pipeline")
        cls_name = json.loads(Path(index).read_text()).get("_class_name", "")
        if cls_name.startswith("AnimateDiff"):
            pipe = _from_pretrained(AnimateDiffPipeline, source, kwargs)
        elif cls_name.startswith("StableDiffusion") and "XL" not in cls_name:
            adapter_spec = str(motion_adapter or DEFAULTS["motion_adapter"]).strip()
            a_source, a_kwargs, _ = _source(adapter_spec, "config.json", "a diffusers MotionAdapter")
            adapter = _from_pretrained(MotionAdapter, a_source, a_kwargs)
            with _quiet(_EMPTY_FP32_NOTICE):
                pipe = _from_pretrained(AnimateDiffPipeline, source, {**kwargs, "motion_adapter": adapter})
        else:
            raise ConfigError(f"{_KEY}.model: expected an AnimateDiff or Stable Diffusion 1.x pipeline; "
                              f"found {spec!r} with class {cls_name or 'unknown'}")
    import torch

    from fmrivid.models import _as_dtype

    with _quiet(_EMPTY_FP32_NOTICE):
        pipe.to(torch.device(device))
        if dtype is not None:
            pipe.to(dtype=_as_dtype(dtype))
    for part in pipe.components.values():
        if hasattr(part, "eval"):
            part.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipe(pipe):
    """The AnimateDiff pipeline of a LoadedModel (or the pipeline itself), checked."""
    from diffusers.models import UNetMotionModel

    pipe = getattr(pipe, "model", pipe)
    unet = getattr(pipe, "unet", None)
    if not isinstance(unet, UNetMotionModel) or getattr(pipe, "vae", None) is None \
            or getattr(pipe, "scheduler", None) is None:
        raise ConfigError(f"{_KEY}.model: expected an AnimateDiff pipeline (UNetMotionModel, vae, scheduler); "
                          f"found {type(pipe).__name__}"
                          + (f" with a {type(unet).__name__}" if unet is not None else ""))
    return pipe


def sync_motion_adapter(pipe):
    """Copy the UNetMotionModel's motion modules into the pipeline's ``motion_adapter`` (after fine-tuning).

    ``AnimateDiffPipeline`` keeps the ``MotionAdapter`` it was composed from as a separate component, and
    ``save_pretrained`` writes it next to the UNet. Loading a saved AnimateDiff pipeline takes the motion modules
    from its ``unet`` folder; this keeps the ``motion_adapter`` folder equal to them too, so the tuned motion
    modules are what anyone combining that adapter with a Stable Diffusion model gets.

    Parameters
    ----------
    pipe : diffusers AnimateDiffPipeline (or an object whose ``model`` is one)

    Returns
    -------
    int
        Tensors copied (0 when the pipeline holds no ``motion_adapter``).
    """
    import torch

    pipe = _pipe(pipe)
    adapter = getattr(pipe, "motion_adapter", None)
    if adapter is None:
        return 0
    tuned = {k: v for k, v in pipe.unet.state_dict().items() if ".motion_modules." in f".{k}"}
    target = adapter.state_dict()
    missing = sorted(k for k in target if ".motion_modules." in f".{k}" and k not in tuned)
    if missing:
        raise ConfigError(f"{_KEY}.motion_adapter: expected motion modules laid out as the UNet's; found adapter "
                          f"tensors {missing[:3]} without a UNet counterpart")
    with torch.no_grad():
        adapter.load_state_dict({**target, **{k: tuned[k] for k in target if k in tuned}})
    return sum(k in tuned for k in target)


def prepare(pipe, device, dtype):
    """Put the UNet, VAE and text encoder on ``device`` in ``dtype`` (idempotent); returns the pipeline."""
    import torch

    pipe = _pipe(pipe)
    device = torch.device(device)
    for name in ("unet", "vae", "text_encoder"):
        part = getattr(pipe, name, None)
        if part is None:
            continue
        first = next(part.parameters())
        same = first.device.type == device.type and (device.index is None or first.device.index == device.index)
        if first.dtype != dtype or not same:
            with _quiet(_EMPTY_FP32_NOTICE):
                part.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def scheduler(pipe, cfg=None):
    """The configured scheduler, built from the pipeline's scheduler config.

    Same training betas and timestep spacing as the pipeline's scheduler, ``beta_schedule`` as configured,
    ``clip_sample`` off (latents are not clipped) and, for DDIM, ``set_alpha_to_one`` off (Stable Diffusion's
    final alpha), whatever class the pipeline stores (SD1.5 ships a PNDM config).

    Parameters
    ----------
    pipe : diffusers AnimateDiffPipeline
    cfg : dict, optional
        ``generate.pipeline`` settings (``scheduler``, ``beta_schedule``).

    Returns
    -------
    diffusers.DDIMScheduler or diffusers.DDPMScheduler
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    scfg = settings(cfg)
    cls = DDIMScheduler if scfg["scheduler"] == "ddim" else DDPMScheduler
    extra = {"clip_sample": False}
    if cls is DDIMScheduler:  # SD's final alpha (a DDPM/PNDM config lacks the key; DDIM's default is True)
        extra["set_alpha_to_one"] = False
    if scfg["beta_schedule"] != "pipeline":
        extra["beta_schedule"] = scfg["beta_schedule"]
    return cls.from_config(_pipe(pipe).scheduler.config, **extra)


# --------------------------------------------------------------------------- inputs


def _array(cond, key):
    arr = np.asarray(cond[key], dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"cond[{key!r}]", "finite values", "NaN or inf")
    return arr


def _check_cond(cond, n, scfg, pipe):
    """Validate ``cond`` against the settings and the pipeline; returns float32 arrays."""
    if "text_tokens" not in cond:
        raise InputError("cond", "key 'text_tokens' (decoded token embeddings)", f"keys {sorted(cond)}")
    out = {"text_tokens": _array(cond, "text_tokens")}
    tokens = out["text_tokens"]
    dim = int(pipe.unet.config.cross_attention_dim)
    if tokens.ndim != 3 or tokens.shape[0] != n or tokens.shape[2] != dim:
        raise InputError("cond['text_tokens']", f"({n}, L, {dim}) token embeddings (one row per clip id, width = "
                         f"the UNet's cross_attention_dim)", f"shape {tokens.shape}")
    if float(scfg["guidance_scale"]) > 1.0 and scfg["negative"] == "mean_train":
        if "negative" not in cond:
            raise InputError("cond", "key 'negative' (tokens decoded from the mean training fMRI) for guidance "
                             "with negative: mean_train", f"keys {sorted(cond)}")
        neg = _array(cond, "negative")
        neg = neg[0] if neg.ndim == 3 and neg.shape[0] == 1 else neg
        if neg.shape != tokens.shape[1:]:
            raise InputError("cond['negative']", f"one token embedding {tokens.shape[1:]} (decoded from the mean "
                             f"training fMRI)", f"shape {np.shape(cond['negative'])}")
        out["negative"] = neg
    c = int(pipe.unet.config.in_channels)
    if cond.get("init_latents") is not None:
        init = _array(cond, "init_latents")
        if init.ndim != 5 or init.shape[0] != n or init.shape[2] != c:
            raise InputError("cond['init_latents']", f"({n}, T, {c}, h, w) scaled VAE latents of the init video",
                             f"shape {init.shape}")
        out["init_latents"] = init
    if cond.get("first_frame") is not None:
        first = _array(cond, "first_frame")
        if first.ndim != 4 or first.shape[0] != n or first.shape[1] != c:
            raise InputError("cond['first_frame']", f"({n}, {c}, h, w) scaled VAE latents of the keyframe",
                             f"shape {first.shape}")
        if "init_latents" in out and first.shape[-2:] != out["init_latents"].shape[-2:]:
            raise InputError("cond['first_frame']", f"latents of size {out['init_latents'].shape[-2:]} like "
                             f"init_latents", f"{first.shape[-2:]}")
        out["first_frame"] = first
    return out


def initial_video(cond, num_frames):
    """The init latent video (N, C, T, h, w) from ``init_latents`` and ``first_frame``, or None (pure noise).

    ``first_frame`` replaces frame 0 of ``init_latents``; alone, it is repeated over ``num_frames``.

    Parameters
    ----------
    cond : dict of str -> ndarray
        ``init_latents`` (N, T, C, h, w) and/or ``first_frame`` (N, C, h, w), scaled VAE latents.
    num_frames : int
        Frames of a video made from ``first_frame`` alone.

    Returns
    -------
    float32 ndarray (N, C, T, h, w) or None
    """
    init, first = cond.get("init_latents"), cond.get("first_frame")
    if init is None and first is None:
        return None
    if init is None:
        video = np.repeat(np.asarray(first, dtype=np.float32)[:, None], int(num_frames), axis=1)
    else:
        video = np.array(init, dtype=np.float32)
        if first is not None:
            video[:, 0] = first
    return np.ascontiguousarray(video.transpose(0, 2, 1, 3, 4))


# --------------------------------------------------------------------------- sampling


def _timesteps(sched, steps, strength, device):
    """Timesteps to run: all, or the last ``strength`` of them (img2img, as diffusers' get_timesteps)."""
    from fmrivid.generate.pipelines import _timesteps as timesteps

    return timesteps(sched, steps, strength, device)[0]


def sample_latents(pipe, sched_proto, noise, init, tokens, negative, gens, cfg, device, dtype):
    """Denoise one lane of clips (one UNet batch) with the pipeline's UNetMotionModel: the sampling loop of
    :mod:`fmrivid.generate.pipelines` (``_sample_lane``) with one text row per frame, as the motion UNet folds
    frames into the batch (clip b, frame f -> row b*T + f).

    Parameters
    ----------
    pipe : diffusers AnimateDiffPipeline
    sched_proto : diffusers scheduler
        Copied, never stepped itself (:func:`scheduler`).
    noise : torch.Tensor (B, C, T, h, w)
        Float32 CPU noise, each clip's drawn from its own generator.
    init : torch.Tensor (B, C, T, h, w) or None
        Scaled init latents (noised to ``strength``), or None for pure noise.
    tokens : torch.Tensor (B, L, D)
        Decoded text tokens (``prompt_embeds``).
    negative : torch.Tensor (B, L, D) or None
        ``negative_prompt_embeds``; None: no guidance.
    gens : list of torch.Generator
        One per clip, for the scheduler's variance noise.
    cfg : dict
        Validated settings.
    device : torch.device
    dtype : torch.dtype
        Of the UNet call.

    Returns
    -------
    torch.Tensor (B, C, T, h, w)
        Float32 latents on ``device``.
    """
    from fmrivid.generate.pipelines import _sample_lane

    return _sample_lane(pipe, sched_proto, noise, init, tokens, negative, gens, cfg, device, dtype,
                        frames_per_row=noise.shape[2])


def generate(pipe, cond, clip_ids, cfg, seed, device="cpu", log=print):
    """Generate one video per clip id from decoded fMRI features with AnimateDiff.

    Parameters
    ----------
    pipe : diffusers AnimateDiffPipeline (or an object whose ``model`` is one)
        From :func:`load`.
    cond : dict of str -> ndarray
        ``text_tokens`` (N, L, D) decoded token embeddings (D = the UNet's ``cross_attention_dim``);
        ``negative`` (L, D) decoded from the mean training fMRI (needed when ``guidance_scale`` > 1 with
        ``negative: mean_train``); optional ``init_latents`` (N, T, C, h, w) scaled VAE latents of the init video;
        optional ``first_frame`` (N, C, h, w) keyframe latents (frame 0 of the init video).
    clip_ids : sequence of N str
        Clip ``i`` draws all its noise from ``clip_seed(seed, clip_ids[i])``.
    cfg : dict
        The ``generate.pipeline`` section (:data:`DEFAULTS`; ``model`` / ``motion_adapter`` are :func:`load`'s).
    seed : int
        Master seed (config ``seed``).
    device : str or torch.device
    log : callable
        Receives one progress line per batch.

    Returns
    -------
    uint8 ndarray (N, T, H, W, 3)

    Raises
    ------
    InputError
        Missing or mis-shaped conditions, empty or duplicate clip ids, more frames than the motion modules take.
    ConfigError
        Bad settings (including a strength that leaves no step) or a pipeline that is not AnimateDiff.
    """
    import torch

    scfg = settings(cfg)
    pipe = _pipe(pipe)
    clip_ids = check_clip_ids(clip_ids)
    n = len(clip_ids)
    cond = _check_cond(cond, n, scfg, pipe)
    init_all = initial_video(cond, scfg["num_frames"])
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    if init_all is None:
        if scfg["height"] % factor or scfg["width"] % factor:
            raise ConfigError(f"{_KEY}.height/width: expected multiples of the VAE factor {factor}; "
                              f"found {scfg['height']}x{scfg['width']}")
        shape = (int(pipe.unet.config.in_channels), int(scfg["num_frames"]),
                 scfg["height"] // factor, scfg["width"] // factor)
    else:
        shape = init_all.shape[1:]
        _timesteps(scheduler(pipe, scfg), scfg["steps"], scfg["strength"], "cpu")  # refuse a strength of no step
    longest = getattr(pipe.unet.config, "motion_max_seq_length", None)
    if longest is not None and shape[1] > int(longest):
        raise InputError("frames per clip", f"at most {longest} (the motion modules' motion_max_seq_length)",
                         f"{shape[1]}")
    device = torch.device(device)
    dtype = _torch_dtype(scfg["dtype"], device)
    prepare(pipe, device, dtype)
    negative = guidance_negative(pipe, cond, scfg, device)
    proto = scheduler(pipe, scfg)
    tokens_all = torch.from_numpy(np.ascontiguousarray(cond["text_tokens"]))
    steps = int(scfg["steps"])
    steps_run = steps if init_all is None else min(int(steps * scfg["strength"]), steps)

    def log_line(batch, n_batches, stop, dt):
        start = (batch - 1) * int(scfg["batch_size"])
        log(f"generate[animatediff]: batch {batch}/{n_batches}, clips {start + 1}-{stop} of {n}, {dt:.1f} s "
            f"({dt / stop:.2f} s/clip, {shape[1]} frames, {scfg['scheduler']} {steps_run}/{steps} steps"
            + ("" if init_all is None else f" from strength {scfg['strength']:g}")
            + f", {str(dtype).replace('torch.', '')} on {device})")

    return sample_batches(pipe, proto, clip_ids, seed, shape, init_all, tokens_all, negative, scfg, device, dtype,
                          log_line, sample_fn=sample_latents)
