"""The stock LSTM port declared (`python -m examples.lstm.port` proves it).

`nn.LSTM` keeps, per layer and direction, `weight_ih <[4H, in]>`, `weight_hh <[4H, H]>` and two biases
`bias_ih`, `bias_hh <[4H]>`, each four gate blocks stacked i, f, g, o. `nnx.LSTMCell` keeps one Linear a
gate for the input (`ii`, `if_`, `ig`, `io`: kernels `<[in, H]>`, no bias) and one for the state (`hi`,
`hf`, `hg`, `ho`: kernels `<[H, H]>` and the gate's one bias). So the matrices are split in four and
transposed, and the two biases are summed, `add()`, then split: the one step that is one-way (the sum
comes back as `bias_ih` with `bias_hh` zero, the same function). PyTorch's reverse direction
(`_reverse`) is the Bidirectional layer's `backward_rnn`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from flax import nnx

from common.outputs import entry_point
from examples.lstm import flax_model, torch_model
from parity import Port, add, split, transpose

HIDDEN, LAYERS = 32, 2
GATES = ("i", "f", "g", "o")  # PyTorch's block order; Flax names the input Linear of gate f `if_`


def cell_weights(
    layer: int, reverse: bool, gates: Sequence[str] = GATES, biases: str = "both", torch_reverse: bool | None = None
) -> list[tuple]:
    """One direction of one layer: PyTorch's four tensors onto the cell's eight Linear layers.

    `gates`: which Flax gate each of PyTorch's four row blocks goes to (a wrong order is a planted bug);
    `biases`: "both" (summed), or "ih" (only `bias_ih` taken, `bias_hh` declared not ported: a planted bug);
    `torch_reverse`: which PyTorch direction's tensors the cell takes (the other one's is a planted bug).
    """
    torch_reverse = reverse if torch_reverse is None else torch_reverse
    t = f"lstm.{{}}_l{layer}{'_reverse' if torch_reverse else ''}"
    f = f"layers.{layer}.{'backward' if reverse else 'forward'}_rnn.cell"
    rows: list[tuple] = [
        (t.format("weight_ih"), tuple(f"{f}.i{'f_' if g == 'f' else g}.kernel" for g in gates), split(4), transpose()),
        (t.format("weight_hh"), tuple(f"{f}.h{g}.kernel" for g in gates), split(4), transpose()),
    ]
    bias = tuple(f"{f}.h{g}.bias" for g in gates)
    if biases == "both":
        rows.append(((t.format("bias_ih"), t.format("bias_hh")), bias, add(), split(4)))
    else:
        rows.append((t.format("bias_ih"), bias, split(4)))
    return rows


def weights(gates: Sequence[str] = GATES, biases: str = "both", swap_directions: bool = False) -> list[tuple]:
    """The table; `swap_directions` gives each forward cell its layer's backward weights and the reverse."""
    rows = [
        row
        for layer in range(LAYERS)
        for reverse in (False, True)
        for row in cell_weights(layer, reverse, gates, biases, torch_reverse=reverse != swap_directions)
    ]
    return [*rows, ("head.weight", "head.kernel", transpose()), ("head.bias", "head.bias")]


SUBMODULES = [("lstm", f"layers.{LAYERS - 1}"), ("head", "head")]  # nn.LSTM runs its layers inside one module


def make_port(weight_rows=None, not_ported=()) -> Port:
    """The LSTM port; the tests pass a changed table to plant bugs."""
    return Port(
        name="lstm",
        torch_model=lambda: torch_model.LSTMClassifier(HIDDEN, LAYERS),
        flax_model=lambda dtype="float32": flax_model.LSTMClassifier(nnx.Rngs(0), HIDDEN, LAYERS, param_dtype=dtype),
        weights=weight_rows or weights(),
        submodules=SUBMODULES,
        not_ported=not_ported,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m examples.lstm.port [--images N] [--checks NAMES]`: every check on real MNIST test images."""
    from examples.mnist import prove_main

    return prove_main(make_port(), channel_axis=False, argv=argv)


if __name__ == "__main__":
    sys.exit(entry_point(main))
