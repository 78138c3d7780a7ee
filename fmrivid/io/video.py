"""Video files: read any container ffmpeg reads, write H.264 MP4 for viewing.

Metrics never read MP4 back (it is lossy); they use the lossless arrays.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path


def read_video(path):
    """Decode a whole video into a uint8 array (T, H, W, 3) and its fps.

    Raises InputError naming the file when it is missing, unreadable or empty.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "a video file", "no such file")
    try:
        reader = imageio.get_reader(str(path), format="FFMPEG")
        fps = float(reader.get_meta_data().get("fps", 0.0))
        frames = [np.asarray(fr)[..., :3] for fr in reader]
        reader.close()
    except Exception as exc:  # imageio raises several types for broken files
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[0] if lines else type(exc).__name__
        if len(lines) > 1:  # imageio appends ffmpeg's whole stderr: keep its last line only
            detail += f" ({lines[-1].replace(str(path), '<file>')})"
        raise InputError(path, "a readable video", f"decoder error: {detail}") from None
    if not frames:
        raise InputError(path, "at least one frame", "0 frames")
    return np.stack(frames).astype(np.uint8), fps


def video_meta(path):
    """(fps, frame count announced by the container header; 0 when unknown) without decoding any frame."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise InputError(path, "a video file", "no such file")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0.0, 0
        return float(capture.get(cv2.CAP_PROP_FPS) or 0.0), max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    finally:
        capture.release()


def iter_frames(path):
    """Decode a video one frame at a time: yields uint8 (H, W, 3) arrays, so memory does not grow with length.

    Raises InputError naming the file when it cannot be opened or decoded.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "a video file", "no such file")
    try:
        reader = imageio.get_reader(str(path), format="FFMPEG")
    except Exception as exc:
        raise InputError(path, "a readable video", f"decoder error: {_first_line(exc, path)}") from None
    try:
        while True:
            try:
                frame = reader.get_next_data()
            except (IndexError, StopIteration):
                return
            except Exception as exc:
                raise InputError(path, "a readable video", f"decoder error: {_first_line(exc, path)}") from None
            yield np.asarray(frame)[..., :3]
    finally:
        reader.close()


def _first_line(exc, path):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = lines[0] if lines else type(exc).__name__
    if len(lines) > 1:
        detail += f" ({lines[-1].replace(str(path), '<file>')})"
    return detail


def write_mp4(path, frames, fps):
    """Write uint8 frames (T, H, W, 3) to an H.264 MP4 atomically.

    H.264 needs even sides: an odd height or width is padded by repeating the last row or column (callers
    that want another border, such as the white one of the previews, pad before).
    """
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_mp4({path}): frames must be (T, H, W, 3), got {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(
            str(tmp), format="FFMPEG", fps=fps, codec="libx264", quality=None,
            ffmpeg_params=["-crf", "10", "-preset", "veryfast"],
            pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
        )
        for frame in frames:
            writer.append_data(frame)
        writer.close()


def write_clip_mp4s(out_dir, ids, videos, fps, log=print):
    """One H.264 MP4 per clip, ``<out_dir>/<clip_id>.mp4``, written into a temporary folder renamed at the end.

    Parameters
    ----------
    videos : ndarray, uint8, shape (N, T, H, W, 3)
        The lossless reconstructions (odd sizes are padded by :func:`fmrivid.io.video.write_mp4`).
    """
    import re

    from fmrivid.io.video import write_mp4

    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8:
        raise InputError("reconstructions", "uint8 clips of shape (N, T, H, W, 3)",
                         f"{videos.dtype} of shape {videos.shape}")
    names = [re.sub(r"[^A-Za-z0-9._-]", "_", str(c)) for c in ids]
    if len(set(names)) != len(names):
        raise InputError("clip ids", "ids that stay distinct as file names", f"collisions in {names[:5]}...")
    with atomic_path(out_dir, suffix_keep=False) as tmp:
        tmp.mkdir(parents=True)
        for i, (name, clip) in enumerate(zip(names, videos)):
            write_mp4(tmp / f"{name}.mp4", clip, float(fps))
            if (i + 1) % 100 == 0:
                log(f"  {i + 1}/{len(names)} MP4s written")
    log(f"{len(names)} per-clip MP4s in {out_dir}")
