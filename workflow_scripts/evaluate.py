"""Rule evaluate: merge the chunks' video metrics (exact statistics) and add the decoded-feature metrics."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_evaluate_merge, snakemake.log[0], snakemake.threads,
          partials=list(snakemake.input.partials), pred_paths=list(snakemake.input.pred),
          truth_paths=list(snakemake.input.truth), targets=list(snakemake.params.targets),
          subject=snakemake.wildcards.sub, method=snakemake.wildcards.method, cfg=dict(snakemake.params.cfg),
          seed=snakemake.params.seed, out_table=snakemake.output.table, out_clips=snakemake.output.clips,
          out_models=snakemake.output.models, chance_rows=snakemake.params.chance_rows)
