"""Rule decode: ridge decoder of one feature for one subject (training split only)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_decode, snakemake.log[0], snakemake.threads,
          fmri_path=snakemake.input.fmri, features_path=snakemake.input.features, cfg=dict(snakemake.params.cfg),
          out_model=snakemake.output.model, out_pred=snakemake.output.pred)
