"""Each evaluation protocol equals a re-implementation of the paper's own function, written here from the
paper's evaluation code (quirks included), on fixed inputs; and the quirks really change the numbers."""

import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity
from torchvision import transforms

from fmrivid.config import load_schema
from fmrivid.errors import ConfigError
from fmrivid.metrics import pixel, protocols, suite, table
from fmrivid.report import tables


def clips(seed, n, t, size):
    """Smooth colourful clips with a planted relation between the two sets (not identical)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, t, size, size, 3), np.uint8)
    for i in range(n):
        for j in range(t):
            ph = rng.uniform(0, 6, 3)
            img = np.stack([np.sin(6 * xx + ph[c] + j) * np.cos(4 * yy - ph[c]) for c in range(3)], -1)
            out[i, j] = np.clip(127 + 100 * img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def pair():
    gt = clips(0, 3, 2, 64)
    rec = np.clip(gt.astype(int) + np.random.default_rng(1).normal(0, 40, gt.shape), 0, 255).astype(np.uint8)
    rec[2] = clips(5, 1, 2, 64)[0]  # one unrelated reconstruction
    return gt, rec


def rows_of(gt, rec, name):
    return {pm.name: (pm, fn, vals) for proto, pm, fn, vals in protocols.protocol_rows(["fmrivid", name], gt, rec)}


# ------------------------------------------------------------------ the papers' functions, re-implemented
def mind_animator_script(pred_list, gt_list, frame_num):
    """Mind-Animator's metric script: per clip, mean over frames of SSIM / PSNR / hue similarity."""
    def psnr(img1, img2):
        mse = np.mean((img1 / 1.0 - img2 / 1.0) ** 2)
        if mse < 1e-10:
            return 100
        return 20 * math.log10(255 / math.sqrt(mse))

    def hue(img1, img2):
        h1 = cv2.cvtColor(img1, cv2.COLOR_BGR2HSV)[:, :, 0] / 360.0
        h2 = cv2.cvtColor(img2, cv2.COLOR_BGR2HSV)[:, :, 0] / 360.0
        return np.sum(h1 * h2) / (np.sqrt(np.sum(h1 ** 2)) * np.sqrt(np.sum(h2 ** 2)))

    out = {"ssim": [], "psnr": [], "hue_pcc": []}
    for i in range(len(pred_list)):
        out["ssim"].append(np.mean([structural_similarity(pred_list[i, j], gt_list[i, j], data_range=255,
                                                          channel_axis=-1) for j in range(frame_num)]))
        out["psnr"].append(np.mean([psnr(pred_list[i, j], gt_list[i, j]) for j in range(frame_num)]))
        out["hue_pcc"].append(np.mean([hue(pred_list[i, j], gt_list[i, j]) for j in range(frame_num)]))
    return out


def mind_animator_epe(gt_ndarray, recons_ndarray):
    """Mind-Animator's EPE.py (calculate_epe_ae): GT frames cv2-resized to 512, Farneback flow of BGR2GRAY frames,
    per clip the mean end-point error."""
    def flows(frames):
        out = []
        for i in range(frames.shape[0] - 1):
            prev = cv2.cvtColor(frames[i], cv2.COLOR_BGR2GRAY)
            nxt = cv2.cvtColor(frames[i + 1], cv2.COLOR_BGR2GRAY)
            out.append(cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0))
        return out

    per_clip = []
    for i in range(gt_ndarray.shape[0]):
        gt = np.array([cv2.resize(f, (512, 512)) for f in gt_ndarray[i]])
        epe = np.linalg.norm(np.array(flows(gt)) - np.array(flows(recons_ndarray[i])), axis=-1)
        per_clip.append(np.mean(epe))
    return per_clip


def brain_diffuser_script(gen_frame, gt_frame):
    """Brain-Diffuser's evaluate_reconstruction.py for one image (scikit-image 0.17's multichannel=True is
    channel_axis=-1 in today's API)."""
    gen = np.array(Image.fromarray(gen_frame).resize((425, 425))) / 255.0
    gt = np.array(Image.fromarray(gt_frame).resize((425, 425))) / 255.0
    pixcorr = np.corrcoef(gt.reshape(1, -1), gen.reshape(1, -1))[0, 1]
    ssim = structural_similarity(rgb2gray(gen), rgb2gray(gt), channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0)
    return pixcorr, ssim


def mindeye_script(images, recons):
    """MindEye's reconstruction metrics: torchvision Resize(425, bilinear) then PixCorr and grey 2-D SSIM."""
    preprocess = transforms.Compose([transforms.Resize(425, interpolation=transforms.InterpolationMode.BILINEAR,
                                                       antialias=False)])
    im = preprocess(images)
    rc = preprocess(recons)
    flat_i, flat_r = im.reshape(len(im), -1).numpy(), rc.reshape(len(rc), -1).numpy()
    pixcorr = [np.corrcoef(flat_i[i], flat_r[i])[0][1] for i in range(len(im))]
    gi, gr = rgb2gray(im.permute(0, 2, 3, 1).numpy()), rgb2gray(rc.permute(0, 2, 3, 1).numpy())
    ssim = [structural_similarity(r, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                  data_range=1.0) for g, r in zip(gi, gr)]
    return pixcorr, ssim


# ------------------------------------------------------------------ tests
def test_mind_animator_protocol_equals_its_script():
    gt, rec = clips(2, 2, 2, 512), clips(3, 2, 2, 512)
    rec[1, 1] = gt[1, 1]  # identical frame: the script's PSNR gives 100
    rec[0, 0, ..., 0] = np.clip(gt[0, 0, ..., 0].astype(int) + 1, 0, 255)  # tiny difference: PSNR ~ 50
    rows = rows_of(gt, rec, "mind_animator")
    ref = mind_animator_script(rec, gt, 2)
    for name in ("ssim", "psnr", "hue_pcc"):
        np.testing.assert_allclose(rows[name][2], ref[name], rtol=1e-12, atol=1e-12, err_msg=name)
    # the quirks change the numbers: hue of BGR-read RGB frames vs the skimage RGB hue, PSNR's cap
    from fmrivid.metrics.perceptual import hue_cos

    assert np.abs(rows["hue_pcc"][2] - hue_cos(gt, rec)).max() > 0.005
    same = gt.copy()
    same[0, 0, 0, 0, 0] ^= 1  # one value off by one at 512 px: 112 dB in the script, capped at 100 by ours
    # frame 0: 107 dB in the script (100 in ours), frame 1 identical (100 in both)
    assert rows_of(gt, same, "mind_animator")["psnr"][2][0] > pixel.psnr(gt, same)[0] + 3


def test_mind_animator_epe_equals_its_script_and_differs_from_ours_at_the_stored_size():
    from fmrivid.metrics import motion

    gt = clips(4, 2, 3, 128)
    rec = np.roll(gt, 3, axis=3)  # the same scene shifted: a flow difference to measure
    rec[1] = clips(6, 1, 3, 128)[0]
    rows = rows_of(gt, rec, "mind_animator")
    rec512 = np.array([[cv2.resize(f, (512, 512)) for f in c] for c in rec])  # their reconstructions: 512 px
    np.testing.assert_allclose(rows["epe"][2], mind_animator_epe(gt, rec512), rtol=1e-6)
    ours = motion.epe_from_flows(motion.clip_flows(gt), motion.clip_flows(rec))
    assert rows["epe"][2][0] > 2 * ours[0]  # the same shift is 4x as many pixels at 512 px


def test_mindvideo_and_glfa_ssim_is_rgb_uniform_at_256(pair):
    gt, rec = pair
    ref = [np.mean([structural_similarity(cv2.resize(r, (256, 256), interpolation=cv2.INTER_LINEAR),
                                          cv2.resize(g, (256, 256), interpolation=cv2.INTER_LINEAR),
                                          data_range=255, channel_axis=-1) for g, r in zip(gc, rc)])
           for gc, rc in zip(gt, rec)]
    for name in ("mindvideo", "glfa"):
        np.testing.assert_allclose(rows_of(gt, rec, name)["ssim"][2], ref, rtol=1e-12)


def test_brain_diffuser_protocol_equals_its_script_and_its_ssim_is_column_wise(pair):
    gt, rec = pair
    rows = rows_of(gt, rec, "brain_diffuser")
    ref = np.array([[brain_diffuser_script(rec[i, j], gt[i, j]) for j in range(gt.shape[1])]
                    for i in range(len(gt))]).mean(1)
    np.testing.assert_allclose(rows["pixcorr"][2], ref[:, 0], rtol=1e-10)
    np.testing.assert_allclose(rows["ssim"][2], ref[:, 1], rtol=1e-10, atol=1e-12)
    # the column-wise SSIM is higher than the 2-D SSIM of the same grey frames (the 0.02-0.15)
    two_d = pixel.ssim_gray_gaussian(protocols._resize_pil_bicubic(gt, 425), protocols._resize_pil_bicubic(rec, 425))
    assert (rows["ssim"][2] - two_d).min() > 0.01


def test_neurons_ssim_is_column_wise_at_256(pair):
    gt, rec = pair
    g = rgb2gray(protocols._resize_cv2(gt, 256) / 255.0)
    r = rgb2gray(protocols._resize_cv2(rec, 256) / 255.0)
    ref = [np.mean([structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0) for a, b in zip(gc, rc)])
           for gc, rc in zip(g, r)]
    np.testing.assert_allclose(rows_of(gt, rec, "neurons")["ssim"][2], ref, rtol=1e-10, atol=1e-12)


def test_mindeye_protocol_equals_its_notebook(pair):
    gt, rec = pair
    rows = rows_of(gt, rec, "mindeye")
    n, t = gt.shape[:2]
    as_tensor = lambda x: torch.from_numpy(x.reshape(n * t, *x.shape[2:])).permute(0, 3, 1, 2).double() / 255  # noqa: E731
    pc, ss = mindeye_script(as_tensor(gt), as_tensor(rec))
    np.testing.assert_allclose(rows["pixcorr"][2], np.reshape(pc, (n, t)).mean(1), rtol=1e-10)
    np.testing.assert_allclose(rows["ssim"][2], np.reshape(ss, (n, t)).mean(1), rtol=1e-10, atol=1e-12)


def test_column_ssim_matches_scikit_image_per_column_call():
    rng = np.random.default_rng(4)
    a = rng.random((40, 33))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    ref = structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
    assert protocols.column_ssim_gray(a, b) == pytest.approx(ref, rel=1e-12)


def test_protocol_rows_go_through_the_evaluation_with_chance_rows_and_labels(pair):
    gt, rec = pair
    cfg = {"n_boot": 20, "n_perm": 9, "ssim_size": None, "clip_gate": 0.6, "nway": [2], "nway_trials": 5,
           "nway_gt": 3, "protocol": ["fmrivid", "mind_animator", "mindvideo"]}
    rows, _ = suite.evaluate_videos(gt, rec, ["a", "b", "c"], "01", "m", cfg, 0, models={}, log=lambda *a: None)
    long = pd.DataFrame(rows)
    metrics = set(long["metric"])
    assert {"ssim (Mind-Animator protocol)", "psnr (Mind-Animator protocol)", "hue_pcc (Mind-Animator protocol)",
            "ssim (MinD-Video protocol)", "ssim_rgb_uniform"} <= metrics
    ma = long[(long.metric == "ssim (Mind-Animator protocol)")]
    # default protocol_null "shuffled": the chance row without the n_perm pairings (no p) ...
    assert set(ma["method"]) == {"m", "shuffled_gt"} and ma["p"].isna().all()
    assert long[(long.metric == "ssim_rgb_uniform") & (long.method == "m")]["p"].notna().all()
    # ... "permutation": the p as well, the same values and chance row
    perm, _ = suite.evaluate_videos(gt, rec, ["a", "b", "c"], "01", "m", {**cfg, "protocol_null": "permutation"}, 0,
                                    models={}, log=lambda *a: None)
    perm = pd.DataFrame(perm)
    ma_p = perm[(perm.metric == "ssim (Mind-Animator protocol)")].set_index("method")
    assert ma_p.loc["m", "p"] == ma_p.loc["m", "p"]  # not NaN
    np.testing.assert_allclose(ma_p.loc[["m", "shuffled_gt"], "value"], ma.set_index("method").loc[
        ["m", "shuffled_gt"], "value"], rtol=0, atol=0)
    assert "2 frames per clip (the protocol: 8; not parity)" in ma["variant"].iloc[0]
    assert "frames at 512x512" in ma["variant"].iloc[0]
    mv = long[long.metric == "ssim (MinD-Video protocol)"]["variant"].iloc[0]
    assert "MinD-Video protocol" in mv and "not parity" in mv
    # the comparison table pairs each published number with the matching protocol's value only
    means = table.subject_mean(long)
    comp = tables.published_comparison(means, "m")
    ma_ssim = comp[(comp.system == "Mind-Animator") & (comp.quantity == "SSIM")].iloc[0]
    assert ma_ssim["protocol"] == "mind_animator"
    assert ma_ssim["protocol_value"] == pytest.approx(float(ma[ma.method == "m"]["value"].iloc[0]))
    assert ma_ssim["protocol_variant"].startswith("ssim (Mind-Animator protocol)")
    mv_ssim = comp[(comp.system == "MinD-Video") & (comp.quantity == "SSIM")].iloc[0]
    assert mv_ssim["protocol_value"] != ma_ssim["protocol_value"]  # 256 vs 512 px: each its own protocol
    glfa = comp[(comp.system == "GLFA / fMRI-PTE-V") & (comp.quantity == "SSIM")].iloc[0]
    assert np.isnan(glfa["protocol_value"]) and "add glfa to evaluate.protocol" in glfa["protocol_variant"]
    clip_ = comp[(comp.system == "Mind-Animator") & (comp.quantity == "CLIP-pcc")].iloc[0]
    assert np.isnan(clip_["protocol_value"])  # no ViFi-CLIP given: the row is there, missing, with the reason
    missing = long[long.metric == "clip_pcc (Mind-Animator protocol)"]
    assert missing["value"].isna().all() and "evaluate.protocol_models.vifi" in missing["variant"].iloc[0]
    neuro = comp[comp.system == "NeuroClips"].iloc[0]
    assert np.isnan(neuro["protocol_value"]) and "no protocol preset" in neuro["protocol_variant"]


def test_protocol_names_schema_and_errors():
    schema = load_schema()
    enum = schema["properties"]["evaluate"]["properties"]["protocol"]["items"]["enum"]
    assert sorted(enum) == sorted(protocols.NAMES)
    with pytest.raises(ConfigError, match="fmrivid"):
        protocols.check_protocols(["mindvideo"])
    with pytest.raises(ConfigError, match="nope"):
        protocols.check_protocols(["fmrivid", "nope"])
    pub = tables.read_published()
    assert set(pub["protocol"]) - {""} <= set(protocols.PROTOCOLS)
    assert yaml  # (the schema is YAML; load_schema reads it)


def test_mindvideo_video_nway_feeds_videomae_the_clips_own_frames(pair):
    from fmrivid import models
    from fmrivid.metrics import classify

    gt, rec = pair  # 2 frames per clip; the tiny VideoMAE is built for 4
    vid = models.load("tiny", "video_classifier", seed=0)
    native = classify.with_num_frames(vid, 2)
    assert native.model.config.num_frames == 2 and vid.model.config.num_frames == 4
    for k, v in vid.model.state_dict().items():  # same weights
        assert torch.equal(v, native.model.state_dict()[k])
    # fed as they are: a clip of 2 frames gives what the 2-frame model gives, not the resampled 4-frame input
    p_native = classify.video_class_probs(native, gt)
    p_resampled = classify.video_class_probs(vid, gt)
    assert p_native.shape == p_resampled.shape and np.abs(p_native - p_resampled).max() > 1e-6
    assert isinstance(classify.with_num_frames(vid, 3), str)  # tubelet 2
    cfg = {"n_boot": 20, "n_perm": 5, "ssim_size": None, "clip_gate": 0.6, "nway": [2], "nway_trials": 5,
           "nway_gt": 3, "protocol": ["fmrivid", "mindvideo"]}
    rows, _ = suite.evaluate_videos(gt, rec, ["a", "b", "c"], "01", "m", cfg, 0, models={"video_classifier": vid},
                                    log=lambda *a: None)
    long = pd.DataFrame(rows)
    mv = long[long.metric == protocols.NWAY_LABEL]
    assert set(mv.method) == {"m", "shuffled_gt"} and "num_frames=2" in mv.variant.iloc[0]
    own = long[long.metric == "nway_topk"]
    assert "resampled to the model's 4" in own.variant.iloc[0]
    comp = tables.published_comparison(table.subject_mean(long), "m")
    two = comp[(comp.system == "MinD-Video") & (comp.quantity == "video 2-way")].iloc[0]
    ours = mv[(mv.method == "m") & mv.variant.str.contains("top-3 GT") & mv.variant.str.contains("N=2;")]
    assert two["protocol_value"] == pytest.approx(float(ours["value"].iloc[0]))
    assert two["protocol_variant"].startswith(protocols.NWAY_LABEL)
    cfg["protocol"] = ["fmrivid"]
    rows, _ = suite.evaluate_videos(gt, rec, ["a", "b", "c"], "01", "m", cfg, 0, models={"video_classifier": vid},
                                    log=lambda *a: None)
    assert protocols.NWAY_LABEL not in {r["metric"] for r in rows}


# --------------------------------------------------------------------------- Mind-Animator's model-based metrics
def mmaction_test_indices(total, clip_len=8, num_clips=32):
    """mmaction2 ``SampleFrames(clip_len, frame_interval=1, num_clips, test_mode=True)`` frame indices, written
    from its ``_get_test_clips`` and ``__call__`` (out_of_bound_opt 'loop')."""
    ori = clip_len
    avg = (total - ori + 1) / float(num_clips)
    if total > ori - 1:
        offsets = [int(k * avg + avg / 2.0) for k in range(num_clips)]
    else:
        offsets = [0] * num_clips
    return [(o + i) % total for o in offsets for i in range(clip_len)]


def vifi_reference(model, clips):
    """ViFi-CLIP's forward on mmaction's validation pipeline, one video at a time: every sampled frame (repeats
    included) through the image encoder, mean over frames, L2-normalised."""
    size = model.config.vision_config.image_size
    scale = round(size * 256 / 224)
    mean = np.array([123.675, 116.28, 103.53])
    std = np.array([58.395, 57.12, 57.375])
    out = []
    for clip in clips:
        frames = []
        for k in mmaction_test_indices(len(clip)):
            f = cv2.resize(clip[k], (512, 512), interpolation=cv2.INTER_LINEAR if clip.shape[1] < 512
                           else cv2.INTER_AREA)
            f = cv2.resize(f, (scale, scale), interpolation=cv2.INTER_LINEAR)
            top = (scale - size) // 2
            f = (f[top:top + size, top:top + size].astype(np.float64) - mean) / std
            frames.append(f.transpose(2, 0, 1))
        with torch.no_grad():
            feats = model.get_image_features(pixel_values=torch.tensor(np.stack(frames), dtype=torch.float32))
        feats = feats if hasattr(feats, "shape") else feats.pooler_output
        v = feats.double().mean(0)
        out.append((v / v.norm()).numpy())
    return np.stack(out)


def test_vifi_sampling_and_video_embedding_equal_mind_animators_pipeline(pair):
    from fmrivid import models
    from fmrivid.metrics import protocol_models as pm

    for total in (1, 6, 8, 16, 45):
        assert pm.vifi_frame_indices(total).tolist() == mmaction_test_indices(total)
    assert np.bincount(pm.vifi_frame_indices(6)).tolist() == [64, 64, 32, 32, 32, 32]  # looped: 0, 1 twice
    vifi = models.load("tiny", "clip", seed=3)
    gt, _ = pair
    got = pm.vifi_video_embeddings(vifi, gt, batch_size=4)
    np.testing.assert_allclose(got, vifi_reference(vifi.model, gt), atol=1e-5)
    # a frame's features do not depend on its batch-mates
    np.testing.assert_allclose(pm.vifi_video_embeddings(vifi, gt[1:], batch_size=4), got[1:], atol=0, rtol=0)


def test_mind_animator_vifi_and_gated_clip_pcc_rows(pair, monkeypatch):
    from fmrivid import models
    from fmrivid.metrics import protocol_models as pm

    gt, rec = pair
    vifi = models.load("tiny", "clip", seed=3)
    b32 = models.load("tiny", "clip", seed=4)
    eg, er = vifi_reference(vifi.model, gt), vifi_reference(vifi.model, rec)
    scores = np.einsum("nd,nd->n", eg, er)
    # a random tiny ViFi scores every pair near 1: move the gate between the scores so that it gates one clip
    gate = float(np.sort(scores)[0] + np.sort(scores)[1]) / 2
    monkeypatch.setattr(pm, "CLIP_PCC_GATE", gate)
    cfg = {"n_boot": 20, "n_perm": 5, "ssim_size": None, "clip_gate": 0.6, "nway": [2], "nway_trials": 5,
           "nway_gt": 3, "protocol": ["fmrivid", "mind_animator"]}
    rows, _ = suite.evaluate_videos(gt, rec, ["a", "b", "c"], "01", "m", cfg, 0,
                                    models={"protocol": {"vifi": vifi, "clip_b32": b32}}, log=lambda *a: None)
    long = pd.DataFrame(rows)
    mine = long[long.method == "m"].set_index("metric")
    assert mine.loc["vifi_score (Mind-Animator protocol)", "value"] == pytest.approx(scores.mean(), abs=1e-5)
    # their cal_CLIP_pcc: clip.load preprocessing of cv2-resized 512-px frames (here the CLIP processor)
    def embed(f):
        with torch.no_grad():
            out = b32.model.get_image_features(**b32.processor(images=cv2.resize(f, (512, 512)), return_tensors="pt"))
        return (out if hasattr(out, "shape") else out.pooler_output).numpy().reshape(-1)

    emb = np.stack([[embed(f) for f in clip] for clip in rec])
    adj = [np.mean([np.dot(e[j], e[j + 1]) / np.linalg.norm(e[j]) / np.linalg.norm(e[j + 1])
                    for j in range(len(e) - 1)]) for e in emb]
    expected = [0.0 if s <= gate else a for s, a in zip(scores, adj)]
    assert expected.count(0.0) == 1
    assert mine.loc["clip_pcc (Mind-Animator protocol)", "value"] == pytest.approx(np.mean(expected), abs=1e-5)
    assert "ViFi-CLIP" in mine.loc["vifi_score (Mind-Animator protocol)", "variant"]
    shuffled = long[(long.method == "shuffled_gt") & (long.metric == "vifi_score (Mind-Animator protocol)")]
    assert len(shuffled) == 1
    assert np.all(pm.gated(np.array(adj), np.full(3, 0.6), gate=0.6) == 0)  # at the gate: 0, as theirs (<=)
    comp = tables.published_comparison(table.subject_mean(long), "m")
    vrow = comp[(comp.system == "Mind-Animator") & (comp.quantity == "VIFI")].iloc[0]
    assert vrow["protocol_value"] == pytest.approx(scores.mean(), abs=1e-5)


# --------------------------------------------------------------------------- Brain-Diffuser's / MindEye's feature nets
def pairwise_corr_all(ground_truth, predictions):
    """Brain-Diffuser's 2-way identification, re-implemented from its evaluate_reconstruction.py: rows GT,
    columns predictions, success where r < the column's congruent r, mean count / (N - 1)."""
    n = len(ground_truth)
    r = np.corrcoef(ground_truth, predictions)[:n, n:]
    success = r < np.diag(r)
    return success.sum(0) / (n - 1)  # per prediction (their number is the mean)


def test_brain_diffuser_feature_net_rows_equal_their_two_way_and_distance(pair, tmp_path):
    from scipy.spatial.distance import correlation

    from fmrivid.metrics import featnets, stages

    gt, rec = pair
    cfg = {"n_boot": 20, "n_perm": 3, "ssim_size": None, "clip_gate": 0.6, "nway": [2], "nway_trials": 5,
           "nway_gt": 3, "protocol": ["fmrivid", "brain_diffuser"], "protocol_models": {"featnets": "random"},
           "device": "cpu", "clip_model": "tiny", "frame_classifier": None, "video_classifier": None, "lpips": []}
    loaded, _ = stages.load_eval_models(cfg, "tiny", 0, log=lambda *a: None)
    rows, _ = suite.evaluate_videos(gt, rec, ["a", "b", "c"], "01", "m", cfg, 0, models=loaded,
                                    log=lambda *a: None)
    long = pd.DataFrame(rows)
    mine = long[long.method == "m"].set_index("metric")
    for net in ("alexnet2", "inception", "clip"):
        fnet = loaded["protocol"][f"brain_diffuser:{net}"] if net != "clip" else featnets.clip_featnet(
            loaded["clip"], "brain_diffuser")
        fg = fnet.features(gt.reshape(-1, 64, 64, 3)).reshape(3, 2, -1)
        fr = fnet.features(rec.reshape(-1, 64, 64, 3)).reshape(3, 2, -1)
        ref = np.mean([pairwise_corr_all(fg[:, j], fr[:, j]) for j in range(2)], axis=0)
        row = mine.loc[f"{net}_2way (Brain-Diffuser protocol)"]
        assert row["value"] == pytest.approx(ref.mean(), abs=1e-12)
        assert "random weights" in row["variant"] or net == "clip"
    fnet = loaded["protocol"]["brain_diffuser:swav"]
    fg = fnet.features(gt.reshape(-1, 64, 64, 3)).astype(np.float64)
    fr = fnet.features(rec.reshape(-1, 64, 64, 3)).astype(np.float64)
    ref = np.mean([correlation(a, b) for a, b in zip(fg, fr)])
    assert mine.loc["swav_distance (Brain-Diffuser protocol)", "value"] == pytest.approx(ref, abs=1e-9)
    assert set(long[long.metric == "swav_distance (Brain-Diffuser protocol)"].method) == {"m", "shuffled_gt"}
    # the papers' weights absent from the torch cache: the rows are there, missing, naming the file
    original = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        cfg["protocol_models"] = {"featnets": "torch_cache"}
        loaded, _ = stages.load_eval_models(cfg, "tiny", 0, log=lambda *a: None)
        rows, _ = suite.evaluate_videos(gt, rec, ["a", "b", "c"], "01", "m", cfg, 0, models=loaded,
                                        log=lambda *a: None)
    finally:
        torch.hub.set_dir(original)
    miss = pd.DataFrame(rows).set_index("metric")
    assert np.isnan(miss.loc["alexnet2_2way (Brain-Diffuser protocol)", "value"])
    assert "alexnet-owt-7be5be79.pth" in miss.loc["alexnet2_2way (Brain-Diffuser protocol)", "variant"]


def test_neurons_clip_pcc_equals_clip_score_frame(pair):
    from sklearn.metrics.pairwise import cosine_similarity

    from fmrivid import models

    gt, rec = pair
    clip = models.load("tiny", "clip", seed=2)
    cfg = {"n_boot": 20, "n_perm": 3, "ssim_size": None, "clip_gate": 0.6, "nway": [2], "nway_trials": 5,
           "nway_gt": 3, "protocol": ["fmrivid", "neurons"]}
    rows, _ = suite.evaluate_videos(gt, rec, ["a", "b", "c"], "01", "m", cfg, 0, models={"clip": clip},
                                    log=lambda *a: None)
    long = pd.DataFrame(rows)
    row = long[(long.method == "m") & (long.metric == "clip_pcc (NEURONS protocol)")].iloc[0]
    scores = []  # their clip_score_frame, one video at a time
    for video in rec:
        with torch.no_grad():
            out = clip.model.get_image_features(**clip.processor(images=list(video), return_tensors="pt"))
        feats = (out if hasattr(out, "shape") else out.pooler_output).numpy()
        sim = cosine_similarity(feats)
        np.fill_diagonal(sim, 0)
        scores.append(sim.sum() / (len(video) * (len(video) - 1)))
    assert row["value"] == pytest.approx(np.mean(scores), abs=1e-5)
    assert "not parity" in row["variant"]  # a tiny CLIP, not their ViT-L/14
    comp = tables.published_comparison(table.subject_mean(long), "m")
    neu = comp[(comp.system == "NEURONS") & (comp.quantity == "CLIP-pcc")].iloc[0]
    assert neu["protocol_value"] == pytest.approx(row["value"])
    mv = comp[(comp.system == "MinD-Video") & (comp.quantity == "PSNR")].iloc[0]
    assert "computes no PSNR" in mv["protocol_variant"]


def test_feature_net_and_vifi_gt_features_come_from_the_gt_cache_file(pair, tmp_path, monkeypatch):
    """The GT side of the feature-network and ViFi-CLIP metrics is computed once, in the GT cache (block by block
    into its file), not in every chunk: chunks evaluated from the cache file, in another clip order than the
    cache's, give the rows of the in-memory evaluation, and their nets only ever see reconstructions."""
    from fmrivid.metrics import stages

    gt, rec = pair
    ids = ["a", "b", "c"]
    cfg = {"n_boot": 20, "n_perm": 3, "ssim_size": None, "clip_gate": 0.6, "nway": [2], "nway_trials": 5,
           "nway_gt": 3, "protocol": ["fmrivid", "brain_diffuser", "mind_animator"],
           "protocol_models": {"featnets": "random", "vifi": "tiny", "clip_b32": "tiny"},
           "device": "cpu", "clip_model": "tiny", "frame_classifier": None, "video_classifier": None, "lpips": []}
    loaded, _ = stages.load_eval_models(cfg, "tiny", 0, log=lambda *a: None)
    order = [2, 0, 1]  # the chunks' clip order differs from the cache's (sorted ids)
    g, r, o_ids = gt[order], rec[order], [ids[i] for i in order]
    expected, _ = suite.evaluate_videos(g, r, o_ids, "01", "m", cfg, 0, models=loaded, log=lambda *a: None)

    path = tmp_path / "gt_cache.h5"
    suite.gt_cache(gt, ids, loaded, cfg, path, log=lambda *a: None)
    cache = suite.read_gt_cache(path)
    assert set(cache["featnets"]) == {f"brain_diffuser:{n}" for n in ("alexnet2", "alexnet5", "inception", "clip",
                                                                       "effnet", "swav")}
    assert cache["vifi_emb"].shape[0] == 3
    seen = []  # frames each net and ViFi are given while chunks are evaluated

    class Spy:
        def __init__(self, net):
            self.net = net

        def describe(self):
            return self.net.describe()

        def features(self, frames, **kw):
            seen.append(len(frames))
            return self.net.features(frames, **kw)

    spied = dict(loaded, protocol={k: Spy(v) if ":" in k else v for k, v in loaded["protocol"].items()})
    from fmrivid.metrics import protocol_models as pm

    vifi_clips, vifi = [], pm.vifi_video_embeddings
    monkeypatch.setattr(pm, "vifi_video_embeddings", lambda m, c, **kw: vifi_clips.append(len(c)) or vifi(m, c, **kw))
    parts = [suite.evaluate_videos_chunk(g, cache, r[p], p, 3, o_ids, "01", "m", cfg, 0, models=spied,
                                         log=lambda *a: None) for p in (np.array([0, 1]), np.array([2]))]
    got, _ = suite.merge_partials(parts, cfg, log=lambda *a: None)
    assert set(seen) <= {2 * 2, 1 * 2} and len(seen) == 2 * 5  # 5 non-CLIP nets x 2 chunks, reconstructions only
    assert vifi_clips == [2, 1]  # ViFi-CLIP embeds each chunk's reconstructions, never the GT
    key = ["metric", "method", "variant"]
    want = pd.DataFrame(expected).set_index(key)["value"]
    have = pd.DataFrame(got).set_index(key)["value"]
    feat = [m for m in want.index.get_level_values(0).unique()
            if "Brain-Diffuser" in m or "vifi" in m or "Mind-Animator protocol" in m and "clip" in m]
    assert len(feat) >= 8
    for metric in feat:
        np.testing.assert_allclose(have.loc[metric].sort_index(), want.loc[metric].sort_index(), atol=1e-9,
                                   err_msg=metric)
