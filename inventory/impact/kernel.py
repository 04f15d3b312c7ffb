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

``cache=True`` keeps the machine code in ``__pycache__`` so that only the first
process on a machine pays for compiling (about a second); ``warm_up`` lets the
graph loader pay it rather than the first query.
"""
from __future__ import annotations

import numpy as np
from numba import njit

UP, DEGRADED, DOWN = 0, 1, 2


@njit(cache=True, nogil=True, inline="always")
def _claim(v, u, e, stamp, claims, buf, k):  # type: ignore[no-untyped-def]
    """Candidate edge u -e-> v for the current level: the last one written wins.
    ``claims[v]`` holds (stamp, parent, edge) side by side: one cache line per claim."""
    if claims[v, 0] != stamp:
        claims[v, 0] = stamp
        buf[k] = v
        k += 1
    claims[v, 1] = u
    claims[v, 2] = e
    return k


@njit(cache=True, nogil=True)
def _ascending(buf, k, claims, stamp):  # type: ignore[no-untyped-def]
    """The ``k`` targets claimed at ``stamp``, in ascending order: sorted when few, else
    read off the claim stamps in one pass (cheaper than sorting a large level)."""
    n = claims.shape[0]
    if k * 16 < n:
        return np.sort(buf[:k])
    out = np.empty(k, np.int64)
    j = 0
    for v in range(n):
        if claims[v, 0] == stamp:
            out[j] = v
            j += 1
    return out


@njit(cache=True, nogil=True)
def propagate_arrays(seeds, hard_ptr, hard_dst, hard_eid, mem_ptr, mem_dst, mem_eid,  # type: ignore[no-untyped-def]
                     soft_ptr, soft_dst, soft_eid, every_ptr, every_dst, every_eid, spare, groups):
    """(status, dist, parent, pedge) for an outage starting at ``seeds``.

    CSR arrays are reverse edges (dependency -> dependent); ``spare`` is how many
    members each group can lose and stay up; ``groups=False`` treats member edges
    as hard ones."""
    n = spare.size
    status = np.zeros(n, np.int8)
    claims = np.full((n, 4), -1, np.int32)   # per asset: claim stamp, parent, edge, hops
    down_members = np.zeros(n, np.int32)
    buf = np.empty(n, np.int64)
    # Degraded candidates found on the way (group edges that did not tip, soft edges).
    n_cand = mem_dst.size + soft_dst.size
    ct = np.empty(n_cand, np.int64)
    cp = np.empty(n_cand, np.int64)
    ce = np.empty(n_cand, np.int64)
    cd = np.empty(n_cand, np.int64)
    nc = 0
    for s in seeds:
        status[s] = DOWN
        claims[s, 3] = 0

    # Sweep 1: the down closure, level by level.
    frontier = seeds.copy()
    level = 0
    stamp = 0
    while frontier.size:
        level += 1
        stamp += 1
        k = 0
        for u in frontier:
            for p in range(hard_ptr[u], hard_ptr[u + 1]):
                v = hard_dst[p]
                if status[v] != DOWN:
                    k = _claim(v, u, hard_eid[p], stamp, claims, buf, k)
        if not groups:
            for u in frontier:
                for p in range(mem_ptr[u], mem_ptr[u + 1]):
                    v = mem_dst[p]
                    if status[v] != DOWN:
                        k = _claim(v, u, mem_eid[p], stamp, claims, buf, k)
        else:
            # A group tips once more members are down than it can spare; every member
            # that went down at this level counts before any edge is judged.
            for u in frontier:
                for p in range(mem_ptr[u], mem_ptr[u + 1]):
                    down_members[mem_dst[p]] += 1
            for u in frontier:
                for p in range(mem_ptr[u], mem_ptr[u + 1]):
                    v = mem_dst[p]
                    if status[v] == DOWN:
                        continue
                    if down_members[v] > spare[v]:
                        k = _claim(v, u, mem_eid[p], stamp, claims, buf, k)
                    else:
                        ct[nc] = v
                        cp[nc] = u
                        ce[nc] = mem_eid[p]
                        cd[nc] = level
                        nc += 1
        if k == 0:
            break
        frontier = _ascending(buf, k, claims, stamp)
        for v in frontier:
            status[v] = DOWN
            claims[v, 3] = level

    # Soft edges out of the down set: degraded one hop further than their source.
    for u in range(n):
        if status[u] != DOWN:
            continue
        for p in range(soft_ptr[u], soft_ptr[u + 1]):
            v = soft_dst[p]
            if status[v] != DOWN:
                ct[nc] = v
                cp[nc] = u
                ce[nc] = soft_eid[p]
                cd[nc] = claims[u, 3] + 1
                nc += 1

    # Sweep 2: the degraded closure over every edge, fed from those candidates by level
    # (group candidates before soft ones within a level, as they were gathered).
    # A stable counting sort by level (levels are small) of those still not down.
    per_level = np.zeros(level + 2, np.int64)
    for q in range(nc):
        if status[ct[q]] != DOWN:
            per_level[cd[q]] += 1
    nk = 0
    for lv in range(per_level.size):
        nk, per_level[lv] = nk + per_level[lv], nk
    order = np.empty(nk, np.int64)
    for q in range(nc):
        if status[ct[q]] != DOWN:
            order[per_level[cd[q]]] = q
            per_level[cd[q]] += 1
    ct, cp, ce, cd = ct[order], cp[order], ce[order], cd[order]
    ci = 0
    level = cd[0] if nk else 0
    frontier = np.empty(0, np.int64)
    while True:
        stamp += 1
        k = 0
        # Edges out of the previous level's new hits come first ...
        for u in frontier:
            for p in range(every_ptr[u], every_ptr[u + 1]):
                v = every_dst[p]
                if status[v] == UP:
                    k = _claim(v, u, every_eid[p], stamp, claims, buf, k)
        if k == 0:
            if ci >= nk:
                break
            level = max(level, cd[ci])
        # ... then the boundary candidates due by this level.
        while ci < nk and cd[ci] <= level:
            v = ct[ci]
            if status[v] == UP:
                k = _claim(v, cp[ci], ce[ci], stamp, claims, buf, k)
            ci += 1
        frontier = _ascending(buf, k, claims, stamp)
        for v in frontier:
            status[v] = DEGRADED
            claims[v, 3] = level
        level += 1
    return status, claims[:, 3].copy(), claims[:, 1].copy(), claims[:, 2].copy()


@njit(cache=True, nogil=True)
def tally_by_status(hits, status, codes, offsets):  # type: ignore[no-untyped-def]
    """Counts of hits per code, split degraded/down, for several codings at once:
    ``codes[i, c]`` is asset i's code in coding c, counted at
    ``offsets[c] + 2 * code + (1 if down else 0)`` — one pass over the hits instead of
    a gather, an add and a bincount per coding."""
    counts = np.zeros(offsets[-1], np.int64)
    for i in hits:
        down = 1 if status[i] == DOWN else 0
        for c in range(codes.shape[1]):
            counts[offsets[c] + 2 * codes[i, c] + down] += 1
    return counts


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the kernel for the engine's array types,
    on a two-asset graph, so the graph loader pays for it rather than the first query."""
    indptr = np.zeros(3, np.int64)
    none = np.empty(0, np.int32)
    propagate_arrays(np.zeros(1, np.int64), indptr, none, none, indptr, none, none,
                     indptr, none, none, indptr, none, none, np.zeros(2, np.int32), True)
    tally_by_status(np.zeros(1, np.int64), np.zeros(2, np.int8), np.zeros((2, 1), np.int64),
                    np.array([0, 2], np.int64))
