"""The demo estate's digital EKS cluster replays a half-finished Cilium rollout (worked out from the
database's installations and members, then asked of the impact engine)."""
from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.impact import blast_radius
from inventory.models import Asset, Dependency, Installation, Product

BOOKING = "k8s:digital:deployment:booking/"


def test_cilium_rollout_in_the_demo(demo_url: str) -> None:
    engine = make_engine(demo_url)
    db = so.Session(engine)
    try:
        cilium = dict(db.execute(sa.select(Asset.natural_key, Installation.version)
                                 .join(Installation, Installation.asset_id == Asset.id).join(Product)
                                 .where(Product.name == "Cilium", Asset.kind == "vm")).all())
        new_nodes = {k for k, v in cilium.items() if v == "1.15.6"}
        assert len(cilium) == 6 and len(new_nodes) == 2
        pod, node = sa.orm.aliased(Asset), sa.orm.aliased(Asset)
        on_new = set(db.scalars(sa.select(pod.natural_key).join(Dependency, Dependency.dependent_id == pod.id)
                                .join(node, node.id == Dependency.dependency_id)
                                .where(Dependency.kind == "runs-on", node.natural_key.in_(new_nodes))))

        result = blast_radius(db, {"vendor": "Cilium", "version": ">=1.15.6"})   # the vendor's alias
        hits = {h.natural_key: h.status for h in result.hits}

        assert result.scope.vendor == "Isovalent"
        assert {k for k, h in hits.items() if k in cilium} == new_nodes
        assert on_new and all(hits[k] == "down" for k in new_nodes | on_new)
        assert hits[BOOKING + "booking-api"] == "down"       # 2 of 4 pods there, min_up 3
        assert hits[BOOKING + "fare-search"] == "degraded"   # 1 of 3 there, min_up 2
        assert BOOKING + "notifications" not in hits         # no pod there
        assert hits["service:mobile-booking"] == "down"
        assert hits["k8s:digital:daemonset:kube-system/cilium"] == "degraded"
    finally:
        db.close()
        engine.dispose()
