"""Every metric variant against an independent computation (numpy, scikit-image, OpenCV, hand-worked cases)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage.color import rgb2hsv

from fmrivid.errors import InputError
from fmrivid.metrics import brain, classify, motion, perceptual, semantic

from clipgen import noisy, smooth_clips


def _smooth(seed, n=3, t=4, h=32, w=32):
    return smooth_clips(seed, n, t, h, w, max_freq=0.5)


def _noisy(x, sigma, seed):
    return noisy(x, sigma, seed)


# ---------------------------------------------------------------- hue


def test_hue_cos_matches_numpy_on_skimage_hsv():
    gt, rec = _smooth(0), _noisy(_smooth(0), 25, 1)
    ref = np.array([np.mean([
        (lambda a, b: a @ b / np.sqrt((a @ a) * (b @ b)))(rgb2hsv(gt[i, j])[..., 0].ravel(),
                                                         rgb2hsv(rec[i, j])[..., 0].ravel())
        for j in range(gt.shape[1])]) for i in range(gt.shape[0])])
    got = perceptual.hue_cos(gt, rec)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert np.all(got < 1)
    np.testing.assert_allclose(perceptual.hue_cos(gt, gt), 1.0, atol=1e-12)
    grey = np.full((1, 2, 8, 8, 3), 90, np.uint8)  # zero hue everywhere: identical -> 1, else 0
    np.testing.assert_array_equal(perceptual.hue_cos(grey, grey), [1.0])
    np.testing.assert_array_equal(perceptual.hue_cos(grey, gt[:1, :2, :8, :8]), [0.0])


# ---------------------------------------------------------------- motion


def _moving_square(shift, t=4, size=40):
    clip = np.zeros((t, size, size, 3), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(t):
        x0 = 12 + shift * k
        blob = np.exp(-(((xx - x0 - 4) ** 2 + (yy - 18) ** 2) / 30.0))
        clip[k] = (255 * blob)[..., None].astype(np.uint8)
    return clip


def test_epe_farneback_matches_direct_opencv_and_orders_motion():
    gt = np.stack([_moving_square(2)])
    same = np.stack([_moving_square(2)])
    opposite = np.stack([_moving_square(-2)])
    still = np.stack([_moving_square(0)])
    assert motion.epe_farneback(gt, same)[0] == 0.0
    # independent computation: cv2 directly, numpy norm
    g = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in gt[0]]
    r = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in opposite[0]]
    ref = np.mean([np.linalg.norm(cv2.calcOpticalFlowFarneback(g[k], g[k + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
                                  - cv2.calcOpticalFlowFarneback(r[k], r[k + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0),
                                  axis=-1).mean() for k in range(3)])
    np.testing.assert_allclose(motion.epe_farneback(gt, opposite), [ref], rtol=1e-6)  # float32 reference
    # the flow sees the planted motion: opposite motion is worse than no motion, which is worse than none
    assert motion.epe_farneback(gt, opposite)[0] > motion.epe_farneback(gt, still)[0] > 0.0
    with pytest.raises(InputError, match="at least 2 frames"):
        motion.epe_farneback(gt[:, :1], gt[:, :1])


# ---------------------------------------------------------------- LPIPS


def test_lpips_missing_weights_say_why(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    for name in ("lpips_alex", "lpips_vgg"):
        reason = perceptual.lpips_status(name)
        assert reason.startswith("not computed") and str(tmp_path / "checkpoints") in reason
        with pytest.raises(InputError, match="never downloads"):
            perceptual.LPIPS(name)


def test_lpips_random_backbone_matches_lpips_package():
    # ImageNet backbone weights cannot be downloaded here: a *random* AlexNet backbone
    # (pnet_rand=True) exercises the code path; its numbers are not LPIPS.
    import lpips
    import torch

    gt, rec = _smooth(2, n=2, t=2), _noisy(_smooth(2, n=2, t=2), 30, 3)
    scorer = perceptual.LPIPS("lpips_alex", random_backbone=True)
    got = scorer(gt, rec)
    np.testing.assert_allclose(scorer(gt, gt), 0.0, atol=1e-7)
    assert np.all(got > 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ref_model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    x = torch.from_numpy(gt.reshape(-1, 32, 32, 3)).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(rec.reshape(-1, 32, 32, 3)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        ref = ref_model(x, y).reshape(2, 2).double().numpy().mean(axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


# ---------------------------------------------------------------- CLIP temporal metrics


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_clip_pcc_variants_match_numpy():
    rng = np.random.default_rng(4)
    rec = rng.normal(size=(3, 5, 8))
    gt = rec + rng.normal(0, [[[0.1]], [[0.1]], [[5.0]]], size=(3, 5, 8))  # clip 2: far from its GT
    score = semantic.clip_video_score(gt, rec)
    ref_score = [_unit(gt[i].mean(0)) @ _unit(rec[i].mean(0)) for i in range(3)]
    np.testing.assert_allclose(score, ref_score, atol=1e-12)
    assert score[0] > 0.6 and score[2] <= 0.6
    adj_ref = [np.mean([_unit(rec[i, k]) @ _unit(rec[i, k + 1]) for k in range(4)]) for i in range(3)]
    got = semantic.clip_pcc_adjacent(rec, score)
    np.testing.assert_allclose(got[:2], adj_ref[:2], atol=1e-12)
    assert got[2] == 0.0  # gated
    allp = [np.mean([_unit(rec[i, a]) @ _unit(rec[i, b]) for a in range(5) for b in range(5) if a != b])
            for i in range(3)]
    np.testing.assert_allclose(semantic.clip_pcc_allpairs(rec), allp, atol=1e-12)
    still = np.repeat(rec[:, :1], 5, axis=1)  # identical frames: perfect consistency
    np.testing.assert_allclose(semantic.clip_pcc_allpairs(still), 1.0, atol=1e-12)
    np.testing.assert_allclose(semantic.clip_pcc_adjacent(still, np.ones(3)), 1.0, atol=1e-12)
    np.testing.assert_allclose(semantic.clip_video_score(rec, rec), 1.0, atol=1e-12)


# ---------------------------------------------------------------- N-way (MinD-Video protocol)


def _probs(order_high_to_low, c):
    """Probabilities whose ranking is the given class order (the rest below, by index)."""
    rest = [k for k in range(c) if k not in order_high_to_low]
    ranking = list(order_high_to_low) + rest
    p = np.empty(c)
    p[ranking] = np.linspace(1.0, 0.01, c)
    return p / p.sum()


def test_nway_top3_rule_hand_worked():
    c = 12
    p_gt = _probs([0, 1, 2], c)            # GT classes: {0, 1, 2}; strict: {0}
    p_rec = _probs([2, 5, 6, 7], c)        # class 2 beats everything; class 0 is below 4..11 -> lowest?
    p_rec = p_rec.copy()
    p_rec[0] = 0.0                          # class 0 is the least likely class of all
    pg, pr = p_gt[None], p_rec[None]
    # top-3: one GT class (2) is the most likely class: every trial is correct
    np.testing.assert_array_equal(classify.nway_topk(pg, pr, n_way=2, n_gt=3), [1.0])
    np.testing.assert_array_equal(classify.nway_topk(pg, pr, n_way=9, n_gt=3), [1.0])
    # strict top-1: class 0 loses against every distractor: every trial is wrong
    np.testing.assert_array_equal(classify.nway_topk(pg, pr, n_way=2, n_gt=1), [0.0])
    # identical inputs: perfect
    np.testing.assert_array_equal(classify.nway_topk(pg, pg, n_way=9, n_gt=3), [1.0])
    np.testing.assert_array_equal(classify.nway_topk(pg, pg, n_way=2, n_gt=1), [1.0])


def test_nway_top3_excludes_gt_classes_from_distractors():
    # 5 classes, top-3 GT {0,1,2}: 3-way trials must pick both distractors from {3, 4}.
    c = 5
    p_gt = _probs([0, 1, 2, 3, 4], c)
    p_rec = _probs([3, 0, 4, 1, 2], c)   # class 3 beats every GT class, 4 does not beat class 0
    # every trial contains class 3 -> always wrong; if GT classes could be drawn it would not matter,
    # but drawing from 5 - 3 = 2 classes leaves no choice: both 3 and 4 every time
    np.testing.assert_array_equal(classify.nway_topk(p_gt[None], p_rec[None], n_way=3, n_gt=3), [0.0])
    # 2-way: half the trials draw class 3 (wrong), half class 4 (right)
    acc = classify.nway_topk(p_gt[None], p_rec[None], n_way=2, trials=2000, n_gt=3)[0]
    assert abs(acc - 0.5) < 4 * math.sqrt(0.25 / 2000)
    with pytest.raises(InputError, match="classes"):
        classify.nway_topk(p_gt[None], p_rec[None], n_way=4, n_gt=3)


def test_nway_50way_rate_matches_hypergeometric():
    # 60 classes, top-3 GT; exactly m = 1 pool class beats the best GT class in the reconstruction:
    # a trial is right iff that class is not among the 49 distractors drawn from 57: P = 8/57.
    c, m = 60, 1
    p_gt = _probs([0, 1, 2], c)
    p_rec = _probs([10, 1], c)
    expected = math.comb(57 - m, 49) / math.comb(57, 49)
    acc = classify.nway_topk(np.repeat(p_gt[None], 40, 0), np.repeat(p_rec[None], 40, 0), n_way=50,
                             trials=100, n_gt=3, seed=3)
    se = math.sqrt(expected * (1 - expected) / acc.size / 100)
    assert abs(acc.mean() - expected) < 4 * se
    # seeded: the same seed gives the same draws, another seed others
    again = classify.nway_topk(np.repeat(p_gt[None], 40, 0), np.repeat(p_rec[None], 40, 0), 50, 100, 3, seed=3)
    np.testing.assert_array_equal(acc, again)


def test_nway_vectorised_equals_per_trial_reference():
    rng = np.random.default_rng(0)
    pg, pr = rng.dirichlet(np.ones(80), size=(6, 3)), rng.dirichlet(np.ones(80), size=(6, 3))
    perm = rng.permutation(6)
    for n_way, n_gt in ((2, 3), (50, 3), (2, 1), (50, 1)):
        pos = classify.draw_positions(6, 3, 80, n_way, n_gt, 100, 0)
        got = classify.nway_topk(pg, pr, n_way, n_gt=n_gt, pairing=perm, positions=pos)
        ref = [np.mean([classify.nway_clip(pg[perm[i], f], pr[i, f], pos[i, f], n_gt) for f in range(3)])
               for i in range(6)]
        np.testing.assert_allclose(got, ref, atol=1e-12)


def test_classifiers_through_models_load():
    from fmrivid import models

    clips = _smooth(5, n=2, t=4, h=24, w=24)
    img = models.load("tiny", "image_classifier", seed=0)
    vid = models.load("tiny", "video_classifier", seed=0)
    p_img = classify.image_class_probs(img, clips)
    p_vid = classify.video_class_probs(vid, clips)
    assert p_img.shape == (2, 4, 1000) and p_vid.shape == (2, 400)
    np.testing.assert_allclose(p_img.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p_vid.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(classify.nway_topk(p_img, p_img, 50), [1.0, 1.0])
    np.testing.assert_array_equal(classify.nway_topk(p_vid, p_vid, 50, n_gt=1), [1.0, 1.0])
    np.testing.assert_array_equal(classify.sample_indices(4, 16)[[0, -1]], [0, 3])


# ---------------------------------------------------------------- retrieval


def test_retrieval_topk_hand_worked():
    true = np.eye(4)
    # pred 0 -> true 0 best; pred 1 -> closest to true 2, then true 1; pred 2 -> true 2;
    # pred 3 -> true 3 is the least similar of all four
    pred = np.array([[1, 0.1, 0, 0], [0, 0.5, 1, 0], [0, 0, 1, 0], [0.5, 0.6, 0.7, 0.1]])
    np.testing.assert_array_equal(semantic.retrieval_topk(pred, true, 1), [1, 0, 1, 0])
    np.testing.assert_array_equal(semantic.retrieval_topk(pred, true, 2), [1, 1, 1, 0])
    np.testing.assert_array_equal(semantic.retrieval_topk(pred, true, 4), [1, 1, 1, 1])
    np.testing.assert_array_equal(semantic.retrieval_topk(true, true, 1), [1, 1, 1, 1])


def test_retrieval_nway_top1_caps_n_and_counts_subsets():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(20, 6))
    vals, n = semantic.retrieval_nway_top1(true, true, n_way=300, n_subsets=30, seed=0)
    assert n == 20 and vals.shape == (30,)
    np.testing.assert_array_equal(vals, 1.0)
    # noisy predictions; reference: brute-force argmax of cosine within each subset
    pred = true + rng.normal(0, 1.2, size=true.shape)
    vals, n = semantic.retrieval_nway_top1(pred, true, n_way=5, n_subsets=200, seed=0)
    assert n == 5
    rng2 = np.random.default_rng(0)
    cos = _unit(pred) @ _unit(true).T
    ref = []
    for _ in range(200):
        idx = np.sort(rng2.choice(20, 5, replace=False))
        ref.append(np.mean([idx[np.argmax(cos[i, idx])] == i for i in idx]))
    np.testing.assert_allclose(vals, ref)
    assert 0.2 < np.mean(vals) < 1.0  # above chance (1/5), below perfect


def test_retrieval_large_gallery_and_backward_direction():
    rng = np.random.default_rng(2)
    true = rng.normal(size=(10, 6))
    pred = true + rng.normal(0, 0.6, size=true.shape)
    small = semantic.retrieval_topk(pred, true, 2)
    # a distractor that is each decoded embedding itself beats every true clip: top-1 fails everywhere
    assert semantic.retrieval_topk(pred, true, 1, distractors=pred).sum() == 0
    # unrelated distractors can only push ranks down: hits are a subset of the small gallery's
    big = semantic.retrieval_topk(pred, true, 2, distractors=rng.normal(size=(200, 6)))
    assert np.all(big <= small) and big.sum() < small.sum()
    # brute force: rank among test + distractors
    d = rng.normal(size=(30, 6))
    cos = _unit(pred) @ _unit(np.vstack([true, d])).T
    ref = [float((np.delete(cos[i], i) > cos[i, i]).sum() < 3) for i in range(10)]
    np.testing.assert_array_equal(semantic.retrieval_topk(pred, true, 3, distractors=d), ref)
    # backward: the transposed problem, by brute force within each subset
    vals, n = semantic.retrieval_nway_top1(pred, true, n_way=4, n_subsets=50, seed=1, backward=True)
    rng2 = np.random.default_rng(1)
    c = _unit(pred) @ _unit(true).T
    ref = []
    for _ in range(50):
        idx = np.sort(rng2.choice(10, 4, replace=False))
        ref.append(np.mean([idx[np.argmax(c[idx, j])] == j for j in idx]))
    np.testing.assert_allclose(vals, ref)
    fwd, _ = semantic.retrieval_nway_top1(pred, true, n_way=4, n_subsets=50, seed=1)
    assert not np.array_equal(fwd, vals)


# ---------------------------------------------------------------- brain metrics


def test_voxel_r_matches_numpy():
    rng = np.random.default_rng(2)
    meas = rng.normal(size=(30, 7))
    pred = meas + rng.normal(0, 1.0, size=(30, 7))
    ref = [np.corrcoef(pred[:, v], meas[:, v])[0, 1] for v in range(7)]
    np.testing.assert_allclose(brain.voxel_r(pred, meas), ref, atol=1e-12)
    np.testing.assert_allclose(brain.voxel_r(meas, meas), 1.0, atol=1e-12)


def test_isc_fsc_match_numpy_after_voxel_alignment():
    rng = np.random.default_rng(3)
    shared = rng.normal(size=(10, 6))           # clip x common-voxel signal
    ijk = np.array([[i, 0, 0] for i in range(6)])
    subs = {}
    for s, extra in (("01", 2), ("02", 0), ("03", 1)):
        X = shared + rng.normal(0, 0.5, size=shared.shape)
        # each subject keeps extra voxels and stores voxels and clips in its own order
        vox_order = rng.permutation(6)
        Xs = np.hstack([X[:, vox_order], rng.normal(size=(10, extra))])
        ijks = np.vstack([ijk[vox_order], np.array([[50 + k, 1, 1] for k in range(extra)], int).reshape(-1, 3)])
        clip_order = rng.permutation(10)
        subs[s] = {"X": Xs[clip_order], "ijk": ijks, "affine": np.eye(4),
                   "ids": [f"c{k}" for k in clip_order], "_X": X}
    aligned = brain.common_voxels(subs)
    for s in subs:
        # clips in sub-01's order, voxels sorted by ijk
        order = [int(c[1:]) for c in subs["01"]["ids"]]
        np.testing.assert_allclose(aligned[s], subs[s]["_X"][order], atol=1e-12)
    isc, fsc = brain.isc(aligned), brain.fsc(aligned)
    for s in subs:
        others = np.mean([aligned[o] for o in subs if o != s], axis=0)
        np.testing.assert_allclose(isc[s], [np.corrcoef(aligned[s][:, v], others[:, v])[0, 1] for v in range(6)],
                                   atol=1e-12)
        np.testing.assert_allclose(fsc[s], [np.corrcoef(aligned[s][i], others[i])[0, 1] for i in range(10)],
                                   atol=1e-12)
        assert isc[s].mean() > 0.5  # planted shared signal
    pairs = brain.fsc_pairwise(aligned)  # GLFA's r(s_i, s_j): subject against subject, not against the mean
    assert sorted(pairs) == [("01", "02"), ("01", "03"), ("02", "03")]
    np.testing.assert_allclose(pairs[("01", "03")], [np.corrcoef(aligned["01"][i], aligned["03"][i])[0, 1]
                                                     for i in range(10)], atol=1e-12)
    assert pairs[("01", "02")].mean() < fsc["01"].mean()  # the mean of two noisy subjects is the cleaner pattern
    bad = dict(subs["02"], affine=np.eye(4) * 2)
    with pytest.raises(InputError, match="affine"):
        brain.common_voxels({"01": subs["01"], "02": bad})


def test_isc_on_cifti_grayordinates():
    """CIFTI subjects: cortical vertices all have ijk (-1,-1,-1); the grayordinate index keys the common set."""
    rng = np.random.default_rng(4)
    shared = rng.normal(size=(12, 8))
    subs = {}
    for s, kept in (("1", [3, 10, 11, 40, 41, 42, 90, 91, 500]), ("2", [10, 11, 40, 41, 42, 90, 91, 7])):
        common = [g for g in kept if g in {10, 11, 40, 41, 42, 90, 91}]
        cols = [shared[:, common.index(g)] + rng.normal(0, 0.3, 12) if g in common else rng.normal(size=12)
                for g in kept]
        subs[s] = {"X": np.column_stack(cols), "ijk": np.full((len(kept), 3), -1), "affine": np.eye(4),
                   "ids": [f"c{k}" for k in range(12)], "grayordinate": np.array(kept)}
    aligned = brain.common_voxels(subs)
    assert aligned["1"].shape == (12, 7) and aligned["2"].shape == (12, 7)  # not collapsed to one "voxel"
    assert brain.isc(aligned)["1"].mean() > 0.8
    with pytest.raises(InputError, match="same space"):
        brain.common_voxels({"1": subs["1"], "2": {**subs["2"], "grayordinate": None}})
