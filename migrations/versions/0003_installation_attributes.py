"""installations.attributes: source facts that are not the product's version

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 07:00:00

An Azure VM extension reports the version of its *handler* (CrowdStrike's
FalconSensorWindows says "1.0" whatever sensor it installed), and a VM's image
version is the image it was built from, not what runs now. Such installations
are recorded with the product's version unknown and keep what the source did say
here, so a version-narrowed blast radius lists them as "version unknown — check
by hand" instead of silently comparing 1.0 with >=7.11.

The column is added and dropped with plain ALTER TABLE on SQLite too (3.35+): a
batch copy of ``installations`` would drop its inventory-version triggers.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("installations", sa.Column("attributes", sa.JSON(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE installations DROP COLUMN attributes")
        return
    op.drop_column("installations", "attributes")
