"""Sample frames from stimulus videos: n frames per clip, square, uint8.

Timing convention: a clip of length ``L`` seconds is cut into ``n_frames``
equal intervals and the frame shown at the start of each interval is taken,
i.e. the clip is resampled to ``n_frames / L`` fps starting at its first frame
(the convention of the CC2017 papers: 6 frames of a 2-s, 30-fps clip are
frames 0, 10, ..., 50). Frame ``i`` is the one shown during
``[i / fps, (i + 1) / fps)``.

:func:`extract_chunks` takes consecutive frames at the video's own rate instead (the encoder-decoder's
``features/encoder_chunks.h5``): ``n_frames`` frames from the one on screen at the clip's start.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fmrivid.errors import InputError
from fmrivid.io.video import iter_frames, read_video, video_meta

__all__ = ["extract_chunks", "extract_clip_frames", "extract_frames", "frame_indices"]

_EPS = 1e-6


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer; found {value!r}")
    return int(value)


def frame_indices(n_video_frames, fps, n_frames, duration=None, start=0.0, path="<video>"):
    """Indices of the frames sampled from a decoded video.

    Parameters
    ----------
    n_video_frames : int
        Number of decoded frames ``T``.
    fps : float
        Frame rate (only needed when ``duration`` or ``start`` is given).
    n_frames : int
        How many frames to sample.
    duration : float, optional
        Clip length in seconds from ``start``; default: to the end of the video.
    start : float
        Clip start in seconds.
    path : str or Path
        Named in errors.

    Returns
    -------
    ndarray of int, shape (n_frames,)
        Non-decreasing indices in ``[0, T)`` (repeated when the clip has fewer
        frames than ``n_frames``).

    Raises
    ------
    InputError
        The video is shorter than ``start + duration`` or its fps is unknown.
    """
    n_frames = _check_positive_int("n_frames", n_frames)
    if duration is None and not start:
        first, span = 0.0, float(n_video_frames)
    else:
        if not fps or fps <= 0:
            raise InputError(path, "a known frame rate to cut a clip in seconds",
                             f"fps={fps!r}")
        length = n_video_frames / fps
        if duration is not None and not (duration > 0):
            raise ValueError(f"duration: expected a positive number of seconds; found {duration!r}")
        end = length if duration is None else start + duration
        if start < 0 or end > length + 0.5 / fps:
            raise InputError(
                path, f"a video covering {start:g}-{end:g} s",
                f"{n_video_frames} frames at {fps:g} fps = {length:.3f} s",
            )
        first, span = start * fps, (end - start) * fps
    steps = np.floor(first + np.arange(n_frames) * (span / n_frames) + _EPS).astype(int)
    return np.clip(steps, 0, n_video_frames - 1)


def _resize(frames, size):
    import cv2

    if frames.shape[1:3] == (size, size):
        return np.ascontiguousarray(frames)
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def _check_complete(path, n_decoded):
    """Refuse a file whose container announces more frames than could be decoded."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        announced = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else -1
    finally:
        capture.release()
    if announced > 0 and n_decoded < announced - max(2.0, 0.05 * announced):
        raise InputError(
            path, f"{int(announced)} frames (as the container header says)",
            f"only {n_decoded} decodable frames: the file looks truncated",
        )


def _load_video(path):
    video, fps = read_video(path)
    _check_complete(path, len(video))
    return video, fps


def _sample(video, fps, path, n_frames, size, duration, start):
    index = frame_indices(len(video), fps, n_frames, duration, start, path)
    return _resize(video[index], size)


def extract_clip_frames(video_path, n_frames, size, duration=None, *, start=0.0):
    """Sample ``n_frames`` frames uniformly over a clip and resize them to a square.

    Parameters
    ----------
    video_path : str or Path
        Any video ffmpeg reads.
    n_frames : int
        Frames to sample (see the module docstring for the timing convention).
    size : int
        Output side in pixels; frames are resized to ``size x size`` with area
        interpolation (no crop: non-square videos are squeezed).
    duration : float, optional
        Use the first ``duration`` seconds after ``start`` instead of the whole video.
    start : float
        Clip start in seconds (default 0).

    Returns
    -------
    ndarray of uint8, shape (n_frames, size, size, 3)

    Raises
    ------
    InputError
        Naming the file: missing, unreadable or truncated video, or a video
        shorter than ``start + duration``.
    """
    size = _check_positive_int("size", size)
    video, fps = _load_video(video_path)
    return _sample(video, fps, video_path, n_frames, size, duration, start)


def _read_table(table):
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        return table, "<stimulus table>"
    path = Path(table)
    if not path.is_file():
        raise InputError(path, "a stimulus table (TSV or CSV)", "no such file")
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    return pd.read_csv(path, sep=sep, dtype={"clip_id": str, "file": str}), str(path)


def _check_table(table, name, columns):
    missing = [c for c in columns if c is not None and c not in table.columns]
    if missing:
        raise InputError(name, f"columns {[c for c in columns if c]}",
                         f"columns {list(table.columns)} (missing {missing})")
    ids = table["clip_id"].astype(str)
    duplicated = sorted(set(ids[ids.duplicated()]))
    if duplicated:
        raise InputError(name, "unique clip_id values", f"duplicates {duplicated[:5]}")


def _row_seconds(table, column, row, name, clip_id):
    if column is None:
        return None
    value = table[column].iloc[row]
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise InputError(name, f"a number of seconds in column {column!r} for clip {clip_id!r}",
                         repr(table[column].iloc[row]))
    return value


def extract_frames(table, root, n_frames, size, duration_col=None, *, start_col=None):
    """Sample frames of every clip of a stimulus table.

    Each video file is decoded once, however many clips (rows) point to it.

    Parameters
    ----------
    table : pandas.DataFrame or str or Path
        Columns ``clip_id`` and ``file`` (relative to ``root``); optionally the
        columns named by ``duration_col`` / ``start_col`` (seconds). A path is
        read as TSV (or CSV for ``.csv``).
    root : str or Path
        Directory the ``file`` column is relative to.
    n_frames, size : int
        As in :func:`extract_clip_frames`.
    duration_col : str, optional
        Column holding each clip's duration in seconds (default: whole video).
    start_col : str, optional
        Column holding each clip's start in seconds (default: 0).

    Returns
    -------
    clip_ids : list of str
        In table order.
    frames : ndarray of uint8, shape (N, n_frames, size, size, 3)

    Raises
    ------
    InputError
        Bad table, or a bad video; the message names the file and the clip.
    """
    n_frames = _check_positive_int("n_frames", n_frames)
    size = _check_positive_int("size", size)
    table, name = _read_table(table)
    _check_table(table, name, ["clip_id", "file", duration_col, start_col])
    clip_ids = [str(c) for c in table["clip_id"]]
    files = [str(f) for f in table["file"]]
    out = np.zeros((len(table), n_frames, size, size, 3), dtype=np.uint8)
    by_file = {}
    for row, file in enumerate(files):
        by_file.setdefault(file, []).append(row)
    for file, rows in by_file.items():
        path = Path(root) / file
        spans = [(_row_seconds(table, duration_col, row, name, clip_ids[row]),
                  _row_seconds(table, start_col, row, name, clip_ids[row]) or 0.0) for row in rows]
        fps, announced = _with_clips(video_meta, [clip_ids[r] for r in rows], path)
        if announced > 0 and fps > 0 and all(d is not None for d, _ in spans):
            _with_clips(_stream_sample, [clip_ids[r] for r in rows], path, fps, announced, rows, spans,
                        [clip_ids[r] for r in rows], n_frames, size, out)
            continue
        # Whole-video clips (their sampling depends on the decoded length) or no frame count in the header.
        video, fps = _with_clips(_load_video, [clip_ids[r] for r in rows], path)
        for row, (duration, start) in zip(rows, spans):
            out[row] = _with_clips(_sample, [clip_ids[row]], video, fps, path, n_frames, size,
                                   duration, start)
    return clip_ids, out


def _fill_wanted(path, wanted, size, out):
    """Decode ``path`` frame by frame up to the last wanted frame; put frame ``i`` (resized) at every
    ``out[row, slot]`` of ``wanted[i]``. Returns how many frames were decoded (fewer: the file ended early)."""
    last = max(wanted)
    decoded = 0
    for i, frame in enumerate(iter_frames(path)):
        decoded = i + 1
        if i in wanted:
            small = _resize(frame[None], size)[0]
            for row, slot in wanted[i]:
                out[row, slot] = small
        if i >= last:
            break
    return decoded


def _stream_sample(path, fps, announced, rows, spans, ids, n_frames, size, out):
    """Fill ``out[rows]`` decoding ``path`` once, frame by frame, keeping only the sampled frames.

    Memory holds one decoded frame at a time (an 8-min, 30-fps movie is 14,400 frames: ~11 GB at 512 x 512 if
    decoded whole). Indices come from the container's frame count; decoding stops after the last needed frame,
    and a file that ends before it is refused as truncated.
    """
    wanted = {}
    for row, cid, (duration, start) in zip(rows, ids, spans):
        index = _with_clips(frame_indices, [cid], announced, fps, n_frames, duration, start, path)
        for slot, i in enumerate(index):
            wanted.setdefault(int(i), []).append((row, slot))
    last = max(wanted)
    decoded = _fill_wanted(path, wanted, size, out)
    if decoded <= last:
        raise InputError(path, f"{announced} frames (as the container header says)",
                         f"only {decoded} decodable frames: the file looks truncated")


def _video_fps(path):
    """Frame rate from the container (OpenCV), else from ffmpeg's metadata; InputError when neither knows it."""
    import imageio.v2 as imageio

    fps, _ = video_meta(path)
    if not fps or fps <= 0:
        try:
            reader = imageio.get_reader(str(path), format="FFMPEG")
            try:
                fps = float(reader.get_meta_data().get("fps", 0.0) or 0.0)
            finally:
                reader.close()
        except Exception:
            fps = 0.0
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise InputError(path, "a known frame rate to find a clip's first frame", f"fps={fps!r}")
    return float(fps)


def extract_chunks(table, root, n_frames, size, start_col=None, log=print, out=None):
    """``n_frames`` consecutive frames of every clip at its video's native frame rate, from the clip's start.

    Unlike :func:`extract_frames` nothing is resampled in time: the chunk of a clip starting at ``t`` seconds
    in a video of ``fps`` frames per second holds frames ``i0 .. i0 + n_frames - 1`` with
    ``i0 = floor(t * fps + 1e-6)``, the frame on screen at ``t`` (the module's timing convention, also the first
    frame of ``features/frames.h5``; ``round(t * fps)`` for starts on the frame grid). Each video is decoded
    once, frame by frame, keeping only the frames of some chunk and stopping after the last one.

    Parameters
    ----------
    table : pandas.DataFrame or str or Path
        Columns ``clip_id`` and ``file`` (relative to ``root``), optionally ``start_col`` (seconds).
    root : str or Path
    n_frames : int
        Frames per chunk (``decode.encoder.chunk_frames``).
    size : int
        Output side in pixels (area interpolation, as :func:`extract_frames`).
    start_col : str, optional
        Column of each clip's start in seconds (default: 0).
    log : callable
    out : array-like, shape (N, n_frames, size, size, 3), optional
        Where to write the chunks frame by frame (e.g. an HDF5 dataset of
        :func:`fmrivid.io.h5.feature_writer`, so that nothing is held in memory); default a new array.

    Returns
    -------
    clip_ids : list of str
        In table order.
    chunks : ndarray of uint8, shape (N, n_frames, size, size, 3)
        ``out`` when given.
    fps : dict of str to float
        Frame rate of each clip's video.

    Raises
    ------
    InputError
        Bad table or video; a video with fewer than ``n_frames`` frames from a clip's start (the message names
        the video, its fps, the clip start and how many frames were available).
    """
    n_frames = _check_positive_int("n_frames", n_frames)
    size = _check_positive_int("size", size)
    table, name = _read_table(table)
    _check_table(table, name, ["clip_id", "file", start_col])
    clip_ids = [str(c) for c in table["clip_id"]]
    if out is None:
        out = np.zeros((len(table), n_frames, size, size, 3), dtype=np.uint8)
    elif tuple(out.shape) != (len(table), n_frames, size, size, 3):
        raise ValueError(f"extract_chunks: out has shape {tuple(out.shape)}; expected "
                         f"{(len(table), n_frames, size, size, 3)}")
    by_file = {}
    for row, file in enumerate(str(f) for f in table["file"]):
        by_file.setdefault(file, []).append(row)
    rates = {}
    for file, rows in by_file.items():
        path = Path(root) / file
        ids = [clip_ids[r] for r in rows]
        fps = _with_clips(_video_fps, ids, path)
        starts = [_row_seconds(table, start_col, r, name, clip_ids[r]) or 0.0 for r in rows]
        for cid, start in zip(ids, starts):
            if start < 0:
                raise InputError(name, f"a clip start >= 0 s for clip {cid!r}", f"{start:g}")
        firsts = [int(math.floor(start * fps + _EPS)) for start in starts]
        _stream_chunks(path, fps, rows, ids, starts, firsts, n_frames, size, out)
        rates.update({cid: fps for cid in ids})
    log(f"encoder chunks: {len(clip_ids)} clips x {n_frames} consecutive frames from {len(by_file)} videos "
        f"({', '.join(f'{f:g}' for f in sorted(set(rates.values())))} fps)")
    return clip_ids, out, rates


def _stream_chunks(path, fps, rows, ids, starts, firsts, n_frames, size, out):
    """Fill ``out[row, k]`` with frame ``first + k`` of ``path``, decoding it once, one frame at a time."""
    wanted = {}
    for row, first in zip(rows, firsts):
        for k in range(n_frames):
            wanted.setdefault(first + k, []).append((row, k))
    decoded = _fill_wanted(path, wanted, size, out)
    short = [(cid, start, first) for cid, start, first in zip(ids, starts, firsts) if first + n_frames > decoded]
    if short:
        cid, start, first = short[0]
        available = max(0, decoded - first)
        more = f" (and {len(short) - 1} more clips)" if len(short) > 1 else ""
        raise InputError(
            path, f"{n_frames} consecutive frames (decode.encoder.chunk_frames) from the start of clip {cid!r} at "
                  f"{start:g} s (frame {first}) of this {fps:g}-fps video",
            f"{available} frames available from there ({decoded} decodable frames = {decoded / fps:.3f} s in all)"
            f"{more}: use videos of a higher frame rate, lower decode.encoder.chunk_frames to at most {available}, "
            "or set decode.encoder.frame_source: frames")


def _with_clips(func, clips, *args):
    """Call ``func(*args)``; add the clip ids to the message of an InputError."""
    try:
        return func(*args)
    except InputError as exc:
        more = "..." if len(clips) > 5 else ""
        label = f"clip {clips[0]!r}" if len(clips) == 1 else f"clips {clips[:5]}{more}"
        raise InputError(exc.path, exc.expected, f"{exc.found} [{label}]") from None
