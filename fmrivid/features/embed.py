"""Embed frames and captions with loaded models; encode images to VAE latents.

Every function runs the model on batches of ``batch_size`` items (one forward
pass per batch, no per-item loop), under ``torch.inference_mode()``, and
returns float32 numpy arrays on the CPU. On CUDA the image and text towers run
under float16 autocast; on CPU everything is float32 and deterministic.
"""

from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["image_embeddings", "text_embeddings", "token_embeddings", "vae_latents"]

_WHICH = ("middle", "first", "mean")


# --------------------------------------------------------------------------- helpers


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer; found {batch_size!r}")
    return int(batch_size)


def _check_uint8_images(name, array, ndim):
    array = np.asarray(array)
    shape = "(N, T, H, W, 3)" if ndim == 5 else "(N, H, W, 3)"
    if array.dtype != np.uint8 or array.ndim != ndim or array.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 array {shape}; "
                         f"found {array.dtype} array {array.shape}")
    return array


def _device_dtype(model):
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def _autocast(device):
    """float16 autocast on CUDA, nothing elsewhere."""
    import torch

    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _pooled(output):
    """transformers >= 5 returns a ModelOutput from get_*_features; older a tensor."""
    return output if hasattr(output, "shape") else output.pooler_output


def _batches(n, batch_size):
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _kind(loaded):
    info = getattr(loaded, "info", None) or {}
    if info.get("kind"):
        return info["kind"]
    return "clip" if hasattr(loaded.model, "get_text_features") else "text_encoder"


# --------------------------------------------------------------------------- images


def _clip_processor(loaded):
    if loaded.processor is not None:
        return loaded.processor
    from fmrivid.models import clip_image_processor

    return clip_image_processor(loaded.model.config.vision_config.image_size)


def _clip_image_features(loaded, images, batch_size):
    """CLIP image embeddings (projection outputs) of uint8 images (M, H, W, 3)."""
    import torch

    model = loaded.model
    device, dtype = _device_dtype(model)
    processor = _clip_processor(loaded)
    chunks = []
    with torch.inference_mode(), _autocast(device):
        for part in _batches(len(images), batch_size):
            pixels = torch.from_numpy(np.ascontiguousarray(images[part])).permute(0, 3, 1, 2)
            pixels = processor(images=pixels, return_tensors="pt",
                               input_data_format="channels_first")["pixel_values"]
            output = model.get_image_features(pixel_values=pixels.to(device, dtype))
            chunks.append(_pooled(output).float().cpu().numpy())
    if not chunks:
        return np.zeros((0, model.config.projection_dim), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def image_embeddings(loaded, frames, batch_size=32, which="middle"):
    """CLIP image embeddings of clips' frames.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel
        A ``"clip"`` model (its ``processor`` preprocesses the images).
    frames : ndarray of uint8, shape (N, T, H, W, 3)
    batch_size : int
        Images per forward pass.
    which : {"middle", "first", "mean"}
        Embed frame ``T // 2``, frame 0, or all frames and average their embeddings.

    Returns
    -------
    ndarray of float32, shape (N, D)
        Raw CLIP projections (``get_image_features``), not L2-normalised;
        ``D`` is the model's ``projection_dim``.
    """
    batch_size = _check_batch_size(batch_size)
    frames = _check_uint8_images("frames", frames, 5)
    if which not in _WHICH:
        raise ValueError(f"which: expected one of {_WHICH}; found {which!r}")
    if not hasattr(loaded.model, "get_image_features"):
        raise ValueError(f"image_embeddings: expected a 'clip' model; found "
                         f"{type(loaded.model).__name__}")
    n, t = frames.shape[:2]
    if which == "mean":
        flat = frames.reshape((n * t,) + frames.shape[2:])
        embeddings = _clip_image_features(loaded, flat, batch_size)
        return embeddings.reshape(n, t, -1).mean(axis=1, dtype=np.float64).astype(np.float32)
    index = 0 if which == "first" else t // 2
    return _clip_image_features(loaded, frames[:, index], batch_size)


# --------------------------------------------------------------------------- text


def _max_length(loaded):
    config = loaded.model.config
    config = getattr(config, "text_config", config)
    limits = [getattr(loaded.tokenizer, "model_max_length", None),
              getattr(config, "max_position_embeddings", None)]
    limits = [int(x) for x in limits if x is not None and x < 10**6]
    return min(limits) if limits else None


def _mean_pool_normalise(hidden, mask):
    """Sentence-transformers convention: masked mean over tokens, then L2 norm."""
    import torch

    mask = mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)
    mean = summed / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)


def _encode_text_batch(loaded, kind, tokens):
    if kind == "clip":
        output = loaded.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
        return _pooled(output)
    output = loaded.model(**tokens)
    return _mean_pool_normalise(output.last_hidden_state, tokens["attention_mask"])


def _text_dim(loaded, kind):
    config = loaded.model.config
    return config.projection_dim if kind == "clip" else config.hidden_size


def text_embeddings(loaded, captions, batch_size=64):
    """Embed captions with a sentence encoder or CLIP's text tower.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel
        Kind ``"text_encoder"``: masked mean pooling of the last hidden state,
        then L2 normalisation (the sentence-transformers convention). Kind
        ``"clip"``: CLIP text projections (``get_text_features``, not normalised).
    captions : sequence of str
    batch_size : int
        Captions per forward pass. Texts longer than the tokenizer's
        ``model_max_length`` (or the model's position limit) are truncated.

    Returns
    -------
    ndarray of float32, shape (N, D)
    """
    import torch

    batch_size = _check_batch_size(batch_size)
    captions = list(captions)
    bad = [i for i, c in enumerate(captions) if not isinstance(c, str)]
    if bad:
        raise ValueError(f"captions: expected strings; found {type(captions[bad[0]]).__name__} "
                         f"at index {bad[0]}")
    if loaded.tokenizer is None:
        raise ValueError("text_embeddings: the loaded model has no tokenizer")
    kind = _kind(loaded)
    device, _ = _device_dtype(loaded.model)
    max_length = _max_length(loaded)
    chunks = []
    with torch.inference_mode(), _autocast(device):
        for part in _batches(len(captions), batch_size):
            tokens = loaded.tokenizer(captions[part], padding=True, truncation=True,
                                      max_length=max_length, return_tensors="pt")
            tokens = {key: value.to(device) for key, value in tokens.items()}
            chunks.append(_encode_text_batch(loaded, kind, tokens).float().cpu().numpy())
    if not chunks:
        return np.zeros((0, _text_dim(loaded, kind)), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- latents


def _latent_shape(vae, height, width):
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return (vae.config.latent_channels, height // factor, width // factor)


def vae_latents(loaded_or_vae, images, batch_size=16):
    """Encode images to (deterministic) AutoencoderKL latents.

    Parameters
    ----------
    loaded_or_vae : fmrivid.models.LoadedModel or diffusers.AutoencoderKL
    images : ndarray of uint8, shape (N, H, W, 3)
        Scaled to [-1, 1] before encoding.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    ndarray of float32, shape (N, C, h, w)
        ``(latent_dist.mean - shift_factor) * scaling_factor`` (``shift_factor``
        only where the VAE's config defines one, e.g. SD3/Flux VAEs; SD-1/2
        VAEs give ``latent_dist.mean * scaling_factor``).
    """
    import torch

    batch_size = _check_batch_size(batch_size)
    images = _check_uint8_images("images", images, 4)
    vae = getattr(loaded_or_vae, "model", loaded_or_vae)
    if not hasattr(vae, "encode") or not hasattr(getattr(vae, "config", None), "scaling_factor"):
        raise ValueError(f"vae_latents: expected a diffusers AutoencoderKL; found "
                         f"{type(vae).__name__}")
    device, dtype = _device_dtype(vae)
    scale = float(vae.config.scaling_factor)
    shift = getattr(vae.config, "shift_factor", None)
    chunks = []
    with torch.inference_mode():
        for part in _batches(len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[part])).permute(0, 3, 1, 2)
            x = (x.to(torch.float32) / 127.5 - 1.0).to(device, dtype)
            mean = vae.encode(x).latent_dist.mean
            if shift is not None:
                mean = mean - float(shift)
            chunks.append((mean * scale).float().cpu().numpy())
    if not chunks:
        return np.zeros((0,) + _latent_shape(vae, *images.shape[1:3]), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- tokens


def token_embeddings(loaded, captions, batch_size=64, max_length=None):
    """Token-level text embeddings: the conditioning a text-to-video generator sees.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel
        Kind ``"text_tokens"`` (``CLIPTextModel`` and its tokenizer) or ``"umt5_tokens"`` (``UMT5EncoderModel``,
        the Wan generator's text encoder, and its tokenizer).
    captions : sequence of str
    batch_size : int
        Captions per forward pass.
    max_length : int, optional
        ``features.tokens.max_length``: keep the first ``max_length`` rows of what the generator's pipeline computes
        at its own length (the decoders then predict ``max_length x D`` values per clip). Default: all of them.

    Returns
    -------
    ndarray of float32, shape (N, L, D)
        CLIP: ``last_hidden_state`` of captions padded to ``model_max_length`` (77 for Stable Diffusion's CLIP), as
        diffusers pipelines pad them. UMT5 / T5: what ``WanPipeline.encode_prompt`` returns (512 rows: the states
        of the real tokens under the attention mask, then ZERO rows; :func:`fmrivid.generate.wan.text_embeddings`).
        ``L = max_length`` when given.

    Raises
    ------
    ConfigError
        ``features.tokens.max_length`` outside 1..L.
    """
    import torch

    from fmrivid.errors import ConfigError

    batch_size = _check_batch_size(batch_size)
    captions = list(captions)
    if any(not isinstance(c, str) for c in captions):
        raise ValueError("captions: expected strings")
    if loaded.tokenizer is None:
        raise ValueError("token_embeddings: the loaded model has no tokenizer")
    if getattr(loaded.model.config, "model_type", None) in ("umt5", "t5", "mt5"):  # the Wan generator's encoder
        from fmrivid.generate.wan import text_embeddings

        return text_embeddings(loaded.tokenizer, loaded.model, captions, max_length=max_length,
                               batch_size=batch_size)
    device, _ = _device_dtype(loaded.model)
    length = _max_length(loaded)
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer))
                                   or not 1 <= int(max_length) <= length):
        raise ConfigError(f"features.tokens.max_length: expected null or a number of tokens in 1..{length} (the "
                          f"text encoder's length); found {max_length!r}")
    keep = length if max_length is None else int(max_length)
    chunks = []
    with torch.inference_mode(), _autocast(device):
        for part in _batches(len(captions), batch_size):
            tokens = loaded.tokenizer(captions[part], padding="max_length", truncation=True,
                                      max_length=length, return_tensors="pt")
            hidden = loaded.model(input_ids=tokens["input_ids"].to(device)).last_hidden_state
            chunks.append(hidden[:, :keep].float().cpu().numpy())
    if not chunks:
        return np.zeros((0, keep, loaded.model.config.hidden_size), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
