"""Audio-guided fusion (audio-guided seed): fMRI tokens attend to wav2vec2 audio tokens, feeding the motion decoder.

The fMRI sample becomes ``fmri_tokens`` tokens (as in :mod:`fmrivid.decoders.motion`); they are the
QUERIES of a cross-attention whose KEYS and VALUES are the clip's audio tokens (wav2vec2 embeddings, one
per TR window, standardised with the training rows' statistics, linearly projected, plus a position
embedding). The fused tokens ``fmri + attn(fmri, audio)`` (then a feed-forward layer, all pre-norm and
residual) replace the fMRI tokens as the motion decoder's cross-attention context.

``audio: false`` runs the very same code without the fusion block (the context is the fMRI tokens
alone), so "fMRI-only" and "fused" are reported side by side from one implementation.

**Leakage rule.** The audio of a clip is synthesized from its caption, so the test clips' audio
carries the test captions and must never be used. At test time each sample gets the audio of a
TRAINING clip instead: :func:`retrieve_audio` picks the training row whose text embedding is nearest
(cosine) to the sample's DECODED text embedding (the semantic decoder's prediction). The synthesized
audio is an engineered temporal prior, not a claim about the brain.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fmrivid.decoders import nnutil, registry
from fmrivid.decoders.motion import fit_predict_motion
from fmrivid.errors import ConfigError, InputError

__all__ = ["DEFAULTS", "AudioFusion", "retrieve_audio", "fit_predict"]

DEFAULTS = registry.defaults("fusion")  # settings and their descriptions: fmrivid/decoders/registry.py


class AudioFusion(nn.Module):
    """Cross-attention with fMRI tokens as queries and audio tokens as keys/values.

    Parameters
    ----------
    audio_shape : tuple (n_windows, D_audio)
        Audio tokens of one sample.
    width, heads : int
        Token width (the motion decoder's) and attention heads.
    """

    def __init__(self, audio_shape, width, heads):
        super().__init__()
        n_win, d_audio = (int(s) for s in audio_shape)
        self.scaler = nnutil.Standardizer((d_audio,))
        self.proj = nn.Linear(d_audio, width)
        self.pos = nn.Parameter(0.02 * torch.randn(n_win, width))
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_ff = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, fmri_tokens, audio):
        """fMRI tokens (B, n, width) and audio (B, n_windows, D_audio) -> fused tokens (B, n, width)."""
        kv = self.norm_kv(self.proj(self.scaler(audio)) + self.pos)
        h = fmri_tokens + self.attn(self.norm_q(fmri_tokens), kv, kv, need_weights=False)[0]
        return h + self.ff(self.norm_ff(h))


def retrieve_audio(pred_text, train_text, train_audio, return_index=False):
    """Audio tokens of the training row whose text embedding is nearest to each decoded text embedding.

    Parameters
    ----------
    pred_text : array (n_test, D)
        Decoded (predicted) text embeddings of the test samples, e.g. the semantic decoder's ``pred``.
    train_text : array (n_train, D)
        Text embeddings of the training rows (captions of training clips).
    train_audio : array (n_train, ...)
        Audio tokens of the same training rows.
    return_index : bool
        Also return the chosen training row of each test sample.

    Returns
    -------
    ndarray (n_test, ...) [, ndarray of int (n_test,)]
        Rows of ``train_audio`` only (nearest by cosine similarity; ties go to the first row).
    """
    pred = np.asarray(pred_text, dtype=np.float64)
    text = np.asarray(train_text, dtype=np.float64)
    audio = np.asarray(train_audio)
    if pred.ndim != 2 or text.ndim != 2 or pred.shape[1] != text.shape[1]:
        raise InputError("pred_text", f"a 2-D array with the width of train_text {text.shape[1:]}",
                         f"shape {pred.shape} (train_text {text.shape})")
    if len(audio) != len(text):
        raise InputError("train_audio", f"{len(text)} rows (one per train_text row)", f"{len(audio)} rows")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(text))):
        raise InputError("pred_text", "finite text embeddings", "NaN or inf")

    def unit(a):
        norm = np.linalg.norm(a, axis=1, keepdims=True)
        return a / np.where(norm > 0, norm, 1.0)

    index = np.argmax(unit(pred) @ unit(text).T, axis=1)
    return (audio[index], index) if return_index else audio[index]


def fit_predict(data, cfg, out_model, ckpt_dir=None, seed=0, device="cpu", log=print):
    """Fit the motion decoder with (``audio: true``) or without audio fusion and roll out the test clips.

    Parameters
    ----------
    data : dict of numpy arrays
        As :func:`fmrivid.decoders.motion.fit_predict` (``train_X``, ``test_X``, ``train_Y`` frame
        latents (n_train, T, C, h, w), ``test_first``), plus with ``audio: true``: ``train_audio``
        (n_train, n_windows, D) wav2vec2 tokens of the training rows and ``test_audio`` (n_test,
        n_windows, D), which MUST come from training clips (:func:`retrieve_audio`), never from the
        test clips' own audio.
    cfg : dict
        Keys of :data:`DEFAULTS`.
    out_model, ckpt_dir, seed, device, log
        See :func:`fmrivid.decoders.structure.fit_predict`.

    Returns
    -------
    dict
        ``pred`` float32 (n_test, T, C, h, w), ``history``, ``mode`` ("fused" or "fmri_only").
    """
    cfg = nnutil.resolve_config("fusion", DEFAULTS, cfg)
    if not isinstance(cfg["audio"], bool):
        raise ConfigError(f"decoders.fusion.audio: expected true or false; found {cfg['audio']!r}")
    make = AudioFusion if cfg["audio"] else None
    out = fit_predict_motion("fusion", data, cfg, out_model, ckpt_dir, seed, device, log, make_fusion=make)
    out["mode"] = "fused" if cfg["audio"] else "fmri_only"
    return out
