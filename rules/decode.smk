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
        "subject"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/decode.py"
