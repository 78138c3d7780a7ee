"""QC figures of the preprocessing stage (they go into the report)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from fmrivid.io.atomic import atomic_path  # noqa: E402


def score_image(sd, values, fill=0.0):
    """A NIfTI image of per-selected-voxel ``values`` on the subject's grid."""
    vol = np.full(sd.shape, fill, dtype=np.float32)
    vol[tuple(sd.ijk.T)] = values
    return nib.Nifti1Image(vol, sd.affine)


def selection_qc(sd, path):
    """Glass-brain map of the selected voxels' scores plus a score histogram, as PNG."""
    from nilearn import plotting

    fig = plt.figure(figsize=(11, 3.6))
    ax_brain = fig.add_axes([0.0, 0.0, 0.68, 0.9])
    ax_hist = fig.add_axes([0.74, 0.18, 0.24, 0.65])
    info = sd.info
    title = (f"sub-{sd.subject}: {info.get('n_selected', len(sd.ijk))} of {info.get('n_candidates', '?')} "
             f"voxels ({info.get('method', '?')}), lag {info.get('lag_s', '?')} s")
    plotting.plot_glass_brain(score_image(sd, sd.score), axes=ax_brain, colorbar=True, cmap="viridis",
                              title=title, plot_abs=False, display_mode="ortho")
    ax_hist.hist(sd.score, bins=30, color="tab:blue")
    ax_hist.set_xlabel("selection score (selected voxels)")
    ax_hist.set_ylabel("voxels")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
