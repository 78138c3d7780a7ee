"""The CC2017 ("Dynamic Natural Vision", Wen et al. 2017) layout.

::

    <root>/subject<s>/fmri/seg<k>/cifti/seg<k>_<rep>_Atlas.dtseries.nii     training, k = 1..18, rep = 1..2
    <root>/subject<s>/fmri/test<k>/cifti/test<k>_<rep>_Atlas.dtseries.nii   test, k = 1..5, rep = 1..10
    <root>/subject<s>/fmri/<seg>/mni/<mni_file>                             the NIfTI alternative
    <root>/stimuli/seg<k>.mp4, test<k>.mp4                                  30 fps movies

Runs carry no events file: the stimulus timeline is the movie itself. After the
official trimming (245 volumes: drop 1 + 4; 246: drop 2 + 4) the 240 kept
volumes cover the 480-s movie, one 2-s clip per TR; clip ``<seg>_<i:03d>`` starts
at movie time ``i * TR``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmrivid.errors import InputError


def segments(n_train, n_test):
    """Segment names: (['seg1', ...], ['test1', ...])."""
    return [f"seg{k}" for k in range(1, n_train + 1)], [f"test{k}" for k in range(1, n_test + 1)]


def run_path(root, subject, seg, rep, space="cifti", mni_file="{seg}_{rep}_mni.nii.gz"):
    """Path of one run (segment ``seg``, repeat ``rep``) of ``subject``."""
    folder = Path(root) / f"subject{subject}" / "fmri" / seg
    if space == "cifti":
        return folder / "cifti" / f"{seg}_{rep}_Atlas.dtseries.nii"
    return folder / "mni" / mni_file.format(seg=seg, rep=rep)


def clip_id(seg, index):
    """Clip id of the 2-s clip ``index`` (0-based) of segment ``seg``."""
    return f"{seg}_{index:03d}"


def timeline(seg, n_volumes, tr, first, last):
    """Events of a trimmed CC2017 run: one TR-long clip per kept volume.

    Onsets are relative to the untrimmed run start (volume 0 at t = 0), like BIDS
    events: clip i starts at (first + i) * tr.
    """
    n_kept = n_volumes - first - last
    return pd.DataFrame({"onset": (first + np.arange(n_kept)) * tr, "duration": float(tr),
                         "clip_id": [clip_id(seg, i) for i in range(n_kept)]})


def list_runs(root, subject, cc, check=True):
    """(segment, repeat, split, path) of every run of a subject.

    Parameters
    ----------
    cc : dict
        The ``dataset.cc2017`` config section.
    check : bool
        Raise InputError naming the first missing file (and what its folder holds).
    """
    train, test = segments(cc["train_segments"], cc["test_segments"])
    out = []
    for names, reps, split in ((train, cc["train_repeats"], "train"), (test, cc["test_repeats"], "test")):
        for seg in names:
            for rep in range(1, reps + 1):
                out.append((seg, str(rep), split, run_path(root, subject, seg, rep, cc["space"], cc["mni_file"])))
    if check:
        for seg, rep, _, path in out:
            if not path.exists():
                folder = path.parent
                held = sorted(p.name for p in folder.glob("*"))[:8] if folder.exists() else None
                raise InputError(path, f"repeat {rep} of segment {seg} of subject {subject} (CC2017 layout)",
                                 f"no such file; {folder} holds {held}" if held is not None
                                 else f"no folder {folder}")
    return out


def stimulus_table(cc, tr=2.0, n_clips=240):
    """One row per 2-s clip: clip_id, file (segment movie), start_s, duration_s, split.

    Captions are not part of CC2017; the features stage supplies them.
    """
    train, test = segments(cc["train_segments"], cc["test_segments"])
    rows = []
    for names, split in ((train, "train"), (test, "test")):
        for seg in names:
            for i in range(n_clips):
                rows.append({"clip_id": clip_id(seg, i), "file": f"{seg}.mp4", "start_s": i * tr,
                             "duration_s": tr, "split": split, "segment": seg})
    return pd.DataFrame(rows)


def run_labels(cc):
    """Run labels ``<seg>_<rep>`` of every run of a subject (training segments first)."""
    train, test = segments(cc["train_segments"], cc["test_segments"])
    return [f"{seg}_{rep}" for seg in train for rep in range(1, cc["train_repeats"] + 1)] + \
        [f"{seg}_{rep}" for seg in test for rep in range(1, cc["test_repeats"] + 1)]


def label_path(root, subject, label, cc):
    """Path of the run labelled ``<seg>_<rep>``."""
    seg, rep = str(label).rsplit("_", 1)
    return run_path(root, subject, seg, rep, cc["space"], cc["mni_file"])
