"""inventory_version triggers: one counter bumped by every write the impact engine reads

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:20:00

The impact engine keeps the dependency graph in memory and must notice *any*
change, whoever made it (collector process, estate import, API, CLI, a DBA
with psql).  Triggers are the only portable hook that sees every path, so they
bump the single row ``inventory_version.id = 1``; the engine reads that one row
before each query.  Kept in their own revision because autogenerate never
emits triggers: regenerating 0001 must not lose them.

* SQLite: plain ``AFTER INSERT/UPDATE OF/DELETE`` row triggers (SQLite has one
  writer at a time, so the counter row costs no concurrency).
* PostgreSQL: *deferred constraint* row triggers, so the counter row is locked
  only at COMMIT, after every other row lock the transaction takes (no
  deadlocks between concurrent writers), and only once per transaction (a
  transaction-local setting remembers the bump).
* Updates fire only for the columns the engine reads, so a collector that only
  refreshes ``last_seen`` does not invalidate the cache.
* Each table also bumps its part's counter (``assets_v``, ``installs_v``,
  ``deps_v``, ``catalog_v``, ``plans_v``), so a rebuild reloads only the parts
  that changed.

NOTE: a later SQLite batch migration that recreates one of these tables drops
its triggers; such a migration must call ``create_triggers`` again
(``tests/impact/test_versioning.py`` checks they are all present at head).

Regenerating 0001 from the models: Alembic cannot load this file while 0001 is
missing (``KeyError: '0001'``), so move it aside for the regeneration::

    mv migrations/versions/0002_inventory_version_triggers.py /tmp/ && \
    rm -f /tmp/regen.db migrations/versions/0001_initial_schema.py && \
    python -c "from alembic import command; from inventory.migrate import alembic_config; \
    command.revision(alembic_config('sqlite:////tmp/regen.db'), message='initial schema', \
    autogenerate=True, rev_id='0001')" && \
    mv /tmp/0002_inventory_version_triggers.py migrations/versions/
"""
import secrets
from typing import Sequence, Union

from alembic import op

revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# table -> columns whose UPDATE changes what the impact engine computes.
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

# table -> the part counter it bumps along with ``version``.
PART: dict[str, str] = {
    "assets": "assets_v", "installations": "installs_v", "dependencies": "deps_v",
    "products": "catalog_v", "vendors": "catalog_v",
    "contingency_plans": "plans_v", "plan_links": "plans_v",
}

# The part counter's name comes from the trigger definition (TG_ARGV), never from data.
PG_FUNCTION = """
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


def trigger_names(table: str) -> list[str]:
    return [f"trg_{table}_inventory_version_{op_}" for op_ in ("ins", "upd", "del", "trunc")]


def create_triggers(table: str, dialect: str) -> None:
    columns = ", ".join(WATCHED[table])
    part = PART[table]
    ins, upd, dele, trunc = trigger_names(table)
    if dialect == "sqlite":
        bump = f"BEGIN UPDATE inventory_version SET version = version + 1, {part} = {part} + 1 WHERE id = 1; END"
        op.execute(f"CREATE TRIGGER {ins} AFTER INSERT ON {table} {bump}")
        op.execute(f"CREATE TRIGGER {upd} AFTER UPDATE OF {columns} ON {table} {bump}")
        op.execute(f"CREATE TRIGGER {dele} AFTER DELETE ON {table} {bump}")
        return
    op.execute(
        f"CREATE CONSTRAINT TRIGGER {ins} AFTER INSERT OR DELETE OR UPDATE OF {columns} ON {table} "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION planb_bump_inventory_version('{part}')")
    op.execute(f"CREATE TRIGGER {trunc} AFTER TRUNCATE ON {table} "
               f"FOR EACH STATEMENT EXECUTE FUNCTION planb_bump_inventory_version('{part}')")


def drop_triggers(table: str, dialect: str) -> None:
    ins, upd, dele, trunc = trigger_names(table)
    if dialect == "sqlite":
        for name in (ins, upd, dele):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        return
    for name in (ins, trunc):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # A random start: a database dropped and recreated under the same URL never
    # repeats a version number a long-running process may still have cached.
    start = secrets.randbits(40)
    op.execute("INSERT INTO inventory_version (id, version, assets_v, installs_v, deps_v, catalog_v, plans_v) "
               f"VALUES (1, {start}, 0, 0, 0, 0, 0)")
    if dialect != "sqlite":
        op.execute(PG_FUNCTION)
    for table in WATCHED:
        create_triggers(table, dialect)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in WATCHED:
        drop_triggers(table, dialect)
    if dialect != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS planb_bump_inventory_version()")
    op.execute("DELETE FROM inventory_version WHERE id = 1")
