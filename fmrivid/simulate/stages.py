"""Stage of rules/simulate.smk: the embedded demo dataset.

One function per rule, named as the rule: `workflow_scripts/run_stage.py` calls it with the rule's inputs
(by name), outputs (``out_<name>``) and params as keyword arguments. Testable without Snakemake.
"""

from __future__ import annotations

from pathlib import Path


def simulate_demo(root, cfg, out_bold=(), out_sidecar=(), out_events=(), out_table=None, out_videos=(), log=print):
    """Write the demo dataset under ``root`` (settings: the ``simulate`` section), then check that every file the
    workflow planned (``out_*``: derived from the same settings at parse time) was written."""
    from fmrivid.errors import InputError
    from fmrivid.simulate import simulate_dataset

    simulate_dataset(Path(root), cfg, log=log)
    planned = [*out_bold, *out_sidecar, *out_events, *([out_table] if out_table else []), *out_videos]
    missing = [str(f) for f in planned if not Path(f).exists()]
    if missing:
        raise InputError(missing[0], "a file of the simulated dataset the workflow planned from the simulate "
                         "section", f"not written ({len(missing)} missing)")
