"""Rule evaluate: every metric variant of one subject and method, with shuffled-GT controls."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_evaluate, snakemake.log[0], snakemake.threads,
          recon_path=snakemake.input.recon, frames_path=snakemake.input.frames, pred_paths=list(snakemake.input.pred),
          truth_paths=list(snakemake.input.truth), targets=list(snakemake.params.targets),
          subject=snakemake.wildcards.sub, method=snakemake.wildcards.method, cfg=dict(snakemake.params.cfg),
          seed=snakemake.params.seed, image_model=snakemake.params.image_model, out_path=snakemake.output.table,
          out_clips=snakemake.output.clips, out_models=snakemake.output.models)
