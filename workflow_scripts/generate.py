"""Rule generate_chunk: videos of one chunk of test clips from decoded features, for one subject."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_generate, snakemake.log[0], snakemake.threads,
          pred_path=snakemake.input.pred, vae_dir=snakemake.input.vae, diffusion_dir=snakemake.input.diffusion,
          cfg=dict(snakemake.params.cfg), seed=snakemake.params.seed, out_path=snakemake.output[0],
          chunk=snakemake.params.chunk, n_total=snakemake.params.n_total, shuffle=snakemake.params.shuffle)
