"""Declared resources of the rules (``mem_mb``, ``runtime``) as formulas of the data's size (issue 18).

Each rule measured by ``benchmarks/full_scale.py`` (one CC2017 subject at 1/4, 1/2 and all of the real design) has
a line in ``resources_calibration.tsv`` next to this file: peak RSS and wall time fitted as ``a + b * units``
(least squares over the runs; ``units`` is the number of clips of the dataset, or of test clips for the metric
rules that hold the GT of every test clip). A rule then declares

* ``mem_mb = MEM_MARGIN * (a + b * units)``, at least ``FLOOR_MARGIN`` x the smallest peak measured (a process
  that imports torch holds ~0.8 GB whatever the data), so at the measured scales no peak exceeds its declaration
  and none declares more than 2x what it uses;
* ``runtime = TIME_MARGIN * (a + b * units)`` in minutes (at least :data:`MIN_RUNTIME`): a shared node is slower
  than the benchmark's quiet one.

Rules that load a model were measured with the tiny models (no real weights on the machines this was built on),
whose footprint is a fraction of a real model's: when the rule's model spec is a real one, the declaration is at
least the rule's ``legacy`` figure (the estimate for the real model, kept in the rule file). Rules not measured at
full scale (generation, neural decoders, report) keep their fixed declarations. Regenerate the calibration after a
change in a measured rule::

    python benchmarks/full_scale.py --fraction F --root DIR        # for F in 0.25 0.5 1
    python benchmarks/scaling.py DIR*/full_scale.json --calibrate fmrivid/resources_calibration.tsv
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from pathlib import Path

__all__ = ["CALIBRATION", "MEM_MARGIN", "TIME_MARGIN", "calibration", "mem_mb", "runtime_min", "uses_real_model"]

CALIBRATION = Path(__file__).with_name("resources_calibration.tsv")
MEM_MARGIN = 1.5  # declared / fitted peak RSS (<= 2: the bound on over-declaring)
TIME_MARGIN = 2.0  # declared / fitted wall time
FLOOR_MARGIN = 1.2  # declared / smallest measured peak RSS (the small-data floor)
MIN_MB = 500
MIN_RUNTIME = 5
#: calibration columns
FIELDS = ("rule", "unit", "mem_a_mb", "mem_b_mb", "mem_floor_mb", "time_a_s", "time_b_s", "runs",
          "units_measured")


@lru_cache(maxsize=None)
def calibration(path=None):
    """{rule: row} of the calibration TSV (numbers as floats)."""
    rows = {}
    with open(path or CALIBRATION, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            for key in ("mem_a_mb", "mem_b_mb", "mem_floor_mb", "time_a_s", "time_b_s"):
                row[key] = float(row[key])
            rows[row["rule"]] = row
    return rows


def _units(row, sizes):
    unit = row["unit"]
    if unit not in sizes:
        raise KeyError(f"resources: rule {row['rule']} is calibrated per {unit!r}; sizes has {sorted(sizes)}")
    return float(sizes[unit])


def uses_real_model(spec):
    """Whether a model spec loads a real model (not ``tiny`` / ``tiny#...``, not the workflow's own ``generator``,
    not absent)."""
    spec = str(spec or "").strip()
    return bool(spec) and spec.split("#")[0] not in ("tiny", "generator", "demo", "none", "None", "random")


def mem_mb(rule, sizes, legacy_mb, real_model=False, path=None):
    """Declared ``mem_mb`` of ``rule`` for data of ``sizes`` ({"clips": n, "test_clips": m}); ``legacy_mb`` when
    the rule is not calibrated, and at least that with a real model."""
    row = calibration(path).get(rule)
    if row is None:
        return int(legacy_mb)
    fitted = max(MEM_MARGIN * (row["mem_a_mb"] + row["mem_b_mb"] * _units(row, sizes)),
                 FLOOR_MARGIN * row["mem_floor_mb"])
    out = max(MIN_MB, int(math.ceil(fitted / 100.0)) * 100)
    return max(out, int(legacy_mb)) if real_model else out


def runtime_min(rule, sizes, legacy_min, real_model=False, path=None):
    """Declared ``runtime`` (minutes) of ``rule``, as :func:`mem_mb`."""
    row = calibration(path).get(rule)
    if row is None:
        return int(legacy_min)
    fitted = row["time_a_s"] + row["time_b_s"] * _units(row, sizes)
    out = max(MIN_RUNTIME, int(math.ceil(TIME_MARGIN * fitted / 60.0)))
    return max(out, int(legacy_min)) if real_model else out
