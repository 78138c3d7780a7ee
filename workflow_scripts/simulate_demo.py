"""Rule simulate_demo: write the embedded demo dataset."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_simulate, snakemake.log[0], snakemake.threads,
          root=snakemake.params.root, params=dict(snakemake.params.cfg))
