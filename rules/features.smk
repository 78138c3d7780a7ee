# Stimulus side: frames, captions, synthesized audio and embeddings of every clip, computed once
# and cached in HDF5. Feature rules read only stimuli and the features config: changing a decoder or
# generator sampling setting reruns none of them.

rule frames:
    input:
        splits=res("splits.tsv"),
        events=all_event_files(),
        videos=STIMULUS_FILES,
    output:
        res("features/frames.h5"),
    params:
        n_frames=FEATURES["n_frames"],
        size=FEATURES["size"],
        code=code_hash("features/frames.py", "io/h5.py", "io/atomic.py", "io/video.py"),
    log:
        log_path("frames"),
    benchmark:
        bench_path("frames")
    group:
        "stimuli"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=30,
    script:
        "../workflow_scripts/frames.py"


rule captions:
    input:
        unpack(captions_input),
    output:
        res("features/captions.tsv"),
    params:
        cfg=FEATURES["captions"],
        device=FEATURES["device"],
        seed=config["seed"],
        code=code_hash("stimuli/captions.py", *FEATURE_CODE),
    log:
        log_path("captions"),
    benchmark:
        bench_path("captions")
    group:
        "stimuli"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=60,
    script:
        "../workflow_scripts/captions.py"


rule text_features:
    input:
        captions=res("features/captions.tsv"),
    output:
        res("features/text.h5"),
    params:
        model=FEATURES["text_model"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        seed=config["seed"],
        code=code_hash(*FEATURE_CODE),
    log:
        log_path("text_features"),
    benchmark:
        bench_path("text_features")
    group:
        "stimuli"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/text_features.py"


rule clip_text_features:
    input:
        captions=res("features/captions.tsv"),
    output:
        res("features/clip_text.h5"),
    params:
        model=FEATURES["image_model"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        seed=config["seed"],
        code=code_hash(*FEATURE_CODE),
    log:
        log_path("clip_text_features"),
    benchmark:
        bench_path("clip_text_features")
    group:
        "stimuli"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/clip_text_features.py"


rule token_features:
    input:
        captions=res("features/captions.tsv"),
    output:
        res("features/text_tokens.h5"),
    params:
        model=FEATURES["tokens"]["model"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        seed=config["seed"],
        code=code_hash(*FEATURE_CODE),
    log:
        log_path("token_features"),
    benchmark:
        bench_path("token_features")
    group:
        "stimuli"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/token_features.py"


rule image_features:
    input:
        frames=res("features/frames.h5"),
    output:
        res("features/image.h5"),
    params:
        model=FEATURES["image_model"],
        which=FEATURES["image_frame"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        seed=config["seed"],
        code=code_hash(*FEATURE_CODE),
    log:
        log_path("image_features"),
    benchmark:
        bench_path("image_features")
    group:
        "stimuli"
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
        unpack(vae_input),
        frames=res("features/frames.h5"),
    output:
        res("features/vae.h5"),
    params:
        vae=vae_spec,
        frames="first",
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        code=code_hash(*FEATURE_CODE),
    log:
        log_path("vae_features"),
    benchmark:
        bench_path("vae_features")
    group:
        "generator"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/vae_features.py"


rule vae_video_features:
    input:
        unpack(vae_input),
        frames=res("features/frames.h5"),
    output:
        res("features/vae_frames.h5"),
    params:
        vae=vae_spec,
        frames="all",
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        code=code_hash(*FEATURE_CODE),
    log:
        log_path("vae_video_features"),
    benchmark:
        bench_path("vae_video_features")
    group:
        "generator"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=30,
    script:
        "../workflow_scripts/vae_features.py"


rule audio:
    input:
        captions=res("features/captions.tsv"),
        events=all_event_files(),
        splits=res("splits.tsv"),
    output:
        directory(res("audio")),
    params:
        cfg=FEATURES["audio"],
        device=FEATURES["device"],
        seed=config["seed"],
        code=code_hash("stimuli/audio.py", *FEATURE_CODE),
    log:
        log_path("audio"),
    benchmark:
        bench_path("audio")
    group:
        "stimuli"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(6000),
        runtime=120,
    script:
        "../workflow_scripts/audio.py"


rule wav2vec_features:
    input:
        audio=res("audio"),
    output:
        res("features/wav2vec.h5"),
    params:
        cfg=FEATURES["wav2vec"],
        tr=TR,
        device=FEATURES["device"],
        seed=config["seed"],
        code=code_hash("stimuli/audio.py", *FEATURE_CODE),
    log:
        log_path("wav2vec_features"),
    benchmark:
        bench_path("wav2vec_features")
    group:
        "stimuli"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=60,
    script:
        "../workflow_scripts/wav2vec_features.py"


rule flow_features:
    input:
        frames=res("features/frames.h5"),
    output:
        res("features/flow.h5"),
    params:
        cfg=FEATURES["flow"],
        code=code_hash("features/flow.py", "io/h5.py", "io/atomic.py"),
    log:
        log_path("flow_features"),
    benchmark:
        bench_path("flow_features")
    group:
        "stimuli"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=30,
    script:
        "../workflow_scripts/flow_features.py"
