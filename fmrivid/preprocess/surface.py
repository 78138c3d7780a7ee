"""Surface projection of volume samples (nilearn ``vol_to_surf``), GIfTI output, and 2-D flat maps.

- Volume (NIfTI) data: the repeat-averaged samples of the selected voxels are put
  back on the volume grid and sampled on a mesh: fsaverage5 (shipped with nilearn,
  no download) or a folder given by path holding ``{left,right}_{pial,white,flat}.gii``.
- CIFTI data (already on the fsLR-32k surfaces, seed 002 §3.2): no projection. Each
  kept cortical grayordinate's sample is written at its vertex (hemisphere and
  vertex index from the run's BrainModelAxis, stored in the subject HDF5) on the full
  hemisphere surface (32,492 vertices); every other vertex (medial wall, vertices
  not selected, e.g. outside the ROI) is 0, not NaN, so that GIfTI viewers and the
  flat-map means stay finite. The flat coordinates come from
  ``preprocess.surface.mesh``, a folder of the 32k_fs_LR flat surfaces
  (:func:`load_fslr_flat`); pial/white surfaces are not needed.
- Each hemisphere is written as a GIfTI time series (one data array per sample,
  clip ids in the metadata).
- A flat map per sample (GLFA's input form): the flat-patch (x, y) coordinates of
  both hemispheres are placed side by side in a fixed layout and rasterised to
  H x W; a pixel is the mean of the vertices that fall in it, and the pixels with
  no vertex are 0 and marked in the stored ``mask``. For CIFTI data only the kept
  vertices on the flat patch (referenced by a triangle of the flat surface) count:
  a pixel is the mean of its kept vertices and the ``mask`` marks the pixels with
  at least one; the layout (the patch's extent per hemisphere) depends on the mesh
  only, so it is the same for every subject.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path

HEMIS = ("left", "right")
#: File names accepted for the 32k_fs_LR flat surfaces in the preprocess.surface.mesh folder, in order.
FSLR_FLAT_NAMES = {"left": ("left_flat.gii", "S1200.L.flat.32k_fs_LR.surf.gii"),
                   "right": ("right_flat.gii", "S1200.R.flat.32k_fs_LR.surf.gii")}
FSLR_SOURCE = ("32k_fs_LR flat surfaces (left_flat.gii / right_flat.gii, or HCP's "
               "S1200.L.flat.32k_fs_LR.surf.gii / S1200.R.flat.32k_fs_LR.surf.gii from the HCP S1200 Group Average "
               "Data release, on BALSA (balsa.wustl.edu) or ConnectomeDB (db.humanconnectome.org))")


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


def flat_layout(flat, size, on_patch=None):
    """Pixel index (row * size + col) of every vertex of both hemispheres, left half / right half.

    ``on_patch`` ({hemi: bool (n_vertices,)}, optional): only these vertices set each hemisphere's extent
    (the others are clipped to the border and should not be rasterised).
    """
    index = {}
    half = size // 2
    for h, hemi in enumerate(HEMIS):
        xy = np.asarray(flat[hemi].coordinates)[:, :2]
        ref = xy if on_patch is None else xy[np.asarray(on_patch[hemi], bool)]
        lo, hi = ref.min(0), ref.max(0)
        scale = (hi - lo).max()
        uv = (xy - lo) / max(scale, 1e-9)  # keep the aspect ratio
        col = np.clip((uv[:, 0] * (half - 1)).round().astype(int), 0, half - 1) + h * half
        row = np.clip(((1 - uv[:, 1]) * (size - 1)).round().astype(int), 0, size - 1)
        index[hemi] = row * size + col
    return index


def flatmaps(textures, flat, size, valid=None, on_patch=None):
    """Rasterise per-vertex samples to (n_samples, size, size) images and a (size, size) coverage mask.

    ``valid`` ({hemi: bool (n_vertices,)}, optional): only these vertices are averaged into pixels (CIFTI: the
    kept vertices on the flat patch); ``on_patch``: see :func:`flat_layout`.
    """
    from scipy import sparse

    index = flat_layout(flat, size, on_patch)
    n = textures[HEMIS[0]].shape[1]
    pix, vals = [], []
    for hemi in HEMIS:
        rows = np.arange(len(index[hemi])) if valid is None else np.flatnonzero(valid[hemi])
        pix.append(index[hemi][rows])
        vals.append(np.asarray(textures[hemi][rows], np.float32))
    pix = np.concatenate(pix)
    count = np.bincount(pix, minlength=size * size).astype(np.float64)
    covered = count > 0
    # (size^2 x vertices) averaging matrix: memory grows with the kept vertices and the output, not size^2 x n in
    # float64 (CC2017 at 256 x 256: ~5,500 samples)
    avg = sparse.csr_matrix(((1.0 / count[pix]).astype(np.float32), (pix, np.arange(len(pix)))),
                            shape=(size * size, len(pix)))
    images = np.asarray((avg @ np.concatenate(vals)).T, np.float32)
    return images.reshape(n, size, size), covered.reshape(size, size)


def samples_volume(X, ijk, affine, shape, window_trs=0):
    """4-D image (grid x samples) of per-selected-voxel samples (window means when windowed)."""
    X = np.asarray(X, np.float32)
    if window_trs:
        X = X.reshape(len(X), window_trs, -1).mean(axis=1)
    vol = np.zeros(tuple(shape) + (len(X),), np.float32)
    vol[tuple(np.asarray(ijk).T)] = X.T
    return nib.Nifti1Image(vol, affine)


def load_fslr_flat(spec, nvertices):
    """The 32k_fs_LR flat surfaces of ``preprocess.surface.mesh`` for CIFTI data.

    ``spec`` is a folder holding, per hemisphere, ``left_flat.gii`` / ``right_flat.gii`` or HCP's
    ``S1200.L.flat.32k_fs_LR.surf.gii`` / ``S1200.R.flat.32k_fs_LR.surf.gii`` (the first name found is
    used). ``nvertices`` ({hemi: n} from the data's BrainModelAxis, 32,492 for fsLR-32k) must match each flat
    surface's vertex count.

    Returns
    -------
    dict  ``{'flat': {hemi: InMemoryMesh}, 'on_patch': {hemi: bool (n,)}, 'inflated': {hemi: InMemoryMesh},
    'pial': ..., 'name': str, 'paths': {hemi: Path}}``; ``on_patch`` marks the vertices used by a triangle of the flat
    surface (HCP's flat surfaces leave the medial wall out of the cut patch); ``inflated`` (and ``pial``, the
    same) is the flat patch stood up in the x-z plane so that the QC figure's posterior view shows it face on.
    """
    from nilearn.surface import InMemoryMesh

    expected = f"a folder of the {FSLR_SOURCE}, for flat maps of CIFTI (fsLR-32k) data"
    if str(spec) in ("fsaverage5", "fsaverage"):
        raise InputError(spec, expected, f"{spec} (nilearn's mesh, 10,242 vertices per hemisphere, not the "
                                         f"data's {nvertices} vertices)")
    folder = Path(spec)
    if not folder.is_dir():
        raise InputError(folder, expected, "no such folder" if not folder.exists() else "a file")
    out = {"flat": {}, "on_patch": {}, "inflated": {}, "pial": {}, "paths": {}, "name": str(folder)}
    for hemi in HEMIS:
        path = next((folder / n for n in FSLR_FLAT_NAMES[hemi] if (folder / n).exists()), None)
        if path is None:
            held = sorted(p.name for p in folder.iterdir())[:8]
            raise InputError(folder, expected, f"no {' or '.join(FSLR_FLAT_NAMES[hemi])}; the folder holds {held}")
        try:
            gii = nib.load(str(path))
            coords = np.asarray(gii.agg_data("NIFTI_INTENT_POINTSET"), np.float64)
            faces = np.asarray(gii.agg_data("NIFTI_INTENT_TRIANGLE"), np.int64)
            if coords.ndim != 2 or faces.ndim != 2 or faces.shape[1] != 3:
                raise ValueError(f"coordinates {coords.shape}, faces {faces.shape}")
        except Exception as exc:
            raise InputError(path, "a GIfTI surface (NIFTI_INTENT_POINTSET + NIFTI_INTENT_TRIANGLE)",
                             f"{type(exc).__name__}: {exc}") from None
        want = nvertices.get(hemi)
        if want is not None and len(coords) != int(want):
            raise InputError(path, f"{int(want)} vertices like the CIFTI data's {hemi} surface "
                                   f"(BrainModelAxis; {FSLR_SOURCE})", f"{len(coords)} vertices")
        on_patch = np.zeros(len(coords), bool)
        on_patch[faces.ravel()] = True
        out["flat"][hemi] = InMemoryMesh(coordinates=coords, faces=faces)
        out["on_patch"][hemi] = on_patch
        upright = np.c_[coords[:, 0], np.zeros(len(coords)), coords[:, 1]]
        out["inflated"][hemi] = out["pial"][hemi] = InMemoryMesh(coordinates=upright, faces=faces)
        out["paths"][hemi] = path
    return out


def cifti_textures(sub, source=""):
    """Per-hemisphere textures of CIFTI samples: ({hemi: (n_vertices, n_samples) float32}, {hemi: kept bool}).

    Every kept cortical column's sample goes to its vertex (``hemi`` / ``vertex`` / ``nvertices`` of
    :func:`fmrivid.preprocess.pipeline.read_subject`); the other vertices are 0. Windowed samples
    (``window_trs`` n) are averaged over their n volumes. Subcortical columns are left out.
    """
    if sub.get("hemi") is None or sub.get("vertex") is None or not sub.get("nvertices"):
        raise InputError(source or "the subject HDF5", "voxels/hemi, voxels/vertex and the nvertices attribute "
                                                       "(CIFTI vertex bookkeeping written by rule preprocess)",
                         "grayordinate indices only (a file from an older fmrivid): rerun rule preprocess")
    X = np.concatenate([sub["train_X"], sub["test_X"]]).astype(np.float32)
    window = int(sub["info"].get("window_trs", 0))
    if window:
        X = X.reshape(len(X), window, -1).mean(axis=1)
    hemi = np.asarray(sub["hemi"]).astype(str)
    vertex = np.asarray(sub["vertex"], np.int64)
    tex, kept = {}, {}
    for h in HEMIS:
        n = int(sub["nvertices"].get(h, 0))
        cols = np.flatnonzero(hemi == h)
        if not n:
            raise InputError(source or "the subject HDF5", f"the {h} cortical surface among the CIFTI brain models",
                             f"surfaces {sorted(sub['nvertices'])}")
        tex[h] = np.zeros((n, len(X)), np.float32)
        tex[h][vertex[cols]] = X[:, cols].T
        kept[h] = np.zeros(n, bool)
        kept[h][vertex[cols]] = True
    return tex, kept


def _write_flat(path, ids, n_train, images, covered, mesh_name, size):
    """Flat maps HDF5 read by the align decoder: ids, images, attrs kind/mesh/size/mask/split."""
    from fmrivid.io.h5 import write_features

    write_features(path, ids, images, {"kind": "flatmap", "mesh": mesh_name, "size": size,
                                       "mask": covered.astype(int).tolist(),
                                       "split": ["train"] * n_train + ["test"] * (len(ids) - n_train)})


def write_cifti_surface_outputs(sub, cfg, out, log=print):
    """GIfTI textures (and flat maps) of CIFTI samples, without projection (see the module docstring)."""
    tex, kept = cifti_textures(sub, sub.get("source", ""))
    ids = list(sub["train_ids"]) + list(sub["test_ids"])
    n_train = len(sub["train_ids"])
    mesh = None
    nvertices = {h: len(tex[h]) for h in HEMIS}
    if cfg["flatmap"]:  # check the flat surfaces before writing anything
        mesh = load_fslr_flat(cfg["mesh"], nvertices)
    else:  # only for the QC figure: use the flat surfaces when the mesh folder has them
        try:
            mesh = load_fslr_flat(cfg["mesh"], nvertices)
        except InputError:
            mesh = None
    for hemi in HEMIS:
        write_gifti(out[hemi], tex[hemi], ids)
    log(f"surface: {len(ids)} CIFTI samples written at their vertices ({int(kept['left'].sum())} of "
        f"{len(tex['left'])} left + {int(kept['right'].sum())} of {len(tex['right'])} right vertices; others 0)")
    images = None
    if cfg["flatmap"]:
        valid = {h: kept[h] & mesh["on_patch"][h] for h in HEMIS}
        off = sum(int((kept[h] & ~mesh["on_patch"][h]).sum()) for h in HEMIS)
        if off:
            log(f"surface: {off} kept vertices lie off the flat patch (no triangle) and are left out of the flat maps")
        images, covered = flatmaps(tex, mesh["flat"], cfg["flatmap_size"], valid=valid, on_patch=mesh["on_patch"])
        _write_flat(out["flat"], ids, n_train, images, covered, mesh["name"], cfg["flatmap_size"])
        log(f"surface: flat maps {images.shape}, {int(covered.sum())} of {covered.size} pixels covered")
    shown = mesh or {"name": "32k_fs_LR (no flat surfaces)"}
    return {"subject": sub.get("subject", ""), "mesh": shown, "textures": tex, "ids": ids, "n_train": n_train,
            "flatmaps": images, "kept": kept}


def write_surface_outputs(sub, cfg, out, log=print):
    """Write a subject's samples (dict from ``read_subject``) as GIfTI per hemisphere (and flat maps).

    Volume data are projected with ``vol_to_surf``; CIFTI data are written at their own vertices
    (:func:`write_cifti_surface_outputs`).

    Parameters
    ----------
    sub : dict
        :func:`fmrivid.preprocess.pipeline.read_subject` output (volume or cifti space); an optional
        ``source`` (the HDF5 path) is named in messages.
    cfg : dict
        ``preprocess.surface``.
    out : dict
        Output paths: ``left``, ``right`` (GIfTI) and, with ``cfg['flatmap']``, ``flat`` (HDF5).
    """
    space = sub.get("space", "volume")
    if space == "cifti":
        return write_cifti_surface_outputs(sub, cfg, out, log=log)
    if space != "volume":
        raise InputError(sub.get("source") or out["left"], "volume (NIfTI) or cifti data", f"space {space!r}")
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
        _write_flat(out["flat"], ids, len(sub["train_ids"]), images, covered, mesh["name"], cfg["flatmap_size"])
        log(f"surface: flat maps {images.shape}, {int(covered.sum())} of {covered.size} pixels covered")
    else:
        images = None
    n_train = len(sub["train_ids"])
    return {"subject": sub.get("subject", ""), "mesh": mesh, "textures": tex, "ids": ids, "n_train": n_train,
            "flatmaps": images}


def texture_figure(result, path):
    """QC figure without a surface to draw on (CIFTI data, no flat surfaces): mean training sample per vertex."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
    for ax, hemi in zip(axes, HEMIS):
        values = result["textures"][hemi][:, :result["n_train"]].mean(axis=1)
        kept = result.get("kept", {}).get(hemi, np.ones(len(values), bool))
        ax.plot(np.flatnonzero(kept), values[kept], ".", ms=1)
        ax.set_title(f"{hemi}: mean training sample ({int(kept.sum())} vertices)", fontsize=8)
        ax.set_xlabel("vertex")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
