"""Rule metrics_table: the long and wide metric tables."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_metrics_table, snakemake.log[0], snakemake.threads,
          paths=list(snakemake.input), out_long=snakemake.output.long, out_wide=snakemake.output.wide)
