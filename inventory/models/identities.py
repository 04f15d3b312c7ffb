"""Identities at an external identity provider (OpenID Connect) linked to local users."""
from __future__ import annotations

from datetime import datetime
from typing import Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow


class ExternalIdentity(Base):
    """A user as an identity provider knows them: the issuer and its stable subject id (``sub``).

    Users are matched on (issuer, subject), never on a name or e-mail address, so an
    IdP account cannot take over a local account that happens to share its name."""

    __tablename__ = "external_identities"
    __table_args__ = (sa.UniqueConstraint("issuer", "subject"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issuer: so.Mapped[str] = so.mapped_column(sa.String(500))
    subject: so.Mapped[str] = so.mapped_column(sa.String(255))
    email: so.Mapped[Optional[str]] = so.mapped_column(sa.String(320))
    groups: so.Mapped[Optional[list[str]]] = so.mapped_column(sa.JSON)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_login_at: so.Mapped[Optional[datetime]] = so.mapped_column()
