"""Rule metric_tables_html: the metric tables as an HTML page shown inside the report."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_metric_tables_html, snakemake.log[0], snakemake.threads,
          long_path=snakemake.input.long, wilcoxon_path=snakemake.input.wilcoxon,
          published_path=snakemake.input.published, out_path=snakemake.output[0])
