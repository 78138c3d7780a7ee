# Metrics per subject (lossless arrays only) and the combined tables.


rule evaluate:
    input:
        recon=res("recon/{method}/sub-{sub}.h5"),
        frames=res("features/frames.h5"),
        splits=res("splits.tsv"),
        pred=expand(res("predictions/ridge/sub-{{sub}}_{target}.h5"), target=DECODE_TARGETS),
        truth=expand(res("features/{target}.h5"), target=DECODE_TARGETS),
    output:
        res("metrics/{method}/sub-{sub}.tsv"),
    params:
        targets=DECODE_TARGETS,
        cfg=config["evaluate"],
        seed=config["seed"],
        code=code_hash("metrics", "io"),
    log:
        log_path("evaluate_{method}_sub-{sub}"),
    benchmark:
        bench_path("evaluate_{method}_sub-{sub}")
    group:
        "subject"
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=20,
    script:
        "../workflow_scripts/evaluate.py"


rule metrics_table:
    input:
        expand(res("metrics/{method}/sub-{sub}.tsv"), method=METHOD, sub=SUBJECTS),
    output:
        long=report(
            res("tables/metrics.tsv"),
            caption="report/metrics_table.rst",
            category="4. Metrics",
            subcategory="Tables",
        ),
        wide=report(
            res("tables/summary.tsv"),
            caption="report/summary_table.rst",
            category="4. Metrics",
            subcategory="Tables",
        ),
    params:
        code=code_hash("metrics"),
    log:
        log_path("metrics_table"),
    benchmark:
        bench_path("metrics_table")
    group:
        "tables"
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=5,
    script:
        "../workflow_scripts/metrics_table.py"
