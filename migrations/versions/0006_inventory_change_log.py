"""inventory_changes: the change log the impact graph patches itself from

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 08:00:00

Revision 0002's triggers bump ``inventory_version`` on every write the impact
engine reads; a process holding the in-memory graph then knew *that* something
changed, not *what*, and reloaded whole parts (100k assets after one edit).  The
same triggers now also record *which rows* changed, in ``inventory_changes``,
tagged with the version their bump produced, so the graph reads the changes
since its own version and patches itself (``inventory.impact.changes``):

* one row per changed row: ``assets`` (``a_id`` = asset id), ``installations``
  (``a_id``, ``b_id`` = asset id, product id), ``dependencies`` (``a_id``,
  ``b_id``, ``kind`` = dependent id, dependency id, kind); for vendors, products,
  plans and plan links the row id (the graph reloads those small parts whole).
  An update that changes a row's key records the old key too.
* The invariant the reader relies on: **every bump of the counter has at least
  one change row with its version.**  A bump without one — a large SQLite insert
  that ran without its row trigger (``collectors/ingest.py``, ``BulkWriter``), a
  TRUNCATE, a restore, rows pruned away, a hand-made UPDATE of the counter —
  tells the reader its log is incomplete, and it reloads the parts that changed.
* SQLite: the row triggers of 0002, recreated with the change-log insert after
  the bump (one version per row, as before).
* PostgreSQL: the deferred constraint triggers of 0002 are kept; their function
  now remembers the version its once-per-transaction bump produced and records
  each row under it.  All of this runs at COMMIT after the counter row is locked,
  so versions and change rows are written in commit order.  Past
  ``PG_ROWS_PER_TRANSACTION`` rows of one part in one transaction a single marker
  row (``a_id`` NULL: "reload this table") replaces the rest.
* Pruning: a trigger on ``inventory_version`` deletes change rows more than
  ``RETAIN`` versions old every ``PRUNE_EVERY`` versions (on PostgreSQL while
  the counter row is locked, so pruners never contend).

A later SQLite batch migration that recreates a watched table must recreate
its triggers with ``create_sqlite_triggers`` of this revision.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: Union[str, None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# table -> columns whose UPDATE changes what the impact engine computes (as in 0002).
WATCHED: dict[str, tuple[str, ...]] = {
    "assets": ("natural_key", "name", "kind", "provider", "account", "region", "os_family",
               "environment", "criticality", "owner", "tags", "min_up", "source", "source_scope",
               "first_seen", "retired_at"),
    "installations": ("asset_id", "product_id", "version", "first_seen"),
    "dependencies": ("dependent_id", "dependency_id", "kind", "strength", "first_seen"),
    "products": ("vendor_id", "name"),
    "vendors": ("name", "cloud_provider"),
    "contingency_plans": ("name", "review_interval_days", "last_reviewed", "last_exercised"),
    "plan_links": ("plan_id", "asset_id", "product_id", "vendor_id"),
}
# table -> the part counter it bumps along with ``version`` (as in 0002).
PART: dict[str, str] = {
    "assets": "assets_v", "installations": "installs_v", "dependencies": "deps_v",
    "products": "catalog_v", "vendors": "catalog_v",
    "contingency_plans": "plans_v", "plan_links": "plans_v",
}
# table -> its key columns, recorded as (a_id, b_id, kind).
KEYS: dict[str, tuple[str, ...]] = {
    "assets": ("id",), "installations": ("asset_id", "product_id"),
    "dependencies": ("dependent_id", "dependency_id", "kind"),
    "products": ("id",), "vendors": ("id",), "contingency_plans": ("id",), "plan_links": ("id",),
}
LOG_COLUMNS = ("a_id", "b_id", "kind")
PG_ROWS_PER_TRANSACTION = 2000
# SQLite counts a version per row, PostgreSQL one per transaction and part.
RETAIN = {"sqlite": 100_000, "postgresql": 4096}
PRUNE_EVERY = 512


def trigger_names(table: str) -> list[str]:
    return [f"trg_{table}_inventory_version_{op_}" for op_ in ("ins", "upd", "del", "trunc")]


def _bump(part: str) -> str:
    return f"UPDATE inventory_version SET version = version + 1, {part} = {part} + 1 WHERE id = 1"


def _log_select(table: str, row: str) -> str:
    """SELECT of one change row for ``row`` (NEW or OLD) under the version just bumped."""
    keys = KEYS[table]
    columns = ", ".join(LOG_COLUMNS[:len(keys)])
    values = ", ".join(f"{row}.{k}" for k in keys)
    return (f"INSERT INTO inventory_changes (version, table_name, {columns}) "
            f"SELECT version, '{table}', {values} FROM inventory_version WHERE id = 1")


def sqlite_trigger_sql(table: str) -> list[str]:
    """The three row triggers of ``table``: bump, then record the row(s) changed."""
    ins, upd, dele, _trunc = trigger_names(table)
    bump = _bump(PART[table])
    moved = " OR ".join(f"OLD.{k} IS NOT NEW.{k}" for k in KEYS[table])
    return [
        f"CREATE TRIGGER {ins} AFTER INSERT ON {table} BEGIN {bump}; {_log_select(table, 'NEW')}; END",
        f"CREATE TRIGGER {upd} AFTER UPDATE OF {', '.join(WATCHED[table])} ON {table} BEGIN {bump}; "
        f"{_log_select(table, 'NEW')}; {_log_select(table, 'OLD')} AND ({moved}); END",
        f"CREATE TRIGGER {dele} AFTER DELETE ON {table} BEGIN {bump}; {_log_select(table, 'OLD')}; END",
    ]


def legacy_sqlite_trigger_sql(table: str) -> list[str]:
    """Revision 0002's triggers (bump only), for the downgrade."""
    ins, upd, dele, _trunc = trigger_names(table)
    bump = f"BEGIN {_bump(PART[table])}; END"
    return [f"CREATE TRIGGER {ins} AFTER INSERT ON {table} {bump}",
            f"CREATE TRIGGER {upd} AFTER UPDATE OF {', '.join(WATCHED[table])} ON {table} {bump}",
            f"CREATE TRIGGER {dele} AFTER DELETE ON {table} {bump}"]


def create_sqlite_triggers(table: str) -> None:
    for name in trigger_names(table)[:3]:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for sql in sqlite_trigger_sql(table):
        op.execute(sql)


def _pg_log(row: str) -> str:
    """plpgsql: record ``row`` (NEW or OLD) of the firing table under version ``v``."""
    branches = []
    for table, keys in KEYS.items():
        columns = ", ".join(LOG_COLUMNS[:len(keys)])
        values = ", ".join(f"{row}.{k}" for k in keys)
        branches.append(f"{'IF' if not branches else 'ELSIF'} TG_TABLE_NAME = '{table}' THEN "
                        f"INSERT INTO inventory_changes (version, table_name, {columns}) "
                        f"VALUES (v, '{table}', {values});")
    return "\n            ".join(branches) + "\n            END IF;"


def _pg_moved() -> str:
    """plpgsql: whether the update changed the firing row's key."""
    branches = []
    for table, keys in KEYS.items():
        test = " OR ".join(f"OLD.{k} IS DISTINCT FROM NEW.{k}" for k in keys)
        branches.append(f"{'IF' if not branches else 'ELSIF'} TG_TABLE_NAME = '{table}' THEN moved := {test};")
    return "\n            ".join(branches) + "\n            END IF;"


# The part counter's name comes from the trigger definition (TG_ARGV), never from data.
PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION planb_bump_inventory_version() RETURNS trigger AS $$
DECLARE
    part text := TG_ARGV[0];
    flag text := 'planb.version_' || TG_ARGV[0];
    tally text := 'planb.logged_' || TG_ARGV[0];
    v bigint;
    n integer;
    moved boolean := false;
BEGIN
    v := nullif(current_setting(flag, true), '')::bigint;
    IF v IS NULL THEN
        EXECUTE format('UPDATE inventory_version SET version = version + 1, %I = %I + 1 WHERE id = 1 '
                       'RETURNING version', part, part) INTO v;
        PERFORM set_config(flag, v::text, true);
        n := 0;
    ELSE
        n := current_setting(tally)::integer;
    END IF;
    IF TG_LEVEL <> 'ROW' OR n > {PG_ROWS_PER_TRANSACTION} THEN
        RETURN NULL;   -- a TRUNCATE (no rows: the reader reloads), or past the marker
    END IF;
    IF n = {PG_ROWS_PER_TRANSACTION} THEN
        INSERT INTO inventory_changes (version, table_name) VALUES (v, TG_TABLE_NAME);
    ELSE
        IF TG_OP = 'DELETE' THEN
            {_pg_log('OLD')}
        ELSE
            {_pg_log('NEW')}
            IF TG_OP = 'UPDATE' THEN
                {_pg_moved()}
                IF moved THEN
                    {_pg_log('OLD')}
                END IF;
            END IF;
        END IF;
    END IF;
    PERFORM set_config(tally, (n + 1)::text, true);
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

# Revision 0002's function, for the downgrade.
LEGACY_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION planb_bump_inventory_version() RETURNS trigger AS $$
DECLARE
    flag text := 'planb.bumped_' || TG_ARGV[0];
BEGIN
    IF current_setting(flag, true) IS DISTINCT FROM 'on' THEN
        EXECUTE format('UPDATE inventory_version SET version = version + 1, %I = %I + 1 WHERE id = 1',
                       TG_ARGV[0], TG_ARGV[0]);
        PERFORM set_config(flag, 'on', true);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

PRUNE_TRIGGER = "trg_inventory_changes_prune"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "inventory_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("table_name", sa.String(length=30), nullable=False),
        sa.Column("a_id", sa.BigInteger(), nullable=True),
        sa.Column("b_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_changes")),
    )
    op.create_index(op.f("ix_inventory_changes_version"), "inventory_changes", ["version"], unique=False)
    retain = RETAIN.get(dialect, RETAIN["postgresql"])
    if dialect == "sqlite":
        for table in WATCHED:
            create_sqlite_triggers(table)
        op.execute(f"CREATE TRIGGER {PRUNE_TRIGGER} AFTER UPDATE OF version ON inventory_version "
                   f"WHEN NEW.version % {PRUNE_EVERY} = 0 BEGIN "
                   f"DELETE FROM inventory_changes WHERE version <= NEW.version - {retain}; END")
        return
    # The constraint triggers of 0002 call this function by name: replacing it is enough.
    op.execute(PG_FUNCTION)
    op.execute(f"""
CREATE OR REPLACE FUNCTION planb_prune_inventory_changes() RETURNS trigger AS $$
BEGIN
    DELETE FROM inventory_changes WHERE version <= NEW.version - {retain};
    RETURN NULL;
END
$$ LANGUAGE plpgsql""")
    op.execute(f"CREATE TRIGGER {PRUNE_TRIGGER} AFTER UPDATE OF version ON inventory_version FOR EACH ROW "
               f"WHEN (NEW.version % {PRUNE_EVERY} = 0) EXECUTE FUNCTION planb_prune_inventory_changes()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {PRUNE_TRIGGER}")
        for table in WATCHED:
            for name in trigger_names(table)[:3]:
                op.execute(f"DROP TRIGGER IF EXISTS {name}")
            for sql in legacy_sqlite_trigger_sql(table):
                op.execute(sql)
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {PRUNE_TRIGGER} ON inventory_version")
        op.execute("DROP FUNCTION IF EXISTS planb_prune_inventory_changes()")
        op.execute(LEGACY_PG_FUNCTION)
    op.drop_index(op.f("ix_inventory_changes_version"), table_name="inventory_changes")
    op.drop_table("inventory_changes")
