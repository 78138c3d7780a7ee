"""Peak memory of rule frames' extraction: streamed (fmrivid today) vs decoding the whole movie (before).

A CC2017 segment is an 8-min, 30-fps movie (14,400 frames); its 240 clips of 2 s each give 6 frames. Decoding the
whole movie first holds every frame (~11 GB at 512 x 512 x 3); streaming keeps one decoded frame at a time plus
the sampled output. Each measurement runs in a fresh process (peak RSS from getrusage), side by side in one run:

    python benchmarks/frames_stream.py                 # 1-min and 8-min movies at 512 x 512 (writes ~1 GB in /tmp)
    python benchmarks/frames_stream.py --scale smoke   # seconds (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCALES = {"smoke": {"minutes": [0.1, 0.2], "size": 64, "whole_max_min": 0.2},
          "cc2017": {"minutes": [1, 8], "size": 512, "whole_max_min": 1}}


def _child(movie, minutes, mode, n_frames=6, size=256):
    """In a fresh process: extract every 2-s clip's frames; print peak RSS (MB) and seconds."""
    import pandas as pd

    from fmrivid.features import frames

    n_clips = int(round(minutes * 30))
    table = pd.DataFrame({"clip_id": [f"c{i:03d}" for i in range(n_clips)], "file": [Path(movie).name] * n_clips,
                          "start": 2.0 * np.arange(n_clips), "duration": 2.0})
    if mode == "whole":  # the previous implementation: decode everything, then sample
        frames.video_meta = lambda path: (0.0, 0)  # no header count -> the whole-decode path
    start = time.perf_counter()
    ids, out = frames.extract_frames(table, Path(movie).parent, n_frames, min(size, 256), "duration",
                                     start_col="start")
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak_mb, 1), "seconds": round(seconds, 2), "clips": len(ids),
                      "output_mb": round(out.nbytes / 1e6, 1)}))


def measure(movie, minutes, mode, size):
    proc = subprocess.run([sys.executable, __file__, "--child", str(movie), str(minutes), mode, str(size)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cc2017")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        movie, minutes, mode, size = args.child
        return _child(movie, float(minutes), mode, size=int(size))
    from fmrivid.simulate.cc2017_fixture import _clip_params, write_movie

    scale = SCALES[args.scale]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in scale["minutes"]:
            movie = Path(tmp) / f"movie_{minutes}min.mp4"
            start = time.perf_counter()
            write_movie(movie, _clip_params(np.random.default_rng(0), int(round(minutes * 30))), 30, scale["size"])
            print(f"wrote {movie.name}: {minutes} min at 30 fps, {scale['size']} px "
                  f"({movie.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - start:.0f} s)", flush=True)
            modes = ["stream"] + (["whole"] if minutes <= scale["whole_max_min"] else [])
            for mode in modes:
                row = {"minutes": minutes, "frames": int(minutes * 60 * 30), "mode": mode,
                       **measure(movie, minutes, mode, scale["size"])}
                rows.append(row)
                print(json.dumps(row), flush=True)
    stream = {r["minutes"]: r["peak_rss_mb"] for r in rows if r["mode"] == "stream"}
    whole = {r["minutes"]: r["peak_rss_mb"] for r in rows if r["mode"] == "whole"}
    lo, hi = min(stream), max(stream)
    print(f"streamed peak RSS: {stream[lo]:.0f} MB at {lo} min, {stream[hi]:.0f} MB at {hi} min "
          f"(x{stream[hi] / stream[lo]:.2f} for x{hi / lo:g} the movie)")
    for m, v in whole.items():
        print(f"whole-movie decode at {m} min: {v:.0f} MB (x{v / stream[m]:.1f} the streamed peak)")
    return rows


if __name__ == "__main__":
    main()
