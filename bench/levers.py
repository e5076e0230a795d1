"""The speed levers `python -m bench --levers` times beside the trainers' defaults.

Each lever is a trainer built with one option changed (`torch_impl.train.TrainOptions`,
`jax_impl.train.TrainOptions`), timed round-robin with the others, so that machine noise hits all alike:
in the benchmark's process, or, for settings JAX reads once per process (`process`), in a fresh one.
The trainers keep the levers that paid (fused Adam); docs/performance.md gives every lever's measured
figure, the ones that did not pay included. A lever may change the summation order of a computation,
never its math (a test holds every recurrence schedule to the default's hidden states).
The names are display text only: the options are what the benchmark uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal


@dataclasses.dataclass(frozen=True)
class Lever:
    framework: Literal["torch", "jax"]
    description: str  # printed under the table
    options: dict[str, Any]  # keyword arguments of that framework's TrainOptions
    devices: tuple[str, ...] = ("cpu", "gpu")  # where it can run; elsewhere `--levers all` leaves it out
    process: dict[str, Any] = dataclasses.field(default_factory=dict)  # JAX settings read once per process:
    # set in a fresh process of the lever's own (bench/process.py) before JAX starts
    xla_flags: tuple[str, ...] = ()  # added to XLA_FLAGS in a fresh process of the lever's own


XNN_TYPES = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"  # the fusion kinds

LEVERS = {
    "torch: Adam for-loop": Lever(
        "torch",
        "torch.optim.Adam(foreach=False): one update per parameter (the tutorials' Adam on CPU)",
        {"adam": "for-loop"},
    ),
    "torch: Adam foreach": Lever("torch", "torch.optim.Adam(foreach=True): multi-tensor update", {"adam": "foreach"}),
    "torch: 1 thread": Lever(
        "torch", "torch.set_num_threads(1) around the timed steps (default: one per core)", {"threads": 1}
    ),
    "torch: torch.compile": Lever("torch", "torch.compile(model) (inductor), fused Adam", {"compile": True}),
    "torch: flush denormals": Lever(
        "torch",
        "torch.set_flush_denormal(True) around the timed steps (subnormal floats read as 0)",
        {"flush_denormal": True},
    ),
    "jax: chunk 25": Lever("jax", "25 train steps per compiled lax.scan call (default 50)", {"chunk_steps": 25}),
    "jax: chunk 200": Lever("jax", "200 train steps per compiled lax.scan call (default 50)", {"chunk_steps": 200}),
    "jax: unroll 2": Lever("jax", "nnx.RNN(unroll=2): two time steps per iteration of the time scan", {"unroll": 2}),
    "jax: hoisted input projection": Lever(
        "jax", "x W_i + b_i for all 28 rows in one matmul, only h W_h + b_h in the time scan", {"recurrence": "hoisted"}
    ),
    "jax: both directions in one scan": Lever(
        "jax",
        "a bidirectional layer's two directions stepped in one lax.scan (two dots per step); other layers as default",
        {"recurrence": "fused-directions"},
    ),
    "jax: autodiff backward": Lever(
        "jax",
        "jax.grad through the time scan (the reverse loop also accumulates the weight gradients every step)",
        {"backward": "autodiff"},
    ),
    "jax: manual backward": Lever(
        "jax",
        "hand-written backward (jax.custom_vjp): the reverse loop carries only dh/dc, weight gradients afterwards",
        {"backward": "manual"},
    ),
    "jax: unroll 28": Lever("jax", "nnx.RNN(unroll=28): the 28-step time loop fully unrolled", {"unroll": 28}),
    "jax: XNN fusion": Lever(
        "jax",
        "XLA:CPU fuses dots, elementwise ops and reductions into XNNPACK calls "
        "(xla_cpu_experimental_xnn_fusion_type, experimental)",
        {"compiler_options": (("xla_cpu_experimental_xnn_fusion_type", XNN_TYPES),)},
        devices=("cpu",),
    ),
    "jax: XNN graph fusion": Lever(
        "jax",
        "XLA:CPU extracts XNNPACK subgraphs greedily (xla_cpu_experimental_xnn_graph_fusion_mode, experimental)",
        {"compiler_options": (("xla_cpu_experimental_xnn_graph_fusion_mode", "XNN_GRAPH_FUSION_MODE_GREEDY"),)},
        devices=("cpu",),
    ),
    "jax: YNN fusion": Lever(
        "jax",
        "XLA:CPU fuses dots, elementwise ops and reductions into YNNPACK calls "
        "(xla_cpu_experimental_ynn_fusion_type, experimental)",
        {"compiler_options": (("xla_cpu_experimental_ynn_fusion_type", XNN_TYPES),)},
        devices=("cpu",),
    ),
    "jax: synchronous dispatch": Lever(
        "jax",
        "jax_cpu_enable_async_dispatch=False: each CPU computation runs on the calling thread (own process)",
        {},
        devices=("cpu",),
        process={"jax_cpu_enable_async_dispatch": False},
    ),
    "jax: small while loops hoisted": Lever(
        "jax",
        "XLA:CPU runs while loops of under 1 MB of buffers as one compiled function "
        "(--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1048576; own process)",
        {},
        devices=("cpu",),
        xla_flags=("--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1048576",),
    ),
    "jax: 2 CPU devices": Lever(
        "jax",
        "jax_num_cpu_devices=2, each batch split over two devices (GSPMD data parallel)",
        {"cpu_devices": 2},
        devices=("cpu",),
    ),
    "jax: cuDNN LSTM": Lever(
        "jax",
        "each LSTM layer through cuDNN's fused LSTM (jax.experimental.rnn.lstm, "
        "precision highest); LSTM presets on a GPU only",
        {"recurrence": "cudnn"},
        devices=("gpu",),
    ),
}
