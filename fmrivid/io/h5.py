"""HDF5 feature store: one file per feature, rows keyed by clip id.

Layout of a feature file::

    /clip_id    (N,) variable-length UTF-8 strings
    /features   (N, ...) array (float32 embeddings, uint8 frames, ...)
    attrs       model id, revision, dtype, settings (JSON-serialisable values)
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import h5py
import numpy as np

from fmrivid.errors import InputError
from fmrivid.io.atomic import atomic_path

_STR = h5py.string_dtype("utf-8")


def _attr_value(value):
    if isinstance(value, (str, int, float, bool, np.integer, np.floating)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def write_features(path, clip_ids, features, attrs=None, compression="gzip", extra=None):
    """Write ``features`` (N, ...) with their ``clip_ids`` atomically to ``path``.

    ``extra``: more datasets of the same file, name -> array (e.g. a decoder's alternative predictions of the same
    clips, ``fmri_only``, or its ``negative`` condition), read back with ``read_features(path, dataset=name)``.
    """
    features = np.asarray(features)
    clip_ids = [str(c) for c in clip_ids]
    if len(clip_ids) != features.shape[0]:
        raise ValueError(
            f"write_features({path}): {len(clip_ids)} clip ids for {features.shape[0]} rows"
        )
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("clip_id", data=np.array(clip_ids, dtype=object), dtype=_STR)
            f.create_dataset("features", data=features, compression=compression)
            for key, value in (extra or {}).items():
                if key in ("clip_id", "features"):
                    raise ValueError(f"write_features({path}): extra dataset {key!r} would replace the main one")
                f.create_dataset(key, data=np.asarray(value), compression=compression)
            for key, value in (attrs or {}).items():
                f.attrs[key] = _attr_value(value)


@contextlib.contextmanager
def feature_writer(path, clip_ids, shape, dtype, attrs=None, compression="gzip"):
    """Write a feature file row by row, for features too large to hold in memory; atomic like
    :func:`write_features` (the file appears at ``path`` only when the block ends without an exception).

    Yields ``(dataset, attrs)``: the (N, ...) ``features`` dataset to fill (chunked one row at a time) and a dict
    of attributes the caller may complete, written at the end.
    """
    clip_ids = [str(c) for c in clip_ids]
    shape = tuple(int(s) for s in shape)
    if len(clip_ids) != shape[0]:
        raise ValueError(f"feature_writer({path}): {len(clip_ids)} clip ids for {shape[0]} rows")
    extra = dict(attrs or {})
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("clip_id", data=np.array(clip_ids, dtype=object), dtype=_STR)
            ds = f.create_dataset("features", shape=shape, dtype=dtype, compression=compression,
                                  chunks=(1,) + shape[1:] if shape[0] else None)
            yield ds, extra
            for key, value in extra.items():
                f.attrs[key] = _attr_value(value)


def read_features(path, clip_ids=None, dataset="features"):
    """Read a feature file; optionally select and order rows by ``clip_ids``.

    ``dataset``: ``features`` (the main rows) or an ``extra`` dataset written by :func:`write_features`; rows of
    an extra dataset are selected by ``clip_ids`` when it has one row per clip.

    Returns
    -------
    ids : list of str
    features : ndarray
    attrs : dict
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "an HDF5 feature file", "no such file")
    with h5py.File(path, "r") as f:
        if "clip_id" not in f or dataset not in f:
            raise InputError(path, f"datasets 'clip_id' and {dataset!r}", f"keys {sorted(f.keys())}")
        ids = [c.decode() if isinstance(c, bytes) else str(c) for c in f["clip_id"][()]]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        if clip_ids is None:
            return ids, f[dataset][()], attrs
        index = {c: i for i, c in enumerate(ids)}
        missing = [c for c in clip_ids if c not in index]
        if missing:
            raise InputError(path, f"rows for clips {missing[:5]}", f"{len(ids)} clips without them")
        rows = np.array([index[c] for c in clip_ids], dtype=int)
        data = f[dataset][()][rows] if len(rows) else f[dataset][()][:0]
        return list(clip_ids), data, attrs


def feature_ids(path):
    """The clip ids of a feature file, without reading its rows."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "an HDF5 feature file", "no such file")
    with h5py.File(path, "r") as f:
        if "clip_id" not in f:
            raise InputError(path, "a dataset 'clip_id'", f"keys {sorted(f.keys())}")
        return [c.decode() if isinstance(c, bytes) else str(c) for c in f["clip_id"][()]]
