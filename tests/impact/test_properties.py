"""Property tests on random graphs, against a deliberately naive reference implementation.

* hard edges only, no groups: the down set is plain reachability and hops are
  breadth-first distances;
* any mix of hard/soft edges and groups: statuses and hops equal a round-by-round
  fixpoint computed the slow, obvious way, the hit set is reachability over every
  edge, and every explaining path is a real chain of edges ending at a seed;
* the compiled kernel gives exactly the arrays of the vectorised NumPy
  formulation (``vectorised_propagation.py``), explaining parents included.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.choices import DEPENDENCY_KINDS, MEMBER_OF
from inventory.impact import kernel, kernel_numpy
from inventory.impact.engine import DEGRADED, DOWN, UP, propagate
from inventory.impact.graph import Graph
from tests.impact.vectorised_propagation import propagate as vectorised_propagate

MEMBER_KIND = DEPENDENCY_KINDS.index(MEMBER_OF)


def make_view(n: int, edges: list[tuple[int, int, str]], min_up: dict[int, int]):  # type: ignore[no-untyped-def]
    """A Graph built straight from arrays; edges are (dependent, dependency, 'hard'|'soft'|'member')."""
    g = Graph()
    g.n = n
    g.e_dnt = np.array([e[0] for e in edges], dtype=np.int32)
    g.e_dep = np.array([e[1] for e in edges], dtype=np.int32)
    g.e_kind = np.array([MEMBER_KIND if e[2] == "member" else 0 for e in edges], dtype=np.int8)
    g.e_soft = np.array([e[2] == "soft" for e in edges], dtype=bool)
    g.e_live = np.ones(len(edges), dtype=bool)
    g.edges_canonical = False   # as given: make_view sorts them into the canonical order
    g.min_up = np.array([min_up.get(i, -1) for i in range(n)], dtype=np.int32)
    g.member_kind = MEMBER_KIND
    g.edge_kinds = list(DEPENDENCY_KINDS)
    return g.make_view(np.ones(n, dtype=bool), np.ones(len(edges), dtype=bool))


@st.composite
def graphs(draw, soft: bool, groups: bool):  # type: ignore[no-untyped-def]
    n = draw(st.integers(1, 24))
    kinds = ["hard"] + (["soft"] if soft else [])
    raw = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from(kinds)),
                        max_size=3 * n))
    group_ids = draw(st.sets(st.integers(0, n - 1), max_size=n // 3)) if groups else set()
    min_up = {}
    edges = []
    seen = set()
    for dependent, dependency, kind in raw:
        if dependent == dependency or (dependent, dependency) in seen:
            continue
        seen.add((dependent, dependency))
        edges.append((dependent, dependency, "member" if dependent in group_ids and
                      draw(st.booleans()) else kind))
    for gid in group_ids:
        min_up[gid] = draw(st.integers(1, 4))
    seeds = sorted(draw(st.sets(st.integers(0, n - 1), max_size=max(1, n // 4))))
    return n, edges, min_up, seeds


def reference(n: int, edges: list[tuple[int, int, str]], min_up: dict[int, int], seeds: list[int]
              ) -> tuple[list[int], list[int]]:
    """Round-by-round fixpoint, straight from the written semantics."""
    status, dist = [UP] * n, [-1] * n
    for s in seeds:
        status[s], dist[s] = DOWN, 0
    members = {g: [dep for dnt, dep, k in edges if dnt == g and k == "member"] for g in min_up}
    rnd = 0
    while True:           # down: a hard dependency down, or too few members up
        rnd += 1
        new = []
        for v in range(n):
            if status[v] == DOWN:
                continue
            hard = any(status[dep] == DOWN for dnt, dep, k in edges if dnt == v and k == "hard")
            group = v in min_up and any(status[m] == DOWN for m in members[v]) and \
                sum(status[m] != DOWN for m in members[v]) < min_up[v]
            if hard or group:
                new.append(v)
        if not new:
            break
        for v in new:
            status[v], dist[v] = DOWN, rnd
    changed = True        # degraded: shortest chain of causing edges (Bellman-Ford)
    while changed:
        changed = False
        for dnt, dep, kind in edges:
            if status[dnt] == DOWN or status[dep] == UP:
                continue
            causes = status[dep] == DEGRADED or kind in ("soft", "member")
            if causes and (dist[dnt] < 0 or dist[dep] + 1 < dist[dnt]):
                status[dnt], dist[dnt] = DEGRADED, dist[dep] + 1
                changed = True
    return status, dist


def reachable(n: int, edges: list[tuple[int, int, str]], seeds: list[int], kinds: set[str]) -> dict[int, int]:
    out: dict[int, list[int]] = {i: [] for i in range(n)}
    for dnt, dep, kind in edges:
        if kind in kinds:
            out[dep].append(dnt)
    dist = {s: 0 for s in seeds}
    queue = deque(seeds)
    while queue:
        v = queue.popleft()
        for w in out[v]:
            if w not in dist:
                dist[w] = dist[v] + 1
                queue.append(w)
    return dist


def check_paths(prop, edges, seeds) -> None:  # type: ignore[no-untyped-def]
    pairs = {(dnt, dep) for dnt, dep, _k in edges}
    for v in np.flatnonzero(prop.status > UP):
        chain = [int(v)]
        while prop.parent[chain[-1]] >= 0:
            chain.append(int(prop.parent[chain[-1]]))
            assert len(chain) <= len(prop.status)
        assert chain[-1] in seeds
        assert len(chain) == prop.dist[v] + 1
        for child, parent in zip(chain, chain[1:]):
            assert (child, parent) in pairs


@settings(max_examples=200, deadline=None)
@given(graphs(soft=False, groups=False))
def test_hard_only_down_set_is_reachability(case) -> None:  # type: ignore[no-untyped-def]
    n, edges, min_up, seeds = case
    prop = propagate(make_view(n, edges, min_up), np.array(seeds, dtype=np.int64))
    expected = reachable(n, edges, seeds, {"hard"})
    assert set(np.flatnonzero(prop.status == DOWN).tolist()) == set(expected)
    assert not (prop.status == DEGRADED).any()
    assert {v: int(prop.dist[v]) for v in expected} == expected
    check_paths(prop, edges, seeds)


@settings(max_examples=200, deadline=None)
@given(graphs(soft=True, groups=True))
def test_mixed_graphs_match_the_reference(case) -> None:  # type: ignore[no-untyped-def]
    n, edges, min_up, seeds = case
    prop = propagate(make_view(n, edges, min_up), np.array(seeds, dtype=np.int64))
    status, dist = reference(n, edges, min_up, seeds)
    assert prop.status.tolist() == status
    assert prop.dist.tolist() == dist
    # Whatever the strengths and groups, everything reachable is hit (at least degraded).
    assert set(np.flatnonzero(prop.status > UP).tolist()) == \
        set(reachable(n, edges, seeds, {"hard", "soft", "member"}))
    check_paths(prop, edges, seeds)


@settings(max_examples=100, deadline=None)
@given(graphs(soft=True, groups=True))
def test_without_groups_the_down_set_is_hard_reachability(case) -> None:  # type: ignore[no-untyped-def]
    n, edges, min_up, seeds = case
    prop = propagate(make_view(n, edges, min_up), np.array(seeds, dtype=np.int64), groups=False)
    assert set(np.flatnonzero(prop.status == DOWN).tolist()) == \
        set(reachable(n, edges, seeds, {"hard", "member"}))


def assert_same_propagation(view, seeds: np.ndarray, groups: bool) -> None:  # type: ignore[no-untyped-def]
    status, dist, link = kernel.propagate_arrays(seeds, *view.kernel_inputs(), groups)
    vectorised = vectorised_propagate(view, seeds, groups=groups)
    compiled = {"status": status, "dist": dist, "parent": link[:, 0], "pedge": link[:, 1]}
    for name in ("status", "dist", "parent", "pedge"):
        assert compiled[name].tolist() == getattr(vectorised, name).tolist(), name


@settings(max_examples=200, deadline=None)
@given(graphs(soft=True, groups=True), st.booleans())
def test_compiled_kernel_equals_the_vectorised_oracle(case, groups) -> None:  # type: ignore[no-untyped-def]
    """Same statuses and hops, and the same explaining parent and edge for every hit
    (the tie rules are part of the answer: a repeated query must not change its story)."""
    n, edges, min_up, seeds = case
    assert_same_propagation(make_view(n, edges, min_up), np.array(seeds, dtype=np.int64), groups)


def test_compiled_kernel_equals_the_oracle_on_large_random_graphs() -> None:
    """Thousands of assets, parallel edges of different strengths, wide groups and
    cycles: levels with many ties, where the claim order matters."""
    rng = np.random.default_rng(7)
    for n, n_edges in ((2_000, 8_000), (5_000, 30_000)):
        dependents = rng.integers(0, n, n_edges)
        dependencies = rng.integers(0, n, n_edges)
        kinds = rng.choice(["hard", "soft", "member"], n_edges, p=[0.6, 0.3, 0.1])
        edges = [(int(a), int(b), str(k)) for a, b, k in zip(dependents, dependencies, kinds) if a != b]
        groups = {int(a) for a, _b, k in edges if k == "member"}
        min_up = {g: int(rng.integers(1, 4)) for g in groups}
        view = make_view(n, edges, min_up)
        for size in (1, 10, n // 20, n // 3):
            seeds = np.unique(rng.choice(n, size, replace=False)).astype(np.int64)
            for with_groups in (True, False):
                assert_same_propagation(view, seeds, with_groups)


@settings(max_examples=100, deadline=None)
@given(graphs(soft=True, groups=True), st.data())
def test_numpy_totals_and_reachability_equal_the_compiled_ones(case, data) -> None:  # type: ignore[no-untyped-def]
    """The other two routines: the hit list, best plan levels and counts per coding, and the
    (node, start) pairs of the services walk, whichever implementation runs."""
    n, edges, min_up, _seeds = case
    view = make_view(n, edges, min_up)
    status = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int8)
    codes = np.array(data.draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), min_size=n,
                                        max_size=n)), dtype=np.int32).reshape(n, 2)
    offsets = np.array([0, 8, 14], dtype=np.int64)
    levels = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int8)
    floor = data.draw(st.integers(0, 3))
    for got, want in zip(kernel_numpy.summarise_hits(status, codes, offsets, levels, floor),
                         kernel.summarise_hits(status, codes, offsets, levels, floor)):
        assert got.tolist() == want.tolist()
    wanted = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=np.bool_)
    starts = np.array(sorted(data.draw(st.sets(st.integers(0, n - 1), max_size=4))), dtype=np.int64)
    for csr in (view.fwd, view.every):
        got = kernel_numpy.reach_pairs(starts, csr.indptr, csr.pairs, wanted)
        want = kernel.reach_pairs(starts, csr.indptr, csr.pairs, wanted)
        assert sorted(zip(*(a.tolist() for a in got))) == sorted(zip(*(a.tolist() for a in want)))


def test_paused_gc_restores_the_collector_whoever_nests_it():
    import gc

    from inventory.memory import paused_gc
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()          # the inner block did not pause it: leaves it paused
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        with paused_gc():
            1 / 0
    assert gc.isenabled()
