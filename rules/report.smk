# Figures, previews and provenance for the snakemake --report bundle.


rule subject_figures:
    input:
        recon=res(f"recon/{METHOD}/sub-{{sub}}.h5"),
        frames=res("features/frames.h5"),
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
    params:
        cfg=config["report"],
        code=code_hash("report"),
    log:
        log_path("subject_figures_sub-{sub}"),
    benchmark:
        bench_path("subject_figures_sub-{sub}")
    group:
        "subject"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=10,
    script:
        "../workflow_scripts/subject_figures.py"


rule metric_figure:
    input:
        res("tables/metrics.tsv"),
    output:
        report(
            res("report/metrics.png"),
            caption="report/metrics_figure.rst",
            category="4. Metrics",
            subcategory="Figures",
        ),
    params:
        code=code_hash("report"),
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
    script:
        "../workflow_scripts/metric_figure.py"


rule training_curves:
    input:
        vae=f"{GENERATOR}/vae",
        diffusion=f"{GENERATOR}/diffusion",
    output:
        report(
            res("report/training_curves.png"),
            caption="report/training_curves.rst",
            category="2. Training",
        ),
    params:
        code=code_hash("report"),
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
    script:
        "../workflow_scripts/training_curves.py"


rule provenance:
    input:
        table=res("tables/metrics.tsv"),
        raw=[STIMULUS_TABLE, *all_run_files()],
        features=expand(res("features/{target}.h5"), target=DECODE_TARGETS),
    output:
        report(
            res("report/provenance.yaml"),
            caption="report/provenance.rst",
            category="5. Provenance",
        ),
    params:
        config=config,
        code=code_hash("."),
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
    script:
        "../workflow_scripts/provenance.py"
