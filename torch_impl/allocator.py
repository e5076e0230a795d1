"""glibc malloc set up for torch's CPU recurrent layers: the fast mode made deliberate, not left to chance.

Why. Each training step of a torch CPU LSTM asks oneDNN for a workspace per layer and direction (kept
for the backward pass) and a scratchpad: on `bilstm` (batch 64) two 7,159,808-byte workspaces and a
1,987,128-byte scratchpad, freed when the step ends. glibc serves a block that large with mmap until the
first one is freed; then its dynamic threshold rises to that block's size (7.2 MB) and the trim threshold
to twice that (14.3 MB). From then on the three blocks come from the top of the heap, 16.3 MB of it is
free when the step ends, more than the trim threshold, so glibc hands it back to the kernel (brk down
15.9 MiB) and the next step faults all of it in again, page by page: the slow mode, every step. Whether a
process gets there depends on what it freed before (a 31 MB dataset array freed earlier lifts the
thresholds out of reach: the fast mode, by accident).

What. `tune_glibc_malloc` fixes the two thresholds at the values glibc's own dynamic rule ends at: blocks
up to 32 MiB (its ceiling, DEFAULT_MMAP_THRESHOLD_MAX on 64-bit) come from the heap, and up to 64 MiB
(twice that, its rule) of free heap top is kept rather than trimmed. Fixing them also stops the dynamic
rule. Memory: a process may keep up to 64 MiB of freed heap it would otherwise have returned. Not glibc
(macOS, musl, Windows), or the user already chose (MALLOC_*_ env variables, a preloaded allocator such as
jemalloc or tcmalloc), or SEQMNIST_MALLOC=default: nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MMAP_THRESHOLD = 32 << 20  # bytes: blocks up to this size come from the heap, not from mmap
TRIM_THRESHOLD = 64 << 20  # bytes: free heap top kept rather than handed back with brk
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (glibc malloc.h)
USER_CHOICE = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
OPT_OUT = "SEQMNIST_MALLOC"  # =default: leave malloc as it is


def tune_glibc_malloc() -> str:
    """Fix glibc's mmap and trim thresholds (see the module docstring); returns what was done, in words.

    Safe to call more than once and anywhere: where it does not apply, it changes nothing and says why.
    """
    if os.environ.get(OPT_OUT) == "default":
        return f"default ({OPT_OUT}=default)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "default (not glibc)"
    chosen = [name for name in USER_CHOICE if name in os.environ]
    if chosen:
        return f"default (the user's {chosen[0]})"
    preload = os.environ.get("LD_PRELOAD", "")
    if preload:
        return f"default (LD_PRELOAD={preload})"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "default (mallopt refused)"
    return f"glibc, mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
