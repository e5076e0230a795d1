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
    not_ported: list[str] = dataclasses.field(default_factory=list)  # declared with no counterpart, left out
    mode: str = "eval"
    environment: dict[str, str] = dataclasses.field(default_factory=dict)  # device, precision switches, versions
    reference: str = ""  # the saved reference a Flax-only check ran against (check_reference), else torch itself

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
        head = f"port {self.port}{' (train mode)' if self.mode == 'train' else ''}: {verdict}"
        if self.first_divergence:
            head += f"; first divergence: {self.first_divergence}"
        faulty = [
            row.case.split(" (flax")[0] for row in self.failures() if row.check == "units" and " (flax" in row.case
        ]
        if faulty:
            head += f"\nfaulty units (each on torch's own inputs): {', '.join(dict.fromkeys(faulty))}"
        if self.reference:
            head += f"\nagainst the reference {self.reference}"
        if self.not_ported:
            head += f"\nnot ported (declared): {summarise(self.not_ported)}"
        foot = "; ".join(f"{key} {value}" for key, value in self.environment.items())
        return head + "\n" + format_table(header, lines) + (f"\nenvironment: {foot}" if foot else "")

    def __str__(self) -> str:
        return self.table()


def summarise(names: list[str]) -> str:
    """`6 tensors *.num_batches_tracked` when one pattern covers them all, else the first few names."""
    suffixes = {name.rsplit(".", 1)[-1] for name in names}
    if len(names) > 3 and len(suffixes) == 1:
        return f"{len(names)} tensors *.{next(iter(suffixes))}"
    return ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
