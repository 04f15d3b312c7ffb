"""Who is acting: a logged-in user, an API token or the CLI (for checks and the audit trail).

Kept apart from ``inventory.auth`` (login pages, token checks) so a CLI command can name
its principal without importing the web stack.
"""
from __future__ import annotations

from dataclasses import dataclass

ROLE_RANK = {"viewer": 1, "editor": 2, "admin": 3}


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
    from flask import g

    return g.get("principal")


def current_actor() -> str:
    """The name written into the audit trail for the current request or command."""
    from flask import g

    principal = g.get("principal") if g else None
    if principal is None:
        return "system"
    return principal.name if principal.kind == "user" else f"{principal.kind}:{principal.name}"
