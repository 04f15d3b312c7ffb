"""``planb users ...`` and ``planb tokens ...``: accounts and API tokens."""
from __future__ import annotations

import sys

import click
import sqlalchemy as sa

from inventory import auth
from inventory.app_db import get_session
from inventory.auth import (
    MAX_TOKEN_DAYS,
    MIN_TOKEN_DAYS,
    AuthError,
    create_token,
    create_user,
    current_actor,
    revoke_token,
    token_state,
)
from inventory.choices import ROLES, TOKEN_ROLES
from inventory.cli import CLIError, with_app
from inventory.cli.output import FORMAT_OPTION, emit
from inventory.cli.params import DbId
from inventory.models import ApiToken, User


@click.group()
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
    # sys.stdin, not click.get_text_stream (deprecated in Click 8.3, gone in 9).
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
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
    try:
        auth.set_role(db, _user(db, username), role, actor=current_actor())
    except AuthError as exc:
        raise CLIError(str(exc)) from exc
    db.commit()
    click.echo(f"{username} is now {role}.")

@users.command("reset-password")
@click.argument("username")
@with_app
def reset_password(username: str) -> None:
    """Give a user a new generated password (printed once; their sessions end)."""
    db = get_session()
    plain = auth.reset_password(db, _user(db, username), actor=current_actor())
    db.commit()
    click.echo(f"New password for {username} (shown once): {plain}")

@users.command("deactivate")
@click.argument("username")
@with_app
def deactivate(username: str) -> None:
    """Stop a user from logging in (their sessions end)."""
    db = get_session()
    try:
        auth.set_active(db, _user(db, username), False, actor=current_actor())
    except AuthError as exc:
        raise CLIError(str(exc)) from exc
    db.commit()
    click.echo(f"{username} can no longer log in.")

@users.command("activate")
@click.argument("username")
@with_app
def activate(username: str) -> None:
    """Let a deactivated user log in again."""
    db = get_session()
    auth.set_active(db, _user(db, username), True, actor=current_actor())
    db.commit()
    click.echo(f"{username} can log in again.")

@click.group()
def tokens() -> None:
    """API tokens for pipelines and scripts (sent as 'Authorization: Bearer')."""

@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(TOKEN_ROLES), default="read", show_default=True)
@click.option("--expires-days", type=click.IntRange(MIN_TOKEN_DAYS, MAX_TOKEN_DAYS), default=None,
              help=f"Whole days until the token stops working, {MIN_TOKEN_DAYS} to {MAX_TOKEN_DAYS} "
                   "(default: never).")
@with_app
def create_tok(name: str, role: str, expires_days: int | None) -> None:
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
    rows = [{"id": t.id, "name": t.name, "prefix": t.prefix, "role": t.role, "state": token_state(t),
             "expires_at": t.expires_at, "revoked_at": t.revoked_at, "last_used_at": t.last_used_at}
            for t in get_session().scalars(sa.select(ApiToken).order_by(ApiToken.id))]
    emit(rows, ["id", "name", "prefix", "role", "state", "expires_at", "revoked_at", "last_used_at"],
         fmt,
         empty="No tokens yet.")

@tokens.command("revoke")
@click.argument("token_id", type=DbId("no token with id {}"))
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
    try:
        return auth.get_user(db, username)
    except AuthError as exc:
        raise CLIError(str(exc)) from exc
