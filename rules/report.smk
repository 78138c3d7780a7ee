# Figures, previews and provenance for the snakemake --report bundle.


rule subject_figures:
    input:
        recon_path=res(f"recon/{EVAL_METHODS[0]}/sub-{{sub}}.h5"),  # the main method
        frames_path=res("features/frames.h5"),
    output:
        grid=report(
            res("report/sub-{sub}_grid.png"),
            caption="report/grid.rst",
            category="3. Reconstructions",
            subcategory="sub-{sub}",
        ),
        preview=report(
            res("report/sub-{sub}_preview.mp4"),
            caption="report/preview.rst",
            category="3. Reconstructions",
            subcategory="sub-{sub}",
        ),
        preview_html=report(
            res("report/sub-{sub}_preview.html"),
            caption="report/preview.rst",
            category="3. Reconstructions",
            subcategory="sub-{sub}",
        ),
    log:
        log_path("subject_figures_sub-{sub}"),
    benchmark:
        bench_path("subject_figures_sub-{sub}")
    group:
        "results"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=10,
    params:
        subject=lambda wc: wc.sub,
        cfg=config["report"],
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"


rule metric_tables_html:
    input:
        long_path=res("tables/metrics.tsv"),
        wilcoxon_path=res("tables/wilcoxon.tsv"),
        published_path=res("tables/cc2017_comparison.tsv"),
    output:
        report(
            res("report/metrics_table.html"),
            caption="report/metrics_table.rst",
            category="4. Metrics",
            subcategory="Tables",
        ),
    log:
        log_path("metric_tables_html"),
    benchmark:
        bench_path("metric_tables_html")
    group:
        "tables"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=5,
    params:
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"


rule metric_figure:
    input:
        table_path=res("tables/metrics.tsv"),
    output:
        report(
            res("report/metrics.png"),
            caption="report/metrics_figure.rst",
            category="4. Metrics",
            subcategory="Figures",
        ),
    log:
        log_path("metric_figure"),
    benchmark:
        bench_path("metric_figure")
    group:
        "tables"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=5,
    params:
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"


rule headline:
    input:
        table_path=res("tables/metrics.tsv"),
    output:
        table=report(
            res("tables/headline.tsv"),
            caption="report/headline.rst",
            category="0. Headline",
        ),
        figure=report(
            res("report/headline.png"),
            caption="report/headline.rst",
            category="0. Headline",
        ),
    log:
        log_path("headline"),
    benchmark:
        bench_path("headline")
    group:
        "tables"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=5,
    params:
        metrics=config["report"]["headline"],
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"


rule training_curves:
    input:
        vae=f"{GENERATOR}/vae",
        unet=f"{GENERATOR}/diffusion",
    output:
        report(
            res("report/training_curves.png"),
            caption="report/training_curves.rst",
            category="2. Training",
        ),
    log:
        log_path("training_curves"),
    benchmark:
        bench_path("training_curves")
    group:
        "generator"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=5,
    params:
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"


rule decoder_curves:
    input:
        unpack(decoder_losses),
    output:
        report(
            res("report/decoder_curves.png"),
            caption="report/decoder_curves.rst",
            category="2. Training",
        ),
    log:
        log_path("decoder_curves"),
    benchmark:
        bench_path("decoder_curves")
    group:
        "tables"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=5,
    params:
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"


rule timelines:
    input:
        recon_paths=expand(res("recon/{method}/sub-{{sub}}.h5"), method=EVAL_METHODS),
        frames_path=res("features/frames.h5"),
    output:
        dir=report(
            directory(res("qualitative/sub-{sub}_timelines")),
            patterns=["{clip}.png"],
            caption="report/timeline.rst",
            category="6. Qualitative",
            subcategory="sub-{sub}",
        ),
    log:
        log_path("timelines_sub-{sub}"),
    benchmark:
        bench_path("timelines_sub-{sub}")
    group:
        "results"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=10,
    params:
        methods=EVAL_METHODS,
        cfg=config["report"],
        fps=config["simulate"]["fps"] if SIMULATE else None,
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"


rule annotation_template:
    input:
        splits_path=res("splits.tsv"),
    output:
        report(
            res("qualitative/annotation_template.csv"),
            caption="report/annotation_template.rst",
            category="6. Qualitative",
            subcategory="Annotation",
        ),
    log:
        log_path("annotation_template"),
    benchmark:
        bench_path("annotation_template")
    group:
        "tables"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(500),
        runtime=5,
    params:
        subjects=SUBJECTS,
        compare=COMPARE,
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"


rule preference_rates:
    input:
        annotations_path=config["report"]["annotations"] or res("qualitative/annotation_template.csv"),
    output:
        report(
            res("tables/preference_rates.tsv"),
            caption="report/preference_rates.rst",
            category="6. Qualitative",
            subcategory="Annotation",
        ),
    log:
        log_path("preference_rates"),
    benchmark:
        bench_path("preference_rates")
    group:
        "tables"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(500),
        runtime=5,
    params:
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"


# Outputs of the evaluation and report rules that rule all asks for (final_outputs in common.smk).
EVALUATION_OUTPUTS = [
    res("tables/metrics.tsv"),
    res("tables/summary.tsv"),
    res("tables/summary_mean.tsv"),
    res("tables/wilcoxon.tsv"),
    res("tables/cc2017_comparison.tsv"),
    res("tables/preference_rates.tsv"),
    res("report/metrics_table.html"),
    *expand(res("report/sub-{sub}_preview.html"), sub=SUBJECTS),
    res("qualitative/annotation_template.csv"),
    *expand(res("qualitative/sub-{sub}_timelines"), sub=SUBJECTS),
]


rule provenance:
    input:
        table=res("tables/metrics.tsv"),
        input_files=[STIMULUS_TABLE, *all_run_files()],
        feature_files=expand(res("features/{target}.h5"), target=DECODE_TARGETS),
        eval_model_files=expand(res("metrics/{method}/sub-{sub}_models.json"), method=EVAL_METHODS, sub=SUBJECTS),
    output:
        report(
            res("report/provenance.yaml"),
            caption="report/provenance.rst",
            category="5. Provenance",
        ),
        html=report(
            res("report/provenance.html"),
            caption="report/provenance.rst",
            category="5. Provenance",
        ),
    log:
        log_path("provenance"),
    benchmark:
        bench_path("provenance")
    group:
        "tables"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=5,
    params:
        config=config,
        config_files=CONFIG_FILES,
        stage=stage("report"),
    script:
        "../workflow_scripts/run_stage.py"
