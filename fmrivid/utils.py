"""Small shared helpers: logging to a rule's log, clip seeds, threads, running a stage (torch-free)."""

from __future__ import annotations

import sys
import time
import zlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent



class Logger:
    """Write timestamped lines to a log file (and stderr), usable as ``log=...`` callable."""

    def __init__(self, path=None, echo=True):
        self.path = Path(path) if path else None
        self.echo = echo
        self.t0 = time.monotonic()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def __call__(self, message):
        line = f"[{time.monotonic() - self.t0:7.1f}s] {message}"
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
        if self.echo:
            print(line, file=sys.stderr, flush=True)


def clip_seed(seed, clip_id):
    """A per-clip seed from the master seed and the clip id (independent of batching)."""
    return (int(seed) * 1_000_003 + zlib.crc32(str(clip_id).encode())) % (2**31 - 1)



def set_threads(n):
    """Limit torch's intra-op threads to the rule's ``threads``.

    Without importing torch (a second per job, and ~500 MB): if torch is already loaded its thread count is
    set; otherwise ``OMP_NUM_THREADS`` is set, which torch reads when a stage imports it later.
    """
    import os

    n = max(1, int(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)


def run_stage(fn, log_file=None, threads=1, **kwargs):
    """Run a stage function from a workflow script with logging and clean errors.

    An :class:`fmrivid.errors.FmrividError` is printed as one ``ERROR:`` line
    (naming the file or key) to the log and stderr, and the process exits 1;
    other exceptions keep their traceback.
    """
    from fmrivid.errors import FmrividError

    log = Logger(log_file)
    set_threads(threads)
    try:
        fn(log=log, **kwargs)
    except FmrividError as err:
        log(f"ERROR: {err}")
        raise SystemExit(1)
    log("done")
