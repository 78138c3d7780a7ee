"""Rules vae_features / vae_video_features: scaled VAE latents of the first or all frames."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_vae_features, snakemake.log[0], snakemake.threads,
          frames_path=snakemake.input.frames, vae=snakemake.params.vae, frames=snakemake.params.frames,
          batch_size=snakemake.params.batch_size, device=snakemake.params.device, out_path=snakemake.output[0])
