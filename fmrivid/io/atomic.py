"""Write outputs under a temporary name and rename on success.

A job killed half-way leaves no file that looks complete: the final name only
appears once the content is fully written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


COMPOUND_SUFFIXES = (".nii.gz", ".tar.gz", ".dtseries.nii", ".func.gii", ".surf.gii")


def _suffix(name):
    """The extension libraries dispatch on: compound ones (.nii.gz) kept whole."""
    for compound in COMPOUND_SUFFIXES:
        if name.endswith(compound) and len(name) > len(compound):
            return compound
    return Path(name).suffix


@contextlib.contextmanager
def atomic_path(path, suffix_keep=True):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On an exception the temporary file (or directory) is removed and the
    exception propagates, so no partial output is left behind.

    Parameters
    ----------
    path : str or Path
        Final output path.
    suffix_keep : bool
        Keep the final suffix on the temporary name (``x.tmp-123.h5``) so that
        libraries that dispatch on the extension (h5py, imageio) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f".tmp-{os.getpid()}"
    suffix = _suffix(path.name) if suffix_keep else ""
    tmp = path.with_name(path.name[: len(path.name) - len(suffix)] + tag + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
