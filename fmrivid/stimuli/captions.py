"""Captions of stimulus clips: dataset metadata, or a captioning model on frames.

Sources (config ``features.captions.source``):

``metadata``
    The stimulus table's ``caption`` column; a clip without one stops the rule
    with an error naming the table and the clips.
``model``
    A captioner (BLIP-2 through transformers) on each clip's first and last
    frames, merged as ``"X, and then Y"`` (Mind-Animator).
``fill``
    Metadata where present, the captioner for the clips without one.
"""

from __future__ import annotations

import numpy as np

from fmrivid.errors import InputError

__all__ = ["SOURCES", "caption_images", "clip_captions", "merge_captions"]

SOURCES = ("metadata", "model", "fill")


def merge_captions(first, last):
    """Mind-Animator's clip caption: ``"X, and then Y"`` from first- and last-frame captions."""
    first, last = str(first).strip().rstrip("."), str(last).strip().rstrip(".")
    return f"{first}, and then {last}"


def caption_images(loaded, images, batch_size=16, max_new_tokens=20):
    """Caption images with a BLIP-2 model, batch by batch.

    Parameters
    ----------
    loaded : fmrivid.models.LoadedModel
        Kind ``"captioner"`` (``Blip2ForConditionalGeneration`` + ``Blip2Processor``).
    images : ndarray of uint8, shape (M, H, W, 3)
    batch_size : int
        Images per ``generate`` call.
    max_new_tokens : int
        Longest caption, in tokens.

    Returns
    -------
    list of str
        Greedy (deterministic) captions, special tokens removed.
    """
    import torch

    from fmrivid.features.embed import _batches, _check_batch_size, _check_uint8_images

    batch_size = _check_batch_size(batch_size)
    images = _check_uint8_images("images", images, 4)
    processor = loaded.processor
    device, dtype = loaded.device, loaded.dtype
    out = []
    with torch.inference_mode():
        for part in _batches(len(images), batch_size):
            pixels = processor(images=list(images[part]), return_tensors="pt")["pixel_values"]
            ids = loaded.model.generate(pixel_values=pixels.to(device, dtype), do_sample=False,
                                        num_beams=1, max_new_tokens=int(max_new_tokens))
            out += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    return out


def _missing(captions):
    return [i for i, c in enumerate(captions)
            if c is None or (isinstance(c, float) and np.isnan(c)) or not str(c).strip()]


def clip_captions(clip_ids, metadata, source="metadata", frames=None, captioner=None,
                  batch_size=16, max_new_tokens=20, table="<stimulus table>", log=print):
    """One caption per clip, from metadata or a captioner.

    Parameters
    ----------
    clip_ids : sequence of str
    metadata : sequence of str or None
        The stimulus table's captions (None / NaN / blank = missing).
    source : {"metadata", "model", "fill"}
    frames : ndarray of uint8, shape (N, T, H, W, 3), optional
        Needed when a captioner runs (first and last frames are captioned).
    captioner : fmrivid.models.LoadedModel, optional
        Kind ``"captioner"``; needed unless ``source == "metadata"``.
    table : str
        Named in errors.

    Returns
    -------
    captions : list of str
    sources : list of str
        ``"metadata"`` or ``"model"`` per clip.

    Raises
    ------
    InputError
        ``source`` is ``"metadata"`` and some clips have no caption.
    """
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {SOURCES}; found {source!r}")
    clip_ids = [str(c) for c in clip_ids]
    metadata = list(metadata)
    if len(metadata) != len(clip_ids):
        raise ValueError(f"metadata: {len(metadata)} captions for {len(clip_ids)} clips")
    missing = _missing(metadata)
    if source == "metadata" and missing:
        names = [clip_ids[i] for i in missing]
        raise InputError(table, "a caption for every clip (features.captions.source: metadata; "
                         "use 'fill' or 'model' to caption clips with a model)",
                         f"no caption for {len(names)} clips {names[:5]}")
    todo = list(range(len(clip_ids))) if source == "model" else missing
    captions = [str(c).strip() if i not in set(todo) else "" for i, c in enumerate(metadata)]
    sources = ["metadata"] * len(clip_ids)
    if todo:
        if captioner is None or frames is None:
            raise ValueError(f"clip_captions: source {source!r} needs frames and a captioner "
                             f"for {len(todo)} clips")
        selected = np.asarray(frames)[todo]
        pairs = np.concatenate([selected[:, 0], selected[:, -1]])
        log(f"captions: captioning first and last frames of {len(todo)} clips")
        text = caption_images(captioner, pairs, batch_size, max_new_tokens)
        for k, i in enumerate(todo):
            captions[i] = merge_captions(text[k], text[len(todo) + k])
            sources[i] = "model"
    return captions, sources
