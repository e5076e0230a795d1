"""Where the JAX side runs: picking the device, naming it, its precision settings and memory figure."""

from __future__ import annotations

import os

import jax

from common.errors import ConfigError


def resolve_device(requested: str) -> jax.Device:
    """`auto` -> the first GPU when JAX has one, else the CPU; `gpu`/`cuda` without a GPU is an error."""
    if requested in ("auto", "gpu", "cuda"):
        try:
            return jax.devices("gpu")[0]
        except RuntimeError:
            if requested != "auto":
                raise ConfigError(f"--device {requested}: JAX sees no GPU (is the CUDA plugin installed?)") from None
    return jax.devices("cpu")[0]


def describe_device(device: jax.Device) -> str:
    """`cpu (XLA, 2 cores)` or `gpu (NVIDIA H100 80GB HBM3)`."""
    if device.platform == "cpu":
        return f"cpu (XLA, {os.cpu_count()} cores)"
    return f"{device.platform} ({device.device_kind})"


def set_tf32(enabled: bool) -> None:
    """TF32 on or off for float32 matmuls on a GPU: JAX's default precision there may use TF32, "highest" does not."""
    jax.config.update("jax_default_matmul_precision", None if enabled else "highest")


def tf32_enabled() -> bool:
    """Whether float32 matmuls on a GPU may use TF32 now (JAX's default precision)."""
    return jax.config.values["jax_default_matmul_precision"] in (None, "default", "tensorfloat32", "bfloat16_3x")


def peak_memory_mb(device: jax.Device) -> float | None:
    """Peak bytes in use on the accelerator in MiB, when its client reports it (None on the CPU)."""
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
