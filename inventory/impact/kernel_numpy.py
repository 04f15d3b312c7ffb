"""The kernel's routines written with NumPy: the answer while the compiled kernel loads.

Same functions, same arguments, same results as ``inventory.impact.kernel``
(Numba), array for array — statuses, hops, explaining parents and edges, the
hit list and every count — so an answer never depends on which one ran; the
tests check it on random graphs.  Compiling the kernel takes seconds on a fresh
install and loading it from its cache a few hundred milliseconds, and no request
waits for either (``inventory.impact.backend``): this module needs nothing but
NumPy.  It is slower on large, deep outages (a level costs a dozen array calls
whatever its size) — about 2-4x the compiled kernel at 100k assets — and as fast
on small ones.

The propagation is level-synchronous, like the kernel's: within a level,
candidate edges are taken in a fixed order (hard edges, then member edges, each by
source ascending and by CSR position) and the *last* candidate edge to a target
explains it.
"""
from __future__ import annotations

import numpy as np

UP, DEGRADED, DOWN = 0, 1, 2


class _Step:
    """The edges of one packed CSR leaving a frontier.  Edge sources and graph edge
    ids are only worked out for the few edges that end up explaining a new hit:
    ``targets[j]`` is reached from ``sources(j)`` over graph edge ``edges(j)``."""

    __slots__ = ("pairs", "frontier", "counts", "ends", "pos", "targets")

    def __init__(self, pairs: np.ndarray, frontier: np.ndarray, counts: np.ndarray, ends: np.ndarray,
                 pos: np.ndarray) -> None:
        self.pairs = pairs
        self.frontier = frontier
        self.counts = counts
        self.ends = ends
        self.pos = pos
        self.targets = pairs[pos, 0]

    @classmethod
    def of(cls, indptr: np.ndarray, pairs: np.ndarray, frontier: np.ndarray) -> "_Step | None":
        starts = indptr[frontier].astype(np.int64)
        counts = indptr[frontier + 1] - starts
        some = counts > 0
        if not some.all():
            frontier, starts, counts = frontier[some], starts[some], counts[some]
        if frontier.size == 0:
            return None
        ends = np.cumsum(counts)
        # Positions row by row, as one cumulative sum: +1 within a row, a jump between
        # rows (every row kept has edges).
        inc = np.ones(int(ends[-1]), dtype=np.int64)
        inc[0] = starts[0]
        inc[ends[:-1]] = starts[1:] - (starts[:-1] + counts[:-1]) + 1
        return cls(pairs, frontier, counts, ends, np.cumsum(inc))

    def sources(self, j: np.ndarray) -> np.ndarray:
        if j.size * 8 > self.pos.size:
            return np.repeat(self.frontier, self.counts)[j]
        return self.frontier[np.searchsorted(self.ends, j, side="right")]

    def edges(self, j: np.ndarray) -> np.ndarray:
        return self.pairs[self.pos[j], 1]


class _Candidates:
    """Edges that may explain new hits, from several steps; one winner per target."""

    def __init__(self) -> None:
        self.parts: list[tuple[_Step | None, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []

    def add(self, step: _Step, j: np.ndarray) -> None:
        if j.size:
            self.parts.append((step, j, step.targets[j], None, None))

    def add_resolved(self, targets: np.ndarray, sources: np.ndarray, edges: np.ndarray) -> None:
        if targets.size:
            self.parts.append((None, np.empty(0, dtype=np.int64), targets, sources, edges))

    def __bool__(self) -> bool:
        return bool(self.parts)

    def resolve(self, status: np.ndarray, wanted: int | None, scratch: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct targets in ascending order (optionally only those whose status is
        ``wanted``), each with one source and edge (the last candidate written wins)."""
        n = status.size
        picked_parts = []
        offset = 0
        bounds = [0]
        for _step, _j, targets, _src, _edge in self.parts:
            local = np.arange(targets.size) if wanted is None else np.flatnonzero(status[targets] == wanted)
            picked = targets[local]
            scratch[picked] = local + offset     # repeated targets: the last write wins
            picked_parts.append(picked)
            offset += targets.size
            bounds.append(offset)
        picked = picked_parts[0] if len(picked_parts) == 1 else np.concatenate(picked_parts)
        if picked.size * 64 < n:
            frontier = np.unique(picked)          # few: sorting is cheaper than a pass over n
        else:
            reached = np.zeros(n, dtype=bool)
            reached[picked] = True
            frontier = np.flatnonzero(reached)
        win = scratch[frontier]
        if len(self.parts) == 1:
            step, j, _t, src, edge = self.parts[0]
            if step is None:
                return frontier, src[win], edge[win]     # type: ignore[index]
            return frontier, step.sources(j[win]), step.edges(j[win])
        part_of = np.searchsorted(np.array(bounds[1:]), win, side="right")
        srcs = np.empty(frontier.size, dtype=np.int64)
        edges = np.empty(frontier.size, dtype=np.int64)
        for k, (step, j, _t, src, edge) in enumerate(self.parts):
            mine = np.flatnonzero(part_of == k)
            if not mine.size:
                continue
            local = win[mine] - bounds[k]
            if step is None:
                srcs[mine] = src[local]        # type: ignore[index]
                edges[mine] = edge[local]      # type: ignore[index]
            else:
                srcs[mine] = step.sources(j[local])
                edges[mine] = step.edges(j[local])
        return frontier, srcs, edges


def propagate_arrays(seeds: np.ndarray, hard_ptr: np.ndarray, hard_e: np.ndarray, mem_ptr: np.ndarray,
                     mem_e: np.ndarray, soft_ptr: np.ndarray, soft_e: np.ndarray, every_ptr: np.ndarray,
                     every_e: np.ndarray, spare: np.ndarray, groups: bool
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(status, dist, link) as ``kernel.propagate_arrays`` computes them."""
    n = spare.size
    seeds = np.asarray(seeds, dtype=np.int64)
    status = np.zeros(n, dtype=np.int8)
    dist = np.full(n, -1, dtype=np.int32)
    link = np.full((n, 2), -1, dtype=np.int32)
    scratch = np.empty(n, dtype=np.int64)
    status[seeds] = DOWN
    dist[seeds] = 0
    down_members = np.zeros(n, dtype=np.int32)
    hard_csrs = ((hard_ptr, hard_e),) if groups else ((hard_ptr, hard_e), (mem_ptr, mem_e))
    cands: list[tuple[np.ndarray, ...]] = []   # (target, source, edge, level): degraded candidates

    # Sweep 1: the down closure.
    frontier = seeds
    level = 0
    while frontier.size:
        level += 1
        new = _Candidates()
        for ptr, pairs in hard_csrs:
            step = _Step.of(ptr, pairs, frontier)
            if step is not None:
                new.add(step, np.flatnonzero(status[step.targets] != DOWN))
        if groups:
            step = _Step.of(mem_ptr, mem_e, frontier)
            if step is not None:
                g = step.targets
                if g.size * 16 > n:
                    down_members += np.bincount(g, minlength=n).astype(np.int32)
                else:
                    np.add.at(down_members, g, 1)
                live = status[g] != DOWN
                tipped = live & (down_members[g] > spare[g])
                new.add(step, np.flatnonzero(tipped))
                j = np.flatnonzero(live & ~tipped)
                if j.size:
                    cands.append((g[j], step.sources(j), step.edges(j), np.full(j.size, level, dtype=np.int32)))
        if not new:
            break
        frontier, src, edge = new.resolve(status, None, scratch)
        status[frontier] = DOWN
        dist[frontier] = level
        link[frontier, 0] = src
        link[frontier, 1] = edge

    # Soft edges out of the down set, gathered once: each is a degraded candidate
    # one hop further than its (down) source.
    step = _Step.of(soft_ptr, soft_e, np.flatnonzero(status == DOWN))
    if step is not None:
        j = np.flatnonzero(status[step.targets] != DOWN)
        if j.size:
            src = step.sources(j)
            cands.append((step.targets[j], src, step.edges(j), dist[src] + 1))

    # Sweep 2: the degraded closure over every edge, fed level by level from the boundary.
    if cands:
        ct, cp, ce, cd = (np.concatenate([c[k] for c in cands]) for k in range(4))
        keep = np.flatnonzero(status[ct] != DOWN)
        order = keep[np.argsort(cd[keep], kind="stable")]   # by level (a radix sort for small ints)
        ct, cp, ce, cd = ct[order], cp[order], ce[order], cd[order]
        ci = 0
        pending = _Candidates()
        level = int(cd[0]) if cd.size else 0
        while ci < ct.size or pending:
            if not pending:
                level = max(level, int(cd[ci]))
            cj = int(np.searchsorted(cd, level, side="right"))
            pending.add_resolved(ct[ci:cj], cp[ci:cj], ce[ci:cj])
            ci = cj
            frontier, src, edge = pending.resolve(status, UP, scratch)
            status[frontier] = DEGRADED
            dist[frontier] = level
            link[frontier, 0] = src
            link[frontier, 1] = edge
            level += 1
            pending = _Candidates()
            if frontier.size:
                step = _Step.of(every_ptr, every_e, frontier)      # degradation travels over every edge
                if step is not None:
                    pending.add(step, np.flatnonzero(status[step.targets] == UP))
    return status, dist, link


def summarise_hits(status: np.ndarray, codes: np.ndarray, offsets: np.ndarray, plan_level: np.ndarray,
                   level_floor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hits ascending, best plan level per hit, counts per coding) as ``kernel.summarise_hits``."""
    hits = np.flatnonzero(status != UP).astype(np.int64)
    best = np.maximum(plan_level[hits], level_floor).astype(np.int8)
    total = int(offsets[-1])
    if not hits.size:
        return hits, best, np.zeros(total, dtype=np.int64)
    down = (status[hits] == DOWN).astype(np.int64)
    slots = (offsets[:-1][None, :] + 2 * codes[hits].astype(np.int64) + down[:, None]).ravel()
    return hits, best, np.bincount(slots, minlength=total).astype(np.int64)


def reach_pairs(starts: np.ndarray, indptr: np.ndarray, pairs: np.ndarray, wanted: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(node, start) for every ``wanted`` node reachable from each start along the packed
    CSR, as ``kernel.reach_pairs`` (same pairs, same order)."""
    nodes: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    n = wanted.size
    for s in np.asarray(starts, dtype=np.int64).tolist():
        seen = np.zeros(n, dtype=bool)
        seen[s] = True
        frontier = np.array([s], dtype=np.int64)
        while frontier.size:
            step = _Step.of(indptr, pairs, frontier)
            if step is None:
                break
            targets = step.targets
            # First sight of each target, in walk order (a breadth-first queue's order).
            fresh = ~seen[targets]
            targets = targets[fresh]
            if not targets.size:
                break
            first = np.unique(targets, return_index=True)[1]
            targets = targets[np.sort(first)]
            seen[targets] = True
            keep = targets[wanted[targets]]
            if keep.size:
                nodes.append(keep.astype(np.int64))
                owners.append(np.full(keep.size, s, dtype=np.int64))
            frontier = targets.astype(np.int64)
    if not nodes:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(nodes), np.concatenate(owners)
