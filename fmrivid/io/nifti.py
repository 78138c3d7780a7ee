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
    tr = header_tr(img)
    if sidecar_tr is not None and (tr is None or abs(tr - sidecar_tr) > TR_TOLERANCE):
        raise InputError(path, f"header TR equal to the JSON sidecar's RepetitionTime {sidecar_tr} s",
                         f"header TR {tr} s")
    if expected_tr is not None and abs((sidecar_tr if sidecar_tr is not None else tr) - expected_tr) > TR_TOLERANCE:
        raise InputError(path, f"TR {expected_tr} s (dataset.tr in the config)",
                         f"TR {sidecar_tr if sidecar_tr is not None else tr} s")
    try:
        arr = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(path, "a complete NIfTI file", f"truncated or corrupt data ({exc})") from None
    if mask is not None:
        if mask.shape != tuple(shape[:3]):
            raise InputError(path, f"grid {mask.shape} like the subject's other runs", f"grid {shape[:3]}")
        data = np.ascontiguousarray(arr[mask].T, dtype=np.float32)
    else:
        data = np.asarray(arr, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        n_bad = int(bad.sum())
        if mask is not None:
            t, v = np.argwhere(bad)[0]
            where = f"volume {t}, voxel {tuple(int(i) for i in np.argwhere(mask)[v])}"
        else:
            where = "voxel/volume " + str(tuple(int(i) for i in np.argwhere(bad)[0]))
        raise InputError(path, "finite values", f"{n_bad} NaN/inf values (first at {where})")
    return data, img


def check_same_grid(images):
    """Raise InputError unless every (path, img) pair shares the first one's grid and affine."""
    ref_path, ref = images[0]
    for path, img in images[1:]:
        if img.shape[:3] != ref.shape[:3]:
            raise InputError(path, f"grid {ref.shape[:3]} like {Path(ref_path).name}", f"grid {img.shape[:3]}")
        if not np.allclose(img.affine, ref.affine, atol=1e-4):
            raise InputError(path, f"the affine of {Path(ref_path).name}",
                             f"a different affine (max difference {np.abs(img.affine - ref.affine).max():.4g})")
