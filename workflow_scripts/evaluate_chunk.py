"""Rule evaluate_chunk: video metrics of one chunk of reconstructions (a partial merged by rule evaluate)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_evaluate_chunk, snakemake.log[0], snakemake.threads,
          recon_chunk_path=snakemake.input.recon, pred_path=snakemake.input.order, frames_path=snakemake.input.frames,
          gt_cache_path=snakemake.input.gt_cache, chunk=snakemake.params.chunk, chunk_size=snakemake.params.chunk_size,
          subject=snakemake.wildcards.sub, method=snakemake.wildcards.method, cfg=dict(snakemake.params.cfg),
          seed=snakemake.params.seed, image_model=snakemake.params.image_model, out_partial=snakemake.output[0],
          classifier_path=snakemake.input.get("classifier"))
