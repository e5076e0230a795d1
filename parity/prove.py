"""Prove a declared port: the suite's checks on any PyTorch module and its Flax NNX port.

    report = check_port(port, inputs, labels)          # inputs in the PyTorch layout, NumPy
    assert report.passed, report.table()
    assert_port(port, inputs, labels)                  # the same, raising AssertionError with the table

Checks (`PORT_CHECKS`), each in float32 and in float64 (both frameworks in float64: the math to ~1e-12;
float32 then shows only rounding), on one set of weights, the torch model's own initialisation plus noise
(no two units alike, no unit LayerNorm scale for a bug to hide behind):
- weights: both conversions through the table, exact round trips both ways;
- outputs: the models' outputs on `inputs`;
- submodules: each declared submodule's output, in the order PyTorch ran them; the first over its
  tolerance is the report's first divergence (torch forward hooks; Flax NNX `nnx.capture`);
- gradients: of the loss, for every mapped parameter, relative to that tensor's largest gradient;
- training: `steps` optimizer steps (torch Adam or SGD against optax's, hyperparameters matched) on the
  same batches, every step's loss and weights: float64 to 1e-12, float32 within 10x torch's own
  float32-vs-float64 drift.
Tolerances are the suite's (`parity.checks`), rows are the suite's `Row`s.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from common.console import format_table
from parity import checks, transforms
from parity import port as declared
from parity.checks import Row
from parity.port import Port, PortError, Weights
from parity.sides import Trajectory

PORT_CHECKS = ("weights", "outputs", "submodules", "gradients", "training")
Batches = list[np.ndarray]


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """One optimizer in both frameworks, hyperparameters matched: torch.optim.Adam/SGD and optax.adam/sgd."""

    kind: Literal["adam", "sgd"] = "adam"
    learning_rate: float = checks.SMALL_LEARNING_RATE
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only

    def torch(self, parameters: Any) -> Any:
        import torch

        if self.kind == "adam":
            return torch.optim.Adam(parameters, lr=self.learning_rate, betas=(self.b1, self.b2), eps=self.eps)
        return torch.optim.SGD(parameters, lr=self.learning_rate, momentum=self.momentum)

    def optax(self) -> Any:
        import optax

        if self.kind == "adam":
            return optax.adam(self.learning_rate, b1=self.b1, b2=self.b2, eps=self.eps)
        return optax.sgd(self.learning_rate, momentum=self.momentum or None)


@dataclasses.dataclass
class Report:
    """The rows of every check, whether all passed, and where the first divergence shows."""

    port: str
    rows: list[Row]
    first_divergence: str | None  # e.g. "float64 submodules: conv1 (flax conv1): |diff| 0.3 > 1e-12"

    @property
    def passed(self) -> bool:
        return all(row.passed is not False for row in self.rows)

    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.passed is False]

    def table(self) -> str:
        """A headline (verdict, first divergence), then one aligned line per row."""
        header = ("check", "case", "dtype", "figures", "tolerance", "result", "detail")
        lines = [
            (
                row.check,
                row.case,
                row.dtype,
                checks.format_figures(row),
                row.tolerance,
                {True: "pass", False: "FAIL", None: "-"}[row.passed],
                row.detail,
            )
            for row in self.rows
        ]
        verdict = "passed" if self.passed else f"FAILED ({len(self.failures())} of {len(self.rows)} rows)"
        head = f"port {self.port}: {verdict}"
        if self.first_divergence:
            head += f"; first divergence: {self.first_divergence}"
        return head + "\n" + format_table(header, lines)

    def __str__(self) -> str:
        return self.table()


def noisy_weights(weights: Weights, seed: int, share: float = 0.1) -> Weights:
    """Each float tensor plus Gaussian noise of `share` x its own spread (or of its magnitude, if constant)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, array in weights.items():
        if not np.issubdtype(array.dtype, np.floating) or not array.size:
            out[name] = array
            continue
        spread = float(array.std()) or 0.1 * max(float(np.abs(array).mean()), 0.1)
        out[name] = (array + rng.normal(0, share * spread, array.shape)).astype(array.dtype)
    return out


def port_weights(port: Port, seed: int = 0) -> Weights:
    """The torch model's own initialisation (seeded) plus noise: the canonical weights every check uses."""
    import torch

    torch.manual_seed(seed)
    return noisy_weights(declared.torch_weights(declared.build(port.torch_model, "float32")), seed)


def as_dtype(weights: Weights, dtype: str) -> Weights:
    return {
        name: array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array
        for name, array in weights.items()
    }


# ---- running each side ------------------------------------------------------------------------------------


def enable_float64() -> None:
    from jax_impl.model import enable_dtype

    enable_dtype("float64")


def torch_forward(model: Any, inputs: np.ndarray) -> np.ndarray:
    import torch

    output = model(torch.from_numpy(np.ascontiguousarray(inputs)))
    result: np.ndarray = first_tensor(output).detach().numpy()
    return result


def flax_input(port: Port, inputs: np.ndarray) -> np.ndarray:
    return transforms.apply(port.inputs, [inputs], [])[0]


def flax_forward(port: Port, model: Any, inputs: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp

    return np.asarray(model(jnp.asarray(flax_input(port, inputs))))


def first_tensor(output: Any) -> Any:
    """A module's output, or the first element of a tuple output (nn.MultiheadAttention's (output, weights))."""
    return output[0] if isinstance(output, tuple | list) else output


def torch_submodule_outputs(port: Port, model: Any, inputs: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(torch module name, output) for each declared submodule, in the order PyTorch finished them."""
    recorded: list[tuple[str, np.ndarray]] = []
    handles = []
    for entry in port.submodule_entries:
        name = entry.torch[0]
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise declared.unknown_name(
                "submodules: the torch module", name, [n for n, _ in model.named_modules() if n]
            ) from None

        def hook(_module: Any, _inputs: Any, output: Any, name: str = name) -> None:
            recorded.append((name, first_tensor(output).detach().numpy().copy()))

        handles.append(module.register_forward_hook(hook))
    try:
        torch_forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return recorded


def flax_submodule_outputs(port: Port, model: Any, inputs: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Flax module path -> the outputs of its `__call__`, in call order.

    Only the declared modules are recorded, by identity: each one's class gets a recording `__call__` for
    the length of one eager forward pass. (`nnx.capture(method_outputs=...)` records every module, and a
    module called inside `nnx.scan`, such as a recurrent cell, then breaks the scan's carry.) A declared
    module that runs only inside a JAX transform is a copy there, so it records nothing.
    """
    import jax.numpy as jnp
    from flax import nnx

    modules = {declared.path_name(path): module for path, module in nnx.iter_modules(model)}
    wanted: dict[int, str] = {}
    for entry in port.submodule_entries:
        if entry.flax[0] not in modules:
            raise declared.unknown_name("submodules: the Flax module", entry.flax[0], [n for n in modules if n])
        wanted[id(modules[entry.flax[0]])] = entry.flax[0]
    outputs: dict[str, list[np.ndarray]] = {}
    with recording_calls({type(modules[path]) for path in wanted.values()}, wanted, outputs):
        model(jnp.asarray(flax_input(port, inputs)))
    return outputs


@contextlib.contextmanager
def recording_calls(classes: set[type], wanted: dict[int, str], outputs: dict[str, list[np.ndarray]]) -> Iterator[None]:
    """Within the block, a call of any instance in `wanted` (by id) appends its output to outputs[its name]."""
    patched = []
    for cls in classes:
        original = cls.__call__

        def recorder(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            output = __original(self, *args, **kwargs)
            name = wanted.get(id(self))
            if name is not None:
                outputs.setdefault(name, []).append(np.asarray(first_tensor(output)))
            return output

        patched.append((cls, "__call__" in cls.__dict__, original))
        setattr(cls, "__call__", recorder)  # noqa: B010 (mypy refuses assigning to a method)
    try:
        yield
    finally:
        for cls, own, original in patched:
            if own:
                setattr(cls, "__call__", original)  # noqa: B010
            else:
                delattr(cls, "__call__")


def torch_gradients(port: Port, model: Any, inputs: np.ndarray, labels: np.ndarray) -> tuple[float, Weights]:
    """The loss and its gradient for every parameter, by state_dict name."""
    import torch

    model.zero_grad(set_to_none=True)
    loss = port.torch_loss(model(torch.from_numpy(np.ascontiguousarray(inputs))), torch.from_numpy(labels))
    loss.backward()
    gradients = {}
    for name, parameter in model.named_parameters():
        if parameter.grad is None:
            raise PortError(f"gradients: torch parameter {name!r} got no gradient from the loss")
        gradients[name] = parameter.grad.detach().numpy().copy()
    return loss.item(), gradients


def split_params(model: Any) -> tuple[Any, Any, Any]:
    """(graphdef, the nnx.Param state, the rest of the state)."""
    from flax import nnx

    graphdef, params, *rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest[0]


def flax_value_and_grad(port: Port, model: Any) -> Any:
    """A jitted `(params, rest, inputs, labels) -> (loss, gradients)` for the model's structure."""
    import jax
    from flax import nnx

    graphdef = nnx.split(model, nnx.Param, ...)[0]

    def loss(params: Any, rest: Any, inputs: Any, labels: Any) -> Any:
        return port.flax_loss(nnx.merge(graphdef, params, rest)(inputs), labels)

    return jax.jit(jax.value_and_grad(loss))


def flax_gradients(port: Port, model: Any, inputs: np.ndarray, labels: np.ndarray) -> tuple[float, Weights]:
    """The loss and its gradient for every Flax parameter, by path."""
    import jax.numpy as jnp
    from flax import nnx

    _, params, rest = split_params(model)
    loss, grads = flax_value_and_grad(port, model)(params, rest, jnp.asarray(flax_input(port, inputs)), labels)
    return float(loss), {declared.path_name(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}


def batches_of(count: int, batch_size: int, steps: int) -> list[np.ndarray]:
    """`steps` batches of indices: consecutive slices of `count` inputs, wrapping around."""
    return [np.arange(step * batch_size, (step + 1) * batch_size) % count for step in range(steps)]


def torch_training(
    port: Port,
    pair: declared.Pair,
    optimizer: Optimizer,
    inputs: np.ndarray,
    labels: np.ndarray,
    batches: Batches,
) -> Trajectory:
    """torch's optimizer, one step per batch: each step's loss and the weights after it (in the Flax layout)."""
    import torch

    model = pair.torch_model
    opt = optimizer.torch(model.parameters())
    losses, after = [], []
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        loss = port.torch_loss(model(torch.from_numpy(inputs[batch])), torch.from_numpy(labels[batch]))
        loss.backward()
        opt.step()
        losses.append(loss.item())
        after.append(declared.to_flax(pair.entries, declared.torch_weights(model), pair.flax_shapes))
    return Trajectory(np.array(losses), after)


def flax_training(
    port: Port,
    pair: declared.Pair,
    optimizer: Optimizer,
    inputs: np.ndarray,
    labels: np.ndarray,
    batches: Batches,
) -> Trajectory:
    """optax's optimizer, one jitted step per batch: each step's loss and the weights after it."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    transformation = optimizer.optax()
    _, params, rest = split_params(pair.flax_model)
    value_and_grad = flax_value_and_grad(port, pair.flax_model)

    @jax.jit
    def step(params: Any, state: Any, x: Any, y: Any) -> Any:
        loss, grads = value_and_grad(params, rest, x, y)
        updates, state = transformation.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state = transformation.init(params)
    rows = jnp.asarray(flax_input(port, inputs))
    losses, after = [], []
    for batch in batches:
        params, state, loss = step(params, state, rows[batch], jnp.asarray(labels[batch]))
        losses.append(float(loss))
        after.append({declared.path_name(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(params)})
    return Trajectory(np.array(losses), after)


# ---- the checks -----------------------------------------------------------------------------------------------


def check_port(
    port: Port,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    checks_to_run: Sequence[str] = PORT_CHECKS,
    dtypes: Sequence[str] = ("float32", "float64"),
    optimizer: Optimizer = Optimizer(),
    steps: int = 10,
    batch_size: int = 16,
    seed: int = 0,
) -> Report:
    """Every check in `checks_to_run`, in each dtype; `inputs` in the PyTorch layout, `labels` integers."""
    unknown = [name for name in checks_to_run if name not in PORT_CHECKS]
    if unknown:
        raise PortError(f"checks: unknown {', '.join(unknown)}; expected some of {', '.join(PORT_CHECKS)}")
    if not dtypes or any(dtype not in ("float32", "float64") for dtype in dtypes):
        raise PortError(f"dtypes: expected float32 and/or float64, got {', '.join(dtypes) or 'none'}")
    if steps < 1 or batch_size < 1:
        raise PortError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if "float64" in dtypes or "training" in checks_to_run:
        enable_float64()
    base = port_weights(port, seed)
    labels = np.asarray(labels).astype(np.int64)
    rows: list[Row] = []
    divergences: dict[str, str] = {}  # dtype -> its first divergent submodule
    runs: dict[str, tuple[Trajectory, Trajectory]] = {}
    batches = batches_of(len(inputs), batch_size, steps)
    for dtype in dtypes:
        weights, x = as_dtype(base, dtype), inputs.astype(dtype)
        pair = declared.build_pair(port, weights)
        row = _row(port, dtype)
        if "weights" in checks_to_run:
            rows += weight_rows(pair, weights, row)
        if "outputs" in checks_to_run:
            rows.append(output_row(port, pair, x, dtype, row))
        if "submodules" in checks_to_run and port.submodules:
            sub_rows = submodule_rows(port, pair, x, dtype, row)
            rows += sub_rows
            diverging = next((r for r in sub_rows if r.passed is False), None)
            if diverging is not None:
                divergences[dtype] = f"{dtype} submodules: {diverging.case}: {diverging.detail}"
        if "gradients" in checks_to_run:
            rows.append(gradient_row(port, pair, x, labels, dtype, row))
        if "training" in checks_to_run:
            runs[dtype] = (
                torch_training(port, declared.build_pair(port, weights), optimizer, x, labels, batches),
                flax_training(port, declared.build_pair(port, weights), optimizer, x, labels, batches),
            )
    if "training" in checks_to_run:
        if "float32" in runs and "float64" not in runs:
            weights = as_dtype(base, "float64")
            pair = declared.build_pair(port, weights)
            runs["float64"] = (
                torch_training(port, pair, optimizer, inputs.astype("float64"), labels, batches),
                runs["float32"][1],
            )
        for dtype in dtypes:
            rows.append(training_row(runs, dtype, optimizer, _row(port, dtype)))
    first_failure = next((r for r in rows if r.passed is False), None)
    first = divergences.get("float64", divergences.get("float32"))  # float64's first: a difference in the math
    if first is None and first_failure is not None:
        first = f"{first_failure.dtype} {first_failure.check}: {first_failure.case}: {first_failure.detail}"
    return Report(port.name, rows, first)


def assert_port(port: Port, inputs: np.ndarray, labels: np.ndarray, **options: Any) -> Report:
    """`check_port`, raising AssertionError with the report's table when any row fails."""
    report = check_port(port, inputs, labels, **options)
    if not report.passed:
        raise AssertionError(report.table())
    return report


def _row(port: Port, dtype: str) -> Row:
    return Row(port.name, "", "", "cpu", dtype, "torch vs jax", {}, "", None)


def weight_rows(pair: declared.Pair, weights: Weights, row: Row) -> list[Row]:
    """Both conversions through the table, each round trip exact (every value, bit for bit)."""
    flax = declared.to_flax(pair.entries, weights, pair.flax_shapes)
    back = declared.to_torch(pair.entries, flax, pair.torch_shapes)
    again = declared.to_flax(pair.entries, back, pair.flax_shapes)
    torch_exact = all(np.array_equal(weights[n], back[n]) and weights[n].shape == back[n].shape for n in weights)
    flax_exact = all(np.array_equal(flax[p], again[p]) for p in flax)
    loaded = declared.flax_weights(pair.flax_model)
    loaded_exact = all(np.array_equal(flax[p], loaded[p]) for p in flax)
    count = f"{len(weights)} torch tensors, {len(flax)} Flax parameters"
    return [
        dataclasses.replace(
            row,
            check="weights",
            case="torch -> flax -> torch",
            compared="round trip",
            tolerance="exact",
            passed=torch_exact,
            detail=count,
        ),
        dataclasses.replace(
            row,
            check="weights",
            case="flax -> torch -> flax",
            compared="round trip",
            tolerance="exact",
            passed=flax_exact and loaded_exact,
            detail="and the Flax model holds them" if loaded_exact else "the Flax model holds other values",
        ),
    ]


def gap_row(row: Row, check: str, case: str, reference: np.ndarray, other: np.ndarray, dtype: str) -> Row:
    """One comparison with the suite's logit tolerance: float32 relative to max(1, largest |value|), float64 1e-12."""
    if reference.shape != other.shape:
        return dataclasses.replace(
            row,
            check=check,
            case=case,
            tolerance="same shape",
            passed=False,
            detail=f"torch {reference.shape} vs flax {other.shape} (after the declared steps)",
        )
    scale = max(1.0, float(np.abs(reference).max()) if reference.size else 1.0)
    tolerance, text = checks.logit_tolerance(dtype, scale)
    gap = checks.max_gap(reference, other)
    detail = f"|diff| {gap:.3g} {'<=' if gap <= tolerance else '>'} {tolerance:.3g}"
    if gap > tolerance:
        where = np.unravel_index(int(np.argmax(np.abs(reference.astype(np.float64) - other))), reference.shape)
        over = int((np.abs(reference.astype(np.float64) - other) > tolerance).sum())
        detail += f" at {tuple(int(i) for i in where)}, {over} of {reference.size} values over"
    return dataclasses.replace(
        row,
        check=check,
        case=case,
        figures={"max_abs_diff": gap, "scaled_diff": gap / scale},
        tolerance=text,
        passed=gap <= tolerance,
        detail=detail,
    )


def output_row(port: Port, pair: declared.Pair, inputs: np.ndarray, dtype: str, row: Row) -> Row:
    torch_out = transforms.apply(port.outputs, [torch_forward(pair.torch_model, inputs)], [])[0]
    flax_out = flax_forward(port, pair.flax_model, inputs)
    if dtype == "float64" and flax_out.dtype != np.float64:
        raise PortError(
            f"{port.name}: the Flax model computes in {flax_out.dtype} with float64 weights and inputs; "
            "leave its modules' dtype unset (None) so that float64 runs in float64"
        )
    return gap_row(row, "outputs", f"{len(inputs)} inputs", torch_out, flax_out, dtype)


def submodule_rows(port: Port, pair: declared.Pair, inputs: np.ndarray, dtype: str, row: Row) -> list[Row]:
    """Each declared submodule's outputs, in the order PyTorch ran them."""
    torch_calls = torch_submodule_outputs(port, pair.torch_model, inputs)
    flax_calls = flax_submodule_outputs(port, pair.flax_model, inputs)
    entries = {entry.torch[0]: entry for entry in port.submodule_entries}
    seen: dict[str, int] = {}
    rows = []
    for name, output in torch_calls:
        entry = entries[name]
        call = seen.get(name, 0)
        seen[name] = call + 1
        flax_outputs = flax_calls.get(entry.flax[0], [])
        case = f"{name} (flax {entry.flax[0]})" + (f", call {call + 1}" if call else "")
        if call >= len(flax_outputs):
            rows.append(
                dataclasses.replace(
                    row,
                    check="submodules",
                    case=case,
                    tolerance="-",
                    passed=False,
                    detail=f"flax {entry.flax[0]} ran {len(flax_outputs)} times, torch {name} at least {call + 1}",
                )
            )
            continue
        reference = transforms.apply(entry.steps, [output], [])[0]
        rows.append(gap_row(row, "submodules", case, reference, flax_outputs[call], dtype))
    missing = [e.torch[0] for e in port.submodule_entries if e.torch[0] not in seen]
    if missing:
        rows.append(
            dataclasses.replace(
                row,
                check="submodules",
                case=", ".join(missing),
                tolerance="-",
                passed=False,
                detail="declared, but torch never ran them",
            )
        )
    return rows


def gradient_row(port: Port, pair: declared.Pair, inputs: np.ndarray, labels: np.ndarray, dtype: str, row: Row) -> Row:
    """Every mapped parameter's gradient, compared in the Flax layout (steps move entries, so gradients convert too)."""
    torch_loss, torch_grads = torch_gradients(port, pair.torch_model, inputs, labels)
    flax_loss, flax_grads = flax_gradients(port, pair.flax_model, inputs, labels)
    torch_in_flax = declared.to_flax(pair.entries, torch_grads, pair.flax_shapes)
    rtol = checks.GRADIENT_RTOL[dtype]
    max_abs, worst, worst_name = checks.gradient_gaps(torch_in_flax, flax_grads)
    return dataclasses.replace(
        row,
        check="gradients",
        case=f"{len(flax_grads)} parameters",
        figures={"max_abs_diff": max_abs, "worst_relative_diff": worst},
        tolerance=f"{rtol:g} rel",
        passed=worst <= rtol,
        detail=f"worst {worst_name}; loss {torch_loss:.6g} vs {flax_loss:.6g}",
    )


def training_row(runs: dict[str, tuple[Trajectory, Trajectory]], dtype: str, optimizer: Optimizer, row: Row) -> Row:
    torch_run, flax_run = runs[dtype]
    loss_gaps, weight_gaps = checks.trajectory_gap(torch_run, flax_run)
    rounding = checks.trajectory_gap(runs["float32"][0], runs["float64"][0]) if dtype == "float32" else None
    loss_tol, weight_tol, text = checks.trajectory_tolerances(dtype, len(loss_gaps), rounding)
    passed, detail = checks.trajectory_verdict(loss_gaps, weight_gaps, loss_tol, weight_tol, optimizer.learning_rate)
    return dataclasses.replace(
        row,
        check="training",
        case=f"{optimizer.kind}, {len(loss_gaps)} steps",
        figures={"max_loss_gap": float(loss_gaps.max()), "max_weight_gap": float(weight_gaps.max())},
        tolerance=text,
        passed=passed,
        detail=detail,
    )
