"""Statistics (permutation p, Wilcoxon), tables (per-clip, summaries, published CC2017), the suite, qualitative."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fmrivid.errors import InputError
from fmrivid.metrics import pixel, stats, suite, table
from fmrivid.report import qualitative, tables

from clipgen import noisy, smooth_clips


def _clips(seed, n=10, t=3, h=16, w=16):
    return smooth_clips(seed, n, t, h, w)


def _noisy(x, sigma, seed):
    return noisy(x, sigma, seed)


CFG = {"n_boot": 200, "n_perm": 50, "ssim_size": None, "clip_gate": 0.6, "nway": [2, 50], "nway_trials": 100,
       "nway_gt": 3, "retrieval_topk": [2, 5], "retrieval_nway": 300, "retrieval_subsets": 10}


# ---------------------------------------------------------------- permutation p


def test_pair_cache_computes_each_pair_once_and_agrees_with_permutation_p():
    gt = _clips(0)
    rec = _noisy(gt, 20, 1)
    calls = []

    def pair_fn(ri, gi):
        calls.append(len(ri))
        return pixel.pixcorr(gt[gi], rec[ri])

    cache = stats.PairCache(pair_fn)
    p = stats.permutation_p_values(cache, 10, n_perm=60, seed=0)
    assert sum(calls) <= 100  # at most N*N distinct pairs, although 61 pairings were asked
    assert p == stats.permutation_p(pixel.pixcorr, gt, rec, n_perm=60, seed=0) == pytest.approx(1 / 61)
    unrelated = _clips(5)
    p_null = stats.permutation_p_values(stats.PairCache(lambda ri, gi: pixel.pixcorr(gt[gi], unrelated[ri])), 10,
                                        n_perm=60, seed=0)
    assert p_null > 0.05


def test_paired_wilcoxon_is_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.1, 30)
    b = a - 0.05 + rng.normal(0, 0.05, 30)
    res = stats.paired_wilcoxon(a, b)
    ref = scipy.stats.wilcoxon(a, b)
    assert res["p"] == ref.pvalue and res["statistic"] == ref.statistic
    assert res["median_diff"] == pytest.approx(np.median(a - b)) and res["p"] < 0.01
    assert stats.paired_wilcoxon(a, a)["p"] == 1.0
    with pytest.raises(InputError):
        stats.paired_wilcoxon(a, a[:5])


def test_bootstrap_median():
    v = np.array([0.0, 0.0, 1.0, 5.0, 9.0])
    lo, hi = stats.bootstrap_ci(v, stat="median", seed=0)
    assert lo <= 1.0 <= hi
    row = table.summarise("01", "m", "voxel_r", "v", v, seed=0, stat="median")
    assert row["value"] == 1.0


# ---------------------------------------------------------------- the suite


def test_suite_identical_inputs_give_perfect_values_and_p_columns():
    gt = _clips(2)
    rows, clips = suite.evaluate_videos(gt, gt.copy(), [f"c{i}" for i in range(10)], "01", "m", CFG, 0,
                                        log=lambda *_: None)
    got = {r["metric"]: r for r in rows if r["method"] == "m"}
    assert got["ssim_rgb_uniform"]["value"] == pytest.approx(1.0)
    assert got["ssim_gray_gaussian"]["value"] == pytest.approx(1.0)
    assert got["pixcorr"]["value"] == pytest.approx(1.0)
    assert got["psnr"]["value"] == pixel.PSNR_CAP_DB
    assert got["hue_cos"]["value"] == pytest.approx(1.0)
    assert got["epe_farneback"]["value"] == 0.0
    for r in got.values():
        assert r["p"] == pytest.approx(1 / 51)  # every shuffled pairing is worse
    assert {r["method"] for r in rows} == {"m", "shuffled_gt"}
    assert len(clips) == 2 * 10 * len(got)


def test_suite_features_planted_and_perfect():
    rng = np.random.default_rng(3)
    true = rng.normal(size=(12, 8))
    ids = [f"c{i}" for i in range(12)]
    rows, _ = suite.evaluate_features(true, true, ids, "01", "image", CFG, 0, log=lambda *_: None)
    got = {(r["method"], r["metric"], r["variant"].split(" ")[0]): r for r in rows}
    assert got[("ridge_image", "two_way_ident", "2-way")]["value"] == 1.0
    assert got[("ridge_image", "retrieval_topk", "top-2")]["value"] == 1.0
    nway = [r for r in rows if r["metric"] == "retrieval_nway_top1" and r["method"] == "ridge_image"][0]
    assert nway["value"] == 1.0 and nway["n"] == 10 and nway["variant"].startswith("12-way")
    back = [r for r in rows if r["metric"] == "retrieval_backward_nway_top1" and r["method"] == "ridge_image"][0]
    assert back["value"] == 1.0 and "backward" in back["variant"]
    assert not any(r["metric"] == "retrieval_large_topk" for r in rows)  # no distractors given
    pred = true + 0.1 * rng.normal(size=true.shape)  # decoded embeddings: each distractor is one of them
    rows, _ = suite.evaluate_features(pred, true, ids, "01", "image", {**CFG, "retrieval_large_topk": [1]}, 0,
                                      log=lambda *_: None, distractors=pred)
    large = [r for r in rows if r["metric"] == "retrieval_large_topk" and r["method"] == "ridge_image"][0]
    small = [r for r in rows if r["metric"] == "retrieval_topk" and r["method"] == "ridge_image"][0]
    assert "N=12 test clips plus 12 other clips" in large["variant"] and large["value"] == 0 < small["value"]
    noise, _ = suite.evaluate_features(rng.normal(size=(12, 8)), true, ids, "01", "image", CFG, 0,
                                       log=lambda *_: None)
    two = [r for r in noise if r["metric"] == "two_way_ident" and r["method"] == "ridge_image"][0]
    assert two["p"] > 0.05


def test_suite_missing_lpips_row_says_why(tmp_path):
    gt = _clips(4, n=3)
    reason = "not computed: test reason"
    rows, _ = suite.evaluate_videos(gt, gt, ["a", "b", "c"], "01", "m", dict(CFG, n_perm=5), 0,
                                    models={"lpips": {"lpips_alex": reason}}, log=lambda *_: None)
    row = [r for r in rows if r["metric"] == "lpips_alex"][0]
    assert np.isnan(row["value"]) and reason in row["variant"] and row["n"] == 0
    path = table.write_table(rows, tmp_path / "t.tsv")
    line = [ln for ln in path.read_text().splitlines() if "lpips_alex" in ln][0]
    assert line.split("\t")[4:] == ["nan", "nan", "nan", "0", "nan"]


# ---------------------------------------------------------------- tables


def _clip_table():
    rows = []
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.1, 20)
    for sub in ("01", "02"):
        rows += table.clip_rows(sub, "fusion", "ssim", "v", [f"c{i:02d}" for i in range(20)], base + 0.05)
        rows += table.clip_rows(sub, "fmri_only", "ssim", "v", [f"c{i:02d}" for i in range(19, -1, -1)],
                                base[::-1] + rng.normal(0, 0.01, 20))
    return rows


def test_wilcoxon_table_pairs_clips_by_id(tmp_path):
    path = table.write_clip_table(_clip_table(), tmp_path / "c.tsv")
    clips = table.read_clip_table(path)
    w = table.wilcoxon_table(clips, "fusion", "fmri_only")
    assert list(w.columns) == table.WILCOXON_COLUMNS and len(w) == 2
    assert (w["p"] < 0.001).all() and (w["median_diff"] > 0.03).all()
    with pytest.raises(InputError, match="evaluate.compare"):
        table.wilcoxon_table(clips, "fusion", "nope")


def test_summaries_and_published_comparison():
    rows = []
    for sub, v in (("1", 0.80), ("2", 0.90), ("3", 0.85)):
        var = "N-way top-1 with the top-3 GT classes (MinD-Video's rule): video level (x); 100 trials; N=2; c"
        rows.append(dict(table.summarise(sub, "demo", "nway_topk", var, [v, v], 0), p=0.01))
        rows.append(table.summarise(sub, "demo", "ssim_rgb_uniform", "w", [0.3, 0.3], 0))
    long = pd.DataFrame(rows)
    wide = table.wide_summary(long)
    assert list(wide["subject"]) == ["1", "2", "3"] and wide.shape[1] == 4
    means = table.subject_mean(long)
    nway = means[means.metric == "nway_topk"].iloc[0]
    assert nway["value"] == pytest.approx(0.85) and nway["n_subjects"] == 3
    comp = tables.published_comparison(means, "demo")
    mind = comp[(comp.system == "MinD-Video") & (comp.quantity == "video 2-way")].iloc[0]
    assert mind["published"] == "0.839" and mind["fmrivid_value"] == pytest.approx(0.85)
    assert "NeurIPS 2023" in mind["source"]
    ssim = comp[(comp.system == "GLFA / fMRI-PTE-V") & (comp.quantity == "SSIM")].iloc[0]
    assert ssim["published"] == "0.176-0.193" and ssim["fmrivid_value"] == pytest.approx(0.3)
    fifty = comp[comp.quantity == "video 50-way"]
    assert fifty["fmrivid_value"].isna().all()  # no 50-way row computed
    pub = tables.read_published()
    assert set(pub.system) >= {"MinD-Video", "Mind-Animator", "NeuroClips", "NEURONS", "GLFA / fMRI-PTE-V"}
    assert (pub.source != "").all()


# ---------------------------------------------------------------- qualitative protocol


def test_timeline_mosaic_rows_are_gt_then_methods():
    gt = _clips(6, n=1, t=10, h=8, w=8)[0]
    recs = {"a": _clips(7, n=1, t=10, h=8, w=8)[0], "b": _clips(8, n=1, t=10, h=8, w=8)[0]}
    mosaic, f = qualitative.timeline_mosaic(gt, recs, n_frames=4)
    idx = qualitative.uniform_indices(10, 4)
    np.testing.assert_array_equal(idx, [0, 3, 6, 9])
    assert f == 4  # 96 // 8 = 12, capped at 4
    for r, clip in enumerate([gt, recs["a"], recs["b"]]):
        for c, t in enumerate(idx):
            y, x = r * (8 * f + 2), c * (8 * f + 2)
            np.testing.assert_array_equal(mosaic[y:y + 8 * f:f, x:x + 8 * f:f], clip[t])
    with pytest.raises(InputError):
        qualitative.timeline_mosaic(gt, {"a": gt[:3]})


def test_timeline_png(tmp_path):
    from PIL import Image

    gt = _clips(6, n=1, t=6, h=8, w=8)[0]
    out = qualitative.timeline(gt, {"demo": gt}, tmp_path / "c.png", "clip0", n_frames=3, fps=4)
    assert Image.open(out).size[0] > 3 * 8


def test_annotation_template_and_preference_rates(tmp_path):
    path = qualitative.annotation_template({"02": ["c1", "c2"], "01": ["c1", "c2"]}, "fusion", "fmri", tmp_path / "t.csv")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(df.columns) == qualitative.TEMPLATE_COLUMNS and list(df.subject) == ["01", "01", "02", "02"]
    empty = qualitative.preference_rates(qualitative.read_annotations(path))
    assert empty.empty
    df.loc[:, "preference"] = ["fusion", "fusion", "fmri", "tie"]
    df.loc[:2, "motion_alignment"] = ["fusion", "fusion", "fusion"]
    df.to_csv(tmp_path / "filled.csv", index=False)
    rates = qualitative.write_preference_rates(tmp_path / "filled.csv", tmp_path / "r.tsv")
    pref = rates.set_index("criterion").loc["preference"]
    assert (pref["n"], pref["a_preferred"], pref["b_preferred"], pref["ties"]) == (4, 2, 1, 1)
    assert pref["rate_a"] == 0.5 and pref["binom_p"] == pytest.approx(scipy.stats.binomtest(2, 3).pvalue)
    motion = rates.set_index("criterion").loc["motion_alignment"]
    assert (motion["n"], motion["rate_a"]) == (3, 1.0)
    assert np.isnan(rates.set_index("criterion").loc["object_coherence", "rate_a"])
    df.loc[0, "preference"] = "fusoin"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="row 2, column 'preference'"):
        qualitative.read_annotations(tmp_path / "bad.csv")


def test_metrics_refuse_frames_not_stored_losslessly(tmp_path):
    from fmrivid.io.h5 import read_features, write_features

    clips = _clips(9, n=2)
    write_features(tmp_path / "ok.h5", ["a", "b"], clips, {"storage": "lossless uint8"})
    write_features(tmp_path / "gif.h5", ["a", "b"], clips, {"storage": "decoded from GIF"})
    suite.check_lossless(tmp_path / "ok.h5", read_features(tmp_path / "ok.h5")[2])
    with pytest.raises(InputError, match="gif.h5.*lossless.*GIF/MP4"):
        suite.check_lossless(tmp_path / "gif.h5", read_features(tmp_path / "gif.h5")[2])
    with pytest.raises(InputError, match="uint8"):
        pixel.psnr(clips.astype(np.float32), clips.astype(np.float32))


def test_generation_variants_are_the_evaluated_methods():
    from fmrivid.metrics.stages import compare_pair, eval_methods

    cfg = {"evaluate": {"methods": [], "compare": []},
           "generate": {"method": "structure_motion", "shuffled_control": True,
                        "variants": {"fusion": {"frames": "fusion"}, "fmri_only": {"frames": "fusion:fmri_only"}}}}
    assert eval_methods(cfg) == ["fusion", "fmri_only", "fusion_shuffled"]
    cfg["evaluate"]["methods"] = ["fmri_only", "fusion"]  # the listed order decides the main method
    assert eval_methods(cfg)[0] == "fmri_only" and eval_methods(cfg)[-1] == "fmri_only_shuffled"
    cfg["evaluate"]["methods"] = []
    assert compare_pair(cfg) == ["fusion", "shuffled_gt"]
    cfg["generate"]["variants"] = {}
    assert eval_methods(cfg) == ["structure_motion", "structure_motion_shuffled"]


def test_large_gallery_published_retrieval_is_paired_with_our_large_gallery_row_only():
    means = pd.DataFrame([
        {"method": "m", "metric": "retrieval_topk", "variant": "top-10 of the N=1200 test clips", "value": 0.4,
         "sd": 0.01, "n_subjects": 3},
        {"method": "m", "metric": "retrieval_large_topk", "variant": "top-10 of a large gallery", "value": 0.05,
         "sd": 0.01, "n_subjects": 3}])
    comp = tables.published_comparison(means, "m")
    row = comp[comp.metric == "retrieval_large_top10"].iloc[0]
    assert row["system"] == "Mind-Animator" and row["fmrivid_value"] == pytest.approx(0.05)
    only_small = tables.published_comparison(means.iloc[:1], "m")
    assert np.isnan(only_small[only_small.metric == "retrieval_large_top10"].iloc[0]["fmrivid_value"])
