"""The preset suite's checks: what each compares on a preset, judged by the comparison core (`parity.compare`).

Logits and hidden states are outputs (`compare.compare_outputs`), gradients are gradients, the lr-1e-4
trajectory is a trajectory; only what no port has lives here: which layer, step, direction and unit of
a recurrent stack parts first, the trajectory at the recipe's learning rate (frameworks against rounding),
and cross-eval's predictions on the test set.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common import metrics
from common.config import Config
from common.data import Dataset, images_to_row_sequences
from common.sampler import BatchSampler
from common.weights import Weights, initial_weights
from parity import compare, oracle
from parity.compare import Row
from parity.port import flax_passes, flax_runner, torch_runner
from parity.port.declare import Port

# The checks by name, with the numbers the CLI also accepts. "accuracy" (full trainings over seeds) is
# `parity.accuracy`, run only when named; so is "port": the preset declared as a port (`parity.preset_ports`)
# and put through `check_port`, the API a user's own model goes through.
CHECKS = {"logits": 1, "hidden-states": 2, "gradients": 3, "trajectory": 4, "cross-eval": 5, "accuracy": 6, "port": 7}
SUITE_CHECKS = ("logits", "hidden-states", "gradients", "trajectory", "cross-eval")

ENVELOPE_SHARE = 0.5  # at the recipe's lr the frameworks may part no sooner than this share of rounding's steps
NEAR_TIE = 2.0  # cross-eval: images may be classed differently when their top two logits are this many tolerances apart

# What each check's `Row.figures` hold.
FIGURES = {
    "logits": ("max_abs_diff", "scaled_diff"),  # scaled: max_abs_diff / max(1, max |logit|)
    "hidden-states": ("max_abs_diff",),
    "gradients": ("max_abs_diff", "worst_relative_diff"),  # relative: to that tensor's max |gradient|
    "trajectory": ("max_loss_gap", "max_weight_gap"),  # lr 1e-4, every step
    "trajectory-recipe": ("max_framework_gap", "max_rounding_gap", "framework_parts_at", "rounding_parts_at"),
    "cross-eval": ("accuracy_torch", "accuracy_jax", "share_differing"),
}


def random_weights(config: Config, seed: int = 1) -> Weights:
    """Canonical initial weights plus noise of a tenth of their bound: no two units or gates alike.

    The noise breaks the identity of the `rnn` preset's recurrent matrices (and every symmetry a gate-order
    bug could hide behind) while keeping them well-conditioned: I + N(0, 0.1) on 150 units would have a
    spectral radius near 2 and amplify float32 rounding 100-fold over 28 steps.
    """
    return compare.noisy_weights(initial_weights(config, seed), seed, scale=0.1 / np.sqrt(config.hidden_size))


SIDES = ("torch", "jax", "numpy")  # the two frameworks through the port API's runners, and the NumPy oracle
EVAL_BATCH = 2000  # rows a forward pass takes at once (the trainers' evaluation batch)


def side_outputs(
    side: str, port: Port, config: Config, weights: Weights, rows: np.ndarray, device: str = "cpu", layers: bool = False
) -> list[np.ndarray]:
    """One side's outputs for canonical `weights` on `rows`, in `config.dtype`, in batches of EVAL_BATCH rows:
    the logits, or with `layers` every layer's output sequence (`SequenceClassifier.layer_outputs`, the layers
    one at a time in both frameworks, as the port's forward). The frameworks
    build, load and run the preset's port through the port API's runners (`parity.port`), on `device`;
    "numpy" is the oracle (`parity.oracle`), on the CPU."""
    dtype, every_layer = config.dtype, lambda model, rows: model.layer_outputs(rows)
    port = dataclasses.replace(port, torch_forward=every_layer, flax_forward=every_layer) if layers else port
    if side == "numpy":
        return oracle.hidden_states(config, weights, rows) if layers else [oracle.logits(config, weights, rows)]
    if side == "torch":
        model = torch_runner.torch_model_holding(port, weights, dtype, "eval", device)
        parts = [
            torch_runner.torch_forward(port, model, (rows[i : i + EVAL_BATCH],))
            for i in range(0, len(rows), EVAL_BATCH)
        ]
    else:
        with flax_runner.x64(dtype), flax_runner.on_device(device):
            model = flax_runner.flax_model_holding(port, port.entries, weights, dtype)
            parts = [
                flax_passes.flax_forward(port, model, (rows[i : i + EVAL_BATCH],))
                for i in range(0, len(rows), EVAL_BATCH)
            ]
    return [np.concatenate([part[leaf][1] for part in parts]) for leaf in range(len(parts[0]))]


def test_rows(dataset: Dataset, count: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` real test images as row sequences, and their labels."""
    return images_to_row_sequences(dataset.test_images[:count], dtype), dataset.test_labels[:count]


def compare_logits(row: Row, results: dict[str, np.ndarray]) -> list[Row]:
    """Every pair among the sides' logits (`row` names the check and case); float32's tolerance scales with
    the largest logit of the reference (the NumPy oracle's, when it ran)."""
    names = list(results)
    scale = compare.output_scale(results.get("numpy", results[names[0]]))
    return [
        compare.compare_outputs(
            dataclasses.replace(row, compared=f"{a} vs {b}"), results[a], results[b], scale, f"{a} vs {b}"
        )
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]


def first_state_over(a: list[np.ndarray], b: list[np.ndarray], tolerance: float, bidirectional: bool) -> str | None:
    """The first (layer, step, direction, unit) where two sets of layer outputs differ by more than `tolerance`."""
    for layer, (x, y) in enumerate(zip(a, b, strict=True)):
        diff = np.abs(x.astype(np.float64) - y)  # [batch, time, directions * hidden]
        steps = diff.shape[1]
        per_direction = diff.reshape(diff.shape[0], steps, 2 if bidirectional else 1, -1).max(axis=0)
        for step in range(steps):
            for direction in range(per_direction.shape[1]):
                over = np.nonzero(per_direction[step, direction] > tolerance)[0]
                if len(over):
                    unit = int(over[0])
                    name = "backward" if direction else "forward"
                    return (
                        f"layer {layer}, {name}, step {step}, unit {unit}: |diff| "
                        f"{per_direction[step, direction, unit]:.3g} > {tolerance:.3g}; "
                        f"{compare.where_over(x, y, tolerance)} in that layer"
                    )
    return None


def compare_hidden_states(row: Row, config: Config, results: dict[str, list[np.ndarray]]) -> list[Row]:
    """Every layer, direction and time step; a failure names the first place it shows (|h| <= 1: scale 1)."""
    rows, names = [], list(results)
    tolerance, text = compare.output_tolerance(config.dtype, 1.0)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            gap = max(compare.max_gap(x, y) for x, y in zip(results[a], results[b], strict=True))
            where = first_state_over(results[a], results[b], tolerance, config.bidirectional)
            rows.append(
                dataclasses.replace(
                    row,
                    compared=f"{a} vs {b}",
                    figures={"max_abs_diff": gap},
                    tolerance=text,
                    passed=where is None,
                    detail=where or "",
                )
            )
    return rows


def training_batches(dataset: Dataset, config: Config, steps: int) -> list[np.ndarray]:
    """The first `steps` index batches of the shared sampler (the trainers' own batches)."""
    sampler = BatchSampler(len(dataset.train_images), config.batch_size, config.seed)
    return [sampler.batch(step // sampler.steps_per_epoch, step % sampler.steps_per_epoch) for step in range(steps)]


def recipe_lr_verdict(
    row: Row, learning_rate: float, runs32: tuple[np.ndarray, np.ndarray], runs64: tuple[np.ndarray, np.ndarray]
) -> Row:
    """The trajectory at the recipe's lr (`runs32`, `runs64`: torch's and JAX's losses): the frameworks may part
    no sooner than ENVELOPE_SHARE of the way to where rounding alone parts either framework from itself (a loss
    gap over compare.DIVERGENCE between its float32 and float64 runs), over these steps. Either's own: optax's
    float32 Adam computes its bias correction in float32 where torch uses Python's float64, and parts from its
    float64 run sooner (as `check_port`'s trajectory takes the larger drift)."""
    (torch32, jax32), (torch64, jax64) = runs32, runs64
    framework_gap = np.abs(torch32 - jax32)
    own = {"torch": np.abs(torch32 - torch64), "jax": np.abs(jax32 - jax64)}
    framework_at = compare.first_step_over(framework_gap, compare.DIVERGENCE)
    parts = {name: compare.first_step_over(gap, compare.DIVERGENCE) for name, gap in own.items()}
    steps = len(torch32)
    rounding_at = min((at for at in parts.values() if at), default=None)
    return dataclasses.replace(
        row,
        figures={
            "max_framework_gap": float(framework_gap.max()),
            "max_rounding_gap": float(max(gap.max() for gap in own.values())),
            "framework_parts_at": framework_at,
            "rounding_parts_at": rounding_at,
        },
        tolerance=f"gap > {compare.DIVERGENCE:g} no sooner than {ENVELOPE_SHARE:g} x rounding's step",
        passed=(framework_at or steps + 1) >= ENVELOPE_SHARE * (rounding_at or steps + 1),
        detail=f"lr {learning_rate:g}, {steps} steps: torch-jax gap > {compare.DIVERGENCE:g} at step "
        f"{framework_at or 'never'}, float32-float64 at step {parts['torch'] or 'never'} (torch), "
        f"{parts['jax'] or 'never'} (jax)",
    )


def compare_predictions(row: Row, logits_a: np.ndarray, logits_b: np.ndarray, labels: np.ndarray) -> Row:
    """Both sides' accuracy, and whether every image they class differently is a near-tie: its top two
    logits within NEAR_TIE float32 logit tolerances."""
    differ = metrics.predictions(logits_a) != metrics.predictions(logits_b)
    tolerance, _ = compare.output_tolerance("float32", compare.output_scale(logits_a))
    top_two = np.sort(logits_a[differ], axis=1)[:, -2:]
    near_ties = bool((top_two[:, 1] - top_two[:, 0] <= NEAR_TIE * tolerance).all())
    accuracy_a, accuracy_b = metrics.accuracy(logits_a, labels), metrics.accuracy(logits_b, labels)
    same = 1.0 - float(differ.mean())
    return dataclasses.replace(
        row,
        figures={"accuracy_torch": accuracy_a, "accuracy_jax": accuracy_b, "share_differing": 1.0 - same},
        tolerance=f"only near-ties ({NEAR_TIE:g} x logit tolerance) may differ",
        passed=near_ties,
        detail=f"accuracy {accuracy_a:.4f} / {accuracy_b:.4f}, same class {same:.2%} of {len(labels)}",
    )
