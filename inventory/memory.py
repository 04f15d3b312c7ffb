"""Memory management shared by the code paths that build or read very many small objects
at once (a blast radius, an incident snapshot, a collector batch)."""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a block builds many objects that it keeps
    (every hit of a large blast radius: ~5 containers each, none in a cycle; the rows
    of a 100k-asset collector batch).  The collector would otherwise walk the growing
    heap again and again: for 71k hits it doubled the time.  Re-enabled only by whoever
    paused it, so nesting and other threads doing the same are safe; reference counting
    frees memory as usual, and any cycles made meanwhile are collected afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
