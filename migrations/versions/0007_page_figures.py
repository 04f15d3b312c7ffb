"""page_figures: dashboard aggregates computed once per inventory version, shared by every process

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 10:40:00

The risk, plans and update-testing pages aggregate over the whole estate.  Each
gunicorn worker used to compute them on its first view after a start or a write
(seconds at 100k assets).  The first process to compute one now stores it here
as JSON, with the inventory version and mark it holds for; the others read it
(``inventory.services.shared_figures``).  A cache only: no trigger, no history.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

import inventory.db

revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "page_figures",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("inventory_version", sa.BigInteger(), nullable=False),
        sa.Column("mark", sa.String(length=300), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("computed_at", inventory.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_page_figures")),
    )


def downgrade() -> None:
    op.drop_table("page_figures")
