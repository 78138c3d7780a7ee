"""Video generation: the demo's tiny VAE + UNet3D generator trained on CPU."""

from fmrivid.generate.demo import (
    default_config,
    encode_latents,
    generate,
    load_unet,
    load_vae,
    tiny_config,
    train_unet,
    train_vae,
)

__all__ = [
    "default_config",
    "tiny_config",
    "train_vae",
    "train_unet",
    "generate",
    "encode_latents",
    "load_vae",
    "load_unet",
]
