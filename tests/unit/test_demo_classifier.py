"""The demo classifier: trained on rendered demo training clips, it makes the N-way metric meaningful."""

import json

import numpy as np
import pytest

from clipgen import noisy
from fmrivid.errors import ConfigError, InputError
from fmrivid.metrics import classify, demo_classifier, suite
from fmrivid.metrics.stats import derangement
from fmrivid.simulate import stimuli

SIZE, FRAMES, N_TRAIN, N_TEST = 32, 4, 72, 24
FAST = {"cv_folds": 0, "augment": 1}
QUIET = lambda *_: None  # noqa: E731


def _render(clips):
    return np.stack([stimuli.render_clip(c, SIZE, FRAMES) for c in clips])


@pytest.fixture(scope="module")
def demo():
    """Real demo clips (sample_clips + render_clip: distinct attribute combinations, train first)."""
    clips = stimuli.sample_clips(N_TRAIN, N_TEST, SIZE, FRAMES, np.random.default_rng(3))
    video = _render(clips)
    captions = [c["caption"] for c in clips]
    return {"clips": clips, "train": video[:N_TRAIN], "test": video[N_TRAIN:],
            "train_captions": captions[:N_TRAIN], "test_clips": clips[N_TRAIN:]}


@pytest.fixture(scope="module")
def model(demo, tmp_path_factory):
    path = tmp_path_factory.mktemp("democls") / "demo_classifier.safetensors"
    lines = []
    info = demo_classifier.train(demo["train"], demo["train_captions"], path, FAST, seed=0, log=lines.append)
    return {"path": path, "info": info, "clf": demo_classifier.load(path), "log": lines}


def test_trained_classifier_recognises_held_out_clips(demo, model):
    clf = model["clf"]
    assert clf.info == model["info"]
    assert clf.info["name"].startswith(demo_classifier.NAME)
    truth = [f"{c['colour']} {c['shape']}" for c in demo["test_clips"]]
    seen = np.array([t in clf.classes for t in truth])
    assert seen.sum() >= N_TEST // 2
    pred = clf.predict(demo["test"])
    correct = np.array([[p == t for p in row] for row, t in zip(pred, truth)])
    acc = correct[seen].mean()
    chance = 1 / len(clf.classes)
    assert acc >= 0.8 > 5 * chance, (acc, chance)
    assert not correct[~seen].any()            # an unseen class cannot be predicted: it is not a class
    probs = classify.image_class_probs(clf, demo["test"])
    assert probs.shape == (N_TEST, FRAMES, len(clf.classes))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0)


def test_nway_of_noisy_gt_beats_chance_and_shuffled_pairing(demo, model):
    clf = model["clf"]
    gt = demo["test"]
    rec = noisy(gt, 12.0, seed=5)
    pg, pr = classify.image_class_probs(clf, gt), classify.image_class_probs(clf, rec)
    perm = derangement(N_TEST, 0)
    for n_gt, n_way in ((1, 2), (1, 5), (3, 2), (3, 5)):
        real = classify.nway_topk(pg, pr, n_way, 100, n_gt, seed=0).mean()
        shuffled = classify.nway_topk(pg, pr, n_way, 100, n_gt, seed=0, pairing=perm).mean()
        chance = min(n_gt, 1) / n_way if n_gt == 1 else None
        assert real > shuffled + 0.25, (n_gt, n_way, real, shuffled)
        if chance is not None:
            assert real > chance + 0.3, (n_way, real)


def test_suite_reports_demo_classifier_rows_with_shuffled_control(demo, model):
    cfg = {"n_boot": 20, "n_perm": 20, "ssim_size": None, "clip_gate": 0.6, "nway": [2, 50],
           "nway_trials": 50, "nway_gt": 3}
    gt = demo["test"][:12]
    rec = noisy(gt, 12.0, seed=6)
    rows, _ = suite.evaluate_videos(gt, rec, [f"t{i}" for i in range(12)], "01", "demo", cfg, 0,
                                    models={"image_classifier": model["clf"]}, log=QUIET)
    nway = [r for r in rows if r["metric"] == "nway_topk"]
    assert nway and all("classifier demo (trained on training clips)" in r["variant"] for r in nway)
    by = {(r["method"], r["variant"]): r for r in nway}
    computed = [v for (m, v) in by if m == "demo" and "; N=2;" in v]
    assert len(computed) == 2                                    # n_gt 3 and 1, N=2
    for variant in computed:
        assert by[("demo", variant)]["value"] > by[("shuffled_gt", variant)]["value"] + 0.2
        assert by[("demo", variant)]["p"] < 0.1
    n_classes = len(model["clf"].classes)
    assert any(m == "demo" and "N=50" in v and np.isnan(by[(m, v)]["value"]) for (m, v) in by), \
        f"50-way needs >= 52 classes; the demo classifier has {n_classes}"


def test_classes_come_from_training_captions_only(demo, tmp_path):
    keep = [i for i, c in enumerate(demo["clips"][:N_TRAIN]) if c["colour"] != "yellow"][:32]
    path = tmp_path / "noyellow.safetensors"
    info = demo_classifier.train(demo["train"][keep], [demo["train_captions"][i] for i in keep], path,
                                 dict(FAST, augment=0), seed=0, log=QUIET)
    assert info["classes"] and not any("yellow" in c for c in info["classes"])
    clf = demo_classifier.load(path)
    yellow = [i for i, c in enumerate(demo["test_clips"]) if c["colour"] == "yellow"]
    probs = clf.class_probs(demo["test"][yellow])               # a never-seen class: still a valid output
    assert probs.shape == (len(yellow), FRAMES, len(info["classes"]))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0)


def test_label_rule_is_configurable_and_unmatched_captions_are_skipped_with_a_log_line(demo, tmp_path):
    frames = demo["train"][:10]
    captions = list(demo["train_captions"][:10])
    captions[2] = "a purple blob wobbles over a plain background"        # no colour word
    captions[5] = "a red blue circle drifts left over a plain background"  # two colour words
    lines = []
    info = demo_classifier.train(frames, captions, tmp_path / "a.safetensors", dict(FAST, augment=0), 0,
                                 log=lines.append)
    assert [s["index"] for s in info["skipped"]] == [2, 5]
    assert info["n_clips_used"] == 8
    assert sum("skipped training clip" in ln for ln in lines) == 2
    assert any("2 colour words" in ln for ln in lines) and any("no colour word" in ln for ln in lines)
    # shape only: 4 classes at most, named by the shape word
    shapes = {"shape": list(stimuli.SHAPES)}
    info = demo_classifier.train(demo["train"][:20], demo["train_captions"][:20], tmp_path / "b.safetensors",
                                 dict(FAST, augment=0, labels=shapes), 0, log=QUIET)
    assert set(info["classes"]) <= set(stimuli.SHAPES) and len(info["classes"]) >= 2
    assert demo_classifier.parse_labels(["A Green CROSS drifts up"], demo_classifier.DEFAULTS["labels"]) == \
        [("green cross", None)]


def test_training_is_deterministic_and_the_file_is_safetensors(demo, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    kw = dict(cfg=dict(FAST, augment=1, cv_folds=2), seed=4, log=QUIET)
    info = demo_classifier.train(demo["train"][:16], demo["train_captions"][:16], a, **kw)
    demo_classifier.train(demo["train"][:16], demo["train_captions"][:16], b, **kw)
    assert a.read_bytes() == b.read_bytes()
    assert info["cv_accuracy"] is not None and 0.0 <= info["cv_accuracy"] <= 1.0
    header_len = int.from_bytes(a.read_bytes()[:8], "little")   # safetensors: u64 header size + JSON header
    header = json.loads(a.read_bytes()[8:8 + header_len])
    assert set(header) - {"__metadata__"} == {"coef", "intercept", "mean", "scale"}


def test_bad_input_is_refused_without_output(demo, tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(InputError, match="uint8 training clips"):
        demo_classifier.train(demo["train"].astype(np.float32), demo["train_captions"], out, FAST, 0, QUIET)
    with pytest.raises(InputError, match="one caption per training clip"):
        demo_classifier.train(demo["train"][:5], demo["train_captions"][:4], out, FAST, 0, QUIET)
    one = [c for c in demo["clips"][:N_TRAIN] if c["colour"] == "red" and c["shape"] == "circle"][:1]
    with pytest.raises(InputError, match="at least 2 classes"):
        demo_classifier.train(_render(one), [one[0]["caption"]], out, FAST, 0, QUIET)
    with pytest.raises(ConfigError, match="demo_classifier.bogus"):
        demo_classifier.train(demo["train"][:5], demo["train_captions"][:5], out, {"bogus": 1}, 0, QUIET)
    with pytest.raises(ConfigError, match="demo_classifier.C"):
        demo_classifier.config({"C": 0})
    with pytest.raises(ConfigError, match="demo_classifier.labels.colour"):
        demo_classifier.config({"labels": {"colour": []}})
    assert not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="no such file"):
        demo_classifier.load(out)
    out.write_text("not a model")
    with pytest.raises(InputError, match="demo classifier"):
        demo_classifier.load(out)
