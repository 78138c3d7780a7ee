"""Rule provenance: config, versions, commit, models, seeds and input checksums."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_provenance, snakemake.log[0], snakemake.threads,
          config=dict(snakemake.params.config), input_files=list(snakemake.input.raw),
          feature_files=list(snakemake.input.features), eval_model_files=list(snakemake.input.eval_models),
          out_path=snakemake.output[0], out_html=snakemake.output.html,
          config_files=list(snakemake.params.config_files))
