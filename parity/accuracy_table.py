"""Check 6's table: every seed's accuracies summarized per preset, the verdict on the mean gap, and its print-out."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any, TypedDict

from common.console import print_table

MEAN_GAP_TOLERANCE_PP = 0.5
# Test accuracy (%) each recipe's tutorial reports, and that tutorial's own code run on a 2-core CPU (one seed).
TUTORIAL_ACCURACY = {
    "lstm": (95.2, 96.5),
    "bilstm": (97.1, 95.1),
    "rnn": (96.6, 96.4),
    "lstm2": (96.0, 96.0),
    "lstm2x128": (96.0, 97.1),
    "bilstm2x128": (98.0, 97.3),
}
RUNS = {  # name -> (framework, dtype, init)
    "torch": ("torch", "float32", "canonical"),
    "jax": ("jax", "float32", "canonical"),
    "torch64": ("torch", "float64", "canonical"),
    "jax64": ("jax", "float64", "canonical"),
    "torch-native": ("torch", "float32", "native"),
    "jax-native": ("jax", "float32", "native"),
}


RunSummary = dict[str, Any]  # a training's summary.json, as read back (JSON)


class AccuracyRow(TypedDict):
    """One preset's line of the accuracy check: every seed's accuracies (%) and gaps (percentage points)."""

    preset: str
    seeds: list[int]
    torch: list[float]
    jax: list[float]
    torch64: list[float]
    jax64: list[float]
    gap_torch_jax_pp: list[float | None]  # per seed, None where a run of the pair is missing
    gap_rounding_pp: list[float | None]  # torch float32 - float64
    mean_gap_pp: float | None  # the mean of the paired per-seed torch - jax gaps: what the check judges
    mean_gap_standard_error_pp: float | None
    mean_abs_gap_torch_jax_pp: float | None
    mean_abs_gap_rounding_pp: float | None
    gap_jax_rounding_pp: list[float | None]  # jax float32 - float64
    mean_abs_gap_jax_rounding_pp: float | None
    passed: bool | None  # None: fewer than two paired seeds
    torch_native: list[float]
    jax_native: list[float]
    tutorial_reported: float
    tutorial_here: float
    wall_seconds: dict[str, float]


@dataclasses.dataclass
class SeedResult:
    preset: str
    seed: int
    accuracy: dict[str, float]  # run name -> test accuracy in percent
    wall_seconds: dict[str, float]

    def gap(self, a: str, b: str) -> float | None:
        if a in self.accuracy and b in self.accuracy:
            return self.accuracy[a] - self.accuracy[b]
        return None


def mean_spread(values: Sequence[float], seeds: int | None = None) -> str:
    """`mean +- sample standard deviation`, with `(n=K)` when only K of the preset's `seeds` have it."""
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    count = f" (n={len(values)})" if seeds is not None and len(values) != seeds else ""
    return f"{statistics.mean(values):.2f} +- {spread:.2f}{count}"


def mean_abs(values: Sequence[float | None]) -> float | None:
    """Mean size of the per-seed gaps that exist: how far apart one seed's two runs typically end."""
    present = [abs(v) for v in values if v is not None]
    return statistics.mean(present) if present else None


def standard_error(values: Sequence[float | None]) -> float | None:
    """Standard error of the mean of the per-seed gaps (paired by seed), or None under two seeds."""
    present = [v for v in values if v is not None]
    return statistics.stdev(present) / len(present) ** 0.5 if len(present) > 1 else None


def summarize(results: Sequence[SeedResult]) -> list[AccuracyRow]:
    """One row per preset: means, the mean gap and its verdict, the per-seed gaps beside rounding's."""
    rows: list[AccuracyRow] = []
    for preset in dict.fromkeys(r.preset for r in results):
        mine = [r for r in results if r.preset == preset]

        def column(name: str, mine: list[SeedResult] = mine) -> list[float]:
            return [r.accuracy[name] for r in mine if name in r.accuracy]

        torch_acc, jax_acc = column("torch"), column("jax")
        framework_gaps = [r.gap("torch", "jax") for r in mine]
        rounding_gaps = [r.gap("torch", "torch64") for r in mine]
        jax_rounding_gaps = [r.gap("jax", "jax64") for r in mine]
        paired = [gap for gap in framework_gaps if gap is not None]
        # paired by seed: with a run missing for some seed, a difference of means would mix seed sets
        mean_gap = statistics.mean(paired) if paired else None
        reported, here = TUTORIAL_ACCURACY[preset]
        rows.append(
            {
                "preset": preset,
                "seeds": [r.seed for r in mine],
                "torch": torch_acc,
                "jax": jax_acc,
                "torch64": column("torch64"),
                "jax64": column("jax64"),
                "gap_torch_jax_pp": framework_gaps,
                "gap_rounding_pp": rounding_gaps,
                "mean_gap_pp": mean_gap,
                "mean_gap_standard_error_pp": standard_error(framework_gaps),
                "mean_abs_gap_torch_jax_pp": mean_abs(framework_gaps),
                "mean_abs_gap_rounding_pp": mean_abs(rounding_gaps),
                "gap_jax_rounding_pp": jax_rounding_gaps,
                "mean_abs_gap_jax_rounding_pp": mean_abs(jax_rounding_gaps),
                "passed": None if mean_gap is None or len(paired) < 2 else abs(mean_gap) <= MEAN_GAP_TOLERANCE_PP,
                "torch_native": column("torch-native"),
                "jax_native": column("jax-native"),
                "tutorial_reported": reported,
                "tutorial_here": here,
                "wall_seconds": {name: sum(r.wall_seconds.get(name, 0.0) for r in mine) for name in RUNS},
            }
        )
    return rows


def signed(value: float | None, error: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" + ("" if error is None else f" +- {error:.2f}")


def gaps(values: Sequence[float | None]) -> str:
    return " ".join("-" if v is None else f"{v:+.2f}" for v in values)


def print_report(rows: Sequence[AccuracyRow]) -> None:
    print(
        f"accuracy (check 6): test accuracy (%) after full training; pass when |mean torch - mean jax| <= "
        f"{MEAN_GAP_TOLERANCE_PP} pp (same init, same batches, float32)"
    )
    header = (
        "preset",
        "seeds",
        "torch (canonical)",
        "jax (canonical)",
        "mean gap (+- s.e.)",
        "per-seed torch-jax",
        "per-seed torch32-torch64",
        "per-seed jax32-jax64",
        "mean |gap| torch-jax / torch64 / jax64",
        "torch native",
        "jax native",
        "tutorial (reported/here)",
        "result",
    )
    lines = []
    for r in rows:
        seeds = len(r["seeds"])
        typical = " / ".join(
            signed(r[key]).lstrip("+")
            for key in ("mean_abs_gap_torch_jax_pp", "mean_abs_gap_rounding_pp", "mean_abs_gap_jax_rounding_pp")
        )
        lines.append(
            (
                r["preset"],
                str(seeds),
                mean_spread(r["torch"], seeds),
                mean_spread(r["jax"], seeds),
                signed(r["mean_gap_pp"], r["mean_gap_standard_error_pp"]),
                gaps(r["gap_torch_jax_pp"]),
                gaps(r["gap_rounding_pp"]),
                gaps(r["gap_jax_rounding_pp"]),
                typical,
                mean_spread(r["torch_native"], seeds),
                mean_spread(r["jax_native"], seeds),
                f"{r['tutorial_reported']}/{r['tutorial_here']}",
                {True: "pass", False: "FAIL", None: "not enough seeds"}[r["passed"]],
            )
        )
    print_table(header, lines)
    print(
        "  s.e.: standard error of the mean of the per-seed (paired) gaps; mean |gap|: how far one seed's "
        "torch and jax runs typically end apart, beside each framework's float32 vs float64 from the same start"
    )
