"""Authentication and authorisation.

* Web pages: local accounts, a signed session cookie carrying the user id,
  ``session_version`` (bumped at logout, role change, password reset and
  deactivation, so a replayed cookie is refused afterwards) and the login time
  (sessions end ``SESSION_HOURS`` after login even while in use).
* JSON API (``/api/``): ``Authorization: Bearer <token>`` only; a session
  cookie alone is never enough.  Tokens are stored as HMAC-SHA256 digests.
* Roles: viewer < editor < admin.  Every request passes ``_authorize``: reads
  need viewer, writes need editor unless the view declares its own least role
  with ``require_role`` (which then applies to every method of that view); so a
  new route cannot slip through unguarded.

Principals are looked up in short sessions of their own, never the request's
session: a refused request never takes the SQLite write lock, and recording a
token's last use can never wait on (or deadlock with) the request's writer.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash, generate_password_hash

from inventory.app_db import get_engine, get_session
from inventory.choices import ROLES, TOKEN_ROLES
from inventory.db import best_effort_write, read_session, utcnow
from inventory.models import ApiToken, User
from inventory.principal import ROLE_RANK, Principal, current_actor, current_principal  # noqa: F401
from inventory.security import limiter
from inventory.services import audit
from inventory.validation import text_problem

log = logging.getLogger("planb.auth")

TOKEN_ROLE_TO_ROLE = {"read": "viewer", "write": "editor"}
TOKEN_PREFIX = "planb_"
# Endpoints anyone may reach: the login form, static files, the health probes, and the two
# legs of single sign-on (inventory.oidc: the redirect to the provider and its way back).
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static", "health.healthz", "health.readyz",
                              "oidc.start", "oidc.callback"})
# Paths outside /api/ that machines call with a token and people may open logged in (the
# Prometheus scrape), with JSON errors either way: path -> the least role of a logged-in user
# (a token needs the view's role, as on the API).
TOKEN_OR_SESSION_PATHS = {"/metrics": "admin"}
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MIN_PASSWORD_LENGTH = 10
# Record a token's use at most this often, so read bursts do not become write bursts.
LAST_USED_RESOLUTION = timedelta(minutes=1)

F = TypeVar("F", bound=Callable[..., Any])


class AuthError(ValueError):
    """A user or token operation that cannot be done (message says why); ``status`` is the
    HTTP status a page answers with (422 for text no database can store or a line break in
    a one-line name, 400 otherwise)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def require_role(role: str) -> Callable[[F], F]:
    """Declare (and enforce) the least role a view needs, for every method.

    The declaration is authoritative: ``@require_role("viewer")`` on a view that
    accepts POST lets viewers (and read tokens) post to it, which is right for
    queries that compute without writing (and for logging out) — and wrong for
    anything that changes data.
    """
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


def session_or_token_page(view: F) -> F:
    """Mark a page served under /api/ (the interactive API reference) that a dashboard session
    may open as well as a bearer token; without either it redirects to the login form like
    any page, and it never answers JSON."""
    view._planb_session_or_token = True  # type: ignore[attr-defined]
    return view


def required_role(view: Callable[..., Any] | None, method: str) -> str:
    """The least role ``_authorize`` demands for ``method`` on ``view`` (also used by tests)."""
    declared = getattr(view, "_planb_min_role", None)
    if declared is not None:
        return declared
    return "viewer" if method.upper() in READ_METHODS else "editor"


# ---------------------------------------------------------------- passwords, users

def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def _check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1000:
        raise AuthError("password must be at most 1000 characters")


def create_user(db: so.Session, username: str, role: str, password: str | None = None,
                actor: str = "system") -> tuple[User, str]:
    """Create a user; returns it and the password (generated when not given)."""
    username = (username or "").strip()
    if not username or len(username) > 100:
        raise AuthError("username must be 1 to 100 characters")
    # Control and format characters (C0/C1 controls, bidi overrides such as U+202E) would let
    # a name read differently in the audit trail and the user list than it really is.
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in username):
        raise AuthError("username must not contain control characters or invisible formatting")
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    # 'Alice' and 'alice' would look like one person in the audit trail.
    existing = db.scalar(sa.select(User.username).where(sa.func.lower(User.username) == username.lower()))
    if existing is not None:
        raise AuthError(f"user {existing!r} already exists" if existing == username
                        else f"user {existing!r} already exists (names differ only in case)")
    password = password or generate_password()
    _check_password_strength(password)
    user = User(username=username, role=role, password_hash=hash_password(password),
                active=True, session_version=1)
    db.add(user)
    db.flush()
    audit.record(db, actor=actor, action="create", entity_type="user", entity_id=user.id,
                 summary=f"created user {username} ({role})", after=audit.snapshot(user))
    return user, password


def get_user(db: so.Session, username: str) -> User:
    user = db.scalar(sa.select(User).where(User.username == username))
    if user is None:
        raise AuthError(f"no user named {username!r}")
    return user


def _other_active_admins(db: so.Session, user: User) -> int:
    return db.scalar(sa.select(sa.func.count(User.id)).where(
        User.role == "admin", User.active.is_(True), User.id != user.id)) or 0


def set_role(db: so.Session, user: User, role: str, actor: str = "system") -> User:
    """Change a user's role; their sessions end (the cookie carries the old rights)."""
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    if user.role == "admin" and role != "admin" and user.active and _other_active_admins(db, user) == 0:
        raise AuthError("cannot demote the last active admin")
    before = audit.snapshot(user)
    user.role = role
    user.session_version += 1
    db.flush()
    audit.record(db, actor=actor, action="update", entity_type="user", entity_id=user.id,
                 summary=f"role of {user.username} set to {role}", before=before,
                 after=audit.snapshot(user))
    return user


def reset_password(db: so.Session, user: User, password: str | None = None,
                   actor: str = "system") -> str:
    """Give a user a new password (generated when not given); their sessions end."""
    password = password or generate_password()
    _check_password_strength(password)
    before = audit.snapshot(user)
    user.password_hash = hash_password(password)
    user.session_version += 1
    db.flush()
    # snapshot() leaves the hash out: the trail shows that it changed, never what to.
    audit.record(db, actor=actor, action="reset-password", entity_type="user", entity_id=user.id,
                 summary=f"password of {user.username} reset", before=before,
                 after=audit.snapshot(user))
    return password


def set_active(db: so.Session, user: User, active: bool, actor: str = "system") -> User:
    """Deactivate (log out everywhere, refuse logins) or reactivate a user."""
    if not active and user.role == "admin" and user.active and _other_active_admins(db, user) == 0:
        raise AuthError("cannot deactivate the last active admin")
    before = audit.snapshot(user)
    user.active = active
    user.session_version += 1
    db.flush()
    audit.record(db, actor=actor, action="activate" if active else "deactivate", entity_type="user",
                 entity_id=user.id,
                 summary=f"{'reactivated' if active else 'deactivated'} {user.username}",
                 before=before, after=audit.snapshot(user))
    return user


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
        return key.encode() if isinstance(key, str) else key
    # Derived, not equal, so a leaked token hash table cannot be checked with the session key.
    return hashlib.sha256(b"planb-token-hmac:" + current_app.config["SECRET_KEY"].encode()).digest()


def token_digest(token: str, key: bytes | None = None) -> str:
    return hmac.new(key or _token_key(), token.encode(), hashlib.sha256).hexdigest()


MIN_TOKEN_DAYS = 1
MAX_TOKEN_DAYS = 3660


def create_token(db: so.Session, name: str, role: str, *, expires_in_days: float | None = None,
                 expires_at: datetime | None = None, created_by: User | None = None,
                 actor: str = "system", key: bytes | None = None) -> tuple[ApiToken, str]:
    """Create an API token; the plaintext is returned once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise AuthError("token name must be 1 to 200 characters")
    problem = text_problem(name)
    if problem:
        # Refused, never cleaned (inventory.validation): the name is stored as given or not at all.
        raise AuthError(f"name: {problem}", status=422)
    if any(ord(ch) < 32 or ord(ch) == 127 or ch in "\x85\u2028\u2029" for ch in name):
        raise AuthError("name: text must be on one line, without control characters", status=422)
    if role not in TOKEN_ROLES:
        raise AuthError(f"token role must be one of {', '.join(TOKEN_ROLES)}")
    if expires_in_days is not None:
        # Whole days: a fraction (1e-9) would make a token that is expired when created.
        if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, (int, float)) \
                or not float(expires_in_days).is_integer() \
                or not MIN_TOKEN_DAYS <= expires_in_days <= MAX_TOKEN_DAYS:
            raise AuthError(f"expires_days: expiry must be a whole number of days from "
                            f"{MIN_TOKEN_DAYS} to {MAX_TOKEN_DAYS}")
        expires_at = utcnow() + timedelta(days=int(expires_in_days))
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
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
    db.flush()
    audit.record(db, actor=actor, action="revoke", entity_type="api_token", entity_id=token.id,
                 summary=f"revoked token {token.name}", before=before, after=audit.snapshot(token))
    return token


def token_state(token: ApiToken, now: datetime | None = None) -> str:
    """'active', 'expired' or 'revoked' (for lists)."""
    now = now or utcnow()
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"


def _principal_from_bearer(header: str) -> Principal | None:
    scheme, _, plaintext = header.partition(" ")
    plaintext = plaintext.strip()
    if scheme.lower() != "bearer" or not plaintext or len(plaintext) > 200:
        return None
    digest = token_digest(plaintext)
    engine = get_engine()
    now = utcnow()
    # Values are read inside the session: read_session rolls back, which expires objects.
    with read_session(engine) as db:
        token = db.scalar(sa.select(ApiToken).where(ApiToken.token_hash == digest))
        if token is None or token_state(token, now) != "active":
            return None
        principal = Principal(kind="token", name=token.name, role=TOKEN_ROLE_TO_ROLE[token.role],
                              token_id=token.id)
        stale = token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION
    if stale:
        best_effort_write(engine, sa.update(ApiToken).where(ApiToken.id == principal.token_id)
                          .values(last_used_at=now))
    return principal


def _session_expired() -> bool:
    issued = session.get("iat")
    hours = float(current_app.config.get("SESSION_HOURS", 12))
    return not isinstance(issued, (int, float)) or time.time() - issued > hours * 3600


def _principal_from_session() -> Principal | None:
    uid = session.get("uid")
    if uid is None:
        return None
    if _session_expired():
        session.clear()
        return None
    with read_session(get_engine()) as db:
        user = db.get(User, uid) if isinstance(uid, int) else None
        if user is None or not user.active or session.get("sv") != user.session_version:
            session.clear()
            return None
        return Principal(kind="user", name=user.username, role=user.role, user_id=user.id)


def _is_api_request() -> bool:
    return request.path == "/api" or request.path.startswith("/api/") \
        or request.path in TOKEN_OR_SESSION_PATHS


def _unauthenticated(page: bool = False):  # type: ignore[no-untyped-def]
    if _is_api_request() and not page:
        response = jsonify(error="unauthorized",
                           message="send an API token as 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="planb"'
        return response, 401
    if request.method in READ_METHODS:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return render_template("auth/error.html", title="Login required",
                           message="Log in first; your session may have ended."), 401


def _forbidden(role: str):  # type: ignore[no-untyped-def]
    message = f"this action needs the {role} role"
    if _is_api_request():
        return jsonify(error="forbidden", message=message), 403
    return render_template("auth/forbidden.html", message=message), 403


def _authorize():  # type: ignore[no-untyped-def]
    endpoint = request.endpoint
    if endpoint in PUBLIC_ENDPOINTS:
        return None
    # Unknown URLs (endpoint None) are authenticated too, so 404s reveal nothing to strangers.
    # A page about the API (the interactive reference: auth.session_or_token_page) takes a
    # session like any page and a token like the API; /metrics takes either, with JSON errors.
    page = getattr(current_app.view_functions.get(endpoint or ""), "_planb_session_or_token", False)
    if request.path in TOKEN_OR_SESSION_PATHS and "Authorization" not in request.headers:
        principal = _principal_from_session()
    elif _is_api_request() and not (page and "Authorization" not in request.headers):
        principal = _principal_from_bearer(request.headers.get("Authorization", ""))
    else:
        principal = _principal_from_session()
    if principal is None:
        return _unauthenticated(page)
    g.principal = principal
    if endpoint is None:
        return None
    needed = required_role(current_app.view_functions.get(endpoint), request.method)
    if principal.kind == "user" and request.path in TOKEN_OR_SESSION_PATHS:
        needed = max(needed, TOKEN_OR_SESSION_PATHS[request.path], key=ROLE_RANK.__getitem__)
    if not principal.can(needed):
        log.info("forbidden", extra={"needed_role": needed, "endpoint": endpoint})
        return _forbidden(needed)
    return None


# ---------------------------------------------------------------- login / logout

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    # Only same-site relative paths: never an open redirect.  Browsers drop tabs and
    # newlines and treat '\' like '/', so "/\t/evil.example" would become "//evil.example".
    if target and target.startswith("/") and target.isprintable() and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and not target.startswith("//"):
            return target
    return url_for("overview.index")


def begin_session(user: User) -> None:
    """Log ``user`` in on this browser: a fresh session cookie (a fixed one is never reused)."""
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["sv"] = user.session_version
    session["iat"] = int(time.time())


def local_login_allowed(user: User) -> bool:
    """``PLANB_LOCAL_LOGIN``: all (default), admins (break-glass only) or none."""
    mode = current_app.config.get("LOCAL_LOGIN") or "all"
    return mode == "all" or (mode == "admins" and user.role == "admin")


def _login_context() -> dict[str, Any]:
    sso = current_app.extensions.get("planb_oidc_settings")
    return {"sso_name": sso.provider_name if sso else None,
            "local_login": current_app.config.get("LOCAL_LOGIN") or "all"}


def _count_failed_login(response: Response) -> bool:
    # Only failed attempts use up the allowance; people who type their password right
    # are never locked out by a shared NAT address.
    return response.status_code != 302


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config.get("LOGIN_RATE_LIMIT") or "10 per minute",
               methods=["POST"], deduct_when=_count_failed_login,
               error_message="too many failed login attempts")
def login():  # type: ignore[no-untyped-def]
    error = None
    if request.method == "POST":
        username = request.form.get("username", "")[:200]
        password = request.form.get("password", "")[:1000]
        db = get_session()
        user = authenticate(db, username, password)
        # The same answer whether the password or the PLANB_LOCAL_LOGIN mode refused it.
        if user is None or not local_login_allowed(user):
            error = "Unknown user or wrong password."
            log.warning("login failed", extra={"username": username, "remote_addr": request.remote_addr,
                                               "local_login": current_app.config.get("LOCAL_LOGIN") or "all"})
        else:
            user.last_login_at = utcnow()
            db.commit()
            begin_session(user)
            log.info("login", extra={"username": user.username, "remote_addr": request.remote_addr})
            return redirect(safe_next(request.args.get("next")))
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
        log.info("logout", extra={"username": principal.name})
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.before_request(_authorize)
    app.context_processor(_login_context)  # the login page (also as the 429 and SSO error pages)
