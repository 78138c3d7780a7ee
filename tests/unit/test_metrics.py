"""Tests of fmrivid.metrics: pixel metrics, two-way identification, statistics, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.stats
from skimage.color import rgb2gray
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fmrivid.errors import InputError
from fmrivid.metrics import pixel, semantic, stats, table

from clipgen import noisy, smooth_clips

N, T, H, W = 3, 2, 24, 20


def _smooth_clips(seed, n=N, t=T, h=H, w=W):
    """Smooth random uint8 clips (structure for SSIM to see)."""
    return smooth_clips(seed, n, t, h, w)


def _degrade(clips, sigma, seed):
    return noisy(clips, sigma, seed)


@pytest.fixture(scope="module")
def clips():
    gt = _smooth_clips(0)
    return gt, _degrade(gt, 10, 1), _degrade(gt, 40, 2)


# ---------------------------------------------------------------- pixel metrics


def _reference(gt, rec, frame_fn):
    return np.array([np.mean([frame_fn(gt[i, j], rec[i, j]) for j in range(gt.shape[1])])
                     for i in range(gt.shape[0])])


def test_ssim_rgb_uniform_matches_skimage(clips):
    gt, rec, _ = clips
    ref = _reference(gt, rec, lambda a, b: structural_similarity(
        a, b, channel_axis=-1, win_size=7, data_range=255))
    got = pixel.ssim_rgb_uniform(gt, rec)
    assert got.dtype == np.float64 and got.shape == (N,)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_ssim_gray_gaussian_matches_skimage(clips):
    gt, rec, _ = clips
    ref = _reference(gt, rec, lambda a, b: structural_similarity(
        rgb2gray(a.astype(np.float64) / 255), rgb2gray(b.astype(np.float64) / 255),
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0))
    got = pixel.ssim_gray_gaussian(gt, rec)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    # a different variant: the numbers really differ from the RGB/uniform one
    assert not np.allclose(got, pixel.ssim_rgb_uniform(gt, rec))


def test_ssim_size_resizes_frames(clips):
    gt, rec, _ = clips
    # the native size given explicitly = no resize
    sq_gt, sq_rec = gt[:, :, :20, :20], rec[:, :, :20, :20]
    np.testing.assert_array_equal(pixel.ssim_rgb_uniform(sq_gt, sq_rec, size=20),
                                  pixel.ssim_rgb_uniform(sq_gt, sq_rec))
    # enlarging x2 (bilinear) smooths the noise, so SSIM goes up; it equals skimage on
    # frames enlarged with cv2's bilinear resize (the documented interpolation)
    import cv2

    big = pixel.ssim_rgb_uniform(gt, rec, size=48)
    ref = _reference(gt, rec, lambda a, b: structural_similarity(
        cv2.resize(a, (48, 48), interpolation=cv2.INTER_LINEAR),
        cv2.resize(b, (48, 48), interpolation=cv2.INTER_LINEAR),
        channel_axis=-1, win_size=7, data_range=255))
    np.testing.assert_allclose(big, ref, atol=1e-12)
    np.testing.assert_allclose(pixel.ssim_gray_gaussian(gt, gt, size=48), 1.0, atol=1e-12)


def test_ssim_size_shrinking_averages_away_pixel_noise():
    # a +-20 pixel checkerboard averages to 0 over every 2x2 block: at half size
    # (area interpolation) the reconstruction is the GT again, at native size it is not
    gt = _smooth_clips(12, h=32, w=32)
    checker = np.where((np.indices((32, 32)).sum(0) % 2) == 0, 20, -20)[None, None, :, :, None]
    rec = (gt.astype(int) + checker).astype(np.uint8)
    for fn in (pixel.ssim_rgb_uniform, pixel.ssim_gray_gaussian):
        native = fn(gt, rec)
        half = fn(gt, rec, size=16)
        assert np.all(native < 0.95)
        assert np.all(half > 0.99)


def test_psnr_matches_skimage(clips):
    gt, rec, _ = clips
    ref = _reference(gt, rec, lambda a, b: peak_signal_noise_ratio(a, b, data_range=255))
    np.testing.assert_allclose(pixel.psnr(gt, rec), ref, rtol=1e-12)


def test_psnr_identical_frames_capped():
    gt = _smooth_clips(3)
    rec = gt.copy()
    rec[0, 1] = _degrade(gt[0:1, 1:2], 20, 4)[0, 0]  # clip 0: one identical, one noisy frame
    got = pixel.psnr(gt, rec)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[1:], pixel.PSNR_CAP_DB)
    noisy = peak_signal_noise_ratio(gt[0, 1], rec[0, 1], data_range=255)
    np.testing.assert_allclose(got[0], (pixel.PSNR_CAP_DB + noisy) / 2)


def test_pixcorr_matches_numpy(clips):
    gt, rec, _ = clips
    ref = _reference(gt, rec, lambda a, b: np.corrcoef(a.ravel().astype(float),
                                                       b.ravel().astype(float))[0, 1])
    np.testing.assert_allclose(pixel.pixcorr(gt, rec), ref, atol=1e-12)


def test_pixcorr_constant_frames():
    gt = np.zeros((2, 1, 8, 8, 3), dtype=np.uint8)
    rec = gt.copy()
    rec[1] = 7  # constant but different
    np.testing.assert_array_equal(pixel.pixcorr(gt, rec), [1.0, 0.0])


def test_identical_inputs_give_perfect_scores(clips):
    gt = clips[0]
    np.testing.assert_allclose(pixel.ssim_rgb_uniform(gt, gt), 1.0, atol=1e-12)
    np.testing.assert_allclose(pixel.ssim_gray_gaussian(gt, gt), 1.0, atol=1e-12)
    np.testing.assert_allclose(pixel.pixcorr(gt, gt), 1.0, atol=1e-12)
    np.testing.assert_array_equal(pixel.psnr(gt, gt), pixel.PSNR_CAP_DB)


@pytest.mark.parametrize("name", sorted(pixel.METRICS))
def test_more_degradation_scores_worse(clips, name):
    gt, mild, strong = clips
    fn = pixel.METRICS[name]
    assert np.all(fn(gt, mild) > fn(gt, strong))


def test_pixel_input_validation(clips):
    gt = clips[0]
    with pytest.raises(InputError, match="uint8"):
        pixel.psnr(gt.astype(np.float32), gt)
    with pytest.raises(InputError, match="rec"):
        pixel.pixcorr(gt, gt[:, :1])
    with pytest.raises(InputError, match=r"\(N, T, H, W, 3\)"):
        pixel.ssim_rgb_uniform(gt[0], gt[0])
    with pytest.raises(InputError, match="7x7"):
        pixel.ssim_rgb_uniform(gt[:, :, :5, :5], gt[:, :, :5, :5])


def test_variants_named():
    assert set(pixel.VARIANTS) == set(pixel.METRICS)
    assert "256x256" in pixel.variant("ssim_rgb_uniform", 256)
    assert "native" in pixel.variant("ssim_gray_gaussian")
    assert all("\t" not in v and "\n" not in v for v in pixel.VARIANTS.values())


# ---------------------------------------------------------------- two-way identification


def test_two_way_perfect():
    true = np.random.default_rng(0).normal(size=(6, 10))
    np.testing.assert_array_equal(semantic.two_way_ident(true, true), np.ones(6))


def test_two_way_permuted_uncorrelated_rows():
    # Hadamard rows 1..7 have zero mean and are mutually orthogonal: every pair of
    # distinct rows has correlation exactly 0. With pred_i = true_perm(i):
    #   perm(i) == i : corr(true) = 1 beats the 6 zeros            -> 1
    #   perm(i) != i : corr(true) = 0, loses to 1 (the row perm(i)),
    #                  ties the 5 remaining zeros                  -> 2.5 / 6
    true = scipy.linalg.hadamard(8)[1:].astype(float)
    perm = np.array([0, 2, 1, 3, 5, 6, 4])  # fixed points 0 and 3
    got = semantic.two_way_ident(true[perm], true)
    expected = np.where(perm == np.arange(7), 1.0, 2.5 / 6)
    np.testing.assert_allclose(got, expected, atol=1e-15)


def test_two_way_three_clip_worked_example():
    true = np.array([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0], [1.0, -1.0, 0.0]])
    pred = np.array([[1.0, 0.0, -1.0], [1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    # All rows have mean 0 and norm sqrt(2): corr = dot / 2.
    # pred_0 = [1,0,-1]: with true_0 1, true_1 -1, true_2 0.5    -> wins 2/2      = 1
    # pred_1 = [1,-1,0]: with true_1 -0.5, true_0 0.5, true_2 1  -> loses both    = 0
    # pred_2 = [0,1,-1]: with true_2 -0.5, true_0 0.5, true_1 -0.5
    #                    -> loses to 0, ties 1                    -> 0.5 / 2      = 0.25
    c = np.corrcoef(pred, true)[:3, 3:]
    np.testing.assert_allclose(c, [[1, -1, 0.5], [0.5, -0.5, 1], [0.5, -0.5, -0.5]], atol=1e-15)
    np.testing.assert_allclose(semantic.corr_matrix(pred, true), c, atol=1e-15)
    np.testing.assert_allclose(semantic.two_way_ident(pred, true), [1.0, 0.0, 0.25])


def test_two_way_planted_signal_vs_chance():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(60, 32))
    good = semantic.two_way_ident(true + 0.5 * rng.normal(size=true.shape), true).mean()
    chance = semantic.two_way_ident(rng.normal(size=true.shape), true).mean()
    assert good > 0.95
    assert 0.35 < chance < 0.65


def test_two_way_validation():
    x = np.random.default_rng(0).normal(size=(4, 5))
    with pytest.raises(InputError, match="pred"):
        semantic.two_way_ident(x[:3], x)
    with pytest.raises(InputError, match="at least 2 clips"):
        semantic.two_way_ident(x[:1], x[:1])
    flat = x.copy()
    flat[2] = 3.0
    with pytest.raises(InputError, match="constant row"):
        semantic.two_way_ident(flat, x)


# ---------------------------------------------------------------- statistics


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    values = np.random.default_rng(5).normal(0.3, 0.1, size=40)
    low, high = stats.bootstrap_ci(values, seed=3)
    assert low < values.mean() < high
    assert (low, high) == stats.bootstrap_ci(values, seed=3)
    assert (low, high) != stats.bootstrap_ci(values, seed=4)


def test_bootstrap_ci_agrees_with_scipy():
    values = np.random.default_rng(6).normal(1.0, 2.0, size=80)
    low, high = stats.bootstrap_ci(values, n_boot=4000, seed=0)
    ref = scipy.stats.bootstrap((values,), np.mean, n_resamples=4000, method="percentile",
                                confidence_level=0.95, rng=np.random.default_rng(1))
    width = high - low
    assert abs(low - ref.confidence_interval.low) < 0.08 * width
    assert abs(high - ref.confidence_interval.high) < 0.08 * width


def test_bootstrap_ci_narrows_with_more_clips():
    rng = np.random.default_rng(7)
    small = stats.bootstrap_ci(rng.normal(size=20), seed=0)
    large = stats.bootstrap_ci(rng.normal(size=500), seed=0)
    # width ~ 1/sqrt(n): expect about sqrt(25) = 5x narrower
    assert (large[1] - large[0]) < 0.4 * (small[1] - small[0])


def test_bootstrap_ci_single_and_bad_values():
    assert stats.bootstrap_ci([0.7]) == (0.7, 0.7)
    with pytest.raises(InputError, match="NaN"):
        stats.bootstrap_ci([0.1, np.nan])
    with pytest.raises(InputError):
        stats.bootstrap_ci([])


@pytest.mark.parametrize("n", [2, 3, 5, 17, 200])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_derangement_has_no_fixed_point(n, seed):
    perm = stats.derangement(n, seed)
    assert sorted(perm.tolist()) == list(range(n))
    assert not np.any(perm == np.arange(n))
    np.testing.assert_array_equal(perm, stats.derangement(n, seed))


def test_derangement_rejects_n_below_2():
    with pytest.raises(ValueError):
        stats.derangement(1, 0)


def test_permutation_p_planted_signal():
    gt = _smooth_clips(8, n=12, t=1, h=8, w=8)
    rec = _degrade(gt, 5, 9)
    p = stats.permutation_p(pixel.pixcorr, gt, rec, n_perm=30, seed=0)
    assert p == pytest.approx(1 / 31)
    unrelated = _smooth_clips(10, n=12, t=1, h=8, w=8)
    p_null = stats.permutation_p(pixel.pixcorr, gt, unrelated, n_perm=30, seed=0)
    assert p_null > 0.05
    assert p_null == stats.permutation_p(pixel.pixcorr, gt, unrelated, n_perm=30, seed=0)
    # read as a lower-is-better metric, every shuffled pairing is "as good": p = 1
    p_low = stats.permutation_p(pixel.pixcorr, gt, rec, n_perm=30, seed=0, greater=False)
    assert p_low == pytest.approx(1.0)


# ---------------------------------------------------------------- table


def _rows():
    rng = np.random.default_rng(11)
    rows = []
    for subject in ["sub-02", "sub-01"]:
        for method in ["ridge", "full"]:
            for metric in ["psnr", "pixcorr"]:
                vals = rng.normal(size=9)
                rows.append(table.summarise(subject, method, metric, pixel.variant(metric), vals,
                                            seed=0))
    return rows


def test_summarise_row():
    vals = np.array([0.1, 0.4, 0.7, 0.2])
    row = table.summarise("sub-01", "ridge", "pixcorr", "v", vals, seed=2)
    assert list(row) == table.COLUMNS
    assert row["value"] == pytest.approx(vals.mean())
    assert row["n"] == 4
    assert (row["ci_low"], row["ci_high"]) == stats.bootstrap_ci(vals, seed=2)


def test_write_table_is_byte_identical_and_ordered(tmp_path):
    rows = _rows()
    a = table.write_table(rows, tmp_path / "a.tsv")
    b = table.write_table(list(reversed(rows)), tmp_path / "b.tsv")
    assert a.read_bytes() == b.read_bytes()
    lines = a.read_text().splitlines()
    assert lines[0].split("\t") == table.COLUMNS
    df = pd.read_csv(a, sep="\t", dtype={"subject": str})
    assert list(df.columns) == table.COLUMNS
    keys = list(zip(df.subject, df.method, df.metric, df.variant))
    assert keys == sorted(keys)
    assert all(len(f.split(".")[1]) == 6 for f in (lines[1].split("\t")[4:7]))
    back = table.read_table(a)
    np.testing.assert_allclose(sorted(back["value"]), sorted(r["value"] for r in rows), atol=5e-7)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_write_table_rejects_duplicates_and_tabs(tmp_path):
    rows = _rows()
    with pytest.raises(ValueError, match="duplicate"):
        table.write_table(rows + rows[:1], tmp_path / "d.tsv")
    bad = dict(rows[0], variant="a\tb")
    with pytest.raises(ValueError, match="tab"):
        table.write_table([bad], tmp_path / "t.tsv")
    assert not list(tmp_path.iterdir())
