"""Rule annotation_template: the CSV that annotators fill in (qualitative protocol)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_annotation_template, snakemake.log[0], snakemake.threads,
          splits_path=snakemake.input[0], subjects=list(snakemake.params.subjects),
          compare=list(snakemake.params.compare), out_path=snakemake.output[0])
