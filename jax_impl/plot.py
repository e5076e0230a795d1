"""`python -m jax_impl.plot RUN_DIR [RUN_DIR ...]`: runs' loss and accuracy, and digits the first gets wrong."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common.outputs import entry_point
from common.runplot import plot_main
from jax_impl.cache import enable_compilation_cache
from jax_impl.evaluate import predict_logits


def main(argv: Sequence[str] | None = None) -> int:
    enable_compilation_cache()  # before the first compile: JAX's programs kept on disk (jax_impl/cache.py)
    return plot_main(argv, framework="jax", predict_logits=predict_logits)


if __name__ == "__main__":
    sys.exit(entry_point(main))
