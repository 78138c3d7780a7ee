"""Preprocessing: validation, cleaning, HRF lag, repeat averaging, voxel selection."""

from fmrivid.preprocess.clean import detrend_standardize
from fmrivid.preprocess.samples import event_samples, average_repeats
from fmrivid.preprocess.select import reliability_scores, snr_scores, select_voxels

__all__ = ["detrend_standardize", "event_samples", "average_repeats",
           "reliability_scores", "snr_scores", "select_voxels"]
