"""NIfTI BOLD loading with the checks a run must pass before any work is done."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from fmrivid.errors import InputError

TR_TOLERANCE = 1e-3


def header_tr(img):
    """Repetition time in seconds from a NIfTI header (4th zoom, time units honoured)."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4:
        return None
    tr = float(zooms[3])
    try:
        _, t_unit = img.header.get_xyzt_units()
    except Exception:
        t_unit = "unknown"
    if t_unit == "msec":
        tr /= 1000.0
    elif t_unit == "usec":
        tr /= 1e6
    return tr


def check_header(path, expected_tr=None, sidecar_tr=None):
    """Validate a BOLD run from its header only (cheap): readable, 4-D, TR, file size.

    Parameters
    ----------
    path : path-like
    expected_tr : float, optional
        TR from the config (seconds).
    sidecar_tr : float, optional
        TR from the JSON sidecar (seconds).

    Returns
    -------
    nibabel image (data not read)
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "a 4-D BOLD NIfTI file", "no such file")
    try:
        img = nib.load(str(path))
        shape = img.shape
    except Exception as exc:
        raise InputError(path, "a readable NIfTI-1/2 image", f"{type(exc).__name__}: {exc}") from None
    if len(shape) != 4:
        raise InputError(path, "a 4-D BOLD image (x, y, z, time)", f"{len(shape)}-D shape {tuple(shape)}")
    if shape[3] < 2:
        raise InputError(path, "at least 2 volumes", f"{shape[3]}")
    if not path.name.endswith(".gz"):
        need = int(getattr(img.dataobj, "offset", 0)) + int(np.prod(shape)) * img.get_data_dtype().itemsize
        have = path.stat().st_size
        if have < need:
            raise InputError(path, f"a complete NIfTI file of {need} bytes for shape {tuple(shape)}",
                             f"{have} bytes (truncated)")
    tr = header_tr(img)
    if sidecar_tr is not None and (tr is None or abs(tr - sidecar_tr) > TR_TOLERANCE):
        raise InputError(path, f"header TR equal to the JSON sidecar's RepetitionTime {sidecar_tr} s",
                         f"header TR {tr} s")
    if expected_tr is not None and abs((sidecar_tr if sidecar_tr is not None else tr) - expected_tr) > TR_TOLERANCE:
        raise InputError(path, f"TR {expected_tr} s (dataset.tr in the config)",
                         f"TR {sidecar_tr if sidecar_tr is not None else tr} s")
    return img


def _check_finite(path, data, mask=None):
    if np.isfinite(data).all():
        return
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if mask is not None:
        t, v = np.argwhere(bad)[0]
        ijk = tuple(int(i) for i in np.argwhere(mask)[v])
    else:
        first = np.argwhere(bad)[0]
        ijk, t = tuple(int(i) for i in first[:3]), int(first[3])
    raise InputError(path, "finite values", f"{n_bad} NaN/inf values (first at voxel {ijk}, volume {t})")


def load_bold(path, expected_tr=None, sidecar_tr=None, mask=None):
    """Load and validate a 4-D BOLD run.

    Checks, in order: the file opens (gzip/NIfTI integrity), it is 4-D with at
    least 2 volumes, the header TR agrees with the JSON sidecar and with the
    configured TR, and every value (inside ``mask`` when given) is finite.

    Parameters
    ----------
    path : path-like
        A ``.nii`` or ``.nii.gz`` file.
    expected_tr : float, optional
        TR from the config (seconds).
    sidecar_tr : float, optional
        TR from the JSON sidecar (seconds).
    mask : ndarray of bool, optional
        3-D mask; when given only masked voxels are returned.

    Returns
    -------
    data : ndarray, float32
        (n_volumes, n_voxels) when ``mask`` is given, else (x, y, z, t).
    img : nibabel image
        The image (header and affine).
    """
    path = Path(path)
    img = check_header(path, expected_tr, sidecar_tr)
    if mask is not None:
        return load_masked(path, mask, img), img
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(path, "a complete NIfTI file", f"truncated or corrupt data ({exc})") from None
    _check_finite(path, data)
    return data, img


def load_masked(path, mask, img=None):
    """Masked time series (n_volumes, n_voxels) float32 of a 4-D run, checked finite.

    Uncompressed ``.nii`` files are read one volume at a time from the memory
    map, so the peak memory is the masked output plus one volume. Compressed
    files are decompressed once.
    """
    path = Path(path)
    img = img if img is not None else check_header(path)
    shape = img.shape
    if mask.shape != tuple(shape[:3]):
        raise InputError(path, f"grid {mask.shape} like the subject's other runs", f"grid {shape[:3]}")
    n_t = shape[3]
    try:
        if path.name.endswith(".gz"):
            data = np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.float32)[mask].T)
        else:
            data = np.empty((n_t, int(mask.sum())), np.float32)
            arr = img.dataobj
            for t in range(n_t):
                data[t] = np.asarray(arr[..., t])[mask]  # C order, like np.argwhere(mask)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(path, "a complete NIfTI file", f"truncated or corrupt data ({exc})") from None
    _check_finite(path, data, mask)
    return data


def check_same_grid(images):
    """Raise InputError unless every (path, img) pair shares the first one's grid and affine."""
    ref_path, ref = images[0]
    for path, img in images[1:]:
        if img.shape[:3] != ref.shape[:3]:
            raise InputError(path, f"grid {ref.shape[:3]} like {Path(ref_path).name}", f"grid {img.shape[:3]}")
        if not np.allclose(img.affine, ref.affine, atol=1e-4):
            raise InputError(path, f"the affine of {Path(ref_path).name}",
                             f"a different affine (max difference {np.abs(img.affine - ref.affine).max():.4g})")
