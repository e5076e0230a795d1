"""Proof that a PyTorch model and its Flax NNX port compute the same thing. Two front doors, one core:

1. The port API, for a model of your own (docs/porting.md); importing it loads neither torch nor JAX:

       from parity import Port, check_port, permute, transpose
       report = check_port(Port(...), inputs, labels)      # parity/port/

2. The preset suite, for the six row-MNIST classifiers of torch_impl and jax_impl (docs/parity.md):

       python -m parity [--presets lstm,bilstm] [--checks ...]   # parity/__main__.py -> parity/suite.py

Both judge with the same comparisons and tolerances (`parity/compare.py`): every failure says where the
worst gap is and how many values are over, and a report names its first divergence.
"""

from parity.port.arguments import PORT_CHECKS, STREAMING_CHECKS
from parity.port.check import assert_port, check_port
from parity.port.declare import Port
from parity.port.errors import PortError
from parity.port.infer import InferredPort, infer_port
from parity.port.optimizer import Optimizer
from parity.port.reference import check_reference, save_reference
from parity.port.report import Report
from parity.port.transforms import add, concat, permute, reorder_blocks, reshape, split, transpose

__all__ = [
    "PORT_CHECKS",
    "STREAMING_CHECKS",
    "InferredPort",
    "Optimizer",
    "Port",
    "PortError",
    "Report",
    "add",
    "assert_port",
    "check_port",
    "check_reference",
    "concat",
    "infer_port",
    "permute",
    "reorder_blocks",
    "reshape",
    "save_reference",
    "split",
    "transpose",
]
