"""Authentication and authorisation.

* Web pages: local accounts, a signed session cookie carrying the user id and
  ``session_version`` (bumped at logout, so a replayed cookie is refused).
* JSON API (``/api/``): ``Authorization: Bearer <token>`` only; a session
  cookie alone is never enough.  Tokens are stored as HMAC-SHA256 digests.
* Roles: viewer < editor < admin.  Every request passes ``_authorize``: reads
  need viewer, writes need editor unless the view declares otherwise with
  ``require_role``; so a new route cannot slip through unguarded.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import wraps
from typing import Any, Callable, TypeVar

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import (Blueprint, Flask, current_app, flash, g, jsonify, redirect, render_template,
                   request, session, url_for)
from werkzeug.security import check_password_hash, generate_password_hash

from inventory.app_db import get_session
from inventory.choices import ROLES, TOKEN_ROLES
from inventory.db import utcnow
from inventory.models import ApiToken, User
from inventory.services import audit
from inventory.security import limiter

ROLE_RANK = {"viewer": 1, "editor": 2, "admin": 3}
TOKEN_ROLE_TO_ROLE = {"read": "viewer", "write": "editor"}
TOKEN_PREFIX = "planb_"
# Endpoints anyone may reach: the login form, static files, the health probe.
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static", "health.healthz"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

F = TypeVar("F", bound=Callable[..., Any])


class AuthError(ValueError):
    """A user or token operation that cannot be done (message says why)."""


@dataclass(frozen=True)
class Principal:
    kind: str  # "user", "token" or "cli"
    name: str
    role: str
    user_id: int | None = None
    token_id: int | None = None

    def can(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def current_principal() -> Principal | None:
    return g.get("principal")


def current_actor() -> str:
    """The name written into the audit trail for the current request or command."""
    principal = g.get("principal") if g else None
    if principal is None:
        return "system"
    return principal.name if principal.kind == "user" else f"{principal.kind}:{principal.name}"


def require_role(role: str) -> Callable[[F], F]:
    """Declare (and enforce) the least role a view needs, for every method."""
    if role not in ROLE_RANK:
        raise ValueError(role)

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if principal is None or not principal.can(role):
                return _forbidden(role)
            return view(*args, **kwargs)

        wrapper._planb_min_role = role  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


# ---------------------------------------------------------------- passwords, users

def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def create_user(db: so.Session, username: str, role: str, password: str | None = None,
                actor: str = "system") -> tuple[User, str]:
    """Create a user; returns it and the password (generated when not given)."""
    username = (username or "").strip()
    if not username or len(username) > 100:
        raise AuthError("username must be 1 to 100 characters")
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    if db.scalar(sa.select(User.id).where(User.username == username)) is not None:
        raise AuthError(f"user {username!r} already exists")
    password = password or generate_password()
    if len(password) < 10:
        raise AuthError("password must be at least 10 characters")
    user = User(username=username, role=role, password_hash=hash_password(password))
    db.add(user)
    db.flush()
    audit.record(db, actor=actor, action="create", entity_type="user", entity_id=user.id,
                 summary=f"created user {username} ({role})", after=audit.snapshot(user))
    return user, password


def authenticate(db: so.Session, username: str, password: str) -> User | None:
    user = db.scalar(sa.select(User).where(User.username == username))
    if user is None or not user.active:
        # Spend the same time as a real check so usernames cannot be probed by timing.
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


# ---------------------------------------------------------------- API tokens

def _token_key() -> bytes:
    key = current_app.config.get("TOKEN_HMAC_KEY")
    if key:
        return key.encode()
    # Derived, not equal, so a leaked token hash table cannot be checked with the session key.
    return hashlib.sha256(b"planb-token-hmac:" + current_app.config["SECRET_KEY"].encode()).digest()


def token_digest(token: str, key: bytes | None = None) -> str:
    return hmac.new(key or _token_key(), token.encode(), hashlib.sha256).hexdigest()


def create_token(db: so.Session, name: str, role: str, *, expires_in_days: float | None = None,
                 created_by: User | None = None, actor: str = "system",
                 key: bytes | None = None) -> tuple[ApiToken, str]:
    """Create an API token; the plaintext is returned once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise AuthError("token name must be 1 to 200 characters")
    if role not in TOKEN_ROLES:
        raise AuthError(f"token role must be one of {', '.join(TOKEN_ROLES)}")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    token = ApiToken(name=name, role=role, prefix=plaintext[:12], token_hash=token_digest(plaintext, key),
                     created_by_id=created_by.id if created_by else None, expires_at=expires_at)
    db.add(token)
    db.flush()
    audit.record(db, actor=actor, action="create", entity_type="api_token", entity_id=token.id,
                 summary=f"created {role} token {name}", after=audit.snapshot(token))
    return token, plaintext


def revoke_token(db: so.Session, token_id: int, actor: str = "system") -> ApiToken:
    token = db.get(ApiToken, token_id)
    if token is None:
        raise AuthError(f"no token with id {token_id}")
    before = audit.snapshot(token)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    audit.record(db, actor=actor, action="revoke", entity_type="api_token", entity_id=token.id,
                 summary=f"revoked token {token.name}", before=before, after=audit.snapshot(token))
    return token


def _principal_from_bearer(header: str) -> Principal | None:
    if not header.lower().startswith("bearer "):
        return None
    plaintext = header[7:].strip()
    if not plaintext:
        return None
    db = get_session()
    token = db.scalar(sa.select(ApiToken).where(ApiToken.token_hash == token_digest(plaintext)))
    now = utcnow()
    if token is None or token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
        return None
    # Record use at most once a minute so read bursts do not become write bursts.
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        from inventory.app_db import get_engine
        from inventory.db import write_session
        with write_session(get_engine()) as wdb:
            wdb.execute(sa.update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
    return Principal(kind="token", name=token.name, role=TOKEN_ROLE_TO_ROLE[token.role], token_id=token.id)


def _principal_from_session() -> Principal | None:
    uid = session.get("uid")
    if uid is None:
        return None
    db = get_session()
    user = db.get(User, uid)
    if user is None or not user.active or session.get("sv") != user.session_version:
        session.clear()
        return None
    return Principal(kind="user", name=user.username, role=user.role, user_id=user.id)


def _is_api_request() -> bool:
    return request.path.startswith("/api/")


def _unauthenticated():  # type: ignore[no-untyped-def]
    if _is_api_request():
        response = jsonify(error="unauthorized",
                           message="send an API token as 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="planb"'
        return response, 401
    if request.method in READ_METHODS:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return "login required", 401


def _forbidden(role: str):  # type: ignore[no-untyped-def]
    message = f"this action needs the {role} role"
    if _is_api_request():
        return jsonify(error="forbidden", message=message), 403
    return render_template("auth/forbidden.html", message=message), 403


def _authorize():  # type: ignore[no-untyped-def]
    endpoint = request.endpoint
    if endpoint is None:  # 404/405: let Flask answer, after authentication below
        pass
    elif endpoint in PUBLIC_ENDPOINTS:
        return None
    if _is_api_request():
        principal = _principal_from_bearer(request.headers.get("Authorization", ""))
    else:
        principal = _principal_from_session()
    if principal is None:
        return _unauthenticated()
    g.principal = principal
    if endpoint is None:
        return None
    view = current_app.view_functions.get(endpoint)
    needed = getattr(view, "_planb_min_role", None)
    if needed is None:
        needed = "viewer" if request.method in READ_METHODS else "editor"
    if not principal.can(needed):
        return _forbidden(needed)
    return None


# ---------------------------------------------------------------- login / logout

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    # Only same-site relative paths: never an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("overview.index")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config.get("LOGIN_RATE_LIMIT", "10 per minute"),
               methods=["POST"], error_message="too many login attempts")
def login():  # type: ignore[no-untyped-def]
    error = None
    if request.method == "POST":
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        db = get_session()
        user = authenticate(db, username, password)
        if user is None:
            error = "Unknown user or wrong password."
        else:
            user.last_login_at = utcnow()
            db.commit()
            session.clear()
            session.permanent = True
            session["uid"] = user.id
            session["sv"] = user.session_version
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", error=error), (401 if error else 200)


@bp.route("/logout", methods=["POST"])
@require_role("viewer")
def logout():  # type: ignore[no-untyped-def]
    principal = current_principal()
    if principal and principal.user_id:
        db = get_session()
        user = db.get(User, principal.user_id)
        if user is not None:
            # Invalidate every cookie issued so far, including copies an attacker kept.
            user.session_version += 1
            db.commit()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.before_request(_authorize)
