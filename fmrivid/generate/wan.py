"""fMRI-conditioned video generation with Wan 2.1 text-to-video (diffusers ``WanPipeline``), a maintained backend.

The generator is ``diffusers.WanPipeline``: a ``WanTransformer3DModel`` (flow-matching diffusion transformer), the
causal 3-D ``AutoencoderKLWan`` (x8 spatial, x4 temporal compression: a clip has 4k+1 frames), a
``UMT5EncoderModel`` text encoder (google/umt5-xxl, width 4096) and a flow ``UniPCMultistepScheduler``. It is
loaded by :func:`load` from ``"tiny"`` (the real classes with tiny random components), a ``save_pretrained``
folder, or a hub id from the local Hugging Face cache only. On a cluster:

* ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (the default real model: 1.3B transformer, 480P);
* ``Wan-AI/Wan2.1-T2V-14B-Diffusers`` (same pipeline and text encoder, 14B transformer, 480P/720P; >= 40 GB cards).

Why Wan 2.1 1.3B (issue 19: replace the deprecated ``TextToVideoSDPipeline`` / ModelScope generators), facts from
the diffusers docs and the model cards:

* maintained: ``WanPipeline`` is a current diffusers pipeline (Wan 2.1, and Wan 2.2 through the same class with
  ``transformer_2`` / ``expand_timesteps``), with LoRA loading (``WanLoraLoaderMixin``), VAE tiling/slicing and
  attention backends; ModelScope's ``TextToVideoSDPipeline`` now lives in ``diffusers.pipelines.deprecated``
  (diffusers 0.42);
* fits a 24 GB card: the model card states the T2V-1.3B model needs 8.19 GB of VRAM (a 5 s 480P video in about
  4 min on an RTX 4090) and the diffusers docs run it in 11 GB with model offload; here the 11 GB UMT5-xxl text
  encoder is not even needed on the GPU (prompt embeddings are decoded from fMRI, see below);
* Apache-2.0 weights (code and model).

Against the two other small maintained text-to-video models of diffusers:

* CogVideoX-2B (``CogVideoXPipeline``, Apache-2.0 too): trained for 49 frames (6 s at 8 fps) at 720x480 with a
  226-token T5-XXL prompt; the diffusers docs state about 19 GB of GPU memory just to decode those 49 frames
  without the memory optimisations, so a 24 GB card needs offloading/tiling tricks;
* LTX-Video (``LTXPipeline``): fast (real-time 768x512 at 24 fps), but its weights are under Lightricks' own
  OpenRAIL-M licence with use restrictions, not Apache-2.0, and variants differ in how they must be sampled
  (guidance- and timestep-distilled releases, decode timesteps), which a reproducible workflow would have to pin.

Conditioning (fmrivid's rule: the brain, never a stimulus, drives generation):

* ``cond["text_tokens"]`` (N, L, D) float32: the decoded token embeddings of the pipeline's OWN text encoder,
  D = ``transformer.config.text_dim`` (4096 for every Wan 2.1 model: UMT5-xxl). They are passed as
  ``prompt_embeds``. WanPipeline encodes a prompt into ``max_sequence_length`` (512) tokens, the encoder output of
  the real tokens followed by ZERO rows (:func:`prompt_embeddings` computes exactly these training targets);
  decoded tokens with L < ``max_sequence_length`` are zero-padded the same way, so a decoder may predict only the
  first L (e.g. 64) tokens: 64 x 4096 values per clip instead of 512 x 4096. In the workflow (``generate.method:
  wan``) these are the token features of ``features.tokens.model: '<model>#text_encoder'`` (loaded as kind
  ``umt5_tokens``; ``tiny#text_encoder`` is the tiny pipeline's text tower, same seed) computed by
  :func:`text_embeddings` and cut to ``features.tokens.max_length`` rows.
* ``cond["negative"]`` (L, D): the embedding decoded from the MEAN TRAINING fMRI
  (:func:`fmrivid.generate.pipelines.mean_train_negative`), padded alike and passed as ``negative_prompt_embeds``
  for classifier-free guidance (``guidance_scale`` > 1). ``negative: empty_prompt`` uses the text encoder's
  embedding of "" instead (the pipeline's own default; needs the text encoder).

Fine-tuning (``generate.finetune``, :mod:`fmrivid.generate.finetune` backend ``wan``): LoRA or attention training
of the transformer by flow matching on the training clips' latents of this VAE (:func:`training_latents`) with
their caption tokens padded as here (:func:`training_tokens`).

Sampling is the pipeline's own ``__call__`` (no loop of ours: the maintained sampler is the point of this
backend), run on a sampler ``WanPipeline`` that shares the loaded transformer and VAE (no weight copy) with a fresh
scheduler and no text encoder, so the 5.7B-parameter UMT5-xxl never has to move to the GPU.

Reproducibility and speed, as :mod:`fmrivid.generate.pipelines`: all noise of a clip (its initial latent video;
the flow UniPC / Euler samplers add none) comes from one CPU ``torch.Generator`` seeded with
``fmrivid.utils.clip_seed(seed, clip_id)``; a batch passes the LIST of its clips' generators (diffusers draws
sample by sample from a list). On CPU clips run one at a time (``exact_cpu``), so a clip is bit-identical whatever
its batch-mates or chunk; on CUDA ``batch_size`` clips share each transformer call in ``dtype``. ``dtype: auto`` is
bfloat16 on CUDA (float16 where the card has no bfloat16), float32 on CPU: Wan's reference code and the diffusers
examples run the transformer in bfloat16; float16 is available. The casting keeps the transformer's
``_keep_in_fp32_modules`` (time embedder, norms, modulation tables, RoPE) in float32 as diffusers' loading does,
and the VAE decodes in float32 (``vae_dtype``), as the diffusers Wan example loads it.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import numpy as np

from fmrivid.errors import ConfigError, InputError
from fmrivid.utils import clip_seed

__all__ = ["DEFAULTS", "REAL_MODEL", "TINY_DEFAULTS", "WAN21_T2V_1_3B_CONFIG", "generate", "load", "prepare",
           "prompt_embeddings", "settings", "text_dim", "text_embeddings", "training_latents", "training_tokens"]

#: hub id of the real generator (local cache only; ``hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` on a cluster)
REAL_MODEL = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"

#: Config section ``generate.pipeline`` keys of the Wan backend (the lead copies them into the schema).
DEFAULTS = {
    "model": "tiny",              # generator spec: 'tiny', a save_pretrained WanPipeline dir, or a hub id (local cache only), e.g. 'Wan-AI/Wan2.1-T2V-1.3B-Diffusers'
    "method": "text_to_video",    # conditioning: only 'text_to_video' (from noise, conditioned on decoded tokens) with this backend
    "num_frames": 17,             # frames per clip: 4k+1 (1, 5, 9, 17, ..., 81), the causal Wan VAE's x4 temporal compression (17 = about 1 s at Wan's 16 fps)
    "height": 480,                # frame height in pixels: multiple of 16 (VAE x8 times the transformer's 2x2 patches); Wan 2.1 1.3B is trained at 480x832
    "width": 832,                 # frame width in pixels: multiple of 16
    "steps": 50,                  # sampler steps (WanPipeline's default)
    "guidance_scale": 5.0,        # classifier-free guidance weight (<= 1 = off; WanPipeline's default is 5)
    "negative": "mean_train",     # unconditional branch: 'mean_train' (embedding decoded from the mean training fMRI) or 'empty_prompt' (the text encoder's embedding of "")
    "scheduler": "auto",          # 'auto' (the pipeline's saved scheduler: flow UniPC for Wan 2.1), 'unipc' or 'flow_euler' (FlowMatchEulerDiscreteScheduler), built from the saved config
    "flow_shift": None,           # sigma shift of the flow schedule; null = as saved (3.0 in Wan2.1-T2V-1.3B; Wan recommends 3.0 for 480P, 5.0 for 720P)
    "max_sequence_length": 512,   # tokens the transformer attends to: decoded text_tokens with fewer are zero-padded to it as WanPipeline pads prompts; 0 = as decoded
    "batch_size": 4,              # clips per batch (per transformer call on CUDA)
    "dtype": "auto",              # transformer dtype: 'auto' (bfloat16 on CUDA, float16 without bf16 support, float32 on CPU), 'float16', 'bfloat16' or 'float32'
    "vae_dtype": "float32",       # VAE decoding dtype: 'float32' (as the diffusers Wan example) or 'same' (= dtype)
    "vae_slicing": True,          # decode the clips of a batch one at a time (memory; also makes decoding batch-independent)
    "vae_tiling": False,          # decode each frame in spatial tiles (memory for large frames; tiles blend at their seams)
    "exact_cpu": True,            # on CPU, clip by clip so a clip is bit-identical whatever the batch size
}

_CHOICES = {
    "method": ("text_to_video",),
    "negative": ("mean_train", "empty_prompt"),
    "scheduler": ("auto", "unipc", "flow_euler"),
    "dtype": ("auto", "float16", "bfloat16", "float32"),
    "vae_dtype": ("float32", "same"),
}

#: Tiny architecture (``load("tiny")``): UMT5 text tower (width, layers, heads, MLP width), the transformer (heads,
#: head width, MLP width, layers, timestep-embedding width, RoPE table length), the VAE (base channels, channel
#: multipliers: len-1 spatial x2 steps, of which the last two also halve time; residual blocks; latent channels)
#: and the flow schedule (shift, training timesteps).
TINY_DEFAULTS = {
    "text_dim": 32,
    "text_layers": 2,
    "text_heads": 4,
    "text_ff": 64,
    "heads": 2,
    "head_dim": 8,
    "ffn_dim": 32,
    "layers": 2,
    "freq_dim": 16,
    "rope_max_seq_len": 64,
    "vae_base_dim": 8,
    "vae_dim_mult": [1, 1, 1, 1],
    "vae_res_blocks": 1,
    "z_dim": 16,
    "flow_shift": 3.0,
    "num_train_timesteps": 1000,
}

#: ``tiny_config`` that builds the real Wan2.1-T2V-1.3B transformer (dim 1536 = 12 heads x 128, FFN 8960, 30
#: layers, text width 4096) and VAE (base 96, multipliers 1/2/4/4, 2 residual blocks, 16 latent channels) with
#: random weights: for timing only (use ``load(..., text_encoder=False)``: the UMT5-xxl tower would be 5.7B
#: parameters of random weights; its tiny stand-in here has the real width 4096 but 1 layer).
WAN21_T2V_1_3B_CONFIG = {
    "text_dim": 4096, "text_layers": 1, "text_heads": 64, "text_ff": 10240,
    "heads": 12, "head_dim": 128, "ffn_dim": 8960, "layers": 30, "freq_dim": 256, "rope_max_seq_len": 1024,
    "vae_base_dim": 96, "vae_dim_mult": [1, 2, 4, 4], "vae_res_blocks": 2, "z_dim": 16,
}


# --------------------------------------------------------------------------- config


def settings(cfg=None, **overrides):
    """``cfg`` merged over :data:`DEFAULTS`, validated.

    Parameters
    ----------
    cfg : dict, optional
        Keys of :data:`DEFAULTS` (the ``generate.pipeline`` section of this backend); unknown keys raise.
    **overrides
        Applied after ``cfg``.

    Returns
    -------
    dict
        Every key of :data:`DEFAULTS`, counts as int, numbers as float.

    Raises
    ------
    ConfigError
        ``generate.pipeline.<key>: expected ...; found ...`` for an unknown key, a value outside its choices, a
        frame count that is not 4k+1, a size that is not a positive multiple of 16, or a bad number.
    """
    from fmrivid.generate.pipelines import (
        check_bool,
        check_int,
        check_number,
        merge_settings,
    )

    out = merge_settings(DEFAULTS, _CHOICES, cfg, overrides)
    if not isinstance(out["model"], str) or not out["model"].strip():
        raise ConfigError(f"generate.pipeline.model: expected 'tiny', a pipeline directory or a hub id; "
                          f"found {out['model']!r}")
    frames = check_int("num_frames", out["num_frames"], 1, "a frame count 4k+1 (1, 5, 9, 17, ..., 81)")
    if (frames - 1) % 4:
        raise ConfigError(f"generate.pipeline.num_frames: expected 4k+1 frames (1, 5, 9, 17, ..., 81: the Wan VAE "
                          f"is causal 3-D with x4 temporal compression); found {frames}")
    out["num_frames"] = frames
    for key in ("height", "width"):
        out[key] = check_int(key, out[key], 16, "a positive multiple of 16 pixels")
        if out[key] % 16:
            raise ConfigError(f"generate.pipeline.{key}: expected a positive multiple of 16 pixels (VAE x8 times "
                              f"2x2 patches); found {out[key]}")
    out["steps"] = check_int("steps", out["steps"])
    out["batch_size"] = check_int("batch_size", out["batch_size"])
    out["max_sequence_length"] = check_int("max_sequence_length", out["max_sequence_length"], 0,
                                           "0 or a positive number of tokens")
    out["guidance_scale"] = check_number("guidance_scale", out["guidance_scale"])
    if out["flow_shift"] is not None:
        out["flow_shift"] = check_number("flow_shift", out["flow_shift"], what="null or a number > 0", open_low=True)
    for key in ("vae_slicing", "vae_tiling", "exact_cpu"):
        check_bool(key, out[key])
    return out


# --------------------------------------------------------------------------- loading


def _torch_dtype(name, device):
    import torch

    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if name not in table:
        raise ConfigError(f"generate.pipeline.dtype: expected one of {list(_CHOICES['dtype'])}; found {name!r}")
    return table[name]


def _tiny_settings(tiny_config):
    overrides = dict(tiny_config or {})
    unknown = sorted(set(overrides) - set(TINY_DEFAULTS))
    if unknown:
        raise ConfigError(f"tiny_config of the Wan generator: expected keys among {sorted(TINY_DEFAULTS)}; "
                          f"found unknown {unknown}")
    return {**json.loads(json.dumps(TINY_DEFAULTS)), **overrides}


def _build_tiny(s, text_encoder):
    """Tiny WanPipeline of the real classes (called under a fixed torch seed): VAE, transformer, then the text tower.

    The text tower is built last so the transformer and VAE weights do not depend on ``text_encoder``.
    """
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    mult = [int(m) for m in s["vae_dim_mult"]]
    if len(mult) != 4:
        raise ConfigError(f"tiny_config vae_dim_mult: expected 4 channel multipliers (x8 spatial, x4 temporal "
                          f"compression like Wan's VAE); found {mult}")
    z_dim = int(s["z_dim"])
    # the real Wan 2.1 latent statistics (AutoencoderKLWan's defaults) for 16 channels, a unit normalisation otherwise
    defaults = inspect.signature(AutoencoderKLWan.__init__).parameters
    mean = list(defaults["latents_mean"].default) if z_dim == 16 else [0.0] * z_dim
    std = list(defaults["latents_std"].default) if z_dim == 16 else [1.0] * z_dim
    vae = AutoencoderKLWan(base_dim=int(s["vae_base_dim"]), z_dim=z_dim, dim_mult=mult,
                           num_res_blocks=int(s["vae_res_blocks"]), temperal_downsample=[False, True, True],
                           latents_mean=mean, latents_std=std)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=int(s["heads"]), attention_head_dim=int(s["head_dim"]),
        in_channels=z_dim, out_channels=z_dim, text_dim=int(s["text_dim"]), freq_dim=int(s["freq_dim"]),
        ffn_dim=int(s["ffn_dim"]), num_layers=int(s["layers"]), cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=int(s["rope_max_seq_len"]),
    )
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=int(s["num_train_timesteps"]), prediction_type="flow_prediction", use_flow_sigmas=True,
        flow_shift=float(s["flow_shift"]), solver_order=2, solver_type="bh2", predict_x0=True,
        lower_order_final=True, final_sigmas_type="zero", timestep_spacing="linspace",
    )
    tokenizer = encoder = None
    if text_encoder:
        from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

        from fmrivid.models import minilm_dir

        # Generation never tokenizes (it takes prompt_embeds); the offline MiniLM WordPiece tokenizer stands in
        # for UMT5's SentencePiece one in the tiny pipeline (WanPipeline accepts any tokenizer).
        tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
        width, heads = int(s["text_dim"]), int(s["text_heads"])
        encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=width, d_kv=max(1, width // heads), d_ff=int(s["text_ff"]),
            num_layers=int(s["text_layers"]), num_heads=heads, dropout_rate=0.0,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
        ))
    return WanPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer,
                       scheduler=scheduler)


def _dtype_kwarg():
    """``from_pretrained``'s dtype keyword: ``dtype`` (``torch_dtype`` is deprecated in recent diffusers)."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present where dtype= exists)
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _from_pretrained(source, kwargs, dtype, text_encoder):
    import torch
    from diffusers import WanPipeline

    kwargs = dict(kwargs)
    if not text_encoder:
        kwargs.update(text_encoder=None, tokenizer=None)
    if dtype is not None:
        # the transformer (and text tower) in dtype, the rest (VAE) in float32; diffusers keeps the transformer's
        # _keep_in_fp32_modules in float32. UMT5 overflows in float16: its text tower goes to bfloat16 then.
        te = torch.bfloat16 if dtype == torch.float16 else dtype
        kwargs[_dtype_kwarg()] = {"transformer": dtype, "text_encoder": te, "default": torch.float32}
    return WanPipeline.from_pretrained(source, **kwargs)


def load(spec, seed=0, device="cpu", dtype=None, tiny_config=None, text_encoder=True):
    """Load a Wan text-to-video pipeline offline.

    Parameters
    ----------
    spec : str or Path
        ``"tiny"`` (tiny random components of the real classes, deterministic given ``seed``), a directory saved
        with ``save_pretrained``, or a hub id ``org/name[@revision]`` from the local Hugging Face cache only
        (e.g. ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``).
    seed : int
        Seed of the tiny pipeline's random weights.
    device : str or torch.device
        Where the transformer and VAE go. The text encoder stays on CPU (generation does not run it; move it
        yourself to compute :func:`prompt_embeddings` on a GPU).
    dtype : torch.dtype or str, optional
        Transformer dtype (``"bfloat16"``...; float32 modules that diffusers keeps in float32 stay so); the text
        encoder gets it too (bfloat16 for float16: UMT5 overflows in float16); the VAE stays float32. Default:
        float32 for tiny, as stored otherwise.
    tiny_config : dict, optional
        Overrides of :data:`TINY_DEFAULTS` (e.g. :data:`WAN21_T2V_1_3B_CONFIG`). Ignored unless ``spec == "tiny"``.
    text_encoder : bool
        Load the text encoder and tokenizer (needed for :func:`prompt_embeddings` and ``negative: empty_prompt``).
        ``False`` skips the UMT5-xxl tower (about 11 GB in bfloat16).

    Returns
    -------
    diffusers.WanPipeline
        Components in eval mode, progress bar off.

    Raises
    ------
    ModelNotAvailableError
        A hub id not in the local cache (the message gives the ``hf download`` command).
    InputError
        ``spec`` is a path that does not hold a saved WanPipeline.
    ConfigError
        Unknown spec form or ``tiny_config`` key.
    """
    import torch

    from fmrivid import models

    spec = str(spec).strip()
    tdtype = None if dtype is None else _torch_dtype(str(dtype).replace("torch.", ""), device)
    if spec == "tiny":
        s = _tiny_settings(tiny_config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            pipe = _build_tiny(s, text_encoder)
        if tdtype is not None:
            _cast(pipe.transformer, tdtype)
            if pipe.text_encoder is not None:
                pipe.text_encoder.to(torch.bfloat16 if tdtype == torch.float16 else tdtype)
    elif Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser().resolve()
        if not (path / "model_index.json").is_file():
            raise InputError(path, "a WanPipeline directory saved with save_pretrained (model_index.json)",
                             f"files {sorted(p.name for p in path.iterdir())[:10]}")
        pipe = _from_pretrained(str(path), {"local_files_only": True}, tdtype, text_encoder)
    else:
        match = models._HUB_SPEC.match(spec)
        if not match or match["subfolder"]:
            if models._looks_like_path(spec):
                raise InputError(spec, "a WanPipeline directory saved with save_pretrained", "no such directory")
            raise ConfigError(f"generate.pipeline.model: expected 'tiny', an existing directory or a hub id "
                              f"'org/name[@revision]'; found {spec!r}")
        pipe = _load_hub(match["repo"], match["revision"], tdtype, text_encoder)
    _check_wan(pipe, spec)
    for name in ("transformer", "vae"):
        getattr(pipe, name).to(device)
    for part in pipe.components.values():
        if hasattr(part, "eval"):
            part.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_hub(repo, revision, dtype, text_encoder):
    from huggingface_hub import try_to_load_from_cache

    from fmrivid import models

    cache_dir = models.hub_cache_dir()
    cached = try_to_load_from_cache(repo, "model_index.json", cache_dir=str(cache_dir), revision=revision)
    if not isinstance(cached, str):
        raise models._not_cached(repo, revision, None, cache_dir, f" (No local directory {repo!r} exists either.)")
    kwargs = {"revision": revision, "cache_dir": str(cache_dir), "local_files_only": True}
    try:
        return _from_pretrained(repo, kwargs, dtype, text_encoder)
    except OSError as exc:
        detail = f" Its model_index.json is cached but loading failed: {str(exc).splitlines()[0]}."
        raise models._not_cached(repo, revision, None, cache_dir, detail) from exc


def _check_wan(pipe, spec):
    from diffusers import WanPipeline

    if not isinstance(pipe, WanPipeline) or getattr(pipe, "transformer", None) is None or pipe.vae is None:
        raise ConfigError(f"generate.pipeline.model: expected a Wan text-to-video pipeline (WanPipeline with a "
                          f"transformer and a VAE); {spec!r} is a {type(pipe).__name__}")
    if getattr(pipe, "transformer_2", None) is not None or pipe.config.get("expand_timesteps", False):
        raise ConfigError(f"generate.pipeline.model: expected a Wan 2.1 text-to-video pipeline (one transformer); "
                          f"{spec!r} is a two-expert or TI2V Wan 2.2 pipeline, not supported by this backend yet")


def _pipe(pipe):
    pipe = getattr(pipe, "model", pipe)
    _check_wan(pipe, type(pipe).__name__)
    return pipe


def text_dim(pipe):
    """Width D of the token embeddings the generator takes (``transformer.config.text_dim``; 4096 for Wan 2.1)."""
    return int(_pipe(pipe).transformer.config.text_dim)


def _cast(module, dtype):
    """Cast ``module``'s floating tensors to ``dtype`` in place, its ``_keep_in_fp32_modules`` to float32.

    As diffusers' ``from_pretrained(dtype=...)`` does; ``ModelMixin.to(dtype)`` would cast those too (and logs a
    warning about it on every call).
    """
    import torch

    keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if not tensor.is_floating_point():
            continue
        want = torch.float32 if any(k in name.split(".") for k in keep) else dtype
        if tensor.dtype != want:
            tensor.data = tensor.data.to(want)
    return module


def _dtypes_of(module):
    return {p.dtype for p in module.parameters()}


def prepare(pipe, device, cfg=None):
    """Put the transformer and VAE on ``device`` in the configured dtypes; VAE slicing/tiling as configured.

    The transformer goes to ``dtype`` (its ``_keep_in_fp32_modules`` stay float32), the VAE to ``vae_dtype``; the
    text encoder is left where it is (generation does not run it). Idempotent. The cast is in place: a pipeline
    once cast to bfloat16/float16 keeps the rounded weights when cast back to float32 (load it again instead).

    Parameters
    ----------
    pipe : diffusers.WanPipeline
    device : str or torch.device
    cfg : dict, optional
        ``generate.pipeline`` section (:data:`DEFAULTS`).

    Returns
    -------
    diffusers.WanPipeline
    """
    import torch

    scfg = settings(cfg)
    pipe = _pipe(pipe)
    device = torch.device(device)
    dtype = _torch_dtype(scfg["dtype"], device)
    vdtype = torch.float32 if scfg["vae_dtype"] == "float32" else dtype
    tr = pipe.transformer
    first = next(tr.parameters())
    if first.device.type != device.type or (device.index is not None and first.device.index != device.index):
        tr.to(device)
    have = _dtypes_of(tr)
    if dtype not in have or not have <= {dtype, torch.float32}:  # else already cast (float32-kept modules aside)
        _cast(tr, dtype)
    pipe.vae.to(device)
    _cast(pipe.vae, vdtype)
    pipe.vae.use_slicing = bool(scfg["vae_slicing"])
    if scfg["vae_tiling"]:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _scheduler(pipe, scfg):
    """A fresh scheduler for one call, from the saved one's config (``flow_shift`` applied when set).

    ``auto`` (or the saved scheduler's own kind): the saved class and config. ``unipc`` / ``flow_euler`` over a
    saved scheduler of the other kind: a flow UniPC / FlowMatchEulerDiscreteScheduler with the saved shift and
    number of training timesteps.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    saved = pipe.scheduler
    config = dict(saved.config)
    key = "flow_shift" if "flow_shift" in config else "shift"
    shift = float(config.get(key, 1.0)) if scfg["flow_shift"] is None else float(scfg["flow_shift"])
    wanted = {"auto": type(saved), "unipc": UniPCMultistepScheduler,
              "flow_euler": FlowMatchEulerDiscreteScheduler}[scfg["scheduler"]]
    timesteps = int(config.get("num_train_timesteps", 1000))
    if wanted is type(saved):
        if key in config:
            config[key] = shift
        return wanted.from_config(config)
    if wanted is UniPCMultistepScheduler:
        return UniPCMultistepScheduler(num_train_timesteps=timesteps, prediction_type="flow_prediction",
                                       use_flow_sigmas=True, flow_shift=shift)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=timesteps, shift=shift)


def _sampler(pipe, scheduler):
    """A WanPipeline on ``pipe``'s transformer and VAE (no copy) with ``scheduler`` and no text encoder."""
    from diffusers import WanPipeline

    sampler = WanPipeline(tokenizer=None, text_encoder=None, vae=pipe.vae, transformer=pipe.transformer,
                          scheduler=scheduler)
    sampler.set_progress_bar_config(disable=True)
    return sampler


# --------------------------------------------------------------------------- conditioning


def prompt_embeddings(pipe, captions, max_sequence_length=512):
    """The token embeddings WanPipeline conditions on for ``captions``: the training targets of the token decoder.

    ``WanPipeline.encode_prompt`` on the pipeline's text encoder (where it is): the UMT5 last hidden state of the
    real tokens, zero rows after them, ``max_sequence_length`` rows in all. Decoders are trained on these; their
    first L rows are enough when L covers the captions (the rest are zeros, restored by :func:`generate`).

    Parameters
    ----------
    pipe : diffusers.WanPipeline
        With its text encoder (``load(..., text_encoder=True)``).
    captions : sequence of str
    max_sequence_length : int
        Rows per caption (512 in WanPipeline).

    Returns
    -------
    float32 ndarray (N, max_sequence_length, D)
    """
    import torch

    pipe = _pipe(pipe)
    if pipe.text_encoder is None or pipe.tokenizer is None:
        raise ConfigError("generate.pipeline.model: the text encoder is needed to embed captions or the empty "
                          "prompt; load the pipeline with text_encoder=True")
    captions = [str(c) for c in captions]
    if not captions:
        raise InputError("captions", "at least one caption", "none")
    device = next(pipe.text_encoder.parameters()).device
    with torch.inference_mode():
        emb, _ = pipe.encode_prompt(prompt=captions, do_classifier_free_guidance=False,
                                    max_sequence_length=int(max_sequence_length), device=device)
    return emb.float().cpu().numpy()


def text_embeddings(tokenizer, text_encoder, captions, max_length=None, batch_size=64):
    """The token features of ``features.tokens.model: '<wan model>#text_encoder'``: the first ``max_length`` rows of
    what ``WanPipeline.encode_prompt`` returns for ``captions`` at its own length (512 tokens).

    The pipeline's own ``encode_prompt`` runs on a text-only ``WanPipeline`` (its ``prompt_clean``, tokenizer call,
    attention mask, the encoder's states of the real tokens, then ZERO rows). Each batch is encoded at the length of
    its longest caption (at most 512 tokens) instead of 512: the mask hides the padding, so the real tokens' states
    are the same (up to float rounding) and the zero rows are added after, at a fraction of the cost (captions are
    about 20 tokens; UMT5-xxl is 5.7B parameters).

    Parameters
    ----------
    tokenizer : transformers tokenizer
        The pipeline's (``tokenizer`` folder next to ``text_encoder``).
    text_encoder : transformers.UMT5EncoderModel (or T5EncoderModel)
        Where it is (CPU or GPU), in its dtype.
    captions : sequence of str
    max_length : int, optional
        Rows kept per caption (``features.tokens.max_length``): captions with more tokens lose the rest, shorter
        ones keep zero rows. Default: the pipeline's 512 (:data:`DEFAULTS` ``max_sequence_length``).
    batch_size : int
        Captions per encoder call.

    Returns
    -------
    float32 ndarray (N, max_length, D)
        D = the encoder's width (``d_model``: 4096 for UMT5-xxl), what the generator's transformer takes
        (``text_dim``); :func:`generate` zero-pads decoded tokens back to ``max_sequence_length``.

    Raises
    ------
    ConfigError
        ``features.tokens.max_length`` outside 1..512.
    """
    import torch
    from diffusers import WanPipeline
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    full = int(DEFAULTS["max_sequence_length"])
    keep = full if max_length is None else max_length
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 1 <= int(keep) <= full:
        raise ConfigError(f"features.tokens.max_length: expected null or a number of tokens in 1..{full} (WanPipeline "
                          f"encodes prompts into {full} tokens); found {max_length!r}")
    keep = int(keep)
    captions = [str(c) for c in captions]
    width = int(text_encoder.config.d_model)
    text = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=None, transformer=None, scheduler=None)
    device = next(text_encoder.parameters()).device
    out = np.zeros((len(captions), keep, width), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(captions), int(batch_size)):
            part = captions[start:start + int(batch_size)]
            ids = tokenizer([prompt_clean(c) for c in part], add_special_tokens=True, truncation=True,
                            max_length=full).input_ids
            longest = max(len(i) for i in ids)  # no caption is cut by encode_prompt at this length
            emb, _ = text.encode_prompt(prompt=part, do_classifier_free_guidance=False, max_sequence_length=longest,
                                        device=device)
            rows = min(longest, keep)
            out[start:start + len(part), :rows] = emb[:, :rows].float().cpu().numpy()
    return out


def _tokens(cond, n, width, max_len):
    """Validated float32 tokens (N, L, D) and the padded length."""
    if "text_tokens" not in cond:
        raise InputError("cond", "key 'text_tokens' (decoded token embeddings)", f"keys {sorted(cond)}")
    tokens = np.asarray(cond["text_tokens"], dtype=np.float32)
    if tokens.ndim != 3 or tokens.shape[0] != n or tokens.shape[2] != width or tokens.shape[1] < 1:
        raise InputError("cond['text_tokens']", f"({n}, L, {width}) token embeddings (one row per clip id, width = "
                         f"the transformer's text_dim)", f"shape {tokens.shape}")
    if max_len and tokens.shape[1] > max_len:
        raise InputError("cond['text_tokens']", f"at most max_sequence_length={max_len} tokens",
                         f"{tokens.shape[1]} tokens")
    if not np.all(np.isfinite(tokens)):
        raise InputError("cond['text_tokens']", "finite values", "NaN or inf")
    return tokens, (max_len or tokens.shape[1])


def _pad(array, length):
    """Zero rows appended along axis -2 up to ``length`` (WanPipeline's prompt padding)."""
    extra = length - array.shape[-2]
    if extra <= 0:
        return array
    pad = [(0, 0)] * array.ndim
    pad[-2] = (0, extra)
    return np.pad(array, pad)


def _negative(pipe, cond, scfg, shape, length):
    """The (length, D) negative embedding of guidance, or None without guidance."""
    if scfg["guidance_scale"] <= 1.0:
        return None
    if scfg["negative"] == "empty_prompt":
        return prompt_embeddings(pipe, [""], length)[0]
    if "negative" not in cond:
        raise InputError("cond", "key 'negative' (tokens decoded from the mean training fMRI) for guidance_scale > 1 "
                         "with negative: mean_train", f"keys {sorted(cond)}")
    neg = np.asarray(cond["negative"], dtype=np.float32)
    if neg.ndim == 3 and neg.shape[0] == 1:
        neg = neg[0]
    if neg.shape != shape:
        raise InputError("cond['negative']", f"one token embedding {shape} like a row of text_tokens "
                         f"(decoded from the mean training fMRI)", f"shape {np.shape(cond['negative'])}")
    if not np.all(np.isfinite(neg)):
        raise InputError("cond['negative']", "finite values", "NaN or inf")
    return _pad(neg, length)


# --------------------------------------------------------------------------- fine-tuning data


def training_latents(pipe, frames, batch_size=2, log=print):
    """Normalised Wan VAE latents of training clips: what the flow-matching transformer denoises.

    ``features/vae_frames.h5`` holds per-frame latents of a 2-D VAE; Wan's causal 3-D VAE compresses time too
    (4k+1 frames -> k+1 latent frames), so fine-tuning (:mod:`fmrivid.generate.finetune`, backend ``wan``) encodes
    the training clips' frames itself, with the pipeline's own VAE in float32: the mode of ``vae.encode``,
    normalised as ``WanPipeline`` un-normalises before decoding, ``(z - latents_mean) / latents_std``.

    Parameters
    ----------
    pipe : diffusers.WanPipeline (or an object whose ``model`` is one)
    frames : uint8 ndarray (N, T, H, W, 3)
        The training clips of ``features/frames.h5``; T = 4k+1, H and W multiples of 16.
    batch_size : int
        Clips per encoder call.
    log : callable

    Returns
    -------
    float32 ndarray (N, k+1, C, H/8, W/8)
        Frames-first, as :func:`fmrivid.generate.finetune.finetune` takes latents.
    """
    import torch

    pipe = _pipe(pipe)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3 or len(frames) < 1:
        raise InputError("frames", "uint8 clips (N, T, H, W, 3) from features/frames.h5",
                         f"{frames.dtype} array of shape {frames.shape}")
    n_frames, height, width = frames.shape[1:4]
    if (n_frames - 1) % 4 or height % 16 or width % 16:
        raise InputError("frames", "4k+1 frames of H x W, multiples of 16 (Wan's VAE: x4 temporal, x8 spatial "
                         "compression, 2x2 patches)", f"{n_frames} frames of {height} x {width}")
    vae = pipe.vae
    device = next(vae.parameters()).device
    z_dim = int(vae.config.z_dim)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=device).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=device).view(1, z_dim, 1, 1, 1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(frames), int(batch_size)):
            x = torch.from_numpy(np.ascontiguousarray(frames[start:start + int(batch_size)]))
            x = (x.permute(0, 4, 1, 2, 3).to(torch.float32) / 127.5 - 1.0).to(device, next(vae.parameters()).dtype)
            z = vae.encode(x).latent_dist.mode().float()
            out.append(((z - mean) / std).permute(0, 2, 1, 3, 4).cpu().numpy())
            log(f"wan latents: {min(len(frames), start + int(batch_size))}/{len(frames)} training clips")
    return np.concatenate(out).astype(np.float32, copy=False)


def training_tokens(tokens, max_sequence_length):
    """Token features (N, L, D) checked and zero-padded exactly as :func:`generate` takes decoded ones (to
    ``max_sequence_length`` rows; 0 keeps L)."""
    tokens = np.asarray(tokens, dtype=np.float32)
    n, width = (len(tokens), tokens.shape[-1]) if tokens.ndim == 3 else (0, 0)
    tokens, length = _tokens({"text_tokens": tokens}, n, width, int(max_sequence_length))
    return _pad(tokens, length)


# --------------------------------------------------------------------------- generation


def generate(pipe, cond, clip_ids, cfg, seed, device="cpu", log=print):
    """Generate one video per clip id from decoded token embeddings with the Wan pipeline's own sampler.

    Parameters
    ----------
    pipe : diffusers.WanPipeline (or an object whose ``model`` is one)
        From :func:`load`.
    cond : dict of str -> ndarray
        ``text_tokens`` (N, L, D) decoded token embeddings (D = :func:`text_dim`, L <= ``max_sequence_length``);
        ``negative`` (L, D) decoded from the mean training fMRI when ``guidance_scale`` > 1 with
        ``negative: mean_train``.
    clip_ids : sequence of N str
        Clip ``i`` draws all its noise from ``torch.Generator().manual_seed(clip_seed(seed, clip_ids[i]))``.
    cfg : dict
        The ``generate.pipeline`` section (:data:`DEFAULTS`).
    seed : int
        Master seed (config ``seed``).
    device : str or torch.device
    log : callable
        Receives one line per batch: ``generate[wan]: batch k/K, clips i-j of N, s``.

    Returns
    -------
    uint8 ndarray (N, num_frames, height, width, 3)

    Raises
    ------
    InputError
        Missing or mis-shaped conditions, empty or duplicate clip ids.
    ConfigError
        Bad settings, or sizes the loaded pipeline cannot make.
    """
    import torch

    scfg = settings(cfg)
    pipe = _pipe(pipe)
    from fmrivid.generate.pipelines import check_clip_ids

    clip_ids = check_clip_ids(clip_ids)
    n = len(clip_ids)
    tokens, length = _tokens(cond, n, text_dim(pipe), scfg["max_sequence_length"])
    negative = _negative(pipe, cond, scfg, tokens.shape[1:], length)
    tokens = _pad(tokens, length)
    temporal = int(pipe.vae_scale_factor_temporal)
    if (scfg["num_frames"] - 1) % temporal:
        raise ConfigError(f"generate.pipeline.num_frames: expected {temporal}k+1 frames for this VAE; "
                          f"found {scfg['num_frames']}")
    multiple = int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size[1])
    if scfg["height"] % multiple or scfg["width"] % multiple:
        raise ConfigError(f"generate.pipeline.height/width: expected multiples of {multiple} for this pipeline; "
                          f"found {scfg['height']}x{scfg['width']}")
    device = torch.device(device)
    prepare(pipe, device, scfg)
    dtype = _torch_dtype(scfg["dtype"], device)
    bs = int(scfg["batch_size"])
    lane = 1 if (device.type == "cpu" and scfg["exact_cpu"]) else bs
    tokens_all = torch.from_numpy(np.ascontiguousarray(tokens))
    neg = None if negative is None else torch.from_numpy(np.ascontiguousarray(negative))
    out, t0, n_batches = [], time.perf_counter(), -(-n // bs)
    with torch.inference_mode():
        for bi, start in enumerate(range(0, n, bs)):
            stop = min(n, start + bs)
            gens = [torch.Generator().manual_seed(clip_seed(seed, c)) for c in clip_ids[start:stop]]
            videos = []
            for j in range(start, stop, lane):
                k = min(stop, j + lane) - j
                sampler = _sampler(pipe, _scheduler(pipe, scfg))
                frames = sampler(
                    prompt_embeds=tokens_all[j:j + k].to(device),
                    negative_prompt_embeds=None if neg is None else neg[None].expand(k, -1, -1).to(device),
                    height=scfg["height"], width=scfg["width"], num_frames=scfg["num_frames"],
                    num_inference_steps=scfg["steps"], guidance_scale=scfg["guidance_scale"],
                    generator=gens[j - start:j - start + k], max_sequence_length=length,
                    output_type="np", return_dict=False,
                )[0]
                videos.append(np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8))
            out.append(np.concatenate(videos))
            dt = time.perf_counter() - t0
            log(f"generate[wan]: batch {bi + 1}/{n_batches}, clips {start + 1}-{stop} of {n}, {dt:.1f} s "
                f"({dt / stop:.2f} s/clip, {scfg['steps']} steps, {scfg['num_frames']} frames "
                f"{scfg['height']}x{scfg['width']}, {str(dtype).replace('torch.', '')} on {device})")
    return np.concatenate(out)
