"""Brain-side metrics: encoding accuracy (voxel_r) and between-subject agreement (isc, fsc).

All three are Pearson correlations computed with numpy on (samples x voxels)
matrices of test-split responses.
"""

from __future__ import annotations

import numpy as np

from fmrivid.errors import InputError

VARIANTS = {
    "voxel_r": "Pearson r per voxel between encoder-predicted and measured test responses (ridge encoder from "
               "{feature} features, fitted on training samples only); {stat} over voxels; p against phase-randomised "
               "surrogates of the measured test series (autocorrelation kept)",
    "isc": "inter-subject correlation (GLFA): per voxel, Pearson r over test clips between this subject's "
           "responses and the mean of the other subjects' on the voxels all subjects kept; mean over voxels",
    "fsc": "fMRI spatial correlation (GLFA): per test clip, Pearson r over the common voxels between this "
           "subject's response pattern and the mean pattern of the other subjects; mean over clips",
    "fsc_pairwise": "fMRI spatial correlation as GLFA defines it (seed 002, Cross-subject Alignment Metrics): "
                    "r(s_i, s_j), per test clip the Pearson r over the common voxels between the two subjects' "
                    "response patterns; mean over clips; row of s_i, s_j named in the variant",
}


def _check_matrix(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) < 2:
        raise InputError(name, "a (samples, voxels) matrix with at least 2 of each", f"shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(name, "finite values", "NaN or inf")
    return x


def column_corr(a, b):
    """Pearson r of matching columns of two (S, V) matrices -> (V,); 0 where a column is constant."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    num = np.einsum("sv,sv->v", a, b)
    den = np.sqrt(np.einsum("sv,sv->v", a, a) * np.einsum("sv,sv->v", b, b))
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def voxel_r(pred, measured):
    """Pearson r between predicted and measured responses of each voxel.

    Parameters
    ----------
    pred, measured : array_like, shape (S, V)
        S test samples, V voxels.

    Returns
    -------
    ndarray, float64, shape (V,)
        0 for a voxel whose prediction or measurement is constant.
    """
    pred = _check_matrix(pred, "pred")
    measured = _check_matrix(measured, "measured")
    if pred.shape != measured.shape:
        raise InputError("pred", f"the shape of measured {measured.shape}", f"shape {pred.shape}")
    return column_corr(pred, measured)


def common_voxels(subjects):
    """Align subjects on the voxels they all kept.

    Parameters
    ----------
    subjects : dict of str -> dict
        Subject -> ``{"X": (N, V_s), "ijk": (V_s, 3), "affine": (4, 4), "ids": list}``
        (test responses, voxel indices, grid affine, clip ids); CIFTI data adds ``"grayordinate": (V_s,)``,
        the grayordinate index of each column, which then keys the columns instead of ``ijk`` (cortical
        vertices have no voxel index: all read (-1, -1, -1)).

    Returns
    -------
    dict of str -> ndarray, shape (N, V_common)
        Responses on the common voxels, clips in the first subject's order.
    """
    names = sorted(subjects)
    if len(names) < 2:
        raise InputError("subjects", "at least 2 subjects for between-subject metrics", f"{names}")
    ref = subjects[names[0]]
    surface = [subjects[s].get("grayordinate") is not None for s in names]
    if any(surface) and not all(surface):
        raise InputError(f"sub-{names[surface.index(False) if surface[0] else surface.index(True)]}",
                         "the same space (CIFTI grayordinates or volume voxels) for every subject", "a mix")
    for s in names[1:]:
        if not all(surface) and not np.allclose(subjects[s]["affine"], ref["affine"]):
            raise InputError(f"sub-{s}", f"the voxel grid (affine) of sub-{names[0]}", "a different affine")
        if sorted(subjects[s]["ids"]) != sorted(ref["ids"]):
            raise InputError(f"sub-{s}", f"the test clips of sub-{names[0]}", "different clip ids")
    def column_keys(s):
        if all(surface):
            return [int(g) for g in np.asarray(subjects[s]["grayordinate"])]
        return [tuple(v) for v in np.asarray(subjects[s]["ijk"]).tolist()]

    common = sorted(set.intersection(*[set(column_keys(s)) for s in names]))
    out = {}
    for s in names:
        pos = {v: k for k, v in enumerate(column_keys(s))}
        rows = {c: k for k, c in enumerate(subjects[s]["ids"])}
        order = [rows[c] for c in ref["ids"]]
        cols = [pos[v] for v in common]
        out[s] = np.asarray(subjects[s]["X"], dtype=np.float64)[np.ix_(order, cols)]
    return out


def _others_mean(aligned, s):
    return np.mean([aligned[o] for o in sorted(aligned) if o != s], axis=0)


def isc(aligned):
    """Inter-subject correlation per voxel (leave-one-subject-out mean).

    Parameters
    ----------
    aligned : dict of str -> ndarray, shape (N, V)
        Output of :func:`common_voxels`.

    Returns
    -------
    dict of str -> ndarray, shape (V,)
    """
    return {s: column_corr(_check_matrix(aligned[s], f"sub-{s}"), _others_mean(aligned, s)) for s in aligned}


def fsc_pairwise(aligned):
    """GLFA's fSC between every pair of subjects: per clip, the spatial Pearson r of their patterns.

    Parameters
    ----------
    aligned : dict of str -> ndarray, shape (N, V)
        Output of :func:`common_voxels`.

    Returns
    -------
    dict of (str, str) -> ndarray, shape (N,)
        Keys ``(s_i, s_j)`` with ``s_i < s_j``; the mean over clips is the paper's ``r(s_i, s_j)``.
    """
    subs = sorted(aligned)
    mats = {s: _check_matrix(aligned[s], f"sub-{s}") for s in subs}
    return {(a, b): column_corr(mats[a].T, mats[b].T) for i, a in enumerate(subs) for b in subs[i + 1:]}


def fsc(aligned):
    """Spatial correlation per clip between a subject's pattern and the others' mean pattern.

    Parameters
    ----------
    aligned : dict of str -> ndarray, shape (N, V)
        Output of :func:`common_voxels`.

    Returns
    -------
    dict of str -> ndarray, shape (N,)
    """
    return {s: column_corr(_check_matrix(aligned[s], f"sub-{s}").T, _others_mean(aligned, s).T)
            for s in aligned}
