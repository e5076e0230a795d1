"""The steps a weight map applies to turn PyTorch tensors into Flax parameters, and back, bit for bit.

Every step but one moves entries without touching their values (a permutation, a reshape, a split or a
concatenation, a reordering of blocks), so both directions are exact and a gradient converts like the weight
it belongs to. Steps act on a list of arrays: `split` turns one into several (a fused `in_proj_weight` into
q, k, v), `concat` and `add` several into one; the others act on each array of the list.

`add` is the one that combines: PyTorch's two LSTM biases `b_ih + b_hh` as the one bias of Flax's cell. It
is one-way: back, the whole sum goes to the first tensor and zeros to the rest, a different pair computing
the same function (the outputs check proves the function; the weights check says which entries are
one-way). The gradient of a sum is each term's gradient, so a gradient converts through it by taking the
first tensor's.

    ("conv1.weight", "conv1.kernel", permute(2, 3, 1, 0))      # OIHW -> HWIO
    ("fc.weight", "fc.kernel", transpose())                     # [out, in] -> [in, out]
    ("attn.in_proj_weight", ("attn.query.kernel", "attn.key.kernel", "attn.value.kernel"),
     split(3), transpose(), reshape())                          # [3E, E] -> 3 x [E, heads, head_dim]
    (("lstm.bias_ih_l0", "lstm.bias_hh_l0"), ("cell.hi.bias", "cell.hf.bias", "cell.hg.bias", "cell.ho.bias"),
     add(), split(4))                                           # b_ih + b_hh, one bias per gate
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Permute:
    """Axes reordered: output axis i is input axis `axes[i]` (numpy.transpose)."""

    axes: tuple[int, ...]

    def forward(self, arrays: list[np.ndarray], targets: Sequence[Shape]) -> list[np.ndarray]:
        for array in arrays:
            if array.ndim != len(self.axes):
                raise ValueError(f"{self} needs {len(self.axes)}-D arrays, got shape {array.shape}")
        return [np.transpose(array, self.axes) for array in arrays]

    def inverse(self, arrays: list[np.ndarray], sources: Sequence[Shape]) -> list[np.ndarray]:
        return [np.transpose(array, np.argsort(self.axes)) for array in arrays]

    def __str__(self) -> str:
        return "transpose()" if self.axes == (1, 0) else f"permute{self.axes}"


@dataclasses.dataclass(frozen=True)
class Reshape:
    """A new shape for each array; `shape=None`: the destination's own shape (only as the last step)."""

    shape: Shape | None = None

    def forward(self, arrays: list[np.ndarray], targets: Sequence[Shape]) -> list[np.ndarray]:
        shapes = [self.shape] * len(arrays) if self.shape is not None else list(targets)
        if len(shapes) != len(arrays):
            raise ValueError(f"{self}: {len(arrays)} arrays for {len(shapes)} destinations")
        out = []
        for array, shape in zip(arrays, shapes, strict=True):
            if array.size != math.prod(s for s in shape if s != -1) and -1 not in shape:
                raise ValueError(f"{self}: cannot reshape {array.shape} ({array.size} values) into {shape}")
            out.append(np.reshape(array, shape))
        return out

    def inverse(self, arrays: list[np.ndarray], sources: Sequence[Shape]) -> list[np.ndarray]:
        return [np.reshape(array, shape) for array, shape in zip(arrays, sources, strict=True)]

    def __str__(self) -> str:
        return "reshape()" if self.shape is None else f"reshape{self.shape}"


@dataclasses.dataclass(frozen=True)
class Split:
    """One array into `parts` equal blocks along `axis` (a fused q/k/v projection into three)."""

    parts: int
    axis: int = 0

    def forward(self, arrays: list[np.ndarray], targets: Sequence[Shape]) -> list[np.ndarray]:
        if len(arrays) != 1:
            raise ValueError(f"{self} takes one array, got {len(arrays)}")
        if arrays[0].shape[self.axis] % self.parts:
            raise ValueError(f"{self}: axis {self.axis} of {arrays[0].shape} does not split in {self.parts}")
        return list(np.split(arrays[0], self.parts, axis=self.axis))

    def inverse(self, arrays: list[np.ndarray], sources: Sequence[Shape]) -> list[np.ndarray]:
        return [np.concatenate(arrays, axis=self.axis)]

    def __str__(self) -> str:
        return f"split({self.parts}, axis={self.axis})"


@dataclasses.dataclass(frozen=True)
class Concat:
    """Several arrays into one along `axis` (separate PyTorch tensors that Flax keeps fused)."""

    axis: int = 0

    def forward(self, arrays: list[np.ndarray], targets: Sequence[Shape]) -> list[np.ndarray]:
        return [np.concatenate(arrays, axis=self.axis)]

    def inverse(self, arrays: list[np.ndarray], sources: Sequence[Shape]) -> list[np.ndarray]:
        bounds = np.cumsum([shape[self.axis] for shape in sources])[:-1]
        return list(np.split(arrays[0], bounds, axis=self.axis))

    def __str__(self) -> str:
        return f"concat(axis={self.axis})"


@dataclasses.dataclass(frozen=True)
class ReorderBlocks:
    """Equal blocks along `axis` put in a new order: block i of the output is block `order[i]` of the input
    (gate blocks: PyTorch's LSTM stacks i, f, g, o; a port may stack them otherwise)."""

    order: tuple[int, ...]
    axis: int = 0

    def forward(self, arrays: list[np.ndarray], targets: Sequence[Shape]) -> list[np.ndarray]:
        out = []
        for array in arrays:
            if array.shape[self.axis] % len(self.order):
                raise ValueError(f"{self}: axis {self.axis} of {array.shape} is not {len(self.order)} equal blocks")
            blocks = np.split(array, len(self.order), axis=self.axis)
            out.append(np.concatenate([blocks[i] for i in self.order], axis=self.axis))
        return out

    def inverse(self, arrays: list[np.ndarray], sources: Sequence[Shape]) -> list[np.ndarray]:
        return ReorderBlocks(tuple(int(i) for i in np.argsort(self.order)), self.axis).forward(arrays, sources)

    def __str__(self) -> str:
        return f"reorder_blocks{self.order}"


@dataclasses.dataclass(frozen=True)
class Add:
    """Several arrays of one shape summed into one (one-way: back, the sum to the first and zeros to the rest)."""

    one_way = True

    def forward(self, arrays: list[np.ndarray], targets: Sequence[Shape]) -> list[np.ndarray]:
        if len(arrays) < 2:
            raise ValueError(f"{self} sums several tensors into one, got {len(arrays)}")
        if len({array.shape for array in arrays}) > 1:
            raise ValueError(f"{self} sums tensors of one shape, got {', '.join(str(a.shape) for a in arrays)}")
        total = arrays[0].copy()
        for array in arrays[1:]:
            total += array
        return [total]

    def gradient(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """d(loss)/d(sum) is d(loss)/d(each term): the first tensor's gradient."""
        return [arrays[0]]

    def inverse(self, arrays: list[np.ndarray], sources: Sequence[Shape]) -> list[np.ndarray]:
        return [arrays[0], *(np.zeros(shape, arrays[0].dtype) for shape in sources[1:])]

    def __str__(self) -> str:
        return "add()"


Step = Permute | Reshape | Split | Concat | ReorderBlocks | Add


def transpose() -> Permute:
    """[out, in] -> [in, out]: a Linear weight as a Flax kernel."""
    return Permute((1, 0))


def permute(*axes: int) -> Permute:
    """Axes reordered: output axis i is input axis axes[i] (e.g. permute(2, 3, 1, 0): OIHW -> HWIO)."""
    if sorted(axes) != list(range(len(axes))):
        raise ValueError(f"permute{axes}: expected a permutation of 0..{len(axes) - 1}")
    return Permute(tuple(axes))


def reshape(*shape: int) -> Reshape:
    """A new shape; with no arguments, the destination's own shape (last step only)."""
    return Reshape(tuple(shape) if shape else None)


def split(parts: int, axis: int = 0) -> Split:
    """One array into `parts` equal blocks along `axis`."""
    if parts < 2:
        raise ValueError(f"split({parts}): expected at least 2 parts")
    return Split(parts, axis)


def concat(axis: int = 0) -> Concat:
    """Several arrays into one along `axis`."""
    return Concat(axis)


def add() -> Add:
    """Several tensors of one shape summed into one Flax parameter (PyTorch's b_ih + b_hh); one-way."""
    return Add()


def one_way(steps: Sequence[Step]) -> bool:
    """Whether torch -> Flax -> torch can give other tensors (the same function): the steps combine tensors."""
    return any(isinstance(step, Add) for step in steps)


def reorder_blocks(*order: int, axis: int = 0) -> ReorderBlocks:
    """Equal blocks along `axis` reordered: block i of the result is block order[i] of the input."""
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"reorder_blocks{order}: expected a permutation of 0..{len(order) - 1}")
    return ReorderBlocks(tuple(order), axis)


def apply(
    steps: Sequence[Step], arrays: list[np.ndarray], targets: Sequence[Shape], gradients: bool = False
) -> list[np.ndarray]:
    """PyTorch arrays -> Flax arrays through `steps`; `targets` are the Flax shapes (for a final `reshape()`).
    With `gradients`, the arrays are gradients: a sum takes its first term's (`Add.gradient`)."""
    for step in steps:
        arrays = step.gradient(arrays) if gradients and isinstance(step, Add) else step.forward(arrays, targets)
    return arrays


def invert(steps: Sequence[Step], arrays: list[np.ndarray], sources: Sequence[Shape]) -> list[np.ndarray]:
    """Flax arrays -> PyTorch arrays: each step undone, last first; `sources` are the PyTorch shapes."""
    shapes = [list(sources)]  # the shapes each step received, found by running the steps on empty arrays
    probe = [np.empty(shape, dtype=np.uint8) for shape in sources]
    targets = [array.shape for array in arrays]
    for step in steps:
        probe = step.forward(probe, targets)
        shapes.append([array.shape for array in probe])
    for step, received in zip(reversed(steps), reversed(shapes[:-1]), strict=True):
        arrays = step.inverse(arrays, received)
    return arrays


def guess_fix(source: Shape, destination: Shape) -> str:
    """What might turn a PyTorch shape into a Flax one, for an error message: a permutation, a reshape, or nothing."""
    if sorted(source) == sorted(destination) and len(source) == len(destination):
        unused, axes = list(range(len(source))), []
        for size in destination:  # each destination axis takes the first unused source axis of its size
            axis = next(a for a in unused if source[a] == size)
            unused.remove(axis)
            axes.append(axis)
        return str(Permute(tuple(axes))) + "?"
    if math.prod(source) == math.prod(destination):
        return "transpose(), reshape()?" if len(source) == 2 else "reshape()?"
    return f"no step fixes it: {math.prod(source)} values against {math.prod(destination)}; is it the right tensor?"
