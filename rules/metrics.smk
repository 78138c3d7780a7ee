# Metrics per subject and method (lossless arrays only), brain-side metrics, and the combined tables.


rule train_demo_classifier:
    input:
        frames_path=res("features/frames.h5"),
        captions_path=res("features/captions.tsv"),
        splits_path=res("splits.tsv"),
    output:
        res("models/demo_classifier.safetensors"),
    log:
        log_path("train_demo_classifier"),
    benchmark:
        bench_path("train_demo_classifier")
    group:
        "stimuli"
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=20,
    params:
        cfg=config["evaluate"]["demo_classifier"],
        seed=config["seed"],
        stage=stage("metrics"),
    script:
        "../workflow_scripts/run_stage.py"


rule gt_cache:
    input:
        unpack(classifier_input),
        frames_path=res("features/frames.h5"),
        splits_path=res("splits.tsv"),
    output:
        res("metrics/gt_cache.h5"),
    log:
        log_path("gt_cache"),
    benchmark:
        bench_path("gt_cache")
    group:
        "stimuli"
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=declared_mem("gt_cache", gt_mem_mb(), EVAL_MODEL),  # grows with the test set (see gt_mem_mb)
        runtime=declared_runtime("gt_cache", 60, EVAL_MODEL),
    params:
        cfg=config["evaluate"],
        image_model=config["features"]["image_model"],
        seed=config["seed"],
        stage=stage("metrics"),
    script:
        "../workflow_scripts/run_stage.py"


rule evaluate_chunk:
    input:
        unpack(classifier_input),
        recon_chunk_path=res("recon/{method}/sub-{sub}/chunk-{chunk}.h5"),
        pred_path=res("predictions/ridge/sub-{sub}_text.h5"),  # the test clip order the chunks were cut from
        frames_path=res("features/frames.h5"),
        gt_cache_path=res("metrics/gt_cache.h5"),
    output:
        partial=res("metrics/{method}/sub-{sub}/chunk-{chunk}.h5"),
    log:
        log_path("evaluate_{method}_sub-{sub}_chunk-{chunk}"),
    benchmark:
        bench_path("evaluate_{method}_sub-{sub}_chunk-{chunk}")
    wildcard_constraints:
        chunk=r"\d+",
    group:
        "generate"
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=declared_mem("evaluate_chunk", gt_mem_mb(), EVAL_MODEL),  # grows with the test set (see gt_mem_mb)
        runtime=declared_runtime("evaluate_chunk", 60, EVAL_MODEL),
    params:
        chunk=lambda wc: int(wc.chunk),
        chunk_size=CHUNK_SIZE,
        subject=lambda wc: wc.sub,
        cfg=config["evaluate"],
        image_model=config["features"]["image_model"],
        seed=config["seed"],
        stage=stage("metrics"),
    script:
        "../workflow_scripts/run_stage.py"


rule evaluate:
    input:
        recon=res("recon/{method}/sub-{sub}.h5"),  # the merged chunks (read by the figures; keeps one results job)
        partials=expand(res("metrics/{{method}}/sub-{{sub}}/chunk-{chunk}.h5"), chunk=CHUNKS),
        pred_paths=expand(res("predictions/ridge/sub-{{sub}}_{target}.h5"), target=DECODE_TARGETS),
        truth_paths=expand(res("features/{target}.h5"), target=DECODE_TARGETS),
    output:
        table=res("metrics/{method}/sub-{sub}.tsv"),
        clips=res("metrics/{method}/sub-{sub}_clips.tsv"),
        models=res("metrics/{method}/sub-{sub}_models.json"),
    log:
        log_path("evaluate_{method}_sub-{sub}"),
    benchmark:
        bench_path("evaluate_{method}_sub-{sub}")
    group:
        "results"
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=60,
    params:
        # decoded-feature metrics (ridge_<target> rows) do not depend on the generator: once, with the first method
        targets=lambda wc: DECODE_TARGETS if wc.method == EVAL_METHODS[0] else [],
        chance_rows=lambda wc: wc.method == EVAL_METHODS[0],
        subject=lambda wc: wc.sub,
        cfg=config["evaluate"],
        seed=config["seed"],
        stage=stage("metrics"),
    script:
        "../workflow_scripts/run_stage.py"


rule brain_metrics:
    input:
        fmri_paths=expand(res("fmri/sub-{sub}.h5"), sub=SUBJECTS),
        features_path=res(f"features/{config['evaluate']['encoder_feature']}.h5"),
    output:
        res("metrics/brain.tsv"),
    log:
        log_path("brain_metrics"),
    benchmark:
        bench_path("brain_metrics")
    group:
        "tables"
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=30,
    params:
        subjects=SUBJECTS,
        decode_cfg=config["decode"],
        cfg=config["evaluate"],
        seed=config["seed"],
        stage=stage("metrics"),
    script:
        "../workflow_scripts/run_stage.py"


rule metrics_table:
    input:
        paths=[
            *expand(res("metrics/{method}/sub-{sub}.tsv"), method=EVAL_METHODS, sub=SUBJECTS),
            res("metrics/brain.tsv"),
            *decoder_tables(),  # rules/decode.smk: each neural decoder on its own target
        ],
        clip_paths=expand(res("metrics/{method}/sub-{sub}_clips.tsv"), method=EVAL_METHODS, sub=SUBJECTS),
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
        mean=report(
            res("tables/summary_mean.tsv"),
            caption="report/summary_mean.rst",
            category="4. Metrics",
            subcategory="Tables",
        ),
        wilcoxon=report(
            res("tables/wilcoxon.tsv"),
            caption="report/wilcoxon.rst",
            category="4. Metrics",
            subcategory="Statistics",
        ),
        published=report(
            res("tables/cc2017_comparison.tsv"),
            caption="report/cc2017_comparison.rst",
            category="4. Metrics",
            subcategory="Published CC2017",
        ),
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
    params:
        compare=COMPARE,
        dataset_name=config["dataset"]["name"],
        main_method=EVAL_METHODS[0],
        stage=stage("metrics"),
    script:
        "../workflow_scripts/run_stage.py"
