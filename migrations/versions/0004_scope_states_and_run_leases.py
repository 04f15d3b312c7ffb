"""collection_scopes (the latest state of each scope), run summaries and run leases

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 08:00:00

Run history stays small at fleet scale: instead of one ``scope_results`` row per scope
per run (100,000 rows per pass of a 100,000-host fleet), each scope keeps its latest
state in ``collection_scopes`` and a run keeps only the scopes that did not succeed,
with per-status counts and a compact summary on ``collection_runs``. A run also holds
a lease (``holder``, ``heartbeat_at``, ``lease_expires_at``) it renews while it works, so
a run whose process died is found and closed.  A scope state also keeps the fingerprint
of what its last full comparison applied, so an unchanged scope is recognised without
reading its rows (``fingerprint``, ``signature``, ``verified_at``).

Upgrade fills ``collection_scopes`` from the history already recorded (the latest result
of each scope, and its last success). Downgrade writes each scope's latest state back as
a ``scope_results`` row of its run where that run has none for the scope, so what the
confidence report knew is still there. Columns are added and dropped with plain ALTER
TABLE on SQLite too (3.35+), like 0003.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_RUN_COLUMNS = ("scopes_succeeded", "scopes_partial", "scopes_failed", "summary", "holder", "heartbeat_at",
                "lease_expires_at")


def upgrade() -> None:
    op.create_table(
        "collection_scopes",
        sa.Column("scope_key", sa.String(length=300), nullable=False),
        sa.Column("collector", sa.String(length=50), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("marked_stale", sa.Integer(), nullable=False),
        sa.Column("software_unread", sa.JSON(), nullable=True),
        sa.Column("fingerprint", sa.String(length=32), nullable=True),
        sa.Column("signature", sa.JSON(), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["collection_runs.id"],
                                name=op.f("fk_collection_scopes_run_id_collection_runs"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("scope_key", name=op.f("pk_collection_scopes")),
    )
    op.create_index(op.f("ix_collection_scopes_run_id"), "collection_scopes", ["run_id"])
    op.create_index(op.f("ix_collection_scopes_revision"), "collection_scopes", ["revision"])
    op.create_index("ix_collection_scopes_status_scope", "collection_scopes", ["status", "scope_key"])

    op.add_column("collection_runs", sa.Column("scopes_succeeded", sa.Integer(), server_default="0",
                                               nullable=False))
    op.add_column("collection_runs", sa.Column("scopes_partial", sa.Integer(), server_default="0", nullable=False))
    op.add_column("collection_runs", sa.Column("scopes_failed", sa.Integer(), server_default="0", nullable=False))
    op.add_column("collection_runs", sa.Column("summary", sa.JSON(), nullable=True))
    op.add_column("collection_runs", sa.Column("holder", sa.String(length=200), nullable=True))
    op.add_column("collection_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("collection_runs", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))

    # The latest result of each scope (highest id) becomes its state; its last success is
    # the latest succeeded result's finish time. Then the per-status counts of old runs.
    op.execute("""
        INSERT INTO collection_scopes (scope_key, collector, run_id, status, error, finished_at, last_success_at,
                                       created, updated, unchanged, marked_stale, software_unread, revision)
        SELECT r.scope_key, COALESCE(c.collector, ''), r.run_id, r.status, r.error, r.finished_at,
               (SELECT max(s.finished_at) FROM scope_results s
                 WHERE s.scope_key = r.scope_key AND s.status = 'succeeded'),
               r.created, r.updated, r.unchanged, r.marked_stale, NULL, 1
          FROM scope_results r LEFT JOIN collection_runs c ON c.id = r.run_id
         WHERE r.id IN (SELECT max(id) FROM scope_results GROUP BY scope_key)
    """)
    for status, column in (("succeeded", "scopes_succeeded"), ("partial", "scopes_partial"),
                           ("failed", "scopes_failed")):
        op.execute(f"""
            UPDATE collection_runs SET {column} = (
                SELECT count(*) FROM scope_results s WHERE s.run_id = collection_runs.id AND s.status = '{status}')
        """)


def downgrade() -> None:
    op.execute("""
        INSERT INTO scope_results (run_id, scope_key, status, created, updated, unchanged, marked_stale, error,
                                   finished_at)
        SELECT s.run_id, s.scope_key, s.status, s.created, s.updated, s.unchanged, s.marked_stale, s.error,
               s.finished_at
          FROM collection_scopes s
         WHERE s.run_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM scope_results r WHERE r.run_id = s.run_id AND r.scope_key = s.scope_key)
    """)
    sqlite = op.get_bind().dialect.name == "sqlite"
    for column in reversed(_RUN_COLUMNS):
        if sqlite:
            op.execute(f"ALTER TABLE collection_runs DROP COLUMN {column}")
        else:
            op.drop_column("collection_runs", column)
    op.drop_index("ix_collection_scopes_status_scope", table_name="collection_scopes")
    op.drop_index(op.f("ix_collection_scopes_revision"), table_name="collection_scopes")
    op.drop_index(op.f("ix_collection_scopes_run_id"), table_name="collection_scopes")
    op.drop_table("collection_scopes")
