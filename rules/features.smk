# Stimulus side: frames, captions, synthesized audio and embeddings of every clip, computed once
# and cached in HDF5. Feature rules read only stimuli and the features config: changing a decoder or
# generator sampling setting reruns none of them (the token features follow generate.method's text encoder only).
from fmrivid.generate.methods import token_kind


rule frames:
    input:
        splits_path=res("splits.tsv"),
        events_paths=all_event_files(),
        videos=STIMULUS_FILES,
    output:
        res("features/frames.h5"),
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
        mem_mb=declared_mem("frames", 2000),
        runtime=declared_runtime("frames", 30),
    params:
        n_frames=FEATURES["n_frames"],
        size=FEATURES["size"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule encoder_chunks:
    input:
        splits_path=res("splits.tsv"),
        events_paths=all_event_files(),
        videos=STIMULUS_FILES,
    output:
        res("features/encoder_chunks.h5"),
    log:
        log_path("encoder_chunks"),
    benchmark:
        bench_path("encoder_chunks")
    group:
        "stimuli"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=mem(2000),  # streamed to the file frame by frame (CC2017: 6.6 GB of chunks on disk, not in memory)
        runtime=30,
    params:
        chunk_frames=ENCODER["chunk_frames"],
        size=ENCODER["frame_size"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule captions:
    input:
        unpack(captions_input),
    output:
        res("features/captions.tsv"),
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
        mem_mb=declared_mem("captions", 4000, CAPTION_MODEL),
        runtime=declared_runtime("captions", 60, CAPTION_MODEL),
    params:
        cfg=FEATURES["captions"],
        device=FEATURES["device"],
        seed=config["seed"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule text_features:
    input:
        captions_path=res("features/captions.tsv"),
    output:
        res("features/text.h5"),
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
        mem_mb=declared_mem("text_features", 4000, FEATURES["text_model"]),
        runtime=declared_runtime("text_features", 30, FEATURES["text_model"]),
    params:
        model=FEATURES["text_model"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        seed=config["seed"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule clip_text_features:
    input:
        captions_path=res("features/captions.tsv"),
    output:
        res("features/clip_text.h5"),
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
        mem_mb=declared_mem("clip_text_features", 4000, FEATURES["image_model"]),
        runtime=declared_runtime("clip_text_features", 30, FEATURES["image_model"]),
    params:
        model=FEATURES["image_model"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        seed=config["seed"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


# features.tokens.model is the generator's own text encoder, loaded as the kind of generate.method's generator
# (fmrivid.generate.methods.token_kind): CLIP text_tokens, or umt5_tokens for wan (UMT5-xxl: 5.7B parameters,
# hence the larger estimate). The kind changes only with the generator's text encoder family.
TOKEN_KIND = token_kind(METHOD)


rule token_features:
    input:
        captions_path=res("features/captions.tsv"),
    output:
        res("features/text_tokens.h5"),
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
        mem_mb=declared_mem(
            "token_features", 4000 if TOKEN_KIND == "text_tokens" else 32000, FEATURES["tokens"]["model"]
        ),
        runtime=declared_runtime(
            "token_features", 30 if TOKEN_KIND == "text_tokens" else 240, FEATURES["tokens"]["model"]
        ),
    params:
        model=FEATURES["tokens"]["model"],
        kind=TOKEN_KIND,
        max_length=FEATURES["tokens"]["max_length"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        seed=config["seed"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule image_features:
    input:
        frames_path=res("features/frames.h5"),
    output:
        res("features/image.h5"),
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
        mem_mb=declared_mem("image_features", 4000, FEATURES["image_model"]),
        runtime=declared_runtime("image_features", 30, FEATURES["image_model"]),
    params:
        model=FEATURES["image_model"],
        which=FEATURES["image_frame"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        seed=config["seed"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule vae_features:
    input:
        unpack(vae_input),
        frames_path=res("features/frames.h5"),
    output:
        res("features/vae.h5"),
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
        mem_mb=declared_mem("vae_features", 4000, FEATURES["vae_model"]),
        runtime=declared_runtime("vae_features", 30, FEATURES["vae_model"]),
    params:
        vae=FEATURES["vae_model"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule vae_video_features:
    input:
        unpack(vae_input),
        frames_path=res("features/frames.h5"),
    output:
        res("features/vae_frames.h5"),
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
        mem_mb=declared_mem("vae_video_features", 4000, FEATURES["vae_model"]),
        runtime=declared_runtime("vae_video_features", 30, FEATURES["vae_model"]),
    params:
        vae=FEATURES["vae_model"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule audio:
    input:
        captions_path=res("features/captions.tsv"),
        events_paths=all_event_files(),
        splits_path=res("splits.tsv"),
    output:
        dir=directory(res("audio")),
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
        mem_mb=declared_mem("audio", 6000, FEATURES["audio"]["model"]),
        runtime=declared_runtime("audio", 120, FEATURES["audio"]["model"]),
    params:
        cfg=FEATURES["audio"],
        device=FEATURES["device"],
        seed=config["seed"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule wav2vec_features:
    input:
        audio_dir=res("audio"),
    output:
        res("features/wav2vec.h5"),
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
        mem_mb=declared_mem("wav2vec_features", 4000, FEATURES["wav2vec"]["model"]),
        runtime=declared_runtime("wav2vec_features", 60, FEATURES["wav2vec"]["model"]),
    params:
        cfg=FEATURES["wav2vec"],
        tr=TR,
        device=FEATURES["device"],
        seed=config["seed"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"


rule flow_features:
    input:
        frames_path=res("features/frames.h5"),
    output:
        res("features/flow.h5"),
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
        mem_mb=declared_mem("flow_features", 2000),
        runtime=declared_runtime("flow_features", 30),
    params:
        cfg=FEATURES["flow"],
        stage=stage("features"),
    script:
        "../workflow_scripts/run_stage.py"
