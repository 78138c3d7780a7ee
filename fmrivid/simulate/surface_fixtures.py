"""Synthetic 32k_fs_LR surface files for tests and the rehearsal: flat surfaces and an HCP-MMP-like atlas.

- :func:`write_fslr_surfaces`: a left/right pair of flat surfaces with 32,492 vertices each (fsLR-32k's count),
  2-D coordinates in mm (z = 0) filling an ellipse of about 440 x 320 mm like HCP's flat maps, and Delaunay
  triangle faces. The vertices outside :func:`fmrivid.io.cifti.hcp_91k_axis`'s cortex (its medial wall) sit at
  the origin and are left out of the triangles, as a cut flat patch leaves them; the right hemisphere is the
  left one mirrored in x. Vertex positions are random (seeded), so a vertex index says nothing of its place.
- :func:`write_hcp_mmp_like_dlabel`: a CIFTI-2 dense label file on ``hcp_91k_axis``'s cortical brain models
  with a few HCP-MMP area names (``L_V1_ROI``, ``R_MT_ROI``, ...; key 0 is ``???``, unlabelled), each area a
  random set of cortical vertices; :func:`write_hcp_mmp_like_label_gii` writes the same areas as a pair of
  GIfTI label files.

None of this is real anatomy: names, counts and file formats are HCP's, geometry and areas are not.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from fmrivid.io import cifti
from fmrivid.io.atomic import atomic_path

NVERTICES = cifti.HCP_91K["vertices"]
#: HCP-MMP1.0 area names (a few visual areas) and their index within a hemisphere (R_ keys; L_ keys + 180).
AREAS = {"V1": 1, "MST": 2, "V6": 3, "V2": 4, "V3": 5, "V4": 6, "V8": 7, "V3A": 13, "V7": 16, "FFC": 18,
         "V3B": 19, "LO1": 20, "LO2": 21, "PIT": 22, "MT": 23}
LEFT_OFFSET = 180
HEMI_LETTER = {"left": "L", "right": "R"}


def label_table():
    """{key: name} of the fixture atlas: 0 '???', R_<area>_ROI at the area index, L_<area>_ROI at index + 180."""
    table = {0: "???"}
    for area, k in AREAS.items():
        table[k] = f"R_{area}_ROI"
        table[k + LEFT_OFFSET] = f"L_{area}_ROI"
    return table


def _flat_coordinates(rng, n_patch):
    """n_patch points uniformly in an ellipse of semi-axes 220 x 160 mm."""
    r = np.sqrt(rng.uniform(0, 1, n_patch))
    t = rng.uniform(0, 2 * np.pi, n_patch)
    return np.c_[220.0 * r * np.cos(t), 160.0 * r * np.sin(t)]


def _surface_gifti(coords, faces, structure):
    meta = nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure, "GeometricType": "Flat"})
    return nib.gifti.GiftiImage(darrays=[
        nib.gifti.GiftiDataArray(np.asarray(coords, np.float32), intent="NIFTI_INTENT_POINTSET",
                                 datatype="NIFTI_TYPE_FLOAT32", meta=meta),
        nib.gifti.GiftiDataArray(np.asarray(faces, np.int32), intent="NIFTI_INTENT_TRIANGLE",
                                 datatype="NIFTI_TYPE_INT32")])


def write_fslr_surfaces(folder, names="fmrivid", seed=0):
    """Write a synthetic 32k_fs_LR flat surface pair into ``folder``; return ``{'left': path, 'right': path}``.

    Parameters
    ----------
    folder : str or Path
        Created if missing; point ``preprocess.surface.mesh`` at it.
    names : {'fmrivid', 'hcp'}
        File names: ``left_flat.gii`` / ``right_flat.gii``, or HCP's ``S1200.L.flat.32k_fs_LR.surf.gii`` /
        ``S1200.R.flat.32k_fs_LR.surf.gii``.
    seed : int
    """
    from scipy.spatial import Delaunay

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_patch = {"left": cifti.HCP_91K["left"], "right": cifti.HCP_91K["right"]}
    xy = _flat_coordinates(rng, max(n_patch.values()))
    faces_all = Delaunay(xy).simplices
    paths = {}
    for hemi, struct in (("left", "CortexLeft"), ("right", "CortexRight")):
        n = n_patch[hemi]
        pts = xy[:n] * ([1.0, 1.0] if hemi == "left" else [-1.0, 1.0])
        faces = faces_all if n == len(xy) else Delaunay(xy[:n]).simplices
        if hemi == "right":
            faces = faces[:, ::-1]  # mirrored: keep the triangles' orientation
        coords = np.zeros((NVERTICES, 3))
        coords[:n, :2] = pts  # the medial wall (vertices n..) stays at the origin, off the patch
        name = f"{hemi}_flat.gii" if names == "fmrivid" else f"S1200.{HEMI_LETTER[hemi]}.flat.32k_fs_LR.surf.gii"
        path = folder / name
        with atomic_path(path) as tmp:
            nib.save(_surface_gifti(coords, faces, struct), str(tmp))
        paths[hemi] = path
    return paths


def area_keys(per_area=400, seed=0):
    """{hemi: (32492,) int label key per vertex}: each area a random set of ``per_area`` kept cortical vertices."""
    rng = np.random.default_rng(seed + 1)
    out = {}
    for hemi, offset in (("right", 0), ("left", LEFT_OFFSET)):
        keys = np.zeros(NVERTICES, np.int64)
        order = rng.permutation(cifti.HCP_91K[hemi])  # hcp_91k_axis keeps vertices 0 .. n-1
        for j, k in enumerate(AREAS.values()):
            keys[order[j * per_area:(j + 1) * per_area]] = k + offset
        out[hemi] = keys
    return out


def _label_colours(table):
    rng = np.random.default_rng(3)
    return {k: (name, (0.0, 0.0, 0.0, 0.0) if k == 0 else tuple(rng.uniform(0, 1, 3).tolist()) + (1.0,))
            for k, name in table.items()}


def write_hcp_mmp_like_dlabel(path, per_area=400, seed=0, models=None):
    """Write an HCP-MMP-like CIFTI-2 dense label file (``.dlabel.nii``) on ``hcp_91k_axis``'s cortex.

    ``models`` (a cortical BrainModelAxis) overrides the brain models (e.g. another surface size, for tests);
    the label of a vertex then comes from :func:`area_keys` by vertex index. Returns the path.
    """
    models = models if models is not None else cifti.hcp_91k_axis()[:cifti.HCP_91K["left"] + cifti.HCP_91K["right"]]
    keys = area_keys(per_area, seed)
    data = np.zeros(len(models), np.float32)
    names = np.asarray(models.name)
    vertex = np.asarray(models.vertex)
    for struct, hemi in cifti.HEMI_OF.items():
        rows = np.flatnonzero(names == struct)
        v = vertex[rows]
        inside = v < len(keys[hemi])
        data[rows[inside]] = keys[hemi][v[inside]]
    labels = nib.cifti2.LabelAxis(["HCP-MMP-like"], [_label_colours(label_table())])
    img = nib.Cifti2Image(data[None, :], header=(labels, models))
    img.nifti_header.set_intent("ConnDenseLabel")
    with atomic_path(path) as tmp:
        img.to_filename(str(tmp))
    return Path(path)


def write_hcp_mmp_like_label_gii(pattern, per_area=400, seed=0, nvertices=NVERTICES):
    """The same areas as a pair of GIfTI label files; ``pattern`` holds ``{hemi}`` (replaced by L and R).

    Returns ``{'left': path, 'right': path}``.
    """
    keys = area_keys(per_area, seed)
    out = {}
    for hemi, letter in HEMI_LETTER.items():
        table = nib.gifti.GiftiLabelTable()
        for k, (name, rgba) in _label_colours(label_table()).items():
            lab = nib.gifti.GiftiLabel(key=k, red=rgba[0], green=rgba[1], blue=rgba[2], alpha=rgba[3])
            lab.label = name
            table.labels.append(lab)
        data = np.zeros(nvertices, np.int32)
        n = min(nvertices, NVERTICES)
        data[:n] = keys[hemi][:n]
        gii = nib.gifti.GiftiImage(labeltable=table, darrays=[
            nib.gifti.GiftiDataArray(data, intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32")])
        path = Path(str(pattern).replace("{hemi}", letter))
        with atomic_path(path) as tmp:
            nib.save(gii, str(tmp))
        out[hemi] = path
    return out
