"""The port API's arguments, checked before anything runs, in one place: `check_port`, `infer_port`,
`save_reference` and `check_reference` all call these. Each mistake is one `PortError` line naming the
argument, what was given and what was expected; a model that refuses the inputs is one line too, naming the
side and the shapes given, with the model's own exception kept as the error's `__cause__`.

What is refused: a port that is neither a `Port` nor `infer_port`'s result; a model instance where a factory
is expected (and anything else that cannot build a model); no inputs, or inputs of no rows (a check on nothing
would pass); inputs of different row counts; NaN or inf in a float input; labels that are not one integer per
input row, or are negative; labels past the model's outputs (with the default cross-entropy, read from the
first forward pass), or labels the model's own loss refuses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from parity.port.declare import Port, PortError
from parity.port.trees import first_leaf, torch_cross_entropy
from parity.port.weights import Start

PORT_CHECKS = ("weights", "outputs", "submodules", "units", "gradients", "trajectory")
STREAMING_CHECKS = ("weights", "outputs", "submodules", "units")  # what needs no whole float64 model
MODES = ("eval", "train")
DEVICES = ("cpu", "gpu")
RENAMED = {"training": "trajectory"}
KINDS = {"torch_model": ("torch", "a torch.nn.Module"), "flax_model": ("flax.nnx", "an nnx.Module")}


def checked_options(
    checks: Sequence[str] | None,
    dtypes: Sequence[str],
    mode: str,
    steps: int,
    batch_size: int,
    streaming: bool,
    coverage: bool,
    device: str = "cpu",
) -> tuple[str, ...]:
    """`check_port`'s options (else PortError, one line naming the option); the checks to run (None: every
    check, or in streaming mode every check that needs no whole float64 model)."""
    checks = tuple(checks) if checks is not None else (STREAMING_CHECKS if streaming else PORT_CHECKS)
    for name in checks:
        if name in RENAMED:
            raise PortError(f"checks: {name!r} is now called {RENAMED[name]!r}")
    unknown = [name for name in checks if name not in PORT_CHECKS]
    if unknown:
        raise PortError(f"checks: unknown {', '.join(unknown)}; expected some of {', '.join(PORT_CHECKS)}")
    if not dtypes or any(dtype not in ("float32", "float64") for dtype in dtypes):
        raise PortError(f"dtypes: expected float32 and/or float64, got {', '.join(dtypes) or 'none'}")
    if mode not in MODES:
        raise PortError(f"mode: expected 'eval' or 'train', got {mode!r}")
    if device not in DEVICES:
        raise PortError(f"device: expected 'cpu' or 'gpu', got {device!r}")
    if steps < 1 or batch_size < 1:
        raise PortError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    whole = [name for name in checks if name not in STREAMING_CHECKS] + (["coverage"] if coverage else [])
    if streaming and whole:
        raise PortError(
            f"streaming=True: {', '.join(whole)} need{'s' if len(whole) == 1 else ''} the whole model in float64 at "
            f"once (every parameter's gradient, every step's weights, a planted bug per entry); streaming checks "
            f"{', '.join(STREAMING_CHECKS)} with each float64 tensor made as it is used: leave out {', '.join(whole)}, "
            "or streaming"
        )
    if streaming and mode != "eval":
        raise PortError(
            "streaming=True: mode='train' updates batch statistics in place, and in streaming mode the float64 run "
            "computes on copies of the float32 weights: check train mode without streaming"
        )
    return checks


def given_start(start: Start, weights: Mapping[str, np.ndarray] | None, caller: str) -> Start:
    """`start` with the caller's own start `weights` in place of its noisy ones (state_dict names, every entry,
    each of its shape; else PortError naming the first that is not)."""
    if weights is None:
        return start
    expected = {name: array.shape for name, array in start.weights.items()}
    given = {name: np.shape(array) for name, array in weights.items()}
    for name in sorted(expected.keys() | given.keys()):
        if given.get(name) != expected.get(name):
            found = f"has shape {given[name]}" if name in given else "is missing"
            held = f"its shape {expected[name]}" if name in expected else "no such tensor"
            raise PortError(f"{caller}: weights: {name!r} {found}; the torch model's state_dict has {held}")
    return dataclasses.replace(start, weights={name: np.asarray(weights[name]) for name in expected})


def checked_batches(batches: Sequence[np.ndarray], rows: int, caller: str) -> list[np.ndarray]:
    """The trajectory's batches: each a non-empty array of integer row indices below `rows` (else PortError)."""
    checked = []
    for index, batch in enumerate(batches):
        array = np.asarray(batch)
        if array.ndim != 1 or not len(array) or not np.issubdtype(array.dtype, np.integer):
            raise PortError(f"{caller}: batches[{index}]: expected a 1-D array of row indices, got {described(batch)}")
        if array.min() < 0 or array.max() >= rows:
            raise PortError(
                f"{caller}: batches[{index}]: row indices must lie in [0, {rows}), got {array.min()}..{array.max()}"
            )
        checked.append(array)
    if not checked:
        raise PortError(f"{caller}: batches: expected at least one batch")
    return checked


def described(value: Any) -> str:
    """A value in a few words for an error line: its repr, cut short, and its type."""
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} (a {type(value).__name__})"


def model_instance(value: Any, argument: str) -> bool:
    """isinstance(value, the framework's Module) without importing the framework: one not imported made no value."""
    module, _ = KINDS[argument]
    loaded = sys.modules.get(module)
    if loaded is None:
        return False
    return isinstance(value, loaded.nn.Module if module == "torch" else loaded.Module)


def check_factory(value: Any, argument: str, where: str, instances: bool = False) -> None:
    """`value` builds the model (a class or a function; with `instances`, a model itself is taken too)."""
    _, kind = KINDS[argument]
    if model_instance(value, argument):
        if instances:
            return
        raise PortError(
            f"{where}: {argument}: a {type(value).__name__} instance, expected a factory that builds one (its class "
            f"or a function); to check this very model, pass `lambda: model`"
        )
    if not callable(value):
        also = "a model or " if instances else ""
        raise PortError(f"{where}: {argument}: {described(value)}, expected {also}a factory that builds {kind}")


def as_port(port: Any, where: str) -> Port:
    """A `Port`, or `infer_port`'s result taken as its `.port`; its two factories checked (else PortError)."""
    if isinstance(getattr(port, "port", None), Port):  # infer_port's result (`InferredPort`), taken as its Port
        port = port.port
    if not isinstance(port, Port):
        raise PortError(f"{where}: port: {described(port)}, expected a Port (or infer_port's result)")
    check_factory(port.torch_model, "torch_model", where)
    check_factory(port.flax_model, "flax_model", where)
    return port


def checked_inputs(inputs: Any, where: str) -> tuple[np.ndarray, ...]:
    """One array or a sequence of arrays, each of the same number of rows (at least one), finite where float."""
    from parity.port.trees import as_inputs

    if inputs is None:
        raise PortError(f"{where}: inputs: None, expected an array (or a tuple of arrays) in the PyTorch layout")
    try:
        xs = as_inputs(inputs)
    except (TypeError, ValueError) as error:
        raise PortError(f"{where}: inputs: {described(inputs)} is not an array or a tuple of arrays") from error
    if not xs:
        raise PortError(f"{where}: inputs: an empty sequence, expected at least one array")
    for index, x in enumerate(xs):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise PortError(f"{where}: inputs[{index}]: an array of {x.dtype}, expected numbers")
        if x.ndim == 0:
            raise PortError(f"{where}: inputs[{index}]: a scalar, expected an array with one row per example")
    rows = len(xs[0])
    if rows == 0:
        raise PortError(
            f"{where}: inputs: 0 rows (shape {xs[0].shape}), expected at least one example: a check on no inputs "
            "would pass without comparing anything"
        )
    for index, x in enumerate(xs[1:], start=1):
        if len(x) != rows:
            raise PortError(f"{where}: inputs[{index}]: {len(x)} rows, but inputs[0] has {rows}; one row per example")
    for index, x in enumerate(xs):
        if np.issubdtype(x.dtype, np.floating):
            bad = ~np.isfinite(x)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise PortError(
                    f"{where}: inputs[{index}]: {int(bad.sum())} NaN or inf values (the first at {first}), "
                    "expected finite numbers"
                )
    return xs


def checked_labels(labels: Any, rows: int, where: str) -> np.ndarray:
    """One non-negative integer label per input row (`[rows]`), or per position (`[rows, tokens]`, a language
    model's next tokens), as int64."""
    array = np.asarray(labels)
    if array.ndim < 1:
        raise PortError(f"{where}: labels: shape {array.shape}, expected one integer label per input row: ({rows},)")
    if len(array) != rows:
        raise PortError(f"{where}: labels: {len(array)} labels for {rows} input rows, expected one label per row")
    if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)  # 3.0 is label 3
    if not np.issubdtype(array.dtype, np.integer):
        raise PortError(f"{where}: labels: an array of {array.dtype}, expected integer class indices")
    if len(array) and array.min() < 0:
        raise PortError(f"{where}: labels: {int(array.min())} is negative, expected class indices 0 and up")
    return array.astype(np.int64)


def shapes_text(inputs: Sequence[np.ndarray]) -> str:
    return ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in inputs)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def refusal(side: str, inputs: Sequence[np.ndarray], where: str) -> Iterator[None]:
    """Any exception from running `side`'s model on `inputs` (but a PortError) as one PortError line."""
    try:
        yield
    except PortError:
        raise
    except Exception as error:
        raise PortError(
            f"{where}: the {side} model refused the inputs ({shapes_text(inputs)}): {first_line(error)}"
        ) from error


def probe_torch(model: Any, port: Port, inputs: Sequence[np.ndarray], labels: np.ndarray | None, where: str) -> None:
    """One float32 forward pass of the torch model (in eval mode, no gradients) on the inputs, and the labels
    (None: no check needs them) against its outputs: past the outputs with the default cross-entropy, or refused
    by the port's own loss."""
    import torch

    from parity.port.torch_runner import as_tensor
    from parity.port.trees import leaves

    floats = [x.astype(np.float32) if np.issubdtype(x.dtype, np.floating) else x for x in inputs]
    was_training = model.training
    model.eval()
    try:
        with refusal("torch", inputs, where), torch.no_grad():
            outputs = port.run_torch(model, *(as_tensor(x) for x in floats))
        try:  # every leaf an array, else one line: which, and how to pick the arrays
            leaves(outputs, lambda leaf: leaf)
        except PortError as error:
            raise PortError(f"{where}: torch {error}") from None
        if labels is None:
            return
        if port.torch_loss is torch_cross_entropy:
            logits = first_leaf(outputs)
            classes = int(logits.shape[-1]) if getattr(logits, "ndim", 0) else 0
            if classes and tuple(logits.shape[:-1]) != labels.shape:
                raise PortError(
                    f"{where}: labels: shape {labels.shape} for outputs {tuple(logits.shape)}, expected the "
                    f"outputs' shape less the class axis: {tuple(logits.shape[:-1])}"
                )
            if classes and int(labels.max()) >= classes:
                raise PortError(
                    f"{where}: labels: {int(labels.max())} is past the model's {classes} outputs, expected class "
                    f"indices 0 to {classes - 1}"
                )
            return
        try:
            with torch.no_grad():
                port.torch_loss(outputs, torch.from_numpy(labels))
        except Exception as error:
            raise PortError(f"{where}: labels: the port's torch_loss refused them: {first_line(error)}") from error
    finally:
        model.train(was_training)


def checked_call(
    port: Any, inputs: Any, labels: Any, where: str, labels_optional: bool = False
) -> tuple[Port, tuple[np.ndarray, ...], Any]:
    """The port, inputs and labels every function of the port API takes, checked before anything runs
    (the Port, the inputs as arrays, the labels as int64, or None where optional)."""
    port = as_port(port, where)
    xs = checked_inputs(inputs, where)
    if not (labels is None and labels_optional):
        labels = checked_labels(labels, len(xs[0]), where)
    check_inputs(port, xs)
    return port, xs, labels


def check_inputs(port: Port, inputs: tuple[np.ndarray, ...]) -> None:
    """An integer input (token ids) has no steps; else PortError."""
    for index, (x, steps) in enumerate(zip(inputs, port.input_steps(len(inputs)), strict=True)):
        if steps and not np.issubdtype(x.dtype, np.floating):
            raise PortError(
                f"inputs[{index}]: an integer array ({x.dtype}, token ids or a mask) with steps "
                f"{' '.join(map(str, steps))}; steps change a float layout (NCHW -> NHWC): declared for another input?"
            )
