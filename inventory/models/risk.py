"""Third-party risk: dated vendor assessments."""
from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow

if TYPE_CHECKING:
    from inventory.models.vendors import Vendor


class VendorAssessment(Base):
    """A dated review of a vendor's security posture and practices.

    Domain scores run 0 (poor) to 5 (excellent).  ``certifications`` is a list
    of ``{"name": ..., "expires": "YYYY-MM-DD"}``; ``findings`` a list of
    ``{"title": ..., "severity": ..., "status": "open|accepted|closed"}``.
    """

    __tablename__ = "vendor_assessments"
    __table_args__ = (sa.UniqueConstraint("vendor_id", "assessed_on"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    vendor_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("vendors.id", ondelete="CASCADE"), index=True)
    assessed_on: so.Mapped[date] = so.mapped_column(sa.Date)
    assessor: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    score_security: so.Mapped[Optional[int]] = so.mapped_column()
    score_update_practices: so.Mapped[Optional[int]] = so.mapped_column()
    score_resilience: so.Mapped[Optional[int]] = so.mapped_column()
    score_compliance: so.Mapped[Optional[int]] = so.mapped_column()
    staged_rollouts: so.Mapped[Optional[bool]] = so.mapped_column()
    customer_update_control: so.Mapped[Optional[bool]] = so.mapped_column()
    rollback_supported: so.Mapped[Optional[bool]] = so.mapped_column()
    certifications: so.Mapped[list[dict[str, Any]]] = so.mapped_column(sa.JSON, default=list)
    findings: so.Mapped[list[dict[str, Any]]] = so.mapped_column(sa.JSON, default=list)
    next_review_due: so.Mapped[Optional[date]] = so.mapped_column(sa.Date, index=True)
    notes: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    vendor: so.Mapped["Vendor"] = so.relationship(back_populates="assessments")
