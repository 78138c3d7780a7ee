"""Procedural stimulus clips for the demo dataset.

Every clip is a coloured shape moving linearly over a neutral textured
background. Four attributes define a clip and its caption::

    shape   circle | square | triangle | cross
    colour  red | green | blue | yellow
    motion  left | right | up | down
    texture plain | striped | checkered

The hidden "true" stimulus features that drive the simulated BOLD responses
are computed here too (:func:`feature_matrix`).
"""

from __future__ import annotations

import itertools

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
MOTIONS = ("left", "right", "up", "down")
TEXTURES = ("plain", "striped", "checkered")

#: RGB of each shape colour (saturated, far from the grey background tones).
COLOUR_RGB = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
}
#: Unit displacement (dx, dy) per frame of each motion, image coordinates (y down).
MOTION_VEC = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
#: Grey levels of the background: plain uses the first, patterns alternate the last two.
BACKGROUND_GREY = (90, 70, 110)
#: Side of the coarse grid of mean colours in the low-level features.
GRID = 4


def caption(shape, colour, motion, texture):
    """Caption of a clip, e.g. ``"a red circle drifts left over a striped background"``.

    Parameters
    ----------
    shape, colour, motion, texture : str
        Attribute values (see the module constants).

    Returns
    -------
    str
    """
    return f"a {colour} {shape} drifts {motion} over a {texture} background"


def n_frames(clip_duration, fps):
    """Number of frames of a clip: ``clip_duration * fps``, which must be a whole number.

    Raises
    ------
    ValueError
        When ``clip_duration * fps`` is not (close to) an integer >= 1.
    """
    value = float(clip_duration) * float(fps)
    count = int(round(value))
    if count < 1 or abs(value - count) > 1e-6:
        raise ValueError(
            f"clip_duration * fps: expected a whole number of frames >= 1; found {value}"
        )
    return count


def shape_radius(size):
    """Half-width (pixels) of the shape: the shape is about a quarter of the frame wide."""
    return size / 8.0


def motion_speed(size, frames):
    """Displacement in pixels per frame: ``size / 24`` (2.67 px at 64 px), less if the path would not fit."""
    radius = shape_radius(size)
    room = size - 1 - 2 * radius - 2  # travel that keeps the whole shape inside with a 1 px margin
    if frames < 2:
        return 0.0
    return float(min(size / 24.0, max(room, 0.0) / (frames - 1)))


def all_combinations():
    """Every (shape, colour, motion, texture) combination, in a fixed order (192 of them)."""
    return list(itertools.product(SHAPES, COLOURS, MOTIONS, TEXTURES))


def sample_clips(n_train, n_test, size, frames, rng):
    """Draw the clips: distinct attribute combinations and start positions.

    Combinations are sampled without replacement, so no two clips (and in
    particular no training and test clip) share one.

    Parameters
    ----------
    n_train, n_test : int
        Numbers of training and test clips.
    size : int
        Frame side in pixels.
    frames : int
        Frames per clip.
    rng : numpy.random.Generator
        Source of randomness (seeded by the caller).

    Returns
    -------
    list of dict
        One dict per clip (training clips first) with keys ``clip_id``, ``split``,
        ``shape``, ``colour``, ``motion``, ``texture``, ``caption``, ``start``
        (x, y of the shape centre in the first frame) and ``speed`` (px/frame).
    """
    combos = all_combinations()
    total = n_train + n_test
    if total > len(combos):
        raise ValueError(
            f"n_train_clips + n_test_clips: expected at most {len(combos)} "
            f"(distinct attribute combinations); found {total}"
        )
    picks = rng.choice(len(combos), size=total, replace=False)
    speed = motion_speed(size, frames)
    clips = []
    for index, pick in enumerate(picks):
        split = "train" if index < n_train else "test"
        number = index + 1 if split == "train" else index - n_train + 1
        shape, colour, motion, texture = combos[int(pick)]
        clips.append({
            "clip_id": f"{split}{number:03d}",
            "split": split,
            "shape": shape,
            "colour": colour,
            "motion": motion,
            "texture": texture,
            "caption": caption(shape, colour, motion, texture),
            "start": _start_position(motion, size, frames, speed, rng),
            "speed": speed,
        })
    return clips


def _start_position(motion, size, frames, speed, rng):
    """Seeded start centre (x, y) that keeps the shape inside the frame along its whole path."""
    radius = shape_radius(size)
    low, high = radius + 1.0, size - 2.0 - radius
    travel = speed * (frames - 1)
    dx, dy = MOTION_VEC[motion]
    bounds = []
    for d in (dx, dy):
        lo = low - min(d, 0.0) * travel  # moving towards 0: start further from 0
        hi = high - max(d, 0.0) * travel
        bounds.append((lo, max(lo, hi)))
    return tuple(float(rng.uniform(lo, hi)) for lo, hi in bounds)


def background(texture, size):
    """Static neutral background (size, size, 3) uint8 for a texture name."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(size // 8, 2)
    plain, dark, light = BACKGROUND_GREY
    if texture == "plain":
        grey = np.full((size, size), plain)
    elif texture == "striped":
        grey = np.where(((xx + yy) // period) % 2 == 0, dark, light)
    elif texture == "checkered":
        grey = np.where((xx // period + yy // period) % 2 == 0, dark, light)
    else:
        raise ValueError(f"texture: expected one of {TEXTURES}; found {texture!r}")
    return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)


def shape_mask(shape, centre, size):
    """Boolean (size, size) mask of a shape centred at ``centre`` = (x, y) in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - centre[0], yy - centre[1]
    r = shape_radius(size)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if shape == "triangle":  # apex up, base at +0.8 r, base half-width r
        return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8)
    if shape == "cross":
        arm = r / 3.0
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"shape: expected one of {SHAPES}; found {shape!r}")


def render_clip(clip, size, frames):
    """Render one clip losslessly.

    Parameters
    ----------
    clip : dict
        An entry of :func:`sample_clips`.
    size, frames : int
        Frame side (pixels) and number of frames.

    Returns
    -------
    numpy.ndarray
        uint8 array (frames, size, size, 3).
    """
    base = background(clip["texture"], size)
    rgb = np.array(COLOUR_RGB[clip["colour"]], dtype=np.uint8)
    dx, dy = MOTION_VEC[clip["motion"]]
    x0, y0 = clip["start"]
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        centre = (x0 + dx * clip["speed"] * t, y0 + dy * clip["speed"] * t)
        frame = base.copy()
        frame[shape_mask(clip["shape"], centre, size)] = rgb
        out[t] = frame
    return out


def grid_means(frame, grid=GRID):
    """Mean RGB of each cell of a ``grid`` x ``grid`` partition of a frame -> (grid * grid * 3,) float64."""
    frame = np.asarray(frame, dtype=np.float64)
    rows = np.array_split(np.arange(frame.shape[0]), grid)
    cols = np.array_split(np.arange(frame.shape[1]), grid)
    cells = [frame[r[0]:r[-1] + 1, c[0]:c[-1] + 1].mean(axis=(0, 1)) for r in rows for c in cols]
    return np.concatenate(cells)


def _one_hot(value, levels):
    vec = np.zeros(len(levels))
    vec[levels.index(value)] = 1.0
    return vec


def feature_blocks(clips, videos):
    """Raw (unstandardised) feature blocks of every clip.

    Returns
    -------
    dict
        block name -> (names list, (n_clips, n_cols) float64 array), in the order
        grid, colour, motion (low level), shape, texture (high level).
    """
    mid = [v[v.shape[0] // 2] for v in videos]
    grid_names = [f"grid_r{i}c{j}_{ch}" for i in range(GRID) for j in range(GRID) for ch in "RGB"]
    blocks = {"grid": (grid_names, np.stack([grid_means(f) for f in mid]))}
    for key, levels in (("colour", COLOURS), ("motion", MOTIONS), ("shape", SHAPES), ("texture", TEXTURES)):
        names = [f"{key}_{level}" for level in levels]
        blocks[key] = (names, np.stack([_one_hot(c[key], levels) for c in clips]))
    return blocks


#: Which blocks are low-level and which high-level.
LEVELS = {"low": ("grid", "colour", "motion"), "high": ("shape", "texture")}


def standardise_block(block):
    """Z-score every column over clips (constant columns -> 0), then scale the block to unit total variance."""
    block = np.asarray(block, dtype=np.float64)
    std = block.std(axis=0)
    z = np.where(std > 0, (block - block.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
    return z / np.sqrt(block.shape[1])


def feature_matrix(clips, videos):
    """The hidden stimulus features: every block standardised, blocks concatenated.

    Parameters
    ----------
    clips : list of dict
        Entries of :func:`sample_clips`.
    videos : list of numpy.ndarray
        Lossless frames of each clip (as from :func:`render_clip`).

    Returns
    -------
    features : numpy.ndarray
        (n_clips, n_features) float64; each block has zero-mean columns and unit total variance.
    names : list of str
        Feature names, e.g. ``grid_r0c0_R``, ``colour_red``, ``shape_circle``.
    """
    blocks = feature_blocks(clips, videos)
    names, parts = [], []
    for key in LEVELS["low"] + LEVELS["high"]:
        block_names, values = blocks[key]
        names.extend(block_names)
        parts.append(standardise_block(values))
    return np.concatenate(parts, axis=1), names
