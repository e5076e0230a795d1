"""The work a training image costs (matmul FLOPs) and the bound it is compared with (measured matmul throughput)."""

from __future__ import annotations

import time

from common.config import Config
from common.weights import layer_input_size


def train_flops_per_image(config: Config) -> float:
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
        import jax
        import jax.numpy as jnp

        from jax_impl.device import resolve_device

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
        import torch

        from torch_impl.device import resolve_device

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
