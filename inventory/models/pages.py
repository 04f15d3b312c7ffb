"""Dashboard figures computed once per inventory version and shared by every process."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, UTCDateTime, utcnow


class PageFigure(Base):
    """One estate-wide aggregate of a dashboard page (the risk table, plan coverage, the
    update-testing figures) as JSON, for the inventory version and ``mark`` (audit mark,
    day, plan signature) it was computed at.  A worker that starts, or finds the figure it
    holds out of date, reads it here before computing it itself; whoever computes it first
    writes it (``inventory.services.shared_figures``).  A cache: deleting rows is harmless."""

    __tablename__ = "page_figures"

    name: so.Mapped[str] = so.mapped_column(sa.String(200), primary_key=True)
    inventory_version: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    mark: so.Mapped[str] = so.mapped_column(sa.String(300))
    payload: so.Mapped[str] = so.mapped_column(sa.Text)
    computed_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(timezone=True), default=utcnow)
