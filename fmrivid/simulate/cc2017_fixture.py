"""A CC2017-layout fixture with the real file names and shapes, with a planted signal, from small to the real design.

::

    <root>/subject<s>/fmri/seg<k>/cifti/seg<k>_<rep>_Atlas.dtseries.nii   245 volumes x 91,282 grayordinates
    <root>/subject<s>/fmri/test<k>/cifti/test<k>_<rep>_Atlas.dtseries.nii  245 (test1) / 246 (test2..) volumes
    <root>/stimuli/seg<k>.mp4, test<k>.mp4                                480-s movies (240 clips of 2 s)
    <root>/fixture_truth.json, <root>/fixture_manifest.json               planted signal; what was written

What is real: the names, the folder layout, the CIFTI-2 brain models (fsLR-32k cortex + subcortex, TR 2 s in
the series axis), the run lengths and trimming (1 or 2 leading + 4 trailing volumes around 240 movie volumes),
the movie length and frame rate. The counts (segments, repeats, subjects) and the frame size are arguments:
small by default (the rehearsal), the real design with ``fraction=1`` (:data:`REAL_DESIGN`: 18 training segments
x 2 repeats, 5 test segments x 10 repeats = 86 runs, ~7.75 GB per subject) or a fraction of it (:func:`design`).

Planted signal: each 2-s clip shows one coloured square on a coloured background moving in one direction. The
first ``n_planted`` cortical grayordinates (the same in every subject, so ISC/fSC have something to find) respond
to the clip's colours and motion (a fixed random mixing) 2 TRs (4 s) after the clip; everything else is noise on
a drifting baseline. The last clips' responses fall in the 4 trailing volumes, which is why the lag must be
applied before those are trimmed.

Writing streams: one run (245 x 91,282 float32, 89 MB) and one movie frame at a time are in memory. Every file
is written atomically and drawn from its own seed (segment, subject, repeat), so an interrupted write resumes
where it stopped with the same content, and a complete fixture (its manifest matches the arguments and every
listed file has its size) is reused as is.
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
N_GRAYORDINATES = 91282
# The CC2017 design per subject (Wen et al. 2017).
REAL_DESIGN = {"train_segments": 18, "test_segments": 5, "train_repeats": 2, "test_repeats": 10}
# Frame side of the full-scale fixture's movies. The sources here (REFERENCE.md, the seeds) do not state CC2017's
# stimulus frame size; 640 x 640 is a choice (square, and larger than every working size: 256 / 512 px).
REAL_FRAME_SIZE = 640
MANIFEST = "fixture_manifest.json"


def design(fraction):
    """Segment and repeat counts of ``fraction`` (0 < fraction <= 1) of :data:`REAL_DESIGN`.

    Fewer segments, the real repeats (2 / 10), run length and grayordinates: at least 2 training segments (the
    segment-wise reliability t-test needs two) and 1 test segment. 1/4: 4 + 1 segments, 1/2: 9 + 2, 1: 18 + 5.
    """
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        from fmrivid.errors import ConfigError

        raise ConfigError(f"fraction: expected a number in (0, 1]; found {fraction}")
    return {"train_segments": max(2, round(REAL_DESIGN["train_segments"] * fraction)),
            "test_segments": max(1, round(REAL_DESIGN["test_segments"] * fraction)),
            "train_repeats": REAL_DESIGN["train_repeats"], "test_repeats": REAL_DESIGN["test_repeats"]}


def run_volumes(seg):
    """Volumes of a run of segment ``seg``: 246 for test2..test5, else 245."""
    return 246 if seg.startswith("test") and seg != "test1" else 245


def run_bytes(n_volumes):
    """Bytes of one CIFTI-2 run as written here: float32 data + NIfTI-2 header with the brain-model XML (~0.6 MB)."""
    return n_volumes * N_GRAYORDINATES * 4 + 622_960


def fixture_bytes(train_segments, test_segments, train_repeats, test_repeats, n_subjects=1):
    """Estimated bytes of the CIFTI runs of a fixture (the movies add ~1% at most: flat colours compress)."""
    train, test = cc2017.segments(train_segments, test_segments)
    per_subject = sum(run_bytes(run_volumes(s)) * (train_repeats if s.startswith("seg") else test_repeats)
                      for s in train + test)
    return per_subject * n_subjects


def _clip_params(rng, n):
    """Per clip: background RGB, square RGB, motion (dx, dy) in pixels per frame."""
    return {"bg": rng.uniform(0, 255, (n, 3)), "fg": rng.uniform(0, 255, (n, 3)),
            "motion": rng.uniform(-1, 1, (n, 2))}


def clip_features(params):
    """The planted stimulus features of each clip (n, 8): background, square colour (scaled 0-1), motion."""
    return np.c_[params["bg"] / 255.0, params["fg"] / 255.0, params["motion"]].astype(np.float64)


def write_movie(path, params, fps, size, seconds_per_clip=TR):
    """Write one segment movie: clip i fills [i * 2 s, (i + 1) * 2 s), frame by frame (memory stays small).

    H.264 ``ultrafast`` (flat colours: ~0.3 MB per 1,000 frames): ~330 frames/s at 640 px, ~1,400 at 256 px on
    one core plus ffmpeg's."""
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


def _segment_seed(seed, seg):
    """Seed sequence of a segment: 0 for training, 1 for test, then its number."""
    return [int(seed), 0 if seg.startswith("seg") else 1, int(seg.removeprefix("seg").removeprefix("test"))]


def planted_response(seed, seg, n_planted):
    """(clip params, planted response (240, n_planted)) of segment ``seg``: standardised clip features x mixing."""
    mixing = np.random.default_rng([int(seed), 2]).normal(size=(8, n_planted))
    mixing /= np.linalg.norm(mixing, axis=0, keepdims=True)
    params = _clip_params(np.random.default_rng(_segment_seed(seed, seg)), CLIPS_PER_SEGMENT)
    feats = clip_features(params)
    return params, (feats - feats.mean(0)) / feats.std(0) @ mixing


def run_data(seed, seg, subject, rep, response, signal):
    """One run (n_volumes, n_grayordinates) float32: unit noise + planted response + drifting baseline."""
    n_vol = run_volumes(seg)
    first = 2 if n_vol == 246 else 1
    rng = np.random.default_rng(_segment_seed(seed, seg) + [int(subject) if str(subject).isdigit() else
                                                             sum(map(ord, str(subject))), int(rep)])
    data = rng.standard_normal((n_vol, N_GRAYORDINATES), dtype=np.float32)
    on = first + LAG_TRS
    data[on:on + CLIPS_PER_SEGMENT, :response.shape[1]] += (signal * response).astype(np.float32)
    data += 1000.0 + np.linspace(0, 10, n_vol, dtype=np.float32)[:, None]
    return data


def _dataset_section(root, subjects, counts, fps):
    return {"name": "cc2017-fixture", "layout": "cc2017", "root": str(root), "simulate": False,
            "subjects": list(subjects), "tr": TR, "cc2017": {"space": "cifti", **counts, "fps": fps}}


def _complete(root, manifest):
    """Whether ``manifest``'s files all exist under ``root`` with their sizes."""
    return all((root / rel).is_file() and (root / rel).stat().st_size == size
               for rel, size in manifest["files"].items())


def write_cc2017_fixture(root, subjects=("1", "2"), train_segments=2, test_segments=1, train_repeats=2,
                         test_repeats=2, fps=30, size=64, n_planted=400, signal=1.0, seed=0, log=print,
                         fraction=None):
    """Write the fixture under ``root`` (or reuse a complete one); return the ``dataset`` config section.

    Parameters
    ----------
    root : str or Path
    subjects : sequence of str
        ``subject<s>`` folders.
    train_segments, test_segments, train_repeats, test_repeats : int
        The real design is 18 / 5 / 2 / 10 (:data:`REAL_DESIGN`).
    fps, size : movie frame rate (CC2017: 30) and square frame side (pixels; :data:`REAL_FRAME_SIZE` at scale).
    n_planted : int
        Responsive cortical grayordinates (indices 0 .. n_planted - 1).
    signal : float
        Planted response SD relative to the unit noise SD.
    fraction : float or None
        If given, the counts are :func:`design` (fraction) and the four count arguments are ignored.

    The manifest (``fixture_manifest.json``: the arguments, every file's size, the bytes and seconds) is written
    last; a root whose manifest has other arguments is refused (InputError), one without a manifest resumes.
    """
    from fmrivid.errors import InputError

    start = time.perf_counter()
    root = Path(root)
    counts = design(fraction) if fraction is not None else {
        "train_segments": int(train_segments), "test_segments": int(test_segments),
        "train_repeats": int(train_repeats), "test_repeats": int(test_repeats)}
    args = {**counts, "subjects": [str(s) for s in subjects], "fps": int(fps), "size": int(size),
            "n_planted": int(n_planted), "signal": float(signal), "seed": int(seed), "version": 2}
    section = _dataset_section(root, subjects, counts, fps)
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("args") != args:
            raise InputError(manifest_path, f"a fixture written with {args} (or a new root)",
                             f"one written with {manifest.get('args')}")
        if _complete(root, manifest):
            log(f"cc2017 fixture: reusing {root} ({manifest['bytes'] / 1e9:.2f} GB, complete)")
            return section
        log(f"cc2017 fixture: {root} is incomplete: resuming")
        manifest_path.unlink()
    train, test = cc2017.segments(counts["train_segments"], counts["test_segments"])
    total = fixture_bytes(*counts.values(), n_subjects=len(subjects))
    files, done, written = {}, 0, 0
    models = cifti.hcp_91k_axis()
    for seg in train + test:
        params, response = planted_response(seed, seg, n_planted)
        movie = root / "stimuli" / f"{seg}.mp4"
        t0 = time.perf_counter()
        if not movie.exists():
            write_movie(movie, params, fps, size)
            log(f"cc2017 fixture: {movie.name} ({size} px, {fps} fps, {movie.stat().st_size / 1e6:.1f} MB) "
                f"{time.perf_counter() - t0:.0f} s")
        files[str(movie.relative_to(root))] = movie.stat().st_size
        reps = counts["train_repeats"] if seg.startswith("seg") else counts["test_repeats"]
        for s in subjects:
            for rep in range(1, reps + 1):
                path = cc2017.run_path(root, s, seg, rep)
                if not path.exists():
                    cifti.write_dtseries(path, run_data(seed, seg, s, rep, response, signal), TR, models)
                    written += path.stat().st_size
                files[str(path.relative_to(root))] = path.stat().st_size
                done += path.stat().st_size
        elapsed = time.perf_counter() - start
        eta = elapsed / max(written, 1) * (total - done) if written else 0.0
        log(f"cc2017 fixture: {seg} ({run_volumes(seg)} volumes x {N_GRAYORDINATES} grayordinates, {reps} repeats, "
            f"{len(subjects)} subjects) {done / 1e9:.2f} / {total / 1e9:.2f} GB, {elapsed:.0f} s"
            + (f", ~{eta:.0f} s left" if written and done < total else ""))
    truth = {"n_planted": int(n_planted), "lag_trs": LAG_TRS, "planted_grayordinates": [0, int(n_planted)]}
    (root / "fixture_truth.json").write_text(json.dumps(truth, indent=1))
    manifest = {"args": args, "files": files, "bytes": int(sum(files.values())),
                "seconds": round(time.perf_counter() - start, 1)}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return section


def main(argv=None):
    """``python -m fmrivid.simulate.cc2017_fixture ROOT [--fraction F]``: write the fixture, print its dataset config."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("root")
    parser.add_argument("--subjects", default="1,2")
    parser.add_argument("--train-segments", type=int, default=2)
    parser.add_argument("--test-segments", type=int, default=1)
    parser.add_argument("--train-repeats", type=int, default=2)
    parser.add_argument("--test-repeats", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=None,
                        help=f"a fraction of the real design {REAL_DESIGN} (overrides the four counts)")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help=f"frame side (full scale: {REAL_FRAME_SIZE})")
    args = parser.parse_args(argv)
    ds = write_cc2017_fixture(args.root, args.subjects.split(","), args.train_segments, args.test_segments,
                              args.train_repeats, args.test_repeats, args.fps, args.size, fraction=args.fraction)
    print(yaml.safe_dump({"dataset": ds}, sort_keys=False))


if __name__ == "__main__":
    main()
