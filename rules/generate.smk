# The demo generator (a tiny VAE + UNet3D trained on the training clips) and generation from decoded features.


rule train_demo_vae:
    input:
        frames=res("features/frames.h5"),
        splits=res("splits.tsv"),
    output:
        directory(f"{GENERATOR}/vae"),
    params:
        cfg={k: config["generate"][k] for k in ("device", "vae")},  # sampling settings do not retrain it
        seed=config["seed"],
        code=code_hash("generate", "io"),
    log:
        log_path("train_demo_vae"),
    benchmark:
        bench_path("train_demo_vae")
    group:
        "generator"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(6000),
        runtime=60,
        gpu=1 if config["generate"]["device"].startswith("cuda") else 0,
    script:
        "../workflow_scripts/train_demo_vae.py"


rule train_demo_unet:
    input:
        frames=res("features/frames.h5"),
        text=res("features/text.h5"),
        splits=res("splits.tsv"),
        vae=f"{GENERATOR}/vae",
    output:
        directory(f"{GENERATOR}/diffusion"),
    params:
        cfg={k: config["generate"][k] for k in ("device", "unet")},
        seed=config["seed"],
        code=code_hash("generate", "io"),
    log:
        log_path("train_demo_unet"),
    benchmark:
        bench_path("train_demo_unet")
    group:
        "generator"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(8000),
        runtime=120,
        gpu=1 if config["generate"]["device"].startswith("cuda") else 0,
    script:
        "../workflow_scripts/train_demo_unet.py"


rule generate_chunk:
    input:
        pred=res("predictions/ridge/sub-{sub}_text.h5"),
        vae=f"{GENERATOR}/vae",
        diffusion=f"{GENERATOR}/diffusion",
    output:
        res("recon/{method}/sub-{sub}/chunk-{chunk}.h5"),
    wildcard_constraints:
        chunk=r"\d+",
    params:
        cfg=config["generate"],
        seed=config["seed"],
        chunk=lambda wc: int(wc.chunk),
        n_total=N_TEST,
        shuffle=lambda wc: wc.method.endswith("_shuffled"),
        code=code_hash("generate", "io", "metrics/stats.py"),
    log:
        log_path("generate_{method}_sub-{sub}_chunk-{chunk}"),
    benchmark:
        bench_path("generate_{method}_sub-{sub}_chunk-{chunk}")
    group:
        "generate"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(6000),
        runtime=60,
        gpu=1,
    script:
        "../workflow_scripts/generate.py"


rule merge_recon:
    input:
        chunks=expand(res("recon/{{method}}/sub-{{sub}}/chunk-{chunk}.h5"), chunk=CHUNKS),
        pred=res("predictions/ridge/sub-{sub}_text.h5"),
    output:
        res("recon/{method}/sub-{sub}.h5"),
    params:
        code=code_hash("io"),
    log:
        log_path("merge_recon_{method}_sub-{sub}"),
    benchmark:
        bench_path("merge_recon_{method}_sub-{sub}")
    group:
        "results"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=20,
    script:
        "../workflow_scripts/merge_recon.py"
