"""Does the demo classifier's hand-written feature set beat the plain alternative (downsampled RGB pixels)?

Both variants share everything else: the same training clips and their degraded copies
(``demo_classifier.augment``), standardisation and scikit-learn LogisticRegression (C = 1). They differ only
in the features of a frame:

  ours      fmrivid.metrics.demo_classifier.frame_features (chroma-weighted hue histogram and mean colour,
            a shape window centred on the most salient blob, Hu moments)
  baseline  the frame area-resized to 8 x 8, RGB (192 values): "downsampled RGB"

For several seeded draws of the demo geometry (48 training + 12 test clips, 64 x 64, 8 frames, as
config/demo.yaml), it reports the frame accuracy on the held-out test clips whose class occurs in training,
crisp and degraded like a generator's output (Gaussian blur sigma 2 px, fade 0.3, noise SD 15), and the
training time. With --recon it also trains both on results/features/frames.h5 (training clips) and reports
the frame-level N-way top-1 (n_gt 1, N=5) of results/recon/demo/sub-*.h5 against the shuffled-GT control.

Usage:  python benchmarks/demo_classifier.py [--seeds 5] [--recon]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fmrivid.metrics import classify, demo_classifier as dc  # noqa: E402
from fmrivid.simulate import stimuli  # noqa: E402

SIZE, FRAMES, N_TRAIN, N_TEST = 64, 8, 48, 12


def baseline_features(frames):
    """Downsampled RGB: (M, H, W, 3) uint8 -> (M, 192)."""
    return classify._resize_frames(frames, 8).reshape(frames.shape[0], -1).astype(np.float64)


class Model:
    """Standardise + logistic regression on a feature function (the demo classifier's own recipe)."""

    def __init__(self, features):
        self.features = features

    def fit(self, frames, labels, cfg, seed):
        from sklearn.linear_model import LogisticRegression

        flat = frames.reshape(-1, *frames.shape[2:])
        y = np.repeat(labels, frames.shape[1])
        aug = dc.augment(flat, cfg, np.random.default_rng([seed, 6]))
        x = self.features(np.concatenate([flat, aug]))
        y = np.tile(y, 1 + cfg["augment"])
        self.mean, self.scale = x.mean(0), np.where(x.std(0) > 1e-8, x.std(0), 1.0)
        self.lr = LogisticRegression(C=cfg["C"], max_iter=cfg["max_iter"], random_state=seed)
        self.lr.fit((x - self.mean) / self.scale, y)
        return self

    def probs(self, clips):
        n, t = clips.shape[:2]
        x = self.features(clips.reshape(n * t, *clips.shape[2:]))
        return self.lr.predict_proba((x - self.mean) / self.scale).reshape(n, t, -1)


def degrade(clips, seed):
    rng = np.random.default_rng(seed)
    out = clips.astype(np.float32)
    for i in range(out.shape[0]):
        for t in range(out.shape[1]):
            f = cv2.GaussianBlur(out[i, t], (0, 0), 2.0)
            f = 0.7 * f + 0.3 * f.mean()
            out[i, t] = f + rng.normal(0, 15, f.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def accuracy(model, classes, clips, labels):
    pred = np.asarray(classes)[model.probs(clips).argmax(-1)]
    return float(np.mean(pred == np.asarray(labels)[:, None]))


def synthetic(seeds):
    cfg = dc.config()
    feats = {"ours": lambda f: dc.frame_features(f, cfg), "baseline": baseline_features}
    res = {k: {"crisp": [], "degraded": [], "train_s": []} for k in feats}
    for seed in range(seeds):
        clips = stimuli.sample_clips(N_TRAIN, N_TEST, SIZE, FRAMES, np.random.default_rng(100 + seed))
        video = np.stack([stimuli.render_clip(c, SIZE, FRAMES) for c in clips])
        labels = np.array([f"{c['colour']} {c['shape']}" for c in clips])
        classes = sorted(set(labels[:N_TRAIN]))
        y = np.array([classes.index(lab) for lab in labels[:N_TRAIN]])
        seen = np.array([lab in classes for lab in labels[N_TRAIN:]])
        test, test_lab = video[N_TRAIN:][seen], labels[N_TRAIN:][seen]
        bad = degrade(test, seed)
        for name, fn in feats.items():
            t0 = time.perf_counter()
            m = Model(fn).fit(video[:N_TRAIN], y, cfg, seed)
            res[name]["train_s"].append(time.perf_counter() - t0)
            res[name]["crisp"].append(accuracy(m, classes, test, test_lab))
            res[name]["degraded"].append(accuracy(m, classes, bad, test_lab))
        print(f"  seed {seed}: " + ", ".join(f"{k} {res[k]['crisp'][-1]:.3f}/{res[k]['degraded'][-1]:.3f}"
                                             for k in feats), flush=True)
    print(f"\nheld-out frame accuracy over {seeds} demo draws ({N_TRAIN} train / {N_TEST} test clips, "
          f"{SIZE}px, {FRAMES} frames; seen classes; chance ~1/16)")
    print(f"{'':22s}{'ours':>10s}{'baseline':>10s}{'ours/baseline':>15s}")
    for key in ("crisp", "degraded", "train_s"):
        a, b = np.mean(res["ours"][key]), np.mean(res["baseline"][key])
        print(f"{key:22s}{a:10.3f}{b:10.3f}{a / b:15.2f}")


def recon():
    import pandas as pd

    from fmrivid.io.h5 import read_features
    from fmrivid.metrics.stats import derangement

    table = pd.read_csv(REPO / "results/demo/bids/stimuli/clips.tsv", sep="\t")
    caption = dict(zip(table.clip_id, table.caption))
    ids, frames, _ = read_features(REPO / "results/features/frames.h5")
    train = [i for i, c in enumerate(ids) if c.startswith("train")]
    cfg = dc.config()
    labels = [dc.parse_labels([caption[ids[i]]], cfg["labels"])[0][0] for i in train]
    classes = sorted(set(labels))
    y = np.array([classes.index(lab) for lab in labels])
    feats = {"ours": lambda f: dc.frame_features(f, cfg), "baseline": baseline_features}
    print("\nresults/recon/demo: frame-level N-way top-1 (n_gt 1, N=5, 100 trials) real vs shuffled GT")
    for path in sorted((REPO / "results/recon/demo").glob("sub-*.h5")):
        rid, rec, _ = read_features(path)
        _, gt, _ = read_features(REPO / "results/features/frames.h5", rid)
        perm = derangement(len(rid), 0)
        for name, fn in feats.items():
            m = Model(fn).fit(frames[train], y, cfg, 0)
            pg, pr = m.probs(gt), m.probs(rec)
            real = classify.nway_topk(pg, pr, 5, 100, 1, 0).mean()
            shuf = classify.nway_topk(pg, pr, 5, 100, 1, 0, pairing=perm).mean()
            print(f"  {path.stem} {name:9s} real {real:.3f} shuffled {shuf:.3f} ratio {real / shuf:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--recon", action="store_true", help="also compare on results/recon/demo (needs a demo run)")
    args = ap.parse_args()
    synthetic(args.seeds)
    if args.recon:
        recon()


if __name__ == "__main__":
    main()
