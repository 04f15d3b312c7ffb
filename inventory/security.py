"""Cross-cutting web security: CSRF, cookie flags, headers, body size, rate limits."""
from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect

csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def init_app(app: Flask) -> None:
    secure = app.config.get("SECURE_COOKIES", "auto")
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("SESSION_COOKIE_NAME", "planb_session")
    if secure == "true":
        app.config["SESSION_COOKIE_SECURE"] = True
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", timedelta(hours=app.config.get("SESSION_HOURS", 12)))
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # tied to the session instead
    app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    csrf.init_app(app)
    limiter.init_app(app)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if secure == "auto" and request.is_secure:
            # Behind TLS (or a proxy that says so): mark every cookie Secure.
            cookies = response.headers.getlist("Set-Cookie")
            if cookies:
                del response.headers["Set-Cookie"]
                for cookie in cookies:
                    if "; Secure" not in cookie:
                        cookie += "; Secure"
                    response.headers.add("Set-Cookie", cookie)
        return response

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError):  # type: ignore[no-untyped-def]
        if request.path.startswith("/api/"):
            return jsonify(error="csrf", message=error.description), 400
        return error.description, 400

    @app.errorhandler(413)
    def _too_large(_error):  # type: ignore[no-untyped-def]
        limit = app.config.get("MAX_CONTENT_LENGTH")
        return jsonify(error="payload_too_large",
                       message=f"request body is larger than the {limit}-byte limit"), 413

    @app.errorhandler(429)
    def _rate_limited(error):  # type: ignore[no-untyped-def]
        message = f"too many attempts ({error.description}); wait a minute and try again"
        if request.path.startswith("/api/"):
            return jsonify(error="rate_limited", message=message), 429
        from flask import render_template
        return render_template("auth/login.html", error=message), 429
