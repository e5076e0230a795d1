"""The precision environment a port check ran in, for its report: a float32 gap means little without it.

The device each framework computed on, the dtypes checked, torch's TF32 switches (matmul, cuDNN
convolutions, cuDNN RNNs: on a GPU each lets float32 products round to 10 mantissa bits), JAX's default
matmul precision and x64 flag, the thread counts and the versions. Read after the check has run (x64 is
switched on by the float64 run).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import metadata
from typing import Any


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def fp32_precision(backends: Any, name: str) -> str:
    """torch's float32 precision setting for `name` ("tf32" or "ieee"; "none": the default), read through the
    new API only: reading the legacy `allow_tf32` flags raises once a process has mixed the two."""
    setting: Any = backends
    try:
        for part in name.split("."):
            setting = getattr(setting, part)
        return str(setting.fp32_precision)
    except (AttributeError, RuntimeError):
        return "n/a"


def precision_environment(dtypes: Sequence[str], streaming: bool = False) -> dict[str, str]:
    """Name -> value, in the order a reader wants them (device first, versions last); `streaming`: how the
    float64 run held its weights."""
    import jax

    try:
        import torch
    except ImportError:  # a reference check runs without torch
        torch = None  # type: ignore[assignment]
    config: Any = jax.config  # its flags are attributes mypy does not know
    switches = ("cuda.matmul", "cudnn.conv", "cudnn.rnn")
    return {
        "device": f"torch {'cpu' if torch else 'not available'}, jax {jax.default_backend()}",
        "dtypes": ", ".join(dtypes)
        + ("; streaming: weights held in float32, each float64 copy made as it is used" if streaming else ""),
        "torch fp32 precision": ", ".join(f"{name} {fp32_precision(torch.backends, name)}" for name in switches)
        if torch
        else "-",
        "jax": f"default_matmul_precision {config.jax_default_matmul_precision}, x64 {config.jax_enable_x64}"
        + (" (on for the float64 run alone)" if "float64" in dtypes and not config.jax_enable_x64 else ""),
        "threads": f"torch {torch.get_num_threads() if torch else '-'}, cpus {os.cpu_count()}",
        "versions": f"torch {version('torch') if torch else 'not importable'}, jax {jax.__version__}, "
        f"flax {version('flax')}, optax {version('optax')}",
    }
