"""`python -m bench.epoch`: a trainer's own command, run with one speed lever on (bench/levers.py).

    python -m bench.epoch --lever "jax: cuDNN LSTM" --preset lstm --device gpu --out runs/cudnn-lstm

Everything after `--lever NAME` is the lever's trainer's command line (`python -m jax_impl.train` or
`python -m torch_impl.train`, the same flags), so a lever's one-epoch wall time and accuracy come out in
the same run files as the default's (`summary.json`), as a user would see them, rather than the
benchmark's steady-state images/s. The lever changes how the trainer computes, never what.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bench.levers import LEVERS
from common.outputs import entry_point

PROG = "python -m bench.epoch"


def usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        print("levers: " + ", ".join(repr(name) for name in LEVERS))
        return 0
    if len(args) < 2 or args[0] != "--lever":
        return usage_error("expected --lever NAME, then the trainer's flags")
    name, trainer_argv = args[1], args[2:]
    if name not in LEVERS:
        return usage_error(f"--lever: expected one of {', '.join(map(repr, LEVERS))}, got {name!r}")
    lever = LEVERS[name]
    if lever.process or lever.xla_flags:
        return usage_error(f"--lever: {name!r} is set once per process; time it with python -m bench --levers")
    from common.commands import train_main

    if lever.framework == "jax":
        from jax_impl import train as jax_train
        from jax_impl.cache import enable_compilation_cache

        enable_compilation_cache()  # as the JAX trainer's own command does

        jax_options = jax_train.TrainOptions(**lever.options)
        return train_main(
            trainer_argv,
            framework="jax",
            make_trainer=lambda config, weights, dataset, device: jax_train.JaxTrainer(
                config, weights, dataset, device, options=jax_options
            ),
            versions=lambda: {**jax_train.versions(), "lever": name},
        )
    from torch_impl import train as torch_train
    from torch_impl.allocator import tune_glibc_malloc

    malloc = tune_glibc_malloc()
    torch_options = torch_train.TrainOptions(**lever.options)
    return train_main(
        trainer_argv,
        framework="torch",
        make_trainer=lambda config, weights, dataset, device: torch_train.TorchTrainer(
            config, weights, dataset, device, options=torch_options
        ),
        versions=lambda: {**torch_train.versions(), "malloc": malloc, "lever": name},
    )


if __name__ == "__main__":
    sys.exit(entry_point(main))
