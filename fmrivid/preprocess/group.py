"""A group subject: the preprocessed samples of several subjects averaged into one (seed 004's "group brain").

The encoder-decoder paper trains on fMRI "averaged across 30 subjects" (seed 004 §Method Summary, §Design
tradeoffs): a higher SNR at the price of individual differences. :func:`group_average` reads the subjects'
``fmri/sub-XX.h5`` files and writes ``fmri/sub-group.h5`` in the same layout, so that every decoder, generator
and metric runs on it as on any subject:

- rows are matched by clip id (each split's clips must be the same for every subject, one row per clip:
  ``preprocess.average_train_repeats: true``);
- columns are the voxels every subject kept (voxel index on the common grid, or grayordinate index for CIFTI
  data): the seed averages and then selects voxels, fmrivid selects per subject (``preprocess.selection``) and
  averages on the voxels kept by all; with ``selection.method: none`` the average covers the whole mask;
- the value is the mean over subjects of each subject's preprocessed (detrended, z-scored) samples; the voxel
  score is the mean of the subjects' scores.

Nothing here looks at which split a row is in beyond matching ids: each subject was already standardised on
its own training rows only, and averaging is per row.
"""

from __future__ import annotations

import numpy as np

from fmrivid.errors import InputError

GROUP = "group"


def _keys(sub):
    if sub.get("grayordinate") is not None:
        return [int(g) for g in np.asarray(sub["grayordinate"])]
    return [tuple(v) for v in np.asarray(sub["ijk"]).tolist()]


def _unique_ids(path, ids, split):
    if len(set(ids)) != len(ids):
        raise InputError(path, f"one {split} row per clip to average subjects by clip "
                         "(preprocess.average_train_repeats: true)", f"{len(ids) - len(set(ids))} repeated clip ids")


def group_average(paths, out_path, log=print):
    """Average subjects' preprocessed samples into one group subject (see the module docstring).

    Parameters
    ----------
    paths : dict of str -> path
        Subject -> its ``fmri/sub-XX.h5`` (at least 2).
    out_path : path
        ``fmri/sub-group.h5``, written atomically.

    Returns
    -------
    dict
        ``n_subjects``, ``n_voxels`` (common), ``voxels_per_subject``, ``n_train``, ``n_test``.
    """
    from fmrivid.preprocess.pipeline import SubjectData, read_subject, write_subject

    names = sorted(paths)
    if len(names) < 2:
        raise InputError("preprocess.group_average", "at least 2 subjects to average", f"{names}")
    subs = {s: read_subject(paths[s]) for s in names}
    ref = subs[names[0]]
    spaces = {s: str(d["space"]) for s, d in subs.items()}
    window = {s: int(d["info"].get("window_trs", 0)) for s, d in subs.items()}
    for s in names[1:]:
        d = subs[s]
        if spaces[s] != spaces[names[0]] or window[s] != window[names[0]]:
            raise InputError(paths[s], f"the space and window of {paths[names[0]]} ({spaces[names[0]]}, "
                             f"window_trs {window[names[0]]})", f"{spaces[s]}, window_trs {window[s]}")
        if spaces[s] != "cifti" and (tuple(d["shape"]) != tuple(ref["shape"])
                                     or not np.allclose(d["affine"], ref["affine"])):
            raise InputError(paths[s], f"the voxel grid of {paths[names[0]]} (shape {tuple(ref['shape'])})",
                             f"shape {tuple(d['shape'])} or another affine: a common space (e.g. MNI) is needed")
        for split in ("train", "test"):
            if sorted(d[f"{split}_ids"]) != sorted(ref[f"{split}_ids"]):
                raise InputError(paths[s], f"the {split} clips of {paths[names[0]]}",
                                 f"{len(d[f'{split}_ids'])} other clip ids")
    for s in names:
        for split in ("train", "test"):
            _unique_ids(paths[s], subs[s][f"{split}_ids"], split)
    common = sorted(set.intersection(*[set(_keys(subs[s])) for s in names]))
    if not common:
        raise InputError("preprocess.group_average", "voxels kept by every subject", "none in common")
    w = max(window[names[0]], 1)
    out = {}
    for split in ("train", "test"):
        ids = list(ref[f"{split}_ids"])
        total = 0.0
        for s in names:
            d = subs[s]
            pos = {k: i for i, k in enumerate(_keys(d))}
            cols = np.array([pos[k] for k in common], dtype=int)
            rows = {c: i for i, c in enumerate(d[f"{split}_ids"])}
            X = np.asarray(d[f"{split}_X"], np.float64)[[rows[c] for c in ids]]
            X = X.reshape(len(ids), w, -1)[:, :, cols].reshape(len(ids), -1)
            total = total + X
        out[split] = (total / len(names), ids)
    pos0 = {k: i for i, k in enumerate(_keys(ref))}
    ref_cols = np.array([pos0[k] for k in common], dtype=int)
    score = np.mean([np.asarray(subs[s]["score"], np.float64)[[{k: i for i, k in enumerate(_keys(subs[s]))}[k]
                                                                for k in common]] for s in names], axis=0)
    info = {**ref["info"], "group_of": names, "group_common_voxels": len(common),
            "group_note": "mean over subjects of their preprocessed samples on the voxels all kept"}
    sd = SubjectData(GROUP, out["train"][0], out["train"][1], out["test"][0], out["test"][1],
                     np.asarray(ref["ijk"])[ref_cols], np.asarray(ref["affine"]), tuple(ref["shape"]), score,
                     info=info, space=spaces[names[0]],
                     columns=np.asarray(ref["grayordinate"])[ref_cols] if ref.get("grayordinate") is not None
                     else None)
    write_subject(out_path, sd)
    counts = {s: len(_keys(subs[s])) for s in names}
    log(f"group: {len(names)} subjects ({counts} voxels kept) averaged on the {len(common)} voxels all kept; "
        f"{len(out['train'][1])} train, {len(out['test'][1])} test rows -> {out_path}")
    return {"n_subjects": len(names), "n_voxels": len(common), "voxels_per_subject": counts,
            "n_train": len(out["train"][1]), "n_test": len(out["test"][1])}
