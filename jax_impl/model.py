"""The tutorials' network in Flax NNX, computing PyTorch's arithmetic with Flax's own recurrent blocks.

Cells: `nnx.OptimizedLSTMCell` (gates i,f,g,o) and `nnx.SimpleCell` (tanh RNN), each given the second
bias PyTorch has (see `TorchLSTMCell`), and `TorchGRUCell`, because `nnx.GRUCell` has no hidden-side bias
for the candidate gate and so cannot hold PyTorch's `b_hn` inside `r * (W_hn h + b_hn)`.

Why two biases where one computes the same function: Flax keeps one bias because PyTorch's `b_ih` and
`b_hh` are only ever added. But they are two parameters to the optimizer: each Adam (or SGD) step moves
both, so their sum moves twice as far as a single Flax bias would. A one-bias port computes the same
logits and trains differently (measured in the README's Parity section); a two-bias port trains the same.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
from flax import nnx

from common.config import Config
from common.errors import ConfigError
from common.weights import layer_input_size
from jax_impl import backward as manual
from jax_impl import recurrence as schedules

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
_LECUN_NORMAL = nnx.initializers.lecun_normal()  # Flax's default kernel initialisers (nnx.GRUCell's)
_ORTHOGONAL = nnx.initializers.orthogonal()
RECURRENCES = ("flax", "hoisted", "fused-directions", "cudnn")  # see jax_impl/recurrence.py
BACKWARDS = ("autodiff", "manual")  # manual: each direction's backward pass by hand (jax_impl/backward.py)


class TorchGRUCell(nnx.RNNCellBase):
    """PyTorch's GRU cell (gates r, z, n; two biases), which `nnx.GRUCell` cannot express.

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr);  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        param_dtype=jnp.float32,
        kernel_init=_LECUN_NORMAL,
        recurrent_kernel_init=_ORTHOGONAL,
        rngs: nnx.Rngs,
    ):
        self.in_features, self.hidden_features = in_features, hidden_features
        self.dense_i = nnx.Linear(
            in_features, 3 * hidden_features, kernel_init=kernel_init, param_dtype=param_dtype, rngs=rngs
        )
        self.dense_h = nnx.Linear(
            hidden_features, 3 * hidden_features, kernel_init=recurrent_kernel_init, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        input_r, input_z, input_n = jnp.split(self.dense_i(inputs), 3, axis=-1)
        hidden_r, hidden_z, hidden_n = jnp.split(self.dense_h(carry), 3, axis=-1)
        reset = jax.nn.sigmoid(input_r + hidden_r)
        update = jax.nn.sigmoid(input_z + hidden_z)
        candidate = jnp.tanh(input_n + reset * hidden_n)
        new_h = (1.0 - update) * candidate + update * carry
        return new_h, new_h

    def initialize_carry(self, input_shape: tuple[int, ...], rngs=None, carry_init=None) -> jax.Array:
        return jnp.zeros(input_shape[:-1] + (self.hidden_features,), self.dense_h.kernel.get_value().dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class TorchLSTMCell(nnx.OptimizedLSTMCell):
    """`nnx.OptimizedLSTMCell` with a bias on its input projection too: PyTorch's `b_ih` beside `b_hh`.

    Flax's `__call__` is kept as it is: `dense_i(x) + dense_h(h)`, split into gates i, f, g, o.
    """

    def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, **options):
        super().__init__(in_features, hidden_features, rngs=rngs, **options)
        self.dense_i = nnx.Linear(
            in_features,
            4 * hidden_features,
            use_bias=True,
            kernel_init=options.get("kernel_init", _LECUN_NORMAL),
            param_dtype=options.get("param_dtype", jnp.float32),
            rngs=rngs,
        )


class TorchRNNCell(nnx.SimpleCell):
    """`nnx.SimpleCell` (tanh) with a bias on its recurrent projection too: PyTorch's `b_hh` beside `b_ih`."""

    def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs, **options):
        super().__init__(in_features, hidden_features, rngs=rngs, **options)
        self.dense_h = nnx.Linear(
            hidden_features,
            hidden_features,
            use_bias=True,
            kernel_init=options.get("recurrent_kernel_init", _ORTHOGONAL),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=rngs,
        )


def identity_blocks(key, shape, dtype=jnp.float32):
    """Kernel init `<dtype>[H, gates * H]` = [I, I, ...]: the transpose of PyTorch's identity weight_hh."""
    hidden, width = shape
    return jnp.tile(jnp.eye(hidden, dtype=dtype), (1, width // hidden))


def make_cell(config: Config, in_features: int, rngs: nnx.Rngs) -> nnx.RNNCellBase:
    """The Flax cell for `config.cell`, with Flax's own initialisers (identity recurrent kernel if asked)."""
    options = {"param_dtype": DTYPES[config.dtype], "rngs": rngs}
    if config.recurrent_init == "identity":
        options["recurrent_kernel_init"] = identity_blocks
    if config.cell == "rnn":  # SimpleCell computes in float32 unless told otherwise
        options["dtype"] = DTYPES[config.dtype]
    cell = {"lstm": TorchLSTMCell, "rnn": TorchRNNCell, "gru": TorchGRUCell}[config.cell]
    return cell(in_features, config.hidden_size, **options)


def zero_carry(config: Config, batch_size: int):
    """Zero initial state for one direction of one layer: `(c, h)` for an LSTM, `h` otherwise."""
    zeros = jnp.zeros((batch_size, config.hidden_size), DTYPES[config.dtype])
    return (zeros, zeros) if config.cell == "lstm" else zeros


class SequenceClassifier(nnx.Module):
    """Rows of an image in, class logits out: `<float>[batch, 28, 28]` -> `<float>[batch, classes]`.

    `layers[k]` is an `nnx.RNN` (or an `nnx.Bidirectional` of two) over time; `out` is the head.
    `recurrence` and `unroll` choose how the time loop is scheduled, `backward` how its gradient is
    computed (autodiff through the scan, or `jax_impl.backward`'s hand-written pass); never what it computes.
    """

    def __init__(
        self, config: Config, rngs: nnx.Rngs, recurrence: str = "flax", unroll: int = 1, backward: str = "autodiff"
    ):
        if recurrence not in RECURRENCES:
            raise ConfigError(f"recurrence must be one of {', '.join(RECURRENCES)}, got {recurrence!r}")
        if backward not in BACKWARDS:
            raise ConfigError(f"backward must be one of {', '.join(BACKWARDS)}, got {backward!r}")
        if backward == "manual" and recurrence != "flax":
            raise ConfigError(
                f"backward 'manual' schedules its own time loop; recurrence {recurrence!r} cannot join it"
            )
        if recurrence != "flax" and config.cell == "gru":
            raise ConfigError(f"recurrence {recurrence!r} covers the lstm and rnn cells, not gru")
        if recurrence == "cudnn" and config.cell != "lstm":
            raise ConfigError(f"recurrence 'cudnn' covers the lstm cell only, not {config.cell}")
        self.config, self.recurrence, self.unroll, self.backward = config, recurrence, unroll, backward
        layers: list[nnx.RNN | nnx.Bidirectional] = []
        for layer in range(config.num_layers):
            in_features = layer_input_size(config, layer)

            def one_direction(in_features: int = in_features) -> nnx.RNN:
                return nnx.RNN(make_cell(config, in_features, rngs), unroll=unroll, rngs=False)

            if config.bidirectional:
                # The backward RNN runs reversed with keep_order=True, so its output at step t is its state
                # after reading rows T..t: at the last step, after the last row only (PyTorch's convention).
                layers.append(nnx.Bidirectional(one_direction(), one_direction(), rngs=False))
            else:
                layers.append(one_direction())
        self.layers = nnx.List(layers)
        self.out = nnx.Linear(
            config.num_directions * config.hidden_size, config.num_classes, param_dtype=DTYPES[config.dtype], rngs=rngs
        )

    def layer_outputs(self, rows: jax.Array, layers: int | None = None) -> list[jax.Array]:
        """Every layer's output sequence `<float>[batch, time, directions * hidden]` (h of each step); with
        `layers`, only the first that many (the default schedule and the manual backward only)."""
        if self.backward == "manual":
            return manual.manual_layer_outputs(self, rows, layers)
        if self.recurrence != "flax":
            if layers is not None:
                raise ValueError(f"recurrence {self.recurrence!r} runs every layer; layers={layers} needs 'flax'")
            return schedules.SCHEDULES[self.recurrence](self, rows, zero_carry)
        outputs, sequence = [], rows
        for layer in list(self.layers)[:layers]:
            carry = zero_carry(self.config, rows.shape[0])
            initial = (carry, carry) if self.config.bidirectional else carry
            # without return_carry, both nnx.RNN and nnx.Bidirectional return the output sequence alone
            sequence = cast(jax.Array, layer(sequence, initial_carry=initial))
            outputs.append(sequence)
        return outputs

    def __call__(self, rows: jax.Array) -> jax.Array:
        return self.out(last_time_step(self.layer_outputs(rows)[-1]))

    def logits(self, rows: jax.Array) -> jax.Array:
        """`self(rows)`'s values, computing only what the head reads: the trainer's forward pass.

        The head reads the last layer's backward direction after the last row alone: one step from zero
        state. So that direction runs on the last row only, not on all rows (27 of its 28 steps, and their
        backward pass, would be computed and thrown away). Same arithmetic; the lower layers, and the
        forward direction, run in full. `__call__` stays the model as defined (every layer as a whole
        module, every step), which the port API and the hidden-state checks observe; a test holds the two
        to each other's logits and gradients."""
        if not (self.config.bidirectional and self.recurrence == "flax"):
            return self(rows)
        config = self.config
        sequence = self.layer_outputs(rows, layers=len(self.layers) - 1)[-1] if len(self.layers) > 1 else rows
        last = cast(nnx.Bidirectional, self.layers[-1])
        forward_rnn, backward_rnn = cast(nnx.RNN, last.forward_rnn), cast(nnx.RNN, last.backward_rnn)
        last_row = sequence[:, -1:, :]
        if self.backward == "manual":
            forward = manual.cell_direction(config.cell, forward_rnn.cell, sequence, False, self.unroll)
            backward = manual.cell_direction(config.cell, backward_rnn.cell, last_row, True, self.unroll)
        else:
            carry = zero_carry(config, rows.shape[0])
            # without return_carry, an nnx.RNN returns its output sequence alone
            forward = cast(jax.Array, forward_rnn(sequence, initial_carry=carry, reverse=False))
            backward = cast(jax.Array, backward_rnn(last_row, initial_carry=carry, reverse=True, keep_order=True))
        return self.out(jnp.concatenate([forward[:, -1, :], backward[:, -1, :]], axis=-1))


def last_time_step(output: jax.Array) -> jax.Array:
    """`output[:, -1, :]`: for a bidirectional layer, [forward after all rows, backward after the last row]."""
    return output[:, -1, :]


def enable_dtype(dtype: str) -> None:
    """float64 needs JAX's x64 mode, switched on before any array of the run is made."""
    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)


def build_model(
    config: Config, native_seed: int = 0, *, recurrence: str = "flax", unroll: int = 1, backward: str = "autodiff"
) -> SequenceClassifier:
    """The model with Flax's own initialisers drawn from seed `native_seed` (convert.py replaces them)."""
    enable_dtype(config.dtype)
    return SequenceClassifier(
        config, rngs=nnx.Rngs(native_seed), recurrence=recurrence, unroll=unroll, backward=backward
    )


def logits_in_batches(model: SequenceClassifier, rows: jax.Array, batch_size: int = 2000) -> jax.Array:
    """Logits of every row sequence in `rows`, batch by batch through one compiled forward pass."""
    graphdef, state = nnx.split(model)
    return jnp.concatenate(
        [_forward(graphdef, state, rows[start : start + batch_size]) for start in range(0, len(rows), batch_size)]
    )


@jax.jit(static_argnums=0)
def _forward(graphdef, state, rows):
    return nnx.merge(graphdef, state).logits(rows)
