"""Server-rendered pages, one blueprint per area."""
from __future__ import annotations

import importlib
import importlib.util

from flask import Blueprint, Flask
from werkzeug.exceptions import BadRequest, HTTPException, NotFound


def register_blueprints(app: Flask) -> None:
    from inventory.web import health, overview

    init_template_helpers(app)
    _share_compiled_templates(app)
    app.register_blueprint(health.bp)
    _add_error_pages(overview.bp)
    app.register_blueprint(overview.bp)
    # Areas added by later modules register here (one blueprint each).
    for module_name in ("assets", "vendors", "impact", "incidents", "plans", "updates", "runs",
                        "risk", "admin", "metrics"):
        module = _optional(f"inventory.web.{module_name}")
        if module is not None:
            _add_error_pages(module.bp)
            app.register_blueprint(module.bp)


def _share_compiled_templates(app: Flask) -> None:
    """Jinja compiles each template on a worker's first render (a few hundred ms for a page
    and its base on a busy machine); the compiled code is kept in the instance folder so new
    workers and restarts load it instead.  Only a folder of our own that nobody else can
    write is used (its files are loaded as code)."""
    import os
    import stat
    from pathlib import Path

    from jinja2 import FileSystemBytecodeCache

    folder = Path(app.instance_path) / "template-cache"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.stat()
    except OSError:
        return
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return
    app.jinja_env.bytecode_cache = FileSystemBytecodeCache(str(folder))


# Errors a page's view raises (abort(404) for an unknown id, abort(400)) get the app's styled
# error page instead of werkzeug's plain one.  Blueprint-scoped, so the API's JSON errors and
# the app-wide handlers stay as they are.
ERROR_PAGE_CODES = (400, 404)


def render_error_page(error: HTTPException):  # type: ignore[no-untyped-def]
    from flask import current_app, render_template

    # A more specific app-wide handler (the CSRF "Form expired" page) keeps its page.
    specific = current_app.error_handler_spec[None].get(error.code, {}).get(type(error))
    if specific is not None and type(error) not in (BadRequest, NotFound):
        return specific(error)
    return render_template("auth/error.html", title=f"{error.code} {error.name}",
                           message=error.description), error.code


def _add_error_pages(bp: Blueprint) -> None:
    if getattr(bp, "_planb_error_pages", False):  # a blueprint object outlives each test app
        return
    for code in ERROR_PAGE_CODES:
        bp.register_error_handler(code, render_error_page)
    bp._planb_error_pages = True  # type: ignore[attr-defined]


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
