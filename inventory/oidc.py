"""Single sign-on with OpenID Connect (Authlib): authorization code flow with PKCE.

Switched on by ``PLANB_OIDC_ISSUER`` with ``PLANB_OIDC_CLIENT_ID`` and
``PLANB_OIDC_CLIENT_SECRET`` (all three or none; checked at start-up).  The login
page then shows *Sign in with <provider>*:

1. ``GET /login/sso`` redirects to the provider's authorization endpoint (from its
   discovery document) with ``state``, ``nonce`` and an S256 ``code_challenge``, all
   kept in the signed session cookie by Authlib.
2. ``GET /login/sso/callback`` exchanges the code (with the PKCE verifier) for tokens
   and validates the ID token: RS256/ES256 signature against the provider's JWKS,
   issuer, audience (our client id), expiry and the nonce.  Anything wrong ends in the
   login page with a message, an audit event and a log line; nothing is created.
3. The user is found by (issuer, ``sub``) — never by name or e-mail, so an IdP account
   cannot take over a local account — or created; the role comes from the groups claim
   (``PLANB_OIDC_GROUPS_CLAIM``) through ``PLANB_OIDC_ROLE_MAP``, the highest mapped role
   winning, else ``PLANB_OIDC_DEFAULT_ROLE`` (``none``: refused).  The role follows the
   provider on every login (a change ends the user's other sessions).

SSO users have no usable local password.  Local accounts stay as a break-glass path:
``PLANB_LOCAL_LOGIN=admins`` keeps password login for admins only, ``none`` switches it
off; ``planb users create NAME --admin`` / ``reset-password`` always work.
"""
from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Blueprint, Flask, current_app, redirect, render_template, request, session, url_for

from inventory import config as config_module
from inventory.app_db import get_session
from inventory.auth import ROLE_RANK, begin_session, create_user, safe_next
from inventory.db import utcnow
from inventory.models import ExternalIdentity, User
from inventory.security import limiter
from inventory.services import audit

log = logging.getLogger("planb.oidc")

bp = Blueprint("oidc", __name__)
CLIENT_NAME = "oidc"
# A password hash no password matches (werkzeug refuses it): SSO users log in through the IdP only.
NO_PASSWORD = "!sso"
LEEWAY_SECONDS = 60


class SsoRefused(Exception):
    """A sign-in that must not succeed; the message is shown on the login page.
    ``end_sessions_of``: a known user whose open sessions must end too (no access any more)."""

    def __init__(self, message: str, end_sessions_of: int | None = None) -> None:
        super().__init__(message)
        self.end_sessions_of = end_sessions_of


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    role_map: Mapping[str, str]
    groups_claim: str
    default_role: str  # viewer, editor or none
    provider_name: str
    scopes: str

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> "OidcSettings | None":
        if not values.get("OIDC_ISSUER"):
            return None
        missing = [n for n in config_module.OIDC_REQUIRED if not values.get(n)]
        if missing:
            raise config_module.ConfigError([
                f"{config_module.ENV_PREFIX}{n}: is not set but {config_module.ENV_PREFIX}OIDC_ISSUER is; "
                f"expected all of {', '.join(config_module.ENV_PREFIX + m for m in config_module.OIDC_REQUIRED)}"
                for n in missing])
        issuer = str(values["OIDC_ISSUER"]).rstrip("/")
        return cls(issuer=issuer, client_id=str(values["OIDC_CLIENT_ID"]),
                   client_secret=str(values["OIDC_CLIENT_SECRET"]),
                   role_map=dict(values.get("OIDC_ROLE_MAP") or {}),
                   groups_claim=str(values.get("OIDC_GROUPS_CLAIM") or "groups"),
                   default_role=str(values.get("OIDC_DEFAULT_ROLE") or "viewer"),
                   provider_name=str(values.get("OIDC_PROVIDER_NAME") or urlsplit(issuer).hostname or issuer),
                   scopes=str(values.get("OIDC_SCOPES") or "openid email profile"))


def settings(app: Flask | None = None) -> OidcSettings | None:
    return (app or current_app).extensions.get("planb_oidc_settings")


# ---------------------------------------------------------------- claims -> user

def groups_of(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The groups claim as a list of names (a list, or one space/comma-separated string)."""
    value = claims.get(claim)
    if value is None:
        return []
    if isinstance(value, str):
        return [g for g in re.split(r"[\s,]+", value) if g]
    if isinstance(value, (list, tuple)):
        return [g for g in value if isinstance(g, str)]
    return []


def role_for(groups: list[str], role_map: Mapping[str, str], default_role: str) -> str | None:
    """The highest role any group maps to (Keycloak's '/group' full paths match 'group' too);
    ``default_role`` when none does; None when that is 'none' (refused)."""
    roles = [role_map[g] for group in groups for g in (group, group.lstrip("/")) if g in role_map]
    if roles:
        return max(roles, key=lambda r: ROLE_RANK[r])
    return None if default_role == "none" else default_role


def _username(claims: Mapping[str, Any], subject: str) -> str:
    for key in ("preferred_username", "email", "name"):
        value = claims.get(key)
        if isinstance(value, str):
            value = "".join(ch for ch in value.strip() if unicodedata.category(ch) not in ("Cc", "Cf"))[:90]
            if value:
                return value
    return f"sso-{hashlib.sha256(subject.encode()).hexdigest()[:10]}"


def _free_username(db: so.Session, wanted: str, subject: str) -> str:
    """``wanted``, or ``wanted-<hash of sub>`` when a local or other account has that name."""
    taken = db.scalar(sa.select(User.id).where(sa.func.lower(User.username) == wanted.lower()))
    if taken is None:
        return wanted
    return f"{wanted}-{hashlib.sha256(subject.encode()).hexdigest()[:6]}"


def provision_user(db: so.Session, oidc: OidcSettings, claims: Mapping[str, Any]) -> User:
    """The Plan B user for these (validated) ID-token claims: found by (issuer, sub) or created,
    with the role the provider's groups give.  SsoRefused when the user may not sign in."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        raise SsoRefused("the identity provider sent no usable subject ('sub')")
    actor = f"sso:{oidc.provider_name}"[:200]
    groups = groups_of(claims, oidc.groups_claim)
    role = role_for(groups, oidc.role_map, oidc.default_role)
    identity = db.scalar(sa.select(ExternalIdentity).where(ExternalIdentity.issuer == oidc.issuer,
                                                           ExternalIdentity.subject == subject))
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    now = utcnow()
    if identity is not None:
        user = db.get(User, identity.user_id)
        assert user is not None  # the foreign key cascades
        if role is None:
            # Removed from every mapped group: no access, and their open sessions end now.
            raise SsoRefused(_no_group_message(oidc, groups), end_sessions_of=user.id)
        if not user.active:
            raise SsoRefused("your Plan B account is deactivated; ask an administrator")
        if user.role != role:
            before = audit.snapshot(user)
            user.role = role
            user.session_version += 1  # sessions opened with the old role end
            db.flush()
            audit.record(db, actor=actor, action="update", entity_type="user", entity_id=user.id,
                         summary=f"role of {user.username} set to {role} by the identity provider's groups",
                         before=before, after=audit.snapshot(user))
        identity.groups, identity.email, identity.last_login_at = groups[:100], email, now
    else:
        if role is None:
            raise SsoRefused(_no_group_message(oidc, groups))
        username = _free_username(db, _username(claims, subject), subject)
        user, _password = create_user(db, username, role, actor=actor)
        user.password_hash = NO_PASSWORD
        identity = ExternalIdentity(user_id=user.id, issuer=oidc.issuer, subject=subject, email=email,
                                    groups=groups[:100], last_login_at=now)
        db.add(identity)
    user.last_login_at = now
    db.flush()
    audit.record(db, actor=actor, action="sso-login", entity_type="user", entity_id=user.id,
                 summary=f"{user.username} signed in through {oidc.provider_name} as {user.role}",
                 after={"issuer": oidc.issuer, "subject": subject, "groups": groups[:50], "role": user.role})
    return user


def _no_group_message(oidc: OidcSettings, groups: list[str]) -> str:
    return (f"your {oidc.provider_name} account is in no group that gives access to Plan B "
            f"(groups: {', '.join(groups[:10]) or 'none'}); ask an administrator")


# ---------------------------------------------------------------- the flow

def _client() -> Any:
    return current_app.extensions["planb_oidc"].create_client(CLIENT_NAME)


def _redirect_uri() -> str:
    base = current_app.config.get("EXTERNAL_URL")
    path = url_for("oidc.callback")
    return f"{base}{path}" if base else url_for("oidc.callback", _external=True)


def _login_page(message: str, status: int):  # type: ignore[no-untyped-def]
    return render_template("auth/login.html", error=message), status


def _count_failure(response: Any) -> bool:
    return response.status_code != 302


@bp.get("/login/sso")
def start():  # type: ignore[no-untyped-def]
    session["sso_next"] = safe_next(request.args.get("next"))
    try:
        return _client().authorize_redirect(_redirect_uri())
    except Exception as exc:  # the provider is down or its discovery document is bad
        log.warning("sso start failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        return _login_page(f"Sign-in through {settings().provider_name} is unavailable right now "  # type: ignore[union-attr]
                           "(the identity provider did not answer); try again later.", 503)


@bp.get("/login/sso/callback")
@limiter.limit(lambda: current_app.config.get("LOGIN_RATE_LIMIT") or "10 per minute",
               deduct_when=_count_failure, error_message="too many failed sign-in attempts")
def callback():  # type: ignore[no-untyped-def]
    from authlib.integrations.base_client.errors import OAuthError
    from joserfc.errors import JoseError

    oidc = settings()
    assert oidc is not None
    db = get_session()
    next_url = session.pop("sso_next", None) or url_for("overview.index")
    try:
        client = _client()
        metadata = client.load_server_metadata()
        if str(metadata.get("issuer", "")).rstrip("/") != oidc.issuer:
            raise SsoRefused("the identity provider's discovery document names another issuer")
        token = client.authorize_access_token(leeway=LEEWAY_SECONDS)
        claims = token.get("userinfo")
        if not claims:
            raise SsoRefused("the identity provider sent no ID token")
        user = provision_user(db, oidc, claims)
    except (SsoRefused, OAuthError, JoseError, ValueError, KeyError) as exc:
        reason = str(exc) if isinstance(exc, SsoRefused) else _reason(exc)
        db.rollback()
        log.warning("sso login refused", extra={"reason": reason, "remote_addr": request.remote_addr})
        ended = getattr(exc, "end_sessions_of", None)
        if ended is not None:
            db.execute(sa.update(User).where(User.id == ended)
                       .values(session_version=User.session_version + 1))
        audit.record(db, actor=f"sso:{oidc.provider_name}"[:200], action="sso-refused", entity_type="user",
                     entity_id=ended, summary=f"sign-in through {oidc.provider_name} refused: {reason}"[:500])
        db.commit()
        return _login_page(f"Sign-in through {oidc.provider_name} failed: {reason}.", 401)
    except Exception as exc:  # the token endpoint or JWKS could not be reached
        db.rollback()
        log.warning("sso callback failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        return _login_page(f"Sign-in through {oidc.provider_name} is unavailable right now; try again later.", 503)
    db.commit()
    begin_session(user)
    log.info("login", extra={"username": user.username, "via": "sso", "remote_addr": request.remote_addr})
    return redirect(next_url)


def _reason(exc: Exception) -> str:
    """A short, safe description of why a token was refused."""
    from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError

    if isinstance(exc, MismatchingStateError):
        return "the sign-in request expired or did not start here (state mismatch); start again"
    if isinstance(exc, OAuthError):
        return f"the identity provider answered {exc.error or 'an error'}" + \
            (f" ({exc.description})" if exc.description else "")
    from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError

    if isinstance(exc, ExpiredTokenError):
        return "the ID token has expired"
    if isinstance(exc, ClaimError):
        audience = "the ID token was issued for another application (audience)"
        return {"aud": audience, "azp": audience,
                "nonce": "the ID token does not answer this sign-in (nonce)",
                "iss": "the ID token was issued by another issuer"}.get(
            exc.claim, f"the ID token's {exc.claim!r} claim is not valid")
    if isinstance(exc, BadSignatureError):
        return "the ID token's signature does not verify"
    return f"the ID token is not valid ({type(exc).__name__})"


def init_app(app: Flask) -> None:
    """Register the provider with Authlib when single sign-on is configured."""
    oidc = OidcSettings.from_config(app.config)
    app.extensions["planb_oidc_settings"] = oidc
    if oidc is None:
        return
    from authlib.integrations.flask_client import OAuth

    oauth = OAuth(app)
    oauth.register(CLIENT_NAME, client_id=oidc.client_id, client_secret=oidc.client_secret,
                   server_metadata_url=f"{oidc.issuer}/.well-known/openid-configuration",
                   client_kwargs={"scope": oidc.scopes, "code_challenge_method": "S256", "timeout": 10})
    app.extensions["planb_oidc"] = oauth
    app.register_blueprint(bp)
