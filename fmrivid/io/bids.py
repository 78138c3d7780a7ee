"""BIDS layout: run discovery, sidecars, events and the stimulus table.

Two ways to name runs:

* :func:`run_paths` builds the files of ``sub-<s>_task-<t>_run-<r>`` in the
  flat layout the demo writes (``sub-<s>/func/``), from labels listed in the config.
* :func:`discover_runs` finds every run of a subject as BIDS datasets are held
  in the wild: sessions (``sub-<s>/ses-<x>/func/``), optional ``run-`` entity,
  other entities (``acq-``, ``dir-``, ``echo-``...), ``.nii`` or ``.nii.gz``,
  sidecars inherited from upper levels (BIDS inheritance principle), and
  fMRIPrep derivatives (preprocessed BOLD and confounds in ``dataset.derivatives.root``,
  events from the raw dataset at ``dataset.root``).

The stimulus table is either a file (``dataset.stimuli_table``) or built from
the ``stim_file`` column of the events (:func:`resolve_stimulus_table`).

One module (~660 lines) on purpose: BIDS discovery, inheritance and fMRIPrep derivatives share the entity
parsing and the error messages, and a reader debugging a layout needs them together.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

import pandas as pd

from fmrivid.errors import ConfigError, InputError

EVENT_COLUMNS = ("onset", "duration", "clip_id")
STIMULUS_COLUMNS = ("clip_id", "file", "caption", "split")
#: Values read as "not applicable" in events files (BIDS writes ``n/a``).
NA_VALUES = ("", "n/a", "N/A", "NA", "nan", "NaN", "None")
#: Entities that tell two runs of one subject and task apart, in label order. Other entities
#: (``echo``, ``part``...) must not: two files differing only there are one run given twice.
LABEL_ENTITIES = ("ses", "acq", "ce", "rec", "dir", "run")
#: Entities fMRIPrep adds to the raw name of a preprocessed BOLD file.
DERIVATIVE_ENTITIES = ("space", "cohort", "res", "den", "desc")
SPLIT_SOURCES = ("table", "list", "repeats")


@dataclass(frozen=True)
class Run:
    """The files of one BIDS functional run.

    Attributes
    ----------
    subject : str
        Subject label without ``sub-``.
    run : str
        Label unique within the subject, used in file and log names: the run
        entity alone (``01``) when that is all that tells runs apart, else the
        distinguishing entities joined (``ses-1_run-01``, ``ses-2``, ``acq-hi_run-02``).
    bold : Path
        4-D BOLD image (raw or fMRIPrep-preprocessed).
    sidecar : Path or None
        JSON sidecar giving RepetitionTime (the nearest one up the tree).
    events : Path
        ``_events.tsv`` (from the raw dataset).
    confounds : Path or None
        fMRIPrep ``desc-confounds_timeseries.tsv`` (derivatives only).
    session : str or None
        Session label without ``ses-``.
    """

    subject: str
    run: str
    bold: Path
    sidecar: Optional[Path]
    events: Path
    confounds: Optional[Path] = None
    session: Optional[str] = None


def run_paths(root, subject, task, run):
    """Return the :class:`Run` of ``sub-<subject>_task-<task>_run-<run>`` under ``root``."""
    stem = f"sub-{subject}_task-{task}_run-{run}"
    func = Path(root) / f"sub-{subject}" / "func"
    return Run(subject, run, func / f"{stem}_bold.nii.gz", func / f"{stem}_bold.json",
               func / f"{stem}_events.tsv")


def _listing(folder, limit=8):
    """``[a, b, ...]`` naming at most ``limit`` entries of ``folder``."""
    found = sorted(p.name for p in Path(folder).glob("*")) if Path(folder).is_dir() else []
    return "[" + ", ".join(found[:limit]) + (" ..." if len(found) > limit else "") + "]"


def check_runs_exist(runs):
    """Raise InputError for the first run whose files are missing, listing what is there."""
    for run in runs:
        for path in (run.bold, run.sidecar, run.events, run.confounds):
            if path is not None and not Path(path).exists():
                folder = Path(path).parent
                raise InputError(
                    path, f"run {run.run} of subject {run.subject} (listed in dataset.runs)",
                    f"no such file; {folder} holds {_listing(folder)}" if folder.exists() else f"no folder {folder}",
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


def _clip_stem(stim_file):
    """Clip id of a ``stim_file`` value: the file name without its extension."""
    return PurePosixPath(str(stim_file).replace("\\", "/")).stem


def _blank(series):
    """True where an events cell is empty or 'n/a'."""
    return series.isna() | series.astype(str).str.strip().isin(NA_VALUES)


def read_events(path):
    """Read an ``_events.tsv``: onset, duration and the clip of each movie event.

    The clip comes from a ``clip_id`` column or, as the BIDS specification
    writes it, from ``stim_file`` (``movies/clip_017.mp4`` -> ``clip_017``);
    ``clip_id`` wins where both are given. Rows with neither (other event
    types, ``n/a``) are dropped; other columns are kept as read.

    Parameters
    ----------
    path : str or Path
        Tab-separated events file.

    Returns
    -------
    pandas.DataFrame
        onset, duration (float), clip_id (str), plus ``stim_file`` (as written,
        relative path) when the file has that column, one row per movie event.

    Raises
    ------
    InputError
        When the file is unreadable, lacks onset/duration or both clip_id and
        stim_file, or holds no movie event.
    """
    path = Path(path)
    try:
        events = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(path, "a tab-separated events file", f"unreadable ({exc})") from None
    need = ["onset", "duration"]
    if any(c not in events.columns for c in need) or not {"clip_id", "stim_file"} & set(events.columns):
        raise InputError(path, "columns onset, duration and clip_id or stim_file (BIDS)",
                         f"columns {list(events.columns)}")
    clip = pd.Series(pd.NA, index=events.index, dtype=object)
    if "stim_file" in events.columns:
        has_file = ~_blank(events["stim_file"])
        clip[has_file] = events.loc[has_file, "stim_file"].map(_clip_stem)
        events.loc[~has_file, "stim_file"] = pd.NA
    if "clip_id" in events.columns:
        has_id = ~_blank(events["clip_id"])
        clip[has_id] = events.loc[has_id, "clip_id"].str.strip()
    events = events.assign(clip_id=clip)[clip.notna()].reset_index(drop=True)
    if events.empty:
        raise InputError(path, "at least one movie event (a row with a clip_id or stim_file)",
                         "none" if "stim_file" not in events.columns else "none (every stim_file empty or n/a)")
    for column in need:
        values = pd.to_numeric(events[column].where(~_blank(events[column])), errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise InputError(path, f"a number in column {column} of every movie event",
                             f"{events[column].iloc[row]!r} for clip {events['clip_id'].iloc[row]}")
        events[column] = values.astype(float)
    return events


def read_stimulus_table(path, require_captions=True, require_split=True):
    """Read the stimulus table (clip_id, file, caption, split); check ids and splits.

    With ``require_captions=False`` the caption column may be absent or have
    blanks (captions then come from a captioning model; the captions rule checks).
    With ``require_split=False`` the split column may be absent (it is then
    decided by ``dataset.split``) and is not checked.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "the stimulus table named by dataset.stimuli_table", "no such file")
    table = pd.read_csv(path, sep="\t", dtype={"clip_id": str})
    if not require_captions and "caption" not in table.columns:
        table = table.assign(caption="")
    if not require_split and "split" not in table.columns:
        table = table.assign(split="train")
    missing = [c for c in STIMULUS_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"columns {list(STIMULUS_COLUMNS)}", f"columns {list(table.columns)}")
    dup = table["clip_id"][table["clip_id"].duplicated()].tolist()
    if dup:
        raise InputError(path, "unique clip ids", f"duplicates {dup[:5]}")
    empty = table["clip_id"][table["caption"].isna() | (table["caption"].astype(str).str.strip() == "")]
    if len(empty) and require_captions:
        raise InputError(path, "a caption for every clip", f"no caption for {empty.tolist()[:5]}")
    if require_split:
        _check_splits(path, table)
    return table


def _check_splits(source, table):
    bad = sorted(set(table["split"]) - {"train", "test"})
    if bad:
        raise InputError(source, "split values 'train' or 'test'", f"{bad}")
    for split in ("train", "test"):
        if not (table["split"] == split).any():
            raise InputError(source, f"at least one '{split}' clip", "none")


# --------------------------------------------------------------------------- discovery

_ENTITY = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9+]+)$")


def parse_name(name):
    """Split a BIDS file name into entities, suffix and extension.

    ``sub-01_ses-1_task-movie_run-02_bold.nii.gz`` ->
    ``({"sub": "01", "ses": "1", "task": "movie", "run": "02"}, "bold", ".nii.gz")``;
    a name that is not BIDS-shaped gives ``None``.
    """
    name = Path(name).name
    stem, dot, ext = name.partition(".")
    parts = stem.split("_")
    entities = {}
    for part in parts[:-1]:
        match = _ENTITY.match(part)
        if not match or match.group(1) in entities:
            return None
        entities[match.group(1)] = match.group(2)
    return entities, parts[-1], dot + ext


def _natural(value):
    """Sort key: numbers by value, then text."""
    if value is None:
        return (0, 0, "")
    return (1, int(value), value) if value.isascii() and value.isdigit() else (2, 0, value)


def _labels(raws):
    """Run labels of a subject's runs (raw entities of each), unique within the subject.

    ``ses`` and ``run`` are always part of the label when present, other
    entities of LABEL_ENTITIES only when they differ between runs; a label
    that is only the run entity is its bare value (``01``, as in dataset.runs).
    """
    keys = [k for k in LABEL_ENTITIES
            if any(k in r for r in raws) and (k in ("ses", "run") or len({r.get(k) for r in raws}) > 1)]
    labels = []
    for r in raws:
        present = [k for k in keys if k in r]
        labels.append(r["run"] if present == ["run"] else "_".join(f"{k}-{r[k]}" for k in present))
    return labels


def _derivatives(dataset_cfg):
    deriv = dict(dataset_cfg.get("derivatives") or {})
    root = str(deriv.get("root") or "")
    return (Path(root) if root else None, str(deriv.get("space") or ""), str(deriv.get("res") or ""),
            str(deriv.get("desc") or "preproc"))


def _func_dirs(subject_dir):
    """``func`` folders of a subject: ``func/`` and ``ses-*/func/``, sessions sorted naturally."""
    sessions = sorted((p for p in subject_dir.glob("ses-*") if p.is_dir()),
                      key=lambda p: _natural(p.name[4:]))
    return [d for d in [subject_dir / "func"] + [s / "func" for s in sessions] if d.is_dir()]


def _bold_files(subject_dir, subject, task, derivative, space, res, desc):
    """(entities, path) of every BOLD file of the subject and task in one dataset."""
    found = []
    for func in _func_dirs(subject_dir):
        for path in sorted(func.glob("*_bold.nii*")):
            parsed = parse_name(path.name)
            if parsed is None:
                continue
            ent, suffix, ext = parsed
            if suffix != "bold" or ext not in (".nii", ".nii.gz") or ent.get("sub") != subject \
                    or ent.get("task") != task:
                continue
            folder_ses = func.parent.name[4:] if func.parent.name.startswith("ses-") else None
            if ent.get("ses") != folder_ses:
                continue
            if derivative:
                if ent.get("desc") != desc or "space" not in ent or (space and ent["space"] != space) \
                        or (res and ent.get("res") != res):
                    continue
            elif any(k in ent for k in DERIVATIVE_ENTITIES):
                continue
            found.append((ent, path))
    return found


def _pattern(subject, task, derivative, space, res, desc):
    entities = f"sub-{subject}[_ses-<x>]_task-{task}[_acq-<a>][_run-<r>]"
    if derivative:
        entities += f"_space-{space or '<space>'}" + (f"_res-{res}" if res else "[_res-<n>]") + f"_desc-{desc}"
    return f"sub-{subject}[/ses-<x>]/func/{entities}_bold.nii[.gz]"


def _applicable(ent, suffix, ext, folder):
    """The file in ``folder`` with ``suffix``+``ext`` whose entities are a subset of ``ent``, most specific first."""
    hits = []
    for path in folder.glob(f"*{suffix}{ext}"):
        parsed = parse_name(path.name)
        if parsed is None or parsed[1] != suffix or parsed[2] != ext:
            continue
        if all(ent.get(k) == v for k, v in parsed[0].items()):
            hits.append((len(parsed[0]), path))
    hits.sort(key=lambda h: (-h[0], h[1].name))
    if len(hits) > 1 and hits[0][0] == hits[1][0]:
        raise InputError(folder, f"at most one {suffix}{ext} applying to {_stem(ent)} at one level "
                                 "(BIDS inheritance)", f"{hits[0][1].name} and {hits[1][1].name}")
    return hits[0][1] if hits else None


def inherited_files(root, ent, suffix, ext):
    """Files applying to a run by the BIDS inheritance principle, nearest first.

    Looks in the run's ``func`` folder, then the session folder, the subject
    folder and ``root``; at each level the file whose entities are the largest
    subset of the run's entities.

    Parameters
    ----------
    root : Path
        Dataset root.
    ent : dict
        Entities of the run (without derivative entities).
    suffix, ext : str
        E.g. ``"bold"``, ``".json"``.

    Returns
    -------
    list of Path
    """
    root = Path(root)
    sub = root / f"sub-{ent['sub']}"
    levels = [sub / f"ses-{ent['ses']}" / "func", sub / f"ses-{ent['ses']}"] if "ses" in ent else [sub / "func"]
    levels += [sub, root]
    found = []
    for folder in levels:
        if folder.is_dir():
            hit = _applicable(ent, suffix, ext, folder)
            if hit is not None:
                found.append(hit)
    return found


def find_sidecar(root, ent, key="RepetitionTime"):
    """The nearest applicable ``_bold.json`` defining ``key``, else the nearest one, else None."""
    chain = inherited_files(root, ent, "bold", ".json")
    for path in chain:
        try:
            if key in json.loads(path.read_text()):
                return path
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(path, "a JSON sidecar", f"unreadable JSON ({exc})") from None
    return chain[0] if chain else None


def _raw_entities(ent):
    return {k: v for k, v in ent.items() if k not in DERIVATIVE_ENTITIES}


def _stem(ent):
    return "_".join(f"{k}-{v}" for k, v in ent.items())


def _confounds_file(bold, ent):
    raw = _raw_entities(ent)
    for suffix in ("timeseries", "regressors"):  # fMRIPrep < 20.2 wrote desc-confounds_regressors
        path = bold.parent / f"{_stem(raw)}_desc-confounds_{suffix}.tsv"
        if path.exists():
            return path
    return None


def _filter(subject, runs, key, wanted, folder, what):
    """Keep the (entities, path) pairs whose ``key`` entity is listed; every listed value must be there."""
    if not wanted:
        return runs
    wanted = [str(w) for w in wanted]
    have = sorted({e.get(key) for e, _ in runs if e.get(key) is not None}, key=_natural)
    missing = [w for w in wanted if w not in have]
    if missing:
        raise InputError(folder, f"{what} {missing} of subject {subject} (listed in dataset.{what}s)",
                         f"{what}s {have}" if have else f"no {what} entity; the folder holds {_listing(folder)}")
    return [(e, p) for e, p in runs if e.get(key) in wanted]


def discover_subjects(dataset_cfg):
    """Subject labels: ``dataset.subjects`` when listed, else every ``sub-*`` folder of the BOLD dataset."""
    listed = [str(s) for s in dataset_cfg.get("subjects") or []]
    if listed:
        return listed
    deriv_root = _derivatives(dataset_cfg)[0]
    folder = deriv_root if deriv_root is not None else Path(dataset_cfg["root"])
    found = sorted((p.name[4:] for p in folder.glob("sub-*") if p.is_dir()), key=_natural)
    if not found:
        raise InputError(folder, "subject folders sub-<label> (or dataset.subjects)", f"{_listing(folder)}")
    return found


def discover_runs(dataset_cfg, subject):
    """Every functional run of ``subject`` with its sidecar, events and confounds.

    Parameters
    ----------
    dataset_cfg : dict
        The ``dataset`` config section: ``root`` (raw BIDS), ``task``, ``runs``
        and ``sessions`` (labels without prefix; empty = all found),
        ``derivatives`` (``root``: fMRIPrep output dir or "" for raw BOLD,
        ``space``, ``res`` ("" = the only one there), ``desc``, default ``preproc``).
    subject : str
        Subject label without ``sub-``.

    Returns
    -------
    list of Run
        Ordered by session, then acq/dir, then run (numbers by value).

    Raises
    ------
    InputError
        When the subject has no run matching the pattern (naming the folder and
        pattern), a listed run or session is missing (listing what is there),
        two files claim one run (e.g. two spaces), a run has no events or no
        sidecar with RepetitionTime.
    """
    root = Path(dataset_cfg["root"])
    task = str(dataset_cfg.get("task") or "movie")
    subject = str(subject)
    deriv_root, space, res, desc = _derivatives(dataset_cfg)
    derivative = deriv_root is not None
    bold_root = deriv_root if derivative else root
    subject_dir = bold_root / f"sub-{subject}"
    pattern = _pattern(subject, task, derivative, space, res, desc)
    if not subject_dir.is_dir():
        raise InputError(subject_dir, f"a folder holding {pattern}", f"no such folder; {bold_root} holds "
                                                                      f"{_listing(bold_root)}")
    found = _bold_files(subject_dir, subject, task, derivative, space, res, desc)
    if not found:
        shown = "; ".join(f"{d.relative_to(subject_dir)} holds {_listing(d)}" for d in _func_dirs(subject_dir))
        raise InputError(subject_dir, f"BOLD runs matching {pattern}",
                         f"none ({shown or 'no func/ or ses-*/func/ folder'})")
    found = _filter(subject, found, "ses", dataset_cfg.get("sessions"), subject_dir, "session")
    found = _filter(subject, found, "run", dataset_cfg.get("runs"), subject_dir, "run")

    by_key = {}
    for ent, path in found:
        raw = _raw_entities(ent)
        key = _stem({k: v for k, v in raw.items() if k in LABEL_ENTITIES})
        if key in by_key:
            other = by_key[key][1]
            raise InputError(path.parent, f"one BOLD file per run ({key or 'the only run'})",
                             f"{other.name} and {path.name}" + ("; set dataset.derivatives.space/res"
                                                                if derivative else ""))
        by_key[key] = (ent, path)
    ordered = sorted(by_key.values(), key=lambda ep: tuple(_natural(ep[0].get(k)) for k in LABEL_ENTITIES))
    labels = _labels([_raw_entities(e) for e, _ in ordered])
    return [_run(root, subject, task, label, ent, path, derivative) for label, (ent, path) in zip(labels, ordered)]


def _run(root, subject, task, label, ent, path, derivative):
    """The :class:`Run` of one BOLD file: sidecar (own, else inherited), events, confounds."""
    raw = _raw_entities(ent)
    sidecar = None
    if derivative:
        own = path.parent / (path.name.split(".")[0] + ".json")
        if own.exists():
            try:
                meta = json.loads(own.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(own, "a JSON sidecar", f"unreadable JSON ({exc})") from None
            sidecar = own if "RepetitionTime" in meta else None
    if sidecar is None:
        sidecar = find_sidecar(root, raw)
    if sidecar is None:
        raise InputError(path, "a JSON sidecar with RepetitionTime: "
                               f"{_stem(raw)}_bold.json next to the raw run or one inherited from the session, "
                               f"subject or dataset root (e.g. {root / f'task-{task}_bold.json'})", "none")
    events = inherited_files(root, raw, "events", ".tsv")
    if not events:
        raw_func = root / f"sub-{subject}" / (f"ses-{raw['ses']}" if "ses" in raw else "") / "func"
        raise InputError(raw_func / f"{_stem(raw)}_events.tsv",
                         "the events of the run" + (" (fMRIPrep does not copy them: dataset.root must be the "
                                                    "raw BIDS dataset)" if derivative else ""),
                         f"no such file; {raw_func} holds {_listing(raw_func)}")
    return Run(subject, label, path, sidecar, events[0], _confounds_file(path, ent) if derivative else None,
               raw.get("ses"))


# --------------------------------------------------------------------------- stimulus table

def stimulus_folder(dataset_cfg):
    """Folder the ``file`` column of the stimulus table is relative to.

    The table's folder when ``dataset.stimuli_table`` exists, else
    ``<root>/<dataset.stimuli_dir>`` (``stimuli`` by BIDS convention).
    """
    root = Path(dataset_cfg["root"])
    table = root / str(dataset_cfg.get("stimuli_table") or "stimuli/clips.tsv")
    return table.parent if table.exists() else root / str(dataset_cfg.get("stimuli_dir") or "stimuli")


def _split_cfg(dataset_cfg):
    split = dict(dataset_cfg.get("split") or {})
    source = str(split.get("source") or "table")
    if source not in SPLIT_SOURCES:
        raise ConfigError(f"dataset.split.source: expected one of {list(SPLIT_SOURCES)}; found {source!r}")
    return source, [str(c) for c in split.get("test") or []], int(split.get("min_repeats") or 2)


def _resolve_stim_file(root, stim_dir, stim_file, source):
    """Path of a ``stim_file``: relative to the stimuli folder (BIDS), else to the dataset root."""
    rel = str(stim_file).replace("\\", "/")
    for base in (stim_dir, root):
        if (base / rel).exists():
            return base / rel
    raise InputError(stim_dir / rel, f"the movie named by stim_file {rel!r} in {source} (relative to "
                                     f"{stim_dir} as BIDS has it, or to the dataset root)", "no such file")


def _assign_split(table, source, test, min_repeats, counts, origin):
    """Add the split column from dataset.split (list or repeats)."""
    if source == "list":
        unknown = sorted(set(test) - set(table["clip_id"]))
        if unknown:
            raise InputError("dataset.split.test", f"clip ids of the stimulus table ({origin})",
                             f"unknown ids {unknown[:5]}")
        split = table["clip_id"].isin(test)
        what = "dataset.split.test"
    else:
        shown = table["clip_id"].map(counts).fillna(0)
        split = shown >= min_repeats
        what = f"dataset.split.source 'repeats' (clips shown at least {min_repeats} times to a subject are test)"
        if split.all() or not split.any():
            raise InputError(origin, f"both test and train clips from {what}",
                             f"{'every' if split.all() else 'no'} clip shown at least {min_repeats} times "
                             f"(presentations per clip: {sorted(set(int(v) for v in shown))}); "
                             "set dataset.split.min_repeats or use source 'list'")
    table = table.assign(split=split.map({True: "test", False: "train"}))
    _check_splits(what, table)
    return table


def _presentations(event_files):
    """Clip id -> the most presentations one subject saw (events files grouped by their sub- entity)."""
    per_subject = {}
    for path in event_files:
        parsed = parse_name(Path(path).name)
        sub = parsed[0].get("sub", "") if parsed else ""
        counts = per_subject.setdefault(sub, {})
        for cid in read_events(path)["clip_id"]:
            counts[cid] = counts.get(cid, 0) + 1
    best = {}
    for counts in per_subject.values():
        for cid, n in counts.items():
            best[cid] = max(best.get(cid, 0), n)
    return best


def stimulus_table_from_events(dataset_cfg, event_files):
    """Build the stimulus table from the ``stim_file`` column of events files.

    Parameters
    ----------
    dataset_cfg : dict
        The ``dataset`` section: ``root``, ``stimuli_dir`` (default ``stimuli``)
        and ``split``: ``{source: list, test: [ids]}`` or ``{source: repeats,
        min_repeats: 2}`` (clips a subject saw at least min_repeats times are test).
    event_files : list of Path
        Events files of every run of every subject.

    Returns
    -------
    pandas.DataFrame
        clip_id, file (relative to :func:`stimulus_folder`), caption (""),
        split; one row per clip, sorted by clip id.

    Raises
    ------
    InputError
        When an event has no stim_file, a clip id maps to two files, a movie
        is missing, or the split leaves no train or no test clip.
    """
    root = Path(dataset_cfg["root"])
    stim_dir = root / str(dataset_cfg.get("stimuli_dir") or "stimuli")
    source, test, min_repeats = _split_cfg(dataset_cfg)
    if source == "table":
        raise InputError(root / str(dataset_cfg.get("stimuli_table") or "stimuli/clips.tsv"),
                         "the stimulus table (dataset.split.source 'table')",
                         "no such file; set dataset.split.source to 'repeats' or 'list' to build it from the "
                         "events' stim_file")
    files, resolved = {}, {}
    for path in event_files:
        events = read_events(path)
        if "stim_file" not in events.columns or events["stim_file"].isna().any():
            raise InputError(path, "a stim_file for every movie event (no stimulus table file to look clips up in)",
                             "no stim_file column" if "stim_file" not in events.columns
                             else f"none for clip {events['clip_id'][events['stim_file'].isna()].iloc[0]}")
        for cid, stim in zip(events["clip_id"], events["stim_file"]):
            if stim not in resolved:
                found = _resolve_stim_file(root, stim_dir, stim, path)
                resolved[stim] = os.path.relpath(found, stim_dir).replace(os.sep, "/")
            if files.setdefault(cid, resolved[stim]) != resolved[stim]:
                raise InputError(path, f"one movie per clip id {cid}", f"{files[cid]} and {resolved[stim]}")
    if not files:
        raise InputError(stim_dir, "events files to build the stimulus table from", "none")
    ids = sorted(files)
    table = pd.DataFrame({"clip_id": ids, "file": [files[c] for c in ids], "caption": ""})
    counts = _presentations(event_files) if source == "repeats" else {}
    return _assign_split(table, source, test, min_repeats, counts, f"events under {root}")


def resolve_stimulus_table(dataset_cfg):
    """The validated stimulus table: the ``dataset.stimuli_table`` file, or built from the events.

    With the table file present, ``dataset.split`` source ``table`` keeps its
    split column; ``list`` or ``repeats`` replace it. Without the file the
    table is built by :func:`stimulus_table_from_events` from every run of
    every subject (:func:`discover_subjects`, :func:`discover_runs`).
    ``file`` is relative to :func:`stimulus_folder` (also in ``table.attrs["folder"]``).

    Parameters
    ----------
    dataset_cfg : dict
        The ``dataset`` config section.

    Returns
    -------
    pandas.DataFrame
        clip_id, file, caption, split (train|test).
    """
    root = Path(dataset_cfg["root"])
    source, test, min_repeats = _split_cfg(dataset_cfg)
    path = root / str(dataset_cfg.get("stimuli_table") or "stimuli/clips.tsv")
    if path.exists():
        table = read_stimulus_table(path, require_captions=False, require_split=source == "table")
        if source != "table":
            counts = {}
            if source == "repeats":
                counts = _presentations([r.events for s in discover_subjects(dataset_cfg)
                                         for r in discover_runs(dataset_cfg, s)])
            table = _assign_split(table, source, test, min_repeats, counts, path)
    else:
        events = [r.events for s in discover_subjects(dataset_cfg) for r in discover_runs(dataset_cfg, s)]
        table = stimulus_table_from_events(dataset_cfg, list(dict.fromkeys(events)))
    table.attrs["folder"] = str(stimulus_folder(dataset_cfg))
    return table
