"""fMRI-conditioned video generation with a real diffusers text-to-video pipeline.

The generator is a ``diffusers.TextToVideoSDPipeline`` (ModelScope text-to-video
or Zeroscope: ``UNet3DConditionModel`` + ``AutoencoderKL`` + ``CLIPTextModel``
+ scheduler) loaded with ``fmrivid.models.load(spec, "text_to_video")``:
``"tiny"`` (random tiny components of the real classes), a ``save_pretrained``
directory (e.g. the output of :func:`fmrivid.generate.finetune.finetune`), or a
hub id from the local cache only. Its components run our own sampling loop (the
pipeline's ``__call__`` takes one generator per batch, reshapes latents before
DDPM steps and decodes every frame at once); with DDIM and no initial latents
the loop reproduces ``pipe(prompt_embeds=..., negative_prompt_embeds=...)``
(a unit test checks it).

Conditioning methods (``cfg["method"]``), all conditioned by decoded token
embeddings in place of the pipeline's text embeddings (``prompt_embeds``):

``text_to_video`` (GLFA, MinD-Video, the LEA baseline)
    Start from Gaussian noise; the condition is ``cond["text_tokens"]``
    (N, L, D); the unconditional branch of classifier-free guidance is the
    embedding decoded from the MEAN TRAINING fMRI (``cond["negative"]``, (L, D)).
``structure_motion`` (Mind-Animator)
    The decoded first-frame latent ``cond["first_frame"]`` (N, C, h, w) and
    decoded motion latents ``cond["motion"]`` (N, T, C, h, w) (frame latents,
    or offsets from the first frame with ``motion_mode: residual``) form an
    initial latent video that is noised to ``strength`` and denoised from
    that timestep on (img2img), so layout and motion come from the brain.
``two_stage`` (Brain-Diffuser)
    Decoded VAE latents ``cond["vae"]`` ((N, C, h, w), repeated over the
    frames, or (N, T, C, h, w)) are the initial image/video, refined from
    ``strength`` with the diffusion model conditioned on the decoded text
    features; ``scheduler: ddpm`` (stochastic) or ``ddim``.
``image_img2img`` (Brain-Diffuser with Stable Diffusion, seed 003)
    Frame by frame with a text-to-image ``StableDiffusionImg2ImgPipeline``
    (kind ``text_to_image``): :mod:`fmrivid.generate.image`, dispatched from
    :func:`load_pipeline` and :func:`generate`; inputs and settings as here.

Latents are the VAE's *scaled* latents (``latent_dist.mean * scaling_factor``,
what ``fmrivid.features.embed.vae_latents`` writes): features must be computed
with the generator's own VAE (``<spec>#vae``).

Reproducibility and speed. The noise of a clip (initial noise, img2img noise,
DDPM/DDIM variance noise) comes from one CPU ``torch.Generator`` seeded with
``fmrivid.utils.clip_seed(seed, clip_id)``. On CPU each clip runs alone
(``exact_cpu``: CPU kernels round differently for different batch sizes), so a
clip is bit-identical whatever the batch; on CUDA ``batch_size`` clips share
each UNet call, in ``dtype`` (float16 by default: half weights), with PyTorch's
scaled-dot-product attention, and the VAE decodes ``decode_slice`` frames per
call. Everything runs under ``torch.inference_mode()`` and logs one line per batch.

Nothing here reads a stimulus: :func:`generation_inputs` assembles the inputs
from decoder outputs and the mean-training-fMRI negative only.

One module (~660 lines) on purpose: the sampling loop, its conditioning inputs and the equivalence with the
pipeline's own ``__call__`` are one piece of logic that a reader checks against diffusers side by side.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from fmrivid.errors import ConfigError, InputError
from fmrivid.utils import clip_seed

__all__ = [
    "DEFAULTS",
    "METHOD_INPUTS",
    "METHODS",
    "generate",
    "generation_inputs",
    "generator_kind",
    "load_pipeline",
    "mean_train_negative",
    "prepare_pipeline",
    "scheduler_name",
    "settings",
]

#: Config section ``generate`` keys of the diffusers generator (the lead copies them into the schema).
DEFAULTS = {
    "model": "tiny",            # generator spec: 'tiny', a save_pretrained pipeline dir, or a hub id (local cache only), e.g. 'ali-vilab/text-to-video-ms-1.7b' (image_img2img: a Stable Diffusion model)
    "method": "text_to_video",  # conditioning: 'text_to_video' | 'structure_motion' | 'two_stage' | 'image_img2img'
    "num_frames": 6,            # frames per clip (text_to_video; img2img methods take T from their init latents)
    "height": 256,              # frame height in pixels (text_to_video; multiple of the VAE factor, 8 for real models)
    "width": 256,               # frame width in pixels (text_to_video)
    "steps": 50,                # sampler steps (img2img methods run the last strength*steps of them)
    "guidance_scale": 9.0,      # classifier-free guidance weight (1.0 = off; ModelScope's default is 9)
    "negative": "mean_train",   # unconditional branch: 'mean_train' (embedding decoded from the mean training fMRI) or 'empty_prompt'
    "scheduler": "auto",        # 'ddim', 'ddpm' (built from the pipeline's scheduler config: same betas) or 'auto' (the method's: ddpm for image_img2img, else ddim)
    "eta": 0.0,                 # DDIM eta (0 = deterministic given the initial noise)
    "strength": 0.75,           # img2img methods: fraction of the schedule re-noised (1 = almost pure noise)
    "motion_mode": "absolute",  # structure_motion: motion latents are frame latents ('absolute') or offsets from the first frame ('residual')
    "batch_size": 8,            # clips per batch (per UNet call on CUDA)
    "dtype": "auto",            # 'auto' (float16 on CUDA, float32 on CPU), 'float16', 'bfloat16' or 'float32'
    "attention": "sdpa",        # attention processor: 'sdpa' (torch scaled_dot_product_attention) or 'classic' (explicit softmax)
    "decode_slice": 8,          # frames per VAE decode call (VAE slicing); 0 = all frames of a batch in one call
    "vae_upcast": "auto",       # decode in float32: 'auto' (when the VAE config says force_upcast), true or false
    "exact_cpu": True,          # on CPU, clip by clip so a clip is bit-identical whatever the batch size
    "motion_adapter": "guoyww/animatediff-motion-adapter-v1-5-2",  # animatediff / neuroclips: the MotionAdapter combined with a Stable Diffusion 1.x model (hub id or folder; unused for 'tiny' and saved AnimateDiff pipelines)
    "beta_schedule": "linear",  # animatediff / neuroclips: sampler betas ('linear': AnimateDiff's, its motion modules were trained with it; 'scaled_linear' / 'pipeline': Stable Diffusion's)
    "fps": 7,                   # image_to_video: Stable Video Diffusion's frame-rate micro-condition (the UNet sees fps - 1; SVD's default 7)
    "motion_bucket_id": 127,    # image_to_video: SVD's motion micro-condition (higher = more motion; SVD's default 127)
    "noise_aug_strength": 0.02,  # image_to_video: noise added to the decoded keyframe before SVD encodes it (more = looser, more motion)
    "min_guidance_scale": 1.0,  # image_to_video: image guidance weight of the first frame (rising linearly over the frames)
    "max_guidance_scale": 3.0,  # image_to_video: image guidance weight of the last frame (<= 1: no guidance)
    "flow_shift": None,         # wan: sigma shift of the flow schedule; null = as saved (3.0 in Wan2.1-T2V-1.3B; 5.0 for 720P)
    "max_sequence_length": 512,  # wan: tokens the transformer attends to; decoded tokens (features.tokens.max_length) are zero-padded to it
    "vae_dtype": "float32",     # wan: VAE decoding dtype, 'float32' (as the diffusers Wan example) or 'same' (= dtype)
    "vae_slicing": True,        # wan: decode the clips of a batch one at a time
    "vae_tiling": False,        # wan: decode each frame in spatial tiles (memory for large frames)
}

METHODS = ("text_to_video", "structure_motion", "two_stage", "image_img2img", "animatediff", "neuroclips",
           "image_to_video", "wan")

#: Decoded features each method needs (keys of ``cond`` besides ``negative``).
METHOD_INPUTS = {
    "text_to_video": ("text_tokens",),
    "structure_motion": ("text_tokens", "first_frame", "motion"),
    "two_stage": ("text_tokens", "vae"),
    "image_img2img": ("text_tokens", "vae"),  # fmrivid.generate.image
    "animatediff": ("text_tokens",),  # fmrivid.generate.animatediff, from noise
    "neuroclips": ("text_tokens", "first_frame", "motion"),  # AnimateDiff from the decoded keyframe + blurry video
    "image_to_video": ("first_frame",),  # fmrivid.generate.svd, from the keyframe decoded by features.vae_model
    "wan": ("text_tokens",),  # fmrivid.generate.wan, from noise, tokens of its own UMT5 text encoder
}

_CHOICES = {
    "method": METHODS,
    "negative": ("mean_train", "empty_prompt"),
    "scheduler": ("auto", "ddim", "ddpm", "unipc", "flow_euler"),  # unipc / flow_euler: wan only
    "motion_mode": ("absolute", "residual"),
    "dtype": ("auto", "float16", "bfloat16", "float32"),
    "attention": ("sdpa", "classic"),
    "beta_schedule": ("linear", "scaled_linear", "pipeline"),
    "vae_dtype": ("float32", "same"),
}


# --------------------------------------------------------------------------- config


def check_int(key, value, minimum=1, what=None, section="generate.pipeline"):
    """``value`` as an int >= ``minimum``, else ConfigError ``<section>.<key>: expected <what>; found <value>``.

    The generator backends' ``settings`` share these checks (:func:`check_number`, :func:`check_bool`), so every
    count, number and switch of ``generate.pipeline`` is refused with the same words.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        what = what or {1: "a positive integer", 0: "0 or a positive integer"}.get(minimum,
                                                                                  f"an integer >= {minimum}")
        raise ConfigError(f"{section}.{key}: expected {what}; found {value!r}")
    return int(value)


def check_number(key, value, low=0.0, high=float("inf"), what=None, open_low=False, section="generate.pipeline"):
    """``value`` as a finite float in [low, high] ((low, high] with ``open_low``), else ConfigError naming the key."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and bool(np.isfinite(value))
    ok = ok and (low < value if open_low else low <= value) and value <= high
    if not ok:
        bounds = f"> {low:g}" if open_low else f">= {low:g}"
        raise ConfigError(f"{section}.{key}: expected {what or 'a number ' + bounds}; found {value!r}")
    return float(value)


def check_bool(key, value, section="generate.pipeline"):
    """``value`` when it is true or false, else ConfigError naming the key."""
    if not isinstance(value, bool):
        raise ConfigError(f"{section}.{key}: expected true or false; found {value!r}")
    return value


def merge_settings(defaults, choices, cfg, overrides, key="generate.pipeline"):
    """``cfg`` then ``overrides`` merged over ``defaults``: unknown keys and values outside ``choices`` (key ->
    allowed values) raise ``ConfigError`` naming ``<key>.<name>``. Shared by every generator backend's
    ``settings`` (this module's, :mod:`fmrivid.generate.animatediff`, :mod:`fmrivid.generate.wan`)."""
    cfg = dict(cfg or {})
    cfg.update(overrides)
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ConfigError(f"{key}: expected keys among {sorted(defaults)}; found unknown key(s) {unknown}")
    out = dict(defaults)
    out.update(cfg)
    for name, allowed in choices.items():
        if out[name] not in allowed:
            raise ConfigError(f"{key}.{name}: expected one of {list(allowed)}; found {out[name]!r}")
    return out


def settings(cfg=None, **overrides):
    """``cfg`` merged over :data:`DEFAULTS`, validated.

    Parameters
    ----------
    cfg : dict, optional
        Keys of :data:`DEFAULTS` (the ``generate`` section); unknown keys raise.
    **overrides
        Applied after ``cfg``.

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        Unknown key, value outside its choices, or a non-positive count.
    """
    out = merge_settings(DEFAULTS, _CHOICES, cfg, overrides)
    for key in ("num_frames", "height", "width", "steps", "batch_size"):
        check_int(key, out[key])
    check_int("decode_slice", out["decode_slice"], 0)
    check_number("strength", out["strength"], 0.0, 1.0, "a number in (0, 1]", open_low=True)
    check_number("guidance_scale", out["guidance_scale"])
    if out["vae_upcast"] not in ("auto", True, False):
        raise ConfigError(f"generate.pipeline.vae_upcast: expected 'auto', true or false; found {out['vae_upcast']!r}")
    if out["scheduler"] in ("unipc", "flow_euler") and generator_kind(out["method"]) != "wan":
        raise ConfigError(f"generate.pipeline.scheduler: expected 'auto', 'ddim' or 'ddpm' for generate.method "
                          f"{out['method']!r} (unipc / flow_euler are the wan generator's flow samplers); found "
                          f"{out['scheduler']!r}")
    return out


def scheduler_name(scfg):
    """``scfg['scheduler']`` with ``auto`` resolved to the method's (:mod:`fmrivid.generate.methods`)."""
    if scfg["scheduler"] != "auto":
        return scfg["scheduler"]
    from fmrivid.generate.methods import METHODS as DECLARED

    return DECLARED[scfg["method"]].scheduler


def generator_kind(method):
    """The :data:`fmrivid.models.KINDS` kind ``generate.pipeline.model`` is loaded as for ``method``."""
    from fmrivid.generate.methods import METHODS as DECLARED

    return DECLARED[method].generator


# --------------------------------------------------------------------------- pipeline


def _torch_dtype(name, device):
    import torch

    if name == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def _pipe(pipe_or_loaded):
    """The diffusers pipeline of a LoadedModel (or the pipeline itself), checked."""
    pipe = getattr(pipe_or_loaded, "model", pipe_or_loaded)
    for part in ("unet", "vae", "scheduler"):
        if getattr(pipe, part, None) is None:
            raise ConfigError(f"generate: expected a diffusers pipeline with a {part}; "
                              f"found {type(pipe).__name__}")
    return pipe


def load_pipeline(spec, cfg=None, seed=0, device="cpu", tiny_config=None):
    """Load the generator through :func:`fmrivid.models.load` in the configured dtype.

    Parameters
    ----------
    spec : str
        ``"tiny"``, a ``save_pretrained`` pipeline directory, or a hub id
        (local cache only; otherwise :class:`fmrivid.errors.ModelNotAvailableError`
        with the ``hf download`` command).
    cfg : dict, optional
        ``generate`` section (``dtype``, ``attention`` are used; ``method`` chooses the kind:
        ``text_to_image`` for image_img2img, else ``text_to_video``).
    seed : int
        Seed of a tiny pipeline's random weights.
    device : str
    tiny_config : dict, optional
        Overrides of the tiny architecture (e.g.
        :data:`fmrivid.extractor_kinds.MODELSCOPE_TINY_CONFIG`).

    Returns
    -------
    fmrivid.models.LoadedModel
        ``model`` is the pipeline, ready (see :func:`prepare_pipeline`).
    """
    from fmrivid import models

    scfg = settings(cfg)
    if generator_kind(scfg["method"]) == "animatediff":  # its own loader: a Stable Diffusion model + MotionAdapter
        from fmrivid.generate import animatediff

        return animatediff.load(spec, seed=seed, device=device, motion_adapter=scfg["motion_adapter"],
                                tiny_config=tiny_config)
    if generator_kind(scfg["method"]) == "image_to_video":  # a StableVideoDiffusionPipeline
        from fmrivid.generate import svd

        return svd.load(spec, seed=seed, device=device, tiny_config=tiny_config)
    if generator_kind(scfg["method"]) == "wan":  # a WanPipeline, without its text encoder unless guidance needs ""
        from fmrivid.generate import wan

        wcfg = wan_settings(scfg)
        empty = wcfg["negative"] == "empty_prompt" and wcfg["guidance_scale"] > 1.0
        return wan.load(spec, seed=seed, device=device, dtype=wcfg["dtype"], tiny_config=tiny_config,
                        text_encoder=empty)
    loaded = models.load(spec, generator_kind(scfg["method"]), seed=seed, device=device, tiny_config=tiny_config)
    prepare_pipeline(loaded.model, device, scfg)
    return loaded


def prepare_pipeline(pipe, device, cfg=None):
    """Put the pipeline on ``device`` in the configured dtype with the configured attention.

    ``attention: sdpa`` installs diffusers' ``AttnProcessor2_0`` (PyTorch
    ``scaled_dot_product_attention``: flash / memory-efficient kernels on
    CUDA); ``classic`` the explicit-softmax ``AttnProcessor`` (the naive
    baseline of ``benchmarks/generate.py``). Idempotent.

    Parameters
    ----------
    pipe : diffusers pipeline or LoadedModel
    device : str or torch.device
    cfg : dict, optional
        ``generate`` section.

    Returns
    -------
    pipeline
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    scfg = settings(cfg)
    pipe = _pipe(pipe)
    import torch

    dtype = _torch_dtype(scfg["dtype"], device)
    device = torch.device(device)
    for name in ("unet", "vae", "text_encoder"):
        part = getattr(pipe, name, None)
        if part is None:
            continue
        first = next(part.parameters())
        same_device = first.device.type == device.type and (device.index is None
                                                             or first.device.index == device.index)
        if first.dtype != dtype or not same_device:
            part.to(device=device, dtype=dtype)
    processor = AttnProcessor2_0 if scfg["attention"] == "sdpa" else AttnProcessor
    for model in (pipe.unet, pipe.vae):
        if hasattr(model, "set_attn_processor"):
            model.set_attn_processor(processor())
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def _scheduler(pipe, name):
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = DDIMScheduler if name == "ddim" else DDPMScheduler
    return cls.from_config(pipe.scheduler.config)


# --------------------------------------------------------------------------- inputs


def mean_train_negative(predict, X_train):
    """The negative condition of guidance: the decoder applied to the mean training fMRI.

    Parameters
    ----------
    predict : callable
        The fitted decoder's ``predict`` (rows of fMRI -> rows of features).
    X_train : ndarray (n_train, n_voxels)
        Training fMRI only.

    Returns
    -------
    ndarray
        The decoded feature row of the mean training sample (first axis dropped).
    """
    X_train = np.asarray(X_train, dtype=np.float32)
    if X_train.ndim != 2 or len(X_train) < 1:
        raise InputError("X_train", "training fMRI (n_train, n_voxels)", f"shape {X_train.shape}")
    return np.asarray(predict(X_train.mean(0, keepdims=True)), dtype=np.float32)[0]


def _shaped(name, array, n, shape, what):
    """Rows of ``array`` (n, prod(shape)) or (n, *shape) -> float32 (n, *shape)."""
    array = np.asarray(array, dtype=np.float32)
    size = int(np.prod(shape))
    if array.ndim < 1 or array.shape[0] != n or int(np.prod(array.shape[1:])) != size:
        raise InputError(f"decoded[{name!r}]", f"{n} rows of {what} {tuple(shape)} ({size} values each)",
                         f"shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"decoded[{name!r}]", "finite values", "NaN or inf")
    return np.ascontiguousarray(array.reshape((n,) + tuple(shape)))


def _latent_input(key, array, n, latent_shape, num_frames):
    """Decoded latents of one kind -> (N, C, h, w) (``first_frame``, single ``vae``) or (N, T, C, h, w)."""
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 2:  # flat decoder rows
        if latent_shape is None:
            raise InputError(f"decoded[{key!r}]", "(N, [T,] C, h, w) latents or latent_shape=(C, h, w) "
                             "for flat rows", f"shape {arr.shape}")
        lat = tuple(int(v) for v in latent_shape)
        frames, rest = divmod(arr.shape[1], int(np.prod(lat)))
        if rest or frames < 1:
            raise InputError(f"decoded[{key!r}]", f"rows of k x {int(np.prod(lat))} values (latents {lat})",
                             f"shape {arr.shape}")
        if key == "first_frame" or (key == "vae" and frames == 1):
            return _shaped(key, arr, n, lat, "latents")
        if num_frames is not None and frames != int(num_frames):
            raise InputError(f"decoded[{key!r}]", f"{num_frames} frame latents per clip", f"{frames}")
        return _shaped(key, arr, n, (frames,) + lat, "frame latents")
    want = (4,) if key == "first_frame" else ((5,) if key == "motion" else (4, 5))
    if arr.ndim not in want or (latent_shape is not None and arr.shape[-3:] != tuple(latent_shape)):
        form = {4: "(N, C, h, w)", 5: "(N, T, C, h, w)"}
        raise InputError(f"decoded[{key!r}]", " or ".join(form[d] for d in want) + " latents"
                         + (f" with (C, h, w) = {tuple(latent_shape)}" if latent_shape is not None else ""),
                         f"shape {arr.shape}")
    return _shaped(key, arr, n, arr.shape[1:], "latents")


def generation_inputs(method, decoded, negative=None, token_shape=None, latent_shape=None,
                      num_frames=None):
    """Assemble the inputs of :func:`generate` from decoder outputs: the only data that enters generation.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    decoded : dict of str -> ndarray
        Decoded (predicted) features of the clips to generate, first axis the
        clips: ``text_tokens`` (N, L*D) or (N, L, D); ``first_frame``
        (N, C*h*w) or (N, C, h, w); ``motion`` (N, T*C*h*w) or (N, T, C, h, w);
        ``vae`` (N, C*h*w), (N, C, h, w) or the per-frame (N, T, ...) forms.
        Only the keys of ``METHOD_INPUTS[method]`` are used.
    negative : ndarray, optional
        The ``text_tokens`` decoded from the mean training fMRI
        (:func:`mean_train_negative`), (L*D,) or (L, D).
    token_shape : (L, D), optional
        Needed when ``text_tokens`` are flat rows.
    latent_shape : (C, h, w), optional
        Needed when latents are flat rows.
    num_frames : int, optional
        Frames of ``motion`` / per-frame ``vae`` rows when they are flat.

    Returns
    -------
    dict of str -> float32 ndarray
        ``text_tokens`` (N, L, D) (every method but ``image_to_video``), the
        method's latents, and ``negative`` (L, D) when given with tokens.

    Raises
    ------
    InputError
        A needed input is missing or has the wrong shape or non-finite values.
    """
    if method not in METHODS:
        raise ConfigError(f"generate.method: expected one of {list(METHODS)}; found {method!r}")
    missing = [k for k in METHOD_INPUTS[method] if k not in decoded]
    if missing:
        raise InputError("decoded features", f"{list(METHOD_INPUTS[method])} for method {method!r}",
                         f"keys {sorted(decoded)} (missing {missing})")
    out = {}
    if "text_tokens" not in METHOD_INPUTS[method]:  # image_to_video: the decoded first-frame latent only
        first = np.asarray(decoded[METHOD_INPUTS[method][0]])
        n = first.shape[0] if first.ndim else 0
    else:
        tokens = np.asarray(decoded["text_tokens"], dtype=np.float32)
        n = tokens.shape[0] if tokens.ndim else 0
        if tokens.ndim != 3 and token_shape is None:
            raise InputError("decoded['text_tokens']", "(N, L, D) token embeddings or token_shape=(L, D)",
                             f"shape {tokens.shape}")
        token_shape = tuple(token_shape) if token_shape is not None else tokens.shape[1:]
        out["text_tokens"] = _shaped("text_tokens", tokens, n, token_shape, "token embeddings")
    for key in METHOD_INPUTS[method]:
        if key != "text_tokens":
            out[key] = _latent_input(key, decoded[key], n, latent_shape, num_frames)
    if negative is not None and "text_tokens" in out:
        neg = np.asarray(negative, dtype=np.float32)
        if neg.ndim == len(token_shape) + 1 and neg.shape[0] == 1:
            neg = neg[0]
        out["negative"] = _shaped("negative", neg[None], 1, token_shape, "token embeddings")[0]
    return out


def _check_cond(method, cond, n, scfg, pipe):
    """Validate ``cond`` against the method and the pipeline; returns float32 arrays."""
    need = list(METHOD_INPUTS[method])
    guided = float(scfg["guidance_scale"]) > 1.0
    if guided and scfg["negative"] == "mean_train":
        need.append("negative")
    missing = [k for k in need if k not in cond]
    if missing:
        raise InputError("cond", f"keys {need} for method {method!r}", f"keys {sorted(cond)} (missing {missing})")
    out = {}
    for key in need:
        arr = np.asarray(cond[key], dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise InputError(f"cond[{key!r}]", "finite values", "NaN or inf")
        out[key] = arr
    tokens = out["text_tokens"]
    dim = int(pipe.unet.config.cross_attention_dim)
    if tokens.ndim != 3 or tokens.shape[0] != n or tokens.shape[2] != dim:
        raise InputError("cond['text_tokens']", f"({n}, L, {dim}) token embeddings (one row per clip id, "
                         f"width = the UNet's cross_attention_dim)", f"shape {tokens.shape}")
    if "negative" in out:
        neg = out["negative"]
        neg = neg[0] if neg.ndim == 3 and neg.shape[0] == 1 else neg
        if neg.shape != tokens.shape[1:]:
            raise InputError("cond['negative']", f"one token embedding {tokens.shape[1:]} "
                             f"(decoded from the mean training fMRI)", f"shape {out['negative'].shape}")
        out["negative"] = neg
    c = int(pipe.unet.config.in_channels)
    for key, ndim in (("first_frame", 4), ("motion", 5), ("vae", None)):
        if key not in out:
            continue
        arr = out[key]
        ok = arr.shape[0] == n and arr.ndim in ((4, 5) if ndim is None else (ndim,)) and arr.shape[-3] == c
        if not ok:
            form = "(N, C, h, w) or (N, T, C, h, w)" if ndim is None else \
                ("(N, C, h, w)" if ndim == 4 else "(N, T, C, h, w)")
            raise InputError(f"cond[{key!r}]", f"{form} scaled VAE latents with N={n}, C={c}",
                             f"shape {arr.shape}")
    if method == "structure_motion" and out["first_frame"].shape[-2:] != out["motion"].shape[-2:]:
        raise InputError("cond['motion']", f"latents of size {out['first_frame'].shape[-2:]} like first_frame",
                         f"{out['motion'].shape[-2:]}")
    return out


def _init_latents(method, cond, scfg):
    """The initial latent video (N, C, T, h, w) of the img2img methods (None for text_to_video)."""
    if method == "structure_motion":
        first, motion = cond["first_frame"], cond["motion"]
        if scfg["motion_mode"] == "residual":
            video = first[:, None] + motion
        else:
            video = motion.copy()
        video[:, 0] = first  # the structure decoder's first frame fixes the layout
        return np.ascontiguousarray(video.transpose(0, 2, 1, 3, 4))
    if method in ("two_stage", "image_img2img"):
        lat = cond["vae"]
        if lat.ndim == 4:
            lat = np.repeat(lat[:, None], int(scfg["num_frames"]), axis=1)
        return np.ascontiguousarray(lat.transpose(0, 2, 1, 3, 4))
    return None


# --------------------------------------------------------------------------- sampling


def _empty_prompt_embedding(pipe, device):
    import torch

    with torch.inference_mode():
        ids = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(device)
        return pipe.text_encoder(ids)[0][0].float().cpu().numpy()


def guidance_negative(pipe, cond, scfg, device):
    """The negative condition of classifier-free guidance as a CPU tensor (L, D), or None without guidance
    (``guidance_scale`` <= 1): ``cond["negative"]`` (decoded from the mean training fMRI) or, with ``negative:
    empty_prompt``, the text encoder's empty prompt; checked against the tokens' shape."""
    import torch

    if float(scfg["guidance_scale"]) <= 1.0:
        return None
    neg = cond["negative"] if scfg["negative"] == "mean_train" else _empty_prompt_embedding(pipe, device)
    if neg.shape != cond["text_tokens"].shape[1:]:
        raise InputError("negative", f"token embedding {cond['text_tokens'].shape[1:]}", f"{neg.shape}")
    return torch.from_numpy(np.ascontiguousarray(neg))


def _timesteps(sched, steps, strength, device):
    """Timesteps to run and the index they start at (img2img: the last strength*steps)."""
    sched.set_timesteps(int(steps), device=device)
    if strength is None:
        return sched.timesteps, 0
    init = min(int(int(steps) * float(strength)), int(steps))
    if init < 1:
        raise ConfigError(f"generate.pipeline.strength: expected strength*steps >= 1 (at least one step to run); "
                          f"found strength {strength} with {steps} steps (raise strength or steps)")
    start = (int(steps) - init) * sched.order
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start)
    return sched.timesteps[start:], start


def _sample_lane(pipe, sched_proto, noise, init, tokens, negative, gens, scfg, device, dtype, frames_per_row=1):
    """Denoise one lane of clips (one UNet batch): returns float32 latents (B, C, T, h, w) on device.

    ``noise`` (B, C, T, h, w) float32 CPU; ``init`` the img2img latents or None;
    ``tokens`` (B, L, D); ``negative`` (B, L, D) or None (no guidance). ``frames_per_row``: T for a 2-D UNet
    with motion modules (AnimateDiff's ``UNetMotionModel`` folds the frames into the batch, one text row per
    frame: :mod:`fmrivid.generate.animatediff`); 1 for a 3-D UNet.
    """
    import torch

    sched = copy.deepcopy(sched_proto)
    strength = None if init is None else float(scfg["strength"])
    timesteps, _ = _timesteps(sched, scfg["steps"], strength, device)
    noise = noise.to(device)
    if init is None:
        x = noise * sched.init_noise_sigma
    else:
        t0 = timesteps[:1].repeat(noise.shape[0])
        x = sched.add_noise(init.to(device), noise, t0)
    g = float(scfg["guidance_scale"])
    guided = negative is not None
    emb = torch.cat([negative, tokens]) if guided else tokens
    emb = emb.to(device, dtype)
    if frames_per_row > 1:
        emb = emb.repeat_interleave(int(frames_per_row), dim=0)
    step_kwargs = {"generator": gens}
    if scfg["scheduler"] == "ddim":
        step_kwargs["eta"] = float(scfg["eta"])
    for t in timesteps:
        inp = torch.cat([x, x]) if guided else x
        inp = sched.scale_model_input(inp, t)
        pred = pipe.unet(inp.to(dtype), t, encoder_hidden_states=emb, return_dict=False)[0].float()
        if guided:
            p_u, p_c = pred.chunk(2)
            pred = p_u + g * (p_c - p_u)
        x = sched.step(pred, t, x, **step_kwargs).prev_sample.float()
    return x


def _decode(pipe, lat, slice_size, upcast, dtype):
    """Scaled latents (B, C, T, h, w) -> uint8 (B, T, H, W, 3), ``slice_size`` frames per VAE call."""
    import torch

    vae = pipe.vae
    b, c, t, h, w = lat.shape
    z = lat.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w) / float(vae.config.scaling_factor)
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        z = z + float(shift)
    vdtype = torch.float32 if upcast else dtype
    if next(vae.parameters()).dtype != vdtype:
        vae.to(vdtype)
    step = int(slice_size) or len(z)
    frames = [vae.decode(z[i:i + step].to(vdtype)).sample.float() for i in range(0, len(z), step)]
    x = torch.cat(frames)
    x = ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.reshape(b, t, 3, x.shape[-2], x.shape[-1]).permute(0, 1, 3, 4, 2).cpu().numpy()


def check_clip_ids(clip_ids):
    """Clip ids as a list of str: at least one, no duplicates (each names its clip's seed)."""
    clip_ids = [str(c) for c in clip_ids]
    if not clip_ids:
        raise InputError("clip_ids", "at least one clip id", "none")
    if len(set(clip_ids)) != len(clip_ids):
        raise InputError("clip_ids", "unique clip ids", f"{len(clip_ids) - len(set(clip_ids))} duplicates")
    return clip_ids


def vae_upcast(pipe, scfg, dtype):
    """Whether frames are decoded in float32: ``vae_upcast`` true/false, or (auto) when the VAE config says
    ``force_upcast`` and the run is in float16."""
    import torch

    if scfg["vae_upcast"] != "auto":
        return bool(scfg["vae_upcast"])
    return bool(getattr(pipe.vae.config, "force_upcast", False)) and dtype == torch.float16


def sample_batches(pipe, sched_proto, clip_ids, seed, shape, init_all, tokens_all, negative, scfg, device, dtype,
                   log_line, sample_fn=None):
    """The batch loop every UNet backend shares: per-clip noise from ``clip_seed(seed, clip id)``, ``batch_size``
    clips per batch, one clip per UNet call on CPU with ``exact_cpu`` (then decoded alone too, so a clip's video
    never depends on its batch-mates), frames decoded by :func:`_decode`; ``log_line(batch, n_batches, stop,
    seconds)`` is called after each batch (and logs its progress line). ``sample_fn`` (default :func:`_sample_lane`) denoises one lane.

    Returns uint8 (N, T, H, W, 3)."""
    import torch

    sample_fn = sample_fn or _sample_lane
    n, bs = len(clip_ids), int(scfg["batch_size"])
    lane = 1 if (device.type == "cpu" and scfg["exact_cpu"]) else bs
    upcast = vae_upcast(pipe, scfg, dtype)
    out, t0, n_batches = [], time.perf_counter(), -(-n // bs)
    with torch.inference_mode():
        for bi, start in enumerate(range(0, n, bs)):
            stop = min(n, start + bs)
            gens = [torch.Generator().manual_seed(clip_seed(seed, c)) for c in clip_ids[start:stop]]
            noise = torch.cat([torch.randn((1,) + tuple(shape), generator=g) for g in gens])
            lats = []
            for j in range(0, stop - start, lane):
                sl = slice(j, min(stop - start, j + lane))
                init = None if init_all is None else torch.from_numpy(init_all[start + sl.start:start + sl.stop])
                toks = tokens_all[start + sl.start:start + sl.stop]
                neg = None if negative is None else negative[None].expand(len(toks), -1, -1)
                lats.append(sample_fn(pipe, sched_proto, noise[sl], init, toks, neg, gens[sl], scfg, device, dtype))
            if lane == 1:
                video = np.concatenate([_decode(pipe, z, scfg["decode_slice"], upcast, dtype) for z in lats])
            else:
                video = _decode(pipe, torch.cat(lats), scfg["decode_slice"], upcast, dtype)
            out.append(video)
            log_line(bi + 1, n_batches, stop, time.perf_counter() - t0)
    return np.concatenate(out)


def animatediff_settings(scfg):
    """The :mod:`fmrivid.generate.animatediff` settings of a validated ``generate.pipeline`` section."""
    from fmrivid.generate import animatediff

    return animatediff.settings({k: v for k, v in scfg.items() if k in animatediff.DEFAULTS})


def svd_settings(scfg):
    """The :mod:`fmrivid.generate.svd` settings of a validated ``generate.pipeline`` section (``decode_slice`` is
    the pipeline's ``decode_chunk_size``: frames per VAE decode call, 0 = all)."""
    from fmrivid.generate import svd

    out = {k: v for k, v in scfg.items() if k in svd.DEFAULTS}
    out["decode_chunk_size"] = scfg["decode_slice"]
    return svd.settings(out)


def wan_settings(scfg):
    """The :mod:`fmrivid.generate.wan` settings of a validated ``generate.pipeline`` section (``scheduler`` auto: the
    pipeline's saved one; its checks name ``generate.pipeline.<key>``: 4k+1 frames, sizes multiple of 16...)."""
    from fmrivid.generate import wan

    out = {k: v for k, v in scfg.items() if k in wan.DEFAULTS}
    out["method"] = "text_to_video"  # wan's own conditioning name (from noise)
    return wan.settings(out)


def _generate_wan(pipe, cond, clip_ids, scfg, seed, device, log):
    """``wan`` through :func:`fmrivid.generate.wan.generate`, after checking that the decoded tokens have the width
    of the transformer's text input (they come from ``features.tokens.model``, which must be the generator's own
    text encoder)."""
    from fmrivid.generate import wan

    wcfg = wan_settings(scfg)
    tokens = cond.get("text_tokens")
    width = wan.text_dim(pipe)
    if tokens is not None and (np.ndim(tokens) != 3 or np.shape(tokens)[2] != width):
        raise ConfigError(f"features.tokens.model: expected the token embeddings of generate.pipeline.model's own "
                          f"text encoder ('<generate.pipeline.model>#text_encoder': width {width}, the Wan "
                          f"transformer's text_dim); found decoded text_tokens of shape {np.shape(tokens)} (width "
                          f"{np.shape(tokens)[-1] if np.ndim(tokens) else None})")
    inputs = {k: cond[k] for k in ("text_tokens", "negative") if k in cond}
    return wan.generate(pipe, inputs, clip_ids, wcfg, seed, device=device, log=log)


def _generate_animatediff(pipe, method, cond, clip_ids, scfg, seed, device, log):
    """``animatediff`` (from noise) and ``neuroclips`` (the decoded blurry video as init, its first frame the
    decoded keyframe) through :func:`fmrivid.generate.animatediff.generate`."""
    from fmrivid.generate import animatediff

    if method == "neuroclips" and scfg["motion_mode"] != "absolute":
        raise ConfigError(f"generate.pipeline.motion_mode: expected 'absolute' for neuroclips (the decoded blurry "
                          f"video is frame latents); found {scfg['motion_mode']!r}")
    inputs = {k: cond[k] for k in ("text_tokens", "negative") if k in cond}
    if method == "neuroclips":
        inputs.update(init_latents=cond["motion"], first_frame=cond["first_frame"])
    return animatediff.generate(pipe, inputs, clip_ids, animatediff_settings(scfg), seed, device=device, log=log)


def generate(pipe, method, cond, clip_ids, cfg, seed, device="cpu", log=print):
    """Generate one video per clip id from decoded features.

    Parameters
    ----------
    pipe : fmrivid.models.LoadedModel or diffusers.TextToVideoSDPipeline
        From :func:`load_pipeline` (or ``models.load(spec, "text_to_video")``; ``"text_to_image"``
        for ``image_img2img``).
    method : str
        ``"text_to_video"``, ``"structure_motion"``, ``"two_stage"`` or ``"image_img2img"``
        (:func:`fmrivid.generate.image.generate_frames`).
    cond : dict of str -> ndarray
        From :func:`generation_inputs`: ``text_tokens`` (N, L, D) always;
        ``negative`` (L, D) when guided with ``negative: mean_train``;
        ``first_frame`` (N, C, h, w) + ``motion`` (N, T, C, h, w)
        (structure_motion); ``vae`` (N, C, h, w) or (N, T, C, h, w) (two_stage, image_img2img);
        ``image_to_video`` (:mod:`fmrivid.generate.svd`): ``keyframe`` (N, H, W, 3) only, the decoded first-frame
        latents decoded to images by ``features.vae_model`` (:func:`fmrivid.generate.svd.decode_keyframes`);
        ``wan`` (:mod:`fmrivid.generate.wan`): ``text_tokens`` of width ``transformer.config.text_dim`` (else a
        ConfigError naming features.tokens.model and generate.pipeline.model) and ``negative``.
    clip_ids : sequence of N str
        Clip ``i`` uses the seed ``clip_seed(seed, clip_ids[i])``.
    cfg : dict
        The ``generate`` section (:data:`DEFAULTS`).
    seed : int
        Master seed (config ``seed``).
    device : str
    log : callable
        Receives one progress line per batch.

    Returns
    -------
    uint8 ndarray (N, T, H, W, 3)

    Raises
    ------
    InputError
        Missing or mis-shaped conditions.
    ConfigError
        Bad settings.
    """
    import torch

    scfg = settings(cfg, method=method)
    scfg["scheduler"] = scheduler_name(scfg)
    if generator_kind(method) == "text_to_image":
        from fmrivid.generate.image import generate_frames

        return generate_frames(pipe, cond, clip_ids, scfg, seed, device=device, log=log)
    if generator_kind(method) == "animatediff":
        return _generate_animatediff(pipe, method, cond, clip_ids, scfg, seed, device, log)
    if generator_kind(method) == "image_to_video":
        from fmrivid.generate import svd

        keyframe = {k: cond[k] for k in ("keyframe",) if k in cond}  # svd.generate names a missing one
        return svd.generate(pipe, keyframe, clip_ids, svd_settings(scfg), seed, device=device, log=log)
    if generator_kind(method) == "wan":
        return _generate_wan(pipe, cond, clip_ids, scfg, seed, device, log)
    pipe = _pipe(pipe)
    clip_ids = check_clip_ids(clip_ids)
    n = len(clip_ids)
    cond = _check_cond(method, cond, n, scfg, pipe)
    device = torch.device(device)
    prepare_pipeline(pipe, device, scfg)
    dtype = _torch_dtype(scfg["dtype"], device)
    negative = guidance_negative(pipe, cond, scfg, device)
    init_all = _init_latents(method, cond, scfg)
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    if init_all is None:
        if scfg["height"] % factor or scfg["width"] % factor:
            raise ConfigError(f"generate.height/width: expected multiples of the VAE factor {factor}; "
                              f"found {scfg['height']}x{scfg['width']}")
        shape = (int(pipe.unet.config.in_channels), int(scfg["num_frames"]),
                 scfg["height"] // factor, scfg["width"] // factor)
    else:
        shape = init_all.shape[1:]
    sched_proto = _scheduler(pipe, scfg["scheduler"])
    tokens_all = torch.from_numpy(np.ascontiguousarray(cond["text_tokens"]))

    def log_line(batch, n_batches, stop, dt):
        log(f"generate[{method}] batch {batch}/{n_batches}: {stop}/{n} clips "
            f"({dt:.1f} s, {dt / stop:.2f} s/clip, {scfg['steps']} steps, {str(dtype).replace('torch.', '')}"
            f" on {device})")

    return sample_batches(pipe, sched_proto, clip_ids, seed, shape, init_all, tokens_all, negative, scfg, device,
                          dtype, log_line)
