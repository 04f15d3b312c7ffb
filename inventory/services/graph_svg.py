"""A picture of a blast radius: a layered SVG drawn on the server.

Columns are hop distances from the seeds (the assets the outage hits
directly) out to the business services; every edge comes from a hit's
explaining path.  No JavaScript and no CDN (machines may be offline; the CSP
allows only our own scripts), and it prints.

Big blast radii are capped: each column keeps the nodes that matter most
(business services, then the assets on their explaining paths, then by
criticality and status) and folds the rest into one "+N more" node per
column, so the picture stays readable and cheap at 50k hits; the page says
when that happened.

Every piece of text is escaped here (asset names come from outside); the
result is returned as ``Markup`` so the template does not escape it twice.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from markupsafe import Markup, escape

NODE_W = 184
NODE_H = 28
COL_GAP = 76
ROW_GAP = 10
MARGIN_X = 16
MARGIN_TOP = 34
LABEL_CHARS = 24
CRIT_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
MORE = "more"


@dataclass
class GraphPicture:
    svg: Markup
    shown: int
    total: int
    aggregated: bool
    layers: int

    @property
    def note(self) -> str:
        if not self.aggregated:
            return ""
        return (f"Showing {self.shown:,} of {self.total:,} hit assets: business services and the assets "
                f"on their paths first; the rest of each column is folded into one “+N more” node. "
                f"The table and the CSV export list every asset.")


@dataclass
class _Node:
    key: Any  # asset id, or (MORE, layer)
    layer: int
    label: str
    title: str
    classes: list[str]
    href: str | None
    order: float = 0.0


def _priority(hit: dict[str, Any]) -> tuple[int, int, int, str]:
    return (0 if hit.get("kind") == "service" else 1,
            0 if hit.get("status") == "down" else 1,
            CRIT_RANK.get(hit.get("criticality") or "", 4),
            hit.get("name") or "")


def _edges(hits: Iterable[dict[str, Any]], hops: dict[int, int]) -> set[tuple[int, int]]:
    """(nearer the seed, further from it) pairs from every explaining path."""
    edges: set[tuple[int, int]] = set()
    for hit in hits:
        path = hit.get("path") or []
        ids = [step.get("asset_id") for step in path]
        if not ids or ids[-1] != hit["asset_id"] and ids[0] != hit["asset_id"]:
            ids = ids + [hit["asset_id"]]
        for a, b in zip(ids, ids[1:]):
            if a is None or b is None or a == b or a not in hops or b not in hops:
                continue
            if hops[a] < hops[b]:
                edges.add((a, b))
            elif hops[b] < hops[a]:
                edges.add((b, a))
    return edges


def _truncate(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(result: dict[str, Any], *, asset_url: Callable[[int], str] | None = None,
           max_nodes: int = 150, per_layer: int = 16) -> GraphPicture:
    """Lay out ``blast_radius(...).to_dict()`` as SVG (see the module docstring)."""
    hits: list[dict[str, Any]] = list(result.get("hits") or [])
    by_id = {h["asset_id"]: h for h in hits}
    hops = {h["asset_id"]: int(h.get("hops") or 0) for h in hits}
    edges = _edges(hits, hops)
    parents: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        parents[b].add(a)

    # --- choose what to show: services, then their paths, then the most important rest.
    layer_count: dict[int, int] = defaultdict(int)
    chosen: dict[int, None] = {}

    def take(asset_id: int) -> bool:
        if asset_id in chosen:
            return True
        layer = hops[asset_id]
        if len(chosen) >= max_nodes or layer_count[layer] >= per_layer:
            return False
        chosen[asset_id] = None
        layer_count[layer] += 1
        return True

    ranked = sorted(hits, key=_priority)
    for hit in ranked:
        if hit.get("kind") != "service":
            break
        if take(hit["asset_id"]):
            # Walk back along explaining paths so the service is connected to a seed.
            stack, seen = [hit["asset_id"]], set()
            while stack:
                node = stack.pop()
                for parent in sorted(parents.get(node, ()), key=lambda p: _priority(by_id[p])):
                    if parent not in seen:
                        seen.add(parent)
                        if take(parent):
                            stack.append(parent)
                        break  # one path per node is enough to explain it
    for hit in ranked:
        take(hit["asset_id"])

    # --- nodes per layer
    layers: dict[int, list[_Node]] = defaultdict(list)
    hidden_by_layer: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for hit in hits:
        if hit["asset_id"] in chosen:
            classes = ["node", f"node-{hit.get('status', 'down')}"]
            if hops[hit["asset_id"]] == 0:
                classes.append("node-seed")
            if hit.get("kind") == "service":
                classes.append("node-service")
            if hit.get("gap"):
                classes.append("node-gap")
            plans = hit.get("plans") or []
            plan_text = ("; plans: " + ", ".join(f"{p.get('name')} ({p.get('status')})" for p in plans)
                         if plans else "; NO PLAN (gap)")
            title = (f"{hit.get('name')} — {hit.get('kind')}, {hit.get('status')}, "
                     f"{hops[hit['asset_id']]} hop(s), {hit.get('criticality')}{plan_text}")
            layers[hops[hit["asset_id"]]].append(_Node(
                key=hit["asset_id"], layer=hops[hit["asset_id"]], label=_truncate(hit.get("name") or "?"),
                title=title, classes=classes, href=asset_url(hit["asset_id"]) if asset_url else None))
        else:
            hidden_by_layer[hops[hit["asset_id"]]].append(hit)
    for layer, hidden in hidden_by_layer.items():
        down = sum(1 for h in hidden if h.get("status") == "down")
        layers[layer].append(_Node(
            key=(MORE, layer), layer=layer, label=f"+{len(hidden):,} more",
            title=f"{len(hidden):,} more assets at {layer} hop(s): {down:,} down, {len(hidden) - down:,} degraded",
            classes=["node", "node-more"], href=None))

    def shown_key(asset_id: int) -> Any:
        return asset_id if asset_id in chosen else (MORE, hops[asset_id])

    drawn_edges: set[tuple[Any, Any]] = set()
    for a, b in edges:
        ka, kb = shown_key(a), shown_key(b)
        if ka != kb:
            drawn_edges.add((ka, kb))

    # --- order within columns: barycentre of the parents already placed (fewer crossings).
    position: dict[Any, tuple[float, float]] = {}
    rows_by_parent: dict[Any, list[Any]] = defaultdict(list)
    for ka, kb in drawn_edges:
        rows_by_parent[kb].append(ka)
    order_index: dict[Any, int] = {}
    for layer in sorted(layers):
        nodes = layers[layer]
        for node in nodes:
            if isinstance(node.key, tuple):
                node.order = float("inf")
                continue
            placed = [order_index[p] for p in rows_by_parent.get(node.key, []) if p in order_index]
            node.order = sum(placed) / len(placed) if placed else -1.0
        nodes.sort(key=lambda n: (n.order, _priority(by_id[n.key]) if not isinstance(n.key, tuple) else ()))
        for index, node in enumerate(nodes):
            order_index[node.key] = index

    layer_keys = sorted(layers)
    column = {layer: i for i, layer in enumerate(layer_keys)}
    for layer in layer_keys:
        for index, node in enumerate(layers[layer]):
            x = MARGIN_X + column[layer] * (NODE_W + COL_GAP)
            y = MARGIN_TOP + index * (NODE_H + ROW_GAP)
            position[node.key] = (x, y)
    rows = max((len(n) for n in layers.values()), default=0)
    width = MARGIN_X * 2 + max(1, len(layer_keys)) * NODE_W + max(0, len(layer_keys) - 1) * COL_GAP
    height = MARGIN_TOP + rows * (NODE_H + ROW_GAP) + 10

    out: list[str] = []
    total = len(hits)
    shown = len(chosen)
    out.append(f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
               f'viewBox="0 0 {width} {height}" role="group" aria-labelledby="graph-title graph-desc">')
    out.append('<title id="graph-title">Dependency graph of the blast radius</title>')
    out.append(f'<desc id="graph-desc">{escape(f"{total:,} hit assets in {len(layer_keys)} columns by hop distance from the seeds; the table below lists them all.")}</desc>')
    for layer in layer_keys:
        x = MARGIN_X + column[layer] * (NODE_W + COL_GAP)
        label = "Seeds (hit directly)" if layer == 0 else f"{layer} hop{'s' if layer != 1 else ''} away"
        out.append(f'<text class="layer-label" x="{x}" y="{MARGIN_TOP - 14}">{escape(label)}</text>')
    degraded_keys = {k for k, v in by_id.items() if v.get("status") == "degraded"}
    for ka, kb in sorted(drawn_edges, key=str):
        (x1, y1), (x2, y2) = position[ka], position[kb]
        sx, sy = x1 + NODE_W, y1 + NODE_H / 2
        tx, ty = x2, y2 + NODE_H / 2
        mid = (sx + tx) / 2
        cls = "edge edge-soft" if kb in degraded_keys else "edge"
        out.append(f'<path class="{cls}" d="M{sx:.0f},{sy:.0f} C{mid:.0f},{sy:.0f} {mid:.0f},{ty:.0f} {tx:.0f},{ty:.0f}"/>')
    for layer in layer_keys:
        for node in layers[layer]:
            x, y = position[node.key]
            parts = [f'<g class="{" ".join(node.classes)}">',
                     f"<title>{escape(node.title)}</title>",
                     f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="5"/>',
                     f'<text x="{x + 8}" y="{y + 18}">{escape(node.label)}</text>']
            if "node-gap" in node.classes:
                parts.append(f'<text class="gap-mark" x="{x + NODE_W - 8}" y="{y + 18}" text-anchor="end">no plan</text>')
            parts.append("</g>")
            group = "".join(parts)
            if node.href:
                group = f'<a href="{escape(node.href)}">{group}</a>'
            out.append(group)
    out.append("</svg>")
    return GraphPicture(svg=Markup("".join(out)), shown=shown, total=total,
                        aggregated=shown < total, layers=len(layer_keys))
