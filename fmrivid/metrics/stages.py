"""Stages of rules/metrics.smk: metrics per chunk, subject and method, brain metrics, tables.

One function per rule, named as the rule: `workflow_scripts/run_stage.py` calls it with the rule's inputs
(by name), outputs (``out_<name>``) and params as keyword arguments. Testable without Snakemake.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fmrivid.errors import InputError, ModelNotAvailableError
from fmrivid.io.atomic import atomic_path
from fmrivid.io.h5 import feature_ids, read_features
from fmrivid.io.splits import chunk_rows, clip_ids, read_captions, read_splits


def train_demo_classifier(frames_path, captions_path, splits_path, cfg, seed, out_path, log=print):
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
    from fmrivid.devices import resolve_device

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
    loaded["protocol"] = _protocol_models(cfg, seed, device, info, log)
    return loaded, info


#: Models each protocol of ``evaluate.protocol`` needs from ``evaluate.protocol_models`` ("clip" kind), besides
#: the feature networks of Brain-Diffuser and MindEye (:mod:`fmrivid.metrics.featnets`, keys "<protocol>:<net>").
PROTOCOL_MODELS = {"mind_animator": ("vifi", "clip_b32")}


def _protocol_models(cfg, seed, device, info, log):
    """The models of ``evaluate.protocol_models`` the chosen protocols need; a missing one becomes the reason its
    rows are missing (a cluster without them still gets every other number)."""
    from fmrivid import models
    from fmrivid.metrics import featnets, protocols

    specs = cfg.get("protocol_models") or {}
    out = {}
    for proto in protocols.check_protocols(cfg.get("protocol", ["fmrivid"])):
        for name in PROTOCOL_MODELS.get(proto, ()):
            if name in out:
                continue
            spec = specs.get(name)
            if not spec:
                out[name] = f"not computed: set evaluate.protocol_models.{name} (the {proto} protocol's model)"
            else:
                try:
                    out[name] = models.load(spec, "clip", seed=seed, device=device)
                    info[f"protocol_{name}"] = out[name].info
                except (InputError, ModelNotAvailableError) as err:  # not cached: its rows say why
                    out[name] = f"not computed: {err}"
                    log(f"evaluate.protocol_models.{name}: {err}")
        if proto in featnets.PROTOCOLS:
            weights = specs.get("featnets", "torch_cache")
            for net in featnets.NETS:
                reason = None if weights == "random" else featnets.featnet_status(net, proto)
                out[f"{proto}:{net}"] = reason or featnets.load_featnet(net, weights, device=device, protocol=proto,
                                                                      seed=seed)
                info[f"protocol_{proto}_{net}"] = {"weights": weights, "status": reason or "ok",
                                                   "file": str(featnets.weight_path(net, proto))}
    return out


def evaluate_unchunked(recon_path, frames_path, pred_paths, truth_paths, targets, subject, method, cfg, seed,
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
        distractors = None
        if cfg.get("retrieval_large_topk"):  # every other clip of the feature file (the training clips)
            test = set(pids)
            others = [c for c in feature_ids(t_path) if c not in test]
            distractors = read_features(t_path, others)[1].reshape(len(others), -1) if others else None
        r, c = suite.evaluate_features(pred, true, pids, subject, target, cfg, seed, log=log,
                                       distractors=distractors)
        rows += r
        clips += c
    write_clip_table(clips, out_clips)
    write_table(rows, out_table)
    with atomic_path(out_models) as tmp:
        tmp.write_text(json.dumps(models_info, indent=1, sort_keys=True, default=str) + "\n")


def eval_methods(config):
    """Reconstruction methods evaluated: ``evaluate.methods`` or the generation variants (``generate.variants``, in
    name order: config keys are sorted so that reordering a file reruns nothing; default one, named
    ``generate.method``), plus ``<first method>_shuffled`` (the generator fed shuffled decoded features) when
    ``generate.shuffled_control``. The first method is the main one (figures, comparisons)."""
    variants = list(config["generate"].get("variants") or {}) or [config["generate"]["method"]]
    methods = list(config["evaluate"]["methods"]) or variants
    control = f"{methods[0]}_shuffled"
    if config["generate"].get("shuffled_control") and control not in methods:
        methods.append(control)
    return methods


def compare_pair(config):
    """The two methods of the paired Wilcoxon test: ``evaluate.compare`` or (first method, shuffled_gt)."""
    pair = list(config["evaluate"]["compare"])
    return pair if pair else [eval_methods(config)[0], "shuffled_gt"]


def gt_cache(frames_path, splits_path, cfg, image_model, seed, out_path, log=print, classifier_path=None):
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


def evaluate_chunk(recon_chunk_path, pred_path, frames_path, gt_cache_path, chunk, chunk_size, subject, method,
                       cfg, seed, image_model, out_partial, log=print, classifier_path=None):
    """Video metrics of one chunk of reconstructions, as a partial for :func:`evaluate`.

    ``pred_path`` is a prediction file of the subject (the one generation cut
    its chunks from): its clip ids, in order, are the global clip order that
    seeds the shuffled pairings and N-way draws, and chunk ``chunk`` must hold
    its rows ``chunk_rows(n, chunk, chunk_size)``. The partial's values are
    those the unchunked :func:`evaluate_unchunked` computes for these clips.
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


def evaluate(partials, pred_paths, truth_paths, targets, subject, method, cfg, seed, out_table, out_clips,
             out_models, log=print, chance_rows=True, recon=None):
    """Merge the chunks' partials (exactly the unchunked video rows) and add the decoded-feature metrics.

    ``recon`` (the merged reconstructions) is not read: the rule waits for it so that one SLURM job of group
    ``results`` holds the merge, this and the figures.

    Writes what :func:`evaluate_unchunked` writes: the long table, the per-clip table
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
    if not chance_rows:  # chance and reference rows come with the first method only (one per metric and subject)
        rows = [r for r in rows if r["method"] not in suite.REFERENCE_METHODS]
        clips = [c for c in clips if c["method"] not in suite.REFERENCE_METHODS]
    _finish_evaluation(rows, clips, parts[0]["models"], targets, pred_paths, truth_paths, subject, cfg, seed,
                       out_table, out_clips, out_models, log)


def brain_metrics(fmri_paths, subjects, features_path, decode_cfg, cfg, seed, out_path, log=print):
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


def metrics_table(paths, clip_paths, compare, dataset_name, main_method, out_long, out_wide, out_mean,
                      out_wilcoxon, out_published=None, log=print):
    """Combine per-subject tables: long TSV, wide and subject-mean summaries, Wilcoxon, CC2017 comparison."""
    from fmrivid.metrics.table import (
        read_clip_table,
        read_table,
        write_summaries,
        write_table,
        write_wilcoxon,
    )

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
