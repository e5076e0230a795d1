"""The Flax NNX port of the ResNet (NHWC), with what a faithful port has to state that the defaults do not:

- **Padding.** PyTorch's `padding=1` pads one pixel on every side. Flax's `'SAME'` on a strided
  convolution pads (0, 1) on a 28-pixel side (the extra pixel at the end), so the outputs shift by one
  pixel: the padding is written out, `((1, 1), (1, 1))`.
- **Momentum.** PyTorch's `momentum=0.1` weighs the new batch; Flax's momentum weighs the running value:
  0.9 (Flax's default is 0.99). Epsilon is 1e-5 in both.
- **The running variance.** PyTorch updates `running_var` with the unbiased batch variance (n / (n - 1)),
  stock `nnx.BatchNorm` with the biased one: the two agree in eval mode and after no training step, and
  part by `momentum x var / (n - 1)` after each one. `TorchBatchNorm` is the smallest change that makes
  them agree: after Flax's own update, it rescales the batch variance's share by n / (n - 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

PADDING = ((1, 1), (1, 1))


class TorchBatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm whose running variance is updated with the unbiased batch variance, as PyTorch's is."""

    def __call__(self, x: jax.Array, use_running_average: bool | None = None, **options) -> jax.Array:
        previous = self.var[...]
        y = super().__call__(x, use_running_average=use_running_average, **options)
        running = self.use_running_average if use_running_average is None else use_running_average
        if not running:
            count = x.size // x.shape[-1]  # values per channel in the batch
            # Flax just stored m * previous + (1 - m) * biased; PyTorch stores m * previous + (1 - m) * unbiased
            self.var[...] = self.var[...] + (self.var[...] - self.momentum * previous) / (count - 1)
        return y


def batch_norm(
    features: int, rngs: nnx.Rngs, param_dtype, momentum: float, stock: bool, fast_variance: bool = True
) -> nnx.BatchNorm:
    kind = nnx.BatchNorm if stock else TorchBatchNorm
    return kind(
        features,
        momentum=momentum,
        epsilon=1e-5,
        use_fast_variance=fast_variance,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class BasicBlock(nnx.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int, rngs: nnx.Rngs, **options):
        conv = {"use_bias": False, "param_dtype": options["param_dtype"], "rngs": rngs}
        norm = {key: options[key] for key in ("param_dtype", "momentum", "stock", "fast_variance")}
        self.conv1 = nnx.Conv(
            channels_in, channels_out, (3, 3), strides=stride, padding=options["strided_padding"], **conv
        )
        self.bn1 = batch_norm(channels_out, rngs, **norm)
        self.conv2 = nnx.Conv(channels_out, channels_out, (3, 3), padding=PADDING, **conv)
        self.bn2 = batch_norm(channels_out, rngs, **norm)
        self.shortcut = nnx.data(None)
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nnx.Sequential(
                nnx.Conv(channels_in, channels_out, (1, 1), strides=stride, padding="VALID", **conv),
                batch_norm(channels_out, rngs, **norm),
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return jax.nn.relu(self.bn2(self.conv2(out)) + skip)


class ResNet(nnx.Module):
    def __init__(
        self,
        rngs: nnx.Rngs,
        channels: tuple[int, int] = (8, 16),
        param_dtype=jnp.float32,
        momentum: float = 0.9,  # PyTorch's momentum=0.1
        stock_batchnorm: bool = False,  # nnx.BatchNorm itself: the biased running variance
        strided_padding=PADDING,  # 'SAME' is the classic trap (see the module docstring)
        fast_variance: bool = True,  # Flax's default (E[x^2] - E[x]^2): within rounding of PyTorch's here
    ):
        options = {
            "param_dtype": param_dtype,
            "momentum": momentum,
            "stock": stock_batchnorm,
            "strided_padding": strided_padding,
            "fast_variance": fast_variance,
        }
        self.conv = nnx.Conv(
            1, channels[0], (3, 3), padding=PADDING, use_bias=False, param_dtype=param_dtype, rngs=rngs
        )
        self.bn = batch_norm(channels[0], rngs, param_dtype, momentum, stock_batchnorm, fast_variance)
        self.block1 = BasicBlock(channels[0], channels[0], 1, rngs, **options)
        self.block2 = BasicBlock(channels[0], channels[1], 2, rngs, **options)
        self.head = nnx.Linear(channels[1], 10, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.bn(self.conv(images)))
        x = self.block2(self.block1(x))
        return self.head(x.mean(axis=(1, 2)))
