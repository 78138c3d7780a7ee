"""CIFTI (fsLR-32k) data on the surface: GIfTI textures and flat maps without projection, and HCP-MMP-like
surface-label ROI selection matched by (hemisphere, vertex)."""

import json

import nibabel as nib
import numpy as np
import pytest

import fmrivid.config as fc
from fmrivid.errors import InputError
from fmrivid.io import cc2017, cifti
from fmrivid.io.h5 import read_features
from fmrivid.preprocess import stages as preprocess_stages
from fmrivid.preprocess import surface
from fmrivid.preprocess.pipeline import (
    SubjectData,
    cc2017_inputs,
    preprocess_subject,
    read_subject,
    write_subject,
)
from fmrivid.preprocess.select import roi_from_surface_labels
from fmrivid.simulate import surface_fixtures as sf

QUIET = lambda m: None
NV = cifti.HCP_91K["vertices"]


@pytest.fixture(scope="module")
def fslr(tmp_path_factory):
    """Synthetic 32k_fs_LR flat surfaces (both file-name styles) and an HCP-MMP-like dlabel / GIfTI label pair."""
    root = tmp_path_factory.mktemp("fslr")
    paths = sf.write_fslr_surfaces(root / "mesh")
    sf.write_fslr_surfaces(root / "hcp_mesh", names="hcp")
    dlabel = sf.write_hcp_mmp_like_dlabel(root / "mmp.dlabel.nii")
    sf.write_hcp_mmp_like_label_gii(root / "mmp.{hemi}.label.gii")
    flat = {}
    for hemi, path in paths.items():  # the flat coordinates and the patch, read back independently
        gii = nib.load(str(path))
        xy = gii.darrays[0].data[:, :2].astype(np.float64)
        on = np.zeros(len(xy), bool)
        on[gii.darrays[1].data.ravel()] = True
        flat[hemi] = (xy, on)
    return {"root": root, "mesh": root / "mesh", "hcp_mesh": root / "hcp_mesh", "dlabel": dlabel,
            "gii": str(root / "mmp.{hemi}.label.gii"), "flat": flat}


def _surface_cfg(mesh, size=64, flatmap=True):
    cfg = fc.validate({"preprocess": {"surface": {"enabled": True, "flatmap": flatmap, "flatmap_size": size,
                                                  "mesh": str(mesh)}}})
    return cfg["preprocess"]["surface"]


def _cifti_subject(path, models, cols, X, n_train):
    hemi, vertex, nvertices = cifti.vertex_bookkeeping(models, cols)
    ids = [f"c{k}" for k in range(len(X))]
    sd = SubjectData("01", X[:n_train], ids[:n_train], X[n_train:], ids[n_train:],
                     -np.ones((len(cols), 3), np.int32), np.eye(4), (0, 0, 0), np.zeros(len(cols)),
                     {"window_trs": 0}, space="cifti", columns=np.asarray(cols), hemi=hemi, vertex=vertex,
                     nvertices=nvertices)
    write_subject(path, sd)
    return path


def _pixel_xy(xy, on, size, half_index):
    """Flat (x, y) at each pixel centre of one hemisphere's half, from the documented layout (extent of the patch,
    aspect kept, row 0 at the top)."""
    lo, hi = xy[on].min(0), xy[on].max(0)
    scale = (hi - lo).max()
    half = size // 2
    rows, cols = np.mgrid[0:size, 0:half]
    x = lo[0] + cols / (half - 1) * scale
    y = lo[1] + (1 - rows / (size - 1)) * scale
    return x, y


def test_planted_flat_function_is_reproduced(fslr, tmp_path):
    """Sample k's value at a vertex is a known function of the vertex's flat (x, y): the flat map shows it."""
    models = cifti.hcp_91k_axis()
    cols = np.random.default_rng(0).permutation(59412)  # every cortical grayordinate, in a shuffled order
    hemi, vertex, _ = cifti.vertex_bookkeeping(models, cols)
    xy = np.stack([fslr["flat"][h][0][v] for h, v in zip(hemi, vertex)])
    left = (hemi == "left").astype(np.float32)
    X = np.stack([xy[:, 0], xy[:, 1], np.sin(xy[:, 0] / 40.0) * xy[:, 1], left]).astype(np.float32)
    h5 = _cifti_subject(tmp_path / "sub-01.h5", models, cols, X, n_train=3)
    size = 64
    preprocess_stages.surface(h5, _surface_cfg(fslr["mesh"], size), tmp_path / "L.func.gii",
                              tmp_path / "R.func.gii", tmp_path / "flat.h5", tmp_path / "surface.png", log=QUIET)
    ids, images, attrs = read_features(tmp_path / "flat.h5")
    assert ids == ["c0", "c1", "c2", "c3"] and images.shape == (4, size, size)
    assert attrs["kind"] == "flatmap" and json.loads(attrs["split"]) == ["train"] * 3 + ["test"]
    mask = np.asarray(json.loads(attrs["mask"]), bool)
    half = size // 2
    for h, hemi_name in enumerate(surface.HEMIS):
        px, py = _pixel_xy(*fslr["flat"][hemi_name], size, h)
        cover = mask[:, h * half:(h + 1) * half]
        assert cover.sum() > 0.6 * np.pi / 4 * half * size * (160 / 220)  # the ellipse fills its half
        for k, truth in enumerate((px, py, np.sin(px / 40.0) * py)):
            got = images[k][:, h * half:(h + 1) * half][cover]
            r = np.corrcoef(got, truth[cover])[0, 1]
            assert r > 0.99, (hemi_name, k, r)
    # the left hemisphere fills the left half, the right one the right half
    assert np.allclose(images[3][:, :half][mask[:, :half]], 1.0) and not images[3][:, half:].any()
    assert mask[:, :half].any() and mask[:, half:].any()
    # the align decoder reads the file as it reads the volume path's
    from fmrivid.decoders.align import read_flatmaps

    maps = read_flatmaps(tmp_path / "flat.h5")
    assert maps["train_maps"].shape == (3, size, size) and maps["mask"].shape == (size, size)
    # GIfTI: full 32,492-vertex hemispheres; the medial wall (not in the CIFTI) is 0
    tex = np.stack([d.data for d in nib.load(tmp_path / "L.func.gii").darrays], axis=1)
    assert tex.shape == (NV, 4)
    lv = vertex[hemi == "left"]
    assert np.allclose(tex[lv, 0], X[0, hemi == "left"])
    assert not tex[cifti.HCP_91K["left"]:].any()
    assert (tmp_path / "surface.png").stat().st_size > 5000


def test_vertex_mapping_comes_from_the_brain_model_axis(fslr, tmp_path):
    """A CIFTI whose cortex covers a scattered subset of vertices: preprocessing stores (hemi, vertex) and the
    surface stage puts each column's samples at its own vertex."""
    rng = np.random.default_rng(1)
    masks = {}
    for hemi in surface.HEMIS:
        m = np.zeros(NV, bool)
        m[rng.choice(cifti.HCP_91K[hemi], 3000, replace=False)] = True
        masks[hemi] = m
    models = (nib.cifti2.BrainModelAxis.from_mask(masks["left"], name="CortexLeft")
              + nib.cifti2.BrainModelAxis.from_mask(masks["right"], name="CortexRight"))
    # planted: column j's amplitude encodes its vertex (+ left, - right); standardize none keeps it
    amp = np.where(np.asarray(models.name) == cifti.CORTEX[0], 1.0, -1.0) * (1.0 + np.asarray(models.vertex) / 1e3)
    cc = {"train_segments": 1, "test_segments": 1}
    paths, labels = [], []
    for seg in ["seg1", "test1"]:
        for rep in (1, 2):
            s = rng.standard_normal(245).astype(np.float32)
            data = 100.0 + s[:, None] * amp[None, :].astype(np.float32)
            path = cc2017.run_path(tmp_path / "cc", "1", seg, rep)
            cifti.write_dtseries(path, data, 2.0, models)
            paths.append(path)
            labels.append(f"{seg}_{rep}")
    table = cc2017.stimulus_table(cc)
    splits = dict(zip(table.clip_id, table.split))

    def cfg(**selection):
        return fc.validate({"preprocess": {"trim": {"preset": "cc2017"}, "detrend_order": 0, "standardize": "none",
                                           "lag_s": 4.0, "selection": {"method": "none", **selection}}})["preprocess"]

    sd = preprocess_subject(cc2017_inputs("1", paths, labels), splits, 2.0, cfg(), log=QUIET, lag_scan=False)
    write_subject(tmp_path / "sub-1.h5", sd)
    sub = read_subject(tmp_path / "sub-1.h5")
    g = sub["grayordinate"]
    assert list(sub["hemi"]) == [cifti.HEMI_OF[n] for n in np.asarray(models.name)[g]]
    assert np.array_equal(sub["vertex"], np.asarray(models.vertex)[g]) and sub["nvertices"] == {"left": NV,
                                                                                                "right": NV}
    preprocess_stages.surface(tmp_path / "sub-1.h5", _surface_cfg(fslr["hcp_mesh"], 32), tmp_path / "L.func.gii",
                              tmp_path / "R.func.gii", tmp_path / "flat.h5", log=QUIET)
    X = np.concatenate([sub["train_X"], sub["test_X"]])
    for hemi, sign in (("left", 1.0), ("right", -1.0)):
        tex = np.stack([d.data for d in nib.load(tmp_path / f"{hemi[0].upper()}.func.gii").darrays], axis=1)
        kept = np.flatnonzero(masks[hemi])
        for v in kept[[0, 7, 1000, 2999]]:  # a few vertices by index: amplitude (1 + v/1000) times the clip's mean
            ratio = (tex[v] @ X[:, 0]) / (X[:, 0] @ X[:, 0]) * (1.0 + np.asarray(models.vertex)[g[0]] / 1e3)
            assert abs(ratio - sign * (1.0 + v / 1e3)) < 1e-3, (hemi, v, ratio)
        assert not tex[~masks[hemi]].any()  # vertices absent from the CIFTI stay 0

    # dlabel selection by names keeps exactly the grayordinates with those labels (matched by vertex, not column)
    lab = nib.load(str(fslr["dlabel"]))
    lab_models, keys = lab.header.get_axis(1), np.asarray(lab.dataobj[0]).astype(int)
    table_names = {k: v[0] for k, v in lab.header.get_axis(0).label[0].items()}
    key_at = {(n, v): k for n, v, k in zip(lab_models.name, lab_models.vertex, keys)}
    wanted = ["L_V1_ROI", "R_MT_ROI", "L_V4_ROI"]
    expected = [j for j, (n, v) in enumerate(zip(models.name, models.vertex))
                if table_names.get(key_at.get((n, v), 0)) in wanted]
    assert len(expected) > 20
    sd = preprocess_subject(cc2017_inputs("1", paths, labels), splits, 2.0,
                            cfg(roi_mask=str(fslr["dlabel"]), roi_labels=wanted), log=QUIET, lag_scan=False)
    assert sorted(sd.columns.tolist()) == expected and sd.info["roi_voxels"] == len(expected)
    by_key = roi_from_surface_labels(fslr["dlabel"], [k for k, n in table_names.items() if n in wanted], models)
    by_gii = roi_from_surface_labels(fslr["gii"], wanted, models)
    assert np.flatnonzero(by_key).tolist() == expected and np.flatnonzero(by_gii).tolist() == expected
    # a volumetric atlas with CIFTI data is refused
    with pytest.raises(InputError, match=r"atlas\.nii\.gz: expected a surface label file for CIFTI data"):
        preprocess_subject(cc2017_inputs("1", paths, labels), splits, 2.0, cfg(roi_mask=str(tmp_path / "atlas.nii.gz")),
                           log=QUIET, lag_scan=False)


def test_surface_label_errors(fslr, tmp_path):
    models = cifti.hcp_91k_axis()
    with pytest.raises(InputError, match=r"mmp\.dlabel\.nii: expected label 'L_V99_ROI' .* no such label; .*"
                                         r"L_V\w*_ROI"):
        roi_from_surface_labels(fslr["dlabel"], ["L_V1_ROI", "L_V99_ROI"], models)
    with pytest.raises(InputError, match=r"expected label key 999"):
        roi_from_surface_labels(fslr["dlabel"], [999], models)
    fs5 = nib.cifti2.BrainModelAxis.from_mask(np.ones(10242, bool), name="CortexLeft")
    sf.write_hcp_mmp_like_dlabel(tmp_path / "fs5.dlabel.nii", models=fs5)
    with pytest.raises(InputError, match=r"fs5\.dlabel\.nii: expected 32492 vertices on CIFTI_STRUCTURE_CORTEX_LEFT "
                                         r"like the data \(run\.dtseries\.nii\); found 10242"):
        roi_from_surface_labels(tmp_path / "fs5.dlabel.nii", [], models, "run.dtseries.nii")
    sf.write_hcp_mmp_like_label_gii(tmp_path / "fs5.{hemi}.label.gii", nvertices=10242)
    with pytest.raises(InputError, match=r"fs5\.L\.label\.gii: expected 32492 vertices"):
        roi_from_surface_labels(str(tmp_path / "fs5.{hemi}.label.gii"), [], models)
    wall = np.zeros(NV, bool)
    wall[cifti.HCP_91K["left"]:] = True  # data on the medial wall only: no labelled vertex there
    with pytest.raises(InputError, match=r"expected grayordinates of the data .* with labels \['L_V1_ROI'\]; "
                                         r"found none"):
        roi_from_surface_labels(fslr["dlabel"], ["L_V1_ROI"],
                                nib.cifti2.BrainModelAxis.from_mask(wall, name="CortexLeft"))


def test_surface_labels_with_nifti_data_are_refused(tiny_bids, fslr):
    from fmrivid.io import bids

    root = tiny_bids["root"]
    runs = [bids.run_paths(root, "01", "movie", r) for r in tiny_bids["runs"]]
    table = bids.read_stimulus_table(root / "stimuli" / "clips.tsv")
    cfg = fc.validate({"preprocess": {"detrend_order": 1, "selection": {"roi_mask": str(fslr["dlabel"]),
                                                                        "roi_labels": ["L_V1_ROI"]}}})
    with pytest.raises(InputError, match=r"mmp\.dlabel\.nii: expected CIFTI data .* for a surface label file"):
        preprocess_subject(runs, dict(zip(table.clip_id, table.split)), 1.0, cfg["preprocess"], log=QUIET,
                           lag_scan=False)


def test_flat_surface_errors(fslr, tmp_path):
    models = cifti.hcp_91k_axis()
    cols = np.arange(59412)
    X = np.ones((2, len(cols)), np.float32)
    h5 = _cifti_subject(tmp_path / "sub-01.h5", models, cols, X, n_train=1)
    out = {"left": tmp_path / "L.func.gii", "right": tmp_path / "R.func.gii", "flat": tmp_path / "flat.h5"}
    sub = read_subject(h5)
    with pytest.raises(InputError, match=r"fsaverage5: expected a folder of the 32k_fs_LR flat surfaces .*"
                                         r"S1200\.L\.flat\.32k_fs_LR\.surf\.gii.*BALSA"):
        surface.write_surface_outputs(sub, _surface_cfg("fsaverage5"), out, log=QUIET)
    assert not out["left"].exists()  # checked before anything is written
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: expected a folder of the 32k_fs_LR flat surfaces .* found no "
                                         r"left_flat\.gii or S1200\.L\.flat\.32k_fs_LR\.surf\.gii"):
        surface.write_surface_outputs(sub, _surface_cfg(tmp_path / "empty"), out, log=QUIET)
    fs5 = surface.load_mesh("fsaverage5")["flat"]
    (tmp_path / "small").mkdir()
    for hemi in surface.HEMIS:
        gii = nib.gifti.GiftiImage(darrays=[
            nib.gifti.GiftiDataArray(np.asarray(fs5[hemi].coordinates, np.float32), intent="NIFTI_INTENT_POINTSET"),
            nib.gifti.GiftiDataArray(np.asarray(fs5[hemi].faces, np.int32), intent="NIFTI_INTENT_TRIANGLE")])
        nib.save(gii, tmp_path / "small" / f"{hemi}_flat.gii")
    with pytest.raises(InputError, match=r"left_flat\.gii: expected 32492 vertices like the CIFTI data's left "
                                         r"surface .*; found 10242 vertices"):
        surface.write_surface_outputs(sub, _surface_cfg(tmp_path / "small"), out, log=QUIET)
    # without flat maps the GIfTI textures need no mesh at all
    surface.write_surface_outputs(sub, _surface_cfg("fsaverage5", flatmap=False), out, log=QUIET)
    assert len(nib.load(out["left"]).darrays) == 2
    # a subject file without the vertex bookkeeping (older fmrivid) is named
    del sub["hemi"]
    sub["source"] = str(h5)
    with pytest.raises(InputError, match=r"sub-01\.h5: expected voxels/hemi, voxels/vertex"):
        surface.write_surface_outputs(sub, _surface_cfg(fslr["mesh"]), out, log=QUIET)
