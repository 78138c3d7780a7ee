"""Stages of rules/decoders.smk: ridge and neural decoders, trained on the training split only.

One function per rule, named as the rule (`workflow_scripts/run_stage.py` calls it with the rule's inputs,
``out_<output>`` and params): :func:`decode` (ridge), :func:`neural_decode` (the decoders of
:data:`fmrivid.decoders.registry.NEURAL`), :func:`align_decode` (GLFA, leave-one-subject-out) and
:func:`encoder_model` (encoder-decoder). Each neural decoder writes its model, predictions, loss curve and its own
metric rows, evaluated on its target against a shuffled control (``score`` in its registry entry):

* ``embedding`` (semantic): 2-way identification (and retrieval) of the decoded embeddings (shuffled_gt rows);
* ``latent`` (structure): per-clip Pearson r between decoded and true latents (``latent_corr``);
* ``latent_frames`` (motion, fusion): ``latent_corr`` of frames 2..n with the decoded first frame given; fusion
  runs the same model fMRI-only and fused, reported side by side (``fusion_fmri_only``, ``fusion_audio``);
* align: fSC and ISC of the held-out subject before / after alignment, and 2-way identification of the
  leave-one-subject-out decoded feature (aligned, unaligned, decoder trained on shuffled pairs);
* encoder: median voxel r against the same model trained on shuffled stimulus-response pairs.

The model is written before any test feature is read: training sees the training split only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from fmrivid.decoders import registry
from fmrivid.errors import ConfigError, InputError
from fmrivid.io.h5 import read_features, write_features


def decode(fmri_path, features_path, cfg, out_model, out_pred, log=print):
    """Fit a ridge decoder on the training split only and predict the test split."""
    from fmrivid.decoders.ridge import RidgeCV
    from fmrivid.preprocess.pipeline import read_subject
    from fmrivid.devices import resolve_device

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


def _finish(ckpt_dir, history, out_losses, log):
    from fmrivid.decoders.train import write_losses

    write_losses(out_losses, history or [{"step": 0, "loss": float("nan")}])
    if ckpt_dir and Path(ckpt_dir).exists():
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # the model is saved: checkpoints only served a resume
    log(f"loss curve -> {out_losses}")


def latent_rows(pred, true, clip_ids, subject, method, what, cfg, seed, start=0, log=print):
    """``latent_corr`` rows: per-clip Pearson r between decoded and true latents (frames ``start..``),
    with the permutation p and the ``shuffled_gt`` control row (predictions paired with other clips)."""
    from fmrivid.metrics.suite import _Collector

    p = np.asarray(pred, np.float64)
    t = np.asarray(true, np.float64)
    if p.shape != t.shape:
        raise InputError(what, f"decoded latents of the true latents' shape {t.shape}", f"shape {p.shape}")
    if start:
        p, t = p[:, start:], t[:, start:]
    p = p.reshape(len(p), -1)
    t = t.reshape(len(t), -1)
    p = p - p.mean(1, keepdims=True)
    t = t - t.mean(1, keepdims=True)
    pn = np.sqrt((p * p).sum(1))
    tn = np.sqrt((t * t).sum(1))

    def under(perm):
        perm = np.asarray(perm)
        den = pn * tn[perm]
        return np.divide((p * t[perm]).sum(1), den, out=np.zeros(len(p)), where=den > 0)

    col = _Collector(subject, method, clip_ids, seed, cfg["n_boot"], cfg["n_perm"], log)
    frames = f"frames {start + 1}..n, " if start else ""
    col.add("latent_corr", f"Pearson r per clip between decoded and true {what} ({frames}flattened; decoder "
                           f"{method}); mean over test clips", under(np.arange(len(p))), under)
    return col.rows


def _read_train_test(fmri_path):
    from fmrivid.preprocess.pipeline import read_subject

    return read_subject(fmri_path)


def _unique_train(ids):
    """First row of each training clip (rows may repeat presentations)."""
    seen, keep = set(), []
    for i, c in enumerate(ids):
        if c not in seen:
            seen.add(c)
            keep.append(i)
    return np.array(keep, dtype=int)


def neural_decode(decoder, sub, fmri, features, cfg, eval_cfg, seed, out_model, out_pred, out_losses, out_table,
                  ckpt_dir=None, log=print, **inputs):
    """Train neural decoder ``decoder`` of subject ``sub`` on its training split, predict the test split, score it.

    Parameters
    ----------
    decoder : str
        A name of :data:`fmrivid.decoders.registry.NEURAL`; its registry entry says what it reads and how it is scored.
    fmri : path
        ``fmri/sub-XX.h5``.
    features : path
        The feature file of its target (``features/<target>.h5``).
    cfg, eval_cfg : dict
        The ``decode`` section (``device`` and ``decode.<decoder>``) and the ``evaluate`` section.
    **inputs
        The entry's extra feature files by data key (``train_<key>`` rows of the training clips: semantic
        ``video``; fusion ``audio``, ``text``) and decoded inputs ``decoded_first`` (the first-frame latents that
        motion and fusion start from) and ``decoded_text`` (fusion: the decoded caption picks the TRAINING clip
        whose audio stands in for the test clip's, never the test clip's own audio).
    """
    entry = registry.get(decoder)
    name, subject, fmri_path = decoder, sub, fmri
    extra = {k: v for k, v in inputs.items() if not k.startswith("decoded_")}
    preds = {k[len("decoded_"):]: v for k, v in inputs.items() if k.startswith("decoded_")}
    expected = set(entry.features) | {f"decoded_{k}" for k in entry.decoded}
    asked = sorted(set(inputs) - expected)  # extras asked for (generate.variants): their training features
    if not set(inputs) >= expected or not set(asked) <= {k for k, v in entry.extras.items() if v}:
        raise TypeError(f"neural_decode {decoder}: inputs {sorted(inputs)}; its registry entry names "
                        f"{sorted(expected)} and extras {sorted(entry.extras)}")
    from fmrivid.devices import resolve_device

    mod = entry.module
    dcfg = registry.decoder_config(name, cfg)
    device = resolve_device(cfg["device"], log)
    sub = _read_train_test(fmri_path)
    train_ids, test_ids = list(sub["train_ids"]), list(sub["test_ids"])
    data = {"train_X": sub["train_X"], "test_X": sub["test_X"]}
    target = entry.target
    data["train_Y"] = read_features(features, train_ids)[1]
    for key in [*entry.features, *asked]:  # training rows of every extra feature (read once)
        data[f"train_{key}"] = read_features(extra[key], train_ids)[1]
    n_test = len(test_ids)
    if asked:  # one more row: the mean training fMRI, decoded as the generator's negative condition
        data["test_X"] = np.vstack([data["test_X"], data["train_X"].mean(0, keepdims=True)])
    if "first" in preds:
        first = read_features(preds["first"], test_ids)[1]
        data["test_first"] = first.reshape((len(test_ids),) + data["train_Y"].shape[2:])
    log(f"{name} decoder, sub-{subject}: train {data['train_X'].shape} -> {target} {data['train_Y'].shape[1:]}, "
        f"{len(test_ids)} test samples, device {device}")
    results = {}
    if name == "fusion":
        from fmrivid.decoders.fusion import retrieve_audio

        train_audio = data["train_audio"]
        uniq = _unique_train(train_ids)
        train_text = data.pop("train_text")[uniq]  # caption embeddings only choose the stand-in audio
        pred_text = read_features(preds["text"], test_ids)[1]
        test_audio, index = retrieve_audio(pred_text, train_text, train_audio[uniq], return_index=True)
        log("test audio = audio of the training clip nearest to each decoded caption: "
            + ", ".join(f"{t}<-{train_ids[uniq[i]]}" for t, i in list(zip(test_ids, index))[:5]) + " ...")
        data.update(train_audio=train_audio, test_audio=test_audio)
        for mode, audio in (("fmri_only", False), ("audio", True)):
            model_path = out_model if audio else str(out_model).replace(".safetensors", "_fmri_only.safetensors")
            ck = Path(ckpt_dir) / mode if ckpt_dir else None
            results[mode] = mod.fit_predict(data, {**dcfg, "audio": audio}, model_path, ck, seed, device, log)
    else:
        results[name] = mod.fit_predict(data, dcfg, out_model, ckpt_dir, seed, device, log)
    main = results.get("audio", results.get(name))
    attrs = {"decoder": name, "target": target, "target_feature": Path(features).stem, "n_train": len(train_ids),
             "config": json.dumps(dcfg, sort_keys=True)}
    extras = {}
    if name == "fusion":
        attrs["mode"] = "fused (fMRI queries, training-clip audio keys/values); dataset fmri_only: fMRI-only"
        extras["fmri_only"] = np.asarray(results["fmri_only"]["pred"], np.float32)
    for key in asked:
        extras[key] = np.asarray(main[key][:n_test], np.float32)
        extras[f"negative_{key}"] = np.asarray(main[key][n_test:], np.float32)
        log(f"extra prediction {key} {extras[key].shape} (+ negative_{key}: decoded from the mean training fMRI)")
    main = {**main, "pred": main["pred"][:n_test]}
    write_features(out_pred, test_ids, np.asarray(main["pred"], np.float32), attrs, extra=extras)
    history = []
    for mode, res in results.items():
        for row in res.get("history") or []:
            history.append({**row, "run": mode} if len(results) > 1 else dict(row))
    _finish(ckpt_dir, history, out_losses, log)

    # Evaluation: the test features are read only now, after the model and predictions are written.
    from fmrivid.metrics.suite import evaluate_features
    from fmrivid.metrics.table import write_table

    true = read_features(features, test_ids)[1]
    rows = []
    if entry.score == "embedding":
        rows += evaluate_features(main["pred"], true, test_ids, subject, Path(features).stem, eval_cfg, seed, log=log,
                                  method=f"{name}_{target}")[0]
    elif entry.score == "latent":
        rows += latent_rows(main["pred"], true.reshape(np.shape(main["pred"])), test_ids, subject,
                            f"{name}_{target}", entry.label or target, eval_cfg, seed, log=log)
    else:
        for mode, res in results.items():
            method = f"{name}_{mode}" if name == "fusion" else f"{name}_{target}"
            r = latent_rows(res["pred"], true, test_ids, subject, method, entry.label or target, eval_cfg, seed,
                            start=1, log=log)
            # one shuffled_gt (chance) row per metric: fusion keeps the fused run's
            rows += [x for x in r if x["method"] != "shuffled_gt" or mode in ("audio", name)]
    write_table(rows, out_table)


def align_decode(heldout, subjects, flatmap_paths, feature_path, cfg, eval_cfg, seed, out_model, out_decoder,
                 out_pred, out_losses, out_table, ckpt_dir=None, log=print, tokens=None):
    """GLFA leave-one-subject-out: align every subject's flat maps, decode ``heldout`` with a ridge decoder
    trained on the others, and report fSC / ISC before and after alignment and the decoding's identification.

    ``tokens`` (``features/text_tokens.h5``, when a generation variant reads ``tokens: align``): the same LOSO
    ridge also decodes caption token embeddings, written as the extra datasets ``tokens`` and ``negative_tokens``
    (the held-out subject's mean aligned training map, decoded): GLFA's cross-subject reconstruction (Table 2)."""
    from fmrivid.decoders import align
    from fmrivid.metrics.suite import evaluate_features
    from fmrivid.metrics.table import summarise, write_table
    from fmrivid.devices import resolve_device

    if len(subjects) < 2:
        raise ConfigError(f"decode.neural has 'align', which needs >= 2 subjects; found {list(subjects)}")
    dcfg = registry.decoder_config("align", cfg)
    device = resolve_device(cfg["device"], log)
    maps = {s: align.read_flatmaps(p) for s, p in zip(subjects, flatmap_paths)}
    ids, feats, _ = read_features(feature_path)
    # Only training clips' features may enter the fit; test rows of the held-out subject are for scoring.
    log(f"GLFA: held-out sub-{heldout}, {len(subjects) - 1} training subject(s), maps "
        f"{maps[heldout]['train_maps'].shape[1:]}")
    train_only = set().union(*(m["train_ids"] for m in maps.values()))
    keep = [i for i, c in enumerate(ids) if c in train_only]
    n_text, token_shape = feats.shape[1], None
    if tokens:  # one ridge for both targets: alphas are chosen per column, so the text columns do not change
        token_rows = read_features(tokens, ids)[1]
        token_shape = token_rows.shape[1:]
        feats = np.concatenate([feats, token_rows.reshape(len(ids), -1)], axis=1)
    res = align.loso_decode(maps, heldout, [ids[i] for i in keep], feats[keep], dcfg, out_align=out_model,
                            out_decoder=out_decoder, ckpt_dir=ckpt_dir, seed=seed, device=device, log=log)
    extras = {}
    if tokens:
        extras = {"tokens": np.asarray(res["pred"][:, n_text:], np.float32).reshape(-1, *token_shape),
                  "negative_tokens": np.asarray(res["pred_mean_train"][:, n_text:], np.float32).reshape(
                      -1, *token_shape)}
        res = {**res, **{k: res[k][:, :n_text] for k in ("pred", "pred_unaligned", "pred_shuffled") if k in res}}
        log(f"GLFA: LOSO-decoded caption tokens {extras['tokens'].shape} (+ negative_tokens) for generation")
    test_ids = list(res["test_ids"])
    write_features(out_pred, test_ids, np.asarray(res["pred"], np.float32),
                   {"decoder": "align", "target": "text", "heldout": heldout,
                    "config": json.dumps(dcfg, sort_keys=True, default=str)}, extra=extras)
    hist = res["align"]["history"]
    history = [{**r, "run": stage} for stage in ("common", "heldout") for r in hist.get(stage, [])]
    _finish(ckpt_dir, history, out_losses, log)

    rows = []
    vals = res["align"]["values"]
    for metric in ("fsc", "isc"):
        for when in ("before", "after"):
            v = np.asarray(vals[when][metric][heldout], np.float64)
            what = "clips" if metric == "fsc" else "flat-map pixels"
            rows.append(summarise(heldout, f"glfa_{'unaligned' if when == 'before' else 'aligned'}", metric,
                                  f"{metric} of the held-out subject's test responses with the other subjects' mean "
                                  f"({when} GLFA alignment; mean over {what})", v, seed, n_boot=eval_cfg["n_boot"]))
    true = read_features(feature_path, test_ids)[1]
    for key, method in (("pred", "glfa_loso_text"), ("pred_unaligned", "glfa_loso_unaligned_text"),
                        ("pred_shuffled", "glfa_loso_shuffled_pairs_text")):
        if key in res:
            r, _ = evaluate_features(res[key], true, test_ids, heldout, "text", eval_cfg, seed, log=log,
                                     method=method)
            rows += [x for x in r if x["metric"] == "two_way_ident"
                     and (x["method"] != "shuffled_gt" or key == "pred")]  # one chance row
    write_table(rows, out_table)


def encoder_model(subject, fmri_path, frames_path, cfg, eval_cfg, seed, out_model, out_pred, out_losses, out_table,
                  ckpt_dir=None, parcels_path=None, log=print):
    """The encoder-decoder model (stimulus -> voxels, middle-frame decoder as regularizer): voxel r on the
    test samples, and the SSIM of the middle frames decoded from the predicted voxels (seed 004 reports it), each
    against the same model trained on shuffled stimulus-response pairs.

    ``frames_path`` is ``features/encoder_chunks.h5`` (true chunks: ``decode.encoder.frame_source: video``) or
    ``features/frames.h5``. With ``decode.encoder.parcels`` (``parcels_path``, the same file as a rule input) the
    targets, predictions and ``voxel_r`` rows are per parcel (means of the selected voxels,
    :func:`fmrivid.decoders.encoder.parcel_targets`)."""
    from fmrivid.decoders import encoder
    from fmrivid.metrics.pixel import ssim_rgb_uniform
    from fmrivid.metrics.table import summarise, write_table
    from fmrivid.devices import resolve_device

    dcfg = registry.decoder_config("encoder", cfg)
    device = resolve_device(cfg["device"], log)
    sub = _read_train_test(fmri_path)
    train_ids, test_ids = list(sub["train_ids"]), list(sub["test_ids"])
    _, train_frames, attrs = read_features(frames_path, train_ids)
    if dcfg["frame_source"] == "video" and (attrs.get("kind") != "encoder_chunks"
                                            or int(attrs.get("n_frames", -1)) != int(dcfg["chunk_frames"])):
        raise InputError(frames_path, f"encoder chunks of decode.encoder.chunk_frames = {dcfg['chunk_frames']} "
                                      "consecutive frames (decode.encoder.frame_source: video)",
                         f"kind {attrs.get('kind')!r} with {attrs.get('n_frames')} frames per clip")
    data = {"train_frames": train_frames, "train_Y": sub["train_X"],
            "test_frames": read_features(frames_path, test_ids)[1]}
    measured = sub["test_X"]
    atlas = parcels_path or dcfg["parcels"]
    unit, pred_attrs = "voxel", {"target": "voxels"}
    if atlas:
        parcels = encoder.parcel_targets(sub, atlas, log, name=fmri_path)
        data["train_Y"], measured = parcels["train_X"], parcels["test_X"]
        unit = f"parcel, {len(parcels['parcels'])} parcels of {Path(atlas).name} (means of the selected voxels)"
        pred_attrs = {"target": "parcels", "atlas": str(atlas), "parcels": json.dumps(parcels["parcels"].tolist())}
    log(f"encoder, sub-{subject}: {data['train_frames'].shape} -> {data['train_Y'].shape[1]} targets "
        f"(per {unit}; frames from {Path(frames_path).name})")
    ck = Path(ckpt_dir) if ckpt_dir else None
    res = encoder.fit_predict(data, dcfg, out_model, ck / "model" if ck else None, seed, device, log)
    ctl = encoder.fit_predict(data, dcfg, str(out_model).replace(".safetensors", "_shuffled.safetensors"),
                              ck / "control" if ck else None, seed, device, log, control=True)
    write_features(out_pred, test_ids, np.asarray(res["pred"], np.float32),
                   {"decoder": "encoder", **pred_attrs, "config": json.dumps(dcfg, sort_keys=True)})
    history = [{**r, "run": "model"} for r in res["history"]] + [{**r, "run": "shuffled"} for r in ctl["history"]]
    _finish(ckpt_dir, history, out_losses, log)
    size, mid = int(dcfg["frame_size"]), int(dcfg["chunk_frames"]) // 2
    middle = encoder.prepare_chunks(data["test_frames"], dcfg["chunk_frames"], size)[:, mid]  # the decoder's target
    rows = []
    for method, out in (("encoder", res), ("encoder_shuffled_stimulus", ctl)):
        s = ssim_rgb_uniform(middle[:, None], np.asarray(out["recon"], np.uint8)[:, None])
        rows.append(summarise(subject, method, "decoded_frame_ssim",
                              f"SSIM (RGB, 7x7 uniform window, {size}x{size} px) between the middle frame decoded "
                              "from the predicted voxels and the true middle frame; mean over test samples", s,
                              seed, n_boot=eval_cfg["n_boot"]))
        log(f"  {method}: decoded middle-frame SSIM {s.mean():.4f}")
        r = encoder.voxel_r(out["pred"], measured)
        rows.append(summarise(subject, method, "voxel_r",
                              f"Pearson r per {unit} between predicted and measured test responses (3-D/2-D conv "
                              f"encoder with middle-frame decoder); median over {unit.split(',')[0]}s", r, seed,
                              n_boot=eval_cfg["n_boot"], stat="median"))
        log(f"  {method}: median {unit.split(',')[0]} r {np.median(r):.4f}")
    write_table(rows, out_table)
