"""Infer a port: propose the whole `Port` (weights, buffers, submodules, input layout) from the two models.

    inferred = infer_port(TorchModel, lambda: FlaxModel(nnx.Rngs(0)), inputs)
    print(inferred.code())                # Python rows to paste, every guess and undecided entry marked
    check_port(inferred.port, inputs, labels)

Three steps. Each model is cut into units (`parity.port.units`: Linear, Conv, LayerNorm, BatchNorm,
Embedding, MultiheadAttention, one layer and direction of an LSTM/GRU/RNN, lone tensors). Units of one family
are paired by shape first (each family's conventions: transposes, conv layouts, gate splits and sums, packed
q/k/v, `scale` and `kernel`), then by name similarity and order (an assignment, `linear_sum_assignment`).
Where more than one pairing or table fits the shapes (two same-shape layers, a square matrix, a Linear
reading a flattened NCHW map, an LSTM's directions), the candidates are run: both models in float64 on the
inputs, every paired layer's output compared, and the candidate that moves the first divergence furthest
(or removes it) is kept. What cannot be paired or decided is said in one line each; the rest is returned.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from parity.port.building import build, built_abstractly
from parity.port.conventions import notes
from parity.port.declare import Port, PortError, parse_entry
from parity.port.scope import in_one_check
from parity.port.search import MAX_TRIALS, Candidate, Pair, Search, faulty_units, pair_units
from parity.port.trees import called
from parity.port.units import Unit, flax_units, torch_units
from parity.port.weights import flax_shapes, flax_types


@dataclasses.dataclass
class InferredPort:
    """The proposed port, each weight row's mark, the lines it could not decide, and what the weights cannot say."""

    port: Port
    marks: list[str]  # one per weight row ("" when the shapes alone decide it)
    undecided: list[str]
    notes: list[str]
    trials: int = 0  # float64 runs spent deciding

    @property
    def decided(self) -> bool:
        return not self.undecided

    def code(self) -> str:
        """The port as Python rows to paste, each guess marked in a comment line above its row and each undecided
        entry in one below the table; double-quoted, as Black-style formatters write them."""
        lines = ["weights = ["]
        for row, mark in zip(self.port.weights, self.marks, strict=True):
            lines += [f"    # {mark}"] if mark else []
            lines.append(f"    {format_row(row)},")
        lines += ["]", "submodules = ["]
        lines += [f"    {format_row(row)}," for row in self.port.submodules]
        lines.append("]")
        if self.port.inputs:
            lines.append(f"inputs = [{', '.join(str(step) for step in self.port.inputs)}]")
        if self.port.not_ported:
            lines.append(f"not_ported = [{', '.join(quoted(name) for name in self.port.not_ported)}]")
        lines += [f"# UNDECIDED: {line}" for line in self.undecided]
        lines += [f"# note: {line}" for line in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.code()


def quoted(name: str) -> str:
    return json.dumps(name)  # a double-quoted Python string for any name a module can have


def format_row(row: Sequence[Any]) -> str:
    names = [quoted(part) if isinstance(part, str) else f"({', '.join(map(quoted, part))},)" for part in row[:2]]
    return f"({', '.join(names + [str(step) for step in row[2:]])})"


def factory(model: Any, framework: str) -> Callable[..., Any]:
    """A factory as it is; a model instance as a factory of copies (a check moves its model to float64)."""
    if framework == "torch":
        import torch

        if isinstance(model, torch.nn.Module):
            return lambda: copy.deepcopy(model)
        return model  # type: ignore[no-any-return]
    from flax import nnx

    if isinstance(model, nnx.Module):
        return lambda: nnx.clone(model)
    return model  # type: ignore[no-any-return]


def feature_maps(
    model: Any, inputs: tuple[np.ndarray, ...], forward: Callable[..., Any] | None = None
) -> list[tuple[int, ...]]:
    """(channels, height, width) of every 4-D map a torch module returns on `inputs`: what a Linear after a
    convolution may read flattened."""
    import torch

    seen: dict[tuple[int, ...], None] = {}

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            seen[tuple(output.shape[1:])] = None

    handles = [module.register_forward_hook(hook) for _, module in model.named_modules()]
    try:
        with torch.no_grad():
            tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
            called(forward, model.eval(), *tensors)
    finally:
        for handle in handles:
            handle.remove()
    return list(seen)


def layouts(inputs: tuple[np.ndarray, ...]) -> list[tuple[Any, ...]]:
    """The input layouts to try: as they are, and channels last (NCHW -> NHWC) for a float input of 3+ axes."""
    from parity.port.transforms import permute

    first = inputs[0]
    candidates: list[tuple[Any, ...]] = [()]
    if len(inputs) == 1 and first.ndim >= 3 and np.issubdtype(first.dtype, np.floating):
        candidates.append((permute(0, *range(2, first.ndim), 1),))
    return candidates


@in_one_check
def infer_port(
    torch_model: Any,
    flax_model: Any,
    inputs: np.ndarray | Sequence[np.ndarray],
    *,
    name: str = "inferred",
    batch: int = 8,
    max_trials: int = MAX_TRIALS,
    torch_forward: Callable[..., Any] | None = None,
    flax_forward: Callable[..., Any] | None = None,
) -> InferredPort:
    """The `Port` of two models (factories like `Port`'s, or module instances), inferred and decided on
    `inputs` (PyTorch layout; the first `batch` rows are used). PortError when they have nothing in common.
    `torch_forward`, `flax_forward`: how each model is called, as `Port`'s; the inferred port carries them."""
    from parity.port.arguments import check_factory, checked_inputs, refusal

    check_factory(torch_model, "torch_model", "infer_port", instances=True)
    check_factory(flax_model, "flax_model", "infer_port", instances=True)
    if batch < 1:
        raise PortError(f"infer_port: batch: {batch}, expected at least 1 input row")
    factories = (factory(torch_model, "torch"), factory(flax_model, "flax"))
    xs = tuple(x[:batch] for x in checked_inputs(inputs, "infer_port"))
    from jax_impl.cache import enable_compilation_cache

    enable_compilation_cache()  # JAX's programs kept on disk across runs (jax_impl/cache.py)
    built = build(factories[0], "float32")
    flax_built = built_abstractly(factories[1], "float32")  # its layers' shapes and kinds: no value read
    targets = flax_units(flax_built, flax_shapes(flax_built), flax_types(flax_built))
    sources = torch_units(built, split_attention=any(unit.family == "attention" for unit in targets))
    with refusal("torch", xs, "infer_port"):  # the first forward pass: a model that refuses is one line
        flattened = feature_maps(built, xs, torch_forward)
    del built, flax_built
    pairs = pair_units(sources, targets, flattened)
    if not pairs:
        first = sources[0] if sources else "nothing"
        families = ", ".join(dict.fromkeys(unit.kind for unit in targets)) or "no variables"
        raise PortError(
            f"infer_port: the models have nothing in common: torch {first} pairs with no Flax layer "
            f"(the Flax model has {families})"
        )
    refuse_gru_bias(pairs)
    undecided, left = unpaired(sources, targets, pairs)
    search = Search(name, factories, xs, left, (torch_forward, flax_forward))
    tried = [search.run(Candidate(pairs, steps)) for steps in layouts(xs)]
    best = max(tried, key=lambda candidate: candidate.score)
    if best.report is None:
        raise PortError(f"infer_port: the Flax model does not run on the inputs in any layout tried: {best.error}")
    while not best.report.passed and search.trials < max_trials:
        moves = search.moves(best, flattened, targets)[: max_trials - search.trials]
        results = [search.run(move) for move in moves]
        better = max(results, key=lambda candidate: candidate.score, default=None)
        if better is None or better.score <= best.score:
            break
        best = better
    faulty = faulty_units(best.report)  # a unit that differs on torch's own inputs whatever its table: a bug there
    for row in faulty.values():
        undecided.append(
            f"{row.case}: differs on torch's own inputs with every candidate tried ({search.trials} runs): a bug in "
            f"the Flax module, not the table? {row.detail}"
        )
    if not best.report.passed and not faulty:
        where = best.report.first_divergence or "; ".join(row.detail for row in best.report.failures()[:1])
        undecided.append(f"float64 outputs differ with every candidate tried ({search.trials} runs): {where}")
    units = {row.case.split(" (flax")[0]: row.passed for row in best.report.rows if row.check == "units"}

    def agreed(pair: Pair) -> bool:  # its own unit on torch's inputs, where it is one; else the whole port
        verdict = units.get(pair.source.path, units.get(pair.source.path.rsplit(".", 1)[0]))
        return bool(best.report.passed if verdict is None else verdict)

    marks = [mark(pair, index, agreed(pair)) for pair in best.pairs for index in range(len(pair.rows))]
    said = [line for pair in best.pairs for line in notes(pair.source, pair.target)]
    return InferredPort(search.port(best), marks, undecided, list(dict.fromkeys(said)), search.trials)


def refuse_gru_bias(pairs: list[Pair]) -> None:
    """nn.GRU onto a cell with one bias (nnx.GRUCell's dense_i): `check_port`'s own refusal, naming the pair."""
    from parity.port.conventions import check_gru_biases

    for pair in [pair for pair in pairs if pair.source.kind == "gru"]:
        module = pair.source.path.rsplit(".", 1)[0] if "." in pair.source.path else ""
        try:
            check_gru_biases([parse_entry(row) for row in pair.rows], [module], list(pair.source.tensors), ())
        except PortError as error:
            raise PortError(f"infer_port: torch {pair.source} onto flax {pair.target}: {error}") from None


def unpaired(sources: list[Unit], targets: list[Unit], pairs: list[Pair]) -> tuple[list[str], list[str]]:
    """One line for each unit left unpaired, and its tensors (left out of the table, declared not ported)."""
    lines, left = [], []
    for side, units, paired in (
        ("torch", sources, {id(pair.source) for pair in pairs}),
        ("flax", targets, {id(pair.target) for pair in pairs}),
    ):
        for unit in units:
            if id(unit) in paired:
                continue
            shapes = ", ".join(
                f"{n[len(unit.path) + 1 :] if unit.path else n} {list(s)}" for n, s in unit.tensors.items()
            )
            lines.append(f"{side} {unit} [{shapes}]: no {unit.family} layer on the other side fits its shapes")
            left += [n for n in unit.tensors if not n.endswith("num_batches_tracked")]
    return lines, left


def mark(pair: Pair, row: int, agreed: bool) -> str:
    """The comment row `row` of a pair gets: how its pairing (on its first row) and its table (on the rows
    that differ from the usual table) were chosen; nothing when the shapes alone decide."""
    verdict = "float64 agrees" if agreed else "float64 does not agree"
    if pair.choice and pair.rows[row] != pair.tables[0][row]:
        return f"decided in float64: table {pair.choice + 1} of {len(pair.tables)} that fit, {why(pair)} ({verdict})"
    if row:
        return ""
    if pair.how == "float64":
        return f"paired in float64 against the names' guess ({verdict})"
    if pair.how == "names":
        return f"guess: by name, {pair.rivals + 1} Flax {pair.source.family} layers fit these shapes ({verdict})"
    if len(pair.tables) > 1:
        return f"guess: the first of {len(pair.tables)} tables that fit ({verdict})"
    return ""


def why(pair: Pair) -> str:
    """What the chosen table does that the usual one does not, in words."""
    steps = " ".join(str(step) for row in pair.rows for step in row[2:])
    if pair.source.family == "linear" and "reshape(" in steps:
        return "its input is a flattened NCHW map, NHWC in Flax"
    if pair.source.family == "tensor":
        return "transposed" if steps else "as it is"
    return steps or "no steps"
