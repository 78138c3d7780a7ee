"""Stimulus features: frames sampled from videos and model embeddings of them.

``frames``
    :func:`~fmrivid.features.frames.extract_clip_frames`,
    :func:`~fmrivid.features.frames.extract_frames`: uint8 frame stacks.
``embed``
    :func:`~fmrivid.features.embed.image_embeddings` (CLIP image),
    :func:`~fmrivid.features.embed.text_embeddings` (sentence encoder or CLIP text),
    :func:`~fmrivid.features.embed.vae_latents` (AutoencoderKL latents),
    :func:`~fmrivid.features.embed.token_embeddings` (CLIPTextModel last_hidden_state).
``audio``
    :func:`~fmrivid.features.audio.wav2vec_embeddings`: wav2vec2 per TR window.
``flow``
    :func:`~fmrivid.features.flow.farneback_motion`: grid-averaged Farneback flow.

Models come from :func:`fmrivid.models.load`; results are stored with
:func:`fmrivid.io.h5.write_features`, with ``LoadedModel.info`` as attrs.
"""

from fmrivid.features.audio import tr_windows, wav2vec_embeddings
from fmrivid.features.embed import image_embeddings, text_embeddings, token_embeddings, vae_latents
from fmrivid.features.flow import farneback_motion
from fmrivid.features.frames import extract_clip_frames, extract_frames

__all__ = [
    "extract_clip_frames",
    "extract_frames",
    "farneback_motion",
    "image_embeddings",
    "text_embeddings",
    "token_embeddings",
    "tr_windows",
    "vae_latents",
    "wav2vec_embeddings",
]
