"""Evaluation metrics: every metric is named by its variant and computed on lossless arrays.

Modules
-------
pixel
    ``ssim_rgb_uniform``, ``ssim_gray_gaussian``, ``psnr``, ``pixcorr`` on uint8 (N, T, H, W, 3) clips.
semantic
    ``two_way_ident`` on (N, D) feature vectors.
stats
    ``bootstrap_ci``, ``derangement`` (shuffled-GT control), ``permutation_p``.
table
    ``summarise`` per-clip values into rows of ``COLUMNS`` and ``write_table`` a deterministic TSV.

Submodules are imported on demand (``from fmrivid.metrics.pixel import psnr``) so that
importing this package stays cheap.
"""
