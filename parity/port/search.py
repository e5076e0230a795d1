"""How `infer_port` pairs units and decides between candidates.

Pairing: within each family, the assignment (`scipy.optimize.linear_sum_assignment`) of least name cost among
the pairs whose shapes fit; a recurrent cell by its layer and direction. Deciding: a candidate (its pairs,
their tables, the input layout) runs both models in float64 through `check_port`'s outputs and submodules
checks; its score is how far the paired layers agree (all, then the leading run of agreeing layers). From
the first layer that differs, the moves are: its other tables, a swap of its Flax layer with another pair's
of the family, a move to an unpaired Flax layer that fits. The best move is kept while it improves the score.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from typing import Any

import numpy as np

from parity.port.conventions import conventions, layout
from parity.port.declare import Port
from parity.port.transforms import permute
from parity.port.units import TableRow, Unit

MAX_TRIALS = 60  # float64 runs one inference may spend deciding between candidates


@dataclasses.dataclass
class Pair:
    """A torch unit, the Flax unit it goes to, the tables that fit, the one chosen, and how it was chosen."""

    source: Unit
    target: Unit
    tables: list[list[TableRow]]
    choice: int = 0
    how: str = "shapes"  # shapes (one fit), names (by name among rivals), float64 (decided by running)
    rivals: int = 0

    @property
    def rows(self) -> list[TableRow]:
        return self.tables[self.choice]


def name_cost(source: Unit, target: Unit, sources: int, targets: int) -> float:
    """0 for the same name and place, towards 1 for nothing alike; a recurrent cell by layer and direction."""
    if source.family == "recurrent":
        place = 0.5 * (source.layer != target.layer) + 0.5 * (source.reverse != target.reverse)
        return place + 0.1 * (1 - difflib.SequenceMatcher(None, source.path, target.path).ratio())
    whole = difflib.SequenceMatcher(None, source.path, target.path).ratio()
    last = difflib.SequenceMatcher(None, source.path.rsplit(".", 1)[-1], target.path.rsplit(".", 1)[-1]).ratio()
    order = abs(source.order / max(sources, 1) - target.order / max(targets, 1))
    return 1 - 0.5 * whole - 0.5 * last + 0.01 * order


def pair_units(sources: list[Unit], targets: list[Unit], flattened: list[tuple[int, ...]]) -> list[Pair]:
    """Within each family, the assignment of least name cost among the pairs whose shapes fit."""
    from scipy.optimize import linear_sum_assignment

    pairs = []
    for family in dict.fromkeys(unit.family for unit in sources):
        ours = [u for u in sources if u.family == family]
        theirs = [u for u in targets if u.family == family]
        if not theirs:
            continue
        tables = [[conventions(s, t, flattened) for t in theirs] for s in ours]
        cost = np.array(
            [
                [name_cost(s, t, len(sources), len(targets)) if tables[i][j] else 1e6 for j, t in enumerate(theirs)]
                for i, s in enumerate(ours)
            ]
        )
        for i, j in zip(*linear_sum_assignment(cost), strict=True):
            if cost[i, j] < 1e6:
                rivals = sum(1 for k in range(len(theirs)) if k != j and tables[i][k])
                how = "names" if rivals else "shapes"
                pairs.append(Pair(ours[i], theirs[j], tables[i][j], 0, how, rivals))
    return sorted(pairs, key=lambda pair: pair.source.order)


def submodule_table(pairs: list[Pair]) -> list[TableRow]:
    """Every paired layer's output compared, torch layout turned into Flax's; a recurrent module by its last
    layer (the Flax module holding that layer's cells: its `nnx.RNN`, or both directions' `Bidirectional`)."""
    rows: list[TableRow] = []
    recurrent: dict[str, list[Pair]] = {}
    for pair in pairs:
        if pair.source.family == "recurrent":
            module = pair.source.path.rsplit(".", 1)[0]
            if module not in recurrent:
                rows.append((module,))  # its place in torch's order; the Flax module is found below
            recurrent.setdefault(module, []).append(pair)
        elif pair.source.family != "tensor" and pair.source.path:
            rows.append((pair.source.path, pair.target.path, *layout(pair.source)))
    for module, cells in recurrent.items():
        last = max(pair.source.layer for pair in cells)
        paths = [pair.target.path.split(".") for pair in cells if pair.source.layer == last]
        shared = itertools.takewhile(lambda parts: len(set(parts)) == 1, zip(*paths, strict=False))
        common = [parts[0] for parts in shared]
        if len(common) == len(paths[0]):
            common = common[:-1]  # one cell: the RNN that runs it
        time_first = not getattr(cells[0].source.module, "batch_first", True)
        steps = (permute(1, 0, 2),) if time_first else ()  # [time, batch, features] -> [batch, time, features]
        index = rows.index((module,))
        rows[index : index + 1] = [(module, ".".join(common), *steps)] if common else []
    return rows


@dataclasses.dataclass
class Candidate:
    """One proposal: the pairs and tables, the input layout; its float64 score once run."""

    pairs: list[Pair]
    inputs: tuple[Any, ...]
    score: tuple[int, ...] = (-1,)
    report: Any = None
    error: str = ""


class Search:
    """Candidates run in float64 against each other, the best kept (`MAX_TRIALS` runs at most)."""

    def __init__(
        self,
        name: str,
        factories: tuple[Any, Any],
        inputs: tuple[np.ndarray, ...],
        left: list[str],
        forwards: tuple[Any, Any] = (None, None),
    ):
        self.name, self.factories, self.inputs, self.left = name, factories, inputs, left
        self.forwards = forwards  # (torch_forward, flax_forward), as Port's
        self.trials = 0
        self.unrecorded: set[str] = set()  # Flax modules that run only inside a transform (nothing to record)

    def port(self, candidate: Candidate) -> Port:
        rows = [row for row in submodule_table(candidate.pairs) if row[1] not in self.unrecorded]
        batchnorm = any(name.endswith("num_batches_tracked") for p in candidate.pairs for name in p.source.tensors)
        return Port(
            name=self.name,
            torch_model=self.factories[0],
            flax_model=self.factories[1],
            weights=[row for pair in candidate.pairs for row in pair.rows],
            submodules=rows,
            inputs=list(candidate.inputs),
            not_ported=(["*.num_batches_tracked"] if batchnorm else []) + self.left,
            torch_forward=self.forwards[0],
            flax_forward=self.forwards[1],
        )

    def run(self, candidate: Candidate) -> Candidate:
        """The candidate's outputs and paired layers compared in float64; its score says how far they agree."""
        from parity.port.check import check_port

        self.trials += 1
        try:
            report = check_port(
                self.port(candidate), self.inputs, None, checks=("outputs", "submodules", "units"), dtypes=("float64",)
            )
        except Exception as error:  # a layout or table the Flax model cannot run
            return dataclasses.replace(candidate, score=(-1,), report=None, error=f"{type(error).__name__}: {error}")
        silent = {row.case.split("(flax ")[1].split(")")[0] for row in report.rows if " ran 0 times" in row.detail}
        if silent - self.unrecorded:
            self.unrecorded |= silent
            return self.run(candidate)
        layers = [row for row in report.rows if row.check == "submodules"]
        leading = next((i for i, row in enumerate(layers) if row.passed is False), len(layers))
        outputs = all(row.passed is not False for row in report.rows if row.check == "outputs")
        agreeing = sum(row.passed is not False for row in layers)
        units = sum(row.passed is True for row in report.rows if row.check == "units")  # each on torch's inputs
        score = (int(report.passed), units, leading, agreeing, int(outputs))
        return dataclasses.replace(candidate, score=score, report=report, error="")

    def culprits(self, candidate: Candidate) -> list[Pair]:
        """The pairs to reconsider: those of the first layer whose outputs differ, and every pair with rivals
        whose output no submodule row shows (a lone tensor, a layer inside a transform); with no layer
        differing, every pair with rivals."""
        ambiguous = [p for p in candidate.pairs if p.rivals or len(p.tables) > 1]
        failing = [row for row in candidate.report.rows if row.check == "submodules" and row.passed is False]
        faulty = set(faulty_units(candidate.report))
        if not failing and not faulty:
            return ambiguous
        modules = faulty or {failing[0].case.split(" (flax")[0]}  # every faulty unit, each judged on its own
        found = [p for p in candidate.pairs if {p.source.path, p.source.path.rsplit(".", 1)[0]} & modules]
        shown = {row[1] for row in self.port(candidate).submodules}
        unseen = [p for p in ambiguous if p.source.family == "tensor" or p.target.path not in shown]
        return found + [p for p in unseen if p not in found]

    def moves(self, candidate: Candidate, flattened: list[tuple[int, ...]], targets: list[Unit]) -> list[Candidate]:
        """Each other table for a culprit, each swap of its Flax unit with a same-family pair's, each move to an
        unpaired Flax unit that fits."""
        spare = [unit for unit in targets if all(unit is not pair.target for pair in candidate.pairs)]
        found = []
        for pair in self.culprits(candidate):
            index = candidate.pairs.index(pair)

            def moved(target: Unit, tables: list[list[TableRow]], pair: Pair = pair) -> Pair:
                return dataclasses.replace(pair, target=target, tables=tables, choice=0, how="float64")

            for choice in range(len(pair.tables)):
                if choice != pair.choice:
                    found.append(changed(candidate, {index: dataclasses.replace(pair, choice=choice, how="float64")}))
            for other_index, other in enumerate(candidate.pairs):
                if other is pair or other.source.family != pair.source.family:
                    continue
                mine = conventions(pair.source, other.target, flattened)
                theirs = conventions(other.source, pair.target, flattened)
                if mine and theirs:
                    swap = {index: moved(other.target, mine), other_index: moved(pair.target, theirs, other)}
                    found.append(changed(candidate, swap))
            for target in spare:
                tables = conventions(pair.source, target, flattened)
                if tables:
                    found.append(changed(candidate, {index: moved(target, tables)}))
        return found


def changed(candidate: Candidate, replaced: dict[int, Pair]) -> Candidate:
    pairs = [replaced.get(index, pair) for index, pair in enumerate(candidate.pairs)]
    return Candidate(pairs, candidate.inputs)


def faulty_units(report: Any) -> dict[str, Any]:
    """torch module -> its failing units row, for each unit that differs on torch's own inputs."""
    rows = [row for row in report.rows if row.check == "units" and row.passed is False and " (flax" in row.case]
    return {row.case.split(" (flax")[0]: row for row in rows}
