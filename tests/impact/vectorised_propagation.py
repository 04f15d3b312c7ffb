"""The propagation rules written with NumPy, level-synchronously: the engine's
previous implementation, kept as an independent oracle for the compiled one
(``inventory.impact.kernel``).  Both must give identical arrays: statuses, hops,
and the same explaining parent and edge for every hit."""
from __future__ import annotations

import numpy as np

from inventory.impact.engine import DEGRADED, DOWN, UP, Propagation
from inventory.impact.graph import CSR, View


class _Step:
    """The edges of one CSR leaving a frontier.  Edge sources and graph edge ids
    are only worked out for the few edges that end up explaining a new hit:
    ``targets[j]`` is reached from ``sources(j)`` over graph edge ``edges(j)``."""

    __slots__ = ("csr", "frontier", "counts", "ends", "pos", "targets")

    def __init__(self, csr: CSR, frontier: np.ndarray, counts: np.ndarray, ends: np.ndarray,
                 pos: np.ndarray) -> None:
        self.csr = csr
        self.frontier = frontier
        self.counts = counts
        self.ends = ends
        self.pos = pos
        self.targets = csr.dst[pos]

    @classmethod
    def of(cls, csr: CSR, frontier: np.ndarray) -> "_Step | None":
        frontier = frontier[csr.has_out[frontier]]
        if frontier.size == 0:
            return None
        starts = csr.indptr[frontier]
        counts = csr.indptr[frontier + 1] - starts
        ends = np.cumsum(counts)
        # Positions row by row, as one cumulative sum: +1 within a row, a jump between
        # rows (every row has edges).  int32 halves the memory traffic.
        inc = np.ones(int(ends[-1]), dtype=np.int32)
        inc[0] = starts[0]
        inc[ends[:-1]] = starts[1:] - (starts[:-1] + counts[:-1]) + 1
        return cls(csr, frontier, counts, ends, np.cumsum(inc, dtype=np.int32))

    def sources(self, j: np.ndarray) -> np.ndarray:
        if j.size * 8 > self.pos.size:
            return np.repeat(self.frontier, self.counts)[j]
        return self.frontier[np.searchsorted(self.ends, j, side="right")]

    def edges(self, j: np.ndarray) -> np.ndarray:
        return self.csr.eid[self.pos[j]]


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


def propagate(view: View, seeds: np.ndarray, groups: bool = True) -> Propagation:
    """Statuses, hops and explaining parents for an outage starting at ``seeds``
    (unique asset indices).

    ``groups=False`` treats member-of edges as ordinary hard edges (for
    comparing the down set with plain reachability)."""
    n = view.alive.size
    status = np.zeros(n, dtype=np.int8)
    dist = np.full(n, -1, dtype=np.int32)
    parent = np.full(n, -1, dtype=np.int32)
    pedge = np.full(n, -1, dtype=np.int32)
    scratch = np.empty(n, dtype=np.int64)
    status[seeds] = DOWN
    dist[seeds] = 0
    down_members = np.zeros(n, dtype=np.int32)
    # A group is down once more members are down than it can spare.
    spare = view.n_members + view.extra_members - view.min_up
    hard_csrs = (view.hard,) if groups else (view.hard, view.member)
    cands: list[tuple[np.ndarray, ...]] = []   # (target, source, edge, level): degraded candidates

    # Sweep 1: the down closure.
    frontier = seeds
    level = 0
    while frontier.size:
        level += 1
        new = _Candidates()
        for csr in hard_csrs:
            step = _Step.of(csr, frontier)
            if step is not None:
                new.add(step, np.flatnonzero(status[step.targets] != DOWN))
        if groups:
            step = _Step.of(view.member, frontier)
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
        parent[frontier] = src
        pedge[frontier] = edge

    # Soft edges out of the down set, gathered once: each is a degraded candidate
    # one hop further than its (down) source.
    step = _Step.of(view.soft, np.flatnonzero(status == DOWN))
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
            parent[frontier] = src
            pedge[frontier] = edge
            level += 1
            pending = _Candidates()
            if frontier.size:
                step = _Step.of(view.every, frontier)      # degradation travels over every edge
                if step is not None:
                    pending.add(step, np.flatnonzero(status[step.targets] == UP))
    return Propagation(status, dist, parent, pedge)
