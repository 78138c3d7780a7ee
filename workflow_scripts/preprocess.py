"""Rule preprocess: validated, cleaned, lagged, selected samples of one subject."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_preprocess, snakemake.log[0], snakemake.threads,
          bold=list(snakemake.input.bold), sidecar=list(snakemake.input.sidecar),
          events=list(snakemake.input.events), runs=list(snakemake.params.runs),
          confounds=list(snakemake.input.confounds), subject=snakemake.wildcards.sub, tr=snakemake.params.tr, splits_path=snakemake.input.splits,
          cfg=dict(snakemake.params.cfg), out_h5=snakemake.output.h5, out_qc=snakemake.output.qc,
          out_tsnr=snakemake.output.tsnr, out_lag_tsv=snakemake.output.lag_tsv, out_lag_png=snakemake.output.lag_png,
          out_selection_tsv=snakemake.output.selection_tsv, truth_dir=snakemake.params.truth_dir or None,
          layout=snakemake.params.layout, lag_features=snakemake.input.lag_features or None)
