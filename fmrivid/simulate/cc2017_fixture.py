"""A CC2017-layout fixture with the real file names and shapes, at small counts, with a planted signal.

::

    <root>/subject<s>/fmri/seg<k>/cifti/seg<k>_<rep>_Atlas.dtseries.nii   245 volumes x 91,282 grayordinates
    <root>/subject<s>/fmri/test<k>/cifti/test<k>_<rep>_Atlas.dtseries.nii  245 (test1) / 246 (test2..) volumes
    <root>/stimuli/seg<k>.mp4, test<k>.mp4                                480-s movies (240 clips of 2 s)

What is real: the names, the folder layout, the CIFTI-2 brain models (fsLR-32k cortex + subcortex, TR 2 s in
the series axis), the run lengths and trimming (1 or 2 leading + 4 trailing volumes around 240 movie volumes),
the movie length and frame rate. What is small: segment and repeat counts, subjects, and the movie frame size.

Planted signal: each 2-s clip shows one coloured square on a coloured background moving in one direction. The
first ``n_planted`` cortical grayordinates (the same in every subject, so ISC/fSC have something to find) respond
to the clip's colours and motion (a fixed random mixing) 2 TRs (4 s) after the clip; everything else is noise on
a drifting baseline. The last clips' responses fall in the 4 trailing volumes, which is why the lag must be
applied before those are trimmed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fmrivid.io import cc2017, cifti
from fmrivid.io.atomic import atomic_path

CLIPS_PER_SEGMENT = 240
TR = 2.0
LAG_TRS = 2


def _clip_params(rng, n):
    """Per clip: background RGB, square RGB, motion (dx, dy) in pixels per frame."""
    return {"bg": rng.uniform(0, 255, (n, 3)), "fg": rng.uniform(0, 255, (n, 3)),
            "motion": rng.uniform(-1, 1, (n, 2))}


def clip_features(params):
    """The planted stimulus features of each clip (n, 8): background, square colour (scaled 0-1), motion."""
    return np.c_[params["bg"] / 255.0, params["fg"] / 255.0, params["motion"]].astype(np.float64)


def write_movie(path, params, fps, size, seconds_per_clip=TR):
    """Write one segment movie: clip i fills [i * 2 s, (i + 1) * 2 s), frame by frame (memory stays small)."""
    import imageio.v2 as imageio

    per_clip = int(round(fps * seconds_per_clip))
    side = max(4, size // 4)
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(str(tmp), format="FFMPEG", fps=fps, codec="libx264", quality=None,
                                    ffmpeg_params=["-preset", "ultrafast", "-crf", "18"], pixelformat="yuv420p",
                                    macro_block_size=1, ffmpeg_log_level="error")
        frame = np.empty((size, size, 3), np.uint8)
        for i in range(len(params["bg"])):
            bg, fg = params["bg"][i].astype(np.uint8), params["fg"][i].astype(np.uint8)
            dx, dy = params["motion"][i] * size / (4.0 * per_clip)
            for t in range(per_clip):
                frame[:] = bg
                x = int((size - side) / 2 + dx * (t - per_clip / 2)) % (size - side)
                y = int((size - side) / 2 + dy * (t - per_clip / 2)) % (size - side)
                frame[y:y + side, x:x + side] = fg
                writer.append_data(frame)
        writer.close()


def write_cc2017_fixture(root, subjects=("1", "2"), train_segments=2, test_segments=1, train_repeats=2,
                         test_repeats=2, fps=30, size=64, n_planted=400, signal=1.0, seed=0, log=print):
    """Write the fixture under ``root``; return the ``dataset`` config section that reads it.

    Parameters
    ----------
    root : str or Path
    subjects : sequence of str
        ``subject<s>`` folders.
    train_segments, test_segments, train_repeats, test_repeats : int
        The real design is 18 / 5 / 2 / 10.
    fps, size : movie frame rate (CC2017: 30) and square frame side (pixels).
    n_planted : int
        Responsive cortical grayordinates (indices 0 .. n_planted - 1).
    signal : float
        Planted response SD relative to the unit noise SD.
    """
    start = time.perf_counter()
    root = Path(root)
    rng = np.random.default_rng(seed)
    models = cifti.hcp_91k_axis()
    train, test = cc2017.segments(train_segments, test_segments)
    mixing = rng.normal(size=(8, n_planted))
    mixing /= np.linalg.norm(mixing, axis=0, keepdims=True)
    truth = {"n_planted": n_planted, "lag_trs": LAG_TRS, "planted_grayordinates": [0, n_planted]}
    for seg in train + test:
        params = _clip_params(rng, CLIPS_PER_SEGMENT)
        write_movie(root / "stimuli" / f"{seg}.mp4", params, fps, size)
        feats = clip_features(params)
        response = (feats - feats.mean(0)) / feats.std(0) @ mixing  # (240, n_planted)
        n_vol = 246 if seg.startswith("test") and seg != "test1" else 245
        first = 2 if n_vol == 246 else 1
        reps = train_repeats if seg.startswith("seg") else test_repeats
        for s in subjects:
            for rep in range(1, reps + 1):
                data = rng.standard_normal((n_vol, len(models)), dtype=np.float32)
                on = first + LAG_TRS
                data[on:on + CLIPS_PER_SEGMENT, :n_planted] += (signal * response).astype(np.float32)
                data += 1000.0 + np.linspace(0, 10, n_vol, dtype=np.float32)[:, None]
                cifti.write_dtseries(cc2017.run_path(root, s, seg, rep), data, TR, models)
        log(f"cc2017 fixture: {seg} ({n_vol} volumes x {len(models)} grayordinates, {reps} repeats, "
            f"{len(subjects)} subjects) {time.perf_counter() - start:.0f} s")
    (root / "fixture_truth.json").write_text(json.dumps(truth, indent=1))
    return {"name": "cc2017-fixture", "layout": "cc2017", "root": str(root), "simulate": False,
            "subjects": list(subjects), "tr": TR,
            "cc2017": {"space": "cifti", "train_segments": train_segments, "test_segments": test_segments,
                       "train_repeats": train_repeats, "test_repeats": test_repeats, "fps": fps}}


def main(argv=None):
    """``python -m fmrivid.simulate.cc2017_fixture ROOT [--full]``: write the fixture, print its dataset config."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("root")
    parser.add_argument("--subjects", default="1,2")
    parser.add_argument("--train-segments", type=int, default=2)
    parser.add_argument("--test-segments", type=int, default=1)
    parser.add_argument("--train-repeats", type=int, default=2)
    parser.add_argument("--test-repeats", type=int, default=2)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    ds = write_cc2017_fixture(args.root, args.subjects.split(","), args.train_segments, args.test_segments,
                              args.train_repeats, args.test_repeats, args.fps, args.size)
    print(yaml.safe_dump({"dataset": ds}, sort_keys=False))


if __name__ == "__main__":
    main()
