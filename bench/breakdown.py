"""`python -m bench.breakdown`: where a JAX training step's time goes, by subtraction of compiled pieces.

Each piece is the JAX trainer's own model and code, jitted alone and timed round-robin on one batch:
the forward pass and loss; the loss and its gradients (so the backward pass is the difference); one whole
train step with Adam (so the optimizer is the difference); and a step inside the trainer's compiled chunk
of 50 (so the gather of the batch from the device-resident set, the scan and dispatch are the rest).

    python -m bench.breakdown --presets lstm,bilstm --backward manual,autodiff
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from common.cli import OneLineParser, preset_list
from common.console import print_table
from common.outputs import entry_point
from common.presets import get_preset
from common.weights import initial_weights

CHUNK = 50  # the JAX trainer's default steps per compiled scan


def timed(run: Callable[[], object], repeats: int) -> float:
    """Seconds per call: the median over `repeats` rounds of 20 calls (after one warm-up call)."""
    import jax

    jax.block_until_ready(run())
    rounds = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(20):
            out = run()
        jax.block_until_ready(out)
        rounds.append((time.perf_counter() - began) / 20)
    return statistics.median(rounds)


def pieces(preset: str, backward: str) -> dict[str, Callable[[], object]]:
    """The compiled pieces of one training step of `preset`, each a call without arguments."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jax_impl.convert import from_canonical
    from jax_impl.train import loss_fn, make_optimizer, make_train_chunk, train_step, value_and_grad

    config = get_preset(preset)
    graphdef, params = nnx.split(from_canonical(initial_weights(config), config, backward=backward))
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(0)
    rows = jnp.asarray(rng.random((2000, 28, 28), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, 10, 2000).astype(np.int32))
    batch = jnp.arange(config.batch_size)
    chunk_indices = jnp.asarray(rng.integers(0, 2000, (CHUNK, config.batch_size)).astype(np.int32))
    forward = jax.jit(lambda p, x, y: loss_fn(nnx.merge(graphdef, p), x, y))
    gradients = jax.jit(lambda p, x, y: value_and_grad(graphdef, p, x, y))
    step = jax.jit(lambda p, s, x, y: train_step(graphdef, optimizer, p, s, x, y))
    chunk = make_train_chunk(graphdef, optimizer)
    x, y = rows[batch], labels[batch]
    return {
        "forward": lambda: forward(params, x, y),
        "forward+backward": lambda: gradients(params, x, y),
        "train step": lambda: step(params, opt_state, x, y),
        "step in a chunk": lambda: chunk(params, opt_state, rows, labels, chunk_indices)[2],
    }


def breakdown(preset: str, backward: str, repeats: int) -> dict[str, float]:
    """Milliseconds per step of each piece and the differences: forward, backward, optimizer, the rest."""
    calls = pieces(preset, backward)
    seconds = {name: timed(call, repeats) for name, call in calls.items()}
    seconds["step in a chunk"] /= CHUNK
    ms = {name: 1000 * value for name, value in seconds.items()}
    return {
        "forward": ms["forward"],
        "backward": ms["forward+backward"] - ms["forward"],
        "optimizer": ms["train step"] - ms["forward+backward"],
        "gather, scan, dispatch": ms["step in a chunk"] - ms["train step"],
        "step": ms["step in a chunk"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m bench.breakdown", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="lstm,bilstm", help="comma-separated presets")
    parser.add_argument("--backward", default="manual,autodiff", help="comma-separated: manual, autodiff")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds of 20 calls per piece")
    args = parser.parse_args(argv)
    presets = preset_list(parser, args.presets)
    backwards = args.backward.split(",")
    if any(name not in ("manual", "autodiff") for name in backwards):
        parser.error(f"--backward: expected manual and/or autodiff, got {args.backward!r}")
    if args.repeats <= 0:
        parser.error(f"--repeats must be positive, got {args.repeats}")
    rows = []
    for preset in presets:
        for backward in backwards:
            parts = breakdown(preset, backward, args.repeats)
            step = parts.pop("step")
            shares = [f"{value:.2f} ({value / step:.0%})" for value in parts.values()]
            rows.append((preset, backward, f"{step:.2f}", *shares))
    print_table(("preset", "backward", "step ms", *(f"{name} ms" for name in parts)), rows)
    return 0


if __name__ == "__main__":
    sys.exit(entry_point(main))
