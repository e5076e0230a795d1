"""The PyTorch side of a port check: the model built holding given weights, run in float32 or float64.

Each function answers one question the checks ask (outputs, each declared submodule's outputs, the loss
gradients, a run of optimizer steps) and returns NumPy arrays; the verdicts are `parity.compare`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.compare import Weights
from parity.port.building import build
from parity.port.declare import Entry, Port, PortError, unknown_name
from parity.port.optimizer import Optimizer
from parity.port.transforms import Shape
from parity.port.trees import first_leaf, leaves, take
from parity.port.weights import frozen_terms, load_torch, to_flax, torch_ties, torch_weights

if TYPE_CHECKING:
    import torch


def torch_model_holding(
    port: Port, weights: Weights, dtype: str, mode: str = "eval", device: str = "cpu"
) -> torch.nn.Module:
    """The port's torch model in `dtype`, holding `weights` (state_dict names), in `mode` ("eval" or "train"),
    on `device` ("cpu", or "gpu": CUDA's first)."""
    model = load_torch(build(port.torch_model, dtype), weights, dtype).train(mode == "train")
    return model.to("cuda") if device == "gpu" else model


def device_of(model: Any) -> Any:
    """Where the model's weights are (its first parameter's or buffer's device; the CPU for one with none)."""
    import torch

    held = next(iter(model.state_dict(keep_vars=True).values()), None)
    return held.device if held is not None else torch.device("cpu")


def as_tensor(array: np.ndarray, device: Any = None) -> torch.Tensor:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor if device is None or device.type == "cpu" else tensor.to(device)


def call(port: Port, model: Any, inputs: tuple[np.ndarray, ...]) -> Any:
    device = device_of(model)
    return port.run_torch(model, *(as_tensor(x, device) for x in inputs))


def to_numpy(tensor: Any) -> np.ndarray:
    result: np.ndarray = tensor.detach().cpu().numpy().copy()
    return result


@dataclasses.dataclass
class Lowered:
    """What a float64 torch run computed below float64: the modules (innermost), and how many declared
    submodules had finished before the first of them (those after it are judged at float32's tolerance)."""

    modules: dict[str, str] = dataclasses.field(default_factory=dict)  # module -> the dtype it computed in
    before: int | None = None

    def watching(self, model: Any, on_first: Callable[[], None] = lambda: None) -> Any:
        @contextlib.contextmanager
        def watch() -> Iterator[None]:
            with below_float64(model, on_first) as found:
                yield
            self.modules.update(found)

        return watch()


def torch_forward(
    port: Port, model: Any, inputs: tuple[np.ndarray, ...], lowered: Lowered | None = None
) -> list[tuple[str, np.ndarray]]:
    """The model's outputs on `inputs`, every array named (`output`, `output[0]`, `output.logits`). `lowered`
    (a float64 run): filled with the modules that computed below float64."""
    import torch

    with lowered.watching(model) if lowered else contextlib.nullcontext(), torch.no_grad():
        return leaves(call(port, model, inputs), to_numpy)


@dataclasses.dataclass
class UnitCall:
    """One call of a declared torch submodule: its inputs (arrays, or the values as they were) and its output."""

    name: str
    args: tuple[Any, ...]
    output: np.ndarray


def torch_calls(
    port: Port, model: Any, inputs: tuple[np.ndarray, ...], lowered: Lowered | None = None, keep_inputs: bool = False
) -> list[UnitCall]:
    """Each declared submodule's calls on `inputs`, in the order PyTorch finished them: what it returned (its first
    array) and, with `keep_inputs` (the units check), what it was given (positional tensors; a call by keyword,
    its first tensor keyword). `lowered`: as `torch_forward`'s, with how many calls had finished before the
    first computation below float64."""
    import torch

    calls: list[UnitCall] = []
    handles = []

    def value(item: Any) -> Any:
        return to_numpy(item) if isinstance(item, torch.Tensor) else item

    for entry in port.submodule_entries:
        name = entry.torch[0]
        try:
            module = model.get_submodule(name)
        except AttributeError:
            known = [n for n, _ in model.named_modules() if n]
            raise unknown_name("submodules: the torch module", name, known) from None

        def hook(_module: Any, args: Any, kwargs: Any, output: Any, name: str = name) -> None:
            given = args or tuple(v for v in kwargs.values() if isinstance(v, torch.Tensor))[:1]
            calls.append(
                UnitCall(name, tuple(value(item) for item in given) if keep_inputs else (), value(first_leaf(output)))
            )

        handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def first() -> None:
        if lowered is not None and lowered.before is None:
            lowered.before = len(calls)

    try:
        with lowered.watching(model, first) if lowered else contextlib.nullcontext():
            call(port, model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


@contextlib.contextmanager
def below_float64(model: Any, on_first: Callable[[], None] = lambda: None) -> Iterator[dict[str, str]]:
    """Within (a float64 run): the modules that compute below float64, innermost first, in the order found
    (HF's RMSNorm and rotary embedding cast to float32 whatever the model's dtype). Every torch function is
    watched (`TorchFunctionMode`); one that makes a float tensor below float64 names the module running it.
    `on_first`: called when the first is found (the submodules check notes how many outputs came before)."""
    import torch
    from torch.overrides import TorchFunctionMode

    running: list[str] = []
    found: dict[str, str] = {}  # module -> the dtype it computed in
    handles = []

    def enter(_module: Any, _inputs: Any, name: str) -> None:
        running.append(name or "(top)")

    def leave(_module: Any, _inputs: Any, _output: Any) -> None:  # returns None: the output stays as it is
        if running:
            running.pop()

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(functools.partial(enter, name=name)))
        handles.append(module.register_forward_hook(leave))

    def lowered(value: Any) -> str | None:
        if isinstance(value, torch.Tensor):
            below = value.is_floating_point() and value.dtype != torch.float64
            return str(value.dtype).removeprefix("torch.") if below else None
        if isinstance(value, tuple | list):
            return next((found for found in map(lowered, value) if found), None)
        return None

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            result = func(*args, **(kwargs or {}))
            if running and running[-1] not in found and (dtype := lowered(result)):
                if not found:
                    on_first()
                found[running[-1]] = dtype
            return result

    try:
        with Watch():
            yield found
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def widened(model: Any) -> Iterator[None]:
    """Within: `model`, held in float32, computes in float64 as a float64 copy of it would, without one (the
    streaming check). Every torch function given one of the model's float32 parameters or buffers gets a
    float64 copy of it, made for that call and dropped after: memory for one tensor's copy at a time, not a
    whole float64 model. Exact, for a float32 value is a float64 value; `tensor.dtype` reads float64 (an
    `nn.LSTM` checks its weights' dtype against its input's). Eval only: an update in place (batch statistics
    in train mode) would go to the copy."""
    import torch
    from torch.overrides import TorchFunctionMode

    held = {id(t) for t in (*model.parameters(), *model.buffers()) if t.dtype == torch.float32}
    dtype_of = torch.Tensor.dtype.__get__  # type: ignore[attr-defined]
    unchanged = {getattr(torch.Tensor, name).__get__ for name in ("shape", "device", "ndim", "requires_grad")}

    def wide(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and id(value) in held:
            return value.detach().to(torch.float64)
        if isinstance(value, tuple | list):
            return type(value)(wide(item) for item in value)
        return value

    class Widen(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func is dtype_of and args and id(args[0]) in held:
                return torch.float64
            if func in unchanged:
                return func(*args, **(kwargs or {}))
            return func(*wide(args), **{key: wide(value) for key, value in (kwargs or {}).items()})

    with Widen():
        yield


def torch_gradients(model: Any, loss_of: Callable[[Any], Any], lowered: Lowered | None = None) -> tuple[float, Weights]:
    """`loss_of(model)` and its gradient for every parameter, by state_dict name; a parameter the loss does
    not reach is a broken model, not a zero gradient (PortError)."""
    model.zero_grad(set_to_none=True)
    with lowered.watching(model) if lowered else contextlib.nullcontext():
        loss = loss_of(model)
    loss.backward()
    gradients = {}
    for name, parameter in model.named_parameters():
        if parameter.grad is None:
            raise PortError(f"gradients: torch parameter {name!r} gets no gradient from the loss")
        gradients[name] = parameter.grad.detach().cpu().numpy().copy()
    for name, first in torch_ties(model).items():  # a tied name: its tensor's gradient, the sum over every use
        if first in gradients:
            gradients[name] = gradients[first]
    return float(loss.detach()), gradients


def port_loss(port: Port, inputs: tuple[np.ndarray, ...], labels: np.ndarray) -> Callable[[Any], Any]:
    """`model -> the port's torch loss on (inputs, labels)`."""
    return lambda model: port.torch_loss(call(port, model, inputs), as_tensor(labels, device_of(model)))


def torch_steps(
    port: Port,
    model: Any,
    entries: list[Entry],
    flax_shapes: dict[str, Shape],
    optimizer: Optimizer,
    inputs: tuple[np.ndarray, ...],
    labels: np.ndarray,
    batches: list[np.ndarray],
) -> Iterator[tuple[float, Weights]]:
    """torch's optimizer, one step per batch: yields each step's loss and the weights after it (buffers
    included), in the Flax layout (one step's weights at a time: a trajectory of a large model is never held
    whole). A summed entry's later terms are not trained (held at zero, `weights.frozen_terms`). A port's own
    `torch_step` takes each step where it declares one (a trainer's step, run as it is)."""
    frozen = set(frozen_terms(entries))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen)
    opt = optimizer.torch(model)
    device = device_of(model)
    for batch in batches:
        xs, ys = tuple(as_tensor(x, device) for x in take(inputs, batch)), as_tensor(labels[batch], device)
        if port.torch_step is not None:
            loss = port.torch_step(model, opt, *xs, ys)
        else:
            opt.zero_grad(set_to_none=True)
            loss = port.torch_loss(port.run_torch(model, *xs), ys)
            loss.backward()
            opt.step()
        yield loss.item(), to_flax(entries, torch_weights(model), flax_shapes)
