"""Stimulus-derived inputs of the feature extractors: captions and synthesized audio.

``captions``
    :func:`~fmrivid.stimuli.captions.clip_captions`: captions from the dataset
    metadata, or from a captioning model (BLIP-2) on each clip's first and last
    frames merged as "X, and then Y" (Mind-Animator's recipe).
``audio``
    :func:`~fmrivid.stimuli.audio.synthesize`: one clip per caption from
    ``features.audio.pipeline`` (AudioLDM 2, maintained; or the seed's AudioLDM,
    deprecated upstream), of the clip's duration, seeded per clip. The audio is an engineered temporal
    prior (the audio-guided recipe), not a claim that the brain heard it.
"""

from fmrivid.stimuli.audio import read_wavs, synthesize, write_wavs
from fmrivid.stimuli.captions import caption_images, clip_captions, merge_captions

__all__ = ["caption_images", "clip_captions", "merge_captions", "read_wavs", "synthesize",
           "write_wavs"]
