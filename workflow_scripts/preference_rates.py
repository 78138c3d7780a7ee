"""Rule preference_rates: summarise filled-in annotations into preference rates per criterion."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_preference_rates, snakemake.log[0], snakemake.threads,
          annotations_path=snakemake.input[0], out_path=snakemake.output[0])
