"""A rehearsal anyone can run: every dataset preset's whole DAG on fixtures in the real layouts, tiny models.

``python -m fmrivid.rehearse OUT [--only cc2017,bids,fmriprep] [--recipes mind_animator,...] [--cores 2]``
(``make rehearse``) writes, under OUT:

- ``<layout>/data``: a fixture in that layout (:mod:`fmrivid.simulate.cc2017_fixture`,
  :mod:`fmrivid.simulate.bids_fixtures`): real file names and shapes, small counts, planted signal;
- ``<layout>/dataset.yaml``: the only thing a user writes, the ``dataset`` section (+ ``results_dir``);
- ``<layout>/results``: the run of ``snakemake --configfile <preset> <layout>/dataset.yaml
  config/rehearsal/tiny_models.yaml`` to ``report.zip``;

and prints, per layout, the wall time and the checks that the data came through (samples per segment, ISC).
``--recipes`` also runs each seed recipe (``config/recipes/<name>.yaml``, layered between the dataset file and
the tiny overlay) on the CC2017 fixture, results in ``cc2017_<recipe>/results``, and lists its methods.
Each preset is what a user starts from; the tiny overlay only swaps model weights for random tiny ones (no
download is possible here) and shrinks sizes. Nothing is read from the demo preset.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "config" / "rehearsal" / "tiny_models.yaml"
PRESETS = {"cc2017": REPO / "config" / "cc2017.yaml", "bids": REPO / "config" / "bids.yaml",
           "fmriprep": REPO / "config" / "fmriprep.yaml"}


def write_fixture(layout, folder):
    """Write the fixture of ``layout`` under ``folder``; return its ``dataset`` config section."""
    folder = Path(folder)
    if layout == "cc2017":
        from fmrivid.simulate.cc2017_fixture import write_cc2017_fixture

        return write_cc2017_fixture(folder / "data")
    from fmrivid.simulate import bids_fixtures

    if layout == "bids":
        return bids_fixtures.write_bids_wild(folder / "data")
    return bids_fixtures.write_fmriprep(folder / "data", folder / "data" / "derivatives" / "fmriprep")


def snakemake_command(preset, dataset_yaml, *extra, cores=2):
    """The command a user would type: the preset, their dataset file (and a recipe), the tiny overlay.

    ``extra``: more config files (paths ending in .yaml) before the overlay, then Snakemake options."""
    layers = [str(p) for p in extra if str(p).endswith(".yaml")]
    options = [str(p) for p in extra if not str(p).endswith(".yaml")]
    return [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
            "--cores", str(cores), *options, "--configfile", str(preset), str(dataset_yaml), *layers, str(TINY)]


def rehearse(layout, out, cores=2, log=print, recipe=None):
    """Fixture + whole DAG + report for one layout (and a seed recipe layered on it); returns a summary dict."""
    folder = Path(out) / (f"{layout}_{recipe}" if recipe else layout)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = Path(out) / layout / "data"
    if recipe and data.exists():  # the layout's fixture, written by its own rehearsal
        dataset = yaml.safe_load((Path(out) / layout / "dataset.yaml").read_text())["dataset"]
    else:
        dataset = write_fixture(layout, folder)
    fixture_s = time.perf_counter() - start
    dataset_yaml = folder / "dataset.yaml"
    dataset_yaml.write_text(yaml.safe_dump({"results_dir": str(folder / "results"), "dataset": dataset,
                                            **user_files(recipe, folder)}, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    layers = [dataset_yaml, REPO / "config" / "recipes" / f"{recipe}.yaml"] if recipe else [dataset_yaml]
    for extra in ((), ("--report", str(folder / "results" / "report.zip"))):
        cmd = snakemake_command(PRESETS[layout], *layers, *extra, cores=cores)
        log(" ".join(cmd))
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
        (folder / ("snakemake_report.log" if extra else "snakemake.log")).write_text(proc.stdout + proc.stderr)
        if proc.returncode:
            raise SystemExit(f"rehearsal {layout}: snakemake failed (rc {proc.returncode}); see "
                             f"{folder / 'snakemake.log'}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    summary = {"layout": layout, "fixture_s": round(fixture_s, 1), "dag_s": round(time.perf_counter() - start, 1)}
    if recipe:
        summary["recipe"] = recipe
    summary.update(check_results(layout, folder / "results"))
    log(f"rehearsal {layout}: {summary}")
    return summary


def user_files(recipe, folder):
    """What a user adds to their dataset file for a recipe, beyond the ``dataset`` section: for GLFA on CC2017's
    CIFTI data, the 32k_fs_LR flat surfaces and an HCP-MMP atlas with visual labels (synthetic stand-ins of HCP's
    files, :mod:`fmrivid.simulate.surface_fixtures`)."""
    if recipe != "glfa":
        return {}
    from fmrivid.simulate.surface_fixtures import write_fslr_surfaces, write_hcp_mmp_like_dlabel

    surfaces = Path(folder) / "surfaces"
    write_fslr_surfaces(surfaces, names="hcp")
    atlas = write_hcp_mmp_like_dlabel(surfaces / "HCP-MMP1_like.32k_fs_LR.dlabel.nii")
    labels = [f"{h}_{a}_ROI" for a in ("V1", "V2", "V3", "V4", "MT", "FFC") for h in "LR"]
    return {"preprocess": {"surface": {"mesh": str(surfaces)},
                           "selection": {"roi_mask": str(atlas), "roi_labels": labels}}}


def check_results(layout, results):
    """What came through: samples per subject and split (per segment for CC2017), ISC on the common voxels."""
    import pandas as pd

    from fmrivid.preprocess.pipeline import read_subject

    out = {}
    for h5 in sorted((results / "fmri").glob("sub-*.h5")):
        sub = read_subject(h5)
        out[f"{h5.stem}_train_test"] = [len(sub["train_ids"]), len(sub["test_ids"])]
        if layout == "cc2017":
            segs = pd.Series([c.rsplit("_", 1)[0] for c in sub["train_ids"] + sub["test_ids"]]).value_counts()
            out[f"{h5.stem}_samples_per_segment"] = sorted(set(segs.tolist()))
    table = pd.read_csv(results / "tables" / "metrics.tsv", sep="\t")
    isc = table[table["metric"].astype(str).str.startswith("isc")]
    out["isc"] = [round(float(v), 3) for v in isc["value"].tolist()[:4]]
    out["methods"] = sorted(set(table["method"].astype(str)))
    out["protocol_metrics"] = sorted({m for m in table["metric"].astype(str) if m.endswith(" protocol)")})
    chunks = results / "features" / "encoder_chunks.h5"
    if chunks.exists():  # the encoder-decoder's chunks: how many distinct frames each holds (seed 004: 32)
        from fmrivid.io.h5 import read_features

        _, frames, _ = read_features(chunks)
        distinct = [len({f.tobytes() for f in clip}) for clip in frames]
        out["encoder_chunk_frames_distinct_min_max"] = [int(min(distinct)), int(max(distinct)), int(frames.shape[1])]
    flat = sorted((results / "surface").glob("sub-*_flatmaps.h5"))
    if flat:
        from fmrivid.io.h5 import read_features

        _, maps, attrs = read_features(flat[0])
        out["flatmaps"] = [list(maps.shape), str(attrs.get("mesh", ""))[-40:]]
    out["report_zip_mb"] = round((results / "report.zip").stat().st_size / 1e6, 1)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for fixtures and results (CC2017's fixture is ~1.1 GB)")
    parser.add_argument("--only", default="bids,fmriprep,cc2017", help="comma-separated layouts")
    parser.add_argument("--recipes", default="", help="comma-separated seed recipes to run on the CC2017 fixture "
                        "(config/recipes/<name>.yaml), e.g. mind_animator,audio_guided")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    rows = [rehearse(layout, args.out, args.cores) for layout in args.only.split(",") if layout]
    rows += [rehearse("cc2017", args.out, args.cores, recipe=r) for r in args.recipes.split(",") if r]
    print(yaml.safe_dump(rows, sort_keys=False))


if __name__ == "__main__":
    main()
