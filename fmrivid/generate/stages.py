"""Stages of rules/generate.smk: the demo generator, diffusers generation in chunks, merging.

One function per rule, named as the rule: `workflow_scripts/run_stage.py` calls it with the rule's inputs
(by name), outputs (``out_<name>``) and params as keyword arguments. Testable without Snakemake.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmrivid.errors import ConfigError, InputError
from fmrivid.generate.methods import DIFFUSERS_DECODED, METHODS
from fmrivid.io.h5 import read_features, write_features
from fmrivid.io.splits import chunk_rows, clip_ids, read_splits
from fmrivid.io.video import write_clip_mp4s


def _generator_cfg(cfg):
    from fmrivid.generate.demo import default_config

    full = default_config()
    for part in ("vae", "unet", "sample"):
        unknown = set(cfg.get(part, {})) - set(full[part])
        if unknown:
            from fmrivid.errors import ConfigError

            raise ConfigError(f"unknown config key(s) generate.{part}.{sorted(unknown)} "
                              f"(expected some of {sorted(full[part])})")
        full[part].update(cfg.get(part, {}))
    return full


def train_demo_vae(frames_path, splits_path, cfg, seed, out_dir, log=print):
    from fmrivid.generate.demo import train_vae
    from fmrivid.devices import resolve_device

    train = clip_ids(read_splits(splits_path), "train")
    _, frames, _ = read_features(frames_path, train)
    train_vae(frames, out_dir, _generator_cfg(cfg), seed=seed, device=resolve_device(cfg["device"], log), log=log)


def train_demo_unet(frames_path, text_path, splits_path, vae_dir, cfg, seed, out_dir, log=print):
    from fmrivid.generate.demo import train_unet
    from fmrivid.devices import resolve_device

    train = clip_ids(read_splits(splits_path), "train")
    _, frames, _ = read_features(frames_path, train)
    _, cond, _ = read_features(text_path, train)
    train_unet(frames, cond, vae_dir, out_dir, _generator_cfg(cfg), seed=seed,
               device=resolve_device(cfg["device"], log), log=log)


def prepare_condition(pred):
    """Decoded caption embeddings -> generator condition (unit norm, like the training captions)."""
    norm = np.linalg.norm(pred, axis=1, keepdims=True)
    return (pred / np.maximum(norm, 1e-8)).astype(np.float32)



def generate_chunk(cfg, seed, out_path, chunk=0, n_total=None, shuffle=False, log=print, pred_path=None, vae_dir=None,
                   diffusion_dir=None, token_model=None, fmri_path=None, pipeline=None, method=None, sources=None,
                   vae_model=None, **decoded):
    """Videos of one chunk of test clips from their decoded features (lossless uint8, one row per clip).

    Chunk ``chunk`` holds the test clips ``[chunk * cfg['chunk_size'], ...)`` in the prediction file's order;
    ``n_total`` (the number of test clips the workflow planned) is checked against the file. With ``shuffle``
    the generator is fed the decoded features of other clips (one seeded derangement over all test clips):
    the control that shows generation follows the brain, not the generator's prior.

    ``cfg['method'] == 'demo'`` uses ``pred_path`` (decoded caption embeddings), ``vae_dir`` and
    ``diffusion_dir``; the diffusers methods dispatch to :func:`generate_diffusers` with the decoded inputs
    (keywords named as in :data:`DIFFUSERS_DECODED`), ``token_model``, ``fmri_path`` and ``pipeline``.

    ``method``: the name this chunk is evaluated under (a ``generate.variants`` name, ``_shuffled`` for the
    control; default ``cfg['method']``). ``sources``: decoded keyword -> dataset of its prediction file
    (default ``features``; e.g. ``tokens`` of the semantic decoder, ``fmri_only`` of the fusion decoder).

    ``vae_model`` (``features.vae_model``, passed for keyframe methods such as ``image_to_video``): the VAE that
    decodes the decoded first-frame latent to the keyframe image; ``vae_dir`` instead when it is the demo
    generator's trained VAE (``features.vae_model: generator``).
    """
    from fmrivid.errors import InputError

    name = method or cfg["method"] + ("_shuffled" if shuffle else "")
    sources = dict(sources or {})
    if cfg["method"] != "demo":
        return generate_diffusers(decoded, token_model, fmri_path, cfg, seed, out_path, chunk=chunk,
                                  n_total=n_total, shuffle=shuffle, pipeline=pipeline, log=log, name=name,
                                  sources=sources, keyframe_vae=vae_dir or vae_model)
    from fmrivid.generate.demo import generate
    from fmrivid.metrics.stats import derangement
    from fmrivid.devices import resolve_device
    from fmrivid.utils import clip_seed

    ids, pred, _ = read_features(pred_path, dataset=sources.get("pred_path", "features"))
    if n_total is not None and len(ids) != int(n_total):
        raise InputError(pred_path, f"{n_total} test clips (the number the workflow planned its chunks for)",
                         f"{len(ids)}")
    if shuffle and shuffled_kinds(cfg, "demo", "pred_path"):
        pred = pred[derangement(len(ids), seed)]
    rows = chunk_rows(len(ids), chunk, cfg["chunk_size"])
    ids, pred = list(ids[rows]), pred[rows]
    full = _generator_cfg(cfg)
    seeds = [clip_seed(seed, c) for c in ids]
    log(f"chunk {chunk}: {len(ids)} test clips ({ids[0]} .. {ids[-1]}){' with SHUFFLED features' if shuffle else ''}")
    video = generate(vae_dir, diffusion_dir, prepare_condition(pred), seeds, full["sample"],
                     device=resolve_device(cfg["device"], log), log=log)
    write_features(out_path, ids, video, {"method": name, "inputs": json.dumps({"caption": f"{pred_path}"
                                          f"[{sources.get('pred_path', 'features')}]"}),
                                          "condition": cfg["condition"], "chunk": int(chunk),
                                          "shuffled_features": bool(shuffle),
                                          "seeds": json.dumps(seeds), "storage": "lossless uint8"})
    log(f"generated {video.shape}")




def shuffled_kinds(cfg, method, key):
    """Whether the shuffled control deranges decoded input ``key`` of ``method``: ``generate.shuffled_inputs``
    lists the kinds it deranges (caption, tokens, first, frames; empty: all of them)."""
    from fmrivid.generate.methods import METHODS

    only = list(cfg.get("shuffled_inputs") or [])
    return not only or METHODS[method].decoded.get(key) in only


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
    ``features/vae_frames.h5``, and the latents of the decoders it sits beside must be the generator's), except
    the keyframe methods (:data:`fmrivid.generate.methods.METHODS` ``keyframe``, e.g. ``image_to_video``): their
    decoded first-frame latent is decoded to an RGB image by ``features.vae_model`` itself before generation, and
    the generator (Stable Video Diffusion) encodes that image with its own CLIP image encoder and VAE, so no latent
    of one VAE ever reaches another's decoder; and the methods whose generator never sees ``features.vae_model``
    latents (``vae_latents`` false: ``wan``, conditioned on tokens only, its causal 3-D VAE not fine-tuned).
    """
    declared = METHODS.get(generate_cfg["method"])
    if generate_cfg["method"] == "demo" or (declared is not None and (declared.keyframe or not declared.vae_latents)):
        return
    model = generate_cfg.get("pipeline", {}).get("model", "tiny")
    want = pipeline_vae_spec(model)
    if str(vae_model) != want:
        raise ConfigError(f"features.vae_model {vae_model!r} disagrees with generate.pipeline.model {model!r}: "
                          f"generate.method {generate_cfg['method']!r} denoises the latents of its own VAE, so "
                          f"features.vae_model must be {want!r}")


def check_pipeline(generate_cfg):
    """Validate ``generate.pipeline`` for ``generate.method`` when the DAG plans, not when a generate job starts.

    The shared keys (:func:`fmrivid.generate.pipelines.settings`) and the generator backend's own constraints
    (AnimateDiff, Stable Video Diffusion, Wan: e.g. Wan's 4k+1 frames and sizes multiple of 16) are checked by the
    same functions the generate job calls, so a bad value fails at ``snakemake -n`` naming its key.

    Raises
    ------
    ConfigError
        Naming the ``generate.pipeline`` key, what was expected and what was found.
    """
    from fmrivid.generate import pipelines

    method = generate_cfg["method"]
    declared = METHODS.get(method)
    if method == "demo" or declared is None or not declared.diffusers:
        return
    scfg = pipelines.settings(dict(generate_cfg.get("pipeline", {})), method=method)
    scfg["scheduler"] = pipelines.scheduler_name(scfg)  # 'auto' resolved to the method's, as pipelines.generate does
    backend = {"animatediff": pipelines.animatediff_settings, "image_to_video": pipelines.svd_settings,
               "wan": pipelines.wan_settings}.get(declared.generator)
    if backend is not None:
        backend(scfg)


def check_finetune(generate_cfg, neural=()):
    """Raise ConfigError when ``generate.finetune.enabled`` asks to fine-tune a generator fmrivid cannot.

    Fine-tuning (:mod:`fmrivid.generate.finetune`) trains the UNet of a text-to-video generator (ModelScope's
    UNet3D) or of AnimateDiff (methods ``animatediff`` / ``neuroclips``: the SD1.5 UNet + motion modules) on the
    training clips, or the transformer of Wan (method ``wan``: flow matching on its causal 3-D VAE's latents of
    the training clips' frames); the text-to-image generator of ``image_img2img`` (Stable Diffusion) and Stable
    Video Diffusion are used as pretrained, as in seed 003. Co-training
    (``finetune.cotrain``, :mod:`fmrivid.generate.cotrain`) needs GLFA's flat maps and settings: ``align`` in
    ``decode.neural`` (``neural``), and a text-to-video generator.
    """
    method = generate_cfg["method"]
    if method == "demo" or not generate_cfg.get("finetune", {}).get("enabled", False):
        return
    if generate_cfg["finetune"].get("cotrain") and "align" not in list(neural):
        raise ConfigError(f"generate.finetune.cotrain: expected 'align' in decode.neural (co-training aligns the "
                          f"subjects' flat maps with GLFA); found decode.neural {list(neural)}")
    declared = METHODS.get(method)
    kind = declared.generator if declared is not None else None
    if kind not in ("text_to_video", "animatediff", "wan"):
        raise ConfigError(f"generate.finetune.enabled: expected false with generate.method {method!r} (its "
                          f"{kind} generator is used pretrained; fine-tuning trains text-to-video, AnimateDiff and "
                          f"Wan generators only); found true")
    if generate_cfg["finetune"].get("cotrain") and kind != "text_to_video":
        raise ConfigError(f"generate.finetune.cotrain: expected a text-to-video generator (GLFA co-trains "
                          f"ModelScope's UNet3D); found generate.method {method!r} ({kind})")


def _decoded_rows(path, key, log, dataset="features"):
    """Decoded features of one kind: ids, rows and the per-row shape recorded by the decoder (or None)."""
    ids, arr, attrs = read_features(path, dataset=dataset)
    shape = attrs.get("feature_shape") if dataset == "features" else None
    shape = tuple(json.loads(shape)) if shape else (tuple(arr.shape[1:]) if arr.ndim > 2 else None)
    log(f"decoded {key}: {path}[{dataset}] {arr.shape}" + (f" rows of {shape}" if shape else ""))
    return [str(c) for c in ids], arr, shape


def generate_diffusers(decoded, token_model, fmri_path, cfg, seed, out_path, chunk=0, n_total=None,
                       shuffle=False, pipeline=None, log=print, name=None, sources=None, keyframe_vae=None):
    """One chunk of test clips generated by the diffusers pipeline from decoded features.

    Parameters
    ----------
    decoded : dict of str -> path
        Prediction files of the test clips, keys of :data:`DIFFUSERS_DECODED` ``[cfg['method']]``
        (``text_tokens``; ``first_frame`` + ``motion``; ``vae``: the first-frame latent for two_stage, the
        frame latents for image_img2img), all with the same clip ids in the same order.
    token_model : path
        The ridge model (safetensors) of ``text_tokens``: applied to the mean TRAINING fMRI for the
        negative condition of guidance (``pipeline.negative: mean_train``).
    fmri_path : path
        The subject's ``fmri/sub-XX.h5`` (only its training rows are read).
    cfg : dict
        The ``generate`` section: ``method``, ``device``, ``chunk_size``, ``pipeline`` (keys of
        ``fmrivid.generate.pipelines.DEFAULTS`` except ``method``). ``pipeline.model`` is loaded as the
        method's generator kind (:mod:`fmrivid.generate.methods`: ``text_to_image`` for image_img2img, sampled
        by :mod:`fmrivid.generate.image`; ``text_to_video`` otherwise).
    seed : int
    out_path : path
        uint8 (N, T, H, W, 3), lossless, attrs like the demo generator's.
    chunk, n_total, shuffle :
        As :func:`generate_chunk`; the shuffled control applies ONE derangement of all test clips to
        every decoded input (tokens and latents alike), so each clip gets all of another clip's features.
    pipeline : path, optional
        A fine-tuned ``save_pretrained`` pipeline; default ``cfg['pipeline']['model']``.
    name, sources :
        As :func:`generate_chunk`. Tokens from a neural decoder's dataset ``<d>`` come with ``negative_<d>`` (its
        decoding of the mean training fMRI), used instead of ``token_model`` for the negative condition.
    keyframe_vae : str or path, optional
        Keyframe methods (``image_to_video``, no tokens, no negative): the ``features.vae_model`` spec (or the
        demo VAE folder) that decodes the decoded first-frame latents to the keyframe images the generator takes
        (:func:`fmrivid.generate.svd.decode_keyframes`); recorded in the output attrs (``keyframe_vae``).
    """
    from fmrivid.decoders.ridge import RidgeCV
    from fmrivid.generate import pipelines
    from fmrivid.metrics.stats import derangement
    from fmrivid.preprocess.pipeline import read_subject
    from fmrivid.devices import resolve_device
    from fmrivid.utils import clip_seed

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
        kid, arr, shape = _decoded_rows(decoded[key], key, log, dataset=sources.get(key, "features"))
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
        rows_by_key = {k: v[perm] if shuffled_kinds(cfg, method, k) else v for k, v in rows_by_key.items()}
        log(f"shuffled control: deranged {[k for k in rows_by_key if shuffled_kinds(cfg, method, k)]}")
    rows = chunk_rows(len(ids), chunk, cfg["chunk_size"])
    ids = ids[rows]
    device = resolve_device(cfg["device"], log)
    negative = None
    token_source = sources.get("text_tokens", "features")
    # the mean-training-fMRI negative: every diffusers method but image_to_video (no tokens, image guidance)
    mean_train = "text_tokens" in need and pcfg["negative"] == "mean_train" and float(pcfg["guidance_scale"]) > 1.0
    if mean_train and token_source != "features":
        negative = read_features(decoded["text_tokens"], dataset=f"negative_{token_source}")[1][0]
        log(f"negative: negative_{token_source} of {decoded['text_tokens']} (the decoder's reading of the mean "
            "training fMRI)")
    elif mean_train:
        sub = read_subject(fmri_path)
        ridge = RidgeCV.load(token_model)
        negative = pipelines.mean_train_negative(ridge.predict, sub["train_X"])  # training rows only
        log(f"negative: text_tokens decoded from the mean of {len(sub['train_X'])} training fMRI samples")
    latent_shape = next((shapes[k][-3:] for k in need if k != "text_tokens" and shapes[k] and len(shapes[k]) >= 3),
                        None)
    keyframe_attrs = {}
    if METHODS[method].keyframe:  # the decoded first-frame latents -> RGB keyframes, by features.vae_model
        from fmrivid.generate.svd import decode_keyframes

        if keyframe_vae is None:
            raise InputError("keyframe_vae", f"the features.vae_model spec that decodes the keyframe latents "
                             f"(generate.method {method!r})", "None")
        inputs = {"keyframe": decode_keyframes(rows_by_key["first_frame"][rows], keyframe_vae, device=device,
                                               latent_shape=latent_shape)}
        keyframe_attrs = {"keyframe_vae": str(keyframe_vae)}
        log(f"keyframes: {inputs['keyframe'].shape} decoded from the first-frame latents by features.vae_model "
            f"{str(keyframe_vae)!r}")
    else:
        inputs = pipelines.generation_inputs(method, {k: v[rows] for k, v in rows_by_key.items()}, negative=negative,
                                             token_shape=shapes["text_tokens"], latent_shape=latent_shape)
    spec = str(pipeline) if pipeline else pcfg["model"]
    log(f"chunk {chunk}: {len(ids)} test clips ({ids[0]} .. {ids[-1]}) with {method} from {spec}"
        f"{' with SHUFFLED features' if shuffle else ''}")
    # Weights seed 0, as for every feature model (the tiny VAE of features.vae_model 'tiny#vae' is this one's).
    loaded = pipelines.load_pipeline(spec, pcfg, seed=0, device=device)
    video = pipelines.generate(loaded, method, inputs, ids, pcfg, seed, device=device, log=log)
    seeds = [clip_seed(seed, c) for c in ids]
    write_features(out_path, ids, video, {"method": name or method + ("_shuffled" if shuffle else ""),
                                          "inputs": json.dumps({k: f"{decoded[k]}[{sources.get(k, 'features')}]"
                                                                for k in need}),
                                          "condition": "keyframe" if keyframe_attrs else "text_tokens",
                                          "chunk": int(chunk), "shuffled_features": bool(shuffle), "generator": spec,
                                          "seeds": json.dumps(seeds), "storage": "lossless uint8",
                                          **keyframe_attrs})
    log(f"generated {video.shape}")


def finetune_generator(tokens_path, splits_path, cfg, seed, out_dir, vae_frames_path=None, frames_path=None,
                       log=print):
    """Fine-tune the diffusers generator on the TRAINING clips (latents + caption token embeddings).

    Parameters
    ----------
    vae_frames_path : path
        ``features/vae_frames.h5`` (scaled latents of every frame, from the generator's own VAE); every generator
        but Wan.
    frames_path : path
        ``features/frames.h5``: Wan (method ``wan``) encodes the training clips' frames with its own causal 3-D VAE
        (:func:`fmrivid.generate.wan.training_latents`).
    tokens_path : path
        ``features/text_tokens.h5``.
    splits_path : path
        Only the ``train`` clips are read from either file.
    cfg : dict
        The ``generate`` section (``method``, ``device``, ``pipeline``, ``finetune``). ``method`` (default
        ``text_to_video``) chooses the generator kind ``pipeline.model`` is loaded as
        (:func:`fmrivid.generate.pipelines.load_pipeline`): a text-to-video UNet3D (ModelScope), or for
        ``animatediff`` / ``neuroclips`` an AnimateDiff pipeline (``pipeline.motion_adapter``), whose training noise
        uses the sampler's betas (``pipeline.beta_schedule``, :func:`fmrivid.generate.animatediff.scheduler`), or
        for ``wan`` a WanPipeline (flow matching with the sampler's ``flow_shift``; tokens zero-padded to
        ``pipeline.max_sequence_length``). Other methods raise ConfigError (:func:`check_finetune`).
    out_dir : path
        A ``save_pretrained`` pipeline folder (written atomically by ``finetune``), loaded back by generation as
        ``pipeline`` (:func:`generate_diffusers`).
    """
    from fmrivid.generate import pipelines
    from fmrivid.generate.finetune import finetune
    from fmrivid.devices import resolve_device

    method = cfg.get("method", "text_to_video")
    check_finetune({"method": method, "finetune": {"enabled": True}})
    kind = pipelines.generator_kind(method)

    train = clip_ids(read_splits(splits_path), "train")
    source = frames_path if kind == "wan" else vae_frames_path
    if source is None:
        raise ConfigError(f"finetune_generator: generate.method {method!r} trains on "
                          f"{'features/frames.h5 (frames_path)' if kind == 'wan' else 'features/vae_frames.h5'}; "
                          f"none was given")
    _, latents, _ = read_features(source, train)
    _, tokens, _ = read_features(tokens_path, train)
    if latents.ndim != 5 or tokens.ndim != 3:
        raise InputError(source, f"{'frames (N, T, H, W, 3)' if kind == 'wan' else 'latents (N, T, C, h, w)'} and "
                         f"token embeddings (N, L, D) in {tokens_path}", f"shapes {latents.shape} and {tokens.shape}")
    device = resolve_device(cfg["device"], log)
    pcfg = pipelines.settings(dict(cfg.get("pipeline", {})), method="text_to_video" if kind == "text_to_video"
                              else method, dtype="float32")
    loaded = pipelines.load_pipeline(pcfg["model"], pcfg, seed=0, device=device)  # weights: as in generation
    if kind == "wan":  # latents of Wan's own 3-D VAE; tokens padded as generation pads decoded ones
        from fmrivid.generate import wan

        latents = wan.training_latents(loaded, latents, log=log)
        tokens = wan.training_tokens(tokens, pipelines.wan_settings(pcfg)["max_sequence_length"])
    noise_scheduler = None
    if kind == "animatediff":  # train with the betas the sampler uses (AnimateDiff's linear schedule by default)
        from fmrivid.generate import animatediff

        noise_scheduler = animatediff.scheduler(loaded, {"beta_schedule": pcfg["beta_schedule"]})
    fcfg = {k: v for k, v in cfg.get("finetune", {}).items() if k != "enabled"}
    log(f"fine-tuning {pcfg['model']} ({kind}, generate.method {method}) on {len(train)} training clips")
    finetune(loaded, latents.astype(np.float32), tokens.astype(np.float32), fcfg, out_dir, seed=seed,
             device=device, log=log, noise_scheduler=noise_scheduler)


def cotrain_generator(vae_frames_path, tokens_path, splits_path, flatmap_paths, subjects, cfg, align_cfg, seed,
                      out_dir, out_tokens, log=print):
    """GLFA stage 2: co-train the generator, the subjects' alignment and the condition head (Eq. 6), then decode
    every subject's test clips to condition tokens.

    Parameters
    ----------
    vae_frames_path, tokens_path, splits_path : path
        As :func:`finetune_generator` (training rows only; of the caption tokens only their mean enters).
    flatmap_paths : list of path
        ``surface/sub-<s>_flatmaps.h5`` of ``subjects``, same order.
    cfg : dict
        ``generate`` (``device``, ``pipeline``, ``finetune``).
    align_cfg : dict
        ``decode.align``.
    out_dir : path
        The co-trained pipeline folder (:func:`fmrivid.generate.cotrain.cotrain`).
    out_tokens : list of path
        ``predictions/cotrain/sub-<s>_text_tokens.h5`` per subject: the head's tokens of the subject's aligned
        TEST maps (``features`` and ``tokens``) and ``negative_tokens``, its reading of the subject's mean
        TRAINING map (the negative condition of sampling).
    """
    from fmrivid.decoders import align
    from fmrivid.devices import resolve_device
    from fmrivid.generate import cotrain, pipelines

    train = clip_ids(read_splits(splits_path), "train")
    ids, latents, _ = read_features(vae_frames_path, train)
    _, tokens, _ = read_features(tokens_path, train)
    maps = {str(s): align.read_flatmaps(p) for s, p in zip(subjects, flatmap_paths)}
    device = resolve_device(cfg["device"], log)
    pcfg = pipelines.settings(dict(cfg.get("pipeline", {})), method="text_to_video", dtype="float32")
    loaded = pipelines.load_pipeline(pcfg["model"], pcfg, seed=0, device=device)  # weights: as in generation
    fcfg = {k: v for k, v in cfg.get("finetune", {}).items() if k != "enabled"}
    cotrain.cotrain(loaded, maps, list(ids), latents.astype(np.float32), tokens.astype(np.float32), fcfg,
                    align_cfg, out_dir, seed=seed, device=device, log=log)
    head = Path(out_dir) / "fmri_head.safetensors"
    for sub, path in zip(subjects, out_tokens):
        entry = maps[str(sub)]
        test = cotrain.decode_tokens(head, sub, entry["test_maps"], device=device)
        negative = cotrain.decode_tokens(head, sub, entry["train_maps"].mean(0, keepdims=True), device=device)
        write_features(path, entry["test_ids"], test, {"decoder": "cotrain", "target": "text_tokens",
                                                       "generator": str(out_dir)},
                       extra={"tokens": test, "negative_tokens": negative})
        log(f"cotrain: sub-{sub} test tokens {test.shape} (+ negative_tokens of its mean training map) -> {path}")


def merge_recon(chunk_paths, pred_path, out_recon, log=print, out_mp4=None, fps=4):
    """Concatenate chunk files (in chunk order) into one file; their clip ids must equal the prediction file's.

    The merged HDF5 is the lossless array the metrics read. With ``out_mp4`` every clip is also written as
    ``<out_mp4>/<clip_id>.mp4`` (H.264, ``fps`` frames per second) for viewing; the folder appears whole or
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
    if out_mp4 is not None:
        write_clip_mp4s(out_mp4, ids, videos, fps, log=log)
    write_features(out_recon, ids, videos, attrs)
    log(f"merged {len(chunk_paths)} chunk(s): {len(ids)} clips")
