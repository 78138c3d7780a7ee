"""wav2vec2 embeddings of clip audio, pooled per TR window aligned to TR centres.

Timing convention: a clip's audio starts at the clip onset ``t = 0``. Row ``j``
of a clip's embedding describes the TR window centred on ``(j + 0.5) * tr``:
the samples from ``(j + 0.5) * tr - window / 2`` to ``(j + 0.5) * tr + window / 2``
(zero outside the clip), where ``window = window_trs * tr``. Each window is
embedded on its own (one batch row per window), and the model's frames are
averaged over the window. Because a window sees only its own samples, moving
the audio by one TR moves the rows by exactly one (tested), whatever the model.
"""

from __future__ import annotations

import numpy as np

__all__ = ["tr_windows", "wav2vec_embeddings"]


def _check_positive(name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        raise ValueError(f"{name}: expected a positive number; found {value!r}")
    return value


def tr_windows(waveforms, rate, tr, window_trs=1.0):
    """Cut each clip's audio into windows centred on its TR centres.

    Parameters
    ----------
    waveforms : ndarray, shape (N, S)
        Audio of N clips of equal length, at ``rate`` Hz.
    rate : int
        Sampling rate (Hz).
    tr : float
        Repetition time (s); the clip gives ``round(S / (tr * rate))`` windows.
    window_trs : float
        Window length in TRs (1: the TR itself; 2: half a TR of context on each side).

    Returns
    -------
    ndarray of float32, shape (N, n_tr, W)
        ``W = round(window_trs * tr * rate)`` samples per window.
    """
    waveforms = np.asarray(waveforms, dtype=np.float32)
    if waveforms.ndim != 2:
        raise ValueError(f"waveforms: expected an array (N, samples); found shape {waveforms.shape}")
    rate = _check_positive("rate", rate)
    hop = _check_positive("tr", tr) * rate
    width = int(round(_check_positive("window_trs", window_trs) * hop))
    n_tr = int(round(waveforms.shape[1] / hop))
    if n_tr < 1:
        raise ValueError(f"waveforms: {waveforms.shape[1]} samples at {rate:g} Hz are shorter than "
                         f"half a TR ({tr:g} s)")
    starts = np.round((np.arange(n_tr) + 0.5) * hop - width / 2).astype(int)
    pad = width
    padded = np.pad(waveforms, ((0, 0), (pad, pad + width)))
    index = (starts + pad)[:, None] + np.arange(width)[None, :]
    return padded[:, index]


def wav2vec_embeddings(loaded, waveforms, rate, tr, window_trs=1.0, batch_size=32, layer=-1):
    """wav2vec2 embeddings of clip audio, one row per TR window.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel
        Kind ``"wav2vec2"`` (its ``processor`` is the feature extractor).
    waveforms : ndarray, shape (N, S)
        Mono audio of N clips of equal duration.
    rate : int
        Sampling rate of ``waveforms``; must equal the feature extractor's.
    tr, window_trs : float
        See :func:`tr_windows`.
    batch_size : int
        Windows per forward pass.
    layer : int
        Hidden state to pool (-1: the last; 0: the input of the transformer).

    Returns
    -------
    ndarray of float32, shape (N, n_tr, D)
        Mean over the model's frames (20 ms apart) inside each window.
    """
    import torch

    from fmrivid.features.embed import _batches, _check_batch_size

    batch_size = _check_batch_size(batch_size)
    expected = int(getattr(loaded.processor, "sampling_rate", rate))
    if int(rate) != expected:
        raise ValueError(f"wav2vec_embeddings: audio at {rate} Hz; the model expects {expected} Hz "
                         "(resample first)")
    windows = tr_windows(waveforms, rate, tr, window_trs)
    n, n_tr, width = windows.shape
    flat = windows.reshape(n * n_tr, width)
    model = loaded.model
    device, dtype = loaded.device, loaded.dtype
    chunks = []
    with torch.inference_mode():
        for part in _batches(len(flat), batch_size):
            inputs = loaded.processor(list(flat[part]), sampling_rate=expected, return_tensors="pt")
            values = inputs["input_values"].to(device, dtype)
            output = model(values, output_hidden_states=layer != -1)
            hidden = output.last_hidden_state if layer == -1 else output.hidden_states[layer]
            chunks.append(hidden.float().mean(dim=1).cpu().numpy())
    dim = model.config.hidden_size
    out = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return out.reshape(n, n_tr, dim).astype(np.float32, copy=False)
