"""Rule encoder_model: the encoder-decoder model (stimulus -> voxels) of one subject and its shuffled control."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import decoder_stages as stage  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stage.run_encoder, snakemake.log[0], snakemake.threads,
          subject=snakemake.wildcards.sub, fmri_path=snakemake.input.fmri, frames_path=snakemake.input.frames,
          cfg=dict(snakemake.params.cfg), eval_cfg=dict(snakemake.params.eval_cfg), seed=snakemake.params.seed,
          out_model=snakemake.output.model, out_pred=snakemake.output.pred, out_losses=snakemake.output.losses,
          out_table=snakemake.output.table, ckpt_dir=snakemake.params.ckpt)
