"""Surface projection (nilearn vol_to_surf on fsaverage5), GIfTI output and flat maps."""

import nibabel as nib
import numpy as np
import pytest

import fmrivid.config as fc
from fmrivid.preprocess import stages as preprocess_stages
from fmrivid.errors import InputError
from fmrivid.io.h5 import read_features
from fmrivid.preprocess import surface
from fmrivid.preprocess.pipeline import SubjectData, write_subject


@pytest.fixture(scope="module")
def mesh():
    return surface.load_mesh("fsaverage5")  # shipped with nilearn: no download


def _blob_subject(tmp_path, mesh):
    """Selected voxels on a 4 mm MNI grid; sample k lights a 10 mm ball around a left-hemisphere vertex."""
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-90, -126, -72]
    shape = (46, 55, 46)
    ijk = np.argwhere(np.ones(shape, bool))
    xyz = ijk * 4.0 + affine[:3, 3]
    pial = np.asarray(mesh["pial"]["left"].coordinates)
    centres = pial[[100, 5000, 9000]]
    X = np.stack([(np.linalg.norm(xyz - c, axis=1) < 10).astype(np.float32) for c in centres])
    sd = SubjectData("01", X[:2], ["a", "b"], X[2:], ["c"], ijk, affine, shape, np.ones(len(ijk)),
                     {"window_trs": 0})
    write_subject(tmp_path / "sub-01.h5", sd)
    return tmp_path / "sub-01.h5", centres


def test_projection_lands_on_the_planted_vertices(tmp_path, mesh):
    path, centres = _blob_subject(tmp_path, mesh)
    cfg = fc.validate({"preprocess": {"surface": {"enabled": True, "flatmap": True, "flatmap_size": 32}}})
    preprocess_stages.surface(path, cfg["preprocess"]["surface"], tmp_path / "L.func.gii", tmp_path / "R.func.gii",
                       tmp_path / "flat.h5", tmp_path / "surface.png", log=lambda m: None)
    left = nib.load(tmp_path / "L.func.gii")
    assert len(left.darrays) == 3 and left.darrays[0].data.shape == (10242,)
    assert [d.meta["Name"] for d in left.darrays] == ["a", "b", "c"]
    tex = np.stack([d.data for d in left.darrays], axis=1)
    pial = np.asarray(mesh["pial"]["left"].coordinates)
    for k, c in enumerate(centres):
        near = np.linalg.norm(pial - c, axis=1) < 5
        far = np.linalg.norm(pial - c, axis=1) > 30
        assert tex[near, k].mean() > 0.5 and tex[far, k].max() == 0.0
    right = np.stack([d.data for d in nib.load(tmp_path / "R.func.gii").darrays], axis=1)
    rpial = np.asarray(mesh["pial"]["right"].coordinates)
    for k, c in enumerate(centres):  # right-hemisphere vertices away from the blob get nothing
        assert right[np.linalg.norm(rpial - c, axis=1) > 30, k].max() == 0.0
    ids, flat, attrs = read_features(tmp_path / "flat.h5")
    assert ids == ["a", "b", "c"] and flat.shape == (3, 32, 32)
    assert (tmp_path / "surface.png").stat().st_size > 5000


def test_flatmap_rasterises_vertices_by_mean(mesh):
    index = surface.flat_layout(mesh["flat"], 16)
    tex = {h: np.zeros((10242, 2), np.float32) for h in surface.HEMIS}
    tex["left"][:, 0] = 1.0
    tex["right"][:, 1] = 2.0
    images, covered = surface.flatmaps(tex, mesh["flat"], 16)
    assert images.shape == (2, 16, 16) and covered.sum() > 50
    assert np.allclose(images[0][:, :8][covered[:, :8]], 1.0) and not images[0][:, 8:].any()
    assert np.allclose(images[1][:, 8:][covered[:, 8:]], 2.0) and not images[1][:, :8].any()
    assert set(np.unique(index["left"] % 16)) <= set(range(8))


def test_mesh_folder_and_errors(tmp_path, mesh):
    for hemi in surface.HEMIS:
        for kind in ("pial", "white"):
            part = mesh[kind][hemi]
            gii = nib.gifti.GiftiImage(darrays=[
                nib.gifti.GiftiDataArray(np.asarray(part.coordinates, np.float32), intent="NIFTI_INTENT_POINTSET"),
                nib.gifti.GiftiDataArray(np.asarray(part.faces, np.int32), intent="NIFTI_INTENT_TRIANGLE")])
            nib.save(gii, tmp_path / f"{hemi}_{kind}.gii")
    own = surface.load_mesh(str(tmp_path))
    assert own["flat"] is None and own["pial"]["left"].n_vertices == 10242
    with pytest.raises(InputError, match=r"left_pial\.gii: expected the left pial surface"):
        surface.load_mesh(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="expected volume \\(NIfTI\\) or cifti data; found space 'mni305'"):
        surface.write_surface_outputs({"space": "mni305"}, {}, {"left": tmp_path / "l.gii"})
    with pytest.raises(InputError, match=r"expected voxels/hemi, voxels/vertex"):  # CIFTI: no projection, but
        surface.write_surface_outputs({"space": "cifti"}, {}, {"left": tmp_path / "l.gii"})  # needs the vertices
