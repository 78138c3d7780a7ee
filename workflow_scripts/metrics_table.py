"""Rule metrics_table: long and wide tables, subject means, Wilcoxon tests, CC2017 comparison."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_metrics_table, snakemake.log[0], snakemake.threads,
          paths=list(snakemake.input.tables), clip_paths=list(snakemake.input.clips),
          compare=list(snakemake.params.compare), dataset_name=snakemake.params.dataset,
          main_method=snakemake.params.method, out_long=snakemake.output.long, out_wide=snakemake.output.wide,
          out_mean=snakemake.output.mean, out_wilcoxon=snakemake.output.wilcoxon,
          out_published=snakemake.output.published)
