"""The propagation loop, compiled with Numba.

A blast radius walks tens of thousands of assets level by level.  Written with
NumPy, each level costs a dozen array calls whatever its size, and a deep,
narrow outage spends most of its time in that per-call overhead; compiled, the
walk is one pass over the edges it reaches (see ``benchmarks/bench_impact.py``).

The rules are the ones in ``inventory.impact.engine`` (its module docstring).
Ties are broken exactly as the level-synchronous formulation breaks them:
within one level, candidate edges are visited in a fixed order — hard edges,
then member edges, each by source in ascending order and by CSR position — and
the *last* candidate edge to a target explains it.  A NumPy formulation of the
same rules, kept in ``tests/impact/vectorised_propagation.py``, must give
identical arrays (status, hops, parent and edge); the tests check it.

What keeps it fast (the walk is bound by memory, not arithmetic):

* the down sweep walks each level in *reverse* of that order, so the first claim
  on a target is final and each hit is written once, however many edges reach
  it; the rest of its edges only read the one-byte status (which stays in cache);
* the targets claimed in a level are marked in a bitmap, which yields the next
  frontier already in ascending order (no sort, no scan of every asset);
* each CSR's edges are packed as (target, edge id) pairs and its row pointers
  are int32 (``graph.CSR``): one stream of memory per edge, half the pointer bytes.

``cache=True`` keeps the machine code in ``__pycache__`` so that only the first
process on a machine pays for compiling (a few seconds).  Nothing imports this
module on a query's path: ``inventory.impact.backend`` loads it in the background
and queries use the NumPy formulation (``kernel_numpy``) until it is ready;
``warm_up`` compiles it ahead of time (``planb db upgrade``, ``planb demo``, the
container image build).  The CSRs arrive packed (``inventory.impact.graph.CSR``):
int32 row pointers and int32 (target, edge id) pairs, one stream of memory per edge.
The container image compiles it while it is built (see ``use_prebuilt_cache``).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from numba import njit
from numba.core import config as numba_config
from numba.cpython.unsafe.numbers import trailing_zeros


def use_prebuilt_cache() -> str | None:
    """Make a read-only ``NUMBA_CACHE_DIR`` usable; returns the folder Numba will use.

    Numba only uses a cache folder it can write to (it checks by creating a file), even
    to read from it.  The container image fills ``NUMBA_CACHE_DIR`` while it is built and
    runs as a user who cannot write there, often on a read-only root filesystem: without
    this, every process would compile the kernel again.  So a read-only folder is copied
    once per machine (or container) into the temporary folder — a few hundred kilobytes —
    and Numba is pointed at the copy.  Must run before the kernel functions are defined.
    """
    source = numba_config.CACHE_DIR
    if not source or not os.path.isdir(source) or os.access(source, os.W_OK):
        return source or None
    target = Path(tempfile.gettempdir()) / f"planb-numba-cache-{os.getuid()}"
    try:
        if not target.is_dir():
            staging = tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent)
            shutil.copytree(source, staging, dirs_exist_ok=True)
            try:
                os.rename(staging, target)
            except OSError:   # another process got there first: use its copy
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        # No writable temporary folder either: Numba says what it cannot do next.
        logging.getLogger("planb.impact").warning("cannot copy the Numba cache %s to %s: %s",
                                                  source, target, exc)
        return source
    numba_config.CACHE_DIR = str(target)
    return str(target)


use_prebuilt_cache()

UP, DEGRADED, DOWN = 0, 1, 2
CLAIMED = 3          # claimed within the level being built (by a hard edge, or in sweep 2)
CLAIMED_MEMBER = 4   # claimed within the level by a member edge: final in sweep 1


@njit(cache=True, nogil=True, inline="always")
def _mark(bits, v):  # type: ignore[no-untyped-def]
    bits[v >> 6] |= np.uint64(1) << np.uint64(v & 63)


@njit(cache=True, nogil=True)
def _close_level(bits, k, status, new_status, dist, level):  # type: ignore[no-untyped-def]
    """The ``k`` assets marked in ``bits``, ascending; each gets ``new_status`` at
    ``level``, and the bitmap is cleared for the next level."""
    frontier = np.empty(k, np.int64)
    j = 0
    for w in range(bits.size):
        x = bits[w]
        if x:
            bits[w] = 0
            while x:
                v = (w << 6) + trailing_zeros(x)
                frontier[j] = v
                j += 1
                status[v] = new_status
                dist[v] = level
                x &= x - np.uint64(1)
    return frontier


@njit(cache=True, nogil=True)
def propagate_arrays(seeds, hard_ptr, hard_e, mem_ptr, mem_e,  # type: ignore[no-untyped-def]
                     soft_ptr, soft_e, every_ptr, every_e, spare, groups):
    """(status, dist, link) for an outage starting at ``seeds`` (unique, ascending);
    ``link[v]`` is (parent, edge id) of v's explaining edge, -1 for seeds and assets
    not hit.

    CSRs are reverse edges (dependency -> dependent), packed as ``graph.CSR`` keeps them;
    ``spare`` is how many members each group can lose and stay up; ``groups=False``
    treats member edges as hard ones."""
    n = spare.size
    status = np.zeros(n, np.int8)
    dist = np.full(n, -1, np.int32)
    link = np.full((n, 2), -1, np.int32)
    down_members = np.zeros(n, np.int32)
    bits = np.zeros((n >> 6) + 1, np.uint64)
    downs = np.empty(n, np.int64)      # the down set, level by level
    nd = 0
    # Degraded candidates found on the way (group edges that did not tip, soft edges):
    # (target, source, edge, level) rows.
    cand = np.empty((mem_e.shape[0] + soft_e.shape[0], 4), np.int32)
    nc = 0
    for s in seeds:
        status[s] = DOWN
        dist[s] = 0
        downs[nd] = s
        nd += 1

    # Sweep 1: the down closure, level by level, each level walked backwards (see the
    # module docstring): member edges override hard ones, and the first claim of each
    # kind stands.
    frontier = seeds.copy()
    level = 0
    while frontier.size:
        level += 1
        k = 0
        if groups:
            # A group tips once more members are down than it can spare; every member
            # that went down at this level counts before any edge is judged.
            for u in frontier:
                for p in range(mem_ptr[u], mem_ptr[u + 1]):
                    down_members[mem_e[p, 0]] += 1
        for j in range(frontier.size - 1, -1, -1):
            u = frontier[j]
            for p in range(hard_ptr[u + 1] - 1, hard_ptr[u] - 1, -1):
                v = hard_e[p, 0]
                if status[v] == UP:
                    status[v] = CLAIMED
                    link[v, 0] = u
                    link[v, 1] = hard_e[p, 1]
                    _mark(bits, v)
                    k += 1
        first = nc
        for j in range(frontier.size - 1, -1, -1):
            u = frontier[j]
            for p in range(mem_ptr[u + 1] - 1, mem_ptr[u] - 1, -1):
                v = mem_e[p, 0]
                if status[v] == DOWN:
                    continue
                if not groups or down_members[v] > spare[v]:
                    if status[v] != CLAIMED_MEMBER:
                        if status[v] == UP:
                            _mark(bits, v)
                            k += 1
                        status[v] = CLAIMED_MEMBER
                        link[v, 0] = u
                        link[v, 1] = mem_e[p, 1]
                else:
                    cand[nc, 0] = v
                    cand[nc, 1] = u
                    cand[nc, 2] = mem_e[p, 1]
                    cand[nc, 3] = level
                    nc += 1
        # Gathered backwards: back into walk order (sweep 2 keeps "last one wins").
        cand[first:nc] = cand[first:nc][::-1].copy()
        if k == 0:
            break
        frontier = _close_level(bits, k, status, DOWN, dist, level)
        downs[nd:nd + k] = frontier
        nd += k

    # Soft edges out of the down set: degraded one hop further than their source.
    for q in range(nd):
        u = downs[q]
        for p in range(soft_ptr[u], soft_ptr[u + 1]):
            v = soft_e[p, 0]
            if status[v] != DOWN:
                cand[nc, 0] = v
                cand[nc, 1] = u
                cand[nc, 2] = soft_e[p, 1]
                cand[nc, 3] = dist[u] + 1
                nc += 1

    # Sweep 2: the degraded closure over every edge, fed from those candidates by level
    # (group candidates before soft ones within a level, as they were gathered).
    # A stable counting sort by level (levels are small) of those still not down.
    per_level = np.zeros(level + 2, np.int64)
    for q in range(nc):
        if status[cand[q, 0]] != DOWN:
            per_level[cand[q, 3]] += 1
    nk = 0
    for lv in range(per_level.size):
        nk, per_level[lv] = nk + per_level[lv], nk
    ordered = np.empty((nk, 4), np.int32)
    for q in range(nc):
        if status[cand[q, 0]] != DOWN:
            ordered[per_level[cand[q, 3]]] = cand[q]
            per_level[cand[q, 3]] += 1
    ci = 0
    level = ordered[0, 3] if nk else 0
    frontier = np.empty(0, np.int64)
    while True:
        k = 0
        # Edges out of the previous level's new hits come first (the last claim wins) ...
        # (The same claim as for the candidates below, written out twice on purpose: as one
        # inlined helper, the median vendor's propagation measured 0.64 -> 0.75-0.82 ms.)
        for u in frontier:
            for p in range(every_ptr[u], every_ptr[u + 1]):
                v = every_e[p, 0]
                if status[v] == UP:
                    status[v] = CLAIMED
                    _mark(bits, v)
                    k += 1
                if status[v] == CLAIMED:
                    link[v, 0] = u
                    link[v, 1] = every_e[p, 1]
        if k == 0:
            if ci >= nk:
                break
            level = max(level, ordered[ci, 3])
        # ... then the boundary candidates due by this level.
        while ci < nk and ordered[ci, 3] <= level:
            v = ordered[ci, 0]
            if status[v] == UP:
                status[v] = CLAIMED
                _mark(bits, v)
                k += 1
            if status[v] == CLAIMED:
                link[v, 0] = ordered[ci, 1]
                link[v, 1] = ordered[ci, 2]
            ci += 1
        frontier = _close_level(bits, k, status, DEGRADED, dist, level)
        level += 1
    return status, dist, link


@njit(cache=True, nogil=True)
def summarise_hits(status, codes, offsets, plan_level, level_floor):  # type: ignore[no-untyped-def]
    """One pass over the statuses: the hit assets (ascending), each hit's best plan
    level (``plan_level`` raised to ``level_floor``), and counts of hits per code,
    split degraded/down, for several codings at once: ``codes[i, c]`` is asset i's
    code in coding c, counted at ``offsets[c] + 2 * code + (1 if down else 0)``.
    One pass instead of a gather, an add and a bincount per coding."""
    n = status.size
    hits = np.empty(n, np.int64)
    best = np.empty(n, np.int8)
    counts = np.zeros(offsets[-1], np.int64)
    m = 0
    for i in range(n):
        s = status[i]
        if s == UP:
            continue
        down = 1 if s == DOWN else 0
        hits[m] = i
        best[m] = max(plan_level[i], level_floor)
        m += 1
        for c in range(codes.shape[1]):
            counts[offsets[c] + 2 * codes[i, c] + down] += 1
    return hits[:m].copy(), best[:m].copy(), counts


@njit(cache=True, nogil=True)
def reach_pairs(starts, indptr, pairs, wanted):  # type: ignore[no-untyped-def]
    """(node, start) for every ``wanted`` node reachable from each start along the packed
    CSR (``pairs[p, 0]`` is an edge's target), one breadth-first walk per start (the
    start itself is not paired with itself)."""
    n = wanted.size
    stamp = np.full(n, -1, np.int64)
    queue = np.empty(n, np.int64)
    nodes = np.empty(1024, np.int64)
    owners = np.empty(1024, np.int64)
    m = 0
    for s in starts:
        stamp[s] = s
        queue[0] = s
        head, tail = 0, 1
        while head < tail:
            u = queue[head]
            head += 1
            for p in range(indptr[u], indptr[u + 1]):
                w = pairs[p, 0]
                if stamp[w] == s:
                    continue
                stamp[w] = s
                queue[tail] = w
                tail += 1
                if wanted[w]:
                    if m == nodes.size:
                        nodes = np.concatenate((nodes, np.empty(m, np.int64)))
                        owners = np.concatenate((owners, np.empty(m, np.int64)))
                    nodes[m] = w
                    owners[m] = s
                    m += 1
    return nodes[:m].copy(), owners[:m].copy()


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the kernel for the engine's array types,
    on a two-asset graph: run ahead of time, so that no process compiles it on demand
    (``python -m inventory.impact.kernel`` does the same)."""
    indptr = np.zeros(3, np.int32)
    none = np.empty((0, 2), np.int32)
    for groups in (True, False):
        propagate_arrays(np.zeros(1, np.int64), indptr, none, indptr, none, indptr, none, indptr, none,
                         np.zeros(2, np.int32), groups)
    reach_pairs(np.zeros(1, np.int64), indptr, none, np.zeros(2, np.bool_))
    summarise_hits(np.zeros(2, np.int8), np.zeros((2, 1), np.int32), np.array([0, 2], np.int64),
                   np.zeros(2, np.int8), 0)


if __name__ == "__main__":   # the background compile of inventory.impact.backend, and the image build
    warm_up()
