"""A small OpenID Connect provider on a loopback port, for the single sign-on tests.

A real HTTP server (werkzeug, in a thread) that serves what a real provider serves:
the discovery document (``/.well-known/openid-configuration``), its JWKS, an
authorization endpoint with a login form, and a token endpoint that checks the client
secret (``client_secret_basic``), the redirect URI and the PKCE verifier (S256), and
returns ID tokens signed with RS256 (joserfc).  Tests can make the next ID token
wrong on purpose (``tamper``): another audience, expired, another nonce or issuer.
"""
from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

CLIENT_ID = "planb-test"
CLIENT_SECRET = "test-client-secret-0123456789"


@dataclass
class IdpUser:
    password: str
    sub: str
    email: str
    groups: list[str] = field(default_factory=list)
    name: str | None = None


@dataclass
class Provider:
    issuer: str = ""
    users: dict[str, IdpUser] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Applied to the next ID token only: claims to change, e.g. {"aud": "someone-else"}.
    tamper: dict[str, Any] = field(default_factory=dict)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "test-key-1"}))
    # Keys the JWKS publishes (default: the signing key); a test can publish another one.
    published: list[RSAKey] | None = None

    # ---------------------------------------------------------------- endpoints

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"], "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"], "grant_types_supported": ["authorization_code"]}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        path = request.path
        if path == "/.well-known/openid-configuration":
            response = _json(self.discovery())
        elif path == "/jwks":
            response = _json(KeySet(self.published or [self.key]).as_dict(private=False))
        elif path == "/authorize":
            response = self.authorize(request)
        elif path == "/token" and request.method == "POST":
            response = self.token(request)
        else:
            response = Response("not found", status=404)
        return response(environ, start_response)

    def authorize(self, request: Request) -> Response:
        params = request.args if request.method == "GET" else request.form
        if params.get("client_id") != CLIENT_ID or params.get("response_type") != "code":
            return Response("unknown client or response type", status=400)
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return Response("PKCE (S256) required", status=400)
        error = ""
        if request.method == "POST":
            user = self.users.get(request.form.get("username", ""))
            if user is not None and secrets.compare_digest(user.password, request.form.get("password", "")):
                code = secrets.token_urlsafe(24)
                self.codes[code] = {"user": user, "nonce": params.get("nonce"),
                                    "redirect_uri": params["redirect_uri"], "challenge": params["code_challenge"],
                                    "scope": params.get("scope", "")}
                query = urlencode({"code": code, "state": params.get("state", "")})
                return Response(status=302, headers={"Location": f"{params['redirect_uri']}?{query}"})
            error = "<p role='alert'>Invalid username or password.</p>"
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in params.items(multi=True) if k not in ("username", "password"))
        page = (f"<!doctype html><title>Test IdP</title><h1>Test identity provider</h1>{error}"
                f"<form method='post' action='/authorize'>{hidden}"
                "<label for='u'>Email or username</label><input id='u' name='username'>"
                "<label for='p'>Secret</label><input id='p' name='password' type='password'>"
                "<button type='submit'>Continue</button></form>")
        return Response(page, content_type="text/html")

    def token(self, request: Request) -> Response:
        self.token_requests.append(dict(request.form))
        auth = request.headers.get("Authorization", "")
        client_id, client_secret = request.form.get("client_id"), request.form.get("client_secret")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
            return _json({"error": "invalid_client"}, 401)
        grant = self.codes.pop(request.form.get("code", ""), None)
        if grant is None or request.form.get("grant_type") != "authorization_code":
            return _json({"error": "invalid_grant"}, 400)
        if request.form.get("redirect_uri") != grant["redirect_uri"]:
            return _json({"error": "invalid_grant", "error_description": "redirect_uri mismatch"}, 400)
        verifier = request.form.get("code_verifier", "")
        expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or expected != grant["challenge"]:
            return _json({"error": "invalid_grant", "error_description": "PKCE verification failed"}, 400)
        user: IdpUser = grant["user"]
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user.sub, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                  "nonce": grant["nonce"], "email": user.email, "preferred_username": user.email.split("@")[0],
                  "groups": user.groups, "auth_time": now}
        if user.name:
            claims["name"] = user.name
        claims.update(self.tamper)
        claims = {k: v for k, v in claims.items() if v is not None}
        self.tamper = {}
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        return _json({"access_token": secrets.token_urlsafe(20), "token_type": "Bearer", "expires_in": 300,
                      "id_token": id_token, "scope": grant["scope"]})


def _json(data: Any, status: int = 200) -> Response:
    import json

    return Response(json.dumps(data), status=status, content_type="application/json",
                    headers={"Cache-Control": "no-store"})


class RunningProvider:
    """The provider served on 127.0.0.1 in a background thread."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.server = make_server("127.0.0.1", 0, provider, threaded=True)
        provider.issuer = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-idp", daemon=True)

    def __enter__(self) -> Provider:
        self.thread.start()
        return self.provider

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
