"""Surface projection of volume samples (nilearn ``vol_to_surf``), GIfTI output, and 2-D flat maps.

- The repeat-averaged samples of the selected voxels are put back on the volume
  grid and sampled on a mesh: fsaverage5 (shipped with nilearn, no download) or a
  folder given by path holding ``{left,right}_{pial,white,flat}.gii``.
- Each hemisphere is written as a GIfTI time series (one data array per sample,
  clip ids in the metadata).
- A flat map per sample (GLFA's input form): the flat-patch (x, y) coordinates of
  both hemispheres are placed side by side in a fixed layout and rasterised to
  H x W; a pixel is the mean of the vertices that fall in it, and the pixels with
  no vertex are 0 and marked in the stored ``mask``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path

HEMIS = ("left", "right")


def load_mesh(spec):
    """Mesh parts: {'pial': {hemi: mesh}, 'white': {...}, 'flat': {...}} (flat may be None).

    ``spec`` is 'fsaverage5' (nilearn's shipped copy) or a folder with
    ``left_pial.gii``, ``left_white.gii``, ``left_flat.gii`` (optional) and the right ones.
    """
    if spec in ("fsaverage5", "fsaverage"):
        from nilearn import datasets

        fs = datasets.load_fsaverage("fsaverage5")
        return {"pial": fs["pial"].parts, "white": fs["white_matter"].parts, "flat": fs["flat"].parts,
                "inflated": fs["inflated"].parts, "name": "fsaverage5"}
    from nilearn.surface import InMemoryMesh

    folder = Path(spec)
    out = {"name": str(folder)}
    for kind in ("pial", "white", "flat"):
        parts = {}
        for hemi in HEMIS:
            path = folder / f"{hemi}_{kind}.gii"
            if not path.exists():
                if kind == "flat":
                    parts = None
                    break
                raise InputError(path, f"the {hemi} {kind} surface of the mesh given by preprocess.surface.mesh",
                                 "no such file")
            gii = nib.load(str(path))
            coords = gii.agg_data("NIFTI_INTENT_POINTSET")
            faces = gii.agg_data("NIFTI_INTENT_TRIANGLE")
            parts[hemi] = InMemoryMesh(coordinates=np.asarray(coords), faces=np.asarray(faces))
        out[kind] = parts
    return out


def project(volume_img, mesh, radius_mm=6.0):
    """Sample a 3-D or 4-D image on both hemispheres: {hemi: (n_vertices, n_samples) float32}."""
    from nilearn.surface import vol_to_surf

    out = {}
    for hemi in HEMIS:
        tex = vol_to_surf(volume_img, mesh["pial"][hemi], radius=radius_mm, inner_mesh=mesh["white"][hemi],
                          kind="auto")
        out[hemi] = np.asarray(tex, np.float32).reshape(mesh["pial"][hemi].n_vertices, -1)
    return out


def write_gifti(path, texture, labels):
    """Write (n_vertices, n_samples) as a GIfTI time series, one data array per sample."""
    arrays = [nib.gifti.GiftiDataArray(np.ascontiguousarray(texture[:, k], np.float32),
                                       intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32",
                                       meta=nib.gifti.GiftiMetaData({"Name": str(label)}))
              for k, label in enumerate(labels)]
    img = nib.gifti.GiftiImage(darrays=arrays, meta=nib.gifti.GiftiMetaData({"clip_ids": ",".join(map(str, labels))}))
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def flat_layout(flat, size):
    """Pixel index (row * size + col) of every vertex of both hemispheres, left half / right half."""
    index = {}
    half = size // 2
    for h, hemi in enumerate(HEMIS):
        xy = np.asarray(flat[hemi].coordinates)[:, :2]
        lo, hi = xy.min(0), xy.max(0)
        scale = (hi - lo).max()
        uv = (xy - lo) / max(scale, 1e-9)  # keep the aspect ratio
        col = np.clip((uv[:, 0] * (half - 1)).round().astype(int), 0, half - 1) + h * half
        row = np.clip(((1 - uv[:, 1]) * (size - 1)).round().astype(int), 0, size - 1)
        index[hemi] = row * size + col
    return index


def flatmaps(textures, flat, size):
    """Rasterise per-vertex samples to (n_samples, size, size) images and a (size, size) coverage mask."""
    index = flat_layout(flat, size)
    n = textures[HEMIS[0]].shape[1]
    total = np.zeros((size * size, n), np.float64)
    count = np.zeros(size * size, np.float64)
    for hemi in HEMIS:
        np.add.at(total, index[hemi], textures[hemi])
        np.add.at(count, index[hemi], 1.0)
    covered = count > 0
    total[covered] /= count[covered, None]
    return total.T.reshape(n, size, size).astype(np.float32), covered.reshape(size, size)


def samples_volume(X, ijk, affine, shape, window_trs=0):
    """4-D image (grid x samples) of per-selected-voxel samples (window means when windowed)."""
    X = np.asarray(X, np.float32)
    if window_trs:
        X = X.reshape(len(X), window_trs, -1).mean(axis=1)
    vol = np.zeros(tuple(shape) + (len(X),), np.float32)
    vol[tuple(np.asarray(ijk).T)] = X.T
    return nib.Nifti1Image(vol, affine)


def write_surface_outputs(sub, cfg, out, log=print):
    """Project a subject's samples (dict from ``read_subject``) and write GIfTI (and flat maps).

    Parameters
    ----------
    sub : dict
        :func:`fmrivid.preprocess.pipeline.read_subject` output (volume space).
    cfg : dict
        ``preprocess.surface``.
    out : dict
        Output paths: ``left``, ``right`` (GIfTI) and, with ``cfg['flatmap']``, ``flat`` (HDF5).
    """
    from fmrivid.io.h5 import write_features

    if sub.get("space", "volume") != "volume":
        raise InputError(out["left"], "volume (NIfTI) data for vol_to_surf projection",
                         f"{sub['space']} data (already on a surface)")
    mesh = load_mesh(cfg["mesh"])
    ids = list(sub["train_ids"]) + list(sub["test_ids"])
    X = np.concatenate([sub["train_X"], sub["test_X"]])
    img = samples_volume(X, sub["ijk"], sub["affine"], sub["shape"], int(sub["info"].get("window_trs", 0)))
    tex = project(img, mesh, cfg["radius_mm"])
    for hemi in HEMIS:
        write_gifti(out[hemi], tex[hemi], ids)
    log(f"surface: {len(ids)} samples projected to {mesh['name']} "
        f"({tex['left'].shape[0]} + {tex['right'].shape[0]} vertices)")
    if cfg["flatmap"]:
        if mesh["flat"] is None:
            raise InputError(cfg["mesh"], "left_flat.gii and right_flat.gii for preprocess.surface.flatmap",
                             "no flat surfaces in the mesh folder")
        images, covered = flatmaps(tex, mesh["flat"], cfg["flatmap_size"])
        write_features(out["flat"], ids, images, {"kind": "flatmap", "mesh": mesh["name"],
                                                  "size": cfg["flatmap_size"],
                                                  "mask": covered.astype(int).tolist(),
                                                  "split": ["train"] * len(sub["train_ids"])
                                                  + ["test"] * len(sub["test_ids"])})
        log(f"surface: flat maps {images.shape}, {int(covered.sum())} of {covered.size} pixels covered")
    else:
        images = None
    n_train = len(sub["train_ids"])
    return {"subject": sub.get("subject", ""), "mesh": mesh, "textures": tex, "ids": ids, "n_train": n_train,
            "flatmaps": images}
