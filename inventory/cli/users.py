"""``planb users ...`` and ``planb tokens ...``: accounts and API tokens."""
from __future__ import annotations

import click
import sqlalchemy as sa

from inventory.app_db import get_session
from inventory.auth import AuthError, create_token, create_user, current_actor, hash_password, revoke_token
from inventory.choices import ROLES, TOKEN_ROLES
from inventory.cli import CLIError, with_app
from inventory.cli.output import FORMAT_OPTION, emit
from inventory.models import ApiToken, User
from inventory.services import audit


def register(main: click.Group) -> None:
    @main.group()
    def users() -> None:
        """Local accounts and their roles (viewer, editor, admin)."""

    @users.command("create")
    @click.argument("username")
    @click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
    @click.option("--admin", is_flag=True, help="Shorthand for --role admin.")
    @click.option("--password-stdin", is_flag=True, help="Read the password from standard input "
                  "instead of generating one.")
    @with_app
    def create(username: str, role: str, admin: bool, password_stdin: bool) -> None:
        """Create a user; a generated password is printed once."""
        password = click.get_text_stream("stdin").readline().rstrip("\n") if password_stdin else None
        db = get_session()
        try:
            user, plain = create_user(db, username, "admin" if admin else role, password,
                                      actor=current_actor())
        except AuthError as exc:
            raise CLIError(str(exc)) from exc
        db.commit()
        click.echo(f"Created {user.role} {user.username!r}.")
        if not password_stdin:
            click.echo(f"Password (shown once): {plain}")

    @users.command("list")
    @FORMAT_OPTION
    @with_app
    def list_users(fmt: str) -> None:
        """List users."""
        rows = [{"username": u.username, "role": u.role, "active": u.active,
                 "last_login_at": u.last_login_at}
                for u in get_session().scalars(sa.select(User).order_by(User.username))]
        emit(rows, ["username", "role", "active", "last_login_at"], fmt, empty="No users yet.")

    @users.command("set-role")
    @click.argument("username")
    @click.argument("role", type=click.Choice(ROLES))
    @with_app
    def set_role(username: str, role: str) -> None:
        """Change a user's role (their sessions end)."""
        db = get_session()
        user = _user(db, username)
        before = audit.snapshot(user)
        user.role = role
        user.session_version += 1
        audit.record(db, actor=current_actor(), action="update", entity_type="user", entity_id=user.id,
                     summary=f"role of {username} set to {role}", before=before, after=audit.snapshot(user))
        db.commit()
        click.echo(f"{username} is now {role}.")

    @users.command("reset-password")
    @click.argument("username")
    @with_app
    def reset_password(username: str) -> None:
        """Give a user a new generated password (printed once; their sessions end)."""
        from inventory.auth import generate_password
        db = get_session()
        user = _user(db, username)
        plain = generate_password()
        user.password_hash = hash_password(plain)
        user.session_version += 1
        audit.record(db, actor=current_actor(), action="reset-password", entity_type="user",
                     entity_id=user.id, summary=f"password of {username} reset")
        db.commit()
        click.echo(f"New password for {username} (shown once): {plain}")

    @users.command("deactivate")
    @click.argument("username")
    @with_app
    def deactivate(username: str) -> None:
        """Stop a user from logging in (their sessions end)."""
        db = get_session()
        user = _user(db, username)
        before = audit.snapshot(user)
        user.active = False
        user.session_version += 1
        audit.record(db, actor=current_actor(), action="deactivate", entity_type="user",
                     entity_id=user.id, summary=f"deactivated {username}", before=before,
                     after=audit.snapshot(user))
        db.commit()
        click.echo(f"{username} can no longer log in.")

    @main.group()
    def tokens() -> None:
        """API tokens for pipelines and scripts (sent as 'Authorization: Bearer')."""

    @tokens.command("create")
    @click.argument("name")
    @click.option("--role", type=click.Choice(TOKEN_ROLES), default="read", show_default=True)
    @click.option("--expires-days", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="Days until the token stops working (default: never).")
    @with_app
    def create_tok(name: str, role: str, expires_days: float | None) -> None:
        """Create a token; it is printed once and only its HMAC is stored."""
        db = get_session()
        try:
            token, plain = create_token(db, name, role, expires_in_days=expires_days,
                                        actor=current_actor())
        except AuthError as exc:
            raise CLIError(str(exc)) from exc
        db.commit()
        click.echo(f"Created {role} token #{token.id} {name!r}"
                   + (f", expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else "") + ".")
        click.echo(f"Token (shown once): {plain}")

    @tokens.command("list")
    @FORMAT_OPTION
    @with_app
    def list_tokens(fmt: str) -> None:
        """List tokens (never their secrets)."""
        rows = [{"id": t.id, "name": t.name, "prefix": t.prefix, "role": t.role,
                 "expires_at": t.expires_at, "revoked_at": t.revoked_at, "last_used_at": t.last_used_at}
                for t in get_session().scalars(sa.select(ApiToken).order_by(ApiToken.id))]
        emit(rows, ["id", "name", "prefix", "role", "expires_at", "revoked_at", "last_used_at"], fmt,
             empty="No tokens yet.")

    @tokens.command("revoke")
    @click.argument("token_id", type=int)
    @with_app
    def revoke(token_id: int) -> None:
        """Revoke a token by id; it stops working at once."""
        db = get_session()
        try:
            token = revoke_token(db, token_id, actor=current_actor())
        except AuthError as exc:
            raise CLIError(str(exc)) from exc
        db.commit()
        click.echo(f"Token #{token.id} {token.name!r} revoked.")


def _user(db, username: str) -> User:  # type: ignore[no-untyped-def]
    user = db.scalar(sa.select(User).where(User.username == username))
    if user is None:
        raise CLIError(f"no user named {username!r}")
    return user
