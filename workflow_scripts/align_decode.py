"""Rule align_decode: GLFA alignment and leave-one-subject-out decoding of one held-out subject."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import decoder_stages as stage  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stage.run_align, snakemake.log[0], snakemake.threads,
          heldout=snakemake.wildcards.sub, subjects=list(snakemake.params.subjects),
          flatmap_paths=list(snakemake.input.maps), feature_path=snakemake.input.features,
          cfg=dict(snakemake.params.cfg), eval_cfg=dict(snakemake.params.eval_cfg), seed=snakemake.params.seed,
          out_model=snakemake.output.model, out_decoder=snakemake.output.decoder, out_pred=snakemake.output.pred,
          out_losses=snakemake.output.losses, out_table=snakemake.output.table, ckpt_dir=snakemake.params.ckpt)
