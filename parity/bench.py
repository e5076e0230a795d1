"""`python -m parity.bench`: training throughput of the tutorials' loop, the torch trainer and the JAX trainer.

All three run in this one process, round-robin over repetitions (so that machine noise hits them alike),
each timed over the same number of steps after a warm-up chunk (and, for JAX, after compilation).

    python -m parity.bench --presets lstm,bilstm --steps 200 --reps 5
    python -m parity.bench --presets lstm,bilstm --levers            # also every speed lever tried
    python -m parity.bench --presets lstm --sweep batch --sweep hidden --plot sweep.png

Each row: training images/s (median, min-max), the ratio to the tutorial loop, warm-up and compile
seconds, evaluation images/s (10,000 test images in batches of 2000), memory (resident memory the
runner's setup added on a CPU; peak allocated on a GPU), and the share of a bound that the model's training
FLOPs reach (3x the forward matmuls): the better of torch's and JAX's float32 matmul throughput measured on
the spot (1024x1024, best of 7 timings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence


from common.cli import OneLineParser, fail
from common.data import BatchSampler, load_dataset
from common.errors import SeqMnistError
from common.presets import PRESETS, get_preset
from common.run import peak_rss_mb, progress
from common.weights import initial_weights, layer_input_size


def tutorial_loop(config, dataset, steps: int) -> Callable[[], float]:
    """The tutorials' own loop: DataLoader(TensorDataset, shuffle=True), explicit zero h0/c0, nn.LSTM + Linear, Adam.

    Returns a function that trains `steps` more steps and returns the seconds they took.
    """
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415
    from torch.utils.data import DataLoader, TensorDataset  # noqa: PLC0415

    class TutorialRNN(nn.Module):
        def __init__(self):
            super().__init__()
            kind = {"lstm": nn.LSTM, "rnn": nn.RNN, "gru": nn.GRU}[config.cell]
            self.rnn = kind(28, config.hidden_size, config.num_layers, batch_first=True,
                            bidirectional=config.bidirectional)
            self.out = nn.Linear(config.num_directions * config.hidden_size, 10)

        def forward(self, x):
            zeros = torch.zeros(config.num_layers * config.num_directions, x.size(0), config.hidden_size)
            output, _ = self.rnn(x, (zeros, zeros) if config.cell == "lstm" else zeros)
            return self.out(output[:, -1, :])

    torch.manual_seed(config.seed)
    images = torch.from_numpy(dataset.train_images).float().div(255)
    loader = DataLoader(TensorDataset(images, torch.from_numpy(dataset.train_labels)),
                        batch_size=config.batch_size, shuffle=True)
    model = TutorialRNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_function = nn.CrossEntropyLoss()
    batches = iter(loader)

    def run() -> float:
        nonlocal batches
        began = time.perf_counter()
        for _ in range(steps):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches)
            loss = loss_function(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - began

    return run


def trainer_loop(trainer, config, dataset, steps: int) -> Callable[[], float]:
    """A project trainer fed the shared sampler's full batches, `steps` at a time; returns seconds (compile excluded)."""
    sampler = BatchSampler(len(dataset.train_images), config.batch_size, config.seed)
    full = [batch for batch in sampler.epoch_batches(0) if len(batch) == config.batch_size]
    position = 0

    def run() -> float:
        nonlocal position
        if position + steps > len(full):
            position = 0
        batches = full[position : position + steps]
        position += steps
        compiling, began = trainer.compile_seconds, time.perf_counter()
        trainer.train_steps(batches)
        return time.perf_counter() - began - (trainer.compile_seconds - compiling)

    return run


def eval_images_per_s(trainer, count: int = 10000) -> float:
    trainer.test_logits(count)  # warm-up / compile
    began = time.perf_counter()
    trainer.test_logits(count)
    return count / (time.perf_counter() - began)


def rss_mb() -> float:
    """Resident memory of this process now (MiB)."""
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def train_flops_per_image(config) -> float:
    """Matmul FLOPs of one training image: 3x the forward pass (forward, and backward's two products)."""
    forward = 0.0
    for layer in range(config.num_layers):
        inputs = layer_input_size(config, layer)
        forward += config.num_directions * 28 * 2 * config.gates * config.hidden_size * (inputs + config.hidden_size)
    forward += 2 * config.num_directions * config.hidden_size * config.num_classes
    return 3 * forward


def matmul_gflops(framework: str, device: str, size: int = 1024, reps: int = 10, trials: int = 7) -> float:
    """float32 matmul throughput measured on the spot: the bound against which training is compared.

    The best of `trials` timings of `reps` chained matmuls: a peak, so that a short first timing (clocks
    still rising, caches cold) does not make a bound that training then exceeds.
    """
    if framework == "jax":
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        from jax_impl.train import resolve_device  # noqa: PLC0415

        a = jax.device_put(jnp.ones((size, size), jnp.float32), resolve_device(device))
        multiply = jax.jit(lambda x: x @ x * 1e-3)
        multiply(a).block_until_ready()

        def timed() -> float:
            began, b = time.perf_counter(), a
            for _ in range(reps):
                b = multiply(b)
            b.block_until_ready()
            return time.perf_counter() - began
    else:
        import torch  # noqa: PLC0415

        from torch_impl.train import resolve_device  # noqa: PLC0415

        target = resolve_device(device)
        a = torch.ones((size, size), device=target)
        a @ a
        synchronize = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)

        def timed() -> float:
            synchronize()
            began, b = time.perf_counter(), a
            for _ in range(reps):
                b = (b @ b) * 1e-3
            synchronize()
            return time.perf_counter() - began
    return reps * 2 * size**3 / min(timed() for _ in range(trials)) / 1e9


@dataclasses.dataclass
class Runner:
    name: str
    framework: str  # "torch" or "jax" (both now share one matmul bound: the better framework's)
    run: Callable[[], float]
    trainer: object = None
    memory_mb: float = 0.0  # resident memory its setup and warm-up added
    warmup_s: float = 0.0


def make_runners(config, dataset, steps: int, device: str, levers: Sequence[str], tutorial: bool) -> list[Runner]:
    """The tutorial loop (CPU), both trainers, and any levers; each set up and warmed up, memory noted."""
    from jax_impl.train import JaxTrainer  # noqa: PLC0415
    from torch_impl.train import TorchTrainer  # noqa: PLC0415

    from parity.levers import jax_trainer_for_lever, torch_lever  # noqa: PLC0415

    names = (["tutorial loop"] if tutorial else []) + ["torch trainer", "jax trainer", *levers]
    runners = []
    for name in names:
        before, began = rss_mb(), time.perf_counter()
        if name == "tutorial loop":
            runner = Runner(name, "torch", tutorial_loop(config, dataset, steps))
        elif name == "torch trainer" or name.startswith("torch:"):
            trainer = TorchTrainer(config, initial_weights(config), dataset, device)
            wrap = torch_lever(name, trainer) if name != "torch trainer" else (lambda run: run())
            timed = trainer_loop(trainer, config, dataset, steps)
            runner = Runner(name, "torch", lambda wrap=wrap, timed=timed: wrap(timed), trainer)
        else:
            trainer = (JaxTrainer(config, initial_weights(config), dataset, device) if name == "jax trainer"
                       else jax_trainer_for_lever(name, config, dataset, device))
            runner = Runner(name, "jax", trainer_loop(trainer, config, dataset, steps), trainer)
        runner.run()  # warm-up chunk (and compilation) before any timing
        runner.warmup_s, runner.memory_mb = time.perf_counter() - began, rss_mb() - before
        runners.append(runner)
    return runners


def bench_preset(preset: str, dataset, steps: int, reps: int, device: str, levers: Sequence[str] = (),
                 bounds: dict[str, float] | None = None, config=None, tutorial: bool = True) -> list[dict]:
    """Time every runner round-robin on `preset` (or `config`); one row per runner and one for the process."""
    config = config or get_preset(preset)
    bounds = bounds or {}
    began = time.perf_counter()
    runners = make_runners(config, dataset, steps, device, levers, tutorial and device == "cpu")
    times = {runner.name: [] for runner in runners}
    for _ in progress(range(reps), f"bench {preset}"):
        for runner in runners:
            times[runner.name].append(runner.run())
    images = steps * config.batch_size
    flops = train_flops_per_image(config)
    baseline = statistics.median(images / t for t in times["tutorial loop"]) if "tutorial loop" in times else None
    results = []
    for runner in runners:
        rates = [images / t for t in times[runner.name]]
        median = statistics.median(rates)
        trainer = runner.trainer
        bound = bounds.get(runner.framework)
        results.append({
            "preset": preset, "device": device, "runner": runner.name, "batch_size": config.batch_size,
            "hidden_size": config.hidden_size, "images_per_s": median, "min": min(rates), "max": max(rates),
            "warmup_s": runner.warmup_s, "compile_s": getattr(trainer, "compile_seconds", 0.0),
            "eval_images_per_s": eval_images_per_s(trainer) if trainer is not None else None,
            "vs_tutorial": median / baseline if baseline else None,
            "memory_mb": runner.memory_mb,
            "peak_device_mb": trainer.peak_device_mb() if trainer is not None else None,
            "train_gflops": median * flops / 1e9, "matmul_bound_gflops": bound,
            "bound_share": median * flops / 1e9 / bound if bound else None,
        })
    results.append({"preset": preset, "device": device, "runner": "(process)", "peak_rss_mb": peak_rss_mb(),
                    "seconds": time.perf_counter() - began})
    return results


def print_table(results: list[dict]) -> None:
    sweeping = any("sweep" in r for r in results)
    header = ("preset", *(("sweep", "size") if sweeping else ()), "runner", "train img/s (median)", "min-max", "x tutorial", "warm-up s", "compile s",
              "eval img/s", "memory MiB", "GFLOP/s", "% of matmul bound")
    lines = []
    for r in results:
        if r["runner"] == "(process)":
            continue
        memory = f"{r['memory_mb']:+.0f} RSS" if r["peak_device_mb"] is None else f"{r['peak_device_mb']:.0f} device peak"
        swept = (r.get("sweep", "-"), str(r.get("size", "-"))) if sweeping else ()
        lines.append((r["preset"], *swept, r["runner"], f"{r['images_per_s']:.0f}", f"{r['min']:.0f}-{r['max']:.0f}",
                      "-" if r["vs_tutorial"] is None else f"{r['vs_tutorial']:.2f}x", f"{r['warmup_s']:.1f}",
                      f"{r['compile_s']:.1f}", "-" if r["eval_images_per_s"] is None else f"{r['eval_images_per_s']:.0f}",
                      memory, f"{r['train_gflops']:.1f}",
                      "-" if r["bound_share"] is None else f"{100 * r['bound_share']:.1f}%"))
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    for line in [header, *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    for r in results:
        if r["runner"] == "(process)":
            print(f"{r['preset']}: process peak RSS {r['peak_rss_mb']:.0f} MiB, {r['seconds']:.0f} s")


SWEEPS = {"batch": (32, 64, 128, 256, 512, 1024), "hidden": (64, 128, 256, 512)}


def sweep(kind: str, preset: str, dataset, device: str, reps: int, images: int, bounds,
          sizes: Sequence[int] | None = None) -> list[dict]:
    """Both trainers (no tutorial loop) at each size: `images` training images per timed repetition."""
    base = get_preset(preset)
    rows = []
    for size in progress(sizes or SWEEPS[kind], f"sweep {kind}"):
        config = dataclasses.replace(base, **({"batch_size": size} if kind == "batch" else {"hidden_size": size}))
        steps = max(2, images // config.batch_size)
        for row in bench_preset(preset, dataset, steps, reps, device, bounds=bounds, config=config, tutorial=False):
            if row["runner"] != "(process)":
                rows.append({**row, "sweep": kind, "size": size})
    return rows


def plot_sweep(rows: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    kinds = list(dict.fromkeys(r["sweep"] for r in rows))
    figure, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.2), squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        for runner, style in (("torch trainer", "o-"), ("jax trainer", "s--")):
            mine = [r for r in rows if r["sweep"] == kind and r["runner"] == runner]
            axis.plot([r["size"] for r in mine], [r["images_per_s"] for r in mine], style, label=runner.split()[0])
        first = next(r for r in rows if r["sweep"] == kind)
        axis.set_xscale("log", base=2)
        if kind == "hidden":  # cost grows ~ hidden^2: a log axis shows the slope
            axis.set_yscale("log")
        else:
            axis.set_ylim(bottom=0)
        axis.set_xlabel("batch size" if kind == "batch" else "hidden size")
        axis.set_ylabel("training images / s (median)")
        fixed = f"hidden {first['hidden_size']}" if kind == "batch" else f"batch {first['batch_size']}"
        axis.set_title(f"{first['preset']}: images/s against {kind} size ({fixed}), {first['device']}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m parity.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="lstm,bilstm")
    parser.add_argument("--steps", type=int, default=200, help="training steps per timed repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--levers", nargs="?", const="all", metavar="NAMES",
                        help="also time the speed levers (all, or comma-separated names; see parity/levers.py)")
    parser.add_argument("--sweep", choices=tuple(SWEEPS), action="append",
                        help="images/s of both trainers against batch (32..1024) or hidden (64..512) size; repeatable")
    parser.add_argument("--sweep-images", type=int, default=12800, help="training images per timed sweep repetition")
    parser.add_argument("--sweep-sizes", metavar="N,N,...", help="sizes to sweep (default: batch 32..1024, hidden 64..512)")
    parser.add_argument("--plot", metavar="FILE", default="bench-sweep.png", help="PNG for --sweep")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    presets = args.presets.split(",")
    if any(p not in PRESETS for p in presets):
        parser.error(f"--presets: expected some of {', '.join(PRESETS)}, got {args.presets!r}")
    if args.steps <= 0 or args.reps <= 0 or args.sweep_images <= 0:
        parser.error("--steps, --reps and --sweep-images must be positive")
    sizes = None
    if args.sweep_sizes:
        try:
            sizes = [int(size) for size in args.sweep_sizes.split(",")]
        except ValueError:
            sizes = [0]
        if min(sizes) <= 0:
            parser.error(f"--sweep-sizes: expected positive integers separated by commas, got {args.sweep_sizes!r}")
    levers = []
    if args.levers:
        from parity.levers import LEVERS  # noqa: PLC0415

        levers = list(LEVERS) if args.levers == "all" else args.levers.split(",")
        if any(name not in LEVERS for name in levers):
            parser.error(f"--levers: expected 'all' or some of {', '.join(map(repr, LEVERS))}, got {args.levers!r}")
        if args.device == "gpu":
            levers = [name for name in levers if name != "jax: 2 CPU devices"]
        if "jax: 2 CPU devices" in levers:
            import jax  # noqa: PLC0415

            jax.config.update("jax_num_cpu_devices", 2)  # before JAX starts its CPU client
    try:
        dataset = load_dataset("mnist")
        measured = {framework: matmul_gflops(framework, args.device) for framework in ("torch", "jax")}
        # one bound for both: what this device demonstrably does. Each framework's own matmul is no bound for
        # its RNN kernels (oneDNN's LSTM outruns torch.matmul on some CPUs).
        bounds = dict.fromkeys(measured, max(measured.values()))
        print(f"float32 matmul throughput (1024x1024, best of 7, measured now): torch {measured['torch']:.0f} "
              f"GFLOP/s, jax {measured['jax']:.0f} GFLOP/s; bound = the better, {bounds['torch']:.0f} GFLOP/s")
        results = [row for preset in presets
                   for row in bench_preset(preset, dataset, args.steps, args.reps, args.device, levers, bounds)]
        print_table(results)
        if levers:
            from parity.levers import LEVERS  # noqa: PLC0415

            for name in levers:
                print(f"  {name}: {LEVERS[name]}")
        sweep_rows = []
        for kind in args.sweep or []:
            sweep_rows += sweep(kind, presets[0], dataset, args.device, args.reps, args.sweep_images, bounds, sizes)
        if sweep_rows:
            print_table(sweep_rows)
            plot_sweep(sweep_rows, Path(args.plot))
            print(f"wrote {args.plot}")
    except SeqMnistError as error:
        fail("python -m parity.bench", str(error))
    if args.json:
        Path(args.json).write_text(json.dumps(results + sweep_rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
