"""The six presets through the port API: the same table as the JAX trainer's conversion, and every check passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.presets import PRESETS, get_preset
from jax_impl.convert import from_canonical
from parity.checks import random_weights
from parity.port.flax_runner import flax_model_holding
from parity.port.weights import flax_weights
from parity.preset_ports import preset_port
from parity.suite import SuiteOptions, run_preset


@pytest.mark.parametrize("preset", PRESETS)
def test_the_preset_ports_table_loads_what_the_trainers_conversion_loads(preset):
    weights = random_weights(get_preset(preset))
    port = preset_port(preset)
    through_port = flax_weights(flax_model_holding(port, port.entries, weights, "float32"))
    through_trainer = flax_weights(from_canonical(weights, get_preset(preset)))
    assert through_port.keys() == through_trainer.keys()
    assert all(np.array_equal(through_port[path], through_trainer[path]) for path in through_port)


@pytest.mark.trains  # the port's training check runs Adam: left out of the inner loop
@pytest.mark.parametrize("preset", ["bilstm2x128", "rnn"])
def test_the_suites_port_check_passes_every_row_on_the_cpu(preset, mnist):
    rows = run_preset(preset, mnist, "cpu", dataclasses.replace(SuiteOptions(), checks=("port",), images=16))
    checks = {row.check for row in rows}
    assert checks == {"port weights", "port outputs", "port submodules", "port gradients", "port trajectory"}
    assert all(row.passed for row in rows), [row for row in rows if not row.passed]
    assert {row.dtype for row in rows} == {"float32", "float64"}
