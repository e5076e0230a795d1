"""A port check's result: its rows, whether all passed, where the first divergence shows, and the table."""

from __future__ import annotations

import dataclasses

from common.console import format_table
from parity.compare import RESULT_WORDS, Row, format_figures


@dataclasses.dataclass
class Report:
    """The rows of every check, whether all passed, and where the first divergence shows."""

    port: str
    rows: list[Row]
    first_divergence: str | None  # e.g. "float64 submodules: conv1 (flax conv1): |diff| 0.3 > 1e-12 ..."
    values: int = 0  # how many numbers the torch model's state_dict holds

    @property
    def passed(self) -> bool:
        return all(row.passed is not False for row in self.rows)

    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.passed is False]

    def table(self) -> str:
        """A headline (verdict, first divergence), then one aligned line per row."""
        header = ("check", "case", "dtype", "figures", "tolerance", "result", "detail")
        lines = [
            (row.check, row.case, row.dtype, format_figures(row), row.tolerance, RESULT_WORDS[row.passed], row.detail)
            for row in self.rows
        ]
        verdict = "passed" if self.passed else f"FAILED ({len(self.failures())} of {len(self.rows)} rows)"
        head = f"port {self.port}: {verdict}"
        if self.first_divergence:
            head += f"; first divergence: {self.first_divergence}"
        return head + "\n" + format_table(header, lines)

    def __str__(self) -> str:
        return self.table()
