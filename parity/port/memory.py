"""What a check will need in memory, known before it builds a model, so that a check too large for the machine
stops in one line instead of being killed halfway.

The weight count comes from the torch model built on the `meta` device (shapes, no storage). The need is a
fixed part (the interpreter with torch and JAX loaded) plus a cost per weight, measured for each way of
checking on the Transformer example from 3M to 85M weights (docs/porting.md, "Memory as the model grows"):
- `whole`: gradients or a trajectory, both models in float64 at some point, gradients beside them;
- `forward`: outputs, submodules and units (the weights check besides), the models in float64 in turn;
- `streaming`: the same checks with both models held in float32 (`check_port(..., streaming=True)`).
The free memory is the kernel's `MemAvailable`, or a cgroup's limit less its use where that is less; what
the process holds already (its resident set) counts towards the peak, not against the free memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from parity.port.building import build
from parity.port.declare import Port, PortError

GIB = 1024**3
FIXED = int(1.0 * GIB)
PER_WEIGHT = {"whole": 90, "forward": 34, "streaming": 22}  # bytes; see the module's docstring


def weight_count(port: Port) -> int | None:
    """The torch model's state_dict size, from a build on the `meta` device (None: it does not build there)."""
    import torch

    try:
        with torch.device("meta"):
            model = build(port.torch_model, "float32")
        return sum(int(tensor.numel()) for tensor in model.state_dict().values())
    except Exception:  # a factory that reads a checkpoint or computes on its weights: no estimate
        return None


def available() -> int | None:
    """Bytes this process can still take: MemAvailable, or the cgroup's limit less its use if less (None:
    not known here)."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max" and free is not None:
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def resident() -> int:
    """Bytes this process holds already (VmRSS; 0 where not known): part of the estimated peak, not free memory
    the check still needs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def way(checks: Sequence[str], streaming: bool) -> str:
    if streaming:
        return "streaming"
    return "whole" if {"gradients", "trajectory"} & set(checks) else "forward"


def need(weights: int, checks: Sequence[str], streaming: bool) -> int:
    """The estimated peak resident memory of a check, in bytes."""
    return FIXED + PER_WEIGHT[way(checks, streaming)] * weights


def check_fits(port: Port, checks: Sequence[str], streaming: bool, where: str) -> None:
    """PortError, before anything is built, when the check's estimated need is over the free memory."""
    count = weight_count(port)
    free = available()
    if count is None or free is None:
        return
    estimate, held = need(count, checks, streaming), resident()
    if estimate - held <= free:
        return
    how = way(checks, streaming)
    advice = (
        "pass streaming=True (--streaming) to check weights, outputs, submodules and units with both models "
        "held in float32"
        if not streaming
        else "run it on a machine with more memory"
    )
    raise PortError(
        f"{where}: {port.name}: {count:,} weights need about {estimate / GIB:.1f} GiB for this check ({how}: "
        f"{PER_WEIGHT[how]} bytes a weight and {FIXED / GIB:.1f} GiB besides); this process holds {held / GIB:.1f} "
        f"GiB and {free / GIB:.1f} GiB is free; "
        f"{advice}"
    )
