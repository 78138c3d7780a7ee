"""Rule vae_features: first-frame VAE latents of every clip."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_vae_features, snakemake.log[0], snakemake.threads,
          frames_path=snakemake.input.frames, vae_dir=snakemake.input.vae, batch_size=snakemake.params.batch_size,
          out_path=snakemake.output[0])
