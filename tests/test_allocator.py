"""glibc malloc set up by the torch commands: a block the size of torch's RNN workspaces stays in the heap.

Each case runs in a fresh process (malloc's state is per process and cannot be undone), allocates a
20 MiB block and reads glibc's own counters (`mallinfo2`): `hblkhd` is the memory in mmap'd blocks,
`arena` the heap. In a fresh process glibc's threshold is 128 KiB, so the block is mmap'd (and unmapped
when freed, to be faulted in again next time: the slow mode); tuned, it comes from the heap.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)

PROBE = """
import ctypes, json, sys
from torch_impl.allocator import tune_glibc_malloc
said = tune_glibc_malloc() if sys.argv[1] == "tune" else "not called"
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2()
block = libc.malloc(20 << 20)
during = libc.mallinfo2()
libc.free(ctypes.c_void_p(block))
after = libc.mallinfo2()
print(json.dumps({"said": said, "mmapped": during.hblkhd - before.hblkhd, "kept": after.keepcost}))
"""


def probe(mode: str, **env: str) -> dict:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "SEQMNIST_"))}
    environment.pop("LD_PRELOAD", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=ROOT,
        env={**environment, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def test_a_fresh_process_serves_a_20_mib_block_with_mmap():
    assert probe("none")["mmapped"] >= 20 << 20


def test_tuned_the_block_comes_from_the_heap_and_its_memory_is_kept_when_freed():
    tuned = probe("tune")
    assert tuned["said"].startswith("glibc, mmap threshold 32 MiB")
    assert tuned["mmapped"] == 0
    assert tuned["kept"] >= 20 << 20  # under the 64 MiB trim threshold: not handed back to the kernel


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"SEQMNIST_MALLOC": "default"}, "SEQMNIST_MALLOC=default"),
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "MALLOC_TRIM_THRESHOLD_"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}, "GLIBC_TUNABLES"),
    ],
)
def test_a_users_own_choice_is_left_alone(env, reason):
    left = probe("tune", **env)
    assert left["said"].startswith("default") and reason in left["said"]
    assert left["mmapped"] >= 20 << 20
