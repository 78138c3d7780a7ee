"""Rule stimulus_table: the clip table of a layout that has none (CC2017 segments, BIDS stim_file events)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid.io import layouts  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(layouts.write_stimulus_table, snakemake.log[0], snakemake.threads,
          dataset_cfg=dict(snakemake.params.dataset), out_path=snakemake.output[0])
