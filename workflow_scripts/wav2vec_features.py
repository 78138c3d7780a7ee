"""Rule wav2vec_features: wav2vec2 embeddings per TR window of the synthesized audio."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from fmrivid import stages  # noqa: E402
from fmrivid.utils import run_stage  # noqa: E402

run_stage(stages.run_wav2vec_features, snakemake.log[0], snakemake.threads,
          audio_dir=snakemake.input.audio, cfg=snakemake.params.cfg, tr=snakemake.params.tr,
          device=snakemake.params.device, seed=snakemake.params.seed, out_path=snakemake.output[0])
