"""The preset suite across devices: whether a GPU is there, TF32 on or off, and the cross-device logits."""

from __future__ import annotations

import dataclasses

from common.config import DType
from common.data import Dataset
from common.presets import get_preset
from parity import suite_checks
from parity.compare import Row
from parity.preset_ports import preset_port


def gpu_available() -> tuple[bool, str]:
    """Both frameworks must see a GPU for the GPU rows to run."""
    import jax
    import torch

    if not torch.cuda.is_available():
        return False, "no GPU (torch sees no CUDA device)"
    try:
        jax.devices("gpu")
    except RuntimeError:
        return False, "no GPU (JAX sees none)"
    return True, ""


def devices_to_run(requested: str) -> list[str]:
    """`--device` as the devices whose rows run: auto is the CPU plus the GPU when both frameworks see one."""
    if requested == "auto":
        return ["cpu", "gpu"] if gpu_available()[0] else ["cpu"]
    return ["gpu"] if requested in ("gpu", "cuda") else ["cpu"]


def set_tf32(enabled: bool) -> None:
    """TF32 on or off in both frameworks; off, GPU float32 results are held to the CPU tolerances."""
    from jax_impl import device as jax_device
    from torch_impl import device as torch_device

    torch_device.set_tf32(enabled)
    jax_device.set_tf32(enabled)


def as_tf32_rows(rows: list[Row]) -> list[Row]:
    """Rows of a run with TF32 on: shown beside the full-precision ones, not judged by float32's tolerances."""
    return [
        dataclasses.replace(
            row,
            dtype=f"{row.dtype}+tf32",
            passed=None,
            detail=f"TF32 on, not judged ({'passes' if row.passed else 'fails'} float32's "
            f"tolerance){'; ' + row.detail if row.detail else ''}",
        )
        for row in rows
        if row.dtype == "float32"
    ]


def every_device_sides() -> dict[str, tuple[str, str]]:
    """Each side's name -> (side, device): torch and jax on the CPU and on the GPU, and the NumPy oracle."""
    return {
        "torch-cpu": ("torch", "cpu"),
        "torch-gpu": ("torch", "gpu"),
        "jax-cpu": ("jax", "cpu"),
        "jax-gpu": ("jax", "gpu"),
        "numpy": ("numpy", "cpu"),
    }


def cross_device_rows(
    preset: str, dataset: Dataset, dtypes: tuple[DType, ...], images: int, sides: dict[str, tuple[str, str]]
) -> list[Row]:
    """The same random weights and images through every side on every device (`sides`: name -> (side,
    device), as `every_device_sides` gives): the logits, every pair, float32 and float64. Each device's Flax
    side takes the recurrence gradient the JAX trainer takes there (`preset_ports.preset_port`)."""
    rows: list[Row] = []
    device = "+".join(sorted({name.split("-")[-1] for name in sides}))
    for dtype in dtypes:
        config = dataclasses.replace(get_preset(preset), dtype=dtype)
        weights = suite_checks.random_weights(config)
        rows_in, _ = suite_checks.test_rows(dataset, images, dtype)
        results = {
            name: suite_checks.side_outputs(side, preset_port(preset, device=where), config, weights, rows_in, where)[0]
            for name, (side, where) in sides.items()
        }
        rows += suite_checks.compare_logits(
            Row(preset, "logits", "across devices", device, dtype, "", {}, "", None), results
        )
    return rows


def not_run_rows(preset: str, device: str, reason: str, check_names: tuple[str, ...]) -> list[Row]:
    return [Row(preset, check, "-", device, "-", "-", {}, "-", None, f"not run: {reason}") for check in check_names]
