"""Cross-cutting web security: CSRF, cookie flags, headers, body size, rate limits, proxies.

* CSRF: Flask-WTF ``CSRFProtect`` on every form; only the token API blueprints are
  exempt (they never accept a cookie, so there is nothing to forge).
* Cookies: HttpOnly, SameSite=Lax, and Secure when the request came over TLS
  (``PLANB_SECURE_COOKIES=auto``), always (``true``) or never (``false``); any other
  value stops start-up rather than quietly dropping the flag.
* Behind a reverse proxy, ``PLANB_TRUSTED_PROXIES=N`` trusts the ``X-Forwarded-*``
  headers set by the N proxies in front of the app (werkzeug's ``ProxyFix``), so
  ``request.is_secure`` and the client address (used by the login rate limit) are
  right.  Unset (0), those headers are ignored: a client could forge them.
* Headers: a Content-Security-Policy without inline scripts or styles,
  nosniff, frame-ancestors 'none', Referrer-Policy, no-store for pages, HSTS over TLS.
* Bodies above ``MAX_CONTENT_LENGTH`` get 413 (JSON for the API, a page for the web).
"""
from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask, Response, abort, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from inventory import config as config_module
from inventory.ids import MAX_ID

log = logging.getLogger("planb.security")

csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000"


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` URL parts limited to what an id column can hold."""

    def __init__(self, map, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


class PlanBSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the Secure flag decided per request.

    ``PLANB_SECURE_COOKIES=auto`` marks the cookie Secure whenever the request came
    over TLS (directly, or through a trusted proxy that says so), so the same
    deployment works on http://127.0.0.1 for a demo and behind TLS in production.
    """

    def get_cookie_secure(self, app: Flask) -> bool:  # type: ignore[override]
        if app.config.get("SESSION_COOKIE_SECURE"):
            return True
        return app.config.get("SECURE_COOKIES") == "auto" and request.is_secure


def _is_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def _setting(app: Flask, name: str) -> object:
    """``app.config[name]`` as its PLANB_ setting's parser reads it (the default when unset).

    ``create_app`` has checked these already; parsing again here keeps an app built any
    other way from running with, say, Secure cookies silently off.
    """
    value = app.config.get(name)
    if value is None or not str(value).strip():
        return config_module.get(name, environ={})
    return config_module.parse(name, str(value))


def trusted_proxies(app: Flask) -> int:
    """How many reverse proxies' ``X-Forwarded-*`` headers to trust (0: none)."""
    return int(_setting(app, "TRUSTED_PROXIES"))  # type: ignore[call-overload]


def init_app(app: Flask) -> None:
    # 'auto', 'true' or 'false': any other spelling stopped start-up (config.ConfigError).
    secure = str(_setting(app, "SECURE_COOKIES"))
    # Assigned, not setdefault: Flask's defaults already hold these keys (SameSite None,
    # a 31-day lifetime), so setdefault would silently keep the weaker values.
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_NAME"] = "planb_session"
    app.config["SESSION_COOKIE_SECURE"] = secure == "true"
    app.config["SECURE_COOKIES"] = secure
    app.session_interface = PlanBSessionInterface()
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=_setting(app, "SESSION_HOURS"))  # type: ignore[arg-type]
    app.config["WTF_CSRF_TIME_LIMIT"] = None  # the CSRF token lives as long as the session
    app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)

    # Before any route is added: every <int:id> in the app gets the bound.
    app.url_map.converters["int"] = BoundedIntConverter

    proxies = trusted_proxies(app)
    app.config["TRUSTED_PROXIES"] = proxies
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies,  # type: ignore[method-assign]
                                x_host=proxies, x_port=proxies, x_prefix=proxies)

    @app.before_request
    def _refuse_oversized_body() -> None:
        # Werkzeug only enforces MAX_CONTENT_LENGTH when a view reads the body; refuse
        # up front so no view (or a view that reads request.stream) ever sees it.
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if limit and request.content_length is not None and request.content_length > limit:
            abort(413)

    csrf.init_app(app)
    limiter.init_app(app)

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.endpoint != "static":
            # Pages and API answers describe a company's weak points: keep them out of caches.
            response.headers.setdefault("Cache-Control", "no-store")
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        if secure == "auto" and request.is_secure:
            # Any cookie set by a view or extension (the session cookie is set later, by
            # PlanBSessionInterface): mark it Secure behind TLS too.
            cookies = response.headers.getlist("Set-Cookie")
            if cookies:
                del response.headers["Set-Cookie"]
                for cookie in cookies:
                    if "; secure" not in cookie.lower():
                        cookie += "; Secure"
                    response.headers.add("Set-Cookie", cookie)
        return response

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError):  # type: ignore[no-untyped-def]
        log.warning("csrf refused", extra={"reason": error.description})
        if _is_api():
            return jsonify(error="csrf", message=error.description), 400
        return render_template("auth/error.html", title="Form expired",
                               message=f"The form could not be accepted ({error.description}). "
                                       "Go back, reload the page and try again."), 400

    @app.errorhandler(413)
    def _too_large(_error):  # type: ignore[no-untyped-def]
        limit = app.config.get("MAX_CONTENT_LENGTH")
        message = f"request body is larger than the {limit}-byte limit"
        if _is_api():
            return jsonify(error="payload_too_large", message=message), 413
        return render_template("auth/error.html", title="Upload too large",
                               message=f"The {message}."), 413

    @app.errorhandler(429)
    def _rate_limited(error):  # type: ignore[no-untyped-def]
        message = f"Too many failed attempts ({error.description}); wait a minute and try again."
        if _is_api():
            return jsonify(error="rate_limited", message=message), 429
        return render_template("auth/login.html", error=message), 429

    @app.errorhandler(HTTPException)
    def _api_http_error(error: HTTPException):  # type: ignore[no-untyped-def]
        # Every API error is JSON in the one error shape (error, message); pages keep
        # werkzeug's HTML.  More specific handlers (404, 405 in inventory.api) win.
        if not _is_api():
            return error
        name = (error.name or "error").lower().replace(" ", "_")
        response = jsonify(error=name, message=error.description or error.name)
        response.status_code = error.code or 500
        for header, value in error.get_headers():
            if header.lower() != "content-type":
                response.headers[header] = value
        return response

    @app.errorhandler(OverflowError)
    @app.errorhandler(sa.exc.DataError)
    def _out_of_range(error: Exception):  # type: ignore[no-untyped-def]
        # A value the database cannot hold (a 30-digit number, a date out of range)
        # reached it unvalidated: the request was bad, so say so (400), and log the
        # place so the missing validation gets added.
        log.warning("input the database refused", exc_info=error)
        from inventory.app_db import get_session
        get_session().rollback()
        message = "a value in the request is out of range or of the wrong type"
        if _is_api():
            return jsonify(error="bad_request", message=message), 400
        return render_template("auth/error.html", title="Bad request", message=message.capitalize() + "."), 400

    @app.errorhandler(500)
    def _internal_error(error):  # type: ignore[no-untyped-def]
        # Flask has already logged the exception with its traceback (app.logger).
        if _is_api():
            return jsonify(error="internal_error", message="internal error; see the server log"), 500
        return render_template("auth/error.html", title="Something went wrong",
                               message="The server hit an error; it has been logged."), 500
