"""The six presets through the port API: the same table as the JAX trainer's conversion, and every check passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.presets import PRESETS, get_preset
from jax_impl.convert import from_canonical
from parity.port.flax_runner import flax_model_holding
from parity.port.weights import flax_weights
from parity.preset_ports import preset_port
from parity.suite import SuiteOptions, run_preset
from parity.suite_checks import random_weights
from tests.conftest import preset_tiers, shrunk


@pytest.mark.parametrize("preset", PRESETS)
def test_the_preset_ports_table_loads_what_the_trainers_conversion_loads(preset):
    weights = random_weights(get_preset(preset))
    port = preset_port(preset)
    through_port = flax_weights(flax_model_holding(port, port.entries, weights, "float32"))
    through_trainer = flax_weights(from_canonical(weights, get_preset(preset)))
    assert through_port.keys() == through_trainer.keys()
    assert all(np.array_equal(through_port[path], through_trainer[path]) for path in through_port)


@pytest.mark.trains  # the port's training check runs Adam: left out of the inner loop
# at hidden 32 (their shapes) in the default tier, at their own size under --run-slow
@pytest.mark.parametrize("preset, hidden", preset_tiers({"bilstm2x128": 32, "rnn": 32}, ("bilstm2x128", "rnn")))
def test_the_suites_port_check_passes_every_row_on_the_cpu(preset, hidden, mnist, monkeypatch):
    if hidden is not None:
        shrunk(monkeypatch, preset, hidden)
    rows = run_preset(preset, mnist, "cpu", dataclasses.replace(SuiteOptions(), checks=("port",), images=16))
    checks = {row.check for row in rows}
    assert checks == {"port weights", "port outputs", "port submodules", "port gradients", "port trajectory"}
    assert all(row.passed for row in rows), [row for row in rows if not row.passed]
    assert {row.dtype for row in rows} == {"float32", "float64"}


@pytest.mark.parametrize("preset", PRESETS)
def test_each_presets_port_builds_the_flax_side_with_the_trainers_cpu_backward(preset):
    """`preset_port` builds the Flax model as the JAX trainer would on the CPU: with the hand-written backward."""
    import jax
    from flax import nnx

    from jax_impl.train import resolve_backward
    from parity.port.building import build

    def built(port, dtype):  # abstractly: shapes, no initialisers run
        return nnx.eval_shape(lambda: build(port.flax_model, dtype))

    expected = resolve_backward("auto", jax.devices("cpu")[0])
    assert expected == "manual"
    assert built(preset_port(preset), "float32").backward == expected
    assert built(preset_port(preset, backward="autodiff"), "float32").backward == "autodiff"


def wrong_tanh_derivative(d_h_recurrent, step, w_h_t):
    """The hand-written rnn backward with tanh's derivative taken as 1 - h, not 1 - h^2."""
    d_output, _, h, _, _ = step
    d_pre = (d_output + d_h_recurrent) * (1 - h)
    return d_pre @ w_h_t, (d_pre, None)


def test_check_port_on_a_preset_proves_the_hand_written_backward(mnist, monkeypatch):
    """The CPU default backward is what check_port's gradients judge on a preset: a bug planted in it fails
    there and only there (autodiff, the same port otherwise, still passes)."""
    import jax_impl.backward
    from parity import check_port

    images, labels = checks_rows(mnist)
    forward, _ = jax_impl.backward.STEPS["rnn"]
    monkeypatch.setitem(jax_impl.backward.STEPS, "rnn", (forward, wrong_tanh_derivative))
    broken = check_port(preset_port("rnn"), images, labels, checks=("outputs", "gradients"), dtypes=("float64",))
    failed = {row.check for row in broken.rows if not row.passed}
    assert failed == {"gradients"}, broken.table()
    autodiff = check_port(preset_port("rnn", "autodiff"), images, labels, checks=("gradients",), dtypes=("float64",))
    assert autodiff.passed, autodiff.table()


def checks_rows(mnist, count=16):
    from parity.suite_checks import test_rows

    return test_rows(mnist, count, "float32")


@pytest.mark.trains
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_the_trajectory_check_runs_each_trainers_own_step(mnist, monkeypatch, framework):
    """Check 4 steps each framework with its trainer's `train_step` (the step `make_train_chunk` scans): one
    planted in either trainer, a step that applies its update twice, fails the lr-1e-4 trajectory."""
    import jax_impl.train
    import torch_impl.train

    if framework == "torch":
        original = torch_impl.train.train_step

        def twice(model, optimizer, rows, labels):
            loss = original(model, optimizer, rows, labels)
            optimizer.step()  # the same gradients applied again
            return loss

        monkeypatch.setattr(torch_impl.train, "train_step", twice)
    else:
        original = jax_impl.train.train_step

        def twice(graphdef, optimizer, params, opt_state, rows, labels):
            params, opt_state, loss = original(graphdef, optimizer, params, opt_state, rows, labels)
            params, opt_state, _ = original(graphdef, optimizer, params, opt_state, rows, labels)
            return params, opt_state, loss

        monkeypatch.setattr(jax_impl.train, "train_step", twice)
    options = dataclasses.replace(SuiteOptions(), checks=("trajectory",), small_lr_steps=4, recipe_lr_steps=4)
    rows = [row for row in run_preset("rnn", mnist, "cpu", options) if row.case.startswith("lr ")]
    assert {row.dtype for row in rows} == {"float32", "float64"}
    assert not any(row.passed for row in rows), [(row.dtype, row.detail) for row in rows]


def test_the_trainers_compiled_chunk_is_its_train_step_scanned(mnist):
    """What check 4 runs is `jax_impl.train.train_step`; the JAX trainer runs it inside `make_train_chunk`'s scan.
    The two agree to float64's rounding over a chunk of steps, so the step proven is the step trained."""
    import jax
    import numpy as np
    from flax import nnx

    from jax_impl import train as jax_train
    from jax_impl.convert import from_canonical
    from parity.suite import train_rows

    config = dataclasses.replace(get_preset("rnn"), dtype="float64")
    with jax.enable_x64(True):
        graphdef, params = nnx.split(from_canonical(random_weights(config), config, backward="manual"))
        optimizer = jax_train.make_optimizer(config)
        pool, labels, batches = train_rows(mnist, config, 5)
        pool, labels = jax.numpy.asarray(pool), jax.numpy.asarray(labels.astype(np.int32))
        chunk = jax_train.make_train_chunk(graphdef, optimizer)
        chunked, _, chunk_losses = chunk(params, optimizer.init(params), pool, labels, np.stack(batches))
        step = jax.jit(jax_train.train_step, static_argnums=(0, 1))
        stepped, state, losses = params, optimizer.init(params), []
        for batch in batches:
            stepped, state, loss = step(graphdef, optimizer, stepped, state, pool[batch], labels[batch])
            losses.append(float(loss))
        gaps = jax.tree.leaves(
            jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), chunked, stepped)
        )
    assert np.abs(np.asarray(chunk_losses) - np.array(losses)).max() <= 1e-12
    assert max(gaps) <= 1e-12
