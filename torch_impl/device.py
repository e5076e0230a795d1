"""Where the PyTorch side runs: picking the device, naming it, its precision settings and memory figure."""

from __future__ import annotations

import torch

from common.errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; `gpu`/`cuda` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {requested}: PyTorch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def set_tf32(enabled: bool) -> None:
    """TF32 on or off for float32 on a GPU (off: cuDNN's RNNs and matmuls compute in IEEE float32).

    `torch.backends.cudnn.rnn.fp32_precision` defaults to "tf32" and the top-level
    `torch.backends.fp32_precision` does not reach it, so each setting is made explicitly.
    """
    precision = "tf32" if enabled else "ieee"
    # torch >= 2.9: the fp32_precision settings (mixing them with allow_tf32 is an error). They are set
    # on modules at run time and absent from torch's type stubs, hence the ignores.
    try:
        torch.backends.cudnn.rnn.fp32_precision = precision  # type: ignore[attr-defined]
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision  # type: ignore[attr-defined]
    except AttributeError:
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled


def tf32_enabled() -> bool:
    """Whether float32 RNNs or matmuls on a GPU may use TF32 now (cuDNN's RNNs do by default)."""
    rnn = torch.backends.cudnn.rnn.fp32_precision  # type: ignore[attr-defined]  # not in torch's stubs
    return "tf32" in (rnn, torch.backends.cuda.matmul.fp32_precision)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory allocated by torch on the GPU in MiB (None on the CPU: see the process's peak RSS)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
