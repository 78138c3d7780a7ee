"""Simulated BOLD signal: MNI152 grid, planted responses, HRF, noise and drift.

Model of one run of one subject, for every in-brain voxel v and volume t::

    y[t, v] = baseline[v] + sum_k X[t, k] * A[clip(k), v] + noise[t, v] + drift[t, v]

- ``X`` (volumes x trials) holds the single-trial response of every trial: a
  boxcar [onset, onset + clip_duration) convolved with nilearn's Glover HRF,
  scaled so that its peak is 1, sampled at the volume times ``t * tr``.
- ``A`` (clips x voxels) is zero outside the responsive ("visual cortex")
  voxels; inside it is ``baseline * signal_percent / 100 * (1 + z)``: a common
  evoked response plus a clip-specific part ``z`` (unit SD over clips) made of
  subject-specific Gaussian weights times the hidden stimulus features.
- ``noise`` is white Gaussian with SD ``noise_percent`` of baseline, ``drift`` a
  random polynomial of order 1-3 (Legendre basis) with SD ``drift_percent`` of
  baseline over the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

#: Responsive voxels: in-brain voxels whose centre has MNI y below this (occipital lobe) ...
RESPONSIVE_Y_MAX_MM = -65.0
#: ... and z above this (excludes the cerebellum).
RESPONSIVE_Z_MIN_MM = -10.0
#: Baseline intensity range inside the brain (template contrast mapped linearly onto it).
BASELINE_RANGE = (600.0, 1000.0)
#: Common evoked response of responsive voxels, in units of ``signal_percent``.
EVOKED_GAIN = 1.0
#: Highest order of the drift polynomial (preprocessing detrends with order >= this).
DRIFT_ORDER = 3
#: Time step (s) of the fine grid on which the HRF convolution is computed.
FINE_DT = 0.01
#: Length (s) of the Glover HRF kernel.
HRF_LENGTH = 32.0


@dataclass(frozen=True)
class Grid:
    """The simulation grid: resampled MNI152 template.

    Attributes
    ----------
    affine : numpy.ndarray
        (4, 4) voxel-to-MNI-mm affine.
    shape : tuple of int
        Spatial shape (X, Y, Z).
    mask : numpy.ndarray
        bool (X, Y, Z) brain mask.
    baseline : numpy.ndarray
        float32 (X, Y, Z), in [600, 1000] inside the mask, 0 outside.
    responsive : numpy.ndarray
        bool (X, Y, Z) planted responsive voxels (a subset of ``mask``).
    voxel_size : float
        Isotropic voxel size in mm.
    """

    affine: np.ndarray
    shape: tuple
    mask: np.ndarray
    baseline: np.ndarray
    responsive: np.ndarray
    voxel_size: float


def load_grid(voxel_size_mm):
    """Resample nilearn's MNI152 template and brain mask to ``voxel_size_mm`` isotropic.

    Uses the copies shipped with nilearn (no download).

    Parameters
    ----------
    voxel_size_mm : float
        Isotropic voxel size in mm.

    Returns
    -------
    Grid
    """
    from nilearn import datasets, image

    template = datasets.load_mni152_template()
    brain = datasets.load_mni152_brain_mask()
    target = np.diag([float(voxel_size_mm)] * 3)
    tpl = image.resample_img(template, target_affine=target, interpolation="continuous",
                             copy_header=True, force_resample=True)
    msk = image.resample_to_img(brain, tpl, interpolation="nearest",
                                copy_header=True, force_resample=True)
    values = np.asarray(tpl.get_fdata(), dtype=np.float64)
    mask = np.asarray(msk.get_fdata()) > 0.5
    baseline = _baseline(values, mask)
    affine = np.asarray(tpl.affine, dtype=np.float64)
    return Grid(affine=affine, shape=tuple(int(s) for s in mask.shape), mask=mask,
                baseline=baseline, responsive=responsive_mask(affine, mask),
                voxel_size=float(voxel_size_mm))


def _baseline(values, mask):
    """Map template intensities inside ``mask`` linearly onto BASELINE_RANGE; 0 outside."""
    inside = values[mask]
    lo, hi = float(inside.min()), float(inside.max())
    scaled = (values - lo) / max(hi - lo, 1e-12)
    low, high = BASELINE_RANGE
    out = np.where(mask, low + (high - low) * np.clip(scaled, 0.0, 1.0), 0.0)
    return out.astype(np.float32)


def responsive_mask(affine, mask):
    """Occipital in-brain voxels: MNI y < -65 mm and z > -10 mm (voxel centres).

    Parameters
    ----------
    affine : numpy.ndarray
        (4, 4) voxel-to-mm affine.
    mask : numpy.ndarray
        bool brain mask.

    Returns
    -------
    numpy.ndarray
        bool array of ``mask``'s shape.
    """
    ijk = np.indices(mask.shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(affine, ijk).reshape(mask.shape + (3,))
    return mask & (xyz[..., 1] < RESPONSIVE_Y_MAX_MM) & (xyz[..., 2] > RESPONSIVE_Z_MIN_MM)


def _glover_kernel():
    """Glover HRF (nilearn) on the uniform fine grid: (times, values), values summing to 1/FINE_DT."""
    from nilearn.glm.first_level import glover_hrf

    oversampling = int(round(1.0 / FINE_DT))
    hrf = glover_hrf(1.0, oversampling=oversampling, time_length=HRF_LENGTH, onset=0.0)
    native = np.linspace(0.0, HRF_LENGTH, hrf.size)  # nilearn's own time stamps
    times = np.arange(0.0, HRF_LENGTH + FINE_DT / 2, FINE_DT)
    values = np.interp(times, native, hrf)
    return times, values / (values.sum() * FINE_DT)


def hrf_peak_s():
    """Time (s) of the peak of the Glover HRF after an impulse."""
    times, values = _glover_kernel()
    return round(float(times[np.argmax(values)]), 6)


def trial_response(duration):
    """Response to one clip: boxcar [0, duration) convolved with the Glover HRF, peak 1.

    Parameters
    ----------
    duration : float
        Clip duration in seconds.

    Returns
    -------
    times : numpy.ndarray
        Fine time grid (s after onset), step FINE_DT, covering the whole response.
    response : numpy.ndarray
        Response on that grid, max 1, 0 before onset.
    """
    _, kernel = _glover_kernel()
    n_box = max(int(round(duration / FINE_DT)), 1)
    response = np.convolve(kernel, np.ones(n_box))
    times = np.arange(response.size) * FINE_DT
    return times, response / response.max()


def true_lag(tr, duration):
    """Window start (multiple of ``tr``) maximising the mean response over [lag, lag + duration).

    Parameters
    ----------
    tr, duration : float
        Repetition time and clip duration in seconds.

    Returns
    -------
    float
        The lag in seconds.
    """
    times, response = trial_response(duration)
    lags = np.arange(0.0, times[-1] - duration, tr)
    means = [response[(times >= lag - 1e-9) & (times < lag + duration - 1e-9)].mean() for lag in lags]
    return float(lags[int(np.argmax(means))])


def design_matrix(onsets, n_volumes, tr, duration):
    """Single-trial regressors sampled at the volume times ``t * tr``.

    Parameters
    ----------
    onsets : array-like
        Trial onsets in seconds from the first volume.
    n_volumes : int
        Number of volumes.
    tr, duration : float
        Repetition time and clip duration in seconds.

    Returns
    -------
    numpy.ndarray
        float64 (n_volumes, n_trials); column k is the peak-1 response to trial k.
    """
    times, response = trial_response(duration)
    frame_times = np.arange(n_volumes) * float(tr)
    delays = frame_times[:, None] - np.asarray(onsets, dtype=np.float64)[None, :]
    return np.interp(delays, times, response, left=0.0, right=0.0)


def clip_amplitudes(features, baseline, signal_frac, rng):
    """Response amplitude of every responsive voxel to every clip.

    Parameters
    ----------
    features : numpy.ndarray
        (n_clips, n_features) standardised stimulus features.
    baseline : numpy.ndarray
        (n_voxels,) baseline of the responsive voxels.
    signal_frac : float
        ``signal_percent / 100``.
    rng : numpy.random.Generator
        Subject-specific generator for the feature->voxel weights.

    Returns
    -------
    amplitudes : numpy.ndarray
        (n_clips, n_voxels) = ``baseline * signal_frac * (EVOKED_GAIN + z)``, where
        ``z = features @ weights`` standardised over clips per voxel.
    weights : numpy.ndarray
        (n_features, n_voxels) Gaussian weights.
    """
    weights = rng.standard_normal((features.shape[1], baseline.size))
    raw = features @ weights
    std = raw.std(axis=0)
    z = (raw - raw.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return baseline[None, :] * signal_frac * (EVOKED_GAIN + z), weights


def polynomial_drift(n_volumes, n_voxels, rng, order=DRIFT_ORDER):
    """Random slow drifts with unit SD over time: Legendre polynomials of order 1..``order``.

    Returns
    -------
    numpy.ndarray
        float64 (n_volumes, n_voxels), zero mean and unit SD per column.
    """
    t = np.linspace(-1.0, 1.0, n_volumes)
    basis = np.polynomial.legendre.legvander(t, order)[:, 1:]
    drift = basis @ rng.standard_normal((order, n_voxels))
    drift -= drift.mean(axis=0)
    std = drift.std(axis=0)
    return drift / np.where(std > 0, std, 1.0)


def simulate_run(design, trial_amplitudes, baseline, responsive_index, noise_frac, drift_frac,
                 noise_rng, drift_rng):
    """Time courses of every in-brain voxel for one run.

    Parameters
    ----------
    design : numpy.ndarray
        (n_volumes, n_trials) from :func:`design_matrix`.
    trial_amplitudes : numpy.ndarray
        (n_trials, n_responsive) amplitude of each trial in each responsive voxel.
    baseline : numpy.ndarray
        (n_voxels,) baseline of every in-brain voxel.
    responsive_index : numpy.ndarray
        (n_responsive,) positions of the responsive voxels among the in-brain ones.
    noise_frac, drift_frac : float
        Noise SD and drift SD as fractions of baseline.
    noise_rng, drift_rng : numpy.random.Generator
        Run-specific generators.

    Returns
    -------
    data : numpy.ndarray
        float32 (n_volumes, n_voxels) measured time courses.
    signal : numpy.ndarray
        float64 (n_volumes, n_responsive) noiseless planted signal (without baseline).
    """
    n_volumes, n_voxels = design.shape[0], baseline.size
    signal = design @ trial_amplitudes
    noise = noise_rng.standard_normal((n_volumes, n_voxels)) * (noise_frac * baseline)
    drift = polynomial_drift(n_volumes, n_voxels, drift_rng) * (drift_frac * baseline)
    data = baseline[None, :].astype(np.float64) + noise + drift
    data[:, responsive_index] += signal
    return data.astype(np.float32), signal
