"""Checks that the PyTorch and Flax ports compute the same thing, against each other and a NumPy oracle.

The API for a port of your own (docs/porting.md), importable without loading torch or JAX:

    from parity import Port, assert_port, check_port, permute, reshape, split, transpose
"""

from parity.port import Port, PortError
from parity.prove import Optimizer, Report, assert_port, check_port
from parity.transforms import concat, permute, reorder_blocks, reshape, split, transpose

__all__ = [
    "Optimizer",
    "Port",
    "PortError",
    "Report",
    "assert_port",
    "check_port",
    "concat",
    "permute",
    "reorder_blocks",
    "reshape",
    "split",
    "transpose",
]
