"""`python -m parity.bench`: training throughput of the tutorials' loop, the torch trainer and the JAX trainer.

All three run in this one process, round-robin over repetitions (so that machine noise hits them alike),
each timed over the same number of steps after a warm-up chunk (and, for JAX, after compilation).

    python -m parity.bench --presets lstm,bilstm --steps 300 --reps 3
"""

from __future__ import annotations

import json
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
from common.weights import initial_weights


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


def trainer_loop(make_trainer, config, dataset, steps: int, device: str) -> tuple[Callable[[], float], object]:
    """A project trainer fed the shared sampler's batches, `steps` at a time."""
    trainer = make_trainer(config, initial_weights(config), dataset, device)
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

    return run, trainer


def eval_images_per_s(trainer, count: int = 10000) -> float:
    trainer.test_logits(count)  # warm-up / compile
    began = time.perf_counter()
    trainer.test_logits(count)
    return count / (time.perf_counter() - began)


def bench_preset(preset: str, dataset, steps: int, reps: int, device: str) -> list[dict]:
    from jax_impl.train import JaxTrainer  # noqa: PLC0415
    from torch_impl.train import TorchTrainer  # noqa: PLC0415

    config = get_preset(preset)
    runners, trainers, warmup = {}, {}, {}
    began = time.perf_counter()
    runners["tutorial loop"] = tutorial_loop(config, dataset, steps) if device == "cpu" else None
    if runners["tutorial loop"] is None:
        del runners["tutorial loop"]
    for name, make in (("torch trainer", TorchTrainer), ("jax trainer", JaxTrainer)):
        runners[name], trainers[name] = trainer_loop(make, config, dataset, steps, device)
    for name, run in runners.items():  # warm-up chunk (and compilation) before any timing
        start = time.perf_counter()
        run()
        warmup[name] = time.perf_counter() - start
    times = {name: [] for name in runners}
    for _ in progress(range(reps), f"bench {preset}"):
        for name, run in runners.items():
            times[name].append(run())
    images = steps * config.batch_size
    results = []
    baseline = statistics.median(images / t for t in times["tutorial loop"]) if "tutorial loop" in times else None
    for name, seconds in times.items():
        rates = [images / t for t in seconds]
        trainer = trainers.get(name)
        results.append({
            "preset": preset, "device": device, "runner": name, "images_per_s": statistics.median(rates),
            "min": min(rates), "max": max(rates), "warmup_s": warmup[name],
            "compile_s": getattr(trainer, "compile_seconds", 0.0),
            "eval_images_per_s": eval_images_per_s(trainer) if trainer is not None else None,
            "vs_tutorial": statistics.median(rates) / baseline if baseline else None,
        })
    results.append({"preset": preset, "device": device, "runner": "(process)", "peak_rss_mb": peak_rss_mb(),
                    "seconds": time.perf_counter() - began})
    return results


def print_table(results: list[dict]) -> None:
    header = ("preset", "runner", "train img/s (median)", "min-max", "x tutorial", "warm-up s", "compile s", "eval img/s")
    lines = []
    for r in results:
        if r["runner"] == "(process)":
            continue
        lines.append((r["preset"], r["runner"], f"{r['images_per_s']:.0f}", f"{r['min']:.0f}-{r['max']:.0f}",
                      "-" if r["vs_tutorial"] is None else f"{r['vs_tutorial']:.2f}x", f"{r['warmup_s']:.1f}",
                      f"{r['compile_s']:.1f}", "-" if r["eval_images_per_s"] is None else f"{r['eval_images_per_s']:.0f}"))
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    for line in [header, *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m parity.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="lstm,bilstm")
    parser.add_argument("--steps", type=int, default=200, help="training steps per timed repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    presets = args.presets.split(",")
    if any(p not in PRESETS for p in presets):
        parser.error(f"--presets: expected some of {', '.join(PRESETS)}, got {args.presets!r}")
    if args.steps <= 0 or args.reps <= 0:
        parser.error("--steps and --reps must be positive")
    try:
        dataset = load_dataset("mnist")
        results = [row for preset in presets for row in bench_preset(preset, dataset, args.steps, args.reps, args.device)]
    except SeqMnistError as error:
        fail("python -m parity.bench", str(error))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
