"""BIDS layout: run paths, sidecars, events and the stimulus table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fmrivid.errors import InputError

EVENT_COLUMNS = ("onset", "duration", "clip_id")
STIMULUS_COLUMNS = ("clip_id", "file", "caption", "split")


@dataclass(frozen=True)
class Run:
    """The three files of one BIDS functional run."""

    subject: str
    run: str
    bold: Path
    sidecar: Path
    events: Path


def run_paths(root, subject, task, run):
    """Return the :class:`Run` of ``sub-<subject>_task-<task>_run-<run>`` under ``root``."""
    stem = f"sub-{subject}_task-{task}_run-{run}"
    func = Path(root) / f"sub-{subject}" / "func"
    return Run(subject, run, func / f"{stem}_bold.nii.gz", func / f"{stem}_bold.json",
               func / f"{stem}_events.tsv")


def check_runs_exist(runs):
    """Raise InputError for the first run whose files are missing, listing what is there."""
    for run in runs:
        for path in (run.bold, run.sidecar, run.events):
            if not path.exists():
                folder = path.parent
                found = sorted(p.name for p in folder.glob("*")) if folder.exists() else []
                shown = ", ".join(found[:8]) + (" ..." if len(found) > 8 else "")
                raise InputError(
                    path, f"run {run.run} of subject {run.subject} (listed in dataset.runs)",
                    f"no such file; {folder} holds [{shown}]" if folder.exists() else f"no folder {folder}",
                )


def read_sidecar_tr(path):
    """Read ``RepetitionTime`` (seconds) from a BIDS JSON sidecar."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, "a JSON sidecar", f"unreadable JSON ({exc})") from None
    if "RepetitionTime" not in meta:
        raise InputError(path, "a 'RepetitionTime' entry (seconds)", f"keys {sorted(meta)}")
    return float(meta["RepetitionTime"])


def read_events(path):
    """Read an ``_events.tsv`` with at least onset, duration and clip_id columns."""
    path = Path(path)
    try:
        events = pd.read_csv(path, sep="\t", dtype={"clip_id": str})
    except Exception as exc:
        raise InputError(path, "a tab-separated events file", f"unreadable ({exc})") from None
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise InputError(path, f"columns {list(EVENT_COLUMNS)}", f"columns {list(events.columns)}")
    if events.empty:
        raise InputError(path, "at least one event", "an empty table")
    return events


def read_stimulus_table(path, require_captions=True):
    """Read the stimulus table (clip_id, file, caption, split); check ids and splits.

    With ``require_captions=False`` the caption column may be absent or have
    blanks (captions then come from a captioning model; the captions rule checks).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "the stimulus table named by dataset.stimuli_table", "no such file")
    table = pd.read_csv(path, sep="\t", dtype={"clip_id": str})
    if not require_captions and "caption" not in table.columns:
        table = table.assign(caption="")
    missing = [c for c in STIMULUS_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"columns {list(STIMULUS_COLUMNS)}", f"columns {list(table.columns)}")
    dup = table["clip_id"][table["clip_id"].duplicated()].tolist()
    if dup:
        raise InputError(path, "unique clip ids", f"duplicates {dup[:5]}")
    bad = sorted(set(table["split"]) - {"train", "test"})
    if bad:
        raise InputError(path, "split values 'train' or 'test'", f"{bad}")
    empty = table["clip_id"][table["caption"].isna() | (table["caption"].astype(str).str.strip() == "")]
    if len(empty) and require_captions:
        raise InputError(path, "a caption for every clip", f"no caption for {empty.tolist()[:5]}")
    for split in ("train", "test"):
        if not (table["split"] == split).any():
            raise InputError(path, f"at least one '{split}' clip", "none")
    return table
