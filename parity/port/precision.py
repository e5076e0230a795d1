"""A float32 failure on an accelerator, told apart from TF32: the failing rows rerun at full float32 precision.

On a GPU, JAX's default matmul precision lets float32 products and convolutions round their inputs to TF32 (10
mantissa bits) or bfloat16 passes (TPU); torch, in a port check, computes on the CPU in full float32. A float32
row can then fail on a port that is right. When JAX computes on a GPU or TPU at anything but 'highest', every
failing float32 row's checks are run again under `jax.default_matmul_precision("highest")`, and each failing
row says which it was: "TF32: passes at 'highest'" (the port is right; set the precision for float32 parity)
or "not TF32: fails at 'highest' too" (look at the port). float64 rows are never affected.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

from parity.compare import Row, format_figures

ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")
FULL = ("highest", "float32", "tensorfloat32_off")  # settings under which float32 products are not rounded


def reduced_precision(backend: str, precision: str | None) -> bool:
    """Whether JAX's float32 products may be rounded below float32: an accelerator at a precision short of full."""
    return backend.lower() in ACCELERATORS and str(precision).lower() not in FULL


def jax_reduced_precision() -> bool:
    import jax

    config: Any = jax.config
    return reduced_precision(jax.default_backend(), config.jax_default_matmul_precision)


def rerun_at_full_precision(rerun: Callable[[], list[Row]]) -> list[Row]:
    """`rerun()` (the float32 checks) with JAX's matmul precision at 'highest' for its length."""
    import jax

    with jax.default_matmul_precision("highest"):
        return rerun()


def diagnose_tf32(rows: Sequence[Row], rerun: Callable[[str], list[Row]]) -> list[Row]:
    """`rows` with each failing float32 row's detail saying whether it was TF32. `rerun(check)`: that check's
    float32 rows, computed again (called at most once a check, inside `rerun_at_full_precision`). Where JAX's
    products cannot be rounded (a CPU, or precision 'highest'), the rows are returned as they are."""
    failing = [row for row in rows if row.dtype == "float32" and row.passed is False]
    if not failing or not jax_reduced_precision():
        return list(rows)
    again: dict[tuple[str, str], Row] = {}
    for check in dict.fromkeys(row.check for row in failing):
        again |= {(row.check, row.case): row for row in rerun_at_full_precision(functools.partial(rerun, check))}
    out, marked = [], {id(row) for row in failing}
    for row in rows:
        if id(row) in marked:
            twin = again.get((row.check, row.case))
            if twin is None:
                verdict = "TF32 not told apart: the row did not rerun"
            elif twin.passed:
                verdict = f"TF32: passes at JAX matmul precision 'highest' ({format_figures(twin)})"
            else:
                verdict = f"not TF32: fails at JAX matmul precision 'highest' too ({format_figures(twin)})"
            row = dataclasses.replace(row, detail=f"{row.detail}; {verdict}" if row.detail else verdict)
        out.append(row)
    return out
