"""Which implementation of the kernel answers a query: compiled once loaded, NumPy until then.

The propagation and totals run as Numba-compiled loops (``inventory.impact.kernel``).
Compiling them takes seconds, loading them from Numba's on-disk cache a few
hundred milliseconds (importing Numba is most of it), and neither may hold up a
request.  So:

* queries call ``routines()``, which is the compiled module once it is loaded and
  the NumPy formulation (``inventory.impact.kernel_numpy``: same arguments, same
  arrays) until then — nothing on a query's path imports Numba;
* ``start_loading()`` (called by the web app at its first request, in each worker)
  loads the compiled kernel in a background thread: when its cache is missing it
  is compiled first in a child process (``python -m inventory.impact.kernel``), so
  the compile holds neither this process's GIL nor its import lock, then imported
  here from the cache;
* ``load_now()`` loads it and waits (the warm-up of ``planb db upgrade``, ``planb
  demo`` and the image build, benchmarks).

``PLANB_IMPACT_KERNEL``: ``auto`` (the above), ``numpy`` (never load Numba: about
50 MB less per process, 2-4x slower propagation at 100k assets) or ``compiled``
(the first query loads it and waits, as before).  One-shot commands (``planb
impact``) answer with NumPy and never import Numba.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from inventory import config
from inventory.impact import kernel_numpy

log = logging.getLogger("planb.impact")

_lock = threading.Lock()
_compiled: ModuleType | None = None
_state = "numpy"          # numpy -> loading -> compiled | failed
_loaded_at: float | None = None
COMPILE_TIMEOUT_SECONDS = 900


def mode() -> str:
    return str(config.get("IMPACT_KERNEL"))


def routines() -> Any:
    """The module whose ``propagate_arrays``, ``summarise_hits`` and ``reach_pairs`` answer
    now: the compiled kernel once loaded, else the NumPy formulation."""
    compiled = _compiled
    if compiled is not None:
        return compiled
    if mode() == "compiled":
        return load_now()
    return kernel_numpy


def state() -> dict[str, Any]:
    """For health pages and benchmarks: which implementation answers, and since when."""
    return {"kernel": "compiled" if _compiled is not None else "numpy", "loading": _state == "loading",
            "failed": _state == "failed", "mode": mode(), "loaded_at": _loaded_at}


def load_now() -> ModuleType:
    """Compile or load the kernel in this thread and use it from now on."""
    global _compiled, _state, _loaded_at
    from inventory.impact import kernel

    kernel.warm_up()
    with _lock:
        _compiled, _state, _loaded_at = kernel, "compiled", time.time()
    return kernel


def load_if_cached() -> bool:
    """Load the compiled kernel now if Numba's cache holds it (a fraction of a second, no
    compile); True when loaded.  For a server starting up: under gunicorn with a preloaded
    app this runs in the master, so every worker it forks shares the loaded kernel."""
    if _compiled is not None:
        return True
    if mode() == "numpy" or not cache_looks_ready():
        return False
    try:
        load_now()
    except Exception:  # noqa: BLE001 - the background load at the first request tries again
        log.warning("loading the compiled impact kernel at start-up failed", exc_info=True)
        return False
    return True


def start_loading() -> bool:
    """Load the compiled kernel in a background thread (once per process); True when a
    load was started now.  Does nothing with ``PLANB_IMPACT_KERNEL=numpy``."""
    global _state
    if _state != "numpy" or _compiled is not None or mode() == "numpy":
        return False
    with _lock:
        if _state != "numpy":
            return False
        _state = "loading"
    threading.Thread(target=_load_in_background, name="planb-kernel-load", daemon=True).start()
    return True


def _load_in_background() -> None:
    global _state
    try:
        # Compiled in a child when missing: the compile runs for seconds in Python (type
        # inference), which here would compete with requests for the GIL.
        compile_ahead()
        load_now()
        log.info("impact kernel: compiled kernel loaded")
    except Exception:  # noqa: BLE001 - queries go on with NumPy
        with _lock:
            _state = "failed"
        log.warning("loading the compiled impact kernel failed; answering with NumPy", exc_info=True)


def compile_ahead() -> bool:
    """Compile the kernel into Numba's cache now, in a child process (this one stays free of
    Numba: ``planb demo`` forks its server after this), unless it is there already; True when
    the cache holds it.  For ``planb db upgrade``, ``planb demo`` and the image build."""
    if cache_looks_ready():
        return True
    done = subprocess.run([sys.executable, "-m", "inventory.impact.kernel"], capture_output=True, text=True,
                          timeout=COMPILE_TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        log.warning("compiling the impact kernel failed (%s): %s", done.returncode, done.stderr[-2000:])
    return done.returncode == 0


def cache_looks_ready() -> bool:
    """Whether Numba's cache seems to hold the kernel compiled from the current source
    (an index file newer than ``kernel.py``, next to it or under ``NUMBA_CACHE_DIR``)."""
    source = Path(__file__).with_name("kernel.py")
    try:
        stamp = source.stat().st_mtime
    except OSError:
        return False
    # Numba looks in NUMBA_CACHE_DIR alone when it is set, else next to the source.
    configured = os.environ.get("NUMBA_CACHE_DIR")
    places = [Path(configured)] if configured else [source.parent / "__pycache__"]
    for place in places:
        try:
            for index in place.rglob("kernel.propagate_arrays-*.nbi"):
                if index.stat().st_mtime >= stamp:
                    return True
        except OSError:
            continue
    return False


def _forget_loading_in_child() -> None:
    # A fork copies no threads: a load under way in the parent does not exist in the child.
    global _state
    if _state == "loading" and _compiled is None:
        _state = "numpy"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_loading_in_child)
