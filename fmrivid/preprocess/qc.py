"""QC figures of the preprocessing stage (they go into the report)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

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
    if sd.space == "cifti":
        ax_brain.plot(sd.columns, sd.score, ".", ms=1)
        ax_brain.set_xlabel("grayordinate")
        ax_brain.set_ylabel("score")
        ax_brain.set_title(title)
    else:
        plotting.plot_glass_brain(score_image(sd, sd.score), axes=ax_brain, colorbar=True, cmap="viridis",
                                  title=title, plot_abs=False, display_mode="ortho")
    ax_hist.hist(sd.score, bins=30, color="tab:blue")
    ax_hist.set_xlabel("selection score (selected voxels)")
    ax_hist.set_ylabel("voxels")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def volume_image(sd, mask_values, fill=0.0):
    """A NIfTI image of per-mask-voxel values (e.g. tSNR) on the subject's grid."""
    vol = np.full(sd.shape, fill, dtype=np.float32)
    vol[sd.qc["mask"]] = mask_values
    return nib.Nifti1Image(vol, sd.affine)


def tsnr_qc(sd, path):
    """tSNR of the training runs (mean over time / SD of the detrended series, averaged over runs) as a figure."""
    from nilearn import plotting

    fig = plt.figure(figsize=(11, 3.6))
    tsnr = np.asarray(sd.qc["tsnr"], dtype=np.float32)
    if sd.space == "cifti":
        ax = fig.add_subplot(111)
        ax.plot(np.flatnonzero(sd.qc["mask"]), tsnr[sd.qc["mask"]], lw=0.3)
        ax.set_xlabel("grayordinate")
        ax.set_ylabel("tSNR")
        ax.set_title(f"sub-{sd.subject}: tSNR of training runs per grayordinate")
    else:
        img = nib.Nifti1Image(np.where(sd.qc["mask"], tsnr, 0).astype(np.float32), sd.affine)
        plotting.plot_stat_map(img, figure=fig, display_mode="z", cut_coords=6, cmap="magma", colorbar=True,
                               title=f"sub-{sd.subject}: tSNR (training runs, brain mask "
                                     f"{int(sd.qc['mask'].sum())} voxels, median "
                                     f"{np.median(tsnr[sd.qc['mask']]):.0f})")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def lag_scan_qc(table, path_png, subject, planted_lag=None):
    """Plot of the lag scan table: one panel per method (score vs lag, best / configured / planted marked)."""
    methods = list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 3.4), squeeze=False)
    labels = {"repeat_identification": ("ident_margin", "r(same clip) - r(other clips)"),
              "ridge_features": ("decoding_r", "CV decoding r (training clips)")}
    for ax, method in zip(axes[0], methods):
        rows = table[table["method"] == method]
        col, ylabel = labels[method]
        ax.plot(rows["lag_s"], rows[col], "o-", label=col)
        if "top1_accuracy" in rows and rows["top1_accuracy"].notna().any():
            ax2 = ax.twinx()
            ax2.plot(rows["lag_s"], rows["top1_accuracy"], "s--", color="tab:orange", alpha=0.6)
            ax2.set_ylabel("top-1 accuracy (dashed)")
        best = rows.loc[rows["best"], "lag_s"]
        if len(best):
            ax.axvline(float(best.iloc[0]), color="tab:green", label=f"best {float(best.iloc[0]):g} s")
        conf = rows.loc[rows["configured"], "lag_s"]
        if len(conf):
            ax.axvline(float(conf.iloc[0]), color="grey", ls=":", label=f"configured {float(conf.iloc[0]):g} s")
        if planted_lag is not None:
            ax.axvline(planted_lag, color="tab:red", ls="--", label=f"planted {planted_lag:g} s (demo)")
        note = "" if rows.get("informative", pd.Series([True])).all() else " (uninformative: same order)"
        ax.set_title(f"sub-{subject}: {method}{note}", fontsize=9)
        ax.set_xlabel("lag (s)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path_png) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def selection_table(sd, truth_img=None):
    """One-row DataFrame: selection counts, and precision/recall against a planted-voxel mask when given.

    ``truth_img`` is the simulator's ground-truth responsive-voxel image (demo only).
    """
    import pandas as pd

    info = sd.info
    row = {"subject": sd.subject, "method": info.get("method"), "n_candidates": info.get("n_candidates"),
           "n_selected": info.get("n_selected", len(sd.ijk)), "fallback_top_k": info.get("fallback_top_k", ""),
           "precision": np.nan, "recall": np.nan, "n_planted": np.nan, "truth": "none (real data)"}
    if truth_img is not None and sd.space == "volume":
        truth = np.asarray(nib.load(str(truth_img)).dataobj) > 0
        if truth.shape == tuple(sd.shape):
            selected = np.zeros(truth.shape, bool)
            selected[tuple(sd.ijk.T)] = True
            hit = int((selected & truth).sum())
            row.update({"precision": hit / max(int(selected.sum()), 1), "recall": hit / max(int(truth.sum()), 1),
                        "n_planted": int(truth.sum()), "truth": f"{truth_img} (simulated demo only)"})
    return pd.DataFrame([row])


def surface_qc(result, path):
    """Mean training sample on the inflated fsaverage surface (both hemispheres), plus a few flat maps."""
    from nilearn import plotting

    tex, mesh, n_train = result["textures"], result["mesh"], result["n_train"]
    flat = result["flatmaps"]
    n_flat = 0 if flat is None else min(4, len(flat))
    fig = plt.figure(figsize=(3.2 * (2 + n_flat), 3.2))
    for k, hemi in enumerate(("left", "right")):
        ax = fig.add_subplot(1, 2 + n_flat, k + 1, projection="3d")
        values = tex[hemi][:, :n_train].mean(axis=1)
        plotting.plot_surf_stat_map(mesh.get("inflated", mesh["pial"])[hemi], values, hemi=hemi, axes=ax,
                                    figure=fig, colorbar=False, cmap="RdBu_r", view="posterior",
                                    title=f"{hemi}: mean training sample")
    for j in range(n_flat):
        ax = fig.add_subplot(1, 2 + n_flat, 3 + j)
        lim = float(np.abs(flat[j]).max()) or 1.0
        ax.imshow(flat[j], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"flat map {result['ids'][j]}", fontsize=8)
        ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
