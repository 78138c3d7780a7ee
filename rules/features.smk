# Stimulus side: frames and embeddings for every clip, computed once and cached in HDF5.


rule frames:
    input:
        splits=res("splits.tsv"),
        videos=STIMULUS_FILES,
    output:
        res("features/frames.h5"),
    params:
        n_frames=config["features"]["n_frames"],
        size=config["features"]["size"],
        code=code_hash("features", "io"),
    log:
        log_path("frames"),
    benchmark:
        bench_path("frames")
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=30,
    script:
        "../workflow_scripts/frames.py"


rule text_features:
    input:
        splits=res("splits.tsv"),
    output:
        res("features/text.h5"),
    params:
        model=config["features"]["text_model"],
        batch_size=config["features"]["batch_size"],
        device=config["features"]["device"],
        seed=config["seed"],
        code=code_hash("features", "models.py", "io"),
    log:
        log_path("text_features"),
    benchmark:
        bench_path("text_features")
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/text_features.py"


rule image_features:
    input:
        frames=res("features/frames.h5"),
    output:
        res("features/image.h5"),
    params:
        model=config["features"]["image_model"],
        which=config["features"]["image_frame"],
        batch_size=config["features"]["batch_size"],
        device=config["features"]["device"],
        seed=config["seed"],
        code=code_hash("features", "models.py", "io"),
    log:
        log_path("image_features"),
    benchmark:
        bench_path("image_features")
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/image_features.py"


rule vae_features:
    input:
        frames=res("features/frames.h5"),
        vae=f"{GENERATOR}/vae",
    output:
        res("features/vae.h5"),
    params:
        batch_size=config["features"]["batch_size"],
        code=code_hash("features", "generate", "io"),
    log:
        log_path("vae_features"),
    benchmark:
        bench_path("vae_features")
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/vae_features.py"
