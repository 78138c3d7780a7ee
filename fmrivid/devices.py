"""Torch devices: the one helper that imports torch, apart from fmrivid.utils (kept torch-free, so that rules
whose code never touches torch do not need it in their environment)."""


def resolve_device(name, log=print):
    """Return a torch device name; fall back to CPU with a message when CUDA is absent."""
    import torch

    if str(name).startswith("cuda") and not torch.cuda.is_available():
        log(f"device {name!r} requested but CUDA is not available: using cpu")
        return "cpu"
    return str(name)

