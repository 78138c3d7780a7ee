"""Dataset layouts as the workflow sees them: subjects, runs and the stimulus table of a `dataset` config section.

One place answers, for every layout (``bids``: raw BIDS or fMRIPrep derivatives, see :mod:`fmrivid.io.bids`;
``cc2017``: the CC2017 download, see :mod:`fmrivid.io.cc2017`):

- :func:`subjects` and :func:`runs`: the runs of a subject as plain records (label, bold, sidecar, events,
  confounds, group), which Snakemake turns into rule inputs and the preprocess stage back into runs;
- :func:`stimulus_table`: the validated table of clips (clip_id, file, caption, split and, for CC2017,
  start_s / duration_s inside the segment movie), read from ``dataset.stimuli_table`` or built from the layout
  (CC2017's segments, BIDS ``stim_file`` events); :func:`table_from_rule` says whether the workflow writes it
  (rule ``stimulus_table``) and :func:`write_stimulus_table` does.

Everything here runs at Snakemake parse time: it reads file names, headers of nothing, and small TSVs only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fmrivid.errors import InputError
from fmrivid.io import bids, cc2017
from fmrivid.io.atomic import atomic_path

TABLE_COLUMNS = ["clip_id", "file", "caption", "split"]


def record(label, bold, sidecar="", events="", confounds="", group="", kind="nifti"):
    """One run record (str paths, '' where the layout has no such file): what Snakemake and the stage exchange."""
    return {"label": str(label), "bold": str(bold), "sidecar": str(sidecar or ""), "events": str(events or ""),
            "confounds": str(confounds or ""), "group": group, "kind": kind}


def demo_runs(root, subject, task, labels):
    """Records of the simulated demo's runs (written later by rule simulate_demo, in the plain BIDS layout)."""
    return [record(r, *(getattr(bids.run_paths(root, subject, task, r), k) for k in ("bold", "sidecar", "events")))
            for r in labels]


def subjects(dataset_cfg):
    """Subject labels: ``dataset.subjects``, else (BIDS) every ``sub-*`` folder found."""
    if dataset_cfg["layout"] == "cc2017":
        listed = [str(s) for s in dataset_cfg["subjects"]]
        if not listed:
            raise InputError(dataset_cfg["root"], "dataset.subjects for layout cc2017 (e.g. ['1', '2', '3'])",
                             "an empty list")
        return listed
    return bids.discover_subjects(dataset_cfg)


def runs(dataset_cfg, subject):
    """Records of every run of ``subject``: dicts with label, bold, sidecar, events, confounds, group, kind.

    Paths are strings ('' where the layout has no such file), so that the records are Snakemake params.
    """
    if dataset_cfg["layout"] == "cc2017":
        cc = dataset_cfg["cc2017"]
        return [record(f"{seg}_{rep}", path, group=seg,
                       kind="cifti" if str(path).endswith(".dtseries.nii") else "nifti")
                for seg, rep, _, path in cc2017.list_runs(dataset_cfg["root"], subject, cc)]
    return [record(r.run, r.bold, r.sidecar, r.events, r.confounds) for r in bids.discover_runs(dataset_cfg, subject)]


def run_files(records, kind):
    """The non-empty ``kind`` paths of run records (rule inputs)."""
    return [r[kind] for r in records if r[kind]]


def table_from_rule(dataset_cfg):
    """True when the workflow writes the stimulus table: CC2017; BIDS without a ``stimuli_table`` file, or whose
    split comes from ``dataset.split`` (``list`` / ``repeats``) rather than the file's split column."""
    if dataset_cfg["layout"] == "cc2017":
        return True
    if (dataset_cfg.get("split") or {}).get("source", "table") != "table":
        return True
    return not (Path(dataset_cfg["root"]) / dataset_cfg["stimuli_table"]).exists()


def stimulus_table(dataset_cfg):
    """The stimulus table with ``file`` as a path usable from the working directory (str).

    CC2017: one row per 2-s clip of every segment (``start_s``/``duration_s`` inside ``<root>/stimuli/<seg>.mp4``);
    BIDS: :func:`fmrivid.io.bids.resolve_stimulus_table`.
    """
    if dataset_cfg["layout"] == "cc2017":
        cc = dataset_cfg["cc2017"]
        table = cc2017.stimulus_table(cc, tr=float(dataset_cfg["tr"])).assign(caption="")
        folder = Path(dataset_cfg["root"]) / "stimuli"
    else:
        table = bids.resolve_stimulus_table(dataset_cfg)
        folder = Path(table.attrs.get("folder") or bids.stimulus_folder(dataset_cfg))
    table = table.assign(file=[str(folder / f) for f in table["file"]])
    return table


def write_stimulus_table(dataset_cfg, out_path, log=print):
    """Write :func:`stimulus_table` to ``out_path`` (TSV; ``file`` relative to its folder) atomically."""
    table = stimulus_table(dataset_cfg)
    folder = Path(out_path).resolve().parent
    table = table.assign(file=[os.path.relpath(Path(f).resolve(), folder) for f in table["file"]])
    cols = TABLE_COLUMNS + [c for c in ("start_s", "duration_s", "segment") if c in table.columns]
    with atomic_path(out_path) as tmp:
        table[cols].to_csv(tmp, sep="\t", index=False)
    n_test = int((table["split"] == "test").sum())
    log(f"stimulus table: {len(table)} clips ({len(table) - n_test} train, {n_test} test) from "
        f"{'the CC2017 segments' if dataset_cfg['layout'] == 'cc2017' else 'the events files'} -> {out_path}")
    return table


def read_table(path):
    """Read a stimulus table written by :func:`write_stimulus_table` (or a user's own)."""
    return pd.read_csv(path, sep="\t", dtype={"clip_id": str})
