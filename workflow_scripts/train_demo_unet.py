"""Rule train_demo_unet: the demo UNet3D, trained on training clips and their captions only."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_train_unet, snakemake.log[0], snakemake.threads,
          frames_path=snakemake.input.frames, text_path=snakemake.input.text, splits_path=snakemake.input.splits,
          vae_dir=snakemake.input.vae, cfg=dict(snakemake.params.cfg), seed=snakemake.params.seed,
          out_dir=snakemake.output[0])
