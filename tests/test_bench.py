"""`python -m bench` on tiny settings: every runner trains what it times, and the figures are what they claim."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bench.bound import train_flops_per_image
from bench.levers import LEVERS
from common.presets import PRESETS, get_preset
from jax_impl.model import build_model
from tests.conftest import assert_one_line_error, matmul_flops, run_cli

pytestmark = pytest.mark.trains  # trains models: left out of the inner loop (-m "not trains and not tfds")

MNIST_TRAIN_ROWS_MIB = 60000 * 28 * 28 * 4 / 2**20  # the training set as float32 rows, which every runner holds


def bench_rows(path) -> list[dict]:
    return [row for row in json.loads(path.read_text()) if row["runner"] != "(process)"]


TWO_LEVERS = ("torch: Adam for-loop", "jax: synchronous dispatch")  # one in the benchmark's process, one in its own
ALL_LEVERS = (*TWO_LEVERS[:1], "jax: hoisted input projection", "jax: 2 CPU devices", TWO_LEVERS[1])


# the default tier: two levers, one of each kind of process; --run-slow adds the jax model levers
@pytest.mark.parametrize(
    "levers", [TWO_LEVERS, pytest.param(ALL_LEVERS, marks=pytest.mark.slow)], ids=["two-levers", "all-levers"]
)
def test_bench_times_steps_every_runner_really_took_and_builds_levers_and_sweeps(tmp_path, levers):
    """One run of the benchmark's every part: the four runners, the levers, a batch sweep and its plot."""
    steps, reps = 4, 2
    result = run_cli(
        "bench",
        "--presets",
        "lstm",
        "--steps",
        str(steps),
        "--reps",
        str(reps),
        "--levers",
        ",".join(levers),
        "--sweep",
        "batch",
        "--sweep-sizes",
        "32,128",
        "--sweep-images",
        "256",
        "--plot",
        str(tmp_path / "sweep.png"),
        "--json",
        str(tmp_path / "b.json"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = bench_rows(tmp_path / "b.json")
    timed = [row for row in rows if "sweep" not in row]
    assert [(row["runner"], row["framework"]) for row in timed] == [
        ("tutorial loop", "torch"),
        ("tutorial loop, malloc tuned", "torch"),
        ("torch trainer", "torch"),
        ("jax trainer", "jax"),
        *((lever, lever.split(":")[0]) for lever in levers),
    ]
    for row in timed:
        # a warm-up run and `reps` timed runs, each `steps` Adam steps, as each optimizer counts them
        assert row["steps_taken"] == (reps + 1) * steps, row
        # setting a runner up loads the training set into it: its memory figure must show that
        assert row["memory_mb"] > 0.8 * MNIST_TRAIN_ROWS_MIB, row
        # no runner can outrun the device's own matmul throughput with matmul FLOPs
        assert 0 < row["bound_share"] < 1, row
    assert timed[0]["vs_tutorial"] == 1.0 and all(row["eval_images_per_s"] is None for row in timed[:2])
    assert all(row["eval_images_per_s"] > 0 for row in timed[2:4])
    # the tutorial loop runs in fresh processes of its own: as a user's script has it, and tuned
    assert timed[0]["malloc"] == "default" and timed[1]["malloc"].startswith("glibc, mmap threshold")
    assert "tutorial loop" in result.stdout and "x tutorial" in result.stdout
    # a lever read once per process runs in a fresh process of its own; the others in the benchmark's
    assert [row["runner"] for row in timed if row["malloc"] is not None][2:] == ["jax: synchronous dispatch"]
    swept = [(row["size"], row["runner"], row["batch_size"]) for row in rows if row.get("sweep") == "batch"]
    assert swept == [
        (32, "torch trainer", 32),
        (32, "jax trainer", 32),
        (128, "torch trainer", 128),
        (128, "jax trainer", 128),
    ]
    assert all(row["steps_taken"] == (reps + 1) * (256 // row["batch_size"]) for row in rows if "sweep" in row)
    # evaluation runs in its own batches whatever the training batch: a batch sweep does not time it again
    assert all(row["eval_images_per_s"] is None for row in rows if "sweep" in row)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "% of matmul bound" in result.stdout and all(f"{lever}:" in result.stdout for lever in levers)


def test_the_lever_trainers_get_the_levers_options():
    from bench.runners import make_trainer
    from common.data import load_dataset

    config, dataset = get_preset("lstm"), load_dataset("mnist")
    assert make_trainer("torch: Adam for-loop", config, dataset, "cpu").optimizer.defaults["foreach"] is False
    assert make_trainer("torch trainer", config, dataset, "cpu").optimizer.defaults["fused"] is True
    assert make_trainer("jax: hoisted input projection", config, dataset, "cpu").model.recurrence == "hoisted"
    assert make_trainer("jax: chunk 200", config, dataset, "cpu").options.chunk_steps == 200
    assert make_trainer("jax: unroll 28", config, dataset, "cpu").model.layers[0].unroll == 28
    assert make_trainer("jax trainer", config, dataset, "cpu").model.backward == "manual"  # the CPU default
    assert make_trainer("jax: autodiff backward", config, dataset, "cpu").model.backward == "autodiff"


def test_a_lever_of_xla_flags_runs_in_its_own_process_with_them(monkeypatch):
    from bench.process import child_environment, in_own_process

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    name = "jax: small while loops hoisted"
    assert in_own_process(name) and not in_own_process("jax: autodiff backward")
    flags = child_environment(name)["XLA_FLAGS"].split()
    assert flags == ["--xla_dump_to=/tmp/x", *LEVERS[name].xla_flags]  # the user's flags kept, the lever's added
    assert "XLA_FLAGS" not in child_environment("jax trainer") or child_environment("jax trainer")["XLA_FLAGS"] == (
        "--xla_dump_to=/tmp/x"
    )


def test_compiler_options_reach_the_compiled_train_chunk():
    from common.data import load_dataset
    from common.weights import initial_weights
    from jax_impl.train import JaxTrainer, TrainOptions

    config = get_preset("lstm")
    options = TrainOptions(compiler_options=(("xla_cpu_experimental_ynn_fusion_type", "no-such-fusion"),))
    trainer = JaxTrainer(config, initial_weights(config), load_dataset("mnist"), "cpu", options)
    batch = np.arange(config.batch_size)
    # XLA refuses the value only if the option got to the compiler
    with pytest.raises(Exception, match="xla_cpu_experimental_ynn_fusion_type"):
        trainer.train_steps([batch])


@pytest.mark.parametrize("preset", PRESETS)
def test_flop_count_is_three_times_the_matmuls_jax_runs_in_a_forward_pass(preset):
    config = get_preset(preset)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(config)))  # shapes: no initialiser run
    program = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.zeros((1, 28, 28), jnp.float32))
    assert train_flops_per_image(config) == 3 * matmul_flops(program.jaxpr)


def test_bench_refuses_unknown_levers_and_bad_sweep_sizes():
    assert_one_line_error(run_cli("bench", "--levers", "jax: warp drive"), 2, "--levers: expected")
    assert_one_line_error(run_cli("bench", "--sweep", "batch", "--sweep-sizes", "32,x"), 2, "--sweep-sizes")


def test_the_runner_process_refuses_a_data_folder_without_the_arrays(tmp_path):
    result = run_cli(
        "bench.process", "--runner", "tutorial loop", "--preset", "lstm", "--steps", "5", "--data", str(tmp_path)
    )
    assert_one_line_error(result, 2, "--data", "train_images.npy")


def test_bench_wall_interleaves_rounds_and_gives_medians_of_cold_and_warm_runs(tmp_path, monkeypatch, capsys, idx_dir):
    """The bookkeeping with a stand-in for the trainer's process; then one real run of the command it starts."""
    import bench.wall

    calls = []

    def fake_run(framework, preset, out, cache, args):
        calls.append((framework, preset, cache.name))
        warm = sum(1 for call in calls if call[2] == cache.name) == 2  # the second run on its cache folder
        return {"wall_seconds": 2.0 + len(calls), "compile_seconds": 0.1 if warm else 1.0, **FIGURES}

    FIGURES = {"train_images_per_s": 1000.0, "test_accuracy": 0.5}
    monkeypatch.setattr(bench.wall, "one_run", fake_run)
    code = bench.wall.main(["--presets", "lstm", "--rounds", "3", "--json", str(tmp_path / "w.json")])
    assert code == 0
    # each framework's cold run then its warm one, on one new cache folder; the frameworks' order alternates
    order = ["torch", "jax", "jax", "torch", "torch", "jax"]  # round 0, round 1 reversed, round 2
    assert [call[0] for call in calls] == [framework for framework in order for _ in range(2)]
    assert len({call[2] for call in calls}) == 6
    runs = json.loads((tmp_path / "w.json").read_text())["runs"]
    jax_cold = [row["wall_seconds"] for row in runs if (row["framework"], row["run"]) == ("jax", "cold")]
    assert jax_cold == [5.0, 7.0, 13.0]  # calls 3, 5 and 11
    line = next(line for line in capsys.readouterr().out.splitlines() if line.split()[1:3] == ["jax", "cold"])
    assert line.split()[3:6] == ["7.00", "5.00-13.00", "1.00"]
    monkeypatch.undo()
    args = bench.wall.build_parser().parse_args(["--max-steps", "1", "--data-dir", str(idx_dir)])
    real = bench.wall.one_run("torch", "lstm", tmp_path / "run", tmp_path / "cache", args)
    assert real["wall_seconds"] > 0 and 0 <= real["test_accuracy"] <= 1 and real["compile_seconds"] == 0.0


TWO_DEVICES = """
import json, sys
import jax
import numpy as np
jax.config.update("jax_num_cpu_devices", 2)  # before JAX starts its CPU client, as the benchmark sets it
from bench.runners import make_trainer
from common.data import load_dataset
from common.presets import get_preset
from common.sampler import BatchSampler

config, dataset = get_preset("lstm"), load_dataset("mnist")
batches = BatchSampler(len(dataset.train_labels), 64, 0).batches(0)[:3]
runs = {}
for name in ("jax trainer", "jax: 2 CPU devices"):
    trainer = make_trainer(name, config, dataset, "cpu")
    losses = trainer.train_steps(batches)
    weights = trainer.canonical_weights()
    runs[name] = {
        "losses": np.asarray(losses).tolist(),
        "weights": {k: np.asarray(v).tolist() for k, v in weights.items()},
        "data_devices": len(trainer.train_rows.sharding.device_set),
        "batch_split": str(getattr(trainer.index_placement, "spec", None)),
    }
json.dump(runs, sys.stdout)
"""


def test_the_two_cpu_devices_lever_trains_as_one_device_does():
    """The `jax: 2 CPU devices` lever (each batch split over two CPU devices, GSPMD) in a process of its own, as the
    benchmark runs it: three Adam steps give one device's losses and weights. (The bench's every-part test runs
    the lever itself under --run-slow.)"""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", TWO_DEVICES], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout)
    one, two = runs["jax trainer"], runs["jax: 2 CPU devices"]
    assert len(one["losses"]) == 3
    assert (one["data_devices"], two["data_devices"]) == (1, 2) and "data" in two["batch_split"]  # split, not one
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    step = get_preset("lstm").learning_rate  # Adam moves a weight by about this much a step
    for name, value in one["weights"].items():  # float32 sums split in two: a tenth of one step apart at most
        np.testing.assert_allclose(two["weights"][name], value, rtol=0, atol=step / 10)
