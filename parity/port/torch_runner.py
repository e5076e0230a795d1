"""The PyTorch side of a port check: the model built holding given weights, run in float32 or float64.

Each function answers one question the checks ask (outputs, each declared submodule's outputs, the loss
gradients, a run of optimizer steps) and returns NumPy arrays; the verdicts are `parity.compare`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.compare import Weights
from parity.port.declare import Entry, Port, PortError, unknown_name
from parity.port.optimizer import Optimizer
from parity.port.transforms import Shape
from parity.port.trees import first_leaf, leaves, take
from parity.port.weights import build, load_torch, to_flax, torch_ties, torch_weights

if TYPE_CHECKING:
    import torch


def torch_model_holding(port: Port, weights: Weights, dtype: str, mode: str = "eval") -> torch.nn.Module:
    """The port's torch model in `dtype`, holding `weights` (state_dict names), in `mode` ("eval" or "train")."""
    return load_torch(build(port.torch_model, dtype), weights, dtype).train(mode == "train")


def torch_dropouts(model: Any) -> list[str]:
    """The model's dropout that is on (`encoder.dropout: Dropout(p=0.1)`): train mode cannot be compared with it."""
    from torch import nn

    found = []
    for name, module in model.named_modules():
        rate = module.p if isinstance(module, nn.modules.dropout._DropoutNd) else getattr(module, "dropout", 0.0)
        if isinstance(rate, float) and rate > 0:
            found.append(f"{name or '(top)'}: {type(module).__name__}(p={rate:g})")
    return found


def as_tensor(array: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def call(port: Port, model: Any, inputs: tuple[np.ndarray, ...]) -> Any:
    return port.run_torch(model, *(as_tensor(x) for x in inputs))


def to_numpy(tensor: Any) -> np.ndarray:
    result: np.ndarray = tensor.detach().cpu().numpy().copy()
    return result


def torch_forward(port: Port, model: Any, inputs: tuple[np.ndarray, ...]) -> list[tuple[str, np.ndarray]]:
    """The model's outputs on `inputs`, every array named (`output`, `output[0]`, `output.logits`)."""
    return leaves(call(port, model, inputs), to_numpy)


def torch_submodule_outputs(port: Port, model: Any, inputs: tuple[np.ndarray, ...]) -> list[tuple[str, np.ndarray]]:
    """(torch module name, output) for each declared submodule, in the order PyTorch finished them."""
    recorded: list[tuple[str, np.ndarray]] = []
    handles = []
    for entry in port.submodule_entries:
        name = entry.torch[0]
        try:
            module = model.get_submodule(name)
        except AttributeError:
            known = [n for n, _ in model.named_modules() if n]
            raise unknown_name("submodules: the torch module", name, known) from None

        def hook(_module: Any, _inputs: Any, output: Any, name: str = name) -> None:
            recorded.append((name, first_leaf(output).detach().numpy().copy()))

        handles.append(module.register_forward_hook(hook))
    try:
        call(port, model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return recorded


def torch_gradients(model: Any, loss_of: Callable[[Any], Any]) -> tuple[float, Weights]:
    """`loss_of(model)` and its gradient for every parameter, by state_dict name; a parameter the loss does
    not reach is a broken model, not a zero gradient (PortError)."""
    model.zero_grad(set_to_none=True)
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
    return lambda model: port.torch_loss(call(port, model, inputs), as_tensor(labels))


def torch_steps(
    port: Port,
    model: Any,
    entries: list[Entry],
    flax_shapes: dict[str, Shape],
    optimizer: Optimizer,
    inputs: tuple[np.ndarray, ...],
    labels: np.ndarray,
    batches: list[np.ndarray],
    frozen: Sequence[str] = (),
) -> Iterator[tuple[float, Weights]]:
    """torch's optimizer, one step per batch: yields each step's loss and the weights after it (buffers
    included), in the Flax layout (one step's weights at a time: a trajectory of a large model is never held
    whole). The parameters named in `frozen` are not trained (a summed entry's later terms, held at zero)."""
    trained = [parameter for name, parameter in model.named_parameters() if name not in set(frozen)]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in set(frozen))
    opt = optimizer.torch(trained)
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        loss = port.torch_loss(call(port, model, take(inputs, batch)), as_tensor(labels[batch]))
        loss.backward()
        opt.step()
        yield loss.item(), to_flax(entries, torch_weights(model), flax_shapes)
