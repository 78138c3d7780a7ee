"""CIFTI-2 dense time series (``.dtseries.nii``) read and written with nibabel.

A dtseries holds (time x grayordinates); the grayordinates are described by a
``BrainModelAxis`` (surface vertices of each hemisphere, then subcortical
voxels). The HCP "91k" space has 91,282 grayordinates, the first 59,412 of
which are cortical vertices on the fsLR-32k surfaces (CC2017's cortex).
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
