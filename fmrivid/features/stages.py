"""Stages of rules/features.smk: frames, captions, audio and embeddings of every clip.

One function per rule, named as the rule: `workflow_scripts/run_stage.py` calls it with the rule's inputs
(by name), outputs (``out_<name>``) and params as keyword arguments. Testable without Snakemake.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path
from fmrivid.io.h5 import read_features, write_features
from fmrivid.io.splits import read_captions, read_splits


def clip_durations(events_paths, ids=None, splits_path=None):
    """Longest presentation of each clip in the runs' ``_events.tsv`` files (seconds).

    Parameters
    ----------
    events_paths : sequence of str or Path
        BIDS events files (``onset``, ``duration`` and ``clip_id`` or ``stim_file``; see
        :func:`fmrivid.io.bids.read_events`).
    ids : sequence of str, optional
        Clips that must all be presented (an error names those that are not).
    splits_path : str or Path, optional
        The splits file: its ``duration_s`` column (CC2017's 2-s clips of a segment movie, a layout without
        events files) gives the duration of clips no event names.

    Returns
    -------
    dict of str to float
    """
    from fmrivid.io.bids import read_events

    durations = {}
    for path in events_paths:
        events = read_events(path)
        for clip, value in events.groupby("clip_id")["duration"].max().items():
            durations[str(clip)] = max(float(value), durations.get(str(clip), 0.0))
    if splits_path is not None:
        table = read_splits(splits_path)
        if "duration_s" in table.columns:
            for clip, value in zip(table["clip_id"], table["duration_s"]):
                if str(clip) not in durations and pd.notna(value):
                    durations[str(clip)] = float(value)
    if ids is not None:
        absent = [c for c in ids if c not in durations]
        if absent:
            raise InputError(events_paths[0] if events_paths else "<events>",
                             "every clip presented in some run's events (or a duration_s in the stimulus table)",
                             f"no event for {len(absent)} clips {absent[:5]}")
    return durations


def _half_on_cuda(device):
    """Half precision on CUDA, float32 elsewhere."""
    return "float16" if str(device).startswith("cuda") else None


def _model_attrs(kind, loaded, **settings):
    """HDF5 attrs of a feature: model id, revision, dtype and settings."""
    return {"kind": kind, "model": loaded.info["spec"], "dtype": str(loaded.dtype).replace("torch.", ""),
            "settings": settings, **loaded.info}


def frames(splits_path, events_paths, n_frames, size, out_path, videos=(), log=print):
    """Lossless frames of every clip, cut to the clip's longest presentation in the events.

    A clip starts at the table's ``start_s`` (seconds into its file; 0 without the column) and lasts
    its event duration (else the table's ``duration_s``, else the whole video). ``videos``: the stimulus files
    (read through the splits' ``file`` column; inputs of the rule so that a changed movie reruns it).
    """
    from fmrivid.features.frames import extract_frames

    splits = read_splits(splits_path)
    durations = clip_durations(events_paths)
    fallback = splits["duration_s"] if "duration_s" in splits.columns else pd.Series(np.nan, splits.index)
    starts = splits["start_s"].astype(float) if "start_s" in splits.columns else 0.0
    table = splits.assign(duration=[durations.get(c, f) for c, f in zip(splits["clip_id"], fallback)],
                          start=starts)
    whole = table["duration"].isna()
    if whole.any():
        log(f"frames: {int(whole.sum())} clips never presented in the events; using their whole video")
        table = table.assign(duration=table["duration"].fillna(-1.0))
    ids, frames = extract_frames(table[~whole], ".", n_frames, size, "duration", start_col="start") \
        if (~whole).any() else ([], np.zeros((0, n_frames, size, size, 3), np.uint8))
    if whole.any():
        rest_ids, rest = extract_frames(table[whole], ".", n_frames, size, start_col="start")
        order = {c: i for i, c in enumerate(list(ids) + list(rest_ids))}
        rows = [order[c] for c in splits["clip_id"]]
        ids, frames = list(splits["clip_id"]), np.concatenate([frames, rest])[rows]
    write_features(out_path, ids, frames, {"kind": "frames", "n_frames": n_frames, "size": size,
                                           "dtype": "uint8", "storage": "lossless",
                                           "timing": "n_frames equal intervals of each clip's event duration"})
    log(f"frames: {frames.shape}")


def encoder_chunks(splits_path, chunk_frames, size, out_path, events_paths=(), videos=(), log=print):
    """The encoder-decoder's true chunks: ``chunk_frames`` consecutive frames of each clip at its video's frame rate.

    Same stimulus table and videos as :func:`frames`: a clip starts at the table's ``start_s`` (0 without the
    column); its chunk holds the frames from the one on screen at the start onward
    (:func:`fmrivid.features.frames.extract_chunks`), resized (area averaging) to ``size`` (``decode.encoder``
    ``chunk_frames`` and ``frame_size``), uint8. A video with fewer frames than ``chunk_frames`` from a clip's
    start is refused (InputError naming it); a chunk longer than its clip's presentation (events, else the
    table's ``duration_s``) is logged, as it runs into what followed on screen.
    """
    from fmrivid.features.frames import extract_chunks
    from fmrivid.io.h5 import feature_writer

    splits = read_splits(splits_path)
    starts = splits["start_s"].astype(float) if "start_s" in splits.columns else 0.0
    shape = (len(splits), int(chunk_frames), int(size), int(size), 3)
    with feature_writer(out_path, splits["clip_id"].astype(str), shape, np.uint8) as (dataset, attrs):
        # written frame by frame into the file: nothing held in memory (CC2017 at 32 x 112 px: 6.6 GB)
        ids, chunks, fps = extract_chunks(splits.assign(start=starts), ".", chunk_frames, size, start_col="start",
                                          log=log, out=dataset)
        attrs.update({"kind": "encoder_chunks", "n_frames": int(chunk_frames), "size": size, "dtype": "uint8",
                      "storage": "lossless", "fps": sorted(set(fps.values())),
                      "timing": "n_frames consecutive frames at the video's frame rate from the frame on screen "
                                "at the clip's start"})
    durations = clip_durations(events_paths, splits_path=splits_path)
    longer = [c for c in ids if c in durations and chunk_frames / fps[c] > durations[c] + 1e-6]
    if longer:
        log(f"encoder chunks: {len(longer)} clips are shorter than their chunk of {chunk_frames} frames "
            f"({chunk_frames / fps[longer[0]]:.3f} s at {fps[longer[0]]:g} fps vs {durations[longer[0]]:g} s for "
            f"{longer[0]!r}): their chunks run past the clip")
    log(f"encoder chunks: {shape} written to {out_path}")


def captions(splits_path, cfg, device, seed, out_path, frames_path=None, log=print):
    """Caption every clip (metadata or a captioner; see :mod:`fmrivid.stimuli.captions`)."""
    from fmrivid import models
    from fmrivid.stimuli.captions import clip_captions
    from fmrivid.devices import resolve_device

    splits = pd.read_csv(splits_path, sep="\t", dtype={"clip_id": str})
    metadata = splits["caption"].tolist() if "caption" in splits.columns else [None] * len(splits)
    frames = captioner = None
    if cfg["source"] != "metadata":
        _, frames, _ = read_features(frames_path, splits["clip_id"].tolist())
        device = resolve_device(device, log)
        captioner = models.load(cfg["model"], "captioner", seed=seed, device=device,
                                dtype=_half_on_cuda(device))
    captions, sources = clip_captions(splits["clip_id"], metadata, cfg["source"], frames, captioner,
                                      cfg["batch_size"], cfg["max_new_tokens"], table=splits_path, log=log)
    with atomic_path(out_path) as tmp:
        pd.DataFrame({"clip_id": splits["clip_id"], "caption": captions, "source": sources}).to_csv(
            tmp, sep="\t", index=False)
    log(f"captions: {sources.count('metadata')} from metadata, {sources.count('model')} from "
        f"{cfg['model'] if captioner is not None else 'no model'}")


def _caption_embeddings(captions_path, model, kind, embed, batch_size, device, seed, log):
    """(captions table, loaded model, embeddings) of every caption with model ``kind`` and function ``embed``."""
    from fmrivid import models
    from fmrivid.devices import resolve_device

    captions = read_captions(captions_path)
    loaded = models.load(model, kind, seed=seed, device=resolve_device(device, log))
    return captions, loaded, embed(loaded, captions["caption"].tolist(), batch_size=batch_size)


def text_features(captions_path, model, batch_size, device, seed, out_path, log=print):
    """Caption embeddings (``features.text_model``): the decoders' text target."""
    from fmrivid.features.embed import text_embeddings

    captions, loaded, emb = _caption_embeddings(captions_path, model, "text_encoder", text_embeddings, batch_size,
                                                device, seed, log)
    write_features(out_path, captions["clip_id"], emb, {"kind": "text", **loaded.info})
    log(f"text embeddings {emb.shape} from {loaded.info['resolved']}")


def clip_text_features(captions_path, model, batch_size, device, seed, out_path, log=print):
    """CLIP text embeddings of the captions (same CLIP as the image features)."""
    from fmrivid.features.embed import text_embeddings

    captions, loaded, emb = _caption_embeddings(captions_path, model, "clip", text_embeddings, batch_size, device,
                                                seed, log)
    write_features(out_path, captions["clip_id"], emb, _model_attrs("clip_text", loaded, batch_size=batch_size))
    log(f"CLIP text embeddings {emb.shape} from {loaded.info['resolved']}")


def token_features(captions_path, model, batch_size, device, seed, out_path, kind="text_tokens", max_length=None,
                   log=print):
    """Token-level text embeddings of the generator's own text encoder: its conditioning, the decoders' target.

    ``model`` (``features.tokens.model``) is loaded as ``kind``, the text encoder of ``generate.method``'s generator
    (:func:`fmrivid.generate.methods.token_kind`): ``text_tokens`` (CLIPTextModel ``last_hidden_state``, padded to
    77 tokens as diffusers pipelines pad) or ``umt5_tokens`` (the Wan generator's UMT5: what ``WanPipeline`` conditions
    on, the real tokens' states then zero rows). The width D is the encoder's, so the decoded target follows the
    chosen text encoder. ``max_length`` (``features.tokens.max_length``): keep the first rows only (null: all).
    """
    from functools import partial

    from fmrivid.errors import ConfigError
    from fmrivid.features.embed import token_embeddings

    if kind not in ("text_tokens", "umt5_tokens"):
        raise ConfigError(f"token_features kind: expected 'text_tokens' or 'umt5_tokens'; found {kind!r}")
    embed = partial(token_embeddings, max_length=max_length)
    try:
        captions, loaded, emb = _caption_embeddings(captions_path, model, kind, embed, batch_size, device, seed, log)
    except ConfigError as err:
        if str(err).startswith("features.tokens."):
            raise
        encoder = "a T5-family (UMT5) text encoder" if kind == "umt5_tokens" else "a CLIP text encoder"
        raise ConfigError(f"features.tokens.model: expected {encoder}, the text encoder of generate.method's "
                          f"generator (loaded as kind {kind!r}); found {model!r}: {err}") from err
    write_features(out_path, captions["clip_id"], emb,
                   _model_attrs("text_tokens", loaded, batch_size=batch_size, max_length=emb.shape[1]))
    if kind == "umt5_tokens" and len(emb):  # zero rows follow the real tokens: a non-zero last row may be cut
        full = int(np.count_nonzero(np.abs(emb[:, -1]).sum(-1)))
        log(f"{full} of {len(emb)} captions fill all {emb.shape[1]} token rows (features.tokens.max_length; longer "
            f"captions lose their further tokens)")
    log(f"token embeddings {emb.shape} from {loaded.info['resolved']} ({type(loaded.model).__name__})")


def image_features(frames_path, model, which, batch_size, device, seed, out_path, log=print):
    from fmrivid import models
    from fmrivid.features.embed import image_embeddings
    from fmrivid.devices import resolve_device

    ids, frames, _ = read_features(frames_path)
    loaded = models.load(model, "clip", seed=seed, device=resolve_device(device, log))
    emb = image_embeddings(loaded, frames, batch_size=batch_size, which=which)
    write_features(out_path, ids, emb, {"kind": "image", "frame": which, **loaded.info})
    log(f"image embeddings {emb.shape} from {loaded.info['resolved']}")


def vae_features(frames_path, vae, batch_size, device, out_path, frames="first", vae_dir=None, log=print):
    """Scaled VAE latents of each clip's first frame (flattened rows) or of all its frames.

    ``vae`` is a model spec (``features.vae_model``); ``vae_dir``, when given, is the demo generator's trained VAE
    (``features.vae_model: generator``) and is used instead.
    """
    vae = vae_dir or vae
    from fmrivid import models
    from fmrivid.features.embed import vae_latents
    from fmrivid.devices import resolve_device

    if frames not in ("first", "all"):
        raise ValueError(f"frames: expected 'first' or 'all'; found {frames!r}")
    ids, video, _ = read_features(frames_path)
    device = resolve_device(device, log)
    loaded = models.load(vae, "vae", device=device, dtype=_half_on_cuda(device))
    images = video[:, 0] if frames == "first" else video.reshape((-1,) + video.shape[2:])
    lat = vae_latents(loaded, images, batch_size=batch_size)
    if frames == "first":
        out, kind = lat.reshape(len(ids), -1), "vae_first_frame"
    else:
        out, kind = lat.reshape(video.shape[:2] + lat.shape[1:]), "vae_all_frames"
    write_features(out_path, ids, out.astype(np.float32),
                   {**_model_attrs(kind, loaded, batch_size=batch_size, frames=frames,
                                   scaling_factor=float(loaded.model.config.scaling_factor)),
                    "vae": str(vae), "latent_shape": list(lat.shape[1:])})
    log(f"{kind} VAE latents {out.shape}")



def vae_video_features(frames_path, vae, batch_size, device, out_path, vae_dir=None, log=print):
    """Scaled VAE latents of every frame of each clip (see :func:`vae_features`)."""
    vae_features(frames_path, vae, batch_size, device, out_path, frames="all", vae_dir=vae_dir, log=log)

def audio(captions_path, events_paths, cfg, device, seed, out_dir, log=print, splits_path=None):
    """AudioLDM 2 (``cfg['pipeline']`` audioldm2, default) or AudioLDM (audioldm: the seed's, deprecated
    upstream): one WAV per clip caption, of the clip's duration, seeded per clip; audio.tsv records the
    pipeline (``pipeline``, ``pipeline_class``), model and revision of every clip."""
    from fmrivid import models
    from fmrivid.stimuli.audio import PIPELINES, check_model, synthesize, write_wavs
    from fmrivid.devices import resolve_device
    from fmrivid.utils import clip_seed

    pipeline = cfg.get("pipeline", "audioldm2")
    check_model(cfg["model"], pipeline)  # a model of the other pipeline: ConfigError naming both keys
    captions = read_captions(captions_path)
    ids = captions["clip_id"].tolist()
    durations = clip_durations(events_paths, ids, splits_path)
    values = sorted({round(durations[c], 6) for c in ids})
    if len(values) > 1:
        raise InputError(events_paths[0], "clips of one duration (audio features are stacked per clip)",
                         f"durations {values[:5]} s")
    device = resolve_device(device, log)
    entry = PIPELINES[pipeline]
    log(f"audio: features.audio.pipeline {entry['label']}")
    loaded = models.load(cfg["model"], entry["kind"], seed=seed, device=device, dtype=_half_on_cuda(device))
    seeds = [clip_seed(seed, c) for c in ids]
    audio, rate = synthesize(loaded, captions["caption"].tolist(), seeds, values[0], cfg["steps"],
                             cfg["guidance_scale"], cfg["batch_size"], log=log, exact_cpu=cfg.get("exact_cpu", True))
    with atomic_path(out_dir) as tmp:
        write_wavs(tmp, ids, audio, rate)
        pd.DataFrame({"clip_id": ids, "file": [f"{c}.wav" for c in ids], "seed": seeds,
                      "duration": values[0], "rate": rate, "pipeline": pipeline, "pipeline_class": entry["class"],
                      "model": loaded.info["spec"], "revision": str(loaded.info["revision"])}).to_csv(
            tmp / "audio.tsv", sep="\t", index=False)
    log(f"audio: {len(ids)} clips of {values[0]:g} s at {rate} Hz from {loaded.info['resolved']} "
        f"({entry['label']})")


def wav2vec_features(audio_dir, cfg, tr, device, seed, out_path, log=print):
    """wav2vec2 embeddings of the synthesized audio: ``cfg['tokens_per_tr']`` rows per TR (default 1), windows
    centred on the centres of those TR fractions (sub-TR audio tokens for the fusion decoder's cross-attention)."""
    from fmrivid import models
    from fmrivid.features.audio import wav2vec_embeddings
    from fmrivid.stimuli.audio import read_wavs
    from fmrivid.devices import resolve_device

    index = pd.read_csv(Path(audio_dir) / "audio.tsv", sep="\t", dtype={"clip_id": str})
    ids = index["clip_id"].tolist()
    device = resolve_device(device, log)
    loaded = models.load(cfg["model"], "wav2vec2", seed=seed, device=device, dtype=_half_on_cuda(device))
    rate = int(getattr(loaded.processor, "sampling_rate", 16000))
    audio, rate = read_wavs(audio_dir, ids, rate=rate)
    per_tr = int(cfg.get("tokens_per_tr", 1))
    hop = float(tr) / per_tr  # windows are cut per hop, window_trs hops long
    emb = wav2vec_embeddings(loaded, audio, rate, hop, cfg["window_trs"], cfg["batch_size"], cfg["layer"])
    write_features(out_path, ids, emb, _model_attrs("wav2vec2", loaded, tr=tr, tokens_per_tr=per_tr,
                                                    window_trs=cfg["window_trs"], layer=cfg["layer"],
                                                    rows=f"windows centred on (j + 0.5) * {hop:g} s after clip onset"))
    log(f"wav2vec2 embeddings {emb.shape} from {loaded.info['resolved']}")


def flow_features(frames_path, cfg, out_path, log=print):
    """Farneback optical flow between consecutive frames, averaged on a grid."""
    from fmrivid.features.flow import FARNEBACK, farneback_motion

    ids, frames, _ = read_features(frames_path)
    flow = farneback_motion(frames, cfg["grid"], log=log)
    write_features(out_path, ids, flow, {"kind": "flow_farneback", "model": "opencv",
                                         "revision": __import__("cv2").__version__, "dtype": "float32",
                                         "settings": {"grid": cfg["grid"], **FARNEBACK},
                                         "units": "pixels per frame at the frames' size"})
    log(f"flow {flow.shape}")
