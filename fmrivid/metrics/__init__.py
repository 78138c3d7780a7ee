"""Evaluation metrics: every metric is named by its variant and computed on lossless arrays.

Modules
-------
pixel
    ``ssim_rgb_uniform``, ``ssim_gray_gaussian``, ``psnr``, ``pixcorr`` on uint8 (N, T, H, W, 3) clips.
perceptual
    ``lpips_alex`` / ``lpips_vgg`` (backbone weights from the torch cache, never downloaded) and ``hue_cos``.
motion
    ``epe_farneback``: end-point error between OpenCV Farneback flows of GT and reconstruction.
semantic
    ``two_way_ident``, ``clip_video_score``, ``clip_pcc_adjacent`` (gated), ``clip_pcc_allpairs``,
    ``retrieval_topk`` and ``retrieval_nway_top1`` on embeddings.
classify
    ``nway_topk`` (MinD-Video protocol, top-3 GT rule and strict top-1) with image / video classifiers.
brain
    ``voxel_r``, ``isc``, ``fsc`` on (samples x voxels) responses.
stats
    ``bootstrap_ci``, ``derangement``, ``permutation_p`` / ``permutation_p_values`` + ``PairCache``
    (shuffled-GT controls), ``paired_wilcoxon``.
table
    ``summarise`` per-clip values into rows of ``COLUMNS``, ``write_table`` a deterministic TSV, per-clip
    tables, wide / subject-mean summaries, Wilcoxon tables.
suite
    ``evaluate_videos`` / ``evaluate_features`` / ``evaluate_voxel_r`` / ``evaluate_between_subjects``:
    every variant of one subject and method with its statistics.

Submodules are imported on demand (``from fmrivid.metrics.pixel import psnr``) so that
importing this package stays cheap.
"""
