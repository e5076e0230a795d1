"""The hand-written backward pass (`backward="manual"`, jax_impl/backward.py) computes autodiff's gradients."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.errors import ConfigError
from common.presets import PRESETS, get_preset
from jax_impl import backward
from jax_impl.convert import from_canonical, to_canonical
from jax_impl.model import build_model
from jax_impl.train import loss_fn, resolve_backward
from parity.suite_checks import random_weights

RELATIVE = 1e-12  # float64: the two gradients differ only by summation order

# Every preset's shape in every cell type, float64, hidden size cut to 16 so that the set stays quick. At
# hidden 16, lstm2x128 is lstm2 again: each shape (layers, directions, recurrent init) is taken once.
SHAPES = {(c.num_layers, c.bidirectional, c.recurrent_init): name for name, c in reversed(list(PRESETS.items()))}
CONFIGS = {
    f"{preset}-{cell}": dataclasses.replace(get_preset(preset), cell=cell, hidden_size=16, dtype="float64")
    for preset in PRESETS
    if preset in SHAPES.values()
    for cell in ("lstm", "rnn", "gru")
}


def worst_relative_gap(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> tuple[float, str]:
    """max |a - b| / max |a| over every tensor, and the tensor where it is largest."""
    assert expected.keys() == got.keys()
    # a tensor the objective does not reach (the head, for a cotangent on the hidden states) must be 0 on both
    gaps = {
        name: float(np.abs(expected[name] - got[name]).max() / (np.abs(expected[name]).max() or 1.0))
        for name in expected
    }
    name = max(gaps, key=lambda key: gaps[key])
    return gaps[name], name


def canonical_gradients(model, objective, rows) -> dict[str, np.ndarray]:
    """d objective(model, rows) / d every parameter (canonical names) and / d the rows (`"rows"`)."""
    graphdef, params = nnx.split(model)
    # one compiled program, not an eager pass that compiles each loop and primitive on its own
    grads, row_grads = jax.jit(jax.grad(lambda p, x: objective(nnx.merge(graphdef, p), x), argnums=(0, 1)))(
        params, rows
    )
    return {**to_canonical(nnx.merge(graphdef, grads)), "rows": np.asarray(row_grads)}


def both_models(config):
    weights = random_weights(config)
    return from_canonical(weights, config), from_canonical(weights, config, backward="manual")


# The default tier: each shape with its preset's own cell, and the tanh cell on the deepest shape (two
# bidirectional layers); --run-slow adds every other pairing. The GRU's loss gradient on that shape follows from
# two default tests below: its hand-written gradients equal autodiff's for a cotangent on every hidden state
# (the loss's is one of them), and its trainer's forward has the full forward's gradients
# ([bilstm2x128-gru-manual]). test_a_dropped_gate_derivative_... below is the planted bug the default set must
# still see.
DEFAULT_LOSS = {
    "lstm-lstm",
    "bilstm-lstm",
    "rnn-rnn",
    "lstm2-lstm",
    "bilstm2x128-lstm",
    "bilstm2x128-rnn",
}


def tiered(names, default):
    """`names` as parameters, those outside `default` marked slow (run with --run-slow)."""
    return [name if name in default else pytest.param(name, marks=pytest.mark.slow) for name in names]


@pytest.mark.parametrize("name", tiered(CONFIGS, DEFAULT_LOSS))
def test_manual_gradients_of_the_loss_equal_autodiffs(name, mnist_rows):
    config = CONFIGS[name]
    autodiff, manual = both_models(config)
    rows = jnp.asarray(mnist_rows[:8], jnp.float64)
    labels = jnp.arange(8) % config.num_classes
    gap, where = worst_relative_gap(
        canonical_gradients(autodiff, lambda m, x: loss_fn(m, x, labels), rows),
        canonical_gradients(manual, lambda m, x: loss_fn(m, x, labels), rows),
    )
    assert gap <= RELATIVE, f"{name}: manual gradient of {where} off by {gap:.2e} relative (> {RELATIVE})"


@pytest.mark.parametrize(  # every cell on the deepest shape; --run-slow adds lstm2's and rnn's
    "name",
    tiered(
        [name for name in CONFIGS if name.startswith(("bilstm2x128", "lstm2-", "rnn-"))],
        {name for name in CONFIGS if name.startswith("bilstm2x128")},
    ),
)
def test_manual_gradients_of_a_cotangent_on_every_hidden_state_equal_autodiffs(name, mnist_rows):
    """Every step of every layer gets a random cotangent: the whole backward path, not only output[:, -1]."""
    config = CONFIGS[name]
    autodiff, manual = both_models(config)
    rows = jnp.asarray(mnist_rows[:8], jnp.float64)
    width = config.num_directions * config.hidden_size
    cotangents = jax.random.normal(jax.random.key(1), (config.num_layers, 8, 28, width), jnp.float64)

    def objective(model, x):
        pairs = zip(model.layer_outputs(x), cotangents, strict=True)
        return sum(jnp.sum(output * cotangent) for output, cotangent in pairs)

    # every parameter's gradient, and the input rows' (the whole-sequence contraction after the loop)
    gap, where = worst_relative_gap(
        canonical_gradients(autodiff, objective, rows), canonical_gradients(manual, objective, rows)
    )
    assert gap <= RELATIVE, f"{name}: manual gradient of {where} off by {gap:.2e} relative (> {RELATIVE})"


@pytest.mark.parametrize(
    "name, backward_kind",
    [
        ("bilstm-lstm", "autodiff"),
        ("bilstm-lstm", "manual"),
        ("bilstm2x128-rnn", "autodiff"),
        ("bilstm2x128-gru", "manual"),
        ("lstm2-lstm", "manual"),  # one direction: logits is __call__ itself
    ],
)
def test_the_trainers_forward_has_the_models_logits_and_gradients(name, backward_kind, mnist_rows):
    """`model.logits` (the JAX trainer's forward: the last layer's backward direction on the last row only) is
    `model(rows)` (every layer in full), in value and in every gradient, the input rows' included."""
    config = CONFIGS[name]
    model = from_canonical(random_weights(config), config, backward=backward_kind)
    rows = jnp.asarray(mnist_rows[:8], jnp.float64)
    labels = jnp.arange(8) % config.num_classes
    full, short = model(rows), model.logits(rows)
    assert float(jnp.abs(full - short).max()) <= RELATIVE * float(jnp.abs(full).max())

    def cross_entropy(logits):
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), labels])

    gap, where = worst_relative_gap(
        canonical_gradients(model, lambda m, x: cross_entropy(m(x)), rows),
        canonical_gradients(model, lambda m, x: cross_entropy(m.logits(x)), rows),
    )
    assert gap <= RELATIVE, f"{name}: the trainer's gradient of {where} off by {gap:.2e} relative (> {RELATIVE})"


@pytest.mark.parametrize("name", ["bilstm-lstm", "lstm2-gru", "rnn-rnn"])
def test_manual_model_computes_the_default_models_hidden_states(name, mnist_rows):
    config = CONFIGS[name]
    autodiff, manual = both_models(config)
    rows = jnp.asarray(mnist_rows, jnp.float64)
    for expected, got in zip(autodiff.layer_outputs(rows), manual.layer_outputs(rows), strict=True):
        assert float(jnp.abs(expected - got).max()) <= RELATIVE


def test_a_dropped_gate_derivative_fails_the_gradient_check(monkeypatch, mnist_rows):
    """The forget gate's derivative dropped from the backward: the check above must see it."""
    real = backward.lstm_gate_gradients

    def without_forget_gate(d_c, d_h, saved, c_before):
        d_c, (d_i, d_f, d_g, d_o) = real(d_c, d_h, saved, c_before)
        return d_c, (d_i, jnp.zeros_like(d_f), d_g, d_o)

    monkeypatch.setattr(backward, "lstm_gate_gradients", without_forget_gate)
    config = CONFIGS["bilstm-lstm"]
    autodiff, manual = both_models(config)
    rows = jnp.asarray(mnist_rows[:8], jnp.float64)
    labels = jnp.arange(8)
    gap, where = worst_relative_gap(
        canonical_gradients(autodiff, lambda m, x: loss_fn(m, x, labels), rows),
        canonical_gradients(manual, lambda m, x: loss_fn(m, x, labels), rows),
    )
    assert gap > 1e-3, f"a dropped forget-gate derivative went unseen (gap {gap:.2e} at {where})"
    assert where.startswith("rnn.")


def test_manual_backward_refuses_another_schedule_and_unknown_names():
    with pytest.raises(ConfigError, match="backward must be one of autodiff, manual, got 'guess'"):
        build_model(get_preset("lstm"), backward="guess")
    with pytest.raises(ConfigError, match="recurrence 'hoisted' cannot join it"):
        build_model(get_preset("lstm"), recurrence="hoisted", backward="manual")


def test_auto_is_manual_on_a_cpu_and_autodiff_beside_another_schedule():
    cpu = jax.devices("cpu")[0]
    assert resolve_backward("auto", cpu) == "manual"
    assert resolve_backward("auto", cpu, recurrence="hoisted") == "autodiff"
    assert resolve_backward("autodiff", cpu) == "autodiff"


def test_the_trainer_evaluates_through_autodiffs_forward_whatever_it_trains_with(mnist):
    """Evaluation takes one product per step for all the gates (the default model's forward), not the hand-written
    backward's product per gate: the same parameters, the same logits, 1.5-2x the images per second at batch 2000."""
    from jax_impl.model import logits_in_batches
    from jax_impl.train import JaxTrainer, TrainOptions

    config = dataclasses.replace(get_preset("bilstm"), hidden_size=16)
    trainer = JaxTrainer(config, random_weights(config), mnist, "cpu", TrainOptions(backward="manual"))
    assert nnx.merge(trainer.graphdef, trainer.params).backward == "manual"
    assert nnx.merge(trainer.eval_graphdef, trainer.params).backward == "autodiff"
    manual = np.asarray(logits_in_batches(trainer.model, trainer.test_rows[:64]))
    np.testing.assert_allclose(trainer.test_logits(64), manual, rtol=0, atol=1e-5)
