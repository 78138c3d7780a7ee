"""Rule generate_chunk: videos of one chunk of test clips from decoded features, for one subject."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

inp = dict(snakemake.input.items())
cfg = dict(snakemake.params.cfg)
run_stage(stages.run_generate, snakemake.log[0], snakemake.threads,
          pred_path=inp.get("pred"), vae_dir=inp.get("vae"), diffusion_dir=inp.get("diffusion"),
          cfg=cfg, seed=snakemake.params.seed, out_path=snakemake.output[0],
          chunk=snakemake.params.chunk, n_total=snakemake.params.n_total, shuffle=snakemake.params.shuffle,
          decoded={k: inp[k] for k in stages.DIFFUSERS_DECODED.get(cfg["method"], ())},
          token_model=inp.get("token_model"), fmri_path=inp.get("fmri"), pipeline=inp.get("pipeline"))
