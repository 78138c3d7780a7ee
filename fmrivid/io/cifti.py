"""CIFTI-2 dense time series (``.dtseries.nii``) read and written with nibabel.

A dtseries holds (time x grayordinates); the grayordinates are described by a
``BrainModelAxis`` (surface vertices of each hemisphere, then subcortical
voxels). The HCP "91k" space has 91,282 grayordinates, the first 59,412 of
which are cortical vertices on the fsLR-32k surfaces (CC2017's cortex).

Surface label files (an ROI atlas such as HCP-MMP1.0 on 32k_fs_LR) are read here
too: a CIFTI-2 dense label (``.dlabel.nii``: LabelAxis x BrainModelAxis) or one
GIfTI label file per hemisphere (``.label.gii``). Both are matched to data by
(cortical structure, vertex index), never by column position.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from fmrivid.errors import InputError

TR_TOLERANCE = 1e-3
CORTEX = ("CIFTI_STRUCTURE_CORTEX_LEFT", "CIFTI_STRUCTURE_CORTEX_RIGHT")
#: Hemisphere name (fmrivid.preprocess.surface.HEMIS) of each cortical CIFTI structure.
HEMI_OF = {"CIFTI_STRUCTURE_CORTEX_LEFT": "left", "CIFTI_STRUCTURE_CORTEX_RIGHT": "right"}
STRUCTURE_OF = {v: k for k, v in HEMI_OF.items()}
#: HCP fsLR-32k: cortical vertices kept per hemisphere (medial wall removed) and subcortical voxels.
HCP_91K = {"left": 29696, "right": 29716, "vertices": 32492, "subcortical": 31870}


def _axes(img, path):
    try:
        series, models = img.header.get_axis(0), img.header.get_axis(1)
    except Exception as exc:
        raise InputError(path, "a CIFTI-2 dense time series (series x brain-models axes)",
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(series, nib.cifti2.SeriesAxis) or not isinstance(models, nib.cifti2.BrainModelAxis):
        raise InputError(path, "a CIFTI-2 dense time series (SeriesAxis x BrainModelAxis)",
                         f"axes {type(series).__name__} x {type(models).__name__}")
    return series, models


def check_header(path, expected_tr=None):
    """Validate a ``.dtseries.nii`` from its header: readable CIFTI-2, time axis, TR.

    Returns
    -------
    nibabel.Cifti2Image (data not read)
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "a CIFTI-2 dense time series (.dtseries.nii)", "no such file")
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise InputError(path, "a readable CIFTI-2 file", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(img, nib.Cifti2Image):
        raise InputError(path, "a CIFTI-2 image", f"a {type(img).__name__}")
    series, models = _axes(img, path)
    if img.shape[0] < 2:
        raise InputError(path, "at least 2 time points", f"{img.shape[0]}")
    if img.shape[1] != len(models):
        raise InputError(path, f"{len(models)} grayordinates (brain-models axis)", f"{img.shape[1]} columns")
    tr = float(series.step)
    if series.unit == "SECOND" and expected_tr is not None and abs(tr - expected_tr) > TR_TOLERANCE:
        raise InputError(path, f"TR {expected_tr} s (dataset.tr in the config)", f"series step {tr} s")
    if series.unit != "SECOND":
        raise InputError(path, "a time series axis in SECOND", f"unit {series.unit}")
    try:
        need = int(getattr(img.dataobj, "offset", 0)) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
    except Exception:
        need = 0
    if need and path.stat().st_size < need:
        raise InputError(path, f"a complete CIFTI-2 file of {need} bytes for shape {img.shape}",
                         f"{path.stat().st_size} bytes (truncated)")
    return img


def load_dtseries(path, img=None, columns=None):
    """Time series (n_timepoints, n_columns) float32, checked finite.

    Parameters
    ----------
    columns : ndarray of bool or int, optional
        Grayordinates to keep (all by default).
    """
    path = Path(path)
    img = img if img is not None else check_header(path)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(path, "a complete CIFTI-2 file", f"truncated or corrupt data ({exc})") from None
    if columns is not None:
        data = np.ascontiguousarray(data[:, columns])
    if not np.isfinite(data).all():
        bad = np.argwhere(~np.isfinite(data))
        raise InputError(path, "finite values", f"{len(bad)} NaN/inf values (first at time point {bad[0][0]}, "
                                                 f"column {bad[0][1]})")
    return data


def brain_models(img):
    """The BrainModelAxis of a CIFTI-2 image."""
    return img.header.get_axis(1)


def cortex_columns(img):
    """Boolean (n_grayordinates,) True for cortical surface vertices (left and right)."""
    models = brain_models(img)
    return np.isin(models.name, CORTEX)


def same_brain_models(a, b):
    """True when two BrainModelAxis describe the same grayordinates."""
    return len(a) == len(b) and np.array_equal(a.name, b.name) and np.array_equal(a.vertex, b.vertex) \
        and np.array_equal(a.voxel, b.voxel)


def hcp_91k_axis():
    """A BrainModelAxis shaped like HCP's 91k grayordinates (for fixtures and tests).

    The 59,412 cortical vertices come first (29,696 left, 29,716 right out of
    32,492 each), then 31,870 subcortical voxels on the 2 mm MNI grid. The
    vertex choice (medial wall) and voxel set are not HCP's exact ones; counts,
    order and structure names are.
    """
    left = np.zeros(HCP_91K["vertices"], bool)
    left[:HCP_91K["left"]] = True
    right = np.zeros(HCP_91K["vertices"], bool)
    right[:HCP_91K["right"]] = True
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    vol = np.zeros((91, 109, 91), bool)
    idx = np.argwhere(np.ones((40, 40, 40), bool))[:HCP_91K["subcortical"]] + [25, 35, 15]
    vol[tuple(idx.T)] = True
    ax = (nib.cifti2.BrainModelAxis.from_mask(left, name="CortexLeft")
          + nib.cifti2.BrainModelAxis.from_mask(right, name="CortexRight")
          + nib.cifti2.BrainModelAxis.from_mask(vol, affine=affine, name="ThalamusLeft"))
    return ax


def write_dtseries(path, data, tr, models):
    """Write (time x grayordinates) ``data`` as a CIFTI-2 dense time series (float32)."""
    series = nib.cifti2.SeriesAxis(start=0.0, step=float(tr), size=data.shape[0], unit="SECOND")
    img = nib.Cifti2Image(np.asarray(data, np.float32), header=(series, models))
    img.nifti_header.set_intent("ConnDenseSeries")
    from fmrivid.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        img.to_filename(str(tmp))


def vertex_bookkeeping(models, columns):
    """Hemisphere and surface vertex of the grayordinates ``columns`` of a BrainModelAxis.

    Returns
    -------
    hemi : ndarray of str (n,)  'left' / 'right' for cortical vertices, '' for volume voxels
    vertex : ndarray of int64 (n,)  vertex index on the full hemisphere surface (-1 for voxels)
    nvertices : dict  {'left': n, 'right': n} vertices of each full hemisphere surface present in ``models``
    """
    columns = np.asarray(columns, np.int64)
    names = np.asarray(models.name)[columns]
    hemi = np.array([HEMI_OF.get(str(n), "") for n in names], dtype=object)
    vertex = np.where(hemi != "", np.asarray(models.vertex)[columns], -1).astype(np.int64)
    nvertices = {HEMI_OF[k]: int(v) for k, v in models.nvertices.items() if k in HEMI_OF}
    return hemi, vertex, nvertices


def _label_keys(table, wanted, path):
    """Label keys of ``wanted`` (names or integer keys) in ``table`` {key: name}; all non-zero keys if empty."""
    if not len(wanted):
        return sorted(k for k in table if k != 0)
    by_name = {name: key for key, name in table.items()}
    keys = []
    for w in wanted:
        if isinstance(w, str) and not w.lstrip("-").isdigit():
            if w not in by_name:
                close = sorted(n for n in by_name if w.lower().strip("lr_").replace("_roi", "") in n.lower())[:5]
                shown = close or sorted(by_name)[:8]
                raise InputError(path, f"label {w!r} (preprocess.selection.roi_labels) in the file's label table",
                                 f"no such label; {'similar' if close else 'some available'} names: {shown} "
                                 f"({len(by_name)} labels)")
            keys.append(int(by_name[w]))
        else:
            if int(w) not in table:
                raise InputError(path, f"label key {int(w)} (preprocess.selection.roi_labels) in the file's label "
                                       "table", f"keys {sorted(table)[:8]}{' ...' if len(table) > 8 else ''}")
            keys.append(int(w))
    return keys


def read_dlabel(path):
    """A CIFTI-2 dense label file: (keys (n_grayordinates,) int64, BrainModelAxis, label table {key: name}).

    The first map of the LabelAxis is used (HCP-MMP1.0 files have one).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "a CIFTI-2 dense label file (.dlabel.nii, preprocess.selection.roi_mask)",
                         "no such file")
    try:
        img = nib.load(str(path))
        labels, models = img.header.get_axis(0), img.header.get_axis(1)
        if not isinstance(labels, nib.cifti2.LabelAxis) or not isinstance(models, nib.cifti2.BrainModelAxis):
            raise ValueError(f"axes {type(labels).__name__} x {type(models).__name__}")
        keys = np.asarray(img.dataobj[0], np.float64)
    except Exception as exc:
        raise InputError(path, "a CIFTI-2 dense label file (LabelAxis x BrainModelAxis)",
                         f"{type(exc).__name__}: {exc}") from None
    table = {int(k): str(v[0]) for k, v in labels.label[0].items()}
    return np.rint(keys).astype(np.int64), models, table


def read_gifti_label(path):
    """A GIfTI label file of one hemisphere: (keys (n_vertices,) int64, label table {key: name})."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "a GIfTI label file (.label.gii, preprocess.selection.roi_mask with {hemi})",
                         "no such file")
    try:
        gii = nib.load(str(path))
        keys = np.asarray(gii.darrays[0].data).reshape(-1)
        table = {int(lab.key): str(lab.label) for lab in gii.labeltable.labels}
    except Exception as exc:
        raise InputError(path, "a GIfTI label file (one label data array and a label table)",
                         f"{type(exc).__name__}: {exc}") from None
    return np.rint(keys).astype(np.int64), table


def is_surface_labels(spec):
    """True when ``preprocess.selection.roi_mask`` names a surface label file (dlabel or {hemi} GIfTI pair)."""
    spec = str(spec)
    return spec.endswith((".dlabel.nii", ".label.gii")) or "{hemi}" in spec


def surface_label_roi(spec, wanted, models, data_source=""):
    """Boolean (n_grayordinates,) over the data's BrainModelAxis: cortical vertices with a selected label.

    Parameters
    ----------
    spec : str
        ``<file>.dlabel.nii`` (CIFTI-2 dense label), or a path containing ``{hemi}``, replaced by ``L`` and
        ``R``, of two GIfTI label files (e.g. ``atlas.{hemi}.32k_fs_LR.label.gii``).
    wanted : sequence of str or int
        Label names as in the file's label table (``L_V1_ROI``) or integer keys; empty = every non-zero key.
    models : nibabel BrainModelAxis
        The data's grayordinates.
    data_source : str
        The data file, for messages.

    Matching is by (cortical structure, vertex index); the label file's volume brain models, if any, and the
    data's subcortical voxels are ignored. Raises InputError for an unknown label, a vertex count differing
    from the data's (both named), or no selected label among the data's grayordinates.
    """
    spec = str(spec)
    data_nv = {k: int(v) for k, v in models.nvertices.items() if k in HEMI_OF}
    lookup = {}  # structure -> (nvertices,) label key, -1 where the label file has no vertex
    if "{hemi}" in spec:
        tables = {}
        for letter, struct in (("L", CORTEX[0]), ("R", CORTEX[1])):
            path = Path(spec.replace("{hemi}", letter))
            keys, table = read_gifti_label(path)
            tables.update(table)
            if struct in data_nv and len(keys) != data_nv[struct]:
                raise InputError(path, f"{data_nv[struct]} vertices per hemisphere like the data's "
                                       f"{HEMI_OF[struct]} surface ({data_source})",
                                 f"{len(keys)} vertices")
            lookup[struct] = keys
        source = spec
        sel = _label_keys(tables, list(wanted), spec)
    else:
        path = Path(spec)
        keys, lab_models, table = read_dlabel(path)
        source = path
        sel = _label_keys(table, list(wanted), path)
        for struct, nv in lab_models.nvertices.items():
            if struct not in HEMI_OF:
                continue
            if struct in data_nv and int(nv) != data_nv[struct]:
                raise InputError(path, f"{data_nv[struct]} vertices on {struct} like the data ({data_source})",
                                 f"{int(nv)} vertices on {struct} in the label file")
            rows = np.flatnonzero(np.asarray(lab_models.name) == struct)
            full = np.full(int(nv), -1, np.int64)
            full[np.asarray(lab_models.vertex)[rows]] = keys[rows]
            lookup[struct] = full
    if not set(lookup) & set(data_nv):
        raise InputError(source, f"labels on the data's cortical surfaces {sorted(data_nv)}",
                         f"surface structures {sorted(lookup)}")
    roi = np.zeros(len(models), bool)
    names = np.asarray(models.name)
    vertex = np.asarray(models.vertex)
    for struct, full in lookup.items():
        rows = np.flatnonzero(names == struct)
        if len(rows):
            roi[rows] = np.isin(full[vertex[rows]], sel)
    if not roi.any():
        raise InputError(source, f"grayordinates of the data ({data_source or 'CIFTI runs'}) with labels "
                                 f"{list(wanted) or 'non-zero'}",
                         f"none among its {len(models)} grayordinates")
    return roi
