"""How the processes that time a model allocate memory: the allocator settings a run chooses and records.

A canonical forward allocates tens of large activations (MixSTE-243's temporal attention matrices are
about 32 MB each). glibc's malloc serves every block above its mmap threshold (at most 32 MiB on
64-bit Linux) with a fresh ``mmap`` and returns it with ``munmap`` when freed, so each such
allocation is faulted in page by page on every forward: 0 to 117,000 minor page faults per
MixSTE-243 forward, and the forwards that fault take up to 13 % longer. Which forwards fault depends
on the history of the heap, so the spread of the samples does too.

Settings (``--allocator``, recorded as ``allocator`` in every timed record and in ``meta.json``):

- ``system``: the C library's malloc as the process found it (glibc's defaults on Linux).
- ``tuned`` (the default): glibc with mmap turned off for the heap (``M_MMAP_MAX`` 0) and trimming
  of its top raised to 2 GiB (``M_TRIM_THRESHOLD``), set with ``mallopt`` at the start of every
  process that measures. Freed activations stay in the heap and the next forward reuses the same
  pages: after the warm-up, no forward pays page faults. What it costs: the process keeps its peak
  heap until it exits (each case runs in a fresh process, and peak memory is measured in a fresh
  process of its own, so no figure changes). Off glibc it does nothing and says so.
- ``tcmalloc``, ``jemalloc``: Debian's ``libtcmalloc-minimal4`` / ``libjemalloc2`` preloaded
  (``LD_PRELOAD``) into the worker processes. They must be loaded before the interpreter starts,
  so they apply to the ``local`` and ``slurm`` executors only.

``tests/benchmarks/allocator.py`` measures the speed and the spread of each on the same model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from pathlib import Path
from typing import Any

from ..core.errors import UsageError

ALLOCATORS = ("tuned", "system", "tcmalloc", "jemalloc")
DEFAULT = "tuned"

# mallopt parameters (malloc.h); stable glibc ABI
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # about 2 GiB, the most mallopt takes: the heap is not trimmed while a case runs

# The shared objects that --allocator tcmalloc / jemalloc preload, in the order they are looked for.
LIBRARIES = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2",),
}
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu")
PACKAGES = {"tcmalloc": "libtcmalloc-minimal4", "jemalloc": "libjemalloc2"}

_applied: str | None = None  # what apply() set in this process


def check(name: str, *, fresh_processes: bool = True) -> None:
    """UsageError unless ``name`` is an allocator this machine can give the run's processes."""
    if name not in ALLOCATORS:
        raise UsageError(f"unknown allocator {name!r}; choose from {', '.join(ALLOCATORS)}")
    if name in LIBRARIES:
        if not fresh_processes:
            raise UsageError(f"--allocator {name} is preloaded into fresh worker processes; "
                             "use --executor local (or slurm), or --allocator tuned|system here")  # fmt: skip
        library(name)


def library(name: str) -> str:
    """The path of the shared object preloaded for ``name`` (tcmalloc, jemalloc); UsageError if missing."""
    for directory in LIBRARY_DIRS:
        for so in LIBRARIES[name]:
            path = Path(directory) / so
            if path.is_file():
                return str(path)
    found = ctypes.util.find_library(name.replace("tcmalloc", "tcmalloc_minimal"))
    if found and Path(found).is_absolute():
        return found
    raise UsageError(f"--allocator {name}: {LIBRARIES[name][0]} not found; install Debian's {PACKAGES[name]} "
                     "(apt-get install " + PACKAGES[name] + ")")  # fmt: skip


def environment(name: str) -> dict[str, str]:
    """What to add to a worker process's environment before it starts, for ``name``."""
    if name in LIBRARIES:
        return {"LD_PRELOAD": library(name)}
    return {}


def _libc() -> Any | None:
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def apply(name: str) -> str:
    """Set ``name`` up in this process where that can be done at run time; what it now runs (see :func:`current`).

    ``tuned`` calls glibc's ``mallopt``; the others need nothing here (``system``) or were preloaded
    when the process started (``tcmalloc``, ``jemalloc``: :func:`environment`).
    """
    global _applied
    if name == "tuned":
        libc = _libc()
        if libc is not None and preloaded() is None:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD))
            _applied = "tuned"
    elif name == "system":
        _applied = None
    return current()


def preloaded() -> str | None:
    """tcmalloc or jemalloc when this process runs one of them (its shared object is mapped), else None."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for name, sos in LIBRARIES.items():
        if any(so.split(".so")[0] in maps for so in sos):
            return name
    return None


def current() -> str:
    """The allocator this process runs now: tcmalloc, jemalloc, tuned (glibc after :func:`apply`), system."""
    return preloaded() or (_applied or "system")


def describe() -> dict[str, Any]:
    """The fields a timed record carries about the allocator and the CPUs the process may use."""
    name = current()
    libc = _libc()
    settings = ""
    if name == "tuned":
        settings = f"glibc mallopt M_MMAP_MAX=0 M_TRIM_THRESHOLD={TRIM_THRESHOLD}"
    elif name == "system" and libc is not None:
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        settings = f"glibc {libc.gnu_get_libc_version().decode()} defaults"
    elif name in LIBRARIES:
        settings = os.environ.get("LD_PRELOAD", "")
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = []
    return {"allocator": name, "allocator_settings": settings, "cpu_affinity": affinity}
