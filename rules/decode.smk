# Decoders from fMRI to each feature, trained on the training split only.


rule decode:
    input:
        fmri=res("fmri/sub-{sub}.h5"),
        features=res("features/{target}.h5"),
    output:
        model=res("models/ridge/sub-{sub}_{target}.safetensors"),
        pred=res("predictions/ridge/sub-{sub}_{target}.h5"),
    wildcard_constraints:
        target="|".join(DECODE_TARGETS),
    params:
        cfg=config["decode"],
        code=code_hash("decoders", "preprocess/pipeline.py", "io"),
    log:
        log_path("decode_sub-{sub}_{target}"),
    benchmark:
        bench_path("decode_sub-{sub}_{target}")
    group:
        "fmri"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/decode.py"


# ----------------------------------------------------------------------------- neural decoders (decode.neural)
# Each trains on the training split only (safetensors model; checkpoints under results/checkpoints/ for a
# resume after a kill), predicts the test split and evaluates itself on its own target against a shuffled
# control (metrics/decoders/<decoder>_sub-XX.tsv, joined into tables/metrics.tsv).
import fmrivid.decoder_stages as _dstage

NEURAL = [d for d in config["decode"]["neural"] if d in _dstage.NEURAL]


rule neural_decode:
    input:
        unpack(neural_inputs),
    output:
        model=res("models/{decoder}/sub-{sub}_{target}.safetensors"),
        pred=res("predictions/{decoder}/sub-{sub}_{target}.h5"),
        losses=res("models/{decoder}/sub-{sub}_{target}_losses.tsv"),
        table=res("metrics/decoders/{decoder}_sub-{sub}_{target}.tsv"),
    wildcard_constraints:
        decoder="|".join(_dstage.NEURAL),
        target="text|vae|vae_frames",
    params:
        cfg=config["decode"],
        eval_cfg=config["evaluate"],
        seed=config["seed"],
        ckpt=lambda wc: res(f"checkpoints/{wc.decoder}/sub-{wc.sub}"),
        code=code_hash("decoders", "decoder_stages.py", "preprocess/pipeline.py", "io", "metrics"),
    log:
        log_path("neural_decode_{decoder}_sub-{sub}_{target}"),
    benchmark:
        bench_path("neural_decode_{decoder}_sub-{sub}_{target}")
    group:
        "fmri"
    conda:
        "../envs/eval.yaml"
    threads: 2
    resources:
        mem_mb=mem(6000),
        runtime=120,
        gpu=1 if config["decode"]["device"].startswith("cuda") else 0,
    script:
        "../workflow_scripts/neural_decode.py"


rule align_decode:
    input:
        maps=expand(res("surface/sub-{s}_flatmaps.h5"), s=SUBJECTS),
        features=res("features/text.h5"),
    output:
        model=res("models/align/sub-{sub}_text.safetensors"),
        decoder=res("models/align/sub-{sub}_text_ridge.safetensors"),
        pred=res("predictions/align/sub-{sub}_text.h5"),
        losses=res("models/align/sub-{sub}_text_losses.tsv"),
        table=res("metrics/decoders/align_sub-{sub}_text.tsv"),
    params:
        subjects=SUBJECTS,
        cfg=config["decode"],
        eval_cfg=config["evaluate"],
        seed=config["seed"],
        ckpt=lambda wc: res(f"checkpoints/align/sub-{wc.sub}"),
        code=code_hash("decoders", "decoder_stages.py", "io", "metrics"),
    log:
        log_path("align_decode_sub-{sub}"),
    benchmark:
        bench_path("align_decode_sub-{sub}")
    group:
        "align"
    conda:
        "../envs/eval.yaml"
    threads: 2
    resources:
        mem_mb=mem(6000),
        runtime=120,
        gpu=1 if config["decode"]["device"].startswith("cuda") else 0,
    script:
        "../workflow_scripts/align_decode.py"


rule encoder_model:
    input:
        fmri=res("fmri/sub-{sub}.h5"),
        frames=res("features/frames.h5"),
    output:
        model=res("models/encoder/sub-{sub}_voxels.safetensors"),
        pred=res("predictions/encoder/sub-{sub}_voxels.h5"),
        losses=res("models/encoder/sub-{sub}_voxels_losses.tsv"),
        table=res("metrics/decoders/encoder_sub-{sub}_voxels.tsv"),
    params:
        cfg=config["decode"],
        eval_cfg=config["evaluate"],
        seed=config["seed"],
        ckpt=lambda wc: res(f"checkpoints/encoder/sub-{wc.sub}"),
        code=code_hash("decoders", "decoder_stages.py", "preprocess/pipeline.py", "io", "metrics"),
    log:
        log_path("encoder_model_sub-{sub}"),
    benchmark:
        bench_path("encoder_model_sub-{sub}")
    group:
        "fmri"
    conda:
        "../envs/eval.yaml"
    threads: 2
    resources:
        mem_mb=mem(8000),
        runtime=240,
        gpu=1 if config["decode"]["device"].startswith("cuda") else 0,
    script:
        "../workflow_scripts/encoder_model.py"
