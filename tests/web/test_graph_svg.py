"""The server-side blast-radius picture: layers, edges, capping and escaping."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from inventory.services import graph_svg

SVG_NS = "{http://www.w3.org/2000/svg}"


def hit(asset_id, name, hops, path_ids=(), kind="vm", status="down", gap=False, criticality="high"):  # type: ignore[no-untyped-def]
    # Paths run from the hit to its seed, as the engine returns them.
    path = [{"asset_id": i, "name": f"n{i}", "edge_kind": "runs-on"} for i in (asset_id, *path_ids)]
    return {"asset_id": asset_id, "name": name, "kind": kind, "status": status, "hops": hops,
            "seed": hops == 0, "criticality": criticality, "gap": gap, "path": path if path_ids else [],
            "plans": [] if gap else [{"id": 1, "name": "P", "status": "current", "via": "asset"}],
            "services": []}


def chain_result():  # type: ignore[no-untyped-def]
    return {"hits": [hit(1, "seed-host", 0), hit(2, "pool", 1, (1,), kind="target_group", status="degraded"),
                     hit(3, "Check-in", 2, (2, 1), kind="service", status="degraded", criticality="critical"),
                     hit(4, "Boarding", 1, (1,), kind="service", gap=True)]}


def parse(picture):  # type: ignore[no-untyped-def]
    return ET.fromstring(str(picture.svg))


def test_layers_follow_hop_distance_and_edges_follow_paths():
    picture = graph_svg.render(chain_result(), asset_url=lambda i: f"/assets/{i}")
    root = parse(picture)  # well-formed XML
    assert picture.shown == picture.total == 4 and not picture.aggregated and picture.layers == 3
    labels = [t.text for t in root.iter(f"{SVG_NS}text") if t.get("class") == "layer-label"]
    assert labels == ["Seeds (hit directly)", "1 hop away", "2 hops away"]
    x_of = {}
    for group in root.iter(f"{SVG_NS}g"):
        rect = group.find(f"{SVG_NS}rect")
        name = group.find(f"{SVG_NS}text").text
        x_of[name] = float(rect.get("x"))
        if name == "seed-host":
            assert "node-seed" in group.get("class")
        if name == "Boarding":
            assert "node-service" in group.get("class") and "node-gap" in group.get("class")
    assert x_of["seed-host"] < x_of["pool"] == x_of["Boarding"] < x_of["Check-in"]
    edges = [p for p in root.iter(f"{SVG_NS}path")]
    assert len(edges) == 3  # seed->pool, seed->Boarding, pool->Check-in
    assert sum("edge-soft" in e.get("class") for e in edges) == 2  # into the two degraded nodes
    links = [a.get("href") for a in root.iter(f"{SVG_NS}a")]
    assert sorted(links) == ["/assets/1", "/assets/2", "/assets/3", "/assets/4"]


def test_layout_is_deterministic():
    assert str(graph_svg.render(chain_result()).svg) == str(graph_svg.render(chain_result()).svg)


def test_big_results_are_capped_keeping_services_and_their_paths():
    hits = [hit(i, f"host-{i:04d}", 0, criticality="low") for i in range(1, 2001)]
    hits += [hit(5000 + j, f"app-{j}", 1, (1 + j * 7,)) for j in range(200)]
    hits.append(hit(9999, "Payments", 2, (5000 + 150, 1 + 150 * 7), kind="service", criticality="critical"))
    picture = graph_svg.render({"hits": hits}, max_nodes=60, per_layer=16)
    root = parse(picture)
    names = [g.find(f"{SVG_NS}text").text for g in root.iter(f"{SVG_NS}g")]
    assert picture.aggregated and picture.total == 2201 and picture.shown <= 60
    assert "Payments" in names and "app-150" in names and "host-1051" in names  # the service's path
    more = [n for n in names if n.startswith("+")]
    assert more == ["+1,984 more", "+184 more"]  # 16 shown per column
    assert "Showing" in picture.note and "CSV" in picture.note


def test_names_are_escaped():
    evil = {"hits": [hit(1, "<script>alert(1)</script>", 0), hit(2, 'x" onload="alert(2)', 1, (1,))]}
    svg = str(graph_svg.render(evil, asset_url=lambda i: f'/assets/{i}?"><script>').svg)
    assert "<script>" not in svg and 'onload="' not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    parse(graph_svg.render(evil))  # still well-formed


def test_empty_result_is_an_empty_picture():
    picture = graph_svg.render({"hits": []})
    assert picture.total == 0 and not picture.aggregated
    assert re.match(r"<svg ", str(picture.svg))
