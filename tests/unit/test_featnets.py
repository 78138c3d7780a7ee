"""Feature-network metrics (Brain-Diffuser / MindEye): the 2-way rule and the distance equal re-implementations
of the papers' functions (written here from their evaluation code), the preprocessing equals torchvision's
transforms as the papers call them, and random-weight nets of the real architectures carry a planted signal."""

import numpy as np
import pytest
import scipy.spatial.distance
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

from fmrivid.errors import InputError
from fmrivid.metrics import featnets as F


# ------------------------------------------------------------------ the papers' functions, re-implemented
def pairwise_corr_all(ground_truth, predictions):
    """Brain-Diffuser's 2-way identification (MindEye's two_way_identification is the same computation):
    rows GT, columns predictions; a prediction succeeds against GT i when r(gt_i, pred) < r(gt_own, pred)."""
    n = len(ground_truth)
    r = np.corrcoef(ground_truth, predictions)[:n, n:]
    congruents = np.diag(r)
    success = r < congruents
    success_cnt = np.sum(success, 0)
    return np.mean(success_cnt) / (n - 1), success_cnt


def paper_distance(gt, rec):
    """Brain-Diffuser / MindEye EffNet-B and SwAV distance: mean scipy correlation distance of paired rows."""
    return np.array([scipy.spatial.distance.correlation(gt[i], rec[i]) for i in range(len(gt))]).mean()


def feats(seed, n, d, t=None):
    rng = np.random.default_rng(seed)
    shape = (n, d) if t is None else (n, t, d)
    return rng.normal(size=shape) + rng.normal(size=shape[-1])  # a shared component, as real features have


# ------------------------------------------------------------------ correlations and scores
def test_two_way_equals_pairwise_corr_all():
    gt = feats(0, 15, 40)
    rec = 0.6 * gt + feats(1, 15, 40)
    perf, cnt = pairwise_corr_all(gt, rec)
    c = F.corr_to_gt(rec[:, None], gt[:, None])
    np.testing.assert_allclose(c[:, :, 0], np.corrcoef(gt, rec)[15:, :15], rtol=0, atol=1e-12)
    per_clip = F.two_way(c)
    np.testing.assert_array_equal(per_clip * 14, cnt)         # per-image success fraction
    assert per_clip.mean() == pytest.approx(perf, abs=1e-15)  # the paper's number
    assert 0.6 < perf < 1.0                                   # a non-trivial case


def test_two_way_any_pairing_equals_reordered_paper():
    """Reconstruction k scored as GT clip perm[k] is the paper's function with the predictions re-ordered."""
    gt = feats(2, 10, 30)
    rec = feats(3, 10, 30) + 0.5 * gt[np.roll(np.arange(10), 1)]
    perm = np.random.default_rng(4).permutation(10)
    pred = np.empty_like(rec)
    pred[perm] = rec
    _, cnt = pairwise_corr_all(gt, pred)
    c = F.corr_to_gt(rec[:, None], gt[:, None])
    np.testing.assert_array_equal(F.two_way_from_corr(c, np.arange(10), perm) * 9, cnt[perm])


def test_two_way_frames_are_images_and_blocks_change_nothing():
    """With T frames, a clip's value is the mean over frames of the per-image value of the paper's function
    applied frame by frame; blocked computation (GT as an array, block iterator or callable) is the same."""
    n, t, d = 9, 3, 25
    gt, rec = feats(5, n, d, t), feats(6, n, d, t)
    rec += 0.7 * gt
    c = F.corr_to_gt(rec, gt)
    expected = np.mean([pairwise_corr_all(gt[:, j], rec[:, j])[1] / (n - 1) for j in range(t)], axis=0)
    np.testing.assert_allclose(F.two_way(c), expected, rtol=0, atol=1e-15)
    tiny = 2 * 8 * d * 2  # two rows at a time
    for g in (gt, [gt[:4], gt[4:]], lambda: iter([gt[:2], gt[2:7], gt[7:]])):
        np.testing.assert_allclose(F.corr_to_gt(rec, g, max_bytes=tiny), c, rtol=0, atol=1e-14)


def test_two_way_tie_is_a_failure():
    """Strict <: a distractor whose correlation equals the congruent one is not beaten (integer features make
    the tie exact in both implementations)."""
    gt = np.array([[1, 2, 3, 4, 6], [1, 2, 3, 4, 6], [5, 1, 4, 2, 3], [0, 3, 3, 1, 1]], float)  # clips 0, 1 equal
    rec = gt.copy()
    perf, cnt = pairwise_corr_all(gt, rec)
    per_clip = F.two_way(F.corr_to_gt(rec[:, None], gt[:, None]))
    np.testing.assert_array_equal(per_clip * 3, cnt)
    np.testing.assert_array_equal(per_clip, [2 / 3, 2 / 3, 1, 1])  # with <= clips 0 and 1 would score 1
    assert per_clip.mean() == pytest.approx(perf)


def test_two_way_nan_is_a_failure():
    gt = feats(7, 5, 12)
    rec = gt + 0.1 * feats(8, 5, 12)
    gt[3] = 1.0  # constant features: NaN correlations
    with np.errstate(invalid="ignore", divide="ignore"):
        _, cnt = pairwise_corr_all(gt, rec)
    c = F.corr_to_gt(rec[:, None], gt[:, None])
    assert np.isnan(c[:, 3]).all()
    np.testing.assert_array_equal(F.two_way(c) * 4, cnt)


def test_distance_equals_scipy():
    gt = feats(9, 12, 64, 2)
    rec = 0.5 * gt + feats(10, 12, 64, 2)
    ours = F.distance(rec, gt)
    expected = np.array([[scipy.spatial.distance.correlation(gt[i, j], rec[i, j]) for j in range(2)]
                         for i in range(12)]).mean(1)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(F.distance(rec, gt, max_bytes=1), ours, rtol=0, atol=1e-15)  # one clip a block
    # one frame per clip: the paper's number; float32 features (what the papers saved) within float32 rounding
    g32, r32 = gt[:, 0].astype(np.float32), rec[:, 0].astype(np.float32)
    assert F.distance(r32[:, None], g32[:, None]).mean() == pytest.approx(paper_distance(g32, r32), abs=1e-5)
    assert 0.1 < ours.mean() < 1.0


# ------------------------------------------------------------------ preprocessing equals torchvision's
def frames_of(seed, k, h, w=None):
    """Smooth random colour frames: coarse noise upsampled (distinct clips look distinct)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (k, 4, 4, 3)).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((w or h, h), Image.Resampling.BILINEAR)) for c in coarse])


def test_preprocess_brain_diffuser_equals_torchvision_on_pil():
    fr = frames_of(0, 2, 40, 52)
    norm = transforms.Normalize(mean=F.IMAGENET_MEAN, std=F.IMAGENET_STD)
    ref = torch.stack([norm(TF.to_tensor(TF.resize(Image.fromarray(f), (224, 224)).convert("RGB")).float())
                       for f in fr])
    ours = F.preprocess(fr, 224, "pil_bilinear", F.IMAGENET_MEAN, F.IMAGENET_STD)
    assert ours.shape == (2, 3, 224, 224)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_preprocess_mindeye_equals_torchvision_on_tensors():
    fr = frames_of(1, 2, 40, 52)
    pre = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR,
                                                antialias=False),
                              transforms.Normalize(mean=F.CLIP_MEAN, std=F.CLIP_STD)])
    ref = pre(torch.from_numpy(fr).permute(0, 3, 1, 2).float() / 255)
    ours = F.preprocess(fr, 256, "tensor_bilinear", F.CLIP_MEAN, F.CLIP_STD)
    assert ours.shape == (2, 3, 256, 256 * 52 // 40)  # Resize(int): the shorter edge goes to 256
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


# ------------------------------------------------------------------ random-weight nets of the real architectures
@pytest.mark.parametrize("protocol", F.PROTOCOLS)
@pytest.mark.parametrize("name", sorted(F.NETS))
def test_feature_shapes(name, protocol):
    net = F.load_featnet(name, weights="random", protocol=protocol, batch_size=1)
    out = net.features(frames_of(2, 1, 32))
    assert out.shape == (1, F.NETS[name].inputs[protocol].dim) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.std() > 0
    assert net.random and "[random weights: not " in net.describe()


def test_alexnet2_dimensionality():
    assert F.NETS["alexnet2"].inputs["brain_diffuser"].dim == 192 * 27 * 27 == 139_968


@pytest.mark.parametrize("name", ["alexnet2", "effnet"])
def test_determinism_and_batch_independence(name):
    fr = frames_of(3, 5, 32)
    a = F.load_featnet(name, weights="random", batch_size=2)
    b = F.load_featnet(name, weights="random", batch_size=2)
    fa = a.features(fr)
    np.testing.assert_array_equal(fa, b.features(fr))                    # same seed, same floats
    other_seed = F.load_featnet(name, weights="random", seed=1).features(fr[:1])[0]
    assert np.abs(other_seed - fa[0]).max() > 0.1 * np.abs(fa[0]).max()
    order = [4, 2, 0, 3, 1]
    np.testing.assert_array_equal(a.features(fr[order]), fa[order])      # batch-mates do not matter
    np.testing.assert_array_equal(a.features(fr[2:3]), fa[2:3])          # padded last batch
    np.testing.assert_allclose(a.features(fr, batch_size=5), fa, rtol=1e-4, atol=1e-6 * np.abs(fa).max())


def planted(net, n=4, t=2, size=32):
    gt = frames_of(4, n * t, size).reshape(n, t, size, size, 3)
    noise = np.random.default_rng(5).integers(-3, 4, gt.shape)
    rec = np.clip(gt.astype(int) + noise, 0, 255).astype(np.uint8)
    g = net.features(gt.reshape(n * t, size, size, 3)).reshape(n, t, -1)
    r = net.features(rec.reshape(n * t, size, size, 3)).reshape(n, t, -1)
    return g, r


@pytest.mark.parametrize("name", sorted(F.NETS))
def test_planted_signal(name):
    g, r = planted(F.load_featnet(name, weights="random", batch_size=8))
    n = len(g)
    c = F.corr_to_gt(r, g)
    good = F.two_way(c)
    assert good.mean() >= 0.9
    other = np.roll(np.arange(n), 1)  # reconstructions scored against the wrong clip
    wrong = F.two_way_from_corr(c, np.arange(n), other)
    assert wrong.mean() <= (n - 2) / (n - 1) and wrong.mean() < good.mean() - 0.2
    # averaged over every wrong pairing, a reconstruction ranks like chance: (N-2) / (2 (N-1))
    ri, gi = np.nonzero(~np.eye(n, dtype=bool))
    assert F.two_way_from_corr(c, ri, gi).mean() == pytest.approx((n - 2) / (2 * (n - 1)), abs=0.1)
    d_good, d_wrong = F.distance(r, g), F.distance(r, g[other])
    assert d_good.max() < 0.05 and d_good.max() < d_wrong.min()


# ------------------------------------------------------------------ weights from the torch cache
@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def test_missing_weights_reported(hub):
    for name in F.NETS:
        path = hub / F.NETS[name].inputs["mindeye"].file
        assert F.weight_path(name, "mindeye") == path
        reason = F.featnet_status(name, "mindeye")
        assert reason.startswith("not computed:") and str(path) in reason
        with pytest.raises(InputError) as err:
            F.load_featnet(name, protocol="mindeye")
        assert err.value.path == str(path) and "missing" in str(err.value)
    assert F.NETS["effnet"].inputs["brain_diffuser"].file != F.NETS["effnet"].inputs["mindeye"].file


def test_weights_loaded_from_cache(hub):
    """A state dict in the cache is what the net runs: torchvision's file for AlexNet, the SwAV layout
    (module. prefix, extra heads) for SwAV."""
    hub.mkdir(parents=True)
    fr = frames_of(6, 2, 32)
    for name, seed in (("alexnet5", 3), ("swav", 4)):
        ref = F.load_featnet(name, weights="random", seed=seed, batch_size=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = F._build(F.NETS[name], random=True).state_dict()
        if name == "swav":
            state = {"module." + k: v for k, v in state.items() if not k.startswith("fc.")}
            state["module.projection_head.0.weight"] = torch.zeros(4, 2048)
            state["module.prototypes.weight"] = torch.zeros(3, 4)
        torch.save(state, hub / F.NETS[name].inputs["brain_diffuser"].file)
        assert F.featnet_status(name) is None
        net = F.load_featnet(name, batch_size=2)
        assert not net.random and "random" not in net.describe()
        np.testing.assert_array_equal(net.features(fr), ref.features(fr))
    (hub / F.NETS["alexnet2"].inputs["brain_diffuser"].file).write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="alexnet-owt-7be5be79.pth"):
        F.load_featnet("alexnet2")


def test_clip_featnet_on_tiny_clip():
    from fmrivid.models import load

    loaded = load("tiny", "clip")
    net = F.clip_featnet(loaded, "brain_diffuser", batch_size=2)
    fr = frames_of(7, 3, 48)
    out = net.features(fr)
    assert out.shape == (3, loaded.model.config.projection_dim) and np.isfinite(out).all()
    assert net.random and "not parity" in net.describe()
    x = F.preprocess(fr[:1], 32, "pil_bilinear", F.CLIP_MEAN, F.CLIP_STD)
    with torch.no_grad():
        direct = loaded.model.get_image_features(pixel_values=x)
    direct = direct if hasattr(direct, "shape") else direct.pooler_output
    np.testing.assert_allclose(out[0], direct[0].numpy(), rtol=1e-5, atol=1e-6)
