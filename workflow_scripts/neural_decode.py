"""Rule neural_decode: one neural decoder (semantic, structure, motion, fusion) of one subject."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import decoder_stages as stage  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

inp = snakemake.input
features = {k: inp[k] for k in ("text", "video", "vae", "vae_frames", "audio") if k in inp.keys()}
preds = {k: inp[v] for k, v in (("first", "first"), ("text", "decoded_text")) if v in inp.keys()}
run_stage(stage.run_neural_decoder, snakemake.log[0], snakemake.threads,
          name=snakemake.wildcards.decoder, subject=snakemake.wildcards.sub, fmri_path=inp.fmri,
          features=features, preds=preds, cfg=dict(snakemake.params.cfg), eval_cfg=dict(snakemake.params.eval_cfg),
          seed=snakemake.params.seed, out_model=snakemake.output.model, out_pred=snakemake.output.pred,
          out_losses=snakemake.output.losses, out_table=snakemake.output.table, ckpt_dir=snakemake.params.ckpt)
