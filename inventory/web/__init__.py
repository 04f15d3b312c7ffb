"""Server-rendered pages, one blueprint per area."""
from __future__ import annotations

import importlib
import importlib.util

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from inventory.web import health, overview

    init_template_helpers(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(overview.bp)
    # Areas added by later modules register here (one blueprint each).
    for module_name in ("assets", "vendors", "impact", "incidents", "plans", "updates", "runs",
                        "risk", "admin"):
        module = _optional(f"inventory.web.{module_name}")
        if module is not None:
            app.register_blueprint(module.bp)


def _optional(name: str):  # type: ignore[no-untyped-def]
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


# Main navigation, in the order an incident commander reaches for it.  Areas
# whose blueprint is not registered are left out.
NAV = [
    ("overview.index", "Overview"),
    ("impact.index", "Blast radius"),
    ("incidents.index", "Incidents"),
    ("assets.index", "Assets"),
    ("vendors.index", "Vendors"),
    ("plans.index", "Plans"),
    ("updates.index", "Update testing"),
    ("risk.index", "Risk reviews"),
    ("runs.index", "Collection runs"),
    ("admin.index", "Admin"),
]


def init_template_helpers(app: Flask) -> None:
    from inventory import __version__

    @app.context_processor
    def _helpers():  # type: ignore[no-untyped-def]
        from flask import g

        def nav_items() -> list[tuple[str, str]]:
            principal = g.get("principal")
            items = []
            for endpoint, label in NAV:
                if endpoint not in app.view_functions:
                    continue
                if endpoint == "admin.index" and (principal is None or principal.role != "admin"):
                    continue
                items.append((endpoint, label))
            return items

        return {"nav_items": nav_items, "planb_version": __version__}
