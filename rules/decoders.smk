# Decoders from fMRI to each feature, trained on the training split only.


rule decode:
    input:
        fmri_path=res("fmri/sub-{sub}.h5"),
        features_path=res("features/{target}.h5"),
    output:
        model=res("models/ridge/sub-{sub}_{target}.safetensors"),
        pred=res("predictions/ridge/sub-{sub}_{target}.h5"),
    log:
        log_path("decode_sub-{sub}_{target}"),
    benchmark:
        bench_path("decode_sub-{sub}_{target}")
    wildcard_constraints:
        target="|".join(DECODE_TARGETS),
    group:
        "fmri"
    conda:
        "../envs/eval.yaml"
    threads: 2
    resources:
        mem_mb=declared_mem("decode", 4000),
        runtime=declared_runtime("decode", 30),
    params:
        cfg=config["decode"],
        stage=stage("decoders"),
    script:
        "../workflow_scripts/run_stage.py"


# ----------------------------------------------------------------------------- neural decoders (decode.neural)
# Each trains on the training split only (safetensors model; checkpoints under results/checkpoints/ for a
# resume after a kill), predicts the test split and evaluates itself on its own target against a shuffled
# control (metrics/decoders/<decoder>_sub-XX.tsv, joined into tables/metrics.tsv).


rule neural_decode:
    input:
        unpack(neural_inputs),
    output:
        model=res("models/{decoder}/sub-{sub}_{target}.safetensors"),
        pred=res("predictions/{decoder}/sub-{sub}_{target}.h5"),
        losses=res("models/{decoder}/sub-{sub}_{target}_losses.tsv"),
        table=res("metrics/decoders/{decoder}_sub-{sub}_{target}.tsv"),
    log:
        log_path("neural_decode_{decoder}_sub-{sub}_{target}"),
    benchmark:
        bench_path("neural_decode_{decoder}_sub-{sub}_{target}")
    wildcard_constraints:
        decoder="|".join(decoder_registry.NEURAL),
        target="|".join(sorted({decoder_registry.get(d).target for d in decoder_registry.NEURAL})),
    group:
        "fmri"
    conda:
        "../envs/eval.yaml"
    threads: 2
    resources:
        mem_mb=mem(6000),
        runtime=120,
        gpu=1 if config["decode"]["device"].startswith("cuda") else 0,
    params:
        cfg=config["decode"],
        eval_cfg=config["evaluate"],
        seed=config["seed"],
        ckpt_dir=lambda wc: res(f"checkpoints/{wc.decoder}/sub-{wc.sub}"),
        stage=stage("decoders"),
    script:
        "../workflow_scripts/run_stage.py"


rule align_decode:
    input:
        unpack(align_inputs),
        flatmap_paths=expand(res("surface/sub-{s}_flatmaps.h5"), s=SUBJECTS),
        feature_path=res("features/text.h5"),
    output:
        model=res("models/align/sub-{sub}_text.safetensors"),
        decoder=res("models/align/sub-{sub}_text_ridge.safetensors"),
        pred=res("predictions/align/sub-{sub}_text.h5"),
        losses=res("models/align/sub-{sub}_text_losses.tsv"),
        table=res("metrics/decoders/align_sub-{sub}_text.tsv"),
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
    params:
        heldout=lambda wc: wc.sub,
        subjects=SUBJECTS,
        cfg=config["decode"],
        eval_cfg=config["evaluate"],
        seed=config["seed"],
        ckpt_dir=lambda wc: res(f"checkpoints/align/sub-{wc.sub}"),
        stage=stage("decoders"),
    script:
        "../workflow_scripts/run_stage.py"


rule encoder_model:
    input:
        unpack(encoder_inputs),
    output:
        model=res("models/encoder/sub-{sub}_voxels.safetensors"),
        pred=res("predictions/encoder/sub-{sub}_voxels.h5"),
        losses=res("models/encoder/sub-{sub}_voxels_losses.tsv"),
        table=res("metrics/decoders/encoder_sub-{sub}_voxels.tsv"),
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
    params:
        subject=lambda wc: wc.sub,
        cfg=config["decode"],
        eval_cfg=config["evaluate"],
        seed=config["seed"],
        ckpt_dir=lambda wc: res(f"checkpoints/encoder/sub-{wc.sub}"),
        stage=stage("decoders"),
    script:
        "../workflow_scripts/run_stage.py"
